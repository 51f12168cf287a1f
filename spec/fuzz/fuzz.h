/*
 * What the libFuzzer harnesses share: an invariant check that aborts with its place (so libFuzzer
 * saves the input), and the routes of the sample app, in a router.
 */
#ifndef TR_FUZZ_H
#define TR_FUZZ_H

#include <stdio.h>
#include <stdlib.h>

#include "router.h"

#define FUZZ_CHECK(cond)                                                                                               \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);                               \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

/* A router with routes of every kind (static, parameter, catch-all, several methods). */
tr_router_t *fuzz_sample_router(void);

#endif
