/* daemon.h - the skeleton every xmppd daemon's main() hands itself to:
 * command line, configuration, logging, the event loop, signals (TERM,
 * INT, HUP), the control socket that xmppctl talks to, systemd readiness
 * and watchdog. A daemon supplies a daemon_def; main() is one line. */
#ifndef XMPPD_DAEMON_H
#define XMPPD_DAEMON_H

#include <stdint.h>

#include "buf.h"
#include "conf.h"
#include "ipc.h"
#include "loop.h"

struct daemon;

/* A control request being answered (possibly later: see ctl handlers). */
struct ctl_req {
    struct daemon *d;
    char peer[64];       /* the requester's routing id */
    int status;          /* exit status for xmppctl: 0 ok, 1 failed, 2 usage */
    struct buf cols;     /* column names, tab-separated */
    struct buf rows;     /* rows, tab-separated fields, one per line */
    struct buf message;  /* a sentence for a human (errors) */
};

struct daemon_def {
    const char *program;          /* "xmpp-sm" */
    int role;                     /* enum peer_role */
    const char *default_instance; /* "sm-0" */
    /* After config, log, loop and control socket exist; 0 or -1 (exit 1). */
    int (*init)(struct daemon *d);
    /* SIGTERM/SIGINT: say goodbye; the loop stops after this turn. */
    void (*stop)(struct daemon *d);
    /* SIGHUP or `xmppctl reload`: the new configuration is in d->conf
     * (keys that need a restart are unchanged: daemon.c refuses a reload
     * that changes them). 0, or -1 when some of it could not be applied
     * (logged; xmppctl reload then exits 1). */
    int (*reload)(struct daemon *d);
    /* A control command (argv[0] is its name). Return 0 when r is filled,
     * 1 when the answer comes later through ctl_finish(r), -1 if unknown. */
    int (*ctl)(struct daemon *d, int argc, char **argv, const char *input, size_t input_len,
               struct ctl_req *r);
    /* Append "name\tvalue" rows for `xmppctl stats`. */
    void (*stats)(struct daemon *d, struct ctl_req *r);
};

struct daemon {
    const struct daemon_def *def;
    const char *instance;  /* "sm-0", "c2s-1"... */
    int role;
    uint64_t epoch;        /* random per start; peers notice restarts by it */
    long started;          /* time(NULL) at start */
    struct conf conf;
    loop_t *loop;
    ipc_t *ctl;
    int stopping;
    void *priv;            /* the daemon's own state */
};

/* Parse argv (-c FILE, -i INSTANCE, -l LEVEL, -h, -V), set up and run. */
int daemon_main(int argc, char **argv, const struct daemon_def *def);
/* Tell systemd (NOTIFY_SOCKET) that the daemon is ready to serve. */
void daemon_ready(struct daemon *d);
/* Send the answer of a deferred control request and free it. */
void ctl_finish(struct ctl_req *r);
/* Append a row (printf-formatted, fields separated by \t). */
void ctl_row(struct ctl_req *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Set the column names (tab-separated). */
void ctl_cols(struct ctl_req *r, const char *cols);
/* Fail the request with a status and a message. */
void ctl_fail(struct ctl_req *r, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Parse an instance name's number: "sm-3" -> 3; -1 if none. */
int daemon_instance_number(const char *instance);

#endif
