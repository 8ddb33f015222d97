/* check_xmlstream.c - unit tests for xmlstream.c: a normal client stream,
 * every construct restricted XML forbids (RFC 6120 §11.1), the XML
 * declaration and encoding checks, limits against hostile input (huge,
 * deep, attribute-heavy, name-heavy stanzas), invalid UTF-8, input split
 * at every byte boundary, pause mode byte accounting, reset after a
 * STARTTLS-style restart, and idle/recreate of the libxml2 context. */
#include "config.h"
#include "xmlstream.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_STREAM_DECL "xmlns:stream='http://etherx.jabber.org/streams'"
#define HEADER                                                                        \
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' " NS_STREAM_DECL \
    " to='example.com' version='1.0' xml:lang='en'>"

/* Records every callback as one line of a transcript. */
struct rec {
    struct buf log;
    int opens, elems, closes;
    int stop_at;        /* element number whose callback returns -1 (0: never) */
    int reset_at;       /* element number whose callback resets the stream */
    xmlstream_t *xs;
};

static void rec_line(struct rec *r, char tag, const xml_node_t *e)
{
    buf_add(&r->log, &tag, 1);
    buf_add(&r->log, ":", 1);
    if (e) ck_assert_int_eq(xml_serialize(e, &r->log, NULL), 0);
    buf_add(&r->log, "\n", 1);
}

static int rec_open(void *arg, xml_node_t *h)
{
    struct rec *r = arg;
    ck_assert_str_eq(h->name, "stream");
    ck_assert_str_eq(h->ns, XML_NS_STREAM);
    r->opens++;
    rec_line(r, 'O', h);
    xml_free(h);
    return 0;
}

static int rec_elem(void *arg, xml_node_t *e)
{
    struct rec *r = arg;
    ck_assert_ptr_null(e->parent);
    r->elems++;
    rec_line(r, 'E', e);
    xml_free(e);
    if (r->reset_at == r->elems) xmlstream_reset(r->xs);
    return r->stop_at == r->elems ? -1 : 0;
}

static void rec_close(void *arg)
{
    struct rec *r = arg;
    r->closes++;
    rec_line(r, 'C', NULL);
}

static const struct xmlstream_cb rec_cb = { rec_open, rec_elem, rec_close };

static xmlstream_t *rec_new(struct rec *r, const struct xmlstream_limits *lim)
{
    memset(r, 0, sizeof *r);
    r->xs = xmlstream_new(lim, &rec_cb, r);
    ck_assert_ptr_nonnull(r->xs);
    return r->xs;
}

static void rec_free(struct rec *r)
{
    xmlstream_free(r->xs);
    buf_free(&r->log);
}

/* Feed s in one call; returns feed's result. */
static ssize_t feed_str(xmlstream_t *xs, const char *s)
{
    return xmlstream_feed(xs, s, strlen(s));
}

/* The transcript of s fed in pieces of the given sizes (the list is
 * repeated; ncuts 0 = whole), plus the final error as a line. In pause
 * mode, what a call does not consume is fed again, as a caller would.
 * Caller frees. */
static char *transcript_mode(const char *s, size_t len, const size_t *cuts, size_t ncuts, int pause)
{
    struct rec r;
    xmlstream_t *xs = rec_new(&r, NULL);
    xmlstream_set_pause(xs, pause);
    size_t off = 0, k = 0;
    int failed = 0;
    while (off < len && !failed) {
        size_t n = ncuts ? cuts[k++ % ncuts] : len;
        if (n > len - off) n = len - off;
        while (n > 0 && !failed) {
            int before = r.opens + r.elems + r.closes;
            ssize_t got = xmlstream_feed(xs, s + off, n);
            if (got < 0) {
                failed = 1;
                break;
            }
            if (!pause) ck_assert_int_eq(got, (ssize_t)n);
            /* pause: short only right after a delivery */
            if ((size_t)got < n) ck_assert_int_gt(r.opens + r.elems + r.closes, before);
            ck_assert_int_gt(got, 0);
            off += (size_t)got;
            n -= (size_t)got;
        }
    }
    buf_addf(&r.log, "END:%s\n", failed ? xmlstream_err_condition(xmlstream_error(xs)) : "ok");
    char *t = strdup(buf_cstr(&r.log));
    rec_free(&r);
    return t;
}

static char *transcript(const char *s, size_t len, const size_t *cuts, size_t ncuts)
{
    return transcript_mode(s, len, cuts, ncuts, 0);
}

