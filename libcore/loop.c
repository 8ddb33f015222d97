/* loop.c - epoll event loop with ZeroMQ sockets, timers and signals.
 *
 * ZMQ_FD is edge-triggered (DESIGN §10): it fires once when the socket's
 * state changes, and sending on the socket may consume that edge. So a
 * socket is "dirty" when its fd fired, when we sent on it, or when its
 * callback stopped before EAGAIN; the loop asks a dirty socket for
 * ZMQ_EVENTS (and only a dirty one: in libzmq 4.3 every such query, like
 * every receive that finds nothing, costs a poll() and a getpid() system
 * call) and does not sleep while one has input. */
#include "config.h"
#include "loop.h"
#include "log.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define MAX_EVENTS 256
#define MAX_ZSOCKS 64
#define MAX_TURN_CBS 16
#define MAX_SIGNALS 8

struct fd_watch {
    loop_fd_cb cb;
    void *arg;
    int active;
};

struct zsock_watch {
    void *zsock;
    int fd;
    int dirty;
    loop_zsock_cb cb;
    void *arg;
};

struct loop_timer {
    uint64_t due;
    loop_timer_cb cb;
    void *arg;
    size_t heap_index;
};

struct loop {
    int epfd;
    int running;
    int woken;
    uint64_t now;
    struct fd_watch *fds;
    size_t nfds;
    struct zsock_watch *zs[MAX_ZSOCKS];
    size_t nzs;
    loop_timer_t **heap;
    size_t nheap, capheap;
    struct { loop_turn_cb cb; void *arg; enum loop_phase phase; } turn[MAX_TURN_CBS];
    size_t nturn;
    int sigfd;
    sigset_t sigmask;
    struct { int signo; loop_signal_cb cb; void *arg; } sigs[MAX_SIGNALS];
    size_t nsigs;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

loop_t *loop_new(void)
{
    loop_t *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        free(l);
        return NULL;
    }
    l->sigfd = -1;
    sigemptyset(&l->sigmask);
    l->now = mono_ms();
    return l;
}

void loop_free(loop_t *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->nheap; i++) free(l->heap[i]);
    for (size_t i = 0; i < l->nzs; i++) free(l->zs[i]);
    free(l->heap);
    free(l->fds);
    if (l->sigfd >= 0) close(l->sigfd);
    close(l->epfd);
    free(l);
}

static int ensure_fd_slot(loop_t *l, int fd)
{
    if ((size_t)fd < l->nfds) return 0;
    size_t n = l->nfds ? l->nfds : 64;
    while (n <= (size_t)fd) n *= 2;
    struct fd_watch *f = realloc(l->fds, n * sizeof *f);
    if (!f) return -1;
    memset(f + l->nfds, 0, (n - l->nfds) * sizeof *f);
    l->fds = f;
    l->nfds = n;
    return 0;
}

int loop_add_fd(loop_t *l, int fd, uint32_t events, loop_fd_cb cb, void *arg)
{
    if (fd < 0 || ensure_fd_slot(l, fd) < 0) return -1;
    struct epoll_event ev = { .events = events, .data.fd = fd };
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) return -1;
    l->fds[fd] = (struct fd_watch){ cb, arg, 1 };
    return 0;
}

int loop_mod_fd(loop_t *l, int fd, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.fd = fd };
    return epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev);
}

void loop_del_fd(loop_t *l, int fd)
{
    if (fd < 0 || (size_t)fd >= l->nfds || !l->fds[fd].active) return;
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
    l->fds[fd].active = 0;
}

static void zsock_fd_ready(loop_t *l, int fd, uint32_t events, void *arg)
{
    struct zsock_watch *w = arg;
    (void)l; (void)fd; (void)events;
    w->dirty = 1;
}

