// capsuid: "setcap P" gives file P the capability CAP_SETUID, permitted
// and effective (security.capability, as setcap cap_setuid+ep does);
// "run", run from such a file by a user other than root, becomes root
// with setuid(0), without an exec, and writes /rt13-root.
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc > 2 && !strcmp(argv[1], "setcap")) {
		// struct vfs_cap_data, revision 2, effective; CAP_SETUID is 7.
		uint32_t v[5] = {0x02000000 | 1, 1u << 7, 0, 0, 0};
		if (setxattr(argv[2], "security.capability", v, sizeof(v), 0) < 0) {
			perror("setxattr");
			return 1;
		}
		return 0;
	}
	int before = (int)geteuid();
	if (setuid(0) < 0) {
		perror("setuid");
		return 1;
	}
	int fd = open("/rt13-root", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	printf("RT13 EUID BEFORE %d AFTER %d WROTE %s\n", before, (int)geteuid(), fd >= 0 ? "yes" : "no");
	return fd >= 0 ? 0 : 1;
}
