/* The last steps before exec, shared by a container's first process and by
 * processes that join it: stdio, credentials, capabilities, no_new_privs,
 * seccomp, fd hygiene, working directory, and exec with a PATH search.
 * Runs in a clone child sharing memory with Python: raw system calls only. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

void ct_reset_signals(void)
{
    struct sigaction sa;
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP)
            continue;
        /* Every disposition back to default: an ignored SIGPIPE inherited
         * from Python would otherwise survive exec into the container. */
        __builtin_memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigaction(s, &sa, NULL);
    }
}

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

/* A terminal from the container's own devpts (so ttyname works inside):
 * the master goes to whoever holds the other end of the console socket. */
static int open_console(struct ct_process *proc, int *slave_out, struct ct_error *err)
{
    int unlock = 0;
    int master = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0)
        return ct_fail(err, "open /dev/pts/ptmx", NULL, errno);
    if (ioctl(master, TIOCSPTLCK, &unlock) < 0)
        return ct_fail(err, "unlock pty", NULL, errno);
    int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (slave < 0)
        return ct_fail(err, "open pty peer", NULL, errno);
    char byte = 't';
    struct iovec iov = {&byte, 1};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    __builtin_memset(&u, 0, sizeof u);
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof u.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    __builtin_memcpy(CMSG_DATA(c), &master, sizeof(int));
    if (sendmsg(proc->console_socket, &msg, MSG_NOSIGNAL) < 0)
        return ct_fail(err, "send pty master", NULL, errno);
    close(master);
    close(proc->console_socket);
    *slave_out = slave;
    return 0;
}

static int setup_stdio(struct ct_process *proc, struct ct_error *err)
{
    int moved[3], src[3] = {proc->stdio[0], proc->stdio[1], proc->stdio[2]};
    /* Memory is shared with the caller: the spec is never written here. */
    if (proc->tty && proc->console_socket >= 0) {
        int slave;
        if (open_console(proc, &slave, err) < 0)
            return -1;
        src[0] = src[1] = src[2] = slave;
    }
    /* Move the sources above 2 first so dup2 onto 0..2 cannot clobber a
     * source that happens to sit on one of those numbers. */
    for (int i = 0; i < 3; i++) {
        moved[i] = -1;
        if (src[i] >= 0) {
            moved[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 3);
            if (moved[i] < 0)
                return ct_fail(err, "duplicate stdio", NULL, errno);
        }
    }
    for (int i = 0; i < 3; i++) {
        if (moved[i] < 0)
            continue;
        if (dup2(moved[i], i) < 0)
            return ct_fail(err, "dup2 stdio", NULL, errno);
        close(moved[i]);
    }
    if (proc->tty) {
        if (setsid() < 0)
            return ct_fail(err, "setsid", NULL, errno);
        if (ioctl(0, TIOCSCTTY, 0) < 0)
            return ct_fail(err, "set controlling terminal", NULL, errno);
    }
    return 0;
}

static int load_seccomp(struct ct_process *proc, struct ct_error *err)
{
    struct sock_fprog prog;
    if (!proc->seccomp_filter || proc->seccomp_len <= 0)
        return 0;
    prog.len = (unsigned short)proc->seccomp_len;
    prog.filter = (struct sock_filter *)proc->seccomp_filter;
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
        return ct_fail(err, "load seccomp filter", NULL, errno);
    return 0;
}

/* Needs CAP_SETPCAP, so it happens while we are still root. */
static int drop_bounding(struct ct_process *proc, struct ct_error *err)
{
    for (int cap = 0; cap < 64; cap++) {
        if (proc->cap_bounding & (1ULL << cap))
            continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            return ct_fail(err, "drop bounding capability", NULL, errno);
    }
    return 0;
}

static int set_capabilities(struct ct_process *proc, struct ct_error *err)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];

    data[0].effective = (uint32_t)proc->cap_effective;
    data[1].effective = (uint32_t)(proc->cap_effective >> 32);
    data[0].permitted = (uint32_t)proc->cap_permitted;
    data[1].permitted = (uint32_t)(proc->cap_permitted >> 32);
    data[0].inheritable = (uint32_t)proc->cap_inheritable;
    data[1].inheritable = (uint32_t)(proc->cap_inheritable >> 32);
    if (syscall(SYS_capset, &hdr, data) < 0)
        return ct_fail(err, "set capabilities", NULL, errno);
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        return ct_fail(err, "clear ambient capabilities", NULL, errno);
    for (int cap = 0; cap < 64; cap++) {
        if (!(proc->cap_ambient & (1ULL << cap)))
            continue;
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0)
            return ct_fail(err, "raise ambient capability", NULL, errno);
    }
    return 0;
}

