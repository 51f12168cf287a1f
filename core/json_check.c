/*
 * Strict JSON (RFC 8259) for request bodies: one pass over the body, before lua-cjson decodes it.
 * See json_check.h for what is checked here and what is left to the decoder.
 *
 * The pass tracks only whether it is inside a string. Inside one it validates UTF-8, \u surrogate
 * pairs and control characters; outside, it validates UTF-8 and reads every word made of
 * [0-9A-Za-z+-.] as a token: a number, a literal (true, false, null) or something the decoder will
 * refuse. For valid JSON this tokenization is exact; for invalid JSON the first problem found here
 * may differ from the decoder's, but either way the body is refused.
 */
#include "json_check.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ffi_cdef.h"

static const char MSG_UTF8[] = "invalid UTF-8";
static const char MSG_NAN_INF[] = "NaN and Infinity are not JSON";
static const char MSG_HEX[] = "hexadecimal numbers are not JSON";
static const char MSG_RANGE[] = "number out of range";
static const char MSG_PLUS[] = "a number cannot start with '+'";
static const char MSG_LEADING_ZERO[] = "leading zeros are not allowed in numbers";
static const char MSG_NUMBER[] = "invalid number";
static const char MSG_SURROGATE[] = "unpaired surrogate in a \\u escape";
static const char MSG_CONTROL[] = "control character in a string";
static const char MSG_NUL[] = "NUL byte";

/* The length of the valid UTF-8 sequence starting at p (a byte >= 0x80), or 0 (Unicode Table 3-7). */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xBF; /* the range of the second byte */
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* U+D800-DFFF */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else
        return 0; /* a continuation byte, C0, C1 (overlong) or F5-FF */
    if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    return n;
}

static int is_digit(unsigned c)
{
    return c >= '0' && c <= '9';
}

static int is_alpha(unsigned c)
{
    return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
}

static int is_token(unsigned c)
{
    return is_digit(c) || is_alpha(c) || c == '+' || c == '-' || c == '.';
}

/* The 4 hex digits at p as a number, or -1. */
static long hex4(const unsigned char *p, const unsigned char *end)
{
    long v = 0;
    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (is_digit(c))
            d = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            d = (c | 0x20) - 'a' + 10;
        else
            return -1;
        v = v * 16 + (long)d;
    }
    return v;
}

static int word_is(const unsigned char *p, size_t n, const char *w)
{
    return strlen(w) == n && strncasecmp((const char *)p, w, n) == 0;
}

/*
 * Whether a number of RFC 8259's grammar (p..end, after any '-') overflows a double. Its value is
 * d.ddd x 10^E, E the decimal exponent of its first significant digit: below 308 it fits, above it
 * does not, and at 308 strtod decides on the significant digits (enough of them for an exact answer:
 * the overflow threshold, DBL_MAX plus half an ulp, is an integer of 309 digits).
 */
static int number_overflows(const unsigned char *p, const unsigned char *end)
{
    const unsigned char *int_start = p, *int_end, *frac_start = NULL, *frac_end = NULL, *first = NULL;
    long long lead = 0, exp = 0;
    while (p < end && is_digit(*p))
        p++;
    int_end = p;
    if (p < end && *p == '.') {
        frac_start = ++p;
        while (p < end && is_digit(*p))
            p++;
        frac_end = p;
    }
    for (const unsigned char *q = int_start; q < int_end && first == NULL; q++)
        if (*q != '0') {
            first = q;
            lead = (long long)(int_end - q) - 1;
        }
    for (const unsigned char *q = frac_start; q != NULL && q < frac_end && first == NULL; q++)
        if (*q != '0') {
            first = q;
            lead = -(long long)(q - frac_start) - 1;
        }
    if (first == NULL)
        return 0;  /* zero, whatever its exponent */
    if (p < end) { /* [eE][+-]?digits */
        int neg = 0;
        p++;
        if (*p == '+' || *p == '-')
            neg = *p++ == '-';
        for (; p < end; p++)
            if (exp < 1000000000)
                exp = exp * 10 + (*p - '0');
        if (neg)
            exp = -exp;
    }
    long long e = lead + exp;
    if (e != 308)
        return e > 308;

    char buf[400];
    size_t n = 0;
    int sticky = 0;
    for (const unsigned char *q = first; q < (frac_end ? frac_end : int_end); q++) {
        if (*q == '.')
            continue;
        if (n < 360)
            buf[n++] = (char)*q;
        else if (*q != '0')
            sticky = 1;
    }
    if (sticky)
        buf[n++] = '1'; /* keeps the rounding of the digits left out */
    snprintf(buf + n, sizeof buf - n, "e%d", 308 - (int)(n - 1));
    return isinf(strtod(buf, NULL));
}

