/* bridge.c - an example of an external xmppd module, built outside the
 * xmppd tree against the installed <xmppd/module.h> (see README here and
 * xmppd-modules(7), WRITING A MODULE).
 *
 * It shows the parts a deployment that bridges to another chat network
 * needs, on a made-up protocol in the namespace urn:xmppd:example:bridge:0:
 *
 *   - an IQ handler on the server's domain: a get of <query/> returns the
 *     configured network and its rooms, and the sender's link if any; a set
 *     of <query><link jid='nick@irc.example.net'/></query> stores which
 *     remote address the sender is (<link/> without jid removes it);
 *   - a store of its own (bridge.tdb in each shard: bare JID -> link);
 *   - its feature in the server's disco#info (and so in the XEP-0115 hash);
 *   - an administrator's command, `bridge USER [unlink]`;
 *   - an event hook that deletes a removed account's link;
 *   - a stanza hook, as a demonstration: messages that local users send to
 *     the address in bridge.blocked are refused with not-acceptable.
 *
 * Options (xmppd.conf, global or in a [host] section):
 *   bridge.network = IRC          the name of the bridged network
 *   bridge.rooms   = xmppd dev    its rooms, separated by spaces
 *   bridge.blocked = spam@irc.example.net   (no default: nothing refused)
 *
 * Like every module it includes only <xmppd/module.h> and libc, and talks
 * to xmppd only through the function table given to init(). */
#include <xmppd/module.h>

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#define NS_BRIDGE "urn:xmppd:example:bridge:0"
#define JID_MAX 3072   /* RFC 7622 §3.1: 3071 bytes and a NUL */
#define LINK_MAX 1023  /* the longest link kept */

/* What the module keeps for one virtual host (api->set_data). init() runs
 * once per host and per daemon, so nothing here is global. */
struct bridge {
    const struct xm_api *api;
    xm_host *h;
    char *network;
    char *rooms;     /* as configured: words separated by spaces */
    char *blocked;   /* a bare JID, or NULL */
    xm_store *store; /* NULL in xmpp-c2s, which only reads declarations */
};

/* A link is an address on the other network: one word of printable
 * characters. It is escaped wherever it is written into XML. */
static int link_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > LINK_MAX) return 0;
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f) return 0;
    return 1;
}

/* <query/> get: the network, its rooms, the sender's link. */
static void bridge_get(struct bridge *b, xm_stanza *iq, const char *bare)
{
    const struct xm_api *api = b->api;
    xm_buf *res = api->buf_new(), *link = api->buf_new();
    const char *xml;
    int found;

    if (!res || !link || (found = api->get(b->store, bare, strlen(bare), link)) < 0) goto fail;
    api->buf_addf(res, "<query xmlns='" NS_BRIDGE "' network='");
    api->buf_add_esc(res, b->network, strlen(b->network));
    api->buf_addf(res, "'>");
    for (const char *p = b->rooms; *p;) {
        size_t n = strcspn(p, " \t");
        if (n) {
            api->buf_addf(res, "<room name='");
            api->buf_add_esc(res, p, n);
            api->buf_addf(res, "'/>");
        }
        p += n;
        p += strspn(p, " \t");
    }
    if (found) {
        size_t len;
        const char *l = api->buf_data(link, &len);
        if (!l) goto fail;
        api->buf_addf(res, "<link jid='");
        api->buf_add_esc(res, l, len);
        api->buf_addf(res, "'/>");
    }
    api->buf_addf(res, "</query>");
    if (!(xml = api->buf_data(res, NULL))) goto fail;
    api->iq_result(iq, xml);
    goto out;
fail:
    api->error(iq, "internal-server-error", NULL, NULL);
out:
    if (res) api->buf_free(res);
    if (link) api->buf_free(link);
}

/* <query><link jid='...'/></query> set: store or (without jid) remove the
 * sender's link. The write is committed at the end of this loop turn and
 * the result leaves only after that: a failed commit turns it into
 * internal-server-error (xmppd-modules(7), stores). */
static void bridge_set(struct bridge *b, xm_stanza *iq, const xm_node *query, const char *bare)
{
    const struct xm_api *api = b->api;
    const xm_node *link = api->child(query, "link", NS_BRIDGE);
    if (!link) {
        api->error(iq, "bad-request", "a set carries <link/>", NULL);
        return;
    }
    const char *jid = api->attr(link, "jid");
    int rc;
    if (!jid) {
        rc = api->del(b->store, bare, strlen(bare));
    } else if (!link_ok(jid)) {
        api->error(iq, "jid-malformed", "the link is one word of at most 1023 bytes", NULL);
        return;
    } else {
        rc = api->put(b->store, bare, strlen(bare), jid, strlen(jid));
    }
    if (rc < 0) api->error(iq, "internal-server-error", NULL, NULL);
    else api->iq_result(iq, NULL);
}

/* The IQ handler: exactly one answer (iq_result or error) per call. */
static void bridge_iq(xm_stanza *iq, const xm_node *payload, void *data)
{
    struct bridge *b = data;
    const struct xm_api *api = b->api;
    char bare[JID_MAX];
    api->bare_jid(api->from(iq), bare, sizeof bare);
    /* only this host's users have a link here (an IQ from another server
     * would otherwise write records for strangers) */
    const char *at = strchr(bare, '@');
    if (!at || strcmp(at + 1, api->domain(b->h)) != 0) {
        api->error(iq, "forbidden", "only users of this server use its bridge", NULL);
        return;
    }
    if (strcmp(api->type(iq), "get") == 0) bridge_get(b, iq, bare);
    else bridge_set(b, iq, payload, bare);
}

