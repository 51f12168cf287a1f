#include "privilege.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "spawn.h"
#include "store.h"

#define DEFAULT_USER "nobody"

int tr_privilege_resolve(const char *user, tr_identity_t *id, char *err, size_t err_size)
{
    memset(id, 0, sizeof(*id));
    uid_t me = geteuid();
    const char *name = user != NULL ? user : DEFAULT_USER;
    if (user != NULL && *user == '\0') {
        snprintf(err, err_size, "--user wants a user name");
        return -1;
    }
    struct passwd *pw = getpwnam(name);
    if (me != 0) {
        /* Not root: nobody to switch to. A --user naming this very user is harmless. */
        if (user != NULL && (pw == NULL || pw->pw_uid != me)) {
            snprintf(err, err_size,
                     "--user %s: only a server started as root can run its workers as another user; "
                     "leave --user out to run them as the current user",
                     user);
            return -1;
        }
        return 0;
    }
    if (pw == NULL) {
        snprintf(err, err_size, "--user %s: no such user%s", name,
                 user == NULL ? " (the default when started as root); create it or give --user NAME" : "");
        return -1;
    }
    snprintf(id->name, sizeof(id->name), "%s", pw->pw_name);
    id->uid = pw->pw_uid;
    id->gid = pw->pw_gid;
    if (pw->pw_uid == 0) {
        id->root_requested = user != NULL;
        if (user == NULL) { /* "nobody" is uid 0 here: refuse rather than run the scripts as root unasked */
            snprintf(err, err_size, "the default user 'nobody' is root on this system; give --user NAME");
            return -1;
        }
        return 0;
    }
    id->ngroups = TR_PRIVILEGE_MAX_GROUPS;
    if (getgrouplist(pw->pw_name, pw->pw_gid, id->groups, &id->ngroups) < 0) {
        snprintf(err, err_size, "--user %s: member of more than %d groups", name, TR_PRIVILEGE_MAX_GROUPS);
        return -1;
    }
    id->change = 1;
    return 0;
}

int tr_privilege_drop(const tr_identity_t *id, char *err, size_t err_size)
{
    if (!id->change)
        return 0;
    /* Groups first: once the user is not root any more, it can no longer change them. */
    if (setgroups((size_t)id->ngroups, id->groups) != 0 || setgid(id->gid) != 0 || setuid(id->uid) != 0) {
        snprintf(err, err_size, "cannot switch to user %s (uid %d, gid %d): %s", id->name, (int)id->uid, (int)id->gid,
                 strerror(errno));
        return -1;
    }
    if (getuid() != id->uid || geteuid() != id->uid || getgid() != id->gid || getegid() != id->gid || setuid(0) == 0) {
        snprintf(err, err_size, "switching to user %s did not take (uid %d, euid %d)", id->name, (int)getuid(),
                 (int)geteuid());
        return -1;
    }
    /* No way back through a set-user-ID program either (a script allowed os.execute or io.popen). */
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    return 0;
}

/* chown path to the workers' user; a file that vanished meanwhile is fine. */
static int give(const tr_identity_t *id, const char *path, char *err, size_t err_size)
{
    if (lchown(path, id->uid, id->gid) != 0 && errno != ENOENT) {
        snprintf(err, err_size, "cannot give %s to user %s (the workers' user, --user): %s", path, id->name,
                 strerror(errno));
        return -1;
    }
    return 0;
}

int tr_privilege_give_data(const tr_identity_t *id, const char *dir, char *err, size_t err_size)
{
    if (!id->change)
        return 0;
    /* The directory stays root's, writable by the user's group, sticky: the workers create the store's
     * -wal and -shm files in it, but cannot remove or replace what they do not own (the admin token,
     * the pid file), which they could if the directory were theirs. */
    if (chown(dir, 0, id->gid) != 0 || chmod(dir, 01770) != 0) {
        snprintf(err, err_size, "cannot let group %d (of user %s, --user) write %s: %s", (int)id->gid, id->name, dir,
                 strerror(errno));
        return -1;
    }
    static const char *const store_files[] = {TR_STORE_FILE, TR_STORE_FILE "-wal", TR_STORE_FILE "-shm",
                                              TR_STORE_FILE "-journal"};
    for (size_t i = 0; i < sizeof(store_files) / sizeof(store_files[0]); i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, store_files[i]);
        if (give(id, path, err, err_size) != 0)
            return -1;
    }
    return 0;
}

