/* sm.h - state shared by the files of xmpp-sm, the session manager of one
 * shard: accounts (sm_accounts.c), sessions and delivery (sm_sessions.c),
 * IQs answered by the server (sm_iq.c), and the daemon around them (sm.c). */
#ifndef XMPPD_SM_H
#define XMPPD_SM_H

#include <stdint.h>

#include "buf.h"
#include "daemon.h"
#include "hmap.h"
#include "ipc.h"
#include "msg.h"
#include "peer.h"
#include "store.h"
#include "xml.h"
#include "xmppd/module.h"

/* A resource that received our user's directed available presence
 * (RFC 6121 §4.6): it must hear of our unavailability. */
struct directed {
    struct directed *next;
    char jid[];
};

struct sm_user;

struct session {
    char *full;              /* "user@domain/resource", key of sm.sessions */
    size_t bare_len;         /* length of the bare prefix */
    char c2s[PEER_NAME_MAX]; /* the c2s instance holding the connection */
    uint64_t conn;
    int available;           /* sent initial presence, not yet unavailable */
    int priority;            /* RFC 6121 §4.7.2.3, -128..127 */
    char *presence;          /* last broadcast presence (canonical XML) */
    struct directed *directed;
    struct sm_user *user;
    struct session *next_of_user;
    uint64_t since;          /* time() of binding */
};

/* The online sessions of one bare JID. */
struct sm_user {
    char *bare;              /* key of sm.users */
    struct session *sessions;
    unsigned count;
};

/* A stanza (or session end) held while the shard re-learns its sessions
 * after a restart, to be handled in arrival order. */
struct held {
    struct held *next;
    struct buf rec;          /* the encoded record */
};

#define SM_MAX_STORES 16

struct sm {
    struct daemon *d;
    unsigned shard;
    ipc_t *router;
    peer_client_t *link;
    store_t *accounts;
    /* every tdb file of the shard, opened with sm_store_open: what
     * `backup` copies and `restore` replaces */
    store_t *stores[SM_MAX_STORES];
    unsigned nstores;
    void (*restored[SM_MAX_STORES])(struct sm *sm); /* see sm_on_restore */
    unsigned nrestored;
    unsigned char secret[32];  /* for fake verifiers, persistent */
    struct hmap sessions;      /* full JID -> struct session */
    struct hmap users;         /* bare JID -> struct sm_user */
    /* resync after a restart (DESIGN §3): c2s instances still to report */
    int resyncing;
    char expect[64][PEER_NAME_MAX]; /* c2s_instances is at most 64 */
    unsigned nexpect;
    struct held *held, **held_tail;
    unsigned nheld;
    loop_timer_t *resync_timer;
    struct sm_counters {
        unsigned long long in[KIND_END], delivered, errors_sent, dropped, bounced_in;
        unsigned long long auth_lookups, binds, ends, kicks;
        unsigned long long hook_stops, hook_changes; /* stanzas stopped or changed by a module's hook */
    } n;
};

extern struct sm SM;

/* sm.c */
/* Open (create) <state_dir>/<instance>/<file> and count it among the
 * shard's stores, which `backup` and `restore` walk; NULL on failure. */
store_t *sm_store_open(struct sm *sm, const char *file);
/* Have fn called after `restore` replaced the contents of the stores (and
 * before the sessions of removed accounts are ended): a module that keeps
 * anything from its store in memory (a cache) must drop it there. */
void sm_on_restore(struct sm *sm, void (*fn)(struct sm *sm));

/* What the account code notes before a restore (sm_accounts.c), to keep
 * the generation counter from going back and to end the sessions of
 * accounts the restore removed. */
struct sm_restore_note {
    unsigned long long gen;    /* the generation counter before */
    size_t n;                  /* users online, with their account's generation (0: none) */
    char **bare;
    unsigned long long *gens;
};

/* sm_accounts.c */
int sm_accounts_open(struct sm *sm);
void sm_accounts_close(struct sm *sm);
/* 1 if the account exists, 0 if not, -1 on a storage error. */
int sm_account_exists(struct sm *sm, const char *bare, size_t len);
void sm_auth_lookup(struct sm *sm, const struct msg *m);
/* MSG_ACCOUNT_CHANGE (XEP-0077 from c2s): create, re-key or remove an
 * account; answered with MSG_ACCOUNT_RESULT after the commit. */
void sm_account_change(struct sm *sm, const struct msg *m);
/* For control commands: arg as a user JID this shard holds
 * (local@served-domain, no resource) into bare; else fails r, -1. */
