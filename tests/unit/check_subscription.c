/* check_subscription.c - the subscription state machine (cmd/xmpp-sm/
 * sm_subscription.c) against every row of RFC 6121 Appendix A, Tables 1
 * to 8, written here as the RFC writes them (state names in quotes,
 * MUST / MUST NOT / SHOULD NOT), plus the footnotes: the automatic replies
 * of §A.3.1 and §A.3.2 and the pre-approvals of §3.4. */
#include "config.h"
#include "sm_subscription.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static enum sub_state state_of(const char *rfc)
{
    static const char *const rfc_names[SUB_STATE_COUNT] = {
        "None", "None + Pending Out", "None + Pending In", "None + Pending Out/In",
        "To", "To + Pending In", "From", "From + Pending Out", "Both",
    };
    for (int i = 0; i < SUB_STATE_COUNT; i++)
        if (strcmp(rfc_names[i], rfc) == 0) return (enum sub_state)i;
    ck_abort_msg("unknown RFC state name '%s'", rfc);
    return SUB_NONE;
}

struct rfc_row {
    const char *table;    /* "Table 1" ... */
    enum sub_dir dir;
    enum sub_type type;
    const char *existing; /* EXISTING STATE */
    int forward;          /* ROUTE? / DELIVER?: MUST = 1, MUST NOT / SHOULD NOT = 0 */
    const char *next;     /* NEW STATE, NULL = "no state change" */
    unsigned reply;       /* auto-reply the footnotes ask for (SUBA_REPLY_*) or 0 */
    int preapproval;      /* 1: the NEW STATE column says "pre-approval" (§A.2.3 note [1]) */
};

#define OUT SUB_OUTBOUND
#define IN SUB_INBOUND
#define MUST 1
#define MUST_NOT 0
#define SHOULD_NOT 0
#define NO_CHANGE NULL
#define R_SUBD SUBA_REPLY_SUBSCRIBED
#define R_UNSUBD SUBA_REPLY_UNSUBSCRIBED
#define PRE_APPROVAL 1

