/* msg.h - every message that crosses a ZeroMQ socket between xmppd
 * daemons: the versioned enum of types, the record layout, and the codec
 * whose decoder checks every field and rejects a malformed record whole.
 * The protocol is documented in xmppd-protocol(7).
 *
 * A ZeroMQ message (a "frame") carries one or more records back to back,
 * so that one loop turn's traffic to one peer costs one zmq_send.
 *
 * Record layout, all integers little-endian:
 *   u32 len      whole record, header included
 *   u16 type     enum msg_type
 *   u16 flags    MSG_F_*
 *   u64 trace    trace id (0: untraced)
 *   u64 id       connection id, request id or epoch (per type, below)
 *   u32 num      type-specific integer (below)
 *   u8  kind     enum stanza_kind, or enum peer_role for peer messages
 *   u8  stype    enum stanza_type
 *   u8  nfields  number of fields that follow; must equal the type's schema
 *   u8  zero     reserved, must be 0
 *   nfields x { u32 n, n bytes }
 */
#ifndef XMPPD_MSG_H
#define XMPPD_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Versions of this protocol a peer speaks; exchanged in MSG_HELLO.
 * Bump MAX when a type is added or a schema changes. */
#define MSG_PROTO_MIN 1
#define MSG_PROTO_MAX 4 /* 2: MSG_CONN_BOUND; 3: MSG_CONN_BOUND with MSG_F_AUTHED, MSG_ACCOUNT_*; 4: MSG_MODULE_* */

#define MSG_HEADER_LEN 32
#define MSG_MAX_FIELDS 6
#define MSG_MAX_RECORD (4u << 20) /* bigger than any stanza we accept */

enum msg_type {
    /* peer liveness (any peer <-> router; listen <-> c2s) */
    MSG_HELLO = 1,      /* id=epoch num=(min<<16|max) kind=role f0=instance f1=software version */
    MSG_HELLO_ACK = 2,  /* as MSG_HELLO, the answer */
    MSG_GOODBYE = 3,    /* id=epoch kind=role f0=instance: orderly exit */
    MSG_HEARTBEAT = 4,  /* id=epoch kind=role f0=instance: sent by the event loop itself */
    MSG_PEER_UP = 5,    /* router -> all: id=epoch kind=role f0=instance */
    MSG_PEER_DOWN = 6,  /* router -> all: id=epoch kind=role f0=instance */
    MSG_ROUTE_BIND = 7, /* sm -> router: num=shard f0=domain */

    /* listen -> c2s: connection events (id = connection id) */
    MSG_CONN_OPEN = 16,    /* num=local port flags=MSG_F_TLS if direct TLS f0=peer address f1=SNI name */
    MSG_CONN_STREAM = 17,  /* stream header: flags=MSG_F_TLS if TLS is up f0=to f1=from f2=version f3=xml:lang */
    MSG_CONN_ELEMENT = 18, /* kind stype f0=to (raw) f1=id f2=ns of first child element f3=canonical XML */
    MSG_CONN_CLOSED = 19,  /* num=enum close_reason f0=detail */

    /* c2s -> listen: commands (id = connection id) */
    MSG_CONN_SEND = 24,     /* f0=bytes to write; flags MSG_F_NEXT: release the next element */
    MSG_CONN_STARTTLS = 25, /* write <proceed/>, drop buffered input, TLS handshake, fresh parser */
    MSG_CONN_RESET = 26,    /* write f0, drop buffered input, fresh parser; MSG_F_AUTHED: authenticated
                               (stop pausing after each element) num=route hint f1=authenticated JID */
    MSG_CONN_CLOSE = 27,    /* f0=stream error condition ("" = plain close) f1=text */
    MSG_CONN_NEXT = 28,     /* pre-auth: done with the element, parse the next one */
    MSG_CONN_BOUND = 29,    /* f0=full JID of the session just bound (step 1 of the trace
                               matches it); sent only to a listen speaking protocol >= 2;
                               MSG_F_AUTHED (protocol >= 3): authenticated too, by XEP-0078,
                               with no stream restart: stop pausing, keep the parser */

