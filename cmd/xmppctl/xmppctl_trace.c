/* xmppctl_trace.c - `xmppctl trace` (xmppctl(8) TRACE, xmppd-trace(7)):
 * set and clear trace rules on every daemon, list them, and follow the
 * trace live: subscribe to every daemon's trace stream (a ZeroMQ PUB
 * socket at trace_endpoint), turn the rule on everywhere, print the lines
 * of each stanza in step order, and turn the rule off again on Ctrl-C,
 * after --count stanzas or after --seconds.
 *
 * Lines come from several daemons over several sockets, so they are held
 * HOLD_MS before printing: the lines of one stanza id then print together,
 * ordered by step (lines of one step in arrival order), and ids in the
 * order they first arrived. A stanza the server made because of another
 * (an error reply: its first line carries cause=ID) belongs to the
 * other's group and prints right after it; a group is complete once
 * QUIET_MS pass without a line (what --count counts). */
#include "config.h"
#include "xmppctl.h"
#include "buf.h"
#include "hmap.h"
#include "jid.h"
#include "msg.h"
#include "trace.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define REQ_TIMEOUT_MS 5000
#define HOLD_MS 250     /* a line waits this long for the other daemons' lines of its stanza */
#define QUIET_MS 1000   /* a stanza (and what it caused) is complete after this long without a line */
#define SETTLE_MS 200   /* subscriptions reach the daemons before tracing is turned on */
#define POLL_MS 50
#define FORGET_MS 30000 /* ids idle this long are forgotten */

static void *tctx;
static volatile sig_atomic_t stop_flag;

struct treply {
    int status;
    struct buf rows, message;
};

static void treply_free(struct treply *r)
{
    buf_free(&r->rows);
    buf_free(&r->message);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---------------- control requests ---------------- */

/* An ipc:// endpoint whose socket file nobody listens on: the daemon is
 * not running (fail fast instead of waiting for the timeout). */
static int ipc_dead(const char *ep)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strncmp(ep, "ipc://", 6) != 0 || strlen(ep + 6) >= sizeof sa.sun_path) return 0;
    strcpy(sa.sun_path, ep + 6);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    int ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return !ok;
}

static void *context(void)
{
    if (!tctx) tctx = zmq_ctx_new();
    return tctx;
}

/* One request to one daemon's control socket; 0, or -1 if it does not answer. */
static int request(const struct conf *c, const char *instance, const char *line, struct treply *r)
{
    char ep[1024], id[64];
    static unsigned serial;
    memset(r, 0, sizeof *r);
    conf_ctl_endpoint(c, instance, ep, sizeof ep);
    if (ipc_dead(ep)) return -1;
    void *s = zmq_socket(context(), ZMQ_DEALER);
    if (!s) return -1;
    snprintf(id, sizeof id, "xmppctl-trace-%ld-%u", (long)getpid(), serial++);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_ROUTING_ID, id, strlen(id));
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    int rc = -1;
    struct msg m;
    struct buf b = { 0 };
    msg_init(&m, MSG_CTL_REQUEST);
    msg_set(&m, 0, line);
    if (zmq_connect(s, ep) < 0 || msg_encode(&m, &b) < 0 || zmq_send(s, b.data, b.len, 0) < 0) goto out;
    zmq_pollitem_t item = { s, 0, ZMQ_POLLIN, 0 };
    if (zmq_poll(&item, 1, REQ_TIMEOUT_MS) <= 0) goto out;
    zmq_msg_t part;
    zmq_msg_init(&part);
    if (zmq_msg_recv(&part, s, 0) >= 0) {
        struct msg d;
        size_t used;
        const char *err;
        if (msg_decode(zmq_msg_data(&part), zmq_msg_size(&part), &d, &used, &err) == 0 && d.type == MSG_CTL_REPLY) {
            r->status = (int)d.num;
            buf_add(&r->rows, d.f[1].p, d.f[1].n);
            buf_add(&r->message, d.f[2].p, d.f[2].n);
            rc = 0;
        }
    }
    zmq_msg_close(&part);
out:
    buf_free(&b);
    zmq_close(s);
    return rc;
}

/* ---------------- output ---------------- */

