/* c2s_stream.c - the client stream state machine of xmpp-c2s (DESIGN §1):
 * wait_for_stream -> wait_for_feature_request -> wait_for_sasl_response
 * -> (restart) -> wait_for_bind -> session_established (or, for a pre-1.0
 * stream, wait_for_auth -> session_established: c2s_legacy.c), driven by the
 * connection events listen sends (open, stream header, element, closed)
 * and by the routed messages from the router (deliveries, bounces, bind
 * answers, kicks, verifier lookups).
 *
 * Before authentication listen hands over one element at a time and waits:
 * every pre-auth element is answered with exactly one of NEXT, SEND+NEXT,
 * STARTTLS, RESET or CLOSE, or, while a verifier lookup is outstanding,
 * nothing yet (c2s_sasl.c answers when the lookup ends).
 *
 * Everything for one connection goes one path in order (RFC 6120 §10.1):
 * element in, one record out to the router, one DEALER socket, FIFO. */
#include "config.h"
#include "c2s.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jid.h"
#include "log.h"
#include "stanza.h"
#include "trace.h"
#include "util.h"
#include "xml.h"

static const char *const state_names[C2S_STATE_COUNT] = {
    "wait_for_stream", "wait_for_feature_request", "wait_for_sasl_response", "wait_for_bind",
    "session_established", "wait_for_auth",
};

const char *c2s_state_name(unsigned state) { return state < C2S_STATE_COUNT ? state_names[state] : "?"; }

static struct c2s *S(void) { return c2s_get(); }

/* Replace a malloc'd string field; 0 or -1 (then the field is unchanged). */
static int set_str(char **field, const char *p, size_t n)
{
    char *copy = util_strndup_safe(p, n);
    if (!copy) return -1;
    free(*field);
    *field = copy;
    return 0;
}

/* ---- ending connections and sessions ---- */

/* Tell the owning sm the session is over (it had, or may have, one). */
static void end_session(struct c2s_conn *c, unsigned reason)
{
    if (!(c->flags & CF_BIND_SENT)) return;
    struct msg m;
    msg_init(&m, MSG_SESSION_END);
    m.id = c->cid;
    m.num = reason;
    msg_set(&m, 0, c->jid);
    msg_set(&m, 3, S()->d->instance);
    c2s_to_router(&m);
    if (c->state == C2S_ESTABLISHED && S()->nsessions > 0) S()->nsessions--;
    c->flags &= (uint8_t)~(CF_BIND_SENT | CF_BIND_WAIT);
}

void c2s_drop(struct c2s_conn *c, unsigned reason)
{
    end_session(c, reason);
    c2s_conn_free(c);
}

void c2s_close(struct c2s_conn *c, const char *cond, const char *text, unsigned reason)
{
    struct msg m;
    char addr[130];
    if (cond && *cond) {
        S()->st.stream_errors++;
        log_info("conn %016llx addr=%s state=%s: stream error %s%s%s", (unsigned long long)c->cid,
                 c2s_logsafe(c->addr, addr, sizeof addr), c2s_state_name(c->state), cond, text ? ": " : "",
                 text ? text : "");
    }
    msg_init(&m, MSG_CONN_CLOSE);
    m.id = c->lid;
    msg_set(&m, 0, cond ? cond : "");
    msg_set(&m, 1, text ? text : "");
    c2s_to_listen(c, &m);
    c2s_drop(c, reason);
}

/* ---- opening ---- */

void c2s_conn_open(uint8_t listen, const struct msg *m)
{
    struct c2s_conn *old = c2s_find_lid(listen, m->id);
    if (old) {
        log_warn("conn %016llx: listen reopened id %016llx; old state dropped", (unsigned long long)old->cid,
                 (unsigned long long)m->id);
        c2s_drop(old, CLOSE_ERROR);
    }
    struct c2s_conn *c = c2s_conn_new(listen, m->id);
    if (!c || set_str(&c->addr, m->f[0].p, m->f[0].n) < 0) {
        /* cannot hold it: refuse politely rather than leave listen waiting */
        struct msg cm;
        msg_init(&cm, MSG_CONN_CLOSE);
        cm.id = m->id;
        msg_set(&cm, 0, "resource-constraint");
        if (c) {
            c2s_to_listen(c, &cm);
            c2s_conn_free(c);
        } else {
            ipc_send(S()->lipc, S()->listens[listen].name, &cm);
        }
        return;
    }
    if (m->flags & MSG_F_TLS) c->flags |= CF_TLS; /* XEP-0368 direct TLS */
    log_debug("conn %016llx: open from %s (listen %s id %016llx)%s", (unsigned long long)c->cid, c->addr,
              S()->listens[listen].name, (unsigned long long)m->id, (c->flags & CF_TLS) ? " tls" : "");
}

