/* store.c - tdb with grouped commits (store.h). One transaction per loop
 * turn at most: the first write of a turn starts it, the turn's end
 * commits it (about 0.6 ms here, DESIGN §4), then every write's callback
 * runs. Opened with TDB_DISALLOW_NESTING: a nested commit could otherwise
 * be undone silently by the outer one (DESIGN §10). */
#include "config.h"
#include "store.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <tdb.h>
#include <time.h>
#include <unistd.h>

struct pending {
    store_done_cb cb;
    void *arg;
};

struct store {
    struct tdb_context *tdb;
    loop_t *loop;
    char *path;
    int in_txn;
    struct pending *waiting;
    size_t nwaiting, capwaiting;
    struct store_stats st;
};

static void turn_end(loop_t *loop, void *arg)
{
    (void)loop;
    store_commit(arg);
}

store_t *store_open(loop_t *loop, const char *path, int nosync)
{
    store_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    int flags = TDB_DEFAULT | TDB_DISALLOW_NESTING | TDB_INCOMPATIBLE_HASH;
    if (nosync) flags |= TDB_NOSYNC;
    s->tdb = tdb_open(path, 0, flags, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (!s->tdb) {
        log_err("store: cannot open %s: %s", path, strerror(errno));
        free(s);
        return NULL;
    }
    s->path = strdup(path);
    s->loop = loop;
    if (loop) loop_on_turn_end(loop, LOOP_WORK, turn_end, s);
    return s;
}

static void finish_waiting(store_t *s, int ok)
{
    /* callbacks may write again (a new transaction): work on a snapshot */
    size_t n = s->nwaiting;
    struct pending *w = s->waiting;
    s->waiting = NULL;
    s->nwaiting = s->capwaiting = 0;
    for (size_t i = 0; i < n; i++)
        if (w[i].cb) w[i].cb(w[i].arg, ok);
    free(w);
}

int store_commit(store_t *s)
{
    if (!s->in_txn) return 0;
    s->in_txn = 0;
    int ok = tdb_transaction_commit(s->tdb) == 0;
    if (ok) {
        s->st.commits++;
    } else {
        s->st.failures++;
        log_err("store: commit to %s failed: %s", s->path, tdb_errorstr(s->tdb));
    }
    finish_waiting(s, ok);
    return ok ? 0 : -1;
}

void store_close(store_t *s)
{
    if (!s) return;
    store_commit(s);
    if (s->loop) loop_off_turn_end(s->loop, turn_end, s);
    tdb_close(s->tdb);
    free(s->path);
    free(s);
}

static int begin(store_t *s)
{
    if (s->in_txn) return 0;
    if (tdb_transaction_start(s->tdb) != 0) {
        log_err("store: cannot start a transaction on %s: %s", s->path, tdb_errorstr(s->tdb));
        return -1;
    }
    s->in_txn = 1;
    /* a write made after this turn's commit (from a commit callback or a
     * later turn-end step) must not wait for the next event to be committed */
    if (s->loop) loop_wake(s->loop);
    return 0;
}

static int add_waiter(store_t *s, store_done_cb cb, void *arg)
{
    if (s->nwaiting == s->capwaiting) {
        size_t n = s->capwaiting ? s->capwaiting * 2 : 16;
        struct pending *w = realloc(s->waiting, n * sizeof *w);
        if (!w) return -1;
        s->waiting = w;
        s->capwaiting = n;
    }
    s->waiting[s->nwaiting++] = (struct pending){ cb, arg };
    return 0;
}

static TDB_DATA datum(const void *p, size_t n)
{
    TDB_DATA d = { .dptr = (unsigned char *)(uintptr_t)p, .dsize = n };
    return d;
}

int store_get(store_t *s, const char *key, size_t klen, struct buf *out)
{
    TDB_DATA v = tdb_fetch(s->tdb, datum(key, klen));
    buf_clear(out);
    if (!v.dptr) return tdb_error(s->tdb) == TDB_ERR_NOEXIST ? 0 : -1;
    buf_add(out, v.dptr, v.dsize);
    free(v.dptr);
    return out->oom ? -1 : 1;
}

static int write_op(store_t *s, const char *key, size_t klen, const void *val, size_t vlen, int del,
                    store_done_cb cb, void *arg)
{
    if (begin(s) < 0) return -1;
    int rc = del ? tdb_delete(s->tdb, datum(key, klen)) : tdb_store(s->tdb, datum(key, klen), datum(val, vlen), TDB_REPLACE);
    if (rc != 0 && !(del && tdb_error(s->tdb) == TDB_ERR_NOEXIST)) {
        log_err("store: write to %s failed: %s", s->path, tdb_errorstr(s->tdb));
        return -1;
    }
    s->st.writes++;
    if (add_waiter(s, cb, arg) < 0) return -1;
    if (!s->loop) return store_commit(s);
    return 0;
}

int store_put(store_t *s, const char *key, size_t klen, const void *val, size_t vlen,
              store_done_cb cb, void *arg)
{
    return write_op(s, key, klen, val, vlen, 0, cb, arg);
}

int store_del(store_t *s, const char *key, size_t klen, store_done_cb cb, void *arg)
{
    return write_op(s, key, klen, NULL, 0, 1, cb, arg);
}

struct each_ctx {
    int (*fn)(const char *, size_t, const char *, size_t, void *);
    void *arg;
};

static int each_cb(struct tdb_context *tdb, TDB_DATA k, TDB_DATA v, void *arg)
{
    struct each_ctx *c = arg;
    (void)tdb;
    return c->fn((const char *)k.dptr, k.dsize, (const char *)v.dptr, v.dsize, c->arg);
}

int store_each(store_t *s, int (*fn)(const char *key, size_t klen, const char *val, size_t vlen, void *arg),
               void *arg)
{
    /* no transaction may be open inside a traverse (DESIGN §10) */
    if (store_commit(s) < 0) return -1;
    struct each_ctx c = { fn, arg };
    return tdb_traverse_read(s->tdb, each_cb, &c);
}

int store_check(store_t *s)
{
    if (store_commit(s) < 0) return -1;
    return tdb_check(s->tdb, NULL, NULL) == 0 ? 0 : -1;
}

void store_get_stats(const store_t *s, struct store_stats *st) { *st = s->st; }

/* ---------------- backup and restore ---------------- */

const char *store_path(const store_t *s) { return s->path; }

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

int store_prepare(store_t *s)
{
    if (!s->in_txn) return 0;
    if (tdb_transaction_prepare_commit(s->tdb) == 0) return 0;
    s->st.failures++;
    log_err("store: cannot prepare the commit to %s: %s", s->path, tdb_errorstr(s->tdb));
    store_cancel(s);
    return -1;
}

void store_cancel(store_t *s)
{
    if (!s->in_txn) return;
    s->in_txn = 0;
    if (tdb_transaction_cancel(s->tdb) != 0)
        log_err("store: cancelling the transaction on %s: %s", s->path, tdb_errorstr(s->tdb));
    finish_waiting(s, 0);
}

/* Copy the first n bytes of in to out. */
static int copy_bytes(int in, int out, off_t n)
{
    enum { CHUNK = 256 * 1024 };
    char *chunk = malloc(CHUNK);
    if (!chunk) return -1;
    off_t off = 0;
    while (off < n) {
        size_t want = n - off < CHUNK ? (size_t)(n - off) : CHUNK;
        ssize_t got = pread(in, chunk, want, off);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            if (got == 0) errno = EIO; /* shorter than fstat said: cannot happen under the lock */
            break;
        }
        for (ssize_t done = 0; done < got;) {
            ssize_t w = write(out, chunk + done, (size_t)(got - done));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) goto out;
            done += w;
        }
        off += got;
    }
