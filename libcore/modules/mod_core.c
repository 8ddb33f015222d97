/* mod_core.c - what every host has, declared like any module's: the
 * server's identity (XEP-0030), offline storage (XEP-0160 'msgoffline',
 * served by xmpp-sm itself) and the RFC 6121 stream features roster
 * versioning (§2.6.1) and subscription pre-approval (§3.4). Always loaded,
 * never listed in `modules`. */
#include "xmppd/module.h"

static int core_init(xm_host *h, const struct xm_api *api)
{
    if (api->add_identity(h, "server", "im", "xmppd") < 0 || api->add_feature(h, "msgoffline") < 0 ||
        api->add_stream_feature(h, "<ver xmlns='urn:xmpp:features:rosterver'/>", 0) < 0 ||
        api->add_stream_feature(h, "<sub xmlns='urn:xmpp:features:pre-approval'/>", 0) < 0)
        return -1;
    return 0;
}

const struct xm_module xm_mod_core = {
    XMPPD_MODULE_ABI, "core", "RFC 6121 declarations: server identity, msgoffline, rosterver, pre-approval",
    core_init, NULL
};
