/* sm_accounts.c - the accounts of this shard (DESIGN §4): SCRAM-SHA-1 and
 * SCRAM-SHA-256 verifiers per account, never a password; the verifier
 * lookup c2s asks for at login, with deterministic fake verifiers for
 * unknown users so a failed login does not tell whether the account
 * exists; the account commands of xmppctl; and the XEP-0077 changes c2s
 * sends (ACCOUNT_CHANGE: c2s computed the verifiers, sm never sees a
 * password), written by the same code as the commands.
 *
 * accounts.tdb holds, per bare JID, a versioned text record:
 *   xmppd-account 1\n gen N\n created T\n SCRAM-SHA-1$...\n SCRAM-SHA-256$...\n
 * "gen" is a generation number drawn from a per-shard counter, so data
 * other stores keep per account can never be inherited by a later account
 * of the same name. Keys without '@' are the shard's own metadata. */
#include "config.h"
#include "sm.h"
#include "jid.h"
#include "log.h"
#include "scram.h"
#include "stanza.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define META_SECRET "#meta:secret"
#define META_GEN "#meta:gen"
#define RECORD_MAGIC "xmppd-account 1\n"

/* Read the shard secret (for fake verifiers), or make and store one. */
static int load_secret(struct sm *sm)
{
    struct buf v = { 0 };
    int rc = store_get(sm->accounts, META_SECRET, strlen(META_SECRET), &v);
    if (rc == 1 && v.len == sizeof sm->secret) {
        memcpy(sm->secret, v.data, sizeof sm->secret);
    } else if (rc == 0) {
        if (util_random(sm->secret, sizeof sm->secret) < 0 ||
            store_put(sm->accounts, META_SECRET, strlen(META_SECRET), sm->secret, sizeof sm->secret, NULL, NULL) < 0 ||
            store_commit(sm->accounts) < 0)
            rc = -1;
    } else {
        rc = -1;
    }
    buf_free(&v);
    if (rc < 0) log_err("cannot read or create the shard secret in %s", store_path(sm->accounts));
    return rc < 0 ? -1 : 0;
}

int sm_accounts_open(struct sm *sm)
{
    sm->accounts = sm_store_open(sm, "accounts.tdb");
    if (!sm->accounts) return -1;
    return load_secret(sm);
}

void sm_accounts_close(struct sm *sm)
{
    store_close(sm->accounts);
    sm->accounts = NULL;
}

int sm_account_exists(struct sm *sm, const char *bare, size_t len)
{
    struct buf v = { 0 };
    int rc = store_get(sm->accounts, bare, len, &v);
    buf_free(&v);
    return rc;
}

/* The authPassword lines of a stored record (after its header lines). */
static const char *record_verifiers(const struct buf *rec)
{
    if (rec->len < sizeof RECORD_MAGIC - 1 || memcmp(rec->data, RECORD_MAGIC, sizeof RECORD_MAGIC - 1) != 0)
        return NULL;
    const char *p = buf_cstr((struct buf *)rec);
    const char *v = strstr(p, "\nSCRAM-");
    return v ? v + 1 : NULL;
}

void sm_auth_lookup(struct sm *sm, const struct msg *m)
{
    char bare[JID_STR_MAX], origin[PEER_NAME_MAX];
    struct buf rec = { 0 }, lines = { 0 };
    sm->n.auth_lookups++;
    if (!msg_str(m, 0, bare, sizeof bare) || !msg_str(m, 3, origin, sizeof origin)) goto out;
    const char *verifiers = NULL;
    if (strchr(bare, '@') && store_get(sm->accounts, bare, strlen(bare), &rec) == 1)
        verifiers = record_verifiers(&rec);
    if (verifiers) {
        buf_adds(&lines, verifiers);
    } else {
        /* unknown user: fake verifiers, indistinguishable to the client */
        struct scram_verifier fake[SCRAM_MECH_COUNT];
        char line[SCRAM_AUTHPW_MAX];
        if (scram_fake(sm->secret, sizeof sm->secret, bare, sm->d->conf.scram_iterations, fake) < 0) goto out;
        for (int i = 0; i < SCRAM_MECH_COUNT; i++) {
            if (scram_to_authpassword(&fake[i], line, sizeof line) < 0) goto out;
            buf_adds(&lines, line);
            buf_adds(&lines, "\n");
        }
    }
    struct msg r;
    msg_init(&r, MSG_AUTH_RESULT);
    r.id = m->id;
    r.trace = m->trace;
    r.flags = m->flags & MSG_F_TRACED;
    msg_set(&r, 1, bare);
    msg_set(&r, 2, origin);
    msg_set(&r, 3, sm->d->instance);
    msg_setn(&r, 4, lines.data, lines.len);
    ipc_send(sm->router, NULL, &r);
out:
    buf_free(&rec);
    buf_free(&lines);
}

