// A RUN step (default capabilities include CAP_SYS_CHROOT) chroots into
// argv[1] (a cache mount, or a directory of its own root file system) and
// then writes /etc/profile and /bin/sh there, by absolute paths, and
// ../../etc/motd from its new root, and runs
// that /bin/sh (a copy of itself) as "/bin/sh -c true". Every path the
// kernel hooks record is the one given (absolute) or walked up to the task's
// root, which is now argv[1]: the trace names /etc/profile and /bin/sh of the
// container's root, not argv[1]/etc/profile and argv[1]/bin/sh.
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "-c") == 0) {
		printf("RT10 the binary run as %s is the step's own program\n", argv[0]);
		return 0;
	}
	if (argc != 2)
		return 2;
	int self = open("/proc/self/exe", O_RDONLY);
	if (self < 0) {
		perror("RT10 open self");
		return 1;
	}
	if (chroot(argv[1]) < 0 || chdir("/") < 0) {
		perror("RT10 chroot");
		return 1;
	}
	mkdir("/etc", 0755);
	mkdir("/bin", 0755);
	int fd = open("/etc/profile", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		perror("RT10 open /etc/profile");
		return 1;
	}
	const char *p = "export PATH=/opt/evil:$PATH # RT10 POISONED\n";
	if (write(fd, p, strlen(p)) < 0)
		return 1;
	close(fd);
	/* relative, with "..": the kernel stops at the root */
	fd = open("../../etc/motd", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		perror("RT10 open ../../etc/motd");
		return 1;
	}
	close(fd);
	int out = open("/bin/sh", O_WRONLY | O_CREAT | O_TRUNC, 0755);
	if (out < 0) {
		perror("RT10 open /bin/sh");
		return 1;
	}
	char buf[65536];
	ssize_t n;
	while ((n = read(self, buf, sizeof(buf))) > 0)
		if (write(out, buf, n) != n)
			return 1;
	close(out);
	pid_t c = fork();
	if (c == 0) {
		execl("/bin/sh", "/bin/sh", "-c", "true", (char *)NULL);
		perror("RT10 exec");
		_exit(127);
	}
	int st;
	waitpid(c, &st, 0);
	printf("RT10 CHROOT DONE in %s\n", argv[1]);
	return 0;
}
