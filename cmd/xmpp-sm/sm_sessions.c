/* sm_sessions.c - the sessions table of one shard and what happens to a
 * stanza in it (DESIGN §2 steps 4 and 5): the outbound phase for stanzas
 * our users send (presence bookkeeping, addressing), and the inbound phase
 * for stanzas to our users, delivered by RFC 6121 §8.5. */
#include "config.h"
#include "sm.h"
#include "sm_roster.h"
#include "jid.h"
#include "log.h"
#include "stanza.h"
#include "trace.h"
#include "xml.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------- the table ---------------- */

static struct session *session_find(struct sm *sm, const char *full, size_t len)
{
    return hmap_get(&sm->sessions, full, len);
}

static struct sm_user *user_find(struct sm *sm, const char *bare, size_t len)
{
    return hmap_get(&sm->users, bare, len);
}

static struct session *session_new(struct sm *sm, const char *full, size_t bare_len, const char *c2s, uint64_t conn)
{
    struct session *s = calloc(1, sizeof *s);
    if (!s || !(s->full = strdup(full))) goto fail;
    s->bare_len = bare_len;
    snprintf(s->c2s, sizeof s->c2s, "%s", c2s);
    s->conn = conn;
    s->since = (uint64_t)time(NULL);
    struct sm_user *u = user_find(sm, full, bare_len);
    if (!u) {
        u = calloc(1, sizeof *u);
        if (!u || !(u->bare = strndup(full, bare_len))) {
            free(u);
            goto fail;
        }
        int failed;
        hmap_put(&sm->users, u->bare, bare_len, u, &failed);
        if (failed) {
            free(u->bare);
            free(u);
            goto fail;
        }
    }
    int failed;
    hmap_put(&sm->sessions, s->full, strlen(s->full), s, &failed);
    if (failed) goto fail; /* u stays registered, empty users are harmless until the next end */
    s->user = u;
    s->next_of_user = u->sessions;
    u->sessions = s;
    u->count++;
    return s;
fail:
    if (s) free(s->full);
    free(s);
    return NULL;
}

static void session_free(struct sm *sm, struct session *s)
{
    struct sm_user *u = s->user;
    hmap_del(&sm->sessions, s->full, strlen(s->full));
    for (struct session **pp = &u->sessions; *pp; pp = &(*pp)->next_of_user) {
        if (*pp == s) {
            *pp = s->next_of_user;
            break;
        }
    }
    if (--u->count == 0) {
        hmap_del(&sm->users, u->bare, strlen(u->bare));
        free(u->bare);
        free(u);
    }
    while (s->directed) {
        struct directed *d = s->directed;
        s->directed = d->next;
        free(d);
    }
    free(s->presence);
    free(s->full);
    free(s);
}

/* ---------------- sending ---------------- */

static void deliver(struct sm *sm, struct session *s, const struct msg *m)
{
    struct sm_hook_hold hold = { 0 };
    m = sm_hook(sm, XM_HOOK_DELIVER_PACKET, m, s->full, strlen(s->full), &hold, 5);
    if (!m) return;
    struct msg d;
    msg_init(&d, MSG_DELIVER);
    d.id = s->conn;
    d.kind = m->kind;
    d.stype = m->stype;
    d.trace = m->trace;
    d.flags = m->flags & MSG_F_TRACED;
    d.f[0] = m->f[0];
    msg_set(&d, 1, s->full);
    msg_set(&d, 2, s->c2s);
    msg_set(&d, 3, sm->d->instance);
    d.f[4] = m->f[4];
    ipc_send(sm->router, NULL, &d);
    sm->n.delivered++;
    if (m->flags & MSG_F_TRACED) {
        char full[JID_STR_MAX];
        trace_msg(5, m, 0, "deliver->%s/conn %016llx (%s)", s->c2s, (unsigned long long)s->conn,
                  trace_escape(s->full, strlen(s->full), full, sizeof full));
    }
    sm_hook_done(&hold);
}

/* Trace step 5 (the inbound phase) for a traced record: one decision. */
#define TRACE_IN(m, ...) \
    do { if ((m)->flags & MSG_F_TRACED) trace_msg(5, (m), 0, __VA_ARGS__); } while (0)
/* Trace step 4 (the sender's phase). */
#define TRACE_OUT(m, ...) \
    do { if ((m)->flags & MSG_F_TRACED) trace_msg(4, (m), 0, __VA_ARGS__); } while (0)

