/* Mounts the initramfs API filesystems and the container root (9p) with its own; pivots a
 * container's mount namespace into that root. */
#define _GNU_SOURCE
#include "mounts.h"

#include "init.h"
#include "rootcopy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The new mount API (Linux 5.2, mount_setattr 5.12), for binds made read-only atomically:
 * musl has no wrappers. x86_64 numbers, as every other architecture since 4.20. */
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#define BIND_OPEN_TREE_CLONE 1u
#define BIND_MOVE_MOUNT_F_EMPTY_PATH 0x4u
#define BIND_MOVE_MOUNT_T_EMPTY_PATH 0x40u
#define BIND_MOUNT_ATTR_RDONLY 0x1ull

struct bind_mount_attr {
	unsigned long long attr_set, attr_clr, propagation, userns_fd;
};

int mounts_mkdir_p(const char *path, unsigned mode)
{
	char buf[4096];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + 1;; p++) {
		if (*p == '/' || *p == 0) {
			char c = *p;
			*p = 0;
			if (mkdir(buf, mode) < 0 && errno != EEXIST)
				return -errno;
			*p = c;
			if (c == 0)
				break;
		}
	}
	return 0;
}

static int do_mount(const char *src, const char *dst, const char *type, unsigned long flags,
		    const char *data)
{
	int rc = mounts_mkdir_p(dst, 0755);
	if (rc < 0)
		return rc;
	if (mount(src, dst, type, flags, data) < 0)
		return -errno;
	return 0;
}

int mounts_initial(void)
{
	const unsigned long nosuid = MS_NOSUID | MS_NOEXEC | MS_NODEV;
	int rc = do_mount("proc", "/proc", "proc", nosuid, NULL);
	if (rc == 0)
		rc = do_mount("sysfs", "/sys", "sysfs", nosuid, NULL);
	if (rc == 0) {
		rc = do_mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
		if (rc == -EBUSY) /* CONFIG_DEVTMPFS_MOUNT already did it */
			rc = 0;
	}
	if (rc == 0)
		rc = do_mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
			      "newinstance,ptmxmode=0666,mode=0620,gid=5");
	if (rc == 0)
		rc = do_mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
	return rc;
}

#define SHARE_STAGING MOUNTS_SHARE_STAGING
#define SCRATCH_ROOT "/run/scratch"
#define DROP_CACHES "/proc/sys/vm/drop_caches"

/* The tag mounted at SHARE_STAGING by STAGE_ROOT, or "" if none, and how it is cached
 * (MOUNTS_CACHE_NONE or MOUNTS_CACHE_LOOSE). */
static char staged_tag[256];
static unsigned staged_cache;
/* Whether STAGE_LOWER mounted the root disk's erofs at MOUNTS_BLOCK_LOWER and keeps it there for
 * a SETUP_ROOT with STAGED 1: set once that mount is made, cleared once it is unmounted or the
 * overlay has taken it (detached). */
static int lower_kept;

struct api_mount {
	const char *src, *dir, *type;
	unsigned long flags;
	const char *data;
	int per_pidns; /* mounted by each process tree in its PID namespace (mounts_pivot) */
};

#define PROC_FLAGS (MS_NOSUID | MS_NOEXEC | MS_NODEV)

/* What a container root gets mounted inside it. */
static const struct api_mount root_api_mounts[] = {
	{"proc", "proc", "proc", PROC_FLAGS, NULL, 1},
	{"sysfs", "sys", "sysfs", MS_NOSUID | MS_NOEXEC | MS_NODEV, NULL, 0},
	{"devtmpfs", "dev", "devtmpfs", MS_NOSUID, "mode=0755", 0},
	{"/dev/pts", "dev/pts", NULL, MS_BIND, NULL, 0},
	{"shm", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 0},
};
#define N_ROOT_API_MOUNTS (sizeof(root_api_mounts) / sizeof(root_api_mounts[0]))

/* The API mounts under root; a per-PID-namespace one (proc) only gets its directory, unless
 * `all` (the rehearsal, which runs the same kernel paths a START will). */
static int mount_api(const char *root, int all, char *msg, unsigned msglen)
{
	char path[4200];
	for (unsigned i = 0; i < N_ROOT_API_MOUNTS; i++) {
		const struct api_mount *m = &root_api_mounts[i];
		snprintf(path, sizeof(path), "%s/%s", root, m->dir);
		int rc = m->per_pidns && !all ? mounts_mkdir_p(path, 0755)
					      : do_mount(m->src, path, m->type, m->flags, m->data);
		if (rc < 0) {
			snprintf(msg, msglen, "mount %s: %s", path, strerror(-rc));
			return rc;
		}
	}
	return 0;
}

