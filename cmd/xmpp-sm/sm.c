/* sm.c - xmpp-sm, the session manager of one shard (sm-K): connects to
 * the router, binds its domains, dispatches records to the accounts and
 * session code, and after a restart holds stanzas until every c2s has
 * re-announced its sessions (DESIGN §3), so nothing is delivered by the
 * rules for an offline user to someone who is in fact online. */
#include "config.h"
#include "sm.h"
#include "sm_roster.h"
#include "log.h"
#include "stanza.h"
#include "trace.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define RESYNC_QUIET_MS 300   /* no c2s announced itself: nothing to wait for */
#define RESYNC_MAX_MS 5000    /* a c2s that does not finish is not waited for */
#define HOLD_MAX 100000

struct sm SM;

/* ---------------- resync after a start ---------------- */

static void release_held(struct sm *sm)
{
    struct held *h = sm->held;
    sm->held = NULL;
    sm->nheld = 0;
    sm->held_tail = &sm->held;
    sm->resyncing = 0;
    if (sm->resync_timer) loop_timer_cancel(sm->d->loop, sm->resync_timer);
    sm->resync_timer = NULL;
    unsigned n = 0;
    while (h) {
        struct held *next = h->next;
        struct msg m;
        size_t used;
        const char *err;
        if (msg_decode(h->rec.data, h->rec.len, &m, &used, &err) == 0) {
            if (m.type == MSG_SESSION_END) sm_session_end(sm, &m);
            else sm_stanza(sm, &m);
        }
        buf_free(&h->rec);
        free(h);
        h = next;
        n++;
    }
    log_info("sessions re-learned; %u held stanzas released", n);
}

static void resync_timeout(loop_t *loop, void *arg)
{
    struct sm *sm = arg;
    (void)loop;
    sm->resync_timer = NULL;
    if (!sm->resyncing) return;
    if (sm->nexpect) log_warn("resync: %u c2s instance(s) did not finish re-announcing; going on", sm->nexpect);
    release_held(sm);
}

static void resync_quiet(loop_t *loop, void *arg)
{
    struct sm *sm = arg;
    (void)loop;
    if (sm->resyncing && sm->nexpect == 0) release_held(sm);
}

static void expect_c2s(struct sm *sm, const char *name)
{
    if (!sm->resyncing) return;
    for (unsigned i = 0; i < sm->nexpect; i++)
        if (strcmp(sm->expect[i], name) == 0) return;
    if (sm->nexpect < sizeof sm->expect / sizeof *sm->expect)
        snprintf(sm->expect[sm->nexpect++], PEER_NAME_MAX, "%s", name);
}

static void c2s_done(struct sm *sm, const char *name)
{
    for (unsigned i = 0; i < sm->nexpect; i++) {
        if (strcmp(sm->expect[i], name) != 0) continue;
        memmove(sm->expect[i], sm->expect[i + 1], (sm->nexpect - i - 1) * PEER_NAME_MAX);
        sm->nexpect--;
        break;
    }
    if (sm->resyncing && sm->nexpect == 0) release_held(sm);
}

static void hold(struct sm *sm, const struct msg *m)
{
    struct held *h = calloc(1, sizeof *h);
    if (!h || sm->nheld >= HOLD_MAX || msg_encode(m, &h->rec) < 0) {
        if (h) buf_free(&h->rec);
        free(h);
        if (m->flags & MSG_F_TRACED)
            trace_msg(m->flags & MSG_F_INBOUND ? 5 : 4, m, 0, "error: resource-constraint (too many held while resyncing)");
        sm_reply_error(sm, m, SE_RESOURCE_CONSTRAINT, NULL);
        return;
    }
    if (m->flags & MSG_F_TRACED)
        trace_msg(m->flags & MSG_F_INBOUND ? 5 : 4, m, 0, "held: %s is re-learning its sessions after a start",
                  sm->d->instance);
    sm->nheld++;
    *sm->held_tail = h;
    sm->held_tail = &h->next;
}

/* ---------------- the router link ---------------- */

static void bind_domains(struct sm *sm)
{
    for (size_t i = 0; i < sm->d->conf.n_hosts; i++) {
        struct msg m;
        msg_init(&m, MSG_ROUTE_BIND);
        m.num = sm->shard;
        msg_set(&m, 0, sm->d->conf.hosts[i].domain);
        ipc_send(sm->router, NULL, &m);
    }
}

