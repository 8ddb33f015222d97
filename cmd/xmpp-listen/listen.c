/* listen.c - xmpp-listen, the only daemon that touches client sockets
 * (DESIGN §1): the listening sockets and accept, the DEALER links to the
 * xmpp-c2s instances with their liveness, the connection table, the
 * end-of-turn work (writes, deferred reads, c2s backpressure, freeing
 * closed connections), the periodic sweep, counters, reload and stop.
 * Connections themselves live in listen_conn.c, TLS in listen_tls.c. */
#include "config.h"
#include "listen.h"
#include "log.h"
#include "trace.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define SWEEP_MS 1000
#define RATE_TICK_MS 50
#define ACCEPT_PAUSE_MS 250
#define LISTEN_BACKLOG 1024

/* ---------------- small containers ---------------- */

void idvec_push(struct idvec *v, uint64_t id)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        uint64_t *p = realloc(v->v, cap * sizeof *p);
        if (!p) {
            log_err("out of memory queueing connection work");
            return;
        }
        v->v = p;
        v->cap = cap;
    }
    v->v[v->n++] = id;
}

void dlist_init(struct dlink *head) { head->prev = head->next = head; }

int dlist_linked(const struct dlink *e) { return e->next != NULL; }

void dlist_remove(struct dlink *e)
{
    if (!e->next) return;
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->prev = e->next = NULL;
}

void dlist_append(struct dlink *head, struct dlink *e)
{
    dlist_remove(e);
    e->prev = head->prev;
    e->next = head;
    head->prev->next = e;
    head->prev = e;
}

/* ---------------- connection table ---------------- */

static size_t bucket_of(const struct listen *l, uint64_t id)
{
    /* the low 32 bits are a counter: already well spread */
    return (size_t)((id ^ (id >> 32)) & (l->table_size - 1));
}

static int table_grow(struct listen *l)
{
    size_t size = l->table_size ? l->table_size * 2 : 1024;
    struct conn **t = calloc(size, sizeof *t);
    if (!t) return -1;
    struct conn **old = l->table;
    size_t old_size = l->table_size;
    l->table = t;
    l->table_size = size;
    for (size_t i = 0; i < old_size; i++) {
        while (old[i]) {
            struct conn *c = old[i];
            old[i] = c->hnext;
            size_t b = bucket_of(l, c->id);
            c->hnext = t[b];
            t[b] = c;
        }
    }
    free(old);
    return 0;
}

struct conn *listen_find(struct listen *l, uint64_t id)
{
    if (!l->table_size) return NULL;
    for (struct conn *c = l->table[bucket_of(l, id)]; c; c = c->hnext)
        if (c->id == id) return c;
    return NULL;
}

int listen_add(struct listen *l, struct conn *c)
{
    if (l->nconns >= l->table_size && table_grow(l) < 0) return -1;
    size_t b = bucket_of(l, c->id);
    c->hnext = l->table[b];
    l->table[b] = c;
    l->nconns++;
    c->link->nconns++;
    return 0;
}

void listen_remove(struct listen *l, struct conn *c)
{
    struct conn **pp = &l->table[bucket_of(l, c->id)];
    while (*pp && *pp != c) pp = &(*pp)->hnext;
    if (!*pp) return;
    *pp = c->hnext;
    c->hnext = NULL;
    l->nconns--;
    c->link->nconns--;
}

/* Call fn on every connection; fn may close the one it is given. */
static void listen_each(struct listen *l, void (*fn)(struct conn *c, void *arg), void *arg)
{
    for (size_t i = 0; i < l->table_size; i++) {
        struct conn *c = l->table[i];
        while (c) {
            struct conn *next = c->hnext;
            fn(c, arg);
            c = next;
        }
    }
}

void listen_bury(struct listen *l, struct conn *c)
{
    c->hnext = l->graveyard;
    l->graveyard = c;
}

uint64_t listen_next_id(struct listen *l)
{
    uint32_t n = ++l->id_counter;
    if (n == 0) n = ++l->id_counter; /* never id 0: it reads as "no connection" */
    return l->id_prefix | n;
}

/* ---------------- messages to c2s ---------------- */

int listen_send(struct conn *c, struct msg *m)
{
    m->id = c->id;
    return ipc_send(c->link->ipc, NULL, m);
}

