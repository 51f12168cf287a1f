/* core/jwt.c: HS256 verification against RFC 7515's example, tampering, alg, time claims, rotation,
 * the key file's checks, and signing that verifies. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jwt.h"
#include "test.h"

/* RFC 7515 Appendix A.1 (the JWT of RFC 7519 §3.1): its HMAC key, decoded from the JWK's "k". */
static const unsigned char RFC_KEY[] = {3,   35,  53, 75,  43,  15, 165, 188, 131, 126, 6,   101, 119, 123, 166, 143,
                                        90,  179, 40, 230, 240, 84, 201, 40,  169, 15,  132, 178, 210, 80,  46,  191,
                                        211, 251, 90, 146, 210, 6,  71,  239, 150, 138, 180, 195, 119, 98,  61,  34,
                                        61,  46,  33, 114, 5,   46, 79,  8,   192, 205, 154, 245, 103, 208, 128, 163};
static const char RFC_TOKEN[] =
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
#define RFC_EXP 1300819380.0

static void add_key(tr_jwt_keys_t *keys, const char *kid, const void *secret, size_t len)
{
    tr_jwt_key_t *k = &keys->keys[keys->count++];
    snprintf(k->kid, sizeof(k->kid), "%s", kid);
    memcpy(k->secret, secret, len);
    k->secret_len = len;
}

static void rfc_keys(tr_jwt_keys_t *keys)
{
    memset(keys, 0, sizeof(*keys));
    keys->skew = 60;
    add_key(keys, "rfc", RFC_KEY, sizeof(RFC_KEY));
}

static int verify(const tr_jwt_keys_t *keys, const char *token, double now)
{
    char payload[TR_JWT_PAYLOAD_MAX + 1];
    size_t len;
    const char *why = NULL;
    int rc = tr_jwt_verify(keys, token, strlen(token), now, payload, sizeof(payload), &len, &why);
    ASSERT_NOT_NULL(why);
    return rc;
}

static void b64url(const void *in, size_t len, char *out)
{
    int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    for (int i = 0; i < n; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    while (n > 0 && out[n - 1] == '=')
        out[--n] = '\0';
}

/* A token with any header, signed with secret (HMAC-SHA256) as the test writes it. */
static void make_token(const char *header, const char *payload, const char *secret, char *out)
{
    char a[1024], b[1024], sig[64];
    b64url(header, strlen(header), a);
    b64url(payload, strlen(payload), b);
    sprintf(out, "%s.%s", a, b);
    unsigned char mac[32];
    unsigned int n = 32;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)out, strlen(out), mac, &n);
    b64url(mac, 32, sig);
    strcat(out, ".");
    strcat(out, sig);
}

#define SECRET1 "first-secret-of-at-least-32-bytes-long"
#define SECRET2 "second-secret-of-at-least-32-bytes-long"
#define NOW 1800000000.0

static void two_keys(tr_jwt_keys_t *keys)
{
    memset(keys, 0, sizeof(*keys));
    keys->skew = 60;
    add_key(keys, "k1", SECRET1, strlen(SECRET1));
    add_key(keys, "k2", SECRET2, strlen(SECRET2));
}

