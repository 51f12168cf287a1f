/*
 * triage: serve an application (the master process), `triage reload` / `triage status` to ask a
 * running server to reload its code or for its status through the admin listener, `triage backup
 * DEST` to copy its store, `triage audit verify|export` to check or export its audit trail, `triage
 * token` to make a bearer token for local testing (jwt.h), `triage check` to load an application and
 * list its problems, or `triage upgrade` to replace a running server's binary without refusing a
 * connection (upgrade.h).
 */
#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "admin_token.h"
#include "audit.h"
#include "audit_pg.h"
#include "config.h"
#include "jwt.h"
#include "log.h"
#include "lua_vm.h"
#include "master.h"
#include "privilege.h"
#include "store.h"
#include "upgrade.h"

/*
 * body (an admin answer's JSON) as text for a person, by triage/report.lua's function fn, printed on
 * standard output. Returns 0, or -1 (nothing printed) when it cannot be made: the caller prints the
 * JSON as it came.
 */
static int print_report(const char *fn, const char *body)
{
    const char *env = getenv("TRIAGE_LUA_DIR");
    const char *lua_dir = tr_config_lua_dir(env != NULL && *env ? env : NULL);
    lua_State *L = luaL_newstate();
    if (L == NULL)
        return -1;
    luaL_openlibs(L);
    lua_getglobal(L, "package");                                      /* stack: package */
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;;", lua_dir, lua_dir); /* stack: package, path */
    lua_setfield(L, -2, "path");                                      /* stack: package */
    lua_settop(L, 0);                                                 /* stack: (empty) */
    lua_getglobal(L, "require");                                      /* stack: require */
    lua_pushliteral(L, "triage.report");                              /* stack: require, name */
    int rc = -1;
    if (lua_pcall(L, 1, 1, 0) == 0) {                                       /* stack: report */
        lua_getfield(L, -1, fn);                                            /* stack: report, fn */
        lua_pushstring(L, body);                                            /* stack: report, fn, body */
        if (lua_pcall(L, 1, 1, 0) == 0 && lua_type(L, -1) == LUA_TSTRING) { /* stack: report, text */
            printf("%s\n", lua_tostring(L, -1));
            rc = 0;
        }
    }
    lua_close(L);
    return rc;
}

/*
 * A command talking to a running server's admin listener: `triage reload` (POST /_triage/reload) or
 * `triage status` (GET /_triage/status). Both find the server and its token the way the server does:
 * --admin HOST:PORT, --data DIR or --admin-token-file FILE, $TRIAGE_ADMIN_TOKEN. Prints the answer as
 * text for a person (triage/report.lua's function `name`), or its JSON body as it came with --json;
 * returns 0 on a 200, 1 on another answer, 2 when the server cannot be asked.
 */
