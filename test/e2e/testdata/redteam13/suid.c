// suid, installed setuid root, prints the IDs it runs with and, as its
// effective root, writes /rt13-root (which only root can create).
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	int fd = open("/rt13-root", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	printf("RT13 UID %d EUID %d WROTE %s\n", (int)getuid(), (int)geteuid(), fd >= 0 ? "yes" : "no");
	return fd >= 0 ? 0 : 1;
}