void listen_count_stream_error(struct listen *l, const char *cond)
{
    unsigned e = stream_error_parse(cond, strlen(cond));
    l->st.stream_errors[e < STE_END ? e : STE_NONE]++;
}

/* ---------------- deferred work queues ---------------- */

void listen_queue_flush(struct conn *c)
{
    if (c->flush_queued || c->dead) return;
    c->flush_queued = 1;
    idvec_push(&c->l->flush_ids, c->id);
}

void listen_queue_read(struct conn *c)
{
    if (c->read_queued || c->dead) return;
    c->read_queued = 1;
    idvec_push(&c->l->ready_ids, c->id);
    loop_wake(c->l->d->loop);
}

static void rate_tick(loop_t *loop, void *arg);

void listen_rate_wait(struct conn *c)
{
    struct listen *l = c->l;
    idvec_push(&l->rate_ids, c->id);
    if (!l->rate_timer) l->rate_timer = loop_timer_add(l->d->loop, RATE_TICK_MS, rate_tick, l);
}

void listen_link_wait(struct conn *c)
{
    idvec_push(&c->link->blocked_ids, c->id);
}

/* Resume connections whose token bucket has refilled; keep the others. */
static void rate_tick(loop_t *loop, void *arg)
{
    struct listen *l = arg;
    uint64_t now = loop_now_ms(loop);
    size_t keep = 0, end = l->rate_ids.n;
    l->rate_timer = NULL;
    for (size_t i = 0; i < end; i++) {
        uint64_t id = l->rate_ids.v[i];
        struct conn *c = listen_find(l, id);
        if (!c || !c->rate_blocked) continue;
        if (!conn_refill(c, now)) {
            l->rate_ids.v[keep++] = id;
            continue;
        }
        c->rate_blocked = 0;
        conn_resume_read(c);
    }
    /* ids pushed while resuming (blocked again at once) follow the kept ones */
    if (l->rate_ids.n > end)
        memmove(l->rate_ids.v + keep, l->rate_ids.v + end, (l->rate_ids.n - end) * sizeof *l->rate_ids.v);
    l->rate_ids.n = keep + (l->rate_ids.n - end);
    if (l->rate_ids.n && !l->rate_timer) l->rate_timer = loop_timer_add(loop, RATE_TICK_MS, rate_tick, l);
}

/* Run fn on the connections queued now; those queued meanwhile wait for
 * the next turn (and wake the loop so it does not sleep on them). */
static void drain_ids(struct listen *l, struct idvec *v, void (*fn)(struct conn *c))
{
    size_t end = v->n;
    for (size_t i = 0; i < end; i++) {
        struct conn *c = listen_find(l, v->v[i]);
        if (c) fn(c);
    }
    if (v->n > end) memmove(v->v, v->v + end, (v->n - end) * sizeof *v->v);
    v->n -= end;
    if (v->n) loop_wake(l->d->loop);
}

static void do_flush(struct conn *c)
{
    c->flush_queued = 0;
    conn_flush(c);
}

static void do_read(struct conn *c)
{
    c->read_queued = 0;
    conn_read_ready(c);
}

/* DESIGN §3 "backpressure, not loss": when a c2s does not take our
 * records, stop reading the clients that feed it until it catches up. */
static void check_backpressure(struct listen *l)
{
    for (unsigned i = 0; i < l->nlinks; i++) {
        struct c2s_link *k = &l->links[i];
        size_t pending = ipc_pending(k->ipc, NULL);
        if (!k->blocked && pending > LISTEN_BACKPRESSURE_HIGH) {
            k->blocked = 1;
            l->st.backpressure_pauses++;
            log_notice("c2s-%u: %zu bytes queued, pausing input from its %zu clients", k->number, pending,
                       k->nconns);
        } else if (k->blocked && pending < LISTEN_BACKPRESSURE_LOW) {
            k->blocked = 0;
            log_notice("c2s-%u caught up, resuming input", k->number);
            for (size_t j = 0; j < k->blocked_ids.n; j++) {
                struct conn *c = listen_find(l, k->blocked_ids.v[j]);
                if (!c || !c->link_blocked) continue;
                c->link_blocked = 0;
                conn_resume_read(c);
            }
            k->blocked_ids.n = 0;
        }
    }
}

