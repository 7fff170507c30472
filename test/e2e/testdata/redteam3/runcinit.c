// runcinit: a hostile step that tries to act where the tracer does not
// follow it, for test/e2e TestRedTeam3RuncInit.
//
// As the step's first process (no arguments) it first tries to leave its
// container cgroup: a cgroup namespace and cgroup2 mount of its own inside
// a new user namespace, else a child cgroup in the container's
// /sys/fs/cgroup; it reports each attempt. Then it forks a child that
// re-executes this program as argv ["runc", "init"] (an ordinary fork+exec:
// the child is in its parent's mount namespace, like runc's own re-exec),
// which connects to ADDR:PORT, sends an HTTP request and writes
// /hidden-marker. The tracer must show that child's exec and connection.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static int writefile(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int n = write(fd, s, strlen(s));
	int e = errno;
	close(fd);
	errno = e;
	return n < 0 ? -1 : 0;
}

// escape moves this process into a cgroup below its container's, which
// the tracer does not follow; 0 when it got there.
static int escape(void)
{
	char pid[32];
	snprintf(pid, sizeof pid, "%d\n", getpid());
	// 1. A child cgroup through the container's own cgroup2 mount.
	if (mkdir("/sys/fs/cgroup/rt3-escape", 0755) == 0 || errno == EEXIST) {
		if (writefile("/sys/fs/cgroup/rt3-escape/cgroup.procs", pid) == 0) {
			printf("RT3 ESCAPE child-cgroup ok\n");
			return 0;
		}
		printf("RT3 ESCAPE child-cgroup move: %s\n", strerror(errno));
	} else {
		printf("RT3 ESCAPE child-cgroup mkdir: %s\n", strerror(errno));
	}
	// 2. A user namespace (root inside), its own mount and cgroup
	// namespaces, a fresh cgroup2 mount, a child cgroup there.
	if (unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWCGROUP) != 0) {
		printf("RT3 ESCAPE unshare: %s\n", strerror(errno));
		return -1;
	}
	mkdir("/tmp/rt3cg", 0755);
	if (mount("none", "/tmp/rt3cg", "cgroup2", 0, NULL) != 0) {
		printf("RT3 ESCAPE mount cgroup2: %s\n", strerror(errno));
		return -1;
	}
	if (mkdir("/tmp/rt3cg/rt3-escape", 0755) != 0 && errno != EEXIST) {
		printf("RT3 ESCAPE userns mkdir: %s\n", strerror(errno));
		return -1;
	}
	if (writefile("/tmp/rt3cg/rt3-escape/cgroup.procs", pid) != 0) {
		printf("RT3 ESCAPE userns move: %s\n", strerror(errno));
		return -1;
	}
	printf("RT3 ESCAPE userns-cgroup ok\n");
	return 0;
}

static int hidden(const char *addr, int port)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	if (s < 0) {
		perror("socket");
		return 1;
	}
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, addr, &sa.sin_addr);
	if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) {
		perror("connect");
		return 1;
	}
	const char req[] = "GET /v2/rt3-hidden HTTP/1.0\r\n\r\n";
	if (write(s, req, sizeof req - 1) < 0)
		perror("write");
	char buf[256];
	ssize_t n = read(s, buf, sizeof buf);
	close(s);
	int fd = open("/hidden-marker", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd >= 0) {
		dprintf(fd, "runc init talked to %s:%d (%zd bytes back)\n", addr, port, n);
		close(fd);
	}
	printf("RT3 HIDDEN connected to %s:%d, %zd bytes back\n", addr, port, n);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc == 2 && strcmp(argv[0], "runc") == 0 && strcmp(argv[1], "init") == 0) {
		const char *addr = getenv("RT3_ADDR"), *port = getenv("RT3_PORT");
		return hidden(addr ? addr : "127.0.0.1", port ? atoi(port) : 5000);
	}
	escape();
	pid_t c = fork();
	if (c < 0) {
		perror("fork");
		return 1;
	}
	if (c == 0) {
		char *av[] = {"runc", "init", NULL};
		execv("/proc/self/exe", av);
		perror("execv");
		_exit(127);
	}
	int st;
	waitpid(c, &st, 0);
	printf("RT3 DONE child status %d\n", st);
	return 0;
}
