/* c2s.h - xmpp-c2s, the client stream state machine (DESIGN §1): the
 * daemon state, the per-connection record, and the functions the three
 * source files share. c2s.c owns the links (listens, router), liveness,
 * resync, stats and control; c2s_stream.c the per-connection state
 * machine; c2s_sasl.c authentication through cyrus-sasl; c2s_legacy.c
 * XEP-0078 non-SASL authentication for pre-1.0 streams; c2s_register.c
 * XEP-0077 in-band registration. */
#ifndef XMPPD_C2S_H
#define XMPPD_C2S_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "buf.h"
#include "conf.h"
#include "daemon.h"
#include "ipc.h"
#include "module.h"
#include "msg.h"
#include "peer.h"

/* Stream states of DESIGN §1 (wait_for_session is folded into
 * session_established: the RFC 3921 session IQ is optional and answered
 * in any state after authentication). */
enum c2s_state {
    C2S_WAIT_STREAM = 0,   /* a stream header is due (start, after STARTTLS or SASL) */
    C2S_WAIT_FEATURE,      /* pre-auth stream open: starttls or auth expected */
    C2S_WAIT_SASL,         /* an exchange is under way (lookup or challenges) */
    C2S_WAIT_BIND,         /* authenticated stream open: bind expected */
    C2S_ESTABLISHED,       /* resource bound: stanzas are routed */
    C2S_WAIT_AUTH,         /* pre-1.0 stream (XEP-0078, c2s_legacy.c): jabber:iq:auth expected */
    C2S_STATE_COUNT
};

/* Per-connection flag bits. */
enum c2s_conn_flags {
    CF_TLS = 1 << 0,        /* TLS is up on the socket */
    CF_AUTHED = 1 << 1,     /* SASL succeeded */
    CF_BIND_SENT = 1 << 2,  /* SESSION_BIND went to sm: an END is owed on close */
    CF_BIND_WAIT = 1 << 3,  /* waiting for SESSION_BOUND */
    CF_STREAM_SEEN = 1 << 4,/* a stream header was answered once (the domain is fixed) */
};

#define C2S_MAX_LISTENS 64
#define C2S_MAX_SHARDS 256
#define C2S_AUTH_MAX_FAILURES 3   /* RFC 6120 §6.4.5: at least 2 retries */
#define C2S_LOOKUP_TIMEOUT_MS 5000

struct c2s_auth; /* c2s_sasl.c: alive only while a SASL exchange runs */
struct c2s_legacy; /* c2s_legacy.c: alive only while a XEP-0078 lookup runs */
struct c2s_reg;    /* c2s_register.c: only on connections that used XEP-0077 */

/* One client connection. Kept small: 10,000 idle sessions must fit in a
 * few hundred bytes each here (DESIGN targets 32 KiB summed over every
 * daemon); everything SASL needs lives in the separate c2s_auth. */
struct c2s_conn {
    struct c2s_conn *next_cid;   /* hash chain by our connection id */
    struct c2s_conn *next_lid;   /* hash chain by (listen, listen's id) */
    struct c2s_conn *prev, *next;/* list of every connection */
    uint64_t cid;        /* our id: used in every routed message */
    uint64_t lid;        /* the listen's id for the socket */
    uint64_t opened_ms;  /* monotonic: the handshake deadline counts from here */
    time_t opened_at;    /* wall clock, for `xmppctl sessions` */
    uint8_t listen;      /* index into c2s.listens */
    uint8_t state;       /* enum c2s_state */
    uint8_t flags;       /* enum c2s_conn_flags */
    uint8_t auth_failures;
    char *addr;          /* client address as listen reported it */
    char *domain;        /* the stream's (normalized) domain */
    char *jid;           /* bare JID after SASL, full JID after bind */
    char *presence;      /* last broadcast presence (stamped), re-announced on resync */
    char *bind_id;       /* id of the bind IQ waiting for SESSION_BOUND */
    struct c2s_auth *auth;
    struct c2s_legacy *legacy;
    struct c2s_reg *reg;
};

