// Opens an AF_PACKET socket and sends one Ethernet frame on lo: no socket
// or packet hook of the tracer sees it.
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int main(void)
{
	int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	if (s < 0) {
		perror("socket AF_PACKET");
		return 1;
	}
	struct sockaddr_ll ll = {.sll_family = AF_PACKET, .sll_protocol = htons(0x88b5), .sll_ifindex = if_nametoindex("lo"), .sll_halen = 6};
	if (ll.sll_ifindex == 0) {
		perror("if_nametoindex lo");
		return 1;
	}
	unsigned char frame[60] = {0};
	frame[12] = 0x88, frame[13] = 0xb5; /* local experimental ethertype */
	memcpy(frame + 14, "buildtrace", 10);
	if (sendto(s, frame, sizeof(frame), 0, (struct sockaddr *)&ll, sizeof(ll)) < 0) {
		perror("sendto");
		return 1;
	}
	return 0;
}
