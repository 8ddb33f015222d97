/* peer.c - hello/heartbeat/goodbye liveness between daemons (peer.h).
 *
 * Client (DEALER side): HELLO at start and, while the server is not known
 * alive, again every period; HEARTBEAT every period once it is. The server
 * answers HELLO with HELLO_ACK and sends its own HEARTBEAT to every live
 * peer each period. Every liveness record carries the sender's epoch in
 * id, so a restart shows as a new epoch even when no silence was seen.
 * A server that gets a HEARTBEAT or data from a peer it does not know
 * (it restarted) answers HELLO, which makes the peer introduce itself. */
#include "config.h"
#include "peer.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct peer_client {
    loop_t *loop;
    ipc_t *ipc;
    struct peer_self self;
    unsigned hb_ms, timeout_ms;
    struct peer_client_cb cb;
    void *arg;
    struct peer_info server;
    loop_timer_t *timer;
    int gone; /* said goodbye: no more heartbeats */
};

#define MAX_PEERS 256

struct peer_server {
    loop_t *loop;
    ipc_t *ipc;
    struct peer_self self;
    unsigned hb_ms, timeout_ms;
    struct peer_server_cb cb;
    void *arg;
    struct peer_info peers[MAX_PEERS];
    size_t npeers;
    loop_timer_t *timer;
    int gone;
};

static void send_liveness(ipc_t *ipc, const char *to, unsigned type, const struct peer_self *self)
{
    struct msg m;
    msg_init(&m, type);
    m.id = self->epoch;
    m.kind = (uint8_t)self->role;
    msg_set(&m, 0, self->name);
    if (type == MSG_HELLO || type == MSG_HELLO_ACK) {
        m.num = (uint32_t)MSG_PROTO_MIN << 16 | MSG_PROTO_MAX;
        msg_set(&m, 1, PACKAGE_VERSION);
    }
    ipc_send(ipc, to, &m);
}

static int proto_compatible(const struct msg *m)
{
    unsigned lo = m->num >> 16, hi = m->num & 0xffff;
    return lo <= MSG_PROTO_MAX && hi >= MSG_PROTO_MIN && lo <= hi;
}

static int is_liveness(unsigned type)
{
    return type == MSG_HELLO || type == MSG_HELLO_ACK || type == MSG_HEARTBEAT || type == MSG_GOODBYE;
}

/* ---------------- client ---------------- */

static void client_tick(loop_t *loop, void *arg)
{
    peer_client_t *pc = arg;
    uint64_t now = loop_now_ms(loop);
    pc->timer = NULL;
    if (pc->gone) return;
    if (pc->server.up && now - pc->server.last_seen_ms > pc->timeout_ms) {
        pc->server.up = 0;
        log_warn("peer: %s silent for %u ms, considered down", pc->server.name, pc->timeout_ms);
        if (pc->cb.down) pc->cb.down(pc->arg, &pc->server);
    }
    send_liveness(pc->ipc, NULL, pc->server.up ? MSG_HEARTBEAT : MSG_HELLO, &pc->self);
    pc->timer = loop_timer_add(loop, pc->hb_ms, client_tick, pc);
}

peer_client_t *peer_client_new(loop_t *loop, ipc_t *ipc, const struct peer_self *self,
                               unsigned hb_ms, unsigned timeout_ms,
                               const struct peer_client_cb *cb, void *arg)
{
    peer_client_t *pc = calloc(1, sizeof *pc);
    if (!pc) return NULL;
    pc->loop = loop;
    pc->ipc = ipc;
    pc->self = *self;
    pc->hb_ms = hb_ms;
    pc->timeout_ms = timeout_ms;
    if (cb) pc->cb = *cb;
    pc->arg = arg;
    send_liveness(ipc, NULL, MSG_HELLO, &pc->self);
    pc->timer = loop_timer_add(loop, hb_ms, client_tick, pc);
    return pc;
}

