/* sm_iq.c - IQs for the server: to its domain, and for users (to a bare
 * JID, or with no 'to'). The roster (RFC 6121 §2, sm_roster.c) is the
 * core's; every other namespace is served by the module that registered
 * it on the host (sm_modules.c); anything else gets service-unavailable
 * (RFC 6120 §8.4, RFC 6121 §8.5.2.1.3). Results and errors are never
 * answered. */
#include "config.h"
#include "sm.h"
#include "sm_roster.h"
#include "log.h"
#include "stanza.h"
#include "trace.h"
#include "xml.h"

#include <string.h>

void sm_iq_to_server(struct sm *sm, const struct msg *m, int for_user)
{
    int traced = m->flags & MSG_F_TRACED;
    if (m->stype != STYPE_GET && m->stype != STYPE_SET) { /* results and errors: never answered */
        if (traced) trace_msg(5, m, 0, "drop: iq %s to the server is not answered", stanza_type_name(m->stype));
        return;
    }
    xml_node_t *iq = xml_parse(m->f[4].p, m->f[4].n, NS_CLIENT);
    if (!iq) {
        log_warn("iq from %.*s does not parse; dropped", (int)m->f[0].n, m->f[0].p);
        if (traced) trace_msg(5, m, 0, "drop: iq does not parse");
        return;
    }
    xml_node_t *query = xml_first_elem(iq);
    /* RFC 6120 §8.2.3: a get or set has exactly one payload element */
    if (!query || xml_next_elem(query) || !xml_attr(iq, "id")) {
        if (traced) trace_msg(5, m, 0, "error: bad-request (an iq get/set needs one payload and an id)");
        sm_reply_error(sm, m, SE_BAD_REQUEST, NULL);
        goto out;
    }
    if (strcmp(query->ns, NS_ROSTER) == 0 && strcmp(query->name, "query") == 0) {
        /* RFC 6121 §2 (sm_roster.c); not a disco feature: roster
         * versioning is announced as a stream feature (§2.6.1) */
        if (traced) trace_msg(5, m, 0, "iq->handler " NS_ROSTER);
        sm_roster_iq(sm, m, iq, query, for_user);
        goto out;
    }
    if (sm_modules_iq(sm, m, iq, query, for_user)) goto out;
    if (traced) {
        char ns[256];
        trace_msg(5, m, 0, "error: service-unavailable (no handler for %s)",
                  trace_escape(query->ns, strlen(query->ns), ns, sizeof ns));
    }
    sm_reply_error(sm, m, SE_SERVICE_UNAVAILABLE, NULL);
out:
    xml_free(iq);
}
