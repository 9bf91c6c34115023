// Shims: the lifecycle and flags of fds — close wakes waiters, dups share the shims' view, and
// fcntl / ioctl(FIONBIO) show and set the user's own O_NONBLOCK whatever the shims put underneath.
#undef _FORTIFY_SOURCE
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "patched/blocking_call.hpp"
#include "patched/mode.hpp"
#include "patched/real.hpp"

namespace fiberio::patched::detail {
namespace {

// Wakes the fibers waiting on fd, on whichever thread's hub (they see EBADF), and unregisters it,
// before the number can be reused. Whether or not the shims are switched on: a stale registration
// would make a later fd with the same number invisible to the hub. (In a vfork child it does nothing:
// see FdRegistry.)
bool before_close(int fd) noexcept { return FdRegistry::instance().closing(fd); }

bool is_open(int fd) noexcept { return real::fcntl(fd, F_GETFD, nullptr) >= 0; }

int dup_onto(int fd, int fd2, int flags, bool three) noexcept {
  // dup2 closes fd2 first: treat it as a close, but only if the call can succeed. A vfork child's
  // dup2 (a shell redirecting stdout before exec) must leave the parent's view alone.
  bool ours = fd != fd2 && is_open(fd) && before_close(fd2) && !FdRegistry::instance().in_vfork_child();
  int r = three ? real::dup3(fd, fd2, flags) : real::dup2(fd, fd2);
  if (r >= 0 && ours) FdRegistry::instance().copy(fd, r);
  return r;
}

int fcntl_impl(int fd, int cmd, void* arg) {
  auto& table = FdRegistry::instance();
  switch (cmd) {
    case F_GETFL: {
      int r = real::fcntl(fd, cmd, arg);
      FdInfo info = table.lookup(fd);
      if (r >= 0 && info.shim_nonblock) r = (r & ~O_NONBLOCK) | (info.user_nonblock ? O_NONBLOCK : 0);
      return r;
    }
    case F_SETFL: {
      long flags = reinterpret_cast<long>(arg);
      FdInfo info = table.lookup(fd);
      bool user_nb = flags & O_NONBLOCK;
      if (info.shim_nonblock) flags |= O_NONBLOCK;  // the shims still need it underneath
      int r = real::fcntl(fd, cmd, reinterpret_cast<void*>(flags));
      if (r == 0) table.set_user_nonblock(fd, user_nb);
      return r;
    }
    case F_DUPFD:
    case F_DUPFD_CLOEXEC: {
      int r = real::fcntl(fd, cmd, arg);
      if (r >= 0) table.copy(fd, r);
      return r;
    }
    default:
      return real::fcntl(fd, cmd, arg);
  }
}

}  // namespace
}  // namespace fiberio::patched::detail

using namespace fiberio::patched;
using namespace fiberio::patched::detail;

extern "C" {

int close(int fd) {
  before_close(fd);
  return real::close(fd);
}

int fclose(FILE* f) {
  // A FILE over a socket (fdopen) closes its fd inside libc, where no shim sees it.
  if (f) {
    int saved = errno;
    int fd = ::fileno(f);  // -1 and EBADF for a stream without an fd (fmemopen): not the caller's error
    errno = saved;
    if (fd >= 0) before_close(fd);
  }
  return real::fclose(f);
}

// close_range(2): every fd in the range that fiberio tracks is closed as close() would be. With
// CLOSE_RANGE_CLOEXEC nothing is closed; with CLOSE_RANGE_UNSHARE only this thread's copy of the fd
// table loses them, so only this thread's hub forgets them.
int close_range(unsigned first, unsigned last, int flags) noexcept {
#ifndef CLOSE_RANGE_CLOEXEC
  constexpr int CLOSE_RANGE_CLOEXEC = 1 << 2, CLOSE_RANGE_UNSHARE = 1 << 1;
#endif
  if (first <= last && !(flags & CLOSE_RANGE_CLOEXEC)) {
    if (flags & CLOSE_RANGE_UNSHARE) {
      if (auto* hub = Hub::get())
        FdRegistry::instance().for_each_tracked(first, last, [hub](int fd) { hub->forget_fd(fd); });
    } else {
      FdRegistry::instance().for_each_tracked(first, last, [](int fd) { before_close(fd); });
    }
  }
  return real::close_range(first, last, flags);
}

void closefrom(int lowfd) noexcept {
  if (lowfd < 0) lowfd = 0;
  FdRegistry::instance().for_each_tracked(static_cast<unsigned>(lowfd), ~0U, [](int fd) { before_close(fd); });
  real::closefrom(lowfd);
}

int dup(int fd) noexcept {
  int r = real::dup(fd);
  if (r >= 0) FdRegistry::instance().copy(fd, r);
  return r;
}

int dup2(int fd, int fd2) noexcept { return dup_onto(fd, fd2, 0, false); }

int dup3(int fd, int fd2, int flags) noexcept { return dup_onto(fd, fd2, flags, true); }

int pipe2(int fds[2], int flags) noexcept {
  // Left as the user made it until a fiber blocks on it (see socketpair).
  int r = real::pipe2(fds, flags);
  if (r == 0) {
    bool user_nb = flags & O_NONBLOCK;
    FdRegistry::instance().created(fds[0], false, user_nb, false);
    FdRegistry::instance().created(fds[1], false, user_nb, false);
  }
  return r;
}

int pipe(int fds[2]) noexcept { return pipe2(fds, 0); }

// fcntl's third argument is an int or a pointer, by command: read it as glibc does.
int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  return fcntl_impl(fd, cmd, arg);
}

int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  return fcntl_impl(fd, cmd, arg);
}

int ioctl(int fd, unsigned long request, ...) noexcept {
  va_list ap;
  va_start(ap, request);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  if (request != FIONBIO || !arg) return real::ioctl(fd, request, arg);
  bool on = *static_cast<const int*>(arg) != 0;
  FdInfo info = FdRegistry::instance().lookup(fd);
  if (info.shim_nonblock && !on) {
    // The user wants it blocking: the fd stays O_NONBLOCK underneath, the shims block for them.
    if (!is_open(fd)) return -1;  // errno EBADF, as the real ioctl would say
    FdRegistry::instance().set_user_nonblock(fd, false);
    return 0;
  }
  int r = real::ioctl(fd, request, arg);
  if (r == 0) FdRegistry::instance().set_user_nonblock(fd, on);
  return r;
}

}  // extern "C"
