/* sm_offline.c - offline messages (RFC 6121 §8.5.2.2.1, XEP-0160) of the
 * users of this shard, in offline.tdb:
 *
 *   "<bare>"          xmppd-offline 1\n gen G\n first F\n next N\n
 *   "<bare>\n<seq>"   xmppd-offline-msg 1\n from JID\n type T\n time S\n \n <message/>
 *
 * Messages F..N-1 wait for the user, in order; G is the account
 * generation (DESIGN §4): a queue of an earlier account of the same name
 * is dropped at the first touch. A message is stored with a XEP-0203
 * delay stamp (from = the user's domain) in the turn it arrives, so it is
 * committed with the turn's other writes before anything else about it
 * leaves the process; a failed write is answered with an error to the
 * sender. At the first available presence of non-negative priority the
 * messages are handed to that session, in order, and removed in a later
 * loop turn: after the turn's output has gone to ZeroMQ, never before
 * (a crash in between delivers a message twice rather than never). */
#include "config.h"
#include "sm_roster.h"
#include "jid.h"
#include "log.h"
#include "stanza.h"
#include "trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define HEAD_MAGIC "xmppd-offline 1\n"
#define MSG_MAGIC "xmppd-offline-msg 1\n"

static struct {
    store_t *store;
    struct hmap delivering; /* bare JID -> struct removal: handed off, removal pending */
    unsigned long long stored, delivered, refused_full, failed, purged;
} O;

struct head {
    unsigned long long gen, first, next;
};

struct removal {
    char *bare;
    unsigned long long gen, upto;
};

int sm_offline_open(struct sm *sm)
{
    O.store = sm_store_open(sm, "offline.tdb");
    return O.store ? 0 : -1;
}

static void msg_key(struct buf *k, const char *bare, unsigned long long seq)
{
    buf_clear(k);
    buf_addf(k, "%s\n%llu", bare, seq);
}

/* 1 found, 0 none, -1 storage error or a damaged record. */
static int head_get(const char *bare, struct head *h)
{
    struct buf v = { 0 };
    memset(h, 0, sizeof *h);
    int rc = store_get(O.store, bare, strlen(bare), &v);
    if (rc == 1 && sscanf(buf_cstr(&v), HEAD_MAGIC "gen %llu\nfirst %llu\nnext %llu", &h->gen, &h->first,
                          &h->next) != 3) {
        log_err("offline queue of %s: damaged head record", bare);
        rc = -1;
    }
    if (rc == 1 && h->first > h->next) rc = -1;
    buf_free(&v);
    return rc;
}

static int head_put(struct sm *sm, struct sm_later *l, const char *bare, const struct head *h)
{
    struct buf v = { 0 };
    buf_addf(&v, HEAD_MAGIC "gen %llu\nfirst %llu\nnext %llu\n", h->gen, h->first, h->next);
    int rc = v.oom ? -1 : later_put(sm, l, O.store, bare, strlen(bare), v.data, v.len);
    buf_free(&v);
    return rc;
}

/* Delete messages [first, upto) and the head if nothing is left. */
static int drop_range(struct sm *sm, struct sm_later *l, const char *bare, struct head *h, unsigned long long upto)
{
    struct buf k = { 0 };
    int rc = 0;
    for (unsigned long long seq = h->first; seq < upto && rc == 0; seq++) {
        msg_key(&k, bare, seq);
        rc = later_del(sm, l, O.store, k.data, k.len);
    }
    buf_free(&k);
    if (rc < 0) return -1;
    h->first = upto;
    if (h->first == h->next) return later_del(sm, l, O.store, bare, strlen(bare));
    return head_put(sm, l, bare, h);
}

/* The message with a XEP-0203 delay stamp of now. */
static int stamp(const struct msg *m, const char *domain, struct buf *out)
{
    xml_node_t *x = xml_parse(m->f[4].p, m->f[4].n, NS_CLIENT);
    if (!x) return -1;
    struct timeval tv;
    struct tm tm;
    char ts[40];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03dZ", (int)(tv.tv_usec / 1000));
    xml_node_t *d = xml_add_elem(x, "delay", NS_DELAY);
    int rc = d && xml_set_attr(d, "from", domain) == 0 && xml_set_attr(d, "stamp", ts) == 0 &&
                     xml_add_text(d, "Offline Storage", 15)
                 ? xml_serialize(x, out, NULL)
                 : -1;
    xml_free(x);
    return rc;
}

