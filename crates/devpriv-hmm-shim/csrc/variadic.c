/*
 * devpriv-hmm-shim: the variadic entry points (open, openat, ioctl,
 * mremap), which stable Rust cannot define. Each reads its optional
 * argument and forwards to a non-variadic function in src/entry.rs.
 *
 * The exported symbols (open, ioctl, ...) are naked Rust trampolines in
 * src/entry.rs that jump here: a cdylib exports only Rust items (rustc's
 * version script makes every other symbol local), so these C functions
 * carry a devpriv_c_ prefix and stay internal.
 *
 * This is the project's own code (MIT OR Apache-2.0), not kernel code.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/types.h>

int devpriv_shim_openat(int dirfd, const char *path, int flags, unsigned int mode);
int devpriv_c_open(const char *path, int flags, ...);
int devpriv_c_open64(const char *path, int flags, ...);
int devpriv_c_openat(int dirfd, const char *path, int flags, ...);
int devpriv_c_openat64(int dirfd, const char *path, int flags, ...);
int devpriv_c___open_2(const char *path, int flags);
int devpriv_c___open64_2(const char *path, int flags);
int devpriv_c_ioctl(int fd, unsigned long req, ...);
void *devpriv_c_mremap(void *old, size_t old_len, size_t new_len, int flags, ...);
int devpriv_shim_ioctl(int fd, unsigned long req, void *arg);
void *devpriv_shim_mremap(void *old, size_t old_len, size_t new_len, int flags, void *new_addr);

/* The mode argument is only there with O_CREAT or O_TMPFILE. */
#define MODE_ARG(flags, mode)                                              \
	do {                                                               \
		if ((flags) & (O_CREAT | __O_TMPFILE)) {                   \
			va_list ap;                                        \
			va_start(ap, flags);                               \
			mode = va_arg(ap, unsigned int);                   \
			va_end(ap);                                        \
		}                                                          \
	} while (0)

int devpriv_c_open(const char *path, int flags, ...)
{
	unsigned int mode = 0;
	MODE_ARG(flags, mode);
	return devpriv_shim_openat(AT_FDCWD, path, flags, mode);
}

int devpriv_c_open64(const char *path, int flags, ...)
{
	unsigned int mode = 0;
	MODE_ARG(flags, mode);
	return devpriv_shim_openat(AT_FDCWD, path, flags, mode);
}

int devpriv_c_openat(int dirfd, const char *path, int flags, ...)
{
	unsigned int mode = 0;
	MODE_ARG(flags, mode);
	return devpriv_shim_openat(dirfd, path, flags, mode);
}

int devpriv_c_openat64(int dirfd, const char *path, int flags, ...)
{
	unsigned int mode = 0;
	MODE_ARG(flags, mode);
	return devpriv_shim_openat(dirfd, path, flags, mode);
}

/* Fortified builds call these (the kernel's Makefile does not fortify). */
int devpriv_c___open_2(const char *path, int flags)
{
	return devpriv_shim_openat(AT_FDCWD, path, flags, 0);
}

int devpriv_c___open64_2(const char *path, int flags)
{
	return devpriv_shim_openat(AT_FDCWD, path, flags, 0);
}

int devpriv_c_ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	return devpriv_shim_ioctl(fd, req, arg);
}

void *devpriv_c_mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
	void *new_addr = NULL;

	/* As glibc: the new address is read only with MREMAP_FIXED (2). */
	if (flags & 2) {
		va_list ap;
		va_start(ap, flags);
		new_addr = va_arg(ap, void *);
		va_end(ap);
	}
	return devpriv_shim_mremap(old, old_len, new_len, flags, new_addr);
}
