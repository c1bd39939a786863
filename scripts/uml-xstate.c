/* LD_PRELOAD for Debian's linux.uml 6.1 on hosts with dynamic XSAVE features (AMX): the host kernel accepts
 * PTRACE_SETREGSET NT_X86_XSTATE only with a buffer of the full XSAVE size; UML passes its own, smaller one
 * and gets EFAULT ("ptrace set fp regs failed, errno = 14"). Pad it: read the full state, lay UML's part
 * over it, write the full buffer back. Every other request goes to libc's ptrace unchanged. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef long (*ptrace_fn)(int, pid_t, void *, void *);

long ptrace(enum __ptrace_request request, ...)
{
	static ptrace_fn real;
	static char full[65536];
	va_list ap;
	pid_t pid;
	void *addr, *data;

	va_start(ap, request);
	pid = va_arg(ap, pid_t);
	addr = va_arg(ap, void *);
	data = va_arg(ap, void *);
	va_end(ap);
	if (!real)
		real = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
	if (request == PTRACE_SETREGSET && (long)addr == NT_X86_XSTATE) {
		struct iovec *iov = data, whole = { full, sizeof(full) };
		if (real(PTRACE_GETREGSET, pid, addr, &whole) == 0 && whole.iov_len > iov->iov_len) {
			memcpy(full, iov->iov_base, iov->iov_len);
			return real(PTRACE_SETREGSET, pid, addr, &whole);
		}
	}
	return real(request, pid, addr, data);
}
