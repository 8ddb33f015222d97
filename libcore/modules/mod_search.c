/* mod_search.c - XEP-0055 jabber:iq:search on the server's domain: a user
 * directory over the vCards that mod_vcard stores (the store "vcard",
 * whose records start with the searchable fields; see mod_vcard.c).
 *
 * A get returns instructions, the four fields of XEP-0055 (first, last,
 * nick, email) and the same as a jabber:x:data form (XEP-0055 §3); a set
 * with either returns the users whose fields match, in the form it was
 * asked in. A field matches when the text given appears anywhere in it,
 * ignoring case (a substring match: "ann" finds Ann, Joanne and Hannah,
 * which is what a colleague half-remembering a name needs); every field
 * given must match. Results are ordered by JID and capped at
 * search.max_results; a capped answer carries a XEP-0059 <set/> with the
 * full count, and a client can page on with <after/> and <before/>.
 *
 * Only users of the host's own domain may search it: it is the
 * directory of that domain's people, not a way for anyone to list them.
 * The vCards are spread over the shards: every shard searches its own
 * (see "between shards" below). */
#include "xmppd/module.h"

#include <stdlib.h>
#include <string.h>

#define NS_SEARCH "jabber:iq:search"
#define NS_DATA "jabber:x:data"
#define NS_RSM "http://jabber.org/protocol/rsm"
#define MAGIC "xmppd-vcard 1\n" /* the record format of mod_vcard.c */

enum { F_FIRST, F_LAST, F_NICK, F_EMAIL, NFIELDS };
static const char *const field_name[NFIELDS] = { "first", "last", "nick", "email" };
/* the labels of the XEP-0055 §6.2 FORM_TYPE registration */
static const char *const field_label[NFIELDS] = { "First Name", "Family Name", "Nickname", "Email Address" };

struct search {
    const struct xm_api *api;
    xm_host *h;
    xm_store *store;         /* mod_vcard's; NULL in xmpp-c2s */
    long max_results;
};

/* One match: a single allocation holding the JID and the four fields. */
struct hit {
    char *jid;
    const char *f[NFIELDS];
};

/* A search being run over the store. */
struct query {
    struct search *s;
    const char *domain;
    size_t dlen;
    char *want[NFIELDS];     /* lower-cased criteria; NULL: not given */
    const char *after;       /* XEP-0059: the page after this JID ... */
    const char *before;      /* ... or before this one ("" = the last page) */
    size_t max;              /* page size */
    struct hit *hits;        /* the page so far, sorted by JID, at most max */
    size_t n;
    long count;              /* matches in the whole result set */
    long ahead;              /* forward: matches up to 'after'; backward: matches before 'before' */
    char *fold;              /* scratch for lower-casing a field */
    size_t fold_cap;
    int oom;
};

/* ---------------- lower case ---------------- */

/* The lower case of one code point, for the scripts a directory of names
 * mostly holds: ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic.
 * Others compare as they are (the daemons run in the C locale, where
 * towlower() knows ASCII only). */
static unsigned lower(unsigned c)
{
    if (c < 0x80)
        return c >= 'A' && c <= 'Z' ? c + 32 : c;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7)
        return c + 32;
    if (c >= 0x100 && c <= 0x17F) {
        if (c == 0x130) /* capital I with dot: i */
            return 'i';
        if (c == 0x178) /* capital Y with diaeresis */
            return 0xFF;
        if (c == 0x138 || c == 0x149 || c == 0x17F)
            return c;
        if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E))
            return c & 1 ? c + 1 : c;
        return c & 1 ? c : c + 1;
    }
    if (c >= 0x391 && c <= 0x3AB && c != 0x3A2)
        return c + 32;
    if (c == 0x386)
        return 0x3AC;
    if (c >= 0x388 && c <= 0x38A)
        return c + 37;
    if (c == 0x38C)
        return 0x3CC;
    if (c == 0x38E || c == 0x38F)
        return c + 63;
    if (c == 0x3C2) /* final sigma matches sigma */
        return 0x3C3;
    if (c >= 0x410 && c <= 0x42F)
        return c + 32;
    if (c >= 0x400 && c <= 0x40F)
        return c + 80;
    return c;
}

/* Lower-case the UTF-8 text s[0..n) into out, NUL-terminated: at most
 * n + 1 bytes, since no mapping above makes a character longer. Bytes
 * that are not valid UTF-8 are copied as they are. */
