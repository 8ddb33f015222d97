/* mod_privacy.c - the built-in modules "privacy" (XEP-0016 privacy lists,
 * jabber:iq:privacy) and "blocking" (XEP-0191 blocking command,
 * urn:xmpp:blocking), on one machinery.
 *
 * XEP-0191 §5 ("Relation to privacy lists") asks for one back-end: the
 * blocklist IS the user's default privacy list, each blocked JID an item
 * type='jid' action='deny' with no child (every stanza, both directions),
 * placed first. So the two modules share everything below: the store
 * "privacy" (privacy.tdb), the stanza hooks that enforce the lists, the
 * sessions' active lists and the administrator's commands. Whichever of the
 * two is initialised first on a host registers the machinery; "privacy"
 * adds only the jabber:iq:privacy protocol (deprecated, may be switched
 * off), "blocking" only urn:xmpp:blocking.
 *
 * Where the lists are enforced (XEP-0016 §2.2 business rules 1-3: a
 * session's active list replaces the default list, which applies to the
 * user as a whole and whenever no session is the target):
 *   - XM_HOOK_USER_SEND_PACKET: the user's own stanzas, in the sender's
 *     shard, against the sending session's active list or the default list;
 *   - XM_HOOK_PRESENCE_OUT: presence the server sends on the user's behalf
 *     (broadcast, probe answers, unavailable at session end), the same way;
 *   - XM_HOOK_USER_RECEIVE_PACKET: everything for the user, online or not,
 *     against the default list, unless a session has an active list and the
 *     stanza is one that is delivered to sessions: then
 *   - XM_HOOK_DELIVER_PACKET decides per session (its active list, or the
 *     default list) and XM_HOOK_OFFLINE_MESSAGE for what is stored offline.
 * A change of list (its content, the default list, a session's active
 * list) walks the user's roster once to tell contacts whose presence-out
 * verdict changed (XEP-0016 §2.11): the stanzas' path never does.
 *
 * Store records (keys are the user's bare JID, then a NUL and the list
 * name for a list), each starting with a format line:
 *   BARE          "privacy 1\n", then "d LEN:NAME\n" (the default list, if
 *                 any) and "l LEN:NAME\n" per list
 *   BARE\0NAME    "privacy-list 1\n", then per item, by ascending order:
 *                 "ORDER ACTION(a|d) TYPE(j|g|s|-) KINDS LEN:VALUE\n"
 * Active lists live in memory only: they last as long as their session
 * (XEP-0016 §2.2 rule 1). */
#include "xmppd/module.h"

#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_PRIVACY "jabber:iq:privacy"
#define NS_BLOCKING "urn:xmpp:blocking"
#define NS_BLOCKING_ERRORS "urn:xmpp:blocking:errors"
#define BLOCKED_ERROR "<blocked xmlns='" NS_BLOCKING_ERRORS "'/>"

#define JID_MAX 3072         /* RFC 7622 §3.1: 3071 bytes and a NUL */
#define PART_MAX 1023        /* RFC 7622 §3.2-3.4 */
#define MAX_LISTS 50         /* lists per user (xmppd-modules(7)) */
#define MAX_ITEMS 1000       /* items per list, blocked JIDs included */
#define NAME_MAX_LEN 1023    /* bytes of a list name */
#define VALUE_MAX_LEN 3071   /* bytes of an item's value (a JID at most) */
#define BLOCKLIST_NAME "Blocked contacts"  /* the default list the blocking command creates */
#define HOOK_SEQ 10          /* XEP-0016 §2.2 rule 4: "the first delivery rule" */

/* What an item's children select (XEP-0016 §2.1); none selected = every
 * stanza in both directions (§2.13 "Blocking All Communication"). */
enum { K_MSG = 1, K_IQ = 2, K_PIN = 4, K_POUT = 8, K_ALL_BITS = 15 };

struct item {
    unsigned long order;
    int deny;
    char type;               /* 'j' jid, 'g' group, 's' subscription, 0 fall-through */
    unsigned kinds;          /* K_* bits; 0 = everything */
    char *value;             /* "" for the fall-through item */
};

struct plist {
    struct item *v;
    size_t n, cap;
};

/* A user's record: the default list and the names of all lists. */
struct uidx {
    char *def;
    char **names;
    size_t n;
};

/* A session that set an active list or asked for the blocklist. */
struct sess {
    char *full;
    char *active;            /* NULL: no active list (the default applies) */
    int wants_blocklist;     /* XEP-0191 §3.3: pushes go to these only */
};

/* One virtual host's machinery, shared by the two modules. */
struct pv {
    struct pv *next;
    char *domain;
    xm_host *main;           /* the host hooks and commands were registered with */
    xm_host *priv, *block;   /* the modules enabled here (NULL if not) */
    xm_store *st;
    void *sessions;          /* tsearch tree of struct sess, by full JID */
    unsigned long seq;       /* push ids */
};

static const struct xm_api *A;
static struct pv *all_pv;

/* ---------------- small helpers ---------------- */

static int is_notification(const char *type)
{
    /* XEP-0016 §2.1 note: presence notifications are presence with no
     * type or type='unavailable'; subscriptions and probes are not */
    return !*type || strcmp(type, "unavailable") == 0;
}

static void buf_attr(xm_buf *b, const char *name, const char *value)
{
    A->buf_addf(b, " %s='", name);
    A->buf_add_esc(b, value, strlen(value));
    A->buf_add(b, "'", 1);
}

/* The parts of a normalized JID. */
struct jparts {
    const char *local, *dom, *res;
    size_t ll, dl, rl;
    int has_local, has_res;
};

static void jid_split(const char *jid, struct jparts *p)
{
    memset(p, 0, sizeof *p);
    size_t slash = strcspn(jid, "/");
    const char *at = memchr(jid, '@', slash);
    p->dom = jid;
    if (at) {
        p->has_local = 1;
        p->local = jid;
        p->ll = (size_t)(at - jid);
        p->dom = at + 1;
    }
    p->dl = (size_t)(jid + slash - p->dom);
    if (jid[slash] == '/') {
        p->has_res = 1;
        p->res = jid + slash + 1;
        p->rl = strlen(p->res);
    }
}

/* A JID given by a client or an administrator in the form stanza
 * addresses have (RFC 7622 normalization): 0, or -1 if it is not a JID. */
static int norm_jid(const char *in, char *out, size_t size)
{
    return A->jid_normalize(in, out, size);
}

/* XEP-0016 §2.1 (and XEP-0191 §6): does the item value v cover jid? */
static int jid_matches(const char *v, const char *jid)
{
    struct jparts a, b;
    jid_split(v, &a);
    jid_split(jid, &b);
    if (a.has_local && a.has_res) return strcmp(v, jid) == 0;  /* user@domain/resource: only it */
    if (a.has_local)                                             /* user@domain: any resource */
        return b.has_local && a.ll == b.ll && memcmp(a.local, b.local, a.ll) == 0 && a.dl == b.dl &&
               memcmp(a.dom, b.dom, a.dl) == 0;
    if (a.has_res)                                               /* domain/resource: only it */
        return !b.has_local && b.has_res && a.dl == b.dl && memcmp(a.dom, b.dom, a.dl) == 0 && a.rl == b.rl &&
               memcmp(a.res, b.res, a.rl) == 0;
    /* domain: the domain itself, anything at it, and its subdomains */
    if (b.dl == a.dl) return memcmp(a.dom, b.dom, a.dl) == 0;
    return b.dl > a.dl && b.dom[b.dl - a.dl - 1] == '.' && memcmp(b.dom + b.dl - a.dl, a.dom, a.dl) == 0;
}

/* ---------------- lists in memory ---------------- */

static void plist_free(struct plist *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i].value);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int plist_add(struct plist *l, unsigned long order, int deny, char type, unsigned kinds, const char *value,
                     size_t vlen)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 8;
        struct item *v = realloc(l->v, cap * sizeof *v);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    char *copy = malloc(vlen + 1);
    if (!copy) return -1;
    memcpy(copy, value, vlen);
    copy[vlen] = '\0';
    l->v[l->n++] = (struct item){ order, deny, type, kinds, copy };
    return 0;
}

static int item_cmp(const void *a, const void *b)
{
    unsigned long x = ((const struct item *)a)->order, y = ((const struct item *)b)->order;
    return x < y ? -1 : x > y;
}

/* A blocklist entry (XEP-0191 §5): type jid, deny, every stanza. */
static int is_block_item(const struct item *it)
{
    return it->type == 'j' && it->deny && it->kinds == 0;
}

static void uidx_free(struct uidx *ix)
{
    free(ix->def);
    for (size_t i = 0; i < ix->n; i++) free(ix->names[i]);
    free(ix->names);
    memset(ix, 0, sizeof *ix);
}

static int uidx_has(const struct uidx *ix, const char *name)
{
    for (size_t i = 0; i < ix->n; i++)
        if (strcmp(ix->names[i], name) == 0) return 1;
    return 0;
}

static int uidx_add(struct uidx *ix, const char *name, size_t len)
{
    char **v = realloc(ix->names, (ix->n + 1) * sizeof *v);
    if (!v) return -1;
    ix->names = v;
    if (!(v[ix->n] = malloc(len + 1))) return -1;
    memcpy(v[ix->n], name, len);
    v[ix->n][len] = '\0';
    ix->n++;
    return 0;
}

