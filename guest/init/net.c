/* Configures the guest's interfaces with ioctls: no netlink, no userspace tools in the initrd. */
#define _GNU_SOURCE
#include "net.h"

#include "init.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

int net_parse_mac(const char *s, uint8_t out[6])
{
	for (int i = 0; i < 6; i++) {
		unsigned v = 0;
		for (int j = 0; j < 2; j++) {
			char c = *s++;
			unsigned d;
			if (c >= '0' && c <= '9')
				d = (unsigned)(c - '0');
			else if (c >= 'a' && c <= 'f')
				d = (unsigned)(c - 'a' + 10);
			else if (c >= 'A' && c <= 'F')
				d = (unsigned)(c - 'A' + 10);
			else
				return -EINVAL;
			v = v * 16 + d;
		}
		out[i] = (uint8_t)v;
		if (i < 5 && *s++ != ':')
			return -EINVAL;
	}
	return *s == 0 ? 0 : -EINVAL;
}

/* The name of the interface whose hardware address is mac; 0 or -ENODEV. */
static int find_by_mac(int sock, const uint8_t mac[6], char name[IFNAMSIZ])
{
	struct if_nameindex *list = if_nameindex();
	if (!list)
		return -errno;
	int rc = -ENODEV;
	for (struct if_nameindex *i = list; i->if_index != 0; i++) {
		struct ifreq ifr;
		memset(&ifr, 0, sizeof(ifr));
		snprintf(ifr.ifr_name, IFNAMSIZ, "%s", i->if_name);
		if (ioctl(sock, SIOCGIFHWADDR, &ifr) < 0)
			continue;
		if (memcmp(ifr.ifr_hwaddr.sa_data, mac, 6) == 0) {
			snprintf(name, IFNAMSIZ, "%s", i->if_name);
			rc = 0;
			break;
		}
	}
	if_freenameindex(list);
	return rc;
}

/* Writes `value` to the /proc/sys file `path`. */
static int write_sysctl(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t len = strlen(value);
	int rc = write(fd, value, len) == (ssize_t)len ? 0 : -errno;
	close(fd);
	return rc;
}

/* The NIC gets no IPv6, as dockerd does for an endpoint on an IPv4-only network: containers
 * have none (the host's guard drops every IPv6 frame a guest sends), and bringing the NIC up
 * with IPv6 on costs a link-local address, its duplicate detection, MLD reports and router
 * solicitations, and keeps their timers waking the idle VM. Sockets bound to :: still work.
 * A kernel without IPv6 has no such file: nothing to do. */
static int no_ipv6(const char *name)
{
	char path[64 + IFNAMSIZ];
	snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", name);
	int rc = write_sysctl(path, "1");
	return rc == -ENOENT ? 0 : rc;
}

static int set_up(int sock, const char *name)
{
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0)
		return -errno;
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0)
		return -errno;
	return 0;
}

static int set_addr(int sock, const char *name, unsigned long req, struct in_addr a)
{
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr = a};
	memcpy(&ifr.ifr_addr, &sin, sizeof(sin));
	return ioctl(sock, req, &ifr) < 0 ? -errno : 0;
}

/* Makes the kernel send a gratuitous ARP for the up NIC's addresses: setting its hardware
 * address (to the one it has) is a NETDEV_CHANGEADDR, which arp_notify (net_boot) answers with
 * one. Only once the NIC is up with its address, because the announcement is what releases
 * the packets a host queued for the address while it was unresolved, and the guest must be
 * able to answer them: bringing up a NIC that already has an address announces it from the
 * NETDEV_UP notifier before the routing code, later in the same notifier chain, adds the
 * address's prefix route, and a SYN that arrives in between gets a reset that finds no route
 * back and is dropped without a trace (the client's TCP retries a second later; see
 * docs/benchmarks.md, "A fourth stall"). Setting the address on an up NIC adds its routes at
 * once. 0 or -errno. */