/* The condition a stream made of s fails with ("ok" if none). */
static const char *stream_error(const char *s, size_t len)
{
    struct rec r;
    xmlstream_t *xs = rec_new(&r, NULL);
    ssize_t got = xmlstream_feed(xs, s, len);
    const char *cond = got < 0 ? xmlstream_err_condition(xmlstream_error(xs)) : "ok";
    if (got < 0) ck_assert_int_eq(xmlstream_feed(xs, "<a/>", 4), -1); /* errors stick */
    rec_free(&r);
    return cond;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *normal_stream =
    HEADER "\n  <message to='juliet@capulet.lit' type='chat' id='m1'><body>Wherefore &amp; "
           "why? &#x263A;</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
           " \r\n\t<presence><show>away</show><status>a 'quoted' \"status\" > x</status></presence>"
           "<iq type='get' id='v'><query xmlns='jabber:iq:version'/></iq>"
           "<stream:features/><message t='a>b' u=\"c'd\"><body><![CDATA[<not> &a tag]]></body></message>"
           "<r xmlns='urn:xmpp:sm:3'/>  </stream:stream>";

static const char *normal_transcript =
    "O:<stream xmlns='http://etherx.jabber.org/streams' to='example.com' version='1.0' "
    "xml:lang='en'/>\n"
    "E:<message xmlns='jabber:client' to='juliet@capulet.lit' type='chat' id='m1'><body>Wherefore "
    "&amp; why? \xE2\x98\xBA</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>\n"
    "E:<presence xmlns='jabber:client'><show>away</show><status>a 'quoted' \"status\" &gt; x</status>"
    "</presence>\n"
    "E:<iq xmlns='jabber:client' type='get' id='v'><query xmlns='jabber:iq:version'/></iq>\n"
    "E:<features xmlns='http://etherx.jabber.org/streams'/>\n"
    "E:<message xmlns='jabber:client' t='a&gt;b' u='c&apos;d'><body>&lt;not&gt; &amp;a tag</body>"
    "</message>\n"
    "E:<r xmlns='urn:xmpp:sm:3'/>\n"
    "C:\n"
    "END:ok\n";

START_TEST(test_normal_stream)
{
    struct rec r;
    xmlstream_t *xs = rec_new(&r, NULL);
    ck_assert_ptr_null(xmlstream_content_ns(xs));
    size_t len = strlen(normal_stream);
    ck_assert_int_eq(xmlstream_feed(xs, normal_stream, len), (ssize_t)len);
    ck_assert_int_eq(r.opens, 1);
    ck_assert_int_eq(r.elems, 6);
    ck_assert_int_eq(r.closes, 1);
    ck_assert_str_eq(xmlstream_content_ns(xs), "jabber:client");
    ck_assert_int_eq(xmlstream_error(xs), XS_OK);
    /* after the close: bytes are ignored, no callbacks */
    ck_assert_int_eq(feed_str(xs, "<message/>"), 10);
    ck_assert_int_eq(r.elems, 6);
    rec_free(&r);

    char *t = transcript(normal_stream, len, NULL, 0);
    ck_assert_str_eq(t, normal_transcript);
    free(t);
}
END_TEST

START_TEST(test_header_variants)
{
    struct rec r;
    /* no XML declaration, another prefix, a default namespace on stream level */
    xmlstream_t *xs = rec_new(&r, NULL);
    const char *s = "<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:server' "
                    "xmlns:db='jabber:server:dialback' from='a.example' to='b.example'>"
                    "<db:result to='b.example'>key</db:result><s:features/></s:stream>";
    ck_assert_int_eq(feed_str(xs, s), (ssize_t)strlen(s));
    ck_assert_str_eq(xmlstream_content_ns(xs), "jabber:server");
    ck_assert_str_eq(buf_cstr(&r.log),
                     "O:<stream xmlns='http://etherx.jabber.org/streams' from='a.example' "
                     "to='b.example'/>\n"
                     "E:<result xmlns='jabber:server:dialback' to='b.example'>key</result>\n"
                     "E:<features xmlns='http://etherx.jabber.org/streams'/>\n"
                     "C:\n");
    rec_free(&r);

    /* no default namespace at all: content has none */
    xs = rec_new(&r, NULL);
    s = "<stream:stream " NS_STREAM_DECL "><a/>";
    ck_assert_int_eq(feed_str(xs, s), (ssize_t)strlen(s));
    ck_assert_str_eq(xmlstream_content_ns(xs), "");
    ck_assert_str_eq(buf_cstr(&r.log), "O:<stream xmlns='http://etherx.jabber.org/streams'/>\nE:<a xmlns=''/>\n");
    rec_free(&r);

    /* an empty root: open and close */
    xs = rec_new(&r, NULL);
    s = "<stream:stream " NS_STREAM_DECL "/>";
    ck_assert_int_eq(feed_str(xs, s), (ssize_t)strlen(s));
    ck_assert_int_eq(r.opens, 1);
    ck_assert_int_eq(r.closes, 1);
    rec_free(&r);

    /* encoding='UTF-8' declared, standalone, double quotes */
    xs = rec_new(&r, NULL);
    s = "<?xml version=\"1.0\" encoding=\"utf-8\" standalone='yes'?>\n<stream:stream " NS_STREAM_DECL
        " xmlns='jabber:client'>";
    ck_assert_int_eq(feed_str(xs, s), (ssize_t)strlen(s));
    ck_assert_int_eq(r.opens, 1);
    rec_free(&r);
}
END_TEST

struct bad_case {
    const char *input;
    const char *condition;
};

START_TEST(test_forbidden)
{
    static const struct bad_case cases[] = {
        /* DTDs, entities (RFC 6120 §11.1) */
        { "<!DOCTYPE stream>" HEADER, "restricted-xml" },
        { "<?xml version='1.0'?><!DOCTYPE s SYSTEM 'file:///etc/passwd'><stream:stream/>",
          "restricted-xml" },
        { "<?xml version='1.0'?><!DOCTYPE s [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>"
          "<stream:stream " NS_STREAM_DECL ">&x;",
          "restricted-xml" },
        { "<!DOCTYPE s PUBLIC 'x' 'http://example.com/x.dtd'>", "restricted-xml" },
        { HEADER "<message>&undefined;</message>", "restricted-xml" },
        { HEADER "<message to='&undefined;'/>", "restricted-xml" },
        { HEADER "<message>&amp;&lt;&gt;&apos;&quot;&#65;&#x42;</message><m>&nbsp;</m>",
          "restricted-xml" },
        /* comments and processing instructions, anywhere */
        { "<!-- hi -->" HEADER, "restricted-xml" },
        { HEADER "<!-- hi -->", "restricted-xml" },
        { HEADER "<message><!-- hi --></message>", "restricted-xml" },
        { "<?xml version='1.0'?><?pi data?>" HEADER, "restricted-xml" },
        { HEADER "<?pi data?>", "restricted-xml" },
        { HEADER "<message><?pi?></message>", "restricted-xml" },
        /* declaration */
        { "<?xml version='1.1'?><stream:stream " NS_STREAM_DECL ">", "unsupported-version" },
        { "<?xml version='2.0'?><stream:stream " NS_STREAM_DECL ">", "unsupported-version" },
        { "<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream " NS_STREAM_DECL ">",
          "unsupported-encoding" },
        { "<?xml version='1.0' encoding='UTF-16'?><stream:stream " NS_STREAM_DECL ">",
          "unsupported-encoding" },
        { "<?xml version='1.0' encoding='no-such-thing'?><stream:stream " NS_STREAM_DECL ">",
          "unsupported-encoding" },
        { "<?xml version='1.0' encoding='UTF-32'?><stream:stream " NS_STREAM_DECL ">",
          "unsupported-encoding" },
        { "<?xml version='1.0' encoding='US-ASCII'?><stream:stream " NS_STREAM_DECL ">",
          "unsupported-encoding" },
        /* the stream root */
        { "<stream:stream xmlns:stream='http://example.com/streams'>", "invalid-namespace" },
        { "<stream xmlns='jabber:client'>", "invalid-namespace" },
        { "<stream>", "invalid-namespace" },
        { "<message xmlns='jabber:client'><body>x</body></message>", "bad-format" },
        { "<stream:features " NS_STREAM_DECL ">", "bad-format" },
        /* stream level */
        { HEADER "junk<message/>", "bad-format" },
        { HEADER "<![CDATA[junk]]>", "bad-format" },
        { HEADER "<!ELEMENT x ANY>", "not-well-formed" },
        /* well-formedness */
        { "junk" HEADER, "not-well-formed" },
        { HEADER "<message></presence>", "not-well-formed" },
        { HEADER "<message a='1' a='2'/>", "not-well-formed" },
        { HEADER "<p:message/>", "not-well-formed" },
        { HEADER "<message><x:y xmlns:x=''/></message>", "not-well-formed" },
        { HEADER "<message a='<'/>", "not-well-formed" },
        { HEADER "<message>]]></message>", "not-well-formed" },
        { HEADER "<message>\x01</message>", "not-well-formed" },
        { HEADER "<message>&#0;</message>", "not-well-formed" },
        { HEADER "<message>&#xD800;</message>", "not-well-formed" },
        { HEADER "</stream:streamx>", "not-well-formed" },
        { HEADER "<1a/>", "not-well-formed" },
        { HEADER "<a/ ></a>", "not-well-formed" },
        { HEADER "<a b='1'c='2'/>", "not-well-formed" },
        { HEADER "< a/>", "not-well-formed" },
        { HEADER "<a></ a>", "not-well-formed" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *got = stream_error(cases[i].input, strlen(cases[i].input));
        ck_assert_msg(strcmp(got, cases[i].condition) == 0, "case %zu: %s gave %s, want %s", i,
                      cases[i].input, got, cases[i].condition);
    }
}
END_TEST

START_TEST(test_billion_laughs)
{
    const char *bomb =
        "<?xml version='1.0'?>\n<!DOCTYPE lolz [\n <!ENTITY lol 'lol'>\n"
        " <!ENTITY lol1 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>\n"
        " <!ENTITY lol2 '&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;'>\n"
        " <!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>\n"
        " <!ENTITY lol4 '&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;'>\n"
        " <!ENTITY lol5 '&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;'>\n"
        " <!ENTITY lol6 '&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;'>\n"
        " <!ENTITY lol7 '&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;'>\n"
        " <!ENTITY lol8 '&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;'>\n"
        " <!ENTITY lol9 '&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;'>\n"
        "]>\n<stream:stream " NS_STREAM_DECL "><message>&lol9;</message>";
    double t0 = now();
    struct rec r;
    xmlstream_t *xs = rec_new(&r, NULL);
    ck_assert_int_eq(feed_str(xs, bomb), -1);
    ck_assert_int_eq(xmlstream_error(xs), XS_ERR_RESTRICTED_XML);
    ck_assert_uint_lt(xmlstream_memory(xs), 8192);
    ck_assert_int_eq(r.opens + r.elems, 0);
    rec_free(&r);
    ck_assert_msg(now() - t0 < 0.05, "billion laughs took %.3f s", now() - t0);
    /* byte by byte too */
    char *t = transcript(bomb, strlen(bomb), (const size_t[]){ 1 }, 1);
    ck_assert_str_eq(t, "END:restricted-xml\n");
    free(t);
}
END_TEST

START_TEST(test_invalid_utf8)
{
    static const char *const bad[] = {
        "\xC0\xAF",         /* overlong '/' */
        "\xC1\xBF",         /* overlong */
        "\xE0\x80\xAF",     /* overlong 3-byte */
        "\xF0\x80\x80\xAF", /* overlong 4-byte */
        "\xED\xA0\x80",     /* high surrogate */
        "\xED\xBF\xBF",     /* low surrogate */
        "\xF4\x90\x80\x80", /* above U+10FFFF */
        "\xF5\x80\x80\x80", /* invalid lead */
        "\xFF",             /* invalid byte */
        "\x80",             /* lone continuation */
        "\xE2\x82",         /* truncated (followed by '<') */
        "\xF0\x9F\x98",     /* truncated 4-byte */
        "\xC3",             /* truncated 2-byte */
        "\xEF\xBF\xBE",     /* U+FFFE: valid UTF-8, not an XML Char */
    };
    static const char *const where[] = {
        HEADER "<message><body>x@y</body></message>",
        HEADER "<message id='x@y'/>",
        HEADER "<message><b@x/></message>",
        HEADER "<message><![CDATA[x@y]]></message>",
        "<stream:stream " NS_STREAM_DECL " to='x@y'>",
    };
    char doc[512];
    for (size_t w = 0; w < sizeof where / sizeof where[0]; w++) {
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            const char *at = strchr(where[w], '@');
            snprintf(doc, sizeof doc, "%.*s%s%s", (int)(at - where[w]), where[w], bad[i], at + 1);
            const char *got = stream_error(doc, strlen(doc));
            ck_assert_msg(strcmp(got, "not-well-formed") == 0, "where %zu, bad %zu: %s", w, i, got);
        }
    }
    /* valid multi-byte characters everywhere */
    const char *good = HEADER "<m\xC3\xA9ssage id='\xE2\x82\xAC' xmlns='urn:\xC3\xA9'>"
                              "\xF0\x9F\x98\x80\xF4\x8F\xBF\xBD\xEE\x80\x80</m\xC3\xA9ssage>";
    ck_assert_str_eq(stream_error(good, strlen(good)), "ok");
    /* a NUL byte, UTF-16 */
    ck_assert_str_eq(stream_error(HEADER "<a>\0</a>", sizeof HEADER + 7), "not-well-formed");
    ck_assert_str_eq(stream_error("<\0?\0x\0m\0l\0", 10), "not-well-formed");
    ck_assert_str_eq(stream_error("\xFE\xFF\0<\0s", 6), "not-well-formed");
}
END_TEST

/* Every 2-way split and byte-by-byte feeding give the whole-feed transcript. */
static void check_splits(const char *s)
{
    size_t len = strlen(s);
    char *whole = transcript(s, len, NULL, 0);
    char *bytes = transcript(s, len, (const size_t[]){ 1 }, 1);
    ck_assert_str_eq(bytes, whole);
    free(bytes);
    char *odd = transcript(s, len, (const size_t[]){ 3, 7, 2, 11 }, 4);
    ck_assert_str_eq(odd, whole);
    free(odd);
    for (size_t cut = 1; cut < len; cut++) {
        size_t cuts[2] = { cut, len };
        char *t = transcript(s, len, cuts, 2);
        ck_assert_msg(strcmp(t, whole) == 0, "split at %zu differs:\n%s\nvs\n%s", cut, t, whole);
        free(t);
        t = transcript_mode(s, len, cuts, 2, 1);
        ck_assert_msg(strcmp(t, whole) == 0, "pause, split at %zu differs:\n%s\nvs\n%s", cut, t, whole);
        free(t);
    }
    char *paused = transcript_mode(s, len, (const size_t[]){ 1 }, 1, 1);
    ck_assert_str_eq(paused, whole);
    free(paused);
    paused = transcript_mode(s, len, NULL, 0, 1);
    ck_assert_str_eq(paused, whole);
    free(paused);
    free(whole);
}

START_TEST(test_splits)
{
    check_splits(normal_stream);
    check_splits("<?xml version='1.0' encoding='UTF-8'?>\n<stream:stream " NS_STREAM_DECL
                 " xmlns='jabber:client' a='x>y'><a b=\"'>\" c='\"/>'/><x:b xmlns:x='urn:x'>"
                 "<![CDATA[]]]]><![CDATA[>]]>\xE2\x82\xAC<c/>&#60;</x:b>\n</stream:stream>");
    check_splits(HEADER "<message><!-- no --></message><a/>");
    check_splits(HEADER "<message>\xE2\x82 broken</message>");
    check_splits("<?xml version='1.1'?>" HEADER);
}
END_TEST

START_TEST(test_pause)
{
    struct rec r;
    xmlstream_t *xs = rec_new(&r, NULL);
    xmlstream_set_pause(xs, 1);
    const char *hdr = "<stream:stream " NS_STREAM_DECL " xmlns='jabber:client'>";
    size_t hl = strlen(hdr);
    char in[512];
    snprintf(in, sizeof in, "%s<a/><b/>", hdr);
    /* the header alone */
    ck_assert_int_eq(feed_str(xs, in), (ssize_t)hl);
    ck_assert_int_eq(r.opens, 1);
    ck_assert_int_eq(r.elems, 0);
    /* <a/><b/> at once: <a/> delivered, 4 bytes consumed */
    ck_assert_int_eq(feed_str(xs, "<a/><b/>"), 4);
    ck_assert_int_eq(r.elems, 1);
    ck_assert_int_eq(feed_str(xs, "<b/>"), 4);
    ck_assert_int_eq(r.elems, 2);
    /* leading whitespace is consumed with the element, trailing is not */
    ck_assert_int_eq(feed_str(xs, "  <c/>  <d/>"), 6);
    ck_assert_int_eq(feed_str(xs, "  <d/>"), 6);
    ck_assert_int_eq(r.elems, 4);
    /* whitespace only: consumed, nothing delivered */
    ck_assert_int_eq(feed_str(xs, " \n "), 3);
    /* a partial element is consumed (kept inside), then completed */
    ck_assert_int_eq(feed_str(xs, "<e><f"), 5);
    ck_assert_int_eq(r.elems, 4);
    ck_assert_int_eq(feed_str(xs, "/></e><g/>"), 6);
    ck_assert_int_eq(r.elems, 5);
    ck_assert_int_eq(feed_str(xs, "<g/></stream:stream>trailing"), 4);
    ck_assert_int_eq(feed_str(xs, "</stream:stream>trailing"), 16);
    ck_assert_int_eq(r.closes, 1);
    ck_assert_str_eq(buf_cstr(&r.log),
                     "O:<stream xmlns='http://etherx.jabber.org/streams'/>\n"
                     "E:<a xmlns='jabber:client'/>\nE:<b xmlns='jabber:client'/>\n"
                     "E:<c xmlns='jabber:client'/>\nE:<d xmlns='jabber:client'/>\n"
                     "E:<e xmlns='jabber:client'><f/></e>\nE:<g xmlns='jabber:client'/>\nC:\n");
    rec_free(&r);

    /* header, elements and close fed one unit per call: total matches */
    xs = rec_new(&r, NULL);
    xmlstream_set_pause(xs, 1);
    size_t len = strlen(normal_stream), off = 0;
    int calls = 0;
    while (off < len) {
        ssize_t n = xmlstream_feed(xs, normal_stream + off, len - off);
        ck_assert_int_gt(n, 0);
        off += (size_t)n;
        calls++;
    }
    ck_assert_int_eq(calls, 8); /* header, 6 elements, close */
    buf_adds(&r.log, "END:ok\n");
    ck_assert_str_eq(buf_cstr(&r.log), normal_transcript);
    rec_free(&r);
}
END_TEST

START_TEST(test_callback_stop)
{
    struct rec r;
    xmlstream_t *xs = rec_new(&r, NULL);
    r.stop_at = 2;
    ck_assert_int_eq(feed_str(xs, HEADER "<a/><b/><c/>"), -1);
    ck_assert_int_eq(r.elems, 2);
    ck_assert_int_eq(xmlstream_error(xs), XS_OK);
    ck_assert_int_eq(feed_str(xs, "<d/>"), -1);
    ck_assert_int_eq(r.elems, 2);
    /* reset brings it back */
    xmlstream_reset(xs);
    ck_assert_int_eq(feed_str(xs, HEADER "<e/>"), (ssize_t)strlen(HEADER "<e/>"));
    ck_assert_int_eq(r.opens, 2);
    ck_assert_int_eq(r.elems, 3);
    rec_free(&r);
}
END_TEST

START_TEST(test_starttls_reset)
{
    /* pause mode, as listen runs before authentication (DESIGN §3) */
    struct rec r;
    xmlstream_t *xs = rec_new(&r, NULL);
    xmlstream_set_pause(xs, 1);
    const char *in = HEADER "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
                            "<message><body>injected in plaintext</body></message>";
    ssize_t n = feed_str(xs, in);
    ck_assert_int_eq(n, (ssize_t)strlen(HEADER));
    n = feed_str(xs, in + n);
    ck_assert_int_eq(n, (ssize_t)strlen("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"));
    ck_assert_int_eq(r.elems, 1);
    /* TLS starts: the rest is discarded, the parser restarts */
    xmlstream_reset(xs);
    ck_assert_ptr_null(xmlstream_content_ns(xs));
    const char *again = "<stream:stream xmlns='jabber:client' " NS_STREAM_DECL " to='example.com'>";
    ck_assert_int_eq(feed_str(xs, again), (ssize_t)strlen(again));
    ck_assert_int_eq(r.opens, 2);
    ck_assert_int_eq(feed_str(xs, "<a/>"), 4);
    ck_assert_int_eq(r.elems, 2);
    ck_assert_ptr_null(strstr(buf_cstr(&r.log), "injected"));
    /* an XML declaration may start the new stream */
    xmlstream_reset(xs);
    ck_assert_int_gt(feed_str(xs, HEADER), 0);
    ck_assert_int_eq(r.opens, 3);
    rec_free(&r);

    /* reset from inside the element callback (not in pause mode): feed
     * returns right after that element; the rest is not consumed */
    xs = rec_new(&r, NULL);
    r.reset_at = 1;
    const char *tail = "<message>injected</message>";
    char buf[1024];
    snprintf(buf, sizeof buf, "%s<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>%s", HEADER, tail);
    n = feed_str(xs, buf);
    ck_assert_int_eq(n, (ssize_t)(strlen(buf) - strlen(tail)));
    ck_assert_int_eq(r.elems, 1);
    ck_assert_int_eq(feed_str(xs, tail), -1); /* a new stream must begin with a header */
    ck_assert_int_eq(xmlstream_error(xs), XS_ERR_BAD_FORMAT);
    ck_assert_int_eq(r.elems, 1);
    rec_free(&r);
}
END_TEST

START_TEST(test_huge_stanza)
{
    /* 10 MiB of one stanza, fed in 64 KiB reads: refused after ~max_stanza
     * bytes, never buffered whole */
    struct rec r;
    xmlstream_t *xs = rec_new(&r, NULL);
    ck_assert_int_gt(feed_str(xs, HEADER "<message><body>"), 0);
    size_t chunk = 65536, total = 0, peak = 0;
    char *junk = malloc(chunk);
    memset(junk, 'x', chunk);
    ssize_t n = 0;
    double t0 = now();
    while (total < (10u << 20)) {
        n = xmlstream_feed(xs, junk, chunk);
        size_t m = xmlstream_memory(xs);
        if (m > peak) peak = m;
        if (n < 0) break;
        total += chunk;
    }
    double dt = now() - t0;
    ck_assert_int_eq(n, -1);
    ck_assert_int_eq(xmlstream_error(xs), XS_ERR_POLICY_VIOLATION);
    ck_assert_uint_le(total, 262144);
    ck_assert_uint_lt(peak, 1u << 20);
    ck_assert_uint_lt(xmlstream_memory(xs), 8192); /* released after the error */
    fprintf(stderr, "# huge stanza: refused after %zu bytes, peak %zu bytes held, %.2f ms\n",
            total + chunk, peak, dt * 1e3);
    rec_free(&r);
    free(junk);

    /* one byte less than the limit is fine: exactly max_stanza bytes */
    struct xmlstream_limits lim;
    xmlstream_limits_default(&lim);
    lim.max_stanza = 100;
    xs = rec_new(&r, &lim);
    ck_assert_int_gt(feed_str(xs, "<stream:stream " NS_STREAM_DECL ">"), 0);
    char st[128];
    memset(st, 'y', sizeof st);
    memcpy(st, "<m>", 3);
    memcpy(st + 100 - 4, "</m>", 4);
    ck_assert_int_eq(xmlstream_feed(xs, st, 100), 100);
    ck_assert_int_eq(r.elems, 1);
    memcpy(st + 100 - 4, "y</m>", 5);
    ck_assert_int_eq(xmlstream_feed(xs, st, 101), -1);
    ck_assert_int_eq(xmlstream_error(xs), XS_ERR_POLICY_VIOLATION);
    rec_free(&r);

    /* the stream header is limited too */
    xs = rec_new(&r, &lim);
    ck_assert_int_eq(feed_str(xs, "<stream:stream " NS_STREAM_DECL " to='"), 67);
    memset(st, 'z', sizeof st);
    ck_assert_int_eq(xmlstream_feed(xs, st, sizeof st), -1);
    ck_assert_int_eq(xmlstream_error(xs), XS_ERR_POLICY_VIOLATION);
    rec_free(&r);
}
END_TEST

START_TEST(test_deep_nesting)
{
    struct buf b = { 0 };
    buf_adds(&b, HEADER);
    for (int i = 0; i < 100000; i++) buf_adds(&b, "<a>");
    struct rec r;
    xmlstream_t *xs = rec_new(&r, NULL);
    double t0 = now();
    ck_assert_int_eq(xmlstream_feed(xs, b.data, b.len), -1);
    double dt = now() - t0;
    ck_assert_int_eq(xmlstream_error(xs), XS_ERR_POLICY_VIOLATION);
    ck_assert_msg(dt < 0.05, "100000-deep nesting took %.3f s", dt);
    rec_free(&r);

    /* exactly max_depth levels pass */
    buf_clear(&b);
    buf_adds(&b, HEADER);
    for (int i = 0; i < 32; i++) buf_adds(&b, "<a>");
    for (int i = 0; i < 32; i++) buf_adds(&b, "</a>");
    xs = rec_new(&r, NULL);
    ck_assert_int_eq(xmlstream_feed(xs, b.data, b.len), (ssize_t)b.len);
    ck_assert_int_eq(r.elems, 1);
    ck_assert_int_eq(feed_str(xs, "<a><a/></a>"), 11); /* empty tags do not open a level */
    rec_free(&r);
    buf_free(&b);
}
END_TEST

START_TEST(test_attribute_flood)
{
    /* one 256 KiB start tag made of tiny attributes */
    struct buf b = { 0 };
    buf_adds(&b, HEADER "<message");
    for (int i = 0; b.len < 250000; i++) buf_addf(&b, " a%d=''", i);
    buf_adds(&b, "/>");
    struct rec r;
    xmlstream_t *xs = rec_new(&r, NULL);
    double t0 = now();
    ck_assert_int_eq(xmlstream_feed(xs, b.data, b.len), -1);
    double dt = now() - t0;
    ck_assert_int_eq(xmlstream_error(xs), XS_ERR_POLICY_VIOLATION);
    ck_assert_msg(dt < 0.05, "attribute flood took %.4f s", dt);
    rec_free(&r);

    /* 64 attributes (namespace declarations count) pass, 65 do not */
    for (int n = 64; n <= 65; n++) {
        buf_clear(&b);
        buf_adds(&b, HEADER "<message xmlns:p='urn:p'");
        for (int i = 1; i < n; i++) buf_addf(&b, " p:a%d='%d'", i, i);
        buf_adds(&b, "/>");
        xs = rec_new(&r, NULL);
        ssize_t got = xmlstream_feed(xs, b.data, b.len);
        ck_assert_int_eq(got, n == 64 ? (ssize_t)b.len : -1);
        rec_free(&r);
    }
    /* '>' and quotes inside values do not confuse the count */
    xs = rec_new(&r, NULL);
    const char *s = HEADER "<m a='\">\"' b=\"'>'\"/>";
    ck_assert_int_eq(feed_str(xs, s), (ssize_t)strlen(s));
    ck_assert_int_eq(r.elems, 1);
    rec_free(&r);
    buf_free(&b);
}
END_TEST

START_TEST(test_many_names)
{
    /* a long stream of stanzas with ever new names: accepted, and the
     * memory held stays bounded (the dictionary is recycled) */
    struct rec r;
    xmlstream_t *xs = rec_new(&r, NULL);
    ck_assert_int_gt(feed_str(xs, HEADER), 0);
    char st[256];
    size_t peak = 0;
    for (int i = 0; i < 30000; i++) {
        int n = snprintf(st, sizeof st, "<n%dx xmlns='urn:n:%d' a%d='1'><c%d/></n%dx>", i, i, i, i, i);
        ck_assert_int_eq(xmlstream_feed(xs, st, (size_t)n), n);
        size_t m = xmlstream_memory(xs);
        if (m > peak) peak = m;
    }
    ck_assert_int_eq(r.elems, 30000);
    fprintf(stderr, "# many names: peak %zu bytes held (estimate)\n", peak);
    ck_assert_uint_lt(peak, 1u << 20);
    rec_free(&r);

    /* one stanza with more distinct names than allowed */
    struct xmlstream_limits lim;
    xmlstream_limits_default(&lim);
    lim.max_names = 100;
    xs = rec_new(&r, &lim);
    ck_assert_int_gt(feed_str(xs, HEADER), 0);
    struct buf b = { 0 };
    buf_adds(&b, "<m>");
    for (int i = 0; i < 200; i++) buf_addf(&b, "<e%d/>", i);
    buf_adds(&b, "</m>");
    ck_assert_int_eq(xmlstream_feed(xs, b.data, b.len), -1);
    ck_assert_int_eq(xmlstream_error(xs), XS_ERR_POLICY_VIOLATION);
    rec_free(&r);
    /* ... but many stanzas with a few new names each are fine */
    xs = rec_new(&r, &lim);
    ck_assert_int_gt(feed_str(xs, HEADER), 0);
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(st, sizeof st, "<q%d r%d='1'/>", i, i);
        ck_assert_int_eq(xmlstream_feed(xs, st, (size_t)n), n);
    }
    ck_assert_int_eq(r.elems, 1000);
    rec_free(&r);

    /* few but long names: the dictionary's bytes are bounded too */
    xs = rec_new(&r, NULL);
    ck_assert_int_gt(feed_str(xs, HEADER), 0);
    peak = 0;
    for (int i = 0; i < 200; i++) {
        buf_clear(&b);
        buf_addf(&b, "<n%d", i);
        for (int k = 0; k < 30000; k++) buf_add(&b, "x", 1);
        buf_adds(&b, "/>");
        ck_assert_int_eq(xmlstream_feed(xs, b.data, b.len), (ssize_t)b.len);
        size_t m = xmlstream_memory(xs);
        if (m > peak) peak = m;
    }
    ck_assert_int_eq(r.elems, 200);
    ck_assert_uint_lt(peak, 1u << 20);
    fprintf(stderr, "# long names: peak %zu bytes held (estimate)\n", peak);
    rec_free(&r);
    buf_free(&b);
}
END_TEST

