/*
 * Snapshots of the application's code, so that what goes live is exactly what was preflighted.
 *
 * Every generation's code (app_dir/routes and app_dir/scripts) is copied into a directory of its own
 * before the preflight; the preflight, the workers' load (reload, start, or a replacement after a
 * crash) and any module required later all read that copy, never the live tree. Edits made while a
 * reload is being checked therefore cannot slip in unchecked: the hash of the live tree is compared
 * with the snapshot's after --reload-check, and a changed tree is checked again.
 */
#ifndef TR_SNAPSHOT_H
#define TR_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

/*
 * Copy app_dir/routes and app_dir/scripts (regular files, hidden names skipped) into dest, which is
 * created. *hash gets the tree's hash (FNV-1a 64 over relative paths and contents, in name order).
 * Returns 0, or -1 with a message in err.
 */
int tr_snapshot_take(const char *app_dir, const char *dest, uint64_t *hash, char *err, size_t err_size);

/* The same hash over the live tree in app_dir, without copying. */
uint64_t tr_snapshot_tree_hash(const char *app_dir);

/* Remove a directory tree (a snapshot, or the directory holding them). Errors are ignored. */
void tr_snapshot_remove(const char *dir);

#endif
