/* sm_subscription.c - RFC 6121 Appendix A as data (sm_subscription.h).
 *
 * The eight tables below are the RFC's Tables 1-8 row by row: whether the
 * stanza is routed (outbound) or delivered (inbound), and the new state.
 * Around them, the rules the tables leave to footnotes and to §3.4:
 *
 *  - outbound "subscribed" in None, None + Pending Out or To is not routed
 *    but records a pre-approval (§3.4, §A.2.3 note [1]); outbound
 *    "unsubscribed" in those states cancels it (§A.2.4 note [1]);
 *  - inbound "subscribe" in those states with a pre-approval is not
 *    delivered: the server answers "subscribed" itself and the contact
 *    gets its subscription (§3.4, §A.3.1 note [1]);
 *  - inbound "subscribe" from a contact that already has a subscription
 *    is answered "subscribed" (§A.3.1 note [2]: lets the contact's server
 *    resynchronize); inbound "unsubscribe" that changes the state is
 *    answered "unsubscribed" (§A.3.2).
 */
#include "config.h"
#include "sm_subscription.h"

#include <stddef.h>
#include <string.h>

#define Y 1
#define N 0
#define SAME (-1) /* "no state change" */

struct row {
    signed char forward; /* ROUTE? / DELIVER? */
    signed char next;    /* new state or SAME */
};

