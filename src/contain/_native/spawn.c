/* Starting a container, and joining one.
 *
 * The parent (a Python thread, with the GIL released by cffi) clones a
 * child that shares its memory (CLONE_VM, like posix_spawn) on a private
 * stack: no page tables are copied, whatever the size of the Python
 * process.  The child creates or joins namespaces, builds the root,
 * drops privileges and execs.  A close-on-exec pipe tells the parent when
 * that happened: EOF means exec or death, and because memory is shared the
 * child leaves its error record directly in the parent's ct_error. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif

#define STACK_SIZE (256 * 1024)

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif

/* The kernel's struct clone_args (clone3), as of Linux 5.7. */
struct ct_clone_args {
    unsigned long long flags, pidfd, child_tid, parent_tid, exit_signal;
    unsigned long long stack, stack_size, tls, set_tid, set_tid_size, cgroup;
};

#if defined(__x86_64__)
/* clone3 running fn(arg) on the new stack in the child, which exits with
 * its return value (glibc has no clone3 wrapper for that).  Returns the
 * child's pid, or -errno. */
static long clone3_run(struct ct_clone_args *args, int (*fn)(void *), void *arg)
{
    long ret;
    register int (*r12)(void *) __asm__("r12") = fn;
    register void *r13 __asm__("r13") = arg;
    __asm__ volatile("syscall\n\t"
                     "test %%rax, %%rax\n\t"
                     "jnz 1f\n\t"
                     "xor %%ebp, %%ebp\n\t"
                     "mov %%r13, %%rdi\n\t"
                     "call *%%r12\n\t"
                     "mov %%eax, %%edi\n\t"
                     "mov $60, %%eax\n\t"
                     "syscall\n\t"
                     "hlt\n"
                     "1:"
                     : "=a"(ret)
                     : "0"((long)SYS_clone3), "D"(args), "S"(sizeof *args), "r"(r12), "r"(r13)
                     : "rcx", "r11", "memory");
    return ret;
}
#define HAVE_CLONE3_RUN 1

/* clone(2)-style `flags` (exit signal in the low byte) with clone3, the
 * child born in the cgroup v2 directory `cgroup_fd`, running fn(arg) on
 * the stack [stack_lo, stack_lo + size).  The child's pid, or -errno;
 * clone3_unsupported tells a kernel without it from a refusal. */
static long clone_into_cgroup(int flags, int cgroup_fd, char *stack_lo, size_t size, int *pidfd,
                              int (*fn)(void *), void *arg)
{
    struct ct_clone_args a;
    __builtin_memset(&a, 0, sizeof a);
    a.flags = ((unsigned long long)(unsigned int)flags & ~0xffULL) | CLONE_INTO_CGROUP;
    a.pidfd = (unsigned long long)(unsigned long)pidfd;
    a.exit_signal = (unsigned int)flags & 0xff;
    a.stack = (unsigned long long)(unsigned long)stack_lo;
    a.stack_size = size;
    a.cgroup = (unsigned int)cgroup_fd;
    return clone3_run(&a, fn, arg);
}

static int clone3_unsupported(long r)
{
    return r == -ENOSYS || r == -E2BIG || r == -EINVAL;
}
#endif

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

struct spawn_ctx {
    struct ct_spec *spec;
    struct ct_error *err;
    int done_w;        /* close-on-exec; EOF at the parent when we exec */
    int done_r;
    int go_r;          /* the parent writes a byte here once id maps are set */
    int go_w;
    int cg_r;          /* and here once it has made the cgroups the child joins */
    int cg_w;
    int placed_v2;     /* the child was born in its v2 cgroup (CLONE_INTO_CGROUP) */
    int pid_w;         /* with cgroups to make and a monitor: the monitor-to-be */
    int pid_r;         /* sends the child's pid over this socket pair, the caller
                          makes the cgroups, releases the child and answers "g" */
    int clone_parent;  /* clone the container as a sibling (CLONE_PARENT): see clone_in_userns */
    sigset_t mask;     /* the parent's signal mask, restored before exec */
    /* ct_join */
    int target_pidfd;
    int ns_flags;
    const int *cgroup_procs;
    int cgroup_dir_fd;  /* v2: CLONE_INTO_CGROUP for the grandchild, -1 */
    int v2_procs_fd;    /* or, where the kernel lacks it, its cgroup.procs, -1 */
    char *stack_lo;     /* the bottom of the grandchild's stack (clone3) */
    struct ct_process *proc;
    int grandchild_pid;
    int grandchild_pidfd;
    /* monitored start */
    struct ct_monitor *mon;
    char *stack_c, *stack_m, *stack_h;
    int child_pid, monitor_pid, monitor_pidfd;
    /* an id map helper (newuidmap/newgidmap) about to be exec'd */
    const char *helper_argv[24];
    int helper_err_w;
    char pidbuf[16];
};

/* Record the failure for the parent and end the child. */
static void __attribute__((noreturn)) die(struct ct_error *err, const char *step, const char *detail, int e)
{
    ct_fail(err, step, detail, e);
    _exit(125);
}

static int q_open(const char *path, int flags) { return (int)ct_sys4(SYS_openat, AT_FDCWD, (long)path, flags, 0); }
static int q_openat(int dfd, const char *path, int flags) { return (int)ct_sys4(SYS_openat, dfd, (long)path, flags, 0); }
static long q_write(int fd, const void *buf, size_t n) { return ct_sys4(SYS_write, fd, (long)buf, (long)n, 0); }
static long q_read(int fd, void *buf, size_t n) { return ct_sys4(SYS_read, fd, (long)buf, (long)n, 0); }
static void q_close(int fd) { ct_sys4(SYS_close, fd, 0, 0, 0); }
static int q_mkdir(const char *path) { return (int)ct_sys4(SYS_mkdirat, AT_FDCWD, (long)path, 0755, 0); }
static int q_rmdir(const char *path) { return (int)ct_sys4(SYS_unlinkat, AT_FDCWD, (long)path, AT_REMOVEDIR, 0); }
static void q_kill(int pid) { ct_sys4(SYS_kill, pid, SIGKILL, 0, 0); }

/* Join the cgroups given as open files: write "0" (the writer) into each,
 * and into the v2 directory's cgroup.procs unless the child was born there.
 * The v1 files are `tasks`: a single-threaded process moving itself
 * through `tasks` takes no global lock, where cgroup.procs takes the
 * threadgroup rwsem for writing and so waits for an RCU grace period
 * (5-15 ms on an idle host).  Returns 0 or -errno. */
