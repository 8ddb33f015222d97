/* sm_modules.c - xmpp-sm's side of the module API (xmppd/module.h): the
 * stanza, sending, user and store members of struct xm_api, running hook
 * handlers at the points sm_sessions.c, sm_presence.c and sm_offline.c
 * call them, IQ dispatch to handlers, and the `modules` and per-user module
 * commands of xmppctl. What a handler writes and sends goes through a
 * struct sm_later, so it leaves only after the commit (DESIGN §4). */
#include "config.h"
#include "sm.h"
#include "sm_roster.h"
#include "jid.h"
#include "log.h"
#include "module.h"
#include "stanza.h"
#include "trace.h"
#include "xml.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct xm_stanza {
    struct sm *sm;
    struct msg cur;           /* the stanza as it is now */
    struct buf body;          /* a replaced body (cur.f[4] points here) */
    xml_node_t *x;            /* parsed on demand */
    int parsed;
    int x_borrowed;           /* x is the caller's tree (IQ dispatch): not ours to free */
    char from[JID_STR_MAX], to[JID_STR_MAX], type[16];
    xm_host *h;               /* the running handler's */
    int stopped_with_error;   /* error() was called */
    int answered;             /* IQ: a result or error was sent */
    int kept;                 /* a copy made by iq_keep: freed when answered */
    int given_away;           /* iq_keep made a copy: that one answers */
    struct buf text;          /* api->text's NUL-terminated copy */
    char what[128];           /* what the handler did, for the trace */
};

/* The output set of the handler now running (created on first use). */
static struct sm_later *cur_later;
static int cur_wrote;

static struct modules MS;

static struct sm_later *later(void)
{
    if (!cur_later) cur_later = later_new();
    return cur_later;
}

/* After a handler: queue what it wrote and sent. */
static void handler_done(struct sm *sm)
{
    /* detach first: submitting may run outputs at once, which may run
     * other handlers that must start a set of their own */
    struct sm_later *l = cur_later;
    cur_later = NULL;
    cur_wrote = 0;
    if (l) later_submit(sm, l);
}

/* ---------------- a stanza ---------------- */

static void st_init(xm_stanza *st, struct sm *sm, const struct msg *m)
{
    memset(st, 0, offsetof(xm_stanza, from));
    st->sm = sm;
    st->cur = *m;
    st->stopped_with_error = st->answered = st->kept = st->given_away = 0;
    st->text = (struct buf){ 0 };
    st->what[0] = '\0';
    if (!msg_str(m, 0, st->from, sizeof st->from)) st->from[0] = '\0';
    if (!msg_str(m, 1, st->to, sizeof st->to)) st->to[0] = '\0';
    const char *type = m->stype == STYPE_NONE ? "" : stanza_type_name(m->stype);
    size_t tl = strlen(type);
    if (tl >= sizeof st->type) tl = sizeof st->type - 1;
    memcpy(st->type, type, tl);
    st->type[tl] = '\0';
    st->h = NULL;
}

static void st_free(xm_stanza *st)
{
    if (!st->x_borrowed) xml_free(st->x);
    buf_free(&st->body);
    buf_free(&st->text);
}

/* A kept IQ was answered: its outputs go, and so does it. */
static void kept_done(xm_stanza *st)
{
    if (!st->kept) return;
    handler_done(st->sm);
    st_free(st);
    free(st);
}

static enum xm_kind st_kind(const xm_stanza *st)
{
    return st->cur.kind == KIND_PRESENCE ? XM_PRESENCE : st->cur.kind == KIND_IQ ? XM_IQ : XM_MESSAGE;
}
static const char *st_type(const xm_stanza *st) { return st->type; }
static const char *st_from(const xm_stanza *st) { return st->from; }
static const char *st_to(const xm_stanza *st) { return st->to; }
static xm_host *st_host(const xm_stanza *st) { return st->h; }
static const char *st_text(const xm_stanza *st, size_t *len)
{
    /* record fields are views into the frame, not NUL-terminated */
    xm_stanza *w = (xm_stanza *)(uintptr_t)st;
    buf_clear(&w->text);
    buf_add(&w->text, st->cur.f[4].p, st->cur.f[4].n);
    const char *t = buf_cstr(&w->text);
    if (len) *len = t ? w->text.len : 0;
    return t ? t : "";
}

static const xm_node *st_xml(xm_stanza *st)
{
    if (!st->parsed) {
        st->parsed = 1;
        st->x = xml_parse(st->cur.f[4].p, st->cur.f[4].n, NS_CLIENT);
    }
    return (const xm_node *)(const void *)st->x;
}

