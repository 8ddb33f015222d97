/* xml.h - a small DOM for one XML element (a stanza, a stream header),
 * allocated in one arena per tree, and its canonical serialization: the one
 * internal form every xmppd daemon exchanges (DESIGN §3 "parse once").
 *
 * Trees are built by the stream parser (xmlstream.h), by xml_parse() or by
 * hand. All strings are UTF-8, NUL-terminated and unescaped. Every node and
 * string of a tree lives in the root's arena: nothing is freed until
 * xml_free(root). A tree has no locking; use it from one thread at a time.
 *
 * Canonical form written by xml_serialize(): no prefixes on element names;
 * ` xmlns='NS'` wherever an element's namespace differs from its parent's;
 * attributes in document order, values in single quotes; `xml:lang` (and
 * any attribute in XML_NS_XML) as `xml:NAME`; other namespaced attributes
 * with generated prefixes ns1, ns2... declared on the same element; empty
 * elements as <name/>. The root always starts with "<" + local name followed
 * by ' ', '/' or '>' (downstream code inserts attributes right after it). */
#ifndef XMPPD_XML_H
#define XMPPD_XML_H

#include <stddef.h>

#include "buf.h"

#define XML_NS_XML "http://www.w3.org/XML/1998/namespace"
#define XML_NS_STREAM "http://etherx.jabber.org/streams"

enum xml_node_type { XML_NODE_ELEM = 1, XML_NODE_TEXT = 2 };

typedef struct xml_node xml_node_t;

struct xml_attr {
    const char *name;
    const char *ns; /* NULL = unqualified; XML_NS_XML for xml:lang */
    const char *value;
    struct xml_attr *next;
};

struct xml_node {
    int type;
    const char *name; /* element local name */
    const char *ns;   /* element namespace URI, "" if none */
    const char *text; /* text node content, NUL-terminated, unescaped */
    size_t text_len;
    struct xml_attr *attrs; /* in document order */
    xml_node_t *parent, *children, *last, *next;
    struct xml_arena *arena; /* owned by the root */
};

/* New root element in its own arena (ns NULL = no namespace); NULL on OOM or an invalid name. */
xml_node_t *xml_new(const char *name, const char *ns);
/* Free the whole tree (NULL ok); on a non-root node it only unlinks it, like xml_remove(). */
void xml_free(xml_node_t *root);
/* Parse exactly one complete element (surrounding whitespace allowed) as restricted XML with the stream parser's default limits; default_ns = namespace of unprefixed names when the text declares none; NULL on any error. Implemented in xmlstream.c. */
xml_node_t *xml_parse(const char *data, size_t len, const char *default_ns);

/* Unqualified attribute value or NULL ("xml:lang" is accepted as an alias for the XML_NS_XML attribute). */
const char *xml_attr(const xml_node_t *e, const char *name);
/* Attribute value in namespace ns (NULL or "" = unqualified) or NULL. */
const char *xml_attr_ns(const xml_node_t *e, const char *ns, const char *name);
/* Add/replace an unqualified attribute (copies; "xml:lang" alias ok); value NULL removes; 0/-1. */
int xml_set_attr(xml_node_t *e, const char *name, const char *value);
/* Add/replace an attribute in namespace ns (NULL or "" = unqualified); value NULL removes; 0/-1. */
int xml_set_attr_ns(xml_node_t *e, const char *ns, const char *name, const char *value);

/* First child element matching name and ns; NULL name or ns = any. */
xml_node_t *xml_child(const xml_node_t *e, const char *name, const char *ns);
/* First child element. */
xml_node_t *xml_first_elem(const xml_node_t *e);
/* Next sibling element. */
xml_node_t *xml_next_elem(const xml_node_t *e);

/* Append a child element (ns NULL = parent's ns); NULL on OOM or an invalid name. */
xml_node_t *xml_add_elem(xml_node_t *parent, const char *name, const char *ns);
/* Append text (copied; merged into a preceding text node; len 0 adds nothing and returns parent); NULL on OOM. */
xml_node_t *xml_add_text(xml_node_t *parent, const char *text, size_t len);
/* Append a deep copy of src (from any tree, even parent's own subtree); NULL on OOM. */
xml_node_t *xml_add_copy(xml_node_t *parent, const xml_node_t *src);
/* Unlink n from its parent; its memory stays in the arena until the root is freed. */
void xml_remove(xml_node_t *n);

/* Concatenation of e's direct text children ("" if none; NULL only on OOM). */
const char *xml_text(const xml_node_t *e);
/* Append e's canonical form to out (context_ns: namespace in scope, NULL = always emit xmlns); 0, or -1 (out unchanged) on OOM or content XML cannot carry. */
int xml_serialize(const xml_node_t *e, struct buf *out, const char *context_ns);
/* Bytes held by the tree's arena. */
size_t xml_memory(const xml_node_t *root);

#endif
