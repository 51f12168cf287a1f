/*
 * triage_unit: the runner of the C unit tests.
 *
 *   triage_unit NAME    run one test in this process; exit 0 if it passed, 1 if it failed
 *   triage_unit all     run every test, each in a child process (TAP output); exit 1 if any failed
 *   triage_unit --list  print the test names
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

/*
 * Every test, registered here and only here. tests.cmake reads the TEST_ENTRY(...) lines of this list
 * (one per line) to add one ctest test, c_<name>, per entry.
 */
#define TEST_LIST(TEST_ENTRY)                                                                                          \
    TEST_ENTRY(router_static)                                                                                          \
    TEST_ENTRY(router_root)                                                                                            \
    TEST_ENTRY(router_params)                                                                                          \
    TEST_ENTRY(router_catch_all)                                                                                       \
    TEST_ENTRY(router_priority)                                                                                        \
    TEST_ENTRY(router_backtracking)                                                                                    \
    TEST_ENTRY(router_head_fallback)                                                                                   \
    TEST_ENTRY(router_method_not_allowed)                                                                              \
    TEST_ENTRY(router_allow)                                                                                           \
    TEST_ENTRY(router_allow_truncated)                                                                                 \
    TEST_ENTRY(router_allow_no_path)                                                                                   \
    TEST_ENTRY(router_malformed)                                                                                       \
    TEST_ENTRY(router_conflict_duplicate)                                                                              \
    TEST_ENTRY(router_conflict_names)                                                                                  \
    TEST_ENTRY(router_trailing_slash)                                                                                  \
    TEST_ENTRY(router_many_routes)                                                                                     \
    TEST_ENTRY(router_method_index)                                                                                    \
    TEST_ENTRY(pool_reuse)                                                                                             \
    TEST_ENTRY(pool_keeps_contents)                                                                                    \
    TEST_ENTRY(pool_destroy)                                                                                           \
    TEST_ENTRY(pool_trim)                                                                                              \
    TEST_ENTRY(buf_size_classes)                                                                                       \
    TEST_ENTRY(buf_grow_preserves_data)                                                                                \
    TEST_ENTRY(buf_too_big)                                                                                            \
    TEST_ENTRY(buf_reserve_overflow)                                                                                   \
    TEST_ENTRY(buf_release_clears)                                                                                     \
    TEST_ENTRY(mem_counter)                                                                                            \
    TEST_ENTRY(mem_counter_pool_reuse)                                                                                 \
    TEST_ENTRY(lua_alloc_counts)                                                                                       \
    TEST_ENTRY(lua_alloc_limit)                                                                                        \
    TEST_ENTRY(lua_alloc_unarmed)                                                                                      \
    TEST_ENTRY(lua_alloc_states_share_the_limit)                                                                       \
    TEST_ENTRY(wait_deadlines_in_order)                                                                                \
    TEST_ENTRY(wait_wake_before_deadline)                                                                              \
    TEST_ENTRY(wait_cancel)                                                                                            \
    TEST_ENTRY(wait_park_again_from_resume)                                                                            \
    TEST_ENTRY(sha256_vectors)                                                                                         \
    TEST_ENTRY(audit_canonical)                                                                                        \
    TEST_ENTRY(audit_hash)                                                                                             \
    TEST_ENTRY(jwt_rfc_vector)                                                                                         \
    TEST_ENTRY(jwt_tampered)                                                                                           \
    TEST_ENTRY(jwt_alg)                                                                                                \
    TEST_ENTRY(jwt_malformed)                                                                                          \
    TEST_ENTRY(jwt_time_claims)                                                                                        \
    TEST_ENTRY(jwt_rotation_and_kid)                                                                                   \
    TEST_ENTRY(jwt_sign_verifies)                                                                                      \
    TEST_ENTRY(jwt_key_file)                                                                                           \
    TEST_ENTRY(privilege_resolve)                                                                                      \
    TEST_ENTRY(privilege_drop)                                                                                         \
    TEST_ENTRY(privilege_check)                                                                                        \
    TEST_ENTRY(metrics_route_slots)                                                                                    \
    TEST_ENTRY(metrics_count)                                                                                          \
    TEST_ENTRY(metrics_render)                                                                                         \
    TEST_ENTRY(log_json_escape)                                                                                        \
    TEST_ENTRY(http_get)                                                                                               \
    TEST_ENTRY(http_header_at)                                                                                         \
    TEST_ENTRY(http_not_found)                                                                                         \
    TEST_ENTRY(http_method_not_allowed)                                                                                \
    TEST_ENTRY(http_chunked_body)                                                                                      \
    TEST_ENTRY(http_chunked_trailers)                                                                                  \
    TEST_ENTRY(http_content_length_body)                                                                               \
    TEST_ENTRY(http_incomplete)                                                                                        \
    TEST_ENTRY(http_limit_uri)                                                                                         \
    TEST_ENTRY(http_limit_header)                                                                                      \
    TEST_ENTRY(http_limit_body)                                                                                        \
    TEST_ENTRY(http_limit_chunked_body)                                                                                \
    TEST_ENTRY(http_bad_request)                                                                                       \
    TEST_ENTRY(http_expect)                                                                                            \
    TEST_ENTRY(http_response)                                                                                          \
    TEST_ENTRY(http_response_status)                                                                                   \
    TEST_ENTRY(http_response_head)                                                                                     \
    TEST_ENTRY(http_response_204)                                                                                      \
    TEST_ENTRY(http_connection)                                                                                        \
    TEST_ENTRY(http_resp_header_rejects)                                                                               \
    TEST_ENTRY(http_resp_header_too_large)                                                                             \
    TEST_ENTRY(http_resp_reset)                                                                                        \
    TEST_ENTRY(http_stale_serial)                                                                                      \
    TEST_ENTRY(http_stale_serial_reuse)                                                                                \
    TEST_ENTRY(http_no_alloc_after_warmup)                                                                             \
    TEST_ENTRY(http_pooled_buffers_cleared)                                                                            \
    TEST_ENTRY(http_strict_refusals)                                                                                   \
    TEST_ENTRY(http_strict_accepts)                                                                                    \
    TEST_ENTRY(http_strict_bytewise)                                                                                   \
    TEST_ENTRY(http_final_status)                                                                                      \
    TEST_ENTRY(json_valid)                                                                                             \
    TEST_ENTRY(json_utf8)                                                                                              \
    TEST_ENTRY(json_nan_infinity)                                                                                      \
    TEST_ENTRY(json_numbers)                                                                                           \
    TEST_ENTRY(json_range)                                                                                             \
    TEST_ENTRY(json_strings)                                                                                           \
    TEST_ENTRY(json_ffi_check)