static int announce(int sock, const char *name)
{
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	if (ioctl(sock, SIOCGIFHWADDR, &ifr) < 0)
		return -errno;
	return ioctl(sock, SIOCSIFHWADDR, &ifr) < 0 ? -errno : 0;
}

static int configure(int sock, const struct net_req *r, char *msg, unsigned msglen)
{
	char name[IFNAMSIZ] = "";
	struct in_addr addr = {0}, gw = {0};
	int rc;
	if (r->address[0] && (inet_pton(AF_INET, r->address, &addr) != 1 || r->prefix > 32)) {
		snprintf(msg, msglen, "bad IPv4 address/prefix %s/%u", r->address, r->prefix);
		return -EINVAL;
	}
	if (r->gateway[0] && inet_pton(AF_INET, r->gateway, &gw) != 1) {
		snprintf(msg, msglen, "bad IPv4 gateway %s", r->gateway);
		return -EINVAL;
	}
	rc = set_up(sock, "lo");
	if (rc < 0) {
		snprintf(msg, msglen, "lo up: %s", strerror(-rc));
		return rc;
	}
	if (r->mac[0]) {
		uint8_t mac[6];
		if (net_parse_mac(r->mac, mac) < 0) {
			snprintf(msg, msglen, "bad MAC %s", r->mac);
			return -EINVAL;
		}
		rc = find_by_mac(sock, mac, name);
		if (rc < 0 && r->ifname[0] && if_nametoindex(r->ifname) != 0) {
			/* A template clone keeps the template's MAC: give the named NIC this one. */
			struct ifreq hw;
			memset(&hw, 0, sizeof(hw));
			snprintf(hw.ifr_name, IFNAMSIZ, "%s", r->ifname);
			hw.ifr_hwaddr.sa_family = 1; /* ARPHRD_ETHER */
			memcpy(hw.ifr_hwaddr.sa_data, mac, 6);
			if (ioctl(sock, SIOCSIFHWADDR, &hw) < 0) {
				rc = -errno;
				snprintf(msg, msglen, "set MAC %s on %s: %s", r->mac, r->ifname,
					 strerror(errno));
				return rc;
			}
			snprintf(name, sizeof(name), "%s", r->ifname);
			rc = 0;
		}
		if (rc < 0) {
			snprintf(msg, msglen, "no interface with MAC %s", r->mac);
			return rc;
		}
	} else if (r->ifname[0]) {
		snprintf(name, sizeof(name), "%s", r->ifname);
		if (if_nametoindex(name) == 0) {
			snprintf(msg, msglen, "no interface %s", name);
			return -ENODEV;
		}
	} else {
		return 0; /* loopback only (network mode none) */
	}
	struct ifreq ifr;
	if (r->mac[0] && r->ifname[0] && strcmp(name, r->ifname) != 0) {
		/* A rename needs the link down; a fresh NIC is. */
		memset(&ifr, 0, sizeof(ifr));
		snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
		snprintf(ifr.ifr_newname, IFNAMSIZ, "%s", r->ifname);
		if (ioctl(sock, SIOCSIFNAME, &ifr) < 0) {
			rc = -errno;
			snprintf(msg, msglen, "rename %s to %s: %s", name, r->ifname, strerror(errno));
			return rc;
		}
		snprintf(name, sizeof(name), "%s", r->ifname);
	}
	if (r->mtu) {
		memset(&ifr, 0, sizeof(ifr));
		snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
		ifr.ifr_mtu = (int)r->mtu;
		if (ioctl(sock, SIOCSIFMTU, &ifr) < 0) {
			rc = -errno;
			snprintf(msg, msglen, "mtu %u on %s: %s", r->mtu, name, strerror(errno));
			return rc;
		}
	}
	rc = no_ipv6(name);
	if (rc < 0) {
		snprintf(msg, msglen, "disable IPv6 on %s: %s", name, strerror(-rc));
		return rc;
	}
	/* Up before the address, and the announcement after it: see announce(). */
	rc = set_up(sock, name);
	if (rc < 0) {
		snprintf(msg, msglen, "%s up: %s", name, strerror(-rc));
		return rc;
	}
	if (r->address[0]) {
		struct in_addr mask = {.s_addr = htonl(r->prefix ? ~0u << (32 - r->prefix) : 0)};
		rc = set_addr(sock, name, SIOCSIFADDR, addr);
		if (rc == 0)
			rc = set_addr(sock, name, SIOCSIFNETMASK, mask);
		if (rc < 0) {
			snprintf(msg, msglen, "address %s/%u on %s: %s", r->address, r->prefix, name,
				 strerror(-rc));
			return rc;
		}
		rc = announce(sock, name);
		if (rc < 0) {
			snprintf(msg, msglen, "announce %s on %s: %s", r->address, name, strerror(-rc));
			return rc;
		}
	}
	if (r->gateway[0]) {
		struct rtentry rt;
		memset(&rt, 0, sizeof(rt));
		struct sockaddr_in any = {.sin_family = AF_INET};
		struct sockaddr_in via = {.sin_family = AF_INET, .sin_addr = gw};
		memcpy(&rt.rt_dst, &any, sizeof(any));
		memcpy(&rt.rt_genmask, &any, sizeof(any));
		memcpy(&rt.rt_gateway, &via, sizeof(via));
		rt.rt_flags = RTF_UP | RTF_GATEWAY;
		rt.rt_dev = name;
		if (ioctl(sock, SIOCADDRT, &rt) < 0 && errno != EEXIST) {
			rc = -errno;
			snprintf(msg, msglen, "default route via %s: %s", r->gateway, strerror(errno));
			return rc;
		}
	}
	return 0;
}

