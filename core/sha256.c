/*
 * SHA-256 from libcrypto (OpenSSL's EVP interface): the project's one SHA-256, for fingerprints,
 * the admin token comparison and the audit trail's hash chain.
 */
#include "sha256.h"

#include <openssl/evp.h>
#include <stdlib.h>

#include "log.h"

void tr_sha256(const void *data, size_t len, uint8_t out[32])
{
    unsigned int n = 0;
    /* EVP_Digest fails only when libcrypto cannot allocate its context or finds no SHA-256
     * implementation: a broken installation, where carrying on would hand out a wrong digest. */
    if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 || n != 32) {
        tr_log_error("sha256: libcrypto's EVP_Digest failed");
        abort();
    }
}

void tr_sha256_hex(const void *data, size_t len, char out[65])
{
    static const char digits[] = "0123456789abcdef";
    uint8_t d[32];
    tr_sha256(data, len, d);
    for (int i = 0; i < 32; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[64] = '\0';
}
