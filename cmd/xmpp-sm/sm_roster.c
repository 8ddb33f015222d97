/* sm_roster.c - rosters (RFC 6121 §2) of the users of this shard: the
 * store, a cache for online users, jabber:iq:roster, roster pushes,
 * versioning (§2.6), the roster control commands; and the after-commit
 * queue (struct sm_later) every IM module sends its outputs through.
 *
 * roster.tdb (one per shard) holds one record per user, keyed by the bare
 * JID, in a versioned text format:
 *
 *   xmppd-roster 1\n gen G\n ver V\n
 *   i\tJID\tSTATE\tFLAGS\tNAME\tPENDING\tGROUP...\n   (one line per item)
 *
 * G is the generation of the account the roster belongs to (DESIGN §4):
 * a record whose G is not the account's current one is an earlier
 * account's of the same name and reads as an empty roster, so a
 * re-registered name starts empty and the stale record is overwritten at
 * the first write (no orphan records, no scan at unregister). STATE is a
 * sub_state_name(); FLAGS letters: a = approved (pre-approval, §3.4),
 * h = hidden (a pending inbound request only, §A.1), n = has a name;
 * PENDING is the stored subscription request (§3.1.3). Fields escape
 * '\\', TAB and LF as \\\\, \\t, \\n. The version (§2.6) is "G-V": it never
 * repeats across generations. The whole roster is rewritten on a change:
 * one tdb record per user keeps reads (login, presence fan-out) to one
 * fetch, and a 1000-item roster is about 100 KB.
 *
 * "<bare>\nlast" records keep the user's last unavailable presence
 * (sm_presence.c). */
#include "config.h"
#include "sm_roster.h"
#include "jid.h"
#include "log.h"
#include "stanza.h"
#include "trace.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROSTER_MAGIC "xmppd-roster 1\n"
#define ACCOUNT_MAGIC "xmppd-account 1\n"

static struct {
    store_t *store;
    struct hmap cache;        /* bare JID -> struct roster, for online users */
    struct hmap interested;   /* full JID -> (void *)1: requested the roster (§2.2) */
    struct sm_later *head, **tail;
    struct sm_later **ins;    /* while an output runs: where new sets go */
    int running;              /* an output of a set runs: stanzas pass the gate */
    unsigned long long deferred;
    unsigned long long push_id;
    unsigned long long gets, sets, removes, pushes, loads, saves, failures;
} R;

/* ================================================================
 * outputs after the commit
 * ================================================================ */

enum later_op { LO_SEND, LO_PUSH, LO_DELIVER, LO_PRESENCE_OF, LO_UNAVAILABLE_OF, LO_STANZA };

struct later_out {
    enum later_op op;
    uint8_t kind, stype;
    char *a, *b, *c;   /* per op: from/to, bare/to_full/contact */
    char *body;
    size_t len;
    uint64_t trace;
};

struct sm_later {
    struct sm_later *next;
    unsigned pending;   /* writes not yet committed */
    int submitted;
    int detached;       /* not in the queue: nothing waits for it */
    int ok;
    size_t pos;         /* outputs already sent */
    struct later_out *out;
    size_t n, cap;
    struct later_out fail; /* LO_SEND with a body, or nothing */
    struct ctl_req *ctl;
    char *invalidate;
};

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

struct sm_later *later_new(void)
{
    struct sm_later *l = calloc(1, sizeof *l);
    if (l) l->ok = 1;
    return l;
}

static struct later_out *later_add(struct sm_later *l, enum later_op op)
{
    if (!l) return NULL;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        struct later_out *o = realloc(l->out, cap * sizeof *o);
        if (!o) {
            l->ok = 0;
            return NULL;
        }
        l->out = o;
        l->cap = cap;
    }
    struct later_out *o = &l->out[l->n++];
    memset(o, 0, sizeof *o);
    o->op = op;
    return o;
}

static int set_body(struct later_out *o, const char *body, size_t len)
{
    o->body = util_strndup_safe(body ? body : "", len);
    o->len = len;
    return o->body ? 0 : -1;
}

void later_send(struct sm_later *l, unsigned kind, unsigned stype, const char *from, const char *to,
                const char *body, size_t len, uint64_t trace)
{
    struct later_out *o = later_add(l, LO_SEND);
    if (!o) return;
    o->kind = (uint8_t)kind;
    o->stype = (uint8_t)stype;
    o->a = dup_or_null(from);
    o->b = dup_or_null(to);
    o->trace = trace;
    if (set_body(o, body, len) < 0 || !o->a || !o->b) l->ok = 0;
}

void later_push(struct sm_later *l, const char *bare, const char *query, size_t len)
{
    struct later_out *o = later_add(l, LO_PUSH);
    if (!o) return;
    o->a = dup_or_null(bare);
    if (set_body(o, query, len) < 0 || !o->a) l->ok = 0;
}

void later_deliver(struct sm_later *l, const char *bare, const char *to_full, unsigned kind, unsigned stype,
                   const char *from, const char *body, size_t len, uint64_t trace)
{
    struct later_out *o = later_add(l, LO_DELIVER);
    if (!o) return;
    o->kind = (uint8_t)kind;
    o->stype = (uint8_t)stype;
    o->a = dup_or_null(bare);
    o->b = dup_or_null(to_full);
    o->c = dup_or_null(from);
    o->trace = trace;
    if (set_body(o, body, len) < 0 || !o->a || !o->c) l->ok = 0;
}

void later_presence_of(struct sm_later *l, const char *bare, const char *contact, int unavailable)
{
    struct later_out *o = later_add(l, unavailable ? LO_UNAVAILABLE_OF : LO_PRESENCE_OF);
    if (!o) return;
    o->a = dup_or_null(bare);
    o->b = dup_or_null(contact);
    if (!o->a || !o->b) l->ok = 0;
}

void later_on_failure(struct sm_later *l, unsigned kind, const char *from, const char *to, const char *body,
                      size_t len)
{
    if (!l) return;
    l->fail.op = LO_SEND;
    l->fail.kind = (uint8_t)kind;
    l->fail.stype = STYPE_ERROR;
    l->fail.a = dup_or_null(from);
    l->fail.b = dup_or_null(to);
    set_body(&l->fail, body, len);
}

void later_ctl(struct sm_later *l, struct ctl_req *r)
{
    if (l) l->ctl = r;
}

void later_invalidate(struct sm_later *l, const char *bare)
{
    if (l && !l->invalidate) l->invalidate = strdup(bare);
}

static void out_free(struct later_out *o)
{
    free(o->a);
    free(o->b);
    free(o->c);
    free(o->body);
}

static void later_free(struct sm_later *l)
{
    for (size_t i = 0; i < l->n; i++) out_free(&l->out[i]);
    out_free(&l->fail);
    free(l->out);
    free(l->invalidate);
    free(l);
}

/* No output, not even on failure: the caller answered already. */
static void strip(struct sm_later *l)
{
    l->ok = 0;
    for (size_t i = 0; i < l->n; i++) out_free(&l->out[i]);
    l->n = 0;
    out_free(&l->fail);
    memset(&l->fail, 0, sizeof l->fail);
}

void later_abandon(struct sm *sm, struct sm_later *l)
{
    if (!l) return;
    strip(l);
    later_submit(sm, l);
}

void later_abandon_detached(struct sm *sm, struct sm_later *l)
{
    if (!l) return;
    strip(l);
    later_submit_detached(sm, l);
}

static void drain(struct sm *sm);

static void fail_later(struct sm *sm, struct sm_later *l);
static void run_out(struct sm *sm, struct later_out *o);

