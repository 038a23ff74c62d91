/* Network interfaces of the guest: loopback and the virtio-net NICs the host configures. */
#ifndef STEELCUP_NET_H
#define STEELCUP_NET_H

#include <net/if.h>
#include <stdint.h>

struct net_req {
	char mac[32];            /* select the NIC by MAC ("52:54:00:..."); empty: by ifname */
	char ifname[IFNAMSIZ];   /* with mac: rename the NIC to this; without: select it */
	char address[64];        /* IPv4 dotted quad; empty: no address */
	uint32_t prefix;         /* 0..32 */
	char gateway[64];        /* IPv4 default route via this; empty: none */
	uint32_t mtu;            /* 0: leave as is */
	uint32_t rehearse;       /* nonzero: configure, then take the NIC down without address */
};

/* Brings lo up, then finds, renames and brings up the NIC, gives it its address, announces it
 * (gratuitous ARP) and adds the default route. With `rehearse` the NIC is then taken down
 * again without its address (and so without its routes): a pooled VM runs the whole path
 * once, so that under TCG the container's NET_CONFIG finds it translated. Returns 0 or -errno
 * with a message. */
int net_config(const struct net_req *r, char *msg, unsigned msglen);
/* At boot (a template's clones then never pay for it): turns on gratuitous ARP when a NIC's
 * hardware address is set or it comes up (arp_notify) and brings lo up; 0 or -errno. */
int net_boot(void);

/* Parses "aa:bb:cc:dd:ee:ff" (case-insensitive); returns 0 or -EINVAL. Pure. */
int net_parse_mac(const char *s, uint8_t out[6]);

#endif
