/*
 * The admin listener's answers, rendered from the shared stats. Runs in the master.
 */
#ifndef TR_ADMIN_H
#define TR_ADMIN_H

#include "pool.h"
#include "shared.h"

/* Append the /_triage/status JSON document to out. */
void tr_admin_status_json(tr_bufpool_t *bp, tr_buf_t *out, const tr_shared_t *shared, int nworkers, double started_at);

/* Append s as a JSON string literal (quoted, escaped); NULL or "" gives null. */
void tr_admin_json_string(tr_bufpool_t *bp, tr_buf_t *out, const char *s);

#endif