static void json_str(const char *p, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Undo trace_escape: \xHH -> the byte. */
static size_t unescape(const char *p, size_t n, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < size; i++) {
        if (p[i] == '\\' && i + 3 < n && p[i + 1] == 'x' && hexval(p[i + 2]) >= 0 && hexval(p[i + 3]) >= 0) {
            out[o++] = (char)(hexval(p[i + 2]) << 4 | hexval(p[i + 3]));
            i += 3;
        } else {
            out[o++] = p[i];
        }
    }
    out[o] = '\0';
    return o;
}

/* The fields of one trace line (views into it). */
enum { F_ID, F_STEP, F_DAEMON, F_INSTANCE, F_KIND, F_TYPE, F_FROM, F_TO, F_ACTION, F_CAUSE, F_BODY, F_COUNT };
static const char *const field_names[F_COUNT] = { "id", "step", "daemon", "instance", "kind", "type",
                                                  "from", "to", "action", "cause", "body" };

struct fields {
    const char *p[F_COUNT];
    size_t n[F_COUNT];
};

static int field_index(const char *k, size_t n)
{
    for (int i = 0; i < F_COUNT; i++)
        if (strlen(field_names[i]) == n && memcmp(field_names[i], k, n) == 0) return i;
    return -1;
}

/* "trace id=.. step=.. ... action=<to the next ' cause=' or ' body='>
 * [ cause=..][ body=..]"; 0, or -1 if it is not a trace line. */
static int parse_line(const char *s, size_t len, struct fields *f)
{
    memset(f, 0, sizeof *f);
    const char *end = s + len;
    if (len < 6 || memcmp(s, "trace ", 6) != 0) return -1;
    const char *p = s + 6;
    while (p < end) {
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (!eq) return -1;
        int k = field_index(p, (size_t)(eq - p));
        const char *v = eq + 1, *ve;
        if (k == F_ACTION) {
            ve = end;
            for (const char *q = v; q + 6 < end; q++) {
                if (*q == ' ' && (memcmp(q, " cause=", 7) == 0 || memcmp(q, " body=", 6) == 0)) {
                    ve = q;
                    break;
                }
            }
        } else {
            ve = memchr(v, ' ', (size_t)(end - v));
            if (!ve) ve = end;
        }
        if (k >= 0) {
            f->p[k] = v;
            f->n[k] = (size_t)(ve - v);
        }
        p = ve < end ? ve + 1 : end;
    }
    return f->p[F_ID] && f->p[F_STEP] && f->p[F_ACTION] ? 0 : -1;
}

static void print_json(const struct fields *f)
{
    char tmp[16384];
    int first = 1;
    putchar('{');
    for (int i = 0; i < F_COUNT; i++) {
        if (!f->p[i]) continue;
        if (!first) putchar(',');
        first = 0;
        json_str(field_names[i], strlen(field_names[i]));
        putchar(':');
        if (i == F_STEP) {
            printf("%.*s", (int)f->n[i], f->p[i]);
        } else if (i == F_FROM || i == F_TO || i == F_BODY) {
            size_t n = unescape(f->p[i], f->n[i], tmp, sizeof tmp);
            json_str(tmp, n);
        } else {
            json_str(f->p[i], f->n[i]);
        }
    }
    puts("}");
}

/* ---------------- following the stream ---------------- */

struct tid {
    uint64_t id;
    uint64_t first_seq;
    struct tid *root;      /* the group: itself, or the stanza that caused it */
    unsigned pending;      /* its lines waiting to be printed */
    int ripe;
    /* on a root, for the whole group */
    unsigned group_pending;
    uint64_t group_last_ms;
    int accepted, counted;
};

struct tline {
    struct tid *t;
    unsigned step;
    uint64_t seq, at_ms;
    char *text;
    size_t len;
};

struct follow {
    int json;
    int have_target;
    struct hmap ids;
    struct tline *lines;
    size_t nlines, cap;
    uint64_t seq;
    unsigned done;          /* complete groups */
    int out_failed;
};

static uint64_t hex64(const char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n && i < 16; i++) {
        char ch = p[i];
        int d = hexval(ch);
        v = v << 4 | (uint64_t)(d < 0 ? 0 : d);
    }
    return v;
}