/* ---- the stream header (RFC 6120 §4.7) ---- */

/* Our first configured domain (conf always has one; "localhost" by default). */
static const char *default_domain(void)
{
    const struct conf *cf = &S()->d->conf;
    return cf->n_hosts > 0 && cf->hosts[0].domain ? cf->hosts[0].domain : "localhost";
}

/* The served domain the client asked for, normalized, into out; -1 if
 * we do not serve it. An absent 'to' gets the first configured domain. */
static int stream_domain(const struct msg *m, char *out, size_t size)
{
    const struct conf *cf = &S()->d->conf;
    if (m->f[0].n == 0) {
        const char *d = default_domain();
        if (strlen(d) >= size) return -1;
        strcpy(out, d);
        return conf_host(cf, out, strlen(out)) ? 0 : -1;
    }
    if (jid_normalize(m->f[0].p, m->f[0].n, out, size) < 0) return -1;
    if (strchr(out, '@') || strchr(out, '/')) return -1; /* a stream is to a domain */
    return conf_host(cf, out, strlen(out)) ? 0 : -1;
}

/* version='1.0' or higher (we answer 1.0, RFC 6120 §4.7.5); absent or 0.x
 * is a pre-XMPP stream, served only by XEP-0078 (c2s_legacy.c). */
static int version_ok(const struct msg *m)
{
    char v[17];
    if (!msg_str(m, 2, v, sizeof v) || v[0] < '0' || v[0] > '9') return 0;
    unsigned long major = strtoul(v, NULL, 10);
    return major >= 1;
}

static void stream_header(const struct msg *m, struct buf *out, const char *domain)
{
    char id[33];
    snprintf(id, sizeof id, "%016llx%016llx", (unsigned long long)util_random_u64(),
             (unsigned long long)util_random_u64());
    buf_adds(out, "<?xml version='1.0'?><stream:stream xmlns='" NS_CLIENT "' xmlns:stream='" NS_STREAMS "' id='");
    buf_adds(out, id);
    buf_adds(out, "' from='");
    buf_add_xml_escaped(out, domain, strlen(domain));
    buf_adds(out, "'");
    /* RFC 6120 §4.7.2: answer to the client's 'from' when it is a valid JID */
    char from[JID_STR_MAX];
    if (m && m->f[1].n && jid_normalize(m->f[1].p, m->f[1].n, from, sizeof from) == 0) {
        buf_adds(out, " to='");
        buf_add_xml_escaped(out, from, strlen(from));
        buf_adds(out, "'");
    }
    /* RFC 6120 §4.7.5: no version from the client means "0.9", and then
     * the answer SHOULD carry none either */
    if (version_ok(m)) buf_adds(out, " version='1.0'");
    buf_adds(out, " xml:lang='en'>");
}

/* Features for the stream just opened (RFC 6120 §4.3.2); sets the next state. */
static void stream_features(struct c2s_conn *c, struct buf *out)
{
    const struct conf *cf = &S()->d->conf;
    buf_adds(out, "<stream:features>");
    if (c->flags & CF_AUTHED) {
        /* RFC 6120 §7 bind; RFC 3921 §3 session, optional for RFC 6121 clients */
        buf_adds(out, "<bind xmlns='" NS_BIND "'/><session xmlns='" NS_SESSION "'><optional/></session>");
        /* what the host's modules declare (mod_core: RFC 6121 rosterver
         * and pre-approval) and the XEP-0115 <c/> */
        const struct mod_vhost *vh = modules_vhost(&S()->mods, c->domain, strlen(c->domain));
        if (vh) modules_stream_features(vh, 0, out);
        c->state = C2S_WAIT_BIND;
    } else if (c->flags & CF_TLS) {
        c2s_sasl_features(c, out);
        const struct mod_vhost *vh = modules_vhost(&S()->mods, c->domain, strlen(c->domain));
        if (vh) modules_stream_features(vh, 1, out); /* e.g. XEP-0077 register */
        c->state = C2S_WAIT_FEATURE;
    } else if (cf->allow_plaintext_auth) {
        buf_adds(out, "<starttls xmlns='" NS_TLS "'/>");
        c2s_sasl_features(c, out);
        c->state = C2S_WAIT_FEATURE;
    } else {
        /* RFC 6120 §5.3.1: TLS mandatory-to-negotiate, nothing else offered */
        buf_adds(out, "<starttls xmlns='" NS_TLS "'><required/></starttls>");
        c->state = C2S_WAIT_FEATURE;
    }
    buf_adds(out, "</stream:features>");
}