static size_t fold_into(const char *s, size_t n, char *out)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    char *o = out;
    while (p < end) {
        unsigned c = *p, len = 1;
        if (c >= 0xC2 && c <= 0xDF && end - p >= 2 && (p[1] & 0xC0) == 0x80) {
            c = ((c & 0x1F) << 6) | (p[1] & 0x3F);
            len = 2;
        } else if (c < 0x80) {
            len = 1;
        } else {
            /* three- and four-byte sequences are copied: nothing above maps them */
            len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 1;
            if ((size_t)(end - p) < len)
                len = 1;
            memcpy(o, p, len);
            o += len;
            p += len;
            continue;
        }
        c = lower(c);
        if (c < 0x80) {
            *o++ = (char)c;
        } else {
            *o++ = (char)(0xC0 | (c >> 6));
            *o++ = (char)(0x80 | (c & 0x3F));
        }
        p += len;
    }
    *o = '\0';
    return (size_t)(o - out);
}

/* A lower-cased, white-space-collapsed copy of a criterion; NULL when it
 * is empty (not given) or memory ran out (*oom set). */
static char *criterion(const char *s, int *oom)
{
    size_t n = strlen(s);
    char *tmp = malloc(n + 1), *out = malloc(n + 1);
    size_t k = 0;
    int space = 0;
    if (!tmp || !out) {
        *oom = 1;
        free(tmp);
        free(out);
        return NULL;
    }
    for (const char *p = s; *p; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
            space = k > 0;
            continue;
        }
        if (space)
            tmp[k++] = ' ';
        tmp[k++] = *p;
        space = 0;
    }
    if (k == 0) {
        free(tmp);
        free(out);
        return NULL;
    }
    fold_into(tmp, k, out);
    free(tmp);
    return out;
}

/* ---------------- the records ---------------- */

/* The four fields of a record of mod_vcard: 0, or -1 if it is not one. */
static int parse_record(const char *val, size_t vlen, const char *f[NFIELDS], size_t fl[NFIELDS])
{
    const char *p = val, *end = val + vlen;
    size_t ml = strlen(MAGIC);
    if (vlen < ml || memcmp(val, MAGIC, ml) != 0)
        return -1;
    p += ml;
    for (int i = 0; i < NFIELDS; i++) {
        size_t nl = strlen(field_name[i]);
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol || (size_t)(eol - p) < nl + 1 || memcmp(p, field_name[i], nl) != 0 || p[nl] != ' ')
            return -1;
        f[i] = p + nl + 1;
        fl[i] = (size_t)(eol - f[i]);
        p = eol + 1;
    }
    return 0;
}

/* strcmp of a key (not NUL-terminated) and a JID. */
static int cmp_key(const char *key, size_t klen, const char *s)
{
    size_t sl = strlen(s);
    int c = memcmp(key, s, klen < sl ? klen : sl);
    return c ? c : klen < sl ? -1 : klen > sl;
}

static struct hit make_hit(const char *key, size_t klen, const char *f[NFIELDS], const size_t fl[NFIELDS])
{
    struct hit h = { 0 };
    size_t total = klen + 1;
    for (int i = 0; i < NFIELDS; i++)
        total += fl[i] + 1;
    char *p = malloc(total);
    if (!p)
        return h;
    h.jid = p;
    memcpy(p, key, klen);
    p[klen] = '\0';
    p += klen + 1;
    for (int i = 0; i < NFIELDS; i++) {
        memcpy(p, f[i], fl[i]);
        p[fl[i]] = '\0';
        h.f[i] = p;
        p += fl[i] + 1;
    }
    return h;
}

/* Put h into the sorted page, which has room for it. */
static void insert_hit(struct query *q, struct hit h)
{
    size_t i = q->n;
    while (i > 0 && strcmp(q->hits[i - 1].jid, h.jid) > 0) {
        q->hits[i] = q->hits[i - 1];
        i--;
    }
    q->hits[i] = h;
    q->n++;
}

/* 1 if every criterion given appears in its field. */
static int matches(struct query *q, const char *f[NFIELDS], const size_t fl[NFIELDS])
{
    for (int i = 0; i < NFIELDS; i++) {
        if (!q->want[i])
            continue;
        if (fl[i] + 1 > q->fold_cap) {
            char *grown = realloc(q->fold, fl[i] + 1);
            if (!grown) {
                q->oom = 1;
                return 0;
            }
            q->fold = grown;
            q->fold_cap = fl[i] + 1;
        }
        fold_into(f[i], fl[i], q->fold);
        if (!strstr(q->fold, q->want[i]))
            return 0;
    }
    return 1;
}