static struct tid *tid_get(struct follow *fo, uint64_t id, int create)
{
    struct tid *t = hmap_iget(&fo->ids, id);
    if (t || !create) return t;
    t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->id = id;
    t->root = t;
    t->first_seq = fo->seq;
    int failed = 0;
    hmap_iput(&fo->ids, id, t, &failed);
    if (failed) {
        free(t);
        return NULL;
    }
    return t;
}

static void take_line(struct follow *fo, const char *s, size_t len, uint64_t now)
{
    struct fields f;
    char from[JID_STR_MAX], to[JID_STR_MAX];
    if (parse_line(s, len, &f) < 0) return;
    fo->seq++;
    uint64_t id = hex64(f.p[F_ID], f.n[F_ID]);
    struct tid *t = hmap_iget(&fo->ids, id);
    if (!t) {
        t = tid_get(fo, id, 1);
        if (!t) return;
        struct tid *cause = f.p[F_CAUSE] ? tid_get(fo, hex64(f.p[F_CAUSE], f.n[F_CAUSE]), 0) : NULL;
        if (cause) t->root = cause->root;
    }
    struct tid *g = t->root;
    if (!g->accepted) {
        /* with a target, only stanzas to or from it (other rules may be on) */
        if (!fo->have_target) g->accepted = 1;
        else {
            unescape(f.p[F_FROM] ? f.p[F_FROM] : "", f.n[F_FROM], from, sizeof from);
            unescape(f.p[F_TO] ? f.p[F_TO] : "", f.n[F_TO], to, sizeof to);
            g->accepted = trace_match(strcmp(from, "-") ? from : NULL, strcmp(to, "-") ? to : NULL) != 0;
        }
        if (!g->accepted) {
            g->group_last_ms = now;
            return;
        }
    }
    if (fo->nlines == fo->cap) {
        size_t cap = fo->cap ? fo->cap * 2 : 256;
        struct tline *nl = realloc(fo->lines, cap * sizeof *nl);
        if (!nl) return;
        fo->lines = nl;
        fo->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy) return;
    memcpy(copy, s, len);
    copy[len] = '\0';
    struct tline *l = &fo->lines[fo->nlines++];
    l->t = t;
    l->step = (unsigned)strtoul(f.p[F_STEP], NULL, 10);
    l->seq = fo->seq;
    l->at_ms = now;
    l->text = copy;
    l->len = len;
    t->pending++;
    g->group_pending++;
    g->group_last_ms = now;
}

static int line_order(const void *a, const void *b)
{
    const struct tline *x = a, *y = b;
    /* a caused stanza right after its cause, when both are at hand */
    if (x->t->root->first_seq != y->t->root->first_seq) return x->t->root->first_seq < y->t->root->first_seq ? -1 : 1;
    if (x->t->first_seq != y->t->first_seq) return x->t->first_seq < y->t->first_seq ? -1 : 1;
    if (x->step != y->step) return x->step < y->step ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void print_line(struct follow *fo, const struct tline *l)
{
    if (fo->json) {
        struct fields f;
        if (parse_line(l->text, l->len, &f) == 0) print_json(&f);
    } else {
        fwrite(l->text, 1, l->len, stdout);
        putchar('\n');
    }
}

/* Print the lines of every id whose oldest waiting line has waited
 * HOLD_MS (all of them when all is set), in order. */
static void flush_lines(struct follow *fo, uint64_t now, int all)
{
    size_t n = 0;
    for (size_t i = 0; i < fo->nlines; i++)
        if (all || now - fo->lines[i].at_ms >= HOLD_MS) fo->lines[i].t->ripe = 1;
    struct tline *out = malloc((fo->nlines ? fo->nlines : 1) * sizeof *out);
    if (!out) return;
    size_t keep = 0;
    for (size_t i = 0; i < fo->nlines; i++) {
        if (fo->lines[i].t->ripe) out[n++] = fo->lines[i];
        else fo->lines[keep++] = fo->lines[i];
    }
    fo->nlines = keep;
    qsort(out, n, sizeof *out, line_order);
    for (size_t i = 0; i < n; i++) {
        struct tline *l = &out[i];
        print_line(fo, l);
        l->t->ripe = 0;
        l->t->pending--;
        l->t->root->group_pending--;
        free(l->text);
    }
    free(out);
    if (n) {
        fflush(stdout);
        if (ferror(stdout)) fo->out_failed = 1;
    }
}

/* Count groups that are complete; forget ids long idle. */
static void sweep_groups(struct follow *fo, uint64_t now)
{
    size_t n = fo->ids.count;
    void **all = malloc((n ? n : 1) * sizeof *all);
    if (!all) return;
    n = hmap_values(&fo->ids, all, n);
    for (size_t i = 0; i < n; i++) {
        struct tid *t = all[i];
        if (t->root == t && t->accepted && !t->counted && t->group_pending == 0 && now - t->group_last_ms >= QUIET_MS) {
            t->counted = 1;
            fo->done++;
        }
    }
    /* forget groups idle for long: mark every id of one first (members
     * point at their root), then drop and free them */
    for (size_t i = 0; i < n; i++) {
        struct tid *t = all[i];
        int idle = !t->pending && !t->root->group_pending && now - t->root->group_last_ms >= FORGET_MS;
        if (!idle) all[i] = NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!all[i]) continue;
        hmap_idel(&fo->ids, ((struct tid *)all[i])->id);
        free(all[i]);
    }
    free(all);
}

