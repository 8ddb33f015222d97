/* c2s_register.c - XEP-0077 in-band registration, password change and
 * account removal, for the hosts whose `modules` list names "register"
 * (libcore/modules/mod_register.c declares the stream feature and the
 * disco feature; the protocol runs here).
 *
 * Why in c2s: the password arrives here, and it must never cross another
 * socket nor cost a PBKDF2 in xmpp-sm's loop (DESIGN §4, §10). So c2s
 * computes the SCRAM verifiers itself, as xmppctl does, and sends only
 * them to the user's shard in an ACCOUNT_CHANGE record (through the
 * router, like AUTH_LOOKUP); the shard writes the account with the code
 * `xmppctl register` uses and answers ACCOUNT_RESULT after the commit.
 *
 *  - registration (XEP-0077 §3.1): before SASL, on a TLS-protected
 *    stream only (RFC 6120 §5.3.1: nothing is negotiated before TLS);
 *    listen waits for our answer to the IQ before parsing more, like for
 *    a SASL lookup. One account per stream, and at most
 *    register.per_ip_per_hour per client address (see ip_take).
 *  - password change (§3.3) and removal (§3.2): after binding, an IQ to
 *    the server (no 'to', or the domain) from the account itself.
 * Every verifier computation (a PBKDF2 per mechanism) takes a token of
 * the budget PLAIN logins use (plain_logins_per_sec, c2s_sasl.c), so no
 * client can make c2s spin on them. */
#include "config.h"
#include "c2s.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hmap.h"
#include "jid.h"
#include "log.h"
#include "scram.h"
#include "stanza.h"
#include "util.h"
#include "xml.h"

#define NS_REGISTER "jabber:iq:register"
#define MODULE_NAME "register"
#define DEFAULT_PER_IP_PER_HOUR 5
/* The router holds a record for a shard that is down for 15 s before it
 * gives up: wait longer than that, or a late success would follow the
 * error we already sent. */
#define REQUEST_TIMEOUT_MS 20000
#define PASSWORD_MAX 1023        /* as for PLAIN (c2s_sasl.c) */
#define IP_TABLE_MAX 100000      /* addresses tracked at most; then refused */

/* What one connection has under way with IBR. Allocated the first time
 * the connection uses it, freed with the connection. */
struct c2s_reg {
    struct c2s_conn *conn;
    struct c2s_reg *prev, *next; /* the list of requests awaiting an ACCOUNT_RESULT */
    uint8_t op;           /* enum account_op under way, 0 = none */
    uint8_t registered;   /* this stream created an account (XEP-0077 §3.1.1: one only) */
    uint8_t kicked;       /* sm ended the session while its removal was being answered */
    uint64_t deadline;
    char *iq_id;
    char *bare;           /* the account of the request */
    char *ip_key;         /* the per-address slot taken, given back if the registration fails */
};

/* A token bucket per client address (IPv4, or IPv6 /64) and host. */
struct ip_bucket {
    double tokens;
    double cap;
    uint64_t at_ms;
    char key[];
};

static struct {
    struct c2s_reg *pending;   /* head of the list */
    loop_timer_t *timer;
    struct hmap ips;
    size_t prune_at;
    uint64_t registered, refused_rate, passwd, removed, failed, timeouts;
} R;

static struct c2s *S(void) { return c2s_get(); }

/* ---------------- configuration ---------------- */

static const struct conf_host *host_of(const struct c2s_conn *c)
{
    return c->domain ? conf_host(&S()->d->conf, c->domain, strlen(c->domain)) : NULL;
}

static int enabled(const struct c2s_conn *c)
{
    const struct conf_host *h = host_of(c);
    return h && conf_module_enabled(&S()->d->conf, h, MODULE_NAME);
}

/* register.per_ip_per_hour for the connection's host. mod_register
 * refused to start the daemons unless it is a whole number, so a bad
 * value cannot reach here; the default is used if it somehow does. */