/* The share tag at the staging point, mounted now with CACHE cache's options (none or loose)
 * unless one is staged already. Returns 0 or -errno with msg. */
static int stage_share(const char *tag, unsigned cache, char *msg, unsigned msglen)
{
	if (staged_tag[0])
		return 0;
	int rc = do_mount(tag, SHARE_STAGING, "9p", 0, mounts_root_options(cache));
	if (rc < 0) {
		snprintf(msg, msglen, "mount 9p %s: %s", tag, strerror(-rc));
		return rc;
	}
	strcpy(staged_tag, tag);
	staged_cache = cache;
	return 0;
}

int mounts_stage(const char *tag, unsigned cache, char *msg, unsigned msglen)
{
	if (staged_tag[0]) {
		snprintf(msg, msglen, "share %s already staged", staged_tag);
		return -EBUSY;
	}
	if (strlen(tag) >= sizeof(staged_tag)) {
		snprintf(msg, msglen, "SOURCE over 255 bytes");
		return -EINVAL;
	}
	if (!mounts_root_options(cache)) {
		snprintf(msg, msglen, "STAGE_ROOT: unknown CACHE %u (0 none, 1 loose)", cache);
		return -EINVAL;
	}
	int rc = stage_share(tag, cache, msg, msglen);
	if (rc < 0)
		return rc;
	/* Rehearsal: the same mounts SETUP_ROOT makes, on a scratch tmpfs, then all detached. */
	rc = do_mount("scratch", SCRATCH_ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700");
	if (rc == 0)
		rc = mount_api(SCRATCH_ROOT, 1, msg, msglen);
	else
		snprintf(msg, msglen, "mount %s: %s", SCRATCH_ROOT, strerror(-rc));
	if (umount2(SCRATCH_ROOT, MNT_DETACH) < 0 && rc == 0)
		main_log("umount %s: %s", SCRATCH_ROOT, strerror(errno));
	return rc;
}

/* Bind the directory subdir of the share mounted at share onto root. */
static int bind_subdir_of(const char *share, const char *subdir, const char *root, char *msg,
			  unsigned msglen)
{
	char rel[4200], fdpath[64];
	int rc = 0;
	if (subdir[0] == '/' || snprintf(rel, sizeof(rel), "/%s", subdir) >= (int)sizeof(rel)) {
		snprintf(msg, msglen, "SUBDIR must be a relative path: %s", subdir);
		return -EINVAL;
	}
	int sharefd = open(share, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sharefd < 0) {
		rc = -errno;
		snprintf(msg, msglen, "open %s: %s", share, strerror(errno));
		return rc;
	}
	/* No "..", no symlinks: the root stays inside the share. */
	int fd = mounts_open_target(sharefd, rel);
	close(sharefd);
	if (fd < 0) {
		snprintf(msg, msglen, "SUBDIR %s: %s", subdir, strerror(-fd));
		return fd;
	}
	snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", fd);
	rc = mounts_mkdir_p(root, 0755);
	if (rc == 0 && mount(fdpath, root, NULL, MS_BIND, NULL) < 0)
		rc = -errno;
	close(fd);
	if (rc < 0)
		snprintf(msg, msglen, "bind %s/%s: %s", share, subdir, strerror(-rc));
	return rc;
}

/* Bind the directory subdir of the share mounted at SHARE_STAGING onto root, then drop the
 * staging mount: the guest sees only subdir (a pooled VM's slot holds more than the root). */
static int bind_subdir(const char *subdir, const char *root, char *msg, unsigned msglen)
{
	int rc = bind_subdir_of(SHARE_STAGING, subdir, root, msg, msglen);
	if (rc == 0 && umount2(SHARE_STAGING, MNT_DETACH) < 0)
		main_log("umount %s: %s", SHARE_STAGING, strerror(errno));
	return rc;
}

/* The API mounts of a root that is mounted (or bound) at root, its /dev/ptmx, and read-only
 * on request (bound: a bind is made read-only per mount, not per superblock). */
static int finish_root(const char *root, int bound, int readonly, char *msg, unsigned msglen)
{
	char path[4200];
	int rc = mount_api(root, 0, msg, msglen);
	if (rc < 0)
		return rc;
	/* /dev/ptmx must open the bound devpts instance. */
	snprintf(path, sizeof(path), "%s/dev/ptmx", root);
	unlink(path);
	if (symlink("pts/ptmx", path) < 0)
		main_log("symlink %s: %s", path, strerror(errno));
	unsigned long ro_flags = MS_REMOUNT | MS_RDONLY | (bound ? MS_BIND : 0);
	if (readonly && mount(NULL, root, NULL, ro_flags, NULL) < 0) {
		rc = -errno;
		snprintf(msg, msglen, "remount %s read-only: %s", root, strerror(errno));
		return rc;
	}
	return 0;
}

int mounts_member_root(const char *share, const char *subdir, const char *root, int readonly,
		       char *msg, unsigned msglen)
{
	int rc = bind_subdir_of(share, subdir, root, msg, msglen);
	if (rc < 0)
		return rc;
	rc = finish_root(root, 1, readonly, msg, msglen);
	if (rc < 0 && umount2(root, MNT_DETACH) < 0)
		main_log("umount %s: %s", root, strerror(errno));
	return rc;
}

const char *mounts_root_options(unsigned cache)
{
	switch (cache) {
	case MOUNTS_CACHE_NONE:
		return MOUNTS_NINEP_OPTIONS;
	case MOUNTS_CACHE_LOOSE:
		return MOUNTS_NINEP_BASE ",cache=loose";
	default:
		return NULL;
	}
}

int mounts_sync_root(int drop, char *msg, unsigned msglen)
{
	int fd = open(INIT_ROOT, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || syncfs(fd) < 0) {
		int rc = -errno;
		snprintf(msg, msglen, "syncfs %s: %s", INIT_ROOT, strerror(errno));
		if (fd >= 0)
			close(fd);
		return rc;
	}
	close(fd);
	if (!drop)
		return 0;
	fd = open(DROP_CACHES, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "3", 1) != 1) {
		int rc = -errno;
		snprintf(msg, msglen, "write %s: %s", DROP_CACHES, strerror(errno));
		if (fd >= 0)
			close(fd);
		return rc;
	}
	close(fd);
	return 0;
}

