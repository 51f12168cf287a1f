/*
 * Bearer tokens for the application's users: JSON Web Tokens (RFC 7519) signed with HMAC-SHA256
 * (JWS "HS256", RFC 7515/7518), the MAC computed by libcrypto.
 *
 * A token is BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(signature), base64url without
 * padding. The header must be a JSON object with "alg": "HS256" (any other alg, "none" included, is
 * refused), an optional "typ": "JWT" and an optional "kid" naming the key. The payload must be a JSON
 * object with a numeric "exp" (a token that never expires is refused) and optionally "nbf".
 *
 * Keys come from a file of lines `KID SECRET` (blank lines and lines starting with '#' skipped),
 * at most TR_JWT_KEYS_MAX of them, each secret at least TR_JWT_SECRET_MIN bytes (RFC 7518 §3.2: a
 * key as long as the hash). Every key verifies, so an old key and its successor are both active
 * while clients move over; the first key signs (`triage token`). The master reads the file before the
 * workers are forked and drop privileges: the workers hold the keys in memory and never need to read
 * the file, which stays readable by its owner only.
 */
#ifndef TR_JWT_H
#define TR_JWT_H

#include <stddef.h>

#define TR_JWT_KEYS_MAX 16
#define TR_JWT_KID_MAX 64     /* longest key id, in bytes */
#define TR_JWT_SECRET_MIN 32  /* shortest secret, in bytes */
#define TR_JWT_SECRET_MAX 512 /* longest secret, in bytes */
#define TR_JWT_TOKEN_MAX 8192 /* longest token verified */
#define TR_JWT_PAYLOAD_MAX 4096
#define TR_JWT_SKEW_DEFAULT 60.0 /* seconds of clock difference allowed on exp and nbf */

typedef struct tr_jwt_key_s {
    char kid[TR_JWT_KID_MAX + 1];
    unsigned char secret[TR_JWT_SECRET_MAX];
    size_t secret_len;
} tr_jwt_key_t;

typedef struct tr_jwt_keys_s {
    int count;   /* 0: no key configured, every token is refused */
    double skew; /* seconds allowed past exp and before nbf */
    tr_jwt_key_t keys[TR_JWT_KEYS_MAX];
} tr_jwt_keys_t;

/* Why a token was refused: what the 401 names. */
enum {
    TR_JWT_OK = 0,
    TR_JWT_MALFORMED = -1,     /* not three base64url parts, bad base64url, not JSON objects, no exp */
    TR_JWT_BAD_ALG = -2,       /* alg other than HS256 */
    TR_JWT_BAD_SIGNATURE = -3, /* no key (kid unknown too) makes this signature */
    TR_JWT_EXPIRED = -4,       /* now > exp + skew */
    TR_JWT_NOT_YET_VALID = -5, /* now < nbf - skew */
    TR_JWT_NO_KEYS = -6        /* no key configured */
};

/*
 * Read the key file at path into keys (skew set to TR_JWT_SKEW_DEFAULT). The file must be a regular
 * file owned by root or by this process's effective user, and neither group nor others may read or
 * write it. Returns 0, or -1 with a message naming the file (and line) and the fix in err; keys is
 * wiped on error.
 */
int tr_jwt_keys_load(tr_jwt_keys_t *keys, const char *path, char *err, size_t err_size);

/* Overwrite the secrets (before freeing or leaving the memory). */
void tr_jwt_keys_wipe(tr_jwt_keys_t *keys);

/*
 * Verify token (len bytes) against keys at time now (seconds since the epoch). On TR_JWT_OK the
 * decoded payload (JSON, NUL-terminated) is at payload (size bytes, at least TR_JWT_PAYLOAD_MAX + 1)
 * and its length at *payload_len. Otherwise one of the codes above, with *why pointing at a static
 * message (never NULL). Signatures are compared in constant time (CRYPTO_memcmp); with a kid only that
 * key is tried, without one every key.
 */
int tr_jwt_verify(const tr_jwt_keys_t *keys, const char *token, size_t len, double now, char *payload, size_t size,
                  size_t *payload_len, const char **why);

/*
 * Sign payload (a JSON object, len bytes) with key: header {"alg":"HS256","typ":"JWT","kid":...}.
 * Writes the token and a NUL at out (size bytes). Returns its length, or -1 if it does not fit.
 */
int tr_jwt_sign(const tr_jwt_key_t *key, const char *payload, size_t len, char *out, size_t size);

/* The keys the workers of this process verify with (set by the master before forking; NULL: none). */
void tr_jwt_use(const tr_jwt_keys_t *keys);
const tr_jwt_keys_t *tr_jwt_current(void);

#endif
