/* config.c - reads xmppd.conf (conf.h): defaults first, then the file's
 * "key = value" lines and "[host DOMAIN]" sections. Unknown keys and bad
 * values are errors naming the file and line, so a typo never silently
 * falls back to a default. */
#include "config.h"
#include "conf.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifndef LOCALSTATEDIR
#define LOCALSTATEDIR "/var"
#endif
#ifndef PKGLIBDIR
#define PKGLIBDIR "/usr/local/lib/xmppd"
#endif

enum val { V_STR, V_BOOL, V_UINT, V_SIZE, V_LEVEL, V_ADDR };

struct key {
    const char *name;
    enum val type;
    size_t off;     /* offset in struct conf */
    size_t list_n;  /* for V_ADDR: offset of the count */
    unsigned long long min, max;
};

#define OFF(f) offsetof(struct conf, f)
static const struct key keys[] = {
    { "state_dir", V_STR, OFF(state_dir), 0, 0, 0 },
    { "run_dir", V_STR, OFF(run_dir), 0, 0, 0 },
    { "log_level", V_LEVEL, OFF(log_level), 0, 0, 0 },
    { "c2s_listen", V_ADDR, OFF(c2s_listen), OFF(n_c2s_listen), 0, 0 },
    { "c2s_tls_listen", V_ADDR, OFF(c2s_tls_listen), OFF(n_c2s_tls_listen), 0, 0 },
    { "allow_plaintext_auth", V_BOOL, OFF(allow_plaintext_auth), 0, 0, 0 },
    { "sm_shards", V_UINT, OFF(sm_shards), 0, 1, 64 },
    { "c2s_instances", V_UINT, OFF(c2s_instances), 0, 1, 64 },
    { "listen_instances", V_UINT, OFF(listen_instances), 0, 1, 64 },
    { "max_stanza_size", V_SIZE, OFF(max_stanza_size), 0, 10000, 2u << 20 }, /* an internal record carries < 4 MiB of escaped XML */
    { "max_depth", V_UINT, OFF(max_depth), 0, 4, 1000 },
    { "max_attrs", V_UINT, OFF(max_attrs), 0, 4, 10000 },
    { "read_rate", V_SIZE, OFF(read_rate), 0, 1024, 1ull << 40 },
    { "read_burst", V_SIZE, OFF(read_burst), 0, 1024, 1ull << 40 },
    { "out_queue_max", V_SIZE, OFF(out_queue_max), 0, 65536, 1ull << 32 },
    { "keepalive_secs", V_UINT, OFF(keepalive_secs), 0, 0, 86400 },
    { "idle_timeout_secs", V_UINT, OFF(idle_timeout_secs), 0, 0, 864000 },
    { "handshake_timeout_secs", V_UINT, OFF(handshake_timeout_secs), 0, 1, 3600 },
    { "scram_iterations", V_UINT, OFF(scram_iterations), 0, 4096, 1000000 },
    { "plain_logins_per_sec", V_UINT, OFF(plain_logins_per_sec), 0, 1, 1000000 },
    { "tdb_nosync", V_BOOL, OFF(tdb_nosync), 0, 0, 0 },
    { "router_endpoint", V_STR, OFF(router_endpoint), 0, 0, 0 },
    { "c2s_endpoint", V_STR, OFF(c2s_endpoint_fmt), 0, 0, 0 },
    { "ctl_endpoint", V_STR, OFF(ctl_endpoint_fmt), 0, 0, 0 },
    { "trace_endpoint", V_STR, OFF(trace_endpoint_fmt), 0, 0, 0 },
    { "heartbeat_ms", V_UINT, OFF(heartbeat_ms), 0, 50, 60000 },
    { "peer_timeout_ms", V_UINT, OFF(peer_timeout_ms), 0, 200, 600000 },
    { "show_version", V_BOOL, OFF(show_version), 0, 0, 0 },
    { "module_dir", V_STR, OFF(module_dir), 0, 0, 0 },
};