/* A detached set whose writes are all committed: run it now. */
static void run_detached(struct sm *sm, struct sm_later *l)
{
    if (!l->ok) fail_later(sm, l);
    else
        for (size_t i = 0; i < l->n; i++) run_out(sm, &l->out[i]);
    if (l->ok && l->ctl) ctl_finish(l->ctl);
    later_free(l);
}

static void write_done(void *arg, int ok)
{
    struct sm_later *l = arg;
    if (!ok) l->ok = 0;
    if (l->pending) l->pending--;
    if (l->detached) {
        if (l->submitted && l->pending == 0) run_detached(&SM, l);
        return;
    }
    drain(&SM);
}

static int later_write(struct sm *sm, struct sm_later *l, store_t *s, const char *key, size_t klen,
                       const void *val, size_t vlen, int del)
{
    int rc = del ? store_del(s, key, klen, l ? write_done : NULL, l)
                 : store_put(s, key, klen, val, vlen, l ? write_done : NULL, l);
    if (rc < 0) {
        R.failures++;
        if (l) l->ok = 0;
        return -1;
    }
    if (l) l->pending++;
    /* a write made in a commit callback opens a transaction that only a
     * later turn's end commits: make sure that turn comes */
    loop_wake(sm->d->loop);
    return 0;
}

int later_put(struct sm *sm, struct sm_later *l, store_t *s, const char *key, size_t klen, const void *val,
              size_t vlen)
{
    return later_write(sm, l, s, key, klen, val, vlen, 0);
}

int later_del(struct sm *sm, struct sm_later *l, store_t *s, const char *key, size_t klen)
{
    return later_write(sm, l, s, key, klen, NULL, 0, 1);
}

void later_submit_detached(struct sm *sm, struct sm_later *l)
{
    if (!l) return;
    l->submitted = 1;
    l->detached = 1;
    if (l->pending == 0) run_detached(sm, l);
}

void later_submit(struct sm *sm, struct sm_later *l)
{
    if (!l) return;
    l->submitted = 1;
    if (!R.tail) R.tail = &R.head;
    if (R.ins) {
        /* queued while a set's output runs: before what waits behind it */
        l->next = *R.ins;
        *R.ins = l;
        R.ins = &l->next;
        if (!l->next) R.tail = &l->next;
    } else {
        l->next = NULL;
        *R.tail = l;
        R.tail = &l->next;
    }
    drain(sm);
}

int later_idle(void) { return R.head == NULL; }

store_t *sm_roster_store(void) { return R.store; }

struct session *sm_session_of(struct sm *sm, const char *full)
{
    return hmap_get(&sm->sessions, full, strlen(full));
}

int sm_roster_interested(const struct session *s)
{
    return hmap_get(&R.interested, s->full, strlen(s->full)) != NULL;
}

void sm_deliver_to(struct sm *sm, struct session *s, unsigned kind, unsigned stype, const char *from,
                   const char *body, size_t len, uint64_t trace)
{
    struct msg d;
    msg_init(&d, MSG_DELIVER);
    d.id = s->conn;
    d.kind = (uint8_t)kind;
    d.stype = (uint8_t)stype;
    d.trace = trace;
    d.flags = trace ? MSG_F_TRACED : 0;
    msg_set(&d, 0, from);
    msg_set(&d, 1, s->full);
    msg_set(&d, 2, s->c2s);
    msg_set(&d, 3, sm->d->instance);
    msg_setn(&d, 4, body, len);
    ipc_send(sm->router, NULL, &d);
    sm->n.delivered++;
    if (trace) trace_msg(5, &d, 0, "deliver->%s/conn %016llx", s->c2s, (unsigned long long)s->conn);
}

/* Roster push (§2.1.6) to every interested resource of bare. */
static void push_now(struct sm *sm, const char *bare, const char *query, size_t len)
{
    struct sm_user *u = hmap_get(&sm->users, bare, strlen(bare));
    struct buf iq = { 0 };
    for (struct session *s = u ? u->sessions : NULL; s; s = s->next_of_user) {
        if (!sm_roster_interested(s)) continue;
        buf_clear(&iq);
        /* no 'from': implicitly the user's account (§2.1.6) */
        buf_addf(&iq, "<iq xmlns='jabber:client' type='set' id='push%llu' to='", ++R.push_id);
        buf_add_xml_escaped(&iq, s->full, strlen(s->full));
        buf_adds(&iq, "'>");
        buf_add(&iq, query, len);
        buf_adds(&iq, "</iq>");
        if (iq.oom) break;
        sm_deliver_to(sm, s, KIND_IQ, STYPE_SET, bare, iq.data, iq.len, 0);
        R.pushes++;
    }
    buf_free(&iq);
}

/* The user's resources' presence to a contact (§3.1.5), or their
 * unavailable presence (§3.2.2, §3.3.3). */
static void presence_of_now(struct sm *sm, const char *bare, const char *contact, int unavailable)
{
    struct sm_user *u = hmap_get(&sm->users, bare, strlen(bare));
    struct buf b = { 0 };
    for (struct session *s = u ? u->sessions : NULL; s; s = s->next_of_user) {
        if (!s->available) continue;
        buf_clear(&b);
        if (unavailable || !s->presence) {
            buf_adds(&b, "<presence xmlns='jabber:client' type='unavailable' from='");
            buf_add_xml_escaped(&b, s->full, strlen(s->full));
            buf_adds(&b, "' to='");
            buf_add_xml_escaped(&b, contact, strlen(contact));
            buf_adds(&b, "'/>");
        } else {
            xml_node_t *p = xml_parse(s->presence, strlen(s->presence), NS_CLIENT);
            if (!p) continue;
            xml_set_attr(p, "from", s->full);
            xml_set_attr(p, "to", contact);
            xml_serialize(p, &b, NULL);
            xml_free(p);
        }
        if (b.oom) break;
        sm_send_created(sm, KIND_PRESENCE, unavailable ? STYPE_UNAVAILABLE : STYPE_NONE, s->full, contact, b.data,
                        b.len, 0, unavailable ? "unavailable presence (subscription ended)"
                                              : "current presence (subscription approved)");
    }
    buf_free(&b);
}

/* The failure path: nothing of the set is sent but its error reply. */
static void fail_later(struct sm *sm, struct sm_later *l)
{
    if (l->invalidate) {
        struct roster *r = hmap_del(&R.cache, l->invalidate, strlen(l->invalidate));
        if (r) {
            r->cached = 0;
            roster_release(sm, r);
        }
        log_err("roster of %s: a write failed; the change is not acknowledged", l->invalidate);
    }
    if (l->fail.body)
        sm_send_created(sm, l->fail.kind, STYPE_ERROR, l->fail.a, l->fail.b, l->fail.body, l->fail.len, 0,
                        "error (storage failed)");
    if (l->ctl) {
        ctl_fail(l->ctl, 1, "storage error: see the sm log");
        ctl_finish(l->ctl);
    }
}

static void run_out(struct sm *sm, struct later_out *o)
{
    switch (o->op) {
    case LO_SEND:
        sm_send_created(sm, o->kind, o->stype, o->a, o->b, o->body, o->len, o->trace, "by the roster code");
        break;
    case LO_PUSH:
        push_now(sm, o->a, o->body, o->len);
        break;
    case LO_DELIVER: {
        if (o->b) {
            struct session *s = sm_session_of(sm, o->b);
            if (s) sm_deliver_to(sm, s, o->kind, o->stype, o->c, o->body, o->len, o->trace);
            break;
        }
        struct sm_user *u = hmap_get(&sm->users, o->a, strlen(o->a));
        for (struct session *s = u ? u->sessions : NULL; s; s = s->next_of_user)
            if (s->available) sm_deliver_to(sm, s, o->kind, o->stype, o->c, o->body, o->len, o->trace);
        break;
    }
    case LO_PRESENCE_OF:
    case LO_UNAVAILABLE_OF:
        presence_of_now(sm, o->a, o->b, o->op == LO_UNAVAILABLE_OF);
        break;
    case LO_STANZA: {
        struct msg m;
        size_t used;
        const char *err;
        if (msg_decode(o->body, o->len, &m, &used, &err) < 0) break;
        if (m.type == MSG_SESSION_END) sm_session_end(sm, &m);
        else sm_stanza(sm, &m);
        break;
    }
    }
}

