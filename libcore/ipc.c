/* ipc.c - ZeroMQ links carrying msg.h records (see ipc.h).
 *
 * Records for one destination accumulate in a batch during a loop turn
 * and leave as one ZeroMQ message at the turn's end (each extra frame or
 * message costs about as much as another: DESIGN §10). A ROUTER link has
 * ZMQ_ROUTER_MANDATORY, so a vanished peer yields EHOSTUNREACH, which is
 * reported record by record; a full peer (EAGAIN at the high-water mark)
 * keeps its batch, and the owner sees it in ipc_pending(). */
#include "config.h"
#include "ipc.h"
#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define PEER_ID_MAX 64
#define BATCH_SOON (256u * 1024u)  /* send before the turn ends beyond this */
#define RECV_PER_CALL 512          /* frames per dispatch, for fairness */
#define RETRY_MS 2
#define DEALER_SNDHWM 128          /* frames; one frame is one loop turn's records */

struct outq {
    char peer[PEER_ID_MAX + 1];
    struct buf batch;
    struct outq *next;
};

struct ipc {
    struct ipc *next_link; /* every open link, for ipc_close_all */
    char *bound_path;      /* ipc:// file we bound, removed on close */
    void *zs;
    int is_router;
    loop_t *loop;
    ipc_msg_cb cb;
    void *arg;
    ipc_unreachable_cb unreachable;
    void *unreachable_arg;
    struct outq *queues;
    loop_timer_t *retry;
    struct ipc_stats st;
};

static void *zctx;
static struct ipc *all_links;

void *ipc_context(void)
{
    if (!zctx) {
        zctx = zmq_ctx_new();
        if (zctx) zmq_ctx_set(zctx, ZMQ_IO_THREADS, 1);
    }
    return zctx;
}

static void dispatch_frame(ipc_t *ipc, const char *peer, const char *data, size_t len)
{
    size_t off = 0;
    while (off < len) {
        struct msg m;
        size_t used;
        const char *err;
        if (msg_decode(data + off, len - off, &m, &used, &err) < 0) {
            ipc->st.malformed++;
            log_warn("ipc: malformed record from '%s' dropped with the rest of its frame (%zu bytes): %s",
                     peer[0] ? peer : "upstream", len - off, err);
            return;
        }
        ipc->st.in++;
        ipc->cb(ipc, peer, &m, ipc->arg);
        off += used;
    }
}

/* Receive up to RECV_PER_CALL frames; 1 if we stopped before EAGAIN. */
static int ipc_readable(loop_t *loop, void *zs, void *arg)
{
    ipc_t *ipc = arg;
    (void)loop;
    for (int n = 0; n < RECV_PER_CALL; n++) {
        char peer[PEER_ID_MAX + 1] = "";
        zmq_msg_t part;
        if (ipc->is_router) {
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, zs, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&part);
                return 0;
            }
            size_t idlen = zmq_msg_size(&part);
            int ok = idlen > 0 && idlen <= PEER_ID_MAX && zmq_msg_more(&part);
            if (ok) {
                memcpy(peer, zmq_msg_data(&part), idlen);
                peer[idlen] = '\0';
                ok = strlen(peer) == idlen;
            }
            zmq_msg_close(&part);
            if (!ok) {
                ipc->st.malformed++;
                log_warn("ipc: frame with an unusable routing id dropped");
                /* drain the rest of this multipart message */
                int more = 1;
                while (more) {
                    zmq_msg_init(&part);
                    if (zmq_msg_recv(&part, zs, ZMQ_DONTWAIT) < 0) { zmq_msg_close(&part); return 0; }
                    more = zmq_msg_more(&part);
                    zmq_msg_close(&part);
                }
                continue;
            }
        }
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, zs, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part);
            return 0;
        }
        int extra = zmq_msg_more(&part);
        if (extra) {
            ipc->st.malformed++;
            log_warn("ipc: multipart payload from '%s' dropped", peer);
            while (extra) {
                zmq_msg_t rest;
                zmq_msg_init(&rest);
                if (zmq_msg_recv(&rest, zs, ZMQ_DONTWAIT) < 0) { zmq_msg_close(&rest); break; }
                extra = zmq_msg_more(&rest);
                zmq_msg_close(&rest);
            }
        } else {
            dispatch_frame(ipc, peer, zmq_msg_data(&part), zmq_msg_size(&part));
        }
        zmq_msg_close(&part);
    }
    return 1;
}

