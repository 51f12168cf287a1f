#include "watch.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEBOUNCE 0.03 /* seconds of quiet after the last change */

static void watch_tree(tr_watch_t *w, const char *dir)
{
    if (inotify_add_watch(w->fd, dir,
                          IN_CLOSE_WRITE | IN_MODIFY | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE |
                              IN_DELETE_SELF | IN_ONLYDIR) < 0)
        return;
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
            watch_tree(w, path);
    }
    closedir(d);
}

static int counts_for_reload(const struct inotify_event *ev)
{
    if (ev->mask & (IN_ISDIR | IN_DELETE_SELF))
        return 1;
    if (ev->len == 0)
        return 0;
    size_t n = strlen(ev->name);
    return n > 4 && strcmp(ev->name + n - 4, ".lua") == 0 && ev->name[0] != '.';
}

static void watch_code(tr_watch_t *w)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/routes", w->app_dir);
    watch_tree(w, path);
    snprintf(path, sizeof(path), "%s/scripts", w->app_dir);
    watch_tree(w, path);
    if (w->with_spec) {
        snprintf(path, sizeof(path), "%s/spec", w->app_dir);
        watch_tree(w, path);
    }
}

static void on_debounce(struct ev_loop *loop, ev_timer *t, int revents)
{
    tr_watch_t *w = t->data;
    (void)loop, (void)revents;
    w->on_change(w->data);
}

static void on_inotify(struct ev_loop *loop, ev_io *io, int revents)
{
    tr_watch_t *w = io->data;
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    (void)revents;
    int changed = 0, rescan = 0;
    ssize_t n;
    while ((n = read(w->fd, buf, sizeof(buf))) > 0) {
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            changed |= counts_for_reload(ev);
            rescan |= (ev->mask & IN_ISDIR) && (ev->mask & (IN_CREATE | IN_MOVED_TO));
            p += sizeof(*ev) + ev->len;
        }
    }
    if (rescan)
        watch_code(w);
    if (changed) {
        /* A burst of saves (an editor's write + rename, a checkout) becomes one reload. */
        ev_timer_stop(loop, &w->debounce);
        ev_timer_set(&w->debounce, DEBOUNCE, 0.);
        ev_timer_start(loop, &w->debounce);
    }
}

int tr_watch_start(tr_watch_t *w, struct ev_loop *loop, const char *app_dir, int with_spec,
                   void (*on_change)(void *data), void *data)
{
    w->loop = loop;
    w->app_dir = app_dir;
    w->with_spec = with_spec;
    w->on_change = on_change;
    w->data = data;
    ev_timer_init(&w->debounce, on_debounce, DEBOUNCE, 0.);
    w->debounce.data = w;
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd < 0)
        return -errno;
    watch_code(w);
    ev_io_init(&w->io, on_inotify, w->fd, EV_READ);
    w->io.data = w;
    ev_io_start(loop, &w->io);
    return 0;
}

void tr_watch_stop(tr_watch_t *w)
{
    if (w->loop != NULL) {
        ev_io_stop(w->loop, &w->io);
        ev_timer_stop(w->loop, &w->debounce);
    }
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
}