/* Split a stored message record; 0, or -1 if damaged. */
static int parse_msg(const struct buf *v, char *from, size_t fsize, unsigned *type, long *t, const char **body,
                     size_t *blen)
{
    const char *p = v->data, *end = v->data + v->len;
    if (v->len < sizeof MSG_MAGIC - 1 || memcmp(p, MSG_MAGIC, sizeof MSG_MAGIC - 1) != 0) return -1;
    p += sizeof MSG_MAGIC - 1;
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    /* the JID may hold spaces (resourceprep allows them): up to the LF */
    if (!nl || nl - p < 5 || memcmp(p, "from ", 5) != 0 || (size_t)(nl - p - 5) >= fsize) return -1;
    memcpy(from, p + 5, (size_t)(nl - p - 5));
    from[nl - p - 5] = '\0';
    p = nl + 1;
    char hdr[64];
    nl = memchr(p, '\n', (size_t)(end - p));
    const char *next = nl ? memchr(nl + 1, '\n', (size_t)(end - nl - 1)) : NULL;
    if (!next || (size_t)(next - p) >= sizeof hdr) return -1;
    memcpy(hdr, p, (size_t)(next - p));
    hdr[next - p] = '\0';
    if (sscanf(hdr, "type %u\ntime %ld", type, t) != 2 || *type >= STYPE_END) return -1;
    if (next + 1 >= end || next[1] != '\n') return -1;
    *body = next + 2;
    *blen = (size_t)(end - *body);
    return 0;
}

void sm_offline_store(struct sm *sm, const struct msg *m)
{
    char to[JID_STR_MAX], bare[JID_STR_MAX], from[JID_STR_MAX];
    if (!msg_str(m, 1, to, sizeof to) || jid_bare_of(to, strlen(to), bare, sizeof bare) < 0 ||
        !msg_str(m, 0, from, sizeof from)) {
        sm_im_trace(m, "drop: unusable addresses for offline storage");
        return;
    }
    unsigned long long gen;
    struct head h;
    int rc = sm_account_gen(sm, bare, &gen);
    int hrc = rc == 1 ? head_get(bare, &h) : -1;
    if (rc <= 0 || hrc < 0) {
        O.failed++;
        sm_im_trace(m, "error: service-unavailable (offline storage of %s unreadable)", bare);
        sm_reply_error(sm, m, SE_SERVICE_UNAVAILABLE, NULL);
        return;
    }
    struct sm_later *l = later_new();
    if (!l) {
        sm_reply_error(sm, m, SE_SERVICE_UNAVAILABLE, NULL);
        return;
    }
    if (hrc == 1 && h.gen != gen) {
        /* the queue of an earlier account of this name */
        drop_range(sm, l, bare, &h, h.next);
        hrc = 0;
    }
    if (hrc == 0) h = (struct head){ gen, 0, 0 };
    if (h.next - h.first >= OFFLINE_QUOTA) {
        O.refused_full++;
        later_abandon_detached(sm, l);
        sm_im_trace(m, "error: service-unavailable (offline storage of %s full: %d messages)", bare, OFFLINE_QUOTA);
        sm_reply_error(sm, m, SE_SERVICE_UNAVAILABLE, "offline storage full");
        return;
    }
    const char *at = strchr(bare, '@');
    struct buf body = { 0 }, rec = { 0 }, k = { 0 }, err = { 0 };
    if (stamp(m, at ? at + 1 : bare, &body) < 0) {
        later_abandon_detached(sm, l);
        sm_im_trace(m, "error: service-unavailable (the message does not parse)");
        sm_reply_error(sm, m, SE_SERVICE_UNAVAILABLE, NULL);
        goto out;
    }
    buf_adds(&rec, MSG_MAGIC);
    buf_addf(&rec, "from %s\ntype %u\ntime %ld\n\n", from, (unsigned)m->stype, (long)time(NULL));
    buf_add(&rec, body.data, body.len);
    msg_key(&k, bare, h.next);
    unsigned long long seq = h.next++;
    /* an error to the sender if the commit fails: nothing was acknowledged */
    if (stanza_error_reply(m->f[4].p, m->f[4].n, SE_SERVICE_UNAVAILABLE, "offline storage failed", from, &err) == 0)
        later_on_failure(l, KIND_MESSAGE, to, from, err.data, err.len);
    if (rec.oom || later_put(sm, l, O.store, k.data, k.len, rec.data, rec.len) < 0 || head_put(sm, l, bare, &h) < 0) {
        O.failed++;
        sm_im_trace(m, "error: service-unavailable (offline storage write failed)");
    } else {
        O.stored++;
        sm_im_trace(m, "offline: stored for %s (#%llu, %llu waiting)", bare, seq, h.next - h.first);
    }
    later_submit_detached(sm, l);
out:
    buf_free(&body);
    buf_free(&rec);
    buf_free(&k);
    buf_free(&err);
}

