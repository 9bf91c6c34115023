#include "patched/real.hpp"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>

namespace fiberio::patched::original {

namespace {
// Set while this thread is inside dlsym: a shim reached from there must not look anything up again.
thread_local bool t_resolving = false;

void* next(const char* name, std::atomic<void*>& slot) noexcept {
  void* p = slot.load(std::memory_order_acquire);
  if (p) [[likely]] return p;
  if (t_resolving) return nullptr;
  t_resolving = true;
  p = ::dlsym(RTLD_NEXT, name);
  t_resolving = false;
  if (p) slot.store(p, std::memory_order_release);
  return p;
}

// The kernel's sigset is 64 bits on Linux, not glibc's 1024-bit sigset_t.
constexpr long kKernelSigsetSize = 8;

long sys_result_as_error(long r) noexcept { return r < 0 ? errno : 0; }
}  // namespace

// Each real::f resolves libc's f once; the fallback is the raw system call.
#define FIBERIO_NEXT(fn)                                     \
  static std::atomic<void*> slot_##fn{nullptr};              \
  auto* next_##fn = reinterpret_cast<decltype(&::fn)>(next(#fn, slot_##fn))

int socket(int domain, int type, int protocol) noexcept {
  FIBERIO_NEXT(socket);
  return next_socket ? next_socket(domain, type, protocol) : static_cast<int>(::syscall(SYS_socket, domain, type, protocol));
}

int socketpair(int domain, int type, int protocol, int sv[2]) noexcept {
  FIBERIO_NEXT(socketpair);
  return next_socketpair ? next_socketpair(domain, type, protocol, sv)
                         : static_cast<int>(::syscall(SYS_socketpair, domain, type, protocol, sv));
}

int connect(int fd, const sockaddr* addr, socklen_t len) noexcept {
  FIBERIO_NEXT(connect);
  return next_connect ? next_connect(fd, addr, len) : static_cast<int>(::syscall(SYS_connect, fd, addr, len));
}

int accept4(int fd, sockaddr* addr, socklen_t* len, int flags) noexcept {
  FIBERIO_NEXT(accept4);
  return next_accept4 ? next_accept4(fd, addr, len, flags)
                      : static_cast<int>(::syscall(SYS_accept4, fd, addr, len, flags));
}

ssize_t read(int fd, void* buf, size_t n) noexcept {
  FIBERIO_NEXT(read);
  return next_read ? next_read(fd, buf, n) : ::syscall(SYS_read, fd, buf, n);
}

ssize_t readv(int fd, const iovec* iov, int iovcnt) noexcept {
  FIBERIO_NEXT(readv);
  return next_readv ? next_readv(fd, iov, iovcnt) : ::syscall(SYS_readv, fd, iov, iovcnt);
}

ssize_t recvfrom(int fd, void* buf, size_t n, int flags, sockaddr* addr, socklen_t* len) noexcept {
  FIBERIO_NEXT(recvfrom);
  return next_recvfrom ? next_recvfrom(fd, buf, n, flags, addr, len)
                       : ::syscall(SYS_recvfrom, fd, buf, n, flags, addr, len);
}

ssize_t recvmsg(int fd, msghdr* msg, int flags) noexcept {
  FIBERIO_NEXT(recvmsg);
  return next_recvmsg ? next_recvmsg(fd, msg, flags) : ::syscall(SYS_recvmsg, fd, msg, flags);
}

ssize_t write(int fd, const void* buf, size_t n) noexcept {
  FIBERIO_NEXT(write);
  return next_write ? next_write(fd, buf, n) : ::syscall(SYS_write, fd, buf, n);
}

ssize_t writev(int fd, const iovec* iov, int iovcnt) noexcept {
  FIBERIO_NEXT(writev);
  return next_writev ? next_writev(fd, iov, iovcnt) : ::syscall(SYS_writev, fd, iov, iovcnt);
}

ssize_t sendto(int fd, const void* buf, size_t n, int flags, const sockaddr* addr, socklen_t len) noexcept {
  FIBERIO_NEXT(sendto);
  return next_sendto ? next_sendto(fd, buf, n, flags, addr, len) : ::syscall(SYS_sendto, fd, buf, n, flags, addr, len);
}

ssize_t sendmsg(int fd, const msghdr* msg, int flags) noexcept {
  FIBERIO_NEXT(sendmsg);
  return next_sendmsg ? next_sendmsg(fd, msg, flags) : ::syscall(SYS_sendmsg, fd, msg, flags);
}

int poll(pollfd* fds, nfds_t n, int timeout_ms) noexcept {
  FIBERIO_NEXT(poll);
  return next_poll ? next_poll(fds, n, timeout_ms) : static_cast<int>(::syscall(SYS_poll, fds, n, timeout_ms));
}

int ppoll(pollfd* fds, nfds_t n, const timespec* timeout, const sigset_t* mask) noexcept {
  FIBERIO_NEXT(ppoll);
  if (next_ppoll) return next_ppoll(fds, n, timeout, mask);
  // The kernel may write the remaining time back: give it a copy.
  timespec t{}, *tp = nullptr;
  if (timeout) {
    t = *timeout;
    tp = &t;
  }
  return static_cast<int>(::syscall(SYS_ppoll, fds, n, tp, mask, kKernelSigsetSize));
}

int select(int nfds, fd_set* r, fd_set* w, fd_set* e, timeval* timeout) noexcept {
  FIBERIO_NEXT(select);
  return next_select ? next_select(nfds, r, w, e, timeout) : static_cast<int>(::syscall(SYS_select, nfds, r, w, e, timeout));
}

int pselect(int nfds, fd_set* r, fd_set* w, fd_set* e, const timespec* timeout, const sigset_t* mask) noexcept {
  FIBERIO_NEXT(pselect);
  if (next_pselect) return next_pselect(nfds, r, w, e, timeout, mask);
  timespec t{}, *tp = nullptr;
  if (timeout) {
    t = *timeout;
    tp = &t;
  }
  struct {
    const sigset_t* set;
    long size;
  } sig{mask, kKernelSigsetSize};
  return static_cast<int>(::syscall(SYS_pselect6, nfds, r, w, e, tp, mask ? &sig : nullptr));
}

int nanosleep(const timespec* req, timespec* rem) noexcept {
  FIBERIO_NEXT(nanosleep);
  return next_nanosleep ? next_nanosleep(req, rem) : static_cast<int>(::syscall(SYS_nanosleep, req, rem));
}

unsigned sleep(unsigned seconds) noexcept {
  FIBERIO_NEXT(sleep);
  if (next_sleep) return next_sleep(seconds);
  timespec req{static_cast<time_t>(seconds), 0}, rem{};
  if (::syscall(SYS_nanosleep, &req, &rem) == 0) return 0;
  return static_cast<unsigned>(rem.tv_sec + (rem.tv_nsec > 0 ? 1 : 0));
}

int usleep(useconds_t usec) noexcept {
  FIBERIO_NEXT(usleep);
  if (next_usleep) return next_usleep(usec);
  timespec req{static_cast<time_t>(usec / 1000000), static_cast<long>(usec % 1000000) * 1000};
  return static_cast<int>(::syscall(SYS_nanosleep, &req, nullptr));
}

int clock_nanosleep(clockid_t clock, int flags, const timespec* req, timespec* rem) noexcept {
  FIBERIO_NEXT(clock_nanosleep);
  if (next_clock_nanosleep) return next_clock_nanosleep(clock, flags, req, rem);
  // clock_nanosleep reports its error as the return value, not in errno.
  return static_cast<int>(sys_result_as_error(::syscall(SYS_clock_nanosleep, clock, flags, req, rem)));
}

int close(int fd) noexcept {
  FIBERIO_NEXT(close);
  return next_close ? next_close(fd) : static_cast<int>(::syscall(SYS_close, fd));
}

int close_range(unsigned first, unsigned last, int flags) noexcept {
  FIBERIO_NEXT(close_range);
  return next_close_range ? next_close_range(first, last, flags)
                          : static_cast<int>(::syscall(SYS_close_range, first, last, flags));
}

void closefrom(int lowfd) noexcept {
  FIBERIO_NEXT(closefrom);
  if (next_closefrom) return next_closefrom(lowfd);
  ::syscall(SYS_close_range, static_cast<unsigned>(lowfd), ~0U, 0);
}

int shutdown(int fd, int how) noexcept {
  FIBERIO_NEXT(shutdown);
  return next_shutdown ? next_shutdown(fd, how) : static_cast<int>(::syscall(SYS_shutdown, fd, how));
}

int fcntl(int fd, int cmd, void* arg) noexcept {
  FIBERIO_NEXT(fcntl);
  return next_fcntl ? next_fcntl(fd, cmd, arg) : static_cast<int>(::syscall(SYS_fcntl, fd, cmd, arg));
}

int ioctl(int fd, unsigned long request, void* arg) noexcept {
  FIBERIO_NEXT(ioctl);
  return next_ioctl ? next_ioctl(fd, request, arg) : static_cast<int>(::syscall(SYS_ioctl, fd, request, arg));
}

int setsockopt(int fd, int level, int name, const void* value, socklen_t len) noexcept {
  FIBERIO_NEXT(setsockopt);
  return next_setsockopt ? next_setsockopt(fd, level, name, value, len)
                         : static_cast<int>(::syscall(SYS_setsockopt, fd, level, name, value, len));
}

int getsockopt(int fd, int level, int name, void* value, socklen_t* len) noexcept {
  FIBERIO_NEXT(getsockopt);
  return next_getsockopt ? next_getsockopt(fd, level, name, value, len)
                         : static_cast<int>(::syscall(SYS_getsockopt, fd, level, name, value, len));
}

int dup(int fd) noexcept {
  FIBERIO_NEXT(dup);
  return next_dup ? next_dup(fd) : static_cast<int>(::syscall(SYS_dup, fd));
}

int dup2(int fd, int fd2) noexcept {
  FIBERIO_NEXT(dup2);
  return next_dup2 ? next_dup2(fd, fd2) : static_cast<int>(::syscall(SYS_dup2, fd, fd2));
}

int dup3(int fd, int fd2, int flags) noexcept {
  FIBERIO_NEXT(dup3);
  return next_dup3 ? next_dup3(fd, fd2, flags) : static_cast<int>(::syscall(SYS_dup3, fd, fd2, flags));
}

int pipe2(int fds[2], int flags) noexcept {
  FIBERIO_NEXT(pipe2);
  return next_pipe2 ? next_pipe2(fds, flags) : static_cast<int>(::syscall(SYS_pipe2, fds, flags));
}

int epoll_wait(int epfd, epoll_event* events, int max, int timeout_ms) noexcept {
  FIBERIO_NEXT(epoll_wait);
  return next_epoll_wait ? next_epoll_wait(epfd, events, max, timeout_ms)
                         : static_cast<int>(::syscall(SYS_epoll_wait, epfd, events, max, timeout_ms));
}

int epoll_pwait(int epfd, epoll_event* events, int max, int timeout_ms, const sigset_t* mask) noexcept {
  FIBERIO_NEXT(epoll_pwait);
  return next_epoll_pwait ? next_epoll_pwait(epfd, events, max, timeout_ms, mask)
                          : static_cast<int>(::syscall(SYS_epoll_pwait, epfd, events, max, timeout_ms, mask,
                                                       kKernelSigsetSize));
}

int epoll_pwait2(int epfd, epoll_event* events, int max, const timespec* timeout, const sigset_t* mask) noexcept {
  // Declared by glibc >= 2.35 only: look it up by name so older headers still build.
  using Fn = int (*)(int, epoll_event*, int, const timespec*, const sigset_t*);
  static std::atomic<void*> slot{nullptr};
  if (auto* f = reinterpret_cast<Fn>(next("epoll_pwait2", slot))) return f(epfd, events, max, timeout, mask);
#ifdef SYS_epoll_pwait2
  return static_cast<int>(::syscall(SYS_epoll_pwait2, epfd, events, max, timeout, mask, kKernelSigsetSize));
#else
  errno = ENOSYS;
  return -1;
#endif
}

FILE* fdopen(int fd, const char* mode) noexcept {
  FIBERIO_NEXT(fdopen);
  if (next_fdopen) return next_fdopen(fd, mode);
  errno = ENOSYS;
  return nullptr;
}

int fclose(FILE* f) noexcept {
  FIBERIO_NEXT(fclose);
  if (next_fclose) return next_fclose(f);
  errno = ENOSYS;
  return EOF;
}

pid_t waitpid(pid_t pid, int* status, int options) noexcept {
  FIBERIO_NEXT(waitpid);
  return next_waitpid ? next_waitpid(pid, status, options)
                      : static_cast<pid_t>(::syscall(SYS_wait4, pid, status, options, nullptr));
}

pid_t wait4(pid_t pid, int* status, int options, rusage* usage) noexcept {
  FIBERIO_NEXT(wait4);
  return next_wait4 ? next_wait4(pid, status, options, usage)
                    : static_cast<pid_t>(::syscall(SYS_wait4, pid, status, options, usage));
}

int waitid(idtype_t idtype, id_t id, siginfo_t* info, int options) noexcept {
  FIBERIO_NEXT(waitid);
  return next_waitid ? next_waitid(idtype, id, info, options)
                     : static_cast<int>(::syscall(SYS_waitid, idtype, id, info, options, nullptr));
}

int system(const char* command) noexcept {
  FIBERIO_NEXT(system);
  if (next_system) return next_system(command);
  errno = ENOSYS;
  return -1;
}

FILE* popen(const char* command, const char* mode) noexcept {
  FIBERIO_NEXT(popen);
  if (next_popen) return next_popen(command, mode);
  errno = ENOSYS;
  return nullptr;
}

int pclose(FILE* f) noexcept {
  FIBERIO_NEXT(pclose);
  if (next_pclose) return next_pclose(f);
  errno = ENOSYS;
  return -1;
}

int getaddrinfo(const char* node, const char* service, const addrinfo* hints, addrinfo** res) noexcept {
  FIBERIO_NEXT(getaddrinfo);
  if (next_getaddrinfo) return next_getaddrinfo(node, service, hints, res);
  errno = ENOSYS;
  return EAI_SYSTEM;
}

int getnameinfo(const sockaddr* addr, socklen_t len, char* host, socklen_t hostlen, char* serv, socklen_t servlen,
                int flags) noexcept {
  FIBERIO_NEXT(getnameinfo);
  if (next_getnameinfo) return next_getnameinfo(addr, len, host, hostlen, serv, servlen, flags);
  errno = ENOSYS;
  return EAI_SYSTEM;
}

hostent* gethostbyname(const char* name) noexcept {
  FIBERIO_NEXT(gethostbyname);
  if (next_gethostbyname) return next_gethostbyname(name);
  h_errno = NO_RECOVERY;
  return nullptr;
}

hostent* gethostbyname2(const char* name, int af) noexcept {
  FIBERIO_NEXT(gethostbyname2);
  if (next_gethostbyname2) return next_gethostbyname2(name, af);
  h_errno = NO_RECOVERY;
  return nullptr;
}

int gethostbyname_r(const char* name, hostent* ret, char* buf, size_t buflen, hostent** result,
                    int* h_errnop) noexcept {
  FIBERIO_NEXT(gethostbyname_r);
  if (next_gethostbyname_r) return next_gethostbyname_r(name, ret, buf, buflen, result, h_errnop);
  *result = nullptr;
  if (h_errnop) *h_errnop = NO_RECOVERY;
  return ENOSYS;
}

int gethostbyname2_r(const char* name, int af, hostent* ret, char* buf, size_t buflen, hostent** result,
                     int* h_errnop) noexcept {
  FIBERIO_NEXT(gethostbyname2_r);
  if (next_gethostbyname2_r) return next_gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop);
  *result = nullptr;
  if (h_errnop) *h_errnop = NO_RECOVERY;
  return ENOSYS;
}

#undef FIBERIO_NEXT

void* resolved(const char* name) noexcept { return ::dlsym(RTLD_DEFAULT, name); }

}  // namespace fiberio::patched::original