static int st_replace(xm_stanza *st, const char *xml, size_t len)
{
    xml_node_t *x = xml_parse(xml, len, NS_CLIENT);
    const char *kind = stanza_kind_name(st->cur.kind);
    if (!x || strcmp(x->name, kind) != 0) {
        xml_free(x);
        return -1;
    }
    /* keep from and to as they are: the routing decision is not the module's */
    xml_set_attr(x, "from", st->from[0] ? st->from : NULL);
    xml_set_attr(x, "to", st->to[0] ? st->to : NULL);
    struct buf nb = { 0 };
    if (xml_serialize(x, &nb, NS_CLIENT) < 0 || nb.oom) {
        xml_free(x);
        buf_free(&nb);
        return -1;
    }
    buf_free(&st->body);
    st->body = nb;
    st->cur.f[4].p = st->body.data;
    st->cur.f[4].n = st->body.len;
    if (!st->x_borrowed) xml_free(st->x);
    st->x = x;
    st->x_borrowed = 0;
    st->parsed = 1;
    snprintf(st->what, sizeof st->what, "changed the stanza");
    return 0;
}

/* The error reply to st, with an application condition inside <error/>. */
static void st_error(xm_stanza *st, const char *cond, const char *text, const char *app_xml)
{
    struct buf out = { 0 };
    if (st->cur.stype == STYPE_ERROR || st->answered) goto out; /* RFC 6120 §8.3.1 */
    st->stopped_with_error = st->answered = 1;
    snprintf(st->what, sizeof st->what, "stopped it: error %s", cond);
    unsigned c = stanza_error_parse(cond, strlen(cond));
    if (c == SE_NONE) {
        log_warn("module %s: unknown error condition '%s', sent undefined-condition", st->h ? st->h->mod->name : "?",
                 cond);
        c = SE_UNDEFINED_CONDITION;
    }
    if (!st->from[0]) goto out;
    if (stanza_error_reply(st->cur.f[4].p, st->cur.f[4].n, c, text, st->from, &out) < 0) goto out;
    if (app_xml && *app_xml) {
        /* the canonical reply ends with "...</error></KIND>": the
         * application condition goes last inside <error/> (RFC 6120 §8.3.2) */
        const char *end = NULL;
        for (const char *p = buf_cstr(&out); p && (p = strstr(p, "</error>")); p++) end = p;
        if (end) {
            struct buf withapp = { 0 };
            buf_add(&withapp, out.data, (size_t)(end - out.data));
            buf_adds(&withapp, app_xml);
            buf_adds(&withapp, end);
            buf_free(&out);
            out = withapp;
        }
    }
    st->sm->n.errors_sent++;
    if (strchr(st->from, '/') && sm_session_of(st->sm, st->from)) {
        /* the sender is a session of this shard: the answer is the
         * server's, handed to it directly rather than routed back through
         * the sender's own incoming hooks (its privacy list would drop an
         * error "from" the contact it blocked, XEP-0016 §2.14) */
        char bare[JID_STR_MAX];
        snprintf(bare, sizeof bare, "%.*s", (int)strcspn(st->from, "/"), st->from);
        later_deliver(later(), bare, st->from, st->cur.kind, STYPE_ERROR, st->to[0] ? st->to : "", out.data,
                      out.len, trace_id_of(&st->cur));
    } else {
        later_send(later(), st->cur.kind, STYPE_ERROR, st->to[0] ? st->to : "", st->from, out.data, out.len,
                   trace_id_of(&st->cur));
    }
out:
    buf_free(&out);
    kept_done(st);
}

static void st_iq_result(xm_stanza *st, const char *payload)
{
    if (st->answered || st->cur.kind != KIND_IQ || (st->cur.stype != STYPE_GET && st->cur.stype != STYPE_SET)) return;
    st->answered = 1;
    const xm_node *x = st_xml(st);
    const char *id = x ? xml_attr(st->x, "id") : NULL;
    struct buf b = { 0 };
    buf_adds(&b, "<iq xmlns='jabber:client' type='result'");
    if (st->to[0]) {
        buf_adds(&b, " from='");
        buf_add_xml_escaped(&b, st->to, strlen(st->to));
        buf_adds(&b, "'");
    }
    buf_adds(&b, " to='");
    buf_add_xml_escaped(&b, st->from, strlen(st->from));
    buf_adds(&b, "' id='");
    buf_add_xml_escaped(&b, id ? id : "", id ? strlen(id) : 0);
    if (payload && *payload) {
        buf_adds(&b, "'>");
        buf_adds(&b, payload);
        buf_adds(&b, "</iq>");
    } else {
        buf_adds(&b, "'/>");
    }
    if (!b.oom) later_send(later(), KIND_IQ, STYPE_RESULT, st->to, st->from, b.data, b.len, trace_id_of(&st->cur));
    buf_free(&b);
    kept_done(st);
}

