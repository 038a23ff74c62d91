/* Filesystems of the initramfs and of the container root. */
#ifndef STEELCUP_MOUNTS_H
#define STEELCUP_MOUNTS_H

/* Mounts /proc, /sys, /dev, /dev/pts, /run in the initramfs; returns 0 or -errno. */
int mounts_initial(void);
/* Mounts the 9p share tag at INIT_ROOT with its API filesystems; returns 0 or -errno. */
int mounts_setup_root(const char *tag, int readonly, char *msg, unsigned msglen);
/* mkdir -p; returns 0 or -errno. */
int mounts_mkdir_p(const char *path, unsigned mode);

#endif
