/* xml.c - the arena-allocated DOM of xml.h and its canonical serializer.
 * A tree's nodes, attributes and strings are carved out of blocks that
 * belong to the root's arena: building a stanza costs one or two mallocs,
 * freeing it one free per block. Names and attribute strings are never
 * changed in place, so nodes of one arena may share them (only text grows
 * in place). The serializer writes the one canonical form (see xml.h) and
 * refuses content XML 1.0 cannot carry (invalid UTF-8, control
 * characters), so its output always re-parses to an equal tree.
 * xml_parse() lives in xmlstream.c, next to the parser. */
#include "config.h"
#include "xml.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_FIRST 1024      /* first malloc: arena header + first block */
#define ARENA_MAX_BLOCK 65536 /* growth stops doubling here */
#define XMLNS_NS "http://www.w3.org/2000/xmlns/"

struct xml_block {
    struct xml_block *next; /* older blocks */
    size_t size;            /* bytes in data */
    size_t used;
    char data[];            /* 8-byte aligned: the header is 24 bytes */
};

struct xml_arena {
    struct xml_block *cur;  /* block that serves small allocations */
    struct xml_block *last; /* block of the latest allocation */
    size_t total;           /* bytes obtained from malloc */
    xml_node_t *root;
};

/* Shared constant strings: never copied into an arena. */
static const char empty_str[] = "";
static const char ns_xml[] = XML_NS_XML;

/* ---- arena ---- */

/* The block that lives in the same allocation as the arena header. */
static struct xml_block *first_block(struct xml_arena *a)
{
    return (struct xml_block *)(a + 1);
}

static struct xml_arena *arena_new(void)
{
    struct xml_arena *a = malloc(ARENA_FIRST);
    if (!a) return NULL;
    struct xml_block *b = first_block(a);
    b->next = NULL;
    b->size = ARENA_FIRST - sizeof *a - sizeof *b;
    b->used = 0;
    a->cur = a->last = b;
    a->total = ARENA_FIRST;
    a->root = NULL;
    return a;
}

static void arena_free(struct xml_arena *a)
{
    struct xml_block *first = first_block(a);
    struct xml_block *b = a->cur;
    while (b) {
        struct xml_block *next = b->next;
        if (b != first) free(b);
        b = next;
    }
    free(a);
}

/* A new block for an allocation of n bytes that did not fit. Large
 * allocations get a block of their own, linked behind the current one, so
 * the free space of the current block is not wasted; with slack, that
 * block has room to grow the allocation in place to twice its size. */
static struct xml_block *arena_grow(struct xml_arena *a, size_t n, int slack)
{
    size_t size = a->cur->size * 2;
    if (size > ARENA_MAX_BLOCK) size = ARENA_MAX_BLOCK;
    int own = n > size / 4;
    if (own) size = (slack && n < SIZE_MAX / 2) ? 2 * n : n;
    if (size > SIZE_MAX - sizeof(struct xml_block)) return NULL;
    struct xml_block *b = malloc(sizeof *b + size);
    if (!b) return NULL;
    b->size = size;
    b->used = 0;
    a->total += sizeof *b + size;
    if (own) {
        b->next = a->cur->next;
        a->cur->next = b;
    } else {
        b->next = a->cur;
        a->cur = b;
    }
    return b;
}

/* n bytes aligned to align (a power of two <= 8); NULL on OOM. */
static void *arena_alloc_slack(struct xml_arena *a, size_t n, size_t align, int slack)
{
    struct xml_block *b = a->cur;
    size_t off = (b->used + align - 1) & ~(align - 1);
    if (off > b->size || n > b->size - off) {
        b = arena_grow(a, n, slack);
        if (!b) return NULL;
        off = 0;
    }
    b->used = off + n;
    a->last = b;
    return b->data + off;
}

static void *arena_alloc(struct xml_arena *a, size_t n, size_t align)
{
    return arena_alloc_slack(a, n, align, 0);
}

