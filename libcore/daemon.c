/* daemon.c - the shared skeleton behind every daemon's main() (daemon.h):
 * options, configuration, logging, the loop, signals, the control socket
 * with its built-in commands (status, loglevel, stats, reload), and the
 * systemd notify protocol (READY=1, WATCHDOG=1, STOPPING=1). */
#include "config.h"
#include "daemon.h"
#include "log.h"
#include "msg.h"
#include "trace.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CTL_MAX_ARGS 64
#define STOP_GRACE_MS 300

static void sd_notify_send(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path) return;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    size_t n = strlen(path);
    if (n >= sizeof sa.sun_path || (path[0] != '/' && path[0] != '@')) return;
    memcpy(sa.sun_path, path, n);
    if (path[0] == '@') sa.sun_path[0] = '\0'; /* abstract namespace */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, len) < 0)
        log_warn("sd_notify: %s", strerror(errno));
    close(fd);
}

void daemon_ready(struct daemon *d)
{
    sd_notify_send("READY=1");
    log_notice("%s %s ready (epoch %016llx)", d->def->program, PACKAGE_VERSION, (unsigned long long)d->epoch);
}

static void watchdog_tick(loop_t *loop, void *arg)
{
    unsigned long long *period = arg;
    sd_notify_send("WATCHDOG=1"); /* sent by the loop itself: a stuck loop stops it */
    loop_timer_add(loop, *period, watchdog_tick, arg);
}

int daemon_instance_number(const char *instance)
{
    const char *dash = strrchr(instance, '-');
    if (!dash || !dash[1]) return -1;
    char *end;
    long n = strtol(dash + 1, &end, 10);
    if (*end || n < 0 || n > 1000000) return -1;
    return (int)n;
}

/* ---------------- control requests ---------------- */

void ctl_row(struct ctl_req *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_reserve(&r->rows, (size_t)n + 1) < 0) return;
    va_start(ap, fmt);
    vsnprintf(r->rows.data + r->rows.len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    r->rows.len += (size_t)n;
    buf_add(&r->rows, "\n", 1);
}

void ctl_cols(struct ctl_req *r, const char *cols)
{
    buf_clear(&r->cols);
    buf_adds(&r->cols, cols);
}

void ctl_fail(struct ctl_req *r, int status, const char *fmt, ...)
{
    r->status = status;
    buf_clear(&r->message);
    va_list ap;
    va_start(ap, fmt);
    char tmp[1024];
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    buf_adds(&r->message, tmp);
}

void ctl_finish(struct ctl_req *r)
{
    struct msg m;
    msg_init(&m, MSG_CTL_REPLY);
    m.num = (uint32_t)r->status;
    msg_setn(&m, 0, r->cols.data ? r->cols.data : "", r->cols.len);
    msg_setn(&m, 1, r->rows.data ? r->rows.data : "", r->rows.len);
    msg_setn(&m, 2, r->message.data ? r->message.data : "", r->message.len);
    if (r->d->ctl) ipc_send(r->d->ctl, r->peer, &m);
    buf_free(&r->cols);
    buf_free(&r->rows);
    buf_free(&r->message);
    free(r);
}

static void builtin_status(struct daemon *d, struct ctl_req *r)
{
    ctl_cols(r, "instance\trole\tpid\tversion\tepoch\tuptime\tstate");
    ctl_row(r, "%s\t%s\t%ld\t%s\t%016llx\t%ld\t%s", d->instance, peer_role_name((unsigned)d->role),
            (long)getpid(), PACKAGE_VERSION, (unsigned long long)d->epoch, (long)(time(NULL) - d->started),
            d->stopping ? "stopping" : "up");
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
    fclose(f);
    return kib;
}

static void builtin_stats(struct daemon *d, struct ctl_req *r)
{
    ctl_cols(r, "instance\tname\tvalue");
    ctl_row(r, "%s\trss_kib\t%ld", d->instance, rss_kib());
    ctl_row(r, "%s\tlog_lines_dropped\t%llu", d->instance, (unsigned long long)log_dropped());
    ctl_row(r, "%s\ttrace_lines\t%llu", d->instance, (unsigned long long)trace_lines_written());
    if (d->def->stats) {
        /* the daemon writes "name\tvalue"; prefix each row with the instance */
        struct ctl_req sub = { .d = d };
        d->def->stats(d, &sub);
        const char *p = sub.rows.data, *end = p ? p + sub.rows.len : NULL;
        while (p && p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            if (!nl) nl = end;
            ctl_row(r, "%s\t%.*s", d->instance, (int)(nl - p), p);
            p = nl + 1;
        }
        buf_free(&sub.rows);
        buf_free(&sub.cols);
        buf_free(&sub.message);
    }
}

