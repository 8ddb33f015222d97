/* ipc.h - ZeroMQ links between daemons, carrying msg.h records.
 * Outgoing records are batched per destination and sent once per loop
 * turn; incoming frames are split into records, each validated by
 * msg_decode (a malformed frame is dropped whole and logged). A ROUTER
 * link sets ZMQ_ROUTER_MANDATORY, so an unreachable peer is reported,
 * never a silent drop; EAGAIN (high-water mark) keeps the batch queued. */
#ifndef XMPPD_IPC_H
#define XMPPD_IPC_H

#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "msg.h"

typedef struct ipc ipc_t;

/* One validated record; peer is the sender's routing id on ROUTER links
 * ("" on a DEALER link, whose only peer is the one it connected to). */
typedef void (*ipc_msg_cb)(ipc_t *ipc, const char *peer, const struct msg *m, void *arg);
/* A batch for peer could not be delivered (EHOSTUNREACH): the records. */
typedef void (*ipc_unreachable_cb)(ipc_t *ipc, const char *peer, const struct msg *m, void *arg);

/* The process-wide ZeroMQ context. */
void *ipc_context(void);
/* A ROUTER socket bound to endpoint (creates ipc:// directories' socket). */
ipc_t *ipc_bind_router(loop_t *loop, const char *endpoint, ipc_msg_cb cb, void *arg);
/* A DEALER socket with routing id identity connected to endpoint. */
ipc_t *ipc_connect_dealer(loop_t *loop, const char *endpoint, const char *identity, ipc_msg_cb cb, void *arg);
/* Report undeliverable records (ROUTER links). */
void ipc_on_unreachable(ipc_t *ipc, ipc_unreachable_cb cb, void *arg);
/* Queue a record to peer (NULL/"" on a DEALER link); -1 if it breaks its schema. */
int ipc_send(ipc_t *ipc, const char *peer, const struct msg *m);
/* Bytes queued and not yet accepted by ZeroMQ for peer (backpressure). */
size_t ipc_pending(ipc_t *ipc, const char *peer);
/* Send every queued batch now (also done at each loop turn's end). */
void ipc_flush(ipc_t *ipc);
/* Drop what is queued for peer (it is gone). */
void ipc_forget(ipc_t *ipc, const char *peer);
/* Counters: records in/out, malformed frames dropped, records dropped. */
struct ipc_stats { uint64_t in, out, malformed, dropped, frames_out; };
/* Copy the link's counters. */
void ipc_get_stats(const ipc_t *ipc, struct ipc_stats *st);
/* Close the socket (lingering at most 200 ms) and free. */
void ipc_close(ipc_t *ipc);
/* Close every link and the ZeroMQ context (at exit). */
void ipc_close_all(void);

#endif
