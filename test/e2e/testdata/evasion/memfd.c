// Runs itself again from a memfd: memfd_create, copy /proc/self/exe into
// it, fexecve. The copy (argv[1] == "child") writes /from-memfd.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "child") == 0) {
		FILE *f = fopen("/from-memfd", "w");
		if (!f)
			return 1;
		fputs("ran from a memfd\n", f);
		return fclose(f) ? 1 : 0;
	}
	int mfd = memfd_create("payload", MFD_CLOEXEC);
	int self = open("/proc/self/exe", O_RDONLY);
	if (mfd < 0 || self < 0) {
		perror("memfd_create/open");
		return 1;
	}
	char buf[65536];
	ssize_t n;
	while ((n = read(self, buf, sizeof(buf))) > 0)
		if (write(mfd, buf, n) != n) {
			perror("write");
			return 1;
		}
	char *args[] = {"payload", "child", NULL};
	fexecve(mfd, args, environ);
	perror("fexecve");
	return 1;
}
