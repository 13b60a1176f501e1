/* Mounts of a new container.  Host bind sources are prepared as detached
 * mounts (open_tree) while the host's tree is still reachable, and attached
 * after pivot_root, where every target path resolves inside the new root:
 * a symlink in the image cannot point a mount at a host path.  New
 * filesystems are mounted in place after pivot_root too (mount(2), one
 * call); in a user namespace they are made detached before it (fsopen,
 * fsmount), see mount_in_place.  Runs in the clone child: raw calls only. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <linux/mount.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "internal.h"

static int sys_fsopen(const char *fs, unsigned int flags)
{
    return (int)syscall(SYS_fsopen, fs, flags);
}

static int sys_fsconfig(int fd, unsigned int cmd, const char *key, const void *value, int aux)
{
    return (int)syscall(SYS_fsconfig, fd, cmd, key, value, aux);
}

static int sys_fsmount(int fd, unsigned int flags, unsigned int attr)
{
    return (int)syscall(SYS_fsmount, fd, flags, attr);
}

static int sys_open_tree(int dfd, const char *path, unsigned int flags)
{
    return (int)syscall(SYS_open_tree, dfd, path, flags);
}

static int sys_move_mount(int from_dfd, const char *from, int to_dfd, const char *to, unsigned int flags)
{
    return (int)syscall(SYS_move_mount, from_dfd, from, to_dfd, to, flags);
}

static int sys_mount_setattr(int dfd, const char *path, unsigned int flags, struct mount_attr *attr)
{
    return (int)syscall(SYS_mount_setattr, dfd, path, flags, attr, sizeof *attr);
}

int ct_mkdir_p(const char *path, int mode)
{
    char buf[4096];
    size_t n = ct_strlen(path);
    if (n == 0 || n >= sizeof buf)
        return -ENAMETOOLONG;
    ct_copy(buf, sizeof buf, path);
    while (n > 1 && buf[n - 1] == '/')
        buf[--n] = 0;
    /* Most of a path usually exists (a mount target's parent, /sys/fs/cgroup
     * for its hierarchies): go up from the end to the first directory that
     * exists or can be made, then make the rest downwards.  One call for
     * the common case instead of one per component. */
    size_t len = n;
    int r;
    while ((r = (int)ct_sys4(SYS_mkdirat, AT_FDCWD, (long)buf, mode, 0)) < 0 && r != -EEXIST) {
        if (r != -ENOENT)
            return r;
        size_t i = len - 1;
        while (i > 0 && buf[i] != '/')
            i--;
        if (i == 0)
            return -ENOENT;
        buf[i] = 0;
        len = i;
    }
    while (len < n) {
        buf[len] = '/';
        len += ct_strlen(buf + len);
        r = (int)ct_sys4(SYS_mkdirat, AT_FDCWD, (long)buf, mode, 0);
        if (r < 0 && r != -EEXIST)
            return r;
    }
    return 0;
}

/* The parent directory of an absolute path must exist before a file or
 * node is made there. */
static int mkdir_parent(const char *path)
{
    char buf[4096];
    size_t n = ct_strlen(path);
    if (n >= sizeof buf)
        return -ENAMETOOLONG;
    ct_copy(buf, sizeof buf, path);
    while (n > 0 && buf[n - 1] != '/')
        n--;
    if (n <= 1)
        return 0;
    buf[n - 1] = 0;
    return ct_mkdir_p(buf, 0755);
}

static int make_target(struct ct_mount *m)
{
    struct stat st;
    /* An existing target is used as it is: opening it for writing would
     * copy it up into the writable layer, where a commit would find it. */
    if (lstat(m->target, &st) == 0)
        return 0;
    if (!m->is_file)
        return ct_mkdir_p(m->target, 0755);
    int r = mkdir_parent(m->target);
    if (r < 0)
        return r;
    int fd = open(m->target, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0 && errno != EEXIST && errno != ELOOP && errno != EISDIR)
        return -errno;
    if (fd >= 0)
        close(fd);
    return 0;
}

/* "mode=755,size=65536k,nosuid" -> fsconfig calls, without allocating. */
static int configure_fs(int fd, const char *options, struct ct_error *err, const char *target)
{
    char buf[1024], *key, *p;
    if (!options || !options[0])
        return 0;
    if (ct_strlen(options) >= sizeof buf)
        return ct_fail(err, "mount options too long", target, E2BIG);
    ct_copy(buf, sizeof buf, options);
    p = buf;
    while (*p) {
        key = p;
        while (*p && *p != ',')
            p++;
        if (*p)
            *p++ = 0;
        if (!key[0])
            continue;
        char *value = key;
        while (*value && *value != '=')
            value++;
        int r;
        if (*value) {
            *value++ = 0;
            r = sys_fsconfig(fd, FSCONFIG_SET_STRING, key, value, 0);
        } else {
            r = sys_fsconfig(fd, FSCONFIG_SET_FLAG, key, NULL, 0);
        }
        if (r < 0)
            return ct_fail(err, "set mount option", key, errno);
    }
    return 0;
}