struct c2s_listen {
    char name[PEER_NAME_MAX];
    int used;
    int unreachable; /* to be dropped on the next turn */
};

/* Counters for `xmppctl stats`. */
struct c2s_stats {
    uint64_t auth_ok[3], auth_failed[3]; /* by mechanism: c2s_mech index */
    uint64_t legacy_ok, legacy_failed;   /* XEP-0078 */
    uint64_t routed[KIND_END];           /* stanzas sent to the router, by kind */
    uint64_t deliveries, redelivered, bounces, kicks, timeouts;
    uint64_t stream_errors, malformed_to;
};

/* The daemon. One per process (file-static in c2s.c, reached with c2s_get()). */
struct c2s {
    struct daemon *d;
    ipc_t *lipc;                  /* ROUTER: the listens connect here */
    ipc_t *ripc;                  /* DEALER: to the router */
    peer_server_t *lpeers;
    peer_client_t *rpeer;
    struct c2s_listen listens[C2S_MAX_LISTENS];
    struct c2s_conn **by_cid;     /* hash buckets */
    struct c2s_conn **by_lid;
    size_t nbuckets;              /* power of two, both tables */
    size_t nconns;
    size_t nsessions;             /* bound connections */
    struct c2s_conn *all;         /* list head */
    uint64_t next_cid;
    uint64_t sm_epoch[C2S_MAX_SHARDS]; /* last epoch seen per sm shard, 0 = never */
    loop_timer_t *sweep;
    loop_timer_t *drop_timer;     /* drops unreachable listens next turn */
    struct buf scratch;           /* reusable: stamped bodies, replies */
    struct buf scratch2;
    struct c2s_stats st;
    struct modules mods;          /* declarations only: stream features, caps (module.h) */
};

struct c2s *c2s_get(void);

/* c2s.c: sending. */
void c2s_to_listen(struct c2s_conn *c, struct msg *m);
void c2s_to_router(struct msg *m);
/* Bytes to the client; next: release the next pre-auth element too. */
void c2s_send(struct c2s_conn *c, const char *xml, size_t len, int next);
void c2s_sends(struct c2s_conn *c, const char *xml, int next);
/* Connection table. */
struct c2s_conn *c2s_conn_new(uint8_t listen, uint64_t lid);
struct c2s_conn *c2s_find_cid(uint64_t cid);
struct c2s_conn *c2s_find_lid(uint8_t listen, uint64_t lid);
/* Forget and free (no messages sent: see c2s_close / c2s_drop). */
void c2s_conn_free(struct c2s_conn *c);

/* c2s_stream.c: the state machine. */
/* An IQ result from the server's domain to the client (to: its 'to', or
 * NULL for none), with payload XML or empty; next as in c2s_send. */
void c2s_iq_result(struct c2s_conn *c, const char *id, size_t idlen, const char *to, const char *payload, int next);
void c2s_conn_open(uint8_t listen, const struct msg *m);
void c2s_conn_stream(struct c2s_conn *c, const struct msg *m);
void c2s_conn_element(struct c2s_conn *c, const struct msg *m);
void c2s_conn_closed(struct c2s_conn *c, const struct msg *m);
void c2s_routed(const struct msg *m);
/* Close with a stream error condition ("" = plain close), end its session. */
void c2s_close(struct c2s_conn *c, const char *cond, const char *text, unsigned reason);
/* The listen is gone: end the session, free the state, send nothing to it. */
void c2s_drop(struct c2s_conn *c, unsigned reason);
/* Handshake and lookup deadlines (called by the sweep timer). */
void c2s_conn_sweep(struct c2s_conn *c, uint64_t now);
/* SESSION_BIND with MSG_F_RESYNC for an established session. */
void c2s_reannounce(struct c2s_conn *c);
/* SASL outcome, called by c2s_sasl.c (the element is answered there). */
void c2s_auth_succeeded(struct c2s_conn *c, const char *success_xml, const char *user_at_domain);
/* Ask the shard to bind c->jid (a full JID); c->bind_id names the IQ to answer. */
void c2s_session_bind(struct c2s_conn *c);
const char *c2s_state_name(unsigned state);