/* Keys a running daemon cannot apply (xmppd.conf(5), RELOADING): a reload
 * that changes one is refused whole, so that every daemon keeps running
 * with one configuration. 1, with what changed in why, or 0. */
static int needs_restart(const struct conf *was, const struct conf *now, char *why, size_t size)
{
    static const struct { const char *name; size_t off; } strs[] = {
        { "state_dir", offsetof(struct conf, state_dir) },
        { "run_dir", offsetof(struct conf, run_dir) },
        { "router_endpoint", offsetof(struct conf, router_endpoint) },
        { "c2s_endpoint", offsetof(struct conf, c2s_endpoint_fmt) },
        { "ctl_endpoint", offsetof(struct conf, ctl_endpoint_fmt) },
        { "trace_endpoint", offsetof(struct conf, trace_endpoint_fmt) },
    }, nums[] = {
        { "sm_shards", offsetof(struct conf, sm_shards) },
        { "c2s_instances", offsetof(struct conf, c2s_instances) },
        { "listen_instances", offsetof(struct conf, listen_instances) },
        { "heartbeat_ms", offsetof(struct conf, heartbeat_ms) },
        { "peer_timeout_ms", offsetof(struct conf, peer_timeout_ms) },
    };
    for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) {
        const char *a = *(char *const *)(const void *)((const char *)was + strs[i].off);
        const char *b = *(char *const *)(const void *)((const char *)now + strs[i].off);
        if (strcmp(a, b) != 0) {
            snprintf(why, size, "%s changed from %s to %s", strs[i].name, a, b);
            return 1;
        }
    }
    for (size_t i = 0; i < sizeof nums / sizeof *nums; i++) {
        unsigned a = *(const unsigned *)(const void *)((const char *)was + nums[i].off);
        unsigned b = *(const unsigned *)(const void *)((const char *)now + nums[i].off);
        if (a != b) {
            snprintf(why, size, "%s changed from %u to %u", nums[i].name, a, b);
            return 1;
        }
    }
    if (conf_modules_differ(was, now)) {
        snprintf(why, size, "the modules or their options changed");
        return 1;
    }
    if (was->tdb_nosync != now->tdb_nosync) {
        snprintf(why, size, "tdb_nosync changed to %s", now->tdb_nosync ? "yes" : "no");
        return 1;
    }
    int same = was->n_c2s_listen == now->n_c2s_listen;
    for (size_t i = 0; same && i < was->n_c2s_listen; i++) same = strcmp(was->c2s_listen[i], now->c2s_listen[i]) == 0;
    if (!same) {
        snprintf(why, size, "the c2s_listen addresses changed");
        return 1;
    }
    same = was->n_c2s_tls_listen == now->n_c2s_tls_listen;
    for (size_t i = 0; same && i < was->n_c2s_tls_listen; i++)
        same = strcmp(was->c2s_tls_listen[i], now->c2s_tls_listen[i]) == 0;
    if (!same) {
        snprintf(why, size, "the c2s_tls_listen addresses changed");
        return 1;
    }
    same = was->n_hosts == now->n_hosts;
    for (size_t i = 0; same && i < was->n_hosts; i++) same = strcmp(was->hosts[i].domain, now->hosts[i].domain) == 0;
    if (!same) {
        snprintf(why, size, "the served domains (domain, [host]) changed");
        return 1;
    }
    return 0;
}