static void set_err(char *err, size_t errlen, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void set_err(char *err, size_t errlen, const char *file, int line, const char *fmt, ...)
{
    int n = snprintf(err, errlen, "%s:%d: ", file ? file : "(defaults)", line);
    if (n < 0 || (size_t)n >= errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

static void defaults(struct conf *c)
{
    memset(c, 0, sizeof *c);
    c->log_level = LOG_LVL_INFO;
    c->sm_shards = 1;
    c->c2s_instances = 1;
    c->listen_instances = 1;
    c->max_stanza_size = 262144; /* like Prosody */
    c->max_depth = 32;
    c->max_attrs = 64;
    c->read_rate = 1u << 20;
    c->read_burst = 4u << 20;
    c->out_queue_max = 1u << 20;
    c->keepalive_secs = 60;
    c->idle_timeout_secs = 600;
    c->handshake_timeout_secs = 30;
    c->scram_iterations = 4096;
    c->plain_logins_per_sec = 200;
    c->heartbeat_ms = 1000;
    c->peer_timeout_ms = 5000;
    c->show_version = 1;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

static int parse_bool(const char *v, int *out)
{
    static const char *const yes[] = { "yes", "true", "on", "1" }, *const no[] = { "no", "false", "off", "0" };
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) { *out = 1; return 0; }
        if (strcasecmp(v, no[i]) == 0) { *out = 0; return 0; }
    }
    return -1;
}

/* Whole number with an optional K/M/G (binary) suffix. */
static int parse_number(const char *v, int allow_suffix, unsigned long long *out)
{
    if (!isdigit((unsigned char)*v)) return -1;
    errno = 0;
    char *end;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno) return -1;
    if (allow_suffix && *end) {
        unsigned shift = 0;
        switch (toupper((unsigned char)*end)) {
        case 'K': shift = 10; break;
        case 'M': shift = 20; break;
        case 'G': shift = 30; break;
        default: return -1;
        }
        end++;
        if (n > (ULLONG_MAX >> shift)) return -1;
        n <<= shift;
    }
    if (*end) return -1;
    *out = n;
    return 0;
}

/* "ip:port" or "[ip6]:port" with a port in 1..65535. */
static int valid_addr(const char *v)
{
    const char *colon;
    if (v[0] == '[') {
        const char *close = strchr(v, ']');
        if (!close || close[1] != ':') return 0;
        colon = close + 1;
    } else {
        colon = strrchr(v, ':');
        if (!colon || colon == v || memchr(v, ':', (size_t)(colon - v))) return 0;
    }
    unsigned long long port;
    return parse_number(colon + 1, 0, &port) == 0 && port >= 1 && port <= 65535;
}

static int set_key(struct conf *c, const struct key *k, const char *v, int *addr_seen,
                   const char *file, int line, char *err, size_t errlen)
{
    char *base = (char *)c;
    unsigned long long n;
    switch (k->type) {
    case V_STR: {
        char **p = (char **)(base + k->off);
        free(*p);
        *p = strdup(v);
        return *p ? 0 : -1;
    }
    case V_BOOL:
        if (parse_bool(v, (int *)(base + k->off)) == 0) return 0;
        set_err(err, errlen, file, line, "%s: expected yes or no, got '%s'", k->name, v);
        return -1;
    case V_LEVEL: {
        int lvl = log_level_parse(v);
        if (lvl >= 0) { *(int *)(base + k->off) = lvl; return 0; }
        set_err(err, errlen, file, line, "%s: expected err, warning, notice, info or debug, got '%s'", k->name, v);
        return -1;
    }
    case V_UINT:
    case V_SIZE:
        if (parse_number(v, k->type == V_SIZE, &n) < 0 || n < k->min || n > k->max) {
            set_err(err, errlen, file, line, "%s: expected a number from %llu to %llu, got '%s'",
                    k->name, k->min, k->max, v);
            return -1;
        }
        if (k->type == V_UINT) *(unsigned *)(base + k->off) = (unsigned)n;
        else *(size_t *)(base + k->off) = (size_t)n;
        return 0;
    case V_ADDR: {
        char **list = (char **)(base + k->off);
        size_t *count = (size_t *)(base + k->list_n);
        if (!*addr_seen) { /* the first line of a list replaces the default */
            for (size_t i = 0; i < *count; i++) free(list[i]);
            *count = 0;
            *addr_seen = 1;
        }
        if (strcasecmp(v, "none") == 0) return 0;
        if (!valid_addr(v)) {
            set_err(err, errlen, file, line, "%s: expected ADDRESS:PORT or [IPV6]:PORT, got '%s'", k->name, v);
            return -1;
        }
        if (*count >= CONF_MAX_ADDRS) {
            set_err(err, errlen, file, line, "%s: at most %d addresses", k->name, CONF_MAX_ADDRS);
            return -1;
        }
        list[*count] = strdup(v);
        if (!list[*count]) return -1;
        (*count)++;
        return 0;
    }
    }
    return -1;
}

static int lowercase_domain(const char *v, char *out, size_t size)
{
    size_t n = strlen(v);
    if (n == 0 || n >= size || n > 1023) return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (ch <= ' ' || ch == '@' || ch == '/' || ch == '\'' || ch == '"') return -1;
        out[i] = (char)tolower(ch);
    }
    out[n] = '\0';
    if (out[n - 1] == '.') out[n - 1] = '\0';
    return out[0] ? 0 : -1;
}

