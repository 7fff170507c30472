// A step sends UDP-Lite datagrams with one sendmmsg: the first to argv[1]
// (an innocuous destination, which the syscall hook records with its port),
// the second to argv[2] (the one a policy flags by address and port). The
// probe reads only the first message's address; the second reaches the
// policy only through the packet counters, which keep ports for TCP and UDP
// alone: the signed trace says "udplite <addr>:0".
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef IPPROTO_UDPLITE
#define IPPROTO_UDPLITE 136
#endif

static int addr(const char *s, struct sockaddr_in *a)
{
	char host[64];
	const char *c = strrchr(s, ':');
	if (!c || (size_t)(c - s) >= sizeof(host))
		return -1;
	memcpy(host, s, c - s);
	host[c - s] = 0;
	memset(a, 0, sizeof(*a));
	a->sin_family = AF_INET;
	a->sin_port = htons(atoi(c + 1));
	return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

int main(int argc, char **argv)
{
	struct sockaddr_in a[2];
	if (argc != 3 || addr(argv[1], &a[0]) || addr(argv[2], &a[1])) {
		fprintf(stderr, "usage: udplite FIRST-IP:PORT SECOND-IP:PORT\n");
		return 2;
	}
	int fd = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE);
	if (fd < 0) {
		perror("RT9 socket udplite");
		return 1;
	}
	static char m0[] = "RT9 first", m1[] = "RT9 exfiltrated";
	struct iovec iov[2] = {{m0, sizeof(m0) - 1}, {m1, sizeof(m1) - 1}};
	struct mmsghdr mm[2];
	memset(mm, 0, sizeof(mm));
	for (int i = 0; i < 2; i++) {
		mm[i].msg_hdr.msg_name = &a[i];
		mm[i].msg_hdr.msg_namelen = sizeof(a[i]);
		mm[i].msg_hdr.msg_iov = &iov[i];
		mm[i].msg_hdr.msg_iovlen = 1;
	}
	int n = sendmmsg(fd, mm, 2, 0);
	if (n != 2) {
		perror("RT9 sendmmsg");
		return 1;
	}
	printf("RT9 UDPLITE sent %d datagrams\n", n);
	fflush(stdout);
	return 0;
}
