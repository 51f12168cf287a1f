/*
 * Command-line configuration. Parsed once in the master; workers inherit it across fork.
 */
#ifndef TR_CONFIG_H
#define TR_CONFIG_H

#include <stddef.h>

#include "privilege.h"

typedef struct tr_config_s {
    const char *app_dir;  /* absolute path of the application (routes/, scripts/): app_path */
    const char *data_dir; /* absolute path of the data directory (the store): data_path */
    const char *lua_dir;  /* the Lua half of the framework (the triage/ modules) */
    char listen_host[256];
    int listen_port;
    char admin_host[256];
    int admin_port;
    int workers;
    size_t max_body;
    size_t max_header;
    size_t max_uri;
    size_t max_response;
    double keepalive_timeout;
    double shutdown_timeout;
    double handler_timeout;   /* a handler's longest run of Lua code without giving the loop back */
    double header_timeout;    /* for the whole request head, from its first byte */
    double body_timeout;      /* between two reads of a request body */
    double body_deadline;     /* for the whole body, from the end of the head */
    double write_timeout;     /* without progress writing a response (a client that does not read) */
    int max_connections;      /* per worker */
    size_t lua_memory_limit;  /* bytes of Lua memory per worker, all its generations together */
    const char *access_log;   /* NULL: off */
    const char *error_log;    /* NULL: standard error */
    const char *reload_check; /* command run against a new tree before it goes live; NULL: none */
    int watch;                /* watch routes/ and scripts/ for changes */
    const char *user;         /* --user NAME, NULL when not given */
    tr_identity_t run_as;     /* who the workers run as: resolved from user by main (tr_privilege_resolve) */
    char app_path[4096];
    char data_path[4096];
    /* --access-log-format json: one JSON object a line */
    int access_log_json;
    /* --public-health: the public listener also answers GET /_triage/health */
    int public_health;
    /* The admin token file (admin_token.h): --admin-token-file, default DATA_DIR/admin.token */
    char admin_token_path[4096];
    int admin_token_given; /* --admin-token-file was given */
    /* --token-keys FILE: the app's bearer-token keys (jwt.h), read by the master; NULL: none */
    const char *token_keys;
    double token_skew;     /* --token-skew: seconds allowed on exp and nbf */
    const char *store_url; /* --store postgres://...: the store on PostgreSQL (pg.h); NULL: SQLite in data_dir */
    int store_connections; /* --store-connections: PostgreSQL connections per worker */
} tr_config_t;

/* How long loading the application may run Lua (the preflight, a worker loading a generation): three
 * handler budgets, at least 5 s. A load that runs longer is taken for an endless loop at load time. */
static inline double tr_config_load_budget(double handler_timeout)
{
    return 3 * handler_timeout < 5 ? 5 : 3 * handler_timeout;
}

/*
 * Fill cfg from argv (defaults first). Returns 0, 1 when the caller should exit 0 (--help, --version
 * printed), or -1 after printing a usage error to standard error.
 */
int tr_config_parse(tr_config_t *cfg, int argc, char **argv);

/* The absolute path of a data directory given on the command line (relative to the working
 * directory; it need not exist yet) at out. Returns 0, or -1 if it does not fit. */
int tr_config_data_dir(const char *given, char *out, size_t size);

/* The admin token file: given (--admin-token-file, relative to the working directory), else
 * DATA_DIR/admin.token of the data directory given (default "data"). Returns 0, or -1 if too long. */
int tr_config_admin_token_path(const char *given, const char *data, char *out, size_t size);

/* The directory of the framework's Lua modules as the server finds it: given (--lua-dir or
 * $TRIAGE_LUA_DIR; NULL: none), else the installed layout beside the binary, else the source tree.
 * The result lives in a static buffer. */
const char *tr_config_lua_dir(const char *given);

/* Parse "HOST:PORT" (or ":PORT", or "PORT"). Returns 0 or -1. */
int tr_config_parse_addr(const char *s, char *host, size_t host_size, int *port);

#endif
