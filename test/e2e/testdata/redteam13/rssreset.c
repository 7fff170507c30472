// rssreset touches argv[1] MiB of anonymous memory, unmaps it and, unless
// argv[2] is "keep", writes "5" to /proc/self/clear_refs, which resets the
// process's peak RSS ("high water mark") to its current RSS: the exit
// record's peak RSS is then that of the process after the spike.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	size_t n = (size_t)atoi(argv[1]) << 20;
	char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	memset(p, 1, n);
	munmap(p, n);
	if (strcmp(argv[2], "keep") != 0) {
		int fd = open("/proc/self/clear_refs", O_WRONLY);
		if (fd < 0 || write(fd, "5", 1) != 1) {
			perror("clear_refs");
			return 1;
		}
		close(fd);
	}
	printf("RT13 RSS SPIKE %s MiB done (%s)\n", argv[1], argv[2]);
	return 0;
}
