/* c2s.c - xmpp-c2s: the daemon around the client stream state machine.
 * It binds the ROUTER socket the listens connect to, connects to the
 * router, keeps both alive (peer.h), owns the connection table, re-announces
 * sessions to a restarted sm (DESIGN §3), and answers `xmppctl stats` and
 * `xmppctl sessions`. The per-connection logic is in c2s_stream.c and
 * c2s_sasl.c. */
#include "config.h"
#include "c2s.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jid.h"
#include "log.h"
#include "util.h"

#define SWEEP_MS 1000
#define INITIAL_BUCKETS 1024

static struct c2s the_c2s;

struct c2s *c2s_get(void) { return &the_c2s; }

/* ---- sending ---- */

void c2s_to_listen(struct c2s_conn *c, struct msg *m)
{
    ipc_send(the_c2s.lipc, the_c2s.listens[c->listen].name, m);
}

void c2s_to_router(struct msg *m)
{
    ipc_send(the_c2s.ripc, NULL, m);
}

void c2s_send(struct c2s_conn *c, const char *xml, size_t len, int next)
{
    struct msg m;
    msg_init(&m, MSG_CONN_SEND);
    m.id = c->lid;
    m.flags = next ? MSG_F_NEXT : 0;
    msg_setn(&m, 0, xml, len);
    c2s_to_listen(c, &m);
}

void c2s_sends(struct c2s_conn *c, const char *xml, int next)
{
    c2s_send(c, xml, strlen(xml), next);
}

/* ---- the connection table: two hash indexes and a list ---- */

/* Our ids are sequential and listen's may be too: mix before masking. */
static size_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

static size_t cid_slot(uint64_t cid) { return mix(cid) & (the_c2s.nbuckets - 1); }
static size_t lid_slot(uint8_t listen, uint64_t lid)
{
    return mix(lid ^ ((uint64_t)listen << 56) ^ 0x9e3779b97f4a7c15ULL) & (the_c2s.nbuckets - 1);
}

static int grow_tables(void)
{
    struct c2s *s = &the_c2s;
    size_t n = s->nbuckets ? s->nbuckets * 2 : INITIAL_BUCKETS;
    struct c2s_conn **bc = calloc(n, sizeof *bc), **bl = calloc(n, sizeof *bl);
    if (!bc || !bl) {
        free(bc);
        free(bl);
        return -1;
    }
    free(s->by_cid);
    free(s->by_lid);
    s->by_cid = bc;
    s->by_lid = bl;
    s->nbuckets = n;
    for (struct c2s_conn *c = s->all; c; c = c->next) {
        size_t i = cid_slot(c->cid), j = lid_slot(c->listen, c->lid);
        c->next_cid = bc[i];
        bc[i] = c;
        c->next_lid = bl[j];
        bl[j] = c;
    }
    return 0;
}

struct c2s_conn *c2s_conn_new(uint8_t listen, uint64_t lid)
{
    struct c2s *s = &the_c2s;
    if (s->nconns >= s->nbuckets && grow_tables() < 0 && !s->nbuckets) return NULL;
    struct c2s_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    do c->cid = s->next_cid++; while (c->cid == 0 || c2s_find_cid(c->cid));
    c->lid = lid;
    c->listen = listen;
    c->state = C2S_WAIT_STREAM;
    c->opened_ms = loop_now_ms(s->d->loop);
    c->opened_at = time(NULL);
    size_t i = cid_slot(c->cid), j = lid_slot(listen, lid);
    c->next_cid = s->by_cid[i];
    s->by_cid[i] = c;
    c->next_lid = s->by_lid[j];
    s->by_lid[j] = c;
    c->next = s->all;
    if (s->all) s->all->prev = c;
    s->all = c;
    s->nconns++;
    return c;
}

struct c2s_conn *c2s_find_cid(uint64_t cid)
{
    if (!the_c2s.nbuckets) return NULL;
    for (struct c2s_conn *c = the_c2s.by_cid[cid_slot(cid)]; c; c = c->next_cid)
        if (c->cid == cid) return c;
    return NULL;
}

struct c2s_conn *c2s_find_lid(uint8_t listen, uint64_t lid)
{
    if (!the_c2s.nbuckets) return NULL;
    for (struct c2s_conn *c = the_c2s.by_lid[lid_slot(listen, lid)]; c; c = c->next_lid)
        if (c->lid == lid && c->listen == listen) return c;
    return NULL;
}