static void uidx_remove(struct uidx *ix, const char *name)
{
    for (size_t i = 0; i < ix->n; i++)
        if (strcmp(ix->names[i], name) == 0) {
            free(ix->names[i]);
            ix->names[i] = ix->names[--ix->n];
            return;
        }
}

/* ---------------- the store ---------------- */

/* "LEN:BYTES" at *p (before end): the bytes into *s and *n, *p past them. */
static int take_counted(const char **p, const char *end, const char **s, size_t *n)
{
    char *colon;
    unsigned long len = strtoul(*p, &colon, 10);
    if (colon == *p || colon >= end || *colon != ':' || len > (unsigned long)(end - colon - 1)) return -1;
    *s = colon + 1;
    *n = len;
    *p = colon + 1 + len;
    if (*p >= end || **p != '\n') return -1;
    (*p)++;
    return 0;
}

static void list_key(xm_buf *k, const char *user, const char *name)
{
    A->buf_clear(k);
    A->buf_add(k, user, strlen(user) + 1); /* with its NUL: the separator */
    A->buf_add(k, name, strlen(name));
}

/* The user's record into ix: 1, 0 if there is none (or it is damaged:
 * logged), -1 on error. */
static int load_index(struct pv *pv, const char *user, struct uidx *ix)
{
    static const char magic[] = "privacy 1\n";
    memset(ix, 0, sizeof *ix);
    xm_buf *b = A->buf_new();
    int rc = -1, damaged = 0;
    size_t len;
    const char *p, *end;
    if (!b) goto out;
    rc = A->get(pv->st, user, strlen(user), b);
    if (rc != 1) goto out;
    rc = -1;
    if (!(p = A->buf_data(b, &len))) goto out;
    end = p + len;
    damaged = len < sizeof magic - 1 || memcmp(p, magic, sizeof magic - 1) != 0;
    if (damaged) goto out;
    p += sizeof magic - 1;
    while (p < end) {
        char tag = *p;
        const char *s;
        size_t n;
        damaged = p + 2 > end || p[1] != ' ' || (tag != 'd' && tag != 'l');
        if (!damaged) {
            p += 2;
            damaged = take_counted(&p, end, &s, &n) < 0;
        }
        if (damaged) goto out;
        if (tag == 'd') {
            free(ix->def);
            if (!(ix->def = strndup(s, n))) goto out;
        } else if (uidx_add(ix, s, n) < 0) {
            goto out;
        }
    }
    rc = 1;
out:
    if (damaged) {
        A->log(pv->main, 3, "the privacy record of %s is damaged; ignoring it", user);
        rc = 0; /* as if there were none: the next change writes a good one */
    }
    if (rc != 1) uidx_free(ix);
    A->buf_free(b);
    return rc;
}

static int save_index(struct pv *pv, const char *user, const struct uidx *ix)
{
    if (!ix->n && !ix->def) return A->del(pv->st, user, strlen(user));
    xm_buf *b = A->buf_new();
    if (!b) return -1;
    A->buf_addf(b, "privacy 1\n");
    if (ix->def) {
        A->buf_addf(b, "d %zu:", strlen(ix->def));
        A->buf_add(b, ix->def, strlen(ix->def));
        A->buf_add(b, "\n", 1);
    }
    for (size_t i = 0; i < ix->n; i++) {
        A->buf_addf(b, "l %zu:", strlen(ix->names[i]));
        A->buf_add(b, ix->names[i], strlen(ix->names[i]));
        A->buf_add(b, "\n", 1);
    }
    size_t len;
    const char *d = A->buf_data(b, &len);
    int rc = d ? A->put(pv->st, user, strlen(user), d, len) : -1;
    A->buf_free(b);
    return rc;
}

/* List name of user into l (sorted by order): 1, 0 if absent (or
 * damaged: logged), -1 on error. */
static int load_list(struct pv *pv, const char *user, const char *name, struct plist *l)
{
    static const char magic[] = "privacy-list 1\n";
    memset(l, 0, sizeof *l);
    xm_buf *k = A->buf_new(), *b = A->buf_new();
    int rc = -1, damaged = 0;
    size_t klen, len;
    const char *key, *p, *end;
    if (!k || !b) goto out;
    list_key(k, user, name);
    if (!(key = A->buf_data(k, &klen))) goto out;
    rc = A->get(pv->st, key, klen, b);
    if (rc != 1) goto out;
    rc = -1;
    if (!(p = A->buf_data(b, &len))) goto out;
    end = p + len;
    damaged = len < sizeof magic - 1 || memcmp(p, magic, sizeof magic - 1) != 0;
    if (damaged) goto out;
    p += sizeof magic - 1;
    while (p < end) {
        unsigned long order;
        char action, type, head[64];
        unsigned kinds;
        int used = 0;
        const char *s;
        size_t n, hl = 0;
        /* the fields before the counted value are short: parse a copy */
        while (p + hl < end && hl < sizeof head - 1 && p[hl] != ':') hl++;
        memcpy(head, p, hl);
        head[hl] = '\0';
        damaged = sscanf(head, "%lu %c %c %u %n", &order, &action, &type, &kinds, &used) != 4 || !used;
        if (!damaged) {
            p += used;
            damaged = take_counted(&p, end, &s, &n) < 0 || (action != 'a' && action != 'd') ||
                      !strchr("jgs-", type) || kinds > K_ALL_BITS;
        }
        if (damaged) goto out;
        if (plist_add(l, order, action == 'd', type == '-' ? 0 : type, kinds, s, n) < 0) goto out;
    }
    if (l->n) qsort(l->v, l->n, sizeof *l->v, item_cmp);
    rc = 1;
out:
    if (damaged) {
        A->log(pv->main, 3, "privacy list '%s' of %s is damaged; ignoring it", name, user);
        rc = 0;
    }
    if (rc != 1) plist_free(l);
    A->buf_free(k);
    A->buf_free(b);
    return rc;
}

static int save_list(struct pv *pv, const char *user, const char *name, const struct plist *l)
{
    xm_buf *k = A->buf_new(), *b = A->buf_new();
    int rc = -1;
    if (!k || !b) goto out;
    list_key(k, user, name);
    A->buf_addf(b, "privacy-list 1\n");
    for (size_t i = 0; i < l->n; i++) {
        const struct item *it = &l->v[i];
        size_t vl = strlen(it->value);
        A->buf_addf(b, "%lu %c %c %u %zu:", it->order, it->deny ? 'd' : 'a', it->type ? it->type : '-', it->kinds,
                    vl);
        A->buf_add(b, it->value, vl);
        A->buf_add(b, "\n", 1);
    }
    size_t klen, len;
    const char *key = A->buf_data(k, &klen), *d = A->buf_data(b, &len);
    if (key && d) rc = A->put(pv->st, key, klen, d, len);
out:
    A->buf_free(k);
    A->buf_free(b);
    return rc;
}

static int del_list(struct pv *pv, const char *user, const char *name)
{
    xm_buf *k = A->buf_new();
    int rc = -1;
    size_t klen;
    const char *key;
    if (!k) return -1;
    list_key(k, user, name);
    if ((key = A->buf_data(k, &klen))) rc = A->del(pv->st, key, klen);
    A->buf_free(k);
    return rc;
}

/* ---------------- sessions ---------------- */

static int sess_cmp(const void *a, const void *b)
{
    return strcmp(((const struct sess *)a)->full, ((const struct sess *)b)->full);
}

static struct sess *sess_find(struct pv *pv, const char *full)
{
    struct sess key = { (char *)full, NULL, 0 };
    struct sess **found = tfind(&key, &pv->sessions, sess_cmp);
    return found ? *found : NULL;
}

static struct sess *sess_get(struct pv *pv, const char *full)
{
    struct sess *s = sess_find(pv, full);
    if (s) return s;
    if ((s = calloc(1, sizeof *s)) && (s->full = strdup(full)) && tsearch(s, &pv->sessions, sess_cmp)) return s;
    if (s) free(s->full);
    free(s);
    return NULL;
}

static void sess_free(struct sess *s)
{
    free(s->full);
    free(s->active);
    free(s);
}

static void sess_drop(struct pv *pv, const char *full)
{
    struct sess *s = sess_find(pv, full);
    if (!s) return;
    tdelete(s, &pv->sessions, sess_cmp);
    sess_free(s);
}

/* A session is forgotten once it has neither an active list nor asked
 * for the blocklist. */
static void sess_tidy(struct pv *pv, struct sess *s)
{
    if (s && !s->active && !s->wants_blocklist) sess_drop(pv, s->full);
}

/* What the sessions of a user are doing with lists. */
struct scan {
    struct pv *pv;
    const char *self;         /* the session asking, or NULL */
    const char *name;         /* a list name, or NULL */
    int any_active;           /* some session has an active list */
    int other_default;        /* a session other than self uses the default list */
    int other_active_name;    /* a session other than self has list name active */
};

static void scan_one(const char *full, int available, int priority, void *arg)
{
    (void)available;
    (void)priority;
    struct scan *c = arg;
    struct sess *s = sess_find(c->pv, full);
    int self = c->self && strcmp(full, c->self) == 0;
    if (s && s->active) {
        c->any_active = 1;
        if (!self && c->name && strcmp(s->active, c->name) == 0) c->other_active_name = 1;
    } else if (!self) {
        c->other_default = 1;
    }
}