/* A stanza the server makes (an error, a result, a presence copy) is
 * traced with a new id when what caused it was traced (cause != 0) or
 * when the rules match it here; the first line names the cause. */
static void trace_created(struct msg *m, const char *from, const char *to, uint64_t cause, const char *what)
{
    if (!cause && !(trace_active() && trace_match(from, to))) return;
    m->trace = trace_new_id();
    m->flags |= MSG_F_TRACED;
    trace_msg(4, m, cause, "created: %s", what);
}

static int is_local(struct sm *sm, const char *to, size_t len)
{
    char bare[JID_STR_MAX];
    if (len == 0 || jid_bare_of(to, len, bare, sizeof bare) < 0) return 0;
    const char *at = strchr(bare, '@');
    const char *domain = at ? at + 1 : bare;
    if (!conf_host(&sm->d->conf, domain, strlen(domain))) return 0;
    return jid_shard(bare, strlen(bare), sm->d->conf.sm_shards) == sm->shard;
}

static void inbound(struct sm *sm, const struct msg *m);

/* The sender's phase is over: recipient in this shard -> no extra hop. */
static void route_inbound(struct sm *sm, const struct msg *m)
{
    struct msg in = *m;
    in.flags |= MSG_F_INBOUND;
    msg_set(&in, 2, "");
    msg_set(&in, 3, sm->d->instance);
    if (is_local(sm, m->f[1].p, m->f[1].n)) {
        TRACE_OUT(m, "->inbound %s", sm->d->instance);
        inbound(sm, &in);
    } else {
        TRACE_OUT(m, "->router inbound (the recipient is not on %s)", sm->d->instance);
        ipc_send(sm->router, NULL, &in);
    }
}

void sm_send_created(struct sm *sm, unsigned kind, unsigned stype, const char *from, const char *to,
                     const char *body, size_t len, uint64_t cause, const char *what)
{
    struct msg m;
    msg_init(&m, MSG_STANZA);
    m.kind = (uint8_t)kind;
    m.stype = (uint8_t)stype;
    msg_set(&m, 0, from);
    msg_set(&m, 1, to);
    msg_setn(&m, 4, body, len);
    trace_created(&m, from, to, cause, what);
    route_inbound(sm, &m);
}

void sm_send_stanza(struct sm *sm, unsigned kind, unsigned stype, const char *from, const char *to,
                    const char *body, size_t len, uint64_t trace)
{
    sm_send_created(sm, kind, stype, from, to, body, len, trace, "server stanza");
}

void sm_reply_error(struct sm *sm, const struct msg *m, unsigned cond, const char *text)
{
    if (m->stype == STYPE_ERROR) return; /* RFC 6120 §8.3.1 */
    struct buf out = { 0 };
    char from[JID_STR_MAX], to[JID_STR_MAX];
    if (!msg_str(m, 0, to, sizeof to) || !msg_str(m, 1, from, sizeof from)) goto out;
    if (stanza_error_reply(m->f[4].p, m->f[4].n, cond, text, to, &out) < 0) goto out;
    sm->n.errors_sent++;
    log_debug("error %s to %s for a %s from it", stanza_error_name(cond), to, stanza_kind_name(m->kind));
    if (*to) {
        char what[96];
        snprintf(what, sizeof what, "error %s", stanza_error_name(cond));
        sm_send_created(sm, m->kind, STYPE_ERROR, from, to, out.data, out.len, trace_id_of(m), what);
    }
out:
    buf_free(&out);
}

/* Presence the server makes: <presence from= [to=] type='unavailable'/>. */
static void unavailable_body(struct buf *b, const char *from, const char *to)
{
    buf_adds(b, "<presence xmlns='jabber:client' from='");
    buf_add_xml_escaped(b, from, strlen(from));
    if (to) {
        buf_adds(b, "' to='");
        buf_add_xml_escaped(b, to, strlen(to));
    }
    buf_adds(b, "' type='unavailable'/>");
}

/* Deliver a presence body from s to the user's available resources. */
static void to_own_resources(struct sm *sm, struct session *from, const char *body, size_t len,
                             unsigned stype, int include_self, uint64_t trace)
{
    struct msg m;
    msg_init(&m, MSG_STANZA);
    m.kind = KIND_PRESENCE;
    m.stype = (uint8_t)stype;
    m.trace = trace;
    m.flags = trace ? MSG_F_TRACED : 0;
    msg_set(&m, 0, from->full);
    msg_setn(&m, 4, body, len);
    for (struct session *s = from->user->sessions; s; s = s->next_of_user)
        if (s->available && (include_self || s != from)) deliver(sm, s, &m);
}