TEST_IMPL(jwt_rfc_vector)
{
    tr_jwt_keys_t keys;
    rfc_keys(&keys);
    char payload[TR_JWT_PAYLOAD_MAX + 1];
    size_t len;
    const char *why;
    ASSERT_INT_EQ(
        tr_jwt_verify(&keys, RFC_TOKEN, strlen(RFC_TOKEN), RFC_EXP - 100, payload, sizeof(payload), &len, &why),
        TR_JWT_OK);
    ASSERT_STR_CONTAINS(payload, "\"iss\":\"joe\"");
    ASSERT_UINT_EQ(len, strlen(payload));
    /* Past exp, within the skew, and past the skew. */
    ASSERT_INT_EQ(verify(&keys, RFC_TOKEN, RFC_EXP + 59), TR_JWT_OK);
    ASSERT_INT_EQ(verify(&keys, RFC_TOKEN, RFC_EXP + 61), TR_JWT_EXPIRED);
    keys.skew = 0;
    ASSERT_INT_EQ(verify(&keys, RFC_TOKEN, RFC_EXP + 1), TR_JWT_EXPIRED);
    /* Signing the same header and payload gives RFC 7515's signature (our signer adds a kid, so the
     * header here is the RFC's, MAC'd by the test's HMAC call and compared). */
    unsigned char mac[32];
    unsigned int n = 32;
    const char *dot2 = strrchr(RFC_TOKEN, '.');
    HMAC(EVP_sha256(), RFC_KEY, sizeof(RFC_KEY), (const unsigned char *)RFC_TOKEN, (size_t)(dot2 - RFC_TOKEN), mac, &n);
    char sig[64];
    b64url(mac, 32, sig);
    ASSERT_STR_EQ(sig, dot2 + 1);
}

TEST_IMPL(jwt_tampered)
{
    tr_jwt_keys_t keys;
    rfc_keys(&keys);
    char t[sizeof(RFC_TOKEN)];
    /* A signature character changed. */
    memcpy(t, RFC_TOKEN, sizeof(t));
    char *s = strrchr(t, '.') + 10;
    *s = *s == 'k' ? 'l' : 'k';
    ASSERT_INT_EQ(verify(&keys, t, RFC_EXP - 100), TR_JWT_BAD_SIGNATURE);
    /* A payload character changed (the signature no longer covers it). */
    memcpy(t, RFC_TOKEN, sizeof(t));
    char *p = strchr(t, '.') + 5;
    *p = *p == 'A' ? 'B' : 'A';
    int rc = verify(&keys, t, RFC_EXP - 100);
    ASSERT(rc == TR_JWT_BAD_SIGNATURE || rc == TR_JWT_MALFORMED);
    /* Another key. */
    tr_jwt_keys_t other;
    two_keys(&other);
    ASSERT_INT_EQ(verify(&other, RFC_TOKEN, RFC_EXP - 100), TR_JWT_BAD_SIGNATURE);
    /* No keys at all. */
    other.count = 0;
    ASSERT_INT_EQ(verify(&other, RFC_TOKEN, RFC_EXP - 100), TR_JWT_NO_KEYS);
    ASSERT_INT_EQ(verify(NULL, RFC_TOKEN, RFC_EXP - 100), TR_JWT_NO_KEYS);
}

TEST_IMPL(jwt_alg)
{
    tr_jwt_keys_t keys;
    two_keys(&keys);
    const char *claims = "{\"sub\":\"P-1\",\"exp\":1800000100}";
    char t[2048], a[512], b[512];
    /* alg none, with an empty signature and with a real one. */
    b64url("{\"alg\":\"none\",\"typ\":\"JWT\"}", 26, a);
    b64url(claims, strlen(claims), b);
    sprintf(t, "%s.%s.", a, b);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_BAD_ALG);
    make_token("{\"alg\":\"none\"}", claims, SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_BAD_ALG);
    make_token("{\"alg\":\"HS512\"}", claims, SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_BAD_ALG);
    make_token("{\"alg\":\"hs256\"}", claims, SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_BAD_ALG);
    ASSERT_INT_EQ(verify(&keys, "e30.e30.e30", NOW), TR_JWT_BAD_ALG); /* {} has no alg */
    make_token("{\"typ\":\"JWT\"}", claims, SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_BAD_ALG);
    /* alg written with an escape, and alg given twice (the second would win in another reader). */
    make_token("{\"alg\":\"HS\\u0032\\u0035\\u0036\"}", claims, SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_BAD_ALG);
    make_token("{\"alg\":\"HS256\",\"alg\":\"none\"}", claims, SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_MALFORMED);
    make_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", claims, SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_OK);
}

