"""cffi build script (API mode, out-of-line) for contain's native core."""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
# setuptools wants source paths relative to setup.py, i.e. the project root.
ROOT = HERE.parent.parent.parent

CDEF = """
struct ct_error {
    int err;
    char step[64];
    char detail[184];
};

enum ct_mount_kind {
    CT_MOUNT_NEW = 1, CT_MOUNT_BIND = 2, CT_MOUNT_MKNOD = 3,
    CT_MOUNT_SYMLINK = 4, CT_MOUNT_MASK = 5, CT_MOUNT_READONLY = 6, CT_MOUNT_WRITE = 7
};

struct ct_mount {
    int kind;
    const char *source;
    const char *target;
    const char *fstype;
    const char *options;
    unsigned int attr;
    int recursive;
    int is_file;
    unsigned int mode;
    unsigned long long dev;
    int fd;
};

struct ct_process {
    const char *const *argv;
    const char *const *envp;
    const char *cwd;
    unsigned int uid, gid;
    int ngroups;
    const unsigned int *groups;
    int set_caps;
    uint64_t cap_bounding, cap_effective, cap_permitted, cap_inheritable, cap_ambient;
    int no_new_privs;
    const void *seccomp_filter;
    int seccomp_len;
    int stdio[3];
    int tty;
    int console_socket;
    int oom_score_adj_set;
    int oom_score_adj;
};

struct ct_spec {
    int clone_flags;
    int ns_fds[8];
    int cgroup_procs[12];
    int cgroup_dir_fd;
    const char *uid_map;
    const char *gid_map;
    const char *rootfs;
    const char *overlay;
    int overlay_fd;
    int readonly_root;
    const char *hostname;
    int loopback_up;
    struct ct_mount *mounts;
    int nmounts;
    struct ct_process proc;
    const char *const *uidmap_helper;
    const char *const *gidmap_helper;
    const char *const *root_helper;
    int userns_fd;
    const char *const *cgroup_mkdirs;
    const char *const *cgroup_writes;
    int cgroup_join_dirfd;
    const char *const *cgroup_join_paths;
};

struct ct_child {
    int pid;
    int pidfd;
    int monitor_pid;
    int monitor_pidfd;
    unsigned long long start_time;
    unsigned long long monitor_start_time;
};

struct ct_monitor {
    const char *path;
    const char *const *argv;
    const char *const *envp;
    int fds[8];
    int nfds;
};

#define CT_OVERLAY_VOLATILE 1
#define CT_OVERLAY_USERXATTR 2
int ct_mount_overlay(const char *lowerdir, const char *upperdir, const char *workdir, int flags,
                     struct ct_error *err);
int ct_mount_overlay_in(int userns_fd, int mntns_fd, const char *lowerdir, const char *upperdir,
                        const char *workdir, int flags, struct ct_error *err);
int ct_netns_in(int userns_fd, struct ct_error *err);
int ct_clone_mount(int userns_fd, int mntns_fd, int mount_fd, struct ct_error *err);
int ct_spawn(struct ct_spec *spec, struct ct_monitor *mon, struct ct_child *out, struct ct_error *err);
int ct_join(int target_pidfd, int ns_flags, const int *cgroup_procs, int cgroup_dir_fd,
            struct ct_process *proc, struct ct_child *out, struct ct_error *err);

#define CLONE_NEWNS ...
#define CLONE_NEWPID ...
#define CLONE_NEWUTS ...
#define CLONE_NEWIPC ...
#define CLONE_NEWNET ...
#define CLONE_NEWUSER ...
#define CLONE_NEWCGROUP ...
#define MOUNT_ATTR_RDONLY ...
#define MOUNT_ATTR_NOSUID ...
#define MOUNT_ATTR_NODEV ...
#define MOUNT_ATTR_NOEXEC ...
#define MOUNT_ATTR_NOATIME ...
#define MOUNT_ATTR_RELATIME ...
#define MOUNT_ATTR_STRICTATIME ...
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "contain._native._contain_native",
    """
    #include <sched.h>
    #include <linux/mount.h>
    #include "contain_native.h"
    """,
    sources=[str((HERE / n).relative_to(ROOT)) for n in ("spawn.c", "mounts.c", "process.c")],
    include_dirs=[str(HERE.relative_to(ROOT))],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fno-strict-aliasing"],
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(HERE.parent.parent), verbose=True)
