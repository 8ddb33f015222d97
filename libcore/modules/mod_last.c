/* mod_last.c - the built-in module "last": XEP-0012 last activity.
 * To the server's domain: its uptime (§5). To a user's bare JID, answered by
 * the server on the user's behalf (§3): 0 seconds while the user has an
 * available resource, else the time since their last unavailable presence
 * with its status text, as recorded by xmpp-sm's presence logic. Only the
 * user and the contacts that may see the user's presence (subscription
 * 'from' or 'both' in the user's roster) may ask; others get forbidden. */
#include "xmppd/module.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define NS_LAST "jabber:iq:last"

static const struct xm_api *api;

static void count_available(const char *full, int available, int priority, void *arg)
{
    (void)full;
    (void)priority;
    if (available) ++*(int *)arg;
}

/* The answer for the account bare, asked by requester (a bare JID). */
static void last_of_account(xm_stanza *iq, xm_host *h, const char *bare, const char *requester)
{
    const char *err = "internal-server-error", *text = NULL;
    xm_buf *status = NULL, *res = NULL;
    char sub[8];
    int online = 0;

    int r = api->user_exists(h, bare);
    if (r < 0) goto out;
    if (r == 0) { /* RFC 6121 §8.5.1 */
        err = "service-unavailable";
        goto out;
    }
    /* XEP-0012 §3: "MUST NOT return last activity information to an entity
     * that is not authorized to view the user's presence information ...
     * MUST return a Forbidden error"; checked first so that nothing else,
     * not even whether the user is online, leaks to others */
    if (strcmp(bare, requester) != 0) {
        r = api->roster_item(h, bare, requester, sub, NULL);
        if (r < 0) goto out;
        if (r == 0 || (strcmp(sub, "from") != 0 && strcmp(sub, "both") != 0)) {
            err = "forbidden";
            goto out;
        }
    }
    /* §3: "If the user has at least one available resource ... 'seconds'
     * attribute set to a value of '0'" */
    if (api->each_session(h, bare, count_available, &online) < 0) goto out;
    if (online) {
        api->iq_result(iq, "<query xmlns='" NS_LAST "' seconds='0'/>");
        err = NULL;
        goto out;
    }
    long long when = 0;
    if (!(status = api->buf_new()) || !(res = api->buf_new())) goto out;
    r = api->last_unavailable(h, bare, &when, status);
    if (r < 0) goto out;
    if (r == 0) { /* not seen to log out since the account was made */
        err = "item-not-found";
        text = "no last activity is known";
        goto out;
    }
    size_t slen = 0;
    const char *st = api->buf_data(status, &slen);
    if (!st) goto out;
    long long secs = (long long)time(NULL) - when;
    api->buf_addf(res, "<query xmlns='" NS_LAST "' seconds='%lld'>", secs > 0 ? secs : 0);
    api->buf_add_esc(res, st, slen);
    api->buf_addf(res, "</query>");
    const char *xml = api->buf_data(res, NULL);
    if (!xml) goto out;
    api->iq_result(iq, xml);
    err = NULL;
out:
    if (err) api->error(iq, err, text, NULL);
    if (status) api->buf_free(status);
    if (res) api->buf_free(res);
}

static void last_iq(xm_stanza *iq, const xm_node *payload, void *data)
{
    (void)payload;
    (void)data;
    xm_host *h = api->host(iq);
    const char *to = api->to(iq);
    char requester[3072];
    api->bare_jid(api->from(iq), requester, sizeof requester);
    if (*to == '\0') {
        /* no 'to': about the sender's own account (RFC 6120 §10.3.3) */
        last_of_account(iq, h, requester, requester);
    } else if (strchr(to, '@')) {
        char bare[3072];
        api->bare_jid(to, bare, sizeof bare);
        last_of_account(iq, h, bare, requester);
    } else {
        /* §5: the server's uptime, no character data */
        char xml[96];
        long long up = (long long)time(NULL) - api->started(h);
        snprintf(xml, sizeof xml, "<query xmlns='" NS_LAST "' seconds='%lld'/>", up > 0 ? up : 0);
        api->iq_result(iq, xml);
    }
}

static int last_init(xm_host *h, const struct xm_api *a)
{
    api = a;
    if (api->add_feature(h, NS_LAST) < 0 || api->add_account_feature(h, NS_LAST) < 0) return -1;
    return api->add_iq_handler(h, NS_LAST, "query", XM_IQ_SERVER | XM_IQ_ACCOUNT | XM_IQ_GET,
                               last_iq, NULL) < 0 ? -1 : 0;
}

const struct xm_module xm_mod_last = {
    XMPPD_MODULE_ABI, "last", "XEP-0012 last activity of users and uptime of the server", last_init, NULL
};
