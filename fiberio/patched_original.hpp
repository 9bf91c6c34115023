// fiberio::patched::original: the real libc functions behind the shims (gevent: get_original).
// Always the thread-blocking libc call, whatever the switch says. Part of <fiberio/patched.hpp>.
//
// Each is looked up lazily with dlsym(RTLD_NEXT, name) on first use (so the shims work whether this
// library is LD_PRELOADed or linked, and even when a shim runs before any constructor did). If the
// lookup is impossible — dlsym re-entered us (a malloc replacement that reads a file while dlsym
// allocates), or the symbol does not exist — the call goes straight to the kernel with syscall(), so a
// shim can never recurse into itself.
#pragma once
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>

namespace fiberio::patched::original {

int socket(int domain, int type, int protocol) noexcept;
int socketpair(int domain, int type, int protocol, int sv[2]) noexcept;
int connect(int fd, const sockaddr* addr, socklen_t len) noexcept;
int accept4(int fd, sockaddr* addr, socklen_t* len, int flags) noexcept;
ssize_t read(int fd, void* buf, size_t n) noexcept;
ssize_t readv(int fd, const iovec* iov, int iovcnt) noexcept;
ssize_t recvfrom(int fd, void* buf, size_t n, int flags, sockaddr* addr, socklen_t* len) noexcept;
ssize_t recvmsg(int fd, msghdr* msg, int flags) noexcept;
ssize_t write(int fd, const void* buf, size_t n) noexcept;
ssize_t writev(int fd, const iovec* iov, int iovcnt) noexcept;
ssize_t sendto(int fd, const void* buf, size_t n, int flags, const sockaddr* addr, socklen_t len) noexcept;
ssize_t sendmsg(int fd, const msghdr* msg, int flags) noexcept;
int poll(pollfd* fds, nfds_t n, int timeout_ms) noexcept;
int ppoll(pollfd* fds, nfds_t n, const timespec* timeout, const sigset_t* mask) noexcept;
int select(int nfds, fd_set* r, fd_set* w, fd_set* e, timeval* timeout) noexcept;
int pselect(int nfds, fd_set* r, fd_set* w, fd_set* e, const timespec* timeout, const sigset_t* mask) noexcept;
unsigned sleep(unsigned seconds) noexcept;
int usleep(useconds_t usec) noexcept;
int nanosleep(const timespec* req, timespec* rem) noexcept;
int clock_nanosleep(clockid_t clock, int flags, const timespec* req, timespec* rem) noexcept;
int close(int fd) noexcept;
int close_range(unsigned first, unsigned last, int flags) noexcept;
void closefrom(int lowfd) noexcept;
int shutdown(int fd, int how) noexcept;
// fcntl/ioctl take their optional argument as a pointer-sized value, as glibc's own wrappers do.
int fcntl(int fd, int cmd, void* arg) noexcept;
int ioctl(int fd, unsigned long request, void* arg) noexcept;
int setsockopt(int fd, int level, int name, const void* value, socklen_t len) noexcept;
int getsockopt(int fd, int level, int name, void* value, socklen_t* len) noexcept;
int dup(int fd) noexcept;
int dup2(int fd, int fd2) noexcept;
int dup3(int fd, int fd2, int flags) noexcept;
int pipe2(int fds[2], int flags) noexcept;
int epoll_wait(int epfd, epoll_event* events, int max, int timeout_ms) noexcept;
int epoll_pwait(int epfd, epoll_event* events, int max, int timeout_ms, const sigset_t* mask) noexcept;
int epoll_pwait2(int epfd, epoll_event* events, int max, const timespec* timeout, const sigset_t* mask) noexcept;
int fclose(FILE* f) noexcept;
FILE* fdopen(int fd, const char* mode) noexcept;
// Child processes. system, popen and pclose have no system call to fall back on (ENOSYS).
pid_t waitpid(pid_t pid, int* status, int options) noexcept;
pid_t wait4(pid_t pid, int* status, int options, rusage* usage) noexcept;
int waitid(idtype_t idtype, id_t id, siginfo_t* info, int options) noexcept;
int system(const char* command) noexcept;
FILE* popen(const char* command, const char* mode) noexcept;
int pclose(FILE* f) noexcept;
// The resolver has no system call to fall back on: without libc's they fail (EAI_SYSTEM / ENOSYS).
int getaddrinfo(const char* node, const char* service, const addrinfo* hints, addrinfo** res) noexcept;
int getnameinfo(const sockaddr* addr, socklen_t len, char* host, socklen_t hostlen, char* serv,
                socklen_t servlen, int flags) noexcept;
hostent* gethostbyname(const char* name) noexcept;
hostent* gethostbyname2(const char* name, int af) noexcept;
int gethostbyname_r(const char* name, hostent* ret, char* buf, size_t buflen, hostent** result,
                    int* h_errnop) noexcept;
int gethostbyname2_r(const char* name, int af, hostent* ret, char* buf, size_t buflen, hostent** result,
                     int* h_errnop) noexcept;

// The classic entry points, as the kernel sees them.
inline int accept(int fd, sockaddr* addr, socklen_t* len) noexcept { return original::accept4(fd, addr, len, 0); }
inline ssize_t recv(int fd, void* buf, size_t n, int flags) noexcept {
  return original::recvfrom(fd, buf, n, flags, nullptr, nullptr);
}
inline ssize_t send(int fd, const void* buf, size_t n, int flags) noexcept {
  return original::sendto(fd, buf, n, flags, nullptr, 0);
}
inline int pipe(int fds[2]) noexcept { return original::pipe2(fds, 0); }

// The address the process resolves `name` to (dlsym RTLD_DEFAULT): tells whether a shim is in effect.
void* resolved(const char* name) noexcept;

}  // namespace fiberio::patched::original