/* [direction][type][state] */
static const struct row table[2][SUB_TYPE_COUNT][SUB_STATE_COUNT] = {
    [SUB_OUTBOUND] = {
        /* Table 1 (§A.2.1): outbound "subscribe" is always routed, so the
         * contact's server can resynchronize. */
        [SUB_SUBSCRIBE] = {
            [SUB_NONE] = { Y, SUB_NONE_OUT },      [SUB_NONE_OUT] = { Y, SAME },
            [SUB_NONE_IN] = { Y, SUB_NONE_OUT_IN }, [SUB_NONE_OUT_IN] = { Y, SAME },
            [SUB_TO] = { Y, SAME },                 [SUB_TO_IN] = { Y, SAME },
            [SUB_FROM] = { Y, SUB_FROM_OUT },       [SUB_FROM_OUT] = { Y, SAME },
            [SUB_BOTH] = { Y, SAME },
        },
        /* Table 3 (§A.2.3): outbound "subscribed" only when it changes
         * the state; pre-approval is handled outside the table. */
        [SUB_SUBSCRIBED] = {
            [SUB_NONE] = { N, SAME },             [SUB_NONE_OUT] = { N, SAME },
            [SUB_NONE_IN] = { Y, SUB_FROM },      [SUB_NONE_OUT_IN] = { Y, SUB_FROM_OUT },
            [SUB_TO] = { N, SAME },               [SUB_TO_IN] = { Y, SUB_BOTH },
            [SUB_FROM] = { N, SAME },             [SUB_FROM_OUT] = { N, SAME },
            [SUB_BOTH] = { N, SAME },
        },
        /* Table 2 (§A.2.2): outbound "unsubscribe" is always routed. */
        [SUB_UNSUBSCRIBE] = {
            [SUB_NONE] = { Y, SAME },             [SUB_NONE_OUT] = { Y, SUB_NONE },
            [SUB_NONE_IN] = { Y, SAME },          [SUB_NONE_OUT_IN] = { Y, SUB_NONE_IN },
            [SUB_TO] = { Y, SUB_NONE },           [SUB_TO_IN] = { Y, SUB_NONE_IN },
            [SUB_FROM] = { Y, SAME },             [SUB_FROM_OUT] = { Y, SUB_FROM },
            [SUB_BOTH] = { Y, SUB_FROM },
        },
        /* Table 4 (§A.2.4): outbound "unsubscribed" only when it changes
         * the state. */
        [SUB_UNSUBSCRIBED] = {
            [SUB_NONE] = { N, SAME },             [SUB_NONE_OUT] = { N, SAME },
            [SUB_NONE_IN] = { Y, SUB_NONE },      [SUB_NONE_OUT_IN] = { Y, SUB_NONE_OUT },
            [SUB_TO] = { N, SAME },               [SUB_TO_IN] = { Y, SUB_TO },
            [SUB_FROM] = { Y, SUB_NONE },         [SUB_FROM_OUT] = { Y, SUB_NONE_OUT },
            [SUB_BOTH] = { Y, SUB_TO },
        },
    },
    [SUB_INBOUND] = {
        /* Table 5 (§A.3.1): a request is delivered unless one is already
         * pending (it was recorded) or the contact is already subscribed. */
        [SUB_SUBSCRIBE] = {
            [SUB_NONE] = { Y, SUB_NONE_IN },      [SUB_NONE_OUT] = { Y, SUB_NONE_OUT_IN },
            [SUB_NONE_IN] = { N, SAME },          [SUB_NONE_OUT_IN] = { N, SAME },
            [SUB_TO] = { Y, SUB_TO_IN },          [SUB_TO_IN] = { N, SAME },
            [SUB_FROM] = { N, SAME },             [SUB_FROM_OUT] = { N, SAME },
            [SUB_BOTH] = { N, SAME },
        },
        /* Table 7 (§A.3.3): delivered only as the answer to a pending
         * outbound request. */
        [SUB_SUBSCRIBED] = {
            [SUB_NONE] = { N, SAME },             [SUB_NONE_OUT] = { Y, SUB_TO },
            [SUB_NONE_IN] = { N, SAME },          [SUB_NONE_OUT_IN] = { Y, SUB_TO_IN },
            [SUB_TO] = { N, SAME },               [SUB_TO_IN] = { N, SAME },
            [SUB_FROM] = { N, SAME },             [SUB_FROM_OUT] = { Y, SUB_BOTH },
            [SUB_BOTH] = { N, SAME },
        },
        /* Table 6 (§A.3.2): delivered when it changes the state. */
        [SUB_UNSUBSCRIBE] = {
            [SUB_NONE] = { N, SAME },             [SUB_NONE_OUT] = { N, SAME },
            [SUB_NONE_IN] = { Y, SUB_NONE },      [SUB_NONE_OUT_IN] = { Y, SUB_NONE_OUT },
            [SUB_TO] = { N, SAME },               [SUB_TO_IN] = { Y, SUB_TO },
            [SUB_FROM] = { Y, SUB_NONE },         [SUB_FROM_OUT] = { Y, SUB_NONE_OUT },
            [SUB_BOTH] = { Y, SUB_TO },
        },
        /* Table 8 (§A.3.4): delivered when the user had asked for or had
         * a subscription. */
        [SUB_UNSUBSCRIBED] = {
            [SUB_NONE] = { N, SAME },             [SUB_NONE_OUT] = { Y, SUB_NONE },
            [SUB_NONE_IN] = { N, SAME },          [SUB_NONE_OUT_IN] = { Y, SUB_NONE_IN },
            [SUB_TO] = { Y, SUB_NONE },           [SUB_TO_IN] = { Y, SUB_NONE_IN },
            [SUB_FROM] = { N, SAME },             [SUB_FROM_OUT] = { Y, SUB_FROM },
            [SUB_BOTH] = { Y, SUB_FROM },
        },
    },
};

/* The states where a pre-approval can exist (§3.4): the contact has no
 * subscription to the user and no pending request to the user. */
static int preapprovable(enum sub_state s) { return s == SUB_NONE || s == SUB_NONE_OUT || s == SUB_TO; }

int sub_transition(enum sub_state state, int approved, enum sub_dir dir, enum sub_type type,
                   struct sub_outcome *out)
{
    if ((unsigned)state >= SUB_STATE_COUNT || (unsigned)type >= SUB_TYPE_COUNT ||
        (dir != SUB_OUTBOUND && dir != SUB_INBOUND))
        return -1;
    approved = approved && preapprovable(state);
    const struct row *r = &table[dir][type][state];
    enum sub_state next = r->next == SAME ? state : (enum sub_state)r->next;
    unsigned actions = r->forward ? SUBA_FORWARD : 0;
    int new_approved = approved;