    /* routed through the router: every one has the same five fields
     *   f0=from f1=to f2=dest instance ("" = route by address) f3=origin instance f4=body */
    MSG_STANZA = 40,         /* id=sender's connection kind stype; MSG_F_INBOUND after the sender's sm */
    MSG_DELIVER = 41,        /* sm -> c2s: id=recipient connection, f1=recipient full JID */
    MSG_BOUNCE = 42,         /* router -> origin: num=enum stanza_error, the unroutable stanza */
    MSG_AUTH_LOOKUP = 43,    /* c2s -> sm: id=request f0=bare JID */
    MSG_AUTH_RESULT = 44,    /* sm -> c2s: id=request f1=bare JID f4=authPassword lines */
    MSG_SESSION_BIND = 45,   /* c2s -> sm: id=conn f0=full JID f4=last presence; MSG_F_RESYNC when re-announcing */
    MSG_SESSION_BOUND = 46,  /* sm -> c2s: id=conn num=0 or enum stanza_error f1=full JID */
    MSG_SESSION_END = 47,    /* c2s -> sm: id=conn f0=full JID num=enum close_reason */
    MSG_SESSION_KICK = 48,   /* sm -> c2s: id=conn f1=full JID num=enum stream_error */
    MSG_RESYNC_DONE = 49,    /* c2s -> sm (dest): every session re-announced */

    /* control plane: xmppctl <-> a daemon's control socket */
    MSG_CTL_REQUEST = 64,    /* f0=argv joined by tabs f1=standard input (secrets) */
    MSG_CTL_REPLY = 65,      /* num=exit status f0=column names (tabs) f1=rows (tabs, newlines) f2=message */

    /* routed like the records of 40..49, five fields; protocol >= 3 (XEP-0077, c2s_register.c) */
    MSG_ACCOUNT_CHANGE = 66, /* c2s -> sm: id=conn num=enum account_op f0=bare JID
                                f4=authPassword lines (create, passwd; empty for remove) */
    MSG_ACCOUNT_RESULT = 67, /* sm -> c2s: id=conn num=0 or enum stanza_error f1=bare JID, after the commit */

    /* sm -> sm through the router (dest = "sm-K"), five fields; protocol >= 4:
     * a module asks the same module on every shard (xm_api ask_shards) */
    MSG_MODULE_ASK = 68,     /* id=request f0=module name f1=domain f2=dest f3=origin f4=query */
    MSG_MODULE_ANSWER = 69,  /* id=request num=0 answered, 1 no such module here f0=module name
                                f1=domain f2=dest (the asking shard) f3=origin f4=answer */

    MSG_TYPE_END
};

enum msg_flags {
    MSG_F_TRACED = 1 << 0,
    MSG_F_INBOUND = 1 << 1, /* routed stanza: the sender's shard is done */
    MSG_F_TLS = 1 << 2,
    MSG_F_NEXT = 1 << 3,
    MSG_F_AUTHED = 1 << 4,
    MSG_F_RESYNC = 1 << 5,
    /* a delivery whose connection vanished, handed back to the sm: it was
     * already accepted for the user, so it must not bounce (STANZA) */
    MSG_F_REDELIVERED = 1 << 6,
    MSG_F_ALL = (1 << 7) - 1,
};

enum peer_role {
    ROLE_NONE = 0,
    ROLE_LISTEN = 1,
    ROLE_C2S = 2,
    ROLE_ROUTER = 3,
    ROLE_SM = 4,
    ROLE_CTL = 5,
    ROLE_END
};

enum stanza_kind {
    KIND_NONE = 0, /* peer messages */
    KIND_MESSAGE = 1,
    KIND_PRESENCE = 2,
    KIND_IQ = 3,
    KIND_OTHER = 4, /* stream-level elements: auth, starttls, response... */
    KIND_END
};