static int write_cgroup_procs(struct spawn_ctx *c)
{
    const struct ct_spec *s = c->spec;
    for (int i = 0; i < 12 && s->cgroup_procs[i] >= 0; i++) {
        long r = q_write(s->cgroup_procs[i], "0", 1);
        if (r < 0)
            return (int)r;
    }
    if (s->cgroup_dir_fd >= 0 && !c->placed_v2) {
        int fd = q_openat(s->cgroup_dir_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            return fd;
        long r = q_write(fd, "0", 1);
        q_close(fd);
        return r < 0 ? (int)r : 0;
    }
    return 0;
}

static int join_cgroups(struct spawn_ctx *c)
{
    int r = write_cgroup_procs(c);
    return r < 0 ? ct_fail(c->err, "join cgroup", NULL, -r) : 0;
}

/* Join the cgroups the caller made during the start (ct_spec.cgroup_mkdirs):
 * "0" into each of cgroup_join_paths, opened below cgroup_join_dirfd (the
 * caller's root, which pivot_root does not move). */
static void join_made_cgroups(struct spawn_ctx *c)
{
    const struct ct_spec *s = c->spec;
    for (const char *const *p = s->cgroup_join_paths; p && *p; p++) {
        int fd = openat(s->cgroup_join_dirfd, *p, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1)
            die(c->err, "join cgroup", *p, errno);
        close(fd);
    }
    /* Our copy of the host's root goes now, not only at exec. */
    if (s->cgroup_join_dirfd >= 0)
        close(s->cgroup_join_dirfd);
}


static int finish_and_exec(struct ct_process *proc, struct spawn_ctx *c)
{
    if (ct_setup_process(proc, c->err) < 0)
        return 125;
    /* The container's process starts with no signal blocked, whatever the
     * caller (or a monitor's restart process) had blocked. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    ct_exec(proc, c->err);
    /* The command could not run: say so on the container's stderr, as
     * Docker does, and exit with its codes (126 not executable, 127 not
     * found). */
    int e = c->err->err;
    int has_slash = 0;
    for (const char *p = proc->argv[0]; *p; p++)
        has_slash |= *p == '/';
    const char *why = e == ENOENT && has_slash ? ": no such file or directory\n"
                    : e == ENOENT ? ": executable file not found in $PATH\n"
                    : e == EACCES ? ": permission denied\n"
                    : ": cannot execute\n";
    const char *pre = "exec: ";
    if (write(2, pre, ct_strlen(pre)) < 0 || write(2, proc->argv[0], ct_strlen(proc->argv[0])) < 0 ||
        write(2, why, ct_strlen(why)) < 0) {
        /* stderr is gone: the record in err still tells the parent. */
    }
    return (e == ENOENT || e == ENOTDIR) ? 127 : 126;
}

static int loopback_up(struct ct_error *err)
{
    struct ifreq ifr;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return ct_fail(err, "open socket for lo", NULL, errno);
    __builtin_memset(&ifr, 0, sizeof ifr);
    ifr.ifr_name[0] = 'l';
    ifr.ifr_name[1] = 'o';
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) {
        close(fd);
        return ct_fail(err, "read lo flags", NULL, errno);
    }
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0) {
        close(fd);
        return ct_fail(err, "bring lo up", NULL, errno);
    }
    close(fd);
    return 0;
}

static int container_child(void *arg)
{
    struct spawn_ctx *c = arg;
    struct ct_spec *s = c->spec;
    struct ct_error *err = c->err;
    int fds[CT_MAX_MOUNTS];
    char b;

    ct_reset_signals();
    close(c->done_r);
    if (c->cg_w >= 0)
        close(c->cg_w);
    if (c->pid_w >= 0) {
        /* Our pid goes to the caller from the monitor-to-be's copy only:
         * should that one die first, the caller sees EOF. */
        close(c->pid_w);
        close(c->pid_r);
    }
    if (c->go_r >= 0) {
        close(c->go_w);
        if (read(c->go_r, &b, 1) != 1) {
            if (err->step[0])
                _exit(125);  /* the parent recorded why (newuidmap failed, ...) */
            die(err, "wait for user namespace mappings", NULL, EPIPE);
        }
        close(c->go_r);
    }
    if ((c->go_r >= 0 || s->userns_fd >= 0) &&
        (syscall(SYS_setresgid, 0, 0, 0) < 0 || syscall(SYS_setresuid, 0, 0, 0) < 0))
        die(err, "become root in the user namespace", NULL, errno);
    /* Cgroups that exist already: join them now. */
    if (join_cgroups(c) < 0)
        _exit(125);
    for (int i = 0; i < 8 && s->ns_fds[i] >= 0; i++)
        if (setns(s->ns_fds[i], 0) < 0)
            die(err, "join namespace", NULL, errno);
    if (s->loopback_up && loopback_up(err) < 0)
        _exit(125);
    if (s->proc.oom_score_adj_set) {
        char num[16];
        int v = s->proc.oom_score_adj, n = 0, neg = v < 0;
        unsigned int u = neg ? (unsigned int)(-v) : (unsigned int)v;
        char rev[16];
        int r = 0;
        do { rev[r++] = (char)('0' + u % 10); u /= 10; } while (u);
        if (neg) num[n++] = '-';
        while (r) num[n++] = rev[--r];
        int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, num, (size_t)n) < 0)
            die(err, "set oom_score_adj", NULL, errno);
        close(fd);
    }

    /* Nothing we mount may propagate back to the host. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        die(err, "make mounts private", NULL, errno);
    if (s->overlay_fd >= 0) {
        /* Mounted ahead, detached: attach it here. */
        if (syscall(SYS_move_mount, s->overlay_fd, "", AT_FDCWD, s->rootfs, MOVE_MOUNT_F_EMPTY_PATH) < 0)
            die(err, "mount overlay root", s->rootfs, errno);
    } else if (s->overlay) {
        if (mount("overlay", s->rootfs, "overlay", 0, s->overlay) < 0)
            die(err, "mount overlay root", s->rootfs, errno);
    } else if (mount(s->rootfs, s->rootfs, NULL, MS_BIND | MS_REC, NULL) < 0) {
        die(err, "bind root directory", s->rootfs, errno);
    }
    if (s->nmounts > CT_MAX_MOUNTS)
        die(err, "too many mounts", NULL, E2BIG);
    if (ct_prepare_mounts(s, fds, CT_PREPARE_EARLY, err) < 0)
        _exit(125);
    if (s->hostname && (s->clone_flags & CLONE_NEWUTS) &&
        sethostname(s->hostname, ct_strlen(s->hostname)) < 0)
        die(err, "set hostname", s->hostname, errno);

    if (chdir(s->rootfs) < 0)
        die(err, "enter root", s->rootfs, errno);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        die(err, "pivot_root", s->rootfs, errno);
    /* The old root now sits on top of the new one: detach it. */
    if (umount2(".", MNT_DETACH) < 0)
        die(err, "detach old root", NULL, errno);
    if (chdir("/") < 0)
        die(err, "chdir /", NULL, errno);

    /* While the parent makes our cgroups: the mounts that do not need them. */
    if (ct_attach_mounts(s, fds, CT_ATTACH_FIRST, err) < 0)
        _exit(125);
    /* Nothing of the container's runs before it is in its cgroups: those
     * the caller has been making meanwhile, once it says they are ready. */
    if (c->cg_r >= 0) {
        if (read(c->cg_r, &b, 1) != 1)
            _exit(125);  /* the parent recorded why */
        close(c->cg_r);
        join_made_cgroups(c);
    }
    /* Made after joining, so that the cgroup it sees as its root is its own. */
    if ((s->clone_flags & CLONE_NEWCGROUP) && unshare(CLONE_NEWCGROUP) < 0)
        die(err, "create cgroup namespace", NULL, errno);
    if (ct_prepare_mounts(s, fds, CT_PREPARE_CGROUPFS, err) < 0)
        _exit(125);
    if (ct_attach_mounts(s, fds, CT_ATTACH_CGROUPS, err) < 0)
        _exit(125);
    if (s->proc.cwd && s->proc.cwd[0] && !s->readonly_root) {
        int r = ct_mkdir_p(s->proc.cwd, 0755);
        if (r < 0)
            die(err, "create working directory", s->proc.cwd, -r);
    }
    if (s->readonly_root && mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0)
        die(err, "make root read-only", NULL, errno);
    _exit(finish_and_exec(&s->proc, c));
}