static unsigned per_ip_per_hour(const struct c2s_conn *c)
{
    const struct conf_opt *o = conf_module_opt(&S()->d->conf, host_of(c), MODULE_NAME, "per_ip_per_hour");
    if (!o || !o->value || !*o->value) return DEFAULT_PER_IP_PER_HOUR;
    char *end;
    unsigned long v = strtoul(o->value, &end, 10);
    if (*end || o->value[0] == '-' || v > 1000000) return DEFAULT_PER_IP_PER_HOUR;
    return (unsigned)v;
}

/* ---------------- rate limits ---------------- */

/* The bucket key: host and the client's address, an IPv4 address or the
 * /64 of an IPv6 one (a single subscriber commonly holds a whole /64, so
 * counting single IPv6 addresses would limit nothing). An address listen
 * did not report counts in one shared "?" bucket. */
static void ip_key(const struct c2s_conn *c, char *out, size_t size)
{
    char host[INET6_ADDRSTRLEN + 8], text[INET6_ADDRSTRLEN + 8] = "?";
    const char *p = c->addr ? c->addr : "", *end;
    struct in_addr a4;
    struct in6_addr a6;
    if (*p == '[') end = strchr(++p, ']');
    else end = strrchr(p, ':');
    if (end && (size_t)(end - p) < sizeof host) {
        memcpy(host, p, (size_t)(end - p));
        host[end - p] = '\0';
        if (inet_pton(AF_INET, host, &a4) == 1) {
            inet_ntop(AF_INET, &a4, text, sizeof text);
        } else if (inet_pton(AF_INET6, host, &a6) == 1) {
            if (IN6_IS_ADDR_V4MAPPED(&a6)) {
                memcpy(&a4, &a6.s6_addr[12], 4);
                inet_ntop(AF_INET, &a4, text, sizeof text);
            } else {
                memset(&a6.s6_addr[8], 0, 8);
                inet_ntop(AF_INET6, &a6, text, sizeof text - 4);
                strcat(text, "/64");
            }
        }
    }
    snprintf(out, size, "%s %s", c->domain ? c->domain : "-", text);
}

static void refill(struct ip_bucket *b, uint64_t now)
{
    b->tokens += (double)(now - b->at_ms) * b->cap / 3600000.0;
    if (b->tokens > b->cap) b->tokens = b->cap;
    b->at_ms = now;
}

/* Forget the addresses whose bucket is full again: they tell nothing. */
static void prune(uint64_t now)
{
    size_t n = R.ips.count;
    void **all = calloc(n ? n : 1, sizeof *all);
    if (!all) return;
    n = hmap_values(&R.ips, all, n);
    for (size_t i = 0; i < n; i++) {
        struct ip_bucket *b = all[i];
        refill(b, now);
        if (b->tokens >= b->cap) {
            hmap_del(&R.ips, b->key, strlen(b->key));
            free(b);
        }
    }
    free(all);
    R.prune_at = R.ips.count * 2 > 1024 ? R.ips.count * 2 : 1024;
}

/* Take one registration from the address's bucket: 1 taken, 0 over the
 * limit, -1 cannot track it (table full or out of memory). A bucket
 * holds per_hour registrations and refills at per_hour an hour, so a few
 * people behind one NAT can register together while one address gets at
 * most per_hour a hour after that. */
static int ip_take(const char *key, unsigned per_hour)
{
    uint64_t now = loop_now_ms(S()->d->loop);
    if (per_hour == 0) return 1; /* 0: not limited */
    struct ip_bucket *b = hmap_get(&R.ips, key, strlen(key));
    if (!b) {
        if (R.ips.count >= R.prune_at) prune(now);
        if (R.ips.count >= IP_TABLE_MAX) return -1;
        size_t kl = strlen(key);
        b = malloc(sizeof *b + kl + 1);
        if (!b) return -1;
        memcpy(b->key, key, kl + 1);
        b->cap = per_hour;
        b->tokens = per_hour;
        b->at_ms = now;
        int failed = 0;
        hmap_put(&R.ips, b->key, kl, b, &failed);
        if (failed) {
            free(b);
            return -1;
        }
    }
    b->cap = per_hour;
    refill(b, now);
    if (b->tokens < 1.0) return 0;
    b->tokens -= 1.0;
    return 1;
}

