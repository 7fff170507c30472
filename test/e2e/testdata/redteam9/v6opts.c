// A step sends two UDP datagrams over IPv6 with one sendmmsg on a socket
// that carries a destination-options extension header (IPV6_DSTOPTS, which
// CAP_NET_RAW, a default capability, allows): the first to [::1]:argv[1],
// the second to [::1]:argv[2]. The probe reads only the first message's
// address; the second reaches the trace through the packet counters, which
// must find the UDP header behind the extension header to keep its port.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	int fd = socket(AF_INET6, SOCK_DGRAM, 0);
	if (fd < 0) {
		perror("RT9 socket");
		return 1;
	}
	/* next header (filled by the kernel), length 0 (8 bytes), PadN of 4. */
	unsigned char opts[8] = {0, 0, 1, 4, 0, 0, 0, 0};
	if (setsockopt(fd, IPPROTO_IPV6, IPV6_DSTOPTS, opts, sizeof(opts)) < 0) {
		perror("RT9 IPV6_DSTOPTS");
		return 1;
	}
	struct sockaddr_in6 a[2];
	memset(a, 0, sizeof(a));
	for (int i = 0; i < 2; i++) {
		a[i].sin6_family = AF_INET6;
		a[i].sin6_port = htons(atoi(argv[1 + i]));
		a[i].sin6_addr = in6addr_loopback;
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
	printf("RT9 V6OPTS sent %d datagrams\n", n);
	fflush(stdout);
	return 0;
}
