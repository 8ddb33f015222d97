/* mod_private.c - the built-in module "private": XEP-0049 private XML
 * storage. A user keeps XML fragments on the server under their namespace
 * (bookmarks in 'storage:bookmarks', client preferences...) and gets them
 * back; nobody else can read or write them. Stored in the shard's
 * private.tdb as key "BARE\0NAMESPACE" -> the elements of that namespace as
 * XML text. private.max_size caps what one account keeps, all namespaces
 * together; the fragments of an account are deleted with it. */
#include "xmppd/module.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PRIVATE "jabber:iq:private"
#define JID_MAX 3072      /* RFC 7622 §3.1: 3071 bytes and a NUL */
#define MAX_NS_PER_SET 32 /* keeps a set with thousands of children linear */

static const struct xm_api *api;

struct priv {
    xm_store *st;     /* NULL in xmpp-c2s */
    long long max;    /* private.max_size */
};

/* XEP-0049 §2.3: namespaces beginning with 'jabber:' or
 * 'http://jabber.org/', and 'vcard-temp', are reserved (refusing them with
 * not-acceptable is the XEP's optional behaviour, taken here: they belong
 * to protocols with their own storage). */
static int reserved_ns(const char *ns)
{
    return strncmp(ns, "jabber:", 7) == 0 || strncmp(ns, "http://jabber.org/", 18) == 0 ||
           strcmp(ns, "vcard-temp") == 0;
}

/* The store key of one namespace of bare into key (cleared first). */
static int make_key(xm_buf *key, const char *bare, const char *ns, const char **k, size_t *klen)
{
    api->buf_clear(key);
    api->buf_add(key, bare, strlen(bare) + 1); /* with the NUL: "a@x" is no prefix of "a@xy" */
    api->buf_add(key, ns, strlen(ns));
    *k = api->buf_data(key, klen);
    return *k ? 0 : -1;
}

struct size_walk {
    size_t prefix;                 /* length of "BARE\0" */
    const char *const *replaced;   /* namespaces the set replaces */
    int nreplaced;
    long long total;               /* what stays stored */
};

static int add_kept_size(const char *key, size_t klen, const char *val, size_t vlen, void *arg)
{
    (void)val;
    struct size_walk *w = arg;
    for (int i = 0; i < w->nreplaced; i++) {
        size_t n = strlen(w->replaced[i]);
        if (klen - w->prefix == n && memcmp(key + w->prefix, w->replaced[i], n) == 0) return 0;
    }
    w->total += (long long)vlen;
    return 0;
}

static void private_get(xm_stanza *iq, const xm_node *payload, struct priv *p, const char *bare)
{
    const char *err = "internal-server-error", *text = NULL;
    xm_buf *key = api->buf_new(), *val = api->buf_new(), *res = api->buf_new();
    const xm_node *first = api->first(payload);
    const char *ns = api->ns(first), *k, *v;
    size_t klen, vlen;

    /* §2.3: "A client MUST NOT query for more than namespace in a single
     * IQ get request" */
    for (const xm_node *c = api->next(first); c; c = api->next(c)) {
        if (strcmp(api->ns(c), ns) != 0) {
            err = "bad-request";
            text = "one namespace per get";
            goto out;
        }
    }
    if (!key || !val || !res || make_key(key, bare, ns, &k, &klen) < 0) goto out;
    int r = api->get(p->st, k, klen, val);
    if (r < 0) goto out;
    api->buf_addf(res, "<query xmlns='" NS_PRIVATE "'>");
    if (r == 1) {
        if (!(v = api->buf_data(val, &vlen))) goto out;
        api->buf_add(res, v, vlen);
    } else {
        /* nothing stored: the requested element, empty (as the servers
         * clients were written against do) */
        const char *name = api->name(first);
        api->buf_addf(res, "<");
        api->buf_add_esc(res, name, strlen(name));
        api->buf_addf(res, " xmlns='");
        api->buf_add_esc(res, ns, strlen(ns));
        api->buf_addf(res, "'/>");
    }
    api->buf_addf(res, "</query>");
    const char *xml = api->buf_data(res, NULL);
    if (!xml) goto out;
    api->iq_result(iq, xml);
    err = NULL;
out:
    if (err) api->error(iq, err, text, NULL);
    if (key) api->buf_free(key);
    if (val) api->buf_free(val);
    if (res) api->buf_free(res);
}

