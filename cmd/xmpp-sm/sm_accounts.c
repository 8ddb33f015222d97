/* sm_accounts.c - the accounts of this shard (DESIGN §4): SCRAM-SHA-1 and
 * SCRAM-SHA-256 verifiers per account, never a password; the verifier
 * lookup c2s asks for at login, with deterministic fake verifiers for
 * unknown users so a failed login does not tell whether the account
 * exists; and the account commands of xmppctl.
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
                         const char *verifiers, size_t vlen, struct ctl_req *r)
{
    struct buf rec = { 0 };
    buf_adds(&rec, RECORD_MAGIC);
    buf_addf(&rec, "gen %llu\ncreated %ld\n", gen, created);
    buf_add(&rec, verifiers, vlen);
    if (vlen && verifiers[vlen - 1] != '\n') buf_adds(&rec, "\n");
    int rc = rec.oom ? -1 : store_put(sm->accounts, bare, strlen(bare), rec.data, rec.len, reply_after_commit, r);
    buf_free(&rec);
    return rc;
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
    struct buf old = { 0 };
    int exists = store_get(sm->accounts, bare, strlen(bare), &old);
    unsigned long long gen = 0;
    long created = (long)time(NULL);
    if (exists < 0) {
        ctl_fail(r, 1, "storage error reading %s", bare);
    } else if (create && exists) {
        ctl_fail(r, 1, "%s already exists", bare);
    } else if (!create && !exists) {
        ctl_fail(r, 1, "%s does not exist", bare);
    } else {
        if (!create) sscanf(buf_cstr(&old), RECORD_MAGIC "gen %llu\ncreated %ld", &gen, &created);
        else gen = next_generation(sm);
        buf_free(&old);
        if (write_account(sm, bare, gen, created, input, len, r) < 0) {
            ctl_fail(r, 1, "storage error writing %s", bare);
            return 0;
        }
        log_notice("account %s %s (generation %llu)", bare, create ? "registered" : "password changed", gen);
        if (create) sm_hook_event(sm, XM_HOOK_USER_CREATED, bare);
        return 1; /* answered after the commit */
    }
    buf_free(&old);
    return 0;
}

static int cmd_unregister(struct sm *sm, const char *arg, struct ctl_req *r)
{
    char bare[JID_STR_MAX];
    if (sm_ctl_user_jid(sm, arg, bare, sizeof bare, r) < 0) return 0;
    int exists = sm_account_exists(sm, bare, strlen(bare));
    if (exists <= 0) {
        ctl_fail(r, 1, exists < 0 ? "storage error reading %s" : "%s does not exist", bare);
        return 0;
    }
    if (store_del(sm->accounts, bare, strlen(bare), reply_after_commit, r) < 0) {
        ctl_fail(r, 1, "storage error deleting %s", bare);
        return 0;
    }
    sm_kick_user(sm, bare, STE_NOT_AUTHORIZED, "account removed");
    /* every module deletes its data of the user in this same turn: one
     * transaction per store, committed with the account's removal */
    sm_hook_event(sm, XM_HOOK_USER_REMOVED, bare);
    log_notice("account %s removed", bare);
    return 1;
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