/* Copy n bytes of s as a NUL-terminated string. */
static char *arena_strndup(struct xml_arena *a, const char *s, size_t n)
{
    if (n == SIZE_MAX) return NULL;
    char *d = arena_alloc(a, n + 1, 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static const char *arena_strdup(struct xml_arena *a, const char *s)
{
    if (!*s) return empty_str;
    return arena_strndup(a, s, strlen(s));
}

/* A namespace string for a node whose parent (may be NULL) has pns. */
static const char *arena_ns(struct xml_arena *a, const char *ns, const char *pns)
{
    if (!ns || !*ns) return empty_str;
    if (pns && (ns == pns || strcmp(ns, pns) == 0)) return pns;
    if (strcmp(ns, ns_xml) == 0) return ns_xml;
    return arena_strdup(a, ns);
}

static xml_node_t *node_new(struct xml_arena *a, int type)
{
    xml_node_t *n = arena_alloc(a, sizeof *n, sizeof(void *));
    if (!n) return NULL;
    memset(n, 0, sizeof *n);
    n->type = type;
    n->arena = a;
    return n;
}

static void append_child(xml_node_t *parent, xml_node_t *n)
{
    n->parent = parent;
    n->next = NULL;
    if (parent->last) parent->last->next = n;
    else parent->children = n;
    parent->last = n;
}

/* ---- names ---- */

/* An XML name we can write without escaping: letters, digits, '-', '.',
 * '_' and any non-ASCII byte, not starting with a digit, '-' or '.'.
 * Colons are refused: prefixes are the serializer's business. */
static int valid_name(const char *s)
{
    if (!s || !*s) return 0;
    unsigned char c0 = (unsigned char)s[0];
    if (c0 == '-' || c0 == '.' || (c0 >= '0' && c0 <= '9')) return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        if (c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_')
            continue;
        return 0;
    }
    return 1;
}

/* "xml:NAME" given as an unqualified name means NAME in XML_NS_XML. */
static void split_xml_alias(const char **ns, const char **name)
{
    if (!*ns && strncmp(*name, "xml:", 4) == 0) {
        *ns = ns_xml;
        *name += 4;
    }
}

/* ---- building ---- */

xml_node_t *xml_new(const char *name, const char *ns)
{
    if (!valid_name(name)) return NULL;
    struct xml_arena *a = arena_new();
    if (!a) return NULL;
    xml_node_t *n = node_new(a, XML_NODE_ELEM);
    if (n) {
        n->name = arena_strdup(a, name);
        n->ns = arena_ns(a, ns, NULL);
    }
    if (!n || !n->name || !n->ns) {
        arena_free(a);
        return NULL;
    }
    a->root = n;
    return n;
}

void xml_free(xml_node_t *root)
{
    if (!root) return;
    if (root->arena->root != root) {
        xml_remove(root);
        return;
    }
    arena_free(root->arena);
}

xml_node_t *xml_add_elem(xml_node_t *parent, const char *name, const char *ns)
{
    if (!parent || parent->type != XML_NODE_ELEM || !valid_name(name)) return NULL;
    struct xml_arena *a = parent->arena;
    xml_node_t *n = node_new(a, XML_NODE_ELEM);
    if (!n) return NULL;
    n->name = arena_strdup(a, name);
    n->ns = ns ? arena_ns(a, ns, parent->ns) : parent->ns;
    if (!n->name || !n->ns) return NULL;
    append_child(parent, n);
    return n;
}

/* Extend text node t by len bytes: in place when its string is the latest
 * allocation and its block has room, else by a copy with slack, so that
 * appending piece by piece stays linear. */
static int text_extend(xml_node_t *t, const char *text, size_t len)
{
    struct xml_block *b = t->arena->last;
    char *end = (char *)t->text + t->text_len + 1;
    if (end == b->data + b->used && len <= b->size - b->used) {
        memmove(end - 1, text, len);
        end[len - 1] = '\0';
        b->used += len;
    } else {
        if (t->text_len > SIZE_MAX - 1 - len) return -1;
        char *d = arena_alloc_slack(t->arena, t->text_len + len + 1, 1, 1);
        if (!d) return -1;
        memcpy(d, t->text, t->text_len);
        memcpy(d + t->text_len, text, len);
        d[t->text_len + len] = '\0';
        t->text = d;
    }
    t->text_len += len;
    return 0;
}

xml_node_t *xml_add_text(xml_node_t *parent, const char *text, size_t len)
{
    if (!parent || parent->type != XML_NODE_ELEM) return NULL;
    if (len == 0) return parent;
    xml_node_t *last = parent->last;
    if (last && last->type == XML_NODE_TEXT)
        return text_extend(last, text, len) < 0 ? NULL : last;
    xml_node_t *n = node_new(parent->arena, XML_NODE_TEXT);
    if (!n) return NULL;
    char *d = arena_strndup(parent->arena, text, len);
    if (!d) return NULL;
    n->text = d;
    n->text_len = len;
    append_child(parent, n);
    return n;
}

/* Copy src (and its subtree) into arena a, unattached. pns is the new
 * parent's namespace. Names and attribute strings are shared when src
 * lives in a already; text is always copied (text_extend may grow it). */
static xml_node_t *copy_node(struct xml_arena *a, const xml_node_t *src, const char *pns)
{
    int same = src->arena == a;
    xml_node_t *n = node_new(a, src->type);
    if (!n) return NULL;
    if (src->type == XML_NODE_TEXT) {
        n->text = arena_strndup(a, src->text, src->text_len);
        n->text_len = src->text_len;
        return n->text ? n : NULL;
    }
    n->name = same ? src->name : arena_strdup(a, src->name);
    n->ns = same ? src->ns : arena_ns(a, src->ns, pns);
    if (!n->name || !n->ns) return NULL;
    struct xml_attr **tail = &n->attrs;
    for (const struct xml_attr *sa = src->attrs; sa; sa = sa->next) {
        struct xml_attr *na = arena_alloc(a, sizeof *na, sizeof(void *));
        if (!na) return NULL;
        na->name = same ? sa->name : arena_strdup(a, sa->name);
        na->ns = (same || !sa->ns) ? sa->ns : arena_ns(a, sa->ns, NULL);
        na->value = same ? sa->value : arena_strdup(a, sa->value);
        na->next = NULL;
        if (!na->name || !na->value || (sa->ns && !na->ns)) return NULL;
        *tail = na;
        tail = &na->next;
    }
    for (const xml_node_t *c = src->children; c; c = c->next) {
        xml_node_t *nc = copy_node(a, c, n->ns);
        if (!nc) return NULL;
        append_child(n, nc);
    }
    return n;
}

xml_node_t *xml_add_copy(xml_node_t *parent, const xml_node_t *src)
{
    if (!parent || !src || parent->type != XML_NODE_ELEM) return NULL;
    if (src->type == XML_NODE_TEXT) return xml_add_text(parent, src->text, src->text_len);
    /* The copy is built unattached and linked last, so copying a subtree
     * into itself does not see its own copy. */
    xml_node_t *n = copy_node(parent->arena, src, parent->ns);
    if (!n) return NULL;
    append_child(parent, n);
    return n;
}

void xml_remove(xml_node_t *n)
{
    if (!n || !n->parent) return;
    xml_node_t *p = n->parent, *prev = NULL;
    for (xml_node_t *c = p->children; c && c != n; c = c->next) prev = c;
    if (prev) prev->next = n->next;
    else p->children = n->next;
    if (p->last == n) p->last = prev;
    n->parent = NULL;
    n->next = NULL;
}

/* ---- attributes ---- */

static int attr_match(const struct xml_attr *at, const char *ns, const char *name)
{
    if (strcmp(at->name, name) != 0) return 0;
    if (!ns || !at->ns) return !ns && !at->ns;
    return at->ns == ns || strcmp(at->ns, ns) == 0;
}

const char *xml_attr_ns(const xml_node_t *e, const char *ns, const char *name)
{
    if (!e || !name) return NULL;
    if (ns && !*ns) ns = NULL;
    for (const struct xml_attr *at = e->attrs; at; at = at->next)
        if (attr_match(at, ns, name)) return at->value;
    return NULL;
}

const char *xml_attr(const xml_node_t *e, const char *name)
{
    const char *ns = NULL;
    if (!name) return NULL;
    split_xml_alias(&ns, &name);
    return xml_attr_ns(e, ns, name);
}

int xml_set_attr_ns(xml_node_t *e, const char *ns, const char *name, const char *value)
{
    if (!e || e->type != XML_NODE_ELEM || !name) return -1;
    if (ns && !*ns) ns = NULL;
    split_xml_alias(&ns, &name);
    if (!valid_name(name)) return -1;
    if (!ns && strcmp(name, "xmlns") == 0) return -1; /* namespaces live in ->ns */
    if (ns && strcmp(ns, XMLNS_NS) == 0) return -1;
    struct xml_attr **link = &e->attrs;
    while (*link && !attr_match(*link, ns, name)) link = &(*link)->next;
    struct xml_attr *at = *link;
    if (!value) {
        if (at) *link = at->next;
        return 0;
    }
    struct xml_arena *a = e->arena;
    const char *v = arena_strdup(a, value);
    if (!v) return -1;
    if (at) {
        at->value = v;
        return 0;
    }
    at = arena_alloc(a, sizeof *at, sizeof(void *));
    if (!at) return -1;
    at->name = arena_strdup(a, name);
    at->ns = ns ? arena_ns(a, ns, NULL) : NULL;
    at->value = v;
    at->next = NULL;
    if (!at->name || (ns && !at->ns)) return -1;
    *link = at;
    return 0;
}

int xml_set_attr(xml_node_t *e, const char *name, const char *value)
{
    return xml_set_attr_ns(e, NULL, name, value);
}

/* ---- navigation ---- */

xml_node_t *xml_child(const xml_node_t *e, const char *name, const char *ns)
{
    if (!e) return NULL;
    for (xml_node_t *c = e->children; c; c = c->next) {
        if (c->type != XML_NODE_ELEM) continue;
        if (name && strcmp(c->name, name) != 0) continue;
        if (ns && strcmp(c->ns, ns) != 0) continue;
        return c;
    }
    return NULL;
}

xml_node_t *xml_first_elem(const xml_node_t *e)
{
    return xml_child(e, NULL, NULL);
}

xml_node_t *xml_next_elem(const xml_node_t *e)
{
    if (!e) return NULL;
    for (xml_node_t *c = e->next; c; c = c->next)
        if (c->type == XML_NODE_ELEM) return c;
    return NULL;
}

const char *xml_text(const xml_node_t *e)
{
    if (!e) return empty_str;
    if (e->type == XML_NODE_TEXT) return e->text;
    const xml_node_t *only = NULL;
    size_t total = 0, count = 0;
    for (const xml_node_t *c = e->children; c; c = c->next) {
        if (c->type != XML_NODE_TEXT) continue;
        only = c;
        total += c->text_len;
        count++;
    }
    if (count == 0) return empty_str;
    if (count == 1) return only->text;
    char *d = arena_alloc(e->arena, total + 1, 1);
    if (!d) return NULL;
    char *p = d;
    for (const xml_node_t *c = e->children; c; c = c->next) {
        if (c->type != XML_NODE_TEXT) continue;
        memcpy(p, c->text, c->text_len);
        p += c->text_len;
    }
    *p = '\0';
    return d;
}

size_t xml_memory(const xml_node_t *root)
{
    return root ? root->arena->total : 0;
}

/* ---- serialization ---- */

/* Length of the valid UTF-8 sequence of an XML Char at s (n bytes left),
 * or 0: overlong forms, surrogates, > U+10FFFF, U+FFFE and U+FFFF are not
 * characters XML 1.0 can carry (RFC 6120 §11.6 requires UTF-8). */
static size_t utf8_char_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0;
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    if (c == 0xEF && s[1] == 0xBF && (s[2] == 0xBE || s[2] == 0xBF)) return 0;
    return len;
}

/* Append s escaped for text (attr 0) or a single-quoted attribute value
 * (attr 1). Tab, LF and CR are written as character references where the
 * parser would otherwise normalize them away (attribute values; CR in
 * text). -1 on a character XML cannot carry. */
static int put_escaped(struct buf *out, const char *s, size_t n, int attr)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t start = 0, i = 0;
    while (i < n) {
        unsigned char c = u[i];
        const char *rep = NULL;
        if (c >= 0x80) {
            size_t l = utf8_char_len(u + i, n - i);
            if (!l) return -1;
            i += l;
            continue;
        }
        switch (c) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '\'': rep = attr ? "&apos;" : NULL; break;
        case '"': rep = attr ? "&quot;" : NULL; break;
        case '\t': rep = attr ? "&#9;" : NULL; break;
        case '\n': rep = attr ? "&#10;" : NULL; break;
        case '\r': rep = "&#13;"; break;
        default:
            if (c < 0x20) return -1;
        }
        if (rep) {
            buf_add(out, s + start, i - start);
            buf_adds(out, rep);
            start = i + 1;
        }
        i++;
    }
    buf_add(out, s + start, n - start);
    return 0;
}

