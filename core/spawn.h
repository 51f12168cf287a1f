/*
 * Child processes that run another program (the --reload-check command).
 *
 * A child starts clean, whatever the master has set for itself: every signal back to its default
 * disposition (the master ignores SIGPIPE, and blocks the signals its signalfd reads) and an empty
 * signal mask, so a shell pipeline inside the command behaves as it does in a terminal. An exec that
 * fails is reported to the caller through a close-on-exec pipe, not discovered later as exit 127.
 */
#ifndef TR_SPAWN_H
#define TR_SPAWN_H

#include <stddef.h>
#include <sys/types.h>

typedef struct tr_spawn_opts_s {
    const char *cwd;      /* working directory; NULL: the caller's */
    int stdout_fd;        /* becomes the child's standard output and error; -1: inherited */
    const char *env_name; /* one variable to set in the child (NULL: none) */
    const char *env_value;
    int new_process_group; /* the child leads a process group of its own (kill(-pid) reaches all) */
} tr_spawn_opts_t;

/*
 * Fork a child that reports back through a pipe (close-on-exec). In the child, returns 0 with *fd the
 * pipe's write end; in the parent, the child's pid with *fd the read end (the other end is closed on
 * each side). Returns -1 with a message in err when the pipe or the fork fails.
 */
pid_t tr_spawn_fork_piped(int *fd, char *err, size_t err_size);

/* Run `/bin/sh -c command` as a child. Returns its pid, or -1 with a message in err (fork failed, the
 * working directory cannot be entered, or sh could not be executed). Standard input is /dev/null. */
pid_t tr_spawn_shell(const char *command, const tr_spawn_opts_t *opts, char *err, size_t err_size);

#endif