int sm_ctl_user_jid(struct sm *sm, const char *arg, char *bare, size_t size, struct ctl_req *r);
int sm_accounts_ctl(struct sm *sm, int argc, char **argv, const char *input, size_t input_len, struct ctl_req *r);
/* Restore, in three steps: note the state before (0 or -1); inside the
 * restore's open transaction, keep the generation counter at least where
 * it was (0 or -1); after the commit (committed=1) or the cancel, reload
 * the shard secret and end the sessions of every user whose account is
 * gone or is another one (a new generation). Returns the users whose
 * sessions were ended; frees the note. */
int sm_accounts_restore_begin(struct sm *sm, struct sm_restore_note *note);
int sm_accounts_restore_fixup(struct sm *sm, const struct sm_restore_note *note);
unsigned sm_accounts_restore_done(struct sm *sm, struct sm_restore_note *note, int committed);

/* sm_sessions.c */
void sm_session_bind(struct sm *sm, const struct msg *m);
void sm_session_end(struct sm *sm, const struct msg *m);
void sm_sessions_of_c2s_gone(struct sm *sm, const char *c2s);
/* End every session of a bare JID (account removed); cond = stream error. */
void sm_kick_user(struct sm *sm, const char *bare, unsigned cond, const char *text);
void sm_stanza(struct sm *sm, const struct msg *m);
void sm_bounce(struct sm *sm, const struct msg *m);
int sm_sessions_ctl(struct sm *sm, int argc, char **argv, struct ctl_req *r);
/* Hand a stanza the server made (reply, error) to its recipient. */
void sm_send_stanza(struct sm *sm, unsigned kind, unsigned stype, const char *from, const char *to,
                    const char *body, size_t len, uint64_t trace);
/* The same, traced with a new id when cause (the trace id of the stanza
 * that caused it, 0 if none or untraced) is set or the trace rules match
 * from/to; what says what it is in the trace ("error service-unavailable"). */
void sm_send_created(struct sm *sm, unsigned kind, unsigned stype, const char *from, const char *to,
                     const char *body, size_t len, uint64_t cause, const char *what);
/* Send an error reply to a stanza (never to an error). */
void sm_reply_error(struct sm *sm, const struct msg *m, unsigned cond, const char *text);

/* sm_iq.c */
/* An IQ addressed to the server's domain (or to a user's bare JID when
 * for_user); answers it or replies with an error. */
void sm_iq_to_server(struct sm *sm, const struct msg *m, int for_user);

/* sm_modules.c: the module API's xmpp-sm half (xmppd-modules(7)) */
/* Load and init the modules of every host; 0 or -1 (refuse to start). */
int sm_modules_start(struct sm *sm);
void sm_modules_stop(struct sm *sm);
/* A changed stanza's storage (see sm_hook). */
struct sm_hook_hold { struct msg m; struct buf body; };
/* Run the handlers of a stanza hook (for *_PACKET user hooks, then those of
 * the stanza's kind) of the host of jid; step is the trace step. Returns m
 * (unchanged), &hold->m (changed: free with sm_hook_done after use), or
 * NULL when a handler stopped it (its error, if any, is on its way). */
const struct msg *sm_hook(struct sm *sm, enum xm_hook hook, const struct msg *m, const char *jid, size_t jlen,
                          struct sm_hook_hold *hold, int step);
void sm_hook_done(struct sm_hook_hold *hold);
/* XM_HOOK_PRESENCE_OUT for a presence the server sends on from's behalf
 * to one contact: 1 to send it (*body, *len may now point into hold: free
 * it with sm_hook_done after sending), 0 if a handler stopped it. */
int sm_presence_out_allowed(struct sm *sm, unsigned stype, const char *from, const char *to, const char **body,
                            size_t *len, uint64_t trace, struct sm_hook_hold *hold);
/* Run the handlers of an event hook of the host of jid. */
void sm_hook_event(struct sm *sm, enum xm_hook hook, const char *jid);
/* An IQ get/set for the server (for_user 0) or an account: 1 if a module
 * handler took it (and answered), 0 if none is registered. */
int sm_modules_iq(struct sm *sm, const struct msg *m, const xml_node_t *iq, const xml_node_t *payload, int for_user);
/* A module's question from another shard (MSG_MODULE_ASK): answered at once. */
void sm_modules_ask(struct sm *sm, const struct msg *m);
/* An answer to one of ours (MSG_MODULE_ANSWER). */
void sm_modules_answer(struct sm *sm, const struct msg *m);
/* `modules [HOST]` and `mod COMMAND USER ARG...`; -1 if not ours. */
int sm_modules_ctl(struct sm *sm, int argc, char **argv, struct ctl_req *r);

/* sm_presence.c */
/* bare's last unavailable presence: 1 with its time and <status/> text
 * (into status if not NULL), 0 if none is recorded, -1 on error. */
int sm_presence_last(struct sm *sm, const char *bare, long *when, struct buf *status);

#endif