/* The registration did not happen: give the slot back. */
static void ip_refund(const char *key)
{
    struct ip_bucket *b = key ? hmap_get(&R.ips, key, strlen(key)) : NULL;
    if (!b) return;
    b->tokens += 1.0;
    if (b->tokens > b->cap) b->tokens = b->cap;
}

/* ---------------- answers ---------------- */

/* Start an IQ answer from the server: <iq type=T id=.. from=domain [to=jid]. */
static void iq_head(struct buf *out, const struct c2s_conn *c, const char *type, const char *id)
{
    buf_addf(out, "<iq type='%s' id='", type);
    buf_add_xml_escaped(out, id, strlen(id));
    buf_adds(out, "' from='");
    buf_add_xml_escaped(out, c->domain, strlen(c->domain));
    if (c->state == C2S_ESTABLISHED && c->jid) {
        buf_adds(out, "' to='");
        buf_add_xml_escaped(out, c->jid, strlen(c->jid));
    }
    buf_adds(out, "'");
}

/* Before authentication listen waits for our answer to each element:
 * the answer also releases the next one. */
static void send_answer(struct c2s_conn *c, const struct buf *out)
{
    c2s_send(c, out->data, out->len, c->state != C2S_ESTABLISHED);
}

/* An error answer. The request is never echoed: it may hold a password
 * (XEP-0077 §3.3 says not to return it; RFC 6120 §8.3.1 makes it optional). */
static void answer_error(struct c2s_conn *c, const char *id, unsigned cond, const char *type, const char *text)
{
    struct buf *out = &S()->scratch2;
    unsigned code = stanza_error_code(cond); /* XEP-0077 §8 still asks for it */
    buf_clear(out);
    iq_head(out, c, "error", id);
    buf_addf(out, "><error type='%s'", type ? type : stanza_error_type(cond));
    if (code) buf_addf(out, " code='%u'", code);
    buf_addf(out, "><%s xmlns='" NS_STANZA_ERRORS "'/>", stanza_error_name(cond));
    if (text) {
        buf_adds(out, "<text xmlns='" NS_STANZA_ERRORS "' xml:lang='en'>");
        buf_add_xml_escaped(out, text, strlen(text));
        buf_adds(out, "</text>");
    }
    buf_adds(out, "</error></iq>");
    send_answer(c, out);
}

/* A result: before authentication listen waits for it (next), after it
 * the answer goes to the bound JID, like every answer here (iq_head). */
static void answer_result(struct c2s_conn *c, const char *id, const char *payload)
{
    int established = c->state == C2S_ESTABLISHED;
    c2s_iq_result(c, id, strlen(id), established && c->jid ? c->jid : NULL, payload, !established);
}

/* The fields to fill in (§3.1), or what is on file for an authenticated
 * user (<registered/>, the username, an empty password). */
static void answer_form(struct c2s_conn *c, const char *id)
{
    struct buf *out = &S()->scratch;
    buf_clear(out);
    buf_adds(out, "<query xmlns='" NS_REGISTER "'>");
    if (c->state == C2S_ESTABLISHED) {
        char bare[JID_STR_MAX];
        const char *at;
        if (jid_bare_of(c->jid, strlen(c->jid), bare, sizeof bare) < 0 || !(at = strchr(bare, '@'))) {
            answer_error(c, id, SE_INTERNAL_SERVER_ERROR, NULL, NULL);
            return;
        }
        buf_adds(out, "<registered/><instructions>This is your account. Send a new password to change it, "
                      "or remove to delete the account and everything kept for it.</instructions><username>");
        buf_add_xml_escaped(out, bare, (size_t)(at - bare));
        buf_adds(out, "</username><password/>");
    } else {
        buf_adds(out, "<instructions>Choose a username and a password for an account on ");
        buf_add_xml_escaped(out, c->domain, strlen(c->domain));
        buf_adds(out, ".</instructions><username/><password/>");
    }
    buf_adds(out, "</query>");
    if (out->oom) {
        answer_error(c, id, SE_RESOURCE_CONSTRAINT, NULL, NULL);
        return;
    }
    answer_result(c, id, buf_cstr(out));
}

