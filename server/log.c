/*
 * log.c — JSON-lines logger (log.h).  The level and access-log switch are the only
 * process-wide settings; they are written once before any thread starts.
 */
#include "log.h"
#include "../proto/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static enum srv_level g_level = SRV_LOG_INFO;
static bool g_access = true;

static const char *const NAMES[] = {"error", "warn", "info", "debug"};

int srv_log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, NAMES[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return SRV_LOG_WARN;
    return -1;
}

void srv_log_init(enum srv_level level, bool access_log)
{
    g_level = level;
    g_access = access_log;
}

bool srv_log_enabled(enum srv_level level)
{
    return level <= g_level;
}

bool srv_log_access_enabled(void)
{
    return g_access;
}

void srv_log_time(char *out, unsigned long cap)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

void srv_log_line(enum srv_level level, const char *event, const char *fields)
{
    if (!srv_log_enabled(level))
        return;
    char t[40];
    srv_log_time(t, sizeof t);
    struct proto_buf b;
    proto_buf_init(&b, 1 << 20);
    proto_buf_puts(&b, "{\"time\":\"");
    proto_buf_puts(&b, t);
    proto_buf_puts(&b, "\",\"level\":\"");
    proto_buf_puts(&b, NAMES[level]);
    proto_buf_puts(&b, "\",\"event\":");
    proto_buf_json_str(&b, event);
    if (fields && fields[0]) {
        proto_buf_putc(&b, ',');
        proto_buf_puts(&b, fields);
    }
    proto_buf_puts(&b, "}\n");
    if (!proto_buf_failed(&b)) {
        size_t off = 0;
        while (off < b.len) {
            ssize_t w = write(STDERR_FILENO, b.p + off, b.len - off);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
    }
    proto_buf_free(&b);
}

void srv_logf(enum srv_level level, const char *event, const char *fmt, ...)
{
    if (!srv_log_enabled(level))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_buf_puts(&b, "\"msg\":");
    proto_buf_json_str(&b, msg);
    proto_buf_putc(&b, 0);
    if (!proto_buf_failed(&b))
        srv_log_line(level, event, b.p);
    proto_buf_free(&b);
}
