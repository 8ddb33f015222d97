/* sm_roster.h - the IM part of xmpp-sm (RFC 6121): rosters and their IQ
 * (sm_roster.c), subscriptions and presence (sm_presence.c, with the pure
 * state machine of sm_subscription.c), offline messages (sm_offline.c).
 *
 * Everything these modules write is acknowledged only after it is
 * committed (DESIGN §4): outputs (roster pushes, IQ results, routed
 * subscription stanzas, control replies) are collected in a struct
 * sm_later with the writes they depend on and sent from the store's
 * commit callback, in the order they were made. */
#ifndef XMPPD_SM_ROSTER_H
#define XMPPD_SM_ROSTER_H

#include "sm.h"
#include "sm_subscription.h"
#include "xml.h"

#define NS_ROSTER "jabber:iq:roster"

/* Limits (RFC 6121 §2.3.3 lets the server configure them). */
#define ROSTER_MAX_ITEMS 1000      /* roster items, pending requests included */
#define ROSTER_MAX_NAME 1023       /* bytes of an item's name */
#define ROSTER_MAX_GROUP 1023      /* bytes of a group name */
#define ROSTER_MAX_GROUPS 64       /* groups of one item */
#define ROSTER_MAX_PENDING 16384   /* bytes of a stored subscription request */
#define OFFLINE_QUOTA 1000         /* stored messages per user */

/* ---------------- outputs after the commit (sm_roster.c) ---------------- */

struct sm_later;
/* A new, empty set of outputs; NULL on OOM (callers then send nothing). */
struct sm_later *later_new(void);
/* Route a stanza (inbound phase, sm_send_stanza) after the commit. */
void later_send(struct sm_later *l, unsigned kind, unsigned stype, const char *from, const char *to,
                const char *body, size_t len, uint64_t trace);
/* Roster push of one <query/> (body) to every interested resource of bare
 * (RFC 6121 §2.1.6), each wrapped in its own <iq type='set'/>. */
void later_push(struct sm_later *l, const char *bare, const char *query, size_t len);
/* Deliver a stanza to every available resource of bare (or, if to_full is
 * not NULL, to that session only). */
void later_deliver(struct sm_later *l, const char *bare, const char *to_full, unsigned kind, unsigned stype,
                   const char *from, const char *body, size_t len, uint64_t trace);
/* RFC 6121 §3.1.5: the current presence of bare's available resources,
 * sent to contact; §3.2.2: their unavailable presence. */
void later_presence_of(struct sm_later *l, const char *bare, const char *contact, int unavailable);
/* When a write failed: send this (an error reply) instead of the outputs. */
void later_on_failure(struct sm_later *l, unsigned kind, const char *from, const char *to, const char *body,
                      size_t len);
/* Finish a deferred control request after the commit (ctl_fail on error). */
void later_ctl(struct sm_later *l, struct ctl_req *r);
/* Forget bare's cached roster if a write fails (the memory copy is ahead). */
void later_invalidate(struct sm_later *l, const char *bare);
/* Writes whose commit the outputs wait for; -1 when the write failed at
 * once (the set then fails). */
int later_put(struct sm *sm, struct sm_later *l, store_t *s, const char *key, size_t klen, const void *val,
              size_t vlen);
int later_del(struct sm *sm, struct sm_later *l, store_t *s, const char *key, size_t klen);
/* Queue the set: its outputs leave once its writes are committed and
 * every set queued before it has left (NULL is ignored). */
void later_submit(struct sm *sm, struct sm_later *l);
/* A set with no output to order (offline storage): run when its writes
 * are committed, holding nothing back. */
void later_submit_detached(struct sm *sm, struct sm_later *l);
/* 1 when no set waits: an output may then be sent at once, in order. */
int later_idle(void);
/* While a queued set waits for its commit, a stanza (or a session end)
 * entering sm waits behind it (1: taken, handled later through sm_stanza
 * or sm_session_end); 0: go on. */
int sm_im_defer(struct sm *sm, const struct msg *m);
/* Give up a set that was not submitted: freed, or, if a write of it is
 * still pending, failed (the cached roster it names is then dropped). */
void later_abandon(struct sm *sm, struct sm_later *l);
void later_abandon_detached(struct sm *sm, struct sm_later *l);

/* ---------------- rosters (sm_roster.c) ---------------- */

struct ritem {
    char *jid;             /* contact's bare JID (key of roster.items) */
    enum sub_state state;  /* RFC 6121 §A.1 */
    int approved;          /* pre-approval (§3.4), roster attribute approved='true' */
    int hidden;            /* only a pending inbound request: not shown (§A.1, "None + Pending In") */
    char *name;            /* NULL: no name */
    char **groups;
    unsigned ngroups;
    char *pending;         /* the contact's subscription request, kept for re-delivery (§3.1.3) */
};

struct roster {
    char *bare;
    unsigned long long gen;  /* the account generation it belongs to */
    unsigned long long ver;  /* RFC 6121 §2.6 version counter */
    struct hmap items;       /* contact bare JID -> struct ritem */
    int cached;              /* kept in memory while the user is online */
};

