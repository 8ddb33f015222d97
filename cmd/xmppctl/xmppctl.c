/* xmppctl.c - the administration tool (xmppctl(8)): asks the daemons over
 * their control sockets and prints tab-separated rows (or JSON). Exit
 * codes: 0 ok, 1 failed, 2 usage, 3 a daemon did not answer. Passwords
 * come from standard input or a prompt, never argv, and are turned into
 * SCRAM verifiers here: no password ever crosses a socket. */
#include "config.h"
#include "xmppctl.h"
#include "buf.h"
#include "jid.h"
#include "msg.h"
#include "scram.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define REPLY_TIMEOUT_MS 5000
#define IMPORT_WINDOW 512

static int opt_json, opt_header;
static void *zctx;
static int printed_any_json;

struct reply {
    int status;
    struct buf cols, rows, message;
};

/* A control connection. Daemons batch the records of one loop turn into
 * one ZeroMQ message, so one frame may hold several replies. */
struct link {
    void *s;
    struct buf frame;
    size_t off;
};

static void reply_free(struct reply *r)
{
    buf_free(&r->cols);
    buf_free(&r->rows);
    buf_free(&r->message);
}

/* ---------------- talking to a daemon ---------------- */

/* 1 if something listens on the unix socket path (a stale file does not). */
static int socket_alive(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path) return 1; /* let ZeroMQ decide */
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 1;
    int ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

static int connect_ctl(const struct conf *c, const char *instance, struct link *l)
{
    char ep[1024];
    memset(l, 0, sizeof *l);
    conf_ctl_endpoint(c, instance, ep, sizeof ep);
    if (strncmp(ep, "ipc://", 6) == 0 && !socket_alive(ep + 6)) return -1; /* not running: fail fast */
    if (!zctx) zctx = zmq_ctx_new();
    void *s = zmq_socket(zctx, ZMQ_DEALER);
    /* a printable routing id: daemons refuse ZeroMQ's generated binary ones */
    static unsigned serial;
    char id[64];
    snprintf(id, sizeof id, "xmppctl-%ld-%u", (long)getpid(), serial++);
    zmq_setsockopt(s, ZMQ_ROUTING_ID, id, strlen(id));
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(s, ep) < 0) {
        zmq_close(s);
        return -1;
    }
    l->s = s;
    return 0;
}

static void link_close(struct link *l)
{
    if (l->s) zmq_close(l->s);
    buf_free(&l->frame);
    memset(l, 0, sizeof *l);
}

static int send_request(void *s, const char *line, const char *input, size_t input_len)
{
    struct msg m;
    struct buf b = { 0 };
    msg_init(&m, MSG_CTL_REQUEST);
    msg_set(&m, 0, line);
    msg_setn(&m, 1, input ? input : "", input ? input_len : 0);
    int rc = msg_encode(&m, &b) == 0 && zmq_send(s, b.data, b.len, 0) >= 0 ? 0 : -1;
    buf_free(&b);
    return rc;
}

/* The next reply: from the frame in hand, or a new one; 0, or -1 on
 * timeout or garbage. */
static int recv_reply(struct link *l, int timeout_ms, struct reply *r)
{
    if (l->off >= l->frame.len) {
        zmq_pollitem_t item = { l->s, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll(&item, 1, timeout_ms) <= 0) return -1;
        zmq_msg_t part;
        zmq_msg_init(&part);
        int n = zmq_msg_recv(&part, l->s, 0);
        buf_clear(&l->frame);
        if (n >= 0) buf_add(&l->frame, zmq_msg_data(&part), zmq_msg_size(&part));
        zmq_msg_close(&part);
        l->off = 0;
        if (n < 0) return -1;
    }
    struct msg m;
    size_t used;
    const char *err;
    if (msg_decode(l->frame.data + l->off, l->frame.len - l->off, &m, &used, &err) < 0 || m.type != MSG_CTL_REPLY) {
        l->off = l->frame.len;
        return -1;
    }
    l->off += used;
    memset(r, 0, sizeof *r);
    r->status = (int)m.num;
    buf_add(&r->cols, m.f[0].p, m.f[0].n);
    buf_add(&r->rows, m.f[1].p, m.f[1].n);
    buf_add(&r->message, m.f[2].p, m.f[2].n);
    return 0;
}

/* One request to one instance; returns 0 or -1 (unreachable). */
static int ask(const struct conf *c, const char *instance, const char *line, const char *input,
               size_t input_len, int timeout_ms, struct reply *r)
{
    struct link l;
    if (connect_ctl(c, instance, &l) < 0) return -1;
    int rc = send_request(l.s, line, input, input_len) == 0 ? recv_reply(&l, timeout_ms, r) : -1;
    link_close(&l);
    return rc;
}

int ctl_ping(const struct conf *c, const char *instance, int timeout_ms)
{
    struct reply r;
    if (ask(c, instance, "status", NULL, 0, timeout_ms, &r) < 0) return 0;
    reply_free(&r);
    return 1;
}

/* ---------------- output ---------------- */

static void json_string(const char *p, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch == '\n') fputs("\\n", stdout);
        else if (ch == '\t') fputs("\\t", stdout);
        else if (ch < 0x20) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}