TEST_IMPL(jwt_malformed)
{
    tr_jwt_keys_t keys;
    two_keys(&keys);
    char t[2048];
    const char *bad[] = {"", "abc", "a.b", "a.b.c.d", "...", "eyJhbGciOiJIUzI1NiJ9.."};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ASSERT_INT_EQ(verify(&keys, bad[i], NOW), TR_JWT_MALFORMED);
    make_token("{\"alg\":\"HS256\"}", "{\"sub\":\"P-1\",\"exp\":1800000100}", SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_OK);
    /* Padding, a character outside base64url, and a non-canonical last character. */
    char u[2100];
    snprintf(u, sizeof(u), "%s=", t);
    ASSERT_INT_EQ(verify(&keys, u, NOW), TR_JWT_MALFORMED);
    memcpy(u, t, strlen(t) + 1);
    u[3] = '+';
    ASSERT_INT_EQ(verify(&keys, u, NOW), TR_JWT_MALFORMED);
    /* "e30" is "{}"; "e31" decodes to the same bytes with a non-zero unused bit. */
    make_token("{\"alg\":\"HS256\"}", "{}", SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_MALFORMED); /* no exp */
    char *dot = strchr(t, '.');
    ASSERT(strncmp(dot, ".e30.", 5) == 0);
    dot[3] = '1';
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_MALFORMED);
    /* A header or payload that is not a JSON object; exp not a number; trailing bytes. */
    make_token("[\"HS256\"]", "{\"exp\":1800000100}", SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_MALFORMED);
    make_token("{\"alg\":\"HS256\"}", "{\"exp\":\"1800000100\"}", SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_MALFORMED);
    make_token("{\"alg\":\"HS256\"}", "{\"exp\":1800000100} x", SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_MALFORMED);
    make_token("{\"alg\":\"HS256\"}", "{\"exp\":1800000100,\"exp\":1}", SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_MALFORMED);
    make_token("{\"alg\":\"HS256\",\"typ\":\"JOSE+JSON\"}", "{\"exp\":1800000100}", SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_MALFORMED);
    /* Nested values are skipped, not misread. */
    make_token("{\"alg\":\"HS256\"}", "{\"x\":{\"exp\":1},\"trials\":[\"A\",\"B\"],\"exp\":1800000100}", SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_OK);
}

TEST_IMPL(jwt_time_claims)
{
    tr_jwt_keys_t keys;
    two_keys(&keys);
    char t[2048];
    make_token("{\"alg\":\"HS256\"}", "{\"exp\":1800000100,\"nbf\":1800000030}", SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_OK); /* nbf 30 s ahead: within the skew */
    make_token("{\"alg\":\"HS256\"}", "{\"exp\":1800000300,\"nbf\":1800000120}", SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_NOT_YET_VALID);
    ASSERT_INT_EQ(verify(&keys, t, NOW + 61), TR_JWT_OK);
    keys.skew = 0;
    make_token("{\"alg\":\"HS256\"}", "{\"exp\":1800000100,\"nbf\":1800000030}", SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_NOT_YET_VALID);
    make_token("{\"alg\":\"HS256\"}", "{\"exp\":1799999999}", SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_EXPIRED);
    make_token("{\"alg\":\"HS256\"}", "{\"exp\":1800000100,\"nbf\":\"soon\"}", SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_MALFORMED);
}