int peer_client_handle(peer_client_t *pc, const struct msg *m)
{
    if (!is_liveness(m->type)) return 0;
    uint64_t now = loop_now_ms(pc->loop);
    switch (m->type) {
    case MSG_GOODBYE:
        if (pc->server.up && m->id == pc->server.epoch) {
            pc->server.up = 0;
            log_notice("peer: %s said goodbye", pc->server.name);
            if (pc->cb.down) pc->cb.down(pc->arg, &pc->server);
        }
        return 1;
    case MSG_HELLO_ACK: {
        if (!proto_compatible(m)) {
            log_err("peer: server speaks protocol %u..%u, we speak %u..%u", m->num >> 16,
                    m->num & 0xffff, MSG_PROTO_MIN, MSG_PROTO_MAX);
            return 1;
        }
        int restarted = pc->server.epoch != 0 && pc->server.epoch != m->id;
        int was_up = pc->server.up;
        if (restarted && was_up && pc->cb.down) {
            pc->server.up = 0;
            pc->cb.down(pc->arg, &pc->server);
        }
        msg_str(m, 0, pc->server.name, sizeof pc->server.name);
        pc->server.role = m->kind;
        pc->server.proto_max = m->num & 0xffff;
        pc->server.last_seen_ms = now;
        if (!was_up || restarted) {
            pc->server.epoch = m->id;
            pc->server.up = 1;
            log_info("peer: %s up (epoch %016llx)", pc->server.name, (unsigned long long)m->id);
            if (pc->cb.up) pc->cb.up(pc->arg, &pc->server, restarted);
        }
        return 1;
    }
    case MSG_HEARTBEAT:
    case MSG_HELLO:
        if (pc->server.up && m->id == pc->server.epoch && m->type == MSG_HEARTBEAT) {
            pc->server.last_seen_ms = now;
        } else {
            /* the server does not know us, or restarted: introduce ourselves */
            send_liveness(pc->ipc, NULL, MSG_HELLO, &pc->self);
        }
        return 1;
    }
    return 1;
}

int peer_client_up(const peer_client_t *pc) { return pc->server.up; }

const struct peer_info *peer_client_server(const peer_client_t *pc) { return &pc->server; }

void peer_client_goodbye(peer_client_t *pc)
{
    pc->gone = 1;
    send_liveness(pc->ipc, NULL, MSG_GOODBYE, &pc->self);
}

void peer_client_free(peer_client_t *pc)
{
    if (!pc) return;
    loop_timer_cancel(pc->loop, pc->timer);
    free(pc);
}

/* ---------------- server ---------------- */

static struct peer_info *server_lookup(peer_server_t *ps, const char *name)
{
    for (size_t i = 0; i < ps->npeers; i++)
        if (strcmp(ps->peers[i].name, name) == 0) return &ps->peers[i];
    return NULL;
}

static void server_remove(peer_server_t *ps, struct peer_info *p)
{
    struct peer_info gone = *p;
    *p = ps->peers[--ps->npeers];
    ipc_forget(ps->ipc, gone.name);
    if (ps->cb.down) ps->cb.down(ps->arg, &gone);
}

static void server_tick(loop_t *loop, void *arg)
{
    peer_server_t *ps = arg;
    uint64_t now = loop_now_ms(loop);
    ps->timer = NULL;
    if (ps->gone) return;
    for (size_t i = 0; i < ps->npeers;) {
        struct peer_info *p = &ps->peers[i];
        if (now - p->last_seen_ms > ps->timeout_ms) {
            log_warn("peer: %s (%s) silent for %u ms, considered down", p->name,
                     peer_role_name((unsigned)p->role), ps->timeout_ms);
            server_remove(ps, p);
            continue; /* slot i now holds another peer */
        }
        send_liveness(ps->ipc, p->name, MSG_HEARTBEAT, &ps->self);
        i++;
    }
    ps->timer = loop_timer_add(loop, ps->hb_ms, server_tick, ps);
}

peer_server_t *peer_server_new(loop_t *loop, ipc_t *ipc, const struct peer_self *self,
                               unsigned hb_ms, unsigned timeout_ms,
                               const struct peer_server_cb *cb, void *arg)
{
    peer_server_t *ps = calloc(1, sizeof *ps);
    if (!ps) return NULL;
    ps->loop = loop;
    ps->ipc = ipc;
    ps->self = *self;
    ps->hb_ms = hb_ms;
    ps->timeout_ms = timeout_ms;
    if (cb) ps->cb = *cb;
    ps->arg = arg;
    ps->timer = loop_timer_add(loop, hb_ms, server_tick, ps);
    return ps;
}

