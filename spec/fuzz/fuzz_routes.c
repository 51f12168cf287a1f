/* The routes the HTTP and connection harnesses route with. */
#include <string.h>

#include "fuzz.h"

tr_router_t *fuzz_sample_router(void)
{
    static const char *const routes[][2] = {
        {"GET", "/api/v1/protocols/:id"},
        {"POST", "/api/epro/submit"},
        {"POST", "/api/v1/tags/add"},
        {"GET", "/api/v1/sleep"},
        {"GET", "/api/v1/secure/protocols/:id"},
        {"GET", "/files/*rest"},
        {"GET", "/files/static"},
        {"PUT", "/a/:x/b/:y"},
        {"DELETE", "/a/:x"},
        {"GET", "/"},
    };
    tr_router_t *r = tr_router_new();
    char err[256];
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        FUZZ_CHECK(tr_router_add(r, routes[i][0], routes[i][1], strlen(routes[i][1]), (int)i, err, sizeof(err)) == 0);
    return r;
}
