/* contain-monitor: the parent of one detached container.
 *
 *   contain-monitor STATE_DIR NSTREAMS [options] [-- RESTART-COMMAND...]
 *
 *   --stdin            the fd after the streams is the container's stdin
 *                      (a pipe's write end; with --tty, input goes to the
 *                      pty master, which is stream 1)
 *   --tty              stream 1 is a pty master
 *   --log-max-size N   rotate container.log past N bytes ...
 *   --log-max-files N  ... keeping N files in all (container.log.1, ...)
 *   --oom-file F       memory.oom_control (v1) or memory.events (v2): its
 *                      oom_kill count goes into the exit file
 *   --cgroup DIR       the container's cgroup directories, removed once it
 *                      has exited (repeatable)
 *   --exited-fd N      gets the exit record's line first, and is closed
 *                      once STATE_DIR/exit is written, before the cgroups
 *                      are removed: the starter's wait ends at the line,
 *                      and the rest overlaps its bookkeeping
 *
 * fd 3 is a pidfd for the container's first process (our child); fds 4..
 * are the read ends of its output streams (stream 1 = stdout, 2 = stderr).
 * Each line of output becomes one record in STATE_DIR/container.log:
 *
 *   u64 time (ns since the epoch) | u32 length | u8 stream | u8 flags | u16 0 | data
 *
 * (flags bit 0: the line was cut, not ended by a newline).  Clients attach
 * through STATE_DIR/attach.sock, made at the first SIGUSR1 (a client sends
 * it, then connects): they receive output frames and may send
 * input, window sizes and end-of-input (see _attach.py).  When the
 * container exits, output is drained, STATE_DIR/exit is written (via
 * rename) with the status and time, attached clients get an exit frame,
 * and the monitor exits -- or, given a restart command, execs it so that
 * a restart policy can be applied by contain itself.  It holds no other
 * state: it costs little memory and a crash of it loses only what was in
 * flight. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

#define MAX_STREAMS 2
#define LINE_MAX_BYTES 16384
#define MAX_CLIENTS 8

/* Attach protocol frames: u8 type | u32 length (little endian) | data. */
enum { FRAME_STDIN = 0, FRAME_RESIZE = 1, FRAME_CLOSE_STDIN = 2, FRAME_STDOUT = 1 + 16,
       FRAME_STDERR = 2 + 16, FRAME_EXIT = 3 + 16 };

struct client {
    int fd;
    size_t used;
    unsigned char buf[8192];
};

static struct client clients[MAX_CLIENTS];
static int stdin_fd = -1;
static int tty_fd = -1;
static long long log_max_size = 0;
static int log_max_files = 1;
static long long log_size = 0;
static const char *state_dir;

#define MAX_CGROUPS 12
static const char *cgroups[MAX_CGROUPS];
static int ncgroups;

/* The "oom_kill N" field of memory.oom_control or memory.events. */
static long long read_oom_kills(const char *file)
{
    char buf[4096];
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *p = strstr(buf, "oom_kill ");
    return p ? atoll(p + 9) : 0;
}

/* Empty once the container's processes are gone; they may take a moment
 * to leave after its init died, so busy directories are retried briefly. */
