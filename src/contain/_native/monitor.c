/* contain-monitor: the parent of one detached container.
 *
 *   contain-monitor STATE_DIR NSTREAMS
 *
 * fd 3 is a pidfd for the container's first process (our child); fds 4..
 * are the read ends of its output streams (stream 1 = stdout, 2 = stderr;
 * with a tty, one stream).  Each chunk of output becomes one record in
 * STATE_DIR/container.log:
 *
 *   u64 time (ns since the epoch) | u32 length | u8 stream | u8 flags | u16 0 | data
 *
 * one record per line (flags bit 0 set when the line was cut, not ended
 * by a newline).  When the container exits, the output is drained and
 * STATE_DIR/exit is written (via rename) with the status and time; then
 * the monitor exits.  It holds no other state, so it costs little memory
 * and a crash of it loses only what was in flight. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

#define MAX_STREAMS 2
#define LINE_MAX_BYTES 16384

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

static void emit(int stream, const char *data, size_t n, int cut)
{
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

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: contain-monitor STATE_DIR NSTREAMS\n");
        return 2;
    }
    const char *dir = argv[1];
    int nstreams = atoi(argv[2]);
    if (nstreams < 0 || nstreams > MAX_STREAMS)
        nstreams = 0;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);

    char path[4096], tmp[4096];
    snprintf(path, sizeof path, "%s/container.log", dir);
    log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);

    static struct stream streams[MAX_STREAMS];
    struct pollfd pfd[MAX_STREAMS + 1];
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
        int n = 0, idx[MAX_STREAMS + 1];
        if (!exited) {
            pfd[n].fd = 3;
            pfd[n].events = POLLIN;
            idx[n++] = -1;
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

    int code = info.si_code == CLD_EXITED ? info.si_status : 128 + info.si_status;
    snprintf(path, sizeof path, "%s/exit", dir);
    snprintf(tmp, sizeof tmp, "%s/exit.tmp", dir);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        char line[128];
        int len = snprintf(line, sizeof line, "%d %llu\n", code, (unsigned long long)now_ns());
        /* No fsync: the rename keeps readers from a torn file, and after a
         * power loss the container is gone anyway. */
        write_all(fd, line, (size_t)len);
        close(fd);
        rename(tmp, path);
    }
    return 0;
}
