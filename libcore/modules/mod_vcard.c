/* mod_vcard.c - XEP-0054 vcard-temp: every account's vCard, kept by the
 * user's xmpp-sm shard in the store "vcard" (vcard.tdb), one record per
 * bare JID:
 *
 *   "<bare>"   xmppd-vcard 1\n first F\n last L\n nick N\n email E\n \n <vCard xmlns='vcard-temp'>...</vCard>
 *
 * F, L, N and E are N/GIVEN, N/FAMILY, NICKNAME and the preferred
 * EMAIL/USERID of the vCard, white space collapsed to single spaces, at
 * most 256 bytes each, copied out when the vCard is stored so that
 * mod_search (XEP-0055) can search and list the directory without parsing
 * XML; the vCard itself follows the empty line as the user sent it
 * (serialized again by xmppd).
 *
 * A user gets and sets their own vCard (no 'to', or 'to' = their bare JID);
 * anyone gets a user's vCard with a get to that bare JID; a set to another
 * user's is forbidden. The administrator reads (and can delete) a stored
 * vCard with `xmppctl vcard USER [delete]`. */
#include "xmppd/module.h"

#include <stdlib.h>
#include <string.h>

#define NS_VCARD "vcard-temp"
#define MAGIC "xmppd-vcard 1\n"
#define FIELD_MAX 256   /* bytes of a field copied into the record */

struct vcard {
    const struct xm_api *api;
    xm_host *h;
    xm_store *store;         /* NULL in xmpp-c2s */
    long long max_size;      /* of the serialized <vCard/> element, bytes */
};

/* Append s with every run of white space turned into one space, trimmed,
 * and cut after FIELD_MAX bytes (at a character boundary): a directory
 * entry needs no more, and it bounds the size of a search answer. */
static void add_collapsed(const struct xm_api *api, xm_buf *b, const char *s)
{
    int space = 0;
    size_t n = 0;
    for (; *s; s++) {
        if (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') {
            space = n > 0;
            continue;
        }
        unsigned char c = (unsigned char)*s;
        if ((c & 0xC0) != 0x80) { /* a character starts: does it fit whole? */
            size_t clen = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
            if (n + (size_t)space + clen > FIELD_MAX)
                break;
        }
        if (space) {
            api->buf_add(b, " ", 1);
            n++;
        }
        api->buf_add(b, s, 1);
        n++;
        space = 0;
    }
}

/* The text of parent/name (vcard-temp), or "". */
static const char *child_text(const struct xm_api *api, const xm_node *parent, const char *name)
{
    const xm_node *e = parent ? api->child(parent, name, NS_VCARD) : NULL;
    return e ? api->text_of(e) : "";
}

/* The address to list for the user: the USERID of the first EMAIL marked
 * PREF, else of the first EMAIL that has one. XEP-0054 §8 puts the address
 * in USERID; a bare text content (older clients) is taken too. */
static const char *pick_email(const struct xm_api *api, const xm_node *vc)
{
    const char *first = "";
    for (const xm_node *e = api->first(vc); e; e = api->next(e)) {
        if (strcmp(api->name(e), "EMAIL") != 0 || strcmp(api->ns(e), NS_VCARD) != 0)
            continue;
        const char *addr = child_text(api, e, "USERID");
        if (!*addr)
            addr = api->text_of(e);
        if (!*addr)
            continue;
        if (api->child(e, "PREF", NS_VCARD))
            return addr;
        if (!*first)
            first = addr;
    }
    return first;
}

/* Build the stored record of vCard vc into rec. */
static void make_record(const struct xm_api *api, const xm_node *vc, xm_buf *rec)
{
    const xm_node *n = api->child(vc, "N", NS_VCARD);
    api->buf_add(rec, MAGIC, strlen(MAGIC));
    api->buf_add(rec, "first ", 6);
    add_collapsed(api, rec, child_text(api, n, "GIVEN"));
    api->buf_add(rec, "\nlast ", 6);
    add_collapsed(api, rec, child_text(api, n, "FAMILY"));
    api->buf_add(rec, "\nnick ", 6);
    add_collapsed(api, rec, child_text(api, vc, "NICKNAME"));
    api->buf_add(rec, "\nemail ", 7);
    add_collapsed(api, rec, pick_email(api, vc));
    api->buf_add(rec, "\n\n", 2);
}

