/* xmppd/module.h - the interface between xmppd and its modules.
 *
 * A module is a shared object (NAME.so in module_dir) or a built-in file
 * that defines one `const struct xm_module` named `xmppd_module` (built-in
 * modules give theirs another name). xmppd calls its init() once for every
 * virtual host whose `modules` list names it, in xmpp-sm (hooks, IQ
 * handlers, stores, declarations) and in xmpp-c2s (declarations only: the
 * stream features and the entity capabilities are computed there). A module
 * talks to xmppd only through the function table `const struct xm_api *`
 * it is given; it never links against the daemons.
 *
 * ABI: XMPPD_MODULE_ABI changes whenever anything here changes in a way a
 * compiled module would notice. A module whose `abi` differs is refused at
 * start-up with a message naming both numbers. Until xmppd 1.0 the number
 * moves with the API; rebuild modules with each xmppd release.
 *
 * Threads: none. Everything runs in the daemon's event loop; a handler must
 * not block (no sleep, no network, no synchronous file I/O beyond the
 * module's own store, whose writes are committed at the end of the loop
 * turn and whose outputs are sent only after that commit).
 *
 * Strings are UTF-8 and NUL-terminated; JIDs are normalized (RFC 7622). */
#ifndef XMPPD_MODULE_H
#define XMPPD_MODULE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define XMPPD_MODULE_ABI 1

typedef struct xm_host xm_host;     /* one module on one virtual host, in one daemon */
typedef struct xm_stanza xm_stanza; /* a stanza at a hook or in an IQ handler */
typedef struct xm_node xm_node;     /* an element of a parsed stanza (read-only) */
typedef struct xm_buf xm_buf;       /* a growable byte buffer */
typedef struct xm_store xm_store;   /* a module's key/value store in one shard */

/* What a stanza hook returns. XM_STOP after api->error(): the stanza is
 * answered with that error and goes no further; XM_STOP without it: the
 * stanza is dropped silently. */
enum xm_verdict { XM_PASS = 0, XM_STOP = 1 };

/* Hook points of xmpp-sm. Stanza hooks (XM_HOOK_*_PACKET and the rest up
 * to XM_HOOK_PRESENCE_OUT) get the stanza; event hooks get a JID. Handlers
 * of one hook run by ascending sequence number (ties: registration order);
 * the first to return XM_STOP ends the walk. */
enum xm_hook {
    /* sent by a local user, in the sender's shard, before anything is done
     * with it (RFC 6120 §10.3 'to'-less stanzas included); _PACKET for every
     * kind, then the hook of its kind */
    XM_HOOK_USER_SEND_PACKET = 0,
    XM_HOOK_USER_SEND_MESSAGE,
    XM_HOOK_USER_SEND_PRESENCE,
    XM_HOOK_USER_SEND_IQ,
    /* to an existing local account (any resource or the bare JID), in the
     * recipient's shard, before the delivery rules of RFC 6121 §8.5: runs
     * whether the user is online or not */
    XM_HOOK_USER_RECEIVE_PACKET,
    XM_HOOK_USER_RECEIVE_MESSAGE,
    XM_HOOK_USER_RECEIVE_PRESENCE,
    XM_HOOK_USER_RECEIVE_IQ,
    /* every stanza this shard handles, in either phase (ejabberd's
     * filter_packet) */
    XM_HOOK_FILTER_PACKET,
    /* every stanza in the recipient's phase for a local domain: to users,
     * accounts or the server itself (ejabberd's filter_local_packet) */
    XM_HOOK_FILTER_LOCAL_PACKET,
    /* about to be handed to one session (to = that session's full JID): the
     * last point where it can be stopped */
    XM_HOOK_DELIVER_PACKET,
    /* a message about to be stored offline (XEP-0160) */
    XM_HOOK_OFFLINE_MESSAGE,
    /* presence the server sends on a user's behalf to one contact: the
     * broadcast fan-out, probe answers, unavailable at the end of a session */
    XM_HOOK_PRESENCE_OUT,
    /* event hooks: void fn(xm_host *, const char *jid, void *data) */
    XM_HOOK_SESSION_OPENED,  /* a resource bound (full JID) */
    XM_HOOK_SESSION_CLOSED,  /* a session ended, for any reason (full JID) */
    XM_HOOK_USER_CREATED,    /* an account was created (bare JID) */
    XM_HOOK_USER_REMOVED,    /* an account was removed (bare JID): delete its data */
    XM_HOOK_END
};

/* Stanza kinds. */
enum xm_kind { XM_MESSAGE = 1, XM_PRESENCE = 2, XM_IQ = 3 };

