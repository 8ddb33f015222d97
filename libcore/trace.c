/* trace.c - the per-step stanza trace (trace.h, xmppd-trace(7)): the
 * rules of this daemon, matching, trace ids, the line format, and the
 * PUB socket that `xmppctl trace` subscribes to. Nothing here runs for an
 * untraced stanza: callers test trace_active() or MSG_F_TRACED first. */
#include "config.h"
#include "trace.h"
#include "buf.h"
#include "daemon.h"
#include "ipc.h"
#include "jid.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define TRACE_LINE_MAX 4000   /* fits a log line (log.c: 4096 with its prefix) */
#define TRACE_ACTION_MAX 512
#define TRACE_JID_MAX 1024    /* escaped bytes of from= or to= (a cut one ends in "...") */
#define TRACE_SNDHWM 100000   /* lines queued for a slow `xmppctl trace` before ZeroMQ drops */

struct rule {
    int kind;        /* enum trace_rule_kind */
    int bodies;
    size_t len;
    char *target;    /* normalized; "" for TRACE_ALL */
};

unsigned trace_nrules;
static struct rule rules[TRACE_MAX_RULES];
static void *pub;
static const char *role_name = "?";
static char instance_name[64] = "?";
static uint64_t lines_written;

static const char *const kind_names[] = { "all", "domain", "bare", "full" };

/* ---------------- rules ---------------- */

int trace_target_parse(const char *target, char *norm, size_t size)
{
    struct jid j;
    if (!target || !*target || strcmp(target, "all") == 0) {
        if (size) norm[0] = '\0';
        return TRACE_ALL;
    }
    if (jid_parse(target, strlen(target), &j) < 0 || jid_format_full(&j, norm, size) < 0) return -1;
    if (j.has_resource) return TRACE_FULL;
    if (j.has_local) return TRACE_BARE;
    return TRACE_DOMAIN;
}

static struct rule *rule_find(int kind, const char *norm)
{
    for (unsigned i = 0; i < trace_nrules; i++)
        if (rules[i].kind == kind && strcmp(rules[i].target, norm) == 0) return &rules[i];
    return NULL;
}

int trace_rule_add(const char *target, int bodies)
{
    char norm[JID_STR_MAX];
    int kind = trace_target_parse(target, norm, sizeof norm);
    if (kind < 0) return -1;
    struct rule *r = rule_find(kind, norm);
    if (r) {
        r->bodies = bodies ? 1 : 0;
        return 1;
    }
    if (trace_nrules >= TRACE_MAX_RULES) return -2;
    char *copy = strdup(norm);
    if (!copy) return -2;
    r = &rules[trace_nrules];
    r->kind = kind;
    r->bodies = bodies ? 1 : 0;
    r->target = copy;
    r->len = strlen(copy);
    trace_nrules++; /* last: trace_active() turns true with the rule complete */
    return 0;
}

int trace_rule_del(const char *target)
{
    char norm[JID_STR_MAX];
    int kind = trace_target_parse(target, norm, sizeof norm);
    if (kind < 0) return -1;
    struct rule *r = rule_find(kind, norm);
    if (!r) return 1;
    free(r->target);
    *r = rules[--trace_nrules];
    memset(&rules[trace_nrules], 0, sizeof rules[trace_nrules]);
    return 0;
}

void trace_rules_clear(void)
{
    while (trace_nrules) {
        trace_nrules--;
        free(rules[trace_nrules].target);
        memset(&rules[trace_nrules], 0, sizeof rules[trace_nrules]);
    }
}

void trace_rules_list(struct buf *out)
{
    for (unsigned i = 0; i < trace_nrules; i++)
        buf_addf(out, "%s\t%s\t%s\n", kind_names[rules[i].kind], rules[i].target[0] ? rules[i].target : "-",
                 rules[i].bodies ? "yes" : "no");
}

/* ---------------- matching ---------------- */

static int rule_matches(const struct rule *r, const char *j)
{
    if (r->kind == TRACE_ALL) return 1;
    if (!j || !*j) return 0;
    switch (r->kind) {
    case TRACE_FULL:
        return strcmp(j, r->target) == 0;
    case TRACE_BARE:
        return strncmp(j, r->target, r->len) == 0 && (j[r->len] == '\0' || j[r->len] == '/');
    case TRACE_DOMAIN: {
        /* the domain: after the local part's '@', before the resource */
        const char *slash = strchr(j, '/');
        const char *end = slash ? slash : j + strlen(j);
        const char *at = memchr(j, '@', (size_t)(end - j));
        const char *start = at ? at + 1 : j;
        return (size_t)(end - start) == r->len && memcmp(start, r->target, r->len) == 0;
    }
    }
    return 0;
}

int trace_match(const char *from, const char *to)
{
    int res = 0;
    for (unsigned i = 0; i < trace_nrules; i++) {
        const struct rule *r = &rules[i];
        if (rule_matches(r, from) || rule_matches(r, to)) {
            res |= TRACE_MATCH;
            if (r->bodies) return TRACE_MATCH | TRACE_BODIES;
        }
    }
    return res;
}

