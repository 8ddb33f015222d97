/* listen.h - state shared by the files of xmpp-listen: the daemon
 * (listen.c: sockets, c2s links, timers, counters), the client
 * connections (listen_conn.c: reading, XML framing, output queues,
 * closing) and TLS (listen_tls.c: contexts per host, SNI, ALPN,
 * non-blocking handshake and I/O). */
#ifndef XMPPD_LISTEN_H
#define XMPPD_LISTEN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "daemon.h"
#include "ipc.h"
#include "loop.h"
#include "msg.h"
#include "peer.h"
#include "stanza.h"
#include "xmlstream.h"

typedef struct ssl_st SSL;
struct listen_tls;

#define LISTEN_READ_BUF (64u * 1024u)        /* the one buffer every socket is read into */
#define LISTEN_BACKPRESSURE_HIGH (8u << 20)  /* bytes queued to a c2s: stop reading its clients */
#define LISTEN_BACKPRESSURE_LOW (2u << 20)   /* ... and resume below this */
#define LISTEN_CLOSE_GRACE_MS 2000           /* flush bound for a closing connection */
#define LISTEN_ADDR_MAX 56                   /* "[" INET6_ADDRSTRLEN "]:65535" */

/* A growable array of connection ids: lists that must survive a
 * connection closing (a stale id simply no longer resolves). */
struct idvec {
    uint64_t *v;
    size_t n, cap;
};

/* An intrusive doubly-linked list, kept ordered by activity time so the
 * periodic sweep looks only at its head. */
struct dlink {
    struct dlink *prev, *next;
};

/* One DEALER link to an xmpp-c2s instance, with its liveness. */
struct c2s_link {
    struct listen *l;
    unsigned number;        /* c2s-N */
    ipc_t *ipc;
    peer_client_t *peer;
    int blocked;            /* too much queued toward it: its clients are not read */
    struct idvec blocked_ids; /* connections that stopped reading because of that */
    size_t nconns;
};

struct listener {
    struct listen *l;
    int fd;
    uint16_t port;
    int direct_tls;         /* XEP-0368 port: TLS from the first byte */
};

/* One client connection. Kept small (DESIGN §10): an idle authenticated
 * one costs about 2 KiB with its idle parser, plus about 14 KiB that
 * OpenSSL keeps per TLS session (measured). */
struct conn {
    uint64_t id;
    struct listen *l;
    struct conn *hnext;     /* id hash chain */
    struct dlink in_link;   /* l->preauth_in or l->authed_in, by last input */
    struct dlink out_link;  /* l->authed_out, by last output (keepalives) */
    struct c2s_link *link;
    SSL *ssl;
    xmlstream_t *xs;
    struct buf in;          /* received, not yet parsed (pre-auth pause) */
    struct buf out;         /* output queue; out_off bytes of it already written */
    size_t out_off;
    char *domain;           /* the stream's served domain, for our own headers */
    char *jid;              /* authenticated JID, full once bound: logs, trace rules */
    loop_timer_t *close_timer;
    uint64_t last_in_ms, last_out_ms;
    uint64_t refill_ms;     /* token bucket: last refill time */
    int64_t tokens;         /* token bucket: bytes that may be read now */
    int fd;
    uint32_t events;        /* epoll mask currently registered */
    uint16_t port;          /* local port accepted on */
    char addr[LISTEN_ADDR_MAX];
    unsigned direct_tls : 1;   /* accepted on a direct TLS port */
    unsigned handshaking : 1;  /* TLS handshake in progress */
    unsigned hs_want_write : 1;/* ... and it waits for writability */
    unsigned tls_up : 1;
    unsigned tls_starting : 1; /* <proceed/> queued: TLS begins once it is written */
    unsigned rd_want_write : 1;/* SSL_read needs the socket writable */
    unsigned wr_want_read : 1; /* SSL_write needs the socket readable */
    unsigned open_sent : 1;    /* c2s knows this connection */
    unsigned authed : 1;       /* MSG_F_AUTHED seen: parse freely */
    unsigned bound : 1;        /* CONN_BOUND seen: jid is the session's full JID */
    unsigned waiting : 1;      /* pre-auth: one element handed to c2s, awaiting its word */
    unsigned stream_seen : 1;  /* CONN_STREAM sent for the current stream */
    unsigned header_sent : 1;  /* a response stream header went out for it */
    unsigned closing : 1;      /* no more input is processed; flushing then closing */
    unsigned lingering : 1;    /* output done and write side shut: waiting for EOF */
    unsigned closed_sent : 1;  /* CONN_CLOSED sent (or must not be) */
    unsigned rate_blocked : 1; /* token bucket empty: not reading */
    unsigned link_blocked : 1; /* c2s backpressure: not reading */
    unsigned flush_queued : 1; /* in l->flush_ids */
    unsigned read_queued : 1;  /* in l->ready_ids */
    unsigned dead : 1;         /* socket closed; freed at the end of the turn */
};

struct listen_stats {
    uint64_t conns_total, tls_ok, tls_failed, bytes_in, bytes_out, elements_in;
    uint64_t slow_readers, rate_pauses, backpressure_pauses, accept_pauses;
    uint64_t no_c2s_refused, timeouts;
    uint64_t stream_errors[STE_END];
};

