/* c2s_legacy.c - XEP-0078 non-SASL authentication ("wait_for_auth", as
 * ejabberd's c2s calls the state) for pre-XMPP 1.0 clients, on the hosts
 * whose `modules` list names legacy_auth (libcore/modules/mod_legacy_auth.c
 * is the switch; the protocol is here, where the streams are).
 *
 * A stream header without version='1.0' is a "0.9" stream (RFC 6120
 * §4.7.5): no STARTTLS, no SASL, no stream features. Such a stream is served
 * only where TLS protects it from the first byte, the direct TLS port
 * (XEP-0368), since the password travels in the clear inside the stream.
 * Elsewhere, or when the module is off, c2s_stream.c refuses it with
 * <unsupported-version/>.
 *
 * The password is checked the way PLAIN checks it (c2s_sasl.c): the
 * account's SCRAM-SHA-256 verifier is fetched from the user's shard
 * (MSG_AUTH_LOOKUP, the connection waits, the loop does not), one PBKDF2
 * behind the same rate limit, fake verifiers for unknown users, the same
 * auth-failure log line. So <digest/> is not offered: SHA1(id + password)
 * cannot be checked against a verifier. The resource is then bound through
 * the shard like an RFC 6120 bind, and the IQ is answered when the shard
 * has confirmed the session. No stream restart follows: listen is told the
 * connection is authenticated without a fresh parser (CONN_BOUND with
 * MSG_F_AUTHED, protocol 3). */
#include "config.h"
#include "c2s.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jid.h"
#include "log.h"
#include "scram.h"
#include "stanza.h"
#include "util.h"
#include "xml.h"

#define NS_IQ_AUTH "jabber:iq:auth"
#define MODULE_NAME "legacy_auth"
#define MECH_NAME "IQ-AUTH"          /* in the auth-success / auth-failure lines */
#define LEGACY_PASS_MAX 1024         /* as PLAIN's */
#define LEGACY_PROTO 3               /* listen must know CONN_BOUND + MSG_F_AUTHED */

/* A jabber:iq:auth set waiting for the account's verifiers. */
struct c2s_legacy {
    uint64_t deadline;
    char *user_at_domain;
    char *resource;   /* resourceprepped */
    char *id;         /* of the IQ, for the answer */
    char *password;   /* wiped before it is freed */
};

static struct c2s *S(void) { return c2s_get(); }

void c2s_legacy_free(struct c2s_conn *c)
{
    struct c2s_legacy *l = c->legacy;
    if (!l) return;
    if (l->password) explicit_bzero(l->password, strlen(l->password));
    free(l->password);
    free(l->user_at_domain);
    free(l->resource);
    free(l->id);
    free(l);
    c->legacy = NULL;
}

int c2s_legacy_waiting(const struct c2s_conn *c, uint64_t *deadline)
{
    if (!c->legacy) return 0;
    *deadline = c->legacy->deadline;
    return 1;
}

/* ---- the stream header ---- */

int c2s_legacy_allowed(const struct c2s_conn *c, const char *domain)
{
    const struct conf *cf = &S()->d->conf;
    const struct conf_host *h = conf_host(cf, domain, strlen(domain));
    char addr[130];
    const char *why = NULL;
    if (!h || !conf_module_enabled(cf, h, MODULE_NAME)) {
        why = "legacy_auth is not enabled for the domain";
    } else if (!(c->flags & CF_TLS) || (c->flags & CF_STREAM_SEEN)) {
        /* TLS at the first header is direct TLS: on the STARTTLS port the
         * first header comes before TLS, and a pre-1.0 stream cannot
         * negotiate STARTTLS (it gets no features) */
        why = "only on the direct TLS port";
    } else {
        const struct peer_info *lp = peer_server_find(S()->lpeers, S()->listens[c->listen].name);
        if (!lp || lp->proto_max < LEGACY_PROTO) why = "the listen is too old (protocol 3 needed)";
    }
    if (why)
        log_info("conn %016llx addr=%s: pre-1.0 stream to %s refused: %s", (unsigned long long)c->cid,
                 c2s_logsafe(c->addr, addr, sizeof addr), domain, why);
    return why == NULL;
}

/* ---- answers ---- */

/* An error answer to a jabber:iq:auth IQ. The query is not echoed: it
 * holds the password (XEP-0078 §3: error stanzas SHOULD NOT include it). */