static void private_set(xm_stanza *iq, const xm_node *payload, struct priv *p, const char *bare)
{
    const char *err = "internal-server-error", *text = NULL, *k;
    const char *nss[MAX_NS_PER_SET];
    xm_buf *vals[MAX_NS_PER_SET] = { 0 };
    xm_buf *key = api->buf_new();
    char msg[96];
    int n = 0;
    size_t klen;

    if (!key) goto out;
    /* §2.3: "an IQ set ... MAY contain multiple elements qualified by the
     * same namespace": the elements of one namespace are stored together
     * and replace what that namespace held */
    for (const xm_node *c = api->first(payload); c; c = api->next(c)) {
        const char *ns = api->ns(c);
        int i = 0;
        while (i < n && strcmp(nss[i], ns) != 0) i++;
        if (i == n) {
            if (n == MAX_NS_PER_SET) {
                err = "not-acceptable";
                snprintf(msg, sizeof msg, "at most %d namespaces in one set", MAX_NS_PER_SET);
                text = msg;
                goto out;
            }
            nss[n] = ns;
            if (!(vals[n++] = api->buf_new())) goto out;
        }
        if (api->serialize(c, vals[i]) < 0) goto out;
    }

    struct size_walk w = { strlen(bare) + 1, nss, n, 0 };
    api->buf_clear(key);
    api->buf_add(key, bare, strlen(bare) + 1);
    if (!(k = api->buf_data(key, &klen))) goto out;
    if (api->each(p->st, k, klen, add_kept_size, &w) < 0) goto out;
    for (int i = 0; i < n; i++) {
        size_t vlen;
        if (!api->buf_data(vals[i], &vlen)) goto out;
        w.total += (long long)vlen;
    }
    if (w.total > p->max) {
        err = "not-acceptable";
        snprintf(msg, sizeof msg, "private storage is limited to %lld bytes per account", p->max);
        text = msg;
        goto out;
    }
    for (int i = 0; i < n; i++) {
        size_t vlen;
        const char *v = api->buf_data(vals[i], &vlen);
        if (make_key(key, bare, nss[i], &k, &klen) < 0 || api->put(p->st, k, klen, v, vlen) < 0) goto out;
    }
    api->iq_result(iq, NULL);
    err = NULL;
out:
    if (err) api->error(iq, err, text, NULL);
    for (int i = 0; i < n; i++)
        if (vals[i]) api->buf_free(vals[i]);
    if (key) api->buf_free(key);
}

static void private_iq(xm_stanza *iq, const xm_node *payload, void *data)
{
    struct priv *p = data;
    char bare[JID_MAX];
    const char *to = api->to(iq);
    api->bare_jid(api->from(iq), bare, sizeof bare);
    /* §2.3 and §4: only the user's own resources; Forbidden for others'
     * data ("the former is preferable") */
    if (*to && strcmp(to, bare) != 0) {
        api->error(iq, "forbidden", NULL, NULL);
        return;
    }
    /* §2.3: "At least one child element with a proper namespace MUST be
     * included; otherwise ... Not Acceptable" (also for a get, where the
     * XEP's "Bad Format" is shown as not-acceptable) */
    const xm_node *c = api->first(payload);
    if (!c) {
        api->error(iq, "not-acceptable", "a child element names the namespace", NULL);
        return;
    }
    for (; c; c = api->next(c)) {
        const char *ns = api->ns(c);
        if (!ns || !*ns || strcmp(ns, NS_PRIVATE) == 0) {
            api->error(iq, "not-acceptable", "each child element needs its own namespace", NULL);
            return;
        }
        if (reserved_ns(ns)) {
            api->error(iq, "not-acceptable", "reserved namespace", NULL);
            return;
        }
    }
    if (strcmp(api->type(iq), "get") == 0) private_get(iq, payload, p, bare);
    else private_set(iq, payload, p, bare);
}

struct key_list {
    xm_buf *keys; /* each key as its length (size_t) and its bytes */
};

static int collect_key(const char *key, size_t klen, const char *val, size_t vlen, void *arg)
{
    (void)val;
    (void)vlen;
    struct key_list *l = arg;
    api->buf_add(l->keys, &klen, sizeof klen);
    api->buf_add(l->keys, key, klen);
    return 0;
}

/* An account was removed: its fragments go with it. */
static void private_removed(xm_host *h, const char *jid, void *data)
{
    struct priv *p = data;
    xm_buf *prefix = api->buf_new();
    struct key_list l = { api->buf_new() };
    const char *k, *keys;
    size_t klen, len;
    int ok = 0;

    if (!prefix || !l.keys) goto out;
    api->buf_add(prefix, jid, strlen(jid) + 1);
    if (!(k = api->buf_data(prefix, &klen))) goto out;
    /* deleted after the walk, not during it */
    if (api->each(p->st, k, klen, collect_key, &l) < 0 || !(keys = api->buf_data(l.keys, &len))) goto out;
    for (size_t off = 0; off + sizeof(size_t) <= len;) {
        size_t n;
        memcpy(&n, keys + off, sizeof n);
        off += sizeof n;
        if (api->del(p->st, keys + off, n) < 0) goto out;
        off += n;
    }
    ok = 1;
out:
    if (!ok) api->log(h, 3, "could not delete the private data of %s", jid);
    if (prefix) api->buf_free(prefix);
    if (l.keys) api->buf_free(l.keys);
}

static int private_init(xm_host *h, const struct xm_api *a)
{
    api = a;
    long long max = api->option_size(h, "max_size", 64 * 1024, 1024, 1LL << 30);
    if (max < 0) return -1;
    struct priv *p = calloc(1, sizeof *p);
    if (!p) {
        api->log(h, 3, "out of memory");
        return -1;
    }
    p->max = max;
    api->set_data(h, p);
    if (api->in_sm(h) && !(p->st = api->store(h, "private"))) {
        api->log(h, 3, "cannot open the store private.tdb");
        return -1;
    }
    if (api->add_account_feature(h, NS_PRIVATE) < 0 ||
        api->add_iq_handler(h, NS_PRIVATE, "query", XM_IQ_ACCOUNT | XM_IQ_GET | XM_IQ_SET, private_iq, p) < 0 ||
        api->add_event_hook(h, XM_HOOK_USER_REMOVED, 50, private_removed, p) < 0)
        return -1;
    return 0;
}

static void private_stop(xm_host *h, const struct xm_api *a)
{
    free(a->get_data(h));
    a->set_data(h, NULL);
}

const struct xm_module xm_mod_private = {
    XMPPD_MODULE_ABI, "private", "XEP-0049 private XML storage", private_init, private_stop
};
