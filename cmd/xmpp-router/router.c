/* router.c - xmpp-router: owns the route table and decides where every
 * routed record goes, without ever parsing XML (DESIGN §1, §2). The
 * decision for an inbound stanza is an ordered chain of stages, like
 * MongooseIM's routing_modules: global filter -> local domain ->
 * components -> remote. Peers are watched for liveness (peer.h); a record
 * for an sm shard that is down waits in a bounded queue until the shard
 * returns, and is bounced (never silently dropped) if it does not. */
#include "config.h"
#include "daemon.h"
#include "ipc.h"
#include "jid.h"
#include "log.h"
#include "msg.h"
#include "peer.h"
#include "stanza.h"
#include "trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SHARDS 64
#define SHARD_QUEUE_MAX (16u << 20)  /* bytes held for one shard while it is down */
#define SHARD_QUEUE_SECS 15          /* how long they are held */
#define MAX_DOMAINS 64

struct shard {
    char name[PEER_NAME_MAX]; /* "sm-K" */
    int up;
    struct buf queue;         /* encoded records waiting for it */
    uint64_t queued_since_ms;
    unsigned long long queued, expired;
};

struct router {
    struct daemon *d;
    ipc_t *ipc;
    peer_server_t *peers;
    struct shard shards[MAX_SHARDS];
    unsigned nshards;
    char *domains[MAX_DOMAINS]; /* bound by sm instances */
    size_t ndomains;
    unsigned long long routed[MSG_TYPE_END];
    unsigned long long bounced, dropped, malformed;
};

enum decision { ROUTE_NEXT, ROUTE_TO, ROUTE_BOUNCE };

struct route {
    enum decision what;
    const char *dest;   /* ROUTE_TO */
    unsigned cond;      /* ROUTE_BOUNCE: enum stanza_error */
    const char *why;    /* ROUTE_BOUNCE: for the trace */
};

typedef void (*stage_fn)(struct router *r, const struct msg *m, struct route *out);

static struct router R;

/* ---------------- helpers ---------------- */