static void auth_error(struct c2s_conn *c, const char *id, size_t idlen, unsigned cond, int next)
{
    struct buf *out = &S()->scratch2;
    buf_clear(out);
    buf_adds(out, "<iq type='error'");
    if (idlen) {
        buf_adds(out, " id='");
        buf_add_xml_escaped(out, id, idlen);
        buf_adds(out, "'");
    }
    /* XEP-0078 §5 wants the XEP-0086 code beside the condition (500 for
     * the few conditions it does not map) */
    unsigned code = stanza_error_code(cond);
    buf_addf(out, "><error code='%u' type='%s'><%s xmlns='" NS_STANZA_ERRORS "'/></error></iq>", code ? code : 500,
             stanza_error_type(cond), stanza_error_name(cond));
    c2s_send(c, out->data, out->len, next);
}

/* The auth-failure line of c2s_sasl.c, for fail2ban the same filter. */
static void log_failure(const struct c2s_conn *c, const char *who, const char *reason)
{
    char addr[130], user[2 * JID_PART_MAX + 2];
    log_notice("auth-failure addr=%s user=%s mech=" MECH_NAME " reason=%s", c2s_logsafe(c->addr, addr, sizeof addr),
               c2s_logsafe(who, user, sizeof user), reason);
}

/* A wrong password or a username that does not normalize: 401, and one of
 * the failures RFC 6120 §6.4.5 allows before the stream is closed. */
static void auth_failed(struct c2s_conn *c, const char *who, const char *id, size_t idlen)
{
    log_failure(c, who, "not-authorized");
    S()->st.legacy_failed++;
    if (++c->auth_failures >= C2S_AUTH_MAX_FAILURES) {
        auth_error(c, id, idlen, SE_NOT_AUTHORIZED, 0);
        c2s_close(c, "policy-violation", "too many authentication failures", CLOSE_ERROR);
        return;
    }
    auth_error(c, id, idlen, SE_NOT_AUTHORIZED, 1);
}

/* ---- the lookup ---- */

static void send_lookup(struct c2s_conn *c)
{
    struct msg m;
    msg_init(&m, MSG_AUTH_LOOKUP);
    m.id = c->cid; /* one lookup per connection at a time: the id maps back */
    msg_set(&m, 0, c->legacy->user_at_domain);
    msg_set(&m, 3, S()->d->instance);
    c2s_to_router(&m);
    c->legacy->deadline = loop_now_ms(S()->d->loop) + C2S_LOOKUP_TIMEOUT_MS;
}

/* The text of child `name` of the query, or NULL when absent. */
static const char *field(const xml_node_t *query, const char *name)
{
    const xml_node_t *e = xml_child(query, name, NS_IQ_AUTH);
    return e ? xml_text(e) : NULL;
}

/* XEP-0078 §3: username, password and resource are all required. */
static void auth_set(struct c2s_conn *c, const struct msg *m, const xml_node_t *query)
{
    const char *user = field(query, "username"), *pass = field(query, "password"),
               *res = field(query, "resource");
    char local[JID_PART_MAX + 1], resource[JID_PART_MAX + 1], who[2 * JID_PART_MAX + 2];
    if (!user || !*user || !pass || !*pass || !res || !*res) {
        /* a <digest/> instead of <password/> lands here too: it was not offered */
        auth_error(c, m->f[1].p, m->f[1].n, SE_NOT_ACCEPTABLE, 1);
        return;
    }
    if (jid_nodeprep(user, local, sizeof local) < 0 || strlen(pass) > LEGACY_PASS_MAX) {
        char safe[128];
        log_info("conn %016llx: XEP-0078 username %s does not normalize (or the password is too long)",
                 (unsigned long long)c->cid, c2s_logsafe(user, safe, sizeof safe));
        auth_failed(c, NULL, m->f[1].p, m->f[1].n);
        return;
    }
    if (jid_resourceprep(res, resource, sizeof resource) < 0) {
        auth_error(c, m->f[1].p, m->f[1].n, SE_NOT_ACCEPTABLE, 1); /* a resource we cannot use */
        return;
    }
    int n = snprintf(who, sizeof who, "%s@%s", local, c->domain);
    if (n < 0 || (size_t)n >= sizeof who || (size_t)n + 1 + strlen(resource) >= JID_STR_MAX) {
        auth_error(c, m->f[1].p, m->f[1].n, SE_NOT_ACCEPTABLE, 1);
        return;
    }
    if (!c2s_plain_rate_ok()) {
        /* the same PBKDF2 budget as PLAIN; not the client's failure */
        log_warn("PLAIN rate limit (%u/s) reached (XEP-0078 login)", S()->d->conf.plain_logins_per_sec);
        auth_error(c, m->f[1].p, m->f[1].n, SE_RESOURCE_CONSTRAINT, 1);
        return;
    }
    struct c2s_legacy *l = calloc(1, sizeof *l);
    if (l) {
        c->legacy = l;
        l->user_at_domain = strdup(who);
        l->resource = strdup(resource);
        l->id = util_strndup_safe(m->f[1].p, m->f[1].n);
        l->password = strdup(pass);
    }
    if (!l || !l->user_at_domain || !l->resource || !l->id || !l->password) {
        c2s_legacy_free(c);
        auth_error(c, m->f[1].p, m->f[1].n, SE_RESOURCE_CONSTRAINT, 1);
        return;
    }
    send_lookup(c); /* no NEXT: listen holds the client's next element */
}