/* Print rows: TSV, or JSON objects keyed by the column names. */
static void print_rows(const struct reply *r)
{
    const char *rows = r->rows.data ? r->rows.data : "";
    size_t len = r->rows.len;
    if (!opt_json) {
        if (opt_header && r->cols.len && !printed_any_json) {
            printf("%.*s\n", (int)r->cols.len, r->cols.data);
            printed_any_json = 1;
        }
        fwrite(rows, 1, len, stdout);
        return;
    }
    char *cols[64];
    size_t ncols = 0;
    char *colbuf = strndup(r->cols.data ? r->cols.data : "", r->cols.len);
    for (char *save = NULL, *t = strtok_r(colbuf, "\t", &save); t && ncols < 64; t = strtok_r(NULL, "\t", &save))
        cols[ncols++] = t;
    const char *p = rows, *end = rows + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) nl = end;
        printf("%s{", printed_any_json ? ",\n " : "[");
        printed_any_json = 1;
        size_t col = 0;
        const char *f = p;
        while (f <= nl) {
            const char *tab = memchr(f, '\t', (size_t)(nl - f));
            if (!tab) tab = nl;
            if (col) putchar(',');
            char name[32];
            if (col < ncols) json_string(cols[col], strlen(cols[col]));
            else {
                snprintf(name, sizeof name, "field%zu", col);
                json_string(name, strlen(name));
            }
            putchar(':');
            json_string(f, (size_t)(tab - f));
            col++;
            f = tab + 1;
        }
        putchar('}');
        p = nl + 1;
    }
    free(colbuf);
}

static void json_end(void)
{
    if (opt_json) puts(printed_any_json ? "]" : "[]");
}

static int report(const char *instance, const struct reply *r)
{
    print_rows(r);
    if (r->message.len) fprintf(stderr, "%s: %.*s\n", instance, (int)r->message.len, r->message.data);
    return r->status;
}

/* ---------------- commands ---------------- */

/* Join argv with tabs into out. */
static void join_args(struct buf *out, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (i) buf_adds(out, "\t");
        buf_adds(out, argv[i]);
    }
}

/* Ask every instance (or those whose name starts with prefix). */
static int ask_all(const struct conf *c, const char *prefix, const char *line, int down_rows)
{
    struct instance all[MAX_INSTANCES];
    size_t n = ctl_instances(c, all, MAX_INSTANCES);
    int rc = EXIT_OK;
    for (size_t i = 0; i < n; i++) {
        if (prefix && strncmp(all[i].name, prefix, strlen(prefix)) != 0) continue;
        struct reply r;
        if (ask(c, all[i].name, line, NULL, 0, REPLY_TIMEOUT_MS, &r) < 0) {
            if (down_rows) {
                struct reply down = { 0 };
                buf_adds(&down.cols, "instance\trole\tpid\tversion\tepoch\tuptime\tstate");
                buf_addf(&down.rows, "%s\t%s\t-\t-\t-\t-\tdown\n", all[i].name, all[i].program + 5);
                print_rows(&down);
                reply_free(&down);
            } else {
                fprintf(stderr, "xmppctl: %s is not answering\n", all[i].name);
            }
            rc = EXIT_UNREACHABLE;
            continue;
        }
        int st = report(all[i].name, &r);
        if (st && rc == EXIT_OK) rc = st;
        reply_free(&r);
    }
    return rc;
}

static int shard_instance(const struct conf *c, const char *jid_arg, char *instance, size_t size)
{
    char norm[JID_STR_MAX], bare[JID_STR_MAX];
    if (jid_normalize(jid_arg, strlen(jid_arg), norm, sizeof norm) < 0 ||
        jid_bare_of(norm, strlen(norm), bare, sizeof bare) < 0) {
        fprintf(stderr, "xmppctl: '%s' is not a valid JID\n", jid_arg);
        return -1;
    }
    snprintf(instance, size, "sm-%u", jid_shard(bare, strlen(bare), c->sm_shards));
    return 0;
}

/* Read one line (without newline) from stdin, without echo on a tty. */
static int read_secret(const char *prompt, char *out, size_t size)
{
    struct termios old, noecho;
    int tty = isatty(0);
    if (tty) {
        fprintf(stderr, "%s", prompt);
        tcgetattr(0, &old);
        noecho = old;
        noecho.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(0, TCSANOW, &noecho);
    }
    char *ok = fgets(out, (int)size, stdin);
    if (tty) {
        tcsetattr(0, TCSANOW, &old);
        fputc('\n', stderr);
    }
    if (!ok) return -1;
    out[strcspn(out, "\r\n")] = '\0';
    return 0;
}

static int make_verifiers(const struct conf *c, const char *password, struct buf *out)
{
    struct scram_verifier v[SCRAM_MECH_COUNT];
    char line[SCRAM_AUTHPW_MAX];
    if (scram_make_all(password, c->scram_iterations, v) < 0) return -1;
    for (int i = 0; i < SCRAM_MECH_COUNT; i++) {
        if (scram_to_authpassword(&v[i], line, sizeof line) < 0) return -1;
        buf_adds(out, line);
        buf_adds(out, "\n");
    }
    return 0;
}

static int cmd_account(const struct conf *c, const char *verb, const char *jid)
{
    char instance[64], pw[4096], again[4096];
    if (shard_instance(c, jid, instance, sizeof instance) < 0) return EXIT_USAGE;
    struct buf line = { 0 }, input = { 0 };
    buf_addf(&line, "%s\t%s", verb, jid);
    int rc = EXIT_FAILED;
    if (strcmp(verb, "unregister") != 0) {
        if (read_secret("Password: ", pw, sizeof pw) < 0 || !pw[0]) {
            fprintf(stderr, "xmppctl: no password given on standard input\n");
            rc = EXIT_USAGE;
            goto out;
        }
        if (isatty(0) && (read_secret("Again: ", again, sizeof again) < 0 || strcmp(pw, again) != 0)) {
            fprintf(stderr, "xmppctl: the passwords differ\n");
            rc = EXIT_USAGE;
            goto out;
        }
        if (make_verifiers(c, pw, &input) < 0) {
            fprintf(stderr, "xmppctl: this password cannot be used (SASLprep refuses it)\n");
            rc = EXIT_USAGE;
            goto out;
        }
    }
    struct reply r;
    if (ask(c, instance, buf_cstr(&line), input.data, input.len, REPLY_TIMEOUT_MS, &r) < 0) {
        fprintf(stderr, "xmppctl: %s is not answering\n", instance);
        rc = EXIT_UNREACHABLE;
        goto out;
    }
    rc = report(instance, &r);
    reply_free(&r);
out:
    explicit_bzero(pw, sizeof pw);
    explicit_bzero(again, sizeof again);
    buf_free(&line);
    if (input.data) explicit_bzero(input.data, input.cap);
    buf_free(&input);
    return rc;
}