static void on_stop_signal(int signo)
{
    (void)signo;
    stop_flag = 1;
}

/* ---------------- commands ---------------- */

static int usage_error(const char *why)
{
    fprintf(stderr, "xmppctl: %s\n"
                    "usage: xmppctl trace on|off [TARGET] [--bodies]\n"
                    "       xmppctl trace list\n"
                    "       xmppctl trace [TARGET] [--count N] [--seconds S] [--bodies]\n", why);
    return EXIT_USAGE;
}

/* Send line to every daemon; 0, the first failure's status, or 3. */
static int to_all(const struct conf *c, const char *line, int print, int json)
{
    struct instance all[MAX_INSTANCES];
    size_t n = ctl_instances(c, all, MAX_INSTANCES);
    int rc = EXIT_OK, any = 0;
    if (print && json) putchar('[');
    for (size_t i = 0; i < n; i++) {
        struct treply r;
        if (request(c, all[i].name, line, &r) < 0) {
            fprintf(stderr, "xmppctl: %s is not answering\n", all[i].name);
            rc = EXIT_UNREACHABLE;
            continue;
        }
        if (r.message.len) fprintf(stderr, "%s: %.*s\n", all[i].name, (int)r.message.len, r.message.data);
        if (r.status && rc == EXIT_OK) rc = r.status;
        if (print && !r.status) {
            const char *p = r.rows.data, *end = p ? p + r.rows.len : NULL;
            while (p && p < end) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                if (!nl) nl = end;
                if (!json) {
                    printf("%.*s\n", (int)(nl - p), p);
                } else {
                    /* instance rule target bodies */
                    static const char *const cols[] = { "instance", "rule", "target", "bodies" };
                    const char *f = p;
                    printf("%s{", any ? ",\n " : "");
                    any = 1;
                    for (int k = 0; k < 4 && f <= nl; k++) {
                        const char *tab = memchr(f, '\t', (size_t)(nl - f));
                        if (!tab) tab = nl;
                        printf("%s\"%s\":", k ? "," : "", cols[k]);
                        json_str(f, (size_t)(tab - f));
                        f = tab + 1;
                    }
                    putchar('}');
                }
                p = nl + 1;
            }
        }
        treply_free(&r);
    }
    if (print && json) puts("]");
    return rc;
}

/* The rule `on` would make, as a daemon lists it: "rule\ttarget". */
static int rule_key(const char *target, char *out, size_t size)
{
    static const char *const kinds[] = { "all", "domain", "bare", "full" };
    char norm[JID_STR_MAX];
    int kind = trace_target_parse(target, norm, sizeof norm);
    if (kind < 0) return -1;
    snprintf(out, size, "%s\t%s\t", kinds[kind], norm[0] ? norm : "-");
    return kind;
}

