// A RUN step creates files by openat(dirfd, name, O_CREAT) while a second
// thread of the same process keeps swapping which directory that dirfd
// number holds (dup2 of argv[1]'s and argv[2]'s descriptors onto it). The
// kernel resolves the dirfd when the call starts; the probe walks whatever
// the descriptor holds when the call returns (sys_exit). Afterwards the
// program removes what landed in argv[2] (no race then) and prints the names
// that landed in argv[1].
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define DFD 100

static int fda, fdb;
static atomic_int stop;

static void *swapper(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		dup2(fdb, DFD);
		dup2(fda, DFD);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	int n = atoi(argv[3]);
	mkdir(argv[1], 0755);
	mkdir(argv[2], 0755);
	fda = open(argv[1], O_RDONLY | O_DIRECTORY);
	fdb = open(argv[2], O_RDONLY | O_DIRECTORY);
	if (fda < 0 || fdb < 0 || dup2(fda, DFD) < 0) {
		perror("RT10 open dirs");
		return 1;
	}
	pthread_t t;
	pthread_create(&t, NULL, swapper, NULL);
	char name[64];
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "rt10-%d", i);
		int f = openat(DFD, name, O_CREAT | O_WRONLY | O_EXCL, 0644);
		if (f >= 0)
			close(f);
	}
	atomic_store(&stop, 1);
	pthread_join(t, NULL);
	int ina = 0, inb = 0;
	printf("RT10 IN %s:", argv[1]);
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "rt10-%d", i);
		if (faccessat(fda, name, F_OK, 0) == 0) {
			ina++;
			printf(" %s", name);
		} else if (faccessat(fdb, name, F_OK, 0) == 0) {
			inb++;
			unlinkat(fdb, name, 0);
		}
	}
	printf("\nRT10 DIRRACE %d in %s, %d in %s (removed)\n", ina, argv[1], inb, argv[2]);
	return 0;
}