/* import-users: "jid<TAB>password" lines; pipelined per shard. */
static int cmd_import(const struct conf *c)
{
    struct link links[64];
    unsigned outstanding[64] = { 0 };
    memset(links, 0, sizeof links);
    char line[8192];
    unsigned long n = 0, failed = 0, lineno = 0;
    int rc = EXIT_OK;
    while (fgets(line, sizeof line, stdin)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || line[0] == '#') continue;
        char *tab = strchr(line, '\t');
        char instance[64];
        if (!tab || !tab[1] || shard_instance(c, (*tab = '\0', line), instance, sizeof instance) < 0) {
            fprintf(stderr, "xmppctl: line %lu: expected JID<TAB>PASSWORD\n", lineno);
            failed++;
            continue;
        }
        unsigned k = (unsigned)atoi(instance + 3); /* "sm-K" */
        if (k >= 64) {
            fprintf(stderr, "xmppctl: more than 64 shards are not supported here\n");
            rc = EXIT_FAILED;
            break;
        }
        if (!links[k].s && connect_ctl(c, instance, &links[k]) < 0) {
            fprintf(stderr, "xmppctl: %s is not answering\n", instance);
            rc = EXIT_UNREACHABLE;
            break;
        }
        struct buf req = { 0 }, input = { 0 };
        buf_addf(&req, "register\t%s", line);
        if (make_verifiers(c, tab + 1, &input) < 0) {
            fprintf(stderr, "xmppctl: line %lu: unusable password\n", lineno);
            failed++;
        } else if (send_request(links[k].s, buf_cstr(&req), input.data, input.len) == 0) {
            outstanding[k]++;
            n++;
        }
        buf_free(&req);
        buf_free(&input);
        while (outstanding[k] >= IMPORT_WINDOW) {
            struct reply r;
            if (recv_reply(&links[k], REPLY_TIMEOUT_MS, &r) < 0) { rc = EXIT_UNREACHABLE; goto out; }
            outstanding[k]--;
            if (r.status) { failed++; report(instance, &r); }
            reply_free(&r);
        }
    }
    for (unsigned k = 0; k < 64; k++) {
        while (links[k].s && outstanding[k]) {
            struct reply r;
            if (recv_reply(&links[k], REPLY_TIMEOUT_MS * 4, &r) < 0) { rc = EXIT_UNREACHABLE; goto out; }
            outstanding[k]--;
            if (r.status) { failed++; report("import", &r); }
            reply_free(&r);
        }
    }
out:
    for (unsigned k = 0; k < 64; k++) link_close(&links[k]);
    fprintf(stderr, "xmppctl: %lu accounts sent, %lu failed\n", n, failed);
    if (rc == EXIT_OK && failed) rc = EXIT_FAILED;
    return rc;
}

/* roster-import: "USER<TAB>CONTACT<TAB>SUBSCRIPTION[<TAB>NAME]" lines
 * (subscription none, to, from or both). Consecutive lines of one user go
 * to its shard as one "roster-import USER ITEM..." request (ITEM =
 * "CONTACT SUBSCRIPTION[ NAME]"; at most 60 items, as the daemons split a
 * control line into at most 64 fields), pipelined per shard like
 * import-users. Every answer carries the row "USER\tITEMS", so a refused
 * request counts all of its items as failed. */
