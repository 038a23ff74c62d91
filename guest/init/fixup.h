#ifndef STEELCUP_FIXUP_H
#define STEELCUP_FIXUP_H
/* FIXUP (op 19): per-VM fix-ups after a template clone restores or a pooled VM is handed out:
 * set the clock, reseed the kernel RNG with host entropy, online/offline vCPUs. */
#include "proto.h"

enum {
	FIXUP_OP = 19,
	FIXUP_TAG_REALTIME_S = 34,
	FIXUP_TAG_REALTIME_NS = 35,
	FIXUP_TAG_ENTROPY = 36,
	FIXUP_TAG_CPUS = 37,
};

#define FIXUP_MAX_ENTROPY 512 /* bytes (1024 hex digits) */

void fixup_handle(const struct proto_frame *f);
/* Hex digits to bytes; -1 on an odd length, a non-hex digit or more than cap bytes. */
int fixup_unhex(const uint8_t *hex, uint32_t len, uint8_t *out, size_t cap);

#endif