/* Whether a daemon already has the rule, and with bodies: -1 no, 0, 1. */
static int existing_rule(const struct treply *r, const char *instance, const char *key)
{
    char want[JID_STR_MAX + 128];
    snprintf(want, sizeof want, "%s\t%s", instance, key);
    size_t wl = strlen(want);
    const char *p = r->rows.data, *end = p ? p + r->rows.len : NULL;
    while (p && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) nl = end;
        if ((size_t)(nl - p) > wl && memcmp(p, want, wl) == 0) return p[wl] == 'y';
        p = nl + 1;
    }
    return -1;
}

static int follow(const struct conf *c, const char *target, long count, long seconds, int bodies, int json)
{
    struct instance all[MAX_INSTANCES];
    size_t n = ctl_instances(c, all, MAX_INSTANCES);
    void *subs[MAX_INSTANCES];
    int had[MAX_INSTANCES];    /* the rule before us: -2 unknown/unreachable, -1 none, 0/1 bodies */
    zmq_pollitem_t items[MAX_INSTANCES];
    size_t nitems = 0;
    int rc = EXIT_OK;
    char key[JID_STR_MAX + 64], line[JID_STR_MAX + 64], ep[1024];
    struct follow fo;
    memset(&fo, 0, sizeof fo);
    fo.json = json;
    fo.have_target = target != NULL;
    if (rule_key(target, key, sizeof key) < 0) return usage_error("not a JID or a domain");
    if (target && trace_rule_add(target, 0) < 0) return usage_error("not a JID or a domain");

    /* subscribe first: lines written before we listen are lost */
    for (size_t i = 0; i < n; i++) {
        subs[i] = NULL;
        had[i] = -2;
        conf_trace_endpoint(c, all[i].name, ep, sizeof ep);
        if (ipc_dead(ep)) continue;
        void *s = zmq_socket(context(), ZMQ_SUB);
        int hwm = 1000000, linger = 0;
        zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
        zmq_setsockopt(s, ZMQ_SUBSCRIBE, "", 0);
        if (zmq_connect(s, ep) < 0) {
            zmq_close(s);
            continue;
        }
        subs[i] = s;
        items[nitems].socket = s;
        items[nitems].fd = 0;
        items[nitems].events = ZMQ_POLLIN;
        items[nitems].revents = 0;
        nitems++;
    }
    struct timespec settle = { 0, SETTLE_MS * 1000000L };
    nanosleep(&settle, NULL);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    snprintf(line, sizeof line, "trace\ton\t%s%s", target ? target : "all", bodies ? "\tbodies" : "");
    for (size_t i = 0; i < n; i++) {
        struct treply r;
        if (!subs[i] || request(c, all[i].name, "trace", &r) < 0) {
            fprintf(stderr, "xmppctl: %s is not answering: its steps are missing from this trace\n", all[i].name);
            rc = EXIT_UNREACHABLE;
            continue;
        }
        had[i] = existing_rule(&r, all[i].name, key);
        treply_free(&r);
        if (had[i] >= bodies) continue; /* in force already, with bodies if we want them */
        if (request(c, all[i].name, line, &r) < 0 || r.status) {
            fprintf(stderr, "xmppctl: %s: cannot turn tracing on%s%.*s\n", all[i].name, r.message.len ? ": " : "",
                    (int)r.message.len, r.message.data ? r.message.data : "");
            rc = EXIT_UNREACHABLE;
            had[i] = -2;
        }
        treply_free(&r);
    }

    size_t reached = 0;
    for (size_t i = 0; i < n; i++) reached += had[i] != -2;
    if (!reached) stop_flag = 1; /* nothing to follow */
    else
        fprintf(stderr, "xmppctl: tracing %s%s; Ctrl-C ends\n", target ? target : "every stanza",
                bodies ? " with message bodies" : "");
    uint64_t start = now_ms(), last_sweep = 0;
    while (!stop_flag && !fo.out_failed) {
        uint64_t now = now_ms();
        if (seconds > 0 && now - start >= (uint64_t)seconds * 1000u) break;
        if (count > 0 && fo.done >= (unsigned long)count) break;
        int got = nitems ? zmq_poll(items, (int)nitems, POLL_MS) : (usleep(POLL_MS * 1000), 0);
        now = now_ms();
        if (got < 0 && errno != EINTR) break;
        for (size_t k = 0; got > 0 && k < nitems; k++) {
            if (!(items[k].revents & ZMQ_POLLIN)) continue;
            for (;;) {
                zmq_msg_t part;
                zmq_msg_init(&part);
                if (zmq_msg_recv(&part, items[k].socket, ZMQ_DONTWAIT) < 0) {
                    zmq_msg_close(&part);
                    break;
                }
                take_line(&fo, zmq_msg_data(&part), zmq_msg_size(&part), now);
                zmq_msg_close(&part);
            }
        }
        flush_lines(&fo, now, 0);
        if (now - last_sweep >= 4 * POLL_MS) {
            sweep_groups(&fo, now);
            last_sweep = now;
        }
    }
    flush_lines(&fo, now_ms(), 1);

    /* put every daemon back as it was */
    for (size_t i = 0; i < n; i++) {
        struct treply r;
        if (had[i] == -2 || had[i] >= bodies) continue;
        if (had[i] == -1) snprintf(line, sizeof line, "trace\toff%s%s", target ? "\t" : "", target ? target : "");
        else snprintf(line, sizeof line, "trace\ton\t%s", target ? target : "all"); /* it had no bodies */
        if (request(c, all[i].name, line, &r) < 0) {
            fprintf(stderr, "xmppctl: %s: cannot turn tracing off again\n", all[i].name);
            rc = EXIT_UNREACHABLE;
            continue;
        }
        treply_free(&r);
    }
    for (size_t i = 0; i < n; i++)
        if (subs[i]) zmq_close(subs[i]);
    for (size_t i = 0; i < fo.nlines; i++) free(fo.lines[i].text);
    free(fo.lines);
    size_t nids = fo.ids.count;
    void **ids = malloc((nids ? nids : 1) * sizeof *ids);
    if (ids) {
        nids = hmap_values(&fo.ids, ids, nids);
        for (size_t i = 0; i < nids; i++) free(ids[i]);
        free(ids);
    }
    hmap_free(&fo.ids);
    trace_rules_clear();
    return rc;
}