static const struct rfc_row rows[] = {
    /* A.2.1 Table 1: Processing of outbound "subscribe" stanzas */
    { "Table 1", OUT, SUB_SUBSCRIBE, "None", MUST, "None + Pending Out", 0, 0 },
    { "Table 1", OUT, SUB_SUBSCRIBE, "None + Pending Out", MUST, NO_CHANGE, 0, 0 },
    { "Table 1", OUT, SUB_SUBSCRIBE, "None + Pending In", MUST, "None + Pending Out/In", 0, 0 },
    { "Table 1", OUT, SUB_SUBSCRIBE, "None + Pending Out/In", MUST, NO_CHANGE, 0, 0 },
    { "Table 1", OUT, SUB_SUBSCRIBE, "To", MUST, NO_CHANGE, 0, 0 },
    { "Table 1", OUT, SUB_SUBSCRIBE, "To + Pending In", MUST, NO_CHANGE, 0, 0 },
    { "Table 1", OUT, SUB_SUBSCRIBE, "From", MUST, "From + Pending Out", 0, 0 },
    { "Table 1", OUT, SUB_SUBSCRIBE, "From + Pending Out", MUST, NO_CHANGE, 0, 0 },
    { "Table 1", OUT, SUB_SUBSCRIBE, "Both", MUST, NO_CHANGE, 0, 0 },
    /* A.2.2 Table 2: Processing of outbound "unsubscribe" stanzas */
    { "Table 2", OUT, SUB_UNSUBSCRIBE, "None", MUST, NO_CHANGE, 0, 0 },
    { "Table 2", OUT, SUB_UNSUBSCRIBE, "None + Pending Out", MUST, "None", 0, 0 },
    { "Table 2", OUT, SUB_UNSUBSCRIBE, "None + Pending In", MUST, NO_CHANGE, 0, 0 },
    { "Table 2", OUT, SUB_UNSUBSCRIBE, "None + Pending Out/In", MUST, "None + Pending In", 0, 0 },
    { "Table 2", OUT, SUB_UNSUBSCRIBE, "To", MUST, "None", 0, 0 },
    { "Table 2", OUT, SUB_UNSUBSCRIBE, "To + Pending In", MUST, "None + Pending In", 0, 0 },
    { "Table 2", OUT, SUB_UNSUBSCRIBE, "From", MUST, NO_CHANGE, 0, 0 },
    { "Table 2", OUT, SUB_UNSUBSCRIBE, "From + Pending Out", MUST, "From", 0, 0 },
    { "Table 2", OUT, SUB_UNSUBSCRIBE, "Both", MUST, "From", 0, 0 },
    /* A.2.3 Table 3: Processing of outbound "subscribed" stanzas; "pre-
     * approval [1]": no state change, the server records a pre-approval */
    { "Table 3", OUT, SUB_SUBSCRIBED, "None", MUST_NOT, NO_CHANGE, 0, PRE_APPROVAL },
    { "Table 3", OUT, SUB_SUBSCRIBED, "None + Pending Out", MUST_NOT, NO_CHANGE, 0, PRE_APPROVAL },
    { "Table 3", OUT, SUB_SUBSCRIBED, "None + Pending In", MUST, "From", 0, 0 },
    { "Table 3", OUT, SUB_SUBSCRIBED, "None + Pending Out/In", MUST, "From + Pending Out", 0, 0 },
    { "Table 3", OUT, SUB_SUBSCRIBED, "To", MUST_NOT, NO_CHANGE, 0, PRE_APPROVAL },
    { "Table 3", OUT, SUB_SUBSCRIBED, "To + Pending In", MUST, "Both", 0, 0 },
    { "Table 3", OUT, SUB_SUBSCRIBED, "From", MUST_NOT, NO_CHANGE, 0, 0 },
    { "Table 3", OUT, SUB_SUBSCRIBED, "From + Pending Out", MUST_NOT, NO_CHANGE, 0, 0 },
    { "Table 3", OUT, SUB_SUBSCRIBED, "Both", MUST_NOT, NO_CHANGE, 0, 0 },
    /* A.2.4 Table 4: Processing of outbound "unsubscribed" stanzas */
    { "Table 4", OUT, SUB_UNSUBSCRIBED, "None", MUST_NOT, NO_CHANGE, 0, 0 },
    { "Table 4", OUT, SUB_UNSUBSCRIBED, "None + Pending Out", MUST_NOT, NO_CHANGE, 0, 0 },
    { "Table 4", OUT, SUB_UNSUBSCRIBED, "None + Pending In", MUST, "None", 0, 0 },
    { "Table 4", OUT, SUB_UNSUBSCRIBED, "None + Pending Out/In", MUST, "None + Pending Out", 0, 0 },
    { "Table 4", OUT, SUB_UNSUBSCRIBED, "To", MUST_NOT, NO_CHANGE, 0, 0 },
    { "Table 4", OUT, SUB_UNSUBSCRIBED, "To + Pending In", MUST, "To", 0, 0 },
    { "Table 4", OUT, SUB_UNSUBSCRIBED, "From", MUST, "None", 0, 0 },
    { "Table 4", OUT, SUB_UNSUBSCRIBED, "From + Pending Out", MUST, "None + Pending Out", 0, 0 },
    { "Table 4", OUT, SUB_UNSUBSCRIBED, "Both", MUST, "To", 0, 0 },
    /* A.3.1 Table 5: Processing of inbound "subscribe" stanzas; note [2]:
     * the server SHOULD auto-reply "subscribed" */
    { "Table 5", IN, SUB_SUBSCRIBE, "None", MUST, "None + Pending In", 0, 0 },
    { "Table 5", IN, SUB_SUBSCRIBE, "None + Pending Out", MUST, "None + Pending Out/In", 0, 0 },
    { "Table 5", IN, SUB_SUBSCRIBE, "None + Pending In", SHOULD_NOT, NO_CHANGE, 0, 0 },
    { "Table 5", IN, SUB_SUBSCRIBE, "None + Pending Out/In", SHOULD_NOT, NO_CHANGE, 0, 0 },
    { "Table 5", IN, SUB_SUBSCRIBE, "To", MUST, "To + Pending In", 0, 0 },
    { "Table 5", IN, SUB_SUBSCRIBE, "To + Pending In", SHOULD_NOT, NO_CHANGE, 0, 0 },
    { "Table 5", IN, SUB_SUBSCRIBE, "From", MUST_NOT, NO_CHANGE, R_SUBD, 0 },
    { "Table 5", IN, SUB_SUBSCRIBE, "From + Pending Out", MUST_NOT, NO_CHANGE, R_SUBD, 0 },
    { "Table 5", IN, SUB_SUBSCRIBE, "Both", MUST_NOT, NO_CHANGE, R_SUBD, 0 },
    /* A.3.2 Table 6: Processing of inbound "unsubscribe" stanzas; a state
     * change SHOULD be answered with "unsubscribed" */
    { "Table 6", IN, SUB_UNSUBSCRIBE, "None", MUST_NOT, NO_CHANGE, 0, 0 },
    { "Table 6", IN, SUB_UNSUBSCRIBE, "None + Pending Out", MUST_NOT, NO_CHANGE, 0, 0 },
    { "Table 6", IN, SUB_UNSUBSCRIBE, "None + Pending In", MUST, "None", R_UNSUBD, 0 },
    { "Table 6", IN, SUB_UNSUBSCRIBE, "None + Pending Out/In", MUST, "None + Pending Out", R_UNSUBD, 0 },
    { "Table 6", IN, SUB_UNSUBSCRIBE, "To", MUST_NOT, NO_CHANGE, 0, 0 },
    { "Table 6", IN, SUB_UNSUBSCRIBE, "To + Pending In", MUST, "To", R_UNSUBD, 0 },
    { "Table 6", IN, SUB_UNSUBSCRIBE, "From", MUST, "None", R_UNSUBD, 0 },
    { "Table 6", IN, SUB_UNSUBSCRIBE, "From + Pending Out", MUST, "None + Pending Out", R_UNSUBD, 0 },
    { "Table 6", IN, SUB_UNSUBSCRIBE, "Both", MUST, "To", R_UNSUBD, 0 },
    /* A.3.3 Table 7: Processing of inbound "subscribed" stanzas */
    { "Table 7", IN, SUB_SUBSCRIBED, "None", MUST_NOT, NO_CHANGE, 0, 0 },
    { "Table 7", IN, SUB_SUBSCRIBED, "None + Pending Out", MUST, "To", 0, 0 },
    { "Table 7", IN, SUB_SUBSCRIBED, "None + Pending In", MUST_NOT, NO_CHANGE, 0, 0 },
    { "Table 7", IN, SUB_SUBSCRIBED, "None + Pending Out/In", MUST, "To + Pending In", 0, 0 },
    { "Table 7", IN, SUB_SUBSCRIBED, "To", MUST_NOT, NO_CHANGE, 0, 0 },
    { "Table 7", IN, SUB_SUBSCRIBED, "To + Pending In", MUST_NOT, NO_CHANGE, 0, 0 },
    { "Table 7", IN, SUB_SUBSCRIBED, "From", MUST_NOT, NO_CHANGE, 0, 0 },
    { "Table 7", IN, SUB_SUBSCRIBED, "From + Pending Out", MUST, "Both", 0, 0 },
    { "Table 7", IN, SUB_SUBSCRIBED, "Both", MUST_NOT, NO_CHANGE, 0, 0 },
    /* A.3.4 Table 8: Processing of inbound "unsubscribed" stanzas */
    { "Table 8", IN, SUB_UNSUBSCRIBED, "None", MUST_NOT, NO_CHANGE, 0, 0 },
    { "Table 8", IN, SUB_UNSUBSCRIBED, "None + Pending Out", MUST, "None", 0, 0 },
    { "Table 8", IN, SUB_UNSUBSCRIBED, "None + Pending In", MUST_NOT, NO_CHANGE, 0, 0 },
    { "Table 8", IN, SUB_UNSUBSCRIBED, "None + Pending Out/In", MUST, "None + Pending In", 0, 0 },
    { "Table 8", IN, SUB_UNSUBSCRIBED, "To", MUST, "None", 0, 0 },
    { "Table 8", IN, SUB_UNSUBSCRIBED, "To + Pending In", MUST, "None + Pending In", 0, 0 },
    { "Table 8", IN, SUB_UNSUBSCRIBED, "From", MUST_NOT, NO_CHANGE, 0, 0 },
    { "Table 8", IN, SUB_UNSUBSCRIBED, "From + Pending Out", MUST, "From", 0, 0 },
    { "Table 8", IN, SUB_UNSUBSCRIBED, "Both", MUST, "From", 0, 0 },
};

