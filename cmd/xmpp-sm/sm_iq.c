/* sm_iq.c - IQs the server answers itself (sm_iqtable): to its domain,
 * and for users (to a bare JID, or with no 'to'). Handlers are found by
 * the namespace of the IQ's one child; anything else gets
 * service-unavailable (RFC 6120 §8.4, RFC 6121 §8.5.2.1.3). Results and
 * errors are never answered. */
#include "config.h"
#include "sm.h"
#include "sm_roster.h"
#include "jid.h"
#include "log.h"
#include "stanza.h"
#include "trace.h"
#include "xml.h"

#include <string.h>
#include <sys/utsname.h>

struct iq_ctx {
    struct sm *sm;
    const struct msg *m;
    xml_node_t *iq;
    xml_node_t *query;
    int for_user;
};

typedef void (*iq_handler)(struct iq_ctx *c);

struct iq_entry {
    const char *ns;
    const char *name;     /* expected element name */
    int server_only;      /* not answered for a user's bare JID */
    int get, set;         /* which types the namespace defines */
    iq_handler fn;
    int (*enabled)(struct sm *sm);
};

/* Start a result: <iq type='result' id= from=(the original to) to=(the original from)>. */
static void result_open(struct iq_ctx *c, struct buf *b)
{
    const char *id = xml_attr(c->iq, "id");
    buf_adds(b, "<iq xmlns='jabber:client' type='result'");
    if (c->m->f[1].n) {
        buf_adds(b, " from='");
        buf_add_xml_escaped(b, c->m->f[1].p, c->m->f[1].n);
        buf_adds(b, "'");
    }
    buf_adds(b, " to='");
    buf_add_xml_escaped(b, c->m->f[0].p, c->m->f[0].n);
    buf_adds(b, "' id='");
    buf_add_xml_escaped(b, id ? id : "", id ? strlen(id) : 0);
    buf_adds(b, "'");
}

static void send_result(struct iq_ctx *c, struct buf *b)
{
    char from[JID_STR_MAX], to[JID_STR_MAX];
    if (!msg_str(c->m, 1, from, sizeof from) || !msg_str(c->m, 0, to, sizeof to)) return;
    sm_send_created(c->sm, KIND_IQ, STYPE_RESULT, from, to, b->data, b->len, trace_id_of(c->m), "iq result");
}

static void empty_result(struct iq_ctx *c)
{
    struct buf b = { 0 };
    result_open(c, &b);
    buf_adds(&b, "/>");
    send_result(c, &b);
    buf_free(&b);
}

/* XEP-0199 ping. */
static void iq_ping(struct iq_ctx *c) { empty_result(c); }

/* XEP-0030 disco#info: the server's identity and what it really serves. */
static void iq_disco_info(struct iq_ctx *c)
{
    if (xml_attr(c->query, "node")) {
        sm_reply_error(c->sm, c->m, SE_ITEM_NOT_FOUND, NULL);
        return;
    }
    struct buf b = { 0 };
    result_open(c, &b);
    buf_adds(&b, "><query xmlns='" NS_DISCO_INFO "'>");
    if (c->for_user) buf_adds(&b, "<identity category='account' type='registered'/>");
    else buf_adds(&b, "<identity category='server' type='im' name='xmppd'/>");
    if (!c->for_user) sm_iq_features(c->sm, &b);
    else buf_adds(&b, "<feature var='" NS_DISCO_INFO "'/>");
    buf_adds(&b, "</query></iq>");
    send_result(c, &b);
    buf_free(&b);
}

/* XEP-0030 disco#items: no components or services are hosted yet. */
static void iq_disco_items(struct iq_ctx *c)
{
    if (xml_attr(c->query, "node")) {
        sm_reply_error(c->sm, c->m, SE_ITEM_NOT_FOUND, NULL);
        return;
    }
    struct buf b = { 0 };
    result_open(c, &b);
    buf_adds(&b, "><query xmlns='" NS_DISCO_ITEMS "'/></iq>");
    send_result(c, &b);
    buf_free(&b);
}

static int version_enabled(struct sm *sm) { return sm->d->conf.show_version; }

