/* check_xml.c - unit tests for xml.c (the arena DOM and its canonical
 * serialization) and xml_parse(): building, escaping, namespaces,
 * attributes, copies across trees, and serialize/parse round trips. */
#include "config.h"
#include "xml.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Serialize e (context ns) into a malloc'd string; NULL if it failed. */
static char *ser(const xml_node_t *e, const char *context_ns)
{
    struct buf b = { 0 };
    if (xml_serialize(e, &b, context_ns) < 0) {
        buf_free(&b);
        return NULL;
    }
    char *s = strdup(buf_cstr(&b));
    buf_free(&b);
    return s;
}

static void expect_ser(const xml_node_t *e, const char *context_ns, const char *want)
{
    char *s = ser(e, context_ns);
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, want);
    free(s);
}

static int str_eq(const char *a, const char *b)
{
    if (!a || !b) return a == b;
    return strcmp(a, b) == 0;
}

/* Structural equality: names, namespaces, attributes in order, text. */
static int tree_eq(const xml_node_t *a, const xml_node_t *b)
{
    if (a->type != b->type) return 0;
    if (a->type == XML_NODE_TEXT)
        return a->text_len == b->text_len && memcmp(a->text, b->text, a->text_len) == 0 &&
               a->text[a->text_len] == '\0';
    if (!str_eq(a->name, b->name) || !str_eq(a->ns, b->ns)) return 0;
    const struct xml_attr *x = a->attrs, *y = b->attrs;
    for (; x && y; x = x->next, y = y->next)
        if (!str_eq(x->name, y->name) || !str_eq(x->ns, y->ns) || !str_eq(x->value, y->value))
            return 0;
    if (x || y) return 0;
    const xml_node_t *c = a->children, *d = b->children;
    for (; c && d; c = c->next, d = d->next) {
        if (c->parent != a || d->parent != b) return 0;
        if (!tree_eq(c, d)) return 0;
    }
    return !c && !d;
}

/* Serialize e, parse it back with default_ns = context, compare; and the
 * second serialization must be byte-identical. */
static void round_trip(const xml_node_t *e, const char *context_ns)
{
    char *s = ser(e, context_ns);
    ck_assert_ptr_nonnull(s);
    xml_node_t *p = xml_parse(s, strlen(s), context_ns);
    ck_assert_msg(p != NULL, "re-parse failed: %s", s);
    ck_assert_msg(tree_eq(e, p), "round trip changed the tree: %s", s);
    char *s2 = ser(p, context_ns);
    ck_assert_ptr_nonnull(s2);
    ck_assert_str_eq(s, s2);
    free(s);
    free(s2);
    xml_free(p);
}

START_TEST(test_build_serialize)
{
    xml_node_t *m = xml_new("message", "jabber:client");
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(xml_set_attr(m, "to", "juliet@capulet.lit"), 0);
    ck_assert_int_eq(xml_set_attr(m, "type", "chat"), 0);
    xml_node_t *body = xml_add_elem(m, "body", NULL);
    ck_assert_ptr_nonnull(body);
    ck_assert_str_eq(body->ns, "jabber:client");
    ck_assert_ptr_nonnull(xml_add_text(body, "Wherefore art thou?", 19));
    xml_node_t *act = xml_add_elem(m, "active", "http://jabber.org/protocol/chatstates");
    ck_assert_ptr_nonnull(act);

    expect_ser(m, "jabber:client",
               "<message to='juliet@capulet.lit' type='chat'><body>Wherefore art thou?</body>"
               "<active xmlns='http://jabber.org/protocol/chatstates'/></message>");
    expect_ser(m, NULL,
               "<message xmlns='jabber:client' to='juliet@capulet.lit' type='chat'>"
               "<body>Wherefore art thou?</body>"
               "<active xmlns='http://jabber.org/protocol/chatstates'/></message>");
    expect_ser(m, "jabber:server",
               "<message xmlns='jabber:client' to='juliet@capulet.lit' type='chat'>"
               "<body>Wherefore art thou?</body>"
               "<active xmlns='http://jabber.org/protocol/chatstates'/></message>");
    expect_ser(body, "jabber:client", "<body>Wherefore art thou?</body>");
    round_trip(m, "jabber:client");
    round_trip(m, NULL);

    /* navigation */
    ck_assert_ptr_eq(xml_first_elem(m), body);
    ck_assert_ptr_eq(xml_next_elem(body), act);
    ck_assert_ptr_null(xml_next_elem(act));
    ck_assert_ptr_eq(xml_child(m, "active", NULL), act);
    ck_assert_ptr_eq(xml_child(m, NULL, "http://jabber.org/protocol/chatstates"), act);
    ck_assert_ptr_null(xml_child(m, "active", "jabber:client"));
    ck_assert_ptr_eq(xml_child(m, "body", "jabber:client"), body);
    ck_assert_str_eq(xml_text(body), "Wherefore art thou?");
    ck_assert_str_eq(xml_text(m), "");
    ck_assert_ptr_eq(body->parent, m);
    ck_assert_ptr_eq(body->arena, m->arena);
    ck_assert_uint_gt(xml_memory(m), 0);
    xml_free(m);
    xml_free(NULL);
}
END_TEST