START_TEST(test_idle)
{
    struct rec r;
    xmlstream_t *xs = rec_new(&r, NULL);
    const char *hdr = "<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:client' "
                      "xmlns:x='urn:x' xmlns:q='a&amp;b&#9;c'>";
    ck_assert_int_eq(feed_str(xs, hdr), (ssize_t)strlen(hdr));
    ck_assert_int_eq(feed_str(xs, "<message><body>1</body></message>"), 33);
    size_t active = xmlstream_memory(xs);
    xmlstream_idle(xs);
    size_t idle = xmlstream_memory(xs);
    fprintf(stderr, "# memory: active stream %zu bytes (estimate), idle stream %zu bytes\n", active,
            idle);
    ck_assert_uint_lt(idle, 1024);
    /* the recreated context knows the header's namespaces and prefixes */
    const char *s = "<x:a q:b='1'><c/></x:a><s:features/><message/>";
    ck_assert_int_eq(feed_str(xs, s), (ssize_t)strlen(s));
    xmlstream_idle(xs);
    xmlstream_idle(xs);
    ck_assert_int_eq(feed_str(xs, "</s:stream>"), 11);
    ck_assert_str_eq(buf_cstr(&r.log),
                     "O:<stream xmlns='http://etherx.jabber.org/streams'/>\n"
                     "E:<message xmlns='jabber:client'><body>1</body></message>\n"
                     "E:<a xmlns='urn:x' xmlns:ns1='a&amp;b&#9;c' ns1:b='1'><c xmlns='jabber:client'/></a>\n"
                     "E:<features xmlns='http://etherx.jabber.org/streams'/>\n"
                     "E:<message xmlns='jabber:client'/>\n"
                     "C:\n");
    rec_free(&r);

    /* idle with a partial element is a no-op; the element completes */
    xs = rec_new(&r, NULL);
    ck_assert_int_gt(feed_str(xs, HEADER "<message><bo"), 0);
    xmlstream_idle(xs);
    ck_assert_int_eq(feed_str(xs, "dy/></message>"), 14);
    ck_assert_int_eq(r.elems, 1);
    /* idle right after every element: same transcript as without */
    for (int i = 0; i < 100; i++) {
        ck_assert_int_eq(feed_str(xs, "<p/>"), 4);
        xmlstream_idle(xs);
    }
    ck_assert_int_eq(r.elems, 101);
    rec_free(&r);
}
END_TEST

