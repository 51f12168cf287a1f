/*
 * A worker process: one libev loop, one listening socket (its slot's), its connections, where its
 * requests wait, and the generations of the Lua application it runs. Workers share nothing in
 * memory but their stats slot.
 */
#ifndef TR_WORKER_H
#define TR_WORKER_H

#include "config.h"
#include "shared.h"

/* Run a worker until it is told to stop; returns the process exit code. handoff_fds: the slot's
 * socket pair for connections handed from one of its workers to the next (see guard.h). */
int tr_worker_run(const tr_config_t *cfg, int slot, int listen_fd, const int handoff_fds[2], tr_shared_t *shared);

#endif