/* RFC 6121 §4.6.3 and §4.5.2: a session going unavailable tells those it
 * sent directed presence to and the user's other resources. */
static void announce_unavailable(struct sm *sm, struct session *s, uint64_t cause, const char *why)
{
    struct buf b = { 0 };
    char what[160];
    for (struct directed *d = s->directed; d; d = d->next) {
        buf_clear(&b);
        unavailable_body(&b, s->full, d->jid);
        snprintf(what, sizeof what, "unavailable presence to a directed-presence recipient (%s)", why);
        struct sm_hook_hold hold = { 0 };
        const char *body = b.data;
        size_t len = b.len;
        if (sm_presence_out_allowed(sm, STYPE_UNAVAILABLE, s->full, d->jid, &body, &len, cause, &hold))
            sm_send_created(sm, KIND_PRESENCE, STYPE_UNAVAILABLE, s->full, d->jid, body, len, cause, what);
        sm_hook_done(&hold);
    }
    if (s->available) {
        struct msg t; /* only to carry a trace id for the copies */
        buf_clear(&b);
        unavailable_body(&b, s->full, NULL);
        msg_init(&t, MSG_STANZA);
        t.kind = KIND_PRESENCE;
        t.stype = STYPE_UNAVAILABLE;
        msg_set(&t, 0, s->full);
        snprintf(what, sizeof what, "unavailable presence to the other resources (%s)", why);
        trace_created(&t, s->full, NULL, cause, what);
        to_own_resources(sm, s, b.data, b.len, STYPE_UNAVAILABLE, 0, trace_id_of(&t));
        /* RFC 6121 §4.5.2: and the contacts, whatever ended the session */
        sm_presence_unavailable(sm, s, &t, b.data, b.len);
    }
    buf_free(&b);
    while (s->directed) {
        struct directed *d = s->directed;
        s->directed = d->next;
        free(d);
    }
    s->available = 0;
}

static void end_session(struct sm *sm, struct session *s, const char *why)
{
    log_info("session %s on %s/%llx ended: %s", s->full, s->c2s, (unsigned long long)s->conn, why);
    announce_unavailable(sm, s, 0, why);
    sm_roster_session_end(sm, s);
    sm_hook_event(sm, XM_HOOK_SESSION_CLOSED, s->full);
    session_free(sm, s);
    sm->n.ends++;
}

static void send_kick(struct sm *sm, struct session *s, unsigned cond, const char *text)
{
    struct msg k;
    msg_init(&k, MSG_SESSION_KICK);
    k.id = s->conn;
    k.num = cond;
    msg_set(&k, 1, s->full);
    msg_set(&k, 2, s->c2s);
    msg_set(&k, 3, sm->d->instance);
    msg_set(&k, 4, text);
    ipc_send(sm->router, NULL, &k);
    sm->n.kicks++;
}

/* ---------------- presence bookkeeping ---------------- */

/* RFC 6121 §4.7.2.3: an integer -128..127; absent or invalid means 0. */
static int presence_priority(const char *body, size_t len)
{
    int prio = 0;
    xml_node_t *p = xml_parse(body, len, NS_CLIENT);
    xml_node_t *c = p ? xml_child(p, "priority", NS_CLIENT) : NULL;
    if (c) {
        char *end;
        long v = strtol(xml_text(c), &end, 10);
        if (*xml_text(c) && !*end && v >= -128 && v <= 127) prio = (int)v;
    }
    xml_free(p);
    return prio;
}

static void set_presence(struct session *s, const char *body, size_t len)
{
    char *copy = strndup(body, len);
    if (!copy) return;
    free(s->presence);
    s->presence = copy;
    s->priority = presence_priority(body, len);
    s->available = 1;
}

