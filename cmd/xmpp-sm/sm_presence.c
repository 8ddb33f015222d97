/* sm_presence.c - subscriptions and presence of RFC 6121 §3 and §4 for
 * the users of this shard, on top of the roster (sm_roster.c) and the
 * state machine (sm_subscription.c).
 *
 * DESIGN §2: a subscription stanza is handled twice. In the sender's
 * shard (outbound phase) the user's roster changes first (ask='subscribe'
 * and the push are committed before the request leaves, RFC 6121 §3.1.2),
 * the 'from' becomes the bare JID; then it is routed, and in the
 * recipient's shard (inbound phase) the contact's roster changes and the
 * stanza is delivered, kept for the next login, answered or ignored as
 * Appendix A says.
 *
 * Presence: broadcast presence goes to the contacts with a subscription
 * from the user (§4.2.2, §4.4.2, §4.5.2), the initial one also probes
 * the contacts the user is subscribed to (§4.2.2, §4.3.1); probes are
 * answered with the last presence of each available resource, or with
 * the last unavailable presence (§4.3.2). The last unavailable presence
 * of a user is kept in roster.tdb under "<bare>\nlast":
 *   xmppd-last 1\n gen G\n time T\n \n <presence/>
 * (for XEP-0012 later). */
#include "config.h"
#include "sm_roster.h"
#include "jid.h"
#include "log.h"
#include "stanza.h"
#include "trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LAST_MAGIC "xmppd-last 1\n"

static struct {
    unsigned long long sub_out, sub_in, sub_changes, probes_sent, probes_answered, broadcasts, unavailable;
} P;

static int sub_type_of(unsigned stype)
{
    switch (stype) {
    case STYPE_SUBSCRIBE: return SUB_SUBSCRIBE;
    case STYPE_SUBSCRIBED: return SUB_SUBSCRIBED;
    case STYPE_UNSUBSCRIBE: return SUB_UNSUBSCRIBE;
    case STYPE_UNSUBSCRIBED: return SUB_UNSUBSCRIBED;
    default: return -1;
    }
}

/* A copy of a presence with 'from' and 'to' set (to NULL: removed); with
 * a XEP-0203 delay stamp when stamp is not 0. -1 if it does not parse. */
static int presence_copy(const char *body, size_t len, const char *from, const char *to, const char *domain,
                         time_t stamp, struct buf *out)
{
    xml_node_t *p = xml_parse(body, len, NS_CLIENT);
    if (!p) return -1;
    int rc = 0;
    if (xml_set_attr(p, "from", from) < 0 || xml_set_attr(p, "to", to) < 0) rc = -1;
    if (rc == 0 && stamp) {
        char ts[32];
        struct tm tm;
        gmtime_r(&stamp, &tm);
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
        xml_node_t *d = xml_add_elem(p, "delay", NS_DELAY);
        if (!d || xml_set_attr(d, "from", domain) < 0 || xml_set_attr(d, "stamp", ts) < 0) rc = -1;
    }
    if (rc == 0) rc = xml_serialize(p, out, NULL);
    xml_free(p);
    return rc;
}

/* Presence the server makes for the user: <presence type= from= to=/>. */
static void simple_presence(struct buf *b, const char *type, const char *from, const char *to)
{
    buf_clear(b);
    buf_adds(b, "<presence xmlns='jabber:client'");
    if (type) {
        buf_adds(b, " type='");
        buf_adds(b, type);
        buf_adds(b, "'");
    }
    buf_adds(b, " from='");
    buf_add_xml_escaped(b, from, strlen(from));
    buf_adds(b, "' to='");
    buf_add_xml_escaped(b, to, strlen(to));
    buf_adds(b, "'/>");
}

static const char *domain_of(const char *bare)
{
    const char *at = strchr(bare, '@');
    return at ? at + 1 : bare;
}

/* Send now when nothing waits for a commit, else after it (order kept). */
static void send_ordered(struct sm *sm, unsigned kind, unsigned stype, const char *from, const char *to,
                         const char *body, size_t len, uint64_t cause, const char *what)
{
    struct sm_hook_hold hold = { 0 };
    /* presence on the user's behalf: modules may stop it (privacy lists) */
    if (kind == KIND_PRESENCE && !sm_presence_out_allowed(sm, stype, from, to, &body, &len, cause, &hold))
        return; /* the hook traced it */
    if (later_idle()) {
        sm_send_created(sm, kind, stype, from, to, body, len, cause, what);
    } else {
        struct sm_later *l = later_new();
        later_send(l, kind, stype, from, to, body, len, cause);
        later_submit(sm, l);
    }
    sm_hook_done(&hold);
}

