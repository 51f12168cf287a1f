#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define ACCESS_LOG_BUFFER (64 * 1024)

static int error_fd = 2;
static int access_fd = -1;
static char access_buf[ACCESS_LOG_BUFFER];
static size_t access_len;
static enum tr_access_log_format access_format = TR_ACCESS_LOG_TEXT;
static int access_worker = -1;

static int open_log(const char *path)
{
    if (strcmp(path, "-") == 0)
        return 1;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    return fd < 0 ? -errno : fd;
}

int tr_log_open(const char *error_log, const char *access_log)
{
    if (error_log != NULL) {
        int fd = open_log(error_log);
        if (fd < 0)
            return fd;
        error_fd = fd;
    }
    if (access_log != NULL) {
        int fd = open_log(access_log);
        if (fd < 0)
            return fd;
        access_fd = fd;
    }
    return 0;
}

int tr_log_error_fd(void)
{
    return error_fd;
}

static void write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return; /* a log we cannot write must not take the server down */
        }
        p += n;
        len -= (size_t)n;
    }
}

static void log_line(const char *level, const char *fmt, va_list ap)
{
    char line[8192];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    int n =
        snprintf(line, sizeof(line), "%04d-%02d-%02d %02d:%02d:%02d.%03d [%s] %d: ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000), level, (int)getpid());
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    write_all(error_fd, line, len);
}

void tr_log_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line("error", fmt, ap);
    va_end(ap);
}

void tr_log_info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line("info", fmt, ap);
    va_end(ap);
}

void tr_access_log_set_format(enum tr_access_log_format format)
{
    access_format = format;
}

enum tr_access_log_format tr_access_log_format(void)
{
    return access_format;
}

void tr_access_log_set_worker(int slot)
{
    access_worker = slot;
}

int tr_access_log_worker(void)
{
    return access_worker;
}

size_t tr_log_json_escape(char *out, size_t size, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            if (n + 2 > size)
                break;
            out[n++] = '\\';
            out[n++] = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            if (n + 6 > size)
                break;
            memcpy(out + n, "\\u00", 4);
            out[n + 4] = hex[ch >> 4];
            out[n + 5] = hex[ch & 15];
            n += 6;
        } else {
            if (n + 1 > size)
                break;
            out[n++] = (char)ch;
        }
    }
    return n;
}

int tr_access_log_enabled(void)
{
    return access_fd >= 0;
}

void tr_access_log_append(const char *line, size_t len)
{
    if (access_fd < 0)
        return;
    if (access_len + len + 1 > sizeof(access_buf))
        tr_access_log_flush();
    if (len + 1 > sizeof(access_buf))
        len = sizeof(access_buf) - 1;
    memcpy(access_buf + access_len, line, len);
    access_len += len;
    access_buf[access_len++] = '\n';
}

void tr_access_log_flush(void)
{
    if (access_fd >= 0 && access_len > 0)
        write_all(access_fd, access_buf, access_len);
    access_len = 0;
}

double tr_wall_clock(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}
