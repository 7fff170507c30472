// Operations that were misreported: open(O_RDONLY|O_TRUNC) empties a file
// (not a read); renameat2(RENAME_EXCHANGE) swaps two files (both change);
// a raw ICMP socket and a raw IPPROTO_RAW socket send to loopback; mknod
// makes a FIFO and setxattr/removexattr change an extended attribute,
// neither of which was recorded.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <sys/syscall.h>
#include <unistd.h>

static int put(const char *p, const char *s)
{
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, s, strlen(s)) < 0)
		return -1;
	return close(fd);
}

int main(void)
{
	if (put("/trunc-me", "data\n") || put("/swap-a", "a\n") || put("/swap-b", "b\n")) {
		perror("put");
		return 1;
	}
	int fd = open("/trunc-me", O_RDONLY | O_TRUNC);
	if (fd < 0) {
		perror("open O_RDONLY|O_TRUNC");
		return 1;
	}
	close(fd);
	if (syscall(SYS_renameat2, AT_FDCWD, "/swap-a", AT_FDCWD, "/swap-b", 2 /* RENAME_EXCHANGE */) < 0) {
		perror("renameat2 RENAME_EXCHANGE");
		return 1;
	}

	if (mknod("/fifo", S_IFIFO | 0600, 0) < 0) {
		perror("mknod");
		return 1;
	}
	if (setxattr("/swap-a", "user.evasion", "1", 1, 0) < 0 || removexattr("/swap-a", "user.evasion") < 0) {
		perror("xattr");
		return 1;
	}

	struct sockaddr_in lo = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
	int icmp = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
	if (icmp < 0) {
		perror("raw icmp socket");
		return 1;
	}
	struct icmphdr echo = {.type = ICMP_ECHO, .un.echo.id = htons(77)};
	echo.checksum = htons(~((ICMP_ECHO << 8) + 77) & 0xffff);
	if (sendto(icmp, &echo, sizeof(echo), 0, (struct sockaddr *)&lo, sizeof(lo)) < 0) {
		perror("icmp sendto");
		return 1;
	}

	int raw = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
	if (raw < 0) {
		perror("raw socket");
		return 1;
	}
	unsigned char pkt[28] = {0};
	struct iphdr *ip = (struct iphdr *)pkt;
	ip->ihl = 5, ip->version = 4, ip->ttl = 8, ip->protocol = 253; /* experimental */
	ip->tot_len = htons(sizeof(pkt));
	ip->saddr = lo.sin_addr.s_addr;
	ip->daddr = htonl(0x7f000002);
	struct sockaddr_in dst = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000002)};
	if (sendto(raw, pkt, sizeof(pkt), 0, (struct sockaddr *)&dst, sizeof(dst)) < 0) {
		perror("raw sendto");
		return 1;
	}
	return 0;
}
