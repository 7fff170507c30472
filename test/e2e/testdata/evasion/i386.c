// i386 system calls (int $0x80) from a 64-bit static program: an open(5)
// that creates a file, mkdir(39), chmod(15), unlink(10), socketcall(102)
// socket+connect and sendto, and a
// pipe(42) whose unused registers look like an x86_64 connect(42) to
// 10.9.9.9:4444, which must not be recorded. Only the low 32 bits of each
// register reach the kernel, so every pointer is to static data (below
// 4 GiB in a non-PIE static binary).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static long sc32(long nr, long b, long c, long d, long S, long D)
{
	long r;
	__asm__ volatile("int $0x80"
			 : "=a"(r)
			 : "a"(nr), "b"(b), "c"(c), "d"(d), "S"(S), "D"(D)
			 : "memory", "r8", "r9", "r10", "r11");
	return r;
}

static char path[256], dir[] = "/i386-dir", moved[] = "/i386-dir/moved";
static char msg[] = "hello";
static unsigned int args[6];
static struct sockaddr_in sa, dgram, fake;
static int pipefd[2];

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	snprintf(path, sizeof(path), "%s", argv[1]);
	long fd = sc32(5, (long)path, 0101 /* O_WRONLY|O_CREAT */, 0644, 0, 0);
	if (fd < 0) {
		fprintf(stderr, "i386 open: %ld\n", fd);
		return 1;
	}
	sc32(4, fd, (long)msg, 5, 0, 0); /* write */
	sc32(6, fd, 0, 0, 0, 0);         /* close */
	/* mkdir(39), chmod(15), open+unlink(10) in the new directory */
	if (sc32(39, (long)dir, 0755, 0, 0, 0) < 0 || sc32(15, (long)path, 0600, 0, 0, 0) < 0) {
		fprintf(stderr, "i386 mkdir/chmod failed\n");
		return 1;
	}
	long c = sc32(5, (long)moved, 0101, 0644, 0, 0);
	sc32(6, c, 0, 0, 0, 0);
	if (sc32(10, (long)moved, 0, 0, 0, 0) < 0) { /* unlink */
		fprintf(stderr, "i386 unlink failed\n");
		return 1;
	}

	sa.sin_family = AF_INET;
	sa.sin_port = htons(atoi(argv[2]));
	sa.sin_addr.s_addr = htonl(0x7f000001);
	args[0] = AF_INET, args[1] = SOCK_STREAM, args[2] = 0;
	long s = sc32(102, 1 /* SYS_SOCKET */, (long)args, 0, 0, 0);
	if (s < 0) {
		fprintf(stderr, "i386 socket: %ld\n", s);
		return 1;
	}
	args[0] = s, args[1] = (unsigned int)(long)&sa, args[2] = sizeof(sa);
	long r = sc32(102, 3 /* SYS_CONNECT */, (long)args, 0, 0, 0);
	if (r < 0) {
		fprintf(stderr, "i386 connect: %ld\n", r);
		return 1;
	}

	dgram.sin_family = AF_INET;
	dgram.sin_port = htons(atoi(argv[3]));
	dgram.sin_addr.s_addr = htonl(0x7f000001);
	args[0] = AF_INET, args[1] = SOCK_DGRAM, args[2] = 0;
	long u = sc32(102, 1, (long)args, 0, 0, 0);
	args[0] = u, args[1] = (unsigned int)(long)msg, args[2] = 5, args[3] = 0;
	args[4] = (unsigned int)(long)&dgram, args[5] = sizeof(dgram);
	r = sc32(102, 11 /* SYS_SENDTO */, (long)args, 0, 0, 0);
	if (r < 0) {
		fprintf(stderr, "i386 sendto: %ld\n", r);
		return 1;
	}

	/* i386 42 is pipe; as x86_64 42 (connect) di would be the fd and si
	 * the address. */
	fake.sin_family = AF_INET;
	fake.sin_port = htons(4444);
	fake.sin_addr.s_addr = htonl(0x0a090909);
	r = sc32(42, (long)pipefd, 0, 0, (long)&fake, s);
	if (r < 0) {
		fprintf(stderr, "i386 pipe: %ld\n", r);
		return 1;
	}
	return 0;
}
