/* xmppctl_start.c - `xmppctl start` and `stop`: run the whole set of
 * daemons without systemd (development, tests, benchmarks). Each daemon
 * runs detached with its log in <state_dir>/log/<instance>.log and its pid
 * in <run_dir>/<instance>.pid; start returns once every one answers on its
 * control socket. A host without a configured certificate gets a
 * self-signed ECDSA P-256 one in <state_dir>/tls/ (DESIGN §10: half the
 * handshake CPU of RSA-2048). */
#include "config.h"
#include "xmppctl.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define READY_TIMEOUT_MS 15000
#define STOP_TIMEOUT_MS 8000

size_t ctl_instances(const struct conf *c, struct instance *out, size_t max)
{
    size_t n = 0;
#define ADD(prog, ...)                                                        \
    do {                                                                      \
        if (n < max) {                                                        \
            snprintf(out[n].name, sizeof out[n].name, __VA_ARGS__);           \
            out[n].program = prog;                                            \
            n++;                                                              \
        }                                                                     \
    } while (0)
    ADD("xmpp-router", "router-1");
    for (unsigned i = 0; i < c->sm_shards; i++) ADD("xmpp-sm", "sm-%u", i);
    for (unsigned i = 1; i <= c->c2s_instances; i++) ADD("xmpp-c2s", "c2s-%u", i);
    for (unsigned i = 1; i <= c->listen_instances; i++) ADD("xmpp-listen", "listen-%u", i);
#undef ADD
    return n;
}

/* Where the daemons are: beside xmppctl in the build tree, else SBINDIR. */
static void daemon_path(const char *program, char *out, size_t size)
{
    const char *env = getenv("XMPPD_BINDIR");
    if (env && *env) {
        snprintf(out, size, "%s/%s", env, program);
        return;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash && slash - self >= 12 && strncmp(slash - 12, "/cmd/xmppctl", 12) == 0) {
            *slash = '\0';
            snprintf(out, size, "%s/../%s/%s", self, program, program);
            if (access(out, X_OK) == 0) return;
        }
        if (slash) {
            *slash = '\0';
            snprintf(out, size, "%s/%s", self, program);
            if (access(out, X_OK) == 0) return;
        }
    }
    snprintf(out, size, "%s/%s", SBINDIR, program);
}

static void pid_path(const struct conf *c, const char *instance, char *out, size_t size)
{
    snprintf(out, size, "%s/%s.pid", c->run_dir, instance);
}

static pid_t read_pid(const struct conf *c, const char *instance)
{
    char path[4096];
    pid_path(c, instance, path, sizeof path);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    long pid = 0;
    if (fscanf(f, "%ld", &pid) != 1) pid = 0;
    fclose(f);
    return (pid_t)pid;
}

/* The pid is alive and still one of our daemons (pids get reused). */
static int is_our_daemon(pid_t pid, const char *program)
{
    if (pid <= 0 || kill(pid, 0) < 0) return 0;
    char path[64], cmd[4096];
    snprintf(path, sizeof path, "/proc/%ld/cmdline", (long)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(cmd, 1, sizeof cmd - 1, f);
    fclose(f);
    cmd[n] = '\0';
    const char *base = strrchr(cmd, '/');
    return strstr(base ? base : cmd, program) != NULL;
}

/* ---------------- development certificate ---------------- */

static int write_cert(const char *domain, const char *crt_path, const char *key_path)
{
    int rc = -1;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    FILE *f = NULL;
    if (!key || !x) goto out;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(util_random_u64() & 0x7fffffff));
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 365L * 24 * 3600);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)domain, -1, -1, 0);
    X509_set_issuer_name(x, name);
    char san[1100];
    snprintf(san, sizeof san, "DNS:%s", domain);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
    if (!ext) goto out;
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    if (!X509_sign(x, key, EVP_sha256())) goto out;
    int fd = open(key_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || !(f = fdopen(fd, "w"))) {
        if (fd >= 0) close(fd);
        goto out;
    }
    if (!PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)) goto out;
    fclose(f);
    f = fopen(crt_path, "w");
    if (!f || !PEM_write_X509(f, x)) goto out;
    rc = 0;
out:
    if (f) fclose(f);
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}

static int ensure_certificates(const struct conf *c)
{
    char dir[4096], crt[4096], key[4096];
    for (size_t i = 0; i < c->n_hosts; i++) {
        const struct conf_host *h = &c->hosts[i];
        if (h->tls_cert) continue;
        conf_tls_paths(c, h, crt, key, sizeof crt);
        if (access(crt, R_OK) == 0) continue;
        snprintf(dir, sizeof dir, "%s/tls", c->state_dir);
        if (util_mkdir_p(dir, 0700) < 0 || write_cert(h->domain, crt, key) < 0) {
            fprintf(stderr, "xmppctl: cannot create a certificate for %s in %s\n", h->domain, dir);
            return -1;
        }
        fprintf(stderr, "xmppctl: created a self-signed certificate for %s: %s\n", h->domain, crt);
    }
    return 0;
}

