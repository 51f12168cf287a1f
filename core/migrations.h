/*
 * The application's migrations, as both store engines find them: app_dir/migrations/NNN_name.sql, in
 * number order, each number once. On PostgreSQL, app_dir/migrations/postgres/NNN_name.sql, when it
 * exists, is the text of the migration of the same name (SQL only one engine understands: triggers,
 * JSON functions, identity columns).
 */
#ifndef TR_MIGRATIONS_H
#define TR_MIGRATIONS_H

#include <stddef.h>

/* Called once per migration file, in number order: dir is app_dir/migrations, name the file name,
 * version its number. Returns 0 to go on, -1 to stop (with its message in err). */
typedef int (*tr_migration_cb)(void *arg, const char *dir, const char *name, long version, char *err, size_t err_size);

/* Call cb for each migration of app_dir. Returns 0, or -1 with a message in err (a number used twice,
 * or cb's failure). A missing migrations directory is no migration. */
int tr_migrations_each(const char *app_dir, tr_migration_cb cb, void *arg, char *err, size_t err_size);

/* The whole file at path, NUL-terminated (malloc'd; the caller frees it), its length at *len; NULL
 * with errno on failure. */
char *tr_migrations_read_file(const char *path, size_t *len);

#endif