START_TEST(test_memory_small_stream)
{
    struct rec r;
    xmlstream_t *xs = rec_new(&r, NULL);
    ck_assert_uint_lt(xmlstream_memory(xs), 1024); /* nothing fed yet */
    ck_assert_int_gt(feed_str(xs, HEADER), 0);
    ck_assert_int_eq(xmlstream_error(xs), XS_OK);
    ck_assert_str_eq(xmlstream_error_text(xs), "");
    ck_assert_str_eq(xmlstream_err_condition(XS_ERR_NOMEM), "internal-server-error");
    ck_assert_str_eq(xmlstream_err_condition(XS_ERR_RESTRICTED_XML), "restricted-xml");
    ck_assert_str_eq(xmlstream_err_condition(XS_ERR_POLICY_VIOLATION), "policy-violation");
    ck_assert_str_eq(xmlstream_err_condition(XS_ERR_UNSUPPORTED_ENCODING), "unsupported-encoding");
    ck_assert_str_eq(xmlstream_err_condition(XS_ERR_UNSUPPORTED_VERSION), "unsupported-version");
    ck_assert_str_eq(xmlstream_err_condition(XS_ERR_INVALID_NAMESPACE), "invalid-namespace");
    ck_assert_str_eq(xmlstream_err_condition(XS_ERR_BAD_FORMAT), "bad-format");
    ck_assert_str_eq(xmlstream_err_condition(XS_ERR_NOT_WELL_FORMED), "not-well-formed");
    ck_assert_str_eq(xmlstream_err_condition((enum xmlstream_err)99), "undefined-condition");
    /* a 200 KiB stanza is accepted, and its big buffers are let go after */
    struct buf b = { 0 };
    buf_adds(&b, "<message><body>");
    while (b.len < 200000) buf_adds(&b, "0123456789abcdef");
    buf_adds(&b, "</body></message>");
    ck_assert_int_eq(xmlstream_feed(xs, b.data, b.len), (ssize_t)b.len);
    ck_assert_int_eq(r.elems, 1);
    ck_assert_uint_lt(xmlstream_memory(xs), 4096);
    buf_free(&b);
    rec_free(&r);
    xmlstream_free(NULL);
}
END_TEST