START_TEST(test_root_prefix_form)
{
    /* downstream inserts " from='...'" right after "<" + local name */
    const char *names[] = { "iq", "presence", "a" };
    for (size_t i = 0; i < 3; i++) {
        xml_node_t *e = xml_new(names[i], "jabber:client");
        char *s = ser(e, "jabber:client");
        size_t n = strlen(names[i]);
        ck_assert_int_eq(s[0], '<');
        ck_assert_int_eq(strncmp(s + 1, names[i], n), 0);
        ck_assert_msg(strchr(" />", s[1 + n]) != NULL, "bad root form %s", s);
        free(s);
        xml_set_attr(e, "id", "1");
        s = ser(e, NULL);
        ck_assert_msg(s[1 + n] == ' ', "bad root form %s", s);
        free(s);
        xml_free(e);
    }
}
END_TEST

START_TEST(test_escaping)
{
    xml_node_t *e = xml_new("x", "urn:t");
    const char *v = "a&b<c>d'e\"f\tg\nh\ri";
    ck_assert_int_eq(xml_set_attr(e, "v", v), 0);
    const char *t = "1 & 2 < 3 > 0 ' \" ]]> \t\n\r end";
    xml_add_text(e, t, strlen(t));
    expect_ser(e, "urn:t",
               "<x v='a&amp;b&lt;c&gt;d&apos;e&quot;f&#9;g&#10;h&#13;i'>"
               "1 &amp; 2 &lt; 3 &gt; 0 ' \" ]]&gt; \t\n&#13; end</x>");
    round_trip(e, "urn:t");
    ck_assert_str_eq(xml_attr(e, "v"), v);

    /* non-ASCII passes through unchanged */
    xml_node_t *u = xml_add_elem(e, "u", NULL);
    xml_add_text(u, "h\xC3\xA9llo \xF0\x9F\x98\x80", 11);
    xml_set_attr(u, "name", "J\xC3\xBCrgen");
    round_trip(e, "urn:t");
    xml_free(e);
}
END_TEST

START_TEST(test_unserializable)
{
    const char *bad[] = {
        "ctl\x01", "nul\x1f", "\xC3", "\xC0\xAF", "\xED\xA0\x80", "\xEF\xBF\xBE", "\xF5\x80\x80\x80",
        "\x80",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        xml_node_t *e = xml_new("x", NULL);
        xml_add_text(e, bad[i], strlen(bad[i]));
        struct buf b = { 0 };
        buf_adds(&b, "keep");
        ck_assert_int_eq(xml_serialize(e, &b, NULL), -1);
        ck_assert_uint_eq(b.len, 4); /* unchanged */
        ck_assert_int_eq(b.oom, 0);
        xml_free(e);

        e = xml_new("x", NULL);
        xml_set_attr(e, "a", bad[i]);
        ck_assert_int_eq(xml_serialize(e, &b, NULL), -1);
        ck_assert_uint_eq(b.len, 4);
        buf_free(&b);
        xml_free(e);
    }
}
END_TEST