int sm_im_defer(struct sm *sm, const struct msg *m)
{
    if (!R.head || R.running) return 0;
    /* an output waits for its commit: what arrives now goes after it
     * (RFC 6120 §10.1: one sender, one recipient, one order) */
    struct buf rec = { 0 };
    struct sm_later *l = later_new();
    struct later_out *o = later_add(l, LO_STANZA);
    if (!o || msg_encode(m, &rec) < 0 || rec.oom) {
        buf_free(&rec);
        if (l) later_free(l);
        return 0; /* handled at once rather than lost */
    }
    o->body = rec.data; /* the buffer is ours now */
    o->len = rec.len;
    R.deferred++;
    later_submit(sm, l);
    return 1;
}

/* Run, in order, every set whose writes are committed; stop at the first
 * that still waits (what follows it must not overtake it). An output
 * routed to a recipient of this shard is handled at once (the inbound
 * phase, DESIGN §2) and may queue sets of its own: they go first, and the
 * rest of the running set waits behind them, so a contact sees the
 * "subscribed" before the presence that follows it. */
static void drain(struct sm *sm)
{
    static int draining;
    if (draining) return; /* a set run now may queue more: the loop below sees it */
    draining = 1;
    while (R.head && R.head->submitted && R.head->pending == 0) {
        struct sm_later *l = R.head;
        R.head = l->next;
        if (!R.head) R.tail = &R.head;
        if (!l->ok) {
            fail_later(sm, l);
            later_free(l);
            continue;
        }
        int requeued = 0;
        while (l->pos < l->n) {
            R.ins = &R.head; /* sets queued by this output go to the front */
            R.running = 1;
            run_out(sm, &l->out[l->pos++]);
            R.running = 0;
            struct sm_later **ins = R.ins;
            R.ins = NULL;
            if (ins != &R.head && l->pos < l->n) {
                l->next = *ins;
                *ins = l;
                if (!l->next) R.tail = &l->next;
                requeued = 1;
                break;
            }
        }
        if (requeued) continue;
        if (l->ctl) ctl_finish(l->ctl);
        later_free(l);
    }
    draining = 0;
}

/* ================================================================
 * trace lines
 * ================================================================ */

void sm_im_trace(const struct msg *m, const char *fmt, ...)
{
    if (!(m->flags & MSG_F_TRACED)) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    trace_msg(m->flags & MSG_F_INBOUND ? 5 : 4, m, 0, "%s", line);
}

/* ================================================================
 * the store
 * ================================================================ */

int sm_roster_open(struct sm *sm)
{
    R.store = sm_store_open(sm, "roster.tdb");
    if (!R.store) return -1;
    R.tail = &R.head;
    return sm_offline_open(sm);
}

int sm_account_gen(struct sm *sm, const char *bare, unsigned long long *gen)
{
    /* the account record's format belongs to sm_accounts.c:
     * "xmppd-account 1\ngen N\n..." */
    struct buf rec = { 0 };
    *gen = 0;
    int rc = store_get(sm->accounts, bare, strlen(bare), &rec);
    if (rc == 1) {
        const char *p = buf_cstr(&rec);
        if (strncmp(p, ACCOUNT_MAGIC "gen ", sizeof ACCOUNT_MAGIC + 3) != 0 ||
            sscanf(p + sizeof ACCOUNT_MAGIC + 3, "%llu", gen) != 1)
            rc = -1;
    }
    buf_free(&rec);
    return rc;
}

static void item_free(struct ritem *it)
{
    if (!it) return;
    free(it->jid);
    free(it->name);
    for (unsigned i = 0; i < it->ngroups; i++) free(it->groups[i]);
    free(it->groups);
    free(it->pending);
    free(it);
}

static void free_item_cb(void *value, void *arg)
{
    (void)arg;
    item_free(value);
}

static void roster_free(struct roster *r)
{
    if (!r) return;
    hmap_each(&r->items, free_item_cb, NULL);
    hmap_free(&r->items);
    free(r->bare);
    free(r);
}

struct ritem *roster_item(struct roster *r, const char *jid) { return hmap_get(&r->items, jid, strlen(jid)); }

size_t roster_count(const struct roster *r) { return r->items.count; }

static struct ritem *item_insert(struct roster *r, struct ritem *it)
{
    int failed = 0;
    hmap_put(&r->items, it->jid, strlen(it->jid), it, &failed);
    if (failed) {
        item_free(it);
        return NULL;
    }
    return it;
}

struct ritem *roster_item_add(struct roster *r, const char *jid)
{
    struct ritem *it = roster_item(r, jid);
    if (it) return it;
    if (r->items.count >= ROSTER_MAX_ITEMS) return NULL;
    it = calloc(1, sizeof *it);
    if (!it || !(it->jid = strdup(jid))) {
        free(it);
        return NULL;
    }
    return item_insert(r, it);
}

void roster_item_del(struct roster *r, const char *jid)
{
    item_free(hmap_del(&r->items, jid, strlen(jid)));
}

/* ---- record format ---- */

static void add_escaped(struct buf *b, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '\\') buf_adds(b, "\\\\");
        else if (*s == '\t') buf_adds(b, "\\t");
        else if (*s == '\n') buf_adds(b, "\\n");
        else buf_add(b, s, 1);
    }
}