static int cmd_roster_import(const struct conf *c)
{
    enum { BATCH_ITEMS = 60, BATCH_BYTES = 65536 };
    struct link links[64];
    unsigned outstanding[64] = { 0 };
    memset(links, 0, sizeof links);
    struct buf req = { 0 };
    char line[8192], batch_user[JID_STR_MAX] = "";
    unsigned batch_k = 0, batch_items = 0;
    unsigned long sent = 0, failed = 0, lineno = 0;
    int rc = EXIT_OK, eof = 0;
    while (!eof) {
        char *f[5], user[JID_STR_MAX] = "", norm[JID_STR_MAX], contact[JID_STR_MAX] = "", instance[64] = "";
        unsigned nf = 0;
        eof = !fgets(line, sizeof line, stdin);
        if (!eof) {
            lineno++;
            line[strcspn(line, "\r\n")] = '\0';
            if (!line[0] || line[0] == '#') continue;
            for (char *p = line; nf < 5;) {
                f[nf++] = p;
                char *tab = strchr(p, '\t');
                if (!tab) break;
                *tab = '\0';
                p = tab + 1;
            }
            if (nf < 3 || nf > 4 || (strcmp(f[2], "none") && strcmp(f[2], "to") && strcmp(f[2], "from") &&
                                     strcmp(f[2], "both"))) {
                fprintf(stderr, "xmppctl: line %lu: expected USER<TAB>CONTACT<TAB>none|to|from|both[<TAB>NAME]\n",
                        lineno);
                failed++;
                continue;
            }
            if (shard_instance(c, f[0], instance, sizeof instance) < 0 ||
                jid_normalize(f[0], strlen(f[0]), norm, sizeof norm) < 0 ||
                jid_bare_of(norm, strlen(norm), user, sizeof user) < 0) {
                failed++;
                continue;
            }
            if (jid_normalize(f[1], strlen(f[1]), contact, sizeof contact) < 0 ||
                jid_bare_of(contact, strlen(contact), norm, sizeof norm) < 0 || strcmp(contact, norm) != 0 ||
                strcmp(contact, user) == 0) {
                fprintf(stderr, "xmppctl: line %lu: '%s' is not a bare JID other than the user's\n", lineno, f[1]);
                failed++;
                continue;
            }
        }
        /* a new user, a full batch or the end: send what is collected */
        size_t add = eof ? 0 : strlen(contact) + strlen(f[2]) + (nf == 4 ? strlen(f[3]) + 1 : 0) + 3;
        if (batch_items && (eof || strcmp(batch_user, user) != 0 || batch_items >= BATCH_ITEMS ||
                            req.len + add > BATCH_BYTES)) {
            char shard[64];
            snprintf(shard, sizeof shard, "sm-%u", batch_k);
            if (!links[batch_k].s && connect_ctl(c, shard, &links[batch_k]) < 0) {
                fprintf(stderr, "xmppctl: %s is not answering\n", shard);
                rc = EXIT_UNREACHABLE;
                break;
            }
            if (send_request(links[batch_k].s, buf_cstr(&req), NULL, 0) == 0) {
                outstanding[batch_k]++;
                sent += batch_items;
            } else {
                failed += batch_items;
            }
            buf_clear(&req);
            batch_items = 0;
        }
        /* answers: while the window of a shard is full; at the end, all */
        for (unsigned k = 0; k < 64; k++) {
            while (outstanding[k] && (eof || outstanding[k] >= IMPORT_WINDOW)) {
                struct reply r;
                if (recv_reply(&links[k], eof ? REPLY_TIMEOUT_MS * 4 : REPLY_TIMEOUT_MS, &r) < 0) {
                    rc = EXIT_UNREACHABLE;
                    goto out;
                }
                outstanding[k]--;
                if (r.status) {
                    /* the row "USER\tITEMS": all of them failed */
                    const char *tab = r.rows.len ? memchr(r.rows.data, '\t', r.rows.len) : NULL;
                    failed += tab ? strtoul(tab + 1, NULL, 10) : 1;
                    fprintf(stderr, "sm-%u: %.*s\n", k, (int)r.message.len, r.message.data);
                }
                reply_free(&r);
            }
        }
        if (eof) break;
        unsigned k = (unsigned)atoi(instance + 3); /* "sm-K" */
        if (k >= 64) {
            fprintf(stderr, "xmppctl: more than 64 shards are not supported here\n");
            rc = EXIT_FAILED;
            break;
        }
        if (!batch_items) {
            snprintf(batch_user, sizeof batch_user, "%s", user);
            batch_k = k;
            buf_addf(&req, "roster-import\t%s", user);
        }
        buf_addf(&req, "\t%s %s", contact, f[2]);
        if (nf == 4) buf_addf(&req, " %s", f[3]);
        batch_items++;
    }
out:
    buf_free(&req);
    for (unsigned k = 0; k < 64; k++) link_close(&links[k]);
    fprintf(stderr, "xmppctl: %lu roster items sent, %lu failed\n", sent, failed);
    if (rc == EXIT_OK && failed) rc = EXIT_FAILED;
    return rc;
}

static int cmd_loglevel(const struct conf *c, int argc, char **argv)
{
    /* loglevel | loglevel LEVEL | loglevel DAEMON [LEVEL] */
    const char *target = NULL, *level = NULL;
    if (argc == 2) {
        if (strchr(argv[1], '-') || strcmp(argv[1], "sm") == 0 || strcmp(argv[1], "c2s") == 0 ||
            strcmp(argv[1], "listen") == 0 || strcmp(argv[1], "router") == 0) target = argv[1];
        else level = argv[1];
    } else if (argc == 3) {
        target = argv[1];
        level = argv[2];
    } else if (argc != 1) {
        return EXIT_USAGE;
    }
    char line[128];
    snprintf(line, sizeof line, "loglevel%s%s", level ? "\t" : "", level ? level : "");
    return ask_all(c, target, line, 0);
}

/* ---------------- backup and restore ---------------- */

#define BACKUP_MANIFEST "xmppd-backup.txt"
#define BACKUP_FORMAT 1
#define BACKUP_TIMEOUT_MS 600000 /* a shard copies its files in one go: allow for big ones */
#define MAX_SHARDS 64            /* the range of sm_shards */

/* dir as an absolute path (the shards do not share our working directory). */
static int absolute_dir(const char *dir, char *out, size_t size)
{
    char cwd[4096];
    int n;
    if (dir[0] == '/') n = snprintf(out, size, "%s", dir);
    else if (getcwd(cwd, sizeof cwd)) n = snprintf(out, size, "%s/%s", strcmp(cwd, "/") ? cwd : "", dir);
    else return -1;
    if (n < 0 || (size_t)n >= size) return -1;
    while (n > 1 && out[n - 1] == '/') out[--n] = '\0';
    return 0;
}

/* 0 no such directory, 1 empty, 2 something in it (or not a directory), -1 error (errno). */
static int dir_state(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : errno == ENOTDIR ? 2 : -1;
    int full = 0;
    struct dirent *e;
    while (!full && (e = readdir(d)) != NULL) full = strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return full ? 2 : 1;
}

/* Ask every shard `line` at once and collect the answers (the shards
 * work in parallel). Every shard must answer `status` first, so nothing
 * starts while one is down. got[k] tells which replies are filled. */
