/*
 * Watching the application's code (in the master): inotify on routes/ and scripts/ (and every
 * directory under them, including ones created later), and spec/ when a --reload-check runs the app's
 * specs: a changed spec is checked against the code that serves as a new reload would be. A burst of changes (an
 * editor's write and rename, a checkout) becomes one call to on_change, once the files have been quiet for a moment.
 */
#ifndef TR_WATCH_H
#define TR_WATCH_H

#include <ev.h>

typedef struct tr_watch_s {
    struct ev_loop *loop;
    const char *app_dir;
    int with_spec; /* spec/ is watched too */
    int fd;        /* the inotify descriptor, -1 when not watching */
    ev_io io;
    ev_timer debounce;
    void (*on_change)(void *data);
    void *data;
} tr_watch_t;

/* Start watching app_dir's code (and its spec/ when with_spec). Returns 0, or -errno (nothing is
 * watched; on_change never comes). */
int tr_watch_start(tr_watch_t *w, struct ev_loop *loop, const char *app_dir, int with_spec,
                   void (*on_change)(void *data), void *data);

/* Stop watching and close the descriptor (also what a forked worker does with the master's copy). */
void tr_watch_stop(tr_watch_t *w);

#endif
