// Plants a DNS answer the step never asked for: a socket bound to
// 127.0.0.2:53 sends "allowed.test A 127.0.0.9" to another socket of the
// step, which receives it (from port 53), then connects to 127.0.0.9:port.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	static const unsigned char msg[] = {
		0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0,                 /* header: response, 1 question, 1 answer */
		7, 'a', 'l', 'l', 'o', 'w', 'e', 'd', 4, 't', 'e', 's', 't', 0, /* allowed.test */
		0, 1, 0, 1,                                                     /* A IN */
		0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 9,        /* -> 127.0.0.9 */
	};
	int srv = socket(AF_INET, SOCK_DGRAM, 0), cli = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in s = {.sin_family = AF_INET, .sin_port = htons(53), .sin_addr.s_addr = htonl(0x7f000002)};
	struct sockaddr_in c = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
	socklen_t cl = sizeof(c);
	if (bind(srv, (struct sockaddr *)&s, sizeof(s)) < 0 || bind(cli, (struct sockaddr *)&c, sizeof(c)) < 0 ||
	    getsockname(cli, (struct sockaddr *)&c, &cl) < 0) {
		perror("bind");
		return 1;
	}
	if (sendto(srv, msg, sizeof(msg), 0, (struct sockaddr *)&c, sizeof(c)) < 0) {
		perror("sendto");
		return 1;
	}
	unsigned char buf[512];
	struct sockaddr_in from;
	socklen_t fl = sizeof(from);
	if (recvfrom(cli, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl) < 0) {
		perror("recvfrom");
		return 1;
	}
	int t = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1])), .sin_addr.s_addr = htonl(0x7f000009)};
	connect(t, (struct sockaddr *)&dst, sizeof(dst)); /* refused: nothing listens */
	return 0;
}
