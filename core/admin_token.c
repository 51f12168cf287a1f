#include "admin_token.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sha256.h"

/* A token is printable ASCII without spaces (it travels in a header line), of a sensible length.
 * Returns NULL, or what is wrong with it. */
static const char *check_token(const char *t, size_t len)
{
    if (len < TR_ADMIN_TOKEN_MIN)
        return "it is shorter than 16 characters";
    if (len >= TR_ADMIN_TOKEN_MAX)
        return "it is longer than 255 characters";
    for (size_t i = 0; i < len; i++)
        if (t[i] <= ' ' || t[i] > '~')
            return "it holds a space or a character that is not printable ASCII";
    return NULL;
}

/* Make the token file: 32 random bytes in hex, mode 0600, never over an existing file. */
static int create_file(const char *path, char *token, char *err, size_t err_size)
{
    uint8_t raw[32];
    size_t got = 0;
    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, err_size, "cannot make an admin token: getrandom: %s", strerror(errno));
            return -1;
        }
        got += (size_t)n;
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof(raw); i++) {
        token[2 * i] = hex[raw[i] >> 4];
        token[2 * i + 1] = hex[raw[i] & 15];
    }
    token[64] = '\n';
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, err_size, "cannot create the admin token file %s: %s (--admin-token-file)", path,
                 strerror(errno));
        return -1;
    }
    int ok = fchmod(fd, 0600) == 0 && write(fd, token, 65) == 65 && fsync(fd) == 0;
    int saved = errno;
    close(fd);
    token[64] = '\0';
    if (!ok) {
        unlink(path);
        snprintf(err, err_size, "cannot write the admin token file %s: %s", path, strerror(saved));
        return -1;
    }
    return 0;
}

int tr_admin_token_load(const char *path, int create, char *token, char *err, size_t err_size)
{
    const char *env = getenv(TR_ADMIN_TOKEN_ENV);
    if (env != NULL && *env != '\0') {
        const char *bad = check_token(env, strlen(env));
        if (bad != NULL) {
            snprintf(err, err_size, "$" TR_ADMIN_TOKEN_ENV " is not a usable admin token: %s", bad);
            return -1;
        }
        memcpy(token, env, strlen(env) + 1);
        return 1;
    }
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return create ? create_file(path, token, err, err_size) : -2;
    if (fd < 0) {
        snprintf(err, err_size, "cannot read the admin token file %s: %s (run as the server's user, or set $%s)", path,
                 strerror(errno), TR_ADMIN_TOKEN_ENV);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(err, err_size, "the admin token file %s is not a regular file", path);
        return -1;
    }
    if (create && st.st_uid != geteuid()) {
        close(fd);
        snprintf(err, err_size,
                 "the admin token file %s belongs to user %d, not to the server's (%d): whoever owns it could have "
                 "written the token; remove it (a new one is made at start) or chown it",
                 path, (int)st.st_uid, (int)geteuid());
        return -1;
    }
    if (create && (st.st_mode & 077) != 0) {
        close(fd);
        snprintf(err, err_size,
                 "the admin token file %s may be read or written by other users (mode %04o): "
                 "run chmod 600 %s",
                 path, (unsigned)(st.st_mode & 07777), path);
        return -1;
    }
    char buf[TR_ADMIN_TOKEN_MAX + 2];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 0) {
        snprintf(err, err_size, "cannot read the admin token file %s: %s", path, strerror(errno));
        return -1;
    }
    size_t len = (size_t)n;
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
        len--; /* the line's end (an editor's or echo's) is not part of the token */
    const char *bad = check_token(buf, len);
    if (bad != NULL) {
        snprintf(err, err_size, "the admin token file %s does not hold a usable token: %s", path, bad);
        return -1;
    }
    memcpy(token, buf, len);
    token[len] = '\0';
    explicit_bzero(buf, sizeof(buf));
    return 0;
}

int tr_admin_token_equal(const char *token, const char *given, size_t len)
{
    /* Comparing digests of equal length in full hides where the strings differ and how long the
     * token is: a client learns nothing from the time an answer takes. */
    uint8_t a[32], b[32];
    tr_sha256(token, strlen(token), a);
    tr_sha256(given, len, b);
    unsigned diff = 0;
    for (size_t i = 0; i < sizeof(a); i++)
        diff |= (unsigned)(a[i] ^ b[i]);
    return diff == 0;
}

static int is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return 1;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return 0;
}

int tr_admin_host_is_loopback(const char *host)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    if (getaddrinfo(host, "1", &hints, &res) != 0)
        return 0;
    int loopback = 1;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next)
        loopback &= is_loopback(ai->ai_addr);
    freeaddrinfo(res);
    return loopback;
}
