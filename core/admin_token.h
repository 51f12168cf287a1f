/*
 * The admin token: what a client of the admin API shows (Authorization: Bearer <token>) to change
 * anything (POST /_triage/reload), and to read anything when the admin listener is not on loopback.
 *
 * Where it comes from, for the server and for `triage reload` / `triage status` alike:
 *   - $TRIAGE_ADMIN_TOKEN, when set and not empty;
 *   - else the token file (--admin-token-file, default DATA_DIR/admin.token). The server creates it
 *     at its first start with a random 256-bit token in hex, mode 0600, and refuses to use one that
 *     others may read or write. The commands read it from the same place (--data / --admin-token-file).
 */
#ifndef TR_ADMIN_TOKEN_H
#define TR_ADMIN_TOKEN_H

#include <stddef.h>

#define TR_ADMIN_TOKEN_MAX 256 /* longest token, NUL included */
#define TR_ADMIN_TOKEN_MIN 16  /* shortest token accepted from a file or the environment */
#define TR_ADMIN_TOKEN_ENV "TRIAGE_ADMIN_TOKEN"
#define TR_ADMIN_TOKEN_FILE "admin.token" /* in the data directory, by default */

/*
 * The token at token (TR_ADMIN_TOKEN_MAX bytes): from the environment, else from the file at path.
 * create: the server's start (make the file if it is missing; refuse a file others may read or
 * write); else a command's (read only). Returns 1 when the token came from the environment, 0 from
 * the file, -1 with a message naming the file and the fix in err; -2 (commands only) when there is
 * no file: the caller goes on without a token.
 */
int tr_admin_token_load(const char *path, int create, char *token, char *err, size_t err_size);

/* Does given (len bytes) equal the token? In time that depends on neither (both are hashed first). */
int tr_admin_token_equal(const char *token, const char *given, size_t len);

/* Is host (a name or an address, as for --admin) loopback only: every address it resolves to? */
int tr_admin_host_is_loopback(const char *host);

#endif