static xm_stanza *st_iq_keep(xm_stanza *iq)
{
    if (iq->kept || iq->given_away || iq->answered || iq->cur.kind != KIND_IQ) return NULL;
    xm_stanza *k = malloc(sizeof *k);
    if (!k) return NULL;
    memcpy(k, iq, sizeof *k);
    k->x = NULL; /* the caller's tree goes with the handler's return */
    k->parsed = 0;
    k->x_borrowed = 0;
    k->text = (struct buf){ 0 };
    k->body = (struct buf){ 0 };
    buf_add(&k->body, iq->cur.f[4].p, iq->cur.f[4].n);
    if (k->body.oom) {
        buf_free(&k->body);
        free(k);
        return NULL;
    }
    /* the frame the record points into is gone after this turn */
    msg_set(&k->cur, 0, k->from);
    msg_set(&k->cur, 1, k->to);
    msg_set(&k->cur, 2, "");
    msg_set(&k->cur, 3, "");
    msg_setn(&k->cur, 4, k->body.data, k->body.len);
    k->kept = 1;
    iq->given_away = 1;
    return k;
}

/* ---------------- sending, users ---------------- */

static int api_send(xm_host *h, const char *xml, size_t len)
{
    (void)h;
    xml_node_t *x = xml_parse(xml, len, NS_CLIENT);
    int rc = -1;
    if (!x) goto out;
    unsigned kind = strcmp(x->name, "message") == 0 ? KIND_MESSAGE : strcmp(x->name, "presence") == 0 ? KIND_PRESENCE
                    : strcmp(x->name, "iq") == 0 ? KIND_IQ : KIND_NONE;
    const char *from = xml_attr(x, "from"), *to = xml_attr(x, "to"), *type = xml_attr(x, "type");
    char f[JID_STR_MAX], t[JID_STR_MAX];
    if (kind == KIND_NONE || !from || !to || jid_normalize(from, strlen(from), f, sizeof f) < 0 ||
        jid_normalize(to, strlen(to), t, sizeof t) < 0) {
        log_warn("module %s: send: not a stanza with valid from and to", h->mod->name);
        goto out;
    }
    unsigned stype = type ? stanza_type_parse(kind, type) : STYPE_NONE;
    struct buf b = { 0 };
    if (xml_serialize(x, &b, NS_CLIENT) == 0 && !b.oom) {
        later_send(later(), kind, stype, f, t, b.data, b.len, 0);
        rc = 0;
    }
    buf_free(&b);
out:
    xml_free(x);
    return rc;
}

static int api_send_presence(xm_host *h, const char *full, const char *to)
{
    (void)h;
    struct session *s = sm_session_of(&SM, full);
    if (!s || !s->available || !s->presence) return 0;
    xml_node_t *p = xml_parse(s->presence, strlen(s->presence), NS_CLIENT);
    struct buf b = { 0 };
    int rc = -1;
    if (p && xml_set_attr(p, "from", s->full) == 0 && xml_set_attr(p, "to", to) == 0 &&
        xml_serialize(p, &b, NS_CLIENT) == 0 && !b.oom) {
        later_send(later(), KIND_PRESENCE, STYPE_NONE, s->full, to, b.data, b.len, 0);
        rc = 1;
    }
    xml_free(p);
    buf_free(&b);
    return rc;
}

static int api_user_exists(xm_host *h, const char *bare)
{
    (void)h;
    return sm_account_exists(&SM, bare, strlen(bare));
}

static int api_each_session(xm_host *h, const char *bare, void (*fn)(const char *, int, int, void *), void *arg)
{
    (void)h;
    struct sm_user *u = hmap_get(&SM.users, bare, strlen(bare));
    int n = 0;
    for (struct session *s = u ? u->sessions : NULL; s; s = s->next_of_user, n++)
        if (fn) fn(s->full, s->available, s->priority, arg);
    return n;
}

static int api_last_unavailable(xm_host *h, const char *bare, long long *when, xm_buf *status)
{
    (void)h;
    long t = 0;
    int rc = sm_presence_last(&SM, bare, &t, status ? &status->b : NULL);
    if (rc == 1 && when) *when = t;
    return rc;
}

static int api_roster_item(xm_host *h, const char *bare, const char *contact, char sub[8], xm_buf *groups)
{
    (void)h;
    int err = 0;
    struct roster *r = roster_get(&SM, bare, &err);
    if (!r) return err ? -1 : 0;
    struct ritem *it = roster_item(r, contact);
    int rc = 0;
    if (it && !it->hidden) {
        int to = sub_has_to(it->state), from = sub_has_from(it->state);
        snprintf(sub, 8, "%s", to && from ? "both" : to ? "to" : from ? "from" : "none");
        for (unsigned i = 0; groups && i < it->ngroups; i++) buf_add(&groups->b, it->groups[i], strlen(it->groups[i]) + 1);
        rc = 1;
    }
    roster_release(&SM, r);
    return rc;
}

struct roster_walk {
    void (*fn)(const char *contact, const char *sub, const char *groups, size_t ngroups, void *arg);
    void *arg;
    struct buf groups;
    int n;
};

static void roster_walk_one(void *value, void *arg)
{
    const struct ritem *it = value;
    struct roster_walk *w = arg;
    if (it->hidden) return;
    int to = sub_has_to(it->state), from = sub_has_from(it->state);
    buf_clear(&w->groups);
    for (unsigned i = 0; i < it->ngroups; i++) buf_add(&w->groups, it->groups[i], strlen(it->groups[i]) + 1);
    w->fn(it->jid, to && from ? "both" : to ? "to" : from ? "from" : "none", w->groups.data ? w->groups.data : "",
          it->ngroups, w->arg);
    w->n++;
}