/* After a share's copy (rc: how it went): the share mounted at staging is unmounted, not
 * detached (a share still referenced would keep QEMU's migration blocker); if that fails, a
 * copy that had gone well fails with the reason, and the share is detached after all.
 * Returns the copy's outcome. */
static int unmount_staged(const char *staging, int rc, char *msg, unsigned msglen)
{
	if (umount2(staging, 0) < 0) {
		int err = errno;
		if (rc == 0) {
			snprintf(msg, msglen, "umount %s after the copy: %s", staging, strerror(err));
			rc = -err;
		}
		umount2(staging, MNT_DETACH);
	}
	return rc;
}

/* The staged share mounted afresh with CACHE cache's options if STAGE_ROOT mounted it with
 * others (a virtio 9p tag serves one mount at a time, so the staged one goes first). Returns 0,
 * or -errno with msg: if the staged mount cannot be unmounted (in use) it stays as it was. */
static int restage(unsigned cache, char *msg, unsigned msglen)
{
	if (!staged_tag[0] || staged_cache == cache)
		return 0;
	if (umount2(SHARE_STAGING, 0) < 0) {
		int rc = -errno;
		snprintf(msg, msglen, "umount %s to mount it with CACHE %u: %s", SHARE_STAGING, cache,
			 strerror(errno));
		return rc;
	}
	char tag[sizeof(staged_tag)];
	strcpy(tag, staged_tag);
	staged_tag[0] = 0;
	return stage_share(tag, cache, msg, msglen);
}

/* CACHE 2: the share (or its directory subdir) is mounted at the staging point, copied into a
 * tmpfs at root and unmounted: the VM then holds no 9p mount of it (QEMU's virtio-9p blocks
 * migration while one is mounted), and the root lives in guest RAM. */