/* The vCard XML inside a stored record, or NULL if it is not one of ours. */
static const char *record_xml(const char *val, size_t vlen)
{
    if (vlen < strlen(MAGIC) || memcmp(val, MAGIC, strlen(MAGIC)) != 0)
        return NULL;
    const char *p = strstr(val, "\n\n");
    return p ? p + 2 : NULL;
}

static void vcard_get(struct vcard *v, xm_stanza *iq, const char *owner, int own)
{
    const struct xm_api *api = v->api;
    xm_buf *val = api->buf_new();
    int r = api->get(v->store, owner, strlen(owner), val);
    size_t len = 0;
    const char *data = r == 1 ? api->buf_data(val, &len) : NULL;
    const char *xml = data ? record_xml(data, len) : NULL;
    if (r < 0 || (r == 1 && !data)) {
        api->error(iq, "internal-server-error", NULL, NULL);
    } else if (xml) {
        api->iq_result(iq, xml);
    } else if (r == 1) {
        api->log(v->h, 3, "the stored vCard of %s is not a record of this version", owner);
        api->error(iq, "internal-server-error", NULL, NULL);
    } else if (own) {
        /* XEP-0054 §3.1: no vCard yet, an error or an empty vCard; the
         * empty one lets a client go straight on to fill it in. */
        api->iq_result(iq, "<vCard xmlns='vcard-temp'/>");
    } else {
        /* XEP-0054 §3.3: an error, service-unavailable or item-not-found.
         * service-unavailable is also what an IQ to an account that does
         * not exist gets (RFC 6121 §8.5.1), so the answer does not tell
         * whether the account exists. */
        api->error(iq, "service-unavailable", NULL, NULL);
    }
    api->buf_free(val);
}

static void vcard_set(struct vcard *v, xm_stanza *iq, const xm_node *vc, const char *owner)
{
    const struct xm_api *api = v->api;
    xm_buf *xml = api->buf_new(), *rec = api->buf_new();
    size_t xlen, rlen;
    const char *x, *r;

    if (!api->first(vc)) {
        /* An empty vCard clears it: the user is no longer listed. */
        if (api->del(v->store, owner, strlen(owner)) < 0)
            api->error(iq, "internal-server-error", NULL, NULL);
        else
            api->iq_result(iq, NULL);
        goto out;
    }
    if (api->serialize(vc, xml) < 0 || !(x = api->buf_data(xml, &xlen))) {
        api->error(iq, "internal-server-error", NULL, NULL);
        goto out;
    }
    if ((long long)xlen > v->max_size) {
        /* Over the administrator's limit. XEP-0054 names no error for it;
         * not-acceptable ("does not meet criteria defined by the server",
         * RFC 6120 §8.3.3.9) is what the XSF's own size limits answer
         * (XEP-0060 §7.1.3 payload-too-big, XEP-0363 file-too-large),
         * rather than policy-violation, which is about content. */
        xm_buf *t = api->buf_new();
        api->buf_addf(t, "The vCard is larger than the %lld bytes this server stores", v->max_size);
        api->error(iq, "not-acceptable", api->buf_data(t, NULL), NULL);
        api->buf_free(t);
        goto out;
    }
    make_record(api, vc, rec);
    api->buf_add(rec, x, xlen);
    if (!(r = api->buf_data(rec, &rlen)) || api->put(v->store, owner, strlen(owner), r, rlen) < 0) {
        api->error(iq, "internal-server-error", NULL, NULL);
        goto out;
    }
    api->iq_result(iq, NULL);
out:
    api->buf_free(xml);
    api->buf_free(rec);
}

/* <vCard xmlns='vcard-temp'/> to a bare JID or without 'to'. */
static void on_vcard(xm_stanza *iq, const xm_node *payload, void *data)
{
    struct vcard *v = data;
    const struct xm_api *api = v->api;
    char self[3072];
    api->bare_jid(api->from(iq), self, sizeof self);
    const char *to = api->to(iq);
    const char *owner = *to ? to : self;
    int own = strcmp(owner, self) == 0;

    if (strcmp(api->type(iq), "get") == 0) {
        vcard_get(v, iq, owner, own);
    } else if (!own) {
        /* XEP-0054 §3.2: only one's own vCard can be set. */
        api->error(iq, "forbidden", NULL, NULL);
    } else {
        vcard_set(v, iq, payload, owner);
    }
}

