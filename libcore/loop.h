/* loop.h - the one event loop every daemon runs: epoll over file
 * descriptors and ZeroMQ sockets, timers, signals, and "end of turn"
 * callbacks where batched work (IPC frames, store commits) is flushed. */
#ifndef XMPPD_LOOP_H
#define XMPPD_LOOP_H

#include <stdint.h>
#include <sys/epoll.h>

typedef struct loop loop_t;
typedef struct loop_timer loop_timer_t;

typedef void (*loop_fd_cb)(loop_t *loop, int fd, uint32_t events, void *arg);
/* Called when a ZeroMQ socket has input. Receive until EAGAIN and return
 * 0, or stop early and return 1: the loop calls again without sleeping. */
typedef int (*loop_zsock_cb)(loop_t *loop, void *zsock, void *arg);
typedef void (*loop_timer_cb)(loop_t *loop, void *arg);
typedef void (*loop_turn_cb)(loop_t *loop, void *arg);
typedef void (*loop_signal_cb)(loop_t *loop, int signo, void *arg);

/* Create a loop; NULL on failure. */
loop_t *loop_new(void);
/* Free the loop (fds are not closed). */
void loop_free(loop_t *loop);
/* Watch fd for EPOLLIN/EPOLLOUT/...; 0 or -1. */
int loop_add_fd(loop_t *loop, int fd, uint32_t events, loop_fd_cb cb, void *arg);
/* Change the events watched on fd. */
int loop_mod_fd(loop_t *loop, int fd, uint32_t events);
/* Stop watching fd. */
void loop_del_fd(loop_t *loop, int fd);
/* Watch a ZeroMQ socket (edge-triggered ZMQ_FD handled inside). */
int loop_add_zsock(loop_t *loop, void *zsock, loop_zsock_cb cb, void *arg);
/* Say that we sent on a ZeroMQ socket: sending can consume the edge of
 * its ZMQ_FD, so the loop must look at its input before sleeping. */
void loop_zsock_sent(loop_t *loop, void *zsock);
/* Stop watching a ZeroMQ socket. */
void loop_del_zsock(loop_t *loop, void *zsock);
/* One-shot timer after ms milliseconds; returns a handle to cancel. */
loop_timer_t *loop_timer_add(loop_t *loop, uint64_t ms, loop_timer_cb cb, void *arg);
/* Cancel a timer that has not fired yet (NULL is ignored). */
void loop_timer_cancel(loop_t *loop, loop_timer_t *timer);
/* End-of-turn phases: work that produces output (store commits and their
 * acknowledgements, deferred reads) runs before the IPC flushes, so what
 * it sends leaves in the same turn. */
enum loop_phase { LOOP_WORK = 0, LOOP_FLUSH = 1 };
/* Register a callback run at the end of every loop turn in a phase. */
int loop_on_turn_end(loop_t *loop, enum loop_phase phase, loop_turn_cb cb, void *arg);
/* Remove a callback added with loop_on_turn_end. */
void loop_off_turn_end(loop_t *loop, loop_turn_cb cb, void *arg);
/* Deliver signo through the loop instead of asynchronously. */
int loop_add_signal(loop_t *loop, int signo, loop_signal_cb cb, void *arg);
/* Ask for another turn without waiting (work is pending). */
void loop_wake(loop_t *loop);
/* Monotonic milliseconds, cached once per turn. */
uint64_t loop_now_ms(loop_t *loop);
/* Run until loop_stop(); returns 0. */
int loop_run(loop_t *loop);
/* Make loop_run() return after the current turn. */
void loop_stop(loop_t *loop);

#endif
