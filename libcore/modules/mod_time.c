/* mod_time.c - the built-in module "time": XEP-0202 entity time. The
 * server answers <time xmlns='urn:xmpp:time'/> sent to its domain with its
 * clock in UTC and the offset of its local time zone. Queries to a user's
 * JID are not answered here: only the user's client knows its time zone. */
#define _DEFAULT_SOURCE /* tm_gmtoff */
#include "xmppd/module.h"

#include <stdio.h>
#include <time.h>

#define NS_TIME "urn:xmpp:time"

static const struct xm_api *api;

static void time_iq(xm_stanza *iq, const xm_node *payload, void *data)
{
    (void)payload;
    (void)data;
    time_t now = time(NULL);
    struct tm utc, local;
    if (!gmtime_r(&now, &utc) || !localtime_r(&now, &local)) {
        api->error(iq, "internal-server-error", NULL, NULL);
        return;
    }
    /* XEP-0082 TZD: "+hh:mm" or "-hh:mm" (tm_gmtoff is seconds east of UTC) */
    long off = local.tm_gmtoff;
    char sign = off < 0 ? '-' : '+';
    if (off < 0) off = -off;
    char xml[160];
    snprintf(xml, sizeof xml,
             "<time xmlns='" NS_TIME "'><tzo>%c%02ld:%02ld</tzo>"
             "<utc>%04d-%02d-%02dT%02d:%02d:%02dZ</utc></time>",
             sign, off / 3600, off / 60 % 60,
             utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec);
    api->iq_result(iq, xml);
}

static int time_init(xm_host *h, const struct xm_api *a)
{
    api = a;
    /* read the zone once now, not from the event loop at the first query
     * (localtime_r need not do it itself) */
    tzset();
    if (api->add_feature(h, NS_TIME) < 0) return -1;
    return api->add_iq_handler(h, NS_TIME, "time", XM_IQ_SERVER | XM_IQ_GET, time_iq, NULL) < 0 ? -1 : 0;
}

const struct xm_module xm_mod_time = {
    XMPPD_MODULE_ABI, "time", "XEP-0202 entity time of the server", time_init, NULL
};