int loop_add_zsock(loop_t *l, void *zsock, loop_zsock_cb cb, void *arg)
{
    if (l->nzs >= MAX_ZSOCKS) return -1;
    int fd;
    size_t sz = sizeof fd;
    if (zmq_getsockopt(zsock, ZMQ_FD, &fd, &sz) < 0) return -1;
    struct zsock_watch *w = calloc(1, sizeof *w);
    if (!w) return -1;
    *w = (struct zsock_watch){ zsock, fd, 1, cb, arg };
    if (loop_add_fd(l, fd, EPOLLIN | EPOLLET, zsock_fd_ready, w) < 0) {
        free(w);
        return -1;
    }
    l->zs[l->nzs++] = w;
    return 0;
}

void loop_zsock_sent(loop_t *l, void *zsock)
{
    for (size_t i = 0; i < l->nzs; i++)
        if (l->zs[i]->zsock == zsock) l->zs[i]->dirty = 1;
}

void loop_del_zsock(loop_t *l, void *zsock)
{
    for (size_t i = 0; i < l->nzs; i++) {
        if (l->zs[i]->zsock != zsock) continue;
        loop_del_fd(l, l->zs[i]->fd);
        free(l->zs[i]);
        l->zs[i] = l->zs[--l->nzs];
        return;
    }
}

/* ---- timers: a binary min-heap on due time ---- */

static void heap_swap(loop_t *l, size_t a, size_t b)
{
    loop_timer_t *t = l->heap[a];
    l->heap[a] = l->heap[b];
    l->heap[b] = t;
    l->heap[a]->heap_index = a;
    l->heap[b]->heap_index = b;
}

static void heap_up(loop_t *l, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (l->heap[p]->due <= l->heap[i]->due) break;
        heap_swap(l, p, i);
        i = p;
    }
}

static void heap_down(loop_t *l, size_t i)
{
    for (;;) {
        size_t c = 2 * i + 1, m = i;
        if (c < l->nheap && l->heap[c]->due < l->heap[m]->due) m = c;
        if (c + 1 < l->nheap && l->heap[c + 1]->due < l->heap[m]->due) m = c + 1;
        if (m == i) break;
        heap_swap(l, i, m);
        i = m;
    }
}

loop_timer_t *loop_timer_add(loop_t *l, uint64_t ms, loop_timer_cb cb, void *arg)
{
    if (l->nheap == l->capheap) {
        size_t n = l->capheap ? l->capheap * 2 : 64;
        loop_timer_t **h = realloc(l->heap, n * sizeof *h);
        if (!h) return NULL;
        l->heap = h;
        l->capheap = n;
    }
    loop_timer_t *t = malloc(sizeof *t);
    if (!t) return NULL;
    t->due = l->now + ms;
    t->cb = cb;
    t->arg = arg;
    t->heap_index = l->nheap;
    l->heap[l->nheap++] = t;
    heap_up(l, t->heap_index);
    return t;
}

static void heap_remove(loop_t *l, size_t i)
{
    l->nheap--;
    if (i != l->nheap) {
        heap_swap(l, i, l->nheap);
        heap_down(l, i);
        heap_up(l, i);
    }
}

void loop_timer_cancel(loop_t *l, loop_timer_t *t)
{
    if (!t) return;
    heap_remove(l, t->heap_index);
    free(t);
}

int loop_on_turn_end(loop_t *l, enum loop_phase phase, loop_turn_cb cb, void *arg)
{
    if (l->nturn >= MAX_TURN_CBS) return -1;
    /* keep the list ordered by phase: commits first */
    size_t i = l->nturn;
    while (i > 0 && l->turn[i - 1].phase > phase) {
        l->turn[i] = l->turn[i - 1];
        i--;
    }
    l->turn[i].cb = cb;
    l->turn[i].arg = arg;
    l->turn[i].phase = phase;
    l->nturn++;
    return 0;
}

void loop_off_turn_end(loop_t *l, loop_turn_cb cb, void *arg)
{
    for (size_t i = 0; i < l->nturn; i++) {
        if (l->turn[i].cb != cb || l->turn[i].arg != arg) continue;
        memmove(&l->turn[i], &l->turn[i + 1], (l->nturn - i - 1) * sizeof l->turn[0]);
        l->nturn--;
        return;
    }
}

