/*
 * HS256 JSON Web Tokens: verification for the workers, signing for `triage token` (jwt.h).
 */
#include "jwt.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json_check.h"

#define MAC_LEN 32
#define HEADER_MAX 512
#define MEMBERS_MAX 64

static const tr_jwt_keys_t *current;

void tr_jwt_use(const tr_jwt_keys_t *keys)
{
    current = keys;
}

const tr_jwt_keys_t *tr_jwt_current(void)
{
    return current;
}

void tr_jwt_keys_wipe(tr_jwt_keys_t *keys)
{
    OPENSSL_cleanse(keys, sizeof(*keys));
}

/* ---- base64url (RFC 4648 §5), without padding ---- */

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Encode len bytes; returns the length written (no NUL), or -1 if size is too small. */
static int b64url_encode(const unsigned char *in, size_t len, char *out, size_t size)
{
    size_t need = len / 3 * 4 + (len % 3 ? len % 3 + 1 : 0);
    if (need > size)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = B64URL[(v >> 18) & 63];
        out[o++] = B64URL[(v >> 12) & 63];
        if (i + 1 < len)
            out[o++] = B64URL[(v >> 6) & 63];
        if (i + 2 < len)
            out[o++] = B64URL[v & 63];
    }
    return (int)o;
}

/*
 * Decode len characters into out (size bytes). Refused (-1): a character outside the alphabet,
 * padding, a length that is 1 mod 4, or unused trailing bits that are not zero: only the one
 * canonical spelling of each value is accepted, so that a token cannot be altered and still verify.
 * Returns the number of bytes written.
 */
static int b64url_decode(const char *in, size_t len, unsigned char *out, size_t size)
{
    if (len % 4 == 1 || len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0) > size)
        return -1;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) /* the leftover bits of the last character */
        return -1;
    return (int)o;
}

/* ---- the few JSON members read here ---- */

typedef struct member_s {
    const char *name;
    int found;
    int is_string, is_number;
    const char *value; /* the string's characters (without quotes), or the number's */
    size_t value_len;
    int escaped; /* the string holds a backslash escape */
} member_t;

static size_t skip_ws(const char *s, size_t len, size_t i)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* s[i] is '"': the index after the closing quote, or 0. */
static size_t scan_string(const char *s, size_t len, size_t i, int *escaped)
{
    *escaped = 0;
    for (i++; i < len; i++) {
        if (s[i] == '\\') {
            *escaped = 1;
            i++;
        } else if (s[i] == '"') {
            return i + 1;
        }
    }
    return 0;
}

/* The index after the value starting at s[i], or 0 when it is not a JSON value. */
static size_t skip_value(const char *s, size_t len, size_t i, int depth)
{
    if (i >= len || depth > 32)
        return 0;
    int escaped;
    char c = s[i];
    if (c == '"')
        return scan_string(s, len, i, &escaped);
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        i = skip_ws(s, len, i + 1);
        if (i < len && s[i] == close)
            return i + 1;
        for (;;) {
            if (c == '{') {
                if (i >= len || s[i] != '"' || (i = scan_string(s, len, i, &escaped)) == 0)
                    return 0;
                i = skip_ws(s, len, i);
                if (i >= len || s[i] != ':')
                    return 0;
                i = skip_ws(s, len, i + 1);
            }
            if ((i = skip_value(s, len, i, depth + 1)) == 0)
                return 0;
            i = skip_ws(s, len, i);
            if (i < len && s[i] == close)
                return i + 1;
            if (i >= len || s[i] != ',')
                return 0;
            i = skip_ws(s, len, i + 1);
        }
    }
    size_t start = i;
    while (i < len && (strchr("-+.eE", s[i]) != NULL || (s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'z')))
        i++;
    return i > start ? i : 0;
}

/*
 * Walk the JSON object s (len bytes) and fill in the members named in want. Refused (-1): text that is
 * not strict JSON (json_check.h) or not one object, a member name written with an escape, more than
 * MEMBERS_MAX members, or a name given twice (RFC 7515 §5.2 lets a parser refuse duplicates; reading
 * the first here while a later decoder reads the last would let two readers see two tokens).
 */
