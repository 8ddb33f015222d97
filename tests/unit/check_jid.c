/* check_jid.c - unit tests for jid.c (RFC 6122 parsing and stringprep
 * normalization, limits, formatting, shards) and the util.c helpers the
 * JID code leans on (FNV-1a hash, strndup, mkdir -p). */
#include "config.h"
#include "jid.h"
#include "util.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Normalize s (NUL-terminated) and compare with want (NULL: must fail). */
static void expect_norm(const char *s, const char *want)
{
    char out[JID_STR_MAX];
    int rc = jid_normalize(s, strlen(s), out, sizeof out);
    if (want) {
        ck_assert_msg(rc == 0, "jid_normalize(\"%s\") failed", s);
        ck_assert_str_eq(out, want);
    } else {
        ck_assert_msg(rc == -1, "jid_normalize(\"%s\") gave \"%s\", expected failure", s, out);
    }
}

/* A string of n copies of c (malloc'd). */
static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    ck_assert_ptr_nonnull(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

START_TEST(test_parse_parts)
{
    struct jid j;
    const char *s = "juliet@capulet.lit/balcony";
    ck_assert_int_eq(jid_parse(s, strlen(s), &j), 0);
    ck_assert_int_eq(j.has_local, 1);
    ck_assert_int_eq(j.has_resource, 1);
    ck_assert_str_eq(j.local, "juliet");
    ck_assert_str_eq(j.domain, "capulet.lit");
    ck_assert_str_eq(j.resource, "balcony");

    s = "capulet.lit";
    ck_assert_int_eq(jid_parse(s, strlen(s), &j), 0);
    ck_assert_int_eq(j.has_local, 0);
    ck_assert_int_eq(j.has_resource, 0);
    ck_assert_str_eq(j.domain, "capulet.lit");

    s = "capulet.lit/orchard";
    ck_assert_int_eq(jid_parse(s, strlen(s), &j), 0);
    ck_assert_int_eq(j.has_local, 0);
    ck_assert_int_eq(j.has_resource, 1);
    ck_assert_str_eq(j.resource, "orchard");

    /* len is honoured: the tail is not part of the JID. */
    s = "romeo@montague.lit/garden";
    ck_assert_int_eq(jid_parse(s, strlen("romeo@montague.lit"), &j), 0);
    ck_assert_int_eq(j.has_resource, 0);

    /* A failed parse leaves an empty struct. */
    ck_assert_int_eq(jid_parse("@x", 2, &j), -1);
    ck_assert_int_eq(j.has_local, 0);
    ck_assert_str_eq(j.domain, "");
    ck_assert_int_eq(jid_parse(NULL, 0, &j), -1);
}
END_TEST

START_TEST(test_normalization)
{
    /* Case folding and ß -> ss come from Nodeprep/Nameprep (RFC 6122, not
     * RFC 7622 where ß is kept). */
    expect_norm("Fu\xC3\x9F" "ball@Example.COM", "fussball@example.com");
    expect_norm("USER@EXAMPLE.COM/Res", "user@example.com/Res"); /* resource keeps case */
    expect_norm("Juliet@Capulet.Lit/Balcony", "juliet@capulet.lit/Balcony");
    /* NFKC: fullwidth A, Kelvin sign, fi ligature, Roman numeral nine. */
    expect_norm("\xEF\xBC\xA1" "@example.com", "a@example.com");
    expect_norm("\xE2\x84\xAA" "elvin@example.com", "kelvin@example.com");
    expect_norm("\xEF\xAC\x81" "sh@example.com", "fish@example.com");
    expect_norm("a@example.com/\xE2\x85\xA8", "a@example.com/IX");
    /* Soft hyphen is mapped to nothing. */
    expect_norm("a\xC2\xAD" "b@example.com", "ab@example.com");
    /* Domains: lowercased, trailing dot stripped, IDNA dots mapped, IDN kept as U-labels. */
    expect_norm("a@example.com.", "a@example.com");
    expect_norm("example.com./r", "example.com/r");
    expect_norm("a@example\xE3\x80\x82" "com", "a@example.com");
    expect_norm("a@example\xEF\xBC\x8E" "com", "a@example.com");
    expect_norm("a@B\xC3\x9C" "cher.Example", "a@b\xC3\xBC" "cher.example");
    expect_norm("a@\xEF\xBD\x98mpp.example", "a@xmpp.example"); /* fullwidth x */
    expect_norm("a@xn--bcher-kva.example", "a@xn--bcher-kva.example");
    /* Unassigned code points (emoji, post Unicode 3.2) are allowed: query semantics. */
    expect_norm("a@example.com/phone \xF0\x9F\x93\xB1", "a@example.com/phone \xF0\x9F\x93\xB1");
    /* Already normalized stays the same. */
    expect_norm("fussball@example.com/x", "fussball@example.com/x");
}
END_TEST

START_TEST(test_prohibited)
{
    /* Nodeprep prohibits " & ' / : < > @ and spaces (RFC 6122 Appendix A.5). */
    expect_norm("a\"b@example.com", NULL);
    expect_norm("a&b@example.com", NULL);
    expect_norm("a'b@example.com", NULL);
    expect_norm("a:b@example.com", NULL);
    expect_norm("a<b@example.com", NULL);
    expect_norm("a>b@example.com", NULL);
    expect_norm("a b@example.com", NULL);
    expect_norm("a\xE3\x80\x80" "b@example.com", NULL); /* ideographic space */
    expect_norm("a\xC2\xA0" "b@example.com", NULL);     /* no-break space */
    expect_norm("a@b@example.com", NULL);                /* '@' in the domain */
    expect_norm("\xEF\xB9\xAB" "@example.com", NULL);    /* U+FE6B -> '@' after NFKC */
    expect_norm("a\x01" "b@example.com", NULL);
    char out[64];
    ck_assert_int_eq(jid_nodeprep("a/b", out, sizeof out), -1);
    ck_assert_int_eq(jid_nodeprep("a@b", out, sizeof out), -1);
    ck_assert_int_eq(jid_nodeprep("a b", out, sizeof out), -1);
    /* Resourceprep allows ASCII space, '@', '/', but not controls. */
    expect_norm("a@example.com/x y", "a@example.com/x y");
    expect_norm("a@example.com/x\x07", NULL);
    expect_norm("a@example.com/x\x7F", NULL);
    /* Bidi rule (RFC 3454 §6): RandALCat then a digit at the end fails. */
    expect_norm("\xD8\xA7" "1@example.com", NULL);
    /* Domains: STD3 rules (letters, digits, hyphen), no empty labels. */
    expect_norm("a@exa mple.com", NULL);
    expect_norm("a@exa_mple.com", NULL);
    expect_norm("a@-example.com", NULL);
    expect_norm("a@example-.com", NULL);
    expect_norm("a@example..com", NULL);
    expect_norm("a@.example.com", NULL);
    expect_norm("a@example.com..", NULL);
    expect_norm("a@.", NULL);
    expect_norm("a@exa:mple.com", NULL);
    expect_norm("a@exam\xEF\xBC\x8F" "ple.com", NULL); /* fullwidth '/' -> '/' */
}
END_TEST

START_TEST(test_empty_parts)
{
    expect_norm("", NULL);
    expect_norm("@", NULL);
    expect_norm("/", NULL);
    expect_norm("@d", NULL);
    expect_norm("a@", NULL);
    expect_norm("d/", NULL);
    expect_norm("a@d/", NULL);
    expect_norm("a@/r", NULL);
    expect_norm("/r", NULL);
    expect_norm("@d/r", NULL);
    /* Parts that become empty through preparation. */
    expect_norm("\xC2\xAD" "@example.com", NULL);
    expect_norm("example.com/\xC2\xAD", NULL);
    char out[16];
    ck_assert_int_eq(jid_nodeprep("", out, sizeof out), -1);
    ck_assert_int_eq(jid_resourceprep("", out, sizeof out), -1);
}
END_TEST

START_TEST(test_length_limits)
{
    char *big = malloc(8192);
    ck_assert_ptr_nonnull(big);
    struct jid j;

    /* localpart: 1023 ok, 1024 not */
    char *p = repeat('a', 1023);
    snprintf(big, 8192, "%s@example.com", p);
    ck_assert_int_eq(jid_parse(big, strlen(big), &j), 0);
    ck_assert_uint_eq(strlen(j.local), 1023);
    free(p);
    p = repeat('a', 1024);
    snprintf(big, 8192, "%s@example.com", p);
    ck_assert_int_eq(jid_parse(big, strlen(big), &j), -1);
    free(p);

    /* resourcepart: 1023 ok, 1024 not */
    p = repeat('r', 1023);
    snprintf(big, 8192, "example.com/%s", p);
    ck_assert_int_eq(jid_parse(big, strlen(big), &j), 0);
    ck_assert_uint_eq(strlen(j.resource), 1023);
    free(p);
    p = repeat('r', 1024);
    snprintf(big, 8192, "example.com/%s", p);
    ck_assert_int_eq(jid_parse(big, strlen(big), &j), -1);
    free(p);

    /* domainpart: 16 labels of 63 = 1023 bytes ok; 17 labels making 1024 not */
    big[0] = '\0';
    for (int i = 0; i < 16; i++) {
        char *l = repeat((char)('a' + i), 63);
        if (i) strcat(big, ".");
        strcat(big, l);
        free(l);
    }
    ck_assert_uint_eq(strlen(big), 1023);
    ck_assert_int_eq(jid_parse(big, strlen(big), &j), 0);
    ck_assert_uint_eq(strlen(j.domain), 1023);
    /* and with a trailing dot (1024 raw, 1023 after stripping) */
    strcat(big, ".");
    ck_assert_int_eq(jid_parse(big, strlen(big), &j), 0);
    big[0] = '\0';
    for (int i = 0; i < 17; i++) {
        char *l = repeat((char)('a' + i), i < 16 ? 60 : 48);
        if (i) strcat(big, ".");
        strcat(big, l);
        free(l);
    }
    ck_assert_uint_eq(strlen(big), 1024);
    ck_assert_int_eq(jid_parse(big, strlen(big), &j), -1);

    /* DNS labels: 63 ok, 64 not */
    p = repeat('x', 63);
    snprintf(big, 8192, "a@%s.example", p);
    ck_assert_int_eq(jid_parse(big, strlen(big), &j), 0);
    free(p);
    p = repeat('x', 64);
    snprintf(big, 8192, "a@%s.example", p);
    ck_assert_int_eq(jid_parse(big, strlen(big), &j), -1);
    free(p);

    /* The limit applies after preparation: 1023 "a" + soft hyphen is 1025
     * bytes raw and 1023 prepared (ok); 512 "ß" are 1024 bytes raw and 1024
     * prepared ("ss") (too long); 1023 Kelvin signs are 3069 bytes raw and
     * 1023 prepared ("k") (ok). */
    p = repeat('a', 1023);
    snprintf(big, 8192, "%s\xC2\xAD@example.com", p);
    ck_assert_int_eq(jid_parse(big, strlen(big), &j), 0);
    ck_assert_uint_eq(strlen(j.local), 1023);
    free(p);
    big[0] = '\0';
    for (int i = 0; i < 512; i++) strcat(big, "\xC3\x9F");
    strcat(big, "@example.com");
    ck_assert_int_eq(jid_parse(big, strlen(big), &j), -1);
    big[0] = '\0';
    for (int i = 0; i < 1023; i++) strcat(big, "\xE2\x84\xAA");
    strcat(big, "@example.com");
    ck_assert_int_eq(jid_parse(big, strlen(big), &j), 0);
    ck_assert_uint_eq(strlen(j.local), 1023);

    /* The longest full JID fits JID_STR_MAX exactly. */
    char *l = repeat('l', 1023), *r = repeat('r', 1023);
    big[0] = '\0';
    strcat(big, l);
    strcat(big, "@");
    for (int i = 0; i < 16; i++) {
        char *d = repeat((char)('a' + i), 63);
        if (i) strcat(big, ".");
        strcat(big, d);
        free(d);
    }
    strcat(big, "/");
    strcat(big, r);
    ck_assert_uint_eq(strlen(big), JID_STR_MAX - 1);
    char *out = malloc(JID_STR_MAX);
    ck_assert_ptr_nonnull(out);
    ck_assert_int_eq(jid_normalize(big, strlen(big), out, JID_STR_MAX), 0);
    ck_assert_str_eq(out, big);
    ck_assert_int_eq(jid_normalize(big, strlen(big), out, JID_STR_MAX - 1), -1);
    free(out);
    free(l);
    free(r);
    free(big);
}
END_TEST

START_TEST(test_ip_literals)
{
    expect_norm("a@192.168.0.1/r", "a@192.168.0.1/r");
    expect_norm("192.168.0.1", "192.168.0.1");
    expect_norm("a@192.168.0.1.", "a@192.168.0.1");
    expect_norm("[::1]", "[::1]");
    expect_norm("a@[::1]/r", "a@[::1]/r");
    expect_norm("a@[2001:db8::1]", "a@[2001:db8::1]");
    expect_norm("a@[2001:DB8::1]", "a@[2001:db8::1]");
    expect_norm("a@[::ffff:192.0.2.1]", "a@[::ffff:192.0.2.1]");
    expect_norm("a@[::1", NULL);
    expect_norm("a@::1", NULL);
    expect_norm("a@[]", NULL);
    expect_norm("a@[foo]", NULL);
    expect_norm("a@[1.2.3.4]", NULL);
    expect_norm("a@[::1%eth0]", NULL);
    expect_norm("a@[::1]x", NULL);
    expect_norm("a@[::1].", NULL);
}
END_TEST

START_TEST(test_resource_separators)
{
    struct jid j;
    const char *s = "a@example.com/r@x/y";
    ck_assert_int_eq(jid_parse(s, strlen(s), &j), 0);
    ck_assert_str_eq(j.local, "a");
    ck_assert_str_eq(j.domain, "example.com");
    ck_assert_str_eq(j.resource, "r@x/y");

    /* An '@' after the first '/' belongs to the resource: no localpart. */
    s = "example.com/a@b";
    ck_assert_int_eq(jid_parse(s, strlen(s), &j), 0);
    ck_assert_int_eq(j.has_local, 0);
    ck_assert_str_eq(j.domain, "example.com");
    ck_assert_str_eq(j.resource, "a@b");

    /* The first '/' starts the resource even if an '@' follows. */
    s = "a/b@example.com";
    ck_assert_int_eq(jid_parse(s, strlen(s), &j), 0);
    ck_assert_int_eq(j.has_local, 0);
    ck_assert_str_eq(j.domain, "a");
    ck_assert_str_eq(j.resource, "b@example.com");

    expect_norm("a@example.com//", "a@example.com//");
    expect_norm("a@example.com/@", "a@example.com/@");
}
END_TEST

START_TEST(test_invalid_utf8)
{
    expect_norm("\xC3\x28@example.com", NULL);       /* bad continuation */
    expect_norm("\xC0\xAF@example.com", NULL);       /* overlong '/' */
    expect_norm("\xED\xA0\x80@example.com", NULL);   /* surrogate */
    expect_norm("\xF4\x90\x80\x80@example.com", NULL); /* > U+10FFFF */
    expect_norm("\x80@example.com", NULL);           /* stray continuation */
    expect_norm("a@\xFF.example", NULL);
    expect_norm("a@example.com/\xC3", NULL);         /* truncated */
    expect_norm("a@example.com/\xE2\x82", NULL);
    char out[JID_STR_MAX];
    /* Embedded NUL bytes are rejected in every part. */
    ck_assert_int_eq(jid_normalize("a\0b@example.com", 15, out, sizeof out), -1);
    ck_assert_int_eq(jid_normalize("a@exa\0mple.com", 14, out, sizeof out), -1);
    ck_assert_int_eq(jid_normalize("a@example.com/x\0y", 17, out, sizeof out), -1);
    ck_assert_int_eq(jid_nodeprep("\xC3\x28", out, sizeof out), -1);
    ck_assert_int_eq(jid_resourceprep("\xC3", out, sizeof out), -1);
}
END_TEST

START_TEST(test_format)
{
    struct jid j;
    char out[JID_STR_MAX];
    const char *s = "Romeo@Montague.Lit/Garden";
    ck_assert_int_eq(jid_parse(s, strlen(s), &j), 0);
    ck_assert_int_eq(jid_format_bare(&j, out, sizeof out), 0);
    ck_assert_str_eq(out, "romeo@montague.lit");
    ck_assert_int_eq(jid_format_full(&j, out, sizeof out), 0);
    ck_assert_str_eq(out, "romeo@montague.lit/Garden");
    /* exact fits and one byte short */
    ck_assert_int_eq(jid_format_bare(&j, out, strlen("romeo@montague.lit") + 1), 0);
    ck_assert_int_eq(jid_format_bare(&j, out, strlen("romeo@montague.lit")), -1);
    ck_assert_int_eq(jid_format_full(&j, out, strlen("romeo@montague.lit/Garden") + 1), 0);
    ck_assert_int_eq(jid_format_full(&j, out, strlen("romeo@montague.lit/Garden")), -1);
    ck_assert_int_eq(jid_format_bare(&j, out, 0), -1);

    s = "montague.lit";
    ck_assert_int_eq(jid_parse(s, strlen(s), &j), 0);
    ck_assert_int_eq(jid_format_full(&j, out, sizeof out), 0);
    ck_assert_str_eq(out, "montague.lit");

    /* A struct without a domain cannot be formatted. */
    memset(&j, 0, sizeof j);
    ck_assert_int_eq(jid_format_bare(&j, out, sizeof out), -1);

    ck_assert_int_eq(jid_nodeprep("Fu\xC3\x9F" "ball", out, sizeof out), 0);
    ck_assert_str_eq(out, "fussball");
    ck_assert_int_eq(jid_nodeprep("Fu\xC3\x9F" "ball", out, 9), 0);
    ck_assert_int_eq(jid_nodeprep("Fu\xC3\x9F" "ball", out, 8), -1);
    ck_assert_int_eq(jid_resourceprep("Home \xE2\x85\xA8", out, sizeof out), 0);
    ck_assert_str_eq(out, "Home IX");
}
END_TEST

START_TEST(test_bare_of)
{
    char out[64];
    ck_assert_int_eq(jid_bare_of("a@d/r/x", 7, out, sizeof out), 0);
    ck_assert_str_eq(out, "a@d");
    ck_assert_int_eq(jid_bare_of("a@d/r@x", 7, out, sizeof out), 0);
    ck_assert_str_eq(out, "a@d");
    ck_assert_int_eq(jid_bare_of("d", 1, out, sizeof out), 0);
    ck_assert_str_eq(out, "d");
    ck_assert_int_eq(jid_bare_of("d/r", 3, out, sizeof out), 0);
    ck_assert_str_eq(out, "d");
    ck_assert_int_eq(jid_bare_of("a@d/r", 3, out, sizeof out), 0); /* len honoured */
    ck_assert_str_eq(out, "a@d");
    ck_assert_int_eq(jid_bare_of("", 0, out, sizeof out), -1);
    ck_assert_int_eq(jid_bare_of("/r", 2, out, sizeof out), -1);
    ck_assert_int_eq(jid_bare_of("a@d/r", 5, out, 4), 0);
    ck_assert_int_eq(jid_bare_of("a@d/r", 5, out, 3), -1);
}
END_TEST

START_TEST(test_shard)
{
    /* FNV-1a 64 reference vectors: the hash must never change. */
    ck_assert_uint_eq(util_hash64("", 0), UINT64_C(0xcbf29ce484222325));
    ck_assert_uint_eq(util_hash64("a", 1), UINT64_C(0xaf63dc4c8601ec8c));
    ck_assert_uint_eq(util_hash64("foobar", 6), UINT64_C(0x85944171f73967e8));
    ck_assert_uint_eq(util_hash64("alice@example.com", 17), UINT64_C(0x67023fc4a7ff2a46));

    /* Hardcoded shards for nshards = 4: a change here moves users. */
    static const struct { const char *bare; unsigned shard; } cases[] = {
        {"user0@example.com", 3}, {"user1@example.com", 0}, {"user2@example.com", 1},
        {"user3@example.com", 2}, {"alice@example.com", 2}, {"bob@example.com", 1},
        {"juliet@capulet.lit", 1}, {"fussball@example.com", 2}, {"example.com", 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        ck_assert_uint_eq(jid_shard(cases[i].bare, strlen(cases[i].bare), 4), cases[i].shard);
    ck_assert_uint_eq(jid_shard("alice@example.com", 17, 7), 6);
    ck_assert_uint_eq(jid_shard("alice@example.com", 17, 1), 0);
    ck_assert_uint_eq(jid_shard("alice@example.com", 17, 0), 0);

    /* Different spellings of one JID land on one shard once normalized. */
    char a[JID_STR_MAX], b[JID_STR_MAX], ba[JID_STR_MAX], bb[JID_STR_MAX];
    const char *s1 = "Fu\xC3\x9F" "ball@Example.COM/phone", *s2 = "fussball@example.com./desk";
    ck_assert_int_eq(jid_normalize(s1, strlen(s1), a, sizeof a), 0);
    ck_assert_int_eq(jid_normalize(s2, strlen(s2), b, sizeof b), 0);
    ck_assert_int_eq(jid_bare_of(a, strlen(a), ba, sizeof ba), 0);
    ck_assert_int_eq(jid_bare_of(b, strlen(b), bb, sizeof bb), 0);
    ck_assert_str_eq(ba, bb);
    ck_assert_uint_eq(jid_shard(ba, strlen(ba), 4), 2);
}
END_TEST

START_TEST(test_util_misc)
{
    char *s = util_strndup_safe("hello world", 5);
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "hello");
    free(s);
    s = util_strndup_safe("", 0);
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "");
    free(s);

    char tmpl[] = "/tmp/check_jid.XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(tmpl));
    char path[256], file[256];
    snprintf(path, sizeof path, "%s/a/b//c/", tmpl);
    ck_assert_int_eq(util_mkdir_p(path, 0700), 0);
    ck_assert_int_eq(util_mkdir_p(path, 0700), 0); /* exists: fine */
    struct stat st;
    snprintf(path, sizeof path, "%s/a/b/c", tmpl);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    /* A file in the way fails with ENOTDIR. */
    snprintf(file, sizeof file, "%s/f", tmpl);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    ck_assert_int_eq(util_mkdir_p(file, 0700), -1);
    ck_assert_int_eq(errno, ENOTDIR);
    snprintf(path, sizeof path, "%s/f/x", tmpl);
    ck_assert_int_eq(util_mkdir_p(path, 0700), -1);
    ck_assert_int_eq(util_mkdir_p("", 0700), -1);
    unlink(file);
    snprintf(path, sizeof path, "%s/a/b/c", tmpl);
    rmdir(path);
    snprintf(path, sizeof path, "%s/a/b", tmpl);
    rmdir(path);
    snprintf(path, sizeof path, "%s/a", tmpl);
    rmdir(path);
    ck_assert_int_eq(rmdir(tmpl), 0);
}
END_TEST

static Suite *jid_suite(void)
{
    Suite *s = suite_create("jid");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_parse_parts);
    tcase_add_test(tc, test_normalization);
    tcase_add_test(tc, test_prohibited);
    tcase_add_test(tc, test_empty_parts);
    tcase_add_test(tc, test_length_limits);
    tcase_add_test(tc, test_ip_literals);
    tcase_add_test(tc, test_resource_separators);
    tcase_add_test(tc, test_invalid_utf8);
    tcase_add_test(tc, test_format);
    tcase_add_test(tc, test_bare_of);
    tcase_add_test(tc, test_shard);
    tcase_add_test(tc, test_util_misc);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(jid_suite());
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