void c2s_conn_stream(struct c2s_conn *c, const struct msg *m)
{
    char domain[JID_STR_MAX];
    struct buf *out = &S()->scratch;
    buf_clear(out);
    if (c->state != C2S_WAIT_STREAM) {
        c2s_close(c, "bad-format", "unexpected stream header", CLOSE_ERROR);
        return;
    }
    if (m->flags & MSG_F_TLS) c->flags |= CF_TLS;
    int dom_ok = stream_domain(m, domain, sizeof domain) == 0;
    if (dom_ok && (c->flags & CF_STREAM_SEEN) && strcmp(domain, c->domain) != 0) dom_ok = 0;
    /* RFC 6120 §4.9.1.2: an error at this point still opens our stream first */
    stream_header(m, out, dom_ok ? domain : c->domain ? c->domain : default_domain());
    if (!dom_ok) {
        c2s_send(c, out->data, out->len, 0);
        c2s_close(c, "host-unknown", NULL, CLOSE_ERROR); /* RFC 6120 §4.9.3.6 */
        return;
    }
    int legacy = !version_ok(m);
    if (legacy && !c2s_legacy_allowed(c, domain)) {
        c2s_send(c, out->data, out->len, 0);
        c2s_close(c, "unsupported-version", NULL, CLOSE_ERROR); /* RFC 6120 §4.9.3.25 */
        return;
    }
    if (!(c->flags & CF_STREAM_SEEN)) {
        if (set_str(&c->domain, domain, strlen(domain)) < 0) {
            c2s_send(c, out->data, out->len, 0);
            c2s_close(c, "resource-constraint", NULL, CLOSE_ERROR);
            return;
        }
        c->flags |= CF_STREAM_SEEN;
    }
    if (legacy) {
        /* XEP-0078: a pre-1.0 stream gets no features; jabber:iq:auth next */
        c->state = C2S_WAIT_AUTH;
        c2s_send(c, out->data, out->len, 1);
        return;
    }
    stream_features(c, out);
    c2s_send(c, out->data, out->len, 1);
}

/* ---- small replies ---- */

void c2s_iq_result(struct c2s_conn *c, const char *id, size_t idlen, const char *to, const char *payload, int next)
{
    struct buf *out = &S()->scratch2;
    buf_clear(out);
    buf_adds(out, "<iq type='result' id='");
    buf_add_xml_escaped(out, id, idlen);
    buf_adds(out, "' from='");
    buf_add_xml_escaped(out, c->domain, strlen(c->domain));
    if (to) {
        buf_adds(out, "' to='");
        buf_add_xml_escaped(out, to, strlen(to));
    }
    if (payload) {
        buf_adds(out, "'>");
        buf_adds(out, payload);
        buf_adds(out, "</iq>");
    } else {
        buf_adds(out, "'/>");
    }
    c2s_send(c, out->data, out->len, next);
}

/* A bare IQ error: an IQ must be answered (RFC 6120 §8.2.3) even when its
 * body cannot be echoed back. */
static void iq_error(struct c2s_conn *c, const char *id, size_t idlen, unsigned cond)
{
    struct buf *out = &S()->scratch2;
    buf_clear(out);
    buf_adds(out, "<iq type='error' id='");
    buf_add_xml_escaped(out, id, idlen);
    buf_addf(out, "'><error type='%s'><%s xmlns='" NS_STANZA_ERRORS "'/></error></iq>", stanza_error_type(cond),
             stanza_error_name(cond));
    c2s_send(c, out->data, out->len, 0);
}

/* A stanza c2s made for a traced one (an error reply): a new trace id,
 * caused by it, written as step 7 and handed to listen traced. */
static void send_caused(struct c2s_conn *c, const struct buf *xml, const struct msg *cause, const char *from,
                        const char *what)
{
    struct msg m;
    struct msg_str body = { xml->data, (uint32_t)xml->len };
    msg_init(&m, MSG_CONN_SEND);
    m.id = c->lid;
    m.kind = cause->kind;
    m.stype = STYPE_ERROR;
    m.trace = trace_new_id();
    m.flags = MSG_F_TRACED;
    msg_setn(&m, 0, xml->data, xml->len);
    c2s_to_listen(c, &m);
    trace_line(7, m.kind, m.stype, from, c->jid, m.trace, cause->trace, &body, "created: %s ->%s conn %016llx",
               what, S()->listens[c->listen].name, (unsigned long long)c->lid);
}

/* A stanza error reply to the client's own stanza (RFC 6120 §8.3); never
 * an error answering an error (stanza_error_reply refuses those). When
 * the stanza was traced (cause, else NULL), so is the reply, from
 * err_from (the stanza's recipient). */