/* Unescape the field [p, end) into a new string. */
static char *unescape(const char *p, const char *end)
{
    char *out = malloc((size_t)(end - p) + 1), *o = out;
    if (!out) return NULL;
    while (p < end) {
        if (*p == '\\' && p + 1 < end) {
            p++;
            *o++ = *p == 't' ? '\t' : *p == 'n' ? '\n' : *p;
            p++;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    return out;
}

static void serialize_item(void *value, void *arg)
{
    const struct ritem *it = value;
    struct buf *b = arg;
    buf_adds(b, "i\t");
    add_escaped(b, it->jid);
    buf_addf(b, "\t%s\t", sub_state_name(it->state));
    if (it->approved) buf_adds(b, "a");
    if (it->hidden) buf_adds(b, "h");
    if (it->name) buf_adds(b, "n");
    if (!it->approved && !it->hidden && !it->name) buf_adds(b, "-");
    buf_adds(b, "\t");
    add_escaped(b, it->name);
    buf_adds(b, "\t");
    add_escaped(b, it->pending);
    for (unsigned i = 0; i < it->ngroups; i++) {
        buf_adds(b, "\t");
        add_escaped(b, it->groups[i]);
    }
    buf_adds(b, "\n");
}

/* One "i\t..." line into an item; NULL if malformed. */
static struct ritem *parse_item(const char *p, const char *end)
{
    const char *f[4 + ROSTER_MAX_GROUPS + 2][2];
    unsigned n = 0;
    const char *s = p;
    while (n < sizeof f / sizeof f[0]) {
        const char *tab = memchr(s, '\t', (size_t)(end - s));
        f[n][0] = s;
        f[n][1] = tab ? tab : end;
        n++;
        if (!tab) break;
        s = tab + 1;
    }
    /* i, jid, state, flags, name, pending, groups... */
    if (n < 6 || f[0][1] - f[0][0] != 1 || *f[0][0] != 'i') return NULL;
    struct ritem *it = calloc(1, sizeof *it);
    if (!it) return NULL;
    char *state = unescape(f[2][0], f[2][1]);
    int st = state ? sub_state_parse(state) : -1;
    free(state);
    it->jid = unescape(f[1][0], f[1][1]);
    if (st < 0 || !it->jid || !*it->jid) goto bad;
    it->state = (enum sub_state)st;
    for (const char *c = f[3][0]; c < f[3][1]; c++) {
        if (*c == 'a') it->approved = 1;
        else if (*c == 'h') it->hidden = 1;
    }
    int has_name = memchr(f[3][0], 'n', (size_t)(f[3][1] - f[3][0])) != NULL;
    if (has_name && !(it->name = unescape(f[4][0], f[4][1]))) goto bad;
    if (f[5][1] > f[5][0] && !(it->pending = unescape(f[5][0], f[5][1]))) goto bad;
    if (n > 6) {
        it->groups = calloc(n - 6, sizeof *it->groups);
        if (!it->groups) goto bad;
        for (unsigned i = 6; i < n; i++) {
            if (!(it->groups[it->ngroups] = unescape(f[i][0], f[i][1]))) goto bad;
            it->ngroups++;
        }
    }
    return it;
bad:
    item_free(it);
    return NULL;
}

/* Parse a stored record; -1 if it is not one of ours. */
static int parse_roster(struct roster *r, const char *p, size_t len)
{
    const char *end = p + len;
    if (len < sizeof ROSTER_MAGIC - 1 || memcmp(p, ROSTER_MAGIC, sizeof ROSTER_MAGIC - 1) != 0) return -1;
    p += sizeof ROSTER_MAGIC - 1;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) nl = end;
        if (nl - p > 4 && memcmp(p, "gen ", 4) == 0) {
            r->gen = strtoull(p + 4, NULL, 10);
        } else if (nl - p > 4 && memcmp(p, "ver ", 4) == 0) {
            r->ver = strtoull(p + 4, NULL, 10);
        } else if (nl - p > 2 && p[0] == 'i' && p[1] == '\t') {
            struct ritem *it = parse_item(p, nl);
            if (!it) return -1;
            if (roster_item(r, it->jid)) item_free(it); /* a duplicate: keep the first */
            else if (!item_insert(r, it)) return -1;
        }
        p = nl + 1;
    }
    return 0;
}

struct roster *roster_get(struct sm *sm, const char *bare, int *err)
{
    *err = 0;
    struct roster *r = hmap_get(&R.cache, bare, strlen(bare));
    if (r) return r;
    unsigned long long gen;
    int rc = sm_account_gen(sm, bare, &gen);
    if (rc <= 0) {
        *err = rc < 0;
        return NULL;
    }
    r = calloc(1, sizeof *r);
    if (!r || !(r->bare = strdup(bare))) {
        free(r);
        *err = 1;
        return NULL;
    }
    struct buf rec = { 0 };
    rc = store_get(R.store, bare, strlen(bare), &rec);
    if (rc == 1) {
        struct roster tmp = { 0 };
        if (parse_roster(&tmp, rec.data, rec.len) < 0) {
            log_err("roster of %s: the stored record is damaged; not used", bare);
            hmap_each(&tmp.items, free_item_cb, NULL);
            hmap_free(&tmp.items);
            rc = -1;
        } else if (tmp.gen != gen) {
            /* an earlier account of the same name: starts empty */
            hmap_each(&tmp.items, free_item_cb, NULL);
            hmap_free(&tmp.items);
        } else {
            r->items = tmp.items;
            r->ver = tmp.ver;
        }
    }
    buf_free(&rec);
    if (rc < 0) {
        roster_free(r);
        *err = 1;
        return NULL;
    }
    r->gen = gen;
    R.loads++;
    if (hmap_get(&sm->users, bare, strlen(bare))) {
        int failed = 0;
        hmap_put(&R.cache, r->bare, strlen(r->bare), r, &failed);
        r->cached = !failed;
    }
    return r;
}

void roster_release(struct sm *sm, struct roster *r)
{
    (void)sm;
    if (r && !r->cached) roster_free(r);
}

int roster_save(struct sm *sm, struct roster *r, struct sm_later *l)
{
    struct buf rec = { 0 };
    r->ver++;
    buf_adds(&rec, ROSTER_MAGIC);
    buf_addf(&rec, "gen %llu\nver %llu\n", r->gen, r->ver);
    hmap_each(&r->items, serialize_item, &rec);
    later_invalidate(l, r->bare);
    int rc = rec.oom ? -1 : later_put(sm, l, R.store, r->bare, strlen(r->bare), rec.data, rec.len);
    if (rec.oom && l) l->ok = 0;
    buf_free(&rec);
    R.saves++;
    return rc;
}

/* ================================================================
 * roster XML
 * ================================================================ */

static void add_ver(struct buf *b, const struct roster *r) { buf_addf(b, "%llu-%llu", r->gen, r->ver); }

void roster_item_xml(const struct ritem *it, struct buf *out)
{
    if (it->hidden) return;
    buf_adds(out, "<item jid='");
    buf_add_xml_escaped(out, it->jid, strlen(it->jid));
    buf_adds(out, "'");
    if (it->name) {
        buf_adds(out, " name='");
        buf_add_xml_escaped(out, it->name, strlen(it->name));
        buf_adds(out, "'");
    }
    buf_addf(out, " subscription='%s'", sub_attr(it->state));
    if (sub_pending_out(it->state)) buf_adds(out, " ask='subscribe'");
    if (it->approved) buf_adds(out, " approved='true'");
    if (!it->ngroups) {
        buf_adds(out, "/>");
        return;
    }
    buf_adds(out, ">");
    for (unsigned i = 0; i < it->ngroups; i++) {
        buf_adds(out, "<group>");
        buf_add_xml_escaped(out, it->groups[i], strlen(it->groups[i]));
        buf_adds(out, "</group>");
    }
    buf_adds(out, "</item>");
}

void roster_push_query(const struct roster *r, const struct ritem *it, const char *removed_jid, struct buf *out)
{
    buf_adds(out, "<query xmlns='" NS_ROSTER "' ver='");
    add_ver(out, r);
    buf_adds(out, "'>");
    if (it && !it->hidden) {
        roster_item_xml(it, out);
    } else {
        buf_adds(out, "<item jid='");
        buf_add_xml_escaped(out, it ? it->jid : removed_jid, strlen(it ? it->jid : removed_jid));
        buf_adds(out, "' subscription='remove'/>");
    }
    buf_adds(out, "</query>");
}

/* ================================================================
 * jabber:iq:roster
 * ================================================================ */

struct iq_req {
    struct sm *sm;
    const struct msg *m;
    xml_node_t *iq;
    const char *id;
    char user[JID_STR_MAX];   /* the requester's bare JID */
    char full[JID_STR_MAX];   /* the requester's full JID */
    char to[JID_STR_MAX];     /* the IQ's 'to' ("" if none): the reply's 'from' */
};

/* <iq type='result' id= to=requester [from=original to]> */
static void result_head(const struct iq_req *q, struct buf *b)
{
    buf_adds(b, "<iq xmlns='jabber:client' type='result' id='");
    buf_add_xml_escaped(b, q->id, strlen(q->id));
    buf_adds(b, "' to='");
    buf_add_xml_escaped(b, q->full, strlen(q->full));
    buf_adds(b, "'");
    if (q->to[0]) {
        buf_adds(b, " from='");
        buf_add_xml_escaped(b, q->to, strlen(q->to));
        buf_adds(b, "'");
    }
}