/* user_send_packet: runs for every stanza a local user sends, before xmppd
 * routes it. Messages to the blocked address are answered not-acceptable
 * and go no further; everything else passes to the next hook. */
static int bridge_send(xm_stanza *st, void *data)
{
    struct bridge *b = data;
    const struct xm_api *api = b->api;
    char to[JID_MAX];
    if (api->kind(st) != XM_MESSAGE) return XM_PASS;
    api->bare_jid(api->to(st), to, sizeof to);
    if (strcmp(to, b->blocked) != 0) return XM_PASS;
    /* an error stanza is never answered (RFC 6120 §8.3.1): error() does
     * nothing for one, and XM_STOP then drops it */
    api->error(st, "not-acceptable", "this address is not bridged", NULL);
    return XM_STOP;
}

/* user_removed: an account's data goes with it. */
static void bridge_removed(xm_host *h, const char *bare, void *data)
{
    struct bridge *b = data;
    if (b->api->del(b->store, bare, strlen(bare)) < 0)
        b->api->log(h, LOG_ERR, "could not delete the link of %s", bare);
}

/* `xmppctl mod bridge USER [unlink]`: show or remove USER's link. Answers
 * are TSV lines; 1 is a usage error, -1 a failure (xmppctl exits 1). */
static int bridge_cmd(xm_host *h, const char *bare, int argc, char **argv, xm_buf *out, void *data)
{
    struct bridge *b = data;
    const struct xm_api *api = b->api;
    (void)h;
    if (argc > 1 || (argc == 1 && strcmp(argv[0], "unlink") != 0)) {
        api->buf_addf(out, "usage: bridge USER [unlink]");
        return 1;
    }
    xm_buf *link = api->buf_new();
    int rc = -1, found;
    if (!link || (found = api->get(b->store, bare, strlen(bare), link)) < 0) {
        api->buf_addf(out, "cannot read the bridge store");
        goto out;
    }
    if (!found) {
        api->buf_addf(out, "%s has no bridge link", bare);
        goto out;
    }
    if (argc == 1) {
        /* the answer waits for the commit of this delete */
        if (api->del(b->store, bare, strlen(bare)) < 0) {
            api->buf_addf(out, "cannot delete the link of %s", bare);
            goto out;
        }
        api->buf_addf(out, "%s\tunlinked\n", bare);
    } else {
        size_t len;
        const char *l = api->buf_data(link, &len);
        if (!l) goto out;
        api->buf_addf(out, "%s\t%s\t", bare, b->network);
        api->buf_add(out, l, len);
        api->buf_addf(out, "\n");
    }
    rc = 0;
out:
    if (link) api->buf_free(link);
    return rc;
}

static void bridge_free(struct bridge *b)
{
    if (!b) return;
    free(b->network);
    free(b->rooms);
    free(b->blocked);
    free(b);
}

/* Once per host in xmpp-sm and once in xmpp-c2s. Every option is read
 * here, in both (an option nobody reads is a start-up error), and so is
 * every declaration; hooks, handlers, the command and the store matter in
 * xmpp-sm only (in xmpp-c2s registering succeeds and does nothing). */
static int bridge_init(xm_host *h, const struct xm_api *api)
{
    struct bridge *b = calloc(1, sizeof *b);
    if (!b) {
        api->log(h, LOG_ERR, "out of memory");
        return -1;
    }
    b->api = api;
    b->h = h;
    api->set_data(h, b);
    const char *network = api->option(h, "network", "IRC");
    const char *rooms = api->option(h, "rooms", "");
    const char *blocked = api->option(h, "blocked", NULL);
    /* the values belong to the configuration: keep copies */
    if (!(b->network = strdup(network)) || !(b->rooms = strdup(rooms)) || (blocked && !(b->blocked = strdup(blocked)))) {
        api->log(h, LOG_ERR, "out of memory");
        return -1;
    }
    if (b->blocked) {
        if (strchr(b->blocked, '/') || !strchr(b->blocked, '@')) {
            api->log(h, LOG_ERR, "bridge.blocked: '%s' is not a bare JID (user@domain)", b->blocked);
            return -1;
        }
        for (char *p = b->blocked; *p; p++) /* JIDs arrive normalized */
            *p = (char)tolower((unsigned char)*p);
    }

    if (api->add_feature(h, NS_BRIDGE) < 0) return -1;
    if (api->in_sm(h) && !(b->store = api->store(h, "bridge"))) {
        api->log(h, LOG_ERR, "cannot open the store bridge.tdb");
        return -1;
    }
    if (api->add_iq_handler(h, NS_BRIDGE, "query", XM_IQ_SERVER | XM_IQ_GET | XM_IQ_SET, bridge_iq, b) < 0 ||
        api->add_event_hook(h, XM_HOOK_USER_REMOVED, 50, bridge_removed, b) < 0 ||
        api->add_command(h, "bridge", bridge_cmd, b) < 0)
        return -1;
    if (b->blocked && api->add_stanza_hook(h, XM_HOOK_USER_SEND_PACKET, 50, bridge_send, b) < 0) return -1;
    return 0;
}

static void bridge_stop(xm_host *h, const struct xm_api *api)
{
    bridge_free(api->get_data(h));
    api->set_data(h, NULL);
}

XMPPD_MODULE("bridge", "example bridge to another chat network (examples/bridge)", bridge_init, bridge_stop);