static struct conf_host *add_host(struct conf *c, const char *domain, const char *file, int line,
                                  char *err, size_t errlen)
{
    char d[1024];
    if (lowercase_domain(domain, d, sizeof d) < 0) {
        set_err(err, errlen, file, line, "'%s' is not a domain name", domain);
        return NULL;
    }
    for (size_t i = 0; i < c->n_hosts; i++)
        if (strcmp(c->hosts[i].domain, d) == 0) return &c->hosts[i];
    if (c->n_hosts >= CONF_MAX_HOSTS) {
        set_err(err, errlen, file, line, "at most %d hosts", CONF_MAX_HOSTS);
        return NULL;
    }
    struct conf_host *h = &c->hosts[c->n_hosts];
    h->domain = strdup(d);
    if (!h->domain) return NULL;
    c->n_hosts++;
    return h;
}

/* Relative paths in a file are relative to the file's directory. */
static char *resolve_path(const char *path, const char *conf_file)
{
    if (path[0] == '/' || !conf_file) return strdup(path);
    const char *slash = strrchr(conf_file, '/');
    if (!slash) return strdup(path);
    size_t dl = (size_t)(slash - conf_file);
    char *out = malloc(dl + 1 + strlen(path) + 1);
    if (!out) return NULL;
    memcpy(out, conf_file, dl);
    out[dl] = '/';
    strcpy(out + dl + 1, path);
    return out;
}

/* A module name: lowercase letters, digits and '_', as in NAME.so. */
static int valid_module_name(const char *v, size_t n)
{
    if (n == 0 || n > 63) return 0;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)v[i]) || isdigit((unsigned char)v[i]) || v[i] == '_')) return 0;
    return 1;
}

static void mods_clear(struct conf_mods *m)
{
    for (size_t i = 0; i < m->n; i++) free(m->name[i]);
    m->n = 0;
}

/* "modules = a b c": the first line of a file replaces (the default),
 * later ones add. A name given twice is an error. */
static int mods_add(struct conf_mods *m, const char *key, char *v, const char *file, int line,
                    char *err, size_t errlen)
{
    if (!m->set) {
        mods_clear(m);
        m->set = 1;
    }
    for (char *save = NULL, *w = strtok_r(v, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
        if (!valid_module_name(w, strlen(w))) {
            set_err(err, errlen, file, line, "%s: '%s' is not a module name (a-z, 0-9, _)", key, w);
            return -1;
        }
        for (size_t i = 0; i < m->n; i++)
            if (strcmp(m->name[i], w) == 0) {
                set_err(err, errlen, file, line, "%s: '%s' is listed twice", key, w);
                return -1;
            }
        if (m->n >= CONF_MAX_MODULES) {
            set_err(err, errlen, file, line, "%s: at most %d modules", key, CONF_MAX_MODULES);
            return -1;
        }
        if (!(m->name[m->n] = strdup(w))) return -1;
        m->n++;
    }
    return 0;
}

/* "module.key = value"; 1 if k has that shape (stored), 0 if not, -1 error. */
static int add_opt(struct conf_opt **opts, size_t *n, const char *k, const char *v, const char *file, int line,
                   char *err, size_t errlen)
{
    const char *dot = strchr(k, '.');
    if (!dot) return 0;
    if (!valid_module_name(k, (size_t)(dot - k)) || !dot[1] || strchr(dot + 1, '.')) {
        set_err(err, errlen, file, line, "'%s': a module option is MODULE.KEY", k);
        return -1;
    }
    for (size_t i = 0; i < *n; i++) /* a later line replaces an earlier one */
        if (strncmp((*opts)[i].module, k, (size_t)(dot - k)) == 0 && !(*opts)[i].module[dot - k] &&
            strcmp((*opts)[i].key, dot + 1) == 0) {
            char *nv = strdup(v);
            if (!nv) return -1;
            free((*opts)[i].value);
            (*opts)[i].value = nv;
            (*opts)[i].line = line;
            return 1;
        }
    struct conf_opt *grown = realloc(*opts, (*n + 1) * sizeof **opts);
    if (!grown) return -1;
    *opts = grown;
    struct conf_opt *o = &grown[*n];
    o->module = strndup(k, (size_t)(dot - k));
    o->key = strdup(dot + 1);
    o->value = strdup(v);
    o->line = line;
    (*n)++;
    return o->module && o->key && o->value ? 1 : -1;
}

static void opts_free(struct conf_opt *opts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(opts[i].module);
        free(opts[i].key);
        free(opts[i].value);
    }
    free(opts);
}

