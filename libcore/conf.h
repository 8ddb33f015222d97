/* conf.h - xmppd.conf: one file read by every daemon and xmppctl.
 * Format: "key = value" lines, '#' comments, repeatable list keys, and
 * "[host DOMAIN]" sections for per-domain settings. Every key, its default
 * and an example are in xmppd.conf(5). Errors name the file and line. */
#ifndef XMPPD_CONF_H
#define XMPPD_CONF_H

#include <stddef.h>

#define CONF_MAX_ADDRS 16
#define CONF_MAX_HOSTS 64

#define CONF_MAX_MODULES 64

/* "module.key = value": an option of a module, global or per host. */
struct conf_opt {
    char *module, *key, *value;
    int line;            /* where it was set, for the module's error message */
};

/* A module list: "modules = a b c" lines (the first line of a file
 * replaces the default, later ones add). */
struct conf_mods {
    char *name[CONF_MAX_MODULES];
    size_t n;
    int set;             /* a "modules" line was read */
};

struct conf_host {
    char *domain;   /* normalized (nameprep) */
    char *tls_cert; /* PEM chain; NULL: <state_dir>/tls/<domain>.crt (made by `xmppctl start`) */
    char *tls_key;
    struct conf_mods modules;  /* set: replaces the global list for this host */
    struct conf_mods disabled; /* "modules_disabled": removed from the global list */
    struct conf_opt *opts;     /* module options of this host (override global ones) */
    size_t n_opts;
};

struct conf {
    char *path;          /* the file read, NULL for built-in defaults */
    char *state_dir;     /* persistent data (tdb files); default ./state in dev, see xmppd.conf(5) */
    char *run_dir;       /* sockets and pid files; default <state_dir>/run */
    int log_level;       /* syslog priority 3..7 */
    char *c2s_listen[CONF_MAX_ADDRS];     /* "ip:port" / "[ip6]:port", STARTTLS port */
    size_t n_c2s_listen;
    char *c2s_tls_listen[CONF_MAX_ADDRS]; /* XEP-0368 direct TLS */
    size_t n_c2s_tls_listen;
    int allow_plaintext_auth; /* SASL without TLS (loopback benchmarks only) */
    unsigned sm_shards;       /* N sm instances sm-0..sm-(N-1); users hashed over N */
    unsigned c2s_instances;   /* c2s-1..c2s-N */
    unsigned listen_instances;/* listen-1..listen-N (SO_REUSEPORT) */
    size_t max_stanza_size;   /* bytes; RFC 6120 §13.12 leaves it to the server */
    unsigned max_depth;
    unsigned max_attrs;
    size_t read_rate;         /* bytes/s per connection after the burst */
    size_t read_burst;
    size_t out_queue_max;     /* bytes buffered for a client before it is a slow reader */
    unsigned keepalive_secs;  /* whitespace keepalive interval */
    unsigned idle_timeout_secs;      /* authenticated idle connection (0 = never) */
    unsigned handshake_timeout_secs; /* time to authenticate and bind */
    unsigned scram_iterations;
    unsigned plain_logins_per_sec;   /* PBKDF2 rate limit for PLAIN, per c2s */
    int tdb_nosync;           /* survive process crashes only, not power loss */
    char *router_endpoint;    /* ZeroMQ endpoint the router binds; default ipc://<run_dir>/router */
    char *c2s_endpoint_fmt;   /* with %u for the instance number; default ipc://<run_dir>/c2s-%u */
    char *ctl_endpoint_fmt;   /* with %s for the instance name; default ipc://<run_dir>/ctl-%s */
    char *trace_endpoint_fmt; /* PUB socket of trace lines, %s = instance; default ipc://<run_dir>/trace-%s */
    unsigned heartbeat_ms;    /* liveness: heartbeat period */
    unsigned peer_timeout_ms; /* a peer silent this long is dead */
    int show_version;         /* answer XEP-0092 with the version */
    char *module_dir;         /* external modules (NAME.so); default PKGLIBDIR/modules */
    struct conf_mods modules; /* modules of every host; default CONF_DEFAULT_MODULES */
    struct conf_opt *opts;    /* module options for every host */
    size_t n_opts;
    struct conf_host hosts[CONF_MAX_HOSTS];
    size_t n_hosts;
};

/* Load path (NULL: defaults only, domain "localhost"); 0, or -1 with
 * "file:line: message" in err. */
int conf_load(const char *path, struct conf *c, char *err, size_t errlen);
/* Free what conf_load allocated. */
void conf_free(struct conf *c);
/* The host section for a normalized domain, or NULL if not served. */
const struct conf_host *conf_host(const struct conf *c, const char *domain, size_t len);
/* The modules enabled when the file names none (xmppd.conf(5)). */
#ifndef CONF_DEFAULT_MODULES
#define CONF_DEFAULT_MODULES "disco ping version time last vcard private privacy blocking contact_info"
#endif
/* A whole number with an optional K/M/G (binary) suffix, as the size keys
 * take it: 0, or -1 if v is not one. */
int conf_parse_size(const char *v, unsigned long long *out);
/* The modules enabled for host h, in configured order, into out (at
 * most max); returns how many. */
size_t conf_host_modules(const struct conf *c, const struct conf_host *h, const char **out, size_t max);
/* 1 if module name is enabled for host h, else 0. */
int conf_module_enabled(const struct conf *c, const struct conf_host *h, const char *name);
/* Value of option "module.key" for host h (its own section first, then
 * the global one), or NULL when not set. */
const struct conf_opt *conf_module_opt(const struct conf *c, const struct conf_host *h, const char *module,
                                       const char *key);
/* 1 if the module configuration (module_dir, lists, options) of a and b
 * differs: a running daemon cannot apply that (modules load at start). */
int conf_modules_differ(const struct conf *a, const struct conf *b);
/* Endpoint of a daemon's control socket into out. */
void conf_ctl_endpoint(const struct conf *c, const char *instance, char *out, size_t size);
/* Endpoint of a daemon's trace stream (xmppd-trace(7)) into out. */
void conf_trace_endpoint(const struct conf *c, const char *instance, char *out, size_t size);
/* Endpoint of c2s instance n (1-based) into out. */
void conf_c2s_endpoint(const struct conf *c, unsigned n, char *out, size_t size);
/* TLS certificate/key paths for a host (configured or the dev default). */
void conf_tls_paths(const struct conf *c, const struct conf_host *h, char *cert, char *key, size_t size);

#endif
