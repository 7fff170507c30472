// A step makes the tracer read a DNS answer the resolver never sent, with
// no raw socket and no second thread. It asks the resolver (argv[1], port
// 53) "<name> A?", writes the answer it wants ("<name> A 127.0.0.1", same ID
// and question) into its own receive buffer, and then receives the
// resolver's real answer with recvfrom(fd, buf, 0, MSG_TRUNC, ...): the
// kernel copies none of the datagram into buf but returns its full length.
// The probe reads that many bytes of buf as the received payload (docs/
// bpf.md, do_net: n = ret for recv/recvfrom), so the tracer sees the step's
// own bytes as an answer from the resolver, with the question's ID: a
// confirmed name. The resolver's real answer must be at least as long as the
// forged one (an honest one-record answer for the same name is exactly as
// long).
#include <arpa/inet.h>
#include <netinet/in.h>
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
		fprintf(stderr, "usage: dnstrunc RESOLVER-IP NAME\n");
		return 2;
	}
	struct in_addr resolver;
	if (inet_pton(AF_INET, argv[1], &resolver) != 1)
		return 2;
	int cli = socket(AF_INET, SOCK_DGRAM, 0);
	if (cli < 0) {
		perror("RT7 socket");
		return 1;
	}
	unsigned char q[300];
	size_t n = 0;
	static const unsigned char qh[] = {0x37, 0x37, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
	memcpy(q, qh, sizeof(qh));
	n = sizeof(qh);
	n += qname(q + n, argv[2]);
	q[n++] = 0, q[n++] = 1, q[n++] = 0, q[n++] = 1; /* A IN */
	struct sockaddr_in s = {.sin_family = AF_INET, .sin_port = htons(53), .sin_addr = resolver};
	if (sendto(cli, q, n, 0, (struct sockaddr *)&s, sizeof(s)) < 0) {
		perror("RT7 sendto");
		return 1;
	}
	/* The answer the step wants read: its question, response bit, one A
	 * record naming 127.0.0.1. */
	unsigned char buf[512];
	memset(buf, 0, sizeof(buf));
	memcpy(buf, q, n);
	buf[2] = 0x81, buf[3] = 0x80, buf[7] = 1; /* response, RD RA; ANCOUNT 1 */
	static const unsigned char rr[] = {0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1};
	memcpy(buf + n, rr, sizeof(rr));
	size_t forged = n + sizeof(rr);
	struct sockaddr_in from;
	socklen_t fl = sizeof(from);
	/* Receive nothing into buf, but learn (and report) the datagram's length. */
	ssize_t got = recvfrom(cli, buf, 0, MSG_TRUNC, (struct sockaddr *)&from, &fl);
	if (got < 0) {
		perror("RT7 recvfrom");
		return 1;
	}
	char fa[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &from.sin_addr, fa, sizeof(fa));
	printf("RT7 TRUNC real answer %zd bytes from %s:%d, forged %zu bytes\n", got, fa, ntohs(from.sin_port), forged);
	fflush(stdout);
	return (size_t)got >= forged ? 0 : 4;
}