/* XEP-0092 software version (show_version = no hides it entirely). */
static void iq_version(struct iq_ctx *c)
{
    struct buf b = { 0 };
    struct utsname u;
    result_open(c, &b);
    buf_adds(&b, "><query xmlns='" NS_VERSION "'><name>xmppd</name><version>" PACKAGE_VERSION "</version>");
    if (uname(&u) == 0) {
        buf_adds(&b, "<os>");
        buf_add_xml_escaped(&b, u.sysname, strlen(u.sysname));
        buf_adds(&b, "</os>");
    }
    buf_adds(&b, "</query></iq>");
    send_result(c, &b);
    buf_free(&b);
}

static const struct iq_entry iq_table[] = {
    { NS_PING, "ping", 0, 1, 0, iq_ping, NULL },
    { NS_DISCO_INFO, "query", 0, 1, 0, iq_disco_info, NULL },
    { NS_DISCO_ITEMS, "query", 1, 1, 0, iq_disco_items, NULL },
    { NS_VERSION, "query", 1, 1, 0, iq_version, version_enabled },
};

void sm_iq_features(struct sm *sm, struct buf *out)
{
    for (size_t i = 0; i < sizeof iq_table / sizeof *iq_table; i++) {
        const struct iq_entry *e = &iq_table[i];
        if (e->enabled && !e->enabled(sm)) continue;
        buf_adds(out, "<feature var='");
        buf_adds(out, e->ns);
        buf_adds(out, "'/>");
    }
}

void sm_iq_to_server(struct sm *sm, const struct msg *m, int for_user)
{
    int traced = m->flags & MSG_F_TRACED;
    if (m->stype != STYPE_GET && m->stype != STYPE_SET) { /* results and errors: never answered */
        if (traced) trace_msg(5, m, 0, "drop: iq %s to the server is not answered", stanza_type_name(m->stype));
        return;
    }
    struct iq_ctx c = { sm, m, NULL, NULL, for_user };
    c.iq = xml_parse(m->f[4].p, m->f[4].n, NS_CLIENT);
    if (!c.iq) {
        log_warn("iq from %.*s does not parse; dropped", (int)m->f[0].n, m->f[0].p);
        if (traced) trace_msg(5, m, 0, "drop: iq does not parse");
        return;
    }
    c.query = xml_first_elem(c.iq);
    /* RFC 6120 §8.2.3: a get or set has exactly one payload element */
    if (!c.query || xml_next_elem(c.query) || !xml_attr(c.iq, "id")) {
        if (traced) trace_msg(5, m, 0, "error: bad-request (an iq get/set needs one payload and an id)");
        sm_reply_error(sm, m, SE_BAD_REQUEST, NULL);
        goto out;
    }
    if (strcmp(c.query->ns, NS_ROSTER) == 0 && strcmp(c.query->name, "query") == 0) {
        /* RFC 6121 §2 (sm_roster.c); not a disco feature: roster
         * versioning is announced as a stream feature (§2.6.1) */
        if (traced) trace_msg(5, m, 0, "iq->handler " NS_ROSTER);
        sm_roster_iq(sm, m, c.iq, c.query, for_user);
        goto out;
    }
    for (size_t i = 0; i < sizeof iq_table / sizeof *iq_table; i++) {
        const struct iq_entry *e = &iq_table[i];
        if (strcmp(c.query->ns, e->ns) != 0 || strcmp(c.query->name, e->name) != 0) continue;
        if ((for_user && e->server_only) || (e->enabled && !e->enabled(sm))) break;
        if ((m->stype == STYPE_GET && !e->get) || (m->stype == STYPE_SET && !e->set)) {
            if (traced) trace_msg(5, m, 0, "error: bad-request (%s %s not defined)", e->ns, stanza_type_name(m->stype));
            sm_reply_error(sm, m, SE_BAD_REQUEST, NULL);
            goto out;
        }
        if (traced) trace_msg(5, m, 0, "iq->handler %s%s", e->ns, for_user ? " (for the account)" : "");
        e->fn(&c);
        goto out;
    }
    if (traced) {
        char ns[256];
        trace_msg(5, m, 0, "error: service-unavailable (no handler for %s)",
                  trace_escape(c.query->ns, strlen(c.query->ns), ns, sizeof ns));
    }
    sm_reply_error(sm, m, SE_SERVICE_UNAVAILABLE, NULL);
out:
    xml_free(c.iq);
}
