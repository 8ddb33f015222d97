/* module.c - the module runtime (module.h): loading, the ABI check, the
 * daemon-independent half of struct xm_api, and the declarations that make
 * up disco#info, the stream features and the XEP-0115 'ver'. */
#include "config.h"
#include "module.h"
#include "jid.h"
#include "log.h"
#include "modules/builtin.h"
#include "util.h"
#include "xml.h"

#include <dlfcn.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NS_DATA "jabber:x:data"

static const char *const hook_names[XM_HOOK_END] = {
    "user_send_packet", "user_send_message", "user_send_presence", "user_send_iq",
    "user_receive_packet", "user_receive_message", "user_receive_presence", "user_receive_iq",
    "filter_packet", "filter_local_packet", "deliver_packet", "offline_message_hook", "presence_out",
    "session_opened", "session_closed", "user_created", "user_removed",
};

const char *modules_hook_name(enum xm_hook hook)
{
    return (unsigned)hook < XM_HOOK_END ? hook_names[hook] : "?";
}

static int is_event_hook(enum xm_hook hook) { return hook >= XM_HOOK_SESSION_OPENED && hook < XM_HOOK_END; }

static int strs_add(struct mod_strs *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->s[i], s) == 0) return 0; /* two modules may declare the same */
    char **grown = realloc(l->s, (l->n + 1) * sizeof *grown);
    if (!grown) return -1;
    l->s = grown;
    if (!(l->s[l->n] = strdup(s))) return -1;
    l->n++;
    return 0;
}

static void strs_free(struct mod_strs *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->s[i]);
    free(l->s);
    memset(l, 0, sizeof *l);
}

/* ---------------- the host, options, log ---------------- */

static const char *api_domain(const xm_host *h) { return h->vh->domain; }
static const char *api_daemon(const xm_host *h) { return h->ms->daemon; }
static int api_in_sm(const xm_host *h) { return h->ms->in_sm; }
static const char *api_version(void) { return PACKAGE_VERSION; }
static void api_set_data(xm_host *h, void *data) { h->data = data; }
static void *api_get_data(const xm_host *h) { return h->data; }

static const struct conf_opt *lookup_opt(xm_host *h, const char *key)
{
    const struct conf_host *ch = conf_host(h->ms->conf, h->vh->domain, strlen(h->vh->domain));
    int known = 0;
    for (size_t i = 0; i < h->n_asked; i++)
        if (strcmp(h->asked[i], key) == 0) known = 1;
    if (!known && h->n_asked < sizeof h->asked / sizeof *h->asked) {
        char *k = strdup(key);
        if (k) h->asked[h->n_asked++] = k;
    }
    return conf_module_opt(h->ms->conf, ch, h->mod->name, key);
}

static const char *api_option(xm_host *h, const char *key, const char *def)
{
    const struct conf_opt *o = lookup_opt(h, key);
    return o ? o->value : def;
}

static long long api_option_size(xm_host *h, const char *key, long long def, long long min, long long max)
{
    const struct conf_opt *o = lookup_opt(h, key);
    if (!o) return def;
    unsigned long long n;
    if (conf_parse_size(o->value, &n) < 0 || (min > 0 && n < (unsigned long long)min) || max < 0 ||
        n > (unsigned long long)max) {
        log_err("%s:%d: %s.%s: expected a number from %lld to %lld, got '%s'", h->ms->conf->path ? h->ms->conf->path : "?",
                o->line, h->mod->name, key, min, max, o->value);
        return -1;
    }
    return (long long)n;
}

static int api_option_bool(xm_host *h, const char *key, int def)
{
    const struct conf_opt *o = lookup_opt(h, key);
    if (!o) return def;
    const char *v = o->value;
    if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "on") || !strcmp(v, "1")) return 1;
    if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "off") || !strcmp(v, "0")) return 0;
    log_err("%s:%d: %s.%s: expected yes or no, got '%s'", h->ms->conf->path ? h->ms->conf->path : "?", o->line,
            h->mod->name, key, v);
    return -1;
}