/* ---------------- control commands ---------------- */

/* Check the verifier lines xmppctl computed: exactly one per mechanism. */
static int valid_verifiers(const char *input, size_t len)
{
    int seen[SCRAM_MECH_COUNT] = { 0 };
    const char *p = input, *end = input + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        struct scram_verifier v;
        if (n > 0) {
            if (scram_from_authpassword(p, n, &v) < 0 || seen[v.mech]) return 0;
            seen[v.mech] = 1;
        }
        p += n + 1;
    }
    for (int i = 0; i < SCRAM_MECH_COUNT; i++)
        if (!seen[i]) return 0;
    return 1;
}

int sm_ctl_user_jid(struct sm *sm, const char *arg, char *bare, size_t size, struct ctl_req *r)
{
    struct jid j;
    if (jid_parse(arg, strlen(arg), &j) < 0 || !j.has_local || j.has_resource) {
        ctl_fail(r, 2, "'%s' is not a user JID (user@domain)", arg);
        return -1;
    }
    if (!conf_host(&sm->d->conf, j.domain, strlen(j.domain))) {
        ctl_fail(r, 1, "%s is not a domain this server serves", j.domain);
        return -1;
    }
    jid_format_bare(&j, bare, size);
    if (jid_shard(bare, strlen(bare), sm->d->conf.sm_shards) != sm->shard) {
        ctl_fail(r, 1, "%s belongs to another shard than %s", bare, sm->d->instance);
        return -1;
    }
    return 0;
}

static void reply_after_commit(void *arg, int ok)
{
    struct ctl_req *r = arg;
    if (!ok) ctl_fail(r, 1, "storage error: see the sm log");
    ctl_finish(r);
}

static unsigned long long next_generation(struct sm *sm)
{
    struct buf v = { 0 };
    unsigned long long gen = 0;
    if (store_get(sm->accounts, META_GEN, strlen(META_GEN), &v) == 1) gen = strtoull(buf_cstr(&v), NULL, 10);
    gen++;
    buf_clear(&v);
    buf_addf(&v, "%llu", gen);
    store_put(sm->accounts, META_GEN, strlen(META_GEN), v.data, v.len, NULL, NULL);
    buf_free(&v);
    return gen;
}

static int write_account(struct sm *sm, const char *bare, unsigned long long gen, long created,
                         const char *verifiers, size_t vlen, store_done_cb done, void *arg)
{
    struct buf rec = { 0 };
    buf_adds(&rec, RECORD_MAGIC);
    buf_addf(&rec, "gen %llu\ncreated %ld\n", gen, created);
    buf_add(&rec, verifiers, vlen);
    if (vlen && verifiers[vlen - 1] != '\n') buf_adds(&rec, "\n");
    int rc = rec.oom ? -1 : store_put(sm->accounts, bare, strlen(bare), rec.data, rec.len, done, arg);
    buf_free(&rec);
    return rc;
}

/* What account_set and account_remove did. */
enum { ACCT_ERROR = -1, ACCT_DONE = 0, ACCT_EXISTS = 1, ACCT_MISSING = 2 };

/* The one way an account is written, for `xmppctl register/passwd` and
 * for XEP-0077 (sm_account_change): create a new account (create=1) or
 * give an existing one new verifiers (checked by the caller). done(arg,
 * ok) runs after the commit, and only when ACCT_DONE is returned. */