void c2s_conn_free(struct c2s_conn *c)
{
    struct c2s *s = &the_c2s;
    struct c2s_conn **pp;
    for (pp = &s->by_cid[cid_slot(c->cid)]; *pp; pp = &(*pp)->next_cid)
        if (*pp == c) {
            *pp = c->next_cid;
            break;
        }
    for (pp = &s->by_lid[lid_slot(c->listen, c->lid)]; *pp; pp = &(*pp)->next_lid)
        if (*pp == c) {
            *pp = c->next_lid;
            break;
        }
    if (c->prev) c->prev->next = c->next;
    else s->all = c->next;
    if (c->next) c->next->prev = c->prev;
    s->nconns--;
    c2s_auth_free(c);
    c2s_legacy_free(c);
    c2s_register_free(c);
    free(c->addr);
    free(c->domain);
    free(c->jid);
    free(c->presence);
    free(c->bind_id);
    free(c);
}

/* ---- listens ---- */

static int listen_index(const char *name, int create)
{
    int free_slot = -1;
    for (int i = 0; i < C2S_MAX_LISTENS; i++) {
        if (the_c2s.listens[i].used && strcmp(the_c2s.listens[i].name, name) == 0) return i;
        if (!the_c2s.listens[i].used && free_slot < 0) free_slot = i;
    }
    if (!create || free_slot < 0 || strlen(name) >= PEER_NAME_MAX) return -1;
    snprintf(the_c2s.listens[free_slot].name, PEER_NAME_MAX, "%s", name);
    the_c2s.listens[free_slot].used = 1;
    return free_slot;
}

/* Every connection a listen held is gone with it. */
static void drop_listen_conns(int idx, unsigned reason)
{
    size_t n = 0;
    struct c2s_conn *next;
    for (struct c2s_conn *c = the_c2s.all; c; c = next) {
        next = c->next;
        if (c->listen != idx) continue;
        c2s_drop(c, reason);
        n++;
    }
    if (n) log_notice("%zu connection(s) of %s ended", n, the_c2s.listens[idx].name);
}

static void listen_up(void *arg, const struct peer_info *p, int restarted)
{
    (void)arg;
    (void)restarted; /* a restart first reports the old instance down */
    if (listen_index(p->name, 1) < 0) log_err("too many listens: %s ignored", p->name);
}

static void listen_down(void *arg, const struct peer_info *p)
{
    (void)arg;
    int idx = listen_index(p->name, 0);
    if (idx >= 0) drop_listen_conns(idx, CLOSE_ERROR);
}

/* Listens found unreachable are dropped on the next turn, not inside the
 * ipc_send that noticed: its caller may still be using a connection. */
static void drop_unreachable(loop_t *loop, void *arg)
{
    (void)loop;
    (void)arg;
    the_c2s.drop_timer = NULL;
    for (int i = 0; i < C2S_MAX_LISTENS; i++) {
        struct c2s_listen *l = &the_c2s.listens[i];
        if (!l->used || !l->unreachable) continue;
        l->unreachable = 0;
        if (peer_server_find(the_c2s.lpeers, l->name)) peer_server_drop(the_c2s.lpeers, l->name);
        else drop_listen_conns(i, CLOSE_ERROR);
    }
}

/* ZMQ_ROUTER_MANDATORY said the listen is not connected: it is gone. */
static void listen_unreachable(ipc_t *ipc, const char *peer, const struct msg *m, void *arg)
{
    (void)ipc;
    (void)m;
    (void)arg;
    int idx = listen_index(peer, 0);
    if (idx < 0 || the_c2s.listens[idx].unreachable) return;
    the_c2s.listens[idx].unreachable = 1;
    if (!the_c2s.drop_timer) the_c2s.drop_timer = loop_timer_add(the_c2s.d->loop, 0, drop_unreachable, NULL);
}

/* Events for a connection we do not know (we closed it, or lost it):
 * close it rather than leave listen waiting for an answer. */
static void unknown_conn(const char *peer, const struct msg *m)
{
    if (m->type == MSG_CONN_CLOSED) return;
    log_debug("%s for unknown connection %s/%016llx: closing it", msg_type_name(m->type), peer,
              (unsigned long long)m->id);
    struct msg cm;
    msg_init(&cm, MSG_CONN_CLOSE);
    cm.id = m->id;
    msg_set(&cm, 0, "internal-server-error");
    msg_set(&cm, 1, "connection state lost");
    ipc_send(the_c2s.lipc, peer, &cm);
}

