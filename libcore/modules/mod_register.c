/* mod_register.c - XEP-0077 in-band registration: the switch, the
 * declarations and the options. The protocol itself is served by
 * xmpp-c2s (cmd/xmpp-c2s/c2s_register.c) for the hosts whose `modules`
 * list names this module: the password arrives there and is turned into
 * SCRAM verifiers there, so that it never crosses another socket and no
 * PBKDF2 runs in xmpp-sm's loop; the shard only stores the verifiers.
 *
 * Declared: the stream feature of XEP-0077 §6 (xmpp-c2s offers the
 * features "before authentication" on TLS-protected streams only, the
 * only ones where registration is served) and the disco feature
 * jabber:iq:register (§9), which also tells an authenticated client that
 * password change and account removal (§3.2, §3.3) work in-band.
 *
 * Option register.per_ip_per_hour (default 5, 0 = no limit): accounts
 * one client address (IPv4, or IPv6 /64) may register per hour. */
#include <stdlib.h>
#include <string.h>

#include "xmppd/module.h"

#define NS_REGISTER "jabber:iq:register"
#define FEATURE "<register xmlns='http://jabber.org/features/iq-register'/>"
#define PER_IP_MAX 1000000

/* A whole number in [0, PER_IP_MAX], digits only (xmpp-c2s parses the
 * value again with the same rule); 0 or -1. */
static int parse_count(const char *s, unsigned long *out)
{
    char *end;
    if (!s || *s < '0' || *s > '9') return -1;
    unsigned long v = strtoul(s, &end, 10);
    if (*end || v > PER_IP_MAX) return -1;
    *out = v;
    return 0;
}

static int register_init(xm_host *h, const struct xm_api *api)
{
    unsigned long per_ip;
    /* read in both daemons, so that a bad value stops the start */
    const char *v = api->option(h, "per_ip_per_hour", "5");
    if (parse_count(v, &per_ip) < 0) {
        api->log(h, 3, "register.per_ip_per_hour = %s: expected a whole number from 0 (no limit) to %d", v,
                 PER_IP_MAX);
        return -1;
    }
    if (api->add_stream_feature(h, FEATURE, 1) < 0 || api->add_feature(h, NS_REGISTER) < 0) return -1;
    return 0;
}

const struct xm_module xm_mod_register = { XMPPD_MODULE_ABI, "register",
                                           "XEP-0077 in-band registration, password change and account removal",
                                           register_init, NULL };
