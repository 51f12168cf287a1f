#include "config.h"
#include "pg.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lua_alloc.h"
#include "pool.h"

/* The Lua half in the source tree (build/triage run from a checkout): the last resort. */
#ifndef TR_LUA_DIR
#define TR_LUA_DIR "core/lua"
#endif
/* Where `make install` puts the Lua half, relative to the directory holding the binary; and where
 * `luarocks make` deploys it in a rocks tree (triage-0.1.0-1.rockspec). */
#define TR_INSTALLED_LUA_DIR "/../share/triage/lua"
#define TR_ROCKS_LUA_DIR "/../share/lua/5.1"
#define TR_VERSION "0.1.0"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: triage [options]            serve the application\n"
            "       triage reload [--admin HOST:PORT] [--data DIR] [--admin-token-file FILE]\n"
            "                                   ask a running server to reload its code\n"
            "       triage status [--admin HOST:PORT] [--data DIR] [--admin-token-file FILE]\n"
            "                                   print a running server's status document\n"
            "       triage backup DEST [--data DIR]     copy the store, consistently, while it runs\n"
            "       triage audit verify [--data DIR | --store URL]\n"
            "                                   check the audit trail's hash chain (SQLite or PostgreSQL)\n"
            "       triage audit export [--data DIR | --store URL] [--format jsonl|csv] [--output FILE]\n"
            "                                   write every audit entry, in sequence order, for a reviewer\n"
            "       triage token --sub ID --role ROLE [--trial T]... [--ttl SEC] --keys FILE [--kid K]\n"
            "                                   print a bearer token for local testing\n"
            "\n"
            "  --app DIR                 application directory (routes/, scripts/, migrations/); default .\n"
            "  --data DIR                the store (DIR/triage.db, created and migrated at start), the admin token\n"
            "                            and the pid file; default ./data\n"
            "  --store URL               the store on PostgreSQL instead of SQLite: postgres://USER@HOST:PORT/DB\n"
            "                            (a libpq URL; README \"PostgreSQL\"); migrated at start\n"
            "  --store-connections N     PostgreSQL connections per worker; default 4\n"
            "  --listen HOST:PORT        public listener; default 127.0.0.1:8080\n"
            "  --workers N               worker processes; default: number of CPUs\n"
            "  --admin HOST:PORT         admin listener (/_triage/status, reload, metrics, health);\n"
            "                            default 127.0.0.1:9180; a non-loopback address needs a token given\n"
            "                            with --admin-token-file or $TRIAGE_ADMIN_TOKEN\n"
            "  --admin-token-file FILE   the admin API's token (Authorization: Bearer); default\n"
            "                            DATA_DIR/admin.token, made at first start (mode 0600); $TRIAGE_ADMIN_TOKEN\n"
            "                            overrides it\n"
            "  --public-health           the public listener also answers GET /_triage/health\n"
            "  --token-keys FILE         keys of the app's bearer tokens (HS256 JWT): lines `KID SECRET`, the\n"
            "                            file readable by its owner only; read once at start; default none\n"
            "  --token-skew SEC          clock difference allowed on a token's exp and nbf; default 60\n"
            "  --max-body BYTES          largest request body (k, m suffixes); default 1m\n"
            "  --max-header BYTES        largest header section; default 8k\n"
            "  --max-uri BYTES           longest request target; default 4k\n"
            "  --max-response BYTES      largest response body a handler may send (else 500); default 64m\n"
            "  --keepalive-timeout SEC   idle keep-alive connections close after this; default 60\n"
            "  --header-timeout SEC      the whole request head must arrive within this (408); default 20\n"
            "  --body-timeout SEC        longest pause while a request body arrives (408); default 20\n"
            "  --body-deadline SEC       the whole body must arrive within this (408); default 120\n"
            "  --write-timeout SEC       a client that takes no response bytes this long is closed; default 30\n"
            "  --lua-memory-limit BYTES  Lua memory of a worker (all its generations); an allocation past it\n"
            "                            fails the request that made it (500); k, m, g suffixes; default 1g\n"
            "  --max-connections N       open connections per worker (idle ones make room; else 503); default 4096\n"
            "  --shutdown-timeout SEC    how long in-flight requests may finish on SIGTERM; default 10\n"
            "  --handler-timeout SEC     longest a handler may run Lua without yielding (then 503, see\n"
            "                            README); default 10\n"
            "  --access-log FILE         buffered access log ('-' = stdout); default off\n"
            "  --access-log-format text|json  access log lines: text, or one JSON object a line; default text\n"
            "  --error-log FILE          error log; default stderr\n"
            "  --reload-check CMD        command that must succeed before new code goes live\n"
            "  --no-watch                do not reload on file changes (SIGHUP and 'triage reload' still do)\n"
            "  --user NAME               the user the workers (and the scripts) run as when started as root;\n"
            "                            default nobody; --user root keeps them root (warned at start)\n"
            "  --lua-dir DIR             the framework's Lua modules (DIR/triage/*.lua); default:\n"
            "                            $TRIAGE_LUA_DIR, else <binary's dir>/../share/triage/lua when\n"
            "                            installed, else the source tree it was built from\n"
            "  --version                 print the version and the Lua directory in use\n"
            "  --help\n");
}