static void iq_error(const struct iq_req *q, unsigned cond, const char *text)
{
    sm_im_trace(q->m, "roster: error %s%s%s", stanza_error_name(cond), text ? ": " : "", text ? text : "");
    sm_reply_error(q->sm, q->m, cond, text);
}

static const char *reply_from(const struct iq_req *q) { return q->to[0] ? q->to : q->user; }

/* §2.1.3 roster get, §2.6.3 with a version. */
static void roster_get_iq(struct iq_req *q, xml_node_t *query)
{
    int err;
    struct roster *r = roster_get(q->sm, q->user, &err);
    if (!r) {
        iq_error(q, err ? SE_INTERNAL_SERVER_ERROR : SE_ITEM_NOT_FOUND, NULL);
        return;
    }
    R.gets++;
    /* §2.2: the resource is "interested" from now on */
    struct session *s = sm_session_of(q->sm, q->full);
    if (s && !sm_roster_interested(s)) {
        char *key = strdup(s->full);
        int failed = 0;
        if (key) hmap_put(&R.interested, key, strlen(key), key, &failed);
        if (failed) free(key);
    }
    struct buf ver = { 0 }, b = { 0 };
    add_ver(&ver, r);
    const char *asked = xml_attr(query, "ver");
    result_head(q, &b);
    if (asked && strcmp(asked, buf_cstr(&ver)) == 0) {
        /* §2.6.3: up to date: an empty result, then only pushes */
        buf_adds(&b, "/>");
        sm_im_trace(q->m, "roster: version %s is current: empty result", asked);
    } else {
        buf_adds(&b, "><query xmlns='" NS_ROSTER "'");
        if (asked) {
            /* §2.6.3: a client that asked for versioning gets the version */
            buf_adds(&b, " ver='");
            buf_add(&b, ver.data, ver.len);
            buf_adds(&b, "'");
        }
        buf_adds(&b, ">");
        void **items = malloc((r->items.count ? r->items.count : 1) * sizeof *items);
        size_t n = items ? hmap_values(&r->items, items, r->items.count) : 0;
        for (size_t i = 0; i < n; i++) roster_item_xml(items[i], &b);
        free(items);
        buf_adds(&b, "</query></iq>");
        sm_im_trace(q->m, "roster: full roster, %zu item(s), version %s", n, buf_cstr(&ver));
    }
    /* after any change still waiting for its commit (queue order) */
    struct sm_later *l = later_new();
    later_send(l, KIND_IQ, STYPE_RESULT, reply_from(q), q->full, b.data, b.len, trace_id_of(q->m));
    later_submit(q->sm, l);
    buf_free(&b);
    buf_free(&ver);
    roster_release(q->sm, r);
}

/* Validate the <item/> of a roster set (§2.3.3); returns the condition or
 * SE_NONE, with a text for the error. */
static unsigned check_item(xml_node_t *item, const char **text)
{
    const char *name = xml_attr(item, "name");
    if (name && strlen(name) > ROSTER_MAX_NAME) {
        *text = "the name is too long";
        return SE_NOT_ACCEPTABLE;
    }
    unsigned ngroups = 0;
    for (xml_node_t *g = xml_first_elem(item); g; g = xml_next_elem(g)) {
        if (strcmp(g->name, "group") != 0 || strcmp(g->ns, NS_ROSTER) != 0) continue;
        const char *t = xml_text(g);
        if (!t) return SE_INTERNAL_SERVER_ERROR;
        if (!*t) {
            *text = "empty group name";
            return SE_NOT_ACCEPTABLE;
        }
        if (strlen(t) > ROSTER_MAX_GROUP) {
            *text = "a group name is too long";
            return SE_NOT_ACCEPTABLE;
        }
        for (xml_node_t *h = xml_first_elem(item); h != g; h = xml_next_elem(h)) {
            if (strcmp(h->name, "group") == 0 && strcmp(h->ns, NS_ROSTER) == 0 && strcmp(xml_text(h), t) == 0) {
                *text = "duplicate group";
                return SE_BAD_REQUEST;
            }
        }
        if (++ngroups > ROSTER_MAX_GROUPS) {
            *text = "too many groups";
            return SE_NOT_ACCEPTABLE;
        }
    }
    return SE_NONE;
}

/* Replace name and groups of it from a roster set's <item/>. */
static int take_name_groups(struct ritem *it, xml_node_t *item)
{
    const char *name = xml_attr(item, "name");
    char *nn = name && *name ? strdup(name) : NULL;
    if (name && *name && !nn) return -1;
    unsigned n = 0;
    for (xml_node_t *g = xml_first_elem(item); g; g = xml_next_elem(g))
        if (strcmp(g->name, "group") == 0 && strcmp(g->ns, NS_ROSTER) == 0) n++;
    char **groups = n ? calloc(n, sizeof *groups) : NULL;
    if (n && !groups) {
        free(nn);
        return -1;
    }
    unsigned k = 0;
    for (xml_node_t *g = xml_first_elem(item); g; g = xml_next_elem(g)) {
        if (strcmp(g->name, "group") != 0 || strcmp(g->ns, NS_ROSTER) != 0) continue;
        if (!(groups[k] = strdup(xml_text(g)))) {
            for (unsigned i = 0; i < k; i++) free(groups[i]);
            free(groups);
            free(nn);
            return -1;
        }
        k++;
    }
    free(it->name);
    it->name = nn;
    for (unsigned i = 0; i < it->ngroups; i++) free(it->groups[i]);
    free(it->groups);
    it->groups = groups;
    it->ngroups = k;
    return 0;
}

/* Presence the server sends on the user's behalf (from the bare JID). */
static void sub_body(struct buf *b, const char *type, const char *from, const char *to)
{
    buf_clear(b);
    buf_adds(b, "<presence xmlns='jabber:client' type='");
    buf_adds(b, type);
    buf_adds(b, "' from='");
    buf_add_xml_escaped(b, from, strlen(from));
    buf_adds(b, "' to='");
    buf_add_xml_escaped(b, to, strlen(to));
    buf_adds(b, "'/>");
}

/* §2.5.2: removing an item cancels the subscriptions both ways. */
static void remove_item(struct iq_req *q, struct roster *r, struct ritem *it, struct sm_later *l)
{
    struct buf b = { 0 };
    uint64_t cause = trace_id_of(q->m);
    if (sub_has_to(it->state) || sub_pending_out(it->state)) {
        sub_body(&b, "unsubscribe", r->bare, it->jid);
        later_send(l, KIND_PRESENCE, STYPE_UNSUBSCRIBE, r->bare, it->jid, b.data, b.len, cause);
    }
    if (sub_has_from(it->state) || sub_pending_in(it->state)) {
        sub_body(&b, "unsubscribed", r->bare, it->jid);
        later_send(l, KIND_PRESENCE, STYPE_UNSUBSCRIBED, r->bare, it->jid, b.data, b.len, cause);
    }
    /* the contact stops seeing the user's presence (§3.2.2) */
    if (sub_has_from(it->state)) later_presence_of(l, r->bare, it->jid, 1);
    sm_im_trace(q->m, "roster: remove %s (sub: %s -> removed)", it->jid, sub_state_name(it->state));
    buf_free(&b);
}