/* Close both ends of a pipe or socket pair, if it was made. */
static void close_pair(int p[2])
{
    if (p[0] >= 0) {
        close(p[0]);
        close(p[1]);
    }
}

static void block_signals(sigset_t *old)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, old);
}

/* Read until EOF: the child has exec'd or exited.  Like reap, it runs in
 * the caller while the children may still be running on its errno (see
 * ct_sys4): an EINTR here must not land there. */
static void wait_done(int fd)
{
    char buf[16];
    while (1) {
        long n = q_read(fd, buf, sizeof buf);
        if (n == 0 || (n < 0 && n != -EINTR))
            return;
    }
}

static int write_file(int pid, const char *name, const char *data, struct ct_error *err)
{
    char path[64];
    int n = 0;
    const char *pre = "/proc/";
    char rev[16];
    int r = 0;
    unsigned int u = (unsigned int)pid;
    do { rev[r++] = (char)('0' + u % 10); u /= 10; } while (u);
    while (*pre) path[n++] = *pre++;
    while (r) path[n++] = rev[--r];
    path[n++] = '/';
    for (const char *p = name; *p; p++) path[n++] = *p;
    path[n] = 0;
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return ct_fail(err, "open id map", name, errno);
    ssize_t w = write(fd, data, ct_strlen(data));
    int e = errno;
    close(fd);
    if (w < 0)
        return ct_fail(err, "write id map", name, e);
    return 0;
}

static int is_exec_step(const struct ct_error *err)
{
    const char *s = err->step;
    return s[0] == 'e' && s[1] == 'x' && s[2] == 'e' && s[3] == 'c' && !s[4];
}

static void reap(int pid)
{
    int status;
    while (ct_sys4(SYS_wait4, pid, (long)&status, __WALL, 0) == -EINTR)
        ;
}

static void format_uint(char *buf, unsigned int u);

/* The id map helper, vforked: its stderr goes to a pipe so that its
 * complaint ("newuidmap: write to uid_map failed: ...") reaches the error. */
static int helper_child(void *arg)
{
    struct spawn_ctx *c = arg;
    ct_reset_signals();
    if (dup2(c->helper_err_w, 2) < 0 || dup2(c->helper_err_w, 1) < 0)
        _exit(126);
    sigprocmask(SIG_SETMASK, &c->mask, NULL);
    const char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    execve(c->helper_argv[0], (char *const *)c->helper_argv, (char *const *)envp);
    _exit(errno == ENOENT ? 127 : 126);
}

static void append(char *buf, size_t cap, size_t *n, const char *text)
{
    for (; text && *text && *n + 1 < cap; text++)
        buf[(*n)++] = *text;
    buf[*n] = 0;
}

/* A helper process started for the child (newuidmap, newgidmap, the root
 * helper): its pid, the read end of its messages, what to call it. */
struct helper_run {
    int pid;
    int err_r;
    const char *name;
    const char *path;
};

/* Start a helper for the child `pid`; returns once it has exec'd
 * (CLONE_VFORK: its argv and stack are ours again), so several can run at
 * once.  The step named in an error is `step`, or else the helper's file
 * name. */
static int helper_start(struct spawn_ctx *c, const char *step, const char *const *argv, int pid,
                        struct helper_run *h)
{
    char pidbuf[16];
    int n = 0, p[2];

    h->pid = h->err_r = -1;
    h->path = argv[0];
    h->name = argv[0];
    for (const char *q = argv[0]; *q; q++)
        if (*q == '/')
            h->name = q + 1;
    if (step)
        h->name = step;
    format_uint(pidbuf, (unsigned)pid);
    for (; argv[n] && n < 23; n++) {
        const char *a = argv[n];
        c->helper_argv[n] = (a[0] == '{' && a[1] == 'p' && a[2] == 'i' && a[3] == 'd' && a[4] == '}' && !a[5])
                            ? pidbuf : a;
    }
    c->helper_argv[n] = NULL;
    if (pipe2(p, O_CLOEXEC) < 0)
        return ct_fail(c->err, h->name, "create pipe for its messages", errno);
    c->helper_err_w = p[1];
    /* The helper runs on its own stack; we wait (CLONE_VFORK) until it has
     * exec'd. */
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    int hpid = clone(helper_child, c->stack_h, CLONE_VM | CLONE_VFORK | SIGCHLD, c);
    int e = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    close(p[1]);
    if (hpid < 0) {
        close(p[0]);
        return ct_fail(c->err, h->name, "clone", e);
    }
    h->pid = hpid;
    h->err_r = p[0];
    return 0;
}