/* Does dir hold the Lua half (dir/triage/app.lua)? */
static int is_lua_dir(const char *dir)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s/triage/app.lua", dir);
    return n > 0 && (size_t)n < sizeof(path) && access(path, R_OK) == 0;
}

/*
 * The directory holding the Lua half: --lua-dir (or $TRIAGE_LUA_DIR) if given; else the installed
 * layout next to the running binary, <dir of /proc/self/exe>/../share/triage/lua, whatever prefix it
 * was installed to and wherever that prefix was moved since; else the source tree compiled in.
 * Returns an absolute path when the directory exists. The result lives in a static buffer (the
 * configuration is parsed once, in the master), so nothing is left to free, even after --version.
 */
static const char *find_lua_dir(const char *given)
{
    static char resolved[PATH_MAX];
    /* `make install`'s layout, then a luarocks tree's (the rock deploys its modules among the tree's) */
    static const char *const installed[] = {TR_INSTALLED_LUA_DIR, TR_ROCKS_LUA_DIR};
    const char *dir = given;
    if (dir == NULL) {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        char *slash = NULL;
        if (n > 0 && (size_t)n < sizeof(exe) - 1) {
            exe[n] = '\0';
            slash = strrchr(exe, '/');
        }
        for (size_t i = 0; slash != NULL && i < sizeof(installed) / sizeof(installed[0]); i++) {
            if ((size_t)(slash - exe) + strlen(installed[i]) < sizeof(exe)) {
                memcpy(slash, installed[i], strlen(installed[i]) + 1); /* <dir of the binary><installed> */
                if (is_lua_dir(exe) && realpath(exe, resolved) != NULL)
                    return resolved;
            }
        }
        dir = TR_LUA_DIR;
    }
    if (realpath(dir, resolved) != NULL)
        return resolved;
    return dir;
}

const char *tr_config_lua_dir(const char *given)
{
    return find_lua_dir(given);
}

/* A size in bytes with an optional k, m or g suffix, from 1 to max. */
static int parse_size_upto(const char *s, size_t *out, unsigned long long max)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s < '0' || *s > '9') /* strtoull would take "-1" (as 2^64 - 1) and leading spaces */
        return -1;
    int shift = 0;
    if (*end == 'k' || *end == 'K')
        shift = 10, end++;
    else if (*end == 'm' || *end == 'M')
        shift = 20, end++;
    else if (*end == 'g' || *end == 'G')
        shift = 30, end++;
    if (*end != '\0' || v == 0 || v > (max >> shift))
        return -1;
    *out = (size_t)(v << shift);
    return 0;
}

static int parse_size(const char *s, size_t *out)
{
    return parse_size_upto(s, out, 1ULL << 30);
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !(v > 0) || v > 86400)
        return -1;
    *out = v;
    return 0;
}

int tr_config_parse_addr(const char *s, char *host, size_t host_size, int *port)
{
    const char *colon = strrchr(s, ':');
    const char *p = colon ? colon + 1 : s;
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || *end != '\0' || v <= 0 || v > 65535)
        return -1;
    size_t hlen = colon ? (size_t)(colon - s) : 0;
    if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') /* [::1]:8080 */
        s++, hlen -= 2;
    if (hlen == 0) {
        snprintf(host, host_size, "127.0.0.1");
    } else {
        if (hlen >= host_size)
            return -1;
        memcpy(host, s, hlen);
        host[hlen] = '\0';
    }
    *port = (int)v;
    return 0;
}

