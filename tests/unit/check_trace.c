/* check_trace.c - unit tests for trace.c: rule targets and their
 * normalization, matching (full, bare, domain, all; bodies), the cheap
 * normalization of a raw 'to' against jid_normalize, ids and escaping. */
#include "config.h"
#include "buf.h"
#include "jid.h"
#include "trace.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_targets)
{
    char norm[JID_STR_MAX];
    ck_assert_int_eq(trace_target_parse(NULL, norm, sizeof norm), TRACE_ALL);
    ck_assert_int_eq(trace_target_parse("all", norm, sizeof norm), TRACE_ALL);
    ck_assert_int_eq(trace_target_parse("Example.COM", norm, sizeof norm), TRACE_DOMAIN);
    ck_assert_str_eq(norm, "example.com");
    ck_assert_int_eq(trace_target_parse("Bob@Example.COM", norm, sizeof norm), TRACE_BARE);
    ck_assert_str_eq(norm, "bob@example.com");
    ck_assert_int_eq(trace_target_parse("bob@example.com/Phone", norm, sizeof norm), TRACE_FULL);
    ck_assert_str_eq(norm, "bob@example.com/Phone");
    ck_assert_int_eq(trace_target_parse("not a jid", norm, sizeof norm), -1);
    ck_assert_int_eq(trace_target_parse("@example.com", norm, sizeof norm), -1);
}
END_TEST

START_TEST(test_rules)
{
    trace_rules_clear();
    ck_assert(!trace_active());
    ck_assert_int_eq(trace_rule_add("bob@example.com", 0), 0);
    ck_assert(trace_active());
    ck_assert_int_eq(trace_rule_add("BOB@example.com", 1), 1); /* the same rule: bodies updated */
    ck_assert_int_eq(trace_nrules, 1);
    ck_assert_int_eq(trace_rule_add("bad jid", 0), -1);
    ck_assert_int_eq(trace_rule_del("carol@example.com"), 1);
    ck_assert_int_eq(trace_rule_del("bob@example.com"), 0);
    ck_assert(!trace_active());
    for (int i = 0; i < TRACE_MAX_RULES; i++) {
        char t[64];
        snprintf(t, sizeof t, "u%d@example.com", i);
        ck_assert_int_eq(trace_rule_add(t, 0), 0);
    }
    ck_assert_int_eq(trace_rule_add("one-more@example.com", 0), -2);
    struct buf b = { 0 };
    trace_rules_list(&b);
    ck_assert(strstr(buf_cstr(&b), "bare\tu0@example.com\tno\n"));
    buf_free(&b);
    trace_rules_clear();
    ck_assert(!trace_active());
}
END_TEST

START_TEST(test_match)
{
    trace_rules_clear();
    ck_assert_int_eq(trace_match("a@x/r", "b@y"), 0);
    trace_rule_add("bob@example.com", 0);
    ck_assert_int_eq(trace_match("bob@example.com/phone", "alice@example.com"), TRACE_MATCH);
    ck_assert_int_eq(trace_match("alice@example.com/pc", "bob@example.com"), TRACE_MATCH);
    ck_assert_int_eq(trace_match("alice@example.com/pc", "bob@example.com/x"), TRACE_MATCH);
    ck_assert_int_eq(trace_match("alice@example.com/pc", "bobby@example.com"), 0);
    ck_assert_int_eq(trace_match("alice@example.com/pc", "bob@example.com.evil"), 0);
    ck_assert_int_eq(trace_match(NULL, NULL), 0);
    trace_rules_clear();
    trace_rule_add("carol@example.com/laptop", 1);
    ck_assert_int_eq(trace_match("carol@example.com/laptop", NULL), TRACE_MATCH | TRACE_BODIES);
    ck_assert_int_eq(trace_match("carol@example.com/phone", NULL), 0);
    ck_assert_int_eq(trace_match("carol@example.com", NULL), 0);
    trace_rules_clear();
    trace_rule_add("example.org", 0);
    ck_assert_int_eq(trace_match("x@example.org/r", NULL), TRACE_MATCH);
    ck_assert_int_eq(trace_match(NULL, "example.org"), TRACE_MATCH);
    ck_assert_int_eq(trace_match(NULL, "x@sub.example.org"), 0);
    ck_assert_int_eq(trace_match(NULL, "x@example.com/example.org"), 0); /* a resource is not a domain */
    trace_rule_add(NULL, 0); /* all */
    ck_assert_int_eq(trace_match(NULL, NULL), TRACE_MATCH);
    trace_rules_clear();
}
END_TEST

/* The cheap path must agree with jid_normalize on what it matches. */
START_TEST(test_match_raw)
{
    static const char *const tos[] = {
        "Bob@Example.COM", "bob@example.com.", "BOB@EXAMPLE.COM/Phone", "bob@example.com/phone",
        "B\xc3\xb6" "b@example.com", "bob@EXAMPLE.com./x", "bob@[::1]", "nobody@example.com",
    };
    trace_rules_clear();
    trace_rule_add("bob@example.com", 0);
    for (size_t i = 0; i < sizeof tos / sizeof *tos; i++) {
        char norm[JID_STR_MAX];
        int want = jid_normalize(tos[i], strlen(tos[i]), norm, sizeof norm) == 0 ? trace_match(NULL, norm) : 0;
        ck_assert_msg(trace_match_raw(NULL, tos[i], strlen(tos[i])) == want, "to=%s", tos[i]);
    }
    ck_assert_int_eq(trace_match_raw("bob@example.com/r", NULL, 0), TRACE_MATCH);
    trace_rules_clear();
    trace_rule_add("b\xc3\xb6" "b@example.com", 0); /* non-ASCII: stringprep path */
    const char *upper = "B\xc3\x96" "B@example.com";
    ck_assert_int_eq(trace_match_raw(NULL, upper, strlen(upper)), TRACE_MATCH);
    trace_rules_clear();
}
END_TEST

START_TEST(test_ids_and_escape)
{
    char out[64];
    for (int i = 0; i < 1000; i++) ck_assert(trace_new_id() != 0);
    ck_assert(trace_new_id() != trace_new_id());
    ck_assert_str_eq(trace_escape("a b\\c\n", 6, out, sizeof out), "a\\x20b\\x5cc\\x0a");
    ck_assert_str_eq(trace_escape("abcdef", 6, out, 4), "abc");
    ck_assert_str_eq(trace_escape("  ", 2, out, 6), "\\x20");
}
END_TEST

static Suite *trace_suite(void)
{
    Suite *s = suite_create("trace");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_targets);
    tcase_add_test(tc, test_rules);
    tcase_add_test(tc, test_match);
    tcase_add_test(tc, test_match_raw);
    tcase_add_test(tc, test_ids_and_escape);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(trace_suite());
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
