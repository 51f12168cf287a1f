/*
 * Strict JSON (RFC 8259) for request bodies: the checks lua-cjson does not make, in one pass.
 *
 * lua-cjson (with decode_invalid_numbers off, see ctx.lua) parses the structure; this pass rejects
 * what it would still let through or would refuse with a message that does not say why:
 *   - invalid UTF-8 anywhere (overlong forms, UTF-8-encoded surrogates U+D800-DFFF, code points above
 *     U+10FFFF, truncated sequences, stray continuation bytes);
 *   - a \u escape that is an unpaired surrogate; a control character (below U+0020) inside a string;
 *     a NUL byte outside one (lua-cjson stops reading at it);
 *   - outside strings: NaN and Infinity (any case, any sign), hexadecimal numbers, a leading '+' or
 *     leading zeros, any other number that is not RFC 8259's grammar (1., .5, 1.e5), and numbers
 *     that overflow a double (1e999; underflow, 1e-400, rounds to 0 as RFC 8259 allows).
 * Anything else wrong with the text (structure, unknown words, a bad escape) is left to the decoder.
 */
#ifndef TR_JSON_CHECK_H
#define TR_JSON_CHECK_H

#include <stddef.h>

/* NULL if s[0..len) passes; else a static message naming the problem, with *at the position of the
 * byte where it starts, counted from 1 (as lua-cjson counts characters in its messages). */
const char *tr_json_check(const char *s, size_t len, size_t *at);

#endif