/* Apply a transition to the roster: create, update or drop the item,
 * keep or forget the pending request. Returns the item (NULL when it was
 * dropped), *push = 1 when what the user sees of it changed. */
static struct ritem *apply(struct roster *r, struct ritem *it, const char *contact, const struct sub_outcome *o,
                           int visible, int *push, int *full)
{
    struct buf before = { 0 }, after = { 0 };
    *push = 0;
    *full = 0;
    if (it) roster_item_xml(it, &before);
    if (!it) {
        it = roster_item_add(r, contact);
        if (!it) {
            *full = 1;
            return NULL;
        }
        it->hidden = !visible;
    }
    if (visible) it->hidden = 0;
    it->state = o->state;
    it->approved = o->approved;
    if (!sub_pending_in(it->state)) {
        free(it->pending);
        it->pending = NULL;
    }
    if (it->hidden && it->state == SUB_NONE && !it->approved) {
        /* a request no one answered any more: nothing left to keep */
        roster_item_del(r, contact);
        it = NULL;
    } else {
        roster_item_xml(it, &after);
    }
    *push = before.len != after.len || (before.len && memcmp(before.data, after.data, before.len) != 0);
    buf_free(&before);
    buf_free(&after);
    return it;
}

/* ---------------- outbound: the user sends (RFC 6121 §3, §A.2) ---------------- */

void sm_presence_outbound_sub(struct sm *sm, struct session *s, const struct msg *m)
{
    char user[JID_STR_MAX], to[JID_STR_MAX], contact[JID_STR_MAX];
    int type = sub_type_of(m->stype);
    snprintf(user, sizeof user, "%.*s", (int)s->bare_len, s->full);
    if (type < 0 || !msg_str(m, 1, to, sizeof to) || jid_bare_of(to, strlen(to), contact, sizeof contact) < 0) {
        sm_im_trace(m, "drop: unusable subscription stanza");
        return;
    }
    if (strcmp(contact, user) == 0) {
        /* a user is always subscribed to itself: nothing to change */
        sm_im_trace(m, "drop: subscription stanza to the user's own JID");
        return;
    }
    P.sub_out++;
    /* §3.1.2: the server stamps the bare JID as 'from' (and the 'to' is
     * the contact's bare JID) */
    struct buf body = { 0 };
    if (presence_copy(m->f[4].p, m->f[4].n, user, contact, NULL, 0, &body) < 0 || body.oom) {
        sm_im_trace(m, "drop: the stanza does not parse");
        buf_free(&body);
        return;
    }
    int err;
    struct roster *r = roster_get(sm, user, &err);
    if (!r) {
        sm_im_trace(m, "error: internal-server-error (roster of %s unreadable)", user);
        sm_reply_error(sm, m, SE_INTERNAL_SERVER_ERROR, NULL);
        buf_free(&body);
        return;
    }
    struct ritem *it = roster_item(r, contact);
    enum sub_state st = it ? it->state : SUB_NONE;
    int approved = it ? it->approved : 0;
    struct sub_outcome o;
    sub_transition(st, approved, SUB_OUTBOUND, (enum sub_type)type, &o);
    /* §3.1.2: a subscription request adds the contact to the roster */
    int touch = (o.actions & (SUBA_CHANGED | SUBA_APPROVAL_CHANGED)) ||
                (type == SUB_SUBSCRIBE && (!it || it->hidden));
    struct sm_later *l = later_new();
    if (!l) {
        roster_release(sm, r);
        buf_free(&body);
        return;
    }
    uint64_t cause = trace_id_of(m);
    if (touch) {
        int push, full;
        /* a request or an approval (or pre-approval) puts the contact in
         * the roster (§3.1.2, §3.1.5, §3.4); declining or cancelling a
         * request that was never a roster item does not */
        it = apply(r, it, contact, &o, type == SUB_SUBSCRIBE || type == SUB_SUBSCRIBED, &push, &full);
        if (full) {
            sm_im_trace(m, "error: not-allowed (the roster of %s is full)", user);
            sm_reply_error(sm, m, SE_NOT_ALLOWED, "the roster is full");
            later_abandon(sm, l);
            roster_release(sm, r);
            buf_free(&body);
            return;
        }
        if (roster_save(sm, r, l) < 0) {
            sm_im_trace(m, "error: internal-server-error (roster write failed)");
            sm_reply_error(sm, m, SE_INTERNAL_SERVER_ERROR, NULL);
            later_abandon(sm, l);
            roster_release(sm, r);
            buf_free(&body);
            return;
        }
        if (push) {
            struct buf q = { 0 };
            roster_push_query(r, it, contact, &q);
            later_push(l, user, q.data, q.len);
            buf_free(&q);
        }
    }
    if (o.state != st) P.sub_changes++;
    sm_im_trace(m, "sub: %s -> %s%s (outbound %s to %s: %s)", sub_state_name(st), sub_state_name(o.state),
                o.approved != approved ? (o.approved ? ", pre-approved" : ", pre-approval cancelled") : "",
                sub_type_name((enum sub_type)type), contact, (o.actions & SUBA_FORWARD) ? "routed" : "not routed");
    if (o.actions & SUBA_FORWARD) later_send(l, KIND_PRESENCE, m->stype, user, contact, body.data, body.len, cause);
    if (o.actions & SUBA_SEND_PRESENCE) later_presence_of(l, user, contact, 0);
    if (o.actions & SUBA_SEND_UNAVAILABLE) later_presence_of(l, user, contact, 1);
    later_submit(sm, l);
    roster_release(sm, r);
    buf_free(&body);
}