/* Free what a query holds (its page, criteria and scratch). */
static void query_free(struct query *q)
{
    for (size_t i = 0; i < q->n; i++)
        free(q->hits[i].jid);
    free(q->hits);
    for (int i = 0; i < NFIELDS; i++)
        free(q->want[i]);
    free(q->fold);
}

/* Offer a match to the page: it keeps the max smallest JIDs after
 * 'after' (forward) or the max largest before 'before' (backward). The
 * caller has counted it. 0, or 1 when memory ran out. */
static int page_offer(struct query *q, const char *key, size_t klen, const char *f[NFIELDS], const size_t fl[NFIELDS])
{
    if (!q->before) {
        if (q->n == q->max && (q->max == 0 || cmp_key(key, klen, q->hits[q->n - 1].jid) >= 0))
            return 0;
        struct hit h = make_hit(key, klen, f, fl);
        if (!h.jid) {
            q->oom = 1;
            return 1;
        }
        if (q->n == q->max)
            free(q->hits[--q->n].jid);
        insert_hit(q, h);
    } else {
        if (q->n == q->max && (q->max == 0 || cmp_key(key, klen, q->hits[0].jid) <= 0))
            return 0;
        struct hit h = make_hit(key, klen, f, fl);
        if (!h.jid) {
            q->oom = 1;
            return 1;
        }
        if (q->n == q->max) {
            free(q->hits[0].jid);
            memmove(q->hits, q->hits + 1, (q->n - 1) * sizeof *q->hits);
            q->n--;
        }
        insert_hit(q, h);
    }
    return 0;
}

/* store->each: one vCard record of this shard. */
static int visit(const char *key, size_t klen, const char *val, size_t vlen, void *arg)
{
    struct query *q = arg;
    const char *f[NFIELDS];
    size_t fl[NFIELDS];

    /* the store holds the vCards of every host of the shard: keep this
     * domain's users ("local@domain") */
    if (klen <= q->dlen + 1 || key[klen - q->dlen - 1] != '@' ||
        memcmp(key + klen - q->dlen, q->domain, q->dlen) != 0)
        return 0;
    if (parse_record(val, vlen, f, fl) < 0 || !matches(q, f, fl))
        return q->oom;
    q->count++;
    if (!q->before) {
        /* forward: what comes up to 'after' only counts */
        if (q->after && cmp_key(key, klen, q->after) <= 0) {
            q->ahead++;
            return 0;
        }
    } else {
        /* backward ("" = from the end): what comes from 'before' on is out */
        if (*q->before && cmp_key(key, klen, q->before) >= 0)
            return 0;
        q->ahead++;
    }
    return page_offer(q, key, klen, f, fl);
}

/* ---------------- between shards ----------------
 *
 * Every shard holds the vCards of its own users, so a search asks the
 * module on every shard (api->ask_shards): each scans its store and
 * answers its own page and counts; the shard that got the IQ merges the
 * pages the way one scan over all of them would have.
 *
 * Wire forms (strings as "LEN:BYTES\n", "-\n" for none):
 *   question: first last nick email after before, then "MAX\n"
 *   answer:   "COUNT AHEAD\n", then jid first last nick email per match */

static void put_str(const struct xm_api *api, xm_buf *b, const char *s, size_t n)
{
    if (!s) {
        api->buf_add(b, "-\n", 2);
        return;
    }
    api->buf_addf(b, "%zu:", n);
    api->buf_add(b, s, n);
    api->buf_add(b, "\n", 1);
}

/* One string of the wire form: 1 with *s, *n (*s NULL for "-"), 0 bad. */
static int get_str(const char **p, const char *end, const char **s, size_t *n)
{
    if (*p < end && **p == '-') {
        if (*p + 1 >= end || (*p)[1] != '\n')
            return 0;
        *s = NULL;
        *n = 0;
        *p += 2;
        return 1;
    }
    size_t len = 0;
    const char *q = *p;
    while (q < end && *q >= '0' && *q <= '9' && len < (1u << 24))
        len = len * 10 + (size_t)(*q++ - '0');
    if (q == *p || q >= end || *q != ':' || (size_t)(end - q - 1) < len + 1 || q[1 + len] != '\n')
        return 0;
    *s = q + 1;
    *n = len;
    *p = q + 2 + len;
    return 1;
}