static void bury_dead(struct listen *l)
{
    while (l->graveyard) {
        struct conn *c = l->graveyard;
        l->graveyard = c->hnext;
        conn_free(c);
    }
}

static void turn_end(loop_t *loop, void *arg)
{
    struct listen *l = arg;
    (void)loop;
    drain_ids(l, &l->ready_ids, do_read);
    drain_ids(l, &l->flush_ids, do_flush);
    check_backpressure(l);
    bury_dead(l);
}

static void sweep(loop_t *loop, void *arg)
{
    struct listen *l = arg;
    conn_sweep(l, loop_now_ms(loop));
    l->sweep_timer = loop_timer_add(loop, SWEEP_MS, sweep, l);
}

/* ---------------- c2s links ---------------- */

static void close_for_dead_c2s(struct conn *c, void *arg)
{
    if (c->link != arg) return;
    /* No condition fits a dead connection manager exactly: RFC 6120
     * §4.9.3.18 system-shutdown speaks of the whole server going down, and
     * §4.9.3.16 reset of new security or features. internal-server-error
     * (§4.9.3.8) is the honest one: the server cannot serve this stream
     * any more, and a client reconnects as it would after any failure. */
    conn_stream_error(c, "internal-server-error", "connection manager restarting", CLOSE_ERROR);
}

static void link_down(void *arg, const struct peer_info *server)
{
    struct c2s_link *k = arg;
    log_warn("c2s-%u (%s) is down: closing its %zu connections", k->number, server->name, k->nconns);
    listen_each(k->l, close_for_dead_c2s, k);
}

static void link_up(void *arg, const struct peer_info *server, int restarted)
{
    struct c2s_link *k = arg;
    log_notice("c2s-%u (%s) is up%s", k->number, server->name, restarted ? " (restarted)" : "");
}

static void link_msg(ipc_t *ipc, const char *peer, const struct msg *m, void *arg)
{
    struct c2s_link *k = arg;
    (void)ipc;
    (void)peer;
    if (!k->peer) return; /* stopping: said goodbye already */
    if (peer_client_handle(k->peer, m)) return;
    if (m->type < MSG_CONN_SEND || m->type > MSG_CONN_BOUND) {
        log_warn("c2s-%u: unexpected %s record ignored", k->number, msg_type_name(m->type));
        return;
    }
    struct conn *c = listen_find(k->l, m->id);
    if (!c || c->link != k) {
        /* connections race with closes: the client may be gone already */
        if (m->flags & MSG_F_TRACED)
            trace_line(8, m->kind, m->stype, NULL, NULL, m->trace, 0, NULL, "drop: connection %016llx gone",
                       (unsigned long long)m->id);
        log_debug("c2s-%u: %s for unknown connection %016llx ignored", k->number, msg_type_name(m->type),
                  (unsigned long long)m->id);
        return;
    }
    conn_command(c, m);
}

static int links_open(struct listen *l)
{
    const struct conf *conf = &l->d->conf;
    static const struct peer_client_cb cbs = { link_up, link_down };
    l->links = calloc(conf->c2s_instances, sizeof *l->links);
    if (!l->links) return -1;
    for (unsigned i = 0; i < conf->c2s_instances; i++) {
        struct c2s_link *k = &l->links[i];
        char ep[1024];
        k->l = l;
        k->number = i + 1;
        conf_c2s_endpoint(conf, k->number, ep, sizeof ep);
        k->ipc = ipc_connect_dealer(l->d->loop, ep, l->d->instance, link_msg, k);
        if (!k->ipc) return -1;
        k->peer = peer_client_new(l->d->loop, k->ipc, &l->self, conf->heartbeat_ms, conf->peer_timeout_ms,
                                  &cbs, k);
        if (!k->peer) return -1;
        l->nlinks++;
        log_info("linking to c2s-%u at %s", k->number, ep);
    }
    return 0;
}

/* Round robin over the c2s instances known alive; NULL if none is. */
static struct c2s_link *pick_link(struct listen *l)
{
    for (unsigned i = 0; i < l->nlinks; i++) {
        struct c2s_link *k = &l->links[(l->rr + i) % l->nlinks];
        if (k->peer && peer_client_up(k->peer)) {
            l->rr = (unsigned)(k - l->links) + 1;
            return k;
        }
    }
    return NULL;
}

