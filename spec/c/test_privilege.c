/* core/privilege.c: resolving --user, switching a process to it, checking paths as it. The switch and
 * the checks need root; run as another user they check what that user may do (nothing switches). */
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "privilege.h"
#include "test.h"

TEST_IMPL(privilege_resolve)
{
    tr_identity_t id;
    char err[512];
    ASSERT_INT_EQ(tr_privilege_resolve("no-such-user-for-triage", &id, err, sizeof(err)), -1);
    ASSERT_STR_CONTAINS(err, "--user no-such-user-for-triage");
    ASSERT_INT_EQ(tr_privilege_resolve("", &id, err, sizeof(err)), -1);
    ASSERT_STR_CONTAINS(err, "--user");
    if (geteuid() != 0) {
        /* Not root: no switch, and no other user. */
        ASSERT_INT_EQ(tr_privilege_resolve(NULL, &id, err, sizeof(err)), 0);
        ASSERT_INT_EQ(id.change, 0);
        ASSERT_INT_EQ(tr_privilege_resolve("root", &id, err, sizeof(err)), -1);
        ASSERT_STR_CONTAINS(err, "only a server started as root");
        return;
    }
    struct passwd *nobody = getpwnam("nobody");
    ASSERT_NOT_NULL(nobody);
    ASSERT_INT_EQ(tr_privilege_resolve(NULL, &id, err, sizeof(err)), 0);
    ASSERT_INT_EQ(id.change, 1);
    ASSERT_INT_EQ(id.uid, nobody->pw_uid);
    ASSERT_INT_EQ(id.gid, nobody->pw_gid);
    ASSERT_STR_EQ(id.name, "nobody");
    for (int i = 0; i < id.ngroups; i++)
        ASSERT(id.groups[i] != 0); /* not a member of group root */
    ASSERT_INT_EQ(tr_privilege_resolve("root", &id, err, sizeof(err)), 0);
    ASSERT_INT_EQ(id.change, 0);
    ASSERT_INT_EQ(id.root_requested, 1);
}

/* In a child: switch to nobody; exit 0 only if every id is nobody's and there is no way back. */
TEST_IMPL(privilege_drop)
{
    if (geteuid() != 0)
        return;
    tr_identity_t id;
    char err[512];
    ASSERT_INT_EQ(tr_privilege_resolve(NULL, &id, err, sizeof(err)), 0);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        if (tr_privilege_drop(&id, err, sizeof(err)) != 0)
            _exit(10);
        uid_t r, e, s;
        gid_t gr, ge, gs;
        if (getresuid(&r, &e, &s) != 0 || r != id.uid || e != id.uid || s != id.uid)
            _exit(11);
        if (getresgid(&gr, &ge, &gs) != 0 || gr != id.gid || ge != id.gid || gs != id.gid)
            _exit(12);
        gid_t groups[64];
        int n = getgroups(64, groups);
        for (int i = 0; i < n; i++)
            if (groups[i] == 0)
                _exit(13);
        if (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0)
            _exit(14);
        _exit(0);
    }
    int status;
    ASSERT_INT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFEXITED(status));
    ASSERT_INT_EQ(WEXITSTATUS(status), 0);
}

TEST_IMPL(privilege_check)
{
    if (geteuid() != 0)
        return;
    tr_identity_t id;
    char err[1024];
    ASSERT_INT_EQ(tr_privilege_resolve(NULL, &id, err, sizeof(err)), 0);
    char dir[] = "/tmp/triage-unit-privilege-XXXXXX"; /* 0700, root's */
    ASSERT_NOT_NULL(mkdtemp(dir));
    char routes[128];
    snprintf(routes, sizeof(routes), "%s/routes", dir);
    ASSERT_INT_EQ(mkdir(routes, 0755), 0);
    tr_privilege_paths_t app = {.app_dir = dir};
    ASSERT_INT_EQ(tr_privilege_check(&id, &app, err, sizeof(err)), -1);
    ASSERT_STR_CONTAINS(err, "who cannot read the app directory (--app)");
    ASSERT_STR_CONTAINS(err, dir);
    ASSERT_STR_CONTAINS(err, "--user NAME");
    ASSERT_INT_EQ(chmod(dir, 0755), 0);
    ASSERT_INT_EQ(tr_privilege_check(&id, &app, err, sizeof(err)), 0);
    /* Readable is not writable: a data directory needs nobody's write access. */
    tr_privilege_paths_t data = {.data_dir = dir};
    ASSERT_INT_EQ(tr_privilege_check(&id, &data, err, sizeof(err)), -1);
    ASSERT_STR_CONTAINS(err, "cannot write to the data directory (--data)");
    ASSERT_INT_EQ(tr_privilege_give_data(&id, dir, err, sizeof(err)), 0);
    ASSERT_INT_EQ(tr_privilege_check(&id, &data, err, sizeof(err)), 0);
    /* The directory stays root's, writable by the user's group and sticky; other files stay as they are. */
    struct stat st;
    ASSERT_INT_EQ(stat(dir, &st), 0);
    ASSERT_INT_EQ(st.st_uid, 0);
    ASSERT_INT_EQ(st.st_gid, id.gid);
    ASSERT_INT_EQ(st.st_mode & 07777, 01770);
    ASSERT_INT_EQ(stat(routes, &st), 0);
    ASSERT_INT_EQ(st.st_uid, 0);
    rmdir(routes);
    rmdir(dir);
}