/* ASCII under RFC 6122: Nodeprep and Nameprep only lowercase it, and
 * Resourceprep leaves it alone; the domain loses one final dot. Input
 * that stringprep would refuse is not a JID anyone can be traced by. */
static int ascii_normalize(const char *s, size_t n, char *out, size_t size)
{
    size_t i = 0, o = 0;
    if (n >= size) return -1;
    for (; i < n && s[i] != '/'; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x80) return -1;
        out[o++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    if (o > 0 && out[o - 1] == '.') o--;
    for (; i < n; i++) {
        if ((unsigned char)s[i] >= 0x80) return -1;
        out[o++] = s[i];
    }
    out[o] = '\0';
    return 0;
}

int trace_match_raw(const char *from, const char *to, size_t to_len)
{
    char norm[JID_STR_MAX];
    if (!to || to_len == 0) return trace_match(from, NULL);
    if (ascii_normalize(to, to_len, norm, sizeof norm) < 0 && jid_normalize(to, to_len, norm, sizeof norm) < 0) {
        /* not a JID (c2s answers jid-malformed): match what was written */
        if (to_len >= sizeof norm) return trace_match(from, NULL);
        memcpy(norm, to, to_len);
        norm[to_len] = '\0';
    }
    return trace_match(from, norm);
}

uint64_t trace_new_id(void)
{
    uint64_t id;
    do id = util_random_u64(); while (id == 0);
    return id;
}

/* ---------------- lines ---------------- */

char *trace_escape(const char *s, size_t n, char *out, size_t size)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (size == 0) return out;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch == 0x7f || ch == '\\') {
            if (o + 4 >= size) break;
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        } else {
            if (o + 1 >= size) break;
            out[o++] = (char)ch;
        }
    }
    out[o] = '\0';
    return out;
}

/* Append s escaped to line[*len..], at most max bytes of output and
 * within TRACE_LINE_MAX; a cut value ends in "...". */
static void put_escaped(char *line, size_t *len, const char *s, size_t n, size_t max)
{
    size_t room = TRACE_LINE_MAX - *len;
    if (room < 8) return;
    if (room - 4 < max) max = room - 4;
    trace_escape(s, n, line + *len, max);
    size_t w = strlen(line + *len), need = 0;
    *len += w;
    /* was anything left out? */
    for (size_t i = 0; i < n && need <= w; i++) {
        unsigned char ch = (unsigned char)s[i];
        need += (ch <= 0x20 || ch == 0x7f || ch == '\\') ? 4 : 1;
    }
    if (need > w) {
        memcpy(line + *len, "...", 4);
        *len += 3;
    }
}