/* §2.3 roster set, §2.5 remove. */
static void roster_set_iq(struct iq_req *q, xml_node_t *query)
{
    xml_node_t *item = NULL;
    unsigned nitems = 0;
    for (xml_node_t *e = xml_first_elem(query); e; e = xml_next_elem(e))
        if (strcmp(e->name, "item") == 0 && strcmp(e->ns, NS_ROSTER) == 0) {
            item = e;
            nitems++;
        }
    /* §2.3.3: exactly one item */
    if (nitems != 1) {
        iq_error(q, SE_BAD_REQUEST, "a roster set has exactly one item");
        return;
    }
    const char *jid_attr = xml_attr(item, "jid");
    char contact[JID_STR_MAX];
    struct jid j;
    if (!jid_attr || jid_parse(jid_attr, strlen(jid_attr), &j) < 0 || jid_format_full(&j, contact, sizeof contact) < 0) {
        iq_error(q, SE_JID_MALFORMED, NULL);
        return;
    }
    if (j.has_resource) {
        iq_error(q, SE_BAD_REQUEST, "roster items are bare JIDs");
        return;
    }
    if (strcmp(contact, q->user) == 0) {
        iq_error(q, SE_NOT_ALLOWED, "the user's own JID is not a contact");
        return;
    }
    const char *sub = xml_attr(item, "subscription");
    int remove = sub && strcmp(sub, "remove") == 0;
    const char *text = NULL;
    unsigned cond = remove ? SE_NONE : check_item(item, &text);
    if (cond != SE_NONE) {
        iq_error(q, cond, text);
        return;
    }
    int err;
    struct roster *r = roster_get(q->sm, q->user, &err);
    if (!r) {
        iq_error(q, err ? SE_INTERNAL_SERVER_ERROR : SE_ITEM_NOT_FOUND, NULL);
        return;
    }
    struct ritem *it = roster_item(r, contact);
    struct sm_later *l = later_new();
    struct buf push = { 0 }, res = { 0 }, fail = { 0 };
    if (!l) {
        iq_error(q, SE_INTERNAL_SERVER_ERROR, NULL);
        goto out;
    }
    if (remove) {
        /* §2.5.3: removing what is not there */
        if (!it || it->hidden) {
            later_free(l);
            iq_error(q, SE_ITEM_NOT_FOUND, NULL);
            goto out;
        }
        R.removes++;
        remove_item(q, r, it, l);
        roster_item_del(r, contact);
        it = NULL;
    } else {
        /* §2.3.2; 'subscription' (other than remove) and 'ask' are ignored */
        int is_new = !it || it->hidden;
        if (!it && !(it = roster_item_add(r, contact))) {
            later_free(l);
            if (roster_count(r) >= ROSTER_MAX_ITEMS)
                iq_error(q, SE_NOT_ALLOWED, "the roster is full");
            else
                iq_error(q, SE_INTERNAL_SERVER_ERROR, NULL);
            goto out;
        }
        if (take_name_groups(it, item) < 0) {
            later_invalidate(l, r->bare);
            later_abandon(q->sm, l);
            iq_error(q, SE_INTERNAL_SERVER_ERROR, NULL);
            goto out;
        }
        it->hidden = 0;
        R.sets++;
        sm_im_trace(q->m, "roster: %s %s (sub: %s)", is_new ? "add" : "update", contact, sub_state_name(it->state));
    }
    if (roster_save(q->sm, r, l) < 0) {
        later_abandon(q->sm, l);
        iq_error(q, SE_INTERNAL_SERVER_ERROR, NULL);
        goto out;
    }
    /* §2.3.2: push to every interested resource (the requester too), then the result */
    roster_push_query(r, it, contact, &push);
    later_push(l, q->user, push.data, push.len);
    result_head(q, &res);
    buf_adds(&res, "/>");
    later_send(l, KIND_IQ, STYPE_RESULT, reply_from(q), q->full, res.data, res.len, trace_id_of(q->m));
    if (stanza_error_reply(q->m->f[4].p, q->m->f[4].n, SE_INTERNAL_SERVER_ERROR, NULL, q->full, &fail) == 0)
        later_on_failure(l, KIND_IQ, reply_from(q), q->full, fail.data, fail.len);
    later_submit(q->sm, l);
out:
    buf_free(&push);
    buf_free(&res);
    buf_free(&fail);
    roster_release(q->sm, r);
}

void sm_roster_iq(struct sm *sm, const struct msg *m, xml_node_t *iq, xml_node_t *query, int for_user)
{
    struct iq_req q = { sm, m, iq, xml_attr(iq, "id"), "", "", "" };
    if (!q.id || !msg_str(m, 0, q.full, sizeof q.full) ||
        jid_bare_of(q.full, strlen(q.full), q.user, sizeof q.user) < 0 || !msg_str(m, 1, q.to, sizeof q.to)) {
        sm_reply_error(sm, m, SE_BAD_REQUEST, NULL);
        return;
    }
    char target[JID_STR_MAX];
    if (q.to[0] && jid_bare_of(q.to, strlen(q.to), target, sizeof target) < 0) target[0] = '\0';
    /* §2.1.5 / §2.3.3: only the user manages the roster of its account;
     * the roster of the server itself does not exist */
    if (!for_user) {
        iq_error(&q, SE_SERVICE_UNAVAILABLE, NULL);
        return;
    }
    if (q.to[0] && strcmp(target, q.user) != 0) {
        iq_error(&q, SE_FORBIDDEN, NULL);
        return;
    }
    if (m->stype == STYPE_GET) roster_get_iq(&q, query);
    else roster_set_iq(&q, query);
}

/* ================================================================
 * sessions
 * ================================================================ */

void sm_roster_session_end(struct sm *sm, struct session *s)
{
    char *key = hmap_del(&R.interested, s->full, strlen(s->full));
    free(key);
    if (s->user && s->user->count <= 1) {
        struct roster *r = hmap_del(&R.cache, s->user->bare, strlen(s->user->bare));
        if (r) {
            r->cached = 0;
            roster_release(sm, r);
        }
    }
}

static void drop_cached(void *value, void *arg)
{
    struct roster *r = value;
    (void)arg;
    roster_free(r);
}

void sm_roster_forget_cache(struct sm *sm)
{
    (void)sm;
    hmap_each(&R.cache, drop_cached, NULL);
    hmap_free(&R.cache);
    memset(&R.cache, 0, sizeof R.cache);
}

/* ================================================================
 * control commands
 * ================================================================ */

static struct roster *ctl_roster(struct sm *sm, const char *bare, struct ctl_req *r)
{
    int err;
    struct roster *ro = roster_get(sm, bare, &err);
    if (!ro) ctl_fail(r, 1, err ? "storage error reading the roster of %s" : "%s does not exist", bare);
    return ro;
}

static int cmp_item(const void *a, const void *b)
{
    const struct ritem *x = *(const struct ritem *const *)a, *y = *(const struct ritem *const *)b;
    return strcmp(x->jid, y->jid);
}

static void field(struct buf *b, const char *s)
{
    /* tab-separated output: no tab or newline inside a field */
    for (; s && *s; s++) buf_add(b, *s == '\t' || *s == '\n' ? " " : s, 1);
}

static void cmd_roster(struct sm *sm, const char *bare, struct ctl_req *r)
{
    struct roster *ro = ctl_roster(sm, bare, r);
    if (!ro) return;
    ctl_cols(r, "contact\tsubscription\task\tapproved\tpending_in\tname\tgroups");
    void **items = malloc((ro->items.count ? ro->items.count : 1) * sizeof *items);
    size_t n = items ? hmap_values(&ro->items, items, ro->items.count) : 0;
    qsort(items, n, sizeof *items, cmp_item);
    struct buf name = { 0 }, groups = { 0 };
    for (size_t i = 0; i < n; i++) {
        const struct ritem *it = items[i];
        buf_clear(&name);
        buf_clear(&groups);
        field(&name, it->name);
        for (unsigned g = 0; g < it->ngroups; g++) {
            if (g) buf_adds(&groups, ",");
            field(&groups, it->groups[g]);
        }
        ctl_row(r, "%s\t%s\t%s\t%s\t%s\t%s\t%s", it->jid, it->hidden ? "-" : sub_attr(it->state),
                sub_pending_out(it->state) ? "subscribe" : "", it->approved ? "true" : "",
                sub_pending_in(it->state) ? "yes" : "", buf_cstr(&name), buf_cstr(&groups));
    }
    buf_free(&name);
    buf_free(&groups);
    free(items);
    roster_release(sm, ro);
}