static int ask_shards(const struct conf *c, const char *line, struct reply *rep, int *got)
{
    struct link links[MAX_SHARDS];
    char instance[64];
    unsigned n = c->sm_shards;
    int rc = EXIT_OK;
    memset(links, 0, sizeof links);
    for (unsigned k = 0; k < n; k++) {
        got[k] = 0;
        snprintf(instance, sizeof instance, "sm-%u", k);
        if (!ctl_ping(c, instance, REPLY_TIMEOUT_MS)) {
            fprintf(stderr, "xmppctl: %s is not answering\n", instance);
            rc = EXIT_UNREACHABLE;
        }
    }
    if (rc != EXIT_OK) return rc;
    for (unsigned k = 0; k < n; k++) {
        snprintf(instance, sizeof instance, "sm-%u", k);
        if (connect_ctl(c, instance, &links[k]) < 0 || send_request(links[k].s, line, NULL, 0) < 0) {
            fprintf(stderr, "xmppctl: %s is not answering\n", instance);
            rc = EXIT_UNREACHABLE;
        }
    }
    for (unsigned k = 0; k < n; k++) {
        if (!links[k].s) continue;
        if (recv_reply(&links[k], BACKUP_TIMEOUT_MS, &rep[k]) == 0) {
            got[k] = 1;
        } else {
            fprintf(stderr, "xmppctl: sm-%u did not answer\n", k);
            rc = EXIT_UNREACHABLE;
        }
        link_close(&links[k]);
    }
    return rc;
}

/* fsync the directory dir. */
static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* DIR/xmppd-backup.txt from the shards' rows (instance, file, records,
 * bytes, ms): written last, so a directory with a manifest holds a
 * complete backup. */
static int write_manifest(const struct conf *c, const char *dir, const struct reply *rep, unsigned n)
{
    char path[4200], tmp[4300], date[64];
    snprintf(path, sizeof path, "%s/%s", dir, BACKUP_MANIFEST);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    time_t now = time(NULL);
    struct tm tm;
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    fprintf(f, "xmppd-backup %d\n", BACKUP_FORMAT);
    fprintf(f, "# made by `xmppctl backup`, loaded by `xmppctl restore` (xmppctl(8));\n");
    fprintf(f, "# file lines: name, records, bytes\n");
    fprintf(f, "version %s\n", PACKAGE_VERSION);
    fprintf(f, "date %s\n", date);
    fprintf(f, "sm_shards %u\n", c->sm_shards);
    for (unsigned k = 0; k < n; k++) {
        const char *p = rep[k].rows.data ? rep[k].rows.data : "", *end = p + rep[k].rows.len;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            if (!nl) nl = end;
            char row[1024], *field[5], *save = NULL;
            int nf = 0;
            snprintf(row, sizeof row, "%.*s", (int)(nl - p), p);
            for (char *t = strtok_r(row, "\t", &save); t && nf < 5; t = strtok_r(NULL, "\t", &save)) field[nf++] = t;
            if (nf >= 4) fprintf(f, "file %s %s %s\n", field[1], field[2], field[3]);
            p = nl + 1;
        }
    }
    int ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) < 0 || sync_dir(dir) < 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    return 0;
}

/* backup [--force] DIR */
static int cmd_backup(const struct conf *c, int argc, char **argv)
{
    const char *arg = NULL;
    int force = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--force") == 0 || strcmp(argv[i], "-f") == 0) force = 1;
        else if (!arg) arg = argv[i];
        else arg = "";
    }
    if (!arg || !*arg) {
        fprintf(stderr, "usage: xmppctl backup [--force] DIR\n");
        return EXIT_USAGE;
    }
    char dir[4096], line[4200], manifest[4200];
    if (absolute_dir(arg, dir, sizeof dir) < 0 || strchr(dir, '\t') || strchr(dir, '\n')) {
        fprintf(stderr, "xmppctl: %s: unusable directory name\n", arg);
        return EXIT_USAGE;
    }
    if (c->sm_shards > MAX_SHARDS) return EXIT_FAILED;
    int st = dir_state(dir);
    if (st < 0) {
        fprintf(stderr, "xmppctl: %s: %s\n", dir, strerror(errno));
        return EXIT_FAILED;
    }
    if (st == 2 && !force) {
        fprintf(stderr, "xmppctl: %s exists and is not empty; choose a new directory, or give --force to write "
                "into it\n", dir);
        return EXIT_FAILED;
    }
    /* an old manifest must not vouch for what this run may leave half done */
    snprintf(manifest, sizeof manifest, "%s/%s", dir, BACKUP_MANIFEST);
    if (unlink(manifest) < 0 && errno != ENOENT && errno != ENOTDIR) {
        fprintf(stderr, "xmppctl: cannot remove %s: %s\n", manifest, strerror(errno));
        return EXIT_FAILED;
    }
    /* the shards create DIR and DIR/sm-K themselves, as the user they run as */
    snprintf(line, sizeof line, "backup\t%s\t%u", dir, c->sm_shards);
    struct reply rep[MAX_SHARDS];
    int got[MAX_SHARDS];
    memset(rep, 0, sizeof rep);
    int rc = ask_shards(c, line, rep, got);
    for (unsigned k = 0; k < c->sm_shards; k++) {
        if (!got[k]) continue;
        char instance[64];
        snprintf(instance, sizeof instance, "sm-%u", k);
        int status = report(instance, &rep[k]);
        if (status && rc == EXIT_OK) rc = status;
    }
    if (rc == EXIT_OK && write_manifest(c, dir, rep, c->sm_shards) < 0) {
        fprintf(stderr, "xmppctl: cannot write %s: %s\n", manifest, strerror(errno));
        rc = EXIT_FAILED;
    }
    if (rc != EXIT_OK) fprintf(stderr, "xmppctl: the backup in %s is not complete (no %s)\n", dir, BACKUP_MANIFEST);
    for (unsigned k = 0; k < c->sm_shards; k++) reply_free(&rep[k]);
    return rc;
}