/* Wait for a started helper and check that it succeeded (its message, if
 * it failed, goes into the error). */
static int helper_finish(struct spawn_ctx *c, struct helper_run *h)
{
    char detail[sizeof c->err->detail], out[160];
    int status = 0, e;

    if (h->pid < 0)
        return -1;
    while (waitpid(h->pid, &status, 0) < 0) {
        if (errno != EINTR) {
            e = errno;
            close(h->err_r);
            return ct_fail(c->err, h->name, "wait", e);
        }
    }
    ssize_t got = read(h->err_r, out, sizeof out - 1);
    close(h->err_r);
    out[got > 0 ? got : 0] = 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    size_t dn = 0;
    char num[16];
    detail[0] = 0;
    if (WIFEXITED(status)) {
        format_uint(num, (unsigned)WEXITSTATUS(status));
        append(detail, sizeof detail, &dn, "exit status ");
    } else {
        format_uint(num, (unsigned)WTERMSIG(status));
        append(detail, sizeof detail, &dn, "killed by signal ");
    }
    append(detail, sizeof detail, &dn, num);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127 && !out[0])
        append(detail, sizeof detail, &dn, ": helper not found: ");
    else if (out[0])
        append(detail, sizeof detail, &dn, ": ");
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127 && !out[0])
        append(detail, sizeof detail, &dn, h->path);
    /* One line of its message, without the trailing newline. */
    for (char *q = out; *q; q++)
        if (*q == '\n') {
            *q = 0;
            break;
        }
    append(detail, sizeof detail, &dn, out);
    /* The first failure is the one reported. */
    if (c->err->step[0])
        return -1;
    return ct_fail(c->err, h->name, detail, 0);
}

static int run_helper(struct spawn_ctx *c, const char *step, const char *const *argv, int pid)
{
    struct helper_run h;
    if (helper_start(c, step, argv, pid, &h) < 0)
        return -1;
    return helper_finish(c, &h);
}

/* Write the child's id maps (or have newuidmap/newgidmap write them), run
 * the root helper if there is one, then let the child go on.  Runs in
 * whichever process is the child's parent (the caller, or the
 * monitor-to-be). */
static int map_and_release(struct spawn_ctx *c, int pid)
{
    struct ct_spec *s = c->spec;
    close(c->go_r);
    int ok;
    if (s->gidmap_helper && s->uidmap_helper) {
        /* Independent (each writes its own file): both at once, which
         * halves the cost of two setuid programs starting. */
        struct helper_run g, u;
        int g_ok = helper_start(c, NULL, s->gidmap_helper, pid, &g) == 0;
        int u_ok = g_ok && helper_start(c, NULL, s->uidmap_helper, pid, &u) == 0;
        g_ok = g_ok && helper_finish(c, &g) == 0;
        u_ok = u_ok && helper_finish(c, &u) == 0;
        ok = g_ok && u_ok;
    } else {
        if (s->gidmap_helper)
            ok = run_helper(c, NULL, s->gidmap_helper, pid) == 0;
        else
            /* Only an unprivileged writer must deny setgroups (and then the
             * container cannot call it); root keeps it for the container. */
            ok = !s->gid_map || ((geteuid() == 0 || write_file(pid, "setgroups", "deny", c->err) == 0) &&
                                 write_file(pid, "gid_map", s->gid_map, c->err) == 0);
        if (ok && s->uidmap_helper)
            ok = run_helper(c, NULL, s->uidmap_helper, pid) == 0;
        else if (ok)
            ok = !s->uid_map || write_file(pid, "uid_map", s->uid_map, c->err) == 0;
    }
    /* The child waits for the go byte before it mounts anything: the
     * helper's mount on rootfs is in place when it looks. */
    if (ok && s->root_helper)
        ok = run_helper(c, "mount root", s->root_helper, pid) == 0;
    if (ok && write(c->go_w, "g", 1) != 1)
        ok = ct_fail(c->err, "release child", NULL, errno) == 0;
    close(c->go_w);
    return ok ? 0 : -1;
}

