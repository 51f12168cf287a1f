/*
 * In-process request API for handler specs and C unit tests (built into libtriage_test.so and the
 * unit test runner, not into the server). Its FFI half (tr_ffi_test_*) is declared in
 * lua/triage/cdef.h; this header adds what only C tests use.
 */
#ifndef TR_TESTING_H
#define TR_TESTING_H

#include "conn.h"

/* The connection server the test API runs requests through (its pools are the ones to watch). */
tr_conn_server_t *tr_testing_server(void);

#endif