int ct_setup_process(struct ct_process *proc, struct ct_error *err)
{
    char cwd[4096];

    if (setup_stdio(proc, err) < 0)
        return -1;
    /* Without no_new_privs the filter must go in while we still hold
     * CAP_SYS_ADMIN, i.e. before the credentials change. */
    if (!proc->no_new_privs && load_seccomp(proc, err) < 0)
        return -1;
    if (proc->set_caps && drop_bounding(proc, err) < 0)
        return -1;
    if (proc->set_caps && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
        return ct_fail(err, "keep capabilities", NULL, errno);
    /* In a user namespace with setgroups denied (a single-id mapping) an
     * empty list is the only one possible, and it is what we have. */
    if (syscall(SYS_setgroups, proc->ngroups, proc->groups) < 0 && !(errno == EPERM && proc->ngroups == 0))
        return ct_fail(err, "setgroups", NULL, errno);
    if (syscall(SYS_setresgid, proc->gid, proc->gid, proc->gid) < 0)
        return ct_fail(err, "setgid", NULL, errno);
    if (syscall(SYS_setresuid, proc->uid, proc->uid, proc->uid) < 0)
        return ct_fail(err, "setuid", NULL, errno);
    if (proc->set_caps && set_capabilities(proc, err) < 0)
        return -1;
    if (proc->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return ct_fail(err, "set no_new_privs", NULL, errno);
    /* CVE-2024-21626: no descriptor of the Python process survives exec. */
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        return ct_fail(err, "close inherited descriptors", NULL, errno);
    if (proc->cwd && proc->cwd[0]) {
        if (chdir(proc->cwd) < 0)
            return ct_fail(err, "chdir to working directory", proc->cwd, errno);
        /* A cwd outside the root reads back as "(unreachable)/..." or fails. */
        if (syscall(SYS_getcwd, cwd, sizeof cwd) < 0)
            return ct_fail(err, "working directory outside the container", proc->cwd, errno);
        if (cwd[0] != '/')
            return ct_fail(err, "working directory outside the container", proc->cwd, EPERM);
    }
    if (proc->no_new_privs && load_seccomp(proc, err) < 0)
        return -1;
    return 0;
}

static const char *find_path(const char *const *envp)
{
    static const char key[] = "PATH=";
    for (int i = 0; envp && envp[i]; i++) {
        int j = 0;
        while (j < 5 && envp[i][j] == key[j])
            j++;
        if (j == 5)
            return envp[i] + 5;
    }
    return "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
}

int ct_exec(struct ct_process *proc, struct ct_error *err)
{
    const char *file = proc->argv[0];
    char buf[4096];
    int saw_eacces = 0, last = ENOENT;

    if (!file || !file[0])
        return ct_fail(err, "exec", "empty command", ENOENT);
    for (const char *p = file; *p; p++) {
        if (*p == '/') {
            execve(file, (char *const *)proc->argv, (char *const *)proc->envp);
            return ct_fail(err, "exec", file, errno);
        }
    }
    size_t flen = ct_strlen(file);
    const char *path = find_path(proc->envp);
    while (1) {
        const char *end = path;
        while (*end && *end != ':')
            end++;
        size_t dlen = (size_t)(end - path);
        if (dlen + flen + 2 < sizeof buf) {
            size_t n = 0;
            for (size_t i = 0; i < dlen; i++)
                buf[n++] = path[i];
            if (dlen == 0)
                buf[n++] = '.';
            buf[n++] = '/';
            for (size_t i = 0; i <= flen; i++)
                buf[n++] = file[i];
            execve(buf, (char *const *)proc->argv, (char *const *)proc->envp);
            if (errno == EACCES)
                saw_eacces = 1;
            else if (errno != ENOENT && errno != ENOTDIR)
                last = errno;
        }
        if (!*end)
            break;
        path = end + 1;
    }
    return ct_fail(err, "exec", file, saw_eacces ? EACCES : last);
}
