/* A UDP service for tests/vm/test_udp_wake.py (busybox's nc has no -u): listens on
 * 0.0.0.0:PORT, logs each datagram as "got PAYLOAD from ADDR" and answers "echo:PAYLOAD". */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    if (fd < 0 || bind(fd, (struct sockaddr *)&me, sizeof(me)) != 0) {
        perror("udp_echo: bind");
        return 1;
    }
    printf("listening on %s\n", argv[1]);
    fflush(stdout);
    for (;;) {
        char buf[2048], out[2100];
        struct sockaddr_in peer;
        socklen_t len = sizeof(peer);
        ssize_t n = recvfrom(fd, buf, sizeof(buf) - 1, 0, (struct sockaddr *)&peer, &len);
        if (n < 0)
            continue;
        buf[n] = '\0';
        printf("got %s from %s\n", buf, inet_ntoa(peer.sin_addr));
        fflush(stdout);
        int m = snprintf(out, sizeof(out), "echo:%s", buf);
        sendto(fd, out, (size_t)m, 0, (struct sockaddr *)&peer, len);
    }
}