/* snprintf at line[*len..TRACE_LINE_MAX), *len clamped to what fits. */
static void put(char *line, size_t *len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void put(char *line, size_t *len, const char *fmt, ...)
{
    va_list ap;
    if (*len >= TRACE_LINE_MAX - 1) return;
    va_start(ap, fmt);
    int n = vsnprintf(line + *len, TRACE_LINE_MAX - *len, fmt, ap);
    va_end(ap);
    if (n > 0) *len += (size_t)n;
    if (*len > TRACE_LINE_MAX - 1) *len = TRACE_LINE_MAX - 1;
}

static void emit(char *line, size_t len)
{
    lines_written++;
    log_msg(LOG_LVL_NOTICE, "%s", line);
    if (pub) zmq_send(pub, line, len, ZMQ_DONTWAIT); /* dropped at the high-water mark, never blocks */
}

static void vline(unsigned step, unsigned kind, unsigned stype, const char *from, size_t from_len, const char *to,
                  size_t to_len, uint64_t id, uint64_t cause, const struct msg_str *body, int bodies,
                  const char *fmt, va_list ap)
{
    char line[TRACE_LINE_MAX + 8], action[TRACE_ACTION_MAX];
    size_t len = 0;
    vsnprintf(action, sizeof action, fmt, ap);
    put(line, &len, "trace id=%016llx step=%u daemon=%s instance=%s kind=%s type=%s from=", (unsigned long long)id,
        step, role_name, instance_name, stanza_kind_name(kind), stype ? stanza_type_name(stype) : "-");
    if (from_len) put_escaped(line, &len, from, from_len, TRACE_JID_MAX);
    else put(line, &len, "-");
    put(line, &len, " to=");
    if (to_len) put_escaped(line, &len, to, to_len, TRACE_JID_MAX);
    else put(line, &len, "-");
    put(line, &len, " action=%s", action);
    if (cause) put(line, &len, " cause=%016llx", (unsigned long long)cause);
    if (bodies && body && body->n) {
        put(line, &len, " body=");
        put_escaped(line, &len, body->p, body->n, TRACE_LINE_MAX);
    }
    line[len] = '\0';
    emit(line, len);
}

void trace_line(unsigned step, unsigned kind, unsigned stype, const char *from, const char *to, uint64_t id,
                uint64_t cause, const struct msg_str *body, const char *action_fmt, ...)
{
    va_list ap;
    int bodies = body && (trace_match(from, to) & TRACE_BODIES);
    va_start(ap, action_fmt);
    vline(step, kind, stype, from ? from : "", from ? strlen(from) : 0, to ? to : "", to ? strlen(to) : 0, id,
          cause, body, bodies, action_fmt, ap);
    va_end(ap);
}

void trace_msg(unsigned step, const struct msg *m, uint64_t cause, const char *action_fmt, ...)
{
    char from[JID_STR_MAX], to[JID_STR_MAX];
    va_list ap;
    if (!msg_str(m, 0, from, sizeof from)) from[0] = '\0';
    if (!msg_str(m, 1, to, sizeof to)) to[0] = '\0';
    int bodies = m->nfields > 4 && (trace_match(from, to) & TRACE_BODIES);
    va_start(ap, action_fmt);
    vline(step, m->kind, m->stype, from, strlen(from), to, strlen(to), m->trace, cause,
          m->nfields > 4 ? &m->f[4] : NULL, bodies, action_fmt, ap);
    va_end(ap);
}

uint64_t trace_lines_written(void) { return lines_written; }

/* ---------------- the stream ---------------- */

static char pub_path[1024]; /* ipc:// file of the stream, removed at close */

void trace_init(struct daemon *d)
{
    char ep[1024];
    role_name = peer_role_name((unsigned)d->role);
    snprintf(instance_name, sizeof instance_name, "%s", d->instance);
    conf_trace_endpoint(&d->conf, d->instance, ep, sizeof ep);
    void *s = zmq_socket(ipc_context(), ZMQ_PUB);
    if (!s) {
        log_warn("trace: no PUB socket (%s): trace lines go to the log only", zmq_strerror(errno));
        return;
    }
    int hwm = TRACE_SNDHWM, linger = 200;
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(s, ep) < 0) {
        log_warn("trace: cannot bind %s (%s): trace lines go to the log only", ep, zmq_strerror(errno));
        zmq_close(s);
        return;
    }
    pub = s;
    if (strncmp(ep, "ipc://", 6) == 0) snprintf(pub_path, sizeof pub_path, "%s", ep + 6);
    log_info("trace stream on %s", ep);
}

void trace_close(void)
{
    if (pub) zmq_close(pub);
    pub = NULL;
    /* libzmq 4.3 leaves the socket file; the instance lock makes it ours */
    if (pub_path[0]) unlink(pub_path);
    pub_path[0] = '\0';
}

/* ---------------- control ---------------- */

static void list_rows(struct daemon *d, struct ctl_req *r)
{
    struct buf rows = { 0 };
    trace_rules_list(&rows);
    ctl_cols(r, "instance\trule\ttarget\tbodies");
    const char *p = rows.data, *end = p ? p + rows.len : NULL;
    while (p && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        ctl_row(r, "%s\t%.*s", d->instance, (int)(nl - p), p);
        p = nl + 1;
    }
    buf_free(&rows);
}

void trace_ctl(struct daemon *d, int argc, char **argv, struct ctl_req *r)
{
    static const char usage[] = "usage: trace | trace on [TARGET] [bodies] | trace off [TARGET|all]";
    if (argc == 1) {
        list_rows(d, r);
        return;
    }
    int on = strcmp(argv[1], "on") == 0;
    if (!on && strcmp(argv[1], "off") != 0) {
        ctl_fail(r, 2, usage);
        return;
    }
    const char *target = NULL;
    int bodies = 0;
    for (int i = 2; i < argc; i++) {
        if (on && strcmp(argv[i], "bodies") == 0 && !bodies) bodies = 1;
        else if (!target) target = argv[i];
        else {
            ctl_fail(r, 2, usage);
            return;
        }
    }
    char norm[JID_STR_MAX];
    int kind = trace_target_parse(target, norm, sizeof norm);
    if (kind < 0) {
        ctl_fail(r, 2, "trace: '%s' is not a JID or a domain", target);
        return;
    }
    if (on) {
        int rc = trace_rule_add(target, bodies);
        if (rc == -2) {
            ctl_fail(r, 1, "trace: at most %d rules", TRACE_MAX_RULES);
            return;
        }
        log_notice("trace on: %s %s%s (%u rule%s)", kind_names[kind], norm[0] ? norm : "stanzas",
                   bodies ? " with bodies" : "", trace_nrules, trace_nrules == 1 ? "" : "s");
    } else if (target && strcmp(target, "all") == 0) {
        trace_rules_clear();
        log_notice("trace off: every rule cleared");
    } else {
        if (trace_rule_del(target) == 0)
            log_notice("trace off: %s %s (%u rule%s left)", kind_names[kind], norm[0] ? norm : "stanzas",
                       trace_nrules, trace_nrules == 1 ? "" : "s");
    }
    list_rows(d, r);
}
