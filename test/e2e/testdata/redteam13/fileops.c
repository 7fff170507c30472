// fileops makes one file change through a call whose record op is not one
// of create/write/truncate/unlink/rename/chmod/chown/link/symlink/mkdir/
// rmdir: "exchange A B" (renameat2 RENAME_EXCHANGE: A and B swap), "mknod
// P" (a regular file made by mknod), "setxattr P" and "removexattr P"
// (user.rt13).
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	const char *op = argv[1], *p = argv[2];
	int r;
	if (!strcmp(op, "exchange") && argc > 3)
		r = syscall(SYS_renameat2, AT_FDCWD, p, AT_FDCWD, argv[3], RENAME_EXCHANGE);
	else if (!strcmp(op, "mknod"))
		r = mknod(p, S_IFREG | 0755, 0);
	else if (!strcmp(op, "setxattr"))
		r = setxattr(p, "user.rt13", "poisoned", 8, 0);
	else if (!strcmp(op, "removexattr"))
		r = removexattr(p, "user.rt13");
	else
		return 2;
	if (r < 0) {
		perror(op);
		return 1;
	}
	printf("RT13 %s %s done\n", op, p);
	return 0;
}