static int api_each_roster_item(xm_host *h, const char *bare,
                                void (*fn)(const char *, const char *, const char *, size_t, void *), void *arg)
{
    (void)h;
    int err = 0;
    struct roster *r = roster_get(&SM, bare, &err);
    if (!r) return err ? -1 : 0;
    struct roster_walk w = { fn, arg, { 0 }, 0 };
    hmap_each(&r->items, roster_walk_one, &w);
    buf_free(&w.groups);
    roster_release(&SM, r);
    return w.n;
}

static long long api_started(xm_host *h)
{
    (void)h;
    return SM.d->started;
}

/* ---------------- stores ---------------- */

/* A read cache in front of each module store: hooks ask for the same keys
 * with every stanza (the privacy lists of users who have none, mostly),
 * and every tdb read outside a transaction costs two fcntl() lock calls
 * (-40 % chat throughput with the default modules before this cache).
 * Entries are dropped on a write, and nothing read is cached while a
 * store has writes not yet committed (until the end of the loop turn): so
 * a failed commit leaves no uncommitted value in the cache. The whole
 * cache goes when it is full and after a restore. */
#define CACHE_MAX_ENTRIES 65536
#define CACHE_MAX_VALUE 4096

struct cached {
    int found;
    struct buf val;
    size_t klen;
    char key[];
};

struct xm_store {
    store_t *s;
    char *name;
    struct hmap cache;       /* key -> struct cached */
    int dirty;               /* written in this loop turn */
};
static struct xm_store stores[SM_MAX_STORES];
static unsigned nstores;

static void cache_free_one(void *value, void *arg)
{
    (void)arg;
    struct cached *c = value;
    buf_free(&c->val);
    free(c);
}

static void cache_clear(struct xm_store *xs)
{
    hmap_each(&xs->cache, cache_free_one, NULL);
    hmap_free(&xs->cache);
    memset(&xs->cache, 0, sizeof xs->cache);
}

static void cache_drop(struct xm_store *xs, const char *key, size_t klen)
{
    struct cached *c = hmap_del(&xs->cache, key, klen);
    if (c) cache_free_one(c, NULL);
}

/* After the turn's commits (LOOP_WORK): reads can be cached again. */
static void stores_committed(loop_t *loop, void *arg)
{
    (void)loop;
    (void)arg;
    for (unsigned i = 0; i < nstores; i++) stores[i].dirty = 0;
}

static void caches_restored(struct sm *sm)
{
    (void)sm;
    for (unsigned i = 0; i < nstores; i++) cache_clear(&stores[i]);
}

static xm_store *api_store(xm_host *h, const char *name)
{
    for (unsigned i = 0; i < nstores; i++)
        if (strcmp(stores[i].name, name) == 0) return &stores[i];
    if (nstores >= SM_MAX_STORES || !*name || strchr(name, '/') || name[0] == '.') {
        log_err("module %s: store '%s' refused (bad name or too many stores)", h->mod->name, name);
        return NULL;
    }
    char file[256];
    snprintf(file, sizeof file, "%s.tdb", name);
    store_t *s = sm_store_open(&SM, file);
    if (!s) return NULL;
    stores[nstores].s = s;
    stores[nstores].name = strdup(name);
    return stores[nstores].name ? &stores[nstores++] : NULL;
}

static int api_get(xm_store *s, const char *key, size_t klen, xm_buf *out)
{
    struct cached *c = hmap_get(&s->cache, key, klen);
    if (c) {
        buf_clear(&out->b);
        if (c->found) buf_add(&out->b, c->val.data, c->val.len);
        return out->b.oom ? -1 : c->found;
    }
    int rc = store_get(s->s, key, klen, &out->b);
    if (rc < 0 || s->dirty || (rc == 1 && out->b.len > CACHE_MAX_VALUE)) return rc;
    if (s->cache.count >= CACHE_MAX_ENTRIES) cache_clear(s);
    c = calloc(1, sizeof *c + klen);
    if (!c) return rc;
    c->found = rc;
    c->klen = klen;
    memcpy(c->key, key, klen);
    if (rc == 1) buf_add(&c->val, out->b.data, out->b.len);
    int failed = 0;
    if (c->val.oom || (hmap_put(&s->cache, c->key, klen, c, &failed), failed)) cache_free_one(c, NULL);
    return rc;
}

static int api_put(xm_store *s, const char *key, size_t klen, const void *val, size_t vlen)
{
    struct sm_later *l = later();
    if (!l) return -1;
    cur_wrote = 1;
    s->dirty = 1;
    cache_drop(s, key, klen);
    return later_put(&SM, l, s->s, key, klen, val, vlen);
}