#define NROWS ((int)(sizeof rows / sizeof rows[0]))

START_TEST(appendix_a_row)
{
    const struct rfc_row *r = &rows[_i];
    enum sub_state from = state_of(r->existing);
    enum sub_state want = r->next ? state_of(r->next) : from;
    struct sub_outcome o;
    char what[160];
    snprintf(what, sizeof what, "%s, %s \"%s\" in \"%s\"", r->table, r->dir == OUT ? "outbound" : "inbound",
             sub_type_name(r->type), r->existing);
    ck_assert_int_eq(sub_transition(from, 0, r->dir, r->type, &o), 0);
    ck_assert_msg(!!(o.actions & SUBA_FORWARD) == r->forward, "%s: %s is %s", what,
                  r->dir == OUT ? "ROUTE?" : "DELIVER?", (o.actions & SUBA_FORWARD) ? "yes" : "no");
    ck_assert_msg(o.state == want, "%s: new state %s, want %s", what, sub_state_name(o.state), sub_state_name(want));
    ck_assert_msg(!!(o.actions & SUBA_CHANGED) == (want != from), "%s: CHANGED flag", what);
    ck_assert_msg((o.actions & (SUBA_REPLY_SUBSCRIBED | SUBA_REPLY_UNSUBSCRIBED)) == r->reply,
                  "%s: auto-reply bits %#x, want %#x", what,
                  o.actions & (SUBA_REPLY_SUBSCRIBED | SUBA_REPLY_UNSUBSCRIBED), r->reply);
    ck_assert_msg(o.approved == r->preapproval, "%s: pre-approval %d, want %d", what, o.approved, r->preapproval);
    ck_assert_msg(!!(o.actions & SUBA_APPROVAL_CHANGED) == r->preapproval, "%s: APPROVAL_CHANGED", what);
    /* presence follows the "from" facet: gained -> send it, lost -> unavailable */
    ck_assert_msg(!!(o.actions & SUBA_SEND_PRESENCE) == (!sub_has_from(from) && sub_has_from(want)),
                  "%s: SEND_PRESENCE", what);
    ck_assert_msg(!!(o.actions & SUBA_SEND_UNAVAILABLE) == (sub_has_from(from) && !sub_has_from(want)),
                  "%s: SEND_UNAVAILABLE", what);
}
END_TEST