static void scan_sessions(struct pv *pv, const char *user, const char *self, const char *name, struct scan *c)
{
    memset(c, 0, sizeof *c);
    c->pv = pv;
    c->self = self;
    c->name = name;
    A->each_session(pv->main, user, scan_one, c);
}

/* Does some session of user have an active list? (Cheap when nobody has.) */
static int any_active(struct pv *pv, const char *user)
{
    if (!pv->sessions) return 0;
    struct scan c;
    scan_sessions(pv, user, NULL, NULL, &c);
    return c.any_active;
}

/* ---------------- pushes and presence ---------------- */

struct push {
    struct pv *pv;
    const char *user;
    const char *payload;     /* the IQ's child element */
    int blocklist_only;      /* XEP-0191 §3.3: only to sessions that asked for the blocklist */
};

static void push_one(const char *full, int available, int priority, void *arg)
{
    (void)available;
    (void)priority;
    struct push *p = arg;
    if (p->blocklist_only) {
        struct sess *s = sess_find(p->pv, full);
        if (!s || !s->wants_blocklist) return;
    }
    xm_buf *b = A->buf_new();
    if (!b) return;
    A->buf_addf(b, "<iq xmlns='jabber:client' type='set' id='push-%lx-%lu'", (unsigned long)time(NULL),
                ++p->pv->seq);
    buf_attr(b, "from", p->user);
    buf_attr(b, "to", full);
    A->buf_addf(b, ">%s</iq>", p->payload);
    size_t len;
    const char *d = A->buf_data(b, &len);
    if (d) A->send(p->pv->main, d, len);
    A->buf_free(b);
}

static void push(struct pv *pv, const char *user, const char *payload, int blocklist_only)
{
    struct push p = { pv, user, payload, blocklist_only };
    A->each_session(pv->main, user, push_one, &p);
}

/* XEP-0016 §2.2 rule 10: a privacy list push names the changed list. */
static void push_list(struct pv *pv, const char *user, const char *name)
{
    if (!pv->priv) return;
    xm_buf *b = A->buf_new();
    if (!b) return;
    A->buf_addf(b, "<query xmlns='" NS_PRIVACY "'><list");
    buf_attr(b, "name", name);
    A->buf_addf(b, "/></query>");
    const char *d = A->buf_data(b, NULL);
    if (d) push(pv, user, d, 0);
    A->buf_free(b);
}

/* The blocked JIDs of a list (XEP-0191 §5), in list order. */
static size_t blocked_of(const struct plist *l, const char **out)
{
    size_t n = 0;
    for (size_t i = 0; l && i < l->n; i++)
        if (is_block_item(&l->v[i])) out[n++] = l->v[i].value;
    return n;
}

static int in_set(const char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0) return 1;
    return 0;
}

/* The default list of user went from before to after (either may be
 * NULL): tell what changed in the blocklist (XEP-0191 §5 items 2 and 4)
 * with block/unblock pushes. all_cleared: an "unblock all" (pushed as an
 * empty <unblock/>, §3.5). */
static void blocklist_changed(struct pv *pv, const char *user, const struct plist *before, const struct plist *after,
                              int all_cleared)
{
    size_t nb = before ? before->n : 0, na = after ? after->n : 0;
    const char **b = malloc((nb + 1) * sizeof *b), **a = malloc((na + 1) * sizeof *a);
    xm_buf *blk = A->buf_new(), *unb = A->buf_new();
    if (!a || !b || !blk || !unb) goto out;
    nb = blocked_of(before, b);
    na = blocked_of(after, a);
    size_t added = 0, removed = 0;
    A->buf_addf(blk, "<block xmlns='" NS_BLOCKING "'>");
    A->buf_addf(unb, "<unblock xmlns='" NS_BLOCKING "'>");
    for (size_t i = 0; i < na; i++)
        if (!in_set(b, nb, a[i]) && !in_set(a, i, a[i])) {
            A->buf_addf(blk, "<item");
            buf_attr(blk, "jid", a[i]);
            A->buf_addf(blk, "/>");
            added++;
        }
    for (size_t i = 0; i < nb; i++)
        if (!in_set(a, na, b[i]) && !in_set(b, i, b[i])) {
            A->buf_addf(unb, "<item");
            buf_attr(unb, "jid", b[i]);
            A->buf_addf(unb, "/>");
            removed++;
        }
    A->buf_addf(blk, "</block>");
    A->buf_addf(unb, "</unblock>");
    if (!pv->block) goto out;
    const char *d;
    if (added && (d = A->buf_data(blk, NULL))) push(pv, user, d, 1);
    if (all_cleared && removed) push(pv, user, "<unblock xmlns='" NS_BLOCKING "'/>", 1);
    else if (removed && (d = A->buf_data(unb, NULL))) push(pv, user, d, 1);
out:
    free(a);
    free(b);
    A->buf_free(blk);
    A->buf_free(unb);
}

/* ---------------- deciding ---------------- */

/* One check: the list owner, the other party, its roster item read once
 * (or given by a walk of the roster). */
struct check {
    struct pv *pv;
    const char *user;          /* bare JID of the list's owner */
    const char *other;         /* the other party's JID */
    int roster_read;
    char sub[8];
    const char *groups;        /* the other party's groups, each followed by a NUL */
    size_t ngroups;
    xm_buf *gbuf;              /* where check_roster keeps them (freed by the caller) */
};

static void check_roster(struct check *c)
{
    if (c->roster_read) return;
    c->roster_read = 1;
    strcpy(c->sub, "none"); /* XEP-0016 §2.1: "none" includes those not in the roster */
    char ob[JID_MAX];
    A->bare_jid(c->other, ob, sizeof ob);
    if (!(c->gbuf = A->buf_new())) return;
    if (A->roster_item(c->pv->main, c->user, ob, c->sub, c->gbuf) != 1) {
        strcpy(c->sub, "none");
        return;
    }
    size_t len;
    const char *g = A->buf_data(c->gbuf, &len);
    if (!g) return;
    c->groups = g;
    for (const char *end = g + len; g < end; g += strlen(g) + 1) c->ngroups++;
}

static int in_group(struct check *c, const char *group)
{
    check_roster(c);
    const char *g = c->groups;
    for (size_t i = 0; g && i < c->ngroups; i++, g += strlen(g) + 1)
        if (strcmp(g, group) == 0) return 1;
    return 0;
}

static int item_matches(struct check *c, const struct item *it)
{
    switch (it->type) {
    case 'j': return jid_matches(it->value, c->other);
    case 'g': return in_group(c, it->value);
    case 's': check_roster(c); return strcmp(c->sub, it->value) == 0;
    default: return 1; /* fall-through */
    }
}

/* XEP-0016 §2.2 rules 5-7: the first item (by order) that selects this
 * kind of stanza and matches the other party decides; none: allowed. */
static const struct item *first_match(struct check *c, const struct plist *l, unsigned kind)
{
    for (size_t i = 0; i < l->n; i++) {
        const struct item *it = &l->v[i];
        if (it->kinds && !(it->kinds & kind)) continue;
        if (item_matches(c, it)) return it;
    }
    return NULL;
}

/* Which list applies: the active list of session full, else the default
 * list. 1 with the list in l, 0 if none applies, -1 on error. */
static int applicable(struct pv *pv, const char *user, const char *full, struct plist *l, int *is_default)
{
    struct sess *s = full ? sess_find(pv, full) : NULL;
    *is_default = 0;
    if (s && s->active) {
        int rc = load_list(pv, user, s->active, l);
        if (rc != 0) return rc;
        /* the list vanished under the session (removed by a command):
         * nothing applies rather than something unasked-for */
        return 0;
    }
    struct uidx ix;
    int rc = load_index(pv, user, &ix);
    if (rc != 1 || !ix.def) {
        uidx_free(&ix);
        return rc < 0 ? -1 : 0;
    }
    rc = load_list(pv, user, ix.def, l);
    uidx_free(&ix);
    *is_default = 1;
    return rc;
}

/* Decide for user about a stanza exchanged with other under the list that
 * applies to session full (or the default list). Returns the denying item
 * (copied into *deny_item) or 0 if allowed. */
static int denied(struct pv *pv, const char *user, const char *full, const char *other, unsigned kind,
                  struct item *deny_item, int *from_default)
{
    struct plist l;
    int rc = applicable(pv, user, full, &l, from_default);
    if (rc < 0) A->log(pv->main, 3, "cannot read the privacy lists of %s: stanza let through", user);
    if (rc != 1) return 0;
    struct check c = { pv, user, other, 0, "", NULL, 0, NULL };
    const struct item *it = first_match(&c, &l, kind);
    int deny = it && it->deny;
    if (deny && deny_item) {
        *deny_item = *it;
        deny_item->value = NULL; /* freed with the list */
    }
    A->buf_free(c.gbuf);
    plist_free(&l);
    return deny;
}

/* Stanzas between a user and their own account or resources, and with
 * their own server, are never filtered (XEP-0016 §2.1 note: one's own
 * resources; the server is no contact, and a whitelist must not cut a
 * client off its server's services). */
static int exempt(struct pv *pv, const char *user, const char *other)
{
    if (!*other) return 1;
    size_t ul = strlen(user);
    if (strncmp(other, user, ul) == 0 && (other[ul] == '\0' || other[ul] == '/')) return 1;
    return strcmp(other, pv->domain) == 0;
}