#define TEST_DECLARE_(name) TEST_IMPL(name);
TEST_LIST(TEST_DECLARE_)

typedef struct test_entry_s {
    const char *name;
    void (*run)(void);
} test_entry_t;

#define TEST_ROW_(name) {#name, run_test_##name},
static const test_entry_t tests[] = {TEST_LIST(TEST_ROW_)};
#define NTESTS (sizeof(tests) / sizeof(tests[0]))

#define TEST_TIMEOUT_SECONDS 60

static jmp_buf test_exit;

void tr_test_fail(const char *file, int line, const char *expr, const char *fmt, ...)
{
    fprintf(stderr, "%s:%d: assertion failed: %s", file, line, expr);
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        fputs(": ", stderr);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    fputc('\n', stderr);
    fflush(stderr);
    longjmp(test_exit, 1);
}

int tr_test_mem_eq(const void *p, size_t len, const char *s)
{
    return p != NULL && s != NULL && strlen(s) == len && memcmp(p, s, len) == 0;
}

int tr_test_contains(const void *hay, size_t hay_len, const char *needle)
{
    return memmem(hay, hay_len, needle, strlen(needle)) != NULL;
}

/* Run one test here; returns 0 if it passed. */
static int run_one(const test_entry_t *t)
{
    alarm(TEST_TIMEOUT_SECONDS);
    if (setjmp(test_exit) != 0)
        return 1;
    t->run();
    return 0;
}

static int run_all(void)
{
    unsigned failed = 0;
    printf("1..%zu\n", NTESTS);
    for (size_t i = 0; i < NTESTS; i++) {
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0)
            _exit(run_one(&tests[i]));
        int status;
        while (waitpid(pid, &status, 0) < 0)
            ;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            printf("ok %zu - %s\n", i + 1, tests[i].name);
        } else {
            failed++;
            if (WIFSIGNALED(status))
                printf("not ok %zu - %s (killed by signal %d: %s)\n", i + 1, tests[i].name, WTERMSIG(status),
                       strsignal(WTERMSIG(status)));
            else
                printf("not ok %zu - %s\n", i + 1, tests[i].name);
        }
    }
    printf("# %zu tests, %zu passed, %u failed\n", NTESTS, NTESTS - failed, failed);
    return failed ? 1 : 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: triage_unit NAME | all | --list\n");
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        usage(stderr);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < NTESTS; i++)
            printf("%s\n", tests[i].name);
        return 0;
    }
    if (strcmp(argv[1], "all") == 0)
        return run_all();
    for (size_t i = 0; i < NTESTS; i++) {
        if (strcmp(argv[1], tests[i].name) == 0) {
            int rc = run_one(&tests[i]);
            printf("%s - %s\n", rc ? "not ok" : "ok", tests[i].name);
            return rc;
        }
    }
    fprintf(stderr, "triage_unit: no test named '%s' (see triage_unit --list)\n", argv[1]);
    return 2;
}