static char *dup_n(const char *s, size_t n, int *oom)
{
    if (!s)
        return NULL;
    char *d = malloc(n + 1);
    if (!d) {
        *oom = 1;
        return NULL;
    }
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* The question of a search: criteria, paging. */
static void encode_question(const struct xm_api *api, xm_buf *b, const struct query *q)
{
    for (int i = 0; i < NFIELDS; i++)
        put_str(api, b, q->want[i], q->want[i] ? strlen(q->want[i]) : 0);
    put_str(api, b, q->after, q->after ? strlen(q->after) : 0);
    put_str(api, b, q->before, q->before ? strlen(q->before) : 0);
    api->buf_addf(b, "%zu\n", q->max);
}

/* Fill q from a question; the strings are allocated into *own (freed by
 * the caller). 0, or -1 if it is malformed. */
static int decode_question(const char *p, size_t len, struct query *q, char *own[2])
{
    const char *end = p + len, *s;
    size_t n;
    int oom = 0;
    for (int i = 0; i < NFIELDS; i++) {
        if (!get_str(&p, end, &s, &n))
            return -1;
        q->want[i] = dup_n(s, n, &oom);
    }
    for (int k = 0; k < 2; k++) {
        if (!get_str(&p, end, &s, &n))
            return -1;
        own[k] = dup_n(s, n, &oom);
    }
    q->after = own[0];
    q->before = own[1];
    char *e;
    unsigned long max = strtoul(p, &e, 10);
    if (e == p || e >= end || *e != '\n' || max > 200 || oom)
        return -1;
    q->max = max;
    return 0;
}

/* set_shard_handler: this shard's page and counts for a question. */
static int on_shard_question(xm_host *h, const char *query, size_t len, xm_buf *out, void *data)
{
    (void)h;
    struct search *s = data;
    const struct xm_api *api = s->api;
    struct query q = { 0 };
    char *own[2] = { NULL, NULL };
    int rc = -1;
    q.s = s;
    q.domain = api->domain(s->h);
    q.dlen = strlen(q.domain);
    if (decode_question(query, len, &q, own) < 0) {
        api->log(s->h, 4, "a malformed search question from another shard was ignored");
        goto out;
    }
    if (q.max && !(q.hits = calloc(q.max, sizeof *q.hits)))
        goto out;
    if (api->each(s->store, "", 0, visit, &q) < 0 || q.oom)
        goto out;
    api->buf_addf(out, "%ld %ld\n", q.count, q.ahead);
    for (size_t i = 0; i < q.n; i++) {
        put_str(api, out, q.hits[i].jid, strlen(q.hits[i].jid));
        for (int k = 0; k < NFIELDS; k++)
            put_str(api, out, q.hits[i].f[k], strlen(q.hits[i].f[k]));
    }
    rc = 0;
out:
    query_free(&q);
    free(own[0]);
    free(own[1]);
    return rc;
}

/* Merge one shard's answer into q: 0, or -1 if it is malformed. */
static int merge_answer(struct query *q, const char *p, size_t len)
{
    const char *end = p + len;
    char *e;
    long count = strtol(p, &e, 10);
    if (e == p || e >= end || *e != ' ')
        return -1;
    p = e + 1;
    long ahead = strtol(p, &e, 10);
    if (e == p || e >= end || *e != '\n' || count < 0 || ahead < 0)
        return -1;
    p = e + 1;
    q->count += count;
    q->ahead += ahead;
    while (p < end) {
        const char *jid, *f[NFIELDS];
        size_t jl, fl[NFIELDS];
        if (!get_str(&p, end, &jid, &jl) || !jid)
            return -1;
        for (int k = 0; k < NFIELDS; k++)
            if (!get_str(&p, end, &f[k], &fl[k]) || !f[k])
                return -1;
        if (page_offer(q, jid, jl, f, fl))
            return -1;
    }
    return 0;
}

/* ---------------- answers ---------------- */

static void add_esc(const struct xm_api *api, xm_buf *b, const char *s)
{
    api->buf_add_esc(b, s, strlen(s));
}

static void add_form_fields(const struct xm_api *api, xm_buf *b)
{
    for (int i = 0; i < NFIELDS; i++)
        api->buf_addf(b, "<field type='text-single' label='%s' var='%s'/>", field_label[i], field_name[i]);
}

/* XEP-0055 §2: the fields, and the same as a data form (§3). */
static void answer_fields(struct search *s, xm_stanza *iq)
{
    const struct xm_api *api = s->api;
    xm_buf *b = api->buf_new();
    const char *domain = api->domain(s->h);

    api->buf_addf(b, "<query xmlns='" NS_SEARCH "'><instructions>Fill in one or more fields to search the "
                     "users of ");
    add_esc(api, b, domain);
    api->buf_addf(b, ". A field matches when the text appears anywhere in it, ignoring case. At most %ld users "
                     "are returned at a time.</instructions><first/><last/><nick/><email/>"
                     "<x xmlns='" NS_DATA "' type='form'><title>User Directory Search</title>"
                     "<instructions>Fill in one or more fields; each matches when the text appears anywhere in "
                     "it, ignoring case.</instructions>"
                     "<field type='hidden' var='FORM_TYPE'><value>" NS_SEARCH "</value></field>",
                  s->max_results);
    add_form_fields(api, b);
    api->buf_addf(b, "</x></query>");
    if (api->buf_data(b, NULL))
        api->iq_result(iq, api->buf_data(b, NULL));
    else
        api->error(iq, "internal-server-error", NULL, NULL);
    api->buf_free(b);
}

static void answer_results(struct search *s, xm_stanza *iq, struct query *q, int form, int rsm)
{
    const struct xm_api *api = s->api;
    xm_buf *b = api->buf_new();

    api->buf_addf(b, "<query xmlns='" NS_SEARCH "'>");
    /* XEP-0055 §2: no match at all is an empty <query/> (XEP-0059 §2.2
     * too, without a <set/>) */
    if (q->count == 0)
        goto close;
    if (form) {
        api->buf_addf(b, "<x xmlns='" NS_DATA "' type='result'>"
                         "<field type='hidden' var='FORM_TYPE'><value>" NS_SEARCH "</value></field>"
                         "<reported><field type='jid-single' label='JID' var='jid'/>");
        add_form_fields(api, b);
        api->buf_addf(b, "</reported>");
        for (size_t i = 0; i < q->n; i++) {
            api->buf_addf(b, "<item><field var='jid'><value>");
            add_esc(api, b, q->hits[i].jid);
            api->buf_addf(b, "</value></field>");
            for (int k = 0; k < NFIELDS; k++) {
                api->buf_addf(b, "<field var='%s'><value>", field_name[k]);
                add_esc(api, b, q->hits[i].f[k]);
                api->buf_addf(b, "</value></field>");
            }
            api->buf_addf(b, "</item>");
        }
        api->buf_addf(b, "</x>");
    } else {
        /* the schema of XEP-0055 §7 requires all four elements in an item */
        for (size_t i = 0; i < q->n; i++) {
            api->buf_addf(b, "<item jid='");
            add_esc(api, b, q->hits[i].jid);
            api->buf_addf(b, "'>");
            for (int k = 0; k < NFIELDS; k++) {
                api->buf_addf(b, "<%s>", field_name[k]);
                add_esc(api, b, q->hits[i].f[k]);
                api->buf_addf(b, "</%s>", field_name[k]);
            }
            api->buf_addf(b, "</item>");
        }
    }
    /* XEP-0059: asked for, or proactively when the page is not the whole
     * set, so the user learns that there is more */
    if (rsm || (long)q->n < q->count) {
        api->buf_addf(b, "<set xmlns='" NS_RSM "'>");
        if (q->n) {
            long index = q->before ? q->ahead - (long)q->n : q->ahead;
            api->buf_addf(b, "<first index='%ld'>", index);
            add_esc(api, b, q->hits[0].jid);
            api->buf_addf(b, "</first><last>");
            add_esc(api, b, q->hits[q->n - 1].jid);
            api->buf_addf(b, "</last>");
        }
        api->buf_addf(b, "<count>%ld</count></set>", q->count);
    }
close:
    api->buf_addf(b, "</query>");
    if (api->buf_data(b, NULL))
        api->iq_result(iq, api->buf_data(b, NULL));
    else
        api->error(iq, "internal-server-error", NULL, NULL);
    api->buf_free(b);
}

/* ---------------- the request ---------------- */

/* The criteria of a set: from a submitted data form when there is one
 * (XEP-0055 §3), else from the plain fields. NULL, or the reason for a
 * bad-request. */
static const char *read_criteria(struct search *s, const xm_node *query, struct query *q)
{
    const struct xm_api *api = s->api;
    const xm_node *x = api->child(query, "x", NS_DATA);
    if (!x) {
        for (int i = 0; i < NFIELDS; i++) {
            const xm_node *e = api->child(query, field_name[i], NS_SEARCH);
            if (e)
                q->want[i] = criterion(api->text_of(e), &q->oom);
        }
        return NULL;
    }
    const char *type = api->attr(x, "type");
    if (!type || strcmp(type, "submit") != 0)
        return "the data form must be of type 'submit'";
    for (const xm_node *f = api->first(x); f; f = api->next(f)) {
        if (strcmp(api->name(f), "field") != 0 || strcmp(api->ns(f), NS_DATA) != 0)
            continue;
        const char *var = api->attr(f, "var");
        const xm_node *v = api->child(f, "value", NS_DATA);
        const char *value = v ? api->text_of(v) : "";
        int known = 0;
        if (!var)
            return "a field without 'var'";
        if (strcmp(var, "FORM_TYPE") == 0) {
            if (strcmp(value, NS_SEARCH) != 0)
                return "the FORM_TYPE is not " NS_SEARCH;
            continue;
        }
        for (int i = 0; i < NFIELDS; i++) {
            if (strcmp(var, field_name[i]) == 0) {
                known = 1;
                free(q->want[i]);
                q->want[i] = criterion(value, &q->oom);
            }
        }
        /* a criterion we would silently drop would widen the search */
        if (!known && *value)
            return "unknown field in the search form";
    }
    return NULL;
}

/* XEP-0059 in the request: NULL, or the reason for a bad-request. */
static const char *read_rsm(struct search *s, const xm_node *set, struct query *q, int *not_impl)
{
    const struct xm_api *api = s->api;
    const xm_node *e;
    if ((e = api->child(set, "max", NS_RSM))) {
        const char *t = api->text_of(e);
        char *end;
        long n = strtol(t, &end, 10);
        if (end == t || *end || n < 0)
            return "<max/> is not a number";
        if (n < (long)q->max)
            q->max = (size_t)n;
    }
    if ((e = api->child(set, "after", NS_RSM)))
        q->after = api->text_of(e);
    if ((e = api->child(set, "before", NS_RSM)))
        q->before = api->text_of(e);
    if (q->after && q->before)
        return "<after/> and <before/> together";
    if (api->child(set, "index", NS_RSM)) {
        /* XEP-0059 §2.6 allows refusing it: a page by JID is cheap, a page
         * by position would need the whole sorted set */
        *not_impl = 1;
        return "page by <index/> is not supported; use <after/> or <before/>";
    }
    return NULL;
}

/* 1 if the sender is a user of the host's domain. */
static int local_sender(struct search *s, xm_stanza *iq)
{
    const char *from = s->api->from(iq), *domain = s->api->domain(s->h);
    const char *at = strchr(from, '@');
    if (!at)
        return 0;
    size_t n = strcspn(at + 1, "/");
    return n == strlen(domain) && memcmp(at + 1, domain, n) == 0;
}

/* A search waiting for the shards' answers. */
struct pending {
    struct search *s;
    xm_stanza *iq;           /* kept (api->iq_keep) */
    int form, rsm, backward;
    size_t max;
};

/* ask_shards is done: merge, answer the kept IQ. */
static void on_answers(xm_host *h, const char *const *answers, const size_t *lens, size_t n, void *arg)
{
    (void)h;
    struct pending *pd = arg;
    struct search *s = pd->s;
    const struct xm_api *api = s->api;
    struct query q = { 0 };
    static const char end_mark[] = "";
    size_t missing = 0;
    q.s = s;
    q.max = pd->max;
    q.before = pd->backward ? end_mark : NULL; /* page_offer only asks which way */
    if (q.max && !(q.hits = calloc(q.max, sizeof *q.hits))) {
        api->error(pd->iq, "internal-server-error", NULL, NULL);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (!answers[i]) {
            missing++;
            continue;
        }
        if (merge_answer(&q, answers[i], lens[i]) < 0 || q.oom) {
            api->log(s->h, 3, "a shard's search answer is malformed");
            missing++;
        }
    }
    if (missing) {
        /* a directory that silently leaves people out is worse than none */
        api->error(pd->iq, "internal-server-error", "The directory is incomplete: a shard did not answer", NULL);
        goto out;
    }
    answer_results(s, pd->iq, &q, pd->form, pd->rsm);
out:
    query_free(&q);
    free(pd);
}

static void on_search(xm_stanza *iq, const xm_node *payload, void *data)
{
    struct search *s = data;
    const struct xm_api *api = s->api;
    struct query q = { 0 };
    const char *bad;
    int not_impl = 0, given = 0;
    const xm_node *set = api->child(payload, "set", NS_RSM);

    if (!local_sender(s, iq)) {
        api->error(iq, "forbidden", "Only users of this domain can search its directory", NULL);
        goto out;
    }
    if (strcmp(api->type(iq), "get") == 0) {
        answer_fields(s, iq);
        goto out;
    }
    q.s = s;
    q.domain = api->domain(s->h);
    q.dlen = strlen(q.domain);
    q.max = (size_t)s->max_results;
    if ((bad = read_criteria(s, payload, &q)) || (set && (bad = read_rsm(s, set, &q, &not_impl)))) {
        api->error(iq, not_impl ? "feature-not-implemented" : "bad-request", bad, NULL);
        goto out;
    }
    for (int i = 0; i < NFIELDS; i++)
        given |= q.want[i] != NULL;
    if (q.oom) {
        api->error(iq, "internal-server-error", NULL, NULL);
        goto out;
    }
    if (!given) {
        /* not a way to list everybody */
        api->error(iq, "not-acceptable", "Fill in at least one field", NULL);
        goto out;
    }
    struct pending *pd = calloc(1, sizeof *pd);
    xm_buf *question = api->buf_new();
    if (!pd || !question) {
        free(pd);
        api->buf_free(question);
        api->error(iq, "internal-server-error", NULL, NULL);
        goto out;
    }
    encode_question(api, question, &q);
    size_t qlen;
    const char *qtext = api->buf_data(question, &qlen);
    pd->s = s;
    pd->form = api->child(payload, "x", NS_DATA) != NULL;
    pd->rsm = set != NULL;
    pd->max = q.max;
    pd->backward = q.before != NULL;
    pd->iq = qtext ? api->iq_keep(iq) : NULL;
    if (!pd->iq || api->ask_shards(s->h, qtext, qlen, on_answers, pd) < 0) {
        if (pd->iq) api->error(pd->iq, "internal-server-error", NULL, NULL);
        else api->error(iq, "internal-server-error", NULL, NULL);
        free(pd);
    }
    api->buf_free(question);
out:
    query_free(&q);
}

static int search_init(xm_host *h, const struct xm_api *api)
{
    struct search *s = calloc(1, sizeof *s);
    if (!s) {
        api->log(h, 3, "out of memory");
        return -1;
    }
    s->api = api;
    s->h = h;
    api->set_data(h, s);

    /* Up to 200 results per answer: an item is at most about 6 KB (a JID
     * and four fields of at most 256 bytes, escaped), so an answer stays
     * well under what one internal record carries. */
    const char *v = api->option(h, "max_results", "50");
    char *end;
    s->max_results = strtol(v, &end, 10);
    if (end == v || *end || s->max_results < 1 || s->max_results > 200) {
        api->log(h, 3, "search.max_results: expected a number from 1 to 200, got '%s'", v);
        return -1;
    }

    /* XEP-0055 on the domain itself: a user directory (XEP-0030 registry:
     * directory/user). */
    if (api->add_identity(h, "directory", "user", "User Directory") < 0 || api->add_feature(h, NS_SEARCH) < 0)
        return -1;
    if (!api->in_sm(h))
        return 0;
    if (!(s->store = api->store(h, "vcard"))) {
        api->log(h, 3, "cannot open the store vcard");
        return -1;
    }
    if (api->set_shard_handler(h, on_shard_question, s) < 0)
        return -1;
    return api->add_iq_handler(h, NS_SEARCH, "query", XM_IQ_SERVER | XM_IQ_GET | XM_IQ_SET, on_search, s);
}

static void search_stop(xm_host *h, const struct xm_api *api)
{
    free(api->get_data(h));
    api->set_data(h, NULL);
}

const struct xm_module xm_mod_search = {
    XMPPD_MODULE_ABI, "search", "XEP-0055 user directory search over the vCards", search_init, search_stop
};