static int account_set(struct sm *sm, const char *bare, int create, const char *verifiers, size_t vlen,
                       store_done_cb done, void *arg)
{
    struct buf old = { 0 };
    unsigned long long gen = 0;
    long created = (long)time(NULL);
    int rc = ACCT_ERROR;
    int exists = store_get(sm->accounts, bare, strlen(bare), &old);
    if (exists < 0) goto out;
    if (create && exists) {
        rc = ACCT_EXISTS;
        goto out;
    }
    if (!create && !exists) {
        rc = ACCT_MISSING;
        goto out;
    }
    if (!create) sscanf(buf_cstr(&old), RECORD_MAGIC "gen %llu\ncreated %ld", &gen, &created);
    else gen = next_generation(sm);
    if (write_account(sm, bare, gen, created, verifiers, vlen, done, arg) < 0) goto out;
    log_notice("account %s %s (generation %llu)", bare, create ? "registered" : "password changed", gen);
    if (create) sm_hook_event(sm, XM_HOOK_USER_CREATED, bare);
    rc = ACCT_DONE;
out:
    buf_free(&old);
    return rc;
}

/* The one way an account is removed (`xmppctl unregister`, XEP-0077):
 * its sessions end and every module deletes its data of the user in this
 * same turn (one transaction per store, committed with the account's
 * removal); done(arg, ok) runs after the commit, only on ACCT_DONE. */
static int account_remove(struct sm *sm, const char *bare, store_done_cb done, void *arg)
{
    int exists = sm_account_exists(sm, bare, strlen(bare));
    if (exists <= 0) return exists < 0 ? ACCT_ERROR : ACCT_MISSING;
    if (store_del(sm->accounts, bare, strlen(bare), done, arg) < 0) return ACCT_ERROR;
    sm_kick_user(sm, bare, STE_NOT_AUTHORIZED, "account removed");
    sm_hook_event(sm, XM_HOOK_USER_REMOVED, bare);
    log_notice("account %s removed", bare);
    return ACCT_DONE;
}

static int cmd_register(struct sm *sm, int create, const char *arg, const char *input, size_t len,
                        struct ctl_req *r)
{
    char bare[JID_STR_MAX];
    if (sm_ctl_user_jid(sm, arg, bare, sizeof bare, r) < 0) return 0;
    if (!valid_verifiers(input, len)) {
        ctl_fail(r, 2, "expected SCRAM-SHA-1 and SCRAM-SHA-256 verifiers on input");
        return 0;
    }
    switch (account_set(sm, bare, create, input, len, reply_after_commit, r)) {
    case ACCT_DONE: return 1; /* answered after the commit */
    case ACCT_EXISTS: ctl_fail(r, 1, "%s already exists", bare); break;
    case ACCT_MISSING: ctl_fail(r, 1, "%s does not exist", bare); break;
    default: ctl_fail(r, 1, "storage error writing %s", bare); break;
    }
    return 0;
}

static int cmd_unregister(struct sm *sm, const char *arg, struct ctl_req *r)
{
    char bare[JID_STR_MAX];
    if (sm_ctl_user_jid(sm, arg, bare, sizeof bare, r) < 0) return 0;
    switch (account_remove(sm, bare, reply_after_commit, r)) {
    case ACCT_DONE: return 1;
    case ACCT_MISSING: ctl_fail(r, 1, "%s does not exist", bare); break;
    default: ctl_fail(r, 1, "storage error deleting %s", bare); break;
    }
    return 0;
}

/* ---------------- XEP-0077 changes from c2s (c2s_register.c) ---------------- */

/* One ACCOUNT_CHANGE waiting for its commit. */
struct change {
    uint64_t conn;
    char origin[PEER_NAME_MAX];
    char bare[];
};

static void send_account_result(struct sm *sm, uint64_t conn, const char *origin, const char *bare, size_t blen,
                                unsigned cond)
{
    struct msg r;
    msg_init(&r, MSG_ACCOUNT_RESULT);
    r.id = conn;
    r.num = cond;
    msg_setn(&r, 1, bare, blen);
    msg_set(&r, 2, origin);
    msg_set(&r, 3, sm->d->instance);
    ipc_send(sm->router, NULL, &r);
}

static void change_committed(void *arg, int ok)
{
    struct change *ch = arg;
    if (!ok) log_err("account %s: the change from %s was not committed", ch->bare, ch->origin);
    send_account_result(&SM, ch->conn, ch->origin, ch->bare, strlen(ch->bare),
                        ok ? SE_NONE : SE_INTERNAL_SERVER_ERROR);
    free(ch);
}

/* The bare JID of an ACCOUNT_CHANGE: a user of a domain served here whose
 * account this shard holds, already normalized; SE_NONE or a condition. */