static int api_del(xm_store *s, const char *key, size_t klen)
{
    struct sm_later *l = later();
    if (!l) return -1;
    cur_wrote = 1;
    s->dirty = 1;
    cache_drop(s, key, klen);
    return later_del(&SM, l, s->s, key, klen);
}

struct each_arg {
    const char *prefix;
    size_t plen;
    int (*fn)(const char *, size_t, const char *, size_t, void *);
    void *arg;
    int n;
};

static int each_one(const char *key, size_t klen, const char *val, size_t vlen, void *arg)
{
    struct each_arg *a = arg;
    if (a->plen && (klen < a->plen || memcmp(key, a->prefix, a->plen) != 0)) return 0;
    a->n++;
    return a->fn(key, klen, val, vlen, a->arg);
}

static int api_each(xm_store *s, const char *prefix, size_t plen,
                    int (*fn)(const char *, size_t, const char *, size_t, void *), void *arg)
{
    struct each_arg a = { prefix, plen, fn, arg, 0 };
    if (store_each(s->s, each_one, &a) < 0) return -1;
    return a.n;
}

/* ---------------- hooks ---------------- */

static struct mod_vhost *vhost_of(const char *jid, size_t len)
{
    const char *at = memchr(jid, '@', len);
    const char *d = at ? at + 1 : jid;
    size_t dl = len - (size_t)(d - jid);
    const char *slash = memchr(d, '/', dl);
    if (slash) dl = (size_t)(slash - d);
    return modules_vhost(&MS, d, dl);
}

static const struct msg *run_hook(struct sm *sm, struct mod_vhost *vh, enum xm_hook hook, xm_stanza *st,
                                  int step)
{
    for (size_t i = 0; i < vh->n_hooks[hook]; i++) {
        const struct mod_hook *k = &vh->hooks[hook][i];
        size_t before = st->body.len;
        const char *before_p = st->cur.f[4].p;
        st->h = k->h;
        st->what[0] = '\0';
        int v = k->stanza(st, k->data);
        handler_done(sm);
        int changed = st->cur.f[4].p != before_p || st->body.len != before;
        if (v == XM_STOP) {
            sm->n.hook_stops++;
            if (!st->stopped_with_error) snprintf(st->what, sizeof st->what, "stopped it: dropped");
            if (st->cur.flags & MSG_F_TRACED)
                trace_msg((unsigned)step, &st->cur, 0, "hook %s: module %s %s", modules_hook_name(hook), k->h->mod->name,
                          st->what);
            log_debug("hook %s: module %s %s (%s from %s)", modules_hook_name(hook), k->h->mod->name, st->what,
                      stanza_kind_name(st->cur.kind), st->from);
            return NULL;
        }
        if (changed) sm->n.hook_changes++;
        if (changed && (st->cur.flags & MSG_F_TRACED))
            trace_msg((unsigned)step, &st->cur, 0, "hook %s: module %s changed the stanza", modules_hook_name(hook),
                      k->h->mod->name);
    }
    return &st->cur;
}

const struct msg *sm_hook(struct sm *sm, enum xm_hook hook, const struct msg *m, const char *jid, size_t jlen,
                          struct sm_hook_hold *hold, int step)
{
    struct mod_vhost *vh = vhost_of(jid, jlen);
    enum xm_hook kind_hook = XM_HOOK_END;
    if (hook == XM_HOOK_USER_SEND_PACKET || hook == XM_HOOK_USER_RECEIVE_PACKET)
        kind_hook = (enum xm_hook)(hook + (m->kind == KIND_MESSAGE ? 1 : m->kind == KIND_PRESENCE ? 2 : 3));
    if (!vh || (!vh->n_hooks[hook] && (kind_hook == XM_HOOK_END || !vh->n_hooks[kind_hook]))) return m;
    /* on the stack, and only its head cleared: this runs for every
     * stanza, several times (the JID buffers are filled by st_init) */
    xm_stanza stanza, *st = &stanza;
    const struct msg *result = m;
    st_init(st, sm, m);
    /* at delivery, 'to' is the session's full JID (module.h) */
    if (hook == XM_HOOK_DELIVER_PACKET) snprintf(st->to, sizeof st->to, "%.*s", (int)jlen, jid);
    const struct msg *out = run_hook(sm, vh, hook, st, step);
    if (out && kind_hook != XM_HOOK_END) out = run_hook(sm, vh, kind_hook, st, step);
    if (!out) {
        result = NULL;
    } else if (st->body.data) { /* changed: the caller keeps the new body */
        hold->m = st->cur;
        hold->body = st->body;
        st->body = (struct buf){ 0 };
        hold->m.f[4].p = hold->body.data;
        result = &hold->m;
    }
    st_free(st);
    return result;
}

void sm_hook_done(struct sm_hook_hold *hold)
{
    buf_free(&hold->body);
}