static void removal_free(struct removal *r)
{
    if (!r) return;
    free(r->bare);
    free(r);
}

/* A turn after the hand-off: remove what was delivered. */
static void remove_delivered(loop_t *loop, void *arg)
{
    struct removal *rm = arg;
    struct sm *sm = &SM;
    (void)loop;
    hmap_del(&O.delivering, rm->bare, strlen(rm->bare));
    struct head h;
    if (head_get(rm->bare, &h) == 1 && h.gen == rm->gen && rm->upto > h.first && rm->upto <= h.next) {
        struct sm_later *l = later_new();
        if (drop_range(sm, l, rm->bare, &h, rm->upto) < 0) log_err("offline queue of %s: removal failed", rm->bare);
        later_submit_detached(sm, l);
    }
    removal_free(rm);
}

void sm_offline_deliver(struct sm *sm, struct session *s)
{
    char bare[JID_STR_MAX];
    snprintf(bare, sizeof bare, "%.*s", (int)s->bare_len, s->full);
    if (hmap_get(&O.delivering, bare, strlen(bare))) return; /* handed to another resource just now */
    struct head h;
    unsigned long long gen;
    if (head_get(bare, &h) != 1 || h.first == h.next || sm_account_gen(sm, bare, &gen) != 1 || h.gen != gen) return;
    struct buf k = { 0 }, v = { 0 };
    unsigned n = 0;
    for (unsigned long long seq = h.first; seq < h.next; seq++) {
        msg_key(&k, bare, seq);
        if (store_get(O.store, k.data, k.len, &v) != 1) {
            log_warn("offline queue of %s: message %llu missing", bare, seq);
            continue;
        }
        char from[JID_STR_MAX];
        unsigned type;
        long t;
        const char *body;
        size_t blen;
        if (parse_msg(&v, from, sizeof from, &type, &t, &body, &blen) < 0) {
            log_err("offline queue of %s: message %llu damaged; skipped", bare, seq);
            continue;
        }
        sm_deliver_to(sm, s, KIND_MESSAGE, type, from, body, blen, 0);
        n++;
    }
    buf_free(&k);
    buf_free(&v);
    O.delivered += n;
    log_info("offline: %u message(s) delivered to %s", n, s->full);
    struct removal *rm = calloc(1, sizeof *rm);
    if (!rm || !(rm->bare = strdup(bare))) {
        removal_free(rm);
        return;
    }
    rm->gen = h.gen;
    rm->upto = h.next;
    int failed = 0;
    hmap_put(&O.delivering, rm->bare, strlen(rm->bare), rm, &failed);
    if (failed || !loop_timer_add(sm->d->loop, 0, remove_delivered, rm)) {
        if (!failed) hmap_del(&O.delivering, rm->bare, strlen(rm->bare));
        removal_free(rm);
    }
}

/* ---------------- control: offline USER [count|list|purge] ---------------- */