static int read_object(const char *s, size_t len, member_t *want, int nwant)
{
    size_t at;
    if (tr_json_check(s, len, &at) != NULL)
        return -1;
    struct {
        const char *name;
        size_t len;
    } seen[MEMBERS_MAX];
    int nseen = 0, escaped;
    size_t i = skip_ws(s, len, 0);
    if (i >= len || s[i] != '{')
        return -1;
    i = skip_ws(s, len, i + 1);
    if (i < len && s[i] == '}')
        return skip_ws(s, len, i + 1) == len ? 0 : -1;
    for (;;) {
        if (i >= len || s[i] != '"')
            return -1;
        size_t name_start = i + 1, end = scan_string(s, len, i, &escaped);
        if (end == 0 || escaped || nseen == MEMBERS_MAX)
            return -1;
        size_t name_len = end - 1 - name_start;
        for (int k = 0; k < nseen; k++)
            if (seen[k].len == name_len && memcmp(seen[k].name, s + name_start, name_len) == 0)
                return -1;
        seen[nseen].name = s + name_start;
        seen[nseen++].len = name_len;
        i = skip_ws(s, len, end);
        if (i >= len || s[i] != ':')
            return -1;
        i = skip_ws(s, len, i + 1);
        size_t value_start = i;
        if ((i = skip_value(s, len, i, 0)) == 0)
            return -1;
        for (int k = 0; k < nwant; k++) {
            member_t *m = &want[k];
            if (strlen(m->name) != name_len || memcmp(m->name, s + name_start, name_len) != 0)
                continue;
            m->found = 1;
            m->is_string = s[value_start] == '"';
            m->is_number = s[value_start] == '-' || (s[value_start] >= '0' && s[value_start] <= '9');
            if (m->is_string) {
                scan_string(s, len, value_start, &m->escaped);
                m->value = s + value_start + 1;
                m->value_len = i - value_start - 2;
            } else {
                m->value = s + value_start;
                m->value_len = i - value_start;
            }
        }
        i = skip_ws(s, len, i);
        if (i < len && s[i] == '}')
            return skip_ws(s, len, i + 1) == len ? 0 : -1;
        if (i >= len || s[i] != ',')
            return -1;
        i = skip_ws(s, len, i + 1);
    }
}

static int member_is(const member_t *m, const char *text)
{
    return m->found && m->is_string && !m->escaped && m->value_len == strlen(text) &&
           memcmp(m->value, text, m->value_len) == 0;
}

static double member_number(const member_t *m)
{
    char buf[64];
    if (m->value_len >= sizeof(buf))
        return 0;
    memcpy(buf, m->value, m->value_len);
    buf[m->value_len] = '\0';
    return strtod(buf, NULL);
}

/* ---- verify and sign ---- */

static void mac(const tr_jwt_key_t *key, const char *data, size_t len, unsigned char out[MAC_LEN])
{
    unsigned int n = MAC_LEN;
    HMAC(EVP_sha256(), key->secret, (int)key->secret_len, (const unsigned char *)data, len, out, &n);
}

/* Does any key that may have made this token (the kid's, or every key) give signature? */
static int signature_matches(const tr_jwt_keys_t *keys, const member_t *kid, const char *signed_part, size_t signed_len,
                             const unsigned char signature[MAC_LEN])
{
    int match = 0;
    for (int k = 0; k < keys->count; k++) {
        const tr_jwt_key_t *key = &keys->keys[k];
        if (kid->found && (kid->value_len != strlen(key->kid) || memcmp(kid->value, key->kid, kid->value_len) != 0))
            continue;
        unsigned char expected[MAC_LEN];
        mac(key, signed_part, signed_len, expected);
        /* Constant time: how much of a forged signature is right must not show in the time taken. */
        match |= CRYPTO_memcmp(expected, signature, MAC_LEN) == 0;
        OPENSSL_cleanse(expected, sizeof(expected));
    }
    return match;
}

