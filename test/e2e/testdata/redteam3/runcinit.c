// runcinit: a hostile step that tries to act where the tracer does not
// follow it, for test/e2e TestRedTeam3RuncInit.
//
// As the step's first process (no arguments) it first tries to leave its
// container cgroup: a cgroup namespace and cgroup2 mount of its own inside
// a new user namespace, else a child cgroup in the container's
// cgroup2 mounts (its /proc/self/mountinfo); it reports each attempt. Then it forks a child that
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

// tryCgroup makes a child cgroup below dir and moves this process into
// it; 0 when it got there.
static int tryCgroup(const char *dir, const char *pid)
{
	char sub[512], procs[600];
	snprintf(sub, sizeof sub, "%s/rt3-escape", dir);
	snprintf(procs, sizeof procs, "%s/cgroup.procs", sub);
	if (mkdir(sub, 0755) != 0 && errno != EEXIST) {
		printf("RT3 ESCAPE %s mkdir: %s\n", dir, strerror(errno));
		return -1;
	}
	if (writefile(procs, pid) != 0) {
		printf("RT3 ESCAPE %s move: %s\n", dir, strerror(errno));
		return -1;
	}
	printf("RT3 ESCAPE %s ok\n", dir);
	return 0;
}

// escape moves this process into a cgroup below its container's, which
// the tracer does not follow; 0 when it got there.
static int escape(void)
{
	char pid[32];
	snprintf(pid, sizeof pid, "%d\n", getpid());
	// 1. A child cgroup through every cgroup2 mount the container has.
	FILE *mi = fopen("/proc/self/mountinfo", "r");
	char line[1024];
	while (mi && fgets(line, sizeof line, mi)) {
		if (!strstr(line, "cgroup"))
			continue;
		printf("RT3 MOUNT %s", line);
		char mp[512];
		if (strstr(line, " - cgroup2 ") && sscanf(line, "%*s %*s %*s %*s %511s", mp) == 1 && tryCgroup(mp, pid) == 0)
			return 0;
	}
	if (mi)
		fclose(mi);
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
	return tryCgroup("/tmp/rt3cg", pid);
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
