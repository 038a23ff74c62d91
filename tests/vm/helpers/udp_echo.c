/* A UDP service for tests/vm/test_udp_wake.py and test_service_udp_wake.py (busybox's nc
 * has no -u): listens on 0.0.0.0:PORT, logs each datagram as "got PAYLOAD from ADDR" and
 * answers "echo:PAYLOAD". `send HOST PORT PAYLOAD TIMEOUT_S` is its client: sends PAYLOAD to
 * HOST:PORT, prints the first reply and exits 0, or exits 1 after TIMEOUT_S without one. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

static int send_one(const char *host, const char *port, const char *payload,
                    const char *timeout_s)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(port))};
    struct timeval wait = {.tv_sec = atoi(timeout_s)};
    if (fd < 0 || inet_pton(AF_INET, host, &to.sin_addr) != 1 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait)) != 0) {
        fprintf(stderr, "udp_echo: bad address %s or no socket\n", host);
        return 2;
    }
    if (sendto(fd, payload, strlen(payload), 0, (struct sockaddr *)&to, sizeof(to)) < 0) {
        perror("udp_echo: sendto");
        return 1;
    }
    char buf[2048];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
    if (n < 0) {
        perror("udp_echo: no reply");
        return 1;
    }
    buf[n] = '\0';
    printf("%s\n", buf);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "send") == 0)
        return send_one(argv[2], argv[3], argv[4], argv[5]);
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT | %s send HOST PORT PAYLOAD TIMEOUT_S\n", argv[0],
                argv[0]);
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
