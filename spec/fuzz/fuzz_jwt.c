/*
 * libFuzzer harness: bearer token verification (core/jwt.c), which reads whatever a client puts after
 * "Authorization: Bearer". The first byte picks the mode:
 * - even: the rest is a token, verified against two keys;
 * - odd: the rest is a payload, signed with the first key (when it fits) and verified back, then
 *   verified again with one byte of the token changed.
 *
 * Checked beyond the sanitizers: a verdict is one of the documented codes with a message; an accepted
 * token's payload is NUL-terminated within its buffer and no longer than TR_JWT_PAYLOAD_MAX; a token
 * signed here and accepted gives back exactly the payload signed; a token with a changed byte is never
 * accepted with a different payload.
 */
#include <stdint.h>
#include <string.h>

#include "fuzz.h"
#include "jwt.h"

#define NOW 1800000000.0

static tr_jwt_keys_t keys;

static void setup(void)
{
    if (keys.count != 0)
        return;
    keys.skew = TR_JWT_SKEW_DEFAULT;
    keys.count = 2;
    strcpy(keys.keys[0].kid, "k1");
    memset(keys.keys[0].secret, 'a', 32);
    keys.keys[0].secret_len = 32;
    strcpy(keys.keys[1].kid, "k2");
    memset(keys.keys[1].secret, 'b', 40);
    keys.keys[1].secret_len = 40;
}

static int verify(const char *token, size_t len, char *payload, size_t *payload_len)
{
    const char *why = NULL;
    int rc = tr_jwt_verify(&keys, token, len, NOW, payload, TR_JWT_PAYLOAD_MAX + 1, payload_len, &why);
    FUZZ_CHECK(why != NULL);
    FUZZ_CHECK(rc <= TR_JWT_OK && rc >= TR_JWT_NO_KEYS);
    if (rc == TR_JWT_OK) {
        FUZZ_CHECK(*payload_len <= TR_JWT_PAYLOAD_MAX);
        FUZZ_CHECK(payload[*payload_len] == '\0');
    }
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char payload[TR_JWT_PAYLOAD_MAX + 1], token[TR_JWT_TOKEN_MAX + 1];
    size_t payload_len;
    setup();
    if (size == 0)
        return 0;
    const char *rest = (const char *)data + 1;
    size_t len = size - 1;
    if ((data[0] & 1) == 0) {
        verify(rest, len, payload, &payload_len);
        return 0;
    }
    int n = tr_jwt_sign(&keys.keys[0], rest, len, token, sizeof(token));
    if (n < 0)
        return 0;
    FUZZ_CHECK((size_t)n < sizeof(token) && token[n] == '\0');
    if (verify(token, (size_t)n, payload, &payload_len) == TR_JWT_OK)
        FUZZ_CHECK(payload_len == len && memcmp(payload, rest, len) == 0);
    if (n > 0) {
        size_t at = (size_t)data[0] * 131 % (size_t)n;
        token[at] = (char)(token[at] == 'A' ? 'B' : 'A');
        if (verify(token, (size_t)n, payload, &payload_len) == TR_JWT_OK)
            FUZZ_CHECK(payload_len == len && memcmp(payload, rest, len) == 0); /* a change base64url ignores */
    }
    return 0;
}
