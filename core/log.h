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

void tr_log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void tr_log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

int tr_access_log_enabled(void);
/* Append one line (without its newline) to the access log buffer. */
void tr_access_log_append(const char *line, size_t len);
void tr_access_log_flush(void);

/* Seconds since the epoch, with microseconds. */
double tr_wall_clock(void);

#endif