static int count_open(void *arg, xml_node_t *h)
{
    xml_free(h);
    return 0;
}

static int count_elem(void *arg, xml_node_t *e)
{
    ++*(int *)arg;
    xml_free(e);
    return 0;
}

START_TEST(test_speed)
{
    /* not a pass/fail benchmark: reports the cost of a small stanza */
    static const struct xmlstream_cb cb = { count_open, count_elem, NULL };
    int count = 0;
    xmlstream_t *xs = xmlstream_new(NULL, &cb, &count);
    ck_assert_int_gt(feed_str(xs, HEADER), 0);
    const char *st = "<message to='juliet@capulet.lit/balcony' type='chat' id='ktx72v49'>"
                     "<body>Art thou not Romeo, and a Montague?</body></message>";
    size_t n = strlen(st);
    int iters = 50000, bad = 0; /* no ck_assert in the loops: each one costs a report */
    double t0 = now();
    for (int i = 0; i < iters; i++) bad += xmlstream_feed(xs, st, n) != (ssize_t)n;
    double dt = now() - t0;
    t0 = now();
    for (int i = 0; i < iters / 10; i++) {
        bad += xmlstream_feed(xs, st, n) != (ssize_t)n;
        xmlstream_idle(xs);
    }
    double dt_idle = now() - t0;
    ck_assert_int_eq(bad, 0);
    ck_assert_int_eq(count, iters + iters / 10);
    fprintf(stderr, "# %zu-byte stanza via xmlstream_feed: %.2f us each; %.2f us with idle after each\n",
            n, dt / iters * 1e6, dt_idle / (iters / 10) * 1e6);
    xmlstream_free(xs);
}
END_TEST

static Suite *xmlstream_suite(void)
{
    Suite *s = suite_create("xmlstream");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_normal_stream);
    tcase_add_test(tc, test_header_variants);
    tcase_add_test(tc, test_forbidden);
    tcase_add_test(tc, test_billion_laughs);
    tcase_add_test(tc, test_invalid_utf8);
    tcase_add_test(tc, test_splits);
    tcase_add_test(tc, test_pause);
    tcase_add_test(tc, test_callback_stop);
    tcase_add_test(tc, test_starttls_reset);
    tcase_add_test(tc, test_huge_stanza);
    tcase_add_test(tc, test_deep_nesting);
    tcase_add_test(tc, test_attribute_flood);
    tcase_add_test(tc, test_many_names);
    tcase_add_test(tc, test_idle);
    tcase_add_test(tc, test_memory_small_stream);
    tcase_add_test(tc, test_speed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(xmlstream_suite());
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