static unsigned kind_in(xm_stanza *st)
{
    switch (A->kind(st)) {
    case XM_MESSAGE: return K_MSG;
    case XM_IQ: return K_IQ;
    case XM_PRESENCE: return is_notification(A->type(st)) ? K_PIN : 0;
    }
    return 0;
}

static unsigned kind_out(xm_stanza *st)
{
    return A->kind(st) == XM_PRESENCE && is_notification(A->type(st)) ? K_POUT : 0;
}

/* XEP-0016 §2.14 / XEP-0191 §3.3: an inbound stanza that a list blocks.
 * Presence: never answered. Messages and IQ get/set: service-unavailable
 * (the user appears offline) - unless quietly is set. Other IQs and
 * errors: dropped. */
static int refuse_in(xm_stanza *st, int quietly)
{
    const char *type = A->type(st);
    switch (A->kind(st)) {
    case XM_MESSAGE:
        if (!quietly && strcmp(type, "error") != 0) A->error(st, "service-unavailable", NULL, NULL);
        break;
    case XM_IQ:
        if (strcmp(type, "get") == 0 || strcmp(type, "set") == 0) A->error(st, "service-unavailable", NULL, NULL);
        break;
    case XM_PRESENCE:
        break;
    }
    return XM_STOP;
}

/* XEP-0016 §2.14, XEP-0191 §3.3: an outbound stanza that a list blocks is
 * not routed; the user gets not-acceptable, with <blocked/> when the item
 * is a blocklist entry and the blocking command is on. */
static int refuse_out(struct pv *pv, xm_stanza *st, const struct item *it, int from_default)
{
    const char *type = A->type(st);
    int answer = A->kind(st) == XM_IQ ? strcmp(type, "get") == 0 || strcmp(type, "set") == 0
                                      : strcmp(type, "error") != 0;
    if (answer)
        A->error(st, "not-acceptable", NULL, pv->block && from_default && is_block_item(it) ? BLOCKED_ERROR : NULL);
    return XM_STOP;
}

/* The stanzas that reach sessions one by one (and are then decided per
 * session): messages, presence notifications and IQs to a full JID.
 * Subscription requests, probes and IQs to the bare JID are handled by the
 * server for the user as a whole: the default list. */
static int per_session(xm_stanza *st)
{
    switch (A->kind(st)) {
    case XM_MESSAGE: return 1;
    case XM_PRESENCE: return is_notification(A->type(st));
    case XM_IQ: return strchr(A->to(st), '/') != NULL;
    }
    return 0;
}

/* ---------------- presence when lists change ---------------- */

/* XEP-0016 §2.11 (last note) and XEP-0191 §3.3: when a list starts
 * denying presence-out to a contact allowed to see the user's presence
 * (RFC 6121: its subscription is 'from' or 'both'), each available
 * resource the list applies to sends the contact unavailable presence;
 * when it stops, the resource's current presence (XEP-0191 §3.4). A list
 * change is compared contact by contact over the user's roster, so that
 * group, subscription and fall-through items count as jid items do. This
 * runs only when a list, the default list or an active list changes:
 * never on the stanzas' path. */

/* Which of a user's sessions a change concerns. */
struct scope {
    struct pv *pv;
    const char *full;        /* this session only; if NULL: */
    const char *list;        /* the sessions whose active list this is; if NULL: those using the default list */
};

static int in_scope(const struct scope *sc, const char *full)
{
    if (sc->full) return strcmp(full, sc->full) == 0;
    struct sess *s = sess_find(sc->pv, full);
    const char *active = s ? s->active : NULL;
    return sc->list ? active && strcmp(active, sc->list) == 0 : !active;
}

struct tell {
    const struct scope *sc;
    const char *to;          /* NULL: only count the sessions */
    int unavailable;         /* 1: unavailable presence; 0: the current presence */
    int n;                   /* available sessions in scope */
};

static void tell_one(const char *full, int available, int priority, void *arg)
{
    (void)priority;
    struct tell *t = arg;
    if (!available || !in_scope(t->sc, full)) return;
    t->n++;
    if (!t->to) return;
    if (!t->unavailable) {
        A->send_presence(t->sc->pv->main, full, t->to);
        return;
    }
    xm_buf *b = A->buf_new();
    if (!b) return;
    A->buf_addf(b, "<presence xmlns='jabber:client' type='unavailable'");
    buf_attr(b, "from", full);
    buf_attr(b, "to", t->to);
    A->buf_addf(b, "/>");
    size_t len;
    const char *d = A->buf_data(b, &len);
    if (d) A->send(t->sc->pv->main, d, len);
    A->buf_free(b);
}

/* Does the item take part in decisions about presence-out? */
static int selects_pout(const struct item *it)
{
    return !it->kinds || (it->kinds & K_POUT);
}

/* Do two lists decide presence-out alike for everybody? (The same items
 * selecting it, in the same order: a change elsewhere, a blocked JID's
 * messages, say, needs no roster walk.) */
static int same_pout(const struct plist *a, const struct plist *b)
{
    size_t i = 0, j = 0, na = a ? a->n : 0, nb = b ? b->n : 0;
    for (;;) {
        while (i < na && !selects_pout(&a->v[i])) i++;
        while (j < nb && !selects_pout(&b->v[j])) j++;
        if (i == na || j == nb) return i == na && j == nb;
        const struct item *x = &a->v[i++], *y = &b->v[j++];
        if (x->deny != y->deny || x->type != y->type || strcmp(x->value, y->value) != 0) return 0;
    }
}

static int pout_denied(struct check *c, const struct plist *l)
{
    const struct item *it = l ? first_match(c, l, K_POUT) : NULL;
    return it && it->deny;
}

/* A contact whose verdict changed. */
struct pchange {
    char *to;
    int unavailable;
};

struct pwalk {
    struct pv *pv;
    const char *user;
    const struct plist *before, *after;
    const char **fulls;      /* jid items naming one resource (see below) */
    size_t nfulls;
    struct pchange *v;
    size_t n, cap;
    int oom;
};

static void pwalk_add(struct pwalk *w, const char *to, int unavailable)
{
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        struct pchange *v = realloc(w->v, cap * sizeof *v);
        if (!v) {
            w->oom = 1;
            return;
        }
        w->v = v;
        w->cap = cap;
    }
    if (!(w->v[w->n].to = strdup(to))) {
        w->oom = 1;
        return;
    }
    w->v[w->n++].unavailable = unavailable;
}

static void pwalk_one(const char *contact, const char *sub, const char *groups, size_t ngroups, void *arg)
{
    struct pwalk *w = arg;
    if (strcmp(sub, "from") != 0 && strcmp(sub, "both") != 0) return; /* it does not see the user's presence */
    /* the broadcast goes to the contact's bare JID (RFC 6121 §4.4.2) */
    struct check c = { w->pv, w->user, contact, 1, "", groups, ngroups, NULL };
    snprintf(c.sub, sizeof c.sub, "%s", sub);
    int was = pout_denied(&c, w->before), now = pout_denied(&c, w->after);
    if (was != now) {
        pwalk_add(w, contact, now);
        return;
    }
    /* A jid item naming one resource of the contact (user@domain/resource,
     * domain/resource) decides what that resource gets (probe answers,
     * directed presence), while the broadcast to the bare JID is decided
     * as above: when only such an item changed, tell that resource. */
    size_t cl = strlen(contact);
    for (size_t i = 0; i < w->nfulls; i++) {
        if (strncmp(w->fulls[i], contact, cl) != 0 || w->fulls[i][cl] != '/') continue;
        c.other = w->fulls[i];
        was = pout_denied(&c, w->before);
        now = pout_denied(&c, w->after);
        if (was != now) pwalk_add(w, w->fulls[i], now);
    }
}

static int in_fulls(const char **v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0) return 1;
    return 0;
}

/* The list that applies to the sessions of scope sc went from before to
 * after (either may be NULL: no list): unavailable presence or the
 * current presence to each contact whose verdict about presence-out
 * changed, from each available session in the scope. */
static void presence_out_changed(struct pv *pv, const char *user, const struct plist *before,
                                 const struct plist *after, const struct scope *sc)
{
    if (same_pout(before, after)) return;
    struct tell t = { sc, NULL, 0, 0 };
    A->each_session(pv->main, user, tell_one, &t);
    if (!t.n) return; /* no available resource: nobody saw the user's presence */
    size_t nb = before ? before->n : 0, na = after ? after->n : 0;
    struct pwalk w = { pv, user, before, after, malloc((nb + na + 1) * sizeof(char *)), 0, NULL, 0, 0, 0 };
    if (!w.fulls) goto out;
    for (size_t i = 0; i < nb + na; i++) {
        const struct item *it = i < nb ? &before->v[i] : &after->v[i - nb];
        if (it->type == 'j' && selects_pout(it) && strchr(it->value, '/') && !in_fulls(w.fulls, w.nfulls, it->value))
            w.fulls[w.nfulls++] = it->value;
    }
    /* the decisions first, the sending after the walk: the roster is not
     * touched while it is walked */
    if (A->each_roster_item(pv->main, user, pwalk_one, &w) < 0 || w.oom) {
        A->log(pv->main, 3, "cannot work out the presence changes of %s's privacy lists", user);
        goto out;
    }
    for (size_t i = 0; i < w.n; i++) {
        struct tell tl = { sc, w.v[i].to, w.v[i].unavailable, 0 };
        A->each_session(pv->main, user, tell_one, &tl);
    }
out:
    for (size_t i = 0; i < w.n; i++) free(w.v[i].to);
    free(w.v);
    free(w.fulls);
}

