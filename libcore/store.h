/* store.h - a tdb file with grouped commits (DESIGN §4). Writes made
 * during one loop turn go into one transaction committed at the turn's
 * end; each write's callback runs only after that commit, so nothing is
 * acknowledged before it is durable. Reads see the turn's own writes. */
#ifndef XMPPD_STORE_H
#define XMPPD_STORE_H

#include <stddef.h>

#include "buf.h"
#include "loop.h"

typedef struct store store_t;

/* Called after the write's transaction committed (ok=1) or failed (ok=0). */
typedef void (*store_done_cb)(void *arg, int ok);

/* Open (create) path; nosync trades power-loss safety for speed. */
store_t *store_open(loop_t *loop, const char *path, int nosync);
/* Commit anything pending and close. */
void store_close(store_t *s);
/* Read key into out (replacing its contents): 1 found, 0 absent, -1 error. */
int store_get(store_t *s, const char *key, size_t klen, struct buf *out);
/* Write key=value in this turn's transaction; cb (may be NULL) after commit. */
int store_put(store_t *s, const char *key, size_t klen, const void *val, size_t vlen,
              store_done_cb cb, void *arg);
/* Delete key in this turn's transaction; cb after commit. */
int store_del(store_t *s, const char *key, size_t klen, store_done_cb cb, void *arg);
/* Commit the open transaction now (also done at each turn's end). */
int store_commit(store_t *s);
/* Visit every record (read-only; commits pending writes first). Stop when
 * fn returns non-zero. Returns the number of records visited or -1. */
int store_each(store_t *s, int (*fn)(const char *key, size_t klen, const char *val, size_t vlen, void *arg),
               void *arg);
/* Verify the file's integrity (tdb_check): 0 ok, -1 damaged. */
int store_check(store_t *s);
/* ---- backup and restore (xmppctl backup/restore, DESIGN §4) ---- */
/* What a backup or restore moved. */
struct store_copy {
    unsigned long long records, bytes;
    double ms;                 /* time the event loop was held */
};
/* The file's path. */
const char *store_path(const store_t *s);
/* Commit what is pending, then copy the file's committed state to dest:
 * written as dest.tmp under a read lock of the whole file (no write, ours
 * or another process's, can interleave), then fsynced, renamed to dest,
 * and the directory fsynced. Synchronous: the caller's loop waits (about
 * 3 ms per 5 MB here). 0, or -1 with a sentence in err. */
int store_backup(store_t *s, const char *dest, struct store_copy *info, char *err, size_t errlen);
/* Begin replacing every record with those of the tdb file src (checked
 * with tdb_check first), in one transaction that is left open: the caller
 * may add writes to it, then store_prepare and store_commit it, or
 * store_cancel it. A crash before the commit leaves the old contents.
 * Pending writes are committed first. 0, or -1 with err (nothing changed). */
int store_replace_begin(store_t *s, const char *src, struct store_copy *info, char *err, size_t errlen);
/* Open the tdb file path read-only and verify it (tdb_check): 0 with its
 * number of records, or -1 with err. Changes nothing. */
int store_check_file(const char *path, unsigned long long *records, char *err, size_t errlen);
/* First phase of a commit (tdb_transaction_prepare_commit): after it the
 * commit can hardly fail. 0, or -1 (the transaction is then cancelled). */
int store_prepare(store_t *s);
/* Cancel the open transaction: its writes are lost, their callbacks get
 * ok=0. */
void store_cancel(store_t *s);

/* Counters: transactions committed, writes, commit failures. */
struct store_stats { unsigned long long commits, writes, failures; };
/* Copy the counters. */
void store_get_stats(const store_t *s, struct store_stats *st);

#endif