/* Open roster.tdb and offline.tdb (through sm_store_open); 0 or -1. */
int sm_roster_open(struct sm *sm);
/* roster.tdb (also holds the users' last unavailable presence). */
store_t *sm_roster_store(void);
/* The generation of bare's account: 1 and *gen, 0 no account, -1 error. */
int sm_account_gen(struct sm *sm, const char *bare, unsigned long long *gen);
/* The roster of a local user of this shard: from the cache, or loaded;
 * NULL with *err = 0 if there is no such account, *err = 1 on a storage
 * error. Give it back with roster_release() (frees it unless cached). */
struct roster *roster_get(struct sm *sm, const char *bare, int *err);
void roster_release(struct sm *sm, struct roster *r);
struct ritem *roster_item(struct roster *r, const char *jid);
/* Add an empty (state none) item; NULL if the roster is full or on OOM. */
struct ritem *roster_item_add(struct roster *r, const char *jid);
void roster_item_del(struct roster *r, const char *jid);
size_t roster_count(const struct roster *r);
/* Bump the version and write the roster in l's transaction; 0 or -1. */
int roster_save(struct sm *sm, struct roster *r, struct sm_later *l);
/* "<query xmlns='jabber:iq:roster' ver='...'><item .../></query>" for a
 * push of it (removed: subscription='remove'). */
void roster_push_query(const struct roster *r, const struct ritem *it, const char *removed_jid, struct buf *out);
/* The visible form of an item, to know whether a change needs a push. */
void roster_item_xml(const struct ritem *it, struct buf *out);
/* jabber:iq:roster get and set (RFC 6121 §2.1-§2.6). */
void sm_roster_iq(struct sm *sm, const struct msg *m, xml_node_t *iq, xml_node_t *query, int for_user);
/* A session ends: forget that it asked for the roster; drop the cached
 * roster with the user's last session. */
void sm_roster_session_end(struct sm *sm, struct session *s);
/* Drop every cached roster (after roster.tdb was replaced underneath,
 * e.g. by a restore): they are read again when next needed. */
void sm_roster_forget_cache(struct sm *sm);
/* Control commands: roster, roster-add, roster-del, offline; -1 unknown. */
int sm_roster_ctl(struct sm *sm, int argc, char **argv, struct ctl_req *r);
void sm_roster_stats(struct sm *sm, struct ctl_req *r);
/* Hand a stanza straight to one session (MSG_DELIVER), no routing. */
void sm_deliver_to(struct sm *sm, struct session *s, unsigned kind, unsigned stype, const char *from,
                   const char *body, size_t len, uint64_t trace);
/* The session of a full JID, or NULL. */
struct session *sm_session_of(struct sm *sm, const char *full);
/* 1 if the session requested the roster (an "interested resource"). */
int sm_roster_interested(const struct session *s);
/* A trace line for an IM decision (step 4 outbound, 5 inbound). */
void sm_im_trace(const struct msg *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---------------- subscriptions and presence (sm_presence.c) ---------------- */

/* Outbound phase, a presence of type subscribe/subscribed/unsubscribe/
 * unsubscribed from session s (RFC 6121 §3, §A.2). */
void sm_presence_outbound_sub(struct sm *sm, struct session *s, const struct msg *m);
/* Inbound phase: subscription stanzas and probes for the local user bare
 * (RFC 6121 §3, §4.3, §A.3), whatever resource 'to' names. */
void sm_presence_inbound(struct sm *sm, const char *bare, const struct msg *m);
/* Session s sent available broadcast presence (already stored in s):
 * broadcast to contacts with a subscription from the user; on the initial
 * one, probe the contacts the user is subscribed to, re-deliver pending
 * subscription requests; deliver offline messages when the priority
 * becomes non-negative (RFC 6121 §4.2, §4.4, §3.1.3; XEP-0160). m is the
 * client's presence (for the trace), or NULL. */
void sm_presence_available(struct sm *sm, struct session *s, const struct msg *m, int initial, int old_priority);
/* Session s becomes unavailable (its own unavailable presence, or the end
 * of the session for any reason): body goes to contacts with a
 * subscription from the user; the last one is kept (RFC 6121 §4.5). Call
 * while s->available is still set; m is the client's presence or NULL. */
void sm_presence_unavailable(struct sm *sm, struct session *s, const struct msg *m, const char *body, size_t len);
void sm_presence_stats(struct sm *sm, struct ctl_req *r);

/* ---------------- offline messages (sm_offline.c) ---------------- */

int sm_offline_open(struct sm *sm);
/* RFC 6121 §8.5.2.2.1, XEP-0160: store a message for a user with no
 * available resource of non-negative priority (normal and chat; others
 * are refused by the caller); answers service-unavailable when full. */
void sm_offline_store(struct sm *sm, const struct msg *m);
/* Deliver the stored messages to s, in order, then remove them. */
void sm_offline_deliver(struct sm *sm, struct session *s);
int sm_offline_ctl(struct sm *sm, int argc, char **argv, struct ctl_req *r);
void sm_offline_stats(struct sm *sm, struct ctl_req *r);

#endif