int sm_presence_out_allowed(struct sm *sm, unsigned stype, const char *from, const char *to, const char **body,
                            size_t *len, uint64_t trace, struct sm_hook_hold *hold)
{
    struct mod_vhost *vh = vhost_of(from, strlen(from));
    if (!vh || !vh->n_hooks[XM_HOOK_PRESENCE_OUT]) return 1;
    struct msg m;
    msg_init(&m, MSG_STANZA);
    m.kind = KIND_PRESENCE;
    m.stype = (uint8_t)stype;
    m.trace = trace;
    m.flags = trace ? MSG_F_TRACED : 0;
    msg_set(&m, 0, from);
    msg_set(&m, 1, to);
    msg_setn(&m, 4, *body, *len);
    const struct msg *out = sm_hook(sm, XM_HOOK_PRESENCE_OUT, &m, from, strlen(from), hold, 4);
    if (!out) return 0;
    if (out != &m) {
        *body = out->f[4].p;
        *len = out->f[4].n;
    }
    return 1;
}

void sm_hook_event(struct sm *sm, enum xm_hook hook, const char *jid)
{
    struct mod_vhost *vh = vhost_of(jid, strlen(jid));
    if (!vh) return;
    for (size_t i = 0; i < vh->n_hooks[hook]; i++) {
        const struct mod_hook *k = &vh->hooks[hook][i];
        k->event(k->h, jid, k->data);
        handler_done(sm);
    }
}

/* ---------------- IQ dispatch ---------------- */

int sm_modules_iq(struct sm *sm, const struct msg *m, const xml_node_t *iq, const xml_node_t *payload, int for_user)
{
    int traced = m->flags & MSG_F_TRACED;
    char target[JID_STR_MAX];
    /* an IQ without 'to' is for the sender's account (RFC 6120 §10.3.3) */
    if (!msg_str(m, m->f[1].n ? 1 : 0, target, sizeof target)) return 0;
    struct mod_vhost *vh = vhost_of(target, strlen(target));
    const struct mod_iq *q = vh ? modules_iq(vh, payload->ns, payload->name) : NULL;
    if (!q || !(q->flags & (for_user ? XM_IQ_ACCOUNT : XM_IQ_SERVER))) return 0;
    if (!(q->flags & (m->stype == STYPE_GET ? XM_IQ_GET : XM_IQ_SET))) {
        if (traced) trace_msg(5, m, 0, "error: bad-request (%s %s not defined)", q->ns, stanza_type_name(m->stype));
        sm_reply_error(sm, m, SE_BAD_REQUEST, NULL);
        return 1;
    }
    if (traced) trace_msg(5, m, 0, "iq->module %s (%s)%s", q->h->mod->name, q->ns, for_user ? " for the account" : "");
    xm_stanza *st = calloc(1, sizeof *st);
    if (!st) {
        sm_reply_error(sm, m, SE_INTERNAL_SERVER_ERROR, NULL);
        return 1;
    }
    st_init(st, sm, m);
    st->h = q->h;
    /* sm_iq_to_server parsed it already: the id of the result comes from there */
    st->x = (xml_node_t *)(uintptr_t)iq;
    st->parsed = st->x_borrowed = 1;
    q->fn(st, (const xm_node *)(const void *)payload, q->data);
    if (!st->answered && !st->given_away) {
        log_err("module %s: IQ handler for %s answered nothing; internal-server-error sent", q->h->mod->name, q->ns);
        st_error(st, "internal-server-error", NULL, NULL);
    }
    if (cur_later && cur_wrote) {
        /* a failed commit turns the answer into an error (DESIGN §4) */
        struct buf e = { 0 };
        if (stanza_error_reply(m->f[4].p, m->f[4].n, SE_INTERNAL_SERVER_ERROR, NULL, st->from, &e) == 0)
            later_on_failure(cur_later, KIND_IQ, st->to, st->from, e.data, e.len);
        buf_free(&e);
    }
    handler_done(sm);
    st_free(st);
    free(st);
    return 1;
}

/* ---------------- asking the other shards ---------------- */

#define ASK_TIMEOUT_MS 5000

/* One ask_shards in flight. */
struct ask {
    struct ask *next;
    uint64_t id;
    xm_host *h;
    void (*done)(xm_host *h, const char *const *answers, const size_t *lens, size_t n, void *arg);
    void *arg;
    unsigned n, got;
    char **answers;          /* n slots, NULL until answered */
    size_t *lens;
    loop_timer_t *timer;
};
static struct ask *asks;
static uint64_t next_ask_id;

static void ask_finish(struct ask *a)
{
    struct ask **pp = &asks;
    while (*pp && *pp != a) pp = &(*pp)->next;
    if (*pp) *pp = a->next;
    if (a->timer) loop_timer_cancel(SM.d->loop, a->timer);
    a->done(a->h, (const char *const *)a->answers, a->lens, a->n, a->arg);
    handler_done(&SM);
    for (unsigned i = 0; i < a->n; i++) free(a->answers[i]);
    free(a->answers);
    free(a->lens);
    free(a);
}