START_TEST(test_namespaces)
{
    xml_node_t *iq = xml_new("iq", "jabber:client");
    xml_set_attr(iq, "type", "result");
    xml_set_attr(iq, "xml:lang", "en");
    ck_assert_str_eq(xml_attr_ns(iq, XML_NS_XML, "lang"), "en");
    ck_assert_str_eq(xml_attr(iq, "xml:lang"), "en");
    ck_assert_ptr_null(xml_attr(iq, "lang"));
    xml_node_t *q = xml_add_elem(iq, "query", "jabber:iq:roster");
    xml_node_t *item = xml_add_elem(q, "item", NULL);
    ck_assert_str_eq(item->ns, "jabber:iq:roster");
    xml_set_attr(item, "jid", "romeo@montague.lit");
    xml_node_t *none = xml_add_elem(item, "group", "");
    ck_assert_str_eq(none->ns, "");
    xml_add_elem(none, "inner", NULL);
    xml_set_attr_ns(item, "urn:a", "x", "1");
    xml_set_attr_ns(item, "urn:b", "y", "2");
    xml_set_attr_ns(item, "urn:a", "z", "3");
    xml_set_attr_ns(item, XML_NS_XML, "space", "preserve");
    expect_ser(iq, "jabber:client",
               "<iq type='result' xml:lang='en'><query xmlns='jabber:iq:roster'>"
               "<item jid='romeo@montague.lit' xmlns:ns1='urn:a' ns1:x='1' xmlns:ns2='urn:b' "
               "ns2:y='2' ns1:z='3' xml:space='preserve'><group xmlns=''><inner/></group></item>"
               "</query></iq>");
    round_trip(iq, "jabber:client");
    round_trip(iq, NULL);
    ck_assert_str_eq(xml_attr_ns(item, "urn:b", "y"), "2");
    ck_assert_ptr_null(xml_attr_ns(item, "urn:b", "x"));
    ck_assert_ptr_null(xml_attr(item, "x"));

    /* a root with no namespace against a context */
    xml_node_t *bare = xml_new("bare", NULL);
    ck_assert_str_eq(bare->ns, "");
    expect_ser(bare, "jabber:client", "<bare xmlns=''/>");
    expect_ser(bare, "", "<bare/>");
    round_trip(bare, "jabber:client");
    xml_free(bare);
    xml_free(iq);
}
END_TEST