static int streq(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

/* ct_spec.cgroup_mkdirs and cgroup_writes (see there). */
static int make_cgroups(struct spawn_ctx *c)
{
    const struct ct_spec *s = c->spec;
    for (const char *const *d = s->cgroup_mkdirs; d && *d; d++) {
        int r = q_mkdir(*d);
        if (r == -EEXIST) {
            /* Left by an earlier start of this container that died before
             * it was recorded: empty, it goes; else it is in use. */
            if (q_rmdir(*d) < 0 || q_mkdir(*d) < 0)
                return ct_fail(c->err, "cgroup mkdir", *d, EEXIST);
            continue;
        }
        /* The shared parent is missing (another process removed it after
         * its last container): made with ours. */
        if (r == -ENOENT)
            r = ct_mkdir_p(*d, 0755);
        if (r < 0)
            return ct_fail(c->err, "cgroup mkdir", *d, -r);
    }
    int fd = -1;
    const char *open_file = NULL;
    for (const char *const *w = s->cgroup_writes; w && w[0] && w[1]; w += 2) {
        if (!open_file || !streq(open_file, w[0])) {
            if (fd >= 0)
                q_close(fd);
            open_file = w[0];
            fd = q_open(w[0], O_WRONLY | O_CLOEXEC);
            if (fd < 0)
                return ct_fail(c->err, "cgroup write", w[0], -fd);
        }
        long r = q_write(fd, w[1], ct_strlen(w[1]));
        if (r < 0) {
            char what[184];
            size_t n = ct_strlen(w[0]);
            ct_copy(what, sizeof what, w[0]);
            if (n + 3 < sizeof what) {
                what[n] = ':';
                what[n + 1] = ' ';
                ct_copy(what + n + 2, sizeof what - n - 2, w[1]);
            }
            q_close(fd);
            return ct_fail(c->err, "cgroup write", what, (int)-r);
        }
    }
    if (fd >= 0)
        q_close(fd);
    return 0;
}

/* Tell the child its cgroups are ready, for it to join them itself (see
 * join_made_cgroups); closes cg_w (the child dies of EOF if this fails:
 * the caller kills it too).  The child waits for the byte before anything
 * runs in it. */
static int release_child(struct spawn_ctx *c)
{
    long w = q_write(c->cg_w, "c", 1);
    q_close(c->cg_w);
    if (w == 1)
        return 0;
    /* EPIPE: the child died, after recording its own failure. */
    if (!c->err->step[0])
        ct_fail(c->err, "release child", NULL, w < 0 ? (int)-w : EPIPE);
    return -1;
}

/* Make the cgroups to make (ct_spec.cgroup_mkdirs), then release the child. */
static int make_cgroups_and_release(struct spawn_ctx *c)
{
    q_close(c->cg_r);
    if (make_cgroups(c) < 0) {
        q_close(c->cg_w);
        return -1;
    }
    return release_child(c);
}

static int clone_flags_for(struct ct_spec *spec)
{
    /* The cgroup namespace is made in the child after it joined its
     * cgroups, so that the cgroup it sees as its root is its own. */
    return (spec->clone_flags & ~CLONE_NEWCGROUP) | CLONE_VM | CLONE_PIDFD | SIGCHLD;
}

/* Clone the container's first process: on cgroup v2, straight into its
 * cgroup (clone3 with CLONE_INTO_CGROUP: nothing to migrate later, no RCU
 * wait); elsewhere, or on kernels without it, with clone. */
static int clone_container(struct spawn_ctx *c, int *pidfd)
{
    int flags = clone_flags_for(c->spec) | (c->clone_parent ? CLONE_PARENT : 0);
    c->placed_v2 = 0;
#ifdef HAVE_CLONE3_RUN
    if (c->spec->cgroup_dir_fd >= 0) {
        long pid = clone_into_cgroup(flags, c->spec->cgroup_dir_fd, c->stack_c - STACK_SIZE, STACK_SIZE,
                                     pidfd, container_child, c);
        if (pid > 0) {
            c->placed_v2 = 1;
            return (int)pid;
        }
        if (!clone3_unsupported(pid)) {
            errno = (int)-pid;
            return -1;
        }
    }
#endif
    return clone(container_child, c->stack_c, flags, c, pidfd);
}

static void format_uint(char *buf, unsigned int u)
{
    char rev[16];
    int r = 0, n = 0;
    do { rev[r++] = (char)('0' + u % 10); u /= 10; } while (u);
    while (r) buf[n++] = rev[--r];
    buf[n] = 0;
}

/* With ct_spec.userns_fd (the user's long-lived user namespace): a
 * short-lived child of the monitor-to-be joins that namespace and clones
 * the container as the monitor's own child (CLONE_PARENT).  What the clone
 * makes for the container then belongs to that namespace, while the
 * monitor, and the restart process it may exec, stay the user's on the
 * host.  (setns wants a process of its own thread group and fs_struct:
 * this child is one, the caller's threads are not.)  The child shares our
 * memory and fd table, so the pid and the pidfd come back here. */
struct joined_clone {
    struct spawn_ctx *c;
    int *pidfd;
    int pid;
    int err;
};

static int joined_clone_child(void *arg)
{
    struct joined_clone *j = arg;
    if (setns(j->c->spec->userns_fd, CLONE_NEWUSER) < 0) {
        j->err = errno;
        ct_fail(j->c->err, "join user namespace", "the user's long-lived one (contain-monitor --hold-userns)", errno);
        _exit(1);
    }
    j->c->clone_parent = 1;
    j->pid = clone_container(j->c, j->pidfd);
    j->err = errno;
    _exit(0);
}

static int clone_in_userns(struct spawn_ctx *c, int *pidfd)
{
    struct joined_clone j = {c, pidfd, -1, ECHILD};
    int p = clone(joined_clone_child, c->stack_h, CLONE_VM | CLONE_VFORK | CLONE_FILES | SIGCHLD, &j);
    if (p < 0)
        return -1;
    reap(p);
    if (j.pid < 0)
        errno = j.err;
    return j.pid;
}

/* The monitor-to-be: parent of the container, then exec'd as the monitor. */
static int monitor_child(void *arg)
{
    struct spawn_ctx *c = arg;
    struct ct_monitor *mon = c->mon;
    const char *argv[34];
    int moved[9];
    int pidfd = -1;

    ct_reset_signals();
    close(c->done_r);
    /* A session of its own: a Ctrl-C meant for the caller does not reach it. */
    setsid();
    int pid = c->spec->userns_fd >= 0 ? clone_in_userns(c, &pidfd) : clone_container(c, &pidfd);
    if (pid < 0) {
        if (c->err->step[0])
            _exit(125);  /* recorded already ("join user namespace") */
        die(c->err, "clone", NULL, errno);
    }
    c->child_pid = pid;
    if (c->go_r >= 0 && map_and_release(c, pid) < 0) {
        kill(pid, SIGKILL);
        _exit(125);
    }
    if (c->pid_w >= 0) {
        /* The caller has been making the cgroups meanwhile: it lets the
         * child join them and go on (cg_w is its own copy).  We wait for
         * that off the CPU, where the kernel put the child: it starts now,
         * and we are woken on whichever CPU is free. */
        char ok = 0;
        q_close(c->pid_r);
        q_close(c->cg_r);
        q_close(c->cg_w);
        long n = q_write(c->pid_w, &pid, sizeof pid);
        if (n != (long)sizeof pid) {
            q_kill(pid);
            die(c->err, "hand over the container's pid", NULL, n < 0 ? (int)-n : EPIPE);
        }
        do
            n = q_read(c->pid_w, &ok, 1);
        while (n == -EINTR);
        q_close(c->pid_w);
        if (n != 1 || ok != 'g') {
            q_kill(pid);
            _exit(125);  /* the caller recorded why */
        }
    }
    /* Hand over: the container's pidfd on 3, the caller's fds on 4, 5, ... */
    moved[0] = fcntl(pidfd, F_DUPFD_CLOEXEC, 64);
    for (int i = 0; i < mon->nfds && i < 8; i++)
        moved[i + 1] = fcntl(mon->fds[i], F_DUPFD_CLOEXEC, 64);
    for (int i = 0; i <= mon->nfds && i < 9; i++) {
        if (moved[i] < 0 || dup2(moved[i], 3 + i) < 0) {
            kill(pid, SIGKILL);
            die(c->err, "hand descriptors to the monitor", NULL, errno);
        }
    }
    /* The caller's stdio is not the monitor's: a pipe held open here would
     * keep, say, a shell waiting for EOF until the container ends. */
    int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
    for (int i = 0; i < 3 && nul >= 0; i++)
        dup2(nul, i);
    syscall(SYS_close_range, 4U + (unsigned)mon->nfds, ~0U, CLOSE_RANGE_CLOEXEC);
    format_uint(c->pidbuf, (unsigned)pid);
    int n = 0;
    for (; mon->argv[n] && n < 33; n++) {
        const char *a = mon->argv[n];
        argv[n] = (a[0] == '{' && a[1] == 'p' && a[2] == 'i' && a[3] == 'd' && a[4] == '}' && !a[5])
                  ? c->pidbuf : a;
    }
    argv[n] = NULL;
    if (chdir("/") < 0) {
        /* not fatal: the monitor only uses absolute paths */
    }
    /* SIGUSR1 stays blocked across the exec: it asks the monitor for its
     * attach socket, and one sent before the monitor set up its signalfd
     * must wait there instead of killing it. */
    sigset_t mask = c->mask;
    sigaddset(&mask, SIGUSR1);
    sigprocmask(SIG_SETMASK, &mask, NULL);
    execve(mon->path, (char *const *)argv, (char *const *)mon->envp);
    kill(pid, SIGKILL);
    die(c->err, "exec monitor", mon->path, errno);
}

/* Launched with CLONE_VFORK: starts the monitor-to-be and exits at once, so
 * that the monitor is not the caller's child and outlives it. */
static int launcher_child(void *arg)
{
    struct spawn_ctx *c = arg;
    /* We share the caller's fd table (CLONE_FILES): the pidfd is theirs. */
    int pidfd = -1;
    int pid = clone(monitor_child, c->stack_m, CLONE_VM | CLONE_PIDFD | SIGCHLD, c, &pidfd);
    if (pid < 0)
        die(c->err, "clone monitor", NULL, errno);
    c->monitor_pid = pid;
    c->monitor_pidfd = pidfd;
    _exit(0);
}

/* Field 22 of /proc/PID/stat, or 0.  The command (field 2) may hold
 * spaces and parentheses: fields are counted from the last ')'.  (Runs in
 * the caller, which is not one of the children: libc is fine.) */
static unsigned long long proc_start_time(int pid)
{
    char path[32], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    /* The children may be running on this thread's errno: see ct_sys4. */
    int fd = q_open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    long len = q_read(fd, buf, sizeof buf - 1);
    q_close(fd);
    if (len <= 0)
        return 0;
    buf[len] = 0;
    char *p = strrchr(buf, ')');
    for (int field = 3; p && field <= 22; field++)
        p = strchr(p + 1, ' ');  /* the space before `field` */
    return p ? strtoull(p + 1, NULL, 10) : 0;
}

int ct_spawn(struct ct_spec *spec, struct ct_monitor *mon, struct ct_child *out, struct ct_error *err)
{
    struct spawn_ctx c = {0};
    int done[2], go[2] = {-1, -1}, cg[2] = {-1, -1}, pp[2] = {-1, -1};
    int userns = (spec->clone_flags & CLONE_NEWUSER) != 0;
    sigset_t old;
    int pid, pidfd = -1, clone_errno;

    __builtin_memset(err, 0, sizeof *err);
    out->pid = out->pidfd = out->monitor_pid = out->monitor_pidfd = -1;
    out->start_time = out->monitor_start_time = 0;
    if (spec->userns_fd >= 0 && (!mon || userns))
        return ct_fail(err, "join user namespace", !mon ? "needs a monitor" : "and a new one too", EINVAL);
    if ((userns || spec->userns_fd >= 0) && (spec->cgroup_mkdirs || spec->cgroup_join_paths))
        return ct_fail(err, "join cgroup", "cgroups to make are not for a user namespace", EINVAL);
    if (pipe2(done, O_CLOEXEC) < 0)
        return ct_fail(err, "create sync pipe", NULL, errno);
    if (userns && pipe2(go, O_CLOEXEC) < 0) {
        close(done[0]);
        close(done[1]);
        return ct_fail(err, "create sync pipe", NULL, errno);
    }
    /* The child joins its cgroups itself.  Those made during the start
     * (not in a user namespace) it joins once the caller says they exist. */
    if (!userns && spec->cgroup_mkdirs && pipe2(cg, O_CLOEXEC) < 0) {
        close(done[0]);
        close(done[1]);
        return ct_fail(err, "create sync pipe", NULL, errno);
    }
    /* Cgroups to make, and a monitor-to-be to clone the container: this
     * thread makes them meanwhile, and releases the child itself. */
    if (mon && spec->cgroup_mkdirs && cg[1] >= 0 && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pp) < 0) {
        close(done[0]);
        close(done[1]);
        close(cg[0]);
        close(cg[1]);
        return ct_fail(err, "create sync pipe", NULL, errno);
    }
    /* container, monitor, launcher, and the id map helper's (only touched
     * when one runs: pages are allocated on use) */
    size_t stacks = 4 * STACK_SIZE;
    char *stack = mmap(NULL, stacks, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        ct_fail(err, "allocate stack", NULL, errno);
        close(done[0]);
        close(done[1]);
        close_pair(go);
        close_pair(cg);
        close_pair(pp);
        return -1;
    }
    c.spec = spec;
    c.err = err;
    c.mon = mon;
    c.done_r = done[0];
    c.done_w = done[1];
    c.go_r = go[0];
    c.go_w = go[1];
    c.cg_r = cg[0];
    c.cg_w = cg[1];
    c.pid_r = pp[0];
    c.pid_w = pp[1];
    c.child_pid = c.monitor_pid = c.monitor_pidfd = -1;
    c.stack_c = stack + STACK_SIZE;
    c.stack_m = stack + 2 * STACK_SIZE;
    c.stack_h = stack + 4 * STACK_SIZE;
    block_signals(&old);
    c.mask = old;
    if (mon)
        pid = clone(launcher_child, stack + 3 * STACK_SIZE, CLONE_VM | CLONE_VFORK | CLONE_FILES | SIGCHLD, &c);
    else
        pid = clone_container(&c, &pidfd);
    clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(done[1]);
    if (pid < 0) {
        close(done[0]);
        close_pair(go);
        close_pair(cg);
        close_pair(pp);
        munmap(stack, stacks);
        return ct_fail(err, "clone", NULL, clone_errno);
    }
    if (mon) {
        reap(pid);  /* the launcher; the monitor-to-be owns the sync pipes now */
        close_pair(go);
        if (pp[0] >= 0) {
            /* ... but for cg[1]: we make the cgroups while the container is
             * cloned, then let it join them and go on (or kill it). */
            q_close(pp[1]);
            q_close(cg[0]);
            int made = make_cgroups(&c);
            int child = -1;
            long n;
            do
                n = q_read(pp[0], &child, sizeof child);
            while (n == -EINTR);
            if (n != (long)sizeof child || child <= 0) {
                q_close(cg[1]);  /* the monitor-to-be failed and said why */
            } else if (made < 0) {
                q_close(cg[1]);
                q_kill(child);
            } else if (release_child(&c) < 0) {
                q_kill(child);
            } else if (q_write(pp[0], "g", 1) != 1) {
                /* the monitor-to-be died: it said why */
            }
            q_close(pp[0]);  /* without "g": the monitor-to-be ends */
        }
    } else if ((userns && map_and_release(&c, pid) < 0) ||
               (cg[1] >= 0 && make_cgroups_and_release(&c) < 0)) {
        kill(pid, SIGKILL);
        wait_done(done[0]);
        close(done[0]);
        reap(pid);
        close(pidfd);
        munmap(stack, stacks);
        return -1;
    }
    /* The monitor-to-be exists (the launcher is gone): meanwhile. */
    if (mon && c.monitor_pid > 0)
        out->monitor_start_time = proc_start_time(c.monitor_pid);
    /* EOF once every copy of the write end is gone: the container and the
     * monitor have exec'd or died, and no stack is in use any more. */
    wait_done(done[0]);
    close(done[0]);
    munmap(stack, stacks);
    if (mon) {
        pid = c.child_pid;
        out->monitor_pid = c.monitor_pid;
        out->monitor_pidfd = c.monitor_pidfd;
    }
    out->pid = pid;
    out->pidfd = pidfd;
    if (pid > 0 && (!err->step[0] || is_exec_step(err)))
        out->start_time = proc_start_time(pid);
    if (!err->step[0] && pid > 0)
        return 0;
    if (!err->step[0])
        ct_fail(err, "start container", NULL, ECHILD);
    if (is_exec_step(err))
        return 1;
    if (!mon)
        reap(pid);
    if (pidfd >= 0)
        close(pidfd);
    out->pid = out->pidfd = -1;
    return -1;
}