/* Every (direction, type, state) triple appears exactly once above. */
START_TEST(tables_are_complete)
{
    int seen[2][SUB_TYPE_COUNT][SUB_STATE_COUNT] = { { { 0 } } };
    for (int i = 0; i < NROWS; i++) seen[rows[i].dir][rows[i].type][state_of(rows[i].existing)]++;
    for (int d = 0; d < 2; d++)
        for (int t = 0; t < SUB_TYPE_COUNT; t++)
            for (int s = 0; s < SUB_STATE_COUNT; s++)
                ck_assert_msg(seen[d][t][s] == 1, "dir %d type %s state %s: %d rows", d,
                              sub_type_name((enum sub_type)t), sub_state_name((enum sub_state)s), seen[d][t][s]);
    ck_assert_int_eq(NROWS, 72);
}
END_TEST

/* §3.4.1 and §A.2.3 [1]: outbound "subscribed" where the contact has not
 * asked records a pre-approval; it is not routed and the state stays. */
START_TEST(preapproval_recorded)
{
    const char *states[] = { "None", "None + Pending Out", "To" };
    for (int i = 0; i < 3; i++) {
        struct sub_outcome o;
        enum sub_state s = state_of(states[i]);
        ck_assert_int_eq(sub_transition(s, 0, SUB_OUTBOUND, SUB_SUBSCRIBED, &o), 0);
        ck_assert_msg(o.approved == 1 && o.state == s && !(o.actions & SUBA_FORWARD), "%s", states[i]);
        ck_assert(o.actions & SUBA_APPROVAL_CHANGED);
        /* a second one changes nothing */
        ck_assert_int_eq(sub_transition(s, 1, SUB_OUTBOUND, SUB_SUBSCRIBED, &o), 0);
        ck_assert_msg(o.approved == 1 && o.actions == 0, "%s again: actions %#x", states[i], o.actions);
    }
}
END_TEST

/* §A.2.4 [1]: outbound "unsubscribed" cancels a pre-approval (not routed). */
START_TEST(preapproval_cancelled)
{
    const char *states[] = { "None", "None + Pending Out", "To" };
    for (int i = 0; i < 3; i++) {
        struct sub_outcome o;
        enum sub_state s = state_of(states[i]);
        ck_assert_int_eq(sub_transition(s, 1, SUB_OUTBOUND, SUB_UNSUBSCRIBED, &o), 0);
        ck_assert_msg(o.approved == 0 && o.state == s && o.actions == SUBA_APPROVAL_CHANGED, "%s: %#x", states[i],
                      o.actions);
    }
}
END_TEST