static void listen_msg(ipc_t *ipc, const char *peer, const struct msg *m, void *arg)
{
    (void)ipc;
    (void)arg;
    struct c2s *s = &the_c2s;
    if (peer_server_handle(s->lpeers, peer, m)) return;
    int idx = listen_index(peer, 1);
    if (idx < 0) return;
    if (m->type == MSG_CONN_OPEN) {
        if (s->d->stopping) {
            struct msg cm;
            msg_init(&cm, MSG_CONN_CLOSE);
            cm.id = m->id;
            msg_set(&cm, 0, "system-shutdown");
            ipc_send(s->lipc, peer, &cm);
            return;
        }
        c2s_conn_open((uint8_t)idx, m);
        return;
    }
    if (m->type != MSG_CONN_STREAM && m->type != MSG_CONN_ELEMENT && m->type != MSG_CONN_CLOSED) {
        log_warn("listen %s sent %s; not a listen->c2s message, dropped", peer, msg_type_name(m->type));
        return;
    }
    struct c2s_conn *c = c2s_find_lid((uint8_t)idx, m->id);
    if (!c) {
        unknown_conn(peer, m);
        return;
    }
    if (m->type == MSG_CONN_STREAM) c2s_conn_stream(c, m);
    else if (m->type == MSG_CONN_ELEMENT) c2s_conn_element(c, m);
    else c2s_conn_closed(c, m);
}

/* ---- resync (DESIGN §3) ---- */

static unsigned shard_of(const struct c2s_conn *c)
{
    char bare[JID_STR_MAX];
    if (!c->jid || jid_bare_of(c->jid, strlen(c->jid), bare, sizeof bare) < 0) return 0;
    return jid_shard(bare, strlen(bare), the_c2s.d->conf.sm_shards);
}

/* Tell sm-K again about every session it owns, then that we are done. */
static void resync_shard(unsigned k)
{
    struct c2s *s = &the_c2s;
    size_t n = 0;
    char dest[PEER_NAME_MAX];
    for (struct c2s_conn *c = s->all; c; c = c->next) {
        if (!(c->flags & CF_BIND_SENT) || shard_of(c) != k) continue;
        if (c->state == C2S_ESTABLISHED) {
            c2s_reannounce(c);
            n++;
        } else if (c->flags & CF_BIND_WAIT) {
            /* the bind may have died with the old sm: ask again, normally */
            struct msg m;
            msg_init(&m, MSG_SESSION_BIND);
            m.id = c->cid;
            msg_set(&m, 0, c->jid);
            msg_set(&m, 3, s->d->instance);
            c2s_to_router(&m);
        }
    }
    snprintf(dest, sizeof dest, "sm-%u", k);
    struct msg m;
    msg_init(&m, MSG_RESYNC_DONE);
    msg_set(&m, 2, dest);
    msg_set(&m, 3, s->d->instance);
    c2s_to_router(&m);
    log_notice("resync: %zu session(s) re-announced to %s", n, dest);
}

static unsigned nshards(void)
{
    unsigned n = the_c2s.d->conf.sm_shards;
    return n > C2S_MAX_SHARDS ? C2S_MAX_SHARDS : n;
}

static void sm_up(const struct msg *m)
{
    struct c2s *s = &the_c2s;
    char name[PEER_NAME_MAX];
    if (!msg_str(m, 0, name, sizeof name)) return;
    int k = daemon_instance_number(name);
    if (k < 0 || (unsigned)k >= nshards()) {
        log_warn("sm instance %s is outside the %u configured shards", name, s->d->conf.sm_shards);
        return;
    }
    uint64_t known = s->sm_epoch[k];
    s->sm_epoch[k] = m->id;
    /* a new epoch is a (re)started sm with an empty sessions table: it holds
     * stanzas until every live c2s has re-announced, so always answer, even
     * with no sessions (then RESYNC_DONE alone ends its wait) */
    if (known != m->id) resync_shard((unsigned)k);
}

