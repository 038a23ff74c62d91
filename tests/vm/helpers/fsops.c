/* File operations busybox has no tool for, for tests/vm/test_rootfs_cache.py:
 *   mmap PATH TEXT       writes TEXT into PATH (created, 4096 bytes) through a shared writable
 *                        mapping, msync, and prints "mapped"
 *   exchange A B         renameat2(A, B, RENAME_EXCHANGE), prints "exchanged"
 *   noreplace A B        renameat2(A, B, RENAME_NOREPLACE), prints "renamed"
 *   dirsync DIR          opens DIR and fsyncs it, prints "synced"
 *   listgone DIR         opens DIR, removes it (rmdir), then lists the open directory: prints
 *                        "listed N" (entries) or "list: strerror"
 * A failure prints "STEP: strerror" and exits 1. musl's headers may lack renameat2: it is
 * called through syscall(2). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <errno.h>

#define EXCHANGE (1 << 1)
#define NOREPLACE (1 << 0)

static int fail(const char *step)
{
    printf("%s: %s\n", step, strerror(errno));
    return 1;
}

static int mapped_write(const char *path, const char *text)
{
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0)
        return fail("open");
    if (ftruncate(fd, 4096) < 0)
        return fail("ftruncate");
    char *map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED)
        return fail("mmap");
    memcpy(map, text, strlen(text));
    if (msync(map, 4096, MS_SYNC) < 0)
        return fail("msync");
    munmap(map, 4096);
    close(fd);
    puts("mapped");
    return 0;
}

static int rename2(const char *a, const char *b, unsigned flags, const char *done)
{
    if (syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, flags) < 0)
        return fail("renameat2");
    puts(done);
    return 0;
}

static int dir_sync(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return fail("open");
    if (fsync(fd) < 0)
        return fail("fsync");
    close(fd);
    puts("synced");
    return 0;
}

static int list_gone(const char *path)
{
    char buf[4096];
    long n, entries = 0;
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return fail("open");
    if (rmdir(path) < 0)
        return fail("rmdir");
    while ((n = syscall(SYS_getdents64, fd, buf, sizeof(buf))) > 0) {
        for (long at = 0; at < n; entries++)
            at += *(unsigned short *)(buf + at + 16); /* d_reclen, after d_ino and d_off */
    }
    if (n < 0)
        return fail("list");
    printf("listed %ld\n", entries);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "dirsync") == 0)
        return dir_sync(argv[2]);
    if (argc == 3 && strcmp(argv[1], "listgone") == 0)
        return list_gone(argv[2]);
    if (argc == 4 && strcmp(argv[1], "mmap") == 0)
        return mapped_write(argv[2], argv[3]);
    if (argc == 4 && strcmp(argv[1], "exchange") == 0)
        return rename2(argv[2], argv[3], EXCHANGE, "exchanged");
    if (argc == 4 && strcmp(argv[1], "noreplace") == 0)
        return rename2(argv[2], argv[3], NOREPLACE, "renamed");
    fprintf(stderr, "usage: fsops mmap PATH TEXT | exchange A B | noreplace A B | dirsync DIR"
                    " | listgone DIR\n");
    return 2;
}
