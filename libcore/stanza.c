/* stanza.c - XMPP error conditions and the few stanza rewrites several
 * daemons need: error replies (RFC 6120 §8.3) and the server-stamped
 * 'from' (RFC 6120 §8.1.2.1). */
#include "config.h"
#include "stanza.h"
#include "xml.h"

#include <string.h>

struct cond {
    const char *name;
    const char *type;
    unsigned code;   /* XEP-0086's legacy error code, 0 where it defines none */
};

/* Names and default types from RFC 6120 §8.3.3, codes from XEP-0086 §3. */
static const struct cond stanza_conds[SE_END] = {
    [SE_NONE] = { "", "", 0 },
    [SE_BAD_REQUEST] = { "bad-request", "modify", 400 },
    [SE_CONFLICT] = { "conflict", "cancel", 409 },
    [SE_FEATURE_NOT_IMPLEMENTED] = { "feature-not-implemented", "cancel", 501 },
    [SE_FORBIDDEN] = { "forbidden", "auth", 403 },
    [SE_GONE] = { "gone", "cancel", 302 },
    [SE_INTERNAL_SERVER_ERROR] = { "internal-server-error", "cancel", 500 },
    [SE_ITEM_NOT_FOUND] = { "item-not-found", "cancel", 404 },
    [SE_JID_MALFORMED] = { "jid-malformed", "modify", 400 },
    [SE_NOT_ACCEPTABLE] = { "not-acceptable", "modify", 406 },
    [SE_NOT_ALLOWED] = { "not-allowed", "cancel", 405 },
    [SE_NOT_AUTHORIZED] = { "not-authorized", "auth", 401 },
    [SE_POLICY_VIOLATION] = { "policy-violation", "modify", 0 },
    [SE_RECIPIENT_UNAVAILABLE] = { "recipient-unavailable", "wait", 404 },
    [SE_REDIRECT] = { "redirect", "modify", 302 },
    [SE_REGISTRATION_REQUIRED] = { "registration-required", "auth", 407 },
    [SE_REMOTE_SERVER_NOT_FOUND] = { "remote-server-not-found", "cancel", 404 },
    [SE_REMOTE_SERVER_TIMEOUT] = { "remote-server-timeout", "wait", 504 },
    [SE_RESOURCE_CONSTRAINT] = { "resource-constraint", "wait", 500 },
    [SE_SERVICE_UNAVAILABLE] = { "service-unavailable", "cancel", 503 },
    [SE_SUBSCRIPTION_REQUIRED] = { "subscription-required", "auth", 407 },
    [SE_UNDEFINED_CONDITION] = { "undefined-condition", "cancel", 500 },
    [SE_UNEXPECTED_REQUEST] = { "unexpected-request", "wait", 400 },
};

static const char *const stream_conds[STE_END] = {
    "", "bad-format", "bad-namespace-prefix", "conflict", "connection-timeout", "host-gone",
    "host-unknown", "improper-addressing", "internal-server-error", "invalid-from",
    "invalid-namespace", "invalid-xml", "not-authorized", "not-well-formed", "policy-violation",
    "remote-connection-failed", "reset", "resource-constraint", "restricted-xml", "see-other-host",
    "system-shutdown", "undefined-condition", "unsupported-encoding", "unsupported-feature",
    "unsupported-stanza-type", "unsupported-version",
};

const char *stanza_error_name(unsigned e) { return e < SE_END ? stanza_conds[e].name : "undefined-condition"; }
const char *stanza_error_type(unsigned e) { return e < SE_END ? stanza_conds[e].type : "cancel"; }
unsigned stanza_error_code(unsigned e) { return e < SE_END ? stanza_conds[e].code : 0; }

unsigned stanza_error_parse(const char *name, size_t len)
{
    for (unsigned i = 1; i < SE_END; i++)
        if (strlen(stanza_conds[i].name) == len && memcmp(stanza_conds[i].name, name, len) == 0) return i;
    return SE_NONE;
}

const char *stream_error_name(unsigned e) { return e < STE_END ? stream_conds[e] : "undefined-condition"; }

unsigned stream_error_parse(const char *name, size_t len)
{
    for (unsigned i = 1; i < STE_END; i++)
        if (strlen(stream_conds[i]) == len && memcmp(stream_conds[i], name, len) == 0) return i;
    return STE_NONE;
}