static void turn_end(loop_t *loop, void *arg)
{
    (void)loop;
    ipc_flush(arg);
}

static ipc_t *ipc_new(loop_t *loop, int type, ipc_msg_cb cb, void *arg)
{
    ipc_t *ipc = calloc(1, sizeof *ipc);
    if (!ipc) return NULL;
    ipc->zs = zmq_socket(ipc_context(), type); /* NULL: freed below, never listed */
    if (!ipc->zs) {
        free(ipc);
        return NULL;
    }
    ipc->is_router = type == ZMQ_ROUTER;
    ipc->next_link = all_links;
    all_links = ipc;
    ipc->loop = loop;
    ipc->cb = cb;
    ipc->arg = arg;
    int linger = 200, hwm = 100000;
    zmq_setsockopt(ipc->zs, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(ipc->zs, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(ipc->zs, ZMQ_RCVHWM, &hwm, sizeof hwm);
    return ipc;
}

static int ipc_attach(ipc_t *ipc)
{
    if (loop_add_zsock(ipc->loop, ipc->zs, ipc_readable, ipc) < 0) return -1;
    return loop_on_turn_end(ipc->loop, LOOP_FLUSH, turn_end, ipc);
}

ipc_t *ipc_bind_router(loop_t *loop, const char *endpoint, ipc_msg_cb cb, void *arg)
{
    ipc_t *ipc = ipc_new(loop, ZMQ_ROUTER, cb, arg);
    if (!ipc) return NULL;
    int on = 1;
    zmq_setsockopt(ipc->zs, ZMQ_ROUTER_MANDATORY, &on, sizeof on);
    zmq_setsockopt(ipc->zs, ZMQ_ROUTER_HANDOVER, &on, sizeof on);
    if (zmq_bind(ipc->zs, endpoint) < 0) {
        log_err("ipc: cannot bind %s: %s", endpoint, zmq_strerror(errno));
        goto fail;
    }
    /* libzmq 4.3 leaves the socket file behind; the instance lock makes
     * us its only owner, so we remove it when we close */
    if (strncmp(endpoint, "ipc://", 6) == 0) ipc->bound_path = strdup(endpoint + 6);
    if (ipc_attach(ipc) < 0) goto fail;
    return ipc;
fail:
    ipc_close(ipc);
    return NULL;
}

ipc_t *ipc_connect_dealer(loop_t *loop, const char *endpoint, const char *identity, ipc_msg_cb cb, void *arg)
{
    ipc_t *ipc = ipc_new(loop, ZMQ_DEALER, cb, arg);
    if (!ipc) return NULL;
    int on = 1, frames = DEALER_SNDHWM;
    zmq_setsockopt(ipc->zs, ZMQ_ROUTING_ID, identity, strlen(identity));
    zmq_setsockopt(ipc->zs, ZMQ_IMMEDIATE, &on, sizeof on);
    /* a small queue inside ZeroMQ: beyond it batches stay ours, where
     * ipc_pending() sees them and the owner can stop reading its clients */
    zmq_setsockopt(ipc->zs, ZMQ_SNDHWM, &frames, sizeof frames);
    if (zmq_connect(ipc->zs, endpoint) < 0) {
        log_err("ipc: cannot connect %s: %s", endpoint, zmq_strerror(errno));
        goto fail;
    }
    if (ipc_attach(ipc) < 0) goto fail;
    return ipc;
fail:
    ipc_close(ipc);
    return NULL;
}

void ipc_on_unreachable(ipc_t *ipc, ipc_unreachable_cb cb, void *arg)
{
    ipc->unreachable = cb;
    ipc->unreachable_arg = arg;
}

static struct outq *find_queue(ipc_t *ipc, const char *peer, int create)
{
    if (!peer) peer = "";
    for (struct outq *q = ipc->queues; q; q = q->next)
        if (strcmp(q->peer, peer) == 0) return q;
    if (!create || strlen(peer) > PEER_ID_MAX) return NULL;
    struct outq *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    strcpy(q->peer, peer);
    q->next = ipc->queues;
    ipc->queues = q;
    return q;
}

/* Hand each undeliverable record to the owner. The batch is taken out of
 * the queue first: the callback may queue new records (to the same peer). */
static void report_unreachable(ipc_t *ipc, struct outq *q)
{
    struct buf batch = q->batch;
    char peer[PEER_ID_MAX + 1];
    memset(&q->batch, 0, sizeof q->batch);
    strcpy(peer, q->peer);
    size_t off = 0;
    while (off < batch.len) {
        struct msg m;
        size_t used;
        const char *err;
        if (msg_decode(batch.data + off, batch.len - off, &m, &used, &err) < 0) break;
        ipc->st.dropped++;
        if (ipc->unreachable) ipc->unreachable(ipc, peer, &m, ipc->unreachable_arg);
        off += used;
    }
    buf_free(&batch);
}

static void retry_flush(loop_t *loop, void *arg)
{
    ipc_t *ipc = arg;
    (void)loop;
    ipc->retry = NULL;
    ipc_flush(ipc);
}

/* Send one queue's batch; 0 sent (or dropped), -1 kept for later. */
static int flush_queue(ipc_t *ipc, struct outq *q)
{
    if (q->batch.len == 0) return 0;
    if (ipc->is_router && zmq_send(ipc->zs, q->peer, strlen(q->peer), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        if (errno == EAGAIN) return -1;
        if (errno == EHOSTUNREACH) {
            log_debug("ipc: peer '%s' unreachable, %zu bytes undeliverable", q->peer, q->batch.len);
            report_unreachable(ipc, q);
            return 0;
        } else {
            log_warn("ipc: send to '%s' failed: %s", q->peer, zmq_strerror(errno));
            ipc->st.dropped++;
        }
        buf_clear(&q->batch);
        return 0;
    }
    if (zmq_send(ipc->zs, q->batch.data, q->batch.len, ZMQ_DONTWAIT) < 0) {
        /* After the routing id frame went out the payload cannot be EAGAIN
         * (ZeroMQ queues whole messages); on a DEALER EAGAIN means no peer
         * or high-water mark: keep the batch. */
        if (errno == EAGAIN && !ipc->is_router) return -1;
        log_warn("ipc: send to '%s' failed: %s", q->peer, zmq_strerror(errno));
        ipc->st.dropped++;
        buf_clear(&q->batch);
        return 0;
    }
    ipc->st.frames_out++;
    loop_zsock_sent(ipc->loop, ipc->zs);
    buf_clear(&q->batch);
    if (q->batch.cap > 4 * BATCH_SOON) buf_free(&q->batch);
    return 0;
}

void ipc_flush(ipc_t *ipc)
{
    int kept = 0;
    for (struct outq *q = ipc->queues; q; q = q->next)
        if (flush_queue(ipc, q) < 0) kept = 1;
    if (kept && !ipc->retry) ipc->retry = loop_timer_add(ipc->loop, RETRY_MS, retry_flush, ipc);
}

int ipc_send(ipc_t *ipc, const char *peer, const struct msg *m)
{
    struct outq *q = find_queue(ipc, peer, 1);
    if (!q) return -1;
    if (msg_encode(m, &q->batch) < 0) {
        log_err("ipc: refusing to send a %s record that breaks its schema", msg_type_name(m->type));
        return -1;
    }
    ipc->st.out++;
    if (q->batch.len >= BATCH_SOON) flush_queue(ipc, q);
    return 0;
}

size_t ipc_pending(ipc_t *ipc, const char *peer)
{
    struct outq *q = find_queue(ipc, peer, 0);
    return q ? q->batch.len : 0;
}

void ipc_forget(ipc_t *ipc, const char *peer)
{
    struct outq *q = find_queue(ipc, peer, 0);
    if (q) buf_free(&q->batch);
}

void ipc_get_stats(const ipc_t *ipc, struct ipc_stats *st) { *st = ipc->st; }

void ipc_close(ipc_t *ipc)
{
    if (!ipc) return;
    for (struct ipc **pp = &all_links; *pp; pp = &(*pp)->next_link) {
        if (*pp == ipc) {
            *pp = ipc->next_link;
            break;
        }
    }
    ipc_flush(ipc);
    loop_del_zsock(ipc->loop, ipc->zs);
    loop_off_turn_end(ipc->loop, turn_end, ipc);
    if (ipc->retry) loop_timer_cancel(ipc->loop, ipc->retry);
    zmq_close(ipc->zs);
    if (ipc->bound_path) unlink(ipc->bound_path);
    free(ipc->bound_path);
    while (ipc->queues) {
        struct outq *q = ipc->queues;
        ipc->queues = q->next;
        buf_free(&q->batch);
        free(q);
    }
    free(ipc);
}

void ipc_close_all(void)
{
    while (all_links) ipc_close(all_links);
    if (zctx) zmq_ctx_term(zctx);
    zctx = NULL;
}
