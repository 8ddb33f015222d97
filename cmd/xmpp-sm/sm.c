/* sm.c - xmpp-sm, the session manager of one shard (sm-K): connects to
 * the router, binds its domains, dispatches records to the accounts and
 * session code, and after a restart holds stanzas until every c2s has
 * re-announced its sessions (DESIGN §3), so nothing is delivered by the
 * rules for an offline user to someone who is in fact online. */
#include "config.h"
#include "sm.h"
#include "log.h"
#include "stanza.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        sm_reply_error(sm, m, SE_RESOURCE_CONSTRAINT, NULL);
        return;
    }
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
}

static int sm_ctl(struct daemon *d, int argc, char **argv, const char *input, size_t input_len, struct ctl_req *r)
{
    struct sm *sm = d->priv;
    int rc = sm_accounts_ctl(sm, argc, argv, input, input_len, r);
    if (rc == -1) rc = sm_sessions_ctl(sm, argc, argv, r);
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
    struct store_stats st;
    store_get_stats(sm->accounts, &st);
    ctl_row(r, "store_commits\t%llu", st.commits);
    ctl_row(r, "store_writes\t%llu", st.writes);
    ctl_row(r, "store_failures\t%llu", st.failures);
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
