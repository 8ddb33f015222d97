/* peer.h - liveness between daemons (DESIGN §3): hello with a random
 * epoch and a protocol version range, heartbeats sent by the event loop
 * itself, goodbye on orderly exit, and a peer declared dead after a
 * silence. ZeroMQ cannot tell us any of this (a ROUTER socket never says
 * a peer left, and libzmq answers its own heartbeats from its I/O thread).
 *
 * The connecting side (a DEALER link) is a peer_client; the bound side (a
 * ROUTER link) is a peer_server that tracks every peer by routing id,
 * which must equal the instance name the peer announces. */
#ifndef XMPPD_PEER_H
#define XMPPD_PEER_H

#include <stdint.h>

#include "ipc.h"
#include "loop.h"
#include "msg.h"

#define PEER_NAME_MAX 64

struct peer_self {
    const char *name; /* instance name, e.g. "c2s-1" */
    int role;         /* enum peer_role */
    uint64_t epoch;   /* random per process start */
};

struct peer_info {
    char name[PEER_NAME_MAX];
    int role;
    uint64_t epoch;
    uint64_t last_seen_ms;
    int up;
    unsigned proto_max;  /* the highest protocol version it speaks (its hello) */
};

typedef struct peer_client peer_client_t;
typedef struct peer_server peer_server_t;

struct peer_client_cb {
    /* The server answered our hello; restarted = its epoch changed. */
    void (*up)(void *arg, const struct peer_info *server, int restarted);
    /* The server went silent or said goodbye. */
    void (*down)(void *arg, const struct peer_info *server);
};

struct peer_server_cb {
    /* A peer said hello; restarted = it came back with a new epoch. */
    void (*up)(void *arg, const struct peer_info *peer, int restarted);
    /* A peer said goodbye or went silent (info holds its last epoch). */
    void (*down)(void *arg, const struct peer_info *peer);
};

/* Start liveness on a DEALER link: sends HELLO now, heartbeats every hb_ms. */
peer_client_t *peer_client_new(loop_t *loop, ipc_t *ipc, const struct peer_self *self,
                               unsigned hb_ms, unsigned timeout_ms,
                               const struct peer_client_cb *cb, void *arg);
/* Feed a received record; 1 if it was a liveness record (consumed), else 0. */
int peer_client_handle(peer_client_t *pc, const struct msg *m);
/* 1 while the server is known alive. */
int peer_client_up(const peer_client_t *pc);
/* The server's info (name, epoch) as last seen. */
const struct peer_info *peer_client_server(const peer_client_t *pc);
/* Send GOODBYE (orderly exit). */
void peer_client_goodbye(peer_client_t *pc);
/* Stop timers and free. */
void peer_client_free(peer_client_t *pc);

/* Start liveness on a ROUTER link. */
peer_server_t *peer_server_new(loop_t *loop, ipc_t *ipc, const struct peer_self *self,
                               unsigned hb_ms, unsigned timeout_ms,
                               const struct peer_server_cb *cb, void *arg);
/* Feed a received record from routing id peer; 1 if consumed, else 0.
 * A non-liveness record from a peer that never said hello is refused (1)
 * and the peer is asked to say hello. */
int peer_server_handle(peer_server_t *ps, const char *peer, const struct msg *m);
/* Info of a live peer by name, or NULL. */
const struct peer_info *peer_server_find(const peer_server_t *ps, const char *name);
/* Call fn for every live peer. */
void peer_server_each(const peer_server_t *ps, void (*fn)(const struct peer_info *p, void *arg), void *arg);
/* Declare a peer gone now (its pipe vanished); runs the down callback. */
void peer_server_drop(peer_server_t *ps, const char *name);
/* Send m to every live peer (optionally only of one role, 0 = all). */
void peer_server_broadcast(peer_server_t *ps, int role, const struct msg *m);
/* Send GOODBYE to every live peer. */
void peer_server_goodbye(peer_server_t *ps);
/* Stop timers and free. */
void peer_server_free(peer_server_t *ps);

#endif
