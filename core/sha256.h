/*
 * SHA-256 (FIPS 180-4), computed by libcrypto (OpenSSL): fingerprints of request bodies (idempotency
 * keys), the admin token comparison and the audit trail's hash chain (audit.h). Both calls abort if
 * libcrypto fails, which only a broken installation or no memory at all can cause.
 */
#ifndef TR_SHA256_H
#define TR_SHA256_H

#include <stddef.h>
#include <stdint.h>

/* The digest of data at out (32 bytes). */
void tr_sha256(const void *data, size_t len, uint8_t out[32]);

/* The digest as 64 lower-case hex digits and a NUL at out (65 bytes). */
void tr_sha256_hex(const void *data, size_t len, char out[65]);

#endif