/* Broadcast presence (no 'to'): RFC 6121 §4.2 (initial), §4.4 (update), §4.5 (unavailable). */
static void broadcast_presence(struct sm *sm, struct session *s, const struct msg *m)
{
    if (m->stype == STYPE_UNAVAILABLE) {
        if (!s->available && !s->directed) {
            TRACE_OUT(m, "drop: unavailable presence from a resource that was not available");
            return;
        }
        TRACE_OUT(m, "presence-broadcast unavailable to the other %u resource(s)", s->user->count - 1);
        /* deliver the client's own unavailable (it may carry a status) to
         * the other resources, then tell directed-presence recipients */
        to_own_resources(sm, s, m->f[4].p, m->f[4].n, STYPE_UNAVAILABLE, 0, trace_id_of(m));
        sm_presence_unavailable(sm, s, m, m->f[4].p, m->f[4].n); /* the contacts (§4.5.2) */
        s->available = 0;
        announce_unavailable(sm, s, trace_id_of(m), "the resource went unavailable");
        free(s->presence);
        s->presence = NULL;
        return;
    }
    if (m->stype != STYPE_NONE) {
        log_info("presence of type %s without a recipient from %s ignored", stanza_type_name(m->stype), s->full);
        TRACE_OUT(m, "drop: presence of type %s without a recipient", stanza_type_name(m->stype));
        return;
    }
    int initial = !s->available, old_priority = s->priority;
    set_presence(s, m->f[4].p, m->f[4].n);
    if (m->flags & MSG_F_TRACED) {
        unsigned n = 0;
        for (struct session *o = s->user->sessions; o; o = o->next_of_user) n += o->available ? 1 : 0;
        trace_msg(4, m, 0, "presence-broadcast to %u resource(s)%s", n, initial ? " (initial presence)" : "");
    }
    /* the user's available resources, this one included, get it (§4.2.2) */
    to_own_resources(sm, s, m->f[4].p, m->f[4].n, STYPE_NONE, 1, trace_id_of(m));
    /* the contacts, probes, pending requests, offline messages (sm_presence.c) */
    sm_presence_available(sm, s, m, initial, old_priority);
    if (!initial) return;
    /* and the newcomer learns the presence of the user's other resources */
    struct msg other;
    msg_init(&other, MSG_STANZA);
    other.kind = KIND_PRESENCE;
    for (struct session *o = s->user->sessions; o; o = o->next_of_user) {
        if (o == s || !o->available || !o->presence) continue;
        msg_set(&other, 0, o->full);
        msg_set(&other, 4, o->presence);
        other.flags = 0;
        other.trace = 0;
        trace_created(&other, o->full, s->full, trace_id_of(m), "presence of another resource for a new one");
        deliver(sm, s, &other);
    }
}

static void track_directed(struct session *s, const struct msg *m)
{
    struct directed **pp = &s->directed;
    for (; *pp; pp = &(*pp)->next)
        if (strlen((*pp)->jid) == m->f[1].n && memcmp((*pp)->jid, m->f[1].p, m->f[1].n) == 0) break;
    if (m->stype == STYPE_NONE && !*pp) {
        struct directed *d = malloc(sizeof *d + m->f[1].n + 1);
        if (!d) return;
        memcpy(d->jid, m->f[1].p, m->f[1].n);
        d->jid[m->f[1].n] = '\0';
        d->next = NULL;
        *pp = d;
    } else if (m->stype == STYPE_UNAVAILABLE && *pp) {
        struct directed *d = *pp;
        *pp = d->next;
        free(d);
    }
}

/* ---------------- the outbound phase ---------------- */

static void outbound_checked(struct sm *sm, struct session *s, const struct msg *m);

static void outbound(struct sm *sm, const struct msg *m)
{
    struct session *s = session_find(sm, m->f[0].p, m->f[0].n);
    if (!s) {
        sm->n.dropped++;
        log_notice("%s from %.*s dropped: no such session here", stanza_kind_name(m->kind), (int)m->f[0].n, m->f[0].p);
        TRACE_OUT(m, "drop: the sender has no session on %s", sm->d->instance);
        return;
    }
    struct sm_hook_hold hold = { 0 };
    m = sm_hook(sm, XM_HOOK_USER_SEND_PACKET, m, s->full, strlen(s->full), &hold, 4);
    if (m) outbound_checked(sm, s, m);
    sm_hook_done(&hold);
}

/* The sender's phase after the modules let the stanza pass. */
static void outbound_checked(struct sm *sm, struct session *s, const struct msg *m)
{
    if (m->kind == KIND_PRESENCE) {
        if (m->f[1].n == 0) {
            broadcast_presence(sm, s, m);
            return;
        }
        if (m->stype >= STYPE_SUBSCRIBE && m->stype <= STYPE_UNSUBSCRIBED) {
            /* RFC 6121 §3: the user's roster first, then routed (sm_presence.c) */
            sm_presence_outbound_sub(sm, s, m);
            return;
        }
        track_directed(s, m);
        if (m->stype == STYPE_NONE || m->stype == STYPE_UNAVAILABLE)
            TRACE_OUT(m, "directed-presence %s", m->stype == STYPE_NONE ? "tracked" : "untracked");
    } else if (m->f[1].n == 0) {
        if (m->kind == KIND_IQ) {
            /* RFC 6120 §10.3.3: handled by the server for the account */
            TRACE_OUT(m, "iq without 'to': answered by the server for the account");
            sm_iq_to_server(sm, m, 1);
            return;
        }
        /* RFC 6120 §10.3.1: a message without 'to' is for the sender's bare JID */
        struct msg self = *m;
        msg_setn(&self, 1, s->full, s->bare_len);
        TRACE_OUT(m, "message without 'to': to the sender's bare JID");
        route_inbound(sm, &self);
        return;
    }
    route_inbound(sm, m);
}