static void router_up(void *arg, const struct peer_info *p, int restarted)
{
    (void)arg;
    log_notice("router %s up%s", p->name, restarted ? " (restarted)" : "");
    if (!restarted) return;
    /* its route table is new: tell every shard about our sessions again */
    for (unsigned k = 0; k < nshards(); k++) resync_shard(k);
}

static void router_down(void *arg, const struct peer_info *p)
{
    (void)arg;
    /* sessions stay: the router comes back and we resync then; lookups
     * under way time out into temporary-auth-failure */
    log_warn("router %s down", p->name);
}

static void router_msg(ipc_t *ipc, const char *peer, const struct msg *m, void *arg)
{
    (void)ipc;
    (void)peer;
    (void)arg;
    if (peer_client_handle(the_c2s.rpeer, m)) return;
    switch (m->type) {
    case MSG_PEER_UP:
        if (m->kind == ROLE_SM) sm_up(m);
        break;
    case MSG_PEER_DOWN:
        log_debug("peer %.*s (%s) down", (int)m->f[0].n, m->f[0].p, peer_role_name(m->kind));
        break;
    case MSG_DELIVER:
    case MSG_BOUNCE:
    case MSG_AUTH_RESULT:
    case MSG_SESSION_BOUND:
    case MSG_SESSION_KICK:
    case MSG_ACCOUNT_RESULT:
        c2s_routed(m);
        break;
    default:
        log_warn("router sent %s; not for c2s, dropped", msg_type_name(m->type));
        break;
    }
}

/* ---- timers ---- */

static void sweep(loop_t *loop, void *arg)
{
    (void)arg;
    uint64_t now = loop_now_ms(loop);
    struct c2s_conn *next;
    for (struct c2s_conn *c = the_c2s.all; c; c = next) {
        next = c->next; /* c may be freed; only c itself, never its neighbours */
        if (c->state != C2S_ESTABLISHED) c2s_conn_sweep(c, now);
    }
    the_c2s.sweep = loop_timer_add(loop, SWEEP_MS, sweep, NULL);
}

/* ---- daemon hooks ---- */

static int c2s_init(struct daemon *d)
{
    struct c2s *s = &the_c2s;
    char ep[1024];
    s->d = d;
    d->priv = s;
    s->next_cid = util_random_u64() >> 1; /* a restart does not reuse old ids */
    int n = daemon_instance_number(d->instance);
    if (n < 1) {
        log_err("c2s instance names are c2s-N with N >= 1, not %s", d->instance);
        return -1;
    }
    if (d->conf.sm_shards > C2S_MAX_SHARDS)
        log_warn("sm_shards %u: resync covers the first %u only", d->conf.sm_shards, C2S_MAX_SHARDS);
    if (grow_tables() < 0) return -1;
    if (c2s_sasl_init(s) < 0) return -1;
    /* the same modules as xmpp-sm, for what they declare: the stream
     * features and the XEP-0115 hash come out identical in both daemons */
    struct xm_api api;
    char err[1024];
    modules_api_init(&api);
    if (modules_load(&s->mods, &d->conf, "xmpp-c2s", 0, &api, err, sizeof err) < 0) {
        log_err("modules: %s", err);
        return -1;
    }

    struct peer_self self = { .name = d->instance, .role = ROLE_C2S, .epoch = d->epoch };
    conf_c2s_endpoint(&d->conf, (unsigned)n, ep, sizeof ep);
    s->lipc = ipc_bind_router(d->loop, ep, listen_msg, s);
    if (!s->lipc) {
        log_err("cannot bind %s (is %s already running?)", ep, d->instance);
        return -1;
    }
    ipc_on_unreachable(s->lipc, listen_unreachable, s);
    static const struct peer_server_cb lcb = { listen_up, listen_down };
    s->lpeers = peer_server_new(d->loop, s->lipc, &self, d->conf.heartbeat_ms, d->conf.peer_timeout_ms, &lcb, s);

    s->ripc = ipc_connect_dealer(d->loop, d->conf.router_endpoint, d->instance, router_msg, s);
    if (!s->ripc) {
        log_err("cannot connect to the router at %s", d->conf.router_endpoint);
        return -1;
    }
    static const struct peer_client_cb rcb = { router_up, router_down };
    s->rpeer = peer_client_new(d->loop, s->ripc, &self, d->conf.heartbeat_ms, d->conf.peer_timeout_ms, &rcb, s);
    if (!s->lpeers || !s->rpeer) return -1;

    s->sweep = loop_timer_add(d->loop, SWEEP_MS, sweep, NULL);
    log_notice("%s listening for listens on %s, router at %s", d->instance, ep, d->conf.router_endpoint);
    daemon_ready(d);
    return 0;
}