out:
    free(chunk);
    return off == n ? 0 : -1;
}

/* fsync the directory holding path, so a rename in it is durable. */
static int fsync_dir_of(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

int store_backup(store_t *s, const char *dest, struct store_copy *info, char *err, size_t errlen)
{
    char tmp[4096];
    memset(info, 0, sizeof *info);
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", dest) >= sizeof tmp) {
        snprintf(err, errlen, "%s: path too long", dest);
        return -1;
    }
    if (store_commit(s) < 0) {
        snprintf(err, errlen, "the pending commit to %s failed", s->path);
        return -1;
    }
    double t0 = now_ms();
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    int rc = -1;
    /* The committed state, whole: the file is copied as it is on disk
     * while no writer may change it. We are the only writer and are busy
     * here, the lock keeps out any other process (tdbtool...). */
    if (tdb_lockall_read(s->tdb) != 0) {
        snprintf(err, errlen, "cannot lock %s: %s", s->path, tdb_errorstr(s->tdb));
        goto out;
    }
    struct stat st;
    int copied = fstat(tdb_fd(s->tdb), &st) == 0 && copy_bytes(tdb_fd(s->tdb), out, st.st_size) == 0;
    int e = errno;
    int records = copied ? tdb_traverse_read(s->tdb, NULL, NULL) : 0;
    tdb_unlockall_read(s->tdb);
    if (!copied) {
        snprintf(err, errlen, "copying %s to %s: %s", s->path, tmp, strerror(e));
        goto out;
    }
    if (records < 0) {
        snprintf(err, errlen, "cannot count the records of %s: %s", s->path, tdb_errorstr(s->tdb));
        goto out;
    }
    info->records = (unsigned long long)records;
    info->bytes = (unsigned long long)st.st_size;
    if (fsync(out) < 0 || close(out) < 0) {
        out = -1;
        snprintf(err, errlen, "writing %s: %s", tmp, strerror(errno));
        goto out;
    }
    out = -1;
    if (rename(tmp, dest) < 0 || fsync_dir_of(dest) < 0) {
        snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, dest, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (out >= 0) close(out);
    if (rc < 0) unlink(tmp);
    info->ms = now_ms() - t0;
    return rc;
}

int store_check_file(const char *path, unsigned long long *records, char *err, size_t errlen)
{
    *records = 0;
    errno = 0;
    struct tdb_context *t = tdb_open(path, 0, TDB_DEFAULT, O_RDONLY | O_CLOEXEC, 0);
    if (!t) {
        snprintf(err, errlen, "cannot open %s: %s", path, errno ? strerror(errno) : "not a tdb file");
        return -1;
    }
    int rc = -1, n;
    if (tdb_check(t, NULL, NULL) != 0) snprintf(err, errlen, "%s is damaged (tdb_check failed)", path);
    else if ((n = tdb_traverse_read(t, NULL, NULL)) < 0) snprintf(err, errlen, "%s: %s", path, tdb_errorstr(t));
    else {
        *records = (unsigned long long)n;
        rc = 0;
    }
    tdb_close(t);
    return rc;
}

static int collect_key(struct tdb_context *tdb, TDB_DATA k, TDB_DATA v, void *arg)
{
    struct buf *keys = arg;
    size_t n = k.dsize;
    (void)tdb; (void)v;
    buf_add(keys, &n, sizeof n);
    buf_add(keys, k.dptr, k.dsize);
    return keys->oom ? -1 : 0;
}

struct copy_in {
    store_t *s;
    unsigned long long n;
    int failed;
};

static int copy_record(struct tdb_context *from, TDB_DATA k, TDB_DATA v, void *arg)
{
    struct copy_in *c = arg;
    (void)from;
    if (tdb_store(c->s->tdb, k, v, TDB_INSERT) != 0) {
        c->failed = 1;
        return -1;
    }
    c->n++;
    return 0;
}

int store_replace_begin(store_t *s, const char *src, struct store_copy *info, char *err, size_t errlen)
{
    memset(info, 0, sizeof *info);
    if (store_commit(s) < 0) {
        snprintf(err, errlen, "the pending commit to %s failed", s->path);
        return -1;
    }
    double t0 = now_ms();
    struct stat st;
    if (stat(src, &st) < 0) {
        snprintf(err, errlen, "%s: %s", src, strerror(errno));
        return -1;
    }
    errno = 0;
    struct tdb_context *from = tdb_open(src, 0, TDB_DEFAULT, O_RDONLY | O_CLOEXEC, 0);
    if (!from) {
        snprintf(err, errlen, "cannot open %s: %s", src, errno ? strerror(errno) : "not a tdb file");
        return -1;
    }
    struct buf keys = { 0 };
    int rc = -1;
    if (tdb_check(from, NULL, NULL) != 0) {
        snprintf(err, errlen, "%s is damaged (tdb_check failed)", src);
        goto out;
    }
    /* the keys to delete, listed before the transaction (DESIGN §10: no
     * transaction inside a traverse) */
    if (tdb_traverse_read(s->tdb, collect_key, &keys) < 0 || keys.oom) {
        snprintf(err, errlen, "cannot list the records of %s", s->path);
        goto out;
    }
    if (begin(s) < 0) {
        snprintf(err, errlen, "cannot start a transaction on %s: %s", s->path, tdb_errorstr(s->tdb));
        goto out;
    }
    for (size_t off = 0; off < keys.len;) {
        size_t n;
        memcpy(&n, keys.data + off, sizeof n);
        off += sizeof n;
        if (tdb_delete(s->tdb, datum(keys.data + off, n)) != 0) {
            snprintf(err, errlen, "cannot empty %s: %s", s->path, tdb_errorstr(s->tdb));
            store_cancel(s);
            goto out;
        }
        off += n;
        s->st.writes++;
    }
    struct copy_in c = { s, 0, 0 };
    int visited = tdb_traverse_read(from, copy_record, &c);
    if (visited < 0 || c.failed) {
        snprintf(err, errlen, "copying %s into %s: %s", src, s->path,
                 c.failed ? tdb_errorstr(s->tdb) : tdb_errorstr(from));
        store_cancel(s);
        goto out;
    }
    s->st.writes += c.n;
    info->records = c.n;
    info->bytes = (unsigned long long)st.st_size;
    rc = 0;
out:
    buf_free(&keys);
    tdb_close(from);
    info->ms = now_ms() - t0;
    return rc;
}
