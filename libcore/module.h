/* module.h - the module runtime shared by xmpp-sm and xmpp-c2s: loads the
 * modules each virtual host enables (built-in or NAME.so from module_dir,
 * with the ABI check), runs their init(), keeps what they registered
 * (hooks, IQ handlers, commands, disco extensions) and declared (disco
 * features, identities, forms, stream features), and computes from the
 * declarations the server's disco#info and its XEP-0115 'ver'.
 * The stanza half of the API (struct xm_api members for stanzas, sending,
 * users and stores) is filled in by xmpp-sm (cmd/xmpp-sm/sm_modules.c). */
#ifndef XMPPD_MODULE_RUNTIME_H
#define XMPPD_MODULE_RUNTIME_H

#include <stddef.h>

#include "buf.h"
#include "conf.h"
#include "xmppd/module.h"

/* The node of our XEP-0115 capabilities (a URI naming the software). */
#define MOD_CAPS_NODE "urn:xmppd"

struct xm_buf { struct buf b; };

struct mod_hook {
    int seq;
    xm_stanza_fn stanza;  /* one of the two */
    xm_event_fn event;
    void *data;
    xm_host *h;
};

struct mod_iq {
    char *ns, *name;
    int flags;            /* XM_IQ_* */
    xm_iq_fn fn;
    void *data;
    xm_host *h;
};

struct mod_fn {          /* a disco extension or a command */
    char *name;          /* the command's name (NULL for disco) */
    xm_disco_fn disco;
    int (*cmd)(xm_host *h, const char *bare, int argc, char **argv, xm_buf *out, void *data);
    void *data;
    xm_host *h;
};

struct mod_identity { char *category, *type, *lang, *name; }; /* lang: NULL for ours */

struct mod_strs { char **s; size_t n; };

/* The modules of one virtual host in this daemon. */
struct mod_vhost {
    char *domain;
    xm_host *mods[CONF_MAX_MODULES + 1];
    size_t n;
    struct mod_strs features, account_features, forms, stream_pre, stream_post;
    struct mod_identity *ids;
    size_t n_ids;
    struct mod_hook *hooks[XM_HOOK_END];
    size_t n_hooks[XM_HOOK_END];
    struct mod_iq *iqs;
    size_t n_iqs;
    struct mod_fn *items, *account_info, *cmds;
    size_t n_items, n_account_info, n_cmds;
    struct buf info;          /* the server's disco#info children: identities, features, forms */
    struct buf account;       /* an account's: identity and features */
    char caps_ver[32];        /* base64 SHA-1 of XEP-0115 §5.1; "" when disco is off */
};

struct xm_host {
    const struct xm_module *mod;
    struct mod_vhost *vh;
    struct modules *ms;
    const char *source;       /* "built-in" or the .so path */
    void *data;
    char *asked[32];          /* options read by init (unknown ones are errors) */
    size_t n_asked;
    /* set_shard_handler: what it answers to ask_shards */
    int (*shard_fn)(xm_host *h, const char *query, size_t len, xm_buf *out, void *data);
    void *shard_data;
};

struct modules {
    const struct conf *conf;
    const char *daemon;       /* "xmpp-sm" or "xmpp-c2s" */
    int in_sm;
    struct xm_api api;        /* what modules are given */
    struct mod_vhost *v;
    size_t n;
    void *dl[CONF_MAX_MODULES];
    char *dl_path[CONF_MAX_MODULES];
    const struct xm_module *dl_mod[CONF_MAX_MODULES];
    size_t n_dl;
};

/* Fill api with the daemon-independent functions (host, options, log,
 * declarations, registration, XML, buffers); the stanza, sending, user and
 * store members get stand-ins that fail, for xmpp-c2s. */
void modules_api_init(struct xm_api *api);
/* Load and init every module of every host of c. api (from
 * modules_api_init, then completed by the daemon) is copied. 0, or -1 with
 * a sentence in err (the daemon then refuses to start). */
int modules_load(struct modules *ms, const struct conf *c, const char *daemon, int in_sm,
                 const struct xm_api *api, char *err, size_t errlen);
/* Call every module's stop() and free everything. */
void modules_unload(struct modules *ms);
/* The modules of a domain, or NULL if it is not served. */
struct mod_vhost *modules_vhost(const struct modules *ms, const char *domain, size_t len);
/* The IQ handler of (ns, name) on vh, or NULL. */
const struct mod_iq *modules_iq(const struct mod_vhost *vh, const char *ns, const char *name);
/* The command called name on vh, or NULL. */
const struct mod_fn *modules_cmd(const struct mod_vhost *vh, const char *name);
/* The module called name on vh, or NULL. */
xm_host *modules_host(const struct mod_vhost *vh, const char *name);
/* 1 if module name is loaded on vh. */
int modules_has(const struct mod_vhost *vh, const char *name);
/* The name of a hook ("user_send_packet"). */
const char *modules_hook_name(enum xm_hook hook);
/* The XEP-0115 §5.1 verification string's SHA-1 in base64 into out, from
 * identities, features and extended forms (jabber:x:data XML); sorts ids
 * and features in place. 0, or -1 on OOM. */
int modules_caps_ver(struct mod_identity *ids, size_t n_ids, char **features, size_t n_features, char *const *forms,
                     size_t n_forms, char out[32]);
/* Append the declared stream features (before or after authentication)
 * and, after it, the XEP-0115 <c/> element. */
void modules_stream_features(const struct mod_vhost *vh, int before_auth, struct buf *out);

#endif