static void ask_timeout(loop_t *loop, void *arg)
{
    (void)loop;
    struct ask *a = arg;
    a->timer = NULL;
    if (a->got < a->n)
        log_warn("module %s: %u of %u shards answered within %d ms; going on without the others", a->h->mod->name,
                 a->got, a->n, ASK_TIMEOUT_MS);
    ask_finish(a);
}

/* This shard's own answer to a question (ours or another shard's). */
static int answer_here(xm_host *h, const char *q, size_t len, struct buf *out)
{
    if (!h || !h->shard_fn) return -1;
    xm_buf b = { 0 };
    int rc = h->shard_fn(h, q, len, &b, h->shard_data);
    if (rc == 0 && !b.b.oom) *out = b.b;
    else buf_free(&b.b);
    return rc == 0 && !b.b.oom ? 0 : -1;
}

static void ask_store(struct ask *a, unsigned shard, const char *p, size_t n)
{
    if (shard >= a->n || a->answers[shard]) return;
    char *copy = malloc(n + 1);
    if (!copy) return;
    memcpy(copy, p, n);
    copy[n] = '\0';
    a->answers[shard] = copy;
    a->lens[shard] = n;
    a->got++;
}

static int api_ask_shards(xm_host *h, const char *query, size_t len,
                          void (*done)(xm_host *, const char *const *, const size_t *, size_t, void *), void *arg)
{
    struct sm *sm = &SM;
    unsigned n = sm->d->conf.sm_shards;
    struct ask *a = calloc(1, sizeof *a);
    if (!a || !(a->answers = calloc(n, sizeof *a->answers)) || !(a->lens = calloc(n, sizeof *a->lens))) goto fail;
    a->id = ++next_ask_id;
    a->h = h;
    a->done = done;
    a->arg = arg;
    a->n = n;
    struct buf mine = { 0 };
    if (answer_here(h, query, len, &mine) == 0) ask_store(a, sm->shard, mine.data ? mine.data : "", mine.len);
    buf_free(&mine);
    for (unsigned k = 0; k < n; k++) {
        if (k == sm->shard) continue;
        char dest[PEER_NAME_MAX];
        snprintf(dest, sizeof dest, "sm-%u", k);
        struct msg m;
        msg_init(&m, MSG_MODULE_ASK);
        m.id = a->id;
        msg_set(&m, 0, h->mod->name);
        msg_set(&m, 1, h->vh->domain);
        msg_set(&m, 2, dest);
        msg_set(&m, 3, sm->d->instance);
        msg_setn(&m, 4, query, len);
        ipc_send(sm->router, NULL, &m);
    }
    /* all answers here (one shard): still later, as promised */
    a->timer = loop_timer_add(sm->d->loop, a->got == n ? 0 : ASK_TIMEOUT_MS, ask_timeout, a);
    if (!a->timer) goto fail;
    a->next = asks;
    asks = a;
    return 0;
fail:
    if (a) {
        for (unsigned i = 0; a->answers && i < a->n; i++) free(a->answers[i]);
        free(a->answers);
        free(a->lens);
        free(a);
    }
    return -1;
}

void sm_modules_ask(struct sm *sm, const struct msg *m)
{
    char name[64], domain[JID_STR_MAX], origin[PEER_NAME_MAX];
    if (!msg_str(m, 0, name, sizeof name) || !msg_str(m, 1, domain, sizeof domain) ||
        !msg_str(m, 3, origin, sizeof origin)) {
        log_warn("MODULE_ASK with unusable fields dropped");
        return;
    }
    struct mod_vhost *vh = modules_vhost(&MS, domain, strlen(domain));
    struct buf out = { 0 };
    int rc = answer_here(vh ? modules_host(vh, name) : NULL, m->f[4].p, m->f[4].n, &out);
    handler_done(sm);
    if (rc < 0) log_notice("MODULE_ASK from %s: module %s on %s does not answer here", origin, name, domain);
    struct msg a;
    msg_init(&a, MSG_MODULE_ANSWER);
    a.id = m->id;
    a.num = rc < 0;
    msg_set(&a, 0, name);
    msg_set(&a, 1, domain);
    msg_set(&a, 2, origin);
    msg_set(&a, 3, sm->d->instance);
    msg_setn(&a, 4, out.data ? out.data : "", out.len);
    ipc_send(sm->router, NULL, &a);
    buf_free(&out);
}

void sm_modules_answer(struct sm *sm, const struct msg *m)
{
    (void)sm;
    char origin[PEER_NAME_MAX];
    struct ask *a = asks;
    while (a && a->id != m->id) a = a->next;
    int k = msg_str(m, 3, origin, sizeof origin) ? daemon_instance_number(origin) : -1;
    if (!a || k < 0 || strncmp(origin, "sm-", 3) != 0) {
        log_debug("MODULE_ANSWER %llu: no such question (late, after its timeout?)", (unsigned long long)m->id);
        return;
    }
    if (m->num == 0) ask_store(a, (unsigned)k, m->f[4].p, m->f[4].n);
    else a->got++; /* answered as missing */
    if (a->got >= a->n) ask_finish(a);
}