int tr_jwt_verify(const tr_jwt_keys_t *keys, const char *token, size_t len, double now, char *payload, size_t size,
                  size_t *payload_len, const char **why)
{
    *payload_len = 0;
    if (keys == NULL || keys->count == 0) {
        *why = "no token keys are configured (--token-keys)";
        return TR_JWT_NO_KEYS;
    }
    *why = "not a JWT: three base64url parts separated by '.'";
    if (len == 0 || len > TR_JWT_TOKEN_MAX)
        return TR_JWT_MALFORMED;
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL)
        return TR_JWT_MALFORMED;
    size_t header_b64 = (size_t)(dot1 - token), payload_b64 = (size_t)(dot2 - dot1 - 1);
    size_t signature_b64 = len - (size_t)(dot2 + 1 - token);

    char header[HEADER_MAX];
    unsigned char signature[MAC_LEN + 2];
    int header_len = b64url_decode(token, header_b64, (unsigned char *)header, sizeof(header));
    int n = b64url_decode(dot1 + 1, payload_b64, (unsigned char *)payload, size - 1);
    int signature_len = b64url_decode(dot2 + 1, signature_b64, signature, sizeof(signature));
    if (header_len <= 0 || n <= 0 || signature_len < 0) {
        *why = "a part of the token is not base64url without padding";
        return TR_JWT_MALFORMED;
    }
    payload[n] = '\0';

    member_t head[] = {{.name = "alg"}, {.name = "typ"}, {.name = "kid"}};
    if (read_object(header, (size_t)header_len, head, 3) != 0) {
        *why = "the token's header is not a JSON object";
        return TR_JWT_MALFORMED;
    }
    /* Only HS256: "none" or an asymmetric alg would let the token choose how it is checked. */
    if (!member_is(&head[0], "HS256")) {
        *why = "the token's alg is not HS256";
        return TR_JWT_BAD_ALG;
    }
    if (head[1].found && !member_is(&head[1], "JWT")) {
        *why = "the token's typ is not JWT";
        return TR_JWT_MALFORMED;
    }
    if (head[2].found && (!head[2].is_string || head[2].escaped || head[2].value_len > TR_JWT_KID_MAX)) {
        *why = "the token's kid is not a plain string";
        return TR_JWT_MALFORMED;
    }
    if (signature_len != MAC_LEN || !signature_matches(keys, &head[2], token, (size_t)(dot2 - token), signature)) {
        *why = head[2].found ? "bad signature (or no key has this kid)" : "bad signature";
        return TR_JWT_BAD_SIGNATURE;
    }

    /* The claims are read only once the signature holds: nothing unsigned decides anything. */
    member_t claims[] = {{.name = "exp"}, {.name = "nbf"}};
    if (read_object(payload, (size_t)n, claims, 2) != 0) {
        *why = "the token's payload is not a JSON object";
        return TR_JWT_MALFORMED;
    }
    if (!claims[0].found || !claims[0].is_number) {
        *why = "the token has no numeric exp claim";
        return TR_JWT_MALFORMED;
    }
    if (claims[1].found && !claims[1].is_number) {
        *why = "the token's nbf claim is not a number";
        return TR_JWT_MALFORMED;
    }
    if (now > member_number(&claims[0]) + keys->skew) {
        *why = "the token has expired";
        return TR_JWT_EXPIRED;
    }
    if (claims[1].found && now < member_number(&claims[1]) - keys->skew) {
        *why = "the token is not valid yet (nbf)";
        return TR_JWT_NOT_YET_VALID;
    }
    *payload_len = (size_t)n;
    *why = "ok";
    return TR_JWT_OK;
}

int tr_jwt_sign(const tr_jwt_key_t *key, const char *payload, size_t len, char *out, size_t size)
{
    char header[HEADER_MAX];
    int header_len = snprintf(header, sizeof(header), "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", key->kid);
    if (header_len < 0 || (size_t)header_len >= sizeof(header))
        return -1;
    int a = b64url_encode((const unsigned char *)header, (size_t)header_len, out, size);
    if (a < 0 || (size_t)a + 1 >= size)
        return -1;
    out[a] = '.';
    int b = b64url_encode((const unsigned char *)payload, len, out + a + 1, size - (size_t)a - 1);
    if (b < 0 || (size_t)(a + 1 + b) + 1 >= size)
        return -1;
    size_t signed_len = (size_t)(a + 1 + b);
    unsigned char signature[MAC_LEN];
    mac(key, out, signed_len, signature);
    out[signed_len] = '.';
    int c = b64url_encode(signature, MAC_LEN, out + signed_len + 1, size - signed_len - 1);
    if (c < 0 || signed_len + 1 + (size_t)c >= size)
        return -1;
    out[signed_len + 1 + (size_t)c] = '\0';
    return (int)(signed_len + 1 + (size_t)c);
}