/* ---------------- start / stop ---------------- */

static pid_t spawn(const struct conf *c, const char *conf_path, const struct instance *in)
{
    char bin[4096], logpath[4096], logdir[4096];
    daemon_path(in->program, bin, sizeof bin);
    snprintf(logdir, sizeof logdir, "%s/log", c->state_dir);
    if (util_mkdir_p(logdir, 0750) < 0) return -1;
    snprintf(logpath, sizeof logpath, "%s/%s.log", logdir, in->name);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid > 0) return pid;
    /* child: detach, log to the file, exec */
    setsid();
    int devnull = open("/dev/null", O_RDWR);
    int logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0640);
    if (devnull < 0 || logfd < 0) _exit(127);
    dup2(devnull, 0);
    dup2(logfd, 1);
    dup2(logfd, 2);
    if (!conf_path) setenv("XMPPD_STATE_DIR", c->state_dir, 1);
    if (conf_path) execl(bin, in->program, "-c", conf_path, "-i", in->name, (char *)NULL);
    else execl(bin, in->program, "-i", in->name, (char *)NULL);
    dprintf(2, "<3>xmppctl: cannot run %s: %s\n", bin, strerror(errno));
    _exit(127);
}

static int write_pid(const struct conf *c, const char *instance, pid_t pid)
{
    char path[4096];
    pid_path(c, instance, path, sizeof path);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "%ld\n", (long)pid);
    return fclose(f);
}

int ctl_start(const struct conf *c, const char *conf_path)
{
    struct instance all[MAX_INSTANCES];
    size_t n = ctl_instances(c, all, MAX_INSTANCES);
    if (util_mkdir_p(c->state_dir, 0750) < 0 || util_mkdir_p(c->run_dir, 0750) < 0) {
        fprintf(stderr, "xmppctl: cannot create %s: %s\n", c->run_dir, strerror(errno));
        return EXIT_FAILED;
    }
    if (ensure_certificates(c) < 0) return EXIT_FAILED;
    char abs_conf[PATH_MAX];
    if (conf_path && !realpath(conf_path, abs_conf)) return EXIT_FAILED;
    for (size_t i = 0; i < n; i++) {
        pid_t old = read_pid(c, all[i].name);
        if (is_our_daemon(old, all[i].program) && ctl_ping(c, all[i].name, 1000)) continue;
        pid_t pid = spawn(c, conf_path ? abs_conf : NULL, &all[i]);
        if (pid < 0 || write_pid(c, all[i].name, pid) < 0) {
            fprintf(stderr, "xmppctl: cannot start %s\n", all[i].name);
            return EXIT_FAILED;
        }
        /* wait for this one before the next: the order matters for a fast start */
        struct timespec t0, now;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
            int status;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                fprintf(stderr, "xmppctl: %s exited at start; see %s/log/%s.log\n", all[i].name,
                        c->state_dir, all[i].name);
                return EXIT_FAILED;
            }
            if (ctl_ping(c, all[i].name, 200)) break;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 > READY_TIMEOUT_MS) {
                fprintf(stderr, "xmppctl: %s did not become ready; see %s/log/%s.log\n", all[i].name,
                        c->state_dir, all[i].name);
                return EXIT_FAILED;
            }
        }
    }
    return EXIT_OK;
}

int ctl_stop(const struct conf *c)
{
    struct instance all[MAX_INSTANCES];
    size_t n = ctl_instances(c, all, MAX_INSTANCES);
    int rc = EXIT_OK;
    /* reverse order: listen first (clients get system-shutdown), router last */
    for (size_t i = n; i-- > 0;) {
        pid_t pid = read_pid(c, all[i].name);
        char path[4096];
        pid_path(c, all[i].name, path, sizeof path);
        if (!is_our_daemon(pid, all[i].program)) {
            unlink(path);
            continue;
        }
        kill(pid, SIGTERM);
        int waited = 0;
        while (is_our_daemon(pid, all[i].program) && waited < STOP_TIMEOUT_MS) {
            waitpid(pid, NULL, WNOHANG);
            usleep(20000); /* xmppctl is not an event loop: polling is fine here */
            waited += 20;
        }
        if (is_our_daemon(pid, all[i].program)) {
            fprintf(stderr, "xmppctl: %s did not stop; killing it\n", all[i].name);
            kill(pid, SIGKILL);
            rc = EXIT_FAILED;
        }
        unlink(path);
    }
    return rc;
}