START_TEST(test_attrs)
{
    xml_node_t *e = xml_new("presence", "jabber:client");
    ck_assert_int_eq(xml_set_attr(e, "a", "1"), 0);
    ck_assert_int_eq(xml_set_attr(e, "b", "2"), 0);
    ck_assert_int_eq(xml_set_attr(e, "c", "3"), 0);
    ck_assert_int_eq(xml_set_attr(e, "b", "two"), 0); /* replace keeps the position */
    expect_ser(e, "jabber:client", "<presence a='1' b='two' c='3'/>");
    ck_assert_int_eq(xml_set_attr(e, "a", NULL), 0); /* remove first */
    ck_assert_int_eq(xml_set_attr(e, "c", NULL), 0); /* remove last */
    ck_assert_int_eq(xml_set_attr(e, "nope", NULL), 0);
    expect_ser(e, "jabber:client", "<presence b='two'/>");
    ck_assert_int_eq(xml_set_attr(e, "d", "4"), 0);
    expect_ser(e, "jabber:client", "<presence b='two' d='4'/>");
    ck_assert_int_eq(xml_set_attr(e, "e", ""), 0);
    ck_assert_str_eq(xml_attr(e, "e"), "");
    /* unqualified and namespaced attributes of the same name are distinct */
    ck_assert_int_eq(xml_set_attr_ns(e, "urn:x", "b", "nsb"), 0);
    ck_assert_str_eq(xml_attr(e, "b"), "two");
    ck_assert_str_eq(xml_attr_ns(e, "urn:x", "b"), "nsb");
    ck_assert_str_eq(xml_attr_ns(e, NULL, "b"), "two");
    ck_assert_str_eq(xml_attr_ns(e, "", "b"), "two");
    /* invalid names and namespace declarations are refused */
    ck_assert_int_eq(xml_set_attr(e, "xmlns", "urn:y"), -1);
    ck_assert_int_eq(xml_set_attr(e, "p:q", "1"), -1);
    ck_assert_int_eq(xml_set_attr(e, "", "1"), -1);
    ck_assert_int_eq(xml_set_attr(e, "a b", "1"), -1);
    ck_assert_int_eq(xml_set_attr(e, "1a", "1"), -1);
    ck_assert_int_eq(xml_set_attr(e, "a'", "1"), -1);
    ck_assert_int_eq(xml_set_attr_ns(e, "http://www.w3.org/2000/xmlns/", "p", "1"), -1);
    ck_assert_ptr_null(xml_new("a:b", NULL));
    ck_assert_ptr_null(xml_new("", NULL));
    ck_assert_ptr_null(xml_add_elem(e, "<x", NULL));
    ck_assert_ptr_null(xml_attr(e, NULL));
    ck_assert_ptr_null(xml_attr(NULL, "a"));
    /* text nodes take no attributes or children */
    xml_node_t *t = xml_add_text(e, "x", 1);
    ck_assert_int_eq(xml_set_attr(t, "a", "1"), -1);
    ck_assert_ptr_null(xml_add_elem(t, "c", NULL));
    round_trip(e, "jabber:client");
    /* many attributes */
    char name[16];
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof name, "k%d", i);
        ck_assert_int_eq(xml_set_attr(e, name, name), 0);
    }
    ck_assert_str_eq(xml_attr(e, "k199"), "k199");
    xml_free(e);
}
END_TEST

START_TEST(test_many_attr_namespaces)
{
    /* more namespaces on one element than the serializer's stack array */
    xml_node_t *e = xml_new("x", "urn:t");
    char ns[32];
    for (int i = 0; i < 40; i++) {
        snprintf(ns, sizeof ns, "urn:ns:%d", i);
        ck_assert_int_eq(xml_set_attr_ns(e, ns, "a", "v"), 0);
    }
    char *s = ser(e, "urn:t");
    ck_assert_ptr_nonnull(strstr(s, " xmlns:ns40='urn:ns:39' ns40:a='v'"));
    free(s);
    xml_free(e);
}
END_TEST

START_TEST(test_text_nodes)
{
    xml_node_t *e = xml_new("body", "jabber:client");
    ck_assert_ptr_eq(xml_add_text(e, "", 0), e); /* nothing added */
    ck_assert_ptr_null(e->children);
    xml_node_t *t = xml_add_text(e, "Hello", 5);
    ck_assert_ptr_eq(xml_add_text(e, ", ", 2), t); /* merged */
    ck_assert_ptr_eq(xml_add_text(e, "world", 5), t);
    ck_assert_uint_eq(t->text_len, 12);
    ck_assert_str_eq(t->text, "Hello, world");
    ck_assert_str_eq(xml_text(e), "Hello, world");
    xml_node_t *mid = xml_add_elem(e, "b", NULL);
    xml_add_text(mid, "inner", 5);
    xml_add_text(e, "!", 1);
    ck_assert_str_eq(xml_text(e), "Hello, world!");
    ck_assert_str_eq(xml_text(mid), "inner");
    xml_remove(mid);
    ck_assert_ptr_null(mid->parent);
    ck_assert_str_eq(xml_text(e), "Hello, world!");
    expect_ser(e, "jabber:client", "<body>Hello, world!</body>");
    /* a big text grows across blocks */
    size_t n = 200000;
    char *big = malloc(n);
    memset(big, 'x', n);
    xml_node_t *f = xml_new("f", NULL);
    for (size_t off = 0; off < n; off += 1000) xml_add_text(f, big + off, 1000);
    ck_assert_uint_eq(f->children->text_len, n);
    ck_assert_ptr_null(f->children->next);
    ck_assert_int_eq(memcmp(f->children->text, big, n), 0);
    ck_assert_uint_gt(xml_memory(f), n);
    ck_assert_uint_lt(xml_memory(f), 4 * n);
    free(big);
    xml_free(f);
    xml_free(e);
}
END_TEST

