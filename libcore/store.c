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
#include <stdlib.h>
#include <string.h>
#include <tdb.h>

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