/* An account was removed: its vCard goes with it, so a new account of the
 * same name starts without one and the directory no longer lists it. */
static void on_user_removed(xm_host *h, const char *jid, void *data)
{
    struct vcard *v = data;
    if (v->api->del(v->store, jid, strlen(jid)) < 0)
        v->api->log(h, 3, "could not delete the vCard of removed account %s", jid);
}

/* xmppctl vcard USER [delete]: print the stored vCard as one row
 * (user, vcard: the XML with tabs and line ends written as character
 * references, which leaves it the same XML), or delete it. */
static int cmd_vcard(xm_host *h, const char *bare, int argc, char **argv, xm_buf *out, void *data)
{
    struct vcard *v = data;
    const struct xm_api *api = v->api;
    int del = argc == 1 && strcmp(argv[0], "delete") == 0;
    int rc = -1;
    xm_buf *val = api->buf_new();
    (void)h;

    if (argc > 1 || (argc == 1 && !del)) {
        api->buf_addf(out, "usage: vcard USER [delete]");
        rc = 1;
        goto out;
    }
    int r = api->get(v->store, bare, strlen(bare), val);
    size_t len = 0;
    const char *rec = r == 1 ? api->buf_data(val, &len) : NULL;
    const char *xml = rec ? record_xml(rec, len) : NULL;
    if (r < 0 || (r == 1 && !rec)) {
        api->buf_addf(out, "cannot read the vCard store");
        goto out;
    }
    if (r == 0) {
        api->buf_addf(out, "%s has no vCard", bare);
        goto out;
    }
    if (del) {
        if (api->del(v->store, bare, strlen(bare)) < 0) {
            api->buf_addf(out, "cannot delete the vCard of %s", bare);
            goto out;
        }
        api->buf_addf(out, "%s\tdeleted\n", bare);
        rc = 0;
        goto out;
    }
    if (!xml) {
        api->buf_addf(out, "the vCard of %s is not a record of this version", bare);
        goto out;
    }
    api->buf_addf(out, "%s\t", bare);
    for (const char *p = xml; *p; p++) {
        if (*p == '\t')
            api->buf_addf(out, "&#9;");
        else if (*p == '\n')
            api->buf_addf(out, "&#10;");
        else if (*p == '\r')
            api->buf_addf(out, "&#13;");
        else
            api->buf_add(out, p, 1);
    }
    api->buf_add(out, "\n", 1);
    rc = 0;
out:
    api->buf_free(val);
    return rc;
}

static int vcard_init(xm_host *h, const struct xm_api *api)
{
    struct vcard *v = calloc(1, sizeof *v);
    if (!v) {
        api->log(h, 3, "out of memory");
        return -1;
    }
    v->api = api;
    v->h = h;
    api->set_data(h, v);
    /* 64K holds a vCard with a XEP-0153 photo (which SHOULD be under 8K,
     * §4.6) many times over. ejabberd and Prosody set no vCard limit of
     * their own: there the bound is the client stanza size (65536 in
     * ejabberd's example configuration for years, 256K in Prosody). */
    v->max_size = api->option_size(h, "max_size", 65536, 256, 2 << 20);
    if (v->max_size < 0)
        return -1;

    /* XEP-0054 §4: the server and its accounts answer vcard-temp. */
    if (api->add_feature(h, NS_VCARD) < 0 || api->add_account_feature(h, NS_VCARD) < 0)
        return -1;
    if (!api->in_sm(h))
        return 0;
    if (!(v->store = api->store(h, "vcard"))) {
        api->log(h, 3, "cannot open the store vcard");
        return -1;
    }
    if (api->add_iq_handler(h, NS_VCARD, "vCard", XM_IQ_ACCOUNT | XM_IQ_GET | XM_IQ_SET, on_vcard, v) < 0 ||
        api->add_event_hook(h, XM_HOOK_USER_REMOVED, 50, on_user_removed, v) < 0 ||
        api->add_command(h, "vcard", cmd_vcard, v) < 0)
        return -1;
    return 0;
}

static void vcard_stop(xm_host *h, const struct xm_api *api)
{
    free(api->get_data(h));
    api->set_data(h, NULL);
}

const struct xm_module xm_mod_vcard = {
    XMPPD_MODULE_ABI, "vcard", "XEP-0054 vcard-temp: users' vCards", vcard_init, vcard_stop
};