START_TEST(test_remove)
{
    xml_node_t *e = xml_new("r", NULL);
    xml_node_t *a = xml_add_elem(e, "a", NULL);
    xml_node_t *b = xml_add_elem(e, "b", NULL);
    xml_node_t *c = xml_add_elem(e, "c", NULL);
    xml_remove(b);
    expect_ser(e, "", "<r><a/><c/></r>");
    xml_remove(c);
    ck_assert_ptr_eq(e->last, a);
    xml_node_t *d = xml_add_elem(e, "d", NULL);
    expect_ser(e, "", "<r><a/><d/></r>");
    xml_remove(a);
    ck_assert_ptr_eq(e->children, d);
    xml_remove(d);
    ck_assert_ptr_null(e->children);
    ck_assert_ptr_null(e->last);
    expect_ser(e, "", "<r/>");
    xml_remove(e); /* root: no-op */
    /* xml_free on a non-root only unlinks */
    xml_node_t *x = xml_add_elem(e, "x", NULL);
    xml_free(x);
    ck_assert_ptr_null(e->children);
    xml_free(e);
}
END_TEST

START_TEST(test_copy)
{
    const char *doc = "<message to='a@b' xml:lang='de' xmlns:q='urn:q' q:x='1'>"
                      "<body>hi &amp; bye</body><c xmlns='urn:caps' node='n'/></message>";
    xml_node_t *src = xml_parse(doc, strlen(doc), "jabber:client");
    ck_assert_ptr_nonnull(src);
    xml_node_t *dst = xml_new("forwarded", "urn:xmpp:forward:0");
    xml_node_t *cp = xml_add_copy(dst, src);
    ck_assert_ptr_nonnull(cp);
    ck_assert_ptr_eq(cp->parent, dst);
    ck_assert_ptr_eq(cp->arena, dst->arena);
    ck_assert(tree_eq(cp, src));
    char *before = ser(dst, NULL);
    xml_free(src); /* the copy owns its strings */
    char *after = ser(dst, NULL);
    ck_assert_str_eq(before, after);
    ck_assert_str_eq(after,
                     "<forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' "
                     "to='a@b' xml:lang='de' xmlns:ns1='urn:q' ns1:x='1'><body>hi &amp; bye</body>"
                     "<c xmlns='urn:caps' node='n'/></message></forwarded>");
    ck_assert_str_eq(xml_attr_ns(cp, XML_NS_XML, "lang"), "de");
    round_trip(dst, NULL);
    free(before);
    free(after);

    /* copy a subtree into itself: the copy is not copied again */
    xml_node_t *m = xml_first_elem(dst);
    ck_assert_ptr_nonnull(xml_add_copy(m, m));
    expect_ser(m, "jabber:client",
               "<message to='a@b' xml:lang='de' xmlns:ns1='urn:q' ns1:x='1'><body>hi &amp; bye</body>"
               "<c xmlns='urn:caps' node='n'/><message to='a@b' xml:lang='de' xmlns:ns1='urn:q' "
               "ns1:x='1'><body>hi &amp; bye</body><c xmlns='urn:caps' node='n'/></message></message>");
    /* text copies merge into a preceding text node; the source keeps its own */
    xml_node_t *body = xml_child(m, "body", NULL);
    xml_node_t *body2 = xml_add_copy(dst, body);
    xml_add_copy(body2, body->children);
    ck_assert_str_eq(xml_text(body2), "hi & byehi & bye");
    ck_assert_str_eq(xml_text(body), "hi & bye");
    xml_free(dst);
}
END_TEST