/* The problem with the token t[0..n) found outside strings, or NULL. */
static const char *check_token(const unsigned char *t, size_t n)
{
    const unsigned char *p = t, *end = t + n;
    int plus = 0;
    if (*p == '+' || *p == '-')
        plus = *p++ == '+';
    size_t rn = (size_t)(end - p);
    if (word_is(p, rn, "nan") || word_is(p, rn, "inf") || word_is(p, rn, "infinity"))
        return MSG_NAN_INF;
    if (p == t && is_alpha(*p))
        return NULL; /* true, false, null, or a word the decoder refuses */
    if (plus)
        return MSG_PLUS;
    if (rn >= 2 && p[0] == '0' && (p[1] | 0x20) == 'x')
        return MSG_HEX;
    if (rn >= 2 && p[0] == '0' && is_digit(p[1]))
        return MSG_LEADING_ZERO;
    /* int frac? exp? */
    const unsigned char *q = p;
    if (q == end || !is_digit(*q))
        return MSG_NUMBER;
    while (q < end && is_digit(*q))
        q++;
    if (q < end && *q == '.') {
        q++;
        if (q == end || !is_digit(*q))
            return MSG_NUMBER;
        while (q < end && is_digit(*q))
            q++;
    }
    if (q < end && (*q | 0x20) == 'e') {
        q++;
        if (q < end && (*q == '+' || *q == '-'))
            q++;
        if (q == end || !is_digit(*q))
            return MSG_NUMBER;
        while (q < end && is_digit(*q))
            q++;
    }
    if (q != end)
        return MSG_NUMBER;
    return number_overflows(p, end) ? MSG_RANGE : NULL;
}

const char *tr_json_check(const char *s, size_t len, size_t *at)
{
    const unsigned char *start = (const unsigned char *)s, *p = start, *end = start + len, *bad;
    const char *msg;
    size_t n;

    while (p < end) {
        unsigned c = *p;
        if (c == '"') {
            p++;
            while (p < end) {
                c = *p;
                if (c == '"') {
                    p++;
                    break;
                }
                if (c >= 0x20 && c < 0x80 && c != '\\') {
                    p++;
                } else if (c >= 0x80) {
                    if ((n = utf8_len(p, end)) == 0) {
                        bad = p, msg = MSG_UTF8;
                        goto fail;
                    }
                    p += n;
                } else if (c < 0x20) {
                    bad = p, msg = MSG_CONTROL;
                    goto fail;
                } else if (p + 1 < end && p[1] == 'u') {
                    long u = hex4(p + 2, end);
                    if (u >= 0xDC00 && u <= 0xDFFF) {
                        bad = p, msg = MSG_SURROGATE;
                        goto fail;
                    }
                    if (u >= 0xD800 && u <= 0xDBFF) {
                        long lo = end - p >= 12 && p[6] == '\\' && p[7] == 'u' ? hex4(p + 8, end) : -1;
                        if (lo < 0xDC00 || lo > 0xDFFF) {
                            bad = p, msg = MSG_SURROGATE;
                            goto fail;
                        }
                        p += 12;
                    } else
                        p += u < 0 ? 2 : 6; /* a bad escape is the decoder's to report */
                } else if (p + 1 < end && p[1] >= 0x20 && p[1] < 0x80) {
                    p += 2; /* \" \\ \/ \b \f \n \r \t, or a bad escape */
                } else {
                    p++; /* what follows is checked as it stands */
                }
            }
        } else if (c >= 0x80) {
            if ((n = utf8_len(p, end)) == 0) {
                bad = p, msg = MSG_UTF8;
                goto fail;
            }
            p += n;
        } else if (is_token(c)) {
            const unsigned char *t = p;
            while (p < end && is_token(*p))
                p++;
            if ((msg = check_token(t, (size_t)(p - t))) != NULL) {
                bad = t;
                goto fail;
            }
        } else if (c == 0) {
            bad = p, msg = MSG_NUL;
            goto fail;
        } else {
            p++;
        }
    }
    return NULL;

fail:
    *at = (size_t)(bad - start) + 1;
    return msg;
}

TR_FFI_EXPORT int tr_ffi_json_check(const char *s, size_t len, size_t *at, const char **errmsg)
{
    const char *msg = tr_json_check(s, len, at);
    if (msg == NULL)
        return TR_FFI_OK;
    *errmsg = msg;
    return TR_FFI_ERROR;
}
