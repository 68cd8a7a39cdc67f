/*
 * log.h — JSON-lines logging on stderr: one object per line with "time", "level",
 * "event" and event fields, written with a single write(2) so lines from different
 * threads never interleave.  The access log (one line per request) goes through here too.
 */
#ifndef INNSERVE_SERVER_LOG_H
#define INNSERVE_SERVER_LOG_H

#include <stdbool.h>

enum srv_level { SRV_LOG_ERROR = 0, SRV_LOG_WARN, SRV_LOG_INFO, SRV_LOG_DEBUG };

/* "error", "warn", "info", "debug" -> level; -1 when unknown. */
int srv_log_level_parse(const char *s);

/* Process-wide log settings; set once at start-up before threads start. */
void srv_log_init(enum srv_level level, bool access_log);
bool srv_log_enabled(enum srv_level level);
bool srv_log_access_enabled(void);

/* One line: {"time":..., "level":..., "event": event, <fields>}.  fields is a sequence of
 * key/value pairs already in JSON ("\"port\":8080,\"host\":\"::\"") or NULL.  Use the
 * srv_log_kv helpers below to build it. */
void srv_log_line(enum srv_level level, const char *event, const char *fields);

/* printf-style convenience: the formatted text becomes the "msg" field. */
void srv_logf(enum srv_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Current UTC time as "2024-01-02T03:04:05.678Z" into out (>= 32 bytes). */
void srv_log_time(char *out, unsigned long cap);

#endif