int tr_privilege_share_dir(const tr_identity_t *id, const char *dir, char *err, size_t err_size)
{
    if (!id->change)
        return 0;
    if (chown(dir, 0, id->gid) != 0 || chmod(dir, 0750) != 0) {
        snprintf(err, err_size, "cannot let group %d (of user %s, --user) read %s: %s", (int)id->gid, id->name, dir,
                 strerror(errno));
        return -1;
    }
    return 0;
}

typedef struct need_s {
    const char *what; /* "the app directory (--app)" */
    const char *path; /* NULL: not checked */
    int mode;         /* access() mode */
} need_t;

/* In a child that became id: each need checked with access(); the first failure written to fd. */
static void check_as_user(const tr_identity_t *id, const need_t *needs, int n, int fd)
{
    char msg[1024];
    if (tr_privilege_drop(id, msg, sizeof(msg)) != 0) {
        (void)!write(fd, msg, strlen(msg));
        _exit(1);
    }
    for (int i = 0; i < n; i++) {
        if (needs[i].path == NULL || access(needs[i].path, needs[i].mode) == 0)
            continue;
        int len = snprintf(msg, sizeof(msg),
                           "the workers run as user '%s' (--user; 'nobody' when started as root without it), "
                           "who cannot %s %s %s (%s): make it, and every directory above it, %s by %s, or start "
                           "with --user NAME for a user who can (--user root runs the scripts as root)",
                           id->name, needs[i].mode & W_OK ? "write to" : "read", needs[i].what, needs[i].path,
                           strerror(errno), needs[i].mode & W_OK ? "writable" : "readable", id->name);
        (void)!write(fd, msg, (size_t)len < sizeof(msg) ? (size_t)len : sizeof(msg) - 1);
        _exit(1);
    }
    _exit(0);
}

int tr_privilege_check(const tr_identity_t *id, const tr_privilege_paths_t *paths, char *err, size_t err_size)
{
    if (!id->change)
        return 0;
    char routes[4096], lua[4096], store[4096];
    const char *routes_path = NULL, *lua_path = NULL, *store_path = NULL;
    if (paths->app_dir != NULL) {
        snprintf(routes, sizeof(routes), "%s/routes", paths->app_dir);
        routes_path = routes;
    }
    if (paths->lua_dir != NULL) {
        snprintf(lua, sizeof(lua), "%s/triage/app.lua", paths->lua_dir);
        lua_path = lua;
    }
    if (paths->data_dir != NULL) {
        snprintf(store, sizeof(store), "%s/triage.db", paths->data_dir);
        store_path = access(store, F_OK) == 0 ? store : NULL;
    }
    need_t needs[] = {
        {"the app directory (--app)", paths->app_dir, R_OK | X_OK},
        {"the app's route files", routes_path, R_OK | X_OK},
        {"the framework's Lua modules (--lua-dir)", lua_path, R_OK},
        {"the data directory (--data)", paths->data_dir, W_OK | X_OK},
        {"the store", store_path, R_OK | W_OK},
        {"the code snapshots (in $TMPDIR)", paths->code_root, R_OK | X_OK},
    };
    int fd;
    pid_t pid = tr_spawn_fork_piped(&fd, err, err_size);
    if (pid < 0)
        return -1;
    if (pid == 0)
        check_as_user(id, needs, (int)(sizeof(needs) / sizeof(needs[0])), fd);
    size_t len = 0;
    ssize_t n;
    while (len < err_size - 1 && (n = read(fd, err + len, err_size - 1 - len)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        len += (size_t)n;
    }
    err[len] = '\0';
    close(fd);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (len == 0)
        snprintf(err, err_size, "checking the paths as user %s failed", id->name);
    return -1;
}