/* ---------------- requests under way ---------------- */

static struct c2s_reg *reg_of(struct c2s_conn *c)
{
    if (!c->reg) {
        c->reg = calloc(1, sizeof *c->reg);
        if (c->reg) c->reg->conn = c;
    }
    return c->reg;
}

static void unlink_pending(struct c2s_reg *g)
{
    if (g->prev) g->prev->next = g->next;
    else if (R.pending == g) R.pending = g->next;
    if (g->next) g->next->prev = g->prev;
    g->prev = g->next = NULL;
}

/* The request is over: forget what it needed. */
static void finish(struct c2s_reg *g)
{
    unlink_pending(g);
    g->op = 0;
    free(g->iq_id);
    free(g->bare);
    free(g->ip_key);
    g->iq_id = g->bare = g->ip_key = NULL;
}

static void sweep(loop_t *loop, void *arg);

static void arm_timer(void)
{
    if (!R.timer && R.pending) R.timer = loop_timer_add(S()->d->loop, 1000, sweep, NULL);
}

/* One line per outcome in a stable format, like auth-failure
 * (xmpp-c2s(8) LOGGING): reason NULL for a success. */
static void log_outcome(const struct c2s_conn *c, const char *what, const char *user, const char *reason)
{
    char addr[130], u[2 * JID_PART_MAX + 2];
    log_notice("%s addr=%s user=%s%s%s", what, c2s_logsafe(c->addr, addr, sizeof addr),
               c2s_logsafe(user, u, sizeof u), reason ? " reason=" : "", reason ? reason : "");
}

/* A request went unanswered: the shard or the router is gone. */
static void timed_out(struct c2s_reg *g)
{
    struct c2s_conn *c = g->conn;
    int op = g->op, kicked = g->kicked;
    char *id = g->iq_id;
    g->iq_id = NULL;
    R.timeouts++;
    log_warn("conn %016llx: no ACCOUNT_RESULT for %s in %u ms", (unsigned long long)c->cid,
             g->bare ? g->bare : "-", REQUEST_TIMEOUT_MS);
    /* the change may still happen: the slot stays taken */
    finish(g);
    answer_error(c, id ? id : "", SE_INTERNAL_SERVER_ERROR, "wait",
                 "the account service did not answer; the change may or may not have been made");
    free(id);
    if (op == ACCOUNT_REMOVE && kicked) c2s_close(c, "not-authorized", "account removed", CLOSE_KICKED);
}

static void sweep(loop_t *loop, void *arg)
{
    (void)arg;
    uint64_t now = loop_now_ms(loop);
    R.timer = NULL;
    struct c2s_reg *next;
    for (struct c2s_reg *g = R.pending; g; g = next) {
        next = g->next; /* timed_out may free g's connection, never another */
        if (now >= g->deadline) timed_out(g);
    }
    arm_timer();
}

/* Send ACCOUNT_CHANGE for bare; verifiers may be NULL (removal). The
 * connection waits for the answer; before authentication, so does listen. */
static void send_change(struct c2s_conn *c, struct c2s_reg *g, unsigned op, const char *id, const char *bare,
                        const struct buf *verifiers)
{
    g->iq_id = strdup(id);
    g->bare = strdup(bare);
    if (!g->iq_id || !g->bare) {
        if (g->ip_key) ip_refund(g->ip_key);
        finish(g);
        answer_error(c, id, SE_RESOURCE_CONSTRAINT, NULL, NULL);
        return;
    }
    struct msg m;
    msg_init(&m, MSG_ACCOUNT_CHANGE);
    m.id = c->cid;
    m.num = op;
    msg_set(&m, 0, bare);
    msg_set(&m, 3, S()->d->instance);
    if (verifiers) msg_setn(&m, 4, verifiers->data, verifiers->len);
    c2s_to_router(&m);
    g->op = (uint8_t)op;
    g->deadline = loop_now_ms(S()->d->loop) + REQUEST_TIMEOUT_MS;
    g->next = R.pending;
    if (R.pending) R.pending->prev = g;
    R.pending = g;
    arm_timer();
}