/* Where an IQ handler answers (RFC 6120 §10.3.3, RFC 6121 §8.5.2.1.3). */
enum {
    XM_IQ_SERVER = 1,   /* to the server's domain */
    XM_IQ_ACCOUNT = 2,  /* to a user's bare JID, or with no 'to' (for the sender's own account) */
    XM_IQ_GET = 4,      /* accepts type='get' */
    XM_IQ_SET = 8       /* accepts type='set' (an undeclared type gets bad-request) */
};

/* A stanza hook: XM_PASS, or XM_STOP (see enum xm_verdict). */
typedef int (*xm_stanza_fn)(xm_stanza *st, void *data);
/* An event hook. */
typedef void (*xm_event_fn)(xm_host *h, const char *jid, void *data);
/* An IQ handler: answer with api->iq_result() or api->error() (exactly
 * once; if neither is called, xmppd answers internal-server-error).
 * payload is the IQ's one child element. */
typedef void (*xm_iq_fn)(xm_stanza *iq, const xm_node *payload, void *data);
/* Extra disco#info of a user's account or extra disco#items of the server
 * (XEP-0030), appended to out as XML (<feature/>, <identity/>, <item/>);
 * node is the requested node or NULL. Return 1 if the module serves that
 * node (a node no module serves gets item-not-found), else 0. */
typedef int (*xm_disco_fn)(xm_host *h, const char *jid, const char *node, xm_buf *out, void *data);

/* The function table given to init(). Members are only ever added at the
 * end; `size` tells how far this daemon's table goes. */
struct xm_api {
    unsigned abi;   /* XMPPD_MODULE_ABI of the daemon */
    size_t size;    /* sizeof(struct xm_api) of the daemon */