static int user_of(struct sm *sm, const char *arg, char *bare, size_t size, struct ctl_req *r)
{
    struct jid j;
    if (jid_parse(arg, strlen(arg), &j) < 0 || !j.has_local || j.has_resource) {
        ctl_fail(r, 2, "'%s' is not a user JID (user@domain)", arg);
        return -1;
    }
    jid_format_bare(&j, bare, size);
    if (jid_shard(bare, strlen(bare), sm->d->conf.sm_shards) != sm->shard) {
        ctl_fail(r, 1, "%s belongs to another shard than %s", bare, sm->d->instance);
        return -1;
    }
    unsigned long long gen;
    int rc = sm_account_gen(sm, bare, &gen);
    if (rc <= 0) {
        ctl_fail(r, 1, rc < 0 ? "storage error reading %s" : "%s does not exist", bare);
        return -1;
    }
    return 0;
}

int sm_offline_ctl(struct sm *sm, int argc, char **argv, struct ctl_req *r)
{
    if (strcmp(argv[0], "offline") != 0) return -1;
    char bare[JID_STR_MAX];
    const char *verb = argc > 2 ? argv[2] : "count";
    if (argc < 2 || argc > 3 || (strcmp(verb, "count") && strcmp(verb, "list") && strcmp(verb, "purge"))) {
        ctl_fail(r, 2, "usage: offline USER [count|list|purge]");
        return 0;
    }
    if (user_of(sm, argv[1], bare, sizeof bare, r) < 0) return 0;
    struct head h;
    unsigned long long gen;
    int hrc = head_get(bare, &h);
    if (hrc < 0) {
        ctl_fail(r, 1, "storage error reading the offline queue of %s", bare);
        return 0;
    }
    sm_account_gen(sm, bare, &gen);
    int stale = hrc == 1 && h.gen != gen;
    unsigned long long count = hrc == 1 && !stale ? h.next - h.first : 0;
    if (strcmp(verb, "count") == 0) {
        ctl_cols(r, "user\tmessages");
        ctl_row(r, "%s\t%llu", bare, count);
        return 0;
    }
    if (strcmp(verb, "list") == 0) {
        ctl_cols(r, "seq\ttime\tfrom\ttype\tstanza");
        struct buf k = { 0 }, v = { 0 }, line = { 0 };
        for (unsigned long long seq = h.first; count && seq < h.next; seq++) {
            msg_key(&k, bare, seq);
            if (store_get(O.store, k.data, k.len, &v) != 1) continue;
            char from[JID_STR_MAX];
            unsigned type;
            long t;
            const char *body;
            size_t blen;
            if (parse_msg(&v, from, sizeof from, &type, &t, &body, &blen) < 0) continue;
            buf_clear(&line);
            for (size_t i = 0; i < blen; i++) buf_add(&line, body[i] == '\t' || body[i] == '\n' ? " " : body + i, 1);
            ctl_row(r, "%llu\t%ld\t%s\t%s\t%s", seq, t, from, stanza_type_name(type), buf_cstr(&line));
        }
        buf_free(&k);
        buf_free(&v);
        buf_free(&line);
        return 0;
    }
    /* purge */
    ctl_cols(r, "user\tpurged");
    ctl_row(r, "%s\t%llu", bare, count);
    if (hrc == 0) return 0;
    struct sm_later *l = later_new();
    if (!l || drop_range(sm, l, bare, &h, h.next) < 0) {
        later_abandon_detached(sm, l);
        ctl_fail(r, 1, "storage error purging the offline queue of %s", bare);
        return 0;
    }
    O.purged += count;
    log_notice("offline queue of %s purged by the administrator: %llu message(s)", bare, count);
    later_ctl(l, r);
    later_submit_detached(sm, l);
    return 1;
}

void sm_offline_stats(struct sm *sm, struct ctl_req *r)
{
    (void)sm;
    ctl_row(r, "offline_stored\t%llu", O.stored);
    ctl_row(r, "offline_delivered\t%llu", O.delivered);
    ctl_row(r, "offline_refused_full\t%llu", O.refused_full);
    ctl_row(r, "offline_store_failures\t%llu", O.failed);
    ctl_row(r, "offline_purged\t%llu", O.purged);
}