/* SCRAM-SHA-1 and SCRAM-SHA-256 verifiers of password, one authPassword
 * line each (what `xmppctl register` sends); 0 or -1. */
static int make_verifiers(const char *password, struct buf *out)
{
    struct scram_verifier v[SCRAM_MECH_COUNT];
    char line[SCRAM_AUTHPW_MAX];
    int rc = -1;
    if (scram_make_all(password, S()->d->conf.scram_iterations, v) < 0) goto out;
    for (int i = 0; i < SCRAM_MECH_COUNT; i++) {
        if (scram_to_authpassword(&v[i], line, sizeof line) < 0) goto out;
        buf_adds(out, line);
        buf_adds(out, "\n");
    }
    rc = out->oom ? -1 : 0;
out:
    explicit_bzero(v, sizeof v);
    return rc;
}

/* The router must speak protocol 3 (ACCOUNT_CHANGE), or it would drop
 * the frame; during a rolling restart an old router means "not now". */
static int router_speaks_accounts(void)
{
    const struct peer_info *p = peer_client_server(S()->rpeer);
    return p && peer_client_up(S()->rpeer) && p->proto_max >= 3;
}

/* The password of a request: present, not empty, SASLprep-able (the
 * form the verifiers are made from) and of a sane length. Returns the
 * condition to answer, SE_NONE when usable. */
static unsigned check_password(const char *pw, const char **why)
{
    char prepped[4 * (PASSWORD_MAX + 1)];
    *why = NULL;
    if (!pw || !*pw) {
        /* XEP-0077 §3.1 (and §3.3: a password is never set to nothing) */
        *why = "a password is required";
        return SE_NOT_ACCEPTABLE;
    }
    if (strlen(pw) > PASSWORD_MAX) {
        *why = "the password is too long";
        return SE_NOT_ACCEPTABLE;
    }
    int rc = scram_saslprep(pw, prepped, sizeof prepped);
    explicit_bzero(prepped, sizeof prepped);
    if (rc < 0) {
        *why = "the password has characters SASLprep (RFC 4013) prohibits";
        return SE_NOT_ACCEPTABLE;
    }
    return SE_NONE;
}

/* XEP-0077 §3.1: a new account, before authentication. */
static void do_register(struct c2s_conn *c, const char *id, const char *user, const char *pw)
{
    char local[JID_PART_MAX + 1], bare[JID_STR_MAX], key[INET6_ADDRSTRLEN + JID_PART_MAX + 16];
    const char *why;
    unsigned cond;
    struct c2s_reg *g = reg_of(c);
    struct buf v = { 0 };
    if (!g) {
        answer_error(c, id, SE_RESOURCE_CONSTRAINT, NULL, NULL);
        return;
    }
    if (g->registered) {
        /* §3.1.1: not a second identity on the same stream */
        answer_error(c, id, SE_NOT_ACCEPTABLE, NULL, "one account per connection: authenticate now");
        log_outcome(c, "register-failure", user, "second-account");
        return;
    }
    if (!user || !*user) {
        answer_error(c, id, SE_NOT_ACCEPTABLE, NULL, "a username is required");
        return;
    }
    /* RFC 6122 nodeprep, what every JID of this server goes through */
    if (jid_nodeprep(user, local, sizeof local) < 0 || !*local ||
        snprintf(bare, sizeof bare, "%s@%s", local, c->domain) >= (int)sizeof bare) {
        answer_error(c, id, SE_JID_MALFORMED, NULL, "the username is not a valid JID localpart");
        log_outcome(c, "register-failure", user, "jid-malformed");
        return;
    }
    if ((cond = check_password(pw, &why)) != SE_NONE) {
        answer_error(c, id, cond, NULL, why);
        log_outcome(c, "register-failure", bare, "bad-password");
        return;
    }
    if (!router_speaks_accounts()) {
        answer_error(c, id, SE_SERVICE_UNAVAILABLE, "wait", "registration is not available right now");
        return;
    }
    ip_key(c, key, sizeof key);
    int t = ip_take(key, per_ip_per_hour(c));
    if (t <= 0) {
        R.refused_rate++;
        /* §3.1.1: not-acceptable for registering too often (as Prosody);
         * type wait: it is allowed again later */
        answer_error(c, id, t < 0 ? SE_RESOURCE_CONSTRAINT : SE_NOT_ACCEPTABLE, "wait",
                     "too many accounts registered from your address; try again later");
        log_outcome(c, "register-failure", bare, "rate-limit");
        return;
    }
    if (!c2s_plain_rate_ok()) {
        ip_refund(key);
        answer_error(c, id, SE_RESOURCE_CONSTRAINT, NULL, "the server is busy; try again");
        log_warn("registration: PBKDF2 pacing (%u/s) reached", S()->d->conf.plain_logins_per_sec);
        return;
    }
    if (make_verifiers(pw, &v) < 0 || !(g->ip_key = strdup(key))) {
        ip_refund(key);
        answer_error(c, id, SE_INTERNAL_SERVER_ERROR, NULL, NULL);
        buf_free(&v);
        return;
    }
    send_change(c, g, ACCOUNT_CREATE, id, bare, &v);
    buf_free(&v);
}