/* Everything that follows a change of the default list (its content, or
 * which list it is). */
static void default_list_changed(struct pv *pv, const char *user, const struct plist *before,
                                 const struct plist *after, int all_cleared)
{
    struct scope sc = { pv, NULL, NULL };
    blocklist_changed(pv, user, before, after, all_cleared);
    presence_out_changed(pv, user, before, after, &sc);
}

/* List name was edited (XEP-0016 §2.2 rule 8): the sessions that have it
 * as their active list apply the new definition. */
static void active_list_edited(struct pv *pv, const char *user, const char *name, const struct plist *before,
                               const struct plist *after)
{
    if (!pv->sessions) return;
    struct scope sc = { pv, NULL, name };
    presence_out_changed(pv, user, before, after, &sc);
}

/* Session full changed which list applies to it: from before to after. */
static void session_list_changed(struct pv *pv, const char *user, const char *full, const struct plist *before,
                                 const struct plist *after)
{
    struct scope sc = { pv, full, NULL };
    presence_out_changed(pv, user, before, after, &sc);
}

/* The list that applies to session full now (its active list, else the
 * default list) into l; empty when none does. */
static void list_of_session(struct pv *pv, const char *user, const char *full, struct plist *l)
{
    int is_default;
    memset(l, 0, sizeof *l);
    if (applicable(pv, user, full, l, &is_default) != 1) memset(l, 0, sizeof *l);
}

/* ---------------- the hooks ---------------- */

static int on_receive(xm_stanza *st, void *data)
{
    struct pv *pv = data;
    char user[JID_MAX];
    const char *from = A->from(st);
    A->bare_jid(A->to(st), user, sizeof user);
    if (exempt(pv, user, from)) return XM_PASS;
    if (per_session(st) && any_active(pv, user)) return XM_PASS; /* on_deliver and on_offline decide */
    struct item it;
    int from_default;
    if (!denied(pv, user, NULL, from, kind_in(st), &it, &from_default)) return XM_PASS;
    return refuse_in(st, 0);
}

static int on_deliver(xm_stanza *st, void *data)
{
    struct pv *pv = data;
    char user[JID_MAX];
    const char *from = A->from(st), *to = A->to(st);
    A->bare_jid(to, user, sizeof user);
    if (exempt(pv, user, from)) return XM_PASS;
    struct sess *s = sess_find(pv, to);
    /* without active lists anywhere, on_receive already applied the
     * default list to this stanza */
    if (!(s && s->active) && !any_active(pv, user)) return XM_PASS;
    struct item it;
    int from_default;
    if (!denied(pv, user, to, from, kind_in(st), &it, &from_default)) return XM_PASS;
    /* a message to the bare JID may still reach the user's other
     * resources: this one drops it without an error */
    return refuse_in(st, 1);
}

static int on_offline(xm_stanza *st, void *data)
{
    struct pv *pv = data;
    char user[JID_MAX];
    const char *from = A->from(st);
    A->bare_jid(A->to(st), user, sizeof user);
    if (exempt(pv, user, from)) return XM_PASS;
    if (!any_active(pv, user)) return XM_PASS; /* decided by on_receive */
    /* XEP-0016 §2.2 rule 2: what no session receives is the user's as a
     * whole: the default list */
    struct item it;
    int from_default;
    if (!denied(pv, user, NULL, from, K_MSG, &it, &from_default)) return XM_PASS;
    return refuse_in(st, 0);
}

static int on_send(xm_stanza *st, void *data)
{
    struct pv *pv = data;
    char user[JID_MAX];
    const char *from = A->from(st), *to = A->to(st);
    A->bare_jid(from, user, sizeof user);
    if (exempt(pv, user, to)) return XM_PASS;
    struct item it;
    int from_default;
    if (!denied(pv, user, from, to, kind_out(st), &it, &from_default)) return XM_PASS;
    return refuse_out(pv, st, &it, from_default);
}

static int on_presence_out(xm_stanza *st, void *data)
{
    struct pv *pv = data;
    char user[JID_MAX];
    const char *from = A->from(st), *to = A->to(st);
    A->bare_jid(from, user, sizeof user);
    if (exempt(pv, user, to)) return XM_PASS;
    int from_default;
    if (!denied(pv, user, strchr(from, '/') ? from : NULL, to, kind_out(st), NULL, &from_default)) return XM_PASS;
    return XM_STOP; /* sent by the server: nobody to tell */
}

static void on_session_closed(xm_host *h, const char *full, void *data)
{
    (void)h;
    sess_drop(data, full);
}

static void on_user_removed(xm_host *h, const char *bare, void *data)
{
    (void)h;
    struct pv *pv = data;
    struct uidx ix;
    if (load_index(pv, bare, &ix) != 1) {
        A->del(pv->st, bare, strlen(bare)); /* a damaged record goes too */
        return;
    }
    for (size_t i = 0; i < ix.n; i++) del_list(pv, bare, ix.names[i]);
    A->del(pv->st, bare, strlen(bare));
    uidx_free(&ix);
}

/* ---------------- jabber:iq:privacy ---------------- */

static void put_item(xm_buf *b, const struct item *it)
{
    A->buf_addf(b, "<item");
    if (it->type) {
        buf_attr(b, "type", it->type == 'j' ? "jid" : it->type == 'g' ? "group" : "subscription");
        buf_attr(b, "value", it->value);
    }
    A->buf_addf(b, " action='%s' order='%lu'", it->deny ? "deny" : "allow", it->order);
    if (!it->kinds) {
        A->buf_addf(b, "/>");
        return;
    }
    A->buf_addf(b, ">%s%s%s%s</item>", it->kinds & K_MSG ? "<message/>" : "", it->kinds & K_IQ ? "<iq/>" : "",
                it->kinds & K_PIN ? "<presence-in/>" : "", it->kinds & K_POUT ? "<presence-out/>" : "");
}

static void answer(xm_stanza *iq, xm_buf *b)
{
    const char *d = A->buf_data(b, NULL);
    if (d) A->iq_result(iq, d);
    else A->error(iq, "internal-server-error", NULL, NULL);
}

/* The only IQs an account's lists answer are its own user's. */
static int own_account(xm_stanza *iq, char *user, size_t size)
{
    const char *to = A->to(iq);
    A->bare_jid(A->from(iq), user, size);
    if (*to && strcmp(to, user) != 0) {
        A->error(iq, "forbidden", "only the account's user manages its privacy lists", NULL);
        return 0;
    }
    return 1;
}

/* §2.3: the names (with the active and default list), or one list. */
static void privacy_get(struct pv *pv, xm_stanza *iq, const xm_node *q, const char *user)
{
    const xm_node *list = NULL;
    unsigned n = 0;
    for (const xm_node *e = A->first(q); e; e = A->next(e)) {
        n++;
        if (strcmp(A->name(e), "list") == 0 && strcmp(A->ns(e), NS_PRIVACY) == 0) list = e;
    }
    if (n > 1 || (n == 1 && !list)) {
        A->error(iq, "bad-request", "ask for the names or for one list", NULL);
        return;
    }
    xm_buf *b = A->buf_new();
    if (!b) {
        A->error(iq, "internal-server-error", NULL, NULL);
        return;
    }
    if (list) {
        const char *name = A->attr(list, "name");
        struct plist l;
        int rc = name && *name ? load_list(pv, user, name, &l) : -2;
        if (rc == -2) A->error(iq, "bad-request", "a list has a name", NULL);
        else if (rc < 0) A->error(iq, "internal-server-error", NULL, NULL);
        else if (rc == 0) A->error(iq, "item-not-found", NULL, NULL);
        else {
            A->buf_addf(b, "<query xmlns='" NS_PRIVACY "'><list");
            buf_attr(b, "name", name);
            A->buf_addf(b, ">");
            for (size_t i = 0; i < l.n; i++) put_item(b, &l.v[i]);
            A->buf_addf(b, "</list></query>");
            answer(iq, b);
            plist_free(&l);
        }
        A->buf_free(b);
        return;
    }
    struct uidx ix;
    if (load_index(pv, user, &ix) < 0) {
        A->error(iq, "internal-server-error", NULL, NULL);
        A->buf_free(b);
        return;
    }
    struct sess *s = sess_find(pv, A->from(iq));
    A->buf_addf(b, "<query xmlns='" NS_PRIVACY "'>");
    if (s && s->active) {
        A->buf_addf(b, "<active");
        buf_attr(b, "name", s->active);
        A->buf_addf(b, "/>");
    }
    if (ix.def) {
        A->buf_addf(b, "<default");
        buf_attr(b, "name", ix.def);
        A->buf_addf(b, "/>");
    }
    for (size_t i = 0; i < ix.n; i++) {
        A->buf_addf(b, "<list");
        buf_attr(b, "name", ix.names[i]);
        A->buf_addf(b, "/>");
    }
    A->buf_addf(b, "</query>");
    answer(iq, b);
    uidx_free(&ix);
    A->buf_free(b);
}

/* An <item/> of a list being set (§2.1), appended to l; NULL, or the
 * error condition (its text in *why). */