static void remove_cgroups(void)
{
    for (int i = 0; i < ncgroups; i++) {
        for (int attempt = 0; attempt < 200; attempt++) {
            if (rmdir(cgroups[i]) == 0 || errno == ENOENT)
                break;
            if (errno != EBUSY)
                break;
            struct timespec ts = {0, 5 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
}

/* The container's mount namespace, held from here: when its last process
 * exits, the kernel then does not take its mounts down on that exit's path
 * (0.5-1 ms before the exit is seen), but when this is closed, after the
 * exit is recorded.  -1 when it could not be opened (the container was
 * already gone): the kernel takes it down as it would. */
static int hold_mount_ns(void)
{
    char buf[512];
    int fd = open("/proc/self/fdinfo/3", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    const char *p = strstr(buf, "\nPid:");
    int pid = p ? atoi(p + 6) : 0;
    if (pid <= 0)
        return -1;  /* not a pidfd, or its process has been reaped */
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/mnt", pid);
    return open(path, O_RDONLY | O_CLOEXEC);
}

struct record {
    uint64_t time_ns;
    uint32_t length;
    uint8_t stream;
    uint8_t flags;
    uint16_t reserved;
};

struct stream {
    int fd;
    size_t used;
    char buf[LINE_MAX_BYTES];
};

static int log_fd = -1;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void write_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* a full disk loses output, never the container */
        }
        p += w;
        n -= (size_t)w;
    }
}

static void rotate(void)
{
    char from[4096], to[4096];
    if (log_max_files <= 1) {
        /* One file: start it again rather than grow without bound. */
        if (ftruncate(log_fd, 0) == 0)
            log_size = 0;
        return;
    }
    for (int i = log_max_files - 1; i >= 1; i--) {
        if (i == 1)
            snprintf(from, sizeof from, "%s/container.log", state_dir);
        else
            snprintf(from, sizeof from, "%s/container.log.%d", state_dir, i - 1);
        snprintf(to, sizeof to, "%s/container.log.%d", state_dir, i);
        rename(from, to);
        /* A compressed copy of the file we just replaced is stale. */
        snprintf(to, sizeof to, "%s/container.log.%d.zst", state_dir, i);
        unlink(to);
    }
    snprintf(from, sizeof from, "%s/container.log", state_dir);
    int fd = open(from, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd >= 0) {
        close(log_fd);
        log_fd = fd;
        log_size = 0;
    }
}

static void drop_client(struct client *c)
{
    close(c->fd);
    c->fd = -1;
    c->used = 0;
}

static void send_frame(int type, const char *data, size_t n)
{
    unsigned char head[5] = {(unsigned char)type, (unsigned char)(n & 0xff), (unsigned char)((n >> 8) & 0xff),
                             (unsigned char)((n >> 16) & 0xff), (unsigned char)((n >> 24) & 0xff)};
    for (int i = 0; i < MAX_CLIENTS; i++) {
        struct client *c = &clients[i];
        if (c->fd < 0)
            continue;
        /* A client too slow to take its output is dropped rather than let
         * it stall the container (as docker attach does with a full pipe). */
        struct iovec iov[2] = {{head, 5}, {(void *)data, n}};
        struct msghdr msg = {0};
        msg.msg_iov = iov;
        msg.msg_iovlen = 2;
        ssize_t w = sendmsg(c->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w != (ssize_t)(n + 5))
            drop_client(c);
    }
}

static void emit(int stream, const char *data, size_t n, int cut)
{
    if (log_max_size > 0 && log_size + (long long)n + 16 > log_max_size && log_size > 0)
        rotate();
    log_size += (long long)n + 16;
    struct record r = {now_ns(), (uint32_t)n, (uint8_t)stream, (uint8_t)(cut ? 1 : 0), 0};
    char head[sizeof r];
    memcpy(head, &r, sizeof r);
    /* One write per record keeps records whole for concurrent readers. */
    char small[4096];
    if (n + sizeof r <= sizeof small) {
        memcpy(small, head, sizeof r);
        memcpy(small + sizeof r, data, n);
        write_all(log_fd, small, n + sizeof r);
    } else {
        write_all(log_fd, head, sizeof r);
        write_all(log_fd, data, n);
    }
}

/* Split what arrived into lines; keep a partial line for the next read. */
static int pump(struct stream *s, int id)
{
    ssize_t n = read(s->fd, s->buf + s->used, sizeof s->buf - s->used);
    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 1 : 0;
    if (n == 0) {
        if (s->used)
            emit(id, s->buf, s->used, 1);
        s->used = 0;
        return 0;
    }
    /* Attached clients get output as it comes (a prompt has no newline);
     * the log keeps whole lines. */
    send_frame(id == 2 ? FRAME_STDERR : FRAME_STDOUT, s->buf + s->used, (size_t)n);
    s->used += (size_t)n;
    size_t start = 0;
    for (size_t i = 0; i < s->used; i++) {
        if (s->buf[i] == '\n') {
            emit(id, s->buf + start, i + 1 - start, 0);
            start = i + 1;
        }
    }
    if (start < s->used && start == 0 && s->used == sizeof s->buf) {
        emit(id, s->buf, s->used, 1);
        start = s->used;
    }
    memmove(s->buf, s->buf + start, s->used - start);
    s->used -= start;
    return 1;
}

static void client_input(struct client *c)
{
    ssize_t n = read(c->fd, c->buf + c->used, sizeof c->buf - c->used);
    if (n <= 0) {
        drop_client(c);
        return;
    }
    c->used += (size_t)n;
    size_t pos = 0;
    while (c->used - pos >= 5) {
        unsigned char *f = c->buf + pos;
        size_t len = (size_t)f[1] | (size_t)f[2] << 8 | (size_t)f[3] << 16 | (size_t)f[4] << 24;
        if (len > sizeof c->buf - 5) {
            drop_client(c);
            return;
        }
        if (c->used - pos < 5 + len)
            break;
        int in = tty_fd >= 0 ? tty_fd : stdin_fd;
        if (f[0] == FRAME_STDIN && in >= 0) {
            write_all(in, f + 5, len);
        } else if (f[0] == FRAME_RESIZE && len == 4 && tty_fd >= 0) {
            struct winsize ws = {0};
            ws.ws_row = (unsigned short)(f[5] | f[6] << 8);
            ws.ws_col = (unsigned short)(f[7] | f[8] << 8);
            ioctl(tty_fd, TIOCSWINSZ, &ws);
        } else if (f[0] == FRAME_CLOSE_STDIN) {
            if (tty_fd >= 0) {
                /* End of input on a terminal is the EOF character. */
                write_all(tty_fd, "\x04", 1);
            } else if (stdin_fd >= 0) {
                close(stdin_fd);
                stdin_fd = -1;
            }
        }
        pos += 5 + len;
    }
    memmove(c->buf, c->buf + pos, c->used - pos);
    c->used -= pos;
}

/* Bind STATE_DIR/attach.sock, by a relative name from inside the state
 * dir (state paths can be longer than a socket address allows). */
static int listen_attach(const char *dir)
{
    int lfd = -1;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0 && fchdir(dfd) == 0) {
        struct sockaddr_un sa = {0};
        sa.sun_family = AF_UNIX;
        strcpy(sa.sun_path, "attach.sock");
        unlink(sa.sun_path);
        lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (lfd >= 0 && (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 8) < 0)) {
            close(lfd);
            lfd = -1;
        }
        if (chdir("/") < 0) {
            /* only relative names used the state dir */
        }
    }
    if (dfd >= 0)
        close(dfd);
    return lfd;
}