/* ---------------- listening sockets ---------------- */

/* "ip:port" or "[ipv6]:port" (validated by config.c) into a sockaddr. */
static int parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len, uint16_t *port)
{
    char host[64];
    const char *p;
    size_t hl;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':') return -1;
        hl = (size_t)(end - s - 1);
        if (hl >= sizeof host) return -1;
        memcpy(host, s + 1, hl);
        p = end + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon) return -1;
        hl = (size_t)(colon - s);
        if (hl >= sizeof host) return -1;
        memcpy(host, s, hl);
        p = colon + 1;
    }
    host[hl] = '\0';
    char *end;
    unsigned long n = strtoul(p, &end, 10);
    if (*end || n == 0 || n > 65535) return -1;
    *port = (uint16_t)n;
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(*port);
        *len = sizeof *s6;
        return 0;
    }
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(*port);
        *len = sizeof *s4;
        return 0;
    }
    return -1;
}

/* The client's address as c2s and the logs see it. */
static void format_peer(const struct sockaddr_storage *ss, char *out, size_t size)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
        snprintf(out, size, "[%s]:%u", ip, ntohs(s6->sin6_port));
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
        snprintf(out, size, "%s:%u", ip, ntohs(s4->sin_port));
    }
}

static void resume_accepting(loop_t *loop, void *arg)
{
    struct listen *l = arg;
    l->accept_timer = NULL;
    l->accept_paused = 0;
    for (size_t i = 0; i < l->nlisteners; i++) loop_mod_fd(loop, l->listeners[i].fd, EPOLLIN);
}

/* Out of descriptors: a level-triggered listener would spin on the
 * pending connection, so stop watching the listeners for a moment. */
static void pause_accepting(struct listen *l, int err)
{
    if (l->accept_paused) return;
    l->accept_paused = 1;
    l->st.accept_pauses++;
    log_warn("accept: %s with %zu connections open; pausing accepts for %d ms", strerror(err), l->nconns,
             ACCEPT_PAUSE_MS);
    for (size_t i = 0; i < l->nlisteners; i++) loop_mod_fd(l->d->loop, l->listeners[i].fd, 0);
    l->accept_timer = loop_timer_add(l->d->loop, ACCEPT_PAUSE_MS, resume_accepting, l);
}

static void accept_one(struct listen *l, struct listener *ls, int fd, const struct sockaddr_storage *ss)
{
    char addr[LISTEN_ADDR_MAX];
    format_peer(ss, addr, sizeof addr);
    struct c2s_link *k = pick_link(l);
    if (!k) {
        l->st.no_c2s_refused++;
        log_warn("no c2s instance is up: refusing connection from %s on port %u", addr, ls->port);
        close(fd);
        return;
    }
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    if (!conn_new(l, fd, addr, ls->port, ls->direct_tls, k)) {
        log_err("cannot set up the connection from %s: out of memory", addr);
        close(fd);
    }
}

static int accept_error_is_transient(int err)
{
    /* accept(2): errors of the pending connection are reported by accept
     * on Linux; the next one may be fine */
    switch (err) {
    case EINTR: case ECONNABORTED: case EPROTO: case ENETDOWN: case ENOPROTOOPT: case EHOSTDOWN:
    case ENONET: case EHOSTUNREACH: case EOPNOTSUPP: case ENETUNREACH: case EPERM:
        return 1;
    }
    return 0;
}

static void on_accept(loop_t *loop, int fd, uint32_t events, void *arg)
{
    struct listener *ls = arg;
    struct listen *l = ls->l;
    (void)loop;
    (void)events;
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int cfd = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd >= 0) {
            if (l->d->stopping) close(cfd);
            else accept_one(l, ls, cfd, &ss);
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        if (accept_error_is_transient(errno)) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            pause_accepting(l, errno);
            return;
        }
        log_err("accept on port %u: %s", ls->port, strerror(errno));
        return;
    }
}