/* ---------------- the inbound phase: RFC 6121 §8.5 ---------------- */

/* §8.5.2: a message to the bare JID. */
static void message_to_bare(struct sm *sm, struct sm_user *u, const struct msg *m)
{
    if (m->stype == STYPE_ERROR) { /* §8.5.2.1.1: silently ignored */
        TRACE_IN(m, "drop: error message to a bare JID (RFC 6121 8.5.2.1.1)");
        return;
    }
    if (m->stype == STYPE_GROUPCHAT) {
        TRACE_IN(m, "error: service-unavailable (groupchat to a bare JID, RFC 6121 8.5.2.1.1)");
        sm_reply_error(sm, m, SE_SERVICE_UNAVAILABLE, NULL);
        return;
    }
    int best = -1;
    for (struct session *s = u ? u->sessions : NULL; s; s = s->next_of_user)
        if (s->available && s->priority >= 0 && s->priority > best) best = s->priority;
    if (best < 0) {
        /* §8.5.2.2.1: no available resource with non-negative priority:
         * normal and chat go to offline storage (XEP-0160, sm_offline.c),
         * headlines are dropped */
        if (m->stype == STYPE_HEADLINE) {
            TRACE_IN(m, "drop: headline, no available resource (RFC 6121 8.5.2.2.1)");
            return;
        }
        if (m->stype == STYPE_NORMAL || m->stype == STYPE_NONE || m->stype == STYPE_CHAT) {
            struct sm_hook_hold hold = { 0 };
            const struct msg *o = sm_hook(sm, XM_HOOK_OFFLINE_MESSAGE, m, m->f[1].p, m->f[1].n, &hold, 5);
            if (o) sm_offline_store(sm, o);
            sm_hook_done(&hold);
            return;
        }
        TRACE_IN(m, "error: service-unavailable (no available resource with non-negative priority)");
        sm_reply_error(sm, m, SE_SERVICE_UNAVAILABLE, NULL);
        return;
    }
    for (struct session *s = u->sessions; s; s = s->next_of_user) {
        if (!s->available || s->priority < 0) continue;
        /* headline: every non-negative resource; normal and chat: the
         * highest-priority one(s) (§8.5.2.1.1) */
        if (m->stype == STYPE_HEADLINE || s->priority == best) deliver(sm, s, m);
    }
}

/* §8.5.2.1.2: presence to the bare JID goes to every available resource. */
static void presence_to_bare(struct sm *sm, struct sm_user *u, const struct msg *m)
{
    if (m->stype == STYPE_PROBE) { /* answered by the roster work (RFC 6121 §4.3) */
        TRACE_IN(m, "drop: presence probe (not answered before rosters exist)");
        return;
    }
    unsigned n = 0;
    for (struct session *s = u ? u->sessions : NULL; s; s = s->next_of_user)
        if (s->available) {
            deliver(sm, s, m);
            n++;
        }
    if (!n) TRACE_IN(m, "drop: presence, no available resource (RFC 6121 8.5.2.1.2)");
}

/* §8.5.1: the account does not exist. */
static void no_such_user(struct sm *sm, const struct msg *m)
{
    if (m->kind == KIND_IQ) {
        if (m->stype == STYPE_GET || m->stype == STYPE_SET) {
            TRACE_IN(m, "error: service-unavailable (no such user, RFC 6121 8.5.1)");
            sm_reply_error(sm, m, SE_SERVICE_UNAVAILABLE, NULL);
        } else {
            TRACE_IN(m, "drop: iq %s to an unknown user", stanza_type_name(m->stype));
        }
    } else if (m->kind == KIND_MESSAGE) {
        if (m->stype == STYPE_ERROR) TRACE_IN(m, "drop: error message to an unknown user");
        else TRACE_IN(m, "error: service-unavailable (no such user, RFC 6121 8.5.1)");
        sm_reply_error(sm, m, SE_SERVICE_UNAVAILABLE, NULL); /* option (b); never for errors */
    } else {
        TRACE_IN(m, "drop: presence to an unknown user (RFC 6121 8.5.1)");
    }
    /* presence of every type is silently ignored (options chosen so) */
}