void stream_error_xml(struct buf *out, const char *cond, const char *text)
{
    buf_adds(out, "<stream:error><");
    buf_adds(out, cond);
    buf_adds(out, " xmlns='" NS_STREAM_ERRORS "'/>");
    if (text && *text) {
        buf_adds(out, "<text xmlns='" NS_STREAM_ERRORS "'>");
        buf_add_xml_escaped(out, text, strlen(text));
        buf_adds(out, "</text>");
    }
    buf_adds(out, "</stream:error>");
}

int stanza_error_reply(const char *body, size_t len, unsigned cond, const char *text,
                       const char *fallback_to, struct buf *out)
{
    int rc = -1;
    xml_node_t *st = xml_parse(body, len, NS_CLIENT);
    if (!st) goto out;
    const char *type = xml_attr(st, "type");
    if (type && strcmp(type, "error") == 0) goto out; /* RFC 6120 §8.3.1: never answer an error */
    const char *from = xml_attr(st, "from"), *to = xml_attr(st, "to");
    /* swap: copy first, the setters may replace the strings we hold */
    char *new_to = NULL, *new_from = NULL;
    struct buf tmp = { 0 };
    buf_adds(&tmp, from ? from : (fallback_to ? fallback_to : ""));
    buf_add(&tmp, "", 1);
    size_t split = tmp.len;
    buf_adds(&tmp, to ? to : "");
    buf_add(&tmp, "", 1);
    if (tmp.oom) {
        buf_free(&tmp);
        goto out;
    }
    new_to = tmp.data;
    new_from = tmp.data + split;
    xml_set_attr(st, "to", *new_to ? new_to : NULL);
    xml_set_attr(st, "from", *new_from ? new_from : NULL);
    xml_set_attr(st, "type", "error");
    buf_free(&tmp);
    xml_node_t *err = xml_add_elem(st, "error", NS_CLIENT);
    if (!err) goto out;
    xml_set_attr(err, "type", stanza_error_type(cond));
    if (!xml_add_elem(err, stanza_error_name(cond), NS_STANZA_ERRORS)) goto out;
    if (text && *text) {
        xml_node_t *t = xml_add_elem(err, "text", NS_STANZA_ERRORS);
        if (!t || !xml_add_text(t, text, strlen(text))) goto out;
    }
    rc = xml_serialize(st, out, NULL);
out:
    xml_free(st);
    return rc;
}

/* Length of the root's element name in canonical XML ("<message ..."). */
static size_t root_name_len(const char *body, size_t len)
{
    size_t i = 1;
    while (i < len && body[i] != ' ' && body[i] != '>' && body[i] != '/') i++;
    return i < len ? i : 0;
}

/* Find the root's from='...' attribute in canonical XML (single quotes,
 * no '>' inside values since it is escaped). Returns its start or NULL. */
static const char *find_root_from(const char *body, size_t len, size_t *attr_len)
{
    size_t i = 0;
    char quote = 0;
    for (; i < len && (quote || body[i] != '>'); i++) {
        if (quote) {
            if (body[i] == quote) quote = 0;
            continue;
        }
        if (body[i] == '\'' || body[i] == '"') {
            quote = body[i];
            continue;
        }
        if (body[i] == ' ' && i + 7 <= len && memcmp(body + i, " from=", 6) == 0) {
            char q = body[i + 6];
            const char *end = memchr(body + i + 7, q, len - i - 7);
            if (!end) return NULL;
            *attr_len = (size_t)(end + 1 - (body + i));
            return body + i;
        }
    }
    return NULL;
}

int stanza_stamp_from(const char *body, size_t len, const char *from, struct buf *out)
{
    if (len < 3 || body[0] != '<') return -1;
    size_t name = root_name_len(body, len);
    if (name == 0) return -1;
    size_t old_len = 0;
    const char *old = find_root_from(body, len, &old_len);
    buf_reserve(out, len + strlen(from) * 2 + 16);
    buf_add(out, body, name);
    buf_adds(out, " from='");
    buf_add_xml_escaped(out, from, strlen(from));
    buf_add(out, "'", 1);
    if (old) {
        buf_add(out, body + name, (size_t)(old - body) - name);
        buf_add(out, old + old_len, len - (size_t)(old + old_len - body));
    } else {
        buf_add(out, body + name, len - name);
    }
    return out->oom ? -1 : 0;
}
