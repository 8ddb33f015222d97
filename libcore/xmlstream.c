/* xmlstream.c - the client XML stream parser of xmlstream.h: a byte
 * scanner that cuts untrusted input into complete units and enforces the
 * limits, libxml2's push SAX2 parser that alone judges each unit as
 * restricted XML (RFC 6120 §11), and the builder that turns its events into
 * xml.h trees; xml_parse() (xml.h) runs on the same machinery. */
#include "config.h"
#include "xmlstream.h"

#include <libxml/parser.h>
#include <libxml/dict.h>
#include <libxml/xmlerror.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* How it works.
 *
 * The scanner finds where each unit ends: in the prolog, each construct up
 * to its closing '>' (the last one being the stream header's start tag);
 * after the header, each complete top-level element, the stream's end tag,
 * or a stray comment/PI at stream level. It tracks only tags, quotes,
 * comments, CDATA and depth, checks UTF-8, and enforces stanza bytes, depth
 * and attributes per tag before libxml2 sees a byte. Whitespace between
 * top-level elements never reaches libxml2. libxml2 then gets exactly one
 * unit per xmlParseChunk() call and alone decides well-formedness; trees
 * come from its SAX2 callbacks only. After each unit we check that libxml2
 * saw what the scanner cut (one element, the header, the close): if the two
 * ever disagree, the stream fails instead of guessing.
 *
 * Units are cut on content, not on read boundaries, so every split of the
 * input gives the same calls to libxml2 and the same callbacks, and pause
 * mode can stop exactly after a unit. A unit split across reads is kept in
 * `pending` (at most max_stanza bytes); one that arrives whole is handed to
 * libxml2 straight from the caller's buffer.
 *
 * The libxml2 context is a cache: it may be dropped between units (idle,
 * dictionary too big, large unit, many bytes) and is recreated by feeding
 * it a synthetic start tag with the header's own qualified name and
 * namespace declarations, so it resolves prefixes exactly as before.
 *
 * libxml2 2.9.14 facts handled here (DESIGN §10): a fully populated SAX2
 * handler (never xmlSAXVersion() defaults) whose DTD, entity, comment and
 * PI callbacks stop the parser; non-NULL user_data; XML_PARSE_NONET only;
 * version and encoding checked in startDocument; our own depth, attribute
 * and name limits; "&#38;" left in attribute values decoded. */

#define CTXT_COST 16384            /* approximate bytes of one libxml2 push context */
#define BIG_UNIT 65536             /* drop the context after a unit this large */
#define MAX_FED (16u << 20)        /* ... or after this many bytes */
#define SCRATCH_KEEP 16384         /* scratch buffers above this are freed after a unit */
#define DICT_KEEP 131072           /* drop the context once its names take this many bytes */
#define FRAGMENT_ROOT "xmppd-fragment"

enum phase { PH_PROLOG, PH_CONTENT, PH_CLOSED };

enum scan_state {
    SC_TEXT,    /* character data, or whitespace between markup */
    SC_LT,      /* after '<' */
    SC_STAG,    /* in a start tag, outside quotes */
    SC_QUOTE,   /* in a quoted attribute value */
    SC_ETAG,    /* in an end tag */
    SC_BANG,    /* after "<!": matching "--" or "[CDATA[" */
    SC_COMMENT, /* until "-->" */
    SC_CDATA,   /* until "]]>" */
    SC_PI,      /* until "?>" (also the XML declaration) */
    SC_DECL,    /* other "<!" markup in the prolog (DOCTYPE): until '>' */
};

enum unit_kind { U_NONE, U_PROLOG, U_ROOT, U_ELEM, U_CLOSE, U_MISC };

struct xmlstream {
    struct xmlstream_limits lim;
    struct xmlstream_cb cb;
    void *arg;
    int pause;
    unsigned gen;       /* bumped by reset, so feed notices one from a callback */
    enum phase phase;
    enum xmlstream_err err;
    int stopped;        /* a callback returned -1 */
    char errtext[200];

    /* scanner */
    enum scan_state st;
    unsigned sdepth;    /* open elements, the stream root included */
    unsigned nattrs;    /* quoted values in the current start tag */
    unsigned char quote, slash, prev1, prev2;
    const char *pat;    /* pattern being matched after "<!" */
    unsigned match;
    unsigned char u8_need, u8_lo, u8_hi; /* UTF-8 sequence in progress */
    int in_unit;
    enum unit_kind kind;
    size_t unit_len;
    struct buf pending; /* bytes of a unit that spans feeds */

    /* libxml2 */
    xmlParserCtxtPtr ctxt;
    int priming;        /* feeding the synthetic header */
    size_t fed;         /* bytes given to this context */
    size_t biggest;     /* largest unit given to this context */
    int dict_mark;      /* dictionary size when the unit began */

    /* the stream header, kept to recreate the context */
    struct buf hdr;     /* synthetic start tag: "<qname xmlns...>" */
    char *content_ns;

    /* tree builder */
    unsigned bdepth;    /* libxml2's open elements, the stream root included */
    xml_node_t *cur;    /* element being built */
    xml_node_t *done;   /* complete top-level element, to deliver */
    xml_node_t *header; /* stream header, to deliver */
    int closed;         /* stream end tag seen, to deliver */
    struct buf text;    /* character data not yet added to cur */
    struct buf scratch; /* decoded attribute value */
    struct buf uri;     /* decoded namespace URI */
    const char *default_ns; /* xml_parse(): namespace of unprefixed names */
    unsigned dflt_depth;    /* depth of the outermost default ns declaration, 0 = none */
};

/* Stream error condition names, RFC 6120 §4.9.3. */
static const char *const conditions[] = {
    [XS_OK] = "undefined-condition",
    [XS_ERR_NOT_WELL_FORMED] = "not-well-formed",
    [XS_ERR_RESTRICTED_XML] = "restricted-xml",
    [XS_ERR_POLICY_VIOLATION] = "policy-violation",
    [XS_ERR_UNSUPPORTED_ENCODING] = "unsupported-encoding",
    [XS_ERR_UNSUPPORTED_VERSION] = "unsupported-version",
    [XS_ERR_INVALID_NAMESPACE] = "invalid-namespace",
    [XS_ERR_BAD_FORMAT] = "bad-format",
    [XS_ERR_NOMEM] = "internal-server-error",
};

const char *xmlstream_err_condition(enum xmlstream_err e)
{
    if ((unsigned)e >= sizeof conditions / sizeof conditions[0]) return "undefined-condition";
    return conditions[e];
}

void xmlstream_limits_default(struct xmlstream_limits *l)
{
    l->max_stanza = 262144;
    l->max_depth = 32;
    l->max_attrs = 64;
    l->max_names = 10000;
}

/* Record the first error and stop libxml2 if it is running. */
static void fail(xmlstream_t *xs, enum xmlstream_err e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(xmlstream_t *xs, enum xmlstream_err e, const char *fmt, ...)
{
    if (xs->err) return;
    xs->err = e;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(xs->errtext, sizeof xs->errtext, fmt, ap);
    va_end(ap);
    if (xs->ctxt) xmlStopParser(xs->ctxt);
}

static int is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* ---- SAX2 callbacks: restricted XML (RFC 6120 §11.1) ---- */

static void sx_internal_subset(void *ctx, const xmlChar *name, const xmlChar *eid, const xmlChar *sid)
{
    fail(ctx, XS_ERR_RESTRICTED_XML, "DOCTYPE declaration");
}

static void sx_external_subset(void *ctx, const xmlChar *name, const xmlChar *eid, const xmlChar *sid)
{
    fail(ctx, XS_ERR_RESTRICTED_XML, "external DTD subset");
}

static void sx_entity_decl(void *ctx, const xmlChar *name, int type, const xmlChar *pid,
                           const xmlChar *sid, xmlChar *content)
{
    fail(ctx, XS_ERR_RESTRICTED_XML, "entity declaration");
}

static void sx_notation_decl(void *ctx, const xmlChar *name, const xmlChar *pid, const xmlChar *sid)
{
    fail(ctx, XS_ERR_RESTRICTED_XML, "notation declaration");
}

static void sx_attribute_decl(void *ctx, const xmlChar *elem, const xmlChar *fullname, int type,
                              int def, const xmlChar *dflt, xmlEnumerationPtr tree)
{
    fail(ctx, XS_ERR_RESTRICTED_XML, "attribute declaration");
    xmlFreeEnumeration(tree); /* the callback owns it (as xmlSAX2AttributeDecl does) */
}

static void sx_element_decl(void *ctx, const xmlChar *name, int type, xmlElementContentPtr content)
{
    fail(ctx, XS_ERR_RESTRICTED_XML, "element declaration");
}

static void sx_unparsed_entity_decl(void *ctx, const xmlChar *name, const xmlChar *pid,
                                    const xmlChar *sid, const xmlChar *notation)
{
    fail(ctx, XS_ERR_RESTRICTED_XML, "entity declaration");
}

/* Called for every entity reference except the five predefined ones,
 * which libxml2 resolves itself; with no DTD there is nothing to find. */
static xmlEntityPtr sx_get_entity(void *ctx, const xmlChar *name)
{
    fail(ctx, XS_ERR_RESTRICTED_XML, "entity reference &%.40s;", (const char *)name);
    return NULL;
}

static xmlEntityPtr sx_get_parameter_entity(void *ctx, const xmlChar *name)
{
    fail(ctx, XS_ERR_RESTRICTED_XML, "parameter entity reference");
    return NULL;
}

static xmlParserInputPtr sx_resolve_entity(void *ctx, const xmlChar *pid, const xmlChar *sid)
{
    fail(ctx, XS_ERR_RESTRICTED_XML, "external entity");
    return NULL;
}

static void sx_reference(void *ctx, const xmlChar *name)
{
    fail(ctx, XS_ERR_RESTRICTED_XML, "entity reference");
}

static void sx_comment(void *ctx, const xmlChar *value)
{
    fail(ctx, XS_ERR_RESTRICTED_XML, "comment");
}

static void sx_pi(void *ctx, const xmlChar *target, const xmlChar *data)
{
    fail(ctx, XS_ERR_RESTRICTED_XML, "processing instruction");
}

static int sx_zero(void *ctx)
{
    return 0;
}

static void sx_locator(void *ctx, xmlSAXLocatorPtr loc)
{
}

static void sx_end_document(void *ctx)
{
}

static void sx_message(void *ctx, const char *msg, ...)
{
    /* every error also arrives through sx_serror, which records it */
}

static void sx_sax1_start(void *ctx, const xmlChar *name, const xmlChar **atts)
{
    fail(ctx, XS_ERR_NOMEM, "libxml2 used the SAX1 interface");
}

static void sx_sax1_end(void *ctx, const xmlChar *name)
{
    fail(ctx, XS_ERR_NOMEM, "libxml2 used the SAX1 interface");
}

/* The encoding the XML declaration named or libxml2 switched to, if it is
 * not UTF-8 ("?" if unnamed); NULL for UTF-8. */
static const char *foreign_encoding(xmlParserCtxtPtr c)
{
    const char *enc = (const char *)c->encoding;
    if (!enc && c->input) enc = (const char *)c->input->encoding;
    if (enc && strcasecmp(enc, "UTF-8") != 0) return enc;
    if (c->input && c->input->buf && c->input->buf->encoder) return enc ? enc : "?";
    return NULL;
}

/* The XML declaration, if any, has been parsed: only XML 1.0 (RFC 6120
 * §11.8) in UTF-8 (§11.6). */
static void sx_start_document(void *ctx)
{
    xmlstream_t *xs = ctx;
    xmlParserCtxtPtr c = xs->ctxt;
    if (xs->priming || xs->err) return;
    if (c->version && strcmp((const char *)c->version, "1.0") != 0) {
        fail(xs, XS_ERR_UNSUPPORTED_VERSION, "XML version %.20s", (const char *)c->version);
        return;
    }
    const char *enc = foreign_encoding(c);
    if (enc) fail(xs, XS_ERR_UNSUPPORTED_ENCODING, "encoding %.40s: UTF-8 only", enc);
}

/* The stream error for libxml2 error code. */
static enum xmlstream_err error_condition(xmlstream_t *xs, int code)
{
    switch (code) {
    case XML_WAR_UNKNOWN_VERSION:
    case XML_ERR_UNKNOWN_VERSION: return XS_ERR_UNSUPPORTED_VERSION;
    case XML_ERR_UNSUPPORTED_ENCODING:
    case XML_ERR_UNKNOWN_ENCODING:
    case XML_ERR_INVALID_ENCODING: return XS_ERR_UNSUPPORTED_ENCODING;
    case XML_ERR_NO_MEMORY: return XS_ERR_NOMEM;
    default: break;
    }
    /* the declaration named an encoding libxml2 switched to, and the rest
     * of it no longer decodes (e.g. encoding='UTF-32') */
    if (xs->ctxt && xs->ctxt->instate == XML_PARSER_START && foreign_encoding(xs->ctxt))
        return XS_ERR_UNSUPPORTED_ENCODING;
    return XS_ERR_NOT_WELL_FORMED;
}

/* Every libxml2 error and warning. Only recorded: libxml2 stops feeding
 * SAX events itself after a fatal error, and our callbacks ignore the rest
 * once xs->err is set (namespace errors are not fatal to libxml2). */
static void sx_serror(void *ctx, xmlErrorPtr e)
{
    xmlstream_t *xs = ctx;
    if (xs->err) return;
    /* A namespace name that is not a valid URI is not a well-formedness
     * error (XML Names §2.2 only says it should be a URI reference), and
     * expat-based servers accept it: let it pass. */
    if (e->code == XML_WAR_NS_URI || e->code == XML_WAR_NS_URI_RELATIVE) return;
    if (e->level == XML_ERR_WARNING && e->code != XML_WAR_UNKNOWN_VERSION) return;
    xs->err = error_condition(xs, e->code);
    const char *msg = e->message ? e->message : "error";
    int n = (int)strcspn(msg, "\n");
    snprintf(xs->errtext, sizeof xs->errtext, "%.*s", n > 150 ? 150 : n, msg);
}

/* ---- SAX2 callbacks: building trees ---- */

/* s (n bytes) as a NUL-terminated string in b, with the "&#38;" that
 * libxml2 leaves in attribute values (and namespace URIs) when it does not
 * substitute entities turned back into "&". Any other '&' was a reference
 * libxml2 resolved itself or one we refused, so every '&' here starts
 * "&#38;". NULL on OOM. */
static const char *decode_amp(struct buf *b, const char *s, size_t n)
{
    buf_clear(b);
    if (buf_reserve(b, n) < 0) return NULL;
    const char *end = s + n;
    while (s < end) {
        const char *amp = memchr(s, '&', (size_t)(end - s));
        if (!amp) amp = end;
        buf_add(b, s, (size_t)(amp - s));
        if (amp == end) break;
        buf_add(b, "&", 1);
        s = (end - amp >= 5 && memcmp(amp, "&#38;", 5) == 0) ? amp + 5 : amp + 1;
    }
    return buf_cstr(b);
}

/* A namespace URI from libxml2's dictionary, decoded; valid until the next call. */
static const char *decode_uri(xmlstream_t *xs, const xmlChar *uri)
{
    const char *s = (const char *)uri;
    if (!strchr(s, '&')) return s;
    return decode_amp(&xs->uri, s, strlen(s));
}

static int flush_text(xmlstream_t *xs)
{
    if (!xs->text.len) return 0;
    int rc = xml_add_text(xs->cur, xs->text.data, xs->text.len) ? 0 : -1;
    buf_clear(&xs->text);
    if (rc < 0) fail(xs, XS_ERR_NOMEM, "out of memory");
    return rc;
}

static int add_attrs(xmlstream_t *xs, xml_node_t *n, int nb, const xmlChar **at)
{
    for (int i = 0; i < nb; i++, at += 5) {
        const char *v = decode_amp(&xs->scratch, (const char *)at[3], (size_t)(at[4] - at[3]));
        const char *ns = at[2] ? decode_uri(xs, at[2]) : NULL;
        if (!v || (at[2] && !ns) || xml_set_attr_ns(n, ns, (const char *)at[0], v) < 0) {
            fail(xs, XS_ERR_NOMEM, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* Append " xmlns[:prefix]='uri'" with uri escaped for a single-quoted value
 * (tab, LF and CR as references, so re-parsing restores them exactly). */
static void add_ns_decl(struct buf *b, const xmlChar *prefix, const char *uri)
{
    buf_adds(b, " xmlns");
    if (prefix) {
        buf_add(b, ":", 1);
        buf_adds(b, (const char *)prefix);
    }
    buf_add(b, "='", 2);
    for (const char *p = uri; *p; p++) {
        switch (*p) {
        case '&': buf_adds(b, "&amp;"); break;
        case '<': buf_adds(b, "&lt;"); break;
        case '\'': buf_adds(b, "&apos;"); break;
        case '\t': buf_adds(b, "&#9;"); break;
        case '\n': buf_adds(b, "&#10;"); break;
        case '\r': buf_adds(b, "&#13;"); break;
        default: buf_add(b, p, 1);
        }
    }
    buf_add(b, "'", 1);
}

/* The stream root's start tag: check it (RFC 6120 §4.9.3.10), remember its
 * name and namespace declarations, and make the header element. */
static void on_root(xmlstream_t *xs, const xmlChar *localname, const xmlChar *prefix,
                    const xmlChar *uri, int nb_ns, const xmlChar **ns, int nb_attrs,
                    const xmlChar **attrs)
{
    if (strcmp((const char *)localname, "stream") != 0) {
        fail(xs, XS_ERR_BAD_FORMAT, "element <%.40s> where the stream header belongs",
             (const char *)localname);
        return;
    }
    if (!uri || strcmp((const char *)uri, XML_NS_STREAM) != 0) {
        fail(xs, XS_ERR_INVALID_NAMESPACE, "stream namespace '%.60s'",
             uri ? (const char *)uri : "");
        return;
    }
    struct buf *h = &xs->hdr;
    buf_clear(h);
    buf_add(h, "<", 1);
    if (prefix) {
        buf_adds(h, (const char *)prefix);
        buf_add(h, ":", 1);
    }
    buf_adds(h, (const char *)localname);
    free(xs->content_ns);
    xs->content_ns = NULL;
    for (int i = 0; i < nb_ns; i++) {
        const char *u = decode_uri(xs, ns[2 * i + 1]);
        if (!u) break;
        add_ns_decl(h, ns[2 * i], u);
        if (!ns[2 * i] && !xs->content_ns) xs->content_ns = strdup(u);
    }
    buf_add(h, ">", 1);
    if (!xs->content_ns) xs->content_ns = strdup("");
    xml_node_t *n = xml_new("stream", XML_NS_STREAM);
    if (h->oom || !xs->content_ns || !n || add_attrs(xs, n, nb_attrs, attrs) < 0) {
        xml_free(n);
        fail(xs, XS_ERR_NOMEM, "out of memory");
        return;
    }
    xs->header = n;
}

/* Namespace of an element libxml2 resolved to uri. */
static const char *element_ns(xmlstream_t *xs, const xmlChar *prefix, const xmlChar *uri)
{
    if (uri) return decode_uri(xs, uri);
    if (xs->default_ns && !prefix && !xs->dflt_depth) return xs->default_ns;
    return "";
}

static void sx_start(void *ctx, const xmlChar *localname, const xmlChar *prefix, const xmlChar *uri,
                     int nb_ns, const xmlChar **ns, int nb_attrs, int nb_defaulted,
                     const xmlChar **attrs)
{
    xmlstream_t *xs = ctx;
    if (xs->err) return;
    unsigned d = xs->bdepth++;
    if (d == 0) {
        if (!xs->priming) on_root(xs, localname, prefix, uri, nb_ns, ns, nb_attrs, attrs);
        return;
    }
    if (d > xs->lim.max_depth || (unsigned)nb_attrs + (unsigned)nb_ns > xs->lim.max_attrs) {
        fail(xs, XS_ERR_POLICY_VIOLATION, "element too deep or too many attributes");
        return;
    }
    if (xmlDictSize(xs->ctxt->dict) - xs->dict_mark > (int)xs->lim.max_names) {
        fail(xs, XS_ERR_POLICY_VIOLATION, "more than %zu distinct names", xs->lim.max_names);
        return;
    }
    if (d > 1 && flush_text(xs) < 0) return;
    for (int i = 0; i < nb_ns && !xs->dflt_depth; i++)
        if (!ns[2 * i]) xs->dflt_depth = d;
    const char *ens = element_ns(xs, prefix, uri);
    xml_node_t *n;
    if (d == 1) {
        if (xs->cur || xs->done) {
            fail(xs, XS_ERR_NOT_WELL_FORMED, "parser disagreement: two elements in one unit");
            return;
        }
        n = ens ? xml_new((const char *)localname, ens) : NULL;
    } else {
        n = ens ? xml_add_elem(xs->cur, (const char *)localname, ens) : NULL;
    }
    if (!n) {
        fail(xs, XS_ERR_NOMEM, "out of memory");
        return;
    }
    if (d == 1) xs->cur = n; /* owned by xs until delivered */
    if (add_attrs(xs, n, nb_attrs, attrs) < 0) return;
    xs->cur = n;
}

static void sx_end(void *ctx, const xmlChar *localname, const xmlChar *prefix, const xmlChar *uri)
{
    xmlstream_t *xs = ctx;
    if (xs->err) return;
    if (xs->bdepth == 0) {
        fail(xs, XS_ERR_NOT_WELL_FORMED, "end tag outside the stream");
        return;
    }
    unsigned d = --xs->bdepth;
    if (d == 0) {
        if (xs->priming) fail(xs, XS_ERR_NOT_WELL_FORMED, "stream closed while priming");
        xs->closed = 1;
        return;
    }
    if (flush_text(xs) < 0) return;
    if (d == xs->dflt_depth) xs->dflt_depth = 0;
    if (d == 1) {
        xs->done = xs->cur;
        xs->cur = NULL;
    } else {
        xs->cur = xs->cur->parent;
    }
}

static void sx_characters(void *ctx, const xmlChar *ch, int len)
{
    xmlstream_t *xs = ctx;
    if (xs->err) return;
    if (xs->bdepth <= 1) {
        for (int i = 0; i < len; i++)
            if (!is_ws(ch[i])) {
                fail(xs, XS_ERR_BAD_FORMAT, "text at stream level");
                return;
            }
        return;
    }
    buf_add(&xs->text, ch, (size_t)len);
    if (xs->text.oom) fail(xs, XS_ERR_NOMEM, "out of memory");
}

/* Every field set: nothing may fall back to libxml2's defaults. */
static xmlSAXHandler sax = {
    .internalSubset = sx_internal_subset,
    .isStandalone = sx_zero,
    .hasInternalSubset = sx_zero,
    .hasExternalSubset = sx_zero,
    .resolveEntity = sx_resolve_entity,
    .getEntity = sx_get_entity,
    .entityDecl = sx_entity_decl,
    .notationDecl = sx_notation_decl,
    .attributeDecl = sx_attribute_decl,
    .elementDecl = sx_element_decl,
    .unparsedEntityDecl = sx_unparsed_entity_decl,
    .setDocumentLocator = sx_locator,
    .startDocument = sx_start_document,
    .endDocument = sx_end_document,
    .startElement = sx_sax1_start,
    .endElement = sx_sax1_end,
    .reference = sx_reference,
    .characters = sx_characters,
    .ignorableWhitespace = sx_characters,
    .processingInstruction = sx_pi,
    .comment = sx_comment,
    .warning = sx_message,
    .error = sx_message,
    .fatalError = sx_message,
    .getParameterEntity = sx_get_parameter_entity,
    .cdataBlock = sx_characters,
    .externalSubset = sx_external_subset,
    .initialized = XML_SAX2_MAGIC,
    ._private = NULL,
    .startElementNs = sx_start,
    .endElementNs = sx_end,
    .serror = sx_serror,
};

/* ---- the libxml2 context ---- */

static void drop_ctxt(xmlstream_t *xs)
{
    if (!xs->ctxt) return;
    xmlFreeParserCtxt(xs->ctxt);
    xs->ctxt = NULL;
    xs->bdepth = 0;
}

/* Give libxml2 n bytes; -1 with xs->err set on any error. Every error
 * reaches sx_serror; xmlParseChunk's result is not used because it keeps
 * returning the code of a namespace warning we let pass. */
static int parse_chunk(xmlstream_t *xs, const char *p, size_t n)
{
    xmlParserCtxtPtr c = xs->ctxt;
    int rc = xmlParseChunk(c, p, (int)n, 0);
    xs->fed += n;
    if (!xs->err && (!c->wellFormed || c->instate == XML_PARSER_EOF))
        fail(xs, XS_ERR_NOT_WELL_FORMED, "not well-formed (libxml2 error %d)", rc);
    return xs->err ? -1 : 0;
}

/* A fresh context; after the header, primed with the synthetic start tag
 * so that it is inside the stream root with the same namespaces. */
static int make_ctxt(xmlstream_t *xs)
{
    xmlParserCtxtPtr c = xmlCreatePushParserCtxt(&sax, xs, NULL, 0, NULL);
    if (!c) {
        fail(xs, XS_ERR_NOMEM, "cannot create the XML parser");
        return -1;
    }
    xmlCtxtUseOptions(c, XML_PARSE_NONET);
    /* whatever the process-wide defaults say: no entity substitution, no
     * DTD loading or validation (DESIGN §10) */
    c->replaceEntities = 0;
    c->loadsubset = 0;
    c->validate = 0;
    c->recovery = 0;
    c->keepBlanks = 1;
    xs->ctxt = c;
    xs->fed = 0;
    xs->biggest = 0;
    xs->bdepth = 0;
    if (xs->phase == PH_PROLOG) return 0;
    xs->priming = 1;
    int rc = parse_chunk(xs, xs->hdr.data, xs->hdr.len);
    xs->priming = 0;
    if (rc == 0 && xs->bdepth != 1)
        fail(xs, XS_ERR_NOT_WELL_FORMED, "cannot prime the XML parser");
    return xs->err ? -1 : 0;
}

/* Parse one unit cut by the scanner. */
static int parse_unit(xmlstream_t *xs, const char *p, size_t n)
{
    if (!xs->ctxt && make_ctxt(xs) < 0) return -1;
    xs->dict_mark = xmlDictSize(xs->ctxt->dict);
    if (n > xs->biggest) xs->biggest = n;
    if (parse_chunk(xs, p, n) < 0) return -1;
    switch (xs->kind) {
    case U_ROOT:
        if (!xs->header) fail(xs, XS_ERR_NOT_WELL_FORMED, "parser disagreement on the stream header");
        break;
    case U_ELEM:
        if (!xs->done || xs->cur || xs->bdepth != 1)
            fail(xs, XS_ERR_NOT_WELL_FORMED, "parser disagreement on an element's end");
        break;
    case U_CLOSE:
        if (!xs->closed) fail(xs, XS_ERR_NOT_WELL_FORMED, "parser disagreement on the stream end");
        break;
    default:
        if (xs->done || xs->header || xs->closed)
            fail(xs, XS_ERR_NOT_WELL_FORMED, "parser disagreement");
        break;
    }
    return xs->err ? -1 : 0;
}

/* After a unit: let go of what should not stay (DESIGN §10: the name
 * dictionary only grows, a big unit leaves a big input buffer). */
static void trim(xmlstream_t *xs)
{
    xmlParserCtxtPtr c = xs->ctxt;
    if (c && xs->phase == PH_CONTENT &&
        (xs->biggest > BIG_UNIT || xs->fed > MAX_FED ||
         (size_t)xmlDictSize(c->dict) > xs->lim.max_names / 2 || xmlDictGetUsage(c->dict) > DICT_KEEP))
        drop_ctxt(xs);
    if (xs->pending.cap > SCRATCH_KEEP) buf_free(&xs->pending);
    if (xs->text.cap > SCRATCH_KEEP) buf_free(&xs->text);
    if (xs->scratch.cap > SCRATCH_KEEP) buf_free(&xs->scratch);
    if (xs->uri.cap > SCRATCH_KEEP) buf_free(&xs->uri);
}

/* Free the trees being built or not yet delivered. */
static void drop_trees(xmlstream_t *xs)
{
    if (xs->cur) {
        while (xs->cur->parent) xs->cur = xs->cur->parent;
        xml_free(xs->cur);
    }
    xml_free(xs->done);
    xml_free(xs->header);
    xs->cur = xs->done = xs->header = NULL;
    xs->closed = 0;
}

/* Hand what the unit produced to the callbacks. 1 if something was
 * delivered, 0 if not, -1 if a callback asked to stop. */
static int deliver(xmlstream_t *xs)
{
    int delivered = 0;
    unsigned gen = xs->gen;
    if (xs->header) {
        xml_node_t *h = xs->header;
        xs->header = NULL;
        xs->phase = PH_CONTENT;
        delivered = 1;
        if (!xs->cb.stream_open) xml_free(h);
        else if (xs->cb.stream_open(xs->arg, h) < 0) return -1;
        if (xs->gen != gen) return 1;
    }
    if (xs->done) {
        xml_node_t *e = xs->done;
        xs->done = NULL;
        delivered = 1;
        if (!xs->cb.element) xml_free(e);
        else if (xs->cb.element(xs->arg, e) < 0) return -1;
        if (xs->gen != gen) return 1;
    }
    if (xs->closed) {
        xs->closed = 0;
        xs->phase = PH_CLOSED;
        drop_ctxt(xs);
        delivered = 1;
        if (xs->cb.stream_close) xs->cb.stream_close(xs->arg);
    }
    return delivered;
}

/* ---- the scanner ---- */

/* Check byte c against the UTF-8 sequence in progress (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF). 1 if c is a
 * continuation byte (no markup meaning), 0 if it starts a character, -1
 * if invalid. */
static int utf8_step(xmlstream_t *xs, unsigned char c)
{
    if (xs->u8_need) {
        if (c < xs->u8_lo || c > xs->u8_hi) return -1;
        xs->u8_need--;
        xs->u8_lo = 0x80;
        xs->u8_hi = 0xBF;
        return 1;
    }
    if (c < 0x80) return c ? 0 : -1;
    xs->u8_lo = 0x80;
    xs->u8_hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) xs->u8_need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        xs->u8_need = 2;
        if (c == 0xE0) xs->u8_lo = 0xA0;
        if (c == 0xED) xs->u8_hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        xs->u8_need = 3;
        if (c == 0xF0) xs->u8_lo = 0x90;
        if (c == 0xF4) xs->u8_hi = 0x8F;
    } else return -1;
    return 0;
}

/* A markup construct ended with '>': does the unit end here? */
static int markup_end(xmlstream_t *xs)
{
    xs->st = SC_TEXT;
    return xs->sdepth <= 1;
}

/* '<' seen: note what kind of unit a construct at stream level starts. */
static void classify(xmlstream_t *xs, enum scan_state next)
{
    if (xs->sdepth > 1) return;
    if (xs->phase == PH_PROLOG) xs->kind = next == SC_STAG ? U_ROOT : U_PROLOG;
    else xs->kind = next == SC_STAG ? U_ELEM : next == SC_ETAG ? U_CLOSE : U_MISC;
}

/* One byte of markup (not inside text or a quoted value). 1 if the unit
 * ends after it, 0 to go on, -1 on error. */
static int scan_byte(xmlstream_t *xs, unsigned char c)
{
    switch (xs->st) {
    case SC_TEXT:
        if (c == '<') {
            xs->st = SC_LT;
        } else if (xs->sdepth == 0 && !is_ws(c)) {
            fail(xs, XS_ERR_NOT_WELL_FORMED, "text before the stream header");
            return -1;
        }
        return 0;
    case SC_LT:
        if (c == '/') xs->st = SC_ETAG;
        else if (c == '!') {
            xs->st = SC_BANG;
            xs->pat = NULL;
            xs->match = 0;
        } else if (c == '?') {
            xs->st = SC_PI;
            xs->prev1 = 0;
        } else if (c >= 0x80 || c == '_' || c == ':' || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) {
            /* XML §2.3 NameStartChar (non-ASCII is checked by libxml2) */
            xs->st = SC_STAG;
            xs->nattrs = 0;
            xs->slash = 0;
        } else {
            /* "<<", "< ", "<1"...: no tag can start here, so say so now
             * instead of waiting for a '>' that may never come */
            fail(xs, XS_ERR_NOT_WELL_FORMED, "'<' not followed by a name");
            return -1;
        }
        classify(xs, xs->st);
        return 0;
    case SC_STAG:
        if (c == '\'' || c == '"') {
            /* one quoted value per attribute: count before libxml2's
             * quadratic duplicate check ever sees the tag (DESIGN §10) */
            if (++xs->nattrs > xs->lim.max_attrs) {
                fail(xs, XS_ERR_POLICY_VIOLATION, "more than %u attributes", xs->lim.max_attrs);
                return -1;
            }
            xs->quote = c;
            xs->st = SC_QUOTE;
        } else if (c == '>') {
            if (!xs->slash && ++xs->sdepth > xs->lim.max_depth + 1) {
                fail(xs, XS_ERR_POLICY_VIOLATION, "elements nested deeper than %u",
                     xs->lim.max_depth);
                return -1;
            }
            return markup_end(xs);
        }
        xs->slash = c == '/';
        return 0;
    case SC_ETAG:
        if (c != '>') return 0;
        if (xs->sdepth) xs->sdepth--;
        return markup_end(xs);
    case SC_BANG:
        if (!xs->pat) xs->pat = c == '-' ? "--" : c == '[' ? "[CDATA[" : "";
        if (xs->pat[xs->match] == (char)c) {
            if (xs->pat[++xs->match] == '\0') {
                xs->st = xs->pat[0] == '-' ? SC_COMMENT : SC_CDATA;
                xs->prev1 = xs->prev2 = 0;
            }
            return 0;
        }
        if (xs->sdepth > 0) {
            /* only comments and CDATA start with "<!" in content (XML §3.1) */
            fail(xs, XS_ERR_NOT_WELL_FORMED, "markup declaration in content");
            return -1;
        }
        xs->st = SC_DECL; /* a DOCTYPE: libxml2 reports it */
        return c == '>' ? markup_end(xs) : 0;
    case SC_COMMENT:
    case SC_CDATA: {
        unsigned char m = xs->st == SC_COMMENT ? '-' : ']';
        int end = c == '>' && xs->prev1 == m && xs->prev2 == m;
        xs->prev2 = xs->prev1;
        xs->prev1 = c;
        return end ? markup_end(xs) : 0;
    }
    case SC_PI: {
        int end = c == '>' && xs->prev1 == '?';
        xs->prev1 = c;
        return end ? markup_end(xs) : 0;
    }
    case SC_DECL:
        return c == '>' ? markup_end(xs) : 0;
    case SC_QUOTE:
        if (c == xs->quote) xs->st = SC_STAG;
        return 0;
    }
    return 0;
}

/* Scan up to n bytes of the current unit. 1 if the unit ended (*used =
 * its bytes here), 0 if all n bytes belong to it, -1 on error. */
static int scan(xmlstream_t *xs, const unsigned char *p, size_t n, size_t *used)
{
    size_t room = xs->lim.max_stanza - xs->unit_len;
    size_t lim = n <= room ? n : room + 1;
    size_t i = 0;
    int r = 0;
    while (i < lim) {
        unsigned char c = p[i];
        /* fast path: plain ASCII inside text or a quoted value */
        if (xs->st == SC_TEXT && xs->sdepth > 1) {
            while (i < lim && p[i] != '<' && p[i] >= 0x20 && p[i] < 0x80) i++;
            if (i == lim) break;
            c = p[i];
        } else if (xs->st == SC_QUOTE) {
            while (i < lim && p[i] != xs->quote && p[i] >= 0x20 && p[i] < 0x80) i++;
            if (i == lim) break;
            c = p[i];
        }
        i++;
        int u = (c < 0x80 && c && !xs->u8_need) ? 0 : utf8_step(xs, c);
        if (u < 0) {
            fail(xs, XS_ERR_NOT_WELL_FORMED, "invalid UTF-8 or NUL byte");
            return -1;
        }
        if (u > 0) continue;
        r = scan_byte(xs, c);
        if (r) break;
    }
    xs->unit_len += i;
    if (r < 0) return -1;
    if (xs->unit_len > xs->lim.max_stanza) {
        fail(xs, XS_ERR_POLICY_VIOLATION, "%s larger than %zu bytes",
             xs->phase == PH_PROLOG ? "stream header" : "stanza", xs->lim.max_stanza);
        return -1;
    }
    *used = i;
    return r;
}

/* ---- feeding ---- */

static void begin_unit(xmlstream_t *xs)
{
    xs->in_unit = 1;
    xs->unit_len = 0;
    xs->kind = U_NONE;
}

/* A complete unit: bytes p..p+n, preceded by whatever is pending. */
static int unit_done(xmlstream_t *xs, const char *p, size_t n)
{
    int rc;
    xs->in_unit = 0;
    if (xs->pending.len) {
        buf_add(&xs->pending, p, n);
        if (xs->pending.oom) {
            fail(xs, XS_ERR_NOMEM, "out of memory");
            return -1;
        }
        rc = parse_unit(xs, xs->pending.data, xs->pending.len);
        buf_clear(&xs->pending);
    } else {
        rc = parse_unit(xs, p, n);
    }
    if (rc < 0) return -1;
    trim(xs);
    return 0;
}

/* The unit loop of xmlstream_feed: bytes consumed, or -1. */
static ssize_t feed_units(xmlstream_t *xs, const char *data, size_t len)
{
    const unsigned char *p = (const unsigned char *)data;
    unsigned gen = xs->gen;
    size_t i = 0;
    while (i < len) {
        if (!xs->in_unit) {
            if (xs->phase == PH_CONTENT) {
                /* whitespace between top-level elements (RFC 6120 §11.7) */
                while (i < len && is_ws(p[i])) i++;
                if (i == len) break;
                if (p[i] != '<') {
                    fail(xs, XS_ERR_BAD_FORMAT, "text at stream level");
                    return -1;
                }
            }
            begin_unit(xs);
        }
        size_t used = 0;
        int r = scan(xs, p + i, len - i, &used);
        if (r < 0) return -1;
        if (r == 0) {
            buf_add(&xs->pending, data + i, len - i);
            if (xs->pending.oom) {
                fail(xs, XS_ERR_NOMEM, "out of memory");
                return -1;
            }
            break;
        }
        if (unit_done(xs, data + i, used) < 0) return -1;
        i += used;
        int d = deliver(xs);
        if (d < 0) {
            xs->stopped = 1;
            snprintf(xs->errtext, sizeof xs->errtext, "stopped by a callback");
            return -1;
        }
        if (xs->gen != gen) return (ssize_t)i;
        if (xs->phase == PH_CLOSED) return xs->pause ? (ssize_t)i : (ssize_t)len;
        if (d && xs->pause) return (ssize_t)i;
    }
    return (ssize_t)len;
}

ssize_t xmlstream_feed(xmlstream_t *xs, const char *data, size_t len)
{
    if (xs->err || xs->stopped) return -1;
    if (xs->phase == PH_CLOSED) return (ssize_t)len;
    ssize_t r = feed_units(xs, data, len);
    if (r < 0) {
        /* nothing more will be parsed: let the memory go now */
        drop_ctxt(xs);
        drop_trees(xs);
        buf_free(&xs->pending);
    }
    return r;
}

/* ---- life cycle ---- */

/* Forget the stream (and the tree being built); keep limits and callbacks. */
static void clear_stream(xmlstream_t *xs)
{
    drop_ctxt(xs);
    drop_trees(xs);
    buf_free(&xs->pending);
    buf_free(&xs->text);
    buf_free(&xs->scratch);
    buf_free(&xs->uri);
    buf_free(&xs->hdr);
    free(xs->content_ns);
    xs->content_ns = NULL;
    xs->phase = PH_PROLOG;
    xs->err = XS_OK;
    xs->stopped = 0;
    xs->errtext[0] = '\0';
    xs->st = SC_TEXT;
    xs->sdepth = 0;
    xs->u8_need = 0;
    xs->in_unit = 0;
    xs->unit_len = 0;
    xs->kind = U_NONE;
    xs->dflt_depth = 0;
}

xmlstream_t *xmlstream_new(const struct xmlstream_limits *lim, const struct xmlstream_cb *cb, void *arg)
{
    xmlInitParser();
    xmlstream_t *xs = calloc(1, sizeof *xs);
    if (!xs) return NULL;
    if (lim) xs->lim = *lim;
    else xmlstream_limits_default(&xs->lim);
    if (xs->lim.max_stanza == 0 || xs->lim.max_stanza > (1u << 30)) xs->lim.max_stanza = 1u << 30;
    if (xs->lim.max_names > (1u << 30)) xs->lim.max_names = 1u << 30;
    if (cb) xs->cb = *cb;
    xs->arg = arg;
    clear_stream(xs);
    return xs;
}

void xmlstream_free(xmlstream_t *xs)
{
    if (!xs) return;
    clear_stream(xs);
    free(xs);
}

void xmlstream_set_pause(xmlstream_t *xs, int on)
{
    xs->pause = on != 0;
}

void xmlstream_reset(xmlstream_t *xs)
{
    clear_stream(xs);
    xs->gen++;
}

enum xmlstream_err xmlstream_error(const xmlstream_t *xs)
{
    return xs->err;
}

const char *xmlstream_error_text(const xmlstream_t *xs)
{
    return xs->errtext;
}

const char *xmlstream_content_ns(const xmlstream_t *xs)
{
    return xs->phase == PH_PROLOG ? NULL : xs->content_ns;
}

void xmlstream_idle(xmlstream_t *xs)
{
    if (xs->in_unit || xs->phase != PH_CONTENT) return;
    drop_ctxt(xs);
    buf_free(&xs->pending);
    buf_free(&xs->text);
    buf_free(&xs->scratch);
    buf_free(&xs->uri);
}

size_t xmlstream_memory(const xmlstream_t *xs)
{
    size_t n = sizeof *xs + xs->pending.cap + xs->text.cap + xs->scratch.cap + xs->uri.cap +
               xs->hdr.cap;
    if (xs->content_ns) n += strlen(xs->content_ns) + 1;
    if (xs->ctxt) {
        /* the context, its dictionary (entries ~48 bytes + strings) and
         * the input buffer it grew for the largest unit */
        n += CTXT_COST + (size_t)xmlDictSize(xs->ctxt->dict) * 48 +
             xmlDictGetUsage(xs->ctxt->dict) + xs->biggest;
    }
    return n;
}

/* ---- xml_parse (xml.h) ---- */

struct fragment {
    xml_node_t *elem;
    int extra; /* more than one element */
};

static int fragment_element(void *arg, xml_node_t *e)
{
    struct fragment *f = arg;
    if (f->elem) {
        xml_free(e);
        f->extra = 1;
        return -1;
    }
    f->elem = e;
    return 0;
}

static int fragment_open(void *arg, xml_node_t *h)
{
    xml_free(h);
    return -1; /* cannot happen: the parser starts inside its root */
}

static void fragment_close(void *arg)
{
    ((struct fragment *)arg)->extra = 1;
}

/* A parser that starts inside a synthetic root without namespaces. */
static xmlstream_t *fragment_parser(struct fragment *f)
{
    static const struct xmlstream_cb cb = {
        .stream_open = fragment_open,
        .element = fragment_element,
        .stream_close = fragment_close,
    };
    xmlstream_t *xs = xmlstream_new(NULL, &cb, f);
    if (!xs) return NULL;
    buf_adds(&xs->hdr, "<" FRAGMENT_ROOT ">");
    xs->content_ns = strdup("");
    xs->phase = PH_CONTENT;
    xs->sdepth = 1;
    if (xs->hdr.oom || !xs->content_ns) {
        xmlstream_free(xs);
        return NULL;
    }
    return xs;
}

xml_node_t *xml_parse(const char *data, size_t len, const char *default_ns)
{
    /* one cached parser per thread: creating a libxml2 context per call
     * would cost more than parsing a stanza */
    static _Thread_local xmlstream_t *cache;
    static _Thread_local struct fragment frag;
    if (!data) return NULL;
    if (!cache && !(cache = fragment_parser(&frag))) return NULL;
    frag.elem = NULL;
    frag.extra = 0;
    cache->default_ns = default_ns && *default_ns ? default_ns : NULL;
    ssize_t r = xmlstream_feed(cache, data, len);
    cache->default_ns = NULL;
    if (r != (ssize_t)len || cache->in_unit || frag.extra || !frag.elem) {
        xml_free(frag.elem);
        frag.elem = NULL;
        xmlstream_free(cache);
        cache = NULL;
        return NULL;
    }
    return frag.elem;
}