/* ---------------- control commands ---------------- */

static int cmd_modules(struct sm *sm, int argc, char **argv, struct ctl_req *r)
{
    (void)sm;
    ctl_cols(r, "host\tmodule\tsource\tdescription");
    for (size_t i = 0; i < MS.n; i++) {
        struct mod_vhost *vh = &MS.v[i];
        if (argc > 1 && strcasecmp(argv[1], vh->domain) != 0) continue;
        for (size_t j = 0; j < vh->n; j++)
            ctl_row(r, "%s\t%s\t%s\t%s", vh->domain, vh->mods[j]->mod->name, vh->mods[j]->source,
                    vh->mods[j]->mod->description ? vh->mods[j]->mod->description : "");
    }
    if (argc > 1 && !modules_vhost(&MS, argv[1], strlen(argv[1]))) {
        ctl_fail(r, 1, "%s is not a host of this server", argv[1]);
        return 0;
    }
    return 0;
}

/* `mod NAME USER ARG...`: a module's per-user command. */
static int cmd_mod(struct sm *sm, int argc, char **argv, struct ctl_req *r)
{
    char bare[JID_STR_MAX];
    if (argc < 3) {
        ctl_fail(r, 2, "usage: mod COMMAND USER [ARG...]");
        return 0;
    }
    if (sm_ctl_user_jid(sm, argv[2], bare, sizeof bare, r) < 0) return 0;
    struct mod_vhost *vh = vhost_of(bare, strlen(bare));
    const struct mod_fn *c = vh ? modules_cmd(vh, argv[1]) : NULL;
    if (!c) {
        ctl_fail(r, 1, "no module of %s offers the command '%s'", vh ? vh->domain : "this host", argv[1]);
        return 0;
    }
    int exists = sm_account_exists(sm, bare, strlen(bare));
    if (exists <= 0) {
        ctl_fail(r, 1, exists < 0 ? "account lookup failed" : "no such user: %s", bare);
        return 0;
    }
    xm_buf out = { 0 };
    int rc = c->cmd(c->h, bare, argc - 3, argv + 3, &out, c->data);
    const char *text = buf_cstr(&out.b);
    if (rc == 0) {
        if (text && out.b.len) buf_add(&r->rows, text, out.b.len);
        if (out.b.len && text[out.b.len - 1] != '\n') buf_adds(&r->rows, "\n");
    } else {
        ctl_fail(r, rc == 1 ? 2 : 1, "%s", text && *text ? text : "the command failed");
    }
    buf_free(&out.b);
    if (cur_later && cur_wrote) { /* answer after the commit */
        later_ctl(cur_later, r);
        handler_done(sm);
        return 1;
    }
    handler_done(sm);
    return 0;
}

int sm_modules_ctl(struct sm *sm, int argc, char **argv, struct ctl_req *r)
{
    if (strcmp(argv[0], "modules") == 0) return cmd_modules(sm, argc, argv, r);
    if (strcmp(argv[0], "mod") == 0) return cmd_mod(sm, argc, argv, r);
    return -1;
}

/* ---------------- start and stop ---------------- */

int sm_modules_start(struct sm *sm)
{
    struct xm_api api;
    char err[1024];
    modules_api_init(&api);
    api.kind = st_kind;
    api.type = st_type;
    api.from = st_from;
    api.to = st_to;
    api.host = st_host;
    api.xml = st_xml;
    api.text = st_text;
    api.replace = st_replace;
    api.error = st_error;
    api.iq_result = st_iq_result;
    api.send = api_send;
    api.send_presence = api_send_presence;
    api.each_roster_item = api_each_roster_item;
    api.iq_keep = st_iq_keep;
    api.ask_shards = api_ask_shards;
    api.user_exists = api_user_exists;
    api.each_session = api_each_session;
    api.last_unavailable = api_last_unavailable;
    api.roster_item = api_roster_item;
    api.started = api_started;
    api.store = api_store;
    api.get = api_get;
    api.put = api_put;
    api.del = api_del;
    api.each = api_each;
    sm_on_restore(sm, caches_restored); /* the stores' contents were replaced */
    if (loop_on_turn_end(sm->d->loop, LOOP_FLUSH, stores_committed, NULL) < 0) return -1;
    if (modules_load(&MS, &sm->d->conf, "xmpp-sm", 1, &api, err, sizeof err) < 0) {
        log_err("modules: %s", err);
        return -1;
    }
    handler_done(sm); /* writes an init() made */
    return 0;
}

void sm_modules_stop(struct sm *sm)
{
    loop_off_turn_end(sm->d->loop, stores_committed, NULL);
    modules_unload(&MS);
    for (unsigned i = 0; i < nstores; i++) {
        cache_clear(&stores[i]);
        free(stores[i].name);
    }
    nstores = 0;
}

const struct mod_vhost *sm_modules_vhost(const char *domain, size_t len)
{
    return modules_vhost(&MS, domain, len);
}
