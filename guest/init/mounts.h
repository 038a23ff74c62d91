/* Filesystems of the initramfs and of the container root. */
#ifndef STEELCUP_MOUNTS_H
#define STEELCUP_MOUNTS_H

/* Mounts /proc, /sys, /dev, /dev/pts, /run in the initramfs; returns 0 or -errno. */
int mounts_initial(void);
/* Mounts the 9p share tag (or, with a non-empty subdir, the directory subdir inside it) at
 * INIT_ROOT with its API filesystems (/proc only as a directory: each process tree mounts its
 * own, mounts_pivot); returns 0 or -errno. With staged (CACHE 3 only, else -EINVAL) a block
 * root's lower is the erofs mounts_keep_lower kept (-EINVAL if none); without, a kept one is
 * unmounted first (the disk may have another file behind it now). */
int mounts_setup_root(const char *tag, const char *subdir, int readonly, unsigned cache,
		      int staged, char *msg, unsigned msglen);
/* How every 9p share is mounted. `cache=mmap`: reads, writes and lookups go to the host (what
 * the host writes is seen at once, an fsync reaches the host file), and only the pages a
 * process maps are cached in the guest, so shared writable mappings work (SQLite's WAL index,
 * LMDB); without it mmap(MAP_SHARED, PROT_WRITE) of a file on the share is EINVAL. */
#define MOUNTS_NINEP_BASE "trans=virtio,version=9p2000.L,msize=262144"
#define MOUNTS_NINEP_OPTIONS MOUNTS_NINEP_BASE ",cache=mmap"
/* SETUP_ROOT's CACHE: how the guest caches the root's 9p share. */
#define MOUNTS_CACHE_NONE 0u  /* every access goes to the host (coherent with host writes) */
#define MOUNTS_CACHE_LOOSE 1u /* page, dentry and attribute caches; host writes unseen */
#define MOUNTS_CACHE_RAM 2u   /* copied into a tmpfs, share unmounted (checkpointable) */
#define MOUNTS_CACHE_BLOCK 3u /* erofs on the root disk under the share's upper/ (overlay) */
/* CACHE 3's disk (the VM's first virtio-blk disk) and where its erofs is mounted (detached once
 * the overlay holds it). */
#define MOUNTS_ROOT_DISK "/dev/vda"
#define MOUNTS_BLOCK_LOWER "/run/steelcup/lower"
/* STAGE_LOWER: the root disk's erofs mounted read-only at MOUNTS_BLOCK_LOWER (its buffers
 * dropped first, as for a block root), or the one an earlier call mounted, and kept there for a
 * SETUP_ROOT with STAGED 1. Returns an O_PATH fd of its root directory, or -errno with msg
 * (then nothing is mounted there, nor kept). */
int mounts_keep_lower(char *msg, unsigned msglen);
/* The 9p mount options of a container root with that CACHE, or NULL for an unknown value or
 * CACHE 2 (its root is a tmpfs, not a 9p mount). */
const char *mounts_root_options(unsigned cache);
/* SYNC_ROOT: syncfs of the container root (the guest's cached writes reach the host), then,
 * with drop, the guest drops its clean page, dentry and inode caches (so files the host wrote
 * since are read afresh). Returns 0 or -errno with msg. */
int mounts_sync_root(int drop, char *msg, unsigned msglen);
/* A pod member's root: binds the directory subdir (walked as mounts_open_target does) of the share
 * mounted at share onto root, with the root's API filesystems; read-only on request. Returns 0,
 * or -errno with msg (nothing is left mounted at root). */
int mounts_member_root(const char *share, const char *subdir, const char *root, int readonly,
		       char *msg, unsigned msglen);
/* STAGE_ROOT: mounts the 9p share tag at the staging point, cached as `cache` says (NONE or
 * LOOSE; a SETUP_ROOT asking for another mode mounts it afresh), kept for a later SETUP_ROOT
 * with a SUBDIR of the same tag, and rehearses the root's API mounts in a scratch dir, so that a
 * pooled VM has run those code paths before it is handed out. Returns 0 or -errno with msg. */
int mounts_stage(const char *tag, unsigned cache, char *msg, unsigned msglen);
/* The path a staged share is mounted at (visible to processes started before SETUP_ROOT). */
#define MOUNTS_SHARE_STAGING "/run/share"
/* mkdir -p; returns 0 or -errno. */
int mounts_mkdir_p(const char *path, unsigned mode);

/* Opens (O_PATH) the directory `target` inside the directory rootfd, creating missing
 * components (mode 0755) without following symlinks: a component that is a symlink, "..", or not
 * a directory fails (ELOOP / EINVAL / ENOTDIR). Returns the fd or -errno. */
int mounts_open_target(int rootfd, const char *target);
/* Mounts a 9p share (fstype "9p", source = tag) or a tmpfs (source ignored) on target inside
 * root; options are extra mount data (tmpfs: size=, mode=). Returns 0 or -errno with msg. */
int mounts_mount_into(const char *root, const char *source, const char *fstype,
		      const char *target, const char *options, int readonly, char *msg,
		      unsigned msglen);

/* MOUNT with CACHE 2: the 9p share `tag` is mounted at a staging point of its own, copied (as a
 * RAM root is) into a tmpfs mounted on target inside root (walked as mounts_open_target does),
 * which is made read-only with `readonly`, and unmounted, not detached: the VM keeps no 9p
 * mount of it (a checkpointable container's secrets). Nothing stays mounted on failure.
 * Returns 0 or -errno with msg. */
int mounts_copy_into(const char *root, const char *tag, const char *target, int readonly,
		     char *msg, unsigned msglen);
#define MOUNTS_COPY_STAGING "/run/steelcup/copy"

/* Opens (O_PATH) the existing path rel (relative, "" refused) inside the directory sharefd
 * without following any symlink, the last component's included (-ELOOP), without ".."
 * (-EINVAL) and without creating anything. Returns the fd or -errno. */
int mounts_open_source(int sharefd, const char *rel);
/* Opens (O_PATH) the file `target` inside the directory rootfd as a mount point for a file:
 * its parent is walked as mounts_open_target does (missing directories created), the file is
 * created empty (0644) if missing; a symlink is -ELOOP, a directory -EISDIR. */
int mounts_open_target_file(int rootfd, const char *target);
/* MOUNT with FSTYPE bind: binds the directory or regular file subdir (mounts_open_source) of
 * the share mounted at share onto target inside root (a directory target as
 * mounts_open_target walks it, a file target as mounts_open_target_file), read-only on
 * request. Returns 0 or -errno with msg. */
int mounts_bind_into(const char *root, const char *share, const char *subdir,
		     const char *target, int readonly, char *msg, unsigned msglen);

/* Run by a container's first process in a mount namespace of its own (and a PID namespace whose
 * PID 1 it is): makes the mount `root` the root of that namespace with pivot_root, through the
 * empty directory pivot_dir outside it (created if missing), detaches the mounts listed in
 * `detach` (NULL-terminated; may be NULL) and every other way back to the old root, then mounts
 * a procfs of the caller's PID namespace at /proc. The cwd is then "/". Returns 0, or -errno
 * with *what naming the step that failed. */
int mounts_pivot(const char *root, const char *pivot_dir, const char *const *detach,
		 const char **what);

#endif
