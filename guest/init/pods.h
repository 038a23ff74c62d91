/* Further containers in one VM (a pod): where each one's root is, and which are set up. */
#ifndef STEELCUP_PODS_H
#define STEELCUP_PODS_H

#include <stddef.h>
#include <stdint.h>

/* CONTAINER numbers: 0 is the VM's first container (INIT_ROOT), 1..PODS_MAX-1 pod members. */
#define PODS_MAX 64
#define PODS_ROOT_DIR "/run/steelcup/ct"
#define PODS_SHARE_DIR "/run/steelcup/shares"

/* Writes the root directory of container n (INIT_ROOT for 0); 0, or -EINVAL for n out of range,
 * -ENAMETOOLONG if it does not fit. */
int pods_root_path(uint32_t n, char *out, size_t outlen);
/* Writes where the 9p share tag is kept mounted for members' roots; -EINVAL for a tag that is
 * empty, ".", "..", contains '/' or is 256 bytes or more. */
int pods_share_path(const char *tag, char *out, size_t outlen);
/* Mounts the 9p share tag at its pods_share_path (once: later calls find it mounted) and
 * writes that path; 0, or -errno with msg (-EINVAL: a bad tag). MOUNT's binds come from it. */
int pods_share_mount(const char *tag, char *out, size_t outlen, char *msg, unsigned msglen);
/* Whether member n (1..PODS_MAX-1) has its root set up. */
int pods_ready(uint32_t n);
/* SETUP_ROOT of member n: the share tag mounted once (kept for later members), the directory
 * subdir inside it bound at the member's root with its API mounts, read-only on request.
 * 0, or -errno with msg (EBUSY: n is set up already). */
int pods_setup(uint32_t n, const char *tag, const char *subdir, int readonly, char *msg,
	       unsigned msglen);
/* Member n's PID 1 is gone: its root is detached (the 9p files it held are let go) and n may be
 * set up again. No-op for 0 or a member that is not set up. */
void pods_release(uint32_t n);

#endif