/* c2s_sasl.c. */
enum c2s_mech { MECH_SCRAM_SHA256 = 0, MECH_SCRAM_SHA1 = 1, MECH_PLAIN = 2, MECH_COUNT = 3 };
const char *c2s_mech_name(unsigned mech);
/* sasl_server_init, our auxprop plugin, and a check that exactly the
 * mechanisms we want are on offer; 0 or -1. */
int c2s_sasl_init(struct c2s *s);
void c2s_sasl_done(void);
/* Append <mechanisms/> for this connection. */
void c2s_sasl_features(struct c2s_conn *c, struct buf *out);
/* <auth/>, <response/>, <abort/> (element parsed by the caller). */
void c2s_sasl_auth(struct c2s_conn *c, const char *mech, const char *text);
void c2s_sasl_response(struct c2s_conn *c, const char *text);
void c2s_sasl_abort(struct c2s_conn *c);
/* MSG_AUTH_RESULT for the connection waiting on it. */
void c2s_sasl_lookup_result(struct c2s_conn *c, const struct msg *m);
/* The lookup did not come back in time. */
void c2s_sasl_lookup_timeout(struct c2s_conn *c);
/* 1 while a lookup is outstanding, with its deadline. */
int c2s_sasl_waiting(const struct c2s_conn *c, uint64_t *deadline);
/* Free the exchange (sasl_conn_t, cached verifiers). */
void c2s_auth_free(struct c2s_conn *c);
/* Take a token of the PBKDF2 budget (plain_logins_per_sec): 1, or 0 if spent. */
int c2s_plain_rate_ok(void);

/* c2s_legacy.c: XEP-0078 on pre-1.0 streams (module legacy_auth). */
/* 1 if a pre-1.0 stream to domain may authenticate here (the module is on
 * for the domain, the connection is direct TLS); else 0, with a log line. */
int c2s_legacy_allowed(const struct c2s_conn *c, const char *domain);
/* An element in C2S_WAIT_AUTH. */
void c2s_legacy_element(struct c2s_conn *c, const struct msg *m);
/* MSG_AUTH_RESULT for a connection with c->legacy set; its timeout. */
void c2s_legacy_lookup_result(struct c2s_conn *c, const struct msg *m);
void c2s_legacy_lookup_timeout(struct c2s_conn *c);
/* 1 while a lookup is outstanding, with its deadline. */
int c2s_legacy_waiting(const struct c2s_conn *c, uint64_t *deadline);
/* SESSION_BOUND for a bind made by c2s_legacy.c (state C2S_WAIT_AUTH). */
void c2s_legacy_bound(struct c2s_conn *c, const struct msg *m);
void c2s_legacy_free(struct c2s_conn *c);

/* c2s_register.c: XEP-0077 for the hosts whose modules include "register". */
/* A jabber:iq:register IQ to the server, before SASL (c->state
 * C2S_WAIT_FEATURE) or in a session: 1 if taken (answered, or waiting for
 * the shard), 0 if not ours (the caller goes on as without this file). */
int c2s_register_element(struct c2s_conn *c, const struct msg *m);
/* MSG_ACCOUNT_RESULT for the connection. */
void c2s_register_result(struct c2s_conn *c, const struct msg *m);
/* A SESSION_KICK arrived: 1 if the connection's own removal is being
 * answered (it closes after the IQ result), 0 to kick as usual. */
int c2s_register_hold_kick(struct c2s_conn *c);
void c2s_register_free(struct c2s_conn *c);
void c2s_register_stats(struct ctl_req *r);

/* Write s into a log-safe form (no spaces, controls or quotes). */
const char *c2s_logsafe(const char *s, char *out, size_t size);

#endif