/* restore DIR */
static int cmd_restore(const struct conf *c, int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: xmppctl restore DIR\n");
        return EXIT_USAGE;
    }
    char dir[4096], path[4200], text[4352], line[4200];
    if (absolute_dir(argv[1], dir, sizeof dir) < 0 || strchr(dir, '\t') || strchr(dir, '\n')) {
        fprintf(stderr, "xmppctl: %s: unusable directory name\n", argv[1]);
        return EXIT_USAGE;
    }
    snprintf(path, sizeof path, "%s/%s", dir, BACKUP_MANIFEST);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "xmppctl: %s: %s: not a backup made by xmppctl backup\n", path, strerror(errno));
        return EXIT_USAGE;
    }
    int rc = EXIT_OK, format = -1, lineno = 0;
    unsigned shards = 0, files = 0, per_shard[MAX_SHARDS] = { 0 };
    struct buf listed = { 0 }; /* "NAME\tRECORDS\n" per file line */
    while (rc == EXIT_OK && fgets(text, sizeof text, f)) {
        char name[4096];
        unsigned long long records, bytes;
        unsigned k;
        lineno++;
        text[strcspn(text, "\n")] = '\0';
        if (lineno == 1) {
            if (sscanf(text, "xmppd-backup %d", &format) != 1) {
                fprintf(stderr, "xmppctl: %s is not a backup manifest\n", path);
                rc = EXIT_USAGE;
            } else if (format != BACKUP_FORMAT) {
                fprintf(stderr, "xmppctl: %s: format %d; this xmppctl reads format %d\n", path, format,
                        BACKUP_FORMAT);
                rc = EXIT_FAILED;
            }
        } else if (sscanf(text, "sm_shards %u", &shards) == 1) {
            continue;
        } else if (strncmp(text, "file ", 5) == 0) {
            struct stat st;
            if (sscanf(text, "file %4095s %llu %llu", name, &records, &bytes) != 3 || strstr(name, "..") ||
                sscanf(name, "sm-%u/", &k) != 1 || k >= MAX_SHARDS) {
                fprintf(stderr, "xmppctl: %s:%d: unreadable file line\n", path, lineno);
                rc = EXIT_USAGE;
                break;
            }
            snprintf(line, sizeof line, "%s/%s", dir, name);
            if (stat(line, &st) < 0) {
                fprintf(stderr, "xmppctl: %s: %s: the backup is incomplete\n", line, strerror(errno));
                rc = EXIT_FAILED;
            } else if ((unsigned long long)st.st_size != bytes) {
                fprintf(stderr, "xmppctl: %s has %lld bytes, the manifest says %llu: the backup was changed or "
                        "damaged\n", line, (long long)st.st_size, bytes);
                rc = EXIT_FAILED;
            }
            per_shard[k]++;
            files++;
            buf_addf(&listed, "%s\t%llu\n", name, records);
        }
    }
    fclose(f);
    if (rc == EXIT_OK && (format < 0 || !shards || !files)) {
        fprintf(stderr, "xmppctl: %s: not a complete backup manifest\n", path);
        rc = EXIT_USAGE;
    }
    if (rc == EXIT_OK && shards != c->sm_shards) {
        fprintf(stderr, "xmppctl: %s holds a backup of %u shard(s), but this server has sm_shards = %u; users are "
                "placed on the shards by a hash over their count, so a backup loads only into a server with "
                "the same count\n", dir, shards, c->sm_shards);
        rc = EXIT_FAILED;
    }
    for (unsigned k = 0; rc == EXIT_OK && k < shards && k < MAX_SHARDS; k++)
        if (!per_shard[k]) {
            fprintf(stderr, "xmppctl: %s lists no file of sm-%u\n", path, k);
            rc = EXIT_FAILED;
        }
    struct reply rep[MAX_SHARDS];
    int got[MAX_SHARDS] = { 0 };
    memset(rep, 0, sizeof rep);
    /* every shard checks its copies first (tdb_check, record counts), so
     * a damaged backup changes nothing anywhere */
    if (rc == EXIT_OK) {
        snprintf(line, sizeof line, "restore-check\t%s\t%u", dir, c->sm_shards);
        rc = ask_shards(c, line, rep, got);
    }
    for (unsigned k = 0; k < c->sm_shards && k < MAX_SHARDS; k++) {
        if (rc != EXIT_UNREACHABLE && got[k] && rep[k].status) {
            char instance[64];
            snprintf(instance, sizeof instance, "sm-%u", k);
            if (rc == EXIT_OK) rc = rep[k].status;
            fprintf(stderr, "%s: %.*s\n", instance, (int)rep[k].message.len, rep[k].message.data);
        }
        const char *p = rep[k].rows.data ? rep[k].rows.data : "", *end = p + rep[k].rows.len;
        while (rc == EXIT_OK && p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            if (!nl) nl = end;
            char row[1024], name[1024], want[1100];
            unsigned long long records;
            snprintf(row, sizeof row, "%.*s", (int)(nl - p), p);
            if (sscanf(row, "%*[^\t]\t%1023[^\t]\t%llu", name, &records) == 2) {
                snprintf(want, sizeof want, "%s\t%llu\n", name, records);
                snprintf(row, sizeof row, "%s\t", name);
                const char *hit = strstr(buf_cstr(&listed), row);
                if (!hit || (hit != listed.data && hit[-1] != '\n')) {
                    fprintf(stderr, "xmppctl: %s lists no %s, which sm-%u holds\n", path, name, k);
                    rc = EXIT_FAILED;
                } else if (strncmp(hit, want, strlen(want)) != 0) {
                    fprintf(stderr, "xmppctl: %s/%s holds %llu records, not what %s says\n", dir, name, records,
                            BACKUP_MANIFEST);
                    rc = EXIT_FAILED;
                }
            }
            p = nl + 1;
        }
        reply_free(&rep[k]);
    }
    buf_free(&listed);
    if (rc != EXIT_OK) {
        if (rc != EXIT_USAGE) fprintf(stderr, "xmppctl: nothing was restored\n");
        return rc;
    }
    snprintf(line, sizeof line, "restore\t%s\t%u", dir, c->sm_shards);
    memset(rep, 0, sizeof rep);
    rc = ask_shards(c, line, rep, got);
    unsigned done = 0;
    for (unsigned k = 0; k < c->sm_shards; k++) {
        if (!got[k]) continue;
        char instance[64];
        snprintf(instance, sizeof instance, "sm-%u", k);
        int status = report(instance, &rep[k]);
        if (status && rc == EXIT_OK) rc = status;
        done += status == 0;
        reply_free(&rep[k]);
    }
    if (done && done < c->sm_shards)
        fprintf(stderr, "xmppctl: the restore succeeded on %u of %u shards only: the others keep their data\n", done,
                c->sm_shards);
    return rc;
}