/* roster-add USER CONTACT [NAME] [GROUP...] [--subscription both|to|from|none]:
 * like ejabberd's add_rosteritem, a server-side change pushed to the
 * user's interested resources; no presence stanza is sent. */
/* The administrator's rules for one item (roster-add, roster-import):
 * name and groups replaced when given (a new item starts without groups),
 * the item made visible, and when sub >= 0 (none, to, from, both) the
 * subscription set, answering a pending request in the direction granted. */
static void admin_set_item(struct ritem *it, int is_new, const char *name, const char *const *groups,
                           unsigned ngroups, int sub)
{
    if (name) {
        free(it->name);
        it->name = *name ? strdup(name) : NULL;
    }
    if (ngroups || is_new) {
        for (unsigned g = 0; g < it->ngroups; g++) free(it->groups[g]);
        free(it->groups);
        it->groups = ngroups ? calloc(ngroups, sizeof *it->groups) : NULL;
        it->ngroups = 0;
        for (unsigned g = 0; it->groups && g < ngroups; g++)
            if ((it->groups[it->ngroups] = strdup(groups[g]))) it->ngroups++;
    }
    it->hidden = 0;
    if (sub < 0) return;
    int to = sub == 1 || sub == 3, from = sub == 2 || sub == 3;
    it->state = sub_state_make(to, from, !to && sub_pending_out(it->state), !from && sub_pending_in(it->state));
    if (!sub_pending_in(it->state)) {
        free(it->pending);
        it->pending = NULL;
    }
    if (from) it->approved = 0;
}

static int cmd_roster_add(struct sm *sm, int argc, char **argv, struct ctl_req *r)
{
    char bare[JID_STR_MAX], contact[JID_STR_MAX];
    const char *subscription = NULL, *name = NULL;
    const char *groups[ROSTER_MAX_GROUPS + 1];
    unsigned ngroups = 0;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--subscription") == 0 || strncmp(argv[i], "--subscription=", 15) == 0) {
            if (argv[i][14] == '=') subscription = argv[i] + 15;
            else if (i + 1 < argc) subscription = argv[++i];
            else subscription = "";
            continue;
        }
        if (!name) name = argv[i];
        else if (ngroups < ROSTER_MAX_GROUPS + 1) groups[ngroups++] = argv[i];
    }
    if (argc < 3) {
        ctl_fail(r, 2, "usage: roster-add USER CONTACT [NAME] [GROUP...] [--subscription both|to|from|none]");
        return 0;
    }
    if (sm_ctl_user_jid(sm, argv[1], bare, sizeof bare, r) < 0) return 0;
    struct jid j;
    if (jid_parse(argv[2], strlen(argv[2]), &j) < 0 || j.has_resource ||
        jid_format_bare(&j, contact, sizeof contact) < 0) {
        ctl_fail(r, 2, "'%s' is not a bare JID", argv[2]);
        return 0;
    }
    if (strcmp(contact, bare) == 0) {
        ctl_fail(r, 2, "a user is not a contact of itself");
        return 0;
    }
    int sub = -1;
    if (subscription) {
        static const char *const subs[] = { "none", "to", "from", "both" };
        for (int i = 0; i < 4; i++)
            if (strcmp(subscription, subs[i]) == 0) sub = i;
        if (sub < 0) {
            ctl_fail(r, 2, "--subscription takes both, to, from or none");
            return 0;
        }
    }
    if ((name && strlen(name) > ROSTER_MAX_NAME) || ngroups > ROSTER_MAX_GROUPS) {
        ctl_fail(r, 2, "name too long or too many groups (limits: %d bytes, %d groups)", ROSTER_MAX_NAME,
                 ROSTER_MAX_GROUPS);
        return 0;
    }
    for (unsigned g = 0; g < ngroups; g++) {
        if (!*groups[g] || strlen(groups[g]) > ROSTER_MAX_GROUP) {
            ctl_fail(r, 2, "group names are 1 to %d bytes", ROSTER_MAX_GROUP);
            return 0;
        }
        for (unsigned h = 0; h < g; h++)
            if (strcmp(groups[g], groups[h]) == 0) {
                ctl_fail(r, 2, "group '%s' given twice", groups[g]);
                return 0;
            }
    }
    struct roster *ro = ctl_roster(sm, bare, r);
    if (!ro) return 0;
    struct ritem *it = roster_item(ro, contact);
    int is_new = !it || it->hidden;
    if (!it && !(it = roster_item_add(ro, contact))) {
        ctl_fail(r, 1, roster_count(ro) >= ROSTER_MAX_ITEMS ? "the roster of %s is full" : "out of memory (%s)", bare);
        roster_release(sm, ro);
        return 0;
    }
    enum sub_state before = it->state;
    admin_set_item(it, is_new, name, groups, ngroups, sub);
    struct sm_later *l = later_new();
    if (!l || roster_save(sm, ro, l) < 0) {
        later_abandon(sm, l);
        ctl_fail(r, 1, "storage error writing the roster of %s", bare);
        roster_release(sm, ro);
        return 0;
    }
    struct buf push = { 0 };
    roster_push_query(ro, it, contact, &push);
    later_push(l, bare, push.data, push.len);
    buf_free(&push);
    ctl_cols(r, "user\tcontact\tsubscription\tchange");
    ctl_row(r, "%s\t%s\t%s\t%s", bare, contact, sub_attr(it->state), is_new ? "added" : "updated");
    log_notice("roster of %s: %s %s by the administrator (sub: %s -> %s)", bare, is_new ? "added" : "updated",
               contact, sub_state_name(before), sub_state_name(it->state));
    later_ctl(l, r);
    later_submit(sm, l);
    roster_release(sm, ro);
    return 1;
}

static int cmd_roster_del(struct sm *sm, int argc, char **argv, struct ctl_req *r)
{
    char bare[JID_STR_MAX], contact[JID_STR_MAX];
    if (argc != 3) {
        ctl_fail(r, 2, "usage: roster-del USER CONTACT");
        return 0;
    }
    if (sm_ctl_user_jid(sm, argv[1], bare, sizeof bare, r) < 0) return 0;
    struct jid j;
    if (jid_parse(argv[2], strlen(argv[2]), &j) < 0 || jid_format_full(&j, contact, sizeof contact) < 0) {
        ctl_fail(r, 2, "'%s' is not a JID", argv[2]);
        return 0;
    }
    struct roster *ro = ctl_roster(sm, bare, r);
    if (!ro) return 0;
    struct ritem *it = roster_item(ro, contact);
    if (!it) {
        ctl_fail(r, 1, "%s is not in the roster of %s", contact, bare);
        roster_release(sm, ro);
        return 0;
    }
    int was_visible = !it->hidden;
    roster_item_del(ro, contact);
    struct sm_later *l = later_new();
    if (!l || roster_save(sm, ro, l) < 0) {
        later_abandon(sm, l);
        ctl_fail(r, 1, "storage error writing the roster of %s", bare);
        roster_release(sm, ro);
        return 0;
    }
    if (was_visible) {
        struct buf push = { 0 };
        roster_push_query(ro, NULL, contact, &push);
        later_push(l, bare, push.data, push.len);
        buf_free(&push);
    }
    ctl_cols(r, "user\tcontact\tchange");
    ctl_row(r, "%s\t%s\tremoved", bare, contact);
    log_notice("roster of %s: %s removed by the administrator", bare, contact);
    later_ctl(l, r);
    later_submit(sm, l);
    roster_release(sm, ro);
    return 1;
}