/* ---------------- inbound: for the user (RFC 6121 §3, §4.3, §A.3) ---------------- */

static void last_key(const char *bare, struct buf *k)
{
    buf_clear(k);
    buf_adds(k, bare);
    buf_adds(k, "\nlast");
}

int sm_presence_last(struct sm *sm, const char *bare, long *when, struct buf *status)
{
    struct buf k = { 0 }, rec = { 0 };
    unsigned long long gen = 0, g2 = 0;
    long t = 0;
    int rc = 0;
    last_key(bare, &k);
    int got = store_get(sm_roster_store(), k.data, k.len, &rec);
    int acc = got == 1 ? sm_account_gen(sm, bare, &gen) : 0;
    if (got < 0 || acc < 0) {
        rc = -1;
        goto out;
    }
    if (got == 1 && acc == 1) {
        const char *p = buf_cstr(&rec), *xml = p ? strstr(p, "\n\n") : NULL;
        /* a record of an earlier account of the same name does not count */
        if (xml && strncmp(p, LAST_MAGIC, sizeof LAST_MAGIC - 1) == 0 &&
            sscanf(p + sizeof LAST_MAGIC - 1, "gen %llu\ntime %ld", &g2, &t) == 2 && g2 == gen) {
            *when = t;
            rc = 1;
            if (status) {
                xml_node_t *x = xml_parse(xml + 2, strlen(xml + 2), NS_CLIENT);
                xml_node_t *st = x ? xml_child(x, "status", NULL) : NULL;
                const char *text = st ? xml_text(st) : NULL;
                if (text) buf_adds(status, text);
                xml_free(x);
            }
        }
    }
out:
    buf_free(&k);
    buf_free(&rec);
    return rc;
}