static int admin_command(const char *name, const char *method, const char *path, int argc, char **argv)
{
    int json = 0;
    char host[256] = "127.0.0.1";
    int port = 9180;
    const char *data = "data", *token_file = NULL;
    for (int i = 0; i < argc; i++) {
        const char *addr = NULL;
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--admin") == 0 && i + 1 < argc)
            addr = argv[++i];
        else if (strncmp(argv[i], "--admin=", 8) == 0)
            addr = argv[i] + 8;
        else if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
            data = argv[++i];
        else if (strncmp(argv[i], "--data=", 7) == 0)
            data = argv[i] + 7;
        else if (strcmp(argv[i], "--admin-token-file") == 0 && i + 1 < argc)
            token_file = argv[++i];
        else if (strncmp(argv[i], "--admin-token-file=", 19) == 0)
            token_file = argv[i] + 19;
        else {
            fprintf(stderr,
                    "triage %s: unexpected argument '%s' (--admin HOST:PORT, --data DIR, --admin-token-file FILE, "
                    "--json)\n",
                    name, argv[i]);
            return 2;
        }
        if (addr != NULL && tr_config_parse_addr(addr, host, sizeof(host), &port) != 0) {
            fprintf(stderr, "triage %s: --admin wants HOST:PORT\n", name);
            return 2;
        }
    }
    char token_path[4096], token[TR_ADMIN_TOKEN_MAX], err[512];
    if (tr_config_admin_token_path(token_file, data, token_path, sizeof(token_path)) != 0) {
        fprintf(stderr, "triage %s: --admin-token-file or --data: path too long\n", name);
        return 2;
    }
    int source = tr_admin_token_load(token_path, 0, token, err, sizeof(err));
    if (source == -1) {
        fprintf(stderr, "triage %s: %s\n", name, err);
        return 2;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    if (getaddrinfo(host, service, &hints, &res) != 0) {
        fprintf(stderr, "triage %s: cannot resolve %s\n", name, host);
        return 2;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        fprintf(stderr, "triage %s: no server answers on %s:%d\n", name, host, port);
        freeaddrinfo(res);
        return 2;
    }
    freeaddrinfo(res);
    char req[512 + TR_ADMIN_TOKEN_MAX];
    int n =
        snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: triage\r\nContent-Length: 0\r\n%s%s%s\r\n", method, path,
                 source >= 0 ? "Authorization: Bearer " : "", source >= 0 ? token : "", source >= 0 ? "\r\n" : "");
    explicit_bzero(token, sizeof(token));
    if (write(fd, req, (size_t)n) != n) {
        perror("triage");
        return 2;
    }
    explicit_bzero(req, sizeof(req));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ssize_t got;
    while (buf != NULL && (got = read(fd, buf + len, cap - 1 - len)) > 0) {
        len += (size_t)got;
        if (len == cap - 1)
            buf = realloc(buf, cap *= 2); /* a status document of many workers */
    }
    close(fd);
    if (buf == NULL) {
        fprintf(stderr, "triage %s: out of memory\n", name);
        return 2;
    }
    buf[len] = '\0';
    const char *body = strstr(buf, "\r\n\r\n");
    int ok = strncmp(buf, "HTTP/1.1 200", 12) == 0;
    int as_text = !json && body != NULL && (ok || strncmp(buf, "HTTP/1.1 409", 12) == 0);
    if (!as_text || print_report(name, body + 4) != 0)
        printf("%s\n", body ? body + 4 : buf);
    if (!ok && source == -2 && strncmp(buf, "HTTP/1.1 401", 12) == 0)
        fprintf(stderr,
                "triage %s: no admin token: %s does not exist and $%s is not set (give --data DIR or "
                "--admin-token-file FILE as the server has them)\n",
                name, token_path, TR_ADMIN_TOKEN_ENV);
    free(buf);
    return ok ? 0 : 1;
}

static void check_took_too_long(int sig)
{
    (void)sig;
    static const char msg[] = "triage check: loading the application took too long (3 x --handler-timeout, at "
                              "least 5 s): an endless loop when a script or route file is loaded?\n";
    ssize_t unused = write(2, msg, sizeof(msg) - 1);
    (void)unused;
    _exit(1);
}

/*
 * triage check [--app DIR] [server flags]: load the application as the server's preflight does (the
 * same sandbox and route loader; as root, as the workers' user, --user) without a data directory,
 * and print every problem as FILE:LINE: message on standard output, for an editor or CI. Returns 0
 * when it loads cleanly (a one-line summary printed), 1 on any problem, 2 on a usage error.
 */
static int check_command(int argc, char **argv)
{
    tr_config_t cfg;
    int rc = tr_config_parse(&cfg, argc, argv);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    char err[512];
    tr_privilege_paths_t paths = {.app_dir = cfg.app_dir, .lua_dir = cfg.lua_dir};
    if (tr_privilege_resolve(cfg.user, &cfg.run_as, err, sizeof(err)) != 0 ||
        tr_privilege_check(&cfg.run_as, &paths, err, sizeof(err)) != 0 ||
        tr_privilege_drop(&cfg.run_as, err, sizeof(err)) != 0) {
        fprintf(stderr, "triage check: %s\n", err);
        return 2;
    }
    signal(SIGALRM, check_took_too_long);
    alarm((unsigned)tr_config_load_budget(cfg.handler_timeout));
    int nroutes;
    int problems = tr_gen_check(&cfg, stdout, &nroutes);
    alarm(0);
    if (problems < 0) {
        fprintf(stderr, "triage check: the check could not run\n");
        return 2;
    }
    if (problems > 0) {
        fflush(stdout);
        fprintf(stderr, "triage check: %d problem%s in %s\n", problems, problems == 1 ? "" : "s", cfg.app_dir);
        return 1;
    }
    printf("triage check: %s: %d route%s, no problems\n", cfg.app_dir, nroutes, nroutes == 1 ? "" : "s");
    return 0;
}

