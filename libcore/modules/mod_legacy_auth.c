/* mod_legacy_auth.c - the switch for XEP-0078 non-SASL authentication.
 * The protocol itself is served by xmpp-c2s (cmd/xmpp-c2s/c2s_legacy.c),
 * on pre-1.0 streams of the direct TLS port, for the hosts whose `modules`
 * list names this module; the module exists so that a host enables it
 * like any other service. It declares nothing: XEP-0078 §4 advertises
 * iq-auth as a stream feature of 1.0 streams, which authenticate with SASL
 * here, and a pre-1.0 stream gets no stream features at all. */
#include <string.h>

#include "xmppd/module.h"

static int legacy_auth_init(xm_host *h, const struct xm_api *api)
{
    /* said once per host, by the daemon that serves it */
    if (strcmp(api->daemon(h), "xmpp-c2s") == 0)
        api->log(h, 4,
                 "XEP-0078 is deprecated: %s accepts passwords over jabber:iq:auth from pre-1.0 clients "
                 "on the direct TLS port",
                 api->domain(h));
    return 0;
}

const struct xm_module xm_mod_legacy_auth = { XMPPD_MODULE_ABI, "legacy_auth",
                                              "XEP-0078 non-SASL authentication for pre-1.0 clients (direct TLS)",
                                              legacy_auth_init, NULL };
