/* log.h - leveled logging to stderr (journald-style "<N>" prefixes) that
 * never blocks the event loop: lines go to a bounded ring flushed when
 * stderr is writable; what does not fit is counted, not waited for. */
#ifndef XMPPD_LOG_H
#define XMPPD_LOG_H

#include <stddef.h>
#include <stdint.h>

/* Syslog priorities; the numeric value is the "<N>" prefix. */
enum log_level {
    LOG_LVL_ERR = 3,
    LOG_LVL_WARNING = 4,
    LOG_LVL_NOTICE = 5,
    LOG_LVL_INFO = 6,
    LOG_LVL_DEBUG = 7,
};

/* Set the program/instance name shown in each line (e.g. "c2s-1"). */
void log_init(const char *instance, int level);
/* Change the level at run time. */
void log_set_level(int level);
/* Current level. */
int log_get_level(void);
/* Parse "err|warning|notice|info|debug" (or 3..7); -1 if unknown. */
int log_level_parse(const char *name);
/* Name of a level ("info"). */
const char *log_level_name(int level);
/* Switch to non-blocking ring mode (call once the event loop runs). */
void log_set_nonblocking(int on);
/* Write what the ring holds that stderr accepts now; returns bytes pending. */
size_t log_flush(void);
/* Lines dropped because the ring was full, since start. */
uint64_t log_dropped(void);
/* Log one line at a level; printf-checked. */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_LVL_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) \
    do { if (log_get_level() >= LOG_LVL_DEBUG) log_msg(LOG_LVL_DEBUG, __VA_ARGS__); } while (0)

#endif