static void stanza_error_to_client(struct c2s_conn *c, const char *body, size_t len, unsigned cond,
                                   const char *text, const struct msg *cause, const char *err_from)
{
    struct buf *out = &S()->scratch2;
    buf_clear(out);
    if (stanza_error_reply(body, len, cond, text, c->jid, out) < 0 || out->oom) return;
    if (cause && (cause->flags & MSG_F_TRACED)) {
        char what[96];
        snprintf(what, sizeof what, "error %s", stanza_error_name(cond));
        send_caused(c, out, cause, err_from, what);
        return;
    }
    c2s_send(c, out->data, out->len, 0);
}

/* The same for a client IQ from the listen header (kind, type, id known):
 * falls back to a bare IQ error if the body cannot be echoed. */
static void iq_error_to_client(struct c2s_conn *c, const struct msg *m, unsigned cond, const char *text)
{
    struct buf *out = &S()->scratch2;
    if (m->stype == STYPE_ERROR || m->stype == STYPE_RESULT) return; /* answers are not answered */
    buf_clear(out);
    if (stanza_error_reply(m->f[3].p, m->f[3].n, cond, text, c->jid, out) == 0 && !out->oom) {
        c2s_send(c, out->data, out->len, 0);
        return;
    }
    iq_error(c, m->f[1].p, m->f[1].n, cond);
}

/* ---- before authentication ---- */

static void starttls(struct c2s_conn *c)
{
    if (c->flags & CF_TLS) {
        /* TLS is up already (STARTTLS or direct TLS): it is negotiated once
         * per connection and never offered again (RFC 6120 §5.3.1) */
        c2s_close(c, "policy-violation", "TLS already negotiated", CLOSE_ERROR);
        return;
    }
    struct msg m;
    msg_init(&m, MSG_CONN_STARTTLS);
    m.id = c->lid;
    c2s_to_listen(c, &m);
    /* listen writes <proceed/>, handshakes, and parses a fresh stream */
    c->state = C2S_WAIT_STREAM;
}

static void auth_element(struct c2s_conn *c, const xml_node_t *e)
{
    if (!(c->flags & CF_TLS) && !S()->d->conf.allow_plaintext_auth) {
        /* RFC 6120 §6.5.4: not on this stream until TLS protects it */
        c2s_sends(c, "<failure xmlns='" NS_SASL "'><encryption-required/></failure>", 1);
        return;
    }
    c2s_sasl_auth(c, xml_attr(e, "mechanism"), xml_text(e));
}

/* An element before SASL success. Stanzas are refused with not-authorized
 * (RFC 6120 §4.9.3.12: data sent before the stream is authenticated is not
 * processed) and never routed. */
static void preauth_element(struct c2s_conn *c, const struct msg *m)
{
    char addr[130];
    if (c2s_register_element(c, m)) return; /* XEP-0077 registration (c2s_register.c) */
    if (m->kind != KIND_OTHER) {
        log_notice("conn %016llx addr=%s: %s before authentication", (unsigned long long)c->cid,
                   c2s_logsafe(c->addr, addr, sizeof addr), stanza_kind_name(m->kind));
        c2s_close(c, "not-authorized", NULL, CLOSE_ERROR);
        return;
    }
    xml_node_t *e = xml_parse(m->f[3].p, m->f[3].n, NS_CLIENT);
    if (!e) {
        c2s_close(c, "bad-format", "element does not parse", CLOSE_ERROR);
        return;
    }
    int ns_tls = strcmp(e->ns, NS_TLS) == 0, ns_sasl = strcmp(e->ns, NS_SASL) == 0;
    if (c->state == C2S_WAIT_FEATURE && ns_tls && strcmp(e->name, "starttls") == 0)
        starttls(c);
    else if (c->state == C2S_WAIT_FEATURE && ns_sasl && strcmp(e->name, "auth") == 0)
        auth_element(c, e);
    else if (c->state == C2S_WAIT_SASL && ns_sasl && strcmp(e->name, "response") == 0)
        c2s_sasl_response(c, xml_text(e));
    else if (ns_sasl && strcmp(e->name, "abort") == 0)
        c2s_sasl_abort(c);
    else {
        log_notice("conn %016llx addr=%s: unexpected <%s xmlns='%s'> in %s", (unsigned long long)c->cid,
                   c2s_logsafe(c->addr, addr, sizeof addr), e->name, e->ns, c2s_state_name(c->state));
        c2s_close(c, "not-authorized", NULL, CLOSE_ERROR);
    }
    xml_free(e);
}

