/* STAGE_LOWER's reads: files of an image read once before a container of it starts, so their
 * pages, dentries and inodes are in the guest's caches when the container looks for them. */
#ifndef STEELCUP_LOWER_H
#define STEELCUP_LOWER_H

#include <stddef.h>
#include <stdint.h>

/* What a STAGE_LOWER without BYTES (or with 0) reads at most. */
#define LOWER_DEFAULT_CAP (256u << 20)
/* The longest PATH read; longer ones are skipped. */
#define LOWER_MAX_PATH 4095u

/* What lower_read_files did. */
struct lower_read {
	uint64_t bytes;   /* read in all, at most the cap */
	unsigned files;   /* regular files read to their end, or to the cap */
	unsigned skipped; /* paths not read (see lower_read_files) */
};

/* Reads, in order, each of the regular files paths[0..npaths) inside the directory dirfd to its
 * end, until cap bytes in all have been read: the file being read then stops there and the
 * paths after it are neither opened nor counted. A path is relative to dirfd (leading slashes
 * are skipped) and is resolved beneath it without following any symlink, "..", or crossing
 * into another mount. A path that is empty, longer than LOWER_MAX_PATH, has a ".." component,
 * cannot be resolved so or read, or is not a regular file is skipped and counted in
 * got->skipped; none of that is an error. */
void lower_read_files(int dirfd, const char *const *paths, size_t npaths, uint64_t cap,
		      struct lower_read *got);

#endif