/* ct_join: the first child joins the namespaces (it cannot enter the pid
 * namespace itself, only its children can), clones the process that will
 * exec as a child of the caller (CLONE_PARENT), and exits. */
static int exec_grandchild(void *arg)
{
    struct spawn_ctx *c = arg;
    /* One thread: "0" into each file moves all of us (see write_cgroup_procs). */
    for (int i = 0; c->cgroup_procs && i < 12 && c->cgroup_procs[i] >= 0; i++)
        if (write(c->cgroup_procs[i], "0", 1) < 0)
            die(c->err, "join cgroup", NULL, errno);
    if (c->v2_procs_fd >= 0 && write(c->v2_procs_fd, "0", 1) < 0)
        die(c->err, "join cgroup", "cgroup.procs", errno);
    /* Last: joined before, the cgroups would be judged from inside it
     * (nsdelegate hides the one we came from: ENOENT). */
    if ((c->ns_flags & CLONE_NEWCGROUP) && setns(c->target_pidfd, CLONE_NEWCGROUP) < 0)
        die(c->err, "join container namespaces", "cgroup", errno);
    _exit(finish_and_exec(c->proc, c));
}

/* Clone the process that execs: on cgroup v2 straight into the
 * container's cgroup (CLONE_INTO_CGROUP: no move, so no RCU grace period
 * as a cgroup.procs write waits for), else to join it after (v2_procs_fd:
 * its cgroup.procs, opened while we are still in the caller's cgroup
 * namespace). */