/* triage backup DEST [--data DIR]: a consistent copy of the store, taken while the server runs. */
static int backup_command(int argc, char **argv)
{
    const char *dest = NULL, *data = "data";
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
            data = argv[++i];
        else if (strncmp(argv[i], "--data=", 7) == 0)
            data = argv[i] + 7;
        else if (strcmp(argv[i], "--store") == 0 || strncmp(argv[i], "--store=", 8) == 0) {
            fprintf(stderr, "triage backup copies the SQLite store; a PostgreSQL store is backed up with PostgreSQL's "
                            "own tools (pg_dump, or pg_basebackup and WAL archiving: README \"PostgreSQL\")\n");
            return 2;
        } else if (dest == NULL && argv[i][0] != '-')
            dest = argv[i];
        else {
            fprintf(stderr, "triage backup: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (dest == NULL) {
        fprintf(stderr, "usage: triage backup DEST [--data DIR]\n");
        return 2;
    }
    if (access(dest, F_OK) == 0) {
        fprintf(stderr, "triage backup: %s exists already; give a new file\n", dest);
        return 2;
    }
    char dir[4096], err[512];
    if (tr_config_data_dir(data, dir, sizeof(dir)) != 0 || tr_store_backup(dir, dest, err, sizeof(err)) != 0) {
        fprintf(stderr, "triage backup: %s\n", err);
        return 1;
    }
    printf("%s/" TR_STORE_FILE " copied to %s\n", dir, dest);
    return 0;
}

/*
 * triage audit verify [--data DIR | --store URL]: check the audit trail's hash chain; 0 intact, 1 broken
 * or unreadable.
 * triage audit export [--data DIR | --store URL] [--format jsonl|csv] [--output FILE]: every entry, for
 * a reviewer.
 * Both read the store read-only, in one snapshot, so they can run beside the server: DIR/triage.db, or
 * the PostgreSQL database at URL.
 */
static int audit_command(int argc, char **argv)
{
    const char *verb = argc > 0 ? argv[0] : "", *data = "data", *store = NULL, *format = "jsonl", *output = NULL;
    int verify = strcmp(verb, "verify") == 0;
    if (!verify && strcmp(verb, "export") != 0) {
        fprintf(stderr, "usage: triage audit verify [--data DIR | --store URL]\n"
                        "       triage audit export [--data DIR | --store URL] [--format jsonl|csv] [--output FILE]\n");
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        const char **flag = NULL;
        if (strcmp(argv[i], "--data") == 0)
            flag = &data;
        else if (strcmp(argv[i], "--store") == 0)
            flag = &store;
        else if (!verify && strcmp(argv[i], "--format") == 0)
            flag = &format;
        else if (!verify && strcmp(argv[i], "--output") == 0)
            flag = &output;
        if (flag == NULL || i + 1 == argc) {
            fprintf(stderr, "triage audit %s: unexpected argument '%s'%s\n", verb, argv[i],
                    flag != NULL ? " (without its value)" : "");
            return 2;
        }
        *flag = argv[++i];
    }
    char dir[4096], err[512];
    tr_audit_reader_t *reader;
    if (store != NULL) {
        if (strncmp(store, "postgres://", 11) != 0 && strncmp(store, "postgresql://", 13) != 0) {
            fprintf(stderr, "triage audit %s: --store: a postgres:// or postgresql:// URL\n", verb);
            return 2;
        }
        reader = tr_audit_pg_open(store, err, sizeof(err));
    } else {
        if (tr_config_data_dir(data, dir, sizeof(dir)) != 0) {
            fprintf(stderr, "triage audit %s: --data %s: path too long\n", verb, data);
            return 2;
        }
        reader = tr_audit_open(dir, err, sizeof(err));
    }
    if (reader == NULL) {
        fprintf(stderr, "triage audit %s: %s\n", verb, err);
        return 1;
    }
    if (verify) {
        int rc = tr_audit_verify(reader, stdout, err, sizeof(err));
        reader->close(reader);
        if (rc < 0)
            fprintf(stderr, "triage audit verify: %s\n", err);
        return rc == 0 ? 0 : 1;
    }
    FILE *out = output != NULL ? fopen(output, "w") : stdout;
    if (out == NULL) {
        fprintf(stderr, "triage audit export: --output %s: %s\n", output, strerror(errno));
        reader->close(reader);
        return 1;
    }
    long n = tr_audit_export(reader, format, out, err, sizeof(err));
    reader->close(reader);
    if ((output != NULL ? fclose(out) : fflush(out)) != 0 && n >= 0) {
        snprintf(err, sizeof(err), "writing %s: %s", output != NULL ? output : "the output", strerror(errno));
        n = -1;
    }
    if (n < 0) {
        fprintf(stderr, "triage audit export: %s\n", err);
        return 1;
    }
    if (output != NULL)
        fprintf(stderr, "triage audit export: %ld entries written to %s\n", n, output);
    return 0;
}

/* s as a JSON string (quotes included) appended at out; -1 when it does not fit. */
static int json_string(char *out, size_t size, size_t *at, const char *s)
{
    size_t o = *at;
    if (o + 1 >= size)
        return -1;
    out[o++] = '"';
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (o + 8 >= size)
            return -1;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, size - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    *at = o;
    return 0;
}

/*
 * triage token --sub ID --role ROLE [--trial T]... [--ttl SECONDS] --keys FILE [--kid K]: a token for
 * local testing, signed with the key K of FILE (default its first), valid from now for SECONDS
 * (default 3600). One --trial gives the claim "trial", more give "trials". Prints it on a line.
 */
static int token_command(int argc, char **argv)
{
    const char *sub = NULL, *role = NULL, *keys_path = NULL, *kid = NULL, *trials[16];
    int ntrials = 0;
    long ttl = 3600;
    for (int i = 0; i < argc; i++) {
        const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (value == NULL) {
            fprintf(stderr, "triage token: %s wants a value\n", flag);
            return 2;
        }
        i++;
        if (strcmp(flag, "--sub") == 0)
            sub = value;
        else if (strcmp(flag, "--role") == 0)
            role = value;
        else if (strcmp(flag, "--keys") == 0)
            keys_path = value;
        else if (strcmp(flag, "--kid") == 0)
            kid = value;
        else if (strcmp(flag, "--trial") == 0 && ntrials < 16)
            trials[ntrials++] = value;
        else if (strcmp(flag, "--ttl") == 0) {
            char *end;
            ttl = strtol(value, &end, 10);
            if (*end != '\0' || ttl < 1 || ttl > 366L * 86400) {
                fprintf(stderr, "triage token: --ttl wants seconds from 1 to 31622400 (got '%s')\n", value);
                return 2;
            }
        } else {
            fprintf(stderr, "triage token: unexpected argument '%s'\n", flag);
            return 2;
        }
    }
    static const char *const roles[] = {"patient", "investigator", "monitor", "admin"};
    int role_ok = 0;
    for (size_t r = 0; role != NULL && r < sizeof(roles) / sizeof(roles[0]); r++)
        role_ok |= strcmp(role, roles[r]) == 0;
    if (sub == NULL || *sub == '\0' || role == NULL || keys_path == NULL) {
        fprintf(stderr, "usage: triage token --sub ID --role ROLE [--trial T]... [--ttl SECONDS] --keys FILE "
                        "[--kid K]\n");
        return 2;
    }
    if (!role_ok) {
        fprintf(stderr, "triage token: --role wants patient, investigator, monitor or admin (got '%s')\n", role);
        return 2;
    }
    static tr_jwt_keys_t keys;
    char err[512];
    if (tr_jwt_keys_load(&keys, keys_path, err, sizeof(err)) != 0) {
        fprintf(stderr, "triage token: %s\n", err + (strncmp(err, "--token-keys ", 13) == 0 ? 13 : 0));
        return 2;
    }
    const tr_jwt_key_t *key = NULL;
    for (int k = 0; k < keys.count && key == NULL; k++)
        if (kid == NULL || strcmp(kid, keys.keys[k].kid) == 0)
            key = &keys.keys[k];
    if (key == NULL) {
        fprintf(stderr, "triage token: --kid %s: no such key in %s\n", kid, keys_path);
        tr_jwt_keys_wipe(&keys);
        return 2;
    }
    long now = (long)time(NULL);
    char payload[TR_JWT_PAYLOAD_MAX];
    size_t at = 0;
    int bad = 0;
    at += (size_t)snprintf(payload, sizeof(payload), "{\"sub\":");
    bad |= json_string(payload, sizeof(payload), &at, sub);
    at += (size_t)snprintf(payload + at, sizeof(payload) - at, ",\"role\":");
    bad |= json_string(payload, sizeof(payload), &at, role);
    if (ntrials == 1) {
        at += (size_t)snprintf(payload + at, sizeof(payload) - at, ",\"trial\":");
        bad |= json_string(payload, sizeof(payload), &at, trials[0]);
    } else if (ntrials > 1) {
        at += (size_t)snprintf(payload + at, sizeof(payload) - at, ",\"trials\":[");
        for (int t = 0; t < ntrials && !bad; t++) {
            if (t > 0 && at + 1 < sizeof(payload))
                payload[at++] = ',';
            bad |= json_string(payload, sizeof(payload), &at, trials[t]);
        }
        if (at + 1 < sizeof(payload))
            payload[at++] = ']';
    }
    if (!bad && at + 80 < sizeof(payload))
        at += (size_t)snprintf(payload + at, sizeof(payload) - at, ",\"iat\":%ld,\"nbf\":%ld,\"exp\":%ld}", now, now,
                               now + ttl);
    else
        bad = 1;
    char token[TR_JWT_TOKEN_MAX];
    int n = bad ? -1 : tr_jwt_sign(key, payload, at, token, sizeof(token));
    tr_jwt_keys_wipe(&keys);
    if (n < 0) {
        fprintf(stderr, "triage token: the claims are too long for a token\n");
        return 2;
    }
    printf("%s\n", token);
    return 0;
}

int main(int argc, char **argv)
{
    tr_upgrade_remember(argc, argv);
    if (argc > 1 && strcmp(argv[1], "reload") == 0)
        return admin_command("reload", "POST", "/_triage/reload", argc - 2, argv + 2);
    if (argc > 1 && strcmp(argv[1], "status") == 0)
        return admin_command("status", "GET", "/_triage/status", argc - 2, argv + 2);
    if (argc > 1 && strcmp(argv[1], "check") == 0)
        return check_command(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "backup") == 0)
        return backup_command(argc - 2, argv + 2);
    if (argc > 1 && strcmp(argv[1], "audit") == 0)
        return audit_command(argc - 2, argv + 2);
    if (argc > 1 && strcmp(argv[1], "token") == 0)
        return token_command(argc - 2, argv + 2);
    if (argc > 1 && strcmp(argv[1], "upgrade") == 0)
        return tr_upgrade_command(argc - 2, argv + 2);
    tr_config_t cfg;
    int rc = tr_config_parse(&cfg, argc, argv);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    char err[512];
    if (tr_privilege_resolve(cfg.user, &cfg.run_as, err, sizeof(err)) != 0) {
        fprintf(stderr, "triage: %s\n", err);
        return 2;
    }
    tr_access_log_set_format(cfg.access_log_json ? TR_ACCESS_LOG_JSON : TR_ACCESS_LOG_TEXT);
    rc = tr_log_open(cfg.error_log, cfg.access_log);
    if (rc != 0) {
        fprintf(stderr, "triage: cannot open a log file: %s\n", strerror(-rc));
        return 1;
    }
    return tr_master_run(&cfg);
}