static int open_listener(struct listen *l, const char *spec, int direct_tls)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    uint16_t port;
    if (parse_addr(spec, &ss, &sl, &port) < 0) {
        log_err("cannot parse listen address '%s'", spec);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        if (errno == EAFNOSUPPORT) {
            log_warn("%s: address family not supported here, skipped", spec);
            return 0;
        }
        log_err("socket for %s: %s", spec, strerror(errno));
        return -1;
    }
    int on = 1;
    /* several listen instances may share a port (DESIGN §8) */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on);
    if (ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        int err = errno;
        close(fd);
        if (err == EADDRNOTAVAIL && ss.ss_family == AF_INET6) {
            /* hosts without IPv6 still get the default [::1] address */
            log_warn("%s: %s, skipped", spec, strerror(err));
            return 0;
        }
        log_err("cannot listen on %s: %s", spec, strerror(err));
        return -1;
    }
    struct listener *ls = &l->listeners[l->nlisteners];
    ls->l = l;
    ls->fd = fd;
    ls->port = port;
    ls->direct_tls = direct_tls;
    if (loop_add_fd(l->d->loop, fd, EPOLLIN, on_accept, ls) < 0) {
        log_err("cannot watch the listener %s: %s", spec, strerror(errno));
        close(fd);
        return -1;
    }
    l->nlisteners++;
    log_info("listening on %s (%s)", spec, direct_tls ? "direct TLS, XEP-0368" : "STARTTLS");
    return 0;
}

static int listeners_open(struct listen *l)
{
    const struct conf *conf = &l->d->conf;
    for (size_t i = 0; i < conf->n_c2s_listen; i++)
        if (open_listener(l, conf->c2s_listen[i], 0) < 0) return -1;
    for (size_t i = 0; i < conf->n_c2s_tls_listen; i++)
        if (open_listener(l, conf->c2s_tls_listen[i], 1) < 0) return -1;
    if (l->nlisteners == 0) {
        log_err("no address to listen on (c2s_listen, c2s_tls_listen)");
        return -1;
    }
    return 0;
}

static void listeners_close(struct listen *l)
{
    for (size_t i = 0; i < l->nlisteners; i++) {
        loop_del_fd(l->d->loop, l->listeners[i].fd);
        close(l->listeners[i].fd);
    }
    l->nlisteners = 0;
    if (l->accept_timer) loop_timer_cancel(l->d->loop, l->accept_timer);
    l->accept_timer = NULL;
}

/* Every client is a descriptor: take all the kernel allows us. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) log_warn("cannot raise the descriptor limit: %s", strerror(errno));
        else log_info("descriptor limit raised from %llu to %llu", (unsigned long long)was,
                      (unsigned long long)rl.rlim_max);
    }
}

static void apply_limits(struct listen *l)
{
    const struct conf *conf = &l->d->conf;
    xmlstream_limits_default(&l->limits);
    l->limits.max_stanza = conf->max_stanza_size;
    l->limits.max_depth = conf->max_depth;
    l->limits.max_attrs = conf->max_attrs;
}

/* ---------------- daemon hooks ---------------- */

static int listen_init(struct daemon *d)
{
    static struct listen state;
    struct listen *l = &state;
    l->d = d;
    d->priv = l;
    int n = daemon_instance_number(d->instance);
    if (n < 0 || n > 255) {
        log_err("instance '%s': the number must be 0..255 (it is the top byte of connection ids)", d->instance);
        return -1;
    }
    l->self.name = d->instance;
    l->self.role = ROLE_LISTEN;
    l->self.epoch = d->epoch;
    /* unique across listen instances (N) and restarts (epoch) */
    l->id_prefix = (uint64_t)n << 56 | (d->epoch & 0xffffff) << 32;
    dlist_init(&l->preauth_in);
    dlist_init(&l->authed_in);
    dlist_init(&l->authed_out);
    apply_limits(l);
    raise_fd_limit();
    l->rbuf = malloc(LISTEN_READ_BUF);
    if (!l->rbuf || table_grow(l) < 0) return -1;
    l->tls = tls_load(l, &d->conf);
    if (!l->tls) return -1;
    /* deferred reads produce records: before the links' flush */
    if (loop_on_turn_end(d->loop, LOOP_WORK, turn_end, l) < 0) return -1;
    if (links_open(l) < 0) return -1;
    if (listeners_open(l) < 0) return -1;
    l->sweep_timer = loop_timer_add(d->loop, SWEEP_MS, sweep, l);
    daemon_ready(d);
    return 0;
}

