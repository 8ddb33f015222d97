/* xmppctl.h - shared by the files of xmppctl, the administration tool:
 * xmppctl.c (commands, output) and xmppctl_start.c (running the daemons
 * without systemd, the development certificate). */
#ifndef XMPPD_XMPPCTL_H
#define XMPPD_XMPPCTL_H

#include "conf.h"

/* Exit codes (xmppctl(8)). */
enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

#define MAX_INSTANCES 256

struct instance {
    char name[64];   /* "sm-0" */
    const char *program; /* "xmpp-sm" */
};

/* Every daemon instance the configuration implies, in start order. */
size_t ctl_instances(const struct conf *c, struct instance *out, size_t max);
/* Start every daemon not yet running; wait until each answers. */
int ctl_start(const struct conf *c, const char *conf_path);
/* Stop every daemon (SIGTERM, then SIGKILL after a grace period). */
int ctl_stop(const struct conf *c);
/* 1 if the instance answers on its control socket within timeout_ms. */
int ctl_ping(const struct conf *c, const char *instance, int timeout_ms);
/* `xmppctl trace ...` (xmppctl_trace.c); argv[0] is "trace". */
int ctl_trace(const struct conf *c, int argc, char **argv, int json);

#endif
