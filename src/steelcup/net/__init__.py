"""Container networks: IPAM, links, firewall rules, DNS, port proxies."""