static void router_up(void *arg, const struct peer_info *server, int restarted)
{
    struct sm *sm = arg;
    (void)server;
    bind_domains(sm);
    if (!restarted && !sm->resyncing) {
        /* first contact after our start: learn the sessions of every live c2s */
        sm->resyncing = 1;
        sm->resync_timer = loop_timer_add(sm->d->loop, RESYNC_MAX_MS, resync_timeout, sm);
        loop_timer_add(sm->d->loop, RESYNC_QUIET_MS, resync_quiet, sm);
        log_info("router up; re-learning sessions from the c2s instances");
    } else {
        log_notice("router restarted; domains bound again");
    }
}

static void router_down(void *arg, const struct peer_info *server)
{
    (void)arg;
    log_warn("router %s is down; records wait for it", server->name);
}

static void on_peer_record(struct sm *sm, const struct msg *m)
{
    char name[PEER_NAME_MAX];
    if (!msg_str(m, 0, name, sizeof name) || m->kind != ROLE_C2S) return;
    if (m->type == MSG_PEER_UP) {
        expect_c2s(sm, name);
    } else {
        c2s_done(sm, name);
        sm_sessions_of_c2s_gone(sm, name);
    }
}

static void on_record(ipc_t *ipc, const char *peer, const struct msg *m, void *arg)
{
    struct sm *sm = arg;
    (void)ipc; (void)peer;
    if (peer_client_handle(sm->link, m)) return;
    switch (m->type) {
    case MSG_PEER_UP:
    case MSG_PEER_DOWN:
        on_peer_record(sm, m);
        break;
    case MSG_STANZA:
        if (sm->resyncing) hold(sm, m);
        else sm_stanza(sm, m);
        break;
    case MSG_BOUNCE:
        sm_bounce(sm, m);
        break;
    case MSG_AUTH_LOOKUP:
        sm_auth_lookup(sm, m);
        break;
    case MSG_ACCOUNT_CHANGE:
        sm_account_change(sm, m);
        break;
    case MSG_MODULE_ASK:
        sm_modules_ask(sm, m);
        break;
    case MSG_MODULE_ANSWER:
        sm_modules_answer(sm, m);
        break;
    case MSG_SESSION_BIND:
        sm_session_bind(sm, m);
        break;
    case MSG_SESSION_END:
        /* held with the stanzas while resyncing: a session's last stanzas
         * must not find it already ended */
        if (sm->resyncing) hold(sm, m);
        else sm_session_end(sm, m);
        break;
    case MSG_RESYNC_DONE: {
        char name[PEER_NAME_MAX];
        if (msg_str(m, 3, name, sizeof name)) c2s_done(sm, name);
        break;
    }
    default:
        sm->n.dropped++;
        log_warn("unexpected %s record dropped", msg_type_name(m->type));
        break;
    }
}

/* ---------------- the shard's stores: backup and restore ---------------- */

store_t *sm_store_open(struct sm *sm, const char *file)
{
    char path[4096];
    if (sm->nstores >= SM_MAX_STORES) {
        log_err("more than %d stores", SM_MAX_STORES);
        return NULL;
    }
    snprintf(path, sizeof path, "%s/%s", sm->d->conf.state_dir, sm->d->instance);
    if (util_mkdir_p(path, 0700) < 0) {
        log_err("cannot create %s: %s", path, strerror(errno));
        return NULL;
    }
    snprintf(path, sizeof path, "%s/%s/%s", sm->d->conf.state_dir, sm->d->instance, file);
    store_t *s = store_open(sm->d->loop, path, sm->d->conf.tdb_nosync);
    if (s) sm->stores[sm->nstores++] = s;
    return s;
}

void sm_on_restore(struct sm *sm, void (*fn)(struct sm *sm))
{
    if (sm->nrestored < SM_MAX_STORES) sm->restored[sm->nrestored++] = fn;
    else log_err("more than %d restore hooks", SM_MAX_STORES);
}