/* §4.3.2: a probe from a contact. */
static void answer_probe(struct sm *sm, const char *bare, const struct msg *m)
{
    char prober[JID_STR_MAX], prober_bare[JID_STR_MAX];
    if (!msg_str(m, 0, prober, sizeof prober) || !prober[0] ||
        jid_bare_of(prober, strlen(prober), prober_bare, sizeof prober_bare) < 0) {
        sm_im_trace(m, "drop: probe without a usable 'from'");
        return;
    }
    int err;
    struct roster *r = roster_get(sm, bare, &err);
    if (!r) {
        sm_im_trace(m, "drop: probe, roster of %s unreadable", bare);
        return;
    }
    struct ritem *it = roster_item(r, prober_bare);
    int allowed = strcmp(prober_bare, bare) == 0 || (it && sub_has_from(it->state));
    roster_release(sm, r);
    uint64_t cause = trace_id_of(m);
    struct buf b = { 0 };
    P.probes_answered++;
    if (!allowed) {
        /* §4.3.2: not subscribed: say so (lets the prober's server fix its
         * roster), never reveal presence */
        simple_presence(&b, "unsubscribed", bare, prober_bare);
        sm_im_trace(m, "probe: %s has no subscription: answered unsubscribed", prober_bare);
        send_ordered(sm, KIND_PRESENCE, STYPE_UNSUBSCRIBED, bare, prober_bare, b.data, b.len, cause,
                     "unsubscribed (answer to a probe)");
        buf_free(&b);
        return;
    }
    struct sm_user *u = hmap_get(&sm->users, bare, strlen(bare));
    unsigned n = 0;
    for (struct session *s = u ? u->sessions : NULL; s; s = s->next_of_user) {
        if (!s->available || !s->presence) continue;
        buf_clear(&b);
        if (presence_copy(s->presence, strlen(s->presence), s->full, prober, NULL, 0, &b) < 0) continue;
        send_ordered(sm, KIND_PRESENCE, STYPE_NONE, s->full, prober, b.data, b.len, cause,
                     "presence (answer to a probe)");
        n++;
    }
    if (!n) {
        /* no available resource: the last unavailable presence, stamped
         * with when it was received (XEP-0203), or a plain one */
        struct buf k = { 0 }, rec = { 0 };
        unsigned long long gen = 0, g2 = 0;
        long t = 0;
        last_key(bare, &k);
        int have = 0;
        if (store_get(sm_roster_store(), k.data, k.len, &rec) == 1 && sm_account_gen(sm, bare, &gen) == 1) {
            const char *p = buf_cstr(&rec), *xml = strstr(p, "\n\n");
            if (strncmp(p, LAST_MAGIC, sizeof LAST_MAGIC - 1) == 0 &&
                sscanf(p + sizeof LAST_MAGIC - 1, "gen %llu\ntime %ld", &g2, &t) == 2 && g2 == gen && xml) {
                buf_clear(&b);
                have = presence_copy(xml + 2, strlen(xml + 2), bare, prober, domain_of(bare), (time_t)t, &b) == 0;
            }
        }
        if (!have) simple_presence(&b, "unavailable", bare, prober);
        sm_im_trace(m, "probe: no available resource: %s unavailable presence", have ? "last" : "plain");
        send_ordered(sm, KIND_PRESENCE, STYPE_UNAVAILABLE, bare, prober, b.data, b.len, cause,
                     "unavailable presence (answer to a probe)");
        buf_free(&k);
        buf_free(&rec);
    } else {
        sm_im_trace(m, "probe: answered with the presence of %u resource(s)", n);
    }
    buf_free(&b);
}

