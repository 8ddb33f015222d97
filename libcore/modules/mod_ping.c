/* mod_ping.c - XEP-0199 XMPP ping, answered for the server and for
 * accounts (a ping to a bare JID is answered by the server, RFC 6121
 * §8.5.2.1.3, XEP-0199 §4.2). */
#include "xmppd/module.h"

#define NS_PING "urn:xmpp:ping"

static const struct xm_api *api;

static void ping(xm_stanza *iq, const xm_node *payload, void *data)
{
    (void)payload;
    (void)data;
    api->iq_result(iq, NULL);
}

static int ping_init(xm_host *h, const struct xm_api *a)
{
    api = a;
    if (a->add_feature(h, NS_PING) < 0 || a->add_account_feature(h, NS_PING) < 0) return -1;
    return a->add_iq_handler(h, NS_PING, "ping", XM_IQ_SERVER | XM_IQ_ACCOUNT | XM_IQ_GET, ping, NULL);
}

const struct xm_module xm_mod_ping = { XMPPD_MODULE_ABI, "ping", "XEP-0199 ping", ping_init, NULL };
