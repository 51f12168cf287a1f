/*
 * The error log (one line per event, written at once: errors are rare) and the access log (one line
 * per request, buffered in memory and written when the buffer fills or once a second).
 */
#ifndef TR_LOG_H
#define TR_LOG_H

#include <stddef.h>

/* Open the logs: NULL error log = standard error; NULL access log = off; "-" = standard output.
 * Returns 0 or -errno. */
int tr_log_open(const char *error_log, const char *access_log);

/* The error log's descriptor (a child that closes everything else keeps it). */
int tr_log_error_fd(void);

void tr_log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void tr_log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The access log's line format (--access-log-format): text (the default) or one JSON object a line. */
enum tr_access_log_format { TR_ACCESS_LOG_TEXT, TR_ACCESS_LOG_JSON };
void tr_access_log_set_format(enum tr_access_log_format format);
enum tr_access_log_format tr_access_log_format(void);
/* The worker slot named in JSON access log lines (-1 in the master, the default). */
void tr_access_log_set_worker(int slot);
int tr_access_log_worker(void);

/* Write s (len bytes) at out as the inside of a JSON string: quotes and backslashes escaped, control
 * bytes and bytes >= 0x7f as \u00XX (a request target is ASCII; this keeps any line valid JSON),
 * stopping before an escape that would not fit in size. Returns the bytes written. */
size_t tr_log_json_escape(char *out, size_t size, const char *s, size_t len);

int tr_access_log_enabled(void);
/* Append one line (without its newline) to the access log buffer. */
void tr_access_log_append(const char *line, size_t len);
void tr_access_log_flush(void);

/* Seconds since the epoch, with microseconds. */
double tr_wall_clock(void);

#endif
