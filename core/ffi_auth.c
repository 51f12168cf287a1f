/*
 * The bearer-token half of the request API (declared in lua/triage/cdef.h): verification with the
 * keys this process holds (jwt.h), on the same clock as tr_ffi_now.
 */
#include "ffi_api.h"
#include "jwt.h"

/* The FFI codes are the module's own, so that Lua names what jwt.c decided. */
_Static_assert((int)TR_AUTH_OK == (int)TR_JWT_OK && (int)TR_AUTH_MALFORMED == (int)TR_JWT_MALFORMED &&
                   (int)TR_AUTH_BAD_ALG == (int)TR_JWT_BAD_ALG &&
                   (int)TR_AUTH_BAD_SIGNATURE == (int)TR_JWT_BAD_SIGNATURE &&
                   (int)TR_AUTH_EXPIRED == (int)TR_JWT_EXPIRED &&
                   (int)TR_AUTH_NOT_YET_VALID == (int)TR_JWT_NOT_YET_VALID &&
                   (int)TR_AUTH_NO_KEYS == (int)TR_JWT_NO_KEYS,
               "TR_AUTH_* (cdef.h) and TR_JWT_* (jwt.h) differ");

TR_FFI_EXPORT int tr_ffi_auth_verify(const char *token, size_t len, char *payload, size_t size, size_t *payload_len,
                                     const char **errmsg)
{
    if (size < TR_JWT_PAYLOAD_MAX + 1) {
        *errmsg = "tr_ffi_auth_verify: payload buffer too small";
        *payload_len = 0;
        return TR_AUTH_MALFORMED;
    }
    return tr_jwt_verify(tr_jwt_current(), token, len, tr_ffi_now(), payload, size, payload_len, errmsg);
}