static int new_fs(struct ct_mount *m, struct ct_error *err)
{
    int fd = sys_fsopen(m->fstype, FSOPEN_CLOEXEC);
    if (fd < 0)
        return ct_fail(err, "open filesystem", m->fstype, errno);
    if (m->source && m->source[0] && sys_fsconfig(fd, FSCONFIG_SET_STRING, "source", m->source, 0) < 0) {
        ct_fail(err, "set mount source", m->target, errno);
        close(fd);
        return -1;
    }
    if (configure_fs(fd, m->options, err, m->target) < 0) {
        close(fd);
        return -1;
    }
    if (sys_fsconfig(fd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
        ct_fail(err, "create filesystem", m->target, errno);
        close(fd);
        return -1;
    }
    int mfd = sys_fsmount(fd, FSMOUNT_CLOEXEC, m->attr);
    int e = errno;
    close(fd);
    if (mfd < 0)
        return ct_fail(err, "mount filesystem", m->target, e);
    return mfd;
}

int ct_mount_overlay(const char *lowerdir, const char *upperdir, const char *workdir, int flags,
                     struct ct_error *err)
{
    __builtin_memset(err, 0, sizeof *err);
    int fd = sys_fsopen("overlay", FSOPEN_CLOEXEC);
    if (fd < 0)
        return ct_fail(err, "open filesystem", "overlay", errno);
    const char *keys[] = {"source", "lowerdir", "upperdir", "workdir"};
    const char *values[] = {"overlay", lowerdir, upperdir, workdir};
    for (int i = 0; i < 4; i++) {
        if (values[i] && sys_fsconfig(fd, FSCONFIG_SET_STRING, keys[i], values[i], 0) < 0) {
            ct_fail(err, "set overlay layer", values[i], errno);
            close(fd);
            return -1;
        }
    }
    if (((flags & CT_OVERLAY_VOLATILE) && sys_fsconfig(fd, FSCONFIG_SET_FLAG, "volatile", NULL, 0) < 0) ||
        ((flags & CT_OVERLAY_USERXATTR) && sys_fsconfig(fd, FSCONFIG_SET_FLAG, "userxattr", NULL, 0) < 0) ||
        sys_fsconfig(fd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
        ct_fail(err, "mount overlay root", upperdir ? upperdir : lowerdir, errno);
        close(fd);
        return -1;
    }
    int mfd = sys_fsmount(fd, FSMOUNT_CLOEXEC, 0);
    int e = errno;
    close(fd);
    if (mfd < 0)
        return ct_fail(err, "mount overlay root", upperdir ? upperdir : lowerdir, e);
    return mfd;
}

static int detached_bind(const char *source, unsigned int attr, int recursive,
                         struct ct_error *err, const char *target)
{
    unsigned int rec = recursive ? AT_RECURSIVE : 0;
    int fd = sys_open_tree(AT_FDCWD, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | rec);
    if (fd < 0)
        return ct_fail(err, "open bind source", source, errno);
    if (attr) {
        struct mount_attr ma = {0};
        ma.attr_set = attr;
        if (sys_mount_setattr(fd, "", AT_EMPTY_PATH | rec, &ma) < 0) {
            ct_fail(err, "set bind mount attributes", target, errno);
            close(fd);
            return -1;
        }
    }
    return fd;
}

static int is_cgroupfs(const struct ct_mount *m)
{
    const char *t = m->fstype, *c = "cgroup";
    if (!t)
        return 0;
    while (*c && *t == *c)
        t++, c++;
    return !*c && (!*t || (t[0] == '2' && !t[1]));
}

/* MOUNT_ATTR_* as mount(2) flags; -1 for one mount(2) has no flag for. */
static long attr_flags(unsigned int attr)
{
    long flags = 0;
    if (attr & MOUNT_ATTR_RDONLY)
        flags |= MS_RDONLY;
    if (attr & MOUNT_ATTR_NOSUID)
        flags |= MS_NOSUID;
    if (attr & MOUNT_ATTR_NODEV)
        flags |= MS_NODEV;
    if (attr & MOUNT_ATTR_NOEXEC)
        flags |= MS_NOEXEC;
    if (attr & MOUNT_ATTR_NODIRATIME)
        flags |= MS_NODIRATIME;
    unsigned int atime = attr & MOUNT_ATTR__ATIME;
    if (atime == MOUNT_ATTR_NOATIME)
        flags |= MS_NOATIME;
    else if (atime == MOUNT_ATTR_STRICTATIME)
        flags |= MS_STRICTATIME;
    else if (atime != MOUNT_ATTR_RELATIME)
        return -1;
    unsigned int known = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC |
                         MOUNT_ATTR_NODIRATIME | MOUNT_ATTR__ATIME;
    return (attr & ~known) ? -1 : flags;
}

/* Whether new filesystem `m` can be mounted in place once the root is the
 * container's (mount(2), one call), rather than made detached before the
 * pivot and attached after (fsopen, fsconfig per option, fsmount, close,
 * move_mount, close: eight).  Not in a user namespace: there the kernel
 * lets proc and sysfs be mounted only while a full view of them is in the
 * mount namespace, which the pivot takes away (mount_too_revealing). */
static int mount_in_place(const struct ct_spec *spec, const struct ct_mount *m)
{
    return m->kind == CT_MOUNT_NEW && !(spec->clone_flags & CLONE_NEWUSER) && spec->userns_fd < 0 &&
           attr_flags(m->attr) >= 0;
}

int ct_prepare_mounts(struct ct_spec *spec, int *fds, int which, struct ct_error *err)
{
    for (int i = 0; i < spec->nmounts; i++) {
        struct ct_mount *m = &spec->mounts[i];
        int late = m->kind == CT_MOUNT_NEW && is_cgroupfs(m);
        if (which == CT_PREPARE_CGROUPFS) {
            if (late && !mount_in_place(spec, m) && (fds[i] = new_fs(m, err)) < 0)
                return -1;
            continue;
        }
        fds[i] = -1;
        if (late || mount_in_place(spec, m))
            continue;
        if (m->kind == CT_MOUNT_NEW)
            fds[i] = new_fs(m, err);
        else if (m->kind == CT_MOUNT_BIND)
            fds[i] = detached_bind(m->source, m->attr, m->recursive, err, m->target);
        else
            continue;
        if (fds[i] < 0)
            return -1;
    }
    return 0;
}

static int attach(int fd, struct ct_mount *m, struct ct_error *err)
{
    int r = make_target(m);
    if (r < 0)
        return ct_fail(err, "create mount point", m->target, -r);
    if (sys_move_mount(fd, "", AT_FDCWD, m->target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return ct_fail(err, "attach mount", m->target, errno);
    close(fd);
    return 0;
}

static int mask_path(struct ct_mount *m, struct ct_error *err)
{
    struct stat st;
    if (lstat(m->target, &st) < 0)
        return errno == ENOENT ? 0 : ct_fail(err, "mask path", m->target, errno);
    if (S_ISDIR(st.st_mode)) {
        if (mount("tmpfs", m->target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0") < 0)
            return ct_fail(err, "mask directory", m->target, errno);
    } else if (mount("/dev/null", m->target, NULL, MS_BIND, NULL) < 0) {
        return ct_fail(err, "mask file", m->target, errno);
    }
    return 0;
}

static int readonly_path(struct ct_mount *m, struct ct_error *err)
{
    int fd = sys_open_tree(AT_FDCWD, m->target, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (fd < 0)
        return errno == ENOENT ? 0 : ct_fail(err, "open read-only path", m->target, errno);
    struct mount_attr ma = {0};
    ma.attr_set = MOUNT_ATTR_RDONLY | m->attr;
    if (sys_mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &ma) < 0) {
        close(fd);
        return ct_fail(err, "make path read-only", m->target, errno);
    }
    if (sys_move_mount(fd, "", AT_FDCWD, m->target, MOVE_MOUNT_F_EMPTY_PATH) < 0) {
        close(fd);
        return ct_fail(err, "attach read-only path", m->target, errno);
    }
    close(fd);
    return 0;
}

/* A sysctl: /proc/sys/... of the container's own namespaces, written
 * after /proc is mounted and before /proc/sys is made read-only. */
static int write_file(struct ct_mount *m, struct ct_error *err)
{
    int fd = open(m->target, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return ct_fail(err, "open sysctl", m->target, errno);
    size_t len = ct_strlen(m->options);
    ssize_t n = write(fd, m->options, len);
    int saved = errno;
    close(fd);
    if (n < 0 || (size_t)n != len)
        return ct_fail(err, "write sysctl", m->target, n < 0 ? saved : EIO);
    return 0;
}

/* Whether a and b name entries of the same directory. */
static int same_parent(const char *a, const char *b)
{
    size_t la = ct_strlen(a), lb = ct_strlen(b);
    while (la > 0 && a[la - 1] != '/')
        la--;
    while (lb > 0 && b[lb - 1] != '/')
        lb--;
    if (la != lb)
        return 0;
    for (size_t i = 0; i < la; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

/* Whether path is dir or below it. */
static int within(const char *path, const char *dir)
{
    size_t i = 0;
    for (; dir[i]; i++)
        if (path[i] != dir[i])
            return 0;
    return path[i] == 0 || path[i] == '/';
}

/* What the second pass attaches (CT_ATTACH_CGROUPS): the cgroup
 * filesystems, and what is made on /sys/fs/cgroup or below it but for the
 * tmpfs that holds their mount points. */
static int needs_cgroups(const struct ct_mount *m)
{
    if (m->kind == CT_MOUNT_NEW)
        return is_cgroupfs(m) || (within(m->target, "/sys/fs/cgroup") && m->target[14] != 0);
    return within(m->target, "/sys/fs/cgroup");
}

int ct_attach_mounts(struct ct_spec *spec, int *fds, int which, struct ct_error *err)
{
    /* Device nodes and symlinks come in runs in one directory (/dev): its
     * parent is made once; the nodes are made with no umask (their modes
     * exact, no chmod each), the caller's restored after them. */
    const char *parent_made = NULL;
    int old_umask = -1;
    for (int i = 0; i < spec->nmounts; i++) {
        struct ct_mount *m = &spec->mounts[i];
        int r;
        if (needs_cgroups(m) != (which == CT_ATTACH_CGROUPS))
            continue;
        if (old_umask >= 0 && m->kind != CT_MOUNT_MKNOD) {
            umask((mode_t)old_umask);
            old_umask = -1;
        }
        if ((m->kind == CT_MOUNT_MKNOD || m->kind == CT_MOUNT_SYMLINK) &&
            !(parent_made && same_parent(parent_made, m->target))) {
            r = mkdir_parent(m->target);
            if (r < 0)
                return ct_fail(err, m->kind == CT_MOUNT_MKNOD ? "create device directory"
                                                              : "create symlink directory", m->target, -r);
            parent_made = m->target;
        }
        switch (m->kind) {
        case CT_MOUNT_NEW:
            if (fds[i] < 0) {  /* mount_in_place */
                r = make_target(m);
                if (r < 0)
                    return ct_fail(err, "create mount point", m->target, -r);
                if (mount(m->source && m->source[0] ? m->source : m->fstype, m->target, m->fstype,
                          (unsigned long)attr_flags(m->attr), m->options && m->options[0] ? m->options : NULL) == 0)
                    break;
                /* Refused: made the detailed way, which names the option
                 * the file system refuses (or mounts it after all). */
                fds[i] = new_fs(m, err);
                if (fds[i] < 0)
                    return -1;
            }
            __attribute__((fallthrough));
        case CT_MOUNT_BIND:
            if (attach(fds[i], m, err) < 0)
                return -1;
            fds[i] = -1;
            break;
        case CT_MOUNT_MKNOD:
            if (old_umask < 0)
                old_umask = (int)umask(0);
            if (mknod(m->target, m->mode, (dev_t)m->dev) < 0) {
                /* Something is there already (a /dev not made fresh): replace it. */
                if (errno != EEXIST || unlink(m->target) < 0 || mknod(m->target, m->mode, (dev_t)m->dev) < 0) {
                    umask((mode_t)old_umask);
                    return ct_fail(err, "mknod", m->target, errno);
                }
            }
            break;
        case CT_MOUNT_SYMLINK:
            if (symlink(m->source, m->target) < 0 && errno != EEXIST)
                return ct_fail(err, "symlink", m->target, errno);
            break;
        case CT_MOUNT_MASK:
            if (mask_path(m, err) < 0)
                return -1;
            break;
        case CT_MOUNT_READONLY:
            if (readonly_path(m, err) < 0)
                return -1;
            break;
        case CT_MOUNT_WRITE:
            if (write_file(m, err) < 0)
                return -1;
            break;
        default:
            return ct_fail(err, "unknown mount kind", m->target, EINVAL);
        }
    }
    if (old_umask >= 0)
        umask((mode_t)old_umask);
    return 0;
}