static const char *parse_item(const xm_node *e, struct plist *l, const char **why)
{
    const char *type = A->attr(e, "type"), *value = A->attr(e, "value");
    const char *action = A->attr(e, "action"), *order = A->attr(e, "order");
    char norm[JID_MAX];
    char t = 0;
    *why = NULL;
    if (!action || (strcmp(action, "allow") != 0 && strcmp(action, "deny") != 0)) {
        *why = "an item's action is allow or deny";
        return "bad-request";
    }
    char *end;
    unsigned long long o = order && *order >= '0' && *order <= '9' ? strtoull(order, &end, 10) : 0;
    if (!order || *order < '0' || *order > '9' || *end || o > 4294967295ULL) {
        *why = "an item's order is an unsigned integer";
        return "bad-request";
    }
    if (type) {
        if (strcmp(type, "jid") == 0) t = 'j';
        else if (strcmp(type, "group") == 0) t = 'g';
        else if (strcmp(type, "subscription") == 0) t = 's';
        else {
            *why = "an item's type is jid, group or subscription";
            return "bad-request";
        }
        if (!value || !*value || strlen(value) > VALUE_MAX_LEN) {
            *why = "a typed item has a value";
            return "bad-request";
        }
        if (t == 'j') {
            if (norm_jid(value, norm, sizeof norm) < 0) {
                *why = "the value of a jid item is a JID";
                return "bad-request";
            }
            value = norm;
        }
        if (t == 's' && strcmp(value, "both") != 0 && strcmp(value, "to") != 0 && strcmp(value, "from") != 0 &&
            strcmp(value, "none") != 0) {
            *why = "a subscription is both, to, from or none";
            return "bad-request";
        }
        /* a group not in the roster: see groups_known() */
    } else {
        value = ""; /* the fall-through item has no value */
    }
    unsigned kinds = 0;
    for (const xm_node *c = A->first(e); c; c = A->next(c)) {
        if (strcmp(A->ns(c), NS_PRIVACY) != 0) continue;
        const char *n = A->name(c);
        if (strcmp(n, "message") == 0) kinds |= K_MSG;
        else if (strcmp(n, "iq") == 0) kinds |= K_IQ;
        else if (strcmp(n, "presence-in") == 0) kinds |= K_PIN;
        else if (strcmp(n, "presence-out") == 0) kinds |= K_POUT;
        else {
            *why = "an item's children are message, iq, presence-in and presence-out";
            return "bad-request";
        }
    }
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].order == o) {
            *why = "order values are unique in a list"; /* §2.1: MUST be bad-request */
            return "bad-request";
        }
    if (plist_add(l, (unsigned long)o, strcmp(action, "deny") == 0, t, kinds, value, strlen(value)) < 0)
        return "internal-server-error";
    return NULL;
}

/* The default list of user changes from old_name to new_name (either may
 * be NULL) or its content changes: work out the blocklist difference. */
static void default_changed(struct pv *pv, const char *user, const struct plist *before, const char *new_name)
{
    struct plist after = { 0 };
    int have = new_name && load_list(pv, user, new_name, &after) == 1;
    default_list_changed(pv, user, before, have ? &after : NULL, 0);
    plist_free(&after);
}

static int load_default(struct pv *pv, const char *user, const struct uidx *ix, struct plist *l)
{
    memset(l, 0, sizeof *l);
    return ix->def ? load_list(pv, user, ix->def, l) : 0;
}

/* §2.4 active list: set, changed or declined for the sending session,
 * with the presence that follows for that session only (§2.11). */
static void set_active(struct pv *pv, xm_stanza *iq, const xm_node *e, const char *user)
{
    const char *name = A->attr(e, "name"), *full = A->from(iq);
    struct sess *s = sess_find(pv, full);
    struct plist before, after;
    char *copy = NULL;
    if (name) {
        struct uidx ix;
        int rc = load_index(pv, user, &ix);
        if (rc < 0) {
            A->error(iq, "internal-server-error", NULL, NULL);
            return;
        }
        int found = rc == 1 && uidx_has(&ix, name);
        uidx_free(&ix);
        if (!found) {
            A->error(iq, "item-not-found", NULL, NULL);
            return;
        }
        if (!(copy = strdup(name)) || !(s = sess_get(pv, full))) {
            free(copy);
            A->error(iq, "internal-server-error", NULL, NULL);
            return;
        }
    } else if (!s || !s->active) {
        A->iq_result(iq, NULL); /* nothing to decline */
        return;
    }
    list_of_session(pv, user, full, &before);
    free(s->active);
    s->active = copy;
    if (!copy) sess_tidy(pv, s);
    A->iq_result(iq, NULL);
    list_of_session(pv, user, full, &after);
    session_list_changed(pv, user, full, &before, &after);
    plist_free(&before);
    plist_free(&after);
}

/* §2.5 default list. */
static void set_default(struct pv *pv, xm_stanza *iq, const xm_node *e, const char *user)
{
    const char *name = A->attr(e, "name");
    struct uidx ix;
    struct plist before;
    if (load_index(pv, user, &ix) < 0) {
        A->error(iq, "internal-server-error", NULL, NULL);
        return;
    }
    if (name && !uidx_has(&ix, name)) {
        A->error(iq, "item-not-found", NULL, NULL);
        uidx_free(&ix);
        return;
    }
    if ((!name && !ix.def) || (name && ix.def && strcmp(name, ix.def) == 0)) {
        A->iq_result(iq, NULL); /* no change */
        uidx_free(&ix);
        return;
    }
    struct scan c;
    scan_sessions(pv, user, A->from(iq), NULL, &c);
    if (ix.def && c.other_default) {
        /* §2.5: the default list applies to another connected resource */
        A->error(iq, "conflict", "another resource uses the default list", NULL);
        uidx_free(&ix);
        return;
    }
    load_default(pv, user, &ix, &before);
    free(ix.def);
    ix.def = name ? strdup(name) : NULL;
    if ((name && !ix.def) || save_index(pv, user, &ix) < 0) {
        A->error(iq, "internal-server-error", NULL, NULL);
    } else {
        A->iq_result(iq, NULL);
        default_changed(pv, user, &before, name);
    }
    plist_free(&before);
    uidx_free(&ix);
}

/* XEP-0016 §2.1: "If a client attempts to update, create, or delete a
 * list item with a group that is not in the user's roster, the server
 * SHOULD return to the client an <item-not-found/> stanza error." A group
 * item that the stored list (old) already has is accepted as it is: a list
 * is always sent whole (§2.6), and a group emptied since it was written
 * must not make the rest of the list uneditable. 1 if every group item of
 * l names a group of the roster, 0 if one does not, -1 on error. */
struct gwalk {
    const struct plist *l;
    char *found;             /* per item of l */
    size_t missing;
};

static void gwalk_one(const char *contact, const char *sub, const char *groups, size_t ngroups, void *arg)
{
    (void)contact;
    (void)sub;
    struct gwalk *w = arg;
    const char *g = groups;
    for (size_t k = 0; k < ngroups && w->missing; k++, g += strlen(g) + 1)
        for (size_t i = 0; i < w->l->n; i++)
            if (!w->found[i] && strcmp(w->l->v[i].value, g) == 0) {
                w->found[i] = 1;
                w->missing--;
            }
}

static int groups_known(struct pv *pv, const char *user, const struct plist *l, const struct plist *old)
{
    struct gwalk w = { l, calloc(l->n + 1, 1), 0 };
    int rc = -1;
    if (!w.found) return -1;
    for (size_t i = 0; i < l->n; i++) {
        w.found[i] = l->v[i].type != 'g';
        for (size_t j = 0; !w.found[i] && j < old->n; j++)
            w.found[i] = old->v[j].type == 'g' && strcmp(old->v[j].value, l->v[i].value) == 0;
        w.missing += !w.found[i];
    }
    if (w.missing && A->each_roster_item(pv->main, user, gwalk_one, &w) < 0) goto out;
    rc = w.missing == 0;
out:
    free(w.found);
    return rc;
}

