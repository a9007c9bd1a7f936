/*
 * devpriv-hmm-shim THP program: our own C (not kernel code) walking the
 * shapes of the THP tests that newer hmm-tests.c files add (empty, huge
 * zero, MADV_FREE, mremap before/after migrating, FAIL_ALLOC fallbacks,
 * fork of a THP) through the shim, so the shim's madvise/mremap/fork/fault
 * translation is exercised without a newer kernel tree. Run by tests/smoke.rs with
 * LD_PRELOAD; prints "ok" and exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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

enum { READ, WRITE, TO_DEV, TO_SYS, SNAP, FLAGS = 8 };
#define REQ(n) (0xc0284800UL + (n))
#define PMD (2UL << 20)
#define NPAGES (PMD / 4096)
#define CHECK(c)                                                            \
	do {                                                                \
		if (!(c)) {                                                 \
			fprintf(stderr, "thp.c:%d: %s (errno %d)\n",        \
				__LINE__, #c, errno);                       \
			exit(1);                                            \
		}                                                           \
	} while (0)

static int fd;
static int *mirror;

static uint64_t dev_at(int line, unsigned long n, void *addr, uint64_t npages)
{
	struct cmd c = { (uintptr_t)addr, (uintptr_t)mirror, npages, 0, 0 };

	if (ioctl(fd, REQ(n), &c) != 0) {
		fprintf(stderr, "thp.c:%d: command %lu failed (errno %d)\n", line, n, errno);
		exit(1);
	}
	return c.cpages;
}
#define dev(n, addr, npages) dev_at(__LINE__, n, addr, npages)

/* A PMD-aligned 2 MiB window inside a fresh mapping of `len` bytes. */
static char *window(size_t len, int prot, int advice, char **base)
{
	*base = mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(*base != MAP_FAILED);
	char *w = (char *)(((uintptr_t)*base + PMD - 1) & ~(PMD - 1));
	CHECK(madvise(w, PMD, advice) == 0);
	return w;
}

static void fill(int *p)
{
	for (size_t i = 0; i < PMD / sizeof(int); i++)
		p[i] = (int)i;
}

static int all(const int *p, int zero)
{
	for (size_t i = 0; i < PMD / sizeof(int); i++)
		if (p[i] != (zero ? 0 : (int)i))
			return 0;
	return 1;
}

