// Ways to reach argv[2] (IP:PORT, a TCP and UDP listener of the test)
// without a plain connect(2) to it, one per mode (argv[1]):
//   fastopen: TCP Fast Open, sendto(MSG_FASTOPEN) with the address, no connect;
//   foconnect: setsockopt(TCP_FASTOPEN_CONNECT), then connect and write;
//   mapped: an AF_INET6 TCP socket connecting to ::ffff:<IP>;
//   udpother: a UDP socket connected to 127.0.0.1:5000 sends to argv[2] with sendto;
//   unspec: a UDP socket connected to 127.0.0.1:5000, disconnected with
//     connect(AF_UNSPEC), connected again to argv[2] and written with write(2).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef TCP_FASTOPEN_CONNECT
#define TCP_FASTOPEN_CONNECT 30
#endif

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	const char *mode = argv[1];
	char host[64];
	const char *c = strrchr(argv[2], ':');
	if (!c || (size_t)(c - argv[2]) >= sizeof(host))
		return 2;
	memcpy(host, argv[2], c - argv[2]);
	host[c - argv[2]] = 0;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(c + 1))};
	struct sockaddr_in reg = {.sin_family = AF_INET, .sin_port = htons(5000), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
		return 2;
	static const char msg[] = "RT9 netmix\n";
	ssize_t n = -1;
	int fd;
	if (!strcmp(mode, "fastopen")) {
		fd = socket(AF_INET, SOCK_STREAM, 0);
		n = sendto(fd, msg, sizeof(msg) - 1, MSG_FASTOPEN, (struct sockaddr *)&a, sizeof(a));
	} else if (!strcmp(mode, "foconnect")) {
		fd = socket(AF_INET, SOCK_STREAM, 0);
		int one = 1;
		if (setsockopt(fd, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &one, sizeof(one)) < 0)
			perror("RT9 TCP_FASTOPEN_CONNECT");
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
			n = write(fd, msg, sizeof(msg) - 1);
	} else if (!strcmp(mode, "mapped")) {
		fd = socket(AF_INET6, SOCK_STREAM, 0);
		struct sockaddr_in6 m = {.sin6_family = AF_INET6, .sin6_port = a.sin_port};
		m.sin6_addr.s6_addr[10] = 0xff, m.sin6_addr.s6_addr[11] = 0xff;
		memcpy(&m.sin6_addr.s6_addr[12], &a.sin_addr, 4);
		if (connect(fd, (struct sockaddr *)&m, sizeof(m)) == 0)
			n = write(fd, msg, sizeof(msg) - 1);
	} else if (!strcmp(mode, "udpother")) {
		fd = socket(AF_INET, SOCK_DGRAM, 0);
		connect(fd, (struct sockaddr *)&reg, sizeof(reg));
		n = sendto(fd, msg, sizeof(msg) - 1, 0, (struct sockaddr *)&a, sizeof(a));
	} else if (!strcmp(mode, "unspec")) {
		fd = socket(AF_INET, SOCK_DGRAM, 0);
		connect(fd, (struct sockaddr *)&reg, sizeof(reg));
		struct sockaddr un = {.sa_family = AF_UNSPEC};
		connect(fd, &un, sizeof(un));
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
			n = write(fd, msg, sizeof(msg) - 1);
	} else {
		return 2;
	}
	if (n < 0) {
		perror("RT9 send");
		return 1;
	}
	printf("RT9 NETMIX %s sent %zd bytes\n", mode, n);
	fflush(stdout);
	sleep(1);
	return 0;
}