void c2s_auth_succeeded(struct c2s_conn *c, const char *success_xml, const char *user_at_domain)
{
    if (set_str(&c->jid, user_at_domain, strlen(user_at_domain)) < 0) {
        c2s_close(c, "internal-server-error", NULL, CLOSE_ERROR);
        return;
    }
    c->flags |= CF_AUTHED;
    c->auth_failures = 0;
    struct msg m;
    msg_init(&m, MSG_CONN_RESET);
    m.id = c->lid;
    m.flags = MSG_F_AUTHED;
    msg_set(&m, 0, success_xml);
    msg_set(&m, 1, user_at_domain);
    c2s_to_listen(c, &m);
    /* RFC 6120 §6.4.6: the client restarts the stream */
    c->state = C2S_WAIT_STREAM;
}

/* ---- resource binding (RFC 6120 §7) ---- */

static int is_iq_ns(const struct msg *m, const char *ns)
{
    return m->kind == KIND_IQ && msg_eq(m, 2, ns);
}

/* The resource the client asked for, resourceprepped, or a random one;
 * -1 if the asked one is malformed (RFC 6120 §7.7.2.1 bad-request). */
static int bind_resource(const struct msg *m, char *out, size_t size)
{
    int rc = -1;
    xml_node_t *iq = xml_parse(m->f[3].p, m->f[3].n, NS_CLIENT);
    if (!iq) return -1;
    xml_node_t *bind = xml_child(iq, "bind", NS_BIND);
    xml_node_t *res = bind ? xml_child(bind, "resource", NS_BIND) : NULL;
    const char *want = res ? xml_text(res) : NULL;
    if (!bind) goto out;
    if (want && *want) {
        rc = jid_resourceprep(want, out, size);
    } else {
        /* RFC 6120 §7.6: the server generates a random resource */
        snprintf(out, size, "%016llx", (unsigned long long)util_random_u64());
        rc = 0;
    }
out:
    xml_free(iq);
    return rc;
}

static void bind_request(struct c2s_conn *c, const struct msg *m)
{
    char resource[JID_PART_MAX + 1], full[JID_STR_MAX];
    if (m->stype != STYPE_SET || m->f[1].n == 0) {
        iq_error_to_client(c, m, SE_BAD_REQUEST, NULL);
        return;
    }
    if (c->flags & CF_BIND_WAIT) {
        iq_error_to_client(c, m, SE_UNEXPECTED_REQUEST, NULL);
        return;
    }
    if (c->state == C2S_ESTABLISHED) {
        /* one resource per stream (binding several is optional and
         * deprecated, RFC 6120 §7.1): not-allowed, §7.6.2.2 */
        iq_error_to_client(c, m, SE_NOT_ALLOWED, NULL);
        return;
    }
    if (bind_resource(m, resource, sizeof resource) < 0) {
        iq_error_to_client(c, m, SE_BAD_REQUEST, "malformed resource");
        return;
    }
    int n = snprintf(full, sizeof full, "%s/%s", c->jid, resource);
    if (n < 0 || (size_t)n >= sizeof full) {
        iq_error_to_client(c, m, SE_BAD_REQUEST, "JID too long");
        return;
    }
    if (set_str(&c->jid, full, (size_t)n) < 0 || set_str(&c->bind_id, m->f[1].p, m->f[1].n) < 0) {
        iq_error_to_client(c, m, SE_RESOURCE_CONSTRAINT, NULL);
        return;
    }
    c2s_session_bind(c);
}

void c2s_session_bind(struct c2s_conn *c)
{
    struct msg b;
    msg_init(&b, MSG_SESSION_BIND);
    b.id = c->cid;
    msg_set(&b, 0, c->jid);
    msg_set(&b, 3, S()->d->instance);
    msg_set(&b, 4, "");
    c2s_to_router(&b);
    c->flags |= CF_BIND_SENT | CF_BIND_WAIT;
}

/* RFC 3921 §3: older clients still establish a "session"; it is a no-op. */
static void session_request(struct c2s_conn *c, const struct msg *m)
{
    if (m->stype != STYPE_SET || m->f[1].n == 0) {
        iq_error_to_client(c, m, SE_BAD_REQUEST, NULL);
        return;
    }
    c2s_iq_result(c, m->f[1].p, m->f[1].n, NULL, NULL, 0); /* the session IQ */
}

