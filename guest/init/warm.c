/* A pooled VM's warm-up of the guest kernel's network paths (`init --warm`, see warm.h). */
#define _GNU_SOURCE
#include "warm.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define WARM_WAIT_MS 2000
#define WARM_SEND_MAX (32 * 1024) /* under what the client's receive buffer takes unread */

static const char request[] = "GET / HTTP/1.1\r\nHost: warm\r\n\r\n";

/* Wait until `fd` is readable, as a server's event loop does (epoll), at most WARM_WAIT_MS. */
static int wait_readable(int ep, int fd)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		return -errno;
	int n;
	do
		n = epoll_wait(ep, &ev, 1, WARM_WAIT_MS);
	while (n < 0 && errno == EINTR);
	int err = n < 0 ? -errno : n == 0 ? -ETIMEDOUT : 0;
	epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
	return err;
}

/* Read exactly `len` bytes from `fd`, keeping the first `keep` of them in `buf`. */
static int read_exactly(int fd, char *buf, size_t keep, size_t len)
{
	char sink[16384];
	size_t got = 0;
	while (got < len) {
		char *to = got < keep ? buf + got : sink;
		size_t room = got < keep ? keep - got : sizeof(sink);
		size_t want = len - got < room ? len - got : room;
		ssize_t n = read(fd, to, want);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EPIPE;
		got += (size_t)n;
	}
	return 0;
}

/* The exchange itself on open sockets and an epoll instance; `*step` names what failed. */
static int exchange(int listener, int client, int ep, int file, size_t file_len,
		    const char **step)
{
	struct sockaddr_in addr;
	socklen_t alen = sizeof(addr);
	*step = "getsockname";
	if (getsockname(listener, (struct sockaddr *)&addr, &alen) < 0)
		return -errno;
	*step = "connect";
	if (connect(client, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		return -errno;
	*step = "epoll_wait on the listener";
	int rc = wait_readable(ep, listener);
	if (rc < 0)
		return rc;
	*step = "accept4";
	int conn = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
	if (conn < 0)
		return -errno;
	*step = "write (request)";
	rc = write(client, request, sizeof(request) - 1) == (ssize_t)(sizeof(request) - 1)
		     ? 0
		     : -EIO;
	char got[sizeof(request)];
	if (rc == 0) {
		*step = "epoll_wait on the connection";
		rc = wait_readable(ep, conn);
	}
	if (rc == 0) {
		*step = "read (request)";
		rc = read_exactly(conn, got, sizeof(request) - 1, sizeof(request) - 1);
	}
	if (rc == 0 && memcmp(got, request, sizeof(request) - 1) != 0) {
		*step = "compare (request)";
		rc = -EPROTO;
	}
	size_t sent = 0;
	while (rc == 0 && sent < file_len) {
		*step = "sendfile";
		ssize_t n = sendfile(conn, file, NULL, file_len - sent);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			rc = n < 0 ? -errno : -EPIPE;
		else
			sent += (size_t)n;
	}
	if (rc == 0) {
		*step = "read (response)";
		rc = read_exactly(client, got, 0, file_len);
	}
	close(conn);
	return rc;
}

int warm_network(const char *file, const char **step)
{
	*step = "open";
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	*step = "fstat";
	if (fstat(fd, &st) < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	size_t len = st.st_size < WARM_SEND_MAX ? (size_t)st.st_size : WARM_SEND_MAX;
	*step = "socket";
	int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	int rc = listener < 0 || client < 0 || ep < 0 ? -errno : 0;
	struct sockaddr_in addr = {.sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (rc == 0) {
		*step = "bind to 127.0.0.1";
		rc = bind(listener, (struct sockaddr *)&addr, sizeof(addr)) < 0 ? -errno : 0;
	}
	if (rc == 0) {
		*step = "listen";
		rc = listen(listener, 1) < 0 ? -errno : 0;
	}
	if (rc == 0)
		rc = exchange(listener, client, ep, fd, len, step);
	if (ep >= 0)
		close(ep);
	if (client >= 0)
		close(client);
	if (listener >= 0)
		close(listener);
	close(fd);
	return rc;
}