static const char *store_file(const store_t *s)
{
    const char *p = store_path(s), *slash = strrchr(p, '/');
    return slash ? slash + 1 : p;
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

/* "backup|restore DIR SHARDS": DIR/<instance> into out. SHARDS is the
 * count xmppctl read in its configuration: users are placed by a hash
 * over it, so both sides must agree. -1 when r is failed. */
static int backup_dir(struct sm *sm, int argc, char **argv, char *out, size_t size, struct ctl_req *r)
{
    char *end;
    if (argc != 3 || !argv[2][0]) {
        ctl_fail(r, 2, "usage: %s DIR SHARDS", argv[0]);
        return -1;
    }
    unsigned long n = strtoul(argv[2], &end, 10);
    if (*end) {
        ctl_fail(r, 2, "usage: %s DIR SHARDS", argv[0]);
        return -1;
    }
    if (argv[1][0] != '/') {
        ctl_fail(r, 2, "%s: the directory must be given as an absolute path", argv[1]);
        return -1;
    }
    if (n != sm->d->conf.sm_shards) {
        ctl_fail(r, 1, "xmppctl counts %lu shards, this server runs with sm_shards = %u: give xmppctl the "
                 "server's configuration file", n, sm->d->conf.sm_shards);
        return -1;
    }
    if ((size_t)snprintf(out, size, "%s/%s", argv[1], sm->d->instance) >= size) {
        ctl_fail(r, 2, "%s: path too long", argv[1]);
        return -1;
    }
    return 0;
}

/* 1 if dir is the shard's own data directory: a backup there would
 * replace the live files under the open tdb, a restore read itself. */
static int is_own_dir(struct sm *sm, const char *dir)
{
    char own[4096];
    struct stat a, b;
    snprintf(own, sizeof own, "%s/%s", sm->d->conf.state_dir, sm->d->instance);
    return stat(dir, &a) == 0 && stat(own, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* backup DIR SHARDS: a consistent copy of every store in DIR/sm-K/. Each
 * file is copied whole between two turns of the loop, which waits: we are
 * the only writer of our files, so nothing can change them meanwhile. */
static void cmd_backup(struct sm *sm, int argc, char **argv, struct ctl_req *r)
{
    char dir[4096], dest[4352], err[1024];
    if (backup_dir(sm, argc, argv, dir, sizeof dir, r) < 0) return;
    if (util_mkdir_p(dir, 0700) < 0) {
        ctl_fail(r, 1, "cannot create %s: %s", dir, strerror(errno));
        return;
    }
    if (is_own_dir(sm, dir)) {
        ctl_fail(r, 1, "%s is the shard's own data directory", dir);
        return;
    }
    ctl_cols(r, "instance\tfile\trecords\tbytes\tms");
    for (unsigned i = 0; i < sm->nstores; i++) {
        struct store_copy info;
        snprintf(dest, sizeof dest, "%s/%s", dir, store_file(sm->stores[i]));
        if (store_backup(sm->stores[i], dest, &info, err, sizeof err) < 0) {
            log_err("backup to %s failed: %s", dir, err);
            ctl_fail(r, 1, "backup failed: %s", err);
            return;
        }
        log_notice("backup: %s: %llu records, %llu bytes copied to %s in %.1f ms", store_file(sm->stores[i]),
                   info.records, info.bytes, dest, info.ms);
        ctl_row(r, "%s\t%s/%s\t%llu\t%llu\t%.1f", sm->d->instance, sm->d->instance, store_file(sm->stores[i]),
                info.records, info.bytes, info.ms);
    }
}

/* restore-check DIR SHARDS: is there a sound copy of every store in
 * DIR/sm-K/ (tdb_check)? Changes nothing: xmppctl asks every shard this
 * before it asks any to restore. */
static void cmd_restore_check(struct sm *sm, int argc, char **argv, struct ctl_req *r)
{
    char dir[4096], src[4352], err[1024];
    if (backup_dir(sm, argc, argv, dir, sizeof dir, r) < 0) return;
    if (is_own_dir(sm, dir)) {
        ctl_fail(r, 1, "%s is the shard's own data directory", dir);
        return;
    }
    ctl_cols(r, "instance\tfile\trecords");
    for (unsigned i = 0; i < sm->nstores; i++) {
        unsigned long long records;
        snprintf(src, sizeof src, "%s/%s", dir, store_file(sm->stores[i]));
        if (store_check_file(src, &records, err, sizeof err) < 0) {
            ctl_fail(r, 1, "%s", err);
            return;
        }
        ctl_row(r, "%s\t%s/%s\t%llu", sm->d->instance, sm->d->instance, store_file(sm->stores[i]), records);
    }
}

/* restore DIR SHARDS: every store's contents replaced by its copy in
 * DIR/sm-K/, each in one transaction (all prepared before any commits);
 * answered after the commits. Sessions of accounts the restore removed
 * are ended. */
static void cmd_restore(struct sm *sm, int argc, char **argv, struct ctl_req *r)
{
    char dir[4096], src[SM_MAX_STORES][4352], err[1024] = "";
    struct store_copy info[SM_MAX_STORES];
    struct sm_restore_note note;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (backup_dir(sm, argc, argv, dir, sizeof dir, r) < 0) return;
    if (is_own_dir(sm, dir)) {
        ctl_fail(r, 1, "%s is the shard's own data directory", dir);
        return;
    }
    for (unsigned i = 0; i < sm->nstores; i++) {
        snprintf(src[i], sizeof src[i], "%s/%s", dir, store_file(sm->stores[i]));
        if (access(src[i], R_OK) < 0) {
            ctl_fail(r, 1, "%s: %s: the backup has no readable copy of this shard's %s", src[i], strerror(errno),
                     store_file(sm->stores[i]));
            return;
        }
    }
    if (sm_accounts_restore_begin(sm, &note) < 0) {
        ctl_fail(r, 1, "restore failed, nothing changed: cannot read the accounts of the users online");
        return;
    }
    unsigned begun = 0;
    int ok = 1;
    for (; begun < sm->nstores; begun++)
        if (store_replace_begin(sm->stores[begun], src[begun], &info[begun], err, sizeof err) < 0) {
            ok = 0;
            break;
        }
    if (ok && sm_accounts_restore_fixup(sm, &note) < 0) {
        ok = 0;
        snprintf(err, sizeof err, "cannot keep the generation counter of %s", store_path(sm->accounts));
    }
    for (unsigned i = 0; ok && i < begun; i++)
        if (store_prepare(sm->stores[i]) < 0) {
            ok = 0;
            snprintf(err, sizeof err, "cannot prepare the commit to %s", store_path(sm->stores[i]));
        }
    if (!ok) {
        for (unsigned i = 0; i < begun; i++) store_cancel(sm->stores[i]);
        sm_accounts_restore_done(sm, &note, 0);
        log_err("restore from %s failed, nothing changed: %s", dir, err);
        ctl_fail(r, 1, "restore failed, nothing changed: %s", err);
        return;
    }
    unsigned committed = 0;
    for (unsigned i = 0; i < begun; i++) committed += store_commit(sm->stores[i]) == 0;
    if (committed)
        for (unsigned i = 0; i < sm->nrestored; i++) sm->restored[i](sm);
    unsigned ended = sm_accounts_restore_done(sm, &note, committed > 0);
    double ms = ms_since(&t0);
    if (committed < begun) {
        /* after a successful prepare this takes a failing disk */
        log_err("restore from %s: only %u of %u files committed", dir, committed, begun);
        ctl_fail(r, 1, "restore from %s: only %u of %u files committed: see the log", dir, committed, begun);
        return;
    }
    ctl_cols(r, "instance\tfile\trecords\tms");
    for (unsigned i = 0; i < begun; i++) {
        log_notice("restore: %s: %llu records from %s", store_file(sm->stores[i]), info[i].records, src[i]);
        ctl_row(r, "%s\t%s/%s\t%llu\t%.1f", sm->d->instance, sm->d->instance, store_file(sm->stores[i]),
                info[i].records, ms);
    }
    log_notice("restore from %s done in %.1f ms; sessions of %u user(s) ended", dir, ms, ended);
    if (ended) ctl_fail(r, 0, "sessions of %u user(s) whose account is not in the backup were ended", ended);
}

/* ---------------- daemon ---------------- */

static int sm_init(struct daemon *d)
{
    struct sm *sm = &SM;
    sm->d = d;
    d->priv = sm;
    sm->held_tail = &sm->held;
    int k = daemon_instance_number(d->instance);
    if (k < 0 || (unsigned)k >= d->conf.sm_shards || strncmp(d->instance, "sm-", 3) != 0) {
        log_err("instance %s: sm instances are named sm-0 .. sm-%u (sm_shards = %u)", d->instance,
                d->conf.sm_shards - 1, d->conf.sm_shards);
        return -1;
    }
    sm->shard = (unsigned)k;
    if (sm_accounts_open(sm) < 0) return -1;
    if (sm_roster_open(sm) < 0) return -1; /* roster.tdb, offline.tdb */
    sm_on_restore(sm, sm_roster_forget_cache); /* cached rosters predate a restore */
    if (sm_modules_start(sm) < 0) return -1;   /* may open their stores */
    sm->router = ipc_connect_dealer(d->loop, d->conf.router_endpoint, d->instance, on_record, sm);
    if (!sm->router) return -1;
    struct peer_self self = { d->instance, ROLE_SM, d->epoch };
    struct peer_client_cb cb = { router_up, router_down };
    sm->link = peer_client_new(d->loop, sm->router, &self, d->conf.heartbeat_ms, d->conf.peer_timeout_ms, &cb, sm);
    if (!sm->link) return -1;
    daemon_ready(d);
    return 0;
}

static void sm_stop(struct daemon *d)
{
    struct sm *sm = d->priv;
    if (sm->held) release_held(sm);
    store_commit(sm->accounts);
    peer_client_goodbye(sm->link);
    sm_modules_stop(sm);
}

static int sm_ctl(struct daemon *d, int argc, char **argv, const char *input, size_t input_len, struct ctl_req *r)
{
    struct sm *sm = d->priv;
    if (strcmp(argv[0], "backup") == 0 || strncmp(argv[0], "restore", 7) == 0) {
        if (argv[0][0] == 'b') cmd_backup(sm, argc, argv, r);
        else if (strcmp(argv[0], "restore") == 0) cmd_restore(sm, argc, argv, r);
        else if (strcmp(argv[0], "restore-check") == 0) cmd_restore_check(sm, argc, argv, r);
        else return -1;
        return 0;
    }
    int rc = sm_accounts_ctl(sm, argc, argv, input, input_len, r);
    if (rc == -1) rc = sm_sessions_ctl(sm, argc, argv, r);
    if (rc == -1) rc = sm_roster_ctl(sm, argc, argv, r);
    if (rc == -1) rc = sm_modules_ctl(sm, argc, argv, r);
    return rc;
}

static void sm_stats(struct daemon *d, struct ctl_req *r)
{
    struct sm *sm = d->priv;
    ctl_row(r, "sessions\t%zu", sm->sessions.count);
    ctl_row(r, "users_online\t%zu", sm->users.count);
    for (unsigned k = KIND_MESSAGE; k <= KIND_IQ; k++) ctl_row(r, "stanzas_in_%s\t%llu", stanza_kind_name(k), sm->n.in[k]);
    ctl_row(r, "delivered\t%llu", sm->n.delivered);
    ctl_row(r, "errors_sent\t%llu", sm->n.errors_sent);
    ctl_row(r, "dropped\t%llu", sm->n.dropped);
    ctl_row(r, "bounces_received\t%llu", sm->n.bounced_in);
    ctl_row(r, "auth_lookups\t%llu", sm->n.auth_lookups);
    ctl_row(r, "binds\t%llu", sm->n.binds);
    ctl_row(r, "session_ends\t%llu", sm->n.ends);
    ctl_row(r, "kicks\t%llu", sm->n.kicks);
    ctl_row(r, "hook_stops\t%llu", sm->n.hook_stops);
    ctl_row(r, "hook_changes\t%llu", sm->n.hook_changes);
    struct store_stats st;
    store_get_stats(sm->accounts, &st);
    ctl_row(r, "store_commits\t%llu", st.commits);
    ctl_row(r, "store_writes\t%llu", st.writes);
    ctl_row(r, "store_failures\t%llu", st.failures);
    /* every store of the shard (modules' too): commits per file */
    for (unsigned i = 0; i < sm->nstores; i++) {
        const char *f = store_file(sm->stores[i]);
        store_get_stats(sm->stores[i], &st);
        ctl_row(r, "store_commits_%.*s\t%llu", (int)(strlen(f) > 4 ? strlen(f) - 4 : strlen(f)), f, st.commits);
    }
    sm_roster_stats(sm, r);
}

static const struct daemon_def sm_def = {
    .program = "xmpp-sm",
    .role = ROLE_SM,
    .default_instance = "sm-0",
    .init = sm_init,
    .stop = sm_stop,
    .ctl = sm_ctl,
    .stats = sm_stats,
};

int main(int argc, char **argv) { return daemon_main(argc, argv, &sm_def); }