/* §3.4 and §A.3.1 [1]: an inbound "subscribe" meeting a pre-approval is
 * not delivered; the server answers "subscribed", the contact gets "from"
 * and the user's presence. */
START_TEST(preapproval_used)
{
    static const struct { const char *from, *to; } cases[] = {
        { "None", "From" }, { "None + Pending Out", "From + Pending Out" }, { "To", "Both" },
    };
    for (int i = 0; i < 3; i++) {
        struct sub_outcome o;
        ck_assert_int_eq(sub_transition(state_of(cases[i].from), 1, SUB_INBOUND, SUB_SUBSCRIBE, &o), 0);
        ck_assert_msg(o.state == state_of(cases[i].to), "%s -> %s", cases[i].from, sub_state_name(o.state));
        ck_assert(!(o.actions & SUBA_FORWARD));
        ck_assert(o.actions & SUBA_REPLY_SUBSCRIBED);
        ck_assert(o.actions & SUBA_SEND_PRESENCE);
        ck_assert(o.actions & SUBA_CHANGED);
        ck_assert(o.actions & SUBA_APPROVAL_CHANGED);
        ck_assert_int_eq(o.approved, 0);
    }
}
END_TEST

/* Other stanzas leave a pre-approval alone while it can still apply, and
 * it disappears once the contact has "from" or a pending request. */
START_TEST(preapproval_kept_or_dropped)
{
    struct sub_outcome o;
    /* user subscribes: None -> None + Pending Out, still pre-approved */
    ck_assert_int_eq(sub_transition(SUB_NONE, 1, SUB_OUTBOUND, SUB_SUBSCRIBE, &o), 0);
    ck_assert(o.state == SUB_NONE_OUT && o.approved == 1 && !(o.actions & SUBA_APPROVAL_CHANGED));
    /* contact approves: None + Pending Out -> To, still pre-approved */
    ck_assert_int_eq(sub_transition(SUB_NONE_OUT, 1, SUB_INBOUND, SUB_SUBSCRIBED, &o), 0);
    ck_assert(o.state == SUB_TO && o.approved == 1);
    /* a flag in a state where it means nothing is ignored */
    ck_assert_int_eq(sub_transition(SUB_BOTH, 1, SUB_INBOUND, SUB_SUBSCRIBE, &o), 0);
    ck_assert(o.state == SUB_BOTH && o.approved == 0 && (o.actions & SUBA_REPLY_SUBSCRIBED));
}
END_TEST

START_TEST(names_round_trip)
{
    for (int s = 0; s < SUB_STATE_COUNT; s++) {
        ck_assert_int_eq(sub_state_parse(sub_state_name((enum sub_state)s)), s);
        enum sub_state m = sub_state_make(sub_has_to((enum sub_state)s), sub_has_from((enum sub_state)s),
                                          sub_pending_out((enum sub_state)s), sub_pending_in((enum sub_state)s));
        ck_assert_int_eq(m, s);
    }
    ck_assert_str_eq(sub_attr(SUB_NONE_OUT_IN), "none");
    ck_assert_str_eq(sub_attr(SUB_TO_IN), "to");
    ck_assert_str_eq(sub_attr(SUB_FROM_OUT), "from");
    ck_assert_str_eq(sub_attr(SUB_BOTH), "both");
    ck_assert_int_eq(sub_state_parse("nonsense"), -1);
    ck_assert_int_eq(sub_type_parse("unsubscribed"), SUB_UNSUBSCRIBED);
    ck_assert_int_eq(sub_type_parse("probe"), -1);
    struct sub_outcome o;
    ck_assert_int_eq(sub_transition(SUB_STATE_COUNT, 0, SUB_INBOUND, SUB_SUBSCRIBE, &o), -1);
    ck_assert_int_eq(sub_transition(SUB_NONE, 0, SUB_INBOUND, SUB_TYPE_COUNT, &o), -1);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("subscription");
    TCase *t = tcase_create("appendix-a");
    tcase_add_loop_test(t, appendix_a_row, 0, NROWS);
    tcase_add_test(t, tables_are_complete);
    suite_add_tcase(s, t);
    t = tcase_create("pre-approval");
    tcase_add_test(t, preapproval_recorded);
    tcase_add_test(t, preapproval_cancelled);
    tcase_add_test(t, preapproval_used);
    tcase_add_test(t, preapproval_kept_or_dropped);
    suite_add_tcase(s, t);
    t = tcase_create("names");
    tcase_add_test(t, names_round_trip);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
