/*
 * The server's status document (GET /_triage/status on the admin listener), rendered in the master
 * from the stats the workers publish in shared memory.
 */
#ifndef TR_STATUS_H
#define TR_STATUS_H

#include "pool.h"
#include "shared.h"

/* Append the /_triage/status JSON document to out. */
void tr_status_json(tr_bufpool_t *bp, tr_buf_t *out, const tr_shared_t *shared, int nworkers, double started_at);

/* Append s as a JSON string literal (quoted, escaped); NULL or "" gives null. */
void tr_status_json_string(tr_bufpool_t *bp, tr_buf_t *out, const char *s);

#endif
