// Another local user's helper (run unprivileged): it opens the host's cgroup2
// root directory, which any user may open for reading, and hands the
// descriptor to whoever connects to the abstract unix socket argv[1] (shared
// by every process on the host's network namespace, RUN steps of builds on
// the host network included).
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: cgfd NAME CGROUP2-DIR\n");
		return 2;
	}
	int dir = open(argv[2], O_RDONLY | O_DIRECTORY);
	if (dir < 0) {
		perror("RT7 open cgroup2");
		return 1;
	}
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	size_t n = strlen(argv[1]);
	memcpy(a.sun_path + 1, argv[1], n); /* abstract */
	if (bind(s, (struct sockaddr *)&a, sizeof(sa_family_t) + 1 + n) < 0 || listen(s, 4) < 0) {
		perror("RT7 bind");
		return 1;
	}
	printf("RT7 CGFD ready uid %d\n", getuid());
	fflush(stdout);
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0)
			continue;
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
		memcpy(CMSG_DATA(cm), &dir, sizeof(int));
		sendmsg(c, &m, 0);
		close(c);
	}
}