/* SIGHUP or `reload`: 0, or -1 with a sentence for xmppctl in why. */
static int do_reload(struct daemon *d, char *why, size_t size)
{
    struct conf fresh;
    char err[512];
    if (conf_load(d->conf.path, &fresh, err, sizeof err) < 0) {
        log_err("reload refused, configuration kept: %s", err);
        snprintf(why, size, "reload refused, configuration kept: %s", err);
        return -1;
    }
    if (needs_restart(&d->conf, &fresh, err, sizeof err)) {
        log_err("reload refused, the running configuration is kept: %s, which needs a restart", err);
        snprintf(why, size, "reload refused: %s, which needs a restart; the running configuration is kept", err);
        conf_free(&fresh);
        return -1;
    }
    conf_free(&d->conf);
    d->conf = fresh;
    log_set_level(d->conf.log_level);
    log_notice("configuration reloaded from %s", d->conf.path ? d->conf.path : "(defaults)");
    if (d->def->reload && d->def->reload(d) < 0) {
        snprintf(why, size, "configuration reloaded, but %s could not apply all of it: see its log", d->instance);
        return -1;
    }
    return 0;
}

static int builtin(struct daemon *d, int argc, char **argv, struct ctl_req *r)
{
    if (strcmp(argv[0], "status") == 0) {
        builtin_status(d, r);
    } else if (strcmp(argv[0], "stats") == 0) {
        builtin_stats(d, r);
    } else if (strcmp(argv[0], "loglevel") == 0) {
        if (argc > 2) {
            ctl_fail(r, 2, "usage: loglevel [LEVEL]");
            return 0;
        }
        if (argc == 2) {
            int lvl = log_level_parse(argv[1]);
            if (lvl < 0) {
                ctl_fail(r, 2, "unknown level '%s' (err, warning, notice, info, debug)", argv[1]);
                return 0;
            }
            log_set_level(lvl);
            log_notice("log level set to %s", log_level_name(lvl));
        }
        ctl_cols(r, "instance\tlevel");
        ctl_row(r, "%s\t%s", d->instance, log_level_name(log_get_level()));
    } else if (strcmp(argv[0], "trace") == 0) {
        trace_ctl(d, argc, argv, r); /* trace.c */
    } else if (strcmp(argv[0], "reload") == 0) {
        char why[1024];
        if (do_reload(d, why, sizeof why) < 0) ctl_fail(r, 1, "%s", why);
    } else {
        return -1;
    }
    return 0;
}

static void ctl_msg(ipc_t *ipc, const char *peer, const struct msg *m, void *arg)
{
    struct daemon *d = arg;
    (void)ipc;
    if (m->type != MSG_CTL_REQUEST) {
        log_warn("control: unexpected %s record from '%s' ignored", msg_type_name(m->type), peer);
        return;
    }
    struct ctl_req *r = calloc(1, sizeof *r);
    char *line = malloc(m->f[0].n + 1);
    if (!r || !line) {
        free(r);
        free(line);
        return;
    }
    r->d = d;
    snprintf(r->peer, sizeof r->peer, "%s", peer);
    memcpy(line, m->f[0].p, m->f[0].n);
    line[m->f[0].n] = '\0';
    char *argv[CTL_MAX_ARGS + 1];
    int argc = 0;
    for (char *save = NULL, *tok = strtok_r(line, "\t", &save); tok && argc < CTL_MAX_ARGS;
         tok = strtok_r(NULL, "\t", &save))
        argv[argc++] = tok;
    argv[argc] = NULL;
    int rc = -1;
    if (argc == 0) {
        ctl_fail(r, 2, "empty command");
        rc = 0;
    } else {
        rc = builtin(d, argc, argv, r);
        if (rc < 0 && d->def->ctl) rc = d->def->ctl(d, argc, argv, m->f[1].p, m->f[1].n, r);
        if (rc < 0) {
            ctl_fail(r, 2, "%s: unknown command for %s", argv[0], d->def->program);
            rc = 0;
        }
    }
    free(line);
    if (rc == 0) ctl_finish(r);
}

/* ---------------- signals and main ---------------- */

static void stop_now(loop_t *loop, void *arg)
{
    (void)arg;
    loop_stop(loop);
}

static void on_signal(loop_t *loop, int signo, void *arg)
{
    struct daemon *d = arg;
    if (signo == SIGHUP) {
        char why[1024];
        do_reload(d, why, sizeof why); /* logged */
        return;
    }
    if (d->stopping) return;
    d->stopping = 1;
    log_notice("signal %d: stopping", signo);
    sd_notify_send("STOPPING=1");
    if (d->def->stop) d->def->stop(d);
    loop_timer_add(loop, STOP_GRACE_MS, stop_now, d); /* let goodbyes and closes flush */
}