void sm_presence_inbound(struct sm *sm, const char *bare, const struct msg *m)
{
    if (m->stype == STYPE_PROBE) {
        answer_probe(sm, bare, m);
        return;
    }
    char from[JID_STR_MAX], contact[JID_STR_MAX];
    int type = sub_type_of(m->stype);
    if (type < 0 || !msg_str(m, 0, from, sizeof from) || !from[0] ||
        jid_bare_of(from, strlen(from), contact, sizeof contact) < 0) {
        sm_im_trace(m, "drop: subscription stanza without a usable 'from'");
        return;
    }
    if (strcmp(contact, bare) == 0) {
        sm_im_trace(m, "drop: subscription stanza from the user's own JID");
        return;
    }
    P.sub_in++;
    int err;
    struct roster *r = roster_get(sm, bare, &err);
    if (!r) {
        sm_im_trace(m, "error: internal-server-error (roster of %s unreadable)", bare);
        sm_reply_error(sm, m, SE_INTERNAL_SERVER_ERROR, NULL);
        return;
    }
    struct ritem *it = roster_item(r, contact);
    enum sub_state st = it ? it->state : SUB_NONE;
    int approved = it ? it->approved : 0;
    struct sub_outcome o;
    sub_transition(st, approved, SUB_INBOUND, (enum sub_type)type, &o);
    struct sm_later *l = later_new();
    if (!l) {
        roster_release(sm, r);
        return;
    }
    uint64_t cause = trace_id_of(m);
    if (o.actions & (SUBA_CHANGED | SUBA_APPROVAL_CHANGED)) {
        int push, full;
        /* an inbound request alone does not put the contact in the roster
         * (§A.1 "None + Pending In"); a used pre-approval already did */
        it = apply(r, it, contact, &o, 0, &push, &full);
        if (full) {
            sm_im_trace(m, "error: not-allowed (the roster of %s is full)", bare);
            sm_reply_error(sm, m, SE_NOT_ALLOWED, "the roster is full");
            later_abandon(sm, l);
            roster_release(sm, r);
            return;
        }
        if (it && type == SUB_SUBSCRIBE && sub_pending_in(it->state) && !it->pending) {
            /* §3.1.3: kept to be delivered at each login until answered */
            struct buf keep = { 0 };
            if (m->f[4].n <= ROSTER_MAX_PENDING) buf_add(&keep, m->f[4].p, m->f[4].n);
            else simple_presence(&keep, "subscribe", contact, bare);
            it->pending = keep.oom ? NULL : strdup(buf_cstr(&keep));
            buf_free(&keep);
        }
        if (roster_save(sm, r, l) < 0) {
            sm_im_trace(m, "error: internal-server-error (roster write failed)");
            later_abandon(sm, l);
            roster_release(sm, r);
            return;
        }
        if (push) {
            struct buf q = { 0 };
            roster_push_query(r, it, contact, &q);
            later_push(l, bare, q.data, q.len);
            buf_free(&q);
        }
    }
    if (o.state != st) P.sub_changes++;
    const char *what = (o.actions & SUBA_FORWARD) ? "delivered"
                       : (o.actions & SUBA_REPLY_SUBSCRIBED) ? "answered subscribed"
                                                             : "ignored";
    sm_im_trace(m, "sub: %s -> %s%s (inbound %s from %s: %s%s)", sub_state_name(st), sub_state_name(o.state),
                o.approved != approved ? ", pre-approval used" : "", sub_type_name((enum sub_type)type), contact,
                what, (o.actions & SUBA_REPLY_UNSUBSCRIBED) ? ", answered unsubscribed" : "");
    if (o.actions & SUBA_FORWARD)
        later_deliver(l, bare, NULL, KIND_PRESENCE, m->stype, contact, m->f[4].p, m->f[4].n, cause);
    struct buf b = { 0 };
    if (o.actions & SUBA_REPLY_SUBSCRIBED) {
        simple_presence(&b, "subscribed", bare, contact);
        later_send(l, KIND_PRESENCE, STYPE_SUBSCRIBED, bare, contact, b.data, b.len, cause);
    }
    if (o.actions & SUBA_REPLY_UNSUBSCRIBED) {
        simple_presence(&b, "unsubscribed", bare, contact);
        later_send(l, KIND_PRESENCE, STYPE_UNSUBSCRIBED, bare, contact, b.data, b.len, cause);
    }
    buf_free(&b);
    if (o.actions & SUBA_SEND_PRESENCE) later_presence_of(l, bare, contact, 0);
    if (o.actions & SUBA_SEND_UNAVAILABLE) later_presence_of(l, bare, contact, 1);
    later_submit(sm, l);
    roster_release(sm, r);
}

/* ---------------- broadcast presence ---------------- */

struct fanout {
    struct sm *sm;
    struct session *s;
    const struct msg *m;
    xml_node_t *tree; /* the presence, parsed once; 'to' set per contact */
    unsigned stype;
    int probe;        /* initial presence: probe "to" contacts too */
    unsigned sent, probes, pending;
};

static int directed_to(const struct session *s, const char *bare)
{
    size_t bl = strlen(bare);
    for (const struct directed *d = s->directed; d; d = d->next)
        if (strncmp(d->jid, bare, bl) == 0 && (d->jid[bl] == '\0' || d->jid[bl] == '/')) return 1;
    return 0;
}

static void fan_one(void *value, void *arg)
{
    const struct ritem *it = value;
    struct fanout *f = arg;
    if (it->hidden) {
        if (f->probe && it->pending) {
            sm_deliver_to(f->sm, f->s, KIND_PRESENCE, STYPE_SUBSCRIBE, it->jid, it->pending, strlen(it->pending), 0);
            f->pending++;
        }
        return;
    }
    uint64_t cause = f->m ? trace_id_of(f->m) : 0;
    struct buf b = { 0 };
    if (f->tree && sub_has_from(it->state) && !(f->stype == STYPE_UNAVAILABLE && directed_to(f->s, it->jid))) {
        if (xml_set_attr(f->tree, "to", it->jid) == 0 && xml_serialize(f->tree, &b, NULL) == 0) {
            send_ordered(f->sm, KIND_PRESENCE, f->stype, f->s->full, it->jid, b.data, b.len, cause,
                         f->stype == STYPE_UNAVAILABLE ? "unavailable presence to a contact"
                                                       : "presence to a contact");
            f->sent++;
        }
    }
    if (f->probe && sub_has_to(it->state)) {
        /* §4.3.1: from the full JID, so the answers reach this resource */
        struct buf p = { 0 };
        buf_adds(&p, "<presence xmlns='jabber:client' type='probe' from='");
        buf_add_xml_escaped(&p, f->s->full, strlen(f->s->full));
        buf_adds(&p, "' to='");
        buf_add_xml_escaped(&p, it->jid, strlen(it->jid));
        buf_adds(&p, "'/>");
        send_ordered(f->sm, KIND_PRESENCE, STYPE_PROBE, f->s->full, it->jid, p.data, p.len, cause, "presence probe");
        buf_free(&p);
        f->probes++;
    }
    if (f->probe && it->pending) {
        /* §3.1.3: a request that waited for the user's login */
        sm_deliver_to(f->sm, f->s, KIND_PRESENCE, STYPE_SUBSCRIBE, it->jid, it->pending, strlen(it->pending), 0);
        f->pending++;
    }
    buf_free(&b);
}