static void bound(struct c2s_conn *c, const struct msg *m)
{
    char *id = c->bind_id;
    struct buf *out = &S()->scratch2;
    c->bind_id = NULL;
    c->flags &= (uint8_t)~CF_BIND_WAIT;
    buf_clear(out);
    buf_adds(out, "<iq type='");
    buf_adds(out, m->num == 0 ? "result" : "error");
    buf_adds(out, "' id='");
    buf_add_xml_escaped(out, id ? id : "", id ? strlen(id) : 0);
    buf_adds(out, "'>");
    if (m->num == 0) {
        buf_adds(out, "<bind xmlns='" NS_BIND "'><jid>");
        buf_add_xml_escaped(out, c->jid, strlen(c->jid));
        buf_adds(out, "</jid></bind></iq>");
        c->state = C2S_ESTABLISHED;
        S()->nsessions++;
        log_info("conn %016llx: session %s bound", (unsigned long long)c->cid, c->jid);
        /* listen matches the trace rules on it (step 1); protocol 2 */
        const struct peer_info *lp = peer_server_find(S()->lpeers, S()->listens[c->listen].name);
        if (lp && lp->proto_max >= 2) {
            struct msg b;
            msg_init(&b, MSG_CONN_BOUND);
            b.id = c->lid;
            msg_set(&b, 0, c->jid);
            c2s_to_listen(c, &b);
        }
    } else {
        char bare[JID_STR_MAX];
        buf_addf(out, "<error type='%s'><%s xmlns='" NS_STANZA_ERRORS "'/></error></iq>",
                 stanza_error_type(m->num), stanza_error_name(m->num));
        log_info("conn %016llx: bind of %s refused: %s", (unsigned long long)c->cid, c->jid,
                 stanza_error_name(m->num));
        /* no session on the sm side: nothing to end, back to the bare JID */
        c->flags &= (uint8_t)~CF_BIND_SENT;
        if (jid_bare_of(c->jid, strlen(c->jid), bare, sizeof bare) == 0) set_str(&c->jid, bare, strlen(bare));
    }
    free(id);
    c2s_send(c, out->data, out->len, 0);
}

/* ---- session_established: routing the client's stanzas ---- */

/* Broadcast presence (no 'to', available or unavailable) is remembered so
 * a restarted sm can be told again (DESIGN §3). */
static void remember_presence(struct c2s_conn *c, const struct msg *m, const struct buf *stamped)
{
    if (m->kind != KIND_PRESENCE || m->f[0].n != 0) return;
    if (m->stype == STYPE_NONE) {
        set_str(&c->presence, stamped->data, stamped->len);
    } else if (m->stype == STYPE_UNAVAILABLE) {
        /* unavailable and "never sent" mean the same to sm: keep no copy */
        free(c->presence);
        c->presence = NULL;
    }
}

static void route_stanza(struct c2s_conn *c, const struct msg *m)
{
    char to[JID_STR_MAX];
    struct c2s *s = S();
    struct buf *stamped = &s->scratch;
    buf_clear(stamped);
    to[0] = '\0';
    /* RFC 6120 §8.1.2.1: the server stamps the full JID as 'from'; a client
     * never chooses it. (Subscription presence goes out from the bare JID,
     * RFC 6121 §3.1.2: sm's roster code rewrites it.) */
    int traced = m->flags & MSG_F_TRACED;
    if (stanza_stamp_from(m->f[3].p, m->f[3].n, c->jid, stamped) < 0 || stamped->oom) {
        log_warn("conn %016llx: cannot stamp a %s; dropped", (unsigned long long)c->cid,
                 stanza_kind_name(m->kind));
        if (traced)
            trace_line(2, m->kind, m->stype, c->jid, NULL, m->trace, 0, NULL, "drop: cannot stamp 'from' (out of memory)");
        return;
    }
    struct msg_str body = { stamped->data, (uint32_t)stamped->len };
    if (m->kind == KIND_IQ && (m->stype == STYPE_NONE || m->stype == STYPE_INVALID || m->f[1].n == 0)) {
        /* RFC 6120 §8.2.3: an IQ needs an id and one of the four types */
        if (traced)
            trace_line(2, m->kind, m->stype, c->jid, NULL, m->trace, 0, &body,
                       "error: bad-request (an iq needs an id and a type)");
        stanza_error_to_client(c, stamped->data, stamped->len, SE_BAD_REQUEST, NULL, m, c->domain);
        return;
    }
    if (m->f[0].n && jid_normalize(m->f[0].p, m->f[0].n, to, sizeof to) < 0) {
        s->st.malformed_to++;
        if (traced) {
            char raw[JID_STR_MAX];
            if (!msg_str(m, 0, raw, sizeof raw)) raw[0] = '\0';
            trace_line(2, m->kind, m->stype, c->jid, raw, m->trace, 0, &body, "error: jid-malformed ('to' is not a JID)");
        }
        stanza_error_to_client(c, stamped->data, stamped->len, SE_JID_MALFORMED, NULL, m, c->domain);
        return;
    }
    remember_presence(c, m, stamped);
    struct msg out;
    msg_init(&out, MSG_STANZA);
    out.id = c->cid;
    out.kind = m->kind;
    out.stype = m->stype;
    out.trace = m->trace;
    out.flags = m->flags & MSG_F_TRACED; /* outbound phase: no MSG_F_INBOUND */
    msg_set(&out, 0, c->jid);
    msg_set(&out, 1, to);
    msg_set(&out, 3, s->d->instance);
    msg_setn(&out, 4, stamped->data, stamped->len);
    c2s_to_router(&out);
    s->st.routed[m->kind < KIND_END ? m->kind : 0]++;
    if (traced) trace_line(2, m->kind, m->stype, c->jid, to, m->trace, 0, &body, "->router");
}