START_TEST(test_parse)
{
    const char *s = "  <iq type='get' id='1'><query xmlns='jabber:iq:version'/>"
                    "<p:x xmlns:p='urn:p' p:a='1'><p:y/><z/></p:x>"
                    "<u xmlns=''><v/></u></iq>\n";
    xml_node_t *e = xml_parse(s, strlen(s), "jabber:client");
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(e->name, "iq");
    ck_assert_str_eq(e->ns, "jabber:client");
    ck_assert_ptr_null(e->parent);
    ck_assert_str_eq(xml_attr(e, "type"), "get");
    xml_node_t *q = xml_child(e, "query", NULL);
    ck_assert_str_eq(q->ns, "jabber:iq:version");
    xml_node_t *x = xml_child(e, "x", "urn:p");
    ck_assert_ptr_nonnull(x);
    ck_assert_str_eq(xml_attr_ns(x, "urn:p", "a"), "1");
    ck_assert_str_eq(xml_child(x, "y", NULL)->ns, "urn:p");
    ck_assert_str_eq(xml_child(x, "z", NULL)->ns, "jabber:client");
    xml_node_t *u = xml_child(e, "u", NULL);
    ck_assert_str_eq(u->ns, ""); /* xmlns='' undeclares: no default_ns */
    ck_assert_str_eq(xml_child(u, "v", NULL)->ns, "");
    round_trip(e, "jabber:client");
    xml_free(e);

    /* without default_ns, unprefixed names have no namespace */
    e = xml_parse("<a><b/></a>", 11, NULL);
    ck_assert_str_eq(e->ns, "");
    ck_assert_str_eq(e->children->ns, "");
    xml_free(e);
    /* a declared default wins over default_ns */
    e = xml_parse("<a xmlns='urn:a'><b/></a>", 25, "jabber:client");
    ck_assert_str_eq(e->ns, "urn:a");
    ck_assert_str_eq(e->children->ns, "urn:a");
    xml_free(e);
    /* character references, predefined entities and CDATA */
    s = "<a t='&#x41;&#66;&amp;&lt;&gt;&apos;&quot;&#38;&amp;#38;'>&#x1F600;&amp;<![CDATA[<&>]]></a>";
    e = xml_parse(s, strlen(s), NULL);
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(xml_attr(e, "t"), "AB&<>'\"&&#38;");
    ck_assert_str_eq(xml_text(e), "\xF0\x9F\x98\x80&<&>");
    ck_assert_ptr_null(e->children->next); /* one text node */
    xml_free(e);
    /* attribute value normalization: literal tab/newline become spaces */
    e = xml_parse("<a t='x\ty\nz'/>", 14, NULL);
    ck_assert_str_eq(xml_attr(e, "t"), "x y z");
    xml_free(e);
}
END_TEST

START_TEST(test_parse_rejects)
{
    const char *bad[] = {
        "",
        "   ",
        "text",
        "<a>",
        "<a></b>",
        "<a/><b/>",
        "<a/>junk",
        "junk<a/>",
        "<a><!-- c --></a>",
        "<a><?pi x?></a>",
        "<?xml version='1.0'?><a/>",
        "<!DOCTYPE a><a/>",
        "<a>&ent;</a>",
        "<a b='&ent;'/>",
        "<p:a/>",
        "<a b='1' b='2'/>",
        "<a \xC0\xAF='1'/>",
        "<a>\xED\xA0\x80</a>",
        "<a>\x01</a>",
        "</a>",
        "</xmppd-fragment>",
        "<a><!DOCTYPE x></a>",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        xml_node_t *e = xml_parse(bad[i], strlen(bad[i]), "jabber:client");
        ck_assert_msg(e == NULL, "accepted: %s", bad[i]);
    }
    ck_assert_ptr_null(xml_parse(NULL, 0, NULL));
    /* a NUL byte inside */
    ck_assert_ptr_null(xml_parse("<a>\0</a>", 8, NULL));
    /* the parser still works after all those failures */
    xml_node_t *e = xml_parse("<ok/>", 5, NULL);
    ck_assert_ptr_nonnull(e);
    xml_free(e);
}
END_TEST

