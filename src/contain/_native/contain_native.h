/* contain's native core: the system calls that start and join containers.
 *
 * No policy lives here: every path, flag and id comes from the caller's
 * runtime spec.  Everything between clone() and execve() runs in a child
 * that shares memory with the (possibly threaded) Python process, so that
 * code only makes raw system calls: no malloc, no stdio, no locks.
 * Failures travel back as one fixed-size record naming the step. */
#ifndef CONTAIN_NATIVE_H
#define CONTAIN_NATIVE_H

#include <stdint.h>

struct ct_error {
    int err;              /* errno of the failing call, 0 if none */
    char step[64];        /* what was being done: "mount /proc" */
    char detail[184];     /* a path or argument, for the message */
};

enum ct_mount_kind {
    CT_MOUNT_NEW = 1,     /* a new filesystem (fsopen/fsmount) before pivot_root */
    CT_MOUNT_BIND = 2,    /* a host path (open_tree) before pivot_root */
    CT_MOUNT_MKNOD = 3,   /* a device node made inside the new root */
    CT_MOUNT_SYMLINK = 4, /* a symlink made inside the new root */
    CT_MOUNT_MASK = 5,    /* hide a path: /dev/null over a file, empty ro tmpfs over a dir */
    CT_MOUNT_READONLY = 6, /* make an existing path read-only (bind over itself) */
    CT_MOUNT_WRITE = 7    /* write `options` into the existing file `target` (sysctls) */
};

struct ct_mount {
    int kind;
    const char *source;   /* BIND: host path; NEW: source name; SYMLINK: link text */
    const char *target;   /* absolute path inside the container */
    const char *fstype;   /* NEW: "proc", "tmpfs", "sysfs", "devpts", "mqueue" */
    const char *options;  /* NEW: "key=value,flag,..." for fsconfig */
    unsigned int attr;    /* MOUNT_ATTR_* applied to the mount */
    int recursive;        /* BIND: AT_RECURSIVE */
    int is_file;          /* BIND/MKNOD: the target is a file, not a dir */
    unsigned int mode;    /* MKNOD: S_IFCHR|0666 etc. */
    unsigned long long dev; /* MKNOD: makedev(major, minor) */
    int fd;               /* internal: the detached mount, -1 when none */
};

/* What runs: shared by the container's first process and by exec. */
struct ct_process {
    const char *const *argv;
    const char *const *envp;
    const char *cwd;
    unsigned int uid, gid;
    int ngroups;
    const unsigned int *groups;
    int set_caps;         /* apply the five sets below */
    uint64_t cap_bounding, cap_effective, cap_permitted, cap_inheritable, cap_ambient;
    int no_new_privs;
    const void *seccomp_filter;  /* struct sock_filter[], or NULL */
    int seccomp_len;
    int stdio[3];         /* fds to become 0, 1, 2 (-1: /dev/null is not opened: keep) */
    int tty;              /* stdio[0] is a pty slave: new session, controlling terminal */
    int console_socket;   /* >= 0: make the pty inside the container (its /dev/pts),
                             send the master over this socket, use the slave as stdio */
    int oom_score_adj_set;
    int oom_score_adj;
};

struct ct_spec {
    int clone_flags;      /* CLONE_NEW* for the namespaces to create */
    int ns_fds[8];        /* namespaces to join instead (setns), -1 terminated */
    int cgroup_procs[12]; /* open files the child joins by writing "0", -1 terminated:
                           * `tasks` of v1 hierarchies (see write_cgroup_procs),
                           * cgroup.procs of a v2 one */
    int cgroup_dir_fd;    /* cgroup v2 dir for CLONE_INTO_CGROUP, -1 when not used */
    const char *uid_map;  /* with CLONE_NEWUSER: written by the parent */
    const char *gid_map;
    const char *rootfs;   /* where the root is assembled (a directory) */
    const char *overlay;  /* overlay options (lowerdir=..,upperdir=..,workdir=..) or NULL */
    int overlay_fd;       /* or a detached overlay mount made ahead (ct_mount_overlay), -1 */
    int readonly_root;
    const char *hostname;
    int loopback_up;      /* bring up lo in the (new) network namespace */
    struct ct_mount *mounts;
    int nmounts;
    struct ct_process proc;
    /* Rootless: with CLONE_NEWUSER, run these setuid helpers (newuidmap,
     * newgidmap: argv[0] is the path; an entry "{pid}" becomes the child's
     * pid) instead of writing uid_map/gid_map; NULL: write the maps. */
    const char *const *uidmap_helper;
    const char *const *gidmap_helper;
    /* With CLONE_NEWUSER: a helper run (argv as above) once the maps are
     * written and before the child goes on, that mounts the root at
     * `rootfs` in the child's mount namespace (fuse-overlayfs, where the
     * kernel's overlay is refused in a user namespace); then `overlay` is
     * NULL and the child binds that mount as its root.  NULL: none. */
    const char *const *root_helper;
    /* Rootless, instead of CLONE_NEWUSER: a user namespace to join (an fd
     * of the user's long-lived one, see contain-monitor --hold-userns).  A
     * child of the monitor-to-be enters it and clones the container as the
     * monitor's child, so that the namespaces made for the container belong
     * to it while the monitor stays on the host.  -1: none.  Needs a
     * monitor (the caller's threads keep it out of setns). */
    int userns_fd;
    /* v1 cgroups made during the start rather than before it: with a
     * monitor, by the caller's thread while the monitor-to-be clones the
     * container (which then builds its root); without, before the caller
     * places its child.  These directories (NULL-terminated, or NULL) are
     * made, a missing parent first, an empty one of the same name replaced
     * (one in use fails: EEXIST); then `cgroup_writes` (NULL-terminated
     * pairs of a file and its text, each text one write(), in order:
     * device rules); then the child, told they exist, writes "0" into
     * each of `cgroup_join_paths` (v1 `tasks` files), opened below
     * `cgroup_join_dirfd` (an O_PATH fd of the caller's root: the child
     * has pivoted by then).  Not with a user namespace (a child there
     * joins cgroups that exist already). */
    const char *const *cgroup_mkdirs;
    const char *const *cgroup_writes;
    int cgroup_join_dirfd;
    const char *const *cgroup_join_paths;
};