static unsigned change_jid(struct sm *sm, const struct msg *m, char *bare, size_t size)
{
    struct jid *j = malloc(sizeof *j);
    unsigned cond = SE_JID_MALFORMED;
    if (!j) return SE_INTERNAL_SERVER_ERROR;
    if (jid_parse(m->f[0].p, m->f[0].n, j) < 0 || !j->has_local || j->has_resource ||
        jid_format_bare(j, bare, size) < 0 || !msg_eq(m, 0, bare))
        goto out;
    cond = SE_SERVICE_UNAVAILABLE;
    if (!conf_host(&sm->d->conf, j->domain, strlen(j->domain)) ||
        jid_shard(bare, strlen(bare), sm->d->conf.sm_shards) != sm->shard)
        goto out;
    cond = SE_NONE;
out:
    free(j);
    return cond;
}

void sm_account_change(struct sm *sm, const struct msg *m)
{
    char bare[JID_STR_MAX], origin[PEER_NAME_MAX];
    unsigned cond;
    int rc = ACCT_ERROR;
    if (!msg_str(m, 3, origin, sizeof origin) || !origin[0]) return; /* no one to answer */
    if ((cond = change_jid(sm, m, bare, sizeof bare)) != SE_NONE) {
        log_warn("ACCOUNT_CHANGE from %s for '%.*s' refused: %s", origin, (int)m->f[0].n, m->f[0].p,
                 stanza_error_name(cond));
        send_account_result(sm, m->id, origin, m->f[0].p, m->f[0].n, cond);
        return;
    }
    if ((m->num == ACCOUNT_CREATE || m->num == ACCOUNT_PASSWD) && !valid_verifiers(m->f[4].p, m->f[4].n)) {
        log_warn("ACCOUNT_CHANGE from %s for %s without both verifiers refused", origin, bare);
        send_account_result(sm, m->id, origin, bare, strlen(bare), SE_BAD_REQUEST);
        return;
    }
    struct change *ch = malloc(sizeof *ch + strlen(bare) + 1);
    if (!ch) {
        send_account_result(sm, m->id, origin, bare, strlen(bare), SE_RESOURCE_CONSTRAINT);
        return;
    }
    ch->conn = m->id;
    memcpy(ch->origin, origin, sizeof ch->origin);
    strcpy(ch->bare, bare);
    switch (m->num) {
    case ACCOUNT_CREATE:
    case ACCOUNT_PASSWD:
        rc = account_set(sm, bare, m->num == ACCOUNT_CREATE, m->f[4].p, m->f[4].n, change_committed, ch);
        break;
    case ACCOUNT_REMOVE:
        rc = account_remove(sm, bare, change_committed, ch);
        break;
    default:
        log_warn("ACCOUNT_CHANGE from %s with unknown operation %u refused", origin, m->num);
        cond = SE_BAD_REQUEST;
        break;
    }
    if (rc == ACCT_DONE) return; /* answered by change_committed */
    free(ch);
    if (cond == SE_NONE) {
        /* XEP-0077: conflict for a taken username (§3.1); a password
         * change or removal for an account that is gone (§3.2) */
        cond = rc == ACCT_EXISTS ? SE_CONFLICT : rc == ACCT_MISSING ? SE_REGISTRATION_REQUIRED
                                                                    : SE_INTERNAL_SERVER_ERROR;
    }
    send_account_result(sm, m->id, origin, bare, strlen(bare), cond);
}

struct list_ctx {
    struct ctl_req *r;
    const char *domain;
};

static int list_one(const char *key, size_t klen, const char *val, size_t vlen, void *arg)
{
    struct list_ctx *c = arg;
    (void)val; (void)vlen;
    const char *at = memchr(key, '@', klen);
    if (!at) return 0; /* metadata */
    if (c->domain) {
        size_t dl = strlen(c->domain);
        if ((size_t)(key + klen - (at + 1)) != dl || memcmp(at + 1, c->domain, dl) != 0) return 0;
    }
    ctl_row(c->r, "%.*s", (int)klen, key);
    return 0;
}

/* ---------------- restore (sm.c drives it) ---------------- */

/* The generation of bare's account: 1 found, 0 no account, -1 error. */
static int account_generation(struct sm *sm, const char *bare, unsigned long long *gen)
{
    struct buf rec = { 0 };
    long created;
    *gen = 0;
    int rc = store_get(sm->accounts, bare, strlen(bare), &rec);
    if (rc == 1 && sscanf(buf_cstr(&rec), RECORD_MAGIC "gen %llu\ncreated %ld", gen, &created) != 2) *gen = 0;
    buf_free(&rec);
    return rc;
}