static int clone_grandchild(struct spawn_ctx *c, char *stack_top, int *pidfd)
{
    int flags = CLONE_VM | CLONE_PARENT | CLONE_PIDFD;
#ifdef HAVE_CLONE3_RUN
    if (c->cgroup_dir_fd >= 0) {
        long pid = clone_into_cgroup(flags, c->cgroup_dir_fd, c->stack_lo, (size_t)(stack_top - c->stack_lo),
                                     pidfd, exec_grandchild, c);
        if (pid > 0)
            return (int)pid;
        /* Refused by the cgroup (EBUSY, EACCES, EOPNOTSUPP, ...): say so. */
        if (!clone3_unsupported(pid))
            die(c->err, "join cgroup", "CLONE_INTO_CGROUP", (int)-pid);
    }
#endif
    if (c->cgroup_dir_fd >= 0) {
        c->v2_procs_fd = openat(c->cgroup_dir_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
        if (c->v2_procs_fd < 0)
            die(c->err, "join cgroup", "cgroup.procs", errno);
    }
    return clone(exec_grandchild, stack_top, flags, c, pidfd);
}

static int join_child(void *arg)
{
    struct spawn_ctx *c = arg;
    /* No close(done_r) here: the fd table is the caller's (CLONE_FILES). */
    ct_reset_signals();
    /* The cgroup namespace last, by the grandchild (see exec_grandchild). */
    int flags = c->ns_flags & ~CLONE_NEWCGROUP;
    if (flags && setns(c->target_pidfd, flags) < 0)
        die(c->err, "join container namespaces", NULL, errno);
    /* Our own stack is free again once we exit; the grandchild's sits above it. */
    char *stack_top = (char *)__builtin_frame_address(0) - 64 * 1024;
    stack_top = (char *)((unsigned long)stack_top & ~15UL);
    int pidfd = -1;
    int pid = clone_grandchild(c, stack_top, &pidfd);
    if (pid < 0)
        die(c->err, "clone into container", NULL, errno);
    c->grandchild_pid = pid;
    c->grandchild_pidfd = pidfd;
    _exit(0);
}

int ct_join(int target_pidfd, int ns_flags, const int *cgroup_procs, int cgroup_dir_fd,
            struct ct_process *proc, struct ct_child *out, struct ct_error *err)
{
    struct spawn_ctx c = {0};
    int done[2];
    sigset_t old;

    __builtin_memset(err, 0, sizeof *err);
    out->pid = -1;
    out->pidfd = -1;
    if (pipe2(done, O_CLOEXEC) < 0)
        return ct_fail(err, "create sync pipe", NULL, errno);
    void *stack = mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        close(done[0]);
        close(done[1]);
        return ct_fail(err, "allocate stack", NULL, errno);
    }
    c.err = err;
    c.done_r = done[0];
    c.done_w = done[1];
    c.go_r = c.go_w = -1;
    c.target_pidfd = target_pidfd;
    c.ns_flags = ns_flags;
    c.cgroup_procs = cgroup_procs;
    c.cgroup_dir_fd = cgroup_dir_fd;
    c.v2_procs_fd = -1;
    c.stack_lo = stack;
    c.proc = proc;
    c.grandchild_pid = -1;
    c.grandchild_pidfd = -1;
    /* The process that enters shares our memory until it execs; a
     * non-dumpable mm keeps /proc/PID/exe and /proc/PID/mem of it out of
     * the container's reach meanwhile (CVE-2019-5736). */
    int was_dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    block_signals(&old);
    c.mask = old;
    /* CLONE_FILES: the grandchild's pidfd lands in our own table. */
    int pid = clone(join_child, (char *)stack + STACK_SIZE,
                    CLONE_VM | CLONE_VFORK | CLONE_FILES | SIGCHLD, &c);
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        prctl(PR_SET_DUMPABLE, was_dumpable, 0, 0, 0);
        close(done[0]);
        close(done[1]);
        munmap(stack, STACK_SIZE);
        return ct_fail(err, "clone", NULL, clone_errno);
    }
    reap(pid);
    if (c.v2_procs_fd >= 0)
        q_close(c.v2_procs_fd);  /* opened in our fd table (CLONE_FILES) */
    /* The grandchild holds the only other copy of the write end: EOF once
     * it has exec'd or died.  Only then are its stack and the shared mm
     * no longer in use by anything inside the container. */
    close(done[1]);
    wait_done(done[0]);
    close(done[0]);
    munmap(stack, STACK_SIZE);
    prctl(PR_SET_DUMPABLE, was_dumpable, 0, 0, 0);
    if (c.grandchild_pid < 0)
        return -1;
    out->pid = c.grandchild_pid;
    out->pidfd = c.grandchild_pidfd;
    if (!err->step[0])
        return 0;
    if (is_exec_step(err))
        return 1;
    reap(out->pid);
    close(out->pidfd);
    out->pid = out->pidfd = -1;
    return -1;
}