static int put_attr(struct buf *out, const char *prefix, const char *name, const char *value)
{
    buf_add(out, " ", 1);
    if (prefix) {
        buf_adds(out, prefix);
        buf_add(out, ":", 1);
    }
    buf_adds(out, name);
    buf_add(out, "='", 2);
    if (put_escaped(out, value, strlen(value), 1) < 0) return -1;
    buf_add(out, "'", 1);
    return 0;
}

/* Attributes of e. Namespaced ones (other than XML_NS_XML) get prefixes
 * ns1, ns2... in order of first use, each declared before its first use
 * on this same element (a start tag's declarations apply to all of it). */
static int put_attrs(const xml_node_t *e, struct buf *out)
{
    const char *stack_seen[16], **seen = stack_seen;
    size_t nseen = 0, cap = 16;
    int rc = -1;
    for (const struct xml_attr *at = e->attrs; at; at = at->next) {
        if (!at->ns) {
            if (put_attr(out, NULL, at->name, at->value) < 0) goto out;
            continue;
        }
        if (at->ns == ns_xml || strcmp(at->ns, ns_xml) == 0) {
            if (put_attr(out, "xml", at->name, at->value) < 0) goto out;
            continue;
        }
        size_t k = 0;
        while (k < nseen && strcmp(seen[k], at->ns) != 0) k++;
        if (k == nseen) {
            if (nseen == cap) {
                const char **bigger = malloc(2 * cap * sizeof *bigger);
                if (!bigger) goto out;
                memcpy(bigger, seen, nseen * sizeof *seen);
                if (seen != stack_seen) free(seen);
                seen = bigger;
                cap *= 2;
            }
            seen[nseen++] = at->ns;
            buf_addf(out, " xmlns:ns%zu='", k + 1);
            if (put_escaped(out, at->ns, strlen(at->ns), 1) < 0) goto out;
            buf_add(out, "'", 1);
        }
        char prefix[32];
        snprintf(prefix, sizeof prefix, "ns%zu", k + 1);
        if (put_attr(out, prefix, at->name, at->value) < 0) goto out;
    }
    rc = 0;
out:
    if (seen != stack_seen) free(seen);
    return rc;
}