/* Domain part of a normalized JID string into out. */
static int jid_domain_of(const char *p, size_t n, char *out, size_t size)
{
    const char *slash = memchr(p, '/', n);
    if (slash) n = (size_t)(slash - p);
    const char *at = memchr(p, '@', n);
    if (at) {
        n -= (size_t)(at + 1 - p);
        p = at + 1;
    }
    if (n == 0 || n >= size) return -1;
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

static struct shard *shard_for(struct router *r, const struct msg_str *jid)
{
    char bare[JID_STR_MAX];
    if (jid->n == 0 || jid_bare_of(jid->p, jid->n, bare, sizeof bare) < 0) return NULL;
    return &r->shards[jid_shard(bare, strlen(bare), r->nshards)];
}

static struct shard *shard_by_name(struct router *r, const char *name)
{
    for (unsigned i = 0; i < r->nshards; i++)
        if (strcmp(r->shards[i].name, name) == 0) return &r->shards[i];
    return NULL;
}

static int domain_served(struct router *r, const char *domain)
{
    for (size_t i = 0; i < r->ndomains; i++)
        if (strcmp(r->domains[i], domain) == 0) return 1;
    return 0;
}

/* The step of DESIGN §2 a routed record is at here: 3 on the way to
 * the sender's shard, 5 on the way to the recipient's, 6 to its c2s. */
static unsigned step_of(const struct msg *m)
{
    if (m->type == MSG_DELIVER) return 6;
    return (m->flags & MSG_F_INBOUND) ? 5 : 3;
}

static void bounce(struct router *r, const struct msg *m, unsigned cond, const char *why)
{
    r->bounced++;
    char origin[PEER_NAME_MAX];
    if (m->type != MSG_STANZA && m->type != MSG_DELIVER) {
        log_notice("route: %s for %.*s dropped: %s", msg_type_name(m->type), (int)m->f[1].n, m->f[1].p,
                   stanza_error_name(cond));
        return;
    }
    if (!msg_str(m, 3, origin, sizeof origin) || !peer_server_find(r->peers, origin)) {
        log_notice("route: cannot bounce %s from %.*s: origin '%.*s' is gone", stanza_kind_name(m->kind),
                   (int)m->f[0].n, m->f[0].p, (int)m->f[3].n, m->f[3].p);
        if (m->flags & MSG_F_TRACED)
            trace_msg(step_of(m), m, 0, "drop: %s (%s), cannot bounce: origin %.*s is gone", stanza_error_name(cond),
                      why ? why : "-", (int)m->f[3].n, m->f[3].p);
        return;
    }
    if (m->flags & MSG_F_TRACED)
        trace_msg(step_of(m), m, 0, "bounce: %s (%s) ->%s", stanza_error_name(cond), why ? why : "-", origin);
    struct msg b = *m;
    b.type = MSG_BOUNCE;
    b.num = cond;
    msg_setn(&b, 2, m->f[3].p, m->f[3].n);
    ipc_send(r->ipc, origin, &b);
    log_debug("route: bounced %s from %.*s to %.*s: %s", stanza_kind_name(m->kind), (int)m->f[0].n,
              m->f[0].p, (int)m->f[1].n, m->f[1].p, stanza_error_name(cond));
}

/* Send to a shard, or queue while it is down. */
static void to_shard(struct router *r, struct shard *s, const struct msg *m)
{
    if (s->up) {
        ipc_send(r->ipc, s->name, m);
        if (m->flags & MSG_F_TRACED) trace_msg(step_of(m), m, 0, "route->%s", s->name);
        return;
    }
    if (s->queue.len + MSG_HEADER_LEN + 6 * 4 + m->f[4].n > SHARD_QUEUE_MAX) {
        log_warn("route: queue for %s is full; %s bounced", s->name, msg_type_name(m->type));
        bounce(r, m, SE_RESOURCE_CONSTRAINT, "the queue for a shard that is down is full");
        return;
    }
    if (s->queue.len == 0) s->queued_since_ms = loop_now_ms(r->d->loop);
    if (msg_encode(m, &s->queue) == 0) s->queued++;
    if (m->flags & MSG_F_TRACED)
        trace_msg(step_of(m), m, 0, "queued: %s down (held up to %u s)", s->name, SHARD_QUEUE_SECS);
}

/* ---------------- the inbound chain ---------------- */

/* Stage 1: global filter. No global rules exist yet; stanzas without a
 * recipient cannot be routed at this point (sm addresses them first). */
static void stage_filter(struct router *r, const struct msg *m, struct route *out)
{
    (void)r;
    if (m->f[1].n == 0) {
        out->what = ROUTE_BOUNCE;
        out->cond = SE_BAD_REQUEST;
        out->why = "no recipient";
    }
}

/* Stage 2: a domain this server hosts -> the shard owning the bare JID. */
static void stage_local(struct router *r, const struct msg *m, struct route *out)
{
    char domain[JID_PART_MAX + 1];
    if (jid_domain_of(m->f[1].p, m->f[1].n, domain, sizeof domain) < 0) {
        out->what = ROUTE_BOUNCE;
        out->cond = SE_JID_MALFORMED;
        out->why = "no domain in the recipient";
        return;
    }
    if (!domain_served(r, domain)) return;
    struct shard *s = shard_for(r, &m->f[1]);
    if (!s) {
        out->what = ROUTE_BOUNCE;
        out->cond = SE_JID_MALFORMED;
        out->why = "unusable recipient";
        return;
    }
    out->what = ROUTE_TO;
    out->dest = s->name;
}

/* Stage 3: external components (XEP-0114) - none can bind yet. */
static void stage_components(struct router *r, const struct msg *m, struct route *out)
{
    (void)r; (void)m; (void)out;
}

/* Stage 4: remote domains. There is no federation yet, so RFC 6120 §8.3.3.16. */
static void stage_remote(struct router *r, const struct msg *m, struct route *out)
{
    (void)r; (void)m;
    out->what = ROUTE_BOUNCE;
    out->cond = SE_REMOTE_SERVER_NOT_FOUND;
    out->why = "remote domain, no federation (s2s) yet";
}

static const stage_fn inbound_chain[] = { stage_filter, stage_local, stage_components, stage_remote };

static void route_inbound(struct router *r, const struct msg *m)
{
    struct route rt = { ROUTE_NEXT, NULL, SE_NONE, NULL };
    for (size_t i = 0; i < sizeof inbound_chain / sizeof *inbound_chain && rt.what == ROUTE_NEXT; i++)
        inbound_chain[i](r, m, &rt);
    if (rt.what == ROUTE_TO) {
        to_shard(r, shard_by_name(r, rt.dest), m);
    } else {
        log_info("route: %s from %.*s to %.*s refused: %s", stanza_kind_name(m->kind), (int)m->f[0].n,
                 m->f[0].p, (int)m->f[1].n, m->f[1].p, stanza_error_name(rt.cond));
        bounce(r, m, rt.cond, rt.why);
    }
}

/* ---------------- records ---------------- */

static void route_by_sender(struct router *r, const struct msg *m)
{
    struct shard *s = shard_for(r, &m->f[0]);
    if (!s) {
        r->malformed++;
        log_warn("route: %s with unusable sender '%.*s' dropped", msg_type_name(m->type), (int)m->f[0].n, m->f[0].p);
        if (m->flags & MSG_F_TRACED) trace_msg(step_of(m), m, 0, "drop: unusable sender");
        return;
    }
    to_shard(r, s, m);
}

static void route_to_dest(struct router *r, const struct msg *m)
{
    char dest[PEER_NAME_MAX];
    if (!msg_str(m, 2, dest, sizeof dest) || !dest[0]) {
        r->malformed++;
        log_warn("route: %s without a destination dropped", msg_type_name(m->type));
        return;
    }
    struct shard *s = shard_by_name(r, dest);
    if (s) {
        to_shard(r, s, m);
        return;
    }
    if (peer_server_find(r->peers, dest)) {
        ipc_send(r->ipc, dest, m);
        if (m->flags & MSG_F_TRACED) trace_msg(step_of(m), m, 0, "deliver->%s", dest);
        return;
    }
    if (m->type == MSG_DELIVER) {
        if (m->flags & MSG_F_TRACED) trace_msg(step_of(m), m, 0, "reinject: %s gone, back to sm as inbound", dest);
        /* the recipient's c2s is gone: hand the stanza back to its sm as
         * inbound, which finds the session ended and applies RFC 6121 §8.5 */
        struct msg back = *m;
        back.type = MSG_STANZA;
        back.flags |= MSG_F_INBOUND | MSG_F_REDELIVERED;
        back.id = 0;
        msg_set(&back, 2, "");
        route_inbound(r, &back);
        return;
    }
    r->dropped++;
    log_notice("route: %s for %s dropped: %s is not running", msg_type_name(m->type), dest, dest);
}

/* ACCOUNT_CHANGE came with protocol 3: a shard speaking less would drop
 * the whole frame it arrived in, so during a rolling restart its c2s hears
 * service-unavailable instead. */
static void route_account(struct router *r, const struct msg *m)
{
    char origin[PEER_NAME_MAX];
    struct shard *s = shard_for(r, &m->f[0]);
    const struct peer_info *p = s ? peer_server_find(r->peers, s->name) : NULL;
    if (!p || p->proto_max >= 3 || !msg_str(m, 3, origin, sizeof origin) || !peer_server_find(r->peers, origin)) {
        route_by_sender(r, m);
        return;
    }
    struct msg res;
    msg_init(&res, MSG_ACCOUNT_RESULT);
    res.id = m->id;
    res.num = SE_SERVICE_UNAVAILABLE;
    res.f[1] = m->f[0];
    msg_set(&res, 2, origin);
    msg_set(&res, 3, r->d->instance);
    ipc_send(r->ipc, origin, &res);
    log_notice("route: ACCOUNT_CHANGE for %.*s refused: %s speaks protocol %u < 3", (int)m->f[0].n, m->f[0].p,
               s->name, p->proto_max);
}

/* MODULE_ASK came with protocol 4: a shard speaking less would drop the
 * whole frame it arrived in, so the router answers for it ("no such
 * module here"), and the asking module goes on without that shard. */
static void route_module_ask(struct router *r, const struct msg *m)
{
    char dest[PEER_NAME_MAX], origin[PEER_NAME_MAX];
    const struct peer_info *p =
        msg_str(m, 2, dest, sizeof dest) ? peer_server_find(r->peers, dest) : NULL;
    if (!p || p->proto_max >= 4 || !msg_str(m, 3, origin, sizeof origin) || !peer_server_find(r->peers, origin)) {
        route_to_dest(r, m);
        return;
    }
    struct msg a;
    msg_init(&a, MSG_MODULE_ANSWER);
    a.id = m->id;
    a.num = 1;
    a.f[0] = m->f[0];
    a.f[1] = m->f[1];
    msg_set(&a, 2, origin);
    msg_set(&a, 3, dest);
    ipc_send(r->ipc, origin, &a);
    log_notice("route: MODULE_ASK of module %.*s to %s answered by the router: it speaks protocol %u < 4",
               (int)m->f[0].n, m->f[0].p, dest, p->proto_max);
}

static void on_record(ipc_t *ipc, const char *peer, const struct msg *m, void *arg)
{
    struct router *r = arg;
    (void)ipc;
    if (peer_server_handle(r->peers, peer, m)) return;
    r->routed[m->type]++;
    switch (m->type) {
    case MSG_ROUTE_BIND: {
        char domain[JID_PART_MAX + 1];
        if (!msg_str(m, 0, domain, sizeof domain)) return;
        if (!domain_served(r, domain) && r->ndomains < MAX_DOMAINS) {
            r->domains[r->ndomains] = strdup(domain);
            if (r->domains[r->ndomains]) r->ndomains++;
            log_info("route: %s served by the sm shards (bound by %s)", domain, peer);
        }
        return;
    }
    case MSG_STANZA:
        if (m->flags & MSG_F_INBOUND) route_inbound(r, m);
        else route_by_sender(r, m);
        return;
    case MSG_AUTH_LOOKUP:
    case MSG_SESSION_BIND:
    case MSG_SESSION_END:
        route_by_sender(r, m);
        return;
    case MSG_ACCOUNT_CHANGE:
        route_account(r, m);
        return;
    case MSG_MODULE_ASK:
        route_module_ask(r, m);
        return;
    case MSG_DELIVER:
    case MSG_AUTH_RESULT:
    case MSG_SESSION_BOUND:
    case MSG_SESSION_KICK:
    case MSG_RESYNC_DONE:
    case MSG_ACCOUNT_RESULT:
    case MSG_MODULE_ANSWER:
        route_to_dest(r, m);
        return;
    default:
        r->dropped++;
        log_warn("route: unexpected %s from %s dropped", msg_type_name(m->type), peer);
        return;
    }
}

/* A ROUTER_MANDATORY send failed: the peer's pipe is gone, so it is. */
static void on_unreachable(ipc_t *ipc, const char *peer, const struct msg *m, void *arg)
{
    struct router *r = arg;
    (void)ipc;
    if (peer_server_find(r->peers, peer)) peer_server_drop(r->peers, peer); /* PEER_DOWN goes out first */
    struct shard *s = shard_by_name(r, peer);
    if (s) {
        to_shard(r, s, m); /* keep it for the shard's return */
        return;
    }
    if (m->type == MSG_DELIVER) {
        route_to_dest(r, m); /* the dest is no longer a live peer by then */
        return;
    }
    r->dropped++;
    log_notice("route: %s for unreachable %s dropped", msg_type_name(m->type), peer);
}

/* ---------------- peers ---------------- */

static void announce_to(const struct peer_info *p, void *arg)
{
    const char *to = arg;
    if (strcmp(p->name, to) == 0) return;
    struct msg m;
    msg_init(&m, MSG_PEER_UP);
    m.id = p->epoch;
    m.kind = (uint8_t)p->role;
    msg_set(&m, 0, p->name);
    ipc_send(R.ipc, to, &m);
}

static void peer_up(void *arg, const struct peer_info *p, int restarted)
{
    struct router *r = arg;
    struct msg m;
    msg_init(&m, MSG_PEER_UP);
    m.id = p->epoch;
    m.kind = (uint8_t)p->role;
    msg_set(&m, 0, p->name);
    peer_server_broadcast(r->peers, 0, &m);
    /* tell the newcomer who else is alive (sm needs the c2s list to resync) */
    char name[PEER_NAME_MAX];
    snprintf(name, sizeof name, "%s", p->name);
    peer_server_each(r->peers, announce_to, name);
    struct shard *s = shard_by_name(r, name);
    if (s) {
        s->up = 1;
        if (s->queue.len) {
            log_notice("route: %s is back; delivering %llu queued records", s->name, s->queued);
            size_t off = 0;
            while (off < s->queue.len) {
                struct msg q;
                size_t used;
                const char *err;
                if (msg_decode(s->queue.data + off, s->queue.len - off, &q, &used, &err) < 0) break;
                ipc_send(r->ipc, s->name, &q);
                if (q.flags & MSG_F_TRACED) trace_msg(step_of(&q), &q, 0, "route->%s (was queued)", s->name);
                off += used;
            }
            buf_free(&s->queue);
            s->queued = 0;
        }
    } else if (p->role == ROLE_SM) {
        log_warn("route: %s is not one of the %u configured shards (sm_shards)", name, r->nshards);
    }
    (void)restarted;
}

static void peer_down(void *arg, const struct peer_info *p)
{
    struct router *r = arg;
    struct shard *s = shard_by_name(r, p->name);
    if (s) s->up = 0;
    struct msg m;
    msg_init(&m, MSG_PEER_DOWN);
    m.id = p->epoch;
    m.kind = (uint8_t)p->role;
    msg_set(&m, 0, p->name);
    peer_server_broadcast(r->peers, 0, &m);
}

/* Bounce what waited too long for a shard that did not come back. */
static void expire_queues(loop_t *loop, void *arg)
{
    struct router *r = arg;
    uint64_t now = loop_now_ms(loop);
    for (unsigned i = 0; i < r->nshards; i++) {
        struct shard *s = &r->shards[i];
        if (!s->queue.len || now - s->queued_since_ms < SHARD_QUEUE_SECS * 1000u) continue;
        log_warn("route: %s stayed down for %u s; bouncing %llu queued records", s->name,
                 SHARD_QUEUE_SECS, s->queued);
        struct buf q = s->queue;
        memset(&s->queue, 0, sizeof s->queue);
        size_t off = 0;
        while (off < q.len) {
            struct msg m;
            size_t used;
            const char *err;
            if (msg_decode(q.data + off, q.len - off, &m, &used, &err) < 0) break;
            bounce(r, &m, SE_SERVICE_UNAVAILABLE, "its shard stayed down");
            s->expired++;
            off += used;
        }
        buf_free(&q);
        s->queued = 0;
    }
    loop_timer_add(loop, 1000, expire_queues, r);
}

/* ---------------- daemon ---------------- */

static int router_init(struct daemon *d)
{
    struct router *r = &R;
    r->d = d;
    d->priv = r;
    r->nshards = d->conf.sm_shards;
    for (unsigned i = 0; i < r->nshards; i++) snprintf(r->shards[i].name, sizeof r->shards[i].name, "sm-%u", i);
    r->ipc = ipc_bind_router(d->loop, d->conf.router_endpoint, on_record, r);
    if (!r->ipc) return -1;
    ipc_on_unreachable(r->ipc, on_unreachable, r);
    struct peer_self self = { d->instance, ROLE_ROUTER, d->epoch };
    struct peer_server_cb cb = { peer_up, peer_down };
    r->peers = peer_server_new(d->loop, r->ipc, &self, d->conf.heartbeat_ms, d->conf.peer_timeout_ms, &cb, r);
    if (!r->peers) return -1;
    loop_timer_add(d->loop, 1000, expire_queues, r);
    daemon_ready(d);
    return 0;
}

static void router_stop(struct daemon *d)
{
    struct router *r = d->priv;
    peer_server_goodbye(r->peers);
}

static void list_peer(const struct peer_info *p, void *arg)
{
    struct ctl_req *req = arg;
    ctl_row(req, "%s\t%s\t%016llx\tup", p->name, peer_role_name((unsigned)p->role), (unsigned long long)p->epoch);
}

static int router_ctl(struct daemon *d, int argc, char **argv, const char *input, size_t input_len,
                      struct ctl_req *req)
{
    struct router *r = d->priv;
    (void)argc; (void)input; (void)input_len;
    if (strcmp(argv[0], "peers") == 0) {
        ctl_cols(req, "instance\trole\tepoch\tstate");
        peer_server_each(r->peers, list_peer, req);
        for (unsigned i = 0; i < r->nshards; i++)
            if (!r->shards[i].up) ctl_row(req, "%s\tsm\t-\tdown", r->shards[i].name);
        return 0;
    }
    if (strcmp(argv[0], "routes") == 0) {
        ctl_cols(req, "domain\thandler");
        for (size_t i = 0; i < r->ndomains; i++) ctl_row(req, "%s\tsm-0..sm-%u", r->domains[i], r->nshards - 1);
        return 0;
    }
    return -1;
}

static void router_stats(struct daemon *d, struct ctl_req *req)
{
    struct router *r = d->priv;
    for (unsigned t = 1; t < MSG_TYPE_END; t++)
        if (r->routed[t]) ctl_row(req, "in_%s\t%llu", msg_type_name(t), r->routed[t]);
    ctl_row(req, "bounced\t%llu", r->bounced);
    ctl_row(req, "dropped\t%llu", r->dropped);
    ctl_row(req, "malformed\t%llu", r->malformed);
    for (unsigned i = 0; i < r->nshards; i++)
        ctl_row(req, "queue_%s_bytes\t%zu", r->shards[i].name, r->shards[i].queue.len);
    struct ipc_stats st;
    ipc_get_stats(r->ipc, &st);
    ctl_row(req, "ipc_records_in\t%llu", (unsigned long long)st.in);
    ctl_row(req, "ipc_records_out\t%llu", (unsigned long long)st.out);
    ctl_row(req, "ipc_frames_out\t%llu", (unsigned long long)st.frames_out);
    ctl_row(req, "ipc_malformed\t%llu", (unsigned long long)st.malformed);
}

static const struct daemon_def router_def = {
    .program = "xmpp-router",
    .role = ROLE_ROUTER,
    .default_instance = "router-1",
    .init = router_init,
    .stop = router_stop,
    .ctl = router_ctl,
    .stats = router_stats,
};

int main(int argc, char **argv) { return daemon_main(argc, argv, &router_def); }