TEST_IMPL(jwt_rotation_and_kid)
{
    tr_jwt_keys_t keys;
    two_keys(&keys);
    const char *claims = "{\"exp\":1800000100}";
    char t[2048];
    /* Without a kid every key is tried: tokens of the old and the new key both verify. */
    make_token("{\"alg\":\"HS256\"}", claims, SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_OK);
    make_token("{\"alg\":\"HS256\"}", claims, SECRET2, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_OK);
    /* With a kid only that key: right, wrong, unknown. */
    make_token("{\"alg\":\"HS256\",\"kid\":\"k2\"}", claims, SECRET2, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_OK);
    make_token("{\"alg\":\"HS256\",\"kid\":\"k1\"}", claims, SECRET2, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_BAD_SIGNATURE);
    make_token("{\"alg\":\"HS256\",\"kid\":\"k9\"}", claims, SECRET2, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_BAD_SIGNATURE);
    make_token("{\"alg\":\"HS256\",\"kid\":2}", claims, SECRET2, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_MALFORMED);
    /* The old key retired: its tokens stop verifying. */
    keys.keys[0] = keys.keys[1];
    keys.count = 1;
    make_token("{\"alg\":\"HS256\"}", claims, SECRET1, t);
    ASSERT_INT_EQ(verify(&keys, t, NOW), TR_JWT_BAD_SIGNATURE);
}

TEST_IMPL(jwt_sign_verifies)
{
    tr_jwt_keys_t keys;
    two_keys(&keys);
    char t[TR_JWT_TOKEN_MAX];
    const char *claims = "{\"sub\":\"P-1\",\"role\":\"patient\",\"exp\":1800000100}";
    ASSERT(tr_jwt_sign(&keys.keys[1], claims, strlen(claims), t, sizeof(t)) > 0);
    char payload[TR_JWT_PAYLOAD_MAX + 1];
    size_t len;
    const char *why;
    ASSERT_INT_EQ(tr_jwt_verify(&keys, t, strlen(t), NOW, payload, sizeof(payload), &len, &why), TR_JWT_OK);
    ASSERT_STR_EQ(payload, claims);
    ASSERT_INT_EQ(tr_jwt_sign(&keys.keys[1], claims, strlen(claims), t, 40), -1);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    ASSERT_NOT_NULL(f);
    fputs(text, f);
    fclose(f);
    ASSERT_INT_EQ(chmod(path, mode), 0);
}

TEST_IMPL(jwt_key_file)
{
    char path[] = "/tmp/triage-jwt-keys-XXXXXX";
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    close(fd);
    tr_jwt_keys_t keys;
    char err[512];
    write_file(path, "# rotation\n\nk2 " SECRET2 "\n  k1\t" SECRET1 "  \n", 0600);
    ASSERT_INT_EQ(tr_jwt_keys_load(&keys, path, err, sizeof(err)), 0);
    ASSERT_INT_EQ(keys.count, 2);
    ASSERT_STR_EQ(keys.keys[0].kid, "k2");
    ASSERT_STR_EQ(keys.keys[1].kid, "k1");
    ASSERT_MEM_EQ(keys.keys[1].secret, keys.keys[1].secret_len, SECRET1);
    write_file(path, "k1 " SECRET1 "\n", 0640);
    ASSERT_INT_EQ(tr_jwt_keys_load(&keys, path, err, sizeof(err)), -1);
    ASSERT_STR_CONTAINS(err, "chmod 600");
    ASSERT_INT_EQ(keys.count, 0);
    write_file(path, "k1 " SECRET1 "\nk2 short\n", 0600);
    ASSERT_INT_EQ(tr_jwt_keys_load(&keys, path, err, sizeof(err)), -1);
    ASSERT_STR_CONTAINS(err, ":2: the secret is shorter than 32 bytes");
    write_file(path, "k1 " SECRET1 "\nk1 " SECRET2 "\n", 0600);
    ASSERT_INT_EQ(tr_jwt_keys_load(&keys, path, err, sizeof(err)), -1);
    ASSERT_STR_CONTAINS(err, ":2: this key id is given twice");
    write_file(path, "# nothing\n", 0600);
    ASSERT_INT_EQ(tr_jwt_keys_load(&keys, path, err, sizeof(err)), -1);
    ASSERT_STR_CONTAINS(err, "no key in it");
    unlink(path);
    ASSERT_INT_EQ(tr_jwt_keys_load(&keys, path, err, sizeof(err)), -1);
    ASSERT_STR_CONTAINS(err, "No such file");
}