static void server_hello(peer_server_t *ps, const char *peer, const struct msg *m)
{
    if (!msg_eq(m, 0, peer)) {
        log_warn("peer: hello from routing id '%s' names another instance; ignored", peer);
        return;
    }
    if (!proto_compatible(m)) {
        log_err("peer: %s speaks protocol %u..%u, we speak %u..%u; refused", peer, m->num >> 16,
                m->num & 0xffff, MSG_PROTO_MIN, MSG_PROTO_MAX);
        return;
    }
    struct peer_info *p = server_lookup(ps, peer);
    int restarted = 0;
    if (p && p->epoch != m->id) {
        log_notice("peer: %s restarted (epoch %016llx -> %016llx)", peer,
                   (unsigned long long)p->epoch, (unsigned long long)m->id);
        server_remove(ps, p);
        p = NULL;
        restarted = 1;
    }
    if (!p) {
        if (ps->npeers >= MAX_PEERS) {
            log_err("peer: too many peers, %s refused", peer);
            return;
        }
        p = &ps->peers[ps->npeers++];
        memset(p, 0, sizeof *p);
        snprintf(p->name, sizeof p->name, "%s", peer);
        p->role = m->kind;
        p->epoch = m->id;
        p->proto_max = m->num & 0xffff;
        p->up = 1;
        p->last_seen_ms = loop_now_ms(ps->loop);
        send_liveness(ps->ipc, peer, MSG_HELLO_ACK, &ps->self);
        log_info("peer: %s (%s) up, epoch %016llx", peer, peer_role_name(m->kind),
                 (unsigned long long)m->id);
        if (ps->cb.up) ps->cb.up(ps->arg, p, restarted);
        return;
    }
    p->last_seen_ms = loop_now_ms(ps->loop);
    send_liveness(ps->ipc, peer, MSG_HELLO_ACK, &ps->self);
}

int peer_server_handle(peer_server_t *ps, const char *peer, const struct msg *m)
{
    struct peer_info *p;
    switch (m->type) {
    case MSG_HELLO:
        server_hello(ps, peer, m);
        return 1;
    case MSG_HELLO_ACK:
        return 1;
    case MSG_GOODBYE:
        p = server_lookup(ps, peer);
        if (p && p->epoch == m->id) {
            log_notice("peer: %s said goodbye", peer);
            server_remove(ps, p);
        }
        return 1;
    case MSG_HEARTBEAT:
        p = server_lookup(ps, peer);
        if (p && p->epoch == m->id) p->last_seen_ms = loop_now_ms(ps->loop);
        else send_liveness(ps->ipc, peer, MSG_HELLO, &ps->self);
        return 1;
    default:
        if (server_lookup(ps, peer)) return 0;
        log_warn("peer: %s record from '%s', which has not said hello; refused",
                 msg_type_name(m->type), peer);
        send_liveness(ps->ipc, peer, MSG_HELLO, &ps->self);
        return 1;
    }
}

const struct peer_info *peer_server_find(const peer_server_t *ps, const char *name)
{
    return server_lookup((peer_server_t *)ps, name);
}

void peer_server_each(const peer_server_t *ps, void (*fn)(const struct peer_info *p, void *arg), void *arg)
{
    for (size_t i = 0; i < ps->npeers; i++) fn(&ps->peers[i], arg);
}

void peer_server_drop(peer_server_t *ps, const char *name)
{
    struct peer_info *p = server_lookup(ps, name);
    if (!p) return;
    log_warn("peer: %s unreachable, considered down", name);
    server_remove(ps, p);
}

void peer_server_broadcast(peer_server_t *ps, int role, const struct msg *m)
{
    for (size_t i = 0; i < ps->npeers; i++)
        if (role == 0 || ps->peers[i].role == role) ipc_send(ps->ipc, ps->peers[i].name, m);
}

void peer_server_goodbye(peer_server_t *ps)
{
    ps->gone = 1;
    for (size_t i = 0; i < ps->npeers; i++) send_liveness(ps->ipc, ps->peers[i].name, MSG_GOODBYE, &ps->self);
}

void peer_server_free(peer_server_t *ps)
{
    if (!ps) return;
    loop_timer_cancel(ps->loop, ps->timer);
    free(ps);
}