/* §8.5.3.2: a full JID whose resource is not connected. */
static void no_such_resource(struct sm *sm, struct sm_user *u, const struct msg *m)
{
    switch (m->kind) {
    case KIND_MESSAGE:
        /* chat: as if to the bare JID; normal (also no type) and groupchat:
         * option (b), an error; headline and error: silently ignored */
        if (m->stype == STYPE_CHAT) {
            TRACE_IN(m, "resource not connected: chat handled as if to the bare JID (RFC 6121 8.5.3.2.1)");
            message_to_bare(sm, u, m);
        } else if ((m->flags & MSG_F_REDELIVERED) && m->stype != STYPE_GROUPCHAT) {
            /* we had accepted it for this resource, which vanished while it
             * was on its way: another resource or offline storage, not a
             * bounce (the client may have been told nothing was lost) */
            TRACE_IN(m, "resource gone during delivery: handled as if to the bare JID");
            message_to_bare(sm, u, m);
        } else if (m->stype == STYPE_NORMAL || m->stype == STYPE_NONE || m->stype == STYPE_GROUPCHAT) {
            TRACE_IN(m, "error: service-unavailable (resource not connected, RFC 6121 8.5.3.2.1)");
            sm_reply_error(sm, m, SE_SERVICE_UNAVAILABLE, NULL);
        } else {
            TRACE_IN(m, "drop: %s message to a resource not connected", stanza_type_name(m->stype));
        }
        break;
    case KIND_PRESENCE:
        if (m->stype >= STYPE_SUBSCRIBE && m->stype <= STYPE_UNSUBSCRIBED) {
            TRACE_IN(m, "resource not connected: subscription presence to the bare JID (RFC 6121 8.5.3.2.2)");
            presence_to_bare(sm, u, m);
        } else {
            TRACE_IN(m, "drop: presence to a resource not connected (RFC 6121 8.5.3.2.2)");
        }
        break; /* available/unavailable/probe to a gone resource: ignored */
    case KIND_IQ:
        if (m->stype == STYPE_GET || m->stype == STYPE_SET) {
            TRACE_IN(m, "error: service-unavailable (resource not connected, RFC 6121 8.5.3.2.3)");
            sm_reply_error(sm, m, SE_SERVICE_UNAVAILABLE, NULL);
        } else {
            TRACE_IN(m, "drop: iq %s to a resource not connected", stanza_type_name(m->stype));
        }
        break;
    }
}

static void inbound_checked(struct sm *sm, const struct msg *m, const char *to, const char *bare);
static void to_account(struct sm *sm, struct sm_user *u, const struct msg *m, const char *to, const char *bare,
                       size_t bare_len);

static void inbound(struct sm *sm, const struct msg *m)
{
    char to[JID_STR_MAX], bare[JID_STR_MAX];
    if (!msg_str(m, 1, to, sizeof to) || jid_bare_of(to, strlen(to), bare, sizeof bare) < 0) {
        sm->n.dropped++;
        log_warn("inbound %s with unusable recipient dropped", stanza_kind_name(m->kind));
        TRACE_IN(m, "drop: unusable recipient");
        return;
    }
    struct sm_hook_hold hold = { 0 };
    m = sm_hook(sm, XM_HOOK_FILTER_LOCAL_PACKET, m, to, strlen(to), &hold, 5);
    if (m) inbound_checked(sm, m, to, bare);
    sm_hook_done(&hold);
}

/* The recipient's phase after filter_local_packet let the stanza pass. */
static void inbound_checked(struct sm *sm, const struct msg *m, const char *to, const char *bare)
{
    if (!strchr(bare, '@')) {
        /* the server itself */
        if (m->kind == KIND_IQ) {
            sm_iq_to_server(sm, m, 0);
        } else {
            log_debug("%s to the server from %.*s ignored", stanza_kind_name(m->kind), (int)m->f[0].n, m->f[0].p);
            TRACE_IN(m, "drop: %s to the server is ignored", stanza_kind_name(m->kind));
        }
        return;
    }
    size_t bare_len = strlen(bare);
    struct sm_user *u = user_find(sm, bare, bare_len);
    if (!u) {
        int exists = sm_account_exists(sm, bare, bare_len);
        if (exists < 0) {
            TRACE_IN(m, "error: internal-server-error (account lookup failed)");
            sm_reply_error(sm, m, SE_INTERNAL_SERVER_ERROR, NULL);
            return;
        }
        if (!exists) {
            no_such_user(sm, m);
            return;
        }
    }
    /* the account exists: its modules' say, online or not (privacy
     * lists filter what would be stored offline too) */
    struct sm_hook_hold hold = { 0 };
    m = sm_hook(sm, XM_HOOK_USER_RECEIVE_PACKET, m, bare, bare_len, &hold, 5);
    if (m) to_account(sm, u, m, to, bare, bare_len);
    sm_hook_done(&hold);
}