    /* ---- the host ---- */
    /* The virtual host's domain. */
    const char *(*domain)(const xm_host *h);
    /* "xmpp-sm" or "xmpp-c2s": where init() runs. */
    const char *(*daemon)(const xm_host *h);
    /* 1 in xmpp-sm: hooks, IQ handlers and stores work only there. */
    int (*in_sm)(const xm_host *h);
    /* The value of option "MODULE.key" (host section first, then global),
     * or def. An option never asked for is reported as unknown. */
    const char *(*option)(xm_host *h, const char *key, const char *def);
    /* The same read as a size ("64K", "2M"); -1 with a log line if it is not
     * a number in [min, max]. */
    long long (*option_size)(xm_host *h, const char *key, long long def, long long min, long long max);
    /* The same read as yes/no; -1 with a log line if it is neither. */
    int (*option_bool)(xm_host *h, const char *key, int def);
    /* The version of xmppd ("0.4.0"). */
    const char *(*version)(void);
    /* Keep a pointer for this host (given back by get_data). */
    void (*set_data)(xm_host *h, void *data);
    void *(*get_data)(const xm_host *h);
    /* Log a line (syslog level 3..7) prefixed with the module's name. */
    void (*log)(const xm_host *h, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

    /* ---- declarations (both daemons): what disco#info and the stream
     * features say; the XEP-0115 'ver' is computed from them ---- */
    /* A <feature var=/> of the server's disco#info. */
    int (*add_feature)(xm_host *h, const char *var);
    /* A feature of every account's disco#info (to a bare JID). */
    int (*add_account_feature)(xm_host *h, const char *var);
    /* An <identity/> of the server. */
    int (*add_identity)(xm_host *h, const char *category, const char *type, const char *name);
    /* A XEP-0128 data form (<x xmlns='jabber:x:data' type='result'> with a
     * FORM_TYPE field) appended to the server's disco#info. */
    int (*add_info_form)(xm_host *h, const char *xml);
    /* A stream feature (xml is the element), offered in the features
     * before authentication (before_auth = 1) or after it. */
    int (*add_stream_feature)(xm_host *h, const char *xml, int before_auth);

    /* The assembled disco#info children (identities, features, forms) of
     * jid — the host's domain or an account's bare JID — for node (NULL, or
     * the XEP-0115 "node#ver"), extensions included, appended to out: 1,
     * or 0 when no module serves that node. */
    int (*disco_info)(xm_host *h, const char *jid, const char *node, xm_buf *out);
    /* The same for disco#items (<item/> elements). */
    int (*disco_items)(xm_host *h, const char *jid, const char *node, xm_buf *out);

    /* ---- hooks and handlers (xmpp-sm) ---- */
    int (*add_stanza_hook)(xm_host *h, enum xm_hook hook, int seq, xm_stanza_fn fn, void *data);
    int (*add_event_hook)(xm_host *h, enum xm_hook hook, int seq, xm_event_fn fn, void *data);
    /* IQs whose payload is <name xmlns=ns>; flags from the XM_IQ_* set.
     * One handler per (ns, name, host); a second is an error. */
    int (*add_iq_handler)(xm_host *h, const char *ns, const char *name, int flags, xm_iq_fn fn, void *data);
    int (*add_disco_items)(xm_host *h, xm_disco_fn fn, void *data);
    int (*add_account_disco_info)(xm_host *h, xm_disco_fn fn, void *data);
    /* An administrator's command for one user, run in the user's shard by
     * `xmppctl NAME USER ARG...` (xmppctl knows the names it offers): fn
     * writes its answer (TSV lines) to out and returns 0, 1 for a usage
     * error (out holds the message), -1 for a failure. Store writes made by
     * fn are committed before xmppctl hears the answer. */
    int (*add_command)(xm_host *h, const char *name,
                       int (*fn)(xm_host *h, const char *bare, int argc, char **argv, xm_buf *out, void *data),
                       void *data);

    /* ---- a stanza ---- */
    enum xm_kind (*kind)(const xm_stanza *st);
    /* The type attribute, "" when absent. */
    const char *(*type)(const xm_stanza *st);
    /* 'from' (always a full JID for users' stanzas) and 'to' ("" if none). */
    const char *(*from)(const xm_stanza *st);
    const char *(*to)(const xm_stanza *st);
    /* The host the stanza is handled for (the hook's or handler's). */
    xm_host *(*host)(const xm_stanza *st);
    /* The parsed stanza, NULL if it does not parse (then pass it). */
    const xm_node *(*xml)(xm_stanza *st);
    /* The stanza as XML text. */
    const char *(*text)(const xm_stanza *st, size_t *len);
    /* Replace the stanza by xml (same kind, from and to are kept as they
     * are): 0, or -1 if xml is not one element of the same kind. */
    int (*replace)(xm_stanza *st, const char *xml, size_t len);
    /* Answer with a stanza error (RFC 6120 §8.3): cond is the defined
     * condition ("not-acceptable"), text may be NULL, app_xml is an
     * application-specific condition element or NULL. In a stanza hook,
     * return XM_STOP after it. Never answers an error stanza. */
    void (*error)(xm_stanza *st, const char *cond, const char *text, const char *app_xml);
    /* Answer an IQ get/set with type='result'; payload_xml NULL = empty. */
    void (*iq_result)(xm_stanza *iq, const char *payload_xml);

    /* ---- sending (xmpp-sm): a complete stanza with from and to, sent
     * after this turn's store commits, in order ---- */
    int (*send)(xm_host *h, const char *xml, size_t len);

    /* ---- users and sessions (xmpp-sm) ---- */
    /* 1 if the account exists, 0 if not, -1 on error. */
    int (*user_exists)(xm_host *h, const char *bare);
    /* Call fn for each session of bare; returns how many. */
    int (*each_session)(xm_host *h, const char *bare,
                        void (*fn)(const char *full, int available, int priority, void *arg), void *arg);
    /* The last unavailable presence of bare (RFC 6121 §4.3.2): 1 with its
     * time (seconds since the epoch) and status text into status (may be
     * NULL), 0 if none is known, -1 on error. */
    int (*last_unavailable)(xm_host *h, const char *bare, long long *when, xm_buf *status);
    /* The roster item of contact (a bare JID) in bare's roster: 1 with its
     * subscription ("none", "to", "from", "both") and its groups (each
     * followed by a NUL byte) into groups (may be NULL), 0 if none, -1 error. */
    int (*roster_item)(xm_host *h, const char *bare, const char *contact, char sub[8], xm_buf *groups);
    /* Time the server started (seconds since the epoch). */
    long long (*started)(xm_host *h);

    /* ---- storage (xmpp-sm): one tdb file per module and shard ---- */
    /* The module's store "<name>.tdb" in the shard's state directory. */
    xm_store *(*store)(xm_host *h, const char *name);
    /* 1 found (value into out), 0 absent, -1 error. Sees this turn's writes. */
    int (*get)(xm_store *s, const char *key, size_t klen, xm_buf *out);
    /* Write or delete in this turn's transaction; what the handler sends
     * afterwards leaves only after the commit (on a failed commit an IQ
     * being handled is answered internal-server-error instead). 0 / -1. */
    int (*put)(xm_store *s, const char *key, size_t klen, const void *val, size_t vlen);
    int (*del)(xm_store *s, const char *key, size_t klen);
    /* Visit the records whose key starts with prefix (plen 0: all); stop
     * when fn returns non-zero. Returns the number visited or -1. */
    int (*each)(xm_store *s, const char *prefix, size_t plen,
                int (*fn)(const char *key, size_t klen, const char *val, size_t vlen, void *arg), void *arg);

    /* ---- XML of a parsed stanza ---- */
    const char *(*name)(const xm_node *e);
    const char *(*ns)(const xm_node *e);
    /* Unqualified attribute ("xml:lang" too) or NULL. */
    const char *(*attr)(const xm_node *e, const char *name);
    /* First child element with that name and ns (NULL = any). */
    const xm_node *(*child)(const xm_node *e, const char *name, const char *ns);
    const xm_node *(*first)(const xm_node *e);
    const xm_node *(*next)(const xm_node *e);
    /* The element's direct text, unescaped ("" if none). */
    const char *(*text_of)(const xm_node *e);
    /* Append e as XML (with its xmlns) to out; 0 / -1. */
    int (*serialize)(const xm_node *e, xm_buf *out);

    /* ---- buffers ---- */
    xm_buf *(*buf_new)(void);
    void (*buf_free)(xm_buf *b);
    void (*buf_add)(xm_buf *b, const void *p, size_t n);
    void (*buf_addf)(xm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
    /* Append text escaped for XML content and attribute values. */
    void (*buf_add_esc)(xm_buf *b, const char *s, size_t n);
    /* The bytes (NUL-terminated) and their length; NULL after an OOM. */
    const char *(*buf_data)(const xm_buf *b, size_t *len);
    void (*buf_clear)(xm_buf *b);

    /* ---- JIDs (both daemons) ---- */
    /* jid normalized (RFC 7622: nodeprep, nameprep, resourceprep) into out:
     * 0, or -1 if it is not a JID or does not fit. */
    int (*jid_normalize)(const char *jid, char *out, size_t size);
    /* The bare part of a JID (everything before the first '/') into out,
     * cut to fit. */
    void (*bare_jid)(const char *jid, char *out, size_t size);

    /* ---- presence (xmpp-sm) ---- */
    /* Send the current presence of session full (from it) to 'to', after
     * this turn's commits: 1 sent, 0 when the session is not available,
     * -1 on error (XEP-0191 §3.4: presence again after an unblock). */
    int (*send_presence)(xm_host *h, const char *full, const char *to);
    /* Call fn for every item of bare's roster (pending inbound requests
     * not shown to the user excluded) with the contact's bare JID, its
     * subscription ("none", "to", "from", "both") and its groups (each
     * followed by a NUL byte, ngroups of them): the number of items, or -1
     * on error. fn must not change the roster. */
    int (*each_roster_item)(xm_host *h, const char *bare,
                            void (*fn)(const char *contact, const char *sub, const char *groups, size_t ngroups,
                                       void *arg),
                            void *arg);

    /* ---- deferred answers and the other shards (xmpp-sm) ---- */
    /* Keep an IQ get/set to answer after the handler has returned: the
     * copy returned stays valid until it is answered with iq_result() or
     * error(), which free it. NULL on OOM (answer the original then). */
    xm_stanza *(*iq_keep)(xm_stanza *iq);
    /* Ask this module on every shard (sm_shards of them, this one too) for
     * the host: each answers query with the handler it set with
     * set_shard_handler. done runs once, later (never inside ask_shards),
     * with n answers in shard order; an answer that did not come within
     * five seconds is NULL with length 0. 0, or -1 (done will not run). */
    int (*ask_shards)(xm_host *h, const char *query, size_t len,
                      void (*done)(xm_host *h, const char *const *answers, const size_t *lens, size_t n, void *arg),
                      void *arg);
    /* What this module answers to ask_shards: fn writes the answer to out
     * and returns 0 (or -1: answered as missing). */
    int (*set_shard_handler)(xm_host *h, int (*fn)(xm_host *h, const char *query, size_t len, xm_buf *out, void *data),
                             void *data);
};

/* What a module exports. */
struct xm_module {
    unsigned abi;              /* XMPPD_MODULE_ABI it was built with */
    const char *name;          /* as in the `modules` list and NAME.so */
    const char *description;   /* one line, shown by `xmppctl modules` */
    /* For each host it is enabled on: declare, register, open stores;
     * 0, or -1 (with a log line) to refuse to start. */
    int (*init)(xm_host *h, const struct xm_api *api);
    /* At shutdown, for each host (may be NULL). */
    void (*stop)(xm_host *h, const struct xm_api *api);
};

/* In an external module: XMPPD_MODULE(name, description, init, stop); */
#define XMPPD_MODULE(n, desc, init_fn, stop_fn) \
    const struct xm_module xmppd_module = { XMPPD_MODULE_ABI, n, desc, init_fn, stop_fn }

#ifdef __cplusplus
}
#endif

#endif