START_TEST(test_parse_limits)
{
    /* depth: 32 levels are fine, 33 are not */
    struct buf b = { 0 };
    for (int i = 0; i < 32; i++) buf_adds(&b, "<d>");
    for (int i = 0; i < 32; i++) buf_adds(&b, "</d>");
    xml_node_t *e = xml_parse(b.data, b.len, NULL);
    ck_assert_ptr_nonnull(e);
    xml_free(e);
    buf_clear(&b);
    for (int i = 0; i < 33; i++) buf_adds(&b, "<d>");
    for (int i = 0; i < 33; i++) buf_adds(&b, "</d>");
    ck_assert_ptr_null(xml_parse(b.data, b.len, NULL));
    /* attributes: 64 fine, 65 not */
    buf_clear(&b);
    buf_adds(&b, "<a");
    for (int i = 0; i < 64; i++) buf_addf(&b, " a%d='%d'", i, i);
    buf_adds(&b, "/>");
    e = xml_parse(b.data, b.len, NULL);
    ck_assert_ptr_nonnull(e);
    xml_free(e);
    buf_clear(&b);
    buf_adds(&b, "<a");
    for (int i = 0; i < 65; i++) buf_addf(&b, " a%d='%d'", i, i);
    buf_adds(&b, "/>");
    ck_assert_ptr_null(xml_parse(b.data, b.len, NULL));
    /* size */
    buf_clear(&b);
    buf_adds(&b, "<a>");
    while (b.len < 262144) buf_adds(&b, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    buf_adds(&b, "</a>");
    ck_assert_ptr_null(xml_parse(b.data, b.len, NULL));
    buf_free(&b);
}
END_TEST

START_TEST(test_round_trips)
{
    const char *docs[] = {
        "<message from='a@b/c' to='d@e' type='chat' id='x'><body>Hi!</body>"
        "<thread>t1</thread><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        "<presence><show>away</show><status xml:lang='fr'>Parti &lt;vite&gt;</status>"
        "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v='/></presence>",
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r"
        "</resource></bind></iq>",
        "<a xmlns:x='urn:x' x:k='1' k='2'><x:b x:k='3'><c xmlns='' d='&apos;&quot;'/></x:b></a>",
        "<a>  mixed <b>content</b> with\nnewlines\tand tabs &#13; and CR </a>",
        "<a t='&#9;&#10;&#13;'/>",
        "<e xmlns='urn:e'/>",
        "<a><b xmlns='urn:b'><c xmlns='jabber:client'/></b></a>",
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        xml_node_t *e = xml_parse(docs[i], strlen(docs[i]), "jabber:client");
        ck_assert_msg(e != NULL, "parse failed: %s", docs[i]);
        round_trip(e, "jabber:client");
        round_trip(e, NULL);
        xml_free(e);
    }
}
END_TEST

static Suite *xml_suite(void)
{
    Suite *s = suite_create("xml");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_build_serialize);
    tcase_add_test(tc, test_root_prefix_form);
    tcase_add_test(tc, test_escaping);
    tcase_add_test(tc, test_unserializable);
    tcase_add_test(tc, test_namespaces);
    tcase_add_test(tc, test_attrs);
    tcase_add_test(tc, test_many_attr_namespaces);
    tcase_add_test(tc, test_text_nodes);
    tcase_add_test(tc, test_remove);
    tcase_add_test(tc, test_copy);
    tcase_add_test(tc, test_parse);
    tcase_add_test(tc, test_parse_rejects);
    tcase_add_test(tc, test_parse_limits);
    tcase_add_test(tc, test_round_trips);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(xml_suite());
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