/* §2.6-2.8: edit, add or remove a list. */
static void set_list(struct pv *pv, xm_stanza *iq, const xm_node *e, const char *user)
{
    const char *name = A->attr(e, "name"), *full = A->from(iq);
    struct uidx ix = { 0 };
    struct plist l = { 0 }, before = { 0 };
    if (!name || !*name || strlen(name) > NAME_MAX_LEN) {
        A->error(iq, "bad-request", "a list has a name", NULL);
        return;
    }
    size_t nitems = 0;
    for (const xm_node *c = A->first(e); c; c = A->next(c)) {
        if (strcmp(A->ns(c), NS_PRIVACY) != 0 || strcmp(A->name(c), "item") != 0) {
            A->error(iq, "bad-request", "a list holds items only", NULL);
            return;
        }
        if (++nitems > MAX_ITEMS) {
            A->error(iq, "policy-violation", "too many items in a list", NULL);
            return;
        }
        const char *why, *cond = parse_item(c, &l, &why);
        if (cond) {
            A->error(iq, cond, why, NULL);
            plist_free(&l);
            return;
        }
    }
    if (l.n) qsort(l.v, l.n, sizeof *l.v, item_cmp);
    if (load_index(pv, user, &ix) < 0) {
        A->error(iq, "internal-server-error", NULL, NULL);
        goto out;
    }
    int exists = uidx_has(&ix, name), is_default = ix.def && strcmp(ix.def, name) == 0;
    /* the list as it was: for the group check and for what follows */
    if (exists && load_list(pv, user, name, &before) < 0) {
        A->error(iq, "internal-server-error", NULL, NULL);
        goto out;
    }
    struct sess *self = sess_find(pv, full);
    int self_active = self && self->active && strcmp(self->active, name) == 0;
    if (!nitems) {
        /* §2.8 removal */
        if (!exists) {
            A->error(iq, "item-not-found", NULL, NULL);
            goto out;
        }
        struct scan c;
        scan_sessions(pv, user, full, name, &c);
        if (c.other_active_name || (is_default && c.other_default)) {
            A->error(iq, "conflict", "the list applies to another resource", NULL);
            goto out;
        }
        uidx_remove(&ix, name);
        if (is_default) {
            free(ix.def);
            ix.def = NULL;
        }
        if (del_list(pv, user, name) < 0 || save_index(pv, user, &ix) < 0) {
            A->error(iq, "internal-server-error", NULL, NULL);
            goto out;
        }
    } else {
        int known = groups_known(pv, user, &l, &before);
        if (known <= 0) {
            if (known < 0) A->error(iq, "internal-server-error", NULL, NULL);
            else A->error(iq, "item-not-found", "a group item names a group that is not in the roster", NULL);
            goto out;
        }
        if (!exists && ix.n >= MAX_LISTS) {
            A->error(iq, "policy-violation", "too many privacy lists", NULL);
            goto out;
        }
        if ((!exists && uidx_add(&ix, name, strlen(name)) < 0) || save_list(pv, user, name, &l) < 0 ||
            (!exists && save_index(pv, user, &ix) < 0)) {
            A->error(iq, "internal-server-error", NULL, NULL);
            goto out;
        }
    }
    A->iq_result(iq, NULL);
    push_list(pv, user, name);
    /* the sending session, when the list was its active one, is left out
     * of the default list's scope until it is handled below */
    if (is_default) default_list_changed(pv, user, &before, nitems ? &l : NULL, 0);
    if (nitems) {
        active_list_edited(pv, user, name, &before, &l);
    } else if (self_active) {
        /* its active list is gone: the default list applies to it now */
        struct plist now;
        free(self->active);
        self->active = NULL;
        list_of_session(pv, user, full, &now);
        session_list_changed(pv, user, full, &before, &now);
        plist_free(&now);
        sess_tidy(pv, self);
    }
out:
    plist_free(&l);
    plist_free(&before);
    uidx_free(&ix);
}

static void privacy_iq(xm_stanza *iq, const xm_node *q, void *data)
{
    struct pv *pv = data;
    char user[JID_MAX];
    if (!own_account(iq, user, sizeof user)) return;
    if (strcmp(A->type(iq), "get") == 0) {
        privacy_get(pv, iq, q, user);
        return;
    }
    /* §2.1: a set holds exactly one <active/>, <default/> or <list/> */
    const xm_node *only = NULL;
    unsigned n = 0;
    for (const xm_node *e = A->first(q); e; e = A->next(e)) {
        n++;
        only = e;
    }
    if (n != 1 || strcmp(A->ns(only), NS_PRIVACY) != 0) {
        A->error(iq, "bad-request", "a set holds one active, default or list element", NULL);
        return;
    }
    const char *what = A->name(only);
    if (strcmp(what, "active") == 0) set_active(pv, iq, only, user);
    else if (strcmp(what, "default") == 0) set_default(pv, iq, only, user);
    else if (strcmp(what, "list") == 0) set_list(pv, iq, only, user);
    else A->error(iq, "bad-request", "a set holds one active, default or list element", NULL);
}

/* ---------------- the blocklist (XEP-0191) ---------------- */

/* Block (block = 1) or unblock the n JIDs (normalized) of user; unblock
 * with n = 0: all. The default list is edited (created, named
 * BLOCKLIST_NAME, when there is none); new entries go first (§5). out gets
 * a row per JID when not NULL. 0, or -1 on a store error, -2 when a limit
 * is reached. */
static int change_blocklist(struct pv *pv, const char *user, int block, char **jids, size_t n, xm_buf *out)
{
    struct uidx ix;
    struct plist before = { 0 }, after = { 0 };
    int rc = -1, index_changed = 0;
    char fresh[64];
    if (load_index(pv, user, &ix) < 0) return -1;
    if (load_default(pv, user, &ix, &before) < 0) goto out;
    if (!ix.def && block) {
        /* a new default list, under a name no list has yet */
        snprintf(fresh, sizeof fresh, "%s", BLOCKLIST_NAME);
        for (unsigned i = 2; uidx_has(&ix, fresh); i++) snprintf(fresh, sizeof fresh, "%s (%u)", BLOCKLIST_NAME, i);
        if (ix.n >= MAX_LISTS) {
            rc = -2;
            goto out;
        }
        if (!(ix.def = strdup(fresh)) || uidx_add(&ix, fresh, strlen(fresh)) < 0) goto out;
        index_changed = 1;
    }
    if (!ix.def) { /* unblocking without a default list: nothing is blocked */
        for (size_t i = 0; out && i < n; i++) A->buf_addf(out, "%s\t%s\tnot-blocked\n", user, jids[i]);
        rc = 0;
        goto out;
    }
    /* after = new entries, then what stays of the old list, renumbered */
    unsigned long order = 0;
    if (block)
        for (size_t i = 0; i < n; i++) {
            int already = 0;
            for (size_t j = 0; j < before.n; j++) already |= is_block_item(&before.v[j]) && !strcmp(before.v[j].value, jids[i]);
            for (size_t j = 0; j < after.n; j++) already |= !strcmp(after.v[j].value, jids[i]);
            if (out) A->buf_addf(out, "%s\t%s\t%s\n", user, jids[i], already ? "unchanged" : "blocked");
            if (!already && plist_add(&after, order++, 1, 'j', 0, jids[i], strlen(jids[i])) < 0) goto out;
        }
    for (size_t j = 0; j < before.n; j++) {
        const struct item *it = &before.v[j];
        int drop = 0;
        if (!block && is_block_item(it)) {
            drop = n == 0;
            for (size_t i = 0; i < n; i++) drop |= strcmp(it->value, jids[i]) == 0;
            if (drop && out) A->buf_addf(out, "%s\t%s\tunblocked\n", user, it->value);
        }
        if (!drop && plist_add(&after, order++, it->deny, it->type, it->kinds, it->value, strlen(it->value)) < 0)
            goto out;
    }
    if (!block && out)
        for (size_t i = 0; i < n; i++) {
            int was = 0;
            for (size_t j = 0; j < before.n; j++) was |= is_block_item(&before.v[j]) && !strcmp(before.v[j].value, jids[i]);
            if (!was) A->buf_addf(out, "%s\t%s\tnot-blocked\n", user, jids[i]);
        }
    if (after.n > MAX_ITEMS) {
        rc = -2;
        goto out;
    }
    if (save_list(pv, user, ix.def, &after) < 0 || (index_changed && save_index(pv, user, &ix) < 0)) goto out;
    push_list(pv, user, ix.def);
    default_list_changed(pv, user, &before, &after, !block && n == 0);
    active_list_edited(pv, user, ix.def, &before, &after);
    rc = 0;
out:
    plist_free(&before);
    plist_free(&after);
    uidx_free(&ix);
    return rc;
}

/* §3.2: the blocklist; the session asked for it, so it gets the pushes. */
static void blocklist_get(xm_stanza *iq, const xm_node *payload, void *data)
{
    (void)payload;
    struct pv *pv = data;
    char user[JID_MAX];
    if (!own_account(iq, user, sizeof user)) return;
    struct uidx ix;
    struct plist l;
    xm_buf *b = A->buf_new();
    if (!b || load_index(pv, user, &ix) < 0) {
        A->error(iq, "internal-server-error", NULL, NULL);
        A->buf_free(b);
        return;
    }
    if (load_default(pv, user, &ix, &l) < 0) {
        A->error(iq, "internal-server-error", NULL, NULL);
        goto out;
    }
    A->buf_addf(b, "<blocklist xmlns='" NS_BLOCKING "'>");
    const char **v = malloc((l.n + 1) * sizeof *v);
    size_t n = v ? blocked_of(&l, v) : 0;
    for (size_t i = 0; i < n; i++) {
        A->buf_addf(b, "<item");
        buf_attr(b, "jid", v[i]);
        A->buf_addf(b, "/>");
    }
    free(v);
    A->buf_addf(b, "</blocklist>");
    struct sess *s = sess_get(pv, A->from(iq));
    if (s) s->wants_blocklist = 1;
    answer(iq, b);
    plist_free(&l);
out:
    uidx_free(&ix);
    A->buf_free(b);
}

/* The JIDs of the <item/>s of a block or unblock, normalized. NULL with
 * an error sent. */
static char **item_jids(xm_stanza *iq, const xm_node *payload, size_t *n)
{
    size_t cap = 0;
    char **v = NULL;
    const char *cond = "internal-server-error", *why = NULL;
    *n = 0;
    for (const xm_node *e = A->first(payload); e; e = A->next(e)) {
        if (strcmp(A->name(e), "item") != 0 || strcmp(A->ns(e), NS_BLOCKING) != 0) continue;
        const char *jid = A->attr(e, "jid");
        char norm[JID_MAX];
        if (!jid || norm_jid(jid, norm, sizeof norm) < 0) {
            cond = "jid-malformed";
            why = "an item's jid is not a JID";
            goto out;
        }
        if (*n >= MAX_ITEMS) {
            cond = "policy-violation";
            why = "too many items";
            goto out;
        }
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            char **g = realloc(v, cap * sizeof *g);
            if (!g) goto out;
            v = g;
        }
        if (!(v[*n] = strdup(norm))) goto out;
        (*n)++;
    }
    if (v || (v = calloc(1, sizeof *v))) return v;
