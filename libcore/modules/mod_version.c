/* mod_version.c - the built-in module "version": XEP-0092 software version
 * of the server (to its domain): name "xmppd", the version, and the
 * operating system's name from uname(2) unless version.show_os = no (the
 * XEP's security considerations ask for that switch). The global
 * show_version = no keeps this module from being loaded at all. */
#include "xmppd/module.h"

#include <string.h>
#include <sys/utsname.h>

#define NS_VERSION "jabber:iq:version"

static const struct xm_api *api;

static void version_iq(xm_stanza *iq, const xm_node *payload, void *data)
{
    (void)payload;
    const char *xml = api->buf_data(data, NULL);
    if (!xml) {
        api->error(iq, "internal-server-error", NULL, NULL);
        return;
    }
    api->iq_result(iq, xml);
}

static int version_init(xm_host *h, const struct xm_api *a)
{
    api = a;
    int show_os = api->option_bool(h, "show_os", 1);
    if (show_os < 0) return -1;
    /* the answer never changes: made once per host */
    xm_buf *b = api->buf_new();
    if (!b) return -1;
    api->buf_addf(b, "<query xmlns='" NS_VERSION "'><name>xmppd</name><version>");
    const char *v = api->version();
    api->buf_add_esc(b, v, strlen(v));
    api->buf_addf(b, "</version>");
    struct utsname u;
    if (show_os && uname(&u) == 0) {
        api->buf_addf(b, "<os>");
        api->buf_add_esc(b, u.sysname, strlen(u.sysname));
        api->buf_addf(b, "</os>");
    }
    api->buf_addf(b, "</query>");
    if (!api->buf_data(b, NULL)) {
        api->log(h, 3, "out of memory");
        api->buf_free(b);
        return -1;
    }
    api->set_data(h, b);
    if (api->add_feature(h, NS_VERSION) < 0) return -1;
    return api->add_iq_handler(h, NS_VERSION, "query", XM_IQ_SERVER | XM_IQ_GET, version_iq, b) < 0 ? -1 : 0;
}

static void version_stop(xm_host *h, const struct xm_api *a)
{
    xm_buf *b = a->get_data(h);
    if (b) a->buf_free(b);
    a->set_data(h, NULL);
}

const struct xm_module xm_mod_version = {
    XMPPD_MODULE_ABI, "version", "XEP-0092 software version of the server", version_init, version_stop
};