/* RFC 6121 §8.5.2 and §8.5.3 for an existing account. */
static void to_account(struct sm *sm, struct sm_user *u, const struct msg *m, const char *to, const char *bare,
                       size_t bare_len)
{
    if (m->kind == KIND_PRESENCE && m->stype >= STYPE_SUBSCRIBE && m->stype <= STYPE_PROBE) {
        /* RFC 6121 §3 and §4.3: subscription stanzas and probes are the
         * server's business, for the bare JID whatever the resource
         * (sm_presence.c) */
        sm_presence_inbound(sm, bare, m);
        return;
    }
    if (strlen(to) != bare_len) {
        struct session *s = session_find(sm, to, strlen(to));
        if (s) deliver(sm, s, m); /* §8.5.3.1 */
        else no_such_resource(sm, u, m);
        return;
    }
    switch (m->kind) {
    case KIND_MESSAGE: message_to_bare(sm, u, m); break;
    case KIND_PRESENCE: presence_to_bare(sm, u, m); break;
    case KIND_IQ:
        /* §8.5.2.1.3: the server answers for the user, never a resource */
        if (m->stype == STYPE_GET || m->stype == STYPE_SET) sm_iq_to_server(sm, m, 1);
        else TRACE_IN(m, "drop: iq %s to a bare JID (RFC 6121 8.5.2.1.3)", stanza_type_name(m->stype));
        break;
    }
}

void sm_stanza(struct sm *sm, const struct msg *m)
{
    /* behind roster outputs still waiting for their commit (sm_roster.c) */
    if (sm_im_defer(sm, m)) {
        TRACE_IN(m, "held: behind a roster change not yet committed");
        return;
    }
    if (m->kind == KIND_NONE || m->kind == KIND_OTHER) {
        sm->n.dropped++;
        log_warn("stanza record of kind %s dropped", stanza_kind_name(m->kind));
        return;
    }
    sm->n.in[m->kind]++;
    int in = (m->flags & MSG_F_INBOUND) != 0;
    struct sm_hook_hold hold = { 0 };
    m = sm_hook(sm, XM_HOOK_FILTER_PACKET, m, m->f[in ? 1 : 0].p, m->f[in ? 1 : 0].n, &hold, in ? 5 : 4);
    if (m && in) inbound(sm, m);
    else if (m) outbound(sm, m);
    sm_hook_done(&hold);
}

void sm_bounce(struct sm *sm, const struct msg *m)
{
    sm->n.bounced_in++;
    TRACE_IN(m, "bounced by the router (%s): %s", stanza_error_name(m->num),
             m->stype == STYPE_ERROR ? "dropped (an error is not answered)" : "error reply to the sender");
    sm_reply_error(sm, m, m->num < SE_END && m->num != SE_NONE ? m->num : SE_SERVICE_UNAVAILABLE, NULL);
}

/* ---------------- session records from c2s ---------------- */

