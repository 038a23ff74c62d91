/* A pooled VM's warm-up of the guest kernel's network paths.
 *
 * Under TCG every clone starts with an empty translation cache, so the first time a container's
 * server accepts a connection and answers it, the guest kernel's socket, TCP, epoll and
 * sendfile paths are translated on its clock. `init --warm` (run once by the warm cache in the
 * VM's own namespaces, before any container: docs/architecture.md) makes one such exchange
 * over the loopback: a listener on 127.0.0.1, a client that connects and sends a request, the
 * listener's side accepting it (epoll), reading it and answering with `file` (the program's own
 * binary, on the 9p share: sendfile from a 9p page cache, its first 32 KiB), the client reading
 * the answer.
 */
#ifndef STEELCUP_WARM_H
#define STEELCUP_WARM_H

/* 0, or -errno with `*step` naming the call that failed. */
int warm_network(const char *file, const char **step);

#endif
