/* sm_subscription.h - the presence subscription state machine of RFC 6121
 * Appendix A as a pure function: (state, pre-approval, direction, stanza
 * type) -> (new state, pre-approval, actions). No I/O, no allocation: the
 * roster code (sm_roster.c) applies the outcome, the unit test
 * (tests/unit/check_subscription.c) checks every row of the RFC's tables.
 *
 * States are seen from the user's side (RFC 6121 §A.1): "to" means the
 * user receives the contact's presence, "from" that the contact receives
 * the user's; "out" a request the user sent and the contact has not
 * answered (ask='subscribe'), "in" one the contact sent and the user has
 * not answered. */
#ifndef XMPPD_SM_SUBSCRIPTION_H
#define XMPPD_SM_SUBSCRIPTION_H

/* The nine states of RFC 6121 §A.1, in the RFC's order. */
enum sub_state {
    SUB_NONE = 0,     /* "None" (also: not in the roster at all) */
    SUB_NONE_OUT,     /* "None + Pending Out" */
    SUB_NONE_IN,      /* "None + Pending In" */
    SUB_NONE_OUT_IN,  /* "None + Pending Out/In" */
    SUB_TO,           /* "To" */
    SUB_TO_IN,        /* "To + Pending In" */
    SUB_FROM,         /* "From" */
    SUB_FROM_OUT,     /* "From + Pending Out" */
    SUB_BOTH,         /* "Both" */
    SUB_STATE_COUNT
};

/* Outbound: the user sent the stanza (processed in the user's shard,
 * RFC 6121 §A.2). Inbound: the contact sent it to the user (§A.3). */
enum sub_dir { SUB_OUTBOUND = 0, SUB_INBOUND = 1 };

enum sub_type { SUB_SUBSCRIBE = 0, SUB_SUBSCRIBED, SUB_UNSUBSCRIBE, SUB_UNSUBSCRIBED, SUB_TYPE_COUNT };

enum sub_action {
    /* outbound: route the stanza to the contact ("ROUTE?" column);
     * inbound: deliver it to the user ("DELIVER?" column) */
    SUBA_FORWARD = 1 << 0,
    /* inbound: answer the contact with presence of type "subscribed" on
     * the user's behalf (§A.3.1 note [2], and a used pre-approval, §3.4) */
    SUBA_REPLY_SUBSCRIBED = 1 << 1,
    /* inbound: answer with "unsubscribed" on the user's behalf (§A.3.2) */
    SUBA_REPLY_UNSUBSCRIBED = 1 << 2,
    /* the state changed */
    SUBA_CHANGED = 1 << 3,
    /* the pre-approval flag (roster 'approved' attribute) changed */
    SUBA_APPROVAL_CHANGED = 1 << 4,
    /* the contact gained a subscription to the user's presence: send it
     * the user's current presence (RFC 6121 §3.1.5, §3.4) */
    SUBA_SEND_PRESENCE = 1 << 5,
    /* the contact lost it: send it unavailable presence from the user's
     * available resources (RFC 6121 §3.2.2, §3.3.3) */
    SUBA_SEND_UNAVAILABLE = 1 << 6,
};

struct sub_outcome {
    enum sub_state state; /* the new state (= the old one when unchanged) */
    int approved;         /* the new pre-approval flag */
    unsigned actions;     /* enum sub_action bits */
};

/* Apply one subscription stanza. approved is the pre-approval flag of the
 * roster item (RFC 6121 §3.4; only meaningful in None, None + Pending Out
 * and To, the states where the contact has no subscription and has not
 * asked for one). Returns -1 (out untouched) for arguments out of range. */
int sub_transition(enum sub_state state, int approved, enum sub_dir dir, enum sub_type type,
                   struct sub_outcome *out);

/* "none", "none+out", "none+in", "none+out+in", "to", "to+in", "from",
 * "from+out", "both" (trace lines and the stored roster format). */
const char *sub_state_name(enum sub_state s);
/* Inverse of sub_state_name; -1 if unknown. */
int sub_state_parse(const char *name);
/* The roster's subscription attribute: "none", "to", "from" or "both". */
const char *sub_attr(enum sub_state s);
/* From the roster's subscription attribute plus pending flags. */
enum sub_state sub_state_make(int to, int from, int pending_out, int pending_in);
/* Facets of a state. */
int sub_has_to(enum sub_state s);
int sub_has_from(enum sub_state s);
int sub_pending_out(enum sub_state s); /* ask='subscribe' */
int sub_pending_in(enum sub_state s);
/* The subscription type of a presence type attribute; -1 if not one. */
int sub_type_parse(const char *type);
const char *sub_type_name(enum sub_type t);

#endif