void sm_presence_available(struct sm *sm, struct session *s, const struct msg *m, int initial, int old_priority)
{
    char user[JID_STR_MAX];
    snprintf(user, sizeof user, "%.*s", (int)s->bare_len, s->full);
    int err;
    struct roster *r = s->presence ? roster_get(sm, user, &err) : NULL;
    if (r) {
        struct fanout f = { sm, s, m, NULL, STYPE_NONE, initial, 0, 0, 0 };
        f.tree = xml_parse(s->presence, strlen(s->presence), NS_CLIENT);
        if (f.tree) xml_set_attr(f.tree, "from", s->full);
        hmap_each(&r->items, fan_one, &f);
        xml_free(f.tree);
        P.broadcasts += f.sent;
        P.probes_sent += f.probes;
        if (m)
            sm_im_trace(m, "presence-fanout: %u contact(s)%s, %u probe(s), %u pending request(s) re-delivered",
                        f.sent, initial ? " (initial)" : "", f.probes, f.pending);
        roster_release(sm, r);
    }
    /* XEP-0160: stored messages go to the first resource that becomes
     * available with a non-negative priority */
    if (s->priority >= 0 && (initial || old_priority < 0)) sm_offline_deliver(sm, s);
}

void sm_presence_unavailable(struct sm *sm, struct session *s, const struct msg *m, const char *body, size_t len)
{
    if (!s->available) return;
    char user[JID_STR_MAX];
    snprintf(user, sizeof user, "%.*s", (int)s->bare_len, s->full);
    int err;
    struct roster *r = roster_get(sm, user, &err);
    if (!r) return;
    struct fanout f = { sm, s, m, NULL, STYPE_UNAVAILABLE, 0, 0, 0, 0 };
    f.tree = xml_parse(body, len, NS_CLIENT);
    if (f.tree) xml_set_attr(f.tree, "from", s->full);
    hmap_each(&r->items, fan_one, &f);
    xml_free(f.tree);
    P.unavailable += f.sent;
    if (m) sm_im_trace(m, "presence-fanout: unavailable to %u contact(s)", f.sent);
    /* the last one of the user's resources: keep it (RFC 6121 §4.3.2) */
    unsigned others = 0;
    for (struct session *o = s->user->sessions; o; o = o->next_of_user) others += o != s && o->available;
    if (!others) {
        struct buf k = { 0 }, rec = { 0 };
        last_key(user, &k);
        buf_adds(&rec, LAST_MAGIC);
        buf_addf(&rec, "gen %llu\ntime %ld\n\n", r->gen, (long)time(NULL));
        buf_add(&rec, body, len);
        if (!rec.oom && !k.oom) later_put(sm, NULL, sm_roster_store(), k.data, k.len, rec.data, rec.len);
        buf_free(&k);
        buf_free(&rec);
    }
    roster_release(sm, r);
}

void sm_presence_stats(struct sm *sm, struct ctl_req *r)
{
    (void)sm;
    ctl_row(r, "subscription_stanzas_out\t%llu", P.sub_out);
    ctl_row(r, "subscription_stanzas_in\t%llu", P.sub_in);
    ctl_row(r, "subscription_state_changes\t%llu", P.sub_changes);
    ctl_row(r, "presence_to_contacts\t%llu", P.broadcasts);
    ctl_row(r, "unavailable_to_contacts\t%llu", P.unavailable);
    ctl_row(r, "probes_sent\t%llu", P.probes_sent);
    ctl_row(r, "probes_answered\t%llu", P.probes_answered);
}