static int put_node(const xml_node_t *e, struct buf *out, const char *parent_ns)
{
    if (e->type == XML_NODE_TEXT) return put_escaped(out, e->text, e->text_len, 0);
    buf_add(out, "<", 1);
    buf_adds(out, e->name);
    if (!parent_ns || (e->ns != parent_ns && strcmp(e->ns, parent_ns) != 0)) {
        buf_add(out, " xmlns='", 8);
        if (put_escaped(out, e->ns, strlen(e->ns), 1) < 0) return -1;
        buf_add(out, "'", 1);
    }
    if (put_attrs(e, out) < 0) return -1;
    if (!e->children) {
        buf_add(out, "/>", 2);
        return 0;
    }
    buf_add(out, ">", 1);
    for (const xml_node_t *c = e->children; c; c = c->next)
        if (put_node(c, out, e->ns) < 0) return -1;
    buf_add(out, "</", 2);
    buf_adds(out, e->name);
    buf_add(out, ">", 1);
    return 0;
}

int xml_serialize(const xml_node_t *e, struct buf *out, const char *context_ns)
{
    if (!e || !out || out->oom) return -1;
    size_t mark = out->len;
    if (put_node(e, out, context_ns) < 0 || out->oom) {
        out->len = mark;
        out->oom = 0;
        return -1;
    }
    return 0;
}