static void accept_client(int lfd)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0)
        return;
    for (int i = 0; i < MAX_CLIENTS; i++) {
        if (clients[i].fd < 0) {
            clients[i].fd = fd;
            clients[i].used = 0;
            return;
        }
    }
    close(fd);
}

/* contain-monitor --hold-userns: the holder of an ordinary user's
 * long-lived user namespace, which each rootless container joins instead
 * of running newuidmap and newgidmap for a namespace of its own (podman's
 * pause process plays this part).  It forks; the first process exits at
 * once, so the holder is nobody's child and outlives the caller.  The
 * holder makes the namespace, writes its pid on stdout, and waits for one
 * byte on stdin: the caller has mapped it.  EOF instead means the caller
 * gave up, and the holder ends.  Then it pauses until killed. */
static int hold_userns(void)
{
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stdout, "error fork %d\n", errno);
        return 1;
    }
    if (pid > 0)
        return 0;
    setsid();
    if (unshare(CLONE_NEWUSER) < 0) {
        fprintf(stdout, "error unshare %d\n", errno);
        fflush(stdout);
        _exit(1);
    }
    fprintf(stdout, "%d\n", (int)getpid());
    fflush(stdout);
    char b;
    if (read(0, &b, 1) != 1)
        _exit(1);
    /* Mapped: a mount namespace of the user namespace's own too, which
     * contain's helpers enter to mount roots ahead (instead of making and
     * tearing down a copy of the host's mount table each time).  Without
     * it they make their own. */
    if (unshare(CLONE_NEWNS) < 0) {
        /* not fatal */
    }
    int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
    for (int i = 0; i < 3 && nul >= 0; i++)
        dup2(nul, i);
    syscall(SYS_close_range, 3U, ~0U, 0U);
    if (chdir("/") < 0) {
        /* not fatal: nothing here uses a path */
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (;;)
        pause();
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "--hold-userns"))
        return hold_userns();
    if (argc < 3) {
        fprintf(stderr, "usage: contain-monitor STATE_DIR NSTREAMS\n");
        return 2;
    }
    const char *dir = argv[1];
    state_dir = dir;
    int lfd = -1;
    int nstreams = atoi(argv[2]);
    if (nstreams < 0 || nstreams > MAX_STREAMS)
        nstreams = 0;
    int want_stdin = 0, tty = 0;
    const char *oom_file = NULL;
    char **restart = NULL;
    int exited_fd = -1;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--stdin"))
            want_stdin = 1;
        else if (!strcmp(argv[i], "--tty"))
            tty = 1;
        else if (!strcmp(argv[i], "--log-max-size") && i + 1 < argc)
            log_max_size = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--log-max-files") && i + 1 < argc)
            log_max_files = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--oom-file") && i + 1 < argc)
            oom_file = argv[++i];
        else if (!strcmp(argv[i], "--exited-fd") && i + 1 < argc)
            exited_fd = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cgroup") && i + 1 < argc) {
            if (ncgroups < MAX_CGROUPS)
                cgroups[ncgroups++] = argv[i + 1];
            i++;
        } else if (!strcmp(argv[i], "--") && i + 1 < argc) {
            restart = argv + i + 1;
            break;
        }
    }
    /* fd 3 is the container's pidfd, and the container our child: its pid
     * is not reused before we reap it. */
    int mnt_ns = hold_mount_ns();
    /* attach.sock is made when somebody wants to attach (SIGUSR1, which
     * _attach.connect sends): most containers never see a client, and a
     * socket is a file to make and delete per start. */
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    int sfd = signalfd(-1, &usr1, SFD_CLOEXEC | SFD_NONBLOCK);
    if (tty && nstreams > 0) {
        /* fd 4 is a console socket: the container sends its pty master. */
        char byte;
        struct iovec iov = {&byte, 1};
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } u;
        struct msghdr msg = {0};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = u.buf;
        msg.msg_controllen = sizeof u.buf;
        int master = -1;
        if (recvmsg(4, &msg, MSG_CMSG_CLOEXEC) > 0) {
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            if (c && c->cmsg_type == SCM_RIGHTS)
                memcpy(&master, CMSG_DATA(c), sizeof(int));
        }
        if (master >= 0) {
            dup2(master, 4);  /* replaces the socket */
            close(master);
            tty_fd = 4;
        } else {
            nstreams = 0;  /* the container died before making its terminal */
        }
    }
    if (want_stdin && !tty)
        stdin_fd = 4 + nstreams;
    for (int i = 0; i < MAX_CLIENTS; i++)
        clients[i].fd = -1;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);

    char path[4096], tmp[4096];
    snprintf(path, sizeof path, "%s/container.log", dir);
    log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    struct stat lst;
    if (log_fd >= 0 && fstat(log_fd, &lst) == 0)
        log_size = lst.st_size;


    static struct stream streams[MAX_STREAMS];
    struct pollfd pfd[MAX_STREAMS + 2 + MAX_CLIENTS];
    int open_streams = 0;
    for (int i = 0; i < nstreams; i++) {
        streams[i].fd = 4 + i;
        streams[i].used = 0;
        open_streams++;
    }

    int exited = 0;
    siginfo_t info;
    memset(&info, 0, sizeof info);
    uint64_t deadline = 0;
    while (!exited || open_streams > 0) {
        int n = 0, idx[MAX_STREAMS + 2 + MAX_CLIENTS];
        if (!exited) {
            pfd[n].fd = 3;
            pfd[n].events = POLLIN;
            idx[n++] = -1;
            if (lfd >= 0) {
                pfd[n].fd = lfd;
                pfd[n].events = POLLIN;
                idx[n++] = -2;
            } else if (sfd >= 0) {
                pfd[n].fd = sfd;
                pfd[n].events = POLLIN;
                idx[n++] = -3;
            }
            for (int i = 0; i < MAX_CLIENTS; i++) {
                if (clients[i].fd < 0)
                    continue;
                pfd[n].fd = clients[i].fd;
                pfd[n].events = POLLIN;
                idx[n++] = 100 + i;
            }
        }
        for (int i = 0; i < nstreams; i++) {
            if (streams[i].fd < 0)
                continue;
            pfd[n].fd = streams[i].fd;
            pfd[n].events = POLLIN;
            idx[n++] = i;
        }
        /* After the exit, output still in the pipes is drained; a pipe held
         * open by a process that escaped the container's death is not
         * waited for more than two seconds. */
        int timeout = -1;
        if (exited) {
            uint64_t t = now_ns();
            if (t >= deadline)
                break;
            timeout = (int)((deadline - t) / 1000000) + 1;
        }
        int r = poll(pfd, (nfds_t)n, timeout);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (r == 0)
            continue;
        for (int k = 0; k < n; k++) {
            if (!pfd[k].revents)
                continue;
            if (idx[k] == -2) {
                accept_client(lfd);
                continue;
            }
            if (idx[k] == -3) {
                struct signalfd_siginfo si;
                while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                }
                if (lfd < 0)
                    lfd = listen_attach(dir);
                continue;
            }
            if (idx[k] >= 100) {
                if (clients[idx[k] - 100].fd >= 0)
                    client_input(&clients[idx[k] - 100]);
                continue;
            }
            if (idx[k] < 0) {
                if (waitid((idtype_t)P_PIDFD, 3, &info, WEXITED) == 0) {
                    exited = 1;
                    deadline = now_ns() + 2000000000ull;
                }
                continue;
            }
            struct stream *s = &streams[idx[k]];
            if (!pump(s, idx[k] + 1)) {
                close(s->fd);
                s->fd = -1;
                open_streams--;
            }
        }
    }
    for (int i = 0; i < nstreams; i++)
        if (streams[i].fd >= 0 && streams[i].used)
            emit(i + 1, streams[i].buf, streams[i].used, 1);

    /* No new client once the exit is known: the socket goes before the
     * record, so that whoever sees the exit sees no socket left. */
    if (lfd >= 0) {
        snprintf(path, sizeof path, "%s/attach.sock", dir);
        unlink(path);
        close(lfd);
        lfd = -1;
    }
    int code = info.si_code == CLD_EXITED ? info.si_status : 128 + info.si_status;
    snprintf(path, sizeof path, "%s/exit", dir);
    snprintf(tmp, sizeof tmp, "%s/exit.tmp", dir);
    /* exit.tmp is usually the last run's record (contain renames it there
     * at a start): overwritten in place, so that no block is freed and
     * allocated again (costly on a disk mounted with discard). */
    char line[128];
    long long oom = oom_file ? read_oom_kills(oom_file) : 0;
    int len = snprintf(line, sizeof line, "%d %llu %lld\n", code, (unsigned long long)now_ns(), oom);
    /* The starter has it at once (one write, atomic on a pipe); the file is
     * for everyone else, the starter's later reads included. */
    if (exited_fd >= 0 && write(exited_fd, line, (size_t)len) != len) {
        /* the starter went away: the file is what counts */
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        /* No fsync: the rename keeps readers from a torn file, and after a
         * power loss the container is gone anyway. */
        if (pwrite(fd, line, (size_t)len, 0) == len && ftruncate(fd, len) == 0) {
            close(fd);
            rename(tmp, path);
        } else {
            close(fd);
        }
    }
    if (exited_fd >= 0)
        close(exited_fd);
    /* The mounts go now (their layers are the next start's to use). */
    if (mnt_ns >= 0)
        close(mnt_ns);
    /* Before we end: a start that follows at once must not find an old
     * cleaner removing its fresh cgroup of the same name. */
    remove_cgroups();
    unsigned char codebuf[4] = {(unsigned char)code, (unsigned char)(code >> 8), 0, 0};
    send_frame(FRAME_EXIT, (const char *)codebuf, 4);
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (clients[i].fd >= 0)
            drop_client(&clients[i]);
    if (restart) {
        /* Let contain decide on a restart, with the policy it recorded. */
        close(3);
        close(log_fd);
        for (int i = 0; i < nstreams; i++)
            if (streams[i].fd >= 0)
                close(streams[i].fd);
        if (stdin_fd >= 0)
            close(stdin_fd);
        /* SIGUSR1 stays blocked: one that comes late must not kill contain's
         * restart process (a new monitor starts with it blocked as well). */
        if (sfd >= 0)
            close(sfd);
        execv(restart[0], restart);
        return 127;
    }
    return 0;
}
