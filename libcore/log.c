/* log.c - the logger behind log.h: one line per event, "<N>" priority
 * prefix, a bounded ring so a blocked stderr never stalls the loop. */
#include "config.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <stdlib.h>
#include <unistd.h>

#define LOG_RING_SIZE (1u << 20)
#define LOG_LINE_MAX 4096

static char log_instance[64] = "xmppd";
static int log_level = LOG_LVL_INFO;
static int log_nonblocking;
static char *log_ring;
static size_t log_head, log_len; /* ring start and bytes held */
static uint64_t log_drop_count;

static const char *const level_names[] = {
    [LOG_LVL_ERR] = "err", [LOG_LVL_WARNING] = "warning", [LOG_LVL_NOTICE] = "notice",
    [LOG_LVL_INFO] = "info", [LOG_LVL_DEBUG] = "debug",
};

void log_init(const char *instance, int level)
{
    snprintf(log_instance, sizeof log_instance, "%s", instance);
    log_set_level(level);
}

void log_set_level(int level)
{
    if (level < LOG_LVL_ERR) level = LOG_LVL_ERR;
    if (level > LOG_LVL_DEBUG) level = LOG_LVL_DEBUG;
    log_level = level;
}

int log_get_level(void) { return log_level; }

int log_level_parse(const char *name)
{
    for (int i = LOG_LVL_ERR; i <= LOG_LVL_DEBUG; i++)
        if (strcasecmp(name, level_names[i]) == 0) return i;
    if (strcasecmp(name, "error") == 0) return LOG_LVL_ERR;
    if (strcasecmp(name, "warn") == 0) return LOG_LVL_WARNING;
    if (name[0] >= '3' && name[0] <= '7' && name[1] == '\0') return name[0] - '0';
    return -1;
}

const char *log_level_name(int level)
{
    if (level < LOG_LVL_ERR || level > LOG_LVL_DEBUG) return "?";
    return level_names[level];
}

void log_set_nonblocking(int on)
{
    if (on && !log_ring) {
        log_ring = malloc(LOG_RING_SIZE);
        if (!log_ring) return;
        int fl = fcntl(STDERR_FILENO, F_GETFL);
        if (fl >= 0) fcntl(STDERR_FILENO, F_SETFL, fl | O_NONBLOCK);
    }
    log_nonblocking = on && log_ring;
    if (!log_nonblocking) log_flush();
}

size_t log_flush(void)
{
    while (log_len > 0) {
        size_t chunk = log_len;
        if (log_head + chunk > LOG_RING_SIZE) chunk = LOG_RING_SIZE - log_head;
        ssize_t n = write(STDERR_FILENO, log_ring + log_head, chunk);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) continue;
            break; /* EAGAIN: try again on the next loop turn */
        }
        log_head = (log_head + (size_t)n) % LOG_RING_SIZE;
        log_len -= (size_t)n;
    }
    return log_len;
}

uint64_t log_dropped(void) { return log_drop_count; }

static void ring_put(const char *line, size_t n)
{
    if (log_len + n > LOG_RING_SIZE) {
        log_drop_count++;
        return;
    }
    size_t tail = (log_head + log_len) % LOG_RING_SIZE;
    size_t first = n;
    if (tail + first > LOG_RING_SIZE) first = LOG_RING_SIZE - tail;
    memcpy(log_ring + tail, line, first);
    memcpy(log_ring, line + first, n - first);
    log_len += n;
}

void log_msg(int level, const char *fmt, ...)
{
    if (level > log_level) return;
    char line[LOG_LINE_MAX];
    int off = snprintf(line, sizeof line, "<%d>%s: ", level, log_instance);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line + off, sizeof line - (size_t)off - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)off + (n < 0 ? 0 : (size_t)n);
    if (len > sizeof line - 2) len = sizeof line - 2;
    /* one event, one line: fold embedded newlines */
    for (size_t i = (size_t)off; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r') line[i] = ' ';
    line[len++] = '\n';
    if (log_nonblocking) {
        ring_put(line, len);
        log_flush();
    } else {
        ssize_t w = write(STDERR_FILENO, line, len);
        (void)w;
    }
}