void sm_session_bind(struct sm *sm, const struct msg *m)
{
    char full[JID_STR_MAX], bare[JID_STR_MAX], c2s[PEER_NAME_MAX];
    unsigned result = SE_NONE;
    sm->n.binds++;
    if (!msg_str(m, 0, full, sizeof full) || !msg_str(m, 3, c2s, sizeof c2s) ||
        jid_bare_of(full, strlen(full), bare, sizeof bare) < 0 || strlen(bare) == strlen(full) || !strchr(bare, '@')) {
        log_warn("session bind with unusable JID '%.*s' refused", (int)m->f[0].n, m->f[0].p);
        result = SE_JID_MALFORMED;
        goto reply;
    }
    struct session *old = session_find(sm, full, strlen(full));
    if (old && old->conn == m->id && strcmp(old->c2s, c2s) == 0) {
        if (m->f[4].n) set_presence(old, m->f[4].p, m->f[4].n);
        goto reply;
    }
    if (old) {
        /* RFC 6120 §7.7.2.2: the new session replaces the old one */
        log_notice("session %s replaced by a new login; the old stream gets <conflict/>", full);
        send_kick(sm, old, STE_CONFLICT, "replaced by a new connection");
        end_session(sm, old, "replaced");
    }
    struct session *s = session_new(sm, full, strlen(bare), c2s, m->id);
    if (!s) {
        result = SE_INTERNAL_SERVER_ERROR;
        goto reply;
    }
    if ((m->flags & MSG_F_RESYNC) && m->f[4].n) set_presence(s, m->f[4].p, m->f[4].n);
    log_info("session %s bound on %s/%llx%s", full, c2s, (unsigned long long)m->id,
             (m->flags & MSG_F_RESYNC) ? " (re-announced)" : "");
    sm_hook_event(sm, XM_HOOK_SESSION_OPENED, full);
reply:
    if (m->flags & MSG_F_RESYNC) return; /* re-announcements are not answered */
    struct msg r;
    msg_init(&r, MSG_SESSION_BOUND);
    r.id = m->id;
    r.num = result;
    r.trace = m->trace;
    r.f[1] = m->f[0];
    r.f[2] = m->f[3];
    msg_set(&r, 3, sm->d->instance);
    ipc_send(sm->router, NULL, &r);
}

void sm_session_end(struct sm *sm, const struct msg *m)
{
    /* not before the session's own stanzas still held (sm_roster.c) */
    if (sm_im_defer(sm, m)) return;
    struct session *s = session_find(sm, m->f[0].p, m->f[0].n);
    if (!s || s->conn != m->id || !msg_eq(m, 3, s->c2s)) {
        log_debug("session end for %.*s ignored: not the current session", (int)m->f[0].n, m->f[0].p);
        return;
    }
    end_session(sm, s, close_reason_name(m->num));
}

void sm_sessions_of_c2s_gone(struct sm *sm, const char *c2s)
{
    size_t n = sm->sessions.count, ended = 0;
    void **all = malloc((n ? n : 1) * sizeof *all);
    if (!all) return;
    n = hmap_values(&sm->sessions, all, n);
    for (size_t i = 0; i < n; i++) {
        struct session *s = all[i];
        if (strcmp(s->c2s, c2s) != 0) continue;
        end_session(sm, s, "its c2s is gone");
        ended++;
    }
    free(all);
    if (ended) log_notice("%zu sessions on %s ended: the instance is gone", ended, c2s);
}

void sm_kick_user(struct sm *sm, const char *bare, unsigned cond, const char *text)
{
    struct sm_user *u;
    while ((u = user_find(sm, bare, strlen(bare))) != NULL) {
        struct session *s = u->sessions;
        send_kick(sm, s, cond, text);
        end_session(sm, s, text);
    }
}

/* ---------------- control commands ---------------- */

static void list_session(void *value, void *arg)
{
    struct session *s = value;
    ctl_row(arg, "%s\t%s\t%llx\t%d\t%s\t%llu", s->full, s->c2s, (unsigned long long)s->conn, s->priority,
            s->available ? "available" : "connected", (unsigned long long)s->since);
}

int sm_sessions_ctl(struct sm *sm, int argc, char **argv, struct ctl_req *r)
{
    if (strcmp(argv[0], "sessions") == 0) {
        ctl_cols(r, "jid\tc2s\tconn\tpriority\tstate\tsince");
        hmap_each(&sm->sessions, list_session, r);
        return 0;
    }
    if (strcmp(argv[0], "kick") == 0) {
        char norm[JID_STR_MAX];
        if (argc != 2 || jid_normalize(argv[1], strlen(argv[1]), norm, sizeof norm) < 0) {
            ctl_fail(r, 2, "usage: kick JID (bare: every session of the user)");
            return 0;
        }
        unsigned kicked = 0;
        struct session *s = session_find(sm, norm, strlen(norm));
        if (s) {
            send_kick(sm, s, STE_POLICY_VIOLATION, "kicked by the administrator");
            end_session(sm, s, "kicked by the administrator");
            kicked = 1;
        } else {
            struct sm_user *u = user_find(sm, norm, strlen(norm));
            kicked = u ? u->count : 0;
            if (u) sm_kick_user(sm, norm, STE_POLICY_VIOLATION, "kicked by the administrator");
        }
        ctl_cols(r, "jid\tsessions_kicked");
        ctl_row(r, "%s\t%u", norm, kicked);
        if (!kicked) ctl_fail(r, 1, "%s has no session", norm);
        return 0;
    }
    return -1;
}