static void session_element(struct c2s_conn *c, const struct msg *m)
{
    if (is_iq_ns(m, NS_BIND)) {
        bind_request(c, m);
        return;
    }
    if (is_iq_ns(m, NS_SESSION)) {
        session_request(c, m);
        return;
    }
    if (c->state == C2S_WAIT_BIND) {
        /* RFC 6120 §7.1: nothing but binding before a resource is bound */
        char addr[130];
        log_notice("conn %016llx addr=%s: %s before resource binding", (unsigned long long)c->cid,
                   c2s_logsafe(c->addr, addr, sizeof addr), stanza_kind_name(m->kind));
        c2s_close(c, "not-authorized", "bind a resource first", CLOSE_ERROR);
        return;
    }
    if (m->kind == KIND_OTHER) {
        c2s_close(c, "unsupported-stanza-type", NULL, CLOSE_ERROR); /* RFC 6120 §4.9.3.24 */
        return;
    }
    if (c2s_register_element(c, m)) return; /* XEP-0077 password change, removal */
    route_stanza(c, m);
}

void c2s_conn_element(struct c2s_conn *c, const struct msg *m)
{
    switch (c->state) {
    case C2S_WAIT_FEATURE:
    case C2S_WAIT_SASL:
        preauth_element(c, m);
        break;
    case C2S_WAIT_BIND:
    case C2S_ESTABLISHED:
        session_element(c, m);
        break;
    case C2S_WAIT_AUTH:
        c2s_legacy_element(c, m);
        break;
    default:
        c2s_close(c, "bad-format", "element before the stream header", CLOSE_ERROR);
        break;
    }
}

void c2s_conn_closed(struct c2s_conn *c, const struct msg *m)
{
    unsigned reason = m->num < CLOSE_END ? m->num : CLOSE_ERROR;
    log_debug("conn %016llx: closed by listen (%s%s%.*s)", (unsigned long long)c->cid, close_reason_name(reason),
              m->f[0].n ? ": " : "", (int)m->f[0].n, m->f[0].p);
    c2s_drop(c, reason);
}

/* ---- routed messages for our connections ---- */

/* A delivery whose connection is gone goes back to sm as inbound, so
 * RFC 6121 §8.5 picks another resource or offline storage: never dropped. */
static void redeliver(const struct msg *m)
{
    struct msg out;
    msg_init(&out, MSG_STANZA);
    out.id = m->id;
    out.kind = m->kind;
    out.stype = m->stype;
    out.trace = m->trace;
    out.flags = MSG_F_INBOUND | MSG_F_REDELIVERED | (m->flags & MSG_F_TRACED);
    out.f[0] = m->f[0];
    out.f[1] = m->f[1];
    msg_set(&out, 3, S()->d->instance);
    out.f[4] = m->f[4];
    c2s_to_router(&out);
    S()->st.redelivered++;
    if (m->flags & MSG_F_TRACED) trace_msg(7, m, 0, "reinject: connection gone, back to sm as inbound");
}

static void deliver(const struct msg *m)
{
    struct c2s_conn *c = c2s_find_cid(m->id);
    if (!c || c->state != C2S_ESTABLISHED || !c->jid || (m->f[1].n && !msg_eq(m, 1, c->jid))) {
        redeliver(m);
        return;
    }
    struct msg out;
    msg_init(&out, MSG_CONN_SEND);
    out.id = c->lid;
    out.kind = m->kind; /* for listen's trace line */
    out.stype = m->stype;
    out.trace = m->trace;
    out.flags = m->flags & MSG_F_TRACED;
    out.f[0] = m->f[4];
    c2s_to_listen(c, &out);
    S()->st.deliveries++;
    if (m->flags & MSG_F_TRACED)
        trace_msg(7, m, 0, "->%s conn %016llx", S()->listens[c->listen].name, (unsigned long long)c->lid);
}