static int parse_file(struct conf *c, FILE *f, const char *file, char *err, size_t errlen)
{
    char line[4096];
    int lineno = 0;
    struct conf_host *host = NULL;
    int addr_seen[2] = { 0, 0 };
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            set_err(err, errlen, file, lineno, "line too long");
            return -1;
        }
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *s = trim(line);
        if (!*s) continue;
        if (*s == '[') {
            char *close = strchr(s, ']');
            if (!close || close[1] || strncmp(s, "[host", 5) != 0 || !isspace((unsigned char)s[5])) {
                set_err(err, errlen, file, lineno, "expected a section like [host example.com]");
                return -1;
            }
            *close = '\0';
            host = add_host(c, trim(s + 5), file, lineno, err, errlen);
            if (!host) return -1;
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            set_err(err, errlen, file, lineno, "expected key = value");
            return -1;
        }
        *eq = '\0';
        char *k = trim(s), *v = trim(eq + 1);
        if (!*v) {
            set_err(err, errlen, file, lineno, "%s: empty value", k);
            return -1;
        }
        int opt = add_opt(host ? &host->opts : &c->opts, host ? &host->n_opts : &c->n_opts, k, v, file, lineno,
                          err, errlen);
        if (opt < 0) return -1;
        if (opt) continue;
        if (strcmp(k, "modules") == 0) {
            if (mods_add(host ? &host->modules : &c->modules, k, v, file, lineno, err, errlen) < 0) return -1;
            continue;
        }
        if (host && strcmp(k, "modules_disabled") == 0) {
            if (mods_add(&host->disabled, k, v, file, lineno, err, errlen) < 0) return -1;
            continue;
        }
        if (host) {
            char **slot = strcmp(k, "tls_cert") == 0 ? &host->tls_cert
                        : strcmp(k, "tls_key") == 0 ? &host->tls_key : NULL;
            if (!slot) {
                set_err(err, errlen, file, lineno, "unknown key '%s' in a [host] section", k);
                return -1;
            }
            free(*slot);
            *slot = resolve_path(v, file);
            continue;
        }
        if (strcmp(k, "domain") == 0) {
            if (!add_host(c, v, file, lineno, err, errlen)) return -1;
            continue;
        }
        const struct key *key = NULL;
        for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
            if (strcmp(keys[i].name, k) == 0) key = &keys[i];
        if (!key) {
            set_err(err, errlen, file, lineno, "unknown key '%s'", k);
            return -1;
        }
        int *seen = key->off == OFF(c2s_listen) ? &addr_seen[0] : &addr_seen[1];
        if (set_key(c, key, v, seen, file, lineno, err, errlen) < 0) return -1;
        if (key->type == V_STR && (key->off == OFF(state_dir) || key->off == OFF(run_dir) || key->off == OFF(module_dir))) {
            char **p = (char **)((char *)c + key->off);
            char *abs = resolve_path(*p, file);
            free(*p);
            *p = abs;
        }
    }
    return 0;
}