/* The fields a client must send (XEP-0078 §3). No <digest/>: see the top. */
static void auth_get(struct c2s_conn *c, const struct msg *m)
{
    c2s_iq_result(c, m->f[1].p, m->f[1].n, NULL,
                "<query xmlns='" NS_IQ_AUTH "'><username/><password/><resource/></query>", 1);
}

/* SCRAM-SHA-256 verifier line from the lookup answer, parsed; 0 or -1. */
static int verifier_of(const struct msg *m, struct scram_verifier *v)
{
    const char *p = m->f[4].p, *name = scram_mech_name(SCRAM_SHA256);
    size_t n = m->f[4].n, nl = strlen(name);
    while (n > 0) {
        const char *eol = memchr(p, '\n', n);
        size_t len = eol ? (size_t)(eol - p) : n;
        if (len > nl && memcmp(p, name, nl) == 0 && p[nl] == '$') return scram_from_authpassword(p, len, v);
        if (!eol) break;
        n -= len + 1;
        p += len + 1;
    }
    return -1;
}

/* The password is right: bind the resource through the shard, as an RFC
 * 6120 bind does (a session of the same full JID elsewhere is replaced, as
 * XEP-0078 §3 recommends). The IQ is answered in c2s_legacy_bound. */
static void authenticated(struct c2s_conn *c)
{
    struct c2s_legacy *l = c->legacy;
    char addr[130], user[2 * JID_PART_MAX + 2], full[JID_STR_MAX];
    log_notice("auth-success addr=%s user=%s mech=" MECH_NAME, c2s_logsafe(c->addr, addr, sizeof addr),
               c2s_logsafe(l->user_at_domain, user, sizeof user));
    S()->st.legacy_ok++;
    snprintf(full, sizeof full, "%s/%s", l->user_at_domain, l->resource); /* fits: checked in auth_set */
    char *jid = strdup(full), *id = l->id;
    l->id = NULL;
    c2s_legacy_free(c);
    if (!jid) {
        free(id);
        c2s_close(c, "internal-server-error", NULL, CLOSE_ERROR);
        return;
    }
    free(c->jid);
    c->jid = jid;
    free(c->bind_id);
    c->bind_id = id;
    c->flags |= CF_AUTHED;
    c->auth_failures = 0;
    c2s_session_bind(c);
}

void c2s_legacy_lookup_result(struct c2s_conn *c, const struct msg *m)
{
    struct c2s_legacy *l = c->legacy;
    struct scram_verifier v;
    if (m->f[1].n && !msg_eq(m, 1, l->user_at_domain)) {
        log_warn("conn %016llx: AUTH_RESULT for another account ignored", (unsigned long long)c->cid);
        return;
    }
    if (verifier_of(m, &v) < 0) {
        /* sm always answers with verifiers (fake ones for unknown users):
         * none is a fault on its side, not the client's */
        log_warn("conn %016llx: AUTH_RESULT without a usable verifier for %s", (unsigned long long)c->cid,
                 l->user_at_domain);
        auth_error(c, l->id, strlen(l->id), SE_INTERNAL_SERVER_ERROR, 1);
        c2s_legacy_free(c);
        return;
    }
    int ok = scram_check_password(&v, l->password) == 1;
    explicit_bzero(&v, sizeof v);
    if (ok) {
        authenticated(c);
        return;
    }
    char *who = strdup(l->user_at_domain), *id = strdup(l->id);
    c2s_legacy_free(c);
    if (!who || !id) {
        free(who);
        free(id);
        c2s_close(c, "internal-server-error", NULL, CLOSE_ERROR);
        return;
    }
    auth_failed(c, who, id, strlen(id));
    free(who);
    free(id);
}