    if (dir == SUB_OUTBOUND) {
        if (type == SUB_SUBSCRIBED && preapprovable(state)) {
            /* §3.4.1 / §A.2.3 [1]: not routed; remembered as approved='true' */
            new_approved = 1;
        } else if (type == SUB_UNSUBSCRIBED && preapprovable(state)) {
            /* §A.2.4 [1]: cancels a pre-approval, still not routed */
            new_approved = 0;
        }
    } else {
        if (type == SUB_SUBSCRIBE && approved) {
            /* §3.4 / §A.3.1 [1]: the user approved in advance: not
             * delivered, answered "subscribed", the contact gets "from" */
            actions = SUBA_REPLY_SUBSCRIBED;
            next = state == SUB_NONE ? SUB_FROM : state == SUB_NONE_OUT ? SUB_FROM_OUT : SUB_BOTH;
            new_approved = 0;
        } else if (type == SUB_SUBSCRIBE && sub_has_from(state)) {
            /* §A.3.1 [2]: already subscribed: answer, do not deliver */
            actions |= SUBA_REPLY_SUBSCRIBED;
        } else if (type == SUB_UNSUBSCRIBE && next != state) {
            /* §A.3.2: a state change is answered with "unsubscribed" */
            actions |= SUBA_REPLY_UNSUBSCRIBED;
        }
    }
    if (!preapprovable(next)) new_approved = 0; /* meaningless once the contact has or asks for "from" */
    if (next != state) actions |= SUBA_CHANGED;
    if (new_approved != approved) actions |= SUBA_APPROVAL_CHANGED;
    if (!sub_has_from(state) && sub_has_from(next)) actions |= SUBA_SEND_PRESENCE;
    if (sub_has_from(state) && !sub_has_from(next)) actions |= SUBA_SEND_UNAVAILABLE;
    out->state = next;
    out->approved = new_approved;
    out->actions = actions;
    return 0;
}

static const char *const names[SUB_STATE_COUNT] = {
    "none", "none+out", "none+in", "none+out+in", "to", "to+in", "from", "from+out", "both",
};

const char *sub_state_name(enum sub_state s) { return (unsigned)s < SUB_STATE_COUNT ? names[s] : "?"; }

int sub_state_parse(const char *name)
{
    for (int i = 0; i < SUB_STATE_COUNT; i++)
        if (strcmp(names[i], name) == 0) return i;
    return -1;
}

int sub_has_to(enum sub_state s) { return s == SUB_TO || s == SUB_TO_IN || s == SUB_BOTH; }
int sub_has_from(enum sub_state s) { return s == SUB_FROM || s == SUB_FROM_OUT || s == SUB_BOTH; }
int sub_pending_out(enum sub_state s) { return s == SUB_NONE_OUT || s == SUB_NONE_OUT_IN || s == SUB_FROM_OUT; }
int sub_pending_in(enum sub_state s) { return s == SUB_NONE_IN || s == SUB_NONE_OUT_IN || s == SUB_TO_IN; }

const char *sub_attr(enum sub_state s)
{
    if (sub_has_to(s)) return sub_has_from(s) ? "both" : "to";
    return sub_has_from(s) ? "from" : "none";
}

enum sub_state sub_state_make(int to, int from, int pending_out, int pending_in)
{
    /* a pending request cannot coexist with the subscription it asks for */
    if (to && from) return SUB_BOTH;
    if (to) return pending_in ? SUB_TO_IN : SUB_TO;
    if (from) return pending_out ? SUB_FROM_OUT : SUB_FROM;
    if (pending_out) return pending_in ? SUB_NONE_OUT_IN : SUB_NONE_OUT;
    return pending_in ? SUB_NONE_IN : SUB_NONE;
}

static const char *const type_names[SUB_TYPE_COUNT] = { "subscribe", "subscribed", "unsubscribe", "unsubscribed" };

int sub_type_parse(const char *type)
{
    for (int i = 0; type && i < SUB_TYPE_COUNT; i++)
        if (strcmp(type_names[i], type) == 0) return i;
    return -1;
}

const char *sub_type_name(enum sub_type t) { return (unsigned)t < SUB_TYPE_COUNT ? type_names[t] : "?"; }