int tr_config_data_dir(const char *given, char *out, size_t size)
{
    char cwd[PATH_MAX];
    int n;
    if (given[0] == '/')
        n = snprintf(out, size, "%s", given);
    else if (getcwd(cwd, sizeof(cwd)) != NULL)
        n = snprintf(out, size, "%s/%s", cwd, given);
    else
        return -1;
    if (n < 0 || (size_t)n >= size)
        return -1;
    while (n > 1 && out[n - 1] == '/') /* "data/" and "data" are one directory */
        out[--n] = '\0';
    return 0;
}

int tr_config_admin_token_path(const char *given, const char *data, char *out, size_t size)
{
    char dir[4096];
    if (given != NULL)
        return tr_config_data_dir(given, out, size); /* the same absolute-path rule, for a file */
    if (tr_config_data_dir(data, dir, sizeof(dir)) != 0)
        return -1;
    int n = snprintf(out, size, "%s/%s", dir, "admin.token");
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

int tr_config_parse(tr_config_t *cfg, int argc, char **argv)
{
    memset(cfg, 0, sizeof(*cfg));
    const char *app = ".";
    snprintf(cfg->listen_host, sizeof(cfg->listen_host), "127.0.0.1");
    cfg->listen_port = 8080;
    snprintf(cfg->admin_host, sizeof(cfg->admin_host), "127.0.0.1");
    cfg->admin_port = 9180;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->workers = ncpu > 0 ? (int)ncpu : 1;
    cfg->store_connections = TR_PG_CONNECTIONS;
    cfg->max_body = 1 << 20;
    cfg->max_header = 8 << 10;
    cfg->max_uri = 4 << 10;
    cfg->max_response = 64 << 20;
    cfg->keepalive_timeout = 60;
    cfg->shutdown_timeout = 10;
    cfg->handler_timeout = 10;
    cfg->header_timeout = 20;
    cfg->body_timeout = 20;
    cfg->body_deadline = 120;
    cfg->write_timeout = 30;
    cfg->max_connections = 4096;
    cfg->lua_memory_limit = (size_t)1 << 30;
    cfg->watch = 1;
    cfg->token_skew = 60;
    const char *data = "data";
    const char *token_file = NULL;
    const char *lua_dir = getenv("TRIAGE_LUA_DIR") && *getenv("TRIAGE_LUA_DIR") ? getenv("TRIAGE_LUA_DIR") : NULL;
    int version = 0;

    enum {
        O_APP = 256,
        O_LISTEN,
        O_WORKERS,
        O_ADMIN,
        O_MAX_BODY,
        O_MAX_HEADER,
        O_MAX_URI,
        O_MAX_RESPONSE,
        O_KEEPALIVE,
        O_SHUTDOWN,
        O_HANDLER_TIMEOUT,
        O_HEADER_TIMEOUT,
        O_BODY_TIMEOUT,
        O_BODY_DEADLINE,
        O_WRITE_TIMEOUT,
        O_MAX_CONNECTIONS,
        O_LUA_MEMORY_LIMIT,
        O_ACCESS_LOG,
        O_ERROR_LOG,
        O_RELOAD_CHECK,
        O_NO_WATCH,
        O_LUA_DIR,
        O_USER,
        O_DATA,
        O_VERSION,
        O_ADMIN_TOKEN_FILE,
        O_PUBLIC_HEALTH,
        O_ACCESS_LOG_FORMAT,
        O_TOKEN_KEYS,
        O_TOKEN_SKEW,
        O_STORE,
        O_STORE_CONNECTIONS,
        O_HELP
    };
    static const struct option options[] = {
        {"app", required_argument, NULL, O_APP},
        {"listen", required_argument, NULL, O_LISTEN},
        {"workers", required_argument, NULL, O_WORKERS},
        {"admin", required_argument, NULL, O_ADMIN},
        {"max-body", required_argument, NULL, O_MAX_BODY},
        {"max-header", required_argument, NULL, O_MAX_HEADER},
        {"max-uri", required_argument, NULL, O_MAX_URI},
        {"max-response", required_argument, NULL, O_MAX_RESPONSE},
        {"keepalive-timeout", required_argument, NULL, O_KEEPALIVE},
        {"shutdown-timeout", required_argument, NULL, O_SHUTDOWN},
        {"handler-timeout", required_argument, NULL, O_HANDLER_TIMEOUT},
        {"header-timeout", required_argument, NULL, O_HEADER_TIMEOUT},
        {"body-timeout", required_argument, NULL, O_BODY_TIMEOUT},
        {"body-deadline", required_argument, NULL, O_BODY_DEADLINE},
        {"write-timeout", required_argument, NULL, O_WRITE_TIMEOUT},
        {"max-connections", required_argument, NULL, O_MAX_CONNECTIONS},
        {"lua-memory-limit", required_argument, NULL, O_LUA_MEMORY_LIMIT},
        {"access-log", required_argument, NULL, O_ACCESS_LOG},
        {"error-log", required_argument, NULL, O_ERROR_LOG},
        {"reload-check", required_argument, NULL, O_RELOAD_CHECK},
        {"no-watch", no_argument, NULL, O_NO_WATCH},
        {"lua-dir", required_argument, NULL, O_LUA_DIR},
        {"user", required_argument, NULL, O_USER},
        {"data", required_argument, NULL, O_DATA},
        {"version", no_argument, NULL, O_VERSION},
        {"admin-token-file", required_argument, NULL, O_ADMIN_TOKEN_FILE},
        {"public-health", no_argument, NULL, O_PUBLIC_HEALTH},
        {"token-keys", required_argument, NULL, O_TOKEN_KEYS},
        {"token-skew", required_argument, NULL, O_TOKEN_SKEW},
        {"store", required_argument, NULL, O_STORE},
        {"store-connections", required_argument, NULL, O_STORE_CONNECTIONS},
        {"access-log-format", required_argument, NULL, O_ACCESS_LOG_FORMAT},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        const char *bad = NULL;
        switch (c) {
        case O_APP: app = optarg; break;
        case O_LISTEN:
            if (tr_config_parse_addr(optarg, cfg->listen_host, sizeof(cfg->listen_host), &cfg->listen_port) != 0)
                bad = "--listen wants HOST:PORT";
            break;
        case O_ADMIN:
            if (tr_config_parse_addr(optarg, cfg->admin_host, sizeof(cfg->admin_host), &cfg->admin_port) != 0)
                bad = "--admin wants HOST:PORT";
            break;
        case O_HEADER_TIMEOUT:
            if (parse_seconds(optarg, &cfg->header_timeout) != 0)
                bad = "--header-timeout wants seconds";
            break;
        case O_BODY_TIMEOUT:
            if (parse_seconds(optarg, &cfg->body_timeout) != 0)
                bad = "--body-timeout wants seconds";
            break;
        case O_BODY_DEADLINE:
            if (parse_seconds(optarg, &cfg->body_deadline) != 0)
                bad = "--body-deadline wants seconds";
            break;
        case O_WRITE_TIMEOUT:
            if (parse_seconds(optarg, &cfg->write_timeout) != 0)
                bad = "--write-timeout wants seconds";
            break;
        case O_MAX_CONNECTIONS: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end != '\0' || v < 1 || v > 1000000)
                bad = "--max-connections wants a number from 1 to 1000000";
            cfg->max_connections = (int)v;
            break;
        }
        case O_LUA_MEMORY_LIMIT:
            if (parse_size_upto(optarg, &cfg->lua_memory_limit, 1ULL << 40) != 0 ||
                cfg->lua_memory_limit < TR_LUA_ALLOC_MIN_LIMIT)
                bad = "--lua-memory-limit wants a size from 8m to 1024g, like 512m or 2g";
            break;
        case O_STORE:
            if (!tr_pg_is_url(optarg))
                bad = "--store wants a PostgreSQL URL, postgres://USER@HOST:PORT/DATABASE (without it, the "
                      "store is SQLite in the data directory)";
            cfg->store_url = optarg;
            break;
        case O_STORE_CONNECTIONS: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end != '\0' || v < 1 || v > 64)
                bad = "--store-connections wants a number from 1 to 64";
            cfg->store_connections = (int)v;
            break;
        }
        case O_WORKERS: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end != '\0' || v < 1 || v > 256)
                bad = "--workers wants a number from 1 to 256";
            cfg->workers = (int)v;
            break;
        }
        case O_MAX_BODY:
            if (parse_size(optarg, &cfg->max_body) != 0)
                bad = "--max-body wants a size like 1048576 or 1m";
            break;
        case O_MAX_HEADER:
            if (parse_size(optarg, &cfg->max_header) != 0)
                bad = "--max-header wants a size like 8k";
            break;
        case O_MAX_RESPONSE:
            if (parse_size(optarg, &cfg->max_response) != 0)
                bad = "--max-response wants a size like 64m";
            break;
        case O_MAX_URI:
            if (parse_size(optarg, &cfg->max_uri) != 0)
                bad = "--max-uri wants a size like 4k";
            break;
        case O_KEEPALIVE:
            if (parse_seconds(optarg, &cfg->keepalive_timeout) != 0)
                bad = "--keepalive-timeout wants seconds";
            break;
        case O_SHUTDOWN:
            if (parse_seconds(optarg, &cfg->shutdown_timeout) != 0)
                bad = "--shutdown-timeout wants seconds";
            break;
        case O_HANDLER_TIMEOUT:
            if (parse_seconds(optarg, &cfg->handler_timeout) != 0 || cfg->handler_timeout < 0.2)
                bad = "--handler-timeout wants seconds, at least 0.2";
            break;
        case O_ACCESS_LOG: cfg->access_log = optarg; break;
        case O_ERROR_LOG: cfg->error_log = optarg; break;
        case O_RELOAD_CHECK: cfg->reload_check = optarg; break;
        case O_NO_WATCH: cfg->watch = 0; break;
        case O_LUA_DIR: lua_dir = optarg; break;
        case O_USER:
            if (*optarg == '\0')
                bad = "--user wants a user name";
            cfg->user = optarg;
            break;
        case O_DATA: data = optarg; break;
        case O_VERSION: version = 1; break;
        case O_ADMIN_TOKEN_FILE: token_file = optarg; break;
        case O_PUBLIC_HEALTH: cfg->public_health = 1; break;
        case O_TOKEN_KEYS: cfg->token_keys = optarg; break;
        case O_TOKEN_SKEW:
            if (parse_seconds(optarg, &cfg->token_skew) != 0 || cfg->token_skew > 3600)
                bad = "--token-skew wants seconds, at most 3600";
            break;
        case O_ACCESS_LOG_FORMAT:
            if (strcmp(optarg, "json") == 0)
                cfg->access_log_json = 1;
            else if (strcmp(optarg, "text") == 0)
                cfg->access_log_json = 0;
            else
                bad = "--access-log-format wants text or json";
            break;
        case O_HELP: usage(stdout); return 1;
        default:
            fprintf(stderr, "triage: unknown or incomplete option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return -1;
        }
        if (bad != NULL) {
            fprintf(stderr, "triage: %s (got '%s')\n", bad, optarg);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "triage: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return -1;
    }
    cfg->lua_dir = find_lua_dir(lua_dir);
    if (version) {
        printf("triage " TR_VERSION "\nlua: %s\n", cfg->lua_dir);
        return 1;
    }
    if (!is_lua_dir(cfg->lua_dir)) {
        fprintf(stderr, "triage: no triage/app.lua in the Lua directory %s (%s)\n", cfg->lua_dir,
                lua_dir != NULL ? "--lua-dir or $TRIAGE_LUA_DIR" : "neither installed nor in the source tree");
        return -1;
    }
    if (cfg->listen_port == cfg->admin_port &&
        (strcmp(cfg->listen_host, cfg->admin_host) == 0 || strcmp(cfg->admin_host, "0.0.0.0") == 0 ||
         strcmp(cfg->listen_host, "0.0.0.0") == 0)) {
        fprintf(stderr, "triage: --admin must not be the public listener (%s:%d)\n", cfg->listen_host,
                cfg->listen_port);
        return -1;
    }
    char resolved[PATH_MAX];
    if (realpath(app, resolved) == NULL || strlen(resolved) >= sizeof(cfg->app_path)) {
        fprintf(stderr, "triage: --app %s: no such directory\n", app);
        return -1;
    }
    memcpy(cfg->app_path, resolved, strlen(resolved) + 1);
    cfg->app_dir = cfg->app_path;
    if (tr_config_data_dir(data, cfg->data_path, sizeof(cfg->data_path)) != 0) {
        fprintf(stderr, "triage: --data %s: path too long\n", data);
        return -1;
    }
    cfg->data_dir = cfg->data_path;
    if (tr_config_admin_token_path(token_file, data, cfg->admin_token_path, sizeof(cfg->admin_token_path)) != 0) {
        fprintf(stderr, "triage: --admin-token-file %s: path too long\n", token_file ? token_file : "");
        return -1;
    }
    cfg->admin_token_given = token_file != NULL;
    return 0;
}
