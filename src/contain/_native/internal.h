/* Helpers shared by the C files of the native core; not part of its API. */
#ifndef CONTAIN_INTERNAL_H
#define CONTAIN_INTERNAL_H

#include <errno.h>
#include <stddef.h>
#include <unistd.h>
#include <sys/syscall.h>
#include "contain_native.h"

#define CT_MAX_MOUNTS 256

/* Copy without the C library's buffered helpers: safe in the clone child. */
static inline void ct_copy(char *dst, size_t cap, const char *src)
{
    size_t i = 0;
    if (src)
        for (; src[i] && i + 1 < cap; i++)
            dst[i] = src[i];
    dst[i] = 0;
}

static inline size_t ct_strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

/* Record a failure; returns -1 so callers can `return ct_fail(...)`. */
static inline int ct_fail(struct ct_error *err, const char *step, const char *detail, int e)
{
    err->err = e;
    ct_copy(err->step, sizeof err->step, step);
    ct_copy(err->detail, sizeof err->detail, detail ? detail : "");
    return -1;
}

/* A system call that leaves errno alone: it returns -errno on failure.
 * The children share the caller's memory, and with it the caller's
 * thread-local errno (CLONE_VM without a TLS of their own): the cgroup
 * work of a start runs in one of them, or in the caller's thread while
 * they run, and a failing call there must not change an errno another is
 * about to read.  Elsewhere than x86-64 and arm64, libc's syscall() with
 * errno restored, which only narrows that window. */
static inline long ct_sys4(long n, long a, long b, long c, long d)
{
#if defined(__x86_64__)
    long ret;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall" : "=a"(ret) : "0"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return ret;
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory", "cc");
    return x0;
#else
    int saved = errno;
    long r = syscall(n, a, b, c, d);
    if (r < 0) {
        r = -errno;
        errno = saved;
    }
    return r;
#endif
}

/* mkdir -p; 0 or -errno, errno left alone (ct_sys4). */
int ct_mkdir_p(const char *path, int mode);
/* Mounts are made detached in two passes: every one but the cgroup
 * filesystems first, those once the cgroup namespace exists (they show
 * the cgroup the container was placed in as their root). */
#define CT_PREPARE_EARLY 0
#define CT_PREPARE_CGROUPFS 1
int ct_prepare_mounts(struct ct_spec *spec, int *fds, int which, struct ct_error *err);
/* Attached after pivot_root in two passes too: everything that does not
 * depend on the container's cgroups while its parent places it, then the
 * cgroup filesystems and what lies on or under /sys/fs/cgroup once it is
 * placed and its cgroup namespace made. */
#define CT_ATTACH_FIRST 0
#define CT_ATTACH_CGROUPS 1
int ct_attach_mounts(struct ct_spec *spec, int *fds, int which, struct ct_error *err);
int ct_setup_process(struct ct_process *proc, struct ct_error *err);
/* Exec proc->argv, searching PATH; only returns on failure (err filled). */
int ct_exec(struct ct_process *proc, struct ct_error *err);
void ct_reset_signals(void);

#endif