struct ct_child {
    int pid;              /* the container's first process, as the host sees it */
    int pidfd;            /* for it, or -1 when a monitor is its parent */
    int monitor_pid;      /* the monitor's pid, or -1 */
    int monitor_pidfd;    /* and a pidfd for it: readable once it has exited */
    /* Their start times (field 22 of /proc/PID/stat, clock ticks since
     * boot; 0 when gone already): with a pid, they tell a reused pid from
     * the process meant.  Read while the container is being set up. */
    unsigned long long start_time;
    unsigned long long monitor_start_time;
};

/* A small program that becomes the container's parent: it holds the
 * container's pidfd on fd 3 and the fds listed here on 4, 5, ... */
struct ct_monitor {
    const char *path;
    const char *const *argv;  /* an entry "{pid}" becomes the container's pid */
    const char *const *envp;
    int fds[8];
    int nfds;
};

/* Start a container, as a child of the caller (mon NULL) or of a monitor
 * that outlives the caller (started in a new session).  Returns 0 when the command is running, 1 when the
 * container started but its command could not be executed (err names it
 * and the child has exited 126 or 127), -1 when set-up failed (err names
 * the step; the child has been reaped). */
/* A detached overlay mount (fsopen/fsmount) of lowerdir (':'-separated),
 * upperdir and workdir, for ct_spec.overlay_fd; flags: CT_OVERLAY_*.
 * Returns the mount's fd, or -1 with err filled. */
#define CT_OVERLAY_VOLATILE 1
#define CT_OVERLAY_USERXATTR 2
int ct_mount_overlay(const char *lowerdir, const char *upperdir, const char *workdir, int flags,
                     struct ct_error *err);
/* The same, made as a member of the user namespace userns_fd (a rootless
 * root mounted ahead: see spawn.c); userns_fd -1 is ct_mount_overlay. */
int ct_mount_overlay_in(int userns_fd, int mntns_fd, const char *lowerdir, const char *upperdir,
                        const char *workdir, int flags, struct ct_error *err);
/* A network namespace with lo up, made as a member of the user namespace
 * userns_fd; returns its fd, or -1 with err filled. */
int ct_netns_in(int userns_fd, struct ct_error *err);
/* A second detached mount of what the detached mount mount_fd mounts (the
 * same superblock: a root kept for reuse), made as a member of userns_fd
 * when >= 0.  Older kernels refuse to clone a detached mount (EINVAL). */
int ct_clone_mount(int userns_fd, int mntns_fd, int mount_fd, struct ct_error *err);

int ct_spawn(struct ct_spec *spec, struct ct_monitor *mon, struct ct_child *out, struct ct_error *err);

/* Run a process inside a running container: join the namespaces of the
 * process behind target_pidfd (ns_flags: CLONE_NEW* to join) and its
 * cgroups, then exec.  cgroup_procs: open files to write "0" into (v1
 * `tasks`), -1 terminated; cgroup_dir_fd: its v2 directory (the process
 * is born there, CLONE_INTO_CGROUP, or joins it after) or -1.  Same
 * return convention as ct_spawn. */
int ct_join(int target_pidfd, int ns_flags, const int *cgroup_procs, int cgroup_dir_fd,
            struct ct_process *proc, struct ct_child *out, struct ct_error *err);


#endif