enum stanza_type {
    STYPE_NONE = 0, /* no type attribute */
    STYPE_NORMAL, STYPE_CHAT, STYPE_GROUPCHAT, STYPE_HEADLINE, STYPE_ERROR,
    STYPE_GET, STYPE_SET, STYPE_RESULT,
    STYPE_UNAVAILABLE, STYPE_SUBSCRIBE, STYPE_SUBSCRIBED, STYPE_UNSUBSCRIBE,
    STYPE_UNSUBSCRIBED, STYPE_PROBE,
    STYPE_INVALID, /* present but not a value RFC 6120/6121 define for the kind */
    STYPE_END
};

enum close_reason {
    CLOSE_PEER = 0,      /* the client closed the stream or the socket */
    CLOSE_ERROR = 1,     /* a stream error was sent; detail names it */
    CLOSE_TIMEOUT = 2,
    CLOSE_SLOW_READER = 3,
    CLOSE_SHUTDOWN = 4,  /* the daemon is stopping */
    CLOSE_KICKED = 5,    /* replaced or kicked by the administrator */
    CLOSE_END
};

/* What MSG_ACCOUNT_CHANGE asks of the account's shard (XEP-0077). */
enum account_op {
    ACCOUNT_CREATE = 1,  /* a new account with the verifiers of f4 (conflict if it exists) */
    ACCOUNT_PASSWD = 2,  /* new verifiers for an existing account */
    ACCOUNT_REMOVE = 3,  /* remove the account, its data and its sessions */
    ACCOUNT_OP_END
};

/* A field: a view into the received buffer, not NUL-terminated. */
struct msg_str {
    const char *p;
    uint32_t n;
};

/* One decoded record (views into the frame) or one to encode. */
struct msg {
    uint16_t type;
    uint16_t flags;
    uint64_t trace;
    uint64_t id;
    uint32_t num;
    uint8_t kind;
    uint8_t stype;
    uint8_t nfields;
    struct msg_str f[MSG_MAX_FIELDS];
};

/* Name of a message type ("STANZA"), "?" if unknown. */
const char *msg_type_name(unsigned type);
/* Number of fields a type carries, or -1 for an unknown type. */
int msg_type_fields(unsigned type);
/* Initialise m as an empty record of a type with its schema's field count. */
void msg_init(struct msg *m, unsigned type);
/* Set field i from a NUL-terminated string (NULL = empty). */
void msg_set(struct msg *m, unsigned i, const char *s);
/* Set field i from bytes. */
void msg_setn(struct msg *m, unsigned i, const char *p, size_t n);
/* Append one encoded record to out; -1 if the record violates its schema. */
int msg_encode(const struct msg *m, struct buf *out);
/* Decode the record at data[0..len): 0 and *used = its length, or -1 with
 * a reason in err (the caller drops the rest of the frame). Checks the
 * type, flags, kind and stype ranges, the field count and every field's
 * length and content class (text fields: valid UTF-8, no NUL). */
int msg_decode(const char *data, size_t len, struct msg *m, size_t *used, const char **err);
/* Copy field i into a NUL-terminated string of at most size bytes; returns
 * dst, or NULL if it does not fit. */
char *msg_str(const struct msg *m, unsigned i, char *dst, size_t size);
/* 1 if field i equals the string s. */
int msg_eq(const struct msg *m, unsigned i, const char *s);
/* Names for kinds, types, roles, close reasons ("message", "chat"...). */
const char *stanza_kind_name(unsigned kind);
const char *stanza_type_name(unsigned stype);
const char *peer_role_name(unsigned role);
const char *close_reason_name(unsigned reason);
/* Type attribute value -> enum stanza_type for a kind (NULL = absent). */
unsigned stanza_type_parse(unsigned kind, const char *value);

#endif