static int finish(struct conf *c, char *err, size_t errlen)
{
    const char *file = c->path;
    if (c->n_hosts == 0 && !add_host(c, "localhost", file, 0, err, errlen)) return -1;
    if (!c->state_dir) {
        const char *env = getenv("XMPPD_STATE_DIR");
        c->state_dir = strdup(env && *env ? env : LOCALSTATEDIR "/lib/xmppd");
    }
    char tmp[4096];
    if (!c->modules.set) {
        snprintf(tmp, sizeof tmp, "%s", CONF_DEFAULT_MODULES);
        if (mods_add(&c->modules, "modules", tmp, file, 0, err, errlen) < 0) return -1;
        c->modules.set = 0;
    }
    if (!c->module_dir) {
        const char *env = getenv("XMPPD_MODULE_DIR");
        c->module_dir = strdup(env && *env ? env : PKGLIBDIR "/modules");
    }
    if (!c->run_dir) {
        snprintf(tmp, sizeof tmp, "%s/run", c->state_dir);
        c->run_dir = strdup(tmp);
    }
    if (!c->router_endpoint) {
        snprintf(tmp, sizeof tmp, "ipc://%s/router", c->run_dir);
        c->router_endpoint = strdup(tmp);
    }
    if (!c->c2s_endpoint_fmt) {
        snprintf(tmp, sizeof tmp, "ipc://%s/c2s-%%u", c->run_dir);
        c->c2s_endpoint_fmt = strdup(tmp);
    }
    if (!c->ctl_endpoint_fmt) {
        snprintf(tmp, sizeof tmp, "ipc://%s/ctl-%%s", c->run_dir);
        c->ctl_endpoint_fmt = strdup(tmp);
    }
    if (!c->trace_endpoint_fmt) {
        snprintf(tmp, sizeof tmp, "ipc://%s/trace-%%s", c->run_dir);
        c->trace_endpoint_fmt = strdup(tmp);
    }
    if (!c->state_dir || !c->run_dir || !c->module_dir || !c->router_endpoint || !c->c2s_endpoint_fmt || !c->ctl_endpoint_fmt ||
        !c->trace_endpoint_fmt)
        return -1;
    /* the formats are used with one argument each: check what they contain */
    const char *p = strchr(c->c2s_endpoint_fmt, '%');
    if (!p || p[1] != 'u' || strchr(p + 1, '%')) {
        set_err(err, errlen, file, 0, "c2s_endpoint must contain exactly one %%u");
        return -1;
    }
    p = strchr(c->ctl_endpoint_fmt, '%');
    if (!p || p[1] != 's' || strchr(p + 1, '%')) {
        set_err(err, errlen, file, 0, "ctl_endpoint must contain exactly one %%s");
        return -1;
    }
    p = strchr(c->trace_endpoint_fmt, '%');
    if (!p || p[1] != 's' || strchr(p + 1, '%')) {
        set_err(err, errlen, file, 0, "trace_endpoint must contain exactly one %%s");
        return -1;
    }
    if (c->read_burst < c->read_rate) c->read_burst = c->read_rate;
    if (c->peer_timeout_ms < 2 * c->heartbeat_ms) {
        set_err(err, errlen, file, 0, "peer_timeout_ms must be at least twice heartbeat_ms");
        return -1;
    }
    return 0;
}

static int add_default_addrs(struct conf *c)
{
    static const char *const plain[] = { "127.0.0.1:5222", "[::1]:5222" };
    static const char *const tls[] = { "127.0.0.1:5223", "[::1]:5223" };
    for (int i = 0; i < 2; i++) {
        c->c2s_listen[i] = strdup(plain[i]);
        c->c2s_tls_listen[i] = strdup(tls[i]);
        if (!c->c2s_listen[i] || !c->c2s_tls_listen[i]) return -1;
    }
    c->n_c2s_listen = c->n_c2s_tls_listen = 2;
    return 0;
}

int conf_load(const char *path, struct conf *c, char *err, size_t errlen)
{
    int rc = -1;
    FILE *f = NULL;
    defaults(c);
    snprintf(err, errlen, "out of memory");
    if (add_default_addrs(c) < 0) goto out;
    if (path) {
        c->path = strdup(path);
        f = fopen(path, "r");
        if (!f) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            goto out;
        }
        if (parse_file(c, f, path, err, errlen) < 0) goto out;
    }
    if (finish(c, err, errlen) < 0) goto out;
    rc = 0;
out:
    if (f) fclose(f);
    if (rc < 0) conf_free(c);
    return rc;
}

void conf_free(struct conf *c)
{
    free(c->path);
    free(c->state_dir);
    free(c->run_dir);
    free(c->router_endpoint);
    free(c->c2s_endpoint_fmt);
    free(c->ctl_endpoint_fmt);
    free(c->trace_endpoint_fmt);
    for (size_t i = 0; i < c->n_c2s_listen; i++) free(c->c2s_listen[i]);
    for (size_t i = 0; i < c->n_c2s_tls_listen; i++) free(c->c2s_tls_listen[i]);
    for (size_t i = 0; i < c->n_hosts; i++) {
        free(c->hosts[i].domain);
        free(c->hosts[i].tls_cert);
        free(c->hosts[i].tls_key);
        mods_clear(&c->hosts[i].modules);
        mods_clear(&c->hosts[i].disabled);
        opts_free(c->hosts[i].opts, c->hosts[i].n_opts);
    }
    mods_clear(&c->modules);
    opts_free(c->opts, c->n_opts);
    free(c->module_dir);
    memset(c, 0, sizeof *c);
}