static void shutdown_conn(struct conn *c, void *arg)
{
    (void)arg;
    /* RFC 6120 §4.9.3.18 */
    conn_stream_error(c, "system-shutdown", NULL, CLOSE_SHUTDOWN);
    conn_flush(c);
}

static void listen_stop(struct daemon *d)
{
    struct listen *l = d->priv;
    listeners_close(l);
    log_notice("stopping: closing %zu connections", l->nconns);
    listen_each(l, shutdown_conn, NULL);
    for (unsigned i = 0; i < l->nlinks; i++) {
        struct c2s_link *k = &l->links[i];
        peer_client_goodbye(k->peer);
        ipc_flush(k->ipc);
        /* no heartbeat may follow the goodbye (c2s would take us for alive) */
        peer_client_free(k->peer);
        k->peer = NULL;
    }
}

/* SIGHUP: new certificates for new connections; existing ones keep the
 * SSL_CTX they hold a reference to. Addresses and c2s links stay as
 * they are until a restart; limits apply to new parsers. */
static int listen_reload(struct daemon *d)
{
    struct listen *l = d->priv;
    struct listen_tls *fresh = tls_load(l, &d->conf);
    if (!fresh) {
        log_err("reload: certificates not reloaded, the previous ones stay in use");
    } else {
        tls_release(l->tls);
        l->tls = fresh;
        log_notice("reload: certificates reloaded for %zu hosts", d->conf.n_hosts);
    }
    apply_limits(l);
    return fresh ? 0 : -1;
}

static void listen_stats(struct daemon *d, struct ctl_req *r)
{
    struct listen *l = d->priv;
    const struct listen_stats *s = &l->st;
    unsigned up = 0;
    for (unsigned i = 0; i < l->nlinks; i++) up += l->links[i].peer && peer_client_up(l->links[i].peer) ? 1 : 0;
    ctl_row(r, "connections_open\t%zu", l->nconns);
    ctl_row(r, "connections_total\t%llu", (unsigned long long)s->conns_total);
    ctl_row(r, "connections_refused_no_c2s\t%llu", (unsigned long long)s->no_c2s_refused);
    ctl_row(r, "tls_handshakes_ok\t%llu", (unsigned long long)s->tls_ok);
    ctl_row(r, "tls_handshakes_failed\t%llu", (unsigned long long)s->tls_failed);
    ctl_row(r, "bytes_in\t%llu", (unsigned long long)s->bytes_in);
    ctl_row(r, "bytes_out\t%llu", (unsigned long long)s->bytes_out);
    ctl_row(r, "elements_in\t%llu", (unsigned long long)s->elements_in);
    ctl_row(r, "timeouts\t%llu", (unsigned long long)s->timeouts);
    ctl_row(r, "slow_reader_disconnects\t%llu", (unsigned long long)s->slow_readers);
    ctl_row(r, "rate_limited_pauses\t%llu", (unsigned long long)s->rate_pauses);
    ctl_row(r, "backpressure_pauses\t%llu", (unsigned long long)s->backpressure_pauses);
    ctl_row(r, "accept_pauses\t%llu", (unsigned long long)s->accept_pauses);
    ctl_row(r, "c2s_links_up\t%u/%u", up, l->nlinks);
    for (unsigned e = 0; e < STE_END; e++)
        if (s->stream_errors[e])
            ctl_row(r, "stream_errors.%s\t%llu", e == STE_NONE ? "other" : stream_error_name(e),
                    (unsigned long long)s->stream_errors[e]);
}

static int listen_ctl(struct daemon *d, int argc, char **argv, const char *input, size_t input_len,
                      struct ctl_req *r)
{
    (void)d; (void)argc; (void)argv; (void)input; (void)input_len; (void)r;
    return -1;
}

static const struct daemon_def listen_def = {
    .program = "xmpp-listen",
    .role = ROLE_LISTEN,
    .default_instance = "listen-1",
    .init = listen_init,
    .stop = listen_stop,
    .reload = listen_reload,
    .ctl = listen_ctl,
    .stats = listen_stats,
};

int main(int argc, char **argv)
{
    return daemon_main(argc, argv, &listen_def);
}
