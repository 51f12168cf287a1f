/*
 * The master process: opens the sockets, starts and supervises the workers, answers the admin
 * listener, and (re)loads the application: every new generation is preflighted here, in a scratch
 * state, before any worker is told about it.
 */
#ifndef TR_MASTER_H
#define TR_MASTER_H

#include "config.h"

/* Run the server; returns the process exit code. */
int tr_master_run(const tr_config_t *cfg);

#endif