static void api_log(const xm_host *h, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void api_log(const xm_host *h, int level, const char *fmt, ...)
{
    char text[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (level < LOG_LVL_ERR) level = LOG_LVL_ERR;
    if (level > LOG_LVL_DEBUG) level = LOG_LVL_DEBUG;
    log_msg(level, "module %s (%s): %s", h->mod->name, h->vh->domain, text);
}

/* ---------------- declarations ---------------- */

static int api_add_feature(xm_host *h, const char *var) { return strs_add(&h->vh->features, var); }
static int api_add_account_feature(xm_host *h, const char *var) { return strs_add(&h->vh->account_features, var); }

static int api_add_identity(xm_host *h, const char *category, const char *type, const char *name)
{
    struct mod_vhost *vh = h->vh;
    struct mod_identity *grown = realloc(vh->ids, (vh->n_ids + 1) * sizeof *grown);
    if (!grown) return -1;
    vh->ids = grown;
    struct mod_identity *id = &vh->ids[vh->n_ids];
    id->category = strdup(category);
    id->type = strdup(type);
    id->name = strdup(name ? name : "");
    id->lang = NULL;
    if (!id->category || !id->type || !id->name) return -1;
    vh->n_ids++;
    return 0;
}

static int api_add_info_form(xm_host *h, const char *xml)
{
    xml_node_t *x = xml_parse(xml, strlen(xml), NULL);
    int ok = x && strcmp(x->name, "x") == 0 && strcmp(x->ns, NS_DATA) == 0;
    xml_free(x);
    if (!ok) {
        log_err("module %s: add_info_form: not a <x xmlns='" NS_DATA "'/> element", h->mod->name);
        return -1;
    }
    return strs_add(&h->vh->forms, xml);
}

static int api_add_stream_feature(xm_host *h, const char *xml, int before_auth)
{
    xml_node_t *x = xml_parse(xml, strlen(xml), NULL);
    xml_free(x);
    if (!x) {
        log_err("module %s: add_stream_feature: not one XML element", h->mod->name);
        return -1;
    }
    return strs_add(before_auth ? &h->vh->stream_pre : &h->vh->stream_post, xml);
}

static int api_disco_info(xm_host *h, const char *jid, const char *node, xm_buf *out)
{
    const struct mod_vhost *vh = h->vh;
    int account = strchr(jid, '@') != NULL, served = 0;
    if (!node) served = 1;
    else if (!account && vh->caps_ver[0]) { /* XEP-0115 §6.2: node#ver answers like no node */
        size_t nl = strlen(MOD_CAPS_NODE);
        served = strncmp(node, MOD_CAPS_NODE, nl) == 0 && node[nl] == '#' && strcmp(node + nl + 1, vh->caps_ver) == 0;
    }
    if (served) buf_add(&out->b, account ? vh->account.data : vh->info.data, account ? vh->account.len : vh->info.len);
    if (account)
        for (size_t i = 0; i < vh->n_account_info; i++)
            served |= vh->account_info[i].disco(vh->account_info[i].h, jid, node, out, vh->account_info[i].data) > 0;
    return served;
}

static int api_disco_items(xm_host *h, const char *jid, const char *node, xm_buf *out)
{
    const struct mod_vhost *vh = h->vh;
    int served = !node;
    if (!strchr(jid, '@'))
        for (size_t i = 0; i < vh->n_items; i++)
            served |= vh->items[i].disco(vh->items[i].h, jid, node, out, vh->items[i].data) > 0;
    return served;
}

/* ---------------- registration ---------------- */

/* Insert a handler into its hook's list, kept sorted by seq (stable: of
 * equal ones, the first registered runs first). */
static int hook_insert(xm_host *h, enum xm_hook hook, struct mod_hook k)
{
    struct mod_vhost *vh = h->vh;
    struct mod_hook *grown = realloc(vh->hooks[hook], (vh->n_hooks[hook] + 1) * sizeof *grown);
    if (!grown) return -1;
    vh->hooks[hook] = grown;
    size_t i = vh->n_hooks[hook];
    while (i > 0 && grown[i - 1].seq > k.seq) {
        grown[i] = grown[i - 1];
        i--;
    }
    grown[i] = k;
    vh->n_hooks[hook]++;
    return 0;
}

static int api_add_stanza_hook(xm_host *h, enum xm_hook hook, int seq, xm_stanza_fn fn, void *data)
{
    if ((unsigned)hook >= XM_HOOK_END || is_event_hook(hook) || !fn) {
        log_err("module %s: add_stanza_hook: %d is not a stanza hook", h->mod->name, (int)hook);
        return -1;
    }
    return hook_insert(h, hook, (struct mod_hook){ seq, fn, NULL, data, h });
}

static int api_add_event_hook(xm_host *h, enum xm_hook hook, int seq, xm_event_fn fn, void *data)
{
    if (!is_event_hook(hook) || !fn) {
        log_err("module %s: add_event_hook: %d is not an event hook", h->mod->name, (int)hook);
        return -1;
    }
    return hook_insert(h, hook, (struct mod_hook){ seq, NULL, fn, data, h });
}

static int api_add_iq_handler(xm_host *h, const char *ns, const char *name, int flags, xm_iq_fn fn, void *data)
{
    struct mod_vhost *vh = h->vh;
    const struct mod_iq *old = modules_iq(vh, ns, name);
    if (old) {
        log_err("module %s: IQ <%s xmlns='%s'/> is already handled by module %s", h->mod->name, name, ns,
                old->h->mod->name);
        return -1;
    }
    if (!fn || !(flags & (XM_IQ_SERVER | XM_IQ_ACCOUNT)) || !(flags & (XM_IQ_GET | XM_IQ_SET))) {
        log_err("module %s: add_iq_handler %s: flags need a target and a type", h->mod->name, ns);
        return -1;
    }
    struct mod_iq *grown = realloc(vh->iqs, (vh->n_iqs + 1) * sizeof *grown);
    if (!grown) return -1;
    vh->iqs = grown;
    struct mod_iq *q = &grown[vh->n_iqs];
    *q = (struct mod_iq){ strdup(ns), strdup(name), flags, fn, data, h };
    if (!q->ns || !q->name) return -1;
    vh->n_iqs++;
    return 0;
}

static int add_fn(struct mod_fn **list, size_t *n, struct mod_fn f)
{
    struct mod_fn *grown = realloc(*list, (*n + 1) * sizeof *grown);
    if (!grown) return -1;
    *list = grown;
    grown[(*n)++] = f;
    return 0;
}

static int api_add_disco_items(xm_host *h, xm_disco_fn fn, void *data)
{
    return add_fn(&h->vh->items, &h->vh->n_items, (struct mod_fn){ NULL, fn, NULL, data, h });
}

static int api_add_account_disco_info(xm_host *h, xm_disco_fn fn, void *data)
{
    return add_fn(&h->vh->account_info, &h->vh->n_account_info, (struct mod_fn){ NULL, fn, NULL, data, h });
}

static int api_add_command(xm_host *h, const char *name,
                           int (*fn)(xm_host *h, const char *bare, int argc, char **argv, xm_buf *out, void *data),
                           void *data)
{
    if (modules_cmd(h->vh, name)) {
        log_err("module %s: command '%s' is already defined", h->mod->name, name);
        return -1;
    }
    char *n = strdup(name);
    if (!n || add_fn(&h->vh->cmds, &h->vh->n_cmds, (struct mod_fn){ n, NULL, fn, data, h }) < 0) {
        free(n);
        return -1;
    }
    return 0;
}

/* ---------------- XML and buffers ---------------- */

#define NODE(e) ((const xml_node_t *)(const void *)(e))
#define XM(e) ((const xm_node *)(const void *)(e))

static const char *api_name(const xm_node *e) { return NODE(e)->name; }
static const char *api_ns(const xm_node *e) { return NODE(e)->ns; }
static const char *api_attr(const xm_node *e, const char *name) { return xml_attr(NODE(e), name); }
static const xm_node *api_child(const xm_node *e, const char *name, const char *ns)
{
    return XM(xml_child(NODE(e), name, ns));
}
static const xm_node *api_first(const xm_node *e) { return XM(xml_first_elem(NODE(e))); }
static const xm_node *api_next(const xm_node *e) { return XM(xml_next_elem(NODE(e))); }
static const char *api_text_of(const xm_node *e)
{
    const char *t = xml_text(NODE(e));
    return t ? t : "";
}
static int api_serialize(const xm_node *e, xm_buf *out) { return xml_serialize(NODE(e), &out->b, NULL); }

static int api_jid_normalize(const char *jid, char *out, size_t size)
{
    return jid_normalize(jid, strlen(jid), out, size) < 0 ? -1 : 0;
}

static void api_bare_jid(const char *jid, char *out, size_t size)
{
    size_t n = strcspn(jid, "/");
    if (!size) return;
    if (n >= size) n = size - 1;
    memcpy(out, jid, n);
    out[n] = '\0';
}

static xm_buf *api_buf_new(void) { return calloc(1, sizeof(xm_buf)); }
static void api_buf_free(xm_buf *b)
{
    if (!b) return;
    buf_free(&b->b);
    free(b);
}
static void api_buf_add(xm_buf *b, const void *p, size_t n) { buf_add(&b->b, p, n); }
static void api_buf_addf(xm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void api_buf_addf(xm_buf *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) {
        buf_add(&b->b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->b.oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    buf_add(&b->b, big, (size_t)n);
    free(big);
}
static void api_buf_add_esc(xm_buf *b, const char *s, size_t n) { buf_add_xml_escaped(&b->b, s, n); }
static const char *api_buf_data(const xm_buf *b, size_t *len)
{
    xm_buf *w = (xm_buf *)(uintptr_t)b; /* buf_cstr appends the NUL, outside len */
    const char *s = buf_cstr(&w->b);
    if (len) *len = s ? w->b.len : 0;
    return s;
}
static void api_buf_clear(xm_buf *b) { buf_clear(&b->b); }

/* ---------------- stand-ins for xmpp-c2s ---------------- */

static enum xm_kind no_kind(const xm_stanza *st) { (void)st; return XM_MESSAGE; }
static const char *no_str(const xm_stanza *st) { (void)st; return ""; }
static xm_host *no_host(const xm_stanza *st) { (void)st; return NULL; }
static const xm_node *no_xml(xm_stanza *st) { (void)st; return NULL; }
static const char *no_text(const xm_stanza *st, size_t *len) { (void)st; if (len) *len = 0; return ""; }
static int no_replace(xm_stanza *st, const char *xml, size_t len) { (void)st; (void)xml; (void)len; return -1; }
static void no_error(xm_stanza *st, const char *c, const char *t, const char *a) { (void)st; (void)c; (void)t; (void)a; }
static void no_result(xm_stanza *st, const char *p) { (void)st; (void)p; }
static int no_send(xm_host *h, const char *xml, size_t len) { (void)h; (void)xml; (void)len; return -1; }
static int no_user(xm_host *h, const char *bare) { (void)h; (void)bare; return -1; }
static int no_each_session(xm_host *h, const char *bare, void (*fn)(const char *, int, int, void *), void *arg)
{
    (void)h; (void)bare; (void)fn; (void)arg;
    return -1;
}
static int no_last(xm_host *h, const char *bare, long long *when, xm_buf *status)
{
    (void)h; (void)bare; (void)when; (void)status;
    return -1;
}
static int no_roster(xm_host *h, const char *bare, const char *contact, char sub[8], xm_buf *groups)
{
    (void)h; (void)bare; (void)contact; (void)sub; (void)groups;
    return -1;
}
static long long no_started(xm_host *h) { (void)h; return 0; }
static int no_send_presence(xm_host *h, const char *full, const char *to) { (void)h; (void)full; (void)to; return -1; }
static xm_stanza *no_iq_keep(xm_stanza *iq) { (void)iq; return NULL; }
static int no_ask_shards(xm_host *h, const char *q, size_t len,
                         void (*done)(xm_host *, const char *const *, const size_t *, size_t, void *), void *arg)
{
    (void)h; (void)q; (void)len; (void)done; (void)arg;
    return -1;
}

static int api_set_shard_handler(xm_host *h, int (*fn)(xm_host *, const char *, size_t, xm_buf *, void *),
                                 void *data)
{
    h->shard_fn = fn;
    h->shard_data = data;
    return 0;
}

static int no_each_roster_item(xm_host *h, const char *bare,
                               void (*fn)(const char *, const char *, const char *, size_t, void *), void *arg)
{
    (void)h; (void)bare; (void)fn; (void)arg;
    return -1;
}
static xm_store *no_store(xm_host *h, const char *name) { (void)h; (void)name; return NULL; }
static int no_get(xm_store *s, const char *k, size_t kl, xm_buf *out) { (void)s; (void)k; (void)kl; (void)out; return -1; }
static int no_put(xm_store *s, const char *k, size_t kl, const void *v, size_t vl)
{
    (void)s; (void)k; (void)kl; (void)v; (void)vl;
    return -1;
}
static int no_del(xm_store *s, const char *k, size_t kl) { (void)s; (void)k; (void)kl; return -1; }
static int no_each(xm_store *s, const char *p, size_t pl, int (*fn)(const char *, size_t, const char *, size_t, void *),
                   void *arg)
{
    (void)s; (void)p; (void)pl; (void)fn; (void)arg;
    return -1;
}

void modules_api_init(struct xm_api *a)
{
    memset(a, 0, sizeof *a);
    a->abi = XMPPD_MODULE_ABI;
    a->size = sizeof *a;
    a->domain = api_domain;
    a->daemon = api_daemon;
    a->in_sm = api_in_sm;
    a->option = api_option;
    a->option_size = api_option_size;
    a->option_bool = api_option_bool;
    a->version = api_version;
    a->set_data = api_set_data;
    a->get_data = api_get_data;
    a->log = api_log;
    a->add_feature = api_add_feature;
    a->add_account_feature = api_add_account_feature;
    a->add_identity = api_add_identity;
    a->add_info_form = api_add_info_form;
    a->add_stream_feature = api_add_stream_feature;
    a->disco_info = api_disco_info;
    a->disco_items = api_disco_items;
    a->add_stanza_hook = api_add_stanza_hook;
    a->add_event_hook = api_add_event_hook;
    a->add_iq_handler = api_add_iq_handler;
    a->add_disco_items = api_add_disco_items;
    a->add_account_disco_info = api_add_account_disco_info;
    a->add_command = api_add_command;
    a->kind = no_kind;
    a->type = no_str;
    a->from = no_str;
    a->to = no_str;
    a->host = no_host;
    a->xml = no_xml;
    a->text = no_text;
    a->replace = no_replace;
    a->error = no_error;
    a->iq_result = no_result;
    a->send = no_send;
    a->user_exists = no_user;
    a->each_session = no_each_session;
    a->last_unavailable = no_last;
    a->roster_item = no_roster;
    a->started = no_started;
    a->store = no_store;
    a->get = no_get;
    a->put = no_put;
    a->del = no_del;
    a->each = no_each;
    a->name = api_name;
    a->ns = api_ns;
    a->attr = api_attr;
    a->child = api_child;
    a->first = api_first;
    a->next = api_next;
    a->text_of = api_text_of;
    a->serialize = api_serialize;
    a->buf_new = api_buf_new;
    a->buf_free = api_buf_free;
    a->buf_add = api_buf_add;
    a->buf_addf = api_buf_addf;
    a->buf_add_esc = api_buf_add_esc;
    a->buf_data = api_buf_data;
    a->buf_clear = api_buf_clear;
    a->jid_normalize = api_jid_normalize;
    a->bare_jid = api_bare_jid;
    a->send_presence = no_send_presence;
    a->each_roster_item = no_each_roster_item;
    a->iq_keep = no_iq_keep;
    a->ask_shards = no_ask_shards;
    a->set_shard_handler = api_set_shard_handler;
}

/* ---------------- disco#info and XEP-0115 ---------------- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int cmp_id(const void *a, const void *b)
{
    const struct mod_identity *x = a, *y = b;
    int c = strcmp(x->category, y->category);
    if (!c) c = strcmp(x->type, y->type);
    if (!c) c = strcmp(x->lang ? x->lang : "", y->lang ? y->lang : "");
    if (!c) c = strcmp(x->name, y->name);
    return c;
}

/* A form's FORM_TYPE and its fields as "var<value<value<" strings sorted
 * by var, the way XEP-0115 §5.4 step 3.6 orders them. */
static int form_string(const char *xml, struct buf *out, char **form_type)
{
    int rc = -1;
    char **fields = NULL;
    size_t n = 0;
    xml_node_t *x = xml_parse(xml, strlen(xml), NULL);
    if (!x) return -1;
    *form_type = NULL;
    for (xml_node_t *f = xml_child(x, "field", NS_DATA); f; f = xml_next_elem(f)) {
        if (strcmp(f->name, "field") != 0) continue;
        const char *var = xml_attr(f, "var");
        if (!var) continue;
        struct buf fb = { 0 };
        char *vals[64];
        size_t nv = 0;
        for (xml_node_t *v = xml_child(f, "value", NS_DATA); v && nv < 64; v = xml_next_elem(v))
            if (strcmp(v->name, "value") == 0) vals[nv++] = (char *)(uintptr_t)xml_text(v);
        if (strcmp(var, "FORM_TYPE") == 0) {
            if (nv) *form_type = strdup(vals[0] ? vals[0] : "");
            continue;
        }
        qsort(vals, nv, sizeof *vals, cmp_str);
        buf_adds(&fb, var);
        buf_adds(&fb, "<");
        for (size_t i = 0; i < nv; i++) {
            buf_adds(&fb, vals[i] ? vals[i] : "");
            buf_adds(&fb, "<");
        }
        char **grown = realloc(fields, (n + 1) * sizeof *grown);
        if (!grown) {
            buf_free(&fb);
            goto out;
        }
        fields = grown;
        fields[n++] = strdup(buf_cstr(&fb) ? buf_cstr(&fb) : "");
        buf_free(&fb);
    }
    if (!*form_type) goto out;
    if (n > 1) qsort(fields, n, sizeof *fields, cmp_str);
    buf_adds(out, *form_type);
    buf_adds(out, "<");
    for (size_t i = 0; i < n; i++) buf_adds(out, fields[i] ? fields[i] : "");
    rc = 0;
out:
    for (size_t i = 0; i < n; i++) free(fields[i]);
    free(fields);
    xml_free(x);
    return rc;
}

struct form_s { char *type; struct buf s; };

static int cmp_form(const void *a, const void *b)
{
    return strcmp(((const struct form_s *)a)->type, ((const struct form_s *)b)->type);
}

int modules_caps_ver(struct mod_identity *ids, size_t n_ids, char **features, size_t n_features, char *const *forms,
                     size_t n_forms, char out[32])
{
    struct buf s = { 0 };
    int rc = -1;
    if (n_ids > 1) qsort(ids, n_ids, sizeof *ids, cmp_id); /* qsort(NULL, 0) is undefined */
    if (n_features > 1) qsort(features, n_features, sizeof *features, cmp_str);
    /* §5.1 steps 2-4: category/type/lang/name< per identity, var< per feature */
    for (size_t i = 0; i < n_ids; i++)
        buf_addf(&s, "%s/%s/%s/%s<", ids[i].category, ids[i].type, ids[i].lang ? ids[i].lang : "", ids[i].name);
    for (size_t i = 0; i < n_features; i++) {
        buf_adds(&s, features[i]);
        buf_adds(&s, "<");
    }
    /* step 5: extended forms sorted by FORM_TYPE (forms without one are skipped) */
    struct form_s *f = calloc(n_forms + 1, sizeof *f);
    if (!f) goto out;
    size_t nf = 0;
    for (size_t i = 0; i < n_forms; i++) {
        if (form_string(forms[i], &f[nf].s, &f[nf].type) == 0) nf++;
        else buf_free(&f[nf].s);
    }
    qsort(f, nf, sizeof *f, cmp_form);
    for (size_t i = 0; i < nf; i++) {
        buf_add(&s, f[i].s.data, f[i].s.len);
        buf_free(&f[i].s);
        free(f[i].type);
    }
    free(f);
    if (s.oom) goto out;
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)(s.data ? s.data : ""), s.len, md);
    rc = util_b64_encode(md, sizeof md, out, 32) ? 0 : -1;
out:
    buf_free(&s);
    return rc;
}

/* The disco#info children of the server and of accounts, and the caps 'ver'. */
static int build_info(struct mod_vhost *vh)
{
    char ver[32];
    if (modules_caps_ver(vh->ids, vh->n_ids, vh->features.s, vh->features.n, vh->forms.s, vh->forms.n, ver) < 0)
        return -1;
    if (vh->account_features.n > 1)
        qsort(vh->account_features.s, vh->account_features.n, sizeof *vh->account_features.s, cmp_str);
    buf_clear(&vh->info);
    for (size_t i = 0; i < vh->n_ids; i++) {
        const struct mod_identity *id = &vh->ids[i];
        buf_adds(&vh->info, "<identity category='");
        buf_add_xml_escaped(&vh->info, id->category, strlen(id->category));
        buf_adds(&vh->info, "' type='");
        buf_add_xml_escaped(&vh->info, id->type, strlen(id->type));
        if (*id->name) {
            buf_adds(&vh->info, "' name='");
            buf_add_xml_escaped(&vh->info, id->name, strlen(id->name));
        }
        buf_adds(&vh->info, "'/>");
    }
    for (size_t i = 0; i < vh->features.n; i++) {
        buf_adds(&vh->info, "<feature var='");
        buf_add_xml_escaped(&vh->info, vh->features.s[i], strlen(vh->features.s[i]));
        buf_adds(&vh->info, "'/>");
    }
    for (size_t i = 0; i < vh->forms.n; i++) buf_adds(&vh->info, vh->forms.s[i]);
    /* an account: XEP-0030 identity account/registered */
    buf_clear(&vh->account);
    buf_adds(&vh->account, "<identity category='account' type='registered'/>");
    for (size_t i = 0; i < vh->account_features.n; i++) {
        buf_adds(&vh->account, "<feature var='");
        buf_add_xml_escaped(&vh->account, vh->account_features.s[i], strlen(vh->account_features.s[i]));
        buf_adds(&vh->account, "'/>");
    }
    if (vh->info.oom || vh->account.oom) return -1;
    /* without disco nobody can check the hash: send none (XEP-0115 §6.2) */
    snprintf(vh->caps_ver, sizeof vh->caps_ver, "%s", modules_has(vh, "disco") ? ver : "");
    return 0;
}

void modules_stream_features(const struct mod_vhost *vh, int before_auth, struct buf *out)
{
    const struct mod_strs *l = before_auth ? &vh->stream_pre : &vh->stream_post;
    for (size_t i = 0; i < l->n; i++) buf_adds(out, l->s[i]);
    if (!before_auth && vh->caps_ver[0]) /* XEP-0115 §6.3 */
        buf_addf(out, "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='" MOD_CAPS_NODE "' ver='%s'/>",
                 vh->caps_ver);
}

/* ---------------- loading ---------------- */

static const struct xm_module *builtin(const char *name)
{
    for (size_t i = 0; xm_builtin_modules[i]; i++)
        if (strcmp(xm_builtin_modules[i]->name, name) == 0) return xm_builtin_modules[i];
    return NULL;
}

/* name.so from module_dir, loaded once for all hosts. */
static const struct xm_module *external(struct modules *ms, const char *name, const char **source, char *err,
                                        size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.so", ms->conf->module_dir, name);
    for (size_t i = 0; i < ms->n_dl; i++)
        if (strcmp(ms->dl_path[i], path) == 0) {
            *source = ms->dl_path[i];
            return ms->dl_mod[i];
        }
    if (ms->n_dl >= CONF_MAX_MODULES) {
        snprintf(err, errlen, "too many external modules");
        return NULL;
    }
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        snprintf(err, errlen, "module %s is not built in and %s cannot be loaded: %s", name, path, dlerror());
        return NULL;
    }
    const struct xm_module *m = dlsym(dl, "xmppd_module");
    if (!m) {
        snprintf(err, errlen, "%s defines no xmppd_module: not an xmppd module", path);
        dlclose(dl);
        return NULL;
    }
    if (m->abi != XMPPD_MODULE_ABI) {
        snprintf(err, errlen,
                 "%s was built for module ABI %u, this xmppd (%s) has ABI %u: rebuild it against this "
                 "version's xmppd/module.h",
                 path, m->abi, PACKAGE_VERSION, (unsigned)XMPPD_MODULE_ABI);
        dlclose(dl);
        return NULL;
    }
    if (!m->name || strcmp(m->name, name) != 0 || !m->init) {
        snprintf(err, errlen, "%s calls itself '%s', not '%s' (or has no init)", path, m->name ? m->name : "", name);
        dlclose(dl);
        return NULL;
    }
    ms->dl[ms->n_dl] = dl;
    ms->dl_path[ms->n_dl] = strdup(path);
    ms->dl_mod[ms->n_dl] = m;
    if (!ms->dl_path[ms->n_dl]) {
        dlclose(dl);
        return NULL;
    }
    *source = ms->dl_path[ms->n_dl++];
    return m;
}

/* Every option given for a module loaded on vh must have been read by it. */
static int check_options(struct modules *ms, struct mod_vhost *vh, const struct conf_host *ch, char *err,
                         size_t errlen)
{
    const struct conf *c = ms->conf;
    for (int pass = 0; pass < 2; pass++) {
        const struct conf_opt *opts = pass ? ch->opts : c->opts;
        size_t n = pass ? ch->n_opts : c->n_opts;
        for (size_t i = 0; i < n; i++) {
            xm_host *h = NULL;
            for (size_t j = 0; j < vh->n; j++)
                if (strcmp(vh->mods[j]->mod->name, opts[i].module) == 0) h = vh->mods[j];
            if (!h) {
                if (pass) { /* a host's own section names a module it does not load */
                    snprintf(err, errlen, "%s:%d: %s.%s: module %s is not enabled for %s", c->path ? c->path : "?",
                             opts[i].line, opts[i].module, opts[i].key, opts[i].module, vh->domain);
                    return -1;
                }
                continue;
            }
            int asked = 0;
            for (size_t k = 0; k < h->n_asked; k++)
                if (strcmp(h->asked[k], opts[i].key) == 0) asked = 1;
            if (!asked) {
                snprintf(err, errlen, "%s:%d: module %s has no option '%s'", c->path ? c->path : "?", opts[i].line,
                         opts[i].module, opts[i].key);
                return -1;
            }
        }
    }
    return 0;
}

int modules_load(struct modules *ms, const struct conf *c, const char *daemon, int in_sm,
                 const struct xm_api *api, char *err, size_t errlen)
{
    memset(ms, 0, sizeof *ms);
    ms->conf = c;
    ms->daemon = daemon;
    ms->in_sm = in_sm;
    ms->api = *api;
    snprintf(err, errlen, "out of memory");
    ms->v = calloc(c->n_hosts, sizeof *ms->v);
    if (!ms->v) return -1;
    ms->n = c->n_hosts;
    for (size_t hi = 0; hi < c->n_hosts; hi++) {
        const struct conf_host *ch = &c->hosts[hi];
        struct mod_vhost *vh = &ms->v[hi];
        if (!(vh->domain = strdup(ch->domain))) return -1;
        const char *names[CONF_MAX_MODULES + 1];
        size_t n = 0;
        names[n++] = "core"; /* RFC 6120/6121 declarations: always */
        n += conf_host_modules(c, ch, names + n, CONF_MAX_MODULES);
        for (size_t i = 0; i < n; i++) {
            if (i > 0 && strcmp(names[i], "core") == 0) continue;
            /* show_version = no (xmppd.conf(5)) is the old way to say it */
            if (strcmp(names[i], "version") == 0 && !c->show_version) continue;
            const char *source = "built-in";
            const struct xm_module *m = builtin(names[i]);
            if (!m && !(m = external(ms, names[i], &source, err, errlen))) return -1;
            xm_host *h = calloc(1, sizeof *h);
            if (!h) return -1;
            *h = (xm_host){ .mod = m, .vh = vh, .ms = ms, .source = source };
            vh->mods[vh->n++] = h;
            if (m->init(h, &ms->api) < 0) {
                snprintf(err, errlen, "module %s refused to start for %s (see the log line before)", m->name,
                         vh->domain);
                return -1;
            }
        }
        if (check_options(ms, vh, ch, err, errlen) < 0) return -1;
        if (build_info(vh) < 0) return -1;
    }
    return 0;
}

void modules_unload(struct modules *ms)
{
    for (size_t hi = 0; hi < ms->n; hi++) {
        struct mod_vhost *vh = &ms->v[hi];
        for (size_t i = vh->n; i-- > 0;) {
            xm_host *h = vh->mods[i];
            if (h->mod->stop) h->mod->stop(h, &ms->api);
            for (size_t k = 0; k < h->n_asked; k++) free(h->asked[k]);
            free(h);
        }
        strs_free(&vh->features);
        strs_free(&vh->account_features);
        strs_free(&vh->forms);
        strs_free(&vh->stream_pre);
        strs_free(&vh->stream_post);
        for (size_t i = 0; i < vh->n_ids; i++) {
            free(vh->ids[i].category);
            free(vh->ids[i].type);
            free(vh->ids[i].name);
        }
        free(vh->ids);
        for (int k = 0; k < XM_HOOK_END; k++) free(vh->hooks[k]);
        for (size_t i = 0; i < vh->n_iqs; i++) {
            free(vh->iqs[i].ns);
            free(vh->iqs[i].name);
        }
        free(vh->iqs);
        for (size_t i = 0; i < vh->n_cmds; i++) free(vh->cmds[i].name);
        free(vh->cmds);
        free(vh->items);
        free(vh->account_info);
        buf_free(&vh->info);
        buf_free(&vh->account);
        free(vh->domain);
    }
    free(ms->v);
    for (size_t i = 0; i < ms->n_dl; i++) {
        dlclose(ms->dl[i]);
        free(ms->dl_path[i]);
    }
    memset(ms, 0, sizeof *ms);
}

struct mod_vhost *modules_vhost(const struct modules *ms, const char *domain, size_t len)
{
    for (size_t i = 0; i < ms->n; i++)
        if (strlen(ms->v[i].domain) == len && strncasecmp(ms->v[i].domain, domain, len) == 0) return &ms->v[i];
    return NULL;
}

const struct mod_iq *modules_iq(const struct mod_vhost *vh, const char *ns, const char *name)
{
    for (size_t i = 0; i < vh->n_iqs; i++)
        if (strcmp(vh->iqs[i].ns, ns) == 0 && strcmp(vh->iqs[i].name, name) == 0) return &vh->iqs[i];
    return NULL;
}

const struct mod_fn *modules_cmd(const struct mod_vhost *vh, const char *name)
{
    for (size_t i = 0; i < vh->n_cmds; i++)
        if (strcmp(vh->cmds[i].name, name) == 0) return &vh->cmds[i];
    return NULL;
}

xm_host *modules_host(const struct mod_vhost *vh, const char *name)
{
    for (size_t i = 0; i < vh->n; i++)
        if (strcmp(vh->mods[i]->mod->name, name) == 0) return vh->mods[i];
    return NULL;
}

int modules_has(const struct mod_vhost *vh, const char *name)
{
    for (size_t i = 0; i < vh->n; i++)
        if (strcmp(vh->mods[i]->mod->name, name) == 0) return 1;
    return 0;
}