/* Work done as a member of another user namespace (the user's long-lived
 * one), for things made ahead for rootless containers that join it: a root
 * mounted ahead, a network namespace.  The caller's threads keep it out of
 * setns, so a child sharing its memory and fd table (what it opens lands
 * in the caller's table) joins the namespace, unshares what `unshare`
 * names there (a mount namespace of its own: fsopen and open_tree want
 * CAP_SYS_ADMIN over the owner of the current one; with `mntns_fd`, the
 * holder's, entered instead of copying the host's mount table and tearing
 * the copy down each time), and runs `fn`. */
struct in_userns {
    int userns_fd;
    int mntns_fd;      /* a mount namespace of that user namespace to enter instead of a new one, or -1 */
    int unshare;
    int (*fn)(void *arg, struct ct_error *err);  /* an fd, or -1 with err filled */
    void *arg;
    struct ct_error *err;
    int fd;
};

static int in_userns_child(void *arg)
{
    struct in_userns *u = arg;
    if (setns(u->userns_fd, CLONE_NEWUSER) < 0) {
        ct_fail(u->err, "join user namespace", "the user's long-lived one (contain-monitor --hold-userns)", errno);
        _exit(1);
    }
    if (u->unshare == CLONE_NEWNS && u->mntns_fd >= 0) {
        if (setns(u->mntns_fd, CLONE_NEWNS) < 0) {
            ct_fail(u->err, "join mount namespace", "the user namespace holder's", errno);
            _exit(1);
        }
    } else if (u->unshare && unshare(u->unshare) < 0) {
        ct_fail(u->err, u->unshare == CLONE_NEWNET ? "create network namespace" : "create mount namespace",
                NULL, errno);
        _exit(1);
    }
    u->fd = u->fn(u->arg, u->err);
    _exit(0);
}

static int run_in_userns(int userns_fd, int mntns_fd, int unshare_flags, int (*fn)(void *, struct ct_error *),
                         void *arg, const char *step, struct ct_error *err)
{
    __builtin_memset(err, 0, sizeof *err);
    struct in_userns u = {userns_fd, mntns_fd, unshare_flags, fn, arg, err, -1};
    char *stack = mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED)
        return ct_fail(err, "allocate stack", NULL, errno);
    sigset_t old;
    block_signals(&old);
    int pid = clone(in_userns_child, stack + STACK_SIZE, CLONE_VM | CLONE_FILES | CLONE_VFORK | SIGCHLD, &u);
    int e = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        munmap(stack, STACK_SIZE);
        return ct_fail(err, "clone", NULL, e);
    }
    reap(pid);
    munmap(stack, STACK_SIZE);
    if (u.fd < 0 && !err->step[0])
        ct_fail(err, step, NULL, ECHILD);
    return u.fd;
}

struct overlay_args {
    const char *lowerdir, *upperdir, *workdir;
    int flags;
};

static int overlay_fn(void *arg, struct ct_error *err)
{
    struct overlay_args *a = arg;
    return ct_mount_overlay(a->lowerdir, a->upperdir, a->workdir, a->flags, err);
}

int ct_mount_overlay_in(int userns_fd, int mntns_fd, const char *lowerdir, const char *upperdir,
                        const char *workdir, int flags, struct ct_error *err)
{
    if (userns_fd < 0)
        return ct_mount_overlay(lowerdir, upperdir, workdir, flags, err);
    struct overlay_args a = {lowerdir, upperdir, workdir, flags};
    return run_in_userns(userns_fd, mntns_fd, CLONE_NEWNS, overlay_fn, &a, "mount overlay root", err);
}

static int netns_fn(void *arg, struct ct_error *err)
{
    (void)arg;
    if (loopback_up(err) < 0)
        return -1;
    int fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        ct_fail(err, "open network namespace", NULL, errno);
    return fd;
}

int ct_netns_in(int userns_fd, struct ct_error *err)
{
    return run_in_userns(userns_fd, -1, CLONE_NEWNET, netns_fn, NULL, "create network namespace", err);
}

static int clone_mount_fn(void *arg, struct ct_error *err)
{
    int fd = (int)syscall(SYS_open_tree, *(int *)arg, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
    if (fd < 0)
        ct_fail(err, "clone mount", NULL, errno);
    return fd;
}

int ct_clone_mount(int userns_fd, int mntns_fd, int mount_fd, struct ct_error *err)
{
    if (userns_fd < 0) {
        __builtin_memset(err, 0, sizeof *err);
        return clone_mount_fn(&mount_fd, err);
    }
    return run_in_userns(userns_fd, mntns_fd, CLONE_NEWNS, clone_mount_fn, &mount_fd, "clone mount", err);
}