int ctl_trace(const struct conf *c, int argc, char **argv, int json)
{
    const char *target = NULL;
    long count = 0, seconds = 0;
    int bodies = 0, rc;
    char line[JID_STR_MAX + 64], norm[JID_STR_MAX];
    int mode = 0; /* 0 follow, 1 on, 2 off, 3 list */
    int i = 1;
    if (argc > 1 && strcmp(argv[1], "on") == 0) mode = 1, i = 2;
    else if (argc > 1 && strcmp(argv[1], "off") == 0) mode = 2, i = 2;
    else if (argc > 1 && strcmp(argv[1], "list") == 0) mode = 3, i = 2;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--bodies") == 0 && mode < 2) {
            bodies = 1;
        } else if ((strcmp(a, "--count") == 0 || strcmp(a, "--seconds") == 0) && mode == 0) {
            char *end;
            if (i + 1 >= argc) return usage_error("missing number");
            long v = strtol(argv[i + 1], &end, 10);
            if (*end || v <= 0 || v > 100000000) return usage_error("expected a positive number");
            if (a[2] == 'c') count = v;
            else seconds = v;
            i++;
        } else if (a[0] == '-' || target || mode == 3) {
            return usage_error("unexpected argument");
        } else {
            target = a;
        }
    }
    if (target && trace_target_parse(target, norm, sizeof norm) < 0) {
        fprintf(stderr, "xmppctl: '%s' is not a JID or a domain\n", target);
        return EXIT_USAGE;
    }
    switch (mode) {
    case 1:
        snprintf(line, sizeof line, "trace\ton\t%s%s", target ? target : "all", bodies ? "\tbodies" : "");
        rc = to_all(c, line, 0, json);
        break;
    case 2:
        snprintf(line, sizeof line, "trace\toff%s%s", target ? "\t" : "", target ? target : "");
        rc = to_all(c, line, 0, json);
        break;
    case 3:
        rc = to_all(c, "trace", 1, json);
        break;
    default:
        rc = follow(c, target, count, seconds, bodies, json);
        break;
    }
    if (tctx) zmq_ctx_term(tctx);
    tctx = NULL;
    return rc;
}