/* Run from a build tree without a configuration: the state lives in the
 * checkout (./state), so `./dev up` needs neither root nor a config file. */
static void default_dev_state_dir(void)
{
    char self[4096];
    if (getenv("XMPPD_STATE_DIR")) return;
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return;
    self[n] = '\0';
    size_t bl = strlen(XMPPD_ABS_BUILDDIR);
    if (strncmp(self, XMPPD_ABS_BUILDDIR "/", bl + 1) != 0) return;
    char state[4200];
    snprintf(state, sizeof state, "%s/state", XMPPD_ABS_SRCDIR);
    setenv("XMPPD_STATE_DIR", state, 1);
}

/* Commands served by modules in the user's shard ("mod NAME USER ARG..."),
 * with the numbers of words they take (the command and USER included). */
static int is_module_command(const char *cmd, int argc)
{
    static const struct { const char *name; int min, max; } cmds[] = {
        { "vcard", 2, 3 }, { "block", 3, 3 }, { "unblock", 2, 3 }, { "blocklist", 2, 2 },
    };
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
        if (strcmp(cmd, cmds[i].name) == 0) return argc >= cmds[i].min && argc <= cmds[i].max;
    return 0;
}

static void usage(FILE *to)
{
    fputs("usage: xmppctl [-c FILE] [--json] [--header] COMMAND [ARGS]\n"
          "  start | stop                  run or stop every daemon (no systemd)\n"
          "  status                        which daemons run, versions, epochs, uptimes\n"
          "  stats                         counters of every daemon\n"
          "  register JID | passwd JID     password from standard input or a prompt\n"
          "  unregister JID                remove an account\n"
          "  import-users                  JID<TAB>PASSWORD lines on standard input\n"
          "  users [DOMAIN]                list accounts\n"
          "  sessions                      list sessions\n"
          "  kick JID                      end a session (a bare JID: all of them)\n"
          "  roster USER                   show a user's roster\n"
          "  roster-add USER CONTACT [NAME] [GROUP...] [--subscription both|to|from|none]\n"
          "                                add or change a roster item, pushed to the user\n"
          "  roster-del USER CONTACT       remove a roster item, pushed to the user\n"
          "  roster-import                 USER<TAB>CONTACT<TAB>none|to|from|both[<TAB>NAME]\n"
          "                                lines on standard input: roster-add in bulk\n"
          "  offline USER [count|list|purge]  a user's stored offline messages\n"
          "  modules [HOST]                the modules each host has loaded\n"
          "  vcard USER [delete]           a user's vCard (XEP-0054)\n"
          "  block USER JID | unblock USER [JID] | blocklist USER\n"
          "                                a user's block list (XEP-0191)\n"
          "  mod COMMAND USER [ARG...]     a module's command (external modules too)\n"
          "  loglevel [DAEMON] [LEVEL]     show or set log levels at run time\n"
          "  reload                        re-read configuration and certificates\n"
          "  backup [--force] DIR          consistent copy of all data into DIR\n"
          "  restore DIR                   load such a copy into the running server\n"
          "  peers                         the router's view of the daemons\n"
          "  trace on|off [TARGET] [--bodies]  set or clear a trace rule on every daemon\n"
          "  trace list                    the trace rules in force\n"
          "  trace [TARGET] [--count N] [--seconds S] [--bodies]\n"
          "                                follow stanzas through the daemons, live\n"
          "See xmppctl(8), xmppd-trace(7).\n", to);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' }, { "json", no_argument, NULL, 'j' },
        { "header", no_argument, NULL, 'H' },       { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },      { NULL, 0, NULL, 0 },
    };
    const char *conf_path = NULL;
    int opt;
    /* options may also follow the command: `xmppctl start -c FILE` */
    while ((opt = getopt_long(argc, argv, "+c:jHhV", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': conf_path = optarg; break;
        case 'j': opt_json = 1; break;
        case 'H': opt_header = 1; break;
        case 'h': usage(stdout); return EXIT_OK;
        case 'V': printf("xmppctl %s\n", PACKAGE_VERSION); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    int cargc = argc - optind;
    char **cargv = argv + optind;
    if (cargc < 1) {
        usage(stderr);
        return EXIT_USAGE;
    }
    /* trailing options after the command */
    for (int i = 1; i < cargc;) {
        if ((strcmp(cargv[i], "-c") == 0 || strcmp(cargv[i], "--config") == 0) && i + 1 < cargc) {
            conf_path = cargv[i + 1];
            memmove(&cargv[i], &cargv[i + 2], (size_t)(cargc - i - 2) * sizeof *cargv);
            cargc -= 2;
        } else if (strcmp(cargv[i], "--json") == 0 || strcmp(cargv[i], "--header") == 0) {
            if (cargv[i][2] == 'j') opt_json = 1;
            else opt_header = 1;
            memmove(&cargv[i], &cargv[i + 1], (size_t)(cargc - i - 1) * sizeof *cargv);
            cargc--;
        } else {
            i++;
        }
    }
    if (!conf_path && getenv("XMPPD_CONF")) conf_path = getenv("XMPPD_CONF");
    if (!conf_path) default_dev_state_dir();
    struct conf c;
    char err[512];
    if (conf_load(conf_path, &c, err, sizeof err) < 0) {
        fprintf(stderr, "xmppctl: configuration: %s\n", err);
        return EXIT_FAILED;
    }
    const char *cmd = cargv[0];
    int rc = EXIT_USAGE;
    struct buf line = { 0 };
    if (strcmp(cmd, "start") == 0 && cargc == 1) {
        rc = ctl_start(&c, conf_path);
    } else if (strcmp(cmd, "stop") == 0 && cargc == 1) {
        rc = ctl_stop(&c);
    } else if ((strcmp(cmd, "status") == 0 || strcmp(cmd, "stats") == 0 || strcmp(cmd, "reload") == 0) && cargc == 1) {
        rc = ask_all(&c, NULL, cmd, strcmp(cmd, "status") == 0);
        json_end();
    } else if ((strcmp(cmd, "register") == 0 || strcmp(cmd, "passwd") == 0 || strcmp(cmd, "unregister") == 0) &&
               cargc == 2) {
        rc = cmd_account(&c, cmd, cargv[1]);
    } else if (strcmp(cmd, "import-users") == 0 && cargc == 1) {
        rc = cmd_import(&c);
    } else if (strcmp(cmd, "roster-import") == 0 && cargc == 1) {
        rc = cmd_roster_import(&c);
    } else if ((strcmp(cmd, "users") == 0 && cargc <= 2) || (strcmp(cmd, "sessions") == 0 && cargc == 1)) {
        join_args(&line, cargc, cargv);
        rc = ask_all(&c, "sm-", buf_cstr(&line), 0);
        json_end();
    } else if ((strcmp(cmd, "kick") == 0 && cargc == 2) ||
               ((strcmp(cmd, "roster") == 0 || strcmp(cmd, "roster-add") == 0 || strcmp(cmd, "roster-del") == 0 ||
                 strcmp(cmd, "offline") == 0) && cargc >= 2)) {
        /* the shard of the user answers (it checks the arguments) */
        char instance[64];
        struct reply r;
        join_args(&line, cargc, cargv);
        if (shard_instance(&c, cargv[1], instance, sizeof instance) < 0) rc = EXIT_USAGE;
        else if (ask(&c, instance, buf_cstr(&line), NULL, 0, REPLY_TIMEOUT_MS, &r) < 0) rc = EXIT_UNREACHABLE;
        else {
            rc = report(instance, &r);
            reply_free(&r);
        }
        json_end();
    } else if (is_module_command(cmd, cargc) || (strcmp(cmd, "mod") == 0 && cargc >= 3)) {
        /* a module's command (xmppd-modules(7)), run by the user's shard:
         * the built-in ones by name, any module's (external ones too) as
         * `mod NAME USER [ARG...]` */
        char instance[64];
        struct reply r;
        int generic = strcmp(cmd, "mod") == 0;
        if (!generic) buf_adds(&line, "mod\t");
        join_args(&line, cargc, cargv);
        if (shard_instance(&c, cargv[generic ? 2 : 1], instance, sizeof instance) < 0) rc = EXIT_USAGE;
        else if (ask(&c, instance, buf_cstr(&line), NULL, 0, REPLY_TIMEOUT_MS, &r) < 0) rc = EXIT_UNREACHABLE;
        else {
            rc = report(instance, &r);
            reply_free(&r);
        }
        json_end();
    } else if (strcmp(cmd, "modules") == 0 && cargc <= 2) {
        /* every shard loads the same modules: the first one answers */
        join_args(&line, cargc, cargv);
        struct reply r;
        if (ask(&c, "sm-0", buf_cstr(&line), NULL, 0, REPLY_TIMEOUT_MS, &r) < 0) rc = EXIT_UNREACHABLE;
        else {
            rc = report("sm-0", &r);
            reply_free(&r);
        }
        json_end();
    } else if (strcmp(cmd, "loglevel") == 0) {
        rc = cmd_loglevel(&c, cargc, cargv);
        json_end();
    } else if (strcmp(cmd, "backup") == 0 || strcmp(cmd, "restore") == 0) {
        join_args(&line, cargc, cargv); /* its own usage line, not the whole list */
        rc = cmd[0] == 'b' ? cmd_backup(&c, cargc, cargv) : cmd_restore(&c, cargc, cargv);
        json_end();
    } else if (strcmp(cmd, "peers") == 0 && cargc == 1) {
        rc = ask_all(&c, "router-", "peers", 0);
        json_end();
    } else if (strcmp(cmd, "trace") == 0) {
        rc = ctl_trace(&c, cargc, cargv, opt_json); /* xmppctl_trace.c; prints its own usage */
        if (rc == EXIT_USAGE) buf_adds(&line, "trace");
    }
    if (rc == EXIT_USAGE && !line.len) usage(stderr);
    if (rc == EXIT_UNREACHABLE) fprintf(stderr, "xmppctl: a daemon did not answer (is the server running?)\n");
    buf_free(&line);
    conf_free(&c);
    if (zctx) zmq_ctx_term(zctx);
    return rc;
}
