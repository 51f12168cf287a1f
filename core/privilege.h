/*
 * Least privilege: the user the workers (and so the application's scripts) run as.
 *
 * Started as root, the master keeps root (it binds, forks, chowns, signals) and each worker switches
 * to an unprivileged user right after fork, before it opens the store or loads any script: --user
 * NAME, or `nobody` by default (with its primary group, `nogroup` on Debian). `--user root` keeps the
 * workers as root, only when asked for by name (the master logs a warning). Started as another user,
 * nothing switches, and a --user naming someone else is refused.
 *
 * What the workers need after the switch is made theirs by the master: the data directory and the
 * store's files become owned by the workers' user (as PostgreSQL owns its data directory), the code
 * snapshots' directory readable by its group; and a child process that switches user the same way
 * checks that it can read the app, the Lua modules and the snapshots and write the data, so that the
 * start fails with the path and the fix instead of workers that fail. The preflight of each
 * generation (reload.c) loads the app's code as that user too, never as root.
 */
#ifndef TR_PRIVILEGE_H
#define TR_PRIVILEGE_H

#include <stddef.h>
#include <sys/types.h>

#define TR_PRIVILEGE_MAX_GROUPS 64

typedef struct tr_identity_s {
    int change;         /* 1: the workers switch to uid/gid (started as root, the user is not root) */
    int root_requested; /* --user root given while started as root: the workers stay root */
    uid_t uid;
    gid_t gid;
    int ngroups; /* the user's supplementary groups, resolved in the master (no NSS after fork) */
    gid_t groups[TR_PRIVILEGE_MAX_GROUPS];
    char name[64];
} tr_identity_t;

/* What the workers need, for tr_privilege_check; a NULL path is not checked. */
typedef struct tr_privilege_paths_s {
    const char *app_dir;   /* read: the directory and its routes/ */
    const char *lua_dir;   /* read: DIR/triage/app.lua */
    const char *data_dir;  /* write: the directory, and its triage.db if there is one */
    const char *code_root; /* read: the code snapshots */
} tr_privilege_paths_t;

/*
 * Resolve --user (NULL when not given) into id for the process as it runs now. Returns 0, or -1 with
 * a message naming --user in err (no such user; another user requested while not root).
 */
int tr_privilege_resolve(const char *user, tr_identity_t *id, char *err, size_t err_size);

/* The store's files in the data directory (triage.db, its -wal, -shm, -journal) become id's user's,
 * and the directory root's, writable by the user's group and sticky (the user can create files there
 * but not remove or replace root's: the admin token, the pid file). Nothing when !id->change. Returns
 * 0, or -1 with a message in err. */
int tr_privilege_give_data(const tr_identity_t *id, const char *dir, char *err, size_t err_size);

/* dir (the code snapshots) stays root's, readable by id's group (0750): the workers read, never
 * write, the code. Nothing when !id->change. Returns 0, or -1 with a message in err. */
int tr_privilege_share_dir(const tr_identity_t *id, const char *dir, char *err, size_t err_size);

/*
 * Check as id, in a child process that switches user as a worker does, that every path of paths is
 * usable. Nothing when !id->change. Returns 0, or -1 with a message naming the path, its flag and the
 * fix in err.
 */
int tr_privilege_check(const tr_identity_t *id, const tr_privilege_paths_t *paths, char *err, size_t err_size);

/*
 * In a new worker, first thing: become id (supplementary groups, group, user, in that order) and
 * verify it took (real and effective ids; setuid(0) must fail afterwards). Nothing when !id->change.
 * Returns 0, or -1 with a message in err (the worker must exit then).
 */
int tr_privilege_drop(const tr_identity_t *id, char *err, size_t err_size);

#endif
