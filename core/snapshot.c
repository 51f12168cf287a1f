#include "snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

typedef struct walk_s {
    uint64_t hash;
    char *err;
    size_t err_size;
    int failed;
} walk_t;

static void fnv(walk_t *wk, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++)
        wk->hash = (wk->hash ^ p[i]) * FNV_PRIME;
}

static void fail(walk_t *wk, const char *what, const char *path)
{
    if (!wk->failed)
        snprintf(wk->err, wk->err_size, "snapshot of the code: %s %s: %s", what, path, strerror(errno));
    wk->failed = 1;
}

static int visible(const struct dirent *e)
{
    return e->d_name[0] != '.';
}

/* Hash (and, with dest, copy) one file. A file that vanished meanwhile is left out. */
static void take_file(walk_t *wk, const char *path, const char *rel, const char *dest)
{
    int in = open(path, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return;
    int out = -1;
    if (dest != NULL && (out = open(dest, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
        fail(wk, "cannot create", dest);
    fnv(wk, rel, strlen(rel) + 1); /* the name too: a rename is a change */
    char buf[16384];
    ssize_t n;
    while ((n = read(in, buf, sizeof(buf))) > 0) {
        fnv(wk, buf, (size_t)n);
        if (out >= 0 && write(out, buf, (size_t)n) != n)
            fail(wk, "cannot write", dest);
    }
    close(in);
    if (out >= 0)
        close(out);
}

static void take_dir(walk_t *wk, const char *dir, const char *rel, const char *dest)
{
    struct dirent **list;
    int n = scandir(dir, &list, visible, alphasort);
    if (n < 0)
        return; /* no such directory: an empty part of the tree */
    if (dest != NULL && mkdir(dest, 0755) != 0 && errno != EEXIST)
        fail(wk, "cannot create", dest);
    for (int i = 0; i < n; i++) {
        char path[4096], sub[4096], to[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, list[i]->d_name);
        snprintf(sub, sizeof(sub), "%s/%s", rel, list[i]->d_name);
        if (dest != NULL)
            snprintf(to, sizeof(to), "%s/%s", dest, list[i]->d_name);
        if (stat(path, &st) == 0) {
            if (S_ISDIR(st.st_mode))
                take_dir(wk, path, sub, dest != NULL ? to : NULL);
            else if (S_ISREG(st.st_mode))
                take_file(wk, path, sub, dest != NULL ? to : NULL);
        }
        free(list[i]);
    }
    free(list);
}

static void take_tree(walk_t *wk, const char *app_dir, const char *dest)
{
    char dir[4096], to[4096];
    static const char *const parts[] = {"routes", "scripts"};
    wk->hash = FNV_OFFSET;
    for (size_t i = 0; i < 2; i++) {
        snprintf(dir, sizeof(dir), "%s/%s", app_dir, parts[i]);
        if (dest != NULL)
            snprintf(to, sizeof(to), "%s/%s", dest, parts[i]);
        take_dir(wk, dir, parts[i], dest != NULL ? to : NULL);
    }
}

int tr_snapshot_take(const char *app_dir, const char *dest, uint64_t *hash, char *err, size_t err_size)
{
    walk_t wk = {.err = err, .err_size = err_size};
    tr_snapshot_remove(dest);
    if (mkdir(dest, 0755) != 0) {
        errno = errno ? errno : EIO;
        fail(&wk, "cannot create", dest);
        return -1;
    }
    take_tree(&wk, app_dir, dest);
    *hash = wk.hash;
    return wk.failed ? -1 : 0;
}

uint64_t tr_snapshot_tree_hash(const char *app_dir)
{
    char err[16];
    walk_t wk = {.err = err, .err_size = sizeof(err)};
    take_tree(&wk, app_dir, NULL);
    return wk.hash;
}

void tr_snapshot_remove(const char *dir)
{
    struct dirent **list;
    int n = scandir(dir, &list, NULL, alphasort);
    if (n < 0) {
        unlink(dir);
        return;
    }
    for (int i = 0; i < n; i++) {
        const char *name = list[i]->d_name;
        if (strcmp(name, ".") != 0 && strcmp(name, "..") != 0) {
            char path[4096];
            struct stat st;
            snprintf(path, sizeof(path), "%s/%s", dir, name);
            if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
                tr_snapshot_remove(path);
            else
                unlink(path);
        }
        free(list[i]);
    }
    free(list);
    rmdir(dir);
}
