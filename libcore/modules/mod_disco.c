/* mod_disco.c - XEP-0030 service discovery for the server and for
 * accounts. What is listed is assembled by xmppd from the declarations of
 * the host's modules (api->disco_info), so nothing is advertised that no
 * enabled module serves; the XEP-0115 node#ver is answered too (§6.2). */
#include "xmppd/module.h"

#include <string.h>

#define NS_INFO "http://jabber.org/protocol/disco#info"
#define NS_ITEMS "http://jabber.org/protocol/disco#items"

static const struct xm_api *api;

/* The JID asked about: the 'to' (domain or bare JID), or the sender's own
 * account for an IQ without 'to' (RFC 6120 §10.3.3). */
static void target(xm_stanza *iq, char *out, size_t size)
{
    const char *to = api->to(iq);
    api->bare_jid(*to ? to : api->from(iq), out, size);
}

static void answer(xm_stanza *iq, const xm_node *q, const char *ns,
                   int (*fill)(xm_host *, const char *, const char *, xm_buf *))
{
    char jid[3072];
    const char *node = api->attr(q, "node");
    xm_buf *b = api->buf_new();
    xm_buf *inner = api->buf_new();
    if (!b || !inner) goto out;
    target(iq, jid, sizeof jid);
    if (!fill(api->host(iq), jid, node, inner)) {
        api->error(iq, "item-not-found", NULL, NULL); /* XEP-0030 §3.2 / §4.2 */
        goto out;
    }
    size_t n;
    const char *body = api->buf_data(inner, &n);
    api->buf_addf(b, "<query xmlns='%s'", ns);
    if (node) {
        api->buf_add(b, " node='", 7);
        api->buf_add_esc(b, node, strlen(node));
        api->buf_add(b, "'", 1);
    }
    api->buf_add(b, ">", 1);
    if (body) api->buf_add(b, body, n);
    api->buf_add(b, "</query>", 8);
    const char *x = api->buf_data(b, NULL);
    if (x) api->iq_result(iq, x);
    else api->error(iq, "internal-server-error", NULL, NULL);
out:
    api->buf_free(b);
    api->buf_free(inner);
}

static void info(xm_stanza *iq, const xm_node *q, void *data)
{
    (void)data;
    answer(iq, q, NS_INFO, api->disco_info);
}

static void items(xm_stanza *iq, const xm_node *q, void *data)
{
    (void)data;
    answer(iq, q, NS_ITEMS, api->disco_items);
}

static int disco_init(xm_host *h, const struct xm_api *a)
{
    api = a;
    if (a->add_feature(h, NS_INFO) < 0 || a->add_feature(h, NS_ITEMS) < 0 || a->add_account_feature(h, NS_INFO) < 0)
        return -1;
    if (a->add_iq_handler(h, NS_INFO, "query", XM_IQ_SERVER | XM_IQ_ACCOUNT | XM_IQ_GET, info, NULL) < 0) return -1;
    return a->add_iq_handler(h, NS_ITEMS, "query", XM_IQ_SERVER | XM_IQ_ACCOUNT | XM_IQ_GET, items, NULL);
}

const struct xm_module xm_mod_disco = {
    XMPPD_MODULE_ABI, "disco", "XEP-0030 service discovery (and the XEP-0115 node)", disco_init, NULL
};