void c2s_legacy_lookup_timeout(struct c2s_conn *c)
{
    struct c2s_legacy *l = c->legacy;
    log_warn("conn %016llx: no AUTH_RESULT for %s in %u ms", (unsigned long long)c->cid, l->user_at_domain,
             C2S_LOOKUP_TIMEOUT_MS);
    auth_error(c, l->id, strlen(l->id), SE_INTERNAL_SERVER_ERROR, 1);
    c2s_legacy_free(c);
}

/* ---- wait_for_auth ---- */

void c2s_legacy_element(struct c2s_conn *c, const struct msg *m)
{
    char addr[130];
    if (c->legacy || (c->flags & CF_BIND_WAIT)) {
        /* listen holds elements while we wait: this is a protocol slip */
        c2s_close(c, "not-authorized", "unexpected element during authentication", CLOSE_ERROR);
        return;
    }
    if (m->kind != KIND_IQ || !msg_eq(m, 2, NS_IQ_AUTH) ||
        (m->stype != STYPE_GET && m->stype != STYPE_SET)) {
        /* RFC 6120 §4.9.3.12: nothing else is processed before authentication */
        log_notice("conn %016llx addr=%s: %s before authentication (XEP-0078)", (unsigned long long)c->cid,
                   c2s_logsafe(c->addr, addr, sizeof addr), stanza_kind_name(m->kind));
        c2s_close(c, "not-authorized", NULL, CLOSE_ERROR);
        return;
    }
    if (m->f[1].n == 0) {
        auth_error(c, NULL, 0, SE_BAD_REQUEST, 1); /* RFC 6120 §8.2.3: an IQ needs an id */
        return;
    }
    if (m->stype == STYPE_GET) {
        auth_get(c, m);
        return;
    }
    xml_node_t *iq = xml_parse(m->f[3].p, m->f[3].n, NS_CLIENT);
    const xml_node_t *query = iq ? xml_child(iq, "query", NS_IQ_AUTH) : NULL;
    if (!query) auth_error(c, m->f[1].p, m->f[1].n, SE_BAD_REQUEST, 1);
    else auth_set(c, m, query);
    xml_free(iq);
}

void c2s_legacy_bound(struct c2s_conn *c, const struct msg *m)
{
    char *id = c->bind_id;
    c->bind_id = NULL;
    c->flags &= (uint8_t)~CF_BIND_WAIT;
    if (m->num != 0) {
        log_info("conn %016llx: XEP-0078 session %s refused: %s", (unsigned long long)c->cid, c->jid,
                 stanza_error_name(m->num));
        /* no session on the sm side and no authentication on this stream:
         * the client may try again (with another resource) */
        c->flags &= (uint8_t)~(CF_BIND_SENT | CF_AUTHED);
        free(c->jid);
        c->jid = NULL;
        auth_error(c, id, id ? strlen(id) : 0, m->num < SE_END ? m->num : SE_INTERNAL_SERVER_ERROR, 1);
        free(id);
        return;
    }
    c->state = C2S_ESTABLISHED;
    S()->nsessions++;
    log_info("conn %016llx: session %s bound (XEP-0078)", (unsigned long long)c->cid, c->jid);
    /* authenticated and bound at once, without a stream restart: listen
     * stops pausing after each element but keeps its parser (protocol 3,
     * checked when the stream was opened) */
    struct msg b;
    msg_init(&b, MSG_CONN_BOUND);
    b.id = c->lid;
    b.flags = MSG_F_AUTHED;
    msg_set(&b, 0, c->jid);
    c2s_to_listen(c, &b);
    c2s_iq_result(c, id ? id : "", id ? strlen(id) : 0, NULL, NULL, 1);
    free(id);
}