/* ---- the key file ---- */

static int load_fail(tr_jwt_keys_t *keys, FILE *f, char *line, size_t cap)
{
    if (f != NULL)
        fclose(f);
    if (line != NULL) {
        OPENSSL_cleanse(line, cap);
        free(line);
    }
    tr_jwt_keys_wipe(keys);
    return -1;
}

int tr_jwt_keys_load(tr_jwt_keys_t *keys, const char *path, char *err, size_t err_size)
{
    memset(keys, 0, sizeof(*keys));
    keys->skew = TR_JWT_SKEW_DEFAULT;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        snprintf(err, err_size, "--token-keys %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(err, err_size, "--token-keys %s: not a regular file", path);
        return -1;
    }
    /* The secrets sign every user's token: only their owner (root, or whoever runs the server) reads them. */
    if (st.st_uid != 0 && st.st_uid != geteuid()) {
        close(fd);
        snprintf(err, err_size, "--token-keys %s: owned by uid %u; it must be root's or this user's", path,
                 (unsigned)st.st_uid);
        return -1;
    }
    if (st.st_mode & 077) {
        close(fd);
        snprintf(err, err_size, "--token-keys %s: group or others may access it (mode %03o); chmod 600 %s", path,
                 (unsigned)(st.st_mode & 0777), path);
        return -1;
    }
    FILE *f = fdopen(fd, "r");
    if (f == NULL) {
        close(fd);
        snprintf(err, err_size, "--token-keys %s: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int lineno = 0;
    while ((got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (got > 0 &&
               (line[got - 1] == '\n' || line[got - 1] == '\r' || line[got - 1] == ' ' || line[got - 1] == '\t'))
            line[--got] = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '#')
            continue;
        size_t kid_len = strcspn(p, " \t");
        char *secret = p + kid_len;
        while (*secret == ' ' || *secret == '\t')
            secret++;
        size_t secret_len = strlen(secret);
        const char *problem = NULL;
        if (kid_len > TR_JWT_KID_MAX)
            problem = "the key id is longer than 64 bytes";
        else if (strcspn(p, "\"\\") < kid_len)
            problem = "the key id holds a quote or a backslash";
        else if (secret_len == 0)
            problem = "a line is `KID SECRET`: no secret";
        else if (secret_len < TR_JWT_SECRET_MIN)
            problem = "the secret is shorter than 32 bytes (HS256 wants a key as long as its hash)";
        else if (secret_len > TR_JWT_SECRET_MAX)
            problem = "the secret is longer than 512 bytes";
        else if (keys->count == TR_JWT_KEYS_MAX)
            problem = "more than 16 keys";
        for (int k = 0; problem == NULL && k < keys->count; k++)
            if (strlen(keys->keys[k].kid) == kid_len && memcmp(keys->keys[k].kid, p, kid_len) == 0)
                problem = "this key id is given twice";
        if (problem != NULL) {
            snprintf(err, err_size, "--token-keys %s:%d: %s", path, lineno, problem);
            return load_fail(keys, f, line, cap);
        }
        tr_jwt_key_t *key = &keys->keys[keys->count++];
        memcpy(key->kid, p, kid_len);
        key->kid[kid_len] = '\0';
        memcpy(key->secret, secret, secret_len);
        key->secret_len = secret_len;
    }
    if (keys->count == 0) {
        snprintf(err, err_size, "--token-keys %s: no key in it (lines `KID SECRET`)", path);
        return load_fail(keys, f, line, cap);
    }
    if (line != NULL) {
        OPENSSL_cleanse(line, cap);
        free(line);
    }
    fclose(f);
    return 0;
}