static void c2s_stop(struct daemon *d)
{
    struct c2s *s = &the_c2s;
    struct c2s_conn *next;
    size_t n = s->nconns;
    for (struct c2s_conn *c = s->all; c; c = next) {
        next = c->next;
        c2s_close(c, "system-shutdown", NULL, CLOSE_SHUTDOWN);
    }
    log_notice("%zu connection(s) closed for shutdown", n);
    loop_timer_cancel(d->loop, s->sweep);
    s->sweep = NULL;
    peer_server_goodbye(s->lpeers);
    peer_client_goodbye(s->rpeer);
    ipc_flush(s->lipc);
    ipc_flush(s->ripc);
    modules_unload(&s->mods);
}

static void c2s_stats(struct daemon *d, struct ctl_req *r)
{
    struct c2s *s = &the_c2s;
    size_t by_state[C2S_STATE_COUNT] = { 0 };
    (void)d;
    for (struct c2s_conn *c = s->all; c; c = c->next) by_state[c->state < C2S_STATE_COUNT ? c->state : 0]++;
    ctl_row(r, "connections\t%zu", s->nconns);
    for (unsigned i = 0; i < C2S_STATE_COUNT; i++) ctl_row(r, "conn_%s\t%zu", c2s_state_name(i), by_state[i]);
    ctl_row(r, "sessions\t%zu", s->nsessions);
    for (unsigned m = 0; m < MECH_COUNT; m++) {
        ctl_row(r, "auth_ok_%s\t%" PRIu64, c2s_mech_name(m), s->st.auth_ok[m]);
        ctl_row(r, "auth_failed_%s\t%" PRIu64, c2s_mech_name(m), s->st.auth_failed[m]);
    }
    ctl_row(r, "auth_ok_IQ-AUTH\t%" PRIu64, s->st.legacy_ok);
    ctl_row(r, "auth_failed_IQ-AUTH\t%" PRIu64, s->st.legacy_failed);
    for (unsigned k = KIND_MESSAGE; k <= KIND_IQ; k++)
        ctl_row(r, "routed_%s\t%" PRIu64, stanza_kind_name(k), s->st.routed[k]);
    ctl_row(r, "deliveries\t%" PRIu64, s->st.deliveries);
    ctl_row(r, "redelivered_inbound\t%" PRIu64, s->st.redelivered);
    ctl_row(r, "bounces\t%" PRIu64, s->st.bounces);
    ctl_row(r, "kicks\t%" PRIu64, s->st.kicks);
    ctl_row(r, "handshake_timeouts\t%" PRIu64, s->st.timeouts);
    ctl_row(r, "stream_errors\t%" PRIu64, s->st.stream_errors);
    ctl_row(r, "jid_malformed\t%" PRIu64, s->st.malformed_to);
    c2s_register_stats(r);
}

static int c2s_ctl(struct daemon *d, int argc, char **argv, const char *input, size_t input_len,
                   struct ctl_req *r)
{
    (void)d;
    (void)input;
    (void)input_len;
    if (strcmp(argv[0], "sessions") != 0) return -1;
    if (argc != 1) {
        ctl_fail(r, 2, "usage: sessions");
        return 0;
    }
    time_t now = time(NULL);
    ctl_cols(r, "jid\taddr\tconn-id\tconnected-seconds");
    for (struct c2s_conn *c = the_c2s.all; c; c = c->next) {
        if (c->state != C2S_ESTABLISHED) continue;
        ctl_row(r, "%s\t%s\t%016" PRIx64 "\t%lld", c->jid, c->addr ? c->addr : "-", c->cid,
                (long long)(now - c->opened_at));
    }
    return 0;
}

static const struct daemon_def c2s_def = {
    .program = "xmpp-c2s",
    .role = ROLE_C2S,
    .default_instance = "c2s-1",
    .init = c2s_init,
    .stop = c2s_stop,
    .reload = NULL,
    .ctl = c2s_ctl,
    .stats = c2s_stats,
};

int main(int argc, char **argv)
{
    return daemon_main(argc, argv, &c2s_def);
}