/* XEP-0077 §3.3: the user's own password, after authentication. */
static void do_passwd(struct c2s_conn *c, const char *id, const char *user, const char *pw)
{
    char bare[JID_STR_MAX], local[JID_PART_MAX + 1];
    const char *why, *at;
    unsigned cond;
    struct c2s_reg *g = reg_of(c);
    struct buf v = { 0 };
    if (!g || jid_bare_of(c->jid, strlen(c->jid), bare, sizeof bare) < 0 || !(at = strchr(bare, '@'))) {
        answer_error(c, id, SE_INTERNAL_SERVER_ERROR, NULL, NULL);
        return;
    }
    if (!(c->flags & CF_TLS)) {
        /* §3.3: the channel is not safe enough for a password */
        answer_error(c, id, SE_NOT_AUTHORIZED, "modify", "password changes need TLS");
        return;
    }
    if (!user || !*user) {
        answer_error(c, id, SE_BAD_REQUEST, NULL, "the username is required"); /* §3.3 */
        return;
    }
    if (jid_nodeprep(user, local, sizeof local) < 0 || strlen(local) != (size_t)(at - bare) ||
        memcmp(local, bare, strlen(local)) != 0) {
        answer_error(c, id, SE_FORBIDDEN, NULL, "only your own password can be changed");
        log_outcome(c, "passwd-failure", bare, "other-user");
        return;
    }
    if ((cond = check_password(pw, &why)) != SE_NONE) {
        answer_error(c, id, cond, NULL, why);
        return;
    }
    if (!router_speaks_accounts()) {
        answer_error(c, id, SE_SERVICE_UNAVAILABLE, "wait", "password changes are not available right now");
        return;
    }
    if (!c2s_plain_rate_ok()) {
        answer_error(c, id, SE_RESOURCE_CONSTRAINT, NULL, "the server is busy; try again");
        return;
    }
    if (make_verifiers(pw, &v) < 0) {
        answer_error(c, id, SE_INTERNAL_SERVER_ERROR, NULL, NULL);
        buf_free(&v);
        return;
    }
    send_change(c, g, ACCOUNT_PASSWD, id, bare, &v);
    buf_free(&v);
}