const struct conf_host *conf_host(const struct conf *c, const char *domain, size_t len)
{
    for (size_t i = 0; i < c->n_hosts; i++)
        if (strlen(c->hosts[i].domain) == len && strncasecmp(c->hosts[i].domain, domain, len) == 0)
            return &c->hosts[i];
    return NULL;
}

int conf_parse_size(const char *v, unsigned long long *out) { return parse_number(v, 1, out); }

size_t conf_host_modules(const struct conf *c, const struct conf_host *h, const char **out, size_t max)
{
    size_t n = 0;
    if (h->modules.set) {
        for (size_t i = 0; i < h->modules.n && n < max; i++) out[n++] = h->modules.name[i];
        return n;
    }
    for (size_t i = 0; i < c->modules.n && n < max; i++) {
        int off = 0;
        for (size_t j = 0; j < h->disabled.n; j++)
            if (strcmp(h->disabled.name[j], c->modules.name[i]) == 0) off = 1;
        if (!off) out[n++] = c->modules.name[i];
    }
    return n;
}

int conf_module_enabled(const struct conf *c, const struct conf_host *h, const char *name)
{
    const char *list[CONF_MAX_MODULES];
    size_t n = conf_host_modules(c, h, list, CONF_MAX_MODULES);
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], name) == 0) return 1;
    return 0;
}

const struct conf_opt *conf_module_opt(const struct conf *c, const struct conf_host *h, const char *module,
                                       const char *key)
{
    for (size_t i = 0; h && i < h->n_opts; i++)
        if (strcmp(h->opts[i].module, module) == 0 && strcmp(h->opts[i].key, key) == 0) return &h->opts[i];
    for (size_t i = 0; i < c->n_opts; i++)
        if (strcmp(c->opts[i].module, module) == 0 && strcmp(c->opts[i].key, key) == 0) return &c->opts[i];
    return NULL;
}

static int mods_differ(const struct conf_mods *a, const struct conf_mods *b)
{
    if (a->set != b->set || a->n != b->n) return 1;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->name[i], b->name[i]) != 0) return 1;
    return 0;
}

static int opts_differ(const struct conf_opt *a, size_t na, const struct conf_opt *b, size_t nb)
{
    if (na != nb) return 1;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i].module, b[i].module) || strcmp(a[i].key, b[i].key) || strcmp(a[i].value, b[i].value)) return 1;
    return 0;
}

int conf_modules_differ(const struct conf *a, const struct conf *b)
{
    if (strcmp(a->module_dir, b->module_dir) != 0 || mods_differ(&a->modules, &b->modules) ||
        opts_differ(a->opts, a->n_opts, b->opts, b->n_opts) || a->show_version != b->show_version ||
        a->n_hosts != b->n_hosts)
        return 1;
    for (size_t i = 0; i < a->n_hosts; i++)
        if (mods_differ(&a->hosts[i].modules, &b->hosts[i].modules) ||
            mods_differ(&a->hosts[i].disabled, &b->hosts[i].disabled) ||
            opts_differ(a->hosts[i].opts, a->hosts[i].n_opts, b->hosts[i].opts, b->hosts[i].n_opts))
            return 1;
    return 0;
}

void conf_ctl_endpoint(const struct conf *c, const char *instance, char *out, size_t size)
{
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(out, size, c->ctl_endpoint_fmt, instance); /* checked in finish() */
#pragma GCC diagnostic pop
}

void conf_trace_endpoint(const struct conf *c, const char *instance, char *out, size_t size)
{
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(out, size, c->trace_endpoint_fmt, instance); /* checked in finish() */
#pragma GCC diagnostic pop
}

void conf_c2s_endpoint(const struct conf *c, unsigned n, char *out, size_t size)
{
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(out, size, c->c2s_endpoint_fmt, n); /* checked in finish() */
#pragma GCC diagnostic pop
}

void conf_tls_paths(const struct conf *c, const struct conf_host *h, char *cert, char *key, size_t size)
{
    if (h->tls_cert) snprintf(cert, size, "%s", h->tls_cert);
    else snprintf(cert, size, "%s/tls/%s.crt", c->state_dir, h->domain);
    if (h->tls_key) snprintf(key, size, "%s", h->tls_key);
    else if (h->tls_cert) snprintf(key, size, "%s", h->tls_cert);
    else snprintf(key, size, "%s/tls/%s.key", c->state_dir, h->domain);
}