static void signal_ready(loop_t *l, int fd, uint32_t events, void *arg)
{
    (void)events; (void)arg;
    struct signalfd_siginfo si;
    while (read(fd, &si, sizeof si) == (ssize_t)sizeof si) {
        for (size_t i = 0; i < l->nsigs; i++)
            if ((uint32_t)l->sigs[i].signo == si.ssi_signo)
                l->sigs[i].cb(l, (int)si.ssi_signo, l->sigs[i].arg);
    }
}

int loop_add_signal(loop_t *l, int signo, loop_signal_cb cb, void *arg)
{
    if (l->nsigs >= MAX_SIGNALS) return -1;
    sigaddset(&l->sigmask, signo);
    if (sigprocmask(SIG_BLOCK, &l->sigmask, NULL) < 0) return -1;
    int first = l->sigfd < 0;
    l->sigfd = signalfd(l->sigfd, &l->sigmask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (l->sigfd < 0) return -1;
    if (first && loop_add_fd(l, l->sigfd, EPOLLIN, signal_ready, NULL) < 0) return -1;
    l->sigs[l->nsigs].signo = signo;
    l->sigs[l->nsigs].cb = cb;
    l->sigs[l->nsigs].arg = arg;
    l->nsigs++;
    return 0;
}

void loop_wake(loop_t *l) { l->woken = 1; }

uint64_t loop_now_ms(loop_t *l) { return l->now; }

void loop_stop(loop_t *l) { l->running = 0; }

static int has_input(struct zsock_watch *w)
{
    int ev = 0;
    size_t sz = sizeof ev;
    return zmq_getsockopt(w->zsock, ZMQ_EVENTS, &ev, &sz) == 0 && (ev & ZMQ_POLLIN);
}

/* Dispatch the dirty ZeroMQ sockets that have input; 1 if one stopped early. */
static int dispatch_zsocks(loop_t *l)
{
    int pending = 0;
    for (size_t i = 0; i < l->nzs; i++) {
        struct zsock_watch *w = l->zs[i];
        if (!w->dirty) continue;
        w->dirty = 0;
        if (!has_input(w)) continue;
        if (w->cb(l, w->zsock, w->arg)) {
            w->dirty = 1;
            pending = 1;
        }
    }
    return pending;
}

/* Before sleeping: a socket we sent on may have input whose edge is gone. */
static int zsocks_pending(loop_t *l)
{
    int pending = 0;
    for (size_t i = 0; i < l->nzs; i++) {
        struct zsock_watch *w = l->zs[i];
        if (!w->dirty) continue;
        if (has_input(w)) pending = 1;
        else w->dirty = 0;
    }
    return pending;
}

static void run_timers(loop_t *l)
{
    while (l->nheap > 0 && l->heap[0]->due <= l->now) {
        loop_timer_t *t = l->heap[0];
        heap_remove(l, 0);
        loop_timer_cb cb = t->cb;
        void *arg = t->arg;
        free(t);
        cb(l, arg);
    }
}

int loop_run(loop_t *l)
{
    struct epoll_event evs[MAX_EVENTS];
    l->running = 1;
    while (l->running) {
        l->now = mono_ms();
        run_timers(l);
        int pending = dispatch_zsocks(l);
        for (size_t i = 0; i < l->nturn; i++) l->turn[i].cb(l, l->turn[i].arg);
        if (zsocks_pending(l)) pending = 1;
        if (!l->running) break;
        int timeout = -1;
        if (pending || l->woken) {
            timeout = 0;
        } else if (l->nheap > 0) {
            uint64_t now = mono_ms();
            timeout = l->heap[0]->due <= now ? 0 : (int)(l->heap[0]->due - now);
        }
        l->woken = 0;
        int n = epoll_wait(l->epfd, evs, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            log_err("epoll_wait: %s", strerror(errno));
            return -1;
        }
        l->now = mono_ms();
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if ((size_t)fd < l->nfds && l->fds[fd].active)
                l->fds[fd].cb(l, fd, evs[i].events, l->fds[fd].arg);
        }
    }
    return 0;
}