out:
    A->error(iq, cond, why, NULL);
    for (size_t i = 0; i < *n; i++) free(v[i]);
    free(v);
    *n = 0;
    return NULL;
}

static void block_set(xm_stanza *iq, const xm_node *payload, void *data)
{
    struct pv *pv = data;
    char user[JID_MAX];
    if (!own_account(iq, user, sizeof user)) return;
    int block = strcmp(A->name(payload), "block") == 0;
    size_t n;
    char **jids = item_jids(iq, payload, &n);
    if (!jids) return;
    if (block && !n) {
        A->error(iq, "bad-request", "a block has at least one item", NULL); /* §3.3 */
    } else {
        int rc = change_blocklist(pv, user, block, jids, n, NULL);
        if (rc == -2) A->error(iq, "policy-violation", "too many blocked JIDs", NULL);
        else if (rc < 0) A->error(iq, "internal-server-error", NULL, NULL);
        else A->iq_result(iq, NULL);
    }
    for (size_t i = 0; i < n; i++) free(jids[i]);
    free(jids);
}

/* ---------------- administrator's commands ---------------- */

static int cmd_user_ok(xm_host *h, const char *bare, xm_buf *out)
{
    int e = A->user_exists(h, bare);
    if (e == 1) return 1;
    A->buf_addf(out, e == 0 ? "no such user: %s\n" : "cannot read the account of %s\n", bare);
    return 0;
}

/* xmppctl blocklist USER: one row per blocked JID. */
static int cmd_blocklist(xm_host *h, const char *bare, int argc, char **argv, xm_buf *out, void *data)
{
    (void)argv;
    struct pv *pv = data;
    if (argc != 0) {
        A->buf_addf(out, "usage: blocklist USER\n");
        return 1;
    }
    if (!cmd_user_ok(h, bare, out)) return -1;
    struct uidx ix;
    struct plist l;
    if (load_index(pv, bare, &ix) < 0) return -1;
    int rc = load_default(pv, bare, &ix, &l);
    uidx_free(&ix);
    if (rc < 0) return -1;
    for (size_t i = 0; i < l.n; i++)
        if (is_block_item(&l.v[i])) A->buf_addf(out, "%s\n", l.v[i].value);
    plist_free(&l);
    return 0;
}

/* xmppctl block USER JID... / unblock USER [JID...] (none: all). */
static int cmd_block_common(xm_host *h, const char *bare, int block, int argc, char **argv, xm_buf *out,
                            struct pv *pv)
{
    if (block && argc < 1) {
        A->buf_addf(out, "usage: block USER JID...\n");
        return 1;
    }
    if (argc > MAX_ITEMS) {
        A->buf_addf(out, "at most %d JIDs at once\n", MAX_ITEMS);
        return 1;
    }
    char **jids = calloc((size_t)argc + 1, sizeof *jids);
    int rc = -1;
    if (!jids) return -1;
    for (int i = 0; i < argc; i++) {
        char norm[JID_MAX];
        if (norm_jid(argv[i], norm, sizeof norm) < 0) {
            A->buf_addf(out, "not a JID: %s\n", argv[i]);
            rc = 1;
            goto out;
        }
        if (!(jids[i] = strdup(norm))) goto out;
    }
    if (!cmd_user_ok(h, bare, out)) goto out;
    xm_buf *rows = A->buf_new();
    if (!rows) goto out;
    rc = change_blocklist(pv, bare, block, jids, (size_t)argc, rows);
    if (rc == -2) A->buf_addf(out, "too many blocked JIDs (at most %d items in a list)\n", MAX_ITEMS);
    else if (rc == 0) {
        size_t len;
        const char *d = A->buf_data(rows, &len);
        if (d) A->buf_add(out, d, len);
    }
    if (rc == -2) rc = -1;
    A->buf_free(rows);
out:
    for (int i = 0; i < argc; i++) free(jids[i]);
    free(jids);
    return rc;
}

static int cmd_block(xm_host *h, const char *bare, int argc, char **argv, xm_buf *out, void *data)
{
    return cmd_block_common(h, bare, 1, argc, argv, out, data);
}

static int cmd_unblock(xm_host *h, const char *bare, int argc, char **argv, xm_buf *out, void *data)
{
    return cmd_block_common(h, bare, 0, argc, argv, out, data);
}

/* ---------------- the two modules ---------------- */

/* The machinery of h's host, set up by the first of the two modules
 * initialised there (xmpp-sm only). NULL on failure (logged). */
static struct pv *machinery(xm_host *h)
{
    const char *domain = A->domain(h);
    for (struct pv *pv = all_pv; pv; pv = pv->next)
        if (strcmp(pv->domain, domain) == 0) return pv;
    struct pv *pv = calloc(1, sizeof *pv);
    if (!pv || !(pv->domain = strdup(domain))) goto fail;
    pv->main = h;
    if (!(pv->st = A->store(h, "privacy"))) {
        A->log(h, 3, "cannot open the store privacy");
        goto fail;
    }
    if (A->add_stanza_hook(h, XM_HOOK_USER_SEND_PACKET, HOOK_SEQ, on_send, pv) < 0 ||
        A->add_stanza_hook(h, XM_HOOK_PRESENCE_OUT, HOOK_SEQ, on_presence_out, pv) < 0 ||
        A->add_stanza_hook(h, XM_HOOK_USER_RECEIVE_PACKET, HOOK_SEQ, on_receive, pv) < 0 ||
        A->add_stanza_hook(h, XM_HOOK_DELIVER_PACKET, HOOK_SEQ, on_deliver, pv) < 0 ||
        A->add_stanza_hook(h, XM_HOOK_OFFLINE_MESSAGE, HOOK_SEQ, on_offline, pv) < 0 ||
        A->add_event_hook(h, XM_HOOK_SESSION_CLOSED, HOOK_SEQ, on_session_closed, pv) < 0 ||
        A->add_event_hook(h, XM_HOOK_USER_REMOVED, HOOK_SEQ, on_user_removed, pv) < 0 ||
        A->add_command(h, "blocklist", cmd_blocklist, pv) < 0 || A->add_command(h, "block", cmd_block, pv) < 0 ||
        A->add_command(h, "unblock", cmd_unblock, pv) < 0) {
        A->log(h, 3, "cannot register the privacy hooks and commands");
        goto fail;
    }
    pv->next = all_pv;
    all_pv = pv;
    return pv;
fail:
    if (pv) free(pv->domain);
    free(pv);
    return NULL;
}

static int privacy_init(xm_host *h, const struct xm_api *api)
{
    A = api;
    if (api->add_feature(h, NS_PRIVACY) < 0) return -1;
    if (!api->in_sm(h)) return 0;
    struct pv *pv = machinery(h);
    if (!pv) return -1;
    pv->priv = h;
    api->set_data(h, pv);
    return api->add_iq_handler(h, NS_PRIVACY, "query", XM_IQ_ACCOUNT | XM_IQ_GET | XM_IQ_SET, privacy_iq, pv);
}

static int blocking_init(xm_host *h, const struct xm_api *api)
{
    A = api;
    if (api->add_feature(h, NS_BLOCKING) < 0) return -1;
    if (!api->in_sm(h)) return 0;
    struct pv *pv = machinery(h);
    if (!pv) return -1;
    pv->block = h;
    api->set_data(h, pv);
    if (api->add_iq_handler(h, NS_BLOCKING, "blocklist", XM_IQ_ACCOUNT | XM_IQ_GET, blocklist_get, pv) < 0 ||
        api->add_iq_handler(h, NS_BLOCKING, "block", XM_IQ_ACCOUNT | XM_IQ_SET, block_set, pv) < 0 ||
        api->add_iq_handler(h, NS_BLOCKING, "unblock", XM_IQ_ACCOUNT | XM_IQ_SET, block_set, pv) < 0)
        return -1;
    return 0;
}

/* The machinery goes with the last of the two modules of its host. */
static void common_stop(xm_host *h, const struct xm_api *api)
{
    struct pv *pv = api->get_data(h);
    if (!pv) return;
    if (pv->priv == h) pv->priv = NULL;
    if (pv->block == h) pv->block = NULL;
    api->set_data(h, NULL);
    if (pv->priv || pv->block) return;
    for (struct pv **p = &all_pv; *p; p = &(*p)->next)
        if (*p == pv) {
            *p = pv->next;
            break;
        }
    while (pv->sessions) {
        struct sess *s = *(struct sess **)pv->sessions;
        tdelete(s, &pv->sessions, sess_cmp);
        sess_free(s);
    }
    free(pv->domain);
    free(pv);
}

const struct xm_module xm_mod_privacy = { XMPPD_MODULE_ABI, "privacy", "XEP-0016 privacy lists (jabber:iq:privacy)",
                                          privacy_init, common_stop };
const struct xm_module xm_mod_blocking = { XMPPD_MODULE_ABI, "blocking",
                                           "XEP-0191 blocking command, on the privacy lists", blocking_init,
                                           common_stop };