int main(void)
{
	char *base;
	int *w;

	fd = open("/dev/hmm_dmirror0", O_RDWR);
	CHECK(fd >= 0);
	mirror = malloc(PMD);

	/* First, while the shim is still growing: each round punches a hole in
	 * the program's mapping and moves a range into it; shim memory placed
	 * in such a hole would be unmapped under the model (a SIGSEGV).
	 *
	 * mremap to 0, 512 KiB and 1 MiB past the next PMD, before or after
	 * migrating, with and without MREMAP_DONTUNMAP, THP or not. */
	for (int before = 0; before < 2; before++)
		for (int keep = 0; keep < 2; keep++)
			for (int thp = 0; thp < 2; thp++)
				for (size_t off = 0; off <= PMD / 2; off += PMD / 4) {
					int flags = MREMAP_MAYMOVE | MREMAP_FIXED | (keep ? MREMAP_DONTUNMAP : 0);
					char *m = window(8 * PMD, PROT_READ | PROT_WRITE,
							 thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE, &base);
					CHECK(munmap(m + PMD, 2 * PMD) == 0);
					fill((int *)m);
					int *to = (int *)(m + PMD + off);
					if (before)
						CHECK(mremap(m, PMD, PMD, flags, to) == to);
					CHECK(dev(TO_DEV, before ? (void *)to : m, NPAGES) == NPAGES && all(mirror, 0));
					if (!before)
						CHECK(mremap(m, PMD, PMD, flags, to) == to);
					CHECK(all(to, 0));
					CHECK(munmap(to, PMD) == 0 && munmap(base, 8 * PMD) == 0);
				}

	/* Untouched THP range: the device gets zeros. */
	memset(mirror, 0xff, PMD);
	w = (int *)window(2 * PMD, PROT_READ, MADV_HUGEPAGE, &base);
	CHECK(dev(TO_DEV, w, NPAGES) == NPAGES && all(mirror, 1));
	CHECK(munmap(base, 2 * PMD) == 0);

	/* A read maps the huge zero page; it migrates and faults back. */
	memset(mirror, 0xff, PMD);
	w = (int *)window(2 * PMD, PROT_READ, MADV_HUGEPAGE, &base);
	CHECK(w[0] == 0);
	CHECK(dev(TO_DEV, w, NPAGES) == NPAGES && all(mirror, 1) && all(w, 1));
	CHECK(munmap(base, 2 * PMD) == 0);

	/* MADV_FREE over a THP that lives on the device. */
	w = (int *)window(2 * PMD, PROT_READ | PROT_WRITE, MADV_HUGEPAGE, &base);
	fill(w);
	CHECK(dev(TO_DEV, w, NPAGES) == NPAGES && all(mirror, 0));
	CHECK(madvise(w, PMD, MADV_FREE) == 0);
	CHECK(munmap(base, 2 * PMD) == 0);

	/* FAIL_ALLOC: the THP falls back to small device pages, and a THP on
	 * the device falls back to small system pages on its way back. */
	w = (int *)window(2 * PMD, PROT_READ | PROT_WRITE, MADV_HUGEPAGE, &base);
	fill(w);
	dev(FLAGS, w, 1);
	CHECK(dev(TO_DEV, w, NPAGES) == NPAGES && all(mirror, 0) && w[2048] == 2048);
	CHECK(munmap(base, 2 * PMD) == 0);
	w = (int *)window(2 * PMD, PROT_READ | PROT_WRITE, MADV_HUGEPAGE, &base);
	fill(w);
	CHECK(dev(TO_DEV, w, NPAGES) == NPAGES);
	dev(FLAGS, w, 1);
	dev(TO_SYS, w, NPAGES);
	CHECK(w[2048] == 2048 && all(w, 0));
	CHECK(munmap(base, 2 * PMD) == 0);

	/* FAIL_ALLOC over holes and over the huge zero page. */
	memset(mirror, 0xff, PMD);
	w = (int *)window(2 * PMD, PROT_READ, MADV_HUGEPAGE, &base);
	dev(FLAGS, w, 1);
	CHECK(dev(TO_DEV, w, NPAGES) == NPAGES && all(mirror, 1) && w[2048] == 0);
	CHECK(munmap(base, 2 * PMD) == 0);
	w = (int *)window(2 * PMD, PROT_READ, MADV_HUGEPAGE, &base);
	CHECK(w[0] == 0);
	dev(FLAGS, w, 1);
	CHECK(dev(TO_DEV, w, NPAGES) == NPAGES && all(w, 1));
	CHECK(munmap(base, 2 * PMD) == 0);

	/* fork of a THP, in system memory or on the device: the child sees
	 * the parent's data and its own mirror's write copies the pages for
	 * the child only. */
	for (int migrate = 0; migrate < 2; migrate++) {
		w = (int *)window(2 * PMD, PROT_READ | PROT_WRITE, MADV_HUGEPAGE, &base);
		fill(w);
		if (migrate)
			CHECK(dev(TO_DEV, w, NPAGES) == NPAGES);
		pid_t pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			CHECK(all(w, 0));
			fd = open("/dev/hmm_dmirror0", O_RDWR);
			CHECK(fd >= 0);
			for (size_t i = 0; i < PMD / sizeof(int); i++)
				mirror[i] = -(int)i;
			CHECK(dev(WRITE, w, NPAGES) == NPAGES);
			for (size_t i = 0; i < PMD / sizeof(int); i++)
				CHECK(w[i] == -(int)i);
			_exit(0);
		}
		int status;
		CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
		CHECK(all(w, 0));
		CHECK(munmap(base, 2 * PMD) == 0);
	}

	CHECK(close(fd) == 0);
	printf("ok\n");
	return 0;
}