/* XEP-0077 §3.2: remove the account of this session. */
static void do_remove(struct c2s_conn *c, const char *id, const xml_node_t *query)
{
    char bare[JID_STR_MAX];
    struct c2s_reg *g = reg_of(c);
    const xml_node_t *only = xml_first_elem(query);
    if (!g || jid_bare_of(c->jid, strlen(c->jid), bare, sizeof bare) < 0) {
        answer_error(c, id, SE_INTERNAL_SERVER_ERROR, NULL, NULL);
        return;
    }
    if (!only || strcmp(only->name, "remove") != 0 || xml_next_elem(only)) {
        answer_error(c, id, SE_BAD_REQUEST, NULL, "remove must be the only child of the query");
        return;
    }
    if (!router_speaks_accounts()) {
        answer_error(c, id, SE_SERVICE_UNAVAILABLE, "wait", "account removal is not available right now");
        return;
    }
    send_change(c, g, ACCOUNT_REMOVE, id, bare, NULL);
}

/* 1 if the IQ is for the server itself: no 'to', or the stream's domain. */
static int to_server(const struct c2s_conn *c, const struct msg *m)
{
    char to[JID_STR_MAX];
    if (m->f[0].n == 0) return 1;
    return jid_normalize(m->f[0].p, m->f[0].n, to, sizeof to) == 0 && strcmp(to, c->domain) == 0;
}

/* Wipe a password out of the parsed request before it is freed. */
static void wipe_text(const xml_node_t *e)
{
    for (const xml_node_t *t = e ? e->children : NULL; t; t = t->next)
        if (t->type == XML_NODE_TEXT && t->text) explicit_bzero((char *)t->text, t->text_len);
}

int c2s_register_element(struct c2s_conn *c, const struct msg *m)
{
    char id[1025];
    int pre = c->state == C2S_WAIT_FEATURE;
    if (m->kind != KIND_IQ || !msg_eq(m, 2, NS_REGISTER)) return 0;
    if (!pre && c->state != C2S_ESTABLISHED) return 0;
    if (!c->domain || !to_server(c, m)) return 0;
    /* before TLS, when TLS is required: refused like any stanza there */
    if (pre && !(c->flags & CF_TLS) && !S()->d->conf.allow_plaintext_auth) return 0;
    /* established and not enabled here: sm answers (service-unavailable,
     * unless an external module serves the namespace) */
    if (!pre && !enabled(c)) return 0;
    if (m->stype == STYPE_RESULT || m->stype == STYPE_ERROR) {
        if (!pre) return 0;
        struct msg n; /* an answer to nothing we asked: dropped */
        msg_init(&n, MSG_CONN_NEXT);
        n.id = c->lid;
        c2s_to_listen(c, &n);
        return 1;
    }
    if (!msg_str(m, 1, id, sizeof id)) id[0] = '\0';
    if ((m->stype != STYPE_GET && m->stype != STYPE_SET) || !id[0]) {
        /* RFC 6120 §8.2.3: an IQ needs an id and a request type */
        answer_error(c, id, SE_BAD_REQUEST, NULL, NULL);
        return 1;
    }
    if (pre && !enabled(c)) {
        /* XEP-0077 §3.1: a host without in-band registration */
        answer_error(c, id, SE_SERVICE_UNAVAILABLE, NULL, NULL);
        log_outcome(c, "register-failure", NULL, "disabled");
        return 1;
    }
    if (pre && !(c->flags & CF_TLS)) {
        /* allow_plaintext_auth lets SASL run without TLS for benchmarks,
         * but a new password never crosses the network in the clear */
        answer_error(c, id, SE_POLICY_VIOLATION, "modify", "in-band registration needs TLS");
        return 1;
    }
    if (c->reg && c->reg->op) {
        /* one change at a time per connection */
        answer_error(c, id, SE_UNEXPECTED_REQUEST, "wait", "a registration request is already under way");
        return 1;
    }
    xml_node_t *iq = xml_parse(m->f[3].p, m->f[3].n, NS_CLIENT);
    xml_node_t *q = iq ? xml_child(iq, "query", NS_REGISTER) : NULL;
    if (!q) {
        answer_error(c, id, SE_BAD_REQUEST, NULL, NULL);
        goto out;
    }
    if (m->stype == STYPE_GET) {
        answer_form(c, id);
        goto out;
    }
    xml_node_t *user = xml_child(q, "username", NS_REGISTER), *pw = xml_child(q, "password", NS_REGISTER);
    if (xml_child(q, "remove", NS_REGISTER)) {
        if (pre) /* §3.2: no account is associated with the stream yet */
            answer_error(c, id, SE_UNEXPECTED_REQUEST, NULL, "authenticate before removing an account");
        else
            do_remove(c, id, q);
    } else if (pre) {
        do_register(c, id, user ? xml_text(user) : NULL, pw ? xml_text(pw) : NULL);
    } else {
        do_passwd(c, id, user ? xml_text(user) : NULL, pw ? xml_text(pw) : NULL);
    }
    wipe_text(pw);
out:
    xml_free(iq);
    return 1;
}