/* With arp_notify the kernel sends a gratuitous ARP for a NIC's addresses when its hardware
 * address is set (NET_CONFIG's announce()) or it comes up with one: a host or neighbour that
 * tried to reach the address before this VM had it (a client polling a container that is still
 * starting) holds an unresolved neighbour entry with its packets queued, which otherwise waits
 * for its next ARP probe, up to a second later. */
#define ARP_NOTIFY "/proc/sys/net/ipv4/conf/all/arp_notify"

int net_boot(void)
{
	int rc = write_sysctl(ARP_NOTIFY, "1");
	if (rc < 0)
		return rc;
	int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return -errno;
	rc = set_up(sock, "lo");
	close(sock);
	return rc;
}

/* Undoes a rehearsal's configure() on the NIC `name`: its address goes (SIOCSIFADDR with
 * 0.0.0.0 deletes it) and it goes down, which flushes the routes and neighbours through it. */
static int unrehearse(int sock, const char *name, char *msg, unsigned msglen)
{
	struct in_addr none = {0};
	int rc = set_addr(sock, name, SIOCSIFADDR, none);
	if (rc == -EADDRNOTAVAIL)
		rc = 0; /* it had none */
	if (rc < 0) {
		snprintf(msg, msglen, "rehearsal: remove the address of %s: %s", name, strerror(-rc));
		return rc;
	}
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0 ||
	    (ifr.ifr_flags &= ~IFF_UP, ioctl(sock, SIOCSIFFLAGS, &ifr) < 0)) {
		rc = -errno;
		snprintf(msg, msglen, "rehearsal: %s down: %s", name, strerror(errno));
		return rc;
	}
	return 0;
}

int net_config(const struct net_req *r, char *msg, unsigned msglen)
{
	int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0) {
		int rc = -errno;
		snprintf(msg, msglen, "socket: %s", strerror(errno));
		return rc;
	}
	int rc;
	if (r->rehearse && !r->ifname[0]) {
		snprintf(msg, msglen, "a rehearsal names its NIC (IFNAME)");
		rc = -EINVAL;
	} else {
		rc = configure(sock, r, msg, msglen);
		if (rc == 0 && r->rehearse)
			rc = unrehearse(sock, r->ifname, msg, msglen);
	}
	close(sock);
	return rc;
}
