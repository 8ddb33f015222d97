/* mod_contact.c - the built-in module "contact_info": XEP-0157 contact
 * addresses of the service. The options contact_info.abuse, .admin,
 * .feedback, .sales, .security and .support each hold a space-separated
 * list of URIs (mailto:, xmpp:, https: ...); the ones set are published in
 * the server's disco#info as the XEP-0128 form
 * http://jabber.org/network/serverinfo (and so count in its XEP-0115 hash).
 * With none set the module adds nothing. */
#include "xmppd/module.h"

#include <ctype.h>
#include <string.h>

/* the option keys and the XEP-0157 §5.1 field of each */
static const char *const kinds[] = { "abuse", "admin", "feedback", "sales", "security", "support" };

/* An absolute URI starts with a scheme (RFC 3986 §3.1) followed by ':' and
 * something after it. */
static int is_uri(const char *s, size_t n)
{
    size_t i = 0;
    if (n == 0 || !isalpha((unsigned char)s[0])) return 0;
    while (i < n && (isalnum((unsigned char)s[i]) || s[i] == '+' || s[i] == '-' || s[i] == '.')) i++;
    return i < n && s[i] == ':' && i + 1 < n;
}

static int contact_init(xm_host *h, const struct xm_api *api)
{
    int rc = -1, fields = 0;
    xm_buf *b = api->buf_new();
    if (!b) goto out;
    api->buf_addf(b, "<x xmlns='jabber:x:data' type='result'>"
                     "<field var='FORM_TYPE' type='hidden'><value>http://jabber.org/network/serverinfo</value></field>");
    /* every option is read, set or not: an option never asked for is an
     * error at start-up */
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        const char *list = api->option(h, kinds[k], NULL);
        int values = 0;
        for (const char *p = list; p && *p;) {
            while (*p == ' ' || *p == '\t') p++;
            size_t n = strcspn(p, " \t");
            if (n == 0) break;
            if (!is_uri(p, n)) {
                api->log(h, 3, "contact_info.%s: \"%.*s\" is not a URI (mailto:..., xmpp:..., https://...)",
                         kinds[k], (int)n, p);
                goto out;
            }
            if (values++ == 0) api->buf_addf(b, "<field var='%s-addresses' type='list-multi'>", kinds[k]);
            api->buf_addf(b, "<value>");
            api->buf_add_esc(b, p, n);
            api->buf_addf(b, "</value>");
            p += n;
        }
        if (values) {
            api->buf_addf(b, "</field>");
            fields++;
        }
    }
    api->buf_addf(b, "</x>");
    const char *xml = api->buf_data(b, NULL);
    if (!xml) {
        api->log(h, 3, "out of memory");
        goto out;
    }
    if (fields && api->add_info_form(h, xml) < 0) goto out;
    rc = 0;
out:
    if (b) api->buf_free(b);
    return rc;
}

const struct xm_module xm_mod_contact_info = {
    XMPPD_MODULE_ABI, "contact_info", "XEP-0157 contact addresses of the service", contact_init, NULL
};