static void bounce(const struct msg *m)
{
    struct c2s_conn *c = c2s_find_cid(m->id);
    S()->st.bounces++;
    if (!c || c->state != C2S_ESTABLISHED) {
        if (m->flags & MSG_F_TRACED) trace_msg(7, m, 0, "drop: bounced (%s), the sender is gone", stanza_error_name(m->num));
        return;
    }
    char from[JID_STR_MAX];
    if (!msg_str(m, 1, from, sizeof from)) from[0] = '\0';
    if (m->flags & MSG_F_TRACED) trace_msg(7, m, 0, "bounced: %s", stanza_error_name(m->num));
    stanza_error_to_client(c, m->f[4].p, m->f[4].n, m->num, NULL, m, from);
}

static void kick(const struct msg *m)
{
    struct c2s_conn *c = c2s_find_cid(m->id);
    if (!c || !c->jid || (m->f[1].n && !msg_eq(m, 1, c->jid))) {
        log_debug("kick for unknown connection %016llx ignored", (unsigned long long)m->id);
        return;
    }
    if (c2s_register_hold_kick(c)) return; /* closed once its removal is answered */
    unsigned cond = m->num ? m->num : STE_CONFLICT;
    S()->st.kicks++;
    log_info("conn %016llx: session %s kicked (%s)", (unsigned long long)c->cid, c->jid, stream_error_name(cond));
    c2s_close(c, stream_error_name(cond), cond == STE_CONFLICT ? "replaced by a new connection" : NULL,
              CLOSE_KICKED);
}

static void session_bound(const struct msg *m)
{
    struct c2s_conn *c = c2s_find_cid(m->id);
    /* answers to resync binds find no bind waiting: ignored */
    if (!c || !(c->flags & CF_BIND_WAIT) || (m->flags & MSG_F_RESYNC)) return;
    if (m->num == 0 && m->f[1].n && !msg_eq(m, 1, c->jid)) {
        /* sm may pick another resource on a conflict (RFC 6120 §7.7.2.2):
         * take it if it is the same account */
        char mine[JID_STR_MAX], theirs[JID_STR_MAX];
        if (jid_bare_of(c->jid, strlen(c->jid), mine, sizeof mine) < 0 ||
            jid_bare_of(m->f[1].p, m->f[1].n, theirs, sizeof theirs) < 0 || strcmp(mine, theirs) != 0 ||
            !memchr(m->f[1].p, '/', m->f[1].n) || set_str(&c->jid, m->f[1].p, m->f[1].n) < 0) {
            log_warn("conn %016llx: SESSION_BOUND names %.*s, not %s; ignored", (unsigned long long)c->cid,
                     (int)m->f[1].n, m->f[1].p, c->jid);
            return;
        }
    }
    if (c->state == C2S_WAIT_AUTH) c2s_legacy_bound(c, m); /* XEP-0078: answered there */
    else bound(c, m);
}

void c2s_routed(const struct msg *m)
{
    struct c2s_conn *c;
    switch (m->type) {
    case MSG_DELIVER: deliver(m); break;
    case MSG_BOUNCE: bounce(m); break;
    case MSG_SESSION_BOUND: session_bound(m); break;
    case MSG_SESSION_KICK: kick(m); break;
    case MSG_AUTH_RESULT:
        c = c2s_find_cid(m->id);
        if (c && c->legacy) c2s_legacy_lookup_result(c, m);
        else if (c) c2s_sasl_lookup_result(c, m);
        break;
    case MSG_ACCOUNT_RESULT:
        c = c2s_find_cid(m->id);
        if (c) c2s_register_result(c, m);
        break;
    default:
        log_debug("router sent %s; not for c2s", msg_type_name(m->type));
        break;
    }
}

/* ---- timers and resync ---- */

void c2s_conn_sweep(struct c2s_conn *c, uint64_t now)
{
    uint64_t deadline;
    uint64_t limit = (uint64_t)S()->d->conf.handshake_timeout_secs * 1000u;
    if (c->state != C2S_ESTABLISHED && limit && now - c->opened_ms > limit) {
        S()->st.timeouts++;
        c2s_close(c, "connection-timeout", "authentication and binding took too long", CLOSE_TIMEOUT);
        return;
    }
    if (c2s_sasl_waiting(c, &deadline) && now >= deadline) c2s_sasl_lookup_timeout(c);
    else if (c2s_legacy_waiting(c, &deadline) && now >= deadline) c2s_legacy_lookup_timeout(c);
}

void c2s_reannounce(struct c2s_conn *c)
{
    struct msg m;
    msg_init(&m, MSG_SESSION_BIND);
    m.id = c->cid;
    m.flags = MSG_F_RESYNC;
    msg_set(&m, 0, c->jid);
    msg_set(&m, 3, S()->d->instance);
    msg_set(&m, 4, c->presence ? c->presence : "");
    c2s_to_router(&m);
}
