/*
 * A tiny unit-test harness for the C core, after libuv's test/task.h and test-list.h.
 *
 * A test is a function defined with TEST_IMPL(name) in one of the spec/c/test_*.c files and
 * registered once, in the TEST_LIST of test_main.c (tests.cmake reads that list to declare one ctest
 * test per entry). The runner, triage_unit, runs one test by name, or every test ("all", each in a
 * child process), and exits non-zero on failure.
 *
 * A failed ASSERT* prints "file:line: the failing expression" (with the values compared, for the
 * typed forms) and ends the test at once.
 */
#ifndef TR_TEST_H
#define TR_TEST_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define TEST_IMPL(name) void run_test_##name(void)

/* Report a failure and leave the running test (does not return). */
void tr_test_fail(const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

/* Byte helpers for the assertions below. */
int tr_test_mem_eq(const void *p, size_t len, const char *s);
int tr_test_contains(const void *hay, size_t hay_len, const char *needle);

#define ASSERT(expr)                                                                                                   \
    do {                                                                                                               \
        if (!(expr))                                                                                                   \
            tr_test_fail(__FILE__, __LINE__, #expr, NULL);                                                             \
    } while (0)

#define ASSERT_INT_EQ(a, b)                                                                                            \
    do {                                                                                                               \
        long long a_ = (long long)(a), b_ = (long long)(b);                                                            \
        if (a_ != b_)                                                                                                  \
            tr_test_fail(__FILE__, __LINE__, #a " == " #b, "%lld != %lld", a_, b_);                                    \
    } while (0)

#define ASSERT_UINT_EQ(a, b)                                                                                           \
    do {                                                                                                               \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);                                 \
        if (a_ != b_)                                                                                                  \
            tr_test_fail(__FILE__, __LINE__, #a " == " #b, "%llu != %llu", a_, b_);                                    \
    } while (0)

#define ASSERT_PTR_EQ(a, b)                                                                                            \
    do {                                                                                                               \
        const void *a_ = (a), *b_ = (b);                                                                               \
        if (a_ != b_)                                                                                                  \
            tr_test_fail(__FILE__, __LINE__, #a " == " #b, "%p != %p", a_, b_);                                        \
    } while (0)

#define ASSERT_PTR_NE(a, b)                                                                                            \
    do {                                                                                                               \
        const void *a_ = (a), *b_ = (b);                                                                               \
        if (a_ == b_)                                                                                                  \
            tr_test_fail(__FILE__, __LINE__, #a " != " #b, "both %p", a_);                                             \
    } while (0)

#define ASSERT_NULL(a) ASSERT_PTR_EQ(a, NULL)
#define ASSERT_NOT_NULL(a) ASSERT_PTR_NE(a, NULL)

/* Two NUL-terminated strings. */
#define ASSERT_STR_EQ(a, b)                                                                                            \
    do {                                                                                                               \
        const char *a_ = (a), *b_ = (b);                                                                               \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                                                           \
            tr_test_fail(__FILE__, __LINE__, #a " == " #b, "\"%s\" != \"%s\"", a_ ? a_ : "(null)",                     \
                         b_ ? b_ : "(null)");                                                                          \
    } while (0)

/* Bytes (p, len) equal to the NUL-terminated string s; p may be NULL (then it fails). */
#define ASSERT_MEM_EQ(p, len, s)                                                                                       \
    do {                                                                                                               \
        const char *p_ = (const char *)(p);                                                                            \
        size_t l_ = (size_t)(len);                                                                                     \
        const char *s_ = (s);                                                                                          \
        if (!tr_test_mem_eq(p_, l_, s_))                                                                               \
            tr_test_fail(__FILE__, __LINE__, #p "[0.." #len ") == " #s, "\"%.*s\" (%zu bytes) != \"%s\"",              \
                         p_ ? (int)l_ : 6, p_ ? p_ : "(null)", l_, s_);                                                \
    } while (0)

/* The NUL-terminated string hay contains needle. */
#define ASSERT_STR_CONTAINS(hay, needle)                                                                               \
    do {                                                                                                               \
        const char *h_ = (hay), *n_ = (needle);                                                                        \
        if (h_ == NULL || strstr(h_, n_) == NULL)                                                                      \
            tr_test_fail(__FILE__, __LINE__, #hay " contains " #needle, "\"%s\" lacks \"%s\"", h_ ? h_ : "(null)",     \
                         n_);                                                                                          \
    } while (0)

/* Bytes (p, len) contain / do not contain needle. */
#define ASSERT_MEM_CONTAINS(p, len, needle)                                                                            \
    do {                                                                                                               \
        const char *p_ = (const char *)(p), *n_ = (needle);                                                            \
        size_t l_ = (size_t)(len);                                                                                     \
        if (p_ == NULL || !tr_test_contains(p_, l_, n_))                                                               \
            tr_test_fail(__FILE__, __LINE__, #p " contains " #needle, "\"%.*s\" lacks \"%s\"", p_ ? (int)l_ : 0,       \
                         p_ ? p_ : "", n_);                                                                            \
    } while (0)

#define ASSERT_MEM_LACKS(p, len, needle)                                                                               \
    do {                                                                                                               \
        const char *p_ = (const char *)(p), *n_ = (needle);                                                            \
        size_t l_ = (size_t)(len);                                                                                     \
        if (p_ == NULL || tr_test_contains(p_, l_, n_))                                                                \
            tr_test_fail(__FILE__, __LINE__, #p " lacks " #needle, "\"%.*s\" has \"%s\"", p_ ? (int)l_ : 0,            \
                         p_ ? p_ : "", n_);                                                                            \
    } while (0)

#endif
