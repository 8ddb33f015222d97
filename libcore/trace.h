/* trace.h - the per-step stanza trace (DESIGN §2, §5; xmppd-trace(7)).
 *
 * Whether a stanza is traced is decided once, where it enters (listen for
 * client stanzas, the creating daemon otherwise), and travels in the
 * record header: MSG_F_TRACED and a 64-bit trace id. Every daemon then
 * writes one line per step it handles, in one format:
 *
 *   trace id=<16 hex> step=<N> daemon=<role> instance=<name> kind=<kind>
 *   type=<type> from=<jid> to=<jid> action=<decision>[ cause=<16 hex>]
 *   [ body=<escaped>]
 *
 * (one line), to its log at notice level and to a ZeroMQ PUB socket bound
 * at trace_endpoint (xmppd.conf(5)), which `xmppctl trace` reads: that
 * stream stays complete when journald rate-limits the log.
 *
 * The rules (up to TRACE_MAX_RULES per daemon) are set at run time with
 * the built-in control command `trace on|off [TARGET] [bodies]`. With no
 * rule, trace_active() is one predictable branch and nothing else runs. */
#ifndef XMPPD_TRACE_H
#define XMPPD_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include "msg.h"

#define TRACE_MAX_RULES 32

enum trace_rule_kind {
    TRACE_ALL = 0,    /* every stanza */
    TRACE_DOMAIN = 1, /* from or to a JID of this domain */
    TRACE_BARE = 2,   /* from or to this bare JID or one of its resources */
    TRACE_FULL = 3,   /* from or to exactly this full JID */
};

/* trace_match() result bits. */
#define TRACE_MATCH 1  /* a rule matches */
#define TRACE_BODIES 2 /* ... and one matching rule asked for message bodies */

/* Number of rules in force; read it through trace_active(). */
extern unsigned trace_nrules;

/* 1 when any rule is in force: the only test on the untraced path. */
static inline int trace_active(void) { return __builtin_expect(trace_nrules != 0, 0); }

struct daemon;
struct ctl_req;

/* Bind the PUB socket at trace_endpoint for this daemon (logged and
 * skipped on failure: lines then go to the log only); remember the
 * daemon's role and instance for the lines. */
void trace_init(struct daemon *d);
/* Close the PUB socket (before the ZeroMQ context is terminated). */
void trace_close(void);

/* Classify and normalize a rule target: "all" (or NULL/"") is TRACE_ALL,
 * else jid_normalize()d: with a resource TRACE_FULL, with a local part
 * TRACE_BARE, else TRACE_DOMAIN. Writes the normalized target into norm;
 * returns the kind, or -1 if the target is not a valid JID or domain. */
int trace_target_parse(const char *target, char *norm, size_t size);
/* Add (or update the bodies flag of) a rule: 0 added, 1 updated, -1
 * invalid target, -2 table full. */
int trace_rule_add(const char *target, int bodies);
/* Remove a rule: 0 removed, 1 there was none, -1 invalid target. */
int trace_rule_del(const char *target);
/* Remove every rule. */
void trace_rules_clear(void);
/* Rules as "rule\ttarget\tbodies" rows (appended to out, one per line). */
struct buf;
void trace_rules_list(struct buf *out);

/* Match normalized JIDs (NULL or "" for none) against the rules: a
 * stanza matches when from or to equals a FULL rule's JID, has a BARE
 * rule's JID as its bare part, or has a DOMAIN rule's domain. Returns
 * TRACE_MATCH|TRACE_BODIES bits, 0 if no rule matches. */
int trace_match(const char *from, const char *to);
/* The same with `to` as the client wrote it (listen, step 1): normalized
 * by a cheap exact path for ASCII (lowercase the local and domain parts,
 * drop a final dot: what RFC 6122 stringprep does to ASCII) and
 * jid_normalize() only for non-ASCII input, because stringprep costs
 * about 1.8 us per JID, a quarter of a message's whole cost. */
int trace_match_raw(const char *from, const char *to, size_t to_len);
/* A new trace id: random, never 0. */
uint64_t trace_new_id(void);
/* The trace id of a record if it is traced, else 0 (a cause for trace_line). */
static inline uint64_t trace_id_of(const struct msg *m) { return (m->flags & MSG_F_TRACED) ? m->trace : 0; }

/* Write one trace line (log at notice + the trace stream). from, to:
 * NUL-terminated (NULL or "" print as "-"); cause: the id of the stanza
 * that caused this one, 0 if none; body: the stanza, printed escaped only
 * when a rule matching from or to asked for bodies (NULL: none). */
void trace_line(unsigned step, unsigned kind, unsigned stype, const char *from, const char *to, uint64_t id,
                uint64_t cause, const struct msg_str *body, const char *action_fmt, ...)
    __attribute__((format(printf, 9, 10)));
/* trace_line for a routed record (f0 from, f1 to, f4 body, m->trace). */
void trace_msg(unsigned step, const struct msg *m, uint64_t cause, const char *action_fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Write s (n bytes) escaped as in trace lines (bytes <= 0x20, 0x7f and
 * '\\' as \xHH) into out (NUL-terminated, cut to fit); returns out. */
char *trace_escape(const char *s, size_t n, char *out, size_t size);

/* The built-in control command: `trace`, `trace on [TARGET] [bodies]`,
 * `trace off [TARGET]`, `trace off all`. */
void trace_ctl(struct daemon *d, int argc, char **argv, struct ctl_req *r);
/* Lines written since start (for `xmppctl stats`). */
uint64_t trace_lines_written(void);

#endif
