/* Finding and reading the application's migrations (see migrations.h). */
#include "migrations.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int is_migration(const struct dirent *e)
{
    size_t n = strlen(e->d_name);
    return e->d_name[0] >= '0' && e->d_name[0] <= '9' && n > 4 && strcmp(e->d_name + n - 4, ".sql") == 0;
}

char *tr_migrations_read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    char *data = NULL;
    if (fstat(fd, &st) == 0 && (data = malloc((size_t)st.st_size + 1)) != NULL) {
        ssize_t n = read(fd, data, (size_t)st.st_size);
        if (n < 0) {
            int e = errno;
            free(data);
            data = NULL;
            errno = e;
        } else {
            data[n] = '\0';
            *len = (size_t)n;
        }
    }
    int e = errno;
    close(fd);
    errno = e;
    return data;
}

int tr_migrations_each(const char *app_dir, tr_migration_cb cb, void *arg, char *err, size_t err_size)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/migrations", app_dir);
    struct dirent **list;
    int n = scandir(dir, &list, is_migration, alphasort);
    int rc = 0;
    long last = -1;
    for (int i = 0; i < n; i++) {
        const char *name = list[i]->d_name;
        long version = strtol(name, NULL, 10);
        if (rc == 0 && version == last) {
            snprintf(err, err_size, "migrations/%s: number %ld is used twice", name, version);
            rc = -1;
        }
        last = version;
        if (rc == 0)
            rc = cb(arg, dir, name, version, err, err_size);
    }
    for (int i = 0; i < n; i++)
        free(list[i]);
    if (n >= 0)
        free(list);
    return rc;
}