static void flush_log(loop_t *loop, void *arg)
{
    (void)loop;
    (void)arg;
    log_flush();
}

/* One process per instance: ZeroMQ would silently take over the ipc://
 * socket files of a running instance, so a second copy must not start. */
static int lock_instance(struct daemon *d)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.lock", d->conf.run_dir, d->instance);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        log_err("cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        log_err("%s is already running (%s is locked)", d->instance, path);
        close(fd);
        return -1;
    }
    return 0; /* the descriptor stays open, and the lock held, until exit */
}

static void usage(const struct daemon_def *def, FILE *to)
{
    fprintf(to,
            "usage: %s [-c FILE] [-i INSTANCE] [-l LEVEL]\n"
            "  -c FILE      configuration file (xmppd.conf(5)); default: built-in defaults\n"
            "  -i INSTANCE  instance name (default %s)\n"
            "  -l LEVEL     log level: err, warning, notice, info, debug\n"
            "  -V           print the version\n"
            "  -h           this help\n",
            def->program, def->default_instance);
}

int daemon_main(int argc, char **argv, const struct daemon_def *def)
{
    static struct daemon d;
    static unsigned long long wd_period;
    const char *conf_path = NULL, *level = NULL;
    char err[512];
    int opt;
    d.def = def;
    d.role = def->role;
    d.instance = def->default_instance;
    while ((opt = getopt(argc, argv, "c:i:l:hV")) != -1) {
        switch (opt) {
        case 'c': conf_path = optarg; break;
        case 'i': d.instance = optarg; break;
        case 'l': level = optarg; break;
        case 'V': printf("%s %s\n", def->program, PACKAGE_VERSION); return 0;
        case 'h': usage(def, stdout); return 0;
        default: usage(def, stderr); return 2;
        }
    }
    if (optind != argc || strlen(d.instance) >= 64 || daemon_instance_number(d.instance) < 0) {
        usage(def, stderr);
        return 2;
    }
    if (conf_load(conf_path, &d.conf, err, sizeof err) < 0) {
        fprintf(stderr, "<3>%s: configuration: %s\n", d.instance, err);
        return 1;
    }
    log_init(d.instance, d.conf.log_level);
    if (level) {
        int lvl = log_level_parse(level);
        if (lvl < 0) {
            fprintf(stderr, "unknown log level '%s'\n", level);
            return 2;
        }
        log_set_level(lvl);
    }
    signal(SIGPIPE, SIG_IGN);
    d.epoch = util_random_u64();
    d.started = (long)time(NULL);
    if (util_mkdir_p(d.conf.run_dir, 0750) < 0) {
        log_err("cannot create %s: %s", d.conf.run_dir, strerror(errno));
        return 1;
    }
    if (lock_instance(&d) < 0) return 1;
    d.loop = loop_new();
    if (!d.loop) return 1;
    char ep[1024];
    conf_ctl_endpoint(&d.conf, d.instance, ep, sizeof ep);
    d.ctl = ipc_bind_router(d.loop, ep, ctl_msg, &d);
    if (!d.ctl) {
        log_err("cannot bind the control socket %s (is %s already running?)", ep, d.instance);
        return 1;
    }
    trace_init(&d);
    loop_add_signal(d.loop, SIGTERM, on_signal, &d);
    loop_add_signal(d.loop, SIGINT, on_signal, &d);
    loop_add_signal(d.loop, SIGHUP, on_signal, &d);
    loop_on_turn_end(d.loop, LOOP_FLUSH, flush_log, NULL);
    if (def->init(&d) < 0) {
        log_err("%s: start-up failed", def->program);
        return 1;
    }
    const char *wd = getenv("WATCHDOG_USEC");
    if (wd && (wd_period = strtoull(wd, NULL, 10) / 2000) > 0) loop_timer_add(d.loop, wd_period, watchdog_tick, &wd_period);
    log_set_nonblocking(1);
    loop_run(d.loop);
    log_notice("%s stopped", d.instance);
    log_set_nonblocking(0);
    d.ctl = NULL;
    trace_close(); /* before the context is terminated */
    ipc_close_all(); /* flushes, and removes the ipc:// socket files */
    return 0;
}