struct listen {
    struct daemon *d;
    struct peer_self self;
    uint64_t id_prefix;     /* (N << 56) | ((epoch & 0xffffff) << 32) */
    uint32_t id_counter;
    struct listener listeners[2 * CONF_MAX_ADDRS];
    size_t nlisteners;
    int accept_paused;
    loop_timer_t *accept_timer;
    struct c2s_link *links;
    unsigned nlinks;
    unsigned rr;            /* round robin over live links */
    struct conn **table;    /* id hash */
    size_t table_size, nconns;
    struct dlink preauth_in, authed_in, authed_out;
    struct idvec flush_ids, ready_ids, rate_ids;
    struct conn *graveyard; /* closed connections, freed at the end of the turn (hnext) */
    loop_timer_t *sweep_timer, *rate_timer;
    char *rbuf;
    struct listen_tls *tls;
    struct xmlstream_limits limits;
    struct listen_stats st;
};

/* ---- listen.c ---- */
struct conn *listen_find(struct listen *l, uint64_t id);
/* Enter/leave the id table (and the link's count); -1 if out of memory. */
int listen_add(struct listen *l, struct conn *c);
void listen_remove(struct listen *l, struct conn *c);
/* Free c at the end of this turn (it may still be on the call stack). */
void listen_bury(struct listen *l, struct conn *c);
uint64_t listen_next_id(struct listen *l);
/* Send a record about c to its c2s (id filled in); -1 if it breaks the schema. */
int listen_send(struct conn *c, struct msg *m);
/* Write c's output queue at the end of this turn. */
void listen_queue_flush(struct conn *c);
/* Read c at the end of this turn without waiting for epoll. */
void listen_queue_read(struct conn *c);
/* c's token bucket is empty: resume it when it refills. */
void listen_rate_wait(struct conn *c);
/* c stopped reading because its c2s is backed up: resume it with the link. */
void listen_link_wait(struct conn *c);
void idvec_push(struct idvec *v, uint64_t id);
void dlist_init(struct dlink *head);
void dlist_remove(struct dlink *e);
void dlist_append(struct dlink *head, struct dlink *e);
int dlist_linked(const struct dlink *e);
/* Count a stream error by condition name. */
void listen_count_stream_error(struct listen *l, const char *cond);

/* ---- listen_conn.c ---- */
struct conn *conn_new(struct listen *l, int fd, const char *addr, uint16_t port, int direct_tls,
                      struct c2s_link *link);
/* The socket is readable/writable (loop callback). */
void conn_io(loop_t *loop, int fd, uint32_t events, void *arg);
/* A command from c2s for this connection. */
void conn_command(struct conn *c, const struct msg *m);
/* Close with a stream error (header first if none was sent), flushing
 * what is queued; reason and detail go to c2s in CONN_CLOSED. */
void conn_stream_error(struct conn *c, const char *cond, const char *text, unsigned reason);
/* Close at once without writing anything more (socket gone, TLS failed). */
void conn_abort(struct conn *c, unsigned reason, const char *detail);
/* Write the output queue now (turn end, or best effort at shutdown). */
void conn_flush(struct conn *c);
/* Reading may resume (rate bucket refilled, backpressure gone). */
void conn_resume_read(struct conn *c);
/* Read now: TLS may hold decrypted bytes epoll cannot announce. */
void conn_read_ready(struct conn *c);
/* Refill the token bucket; 1 if it has enough to read again. */
int conn_refill(struct conn *c, uint64_t now);
/* Periodic checks: handshake/idle timeouts and whitespace keepalives. */
void conn_sweep(struct listen *l, uint64_t now);
/* Free a closed connection's memory (end of turn). */
void conn_free(struct conn *c);
/* Queue a whitespace keepalive (RFC 6120 §4.6.1). */
void conn_keepalive(struct conn *c);

/* ---- listen_tls.c ---- */
/* Build contexts for every configured host; NULL (logged) on failure. */
struct listen_tls *tls_load(struct listen *l, const struct conf *conf);
void tls_release(struct listen_tls *t);
/* Attach a server-side SSL to c (using l->tls); 0 or -1. */
int tls_conn_start(struct conn *c);
/* Drive the handshake: 1 done, 0 in progress (want flags set), -1 failed. */
int tls_handshake(struct conn *c);
/* I/O results beyond byte counts. */
#define IO_AGAIN (-2)
#define IO_ERR (-1)
#define IO_EOF 0
ssize_t tls_read(struct conn *c, char *buf, size_t len);
ssize_t tls_write(struct conn *c, const char *buf, size_t len);
/* 1 if decrypted bytes wait inside OpenSSL. */
int tls_has_pending(struct conn *c);
/* The SNI name the client asked for, sanitized to a DNS name ("" if none). */
void tls_sni(struct conn *c, char *out, size_t size);
/* Send close_notify once, without waiting for the peer's. */
void tls_shutdown(struct conn *c);
void tls_conn_free(struct conn *c);
/* Negotiated protocol and cipher, for logs. */
const char *tls_describe(struct conn *c, char *out, size_t size);

#endif