static unsigned long long generation_counter(struct sm *sm)
{
    struct buf v = { 0 };
    unsigned long long gen = 0;
    if (store_get(sm->accounts, META_GEN, strlen(META_GEN), &v) == 1) gen = strtoull(buf_cstr(&v), NULL, 10);
    buf_free(&v);
    return gen;
}

static void note_free(struct sm_restore_note *note)
{
    for (size_t i = 0; i < note->n; i++) free(note->bare[i]);
    free(note->bare);
    free(note->gens);
    memset(note, 0, sizeof *note);
}

int sm_accounts_restore_begin(struct sm *sm, struct sm_restore_note *note)
{
    memset(note, 0, sizeof *note);
    note->gen = generation_counter(sm);
    size_t n = sm->users.count;
    void **users = calloc(n ? n : 1, sizeof *users);
    note->bare = calloc(n ? n : 1, sizeof *note->bare);
    note->gens = calloc(n ? n : 1, sizeof *note->gens);
    if (!users || !note->bare || !note->gens) goto fail;
    n = hmap_values(&sm->users, users, n);
    for (size_t i = 0; i < n; i++) {
        const struct sm_user *u = users[i];
        note->bare[i] = strdup(u->bare);
        if (!note->bare[i]) goto fail;
        note->n = i + 1;
        if (account_generation(sm, u->bare, &note->gens[i]) < 0) goto fail;
    }
    free(users);
    return 0;
fail:
    free(users);
    note_free(note);
    return -1;
}

int sm_accounts_restore_fixup(struct sm *sm, const struct sm_restore_note *note)
{
    /* generations are never given out twice, even across a restore: data
     * other stores might keep under an old one stays unreachable */
    if (generation_counter(sm) >= note->gen) return 0;
    struct buf v = { 0 };
    buf_addf(&v, "%llu", note->gen);
    int rc = v.oom ? -1 : store_put(sm->accounts, META_GEN, strlen(META_GEN), v.data, v.len, NULL, NULL);
    buf_free(&v);
    return rc;
}

unsigned sm_accounts_restore_done(struct sm *sm, struct sm_restore_note *note, int committed)
{
    unsigned ended = 0;
    if (committed) {
        if (load_secret(sm) < 0) log_err("restore: the shard secret could not be read back");
        for (size_t i = 0; i < note->n; i++) {
            unsigned long long gen;
            int rc = account_generation(sm, note->bare[i], &gen);
            if (rc < 0 || (rc == 1 && (gen == note->gens[i] || !note->gens[i]))) continue;
            log_notice("restore: account %s is %s; its sessions end", note->bare[i],
                       rc == 0 ? "not in the backup" : "another one in the backup (other generation)");
            sm_kick_user(sm, note->bare[i], STE_NOT_AUTHORIZED, "account removed by a restore");
            ended++;
        }
    }
    note_free(note);
    return ended;
}

int sm_accounts_ctl(struct sm *sm, int argc, char **argv, const char *input, size_t input_len, struct ctl_req *r)
{
    if (strcmp(argv[0], "register") == 0 || strcmp(argv[0], "passwd") == 0) {
        if (argc != 2) {
            ctl_fail(r, 2, "usage: %s JID (verifiers on input)", argv[0]);
            return 0;
        }
        return cmd_register(sm, argv[0][0] == 'r', argv[1], input, input_len, r);
    }
    if (strcmp(argv[0], "unregister") == 0) {
        if (argc != 2) {
            ctl_fail(r, 2, "usage: unregister JID");
            return 0;
        }
        return cmd_unregister(sm, argv[1], r);
    }
    if (strcmp(argv[0], "users") == 0) {
        struct list_ctx c = { r, argc > 1 ? argv[1] : NULL };
        ctl_cols(r, "jid");
        if (store_each(sm->accounts, list_one, &c) < 0) ctl_fail(r, 1, "storage error listing accounts");
        return 0;
    }
    if (strcmp(argv[0], "check-store") == 0) {
        ctl_cols(r, "instance\tfile\tresult");
        int ok = store_check(sm->accounts) == 0;
        ctl_row(r, "%s\taccounts.tdb\t%s", sm->d->instance, ok ? "ok" : "damaged");
        if (!ok) r->status = 1;
        return 0;
    }
    return -1;
}