static int copy_root_to_ram(const char *tag, const char *subdir, const char *root, char *msg,
			    unsigned msglen)
{
	int rc = stage_share(tag, MOUNTS_CACHE_NONE, msg, msglen);
	if (rc < 0)
		return rc;
	int src = -1, dst = -1;
	char rel[1100];
	if (subdir[0] == '/') {
		snprintf(msg, msglen, "SUBDIR must be a relative path: %s", subdir);
		rc = -EINVAL;
	} else {
		snprintf(rel, sizeof(rel), "/%s", subdir);
		int sharefd = open(SHARE_STAGING, O_PATH | O_DIRECTORY | O_CLOEXEC);
		int at = sharefd < 0 ? -errno : subdir[0] ? mounts_open_target(sharefd, rel)
							  : dup(sharefd);
		if (sharefd >= 0)
			close(sharefd);
		if (at >= 0) {
			src = openat(at, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			rc = src < 0 ? -errno : 0;
			close(at);
		} else {
			rc = at;
		}
		if (rc < 0)
			snprintf(msg, msglen, "open %s/%s: %s", SHARE_STAGING, subdir, strerror(-rc));
	}
	if (rc == 0) {
		rc = mounts_mkdir_p(root, 0755);
		if (rc == 0)
			rc = do_mount("root", root, "tmpfs", 0, "mode=0755");
		if (rc < 0)
			snprintf(msg, msglen, "mount tmpfs at %s: %s", root, strerror(-rc));
	}
	if (rc == 0) {
		dst = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		rc = dst < 0 ? -errno : 0;
		if (rc < 0)
			snprintf(msg, msglen, "open %s: %s", root, strerror(-rc));
	}
	if (rc == 0)
		rc = rootcopy_tree(src, dst, msg, msglen);
	if (src >= 0)
		close(src);
	if (dst >= 0)
		close(dst);
	rc = unmount_staged(SHARE_STAGING, rc, msg, msglen);
	if (rc < 0)
		umount2(root, MNT_DETACH);
	staged_tag[0] = 0;
	return rc;
}

/* The directory subdir of the share mounted at SHARE_STAGING ("" = the share itself), opened
 * O_PATH without creating anything or following a symlink. Returns the fd or -errno. */
static int open_share_dir(const char *subdir)
{
	int sharefd = open(SHARE_STAGING, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sharefd < 0)
		return -errno;
	if (!subdir[0])
		return sharefd;
	int fd = mounts_open_source(sharefd, subdir);
	close(sharefd);
	return fd;
}

/* The root disk's buffers dropped and its erofs mounted read-only at MOUNTS_BLOCK_LOWER. Returns
 * 0, or -errno with msg (nothing mounted). */
static int mount_lower(char *msg, unsigned msglen)
{
	/* Nothing has read the disk (no partition tables), but a buffer of the placeholder it
	 * had must not stand for the image now behind it. */
	int disk = open(MOUNTS_ROOT_DISK, O_RDONLY | O_CLOEXEC);
	if (disk < 0 || ioctl(disk, BLKFLSBUF, 0) < 0) {
		int rc = -errno;
		snprintf(msg, msglen, "flush %s: %s", MOUNTS_ROOT_DISK, strerror(-rc));
		if (disk >= 0)
			close(disk);
		return rc;
	}
	close(disk);
	int rc = do_mount(MOUNTS_ROOT_DISK, MOUNTS_BLOCK_LOWER, "erofs", MS_RDONLY, NULL);
	if (rc < 0)
		snprintf(msg, msglen, "mount erofs %s: %s", MOUNTS_ROOT_DISK, strerror(-rc));
	return rc;
}

/* The lower STAGE_LOWER kept, unmounted, not detached: its superblock (and with it the page
 * cache of the file the disk had then) must be gone before the disk is flushed and mounted
 * afresh. Returns 0, or -errno with msg (it stays mounted and kept). */
static int drop_kept_lower(char *msg, unsigned msglen)
{
	if (!lower_kept)
		return 0;
	if (umount2(MOUNTS_BLOCK_LOWER, 0) < 0) {
		int rc = -errno;
		snprintf(msg, msglen, "unmount staged lower: %s", strerror(errno));
		return rc;
	}
	lower_kept = 0;
	return 0;
}

int mounts_keep_lower(char *msg, unsigned msglen)
{
	if (!lower_kept) {
		int rc = mount_lower(msg, msglen);
		if (rc < 0)
			return rc;
		lower_kept = 1;
	}
	int fd = open(MOUNTS_BLOCK_LOWER, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		int rc = -errno;
		snprintf(msg, msglen, "open %s: %s", MOUNTS_BLOCK_LOWER, strerror(errno));
		/* An ERROR leaves nothing kept: the host stages no SETUP_ROOT on it. */
		umount2(MOUNTS_BLOCK_LOWER, MNT_DETACH);
		lower_kept = 0;
		return rc;
	}
	return fd;
}

/* CACHE 3: the image's files are an erofs filesystem on the root disk, the container's
 * writable layer the directories upper/ and work/ of the share (or of its SUBDIR), cache=mmap;
 * an overlay of the two (user.overlay.* xattrs: QEMU may set those) is the root. The erofs
 * mount (mounted now, or the one STAGE_LOWER kept when staged) and the share stay mounted only
 * as the overlay's layers: both are detached from the init's namespace, so no container sees
 * them. */
static int setup_block_root(const char *tag, const char *subdir, const char *root, int readonly,
			    int staged, char *msg, unsigned msglen)
{
	int layer = -1, upper = -1, work = -1;
	int rc = stage_share(tag, MOUNTS_CACHE_NONE, msg, msglen);
	if (rc < 0)
		return rc;
	layer = open_share_dir(subdir);
	if (layer < 0) {
		rc = layer;
		snprintf(msg, msglen, "open %s/%s: %s", SHARE_STAGING, subdir, strerror(-rc));
		goto out;
	}
	upper = openat(layer, "upper", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	work = openat(layer, "work", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (upper < 0 || work < 0) {
		rc = -errno;
		snprintf(msg, msglen, "open %s/%s/%s: %s", SHARE_STAGING, subdir,
			 upper < 0 ? "upper" : "work", strerror(-rc));
		goto out;
	}
	/* STAGED: the erofs STAGE_LOWER mounted and read is the lower, from the same disk file
	 * (the host swapped none in since, or it would not say STAGED). */
	if (!staged) {
		rc = mount_lower(msg, msglen);
		if (rc < 0)
			goto out;
	}
	char options[256];
	snprintf(options, sizeof(options),
		 "lowerdir=%s,upperdir=/proc/self/fd/%d,workdir=/proc/self/fd/%d,userxattr",
		 MOUNTS_BLOCK_LOWER, upper, work);
	rc = do_mount("overlay", root, "overlay", 0, options);
	if (rc < 0)
		snprintf(msg, msglen, "mount overlay at %s: %s", root, strerror(-rc));
	umount2(MOUNTS_BLOCK_LOWER, MNT_DETACH);
	lower_kept = 0;
	if (rc == 0)
		rc = finish_root(root, 0, readonly, msg, msglen);
	if (rc < 0)
		umount2(root, MNT_DETACH);
out:
	if (upper >= 0)
		close(upper);
	if (work >= 0)
		close(work);
	if (layer >= 0)
		close(layer);
	umount2(SHARE_STAGING, MNT_DETACH);
	staged_tag[0] = 0;
	return rc;
}

int mounts_setup_root(const char *tag, const char *subdir, int readonly, unsigned cache,
		      int staged, char *msg, unsigned msglen)
{
	const char *root = INIT_ROOT;
	int rc = 0;
	if (staged && cache != MOUNTS_CACHE_BLOCK) {
		snprintf(msg, msglen, "STAGED needs CACHE 3 (block), not %u", cache);
		return -EINVAL;
	}
	if (staged && !lower_kept) {
		snprintf(msg, msglen, "no staged lower (STAGE_LOWER)");
		return -EINVAL;
	}
	/* Not staged: the disk may have another file behind it by now, so the kept mount is stale
	 * (and no image mount is to linger in the init's namespace under a root of another kind). */
	if (!staged) {
		rc = drop_kept_lower(msg, msglen);
		if (rc < 0)
			return rc;
	}
	if (cache == MOUNTS_CACHE_BLOCK) {
		if (staged_tag[0] && strcmp(tag, staged_tag) != 0) {
			snprintf(msg, msglen, "share %s is staged: SETUP_ROOT needs it", staged_tag);
			return -EINVAL;
		}
		/* The writable layer is uncached (the overlay's upper on a cached 9p is not coherent
		 * with the host's reads). */
		rc = restage(MOUNTS_CACHE_NONE, msg, msglen);
		if (rc < 0)
			return rc;
		return setup_block_root(tag, subdir, root, readonly, staged, msg, msglen);
	}
	if (cache == MOUNTS_CACHE_RAM) {
		if (staged_tag[0] && (!subdir[0] || strcmp(tag, staged_tag) != 0)) {
			snprintf(msg, msglen, "share %s is staged: SETUP_ROOT needs it with a SUBDIR",
				 staged_tag);
			return -EINVAL;
		}
		rc = copy_root_to_ram(tag, subdir, root, msg, msglen);
		return rc < 0 ? rc : finish_root(root, 0, readonly, msg, msglen);
	}
	if (staged_tag[0]) {
		/* STAGE_ROOT mounted the share already: only a directory inside it can be the root. */
		if (!subdir[0] || strcmp(tag, staged_tag) != 0) {
			snprintf(msg, msglen, "share %s is staged: SETUP_ROOT needs it with a SUBDIR",
				 staged_tag);
			return -EINVAL;
		}
	}
	const char *options = mounts_root_options(cache);
	if (!options) {
		snprintf(msg, msglen, "unknown CACHE %u (0 none, 1 loose)", cache);
		return -EINVAL;
	}
	rc = restage(cache, msg, msglen);
	if (rc < 0) {
		if (!staged_tag[0] || cache == MOUNTS_CACHE_NONE)
			return rc;
		/* loose asked, the uncached staged mount still in use: the root stays uncached,
		 * which is always coherent */
		main_log("%s; root stays uncached", msg);
	}
	if (!staged_tag[0]) {
		const char *at = subdir[0] ? SHARE_STAGING : root;
		rc = do_mount(tag, at, "9p", 0, options);
		if (rc < 0) {
			snprintf(msg, msglen, "mount 9p %s: %s", tag, strerror(-rc));
			return rc;
		}
	}
	if (subdir[0]) {
		rc = bind_subdir(subdir, root, msg, msglen);
		if (rc < 0) {
			if (!staged_tag[0])
				umount2(SHARE_STAGING, MNT_DETACH);
			return rc;
		}
		staged_tag[0] = 0; /* bind_subdir detached the staging mount */
	}
	return finish_root(root, subdir[0] != 0, readonly, msg, msglen);
}

int mounts_open_target(int rootfd, const char *target)
{
	char buf[4096];
	if (target[0] != '/')
		return -EINVAL;
	if (snprintf(buf, sizeof(buf), "%s", target) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	int fd = fcntl(rootfd, F_DUPFD_CLOEXEC, 0); /* every fd of init is close-on-exec */
	if (fd < 0)
		return -errno;
	char *save = NULL;
	for (char *comp = strtok_r(buf, "/", &save); comp; comp = strtok_r(NULL, "/", &save)) {
		if (strcmp(comp, ".") == 0)
			continue;
		if (strcmp(comp, "..") == 0) {
			close(fd);
			return -EINVAL;
		}
		int next = openat(fd, comp, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
		if (next < 0 && errno == ENOENT) {
			if (mkdirat(fd, comp, 0755) < 0 && errno != EEXIST) {
				int rc = -errno;
				close(fd);
				return rc;
			}
			next = openat(fd, comp, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
		}
		if (next < 0) {
			/* O_PATH|O_NOFOLLOW on a symlink with O_DIRECTORY gives ENOTDIR: say ELOOP. */
			int rc = -errno;
			struct stat st;
			if (fstatat(fd, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
				rc = -ELOOP;
			close(fd);
			return rc;
		}
		close(fd);
		fd = next;
	}
	return fd;
}

int mounts_mount_into(const char *root, const char *source, const char *fstype,
		      const char *target, const char *options, int readonly, char *msg,
		      unsigned msglen)
{
	char data[1024], fdpath[64];
	unsigned long flags = readonly ? MS_RDONLY : 0;
	const char *src;
	if (strcmp(fstype, "9p") == 0) {
		if (!source[0]) {
			snprintf(msg, msglen, "9p mount needs SOURCE (the share tag)");
			return -EINVAL;
		}
		src = source;
		snprintf(data, sizeof(data), "%s%s%s", MOUNTS_NINEP_OPTIONS, options[0] ? "," : "",
			 options);
	} else if (strcmp(fstype, "tmpfs") == 0) {
		src = "tmpfs";
		flags |= MS_NOSUID | MS_NODEV;
		snprintf(data, sizeof(data), "%s", options);
	} else {
		snprintf(msg, msglen, "unsupported FSTYPE %s (9p or tmpfs)", fstype);
		return -EINVAL;
	}
	int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0) {
		int rc = -errno;
		snprintf(msg, msglen, "open root: %s", strerror(errno));
		return rc;
	}
	int fd = mounts_open_target(rootfd, target);
	close(rootfd);
	if (fd < 0) {
		snprintf(msg, msglen, "mount target %s: %s", target, strerror(-fd));
		return fd;
	}
	/* Mounting on the fd's magic link mounts on the directory we walked to, not on whatever
	 * the path names by now. */
	snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", fd);
	int rc = 0;
	if (mount(src, fdpath, fstype, flags, data[0] ? data : NULL) < 0) {
		rc = -errno;
		snprintf(msg, msglen, "mount %s %s on %s: %s", fstype, source, target, strerror(errno));
	}
	close(fd);
	return rc;
}

/* An O_RDONLY directory fd of target inside root (walked, created if missing), or -errno. */
static int open_target_dir(const char *root, const char *target)
{
	int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return -errno;
	int at = mounts_open_target(rootfd, target);
	close(rootfd);
	if (at < 0)
		return at;
	int fd = openat(at, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = fd < 0 ? -errno : fd;
	close(at);
	return rc;
}

int mounts_copy_into(const char *root, const char *tag, const char *target, int readonly,
		     char *msg, unsigned msglen)
{
	if (!tag[0]) {
		snprintf(msg, msglen, "a copied MOUNT needs SOURCE (the share tag)");
		return -EINVAL;
	}
	int rc = do_mount(tag, MOUNTS_COPY_STAGING, "9p", MS_RDONLY, MOUNTS_NINEP_OPTIONS);
	if (rc < 0) {
		snprintf(msg, msglen, "mount 9p %s: %s", tag, strerror(-rc));
		return rc;
	}
	int mounted = 0, src = -1, dst = -1;
	rc = mounts_mount_into(root, "", "tmpfs", target, "mode=0755", 0, msg, msglen);
	mounted = rc == 0;
	if (rc == 0) {
		src = open(MOUNTS_COPY_STAGING, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		rc = src < 0 ? -errno : 0;
		if (rc < 0)
			snprintf(msg, msglen, "open %s: %s", MOUNTS_COPY_STAGING, strerror(-rc));
	}
	if (rc == 0) {
		/* Walked again: the new tmpfs is what the name leads to now. */
		dst = open_target_dir(root, target);
		rc = dst < 0 ? dst : 0;
		if (rc < 0)
			snprintf(msg, msglen, "open %s: %s", target, strerror(-rc));
	}
	if (rc == 0)
		rc = rootcopy_tree(src, dst, msg, msglen);
	if (rc == 0 && readonly) {
		char fdpath[64];
		snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", dst);
		if (mount(NULL, fdpath, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV,
			  NULL) < 0) {
			rc = -errno;
			snprintf(msg, msglen, "remount %s read-only: %s", target, strerror(errno));
		}
	}
	if (src >= 0)
		close(src);
	rc = unmount_staged(MOUNTS_COPY_STAGING, rc, msg, msglen);
	if (rc < 0 && mounted) {
		int at = dst >= 0 ? dst : open_target_dir(root, target);
		if (at >= 0) {
			char fdpath[64];
			snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", at);
			umount2(fdpath, MNT_DETACH);
			if (at != dst)
				close(at);
		}
	}
	if (dst >= 0)
		close(dst);
	return rc;
}

int mounts_pivot(const char *root, const char *pivot_dir, const char *const *detach,
		 const char **what)
{
	char inner[4200];
	*what = "make mounts private";
	/* Nothing done here may reach the namespace we came from (the init's). */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return -errno;
	/* pivot_root refuses a root without a parent mount, which the initramfs (rootfs) is. So a
	 * tmpfs holding the container root is moved over "/" and becomes the root to pivot from:
	 * the container root then sits on top of the rootfs, as the root of a system booted from
	 * a disk does, and ".." from it leads back to it. */
	*what = "mount the pivot tmpfs";
	if (snprintf(inner, sizeof(inner), "%s/root", pivot_dir) >= (int)sizeof(inner))
		return -ENAMETOOLONG;
	int rc = do_mount("pivot", pivot_dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700");
	if (rc < 0)
		return rc;
	*what = "move the root";
	if (mkdir(inner, 0700) < 0 || mount(root, inner, NULL, MS_MOVE, NULL) < 0)
		return -errno;
	/* The initramfs's own mounts leave this namespace while they can still be named. */
	*what = "detach the initramfs mounts";
	for (; detach && *detach; detach++)
		if (umount2(*detach, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
			return -errno;
	*what = "move the pivot tmpfs over /";
	if (chdir(pivot_dir) < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0)
		return -errno;
	/* runc's sequence: pivot with new root == put_old, then detach the old root stacked on
	 * top, reached through an fd of it (the kernel promises nothing about "." there). */
	*what = "pivot_root";
	int oldroot = open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (oldroot < 0)
		return -errno;
	if (chdir("/root") < 0 || syscall(SYS_pivot_root, ".", ".") < 0 || fchdir(oldroot) < 0) {
		rc = -errno;
		close(oldroot);
		return rc;
	}
	close(oldroot);
	*what = "detach the old root";
	if (umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
		return -errno;
	/* A procfs of the caller's PID namespace: it shows the container's processes only. */
	*what = "mount /proc";
	return do_mount("proc", "/proc", "proc", PROC_FLAGS, NULL);
}

/* Opens (O_PATH, not following a symlink even as the last component) the existing path rel
 * inside the directory dirfd; creates nothing. -EINVAL for an absolute path or "..", -ELOOP
 * for a symlink component, -ENOTDIR for a non-directory before the last one. */
static int open_existing(int dirfd, const char *rel)
{
	char buf[4096];
	if (rel[0] == '/' || !rel[0])
		return -EINVAL;
	if (snprintf(buf, sizeof(buf), "%s", rel) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	int fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	char *save = NULL;
	for (char *comp = strtok_r(buf, "/", &save); comp; comp = strtok_r(NULL, "/", &save)) {
		struct stat st;
		if (strcmp(comp, ".") == 0)
			continue;
		int rc = 0;
		if (strcmp(comp, "..") == 0)
			rc = -EINVAL;
		else if (fstat(fd, &st) < 0)
			rc = -errno;
		else if (!S_ISDIR(st.st_mode))
			rc = -ENOTDIR;
		int next = rc < 0 ? -1 : openat(fd, comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (rc == 0 && next < 0)
			rc = -errno;
		close(fd);
		if (rc < 0)
			return rc;
		if (fstat(next, &st) < 0)
			rc = -errno;
		else if (S_ISLNK(st.st_mode))
			rc = -ELOOP;
		if (rc < 0) {
			close(next);
			return rc;
		}
		fd = next;
	}
	return fd;
}

int mounts_open_source(int sharefd, const char *rel)
{
	return open_existing(sharefd, rel);
}

int mounts_open_target_file(int rootfd, const char *target)
{
	char parent[4096];
	const char *slash = strrchr(target, '/');
	if (target[0] != '/' || !slash || !slash[1] || strcmp(slash + 1, ".") == 0 ||
	    strcmp(slash + 1, "..") == 0)
		return -EINVAL;
	size_t plen = (size_t)(slash - target);
	if (plen >= sizeof(parent))
		return -ENAMETOOLONG;
	memcpy(parent, target, plen);
	parent[plen] = 0;
	int dirfd = mounts_open_target(rootfd, plen ? parent : "/");
	if (dirfd < 0)
		return dirfd;
	const char *name = slash + 1;
	int fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		int made = openat(dirfd, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC,
				  0644);
		if (made >= 0)
			close(made);
		fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	}
	int rc = fd < 0 ? -errno : 0;
	close(dirfd);
	if (rc < 0)
		return rc;
	struct stat st;
	if (fstat(fd, &st) < 0)
		rc = -errno;
	else if (S_ISLNK(st.st_mode))
		rc = -ELOOP;
	else if (S_ISDIR(st.st_mode))
		rc = -EISDIR;
	if (rc < 0) {
		close(fd);
		return rc;
	}
	return fd;
}

/* A copy of the mount at the O_PATH fd src (non-recursive), read-only on request, attached on
 * the O_PATH fd dst: no path is looked up again between the walk and the mount. */
static int bind_fds(int src, int dst, int readonly)
{
	int tree = (int)syscall(SYS_open_tree, src, "",
				BIND_OPEN_TREE_CLONE | O_CLOEXEC | AT_EMPTY_PATH);
	if (tree < 0)
		return -errno;
	int rc = 0;
	struct bind_mount_attr attr = {BIND_MOUNT_ATTR_RDONLY, 0, 0, 0};
	if (readonly &&
	    syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof(attr)) < 0)
		rc = -errno;
	if (rc == 0 && syscall(SYS_move_mount, tree, "", dst, "",
			       BIND_MOVE_MOUNT_F_EMPTY_PATH | BIND_MOVE_MOUNT_T_EMPTY_PATH) < 0)
		rc = -errno;
	close(tree);
	return rc;
}

int mounts_bind_into(const char *root, const char *share, const char *subdir,
		     const char *target, int readonly, char *msg, unsigned msglen)
{
	int sharefd = open(share, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sharefd < 0) {
		int rc = -errno;
		snprintf(msg, msglen, "open %s: %s", share, strerror(errno));
		return rc;
	}
	int src = mounts_open_source(sharefd, subdir);
	close(sharefd);
	if (src < 0) {
		snprintf(msg, msglen, "bind source %s: %s", subdir, strerror(-src));
		return src;
	}
	struct stat st;
	int rc = fstat(src, &st) < 0 ? -errno : 0;
	if (rc == 0 && !S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
		rc = -EINVAL; /* a device, socket or fifo is not bound */
	if (rc < 0) {
		snprintf(msg, msglen, "bind source %s: %s", subdir,
			 rc == -EINVAL ? "neither a directory nor a regular file" : strerror(-rc));
		close(src);
		return rc;
	}
	int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	int dst = rootfd < 0 ? -errno
			     : S_ISDIR(st.st_mode) ? mounts_open_target(rootfd, target)
						   : mounts_open_target_file(rootfd, target);
	if (rootfd >= 0)
		close(rootfd);
	if (dst < 0) {
		snprintf(msg, msglen, "bind target %s: %s", target, strerror(-dst));
		close(src);
		return dst;
	}
	rc = bind_fds(src, dst, readonly);
	if (rc < 0)
		snprintf(msg, msglen, "bind %s on %s: %s", subdir, target, strerror(-rc));
	close(src);
	close(dst);
	return rc;
}
