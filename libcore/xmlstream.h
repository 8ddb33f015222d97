/* xmlstream.h - the client XML stream parser (libxml2 push SAX2 underneath):
 * untrusted bytes in, one stream header and then one complete top-level
 * element at a time out, as xml.h trees. Restricted XML only (RFC 6120
 * §11.1): no DTD, entity declarations or references other than the five
 * predefined ones, no comments, no processing instructions; UTF-8 and XML
 * 1.0 only; hard limits on stanza size, depth, attributes and names.
 *
 * Callbacks run from inside xmlstream_feed() but outside libxml2, so they
 * may call xmlstream_set_pause(), xmlstream_reset() and xmlstream_idle();
 * never xmlstream_free(). A callback that resets the stream makes feed
 * return right after that element: the bytes after it are not consumed
 * (DESIGN §3: after <starttls/> they must be discarded, not parsed). */
#ifndef XMPPD_XMLSTREAM_H
#define XMPPD_XMLSTREAM_H

#include <stddef.h>
#include <sys/types.h>

#include "xml.h"

struct xmlstream_limits {
    size_t max_stanza;  /* bytes of one top-level element, default 262144 */
    unsigned max_depth; /* element nesting inside a stanza (the stanza is 1), default 32 */
    unsigned max_attrs; /* per element, namespace declarations included, default 64 */
    size_t max_names;   /* distinct names held by the parser dictionary, default 10000 */
};

/* Fill l with the defaults above. */
void xmlstream_limits_default(struct xmlstream_limits *l);

enum xmlstream_err {
    XS_OK = 0,
    XS_ERR_NOT_WELL_FORMED,
    XS_ERR_RESTRICTED_XML,
    XS_ERR_POLICY_VIOLATION, /* a limit */
    XS_ERR_UNSUPPORTED_ENCODING,
    XS_ERR_UNSUPPORTED_VERSION,
    XS_ERR_INVALID_NAMESPACE,
    XS_ERR_BAD_FORMAT,
    XS_ERR_NOMEM
};

/* RFC 6120 §4.9.3 condition name for e ("internal-server-error" for NOMEM, "undefined-condition" for XS_OK). */
const char *xmlstream_err_condition(enum xmlstream_err e);

typedef struct xmlstream xmlstream_t;

struct xmlstream_cb {
    /* The <stream:stream> start tag as an element (name "stream", ns XML_NS_STREAM, its attributes); callee owns it; return -1 to stop. */
    int (*stream_open)(void *arg, xml_node_t *header);
    /* One complete top-level element (depth 1); callee owns it; return -1 to stop. */
    int (*element)(void *arg, xml_node_t *elem);
    /* </stream:stream>; no callback follows. */
    void (*stream_close)(void *arg);
};

/* New parser (lim NULL = defaults; any callback may be NULL); NULL on OOM. */
xmlstream_t *xmlstream_new(const struct xmlstream_limits *lim, const struct xmlstream_cb *cb, void *arg);
/* Free the parser (NULL ok); never from a callback. */
void xmlstream_free(xmlstream_t *xs);
/* Parse bytes: returns bytes consumed (len, or less in pause mode or after a reset from a callback), or -1 (see xmlstream_error; a callback returning -1 leaves XS_OK). After stream_close, bytes are ignored (len is returned); after -1, every call returns -1 until xmlstream_reset. */
ssize_t xmlstream_feed(xmlstream_t *xs, const char *data, size_t len);
/* Pause mode: feed returns right after the first complete top-level element (or the stream header, or the close) was delivered; later bytes are not consumed. */
void xmlstream_set_pause(xmlstream_t *xs, int on);
/* Forget everything but limits, callbacks and pause mode; the next bytes must begin a new stream (RFC 6120 §5.4.3.3, §6.4.6). */
void xmlstream_reset(xmlstream_t *xs);
/* Why feed returned -1. */
enum xmlstream_err xmlstream_error(const xmlstream_t *xs);
/* Human detail of the error for the log ("" if none). */
const char *xmlstream_error_text(const xmlstream_t *xs);
/* Default namespace the stream header declared ("" if none), e.g. "jabber:client"; NULL before the header. */
const char *xmlstream_content_ns(const xmlstream_t *xs);
/* Between elements with no partial input: free the libxml2 context and scratch memory; the next feed recreates it with the stream's namespace context. No-op otherwise. */
void xmlstream_idle(xmlstream_t *xs);
/* Approximate bytes held now (libxml2 context estimated). */
size_t xmlstream_memory(const xmlstream_t *xs);

#endif
