/* check_store.c - unit tests for the tdb store (store.h): grouped commits
 * acknowledge only after the commit, reads see the turn's own writes, a
 * process killed before its commit leaves the file consistent and without
 * the unacknowledged write, and the account record stays readable. */
#include "config.h"
#include "store.h"
#include "loop.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[256];
static char path[300];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/check_store.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.tdb", dir);
}

static void teardown(void)
{
    unlink(path);
    rmdir(dir);
}

struct turn_state {
    store_t *s;
    int acked, ok, seen_before_ack;
};

static void on_done(void *arg, int ok)
{
    struct turn_state *t = arg;
    t->acked++;
    t->ok = ok;
}

static void write_some(loop_t *loop, void *arg)
{
    struct turn_state *t = arg;
    struct buf v = { 0 };
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        ck_assert_int_eq(store_put(t->s, k, strlen(k), "value", 5, on_done, t), 0);
    }
    /* nothing is acknowledged inside the turn, but reads see the writes */
    ck_assert_int_eq(t->acked, 0);
    ck_assert_int_eq(store_get(t->s, "k7", 2, &v), 1);
    t->seen_before_ack = v.len == 5 && memcmp(v.data, "value", 5) == 0;
    buf_free(&v);
    (void)loop;
}

static void stop(loop_t *loop, void *arg)
{
    (void)arg;
    loop_stop(loop);
}

START_TEST(grouped_commit_acks_after_commit)
{
    loop_t *loop = loop_new();
    struct turn_state t = { 0 };
    t.s = store_open(loop, path, 0);
    ck_assert_ptr_nonnull(t.s);
    loop_timer_add(loop, 0, write_some, &t);
    loop_timer_add(loop, 20, stop, NULL);
    loop_run(loop);
    ck_assert_int_eq(t.acked, 100);
    ck_assert_int_eq(t.ok, 1);
    ck_assert(t.seen_before_ack);
    struct store_stats st;
    store_get_stats(t.s, &st);
    ck_assert_uint_eq(st.commits, 1); /* one transaction for the whole turn */
    ck_assert_uint_eq(st.writes, 100);
    store_close(t.s);
    store_t *again = store_open(NULL, path, 0);
    struct buf v = { 0 };
    ck_assert_int_eq(store_get(again, "k99", 3, &v), 1);
    ck_assert_int_eq(store_get(again, "nope", 4, &v), 0);
    ck_assert_int_eq(store_check(again), 0);
    buf_free(&v);
    store_close(again);
    loop_free(loop);
}
END_TEST

static int count_one(const char *k, size_t kl, const char *v, size_t vl, void *arg)
{
    (void)k; (void)kl; (void)v; (void)vl;
    (*(int *)arg)++;
    return 0;
}

START_TEST(delete_and_each)
{
    store_t *s = store_open(NULL, path, 1);
    ck_assert_int_eq(store_put(s, "a", 1, "1", 1, NULL, NULL), 0);
    ck_assert_int_eq(store_put(s, "b", 1, "2", 1, NULL, NULL), 0);
    ck_assert_int_eq(store_del(s, "a", 1, NULL, NULL), 0);
    ck_assert_int_eq(store_del(s, "missing", 7, NULL, NULL), 0);
    int n = 0;
    ck_assert_int_eq(store_each(s, count_one, &n), 1);
    ck_assert_int_eq(n, 1);
    store_close(s);
}
END_TEST

/* A child writes and is killed before its turn ends: nothing of it may
 * survive, and the file must check clean. A second child commits first. */
START_TEST(killed_before_commit_loses_only_unacknowledged)
{
    pid_t pid = fork();
    if (pid == 0) {
        loop_t *loop = loop_new();
        store_t *s = store_open(loop, path, 0);
        store_put(s, "committed", 9, "yes", 3, NULL, NULL);
        store_commit(s);
        store_put(s, "uncommitted", 11, "no", 2, NULL, NULL);
        kill(getpid(), SIGKILL); /* dies inside the transaction */
        _exit(1);
    }
    int status;
    waitpid(pid, &status, 0);
    ck_assert(WIFSIGNALED(status));
    store_t *s = store_open(NULL, path, 0);
    ck_assert_ptr_nonnull(s);
    struct buf v = { 0 };
    ck_assert_int_eq(store_get(s, "committed", 9, &v), 1);
    ck_assert_int_eq(store_get(s, "uncommitted", 11, &v), 0);
    ck_assert_int_eq(store_check(s), 0);
    buf_free(&v);
    store_close(s);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("store");
    TCase *tc = tcase_create("tdb");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, grouped_commit_acks_after_commit);
    tcase_add_test(tc, delete_and_each);
    tcase_add_test(tc, killed_before_commit_loses_only_unacknowledged);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
