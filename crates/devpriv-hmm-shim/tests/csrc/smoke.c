/*
 * devpriv-hmm-shim smoke test: a small program of our own (not kernel
 * code) that drives the shim the way the HMM selftests do, through the
 * test driver's ABI (lib/test_hmm_uapi.h: _IOWR('H', n, 40-byte struct)).
 * Run by tests/smoke.rs with LD_PRELOAD; prints "ok" and exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

struct cmd {
	uint64_t addr, ptr, npages, cpages, faults;
};

#define REQ(n) (0xc0284800UL + (n))
#define CHECK(c)                                                            \
	do {                                                                \
		if (!(c)) {                                                 \
			fprintf(stderr, "smoke.c:%d: %s (errno %d)\n",      \
				__LINE__, #c, errno);                       \
			exit(1);                                            \
		}                                                           \
	} while (0)

static int dev(int fd, unsigned long n, void *addr, void *buf, uint64_t npages, struct cmd *c)
{
	memset(c, 0, sizeof(*c));
	c->addr = (uintptr_t)addr;
	c->ptr = (uintptr_t)buf;
	c->npages = npages;
	return ioctl(fd, REQ(n), c);
}

int main(void)
{
	const size_t n = 64, size = 64 * 4096;
	struct cmd c;
	int status;

	int fd = open("/dev/hmm_dmirror0", O_RDWR);
	CHECK(fd >= 0);
	CHECK(open("/dev/hmm_dmirror2", O_RDWR) < 0 && errno == ENOENT);

	int *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(p != MAP_FAILED);
	for (size_t i = 0; i < size / sizeof(int); i++)
		p[i] = (int)i;

	/* To the device: the bounce buffer holds the data, the snapshot says
	 * "this device's private page, writable" (0x20 | 0x02). */
	int *mirror = malloc(size);
	unsigned char *snap = malloc(n);
	CHECK(dev(fd, 2, p, mirror, n, &c) == 0 && c.cpages == n);
	for (size_t i = 0; i < size / sizeof(int); i++)
		CHECK(mirror[i] == (int)i);
	CHECK(dev(fd, 4, p, snap, n, &c) == 0 && c.cpages == n);
	for (size_t i = 0; i < n; i++)
		CHECK(snap[i] == 0x22);

	/* CPU accesses fault the pages back. */
	for (size_t i = 0; i < size / sizeof(int); i++)
		CHECK(p[i] == (int)i);
	CHECK(dev(fd, 4, p, snap, n, &c) == 0);
	for (size_t i = 0; i < n; i++)
		CHECK(snap[i] == 0x02);

	/* A device write lands in the pages the CPU reads. */
	for (size_t i = 0; i < size / sizeof(int); i++)
		mirror[i] = -(int)i;
	CHECK(dev(fd, 1, p, mirror, n, &c) == 0 && c.cpages == n && c.faults == 1);
	CHECK(p[5] == -5);

	/* fork: the child's write is its own copy. */
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		p[5] = 1234;
		_exit(p[5] == 1234 ? 0 : 3);
	}
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(p[5] == -5);

	/* Capability refusals and bad commands. */
	CHECK(mmap(NULL, 2 << 20, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0) == MAP_FAILED &&
	      errno == ENOMEM);
	CHECK(ioctl(fd, REQ(99), &c) == -1 && errno == EINVAL);
	CHECK(dev(fd, 0, (char *)p + 1, mirror, 1, &c) == -1 && errno == EINVAL);
	CHECK(dev(fd, 0, p, mirror, 0, &c) == -1 && errno == EINVAL);

	/* A genuine SIGSEGV stays genuine. */
	int *none = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(none != MAP_FAILED);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		_exit(*(volatile int *)none);
	CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);

	CHECK(munmap(p, size) == 0);
	CHECK(close(fd) == 0);
	printf("ok\n");
	return 0;
}
