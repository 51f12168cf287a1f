/*
 * The strict JSON check (core/json_check.c): what it refuses, where, and what it lets through.
 */
#include "json_check.h"

#include "ffi_cdef.h"
#include "test.h"

/* The message for s (NUL-terminated) or for s[0..len) when len > 0, and the byte it names. */
static const char *check_n(const char *s, size_t len, size_t *at)
{
    *at = 0;
    return tr_json_check(s, len, at);
}

static const char *check(const char *s, size_t *at)
{
    return check_n(s, strlen(s), at);
}

#define ASSERT_OK(s)                                                                                                   \
    do {                                                                                                               \
        size_t at_;                                                                                                    \
        const char *m_ = check(s, &at_);                                                                               \
        if (m_ != NULL)                                                                                                \
            tr_test_fail(__FILE__, __LINE__, "check(" #s ") passes", "%s at byte %zu", m_, at_);                       \
    } while (0)

#define ASSERT_REFUSED(s, msg, byte)                                                                                   \
    do {                                                                                                               \
        size_t at_;                                                                                                    \
        const char *m_ = check(s, &at_);                                                                               \
        if (m_ == NULL || strcmp(m_, msg) != 0 || at_ != (size_t)(byte))                                               \
            tr_test_fail(__FILE__, __LINE__, "check(" #s ")", "got %s at byte %zu, expected %s at byte %d",            \
                         m_ ? m_ : "(passes)", at_, msg, (int)(byte));                                                 \
    } while (0)

TEST_IMPL(json_valid)
{
    ASSERT_OK("{}");
    ASSERT_OK("[]");
    ASSERT_OK("{\"patientId\":\"P-0001\",\"reportData\":{\"q1\":3,\"ok\":true,\"no\":false,\"x\":null}}");
    ASSERT_OK("[0, -0, 1, -1, 0.5, -0.5e-10, 1e308, 1E+308, -1.7976931348623157e308, 123456789012345678901234]");
    ASSERT_OK("[1e-400, 0e999999, 0.000e400, -0.0e+400]");          /* underflow and zero: not out of range */
    ASSERT_OK("[100000000000000000000000000000000000000e270]");     /* 1e308, written long */
    ASSERT_OK("[0.00000000000000000000000000000000000000001e348]"); /* 1e307 */
    ASSERT_OK("\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf \xee\x80\x80\"");
    ASSERT_OK("\"\\u00e9 \\ud83d\\ude00 \\udbff\\udfff \\u0000 \\\" \\\\ \\/ \\b\\f\\n\\r\\t\"");
    ASSERT_OK("{\"NaN\":\"Infinity 0x1F 1e999 +1 01\"}"); /* words inside strings are not numbers */
    ASSERT_OK(" \t\r\n[ 1 , 2 ]\n");
}

TEST_IMPL(json_utf8)
{
    ASSERT_REFUSED("\"\xc0\xaf\"", "invalid UTF-8", 2);         /* overlong '/' */
    ASSERT_REFUSED("\"\xc1\xbf\"", "invalid UTF-8", 2);         /* overlong */
    ASSERT_REFUSED("\"\xe0\x80\xaf\"", "invalid UTF-8", 2);     /* overlong, 3 bytes */
    ASSERT_REFUSED("\"\xf0\x80\x80\xaf\"", "invalid UTF-8", 2); /* overlong, 4 bytes */
    ASSERT_REFUSED("\"ab\xed\xa0\x80\"", "invalid UTF-8", 4);   /* U+D800 */
    ASSERT_REFUSED("\"\xed\xbf\xbf\"", "invalid UTF-8", 2);     /* U+DFFF */
    ASSERT_REFUSED("\"\xf4\x90\x80\x80\"", "invalid UTF-8", 2); /* U+110000 */
    ASSERT_REFUSED("\"\xf5\x80\x80\x80\"", "invalid UTF-8", 2); /* F5 */
    ASSERT_REFUSED("\"\xff\"", "invalid UTF-8", 2);             /* FF */
    ASSERT_REFUSED("\"\xc3\"", "invalid UTF-8", 2);             /* truncated before the quote */
    ASSERT_REFUSED("\"\xe2\x82\"", "invalid UTF-8", 2);         /* truncated */
    ASSERT_REFUSED("\"\xf0\x9f\x98 x\"", "invalid UTF-8", 2);   /* truncated */
    ASSERT_REFUSED("\"a\x80\"", "invalid UTF-8", 3);            /* stray continuation byte */
    ASSERT_REFUSED("\"\xc3\xa9\xa9\"", "invalid UTF-8", 4);     /* one continuation too many */
    ASSERT_REFUSED("{\"a\":1}\xe9", "invalid UTF-8", 8);        /* outside strings too */
    ASSERT_REFUSED("[\"ok\"]\xf0\x9f", "invalid UTF-8", 7);     /* truncated at the very end */
    ASSERT_REFUSED("{\"\\\xc3\":1}", "invalid UTF-8", 4);       /* after a backslash */
}

TEST_IMPL(json_nan_infinity)
{
    ASSERT_REFUSED("NaN", "NaN and Infinity are not JSON", 1);
    ASSERT_REFUSED("[nan]", "NaN and Infinity are not JSON", 2);
    ASSERT_REFUSED("{\"a\":Infinity}", "NaN and Infinity are not JSON", 6);
    ASSERT_REFUSED("[-Infinity]", "NaN and Infinity are not JSON", 2);
    ASSERT_REFUSED("[-INF]", "NaN and Infinity are not JSON", 2);
    ASSERT_REFUSED("[+inf]", "NaN and Infinity are not JSON", 2);
    ASSERT_REFUSED("[1,iNfInItY]", "NaN and Infinity are not JSON", 4);
    ASSERT_REFUSED("[nan(123)]", "NaN and Infinity are not JSON", 2);
    ASSERT_OK("[nul]"); /* not a number: the decoder's to refuse */
}

TEST_IMPL(json_numbers)
{
    ASSERT_REFUSED("[0x1F]", "hexadecimal numbers are not JSON", 2);
    ASSERT_REFUSED("[-0X10]", "hexadecimal numbers are not JSON", 2);
    ASSERT_REFUSED("[+1]", "a number cannot start with '+'", 2);
    ASSERT_REFUSED("[01]", "leading zeros are not allowed in numbers", 2);
    ASSERT_REFUSED("[-007]", "leading zeros are not allowed in numbers", 2);
    ASSERT_REFUSED("[1.]", "invalid number", 2);
    ASSERT_REFUSED("[.5]", "invalid number", 2);
    ASSERT_REFUSED("[-.5]", "invalid number", 2);
    ASSERT_REFUSED("[1.e5]", "invalid number", 2);
    ASSERT_REFUSED("[1e]", "invalid number", 2);
    ASSERT_REFUSED("[1e+]", "invalid number", 2);
    ASSERT_REFUSED("[-]", "invalid number", 2);
    ASSERT_REFUSED("[1-2]", "invalid number", 2);
    ASSERT_REFUSED("[12abc]", "invalid number", 2);
}

TEST_IMPL(json_range)
{
    ASSERT_REFUSED("[1e999]", "number out of range", 2);
    ASSERT_REFUSED("[-1e400]", "number out of range", 2);
    ASSERT_REFUSED("{\"n\":[1,2,1E309]}", "number out of range", 11);
    ASSERT_REFUSED("[1e99999999999999999999999]", "number out of range", 2);
    ASSERT_REFUSED("[1000000000000000000000000000000000000000e270]", "number out of range", 2);
    ASSERT_REFUSED("[1.8e308]", "number out of range", 2);
    ASSERT_REFUSED("[1.7976931348623159e308]", "number out of range", 2); /* rounds up past DBL_MAX */
    ASSERT_OK("[1.7976931348623157e308]");                                /* DBL_MAX */
    ASSERT_OK("[1.7976931348623158e308]");                                /* rounds down to DBL_MAX */
    ASSERT_OK("[0.1e309]");
    ASSERT_OK("[10e307]");
    ASSERT_OK("[1e-99999999999999999999999]");

    /* At exactly 10^308 magnitude with more digits than the exact check keeps. */
    char big[1200];
    size_t n = 0;
    big[n++] = '[';
    big[n++] = '1';
    big[n++] = '.';
    for (int i = 0; i < 1000; i++)
        big[n++] = '7';
    memcpy(big + n, "e308]", 6);
    ASSERT_OK(big);
    big[2 + 1] = '8'; /* 1.87...e308 */
    ASSERT_REFUSED(big, "number out of range", 2);
}

TEST_IMPL(json_strings)
{
    ASSERT_REFUSED("[\"\\ud800\"]", "unpaired surrogate in a \\u escape", 3);
    ASSERT_REFUSED("[\"\\udc00\"]", "unpaired surrogate in a \\u escape", 3);
    ASSERT_REFUSED("[\"x\\uD83D\\u0041\"]", "unpaired surrogate in a \\u escape", 4);
    ASSERT_REFUSED("[\"\\ud83d\\ud83d\"]", "unpaired surrogate in a \\u escape", 3);
    ASSERT_REFUSED("[\"\\ud83dx\"]", "unpaired surrogate in a \\u escape", 3);
    ASSERT_REFUSED("[\"a\tb\"]", "control character in a string", 4);
    ASSERT_REFUSED("[\"a\x01\"]", "control character in a string", 4);
    ASSERT_OK("[\"\\u12\"]"); /* a bad escape: the decoder's to refuse */

    size_t at;
    const char *m = check_n("[1]\0garbage", 11, &at);
    ASSERT(m != NULL && strcmp(m, "NUL byte") == 0);
    ASSERT_UINT_EQ(at, 4);
    m = check_n("[\"a\0b\"]", 7, &at);
    ASSERT(m != NULL && strcmp(m, "control character in a string") == 0);
    ASSERT_UINT_EQ(at, 4);
    /* The check reads len bytes only: what follows the body does not count. */
    ASSERT(check_n("[12]34\xff", 4, &at) == NULL);
    ASSERT(check_n("[1e30", 5, &at) == NULL);
}

TEST_IMPL(json_ffi_check)
{
    size_t at = 0;
    const char *msg = NULL;
    ASSERT_INT_EQ(tr_ffi_json_check("{\"a\":[1,2]}", 11, &at, &msg), TR_FFI_OK);
    ASSERT_PTR_EQ(msg, NULL);
    ASSERT_INT_EQ(tr_ffi_json_check("{\"a\":0x1F}", 10, &at, &msg), TR_FFI_ERROR);
    ASSERT(strcmp(msg, "hexadecimal numbers are not JSON") == 0);
    ASSERT_UINT_EQ(at, 6);
    ASSERT_INT_EQ(tr_ffi_json_check("", 0, &at, &msg), TR_FFI_OK);
}