/* roster-import USER ITEM...: the bulk form of roster-add (xmppctl
 * roster-import sends consecutive items of one user in one request). ITEM
 * is "CONTACT SUBSCRIPTION[ NAME]" (a JID has no space; the name is the
 * rest of the field). Each item gets what roster-add CONTACT [NAME]
 * --subscription SUBSCRIPTION gives it (a new item has no groups, a name
 * replaces the old one when given), but the roster is loaded and written
 * once per request instead of once per item, and logged once. All or
 * nothing: an unusable item refuses the request. Pushes, as for
 * roster-add, only to the interested resources of an online user, each
 * with its own version. The row "USER\tITEMS" comes with every answer, so
 * xmppctl counts the items of a refused request. */
static int cmd_roster_import(struct sm *sm, int argc, char **argv, struct ctl_req *r)
{
    static const char *const subs[] = { "none", "to", "from", "both" };
    char bare[JID_STR_MAX];
    unsigned n = argc > 2 ? (unsigned)(argc - 2) : 0;
    ctl_cols(r, "user\titems");
    ctl_row(r, "%s\t%u", argc > 1 ? argv[1] : "", n);
    if (!n) {
        ctl_fail(r, 2, "usage: roster-import USER 'CONTACT SUBSCRIPTION[ NAME]'...");
        return 0;
    }
    if (sm_ctl_user_jid(sm, argv[1], bare, sizeof bare, r) < 0) return 0;
    struct imp {
        char contact[JID_STR_MAX];
        int sub;
        const char *name;    /* NULL: keep the item's name */
        struct ritem *it;
    } *v = calloc(n, sizeof *v);
    if (!v) {
        ctl_fail(r, 1, "out of memory");
        return 0;
    }
    struct roster *ro = NULL;
    unsigned added = 0, fresh = 0;
    for (unsigned i = 0; i < n; i++) {
        const char *t = argv[i + 2], *sp = strchr(t, ' ');
        struct jid j;
        if (!sp || jid_parse(t, (size_t)(sp - t), &j) < 0 || j.has_resource ||
            jid_format_bare(&j, v[i].contact, sizeof v[i].contact) < 0) {
            ctl_fail(r, 2, "item %u: expected 'CONTACT SUBSCRIPTION[ NAME]' with a bare JID, got '%.200s'", i + 1, t);
            goto out;
        }
        const char *st = sp + 1, *sp2 = strchr(st, ' ');
        size_t sl = sp2 ? (size_t)(sp2 - st) : strlen(st);
        v[i].sub = -1;
        for (int k = 0; k < 4; k++)
            if (sl == strlen(subs[k]) && strncmp(st, subs[k], sl) == 0) v[i].sub = k;
        v[i].name = sp2 ? sp2 + 1 : NULL;
        if (v[i].sub < 0) {
            ctl_fail(r, 2, "item %u (%s): the subscription is both, to, from or none", i + 1, v[i].contact);
            goto out;
        }
        if (strcmp(v[i].contact, bare) == 0) {
            ctl_fail(r, 2, "item %u: a user is not a contact of itself", i + 1);
            goto out;
        }
        if (v[i].name && strlen(v[i].name) > ROSTER_MAX_NAME) {
            ctl_fail(r, 2, "item %u (%s): name longer than %d bytes", i + 1, v[i].contact, ROSTER_MAX_NAME);
            goto out;
        }
    }
    if (!(ro = ctl_roster(sm, bare, r))) goto out;
    /* the roster limit, before anything changes */
    for (unsigned i = 0; i < n; i++) {
        int seen = roster_item(ro, v[i].contact) != NULL;
        for (unsigned k = 0; k < i && !seen; k++) seen = strcmp(v[k].contact, v[i].contact) == 0;
        fresh += !seen;
    }
    if (roster_count(ro) + fresh > ROSTER_MAX_ITEMS) {
        ctl_fail(r, 1, "the roster of %s would have more than %d items", bare, ROSTER_MAX_ITEMS);
        goto out;
    }
    struct sm_later *l = later_new();
    if (!l) {
        ctl_fail(r, 1, "out of memory (%s)", bare);
        goto out;
    }
    for (unsigned i = 0; i < n; i++) {
        struct ritem *it = roster_item(ro, v[i].contact);
        int is_new = !it || it->hidden;
        if (!it && !(it = roster_item_add(ro, v[i].contact))) {
            /* items before it changed in memory: a cached roster is dropped */
            later_invalidate(l, bare);
            later_abandon(sm, l);
            ctl_fail(r, 1, "out of memory (%s)", bare);
            goto out;
        }
        admin_set_item(it, is_new, v[i].name, NULL, 0, v[i].sub); /* as roster-add --subscription */
        added += is_new;
        v[i].it = it;
    }
    int online = hmap_get(&sm->users, bare, strlen(bare)) != NULL;
    unsigned long long ver0 = ro->ver;
    if (online) ro->ver += n - 1; /* one version per push; the last is the roster's */
    if (roster_save(sm, ro, l) < 0) {
        later_abandon(sm, l);
        ctl_fail(r, 1, "storage error writing the roster of %s", bare);
        goto out;
    }
    if (online) {
        unsigned long long last = ro->ver;
        struct buf push = { 0 };
        for (unsigned i = 0; i < n; i++) {
            ro->ver = ver0 + 1 + i;
            buf_clear(&push);
            roster_push_query(ro, v[i].it, v[i].contact, &push);
            later_push(l, bare, push.data, push.len);
        }
        ro->ver = last;
        buf_free(&push);
    }
    log_notice("roster of %s: %u item(s) imported by the administrator (%u added, %u updated)", bare, n, added,
               n - added);
    later_ctl(l, r);
    later_submit(sm, l);
    roster_release(sm, ro);
    free(v);
    return 1;
out:
    if (ro) roster_release(sm, ro);
    free(v);
    return 0;
}

int sm_roster_ctl(struct sm *sm, int argc, char **argv, struct ctl_req *r)
{
    if (strcmp(argv[0], "roster") == 0) {
        char bare[JID_STR_MAX];
        if (argc != 2) {
            ctl_fail(r, 2, "usage: roster USER");
            return 0;
        }
        if (sm_ctl_user_jid(sm, argv[1], bare, sizeof bare, r) == 0) cmd_roster(sm, bare, r);
        return 0;
    }
    if (strcmp(argv[0], "roster-add") == 0) return cmd_roster_add(sm, argc, argv, r);
    if (strcmp(argv[0], "roster-del") == 0) return cmd_roster_del(sm, argc, argv, r);
    if (strcmp(argv[0], "roster-import") == 0) return cmd_roster_import(sm, argc, argv, r);
    return sm_offline_ctl(sm, argc, argv, r);
}

void sm_roster_stats(struct sm *sm, struct ctl_req *r)
{
    ctl_row(r, "rosters_cached\t%zu", R.cache.count);
    ctl_row(r, "roster_loads\t%llu", R.loads);
    ctl_row(r, "roster_saves\t%llu", R.saves);
    ctl_row(r, "roster_gets\t%llu", R.gets);
    ctl_row(r, "roster_sets\t%llu", R.sets);
    ctl_row(r, "roster_removes\t%llu", R.removes);
    ctl_row(r, "roster_pushes\t%llu", R.pushes);
    ctl_row(r, "roster_write_failures\t%llu", R.failures);
    ctl_row(r, "stanzas_held_for_commit\t%llu", R.deferred);
    sm_presence_stats(sm, r);
    sm_offline_stats(sm, r);
}