void c2s_register_result(struct c2s_conn *c, const struct msg *m)
{
    struct c2s_reg *g = c->reg;
    if (!g || !g->op) {
        log_debug("conn %016llx: late ACCOUNT_RESULT ignored", (unsigned long long)c->cid);
        return;
    }
    if (!msg_eq(m, 1, g->bare)) {
        log_warn("conn %016llx: ACCOUNT_RESULT for another account ignored", (unsigned long long)c->cid);
        return;
    }
    unsigned op = g->op, kicked = g->kicked;
    unsigned cond = m->num < SE_END ? m->num : SE_INTERNAL_SERVER_ERROR;
    char *id = g->iq_id, *bare = g->bare;
    g->iq_id = g->bare = NULL;
    if (cond != SE_NONE && op == ACCOUNT_CREATE) ip_refund(g->ip_key);
    finish(g);
    if (cond == SE_NONE) {
        answer_result(c, id, NULL);
        switch (op) {
        case ACCOUNT_CREATE:
            g->registered = 1;
            R.registered++;
            log_outcome(c, "register-success", bare, NULL);
            break;
        case ACCOUNT_PASSWD:
            R.passwd++;
            log_outcome(c, "passwd-success", bare, NULL);
            break;
        case ACCOUNT_REMOVE:
            R.removed++;
            log_outcome(c, "unregister-success", bare, NULL);
            /* §3.2: the result, then a not-authorized stream error */
            c2s_close(c, "not-authorized", "account removed", CLOSE_KICKED);
            break;
        }
    } else {
        const char *text = NULL;
        R.failed++;
        if (cond == SE_CONFLICT) text = "the username is taken";
        else if (cond == SE_REGISTRATION_REQUIRED) text = "there is no such account";
        answer_error(c, id, cond, NULL, text);
        log_outcome(c, op == ACCOUNT_CREATE ? "register-failure" : op == ACCOUNT_PASSWD ? "passwd-failure"
                                                                                       : "unregister-failure",
                    bare, stanza_error_name(cond));
        if (op == ACCOUNT_REMOVE && kicked) c2s_close(c, "not-authorized", "account removed", CLOSE_KICKED);
    }
    free(id);
    free(bare);
}

int c2s_register_hold_kick(struct c2s_conn *c)
{
    /* sm ends the sessions of a removed account before it answers the
     * removal (its answer waits for the commit): hold the stream until
     * the IQ result is out, so the client sees §3.2's order */
    if (!c->reg || c->reg->op != ACCOUNT_REMOVE) return 0;
    c->reg->kicked = 1;
    return 1;
}

void c2s_register_free(struct c2s_conn *c)
{
    struct c2s_reg *g = c->reg;
    if (!g) return;
    finish(g);
    free(g);
    c->reg = NULL;
}

void c2s_register_stats(struct ctl_req *r)
{
    ctl_row(r, "ibr_registered\t%" PRIu64, R.registered);
    ctl_row(r, "ibr_refused_rate\t%" PRIu64, R.refused_rate);
    ctl_row(r, "ibr_password_changes\t%" PRIu64, R.passwd);
    ctl_row(r, "ibr_removed\t%" PRIu64, R.removed);
    ctl_row(r, "ibr_failed\t%" PRIu64, R.failed);
    ctl_row(r, "ibr_timeouts\t%" PRIu64, R.timeouts);
    ctl_row(r, "ibr_tracked_addresses\t%zu", R.ips.count);
}
