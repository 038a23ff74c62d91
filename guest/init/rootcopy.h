/* SETUP_ROOT's CACHE 2 (ram): a container root copied from its 9p share into a tmpfs, so that
 * the share can be unmounted and the VM migrated (checkpointed). */
#ifndef STEELCUP_ROOTCOPY_H
#define STEELCUP_ROOTCOPY_H

/* Copies the tree of the directory srcfd into the (empty) directory dstfd: directories,
 * regular files (hard links kept as links), symlinks, device nodes, fifos and sockets, with
 * owner, mode and times; the top directory's own owner, mode and times too. Symlinks are never
 * followed, and nothing is copied across into other filesystems mounted below srcfd. Extended
 * attributes are not copied. Returns 0, or -errno with msg naming the path that failed. */
int rootcopy_tree(int srcfd, int dstfd, char *msg, unsigned msglen);

/* The deepest directory nesting copied (each level holds two fds open): deeper is ELOOP. */
#define ROOTCOPY_MAX_DEPTH 128

#endif
