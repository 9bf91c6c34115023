// Shims: socket creation, connect, accept, and the socket options the shims must honour themselves.
#undef _FORTIFY_SOURCE
#include <poll.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cstring>

#include "patched/blocking_call.hpp"
#include "patched/mode.hpp"
#include "patched/real.hpp"

namespace fiberio::patched::detail {
namespace {

int family_of(int fd) noexcept {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  return ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0 ? ss.ss_family : AF_UNSPEC;
}

// A full AF_UNIX backlog makes a nonblocking connect fail with EAGAIN, and no readiness event tells
// when to retry: a blocking connect would wait, so retry with a short, growing pause.
bool pause_before_retry(BlockingCall& call, Duration& pause) {
  auto now = Clock::now();
  if (now >= call.deadline()) {
    errno = EAGAIN;
    return false;
  }
  auto until = std::min(call.deadline(), now + pause);
  pause = std::min<Duration>(pause * 2, std::chrono::milliseconds(50));
  if (call.in_fiber()) {
    if (park_until(until) == Waited::Cancelled) {
      errno = ECANCELED;
      return false;
    }
  } else {
    auto d = until - now;
    timespec ts{static_cast<time_t>(std::chrono::duration_cast<std::chrono::seconds>(d).count()),
                static_cast<long>((d % std::chrono::seconds(1)) / std::chrono::nanoseconds(1))};
    real::nanosleep(&ts, nullptr);
  }
  return true;
}

std::chrono::nanoseconds timeval_of(int name, const void* value, socklen_t len) noexcept {
#ifdef SO_RCVTIMEO_NEW
  if (name == SO_RCVTIMEO_NEW || name == SO_SNDTIMEO_NEW) {
    struct {
      long long sec, usec;
    } t{};
    if (len < sizeof t) return std::chrono::nanoseconds{0};
    std::memcpy(&t, value, sizeof t);
    return std::chrono::seconds(t.sec) + std::chrono::microseconds(t.usec);
  }
#endif
  timeval tv{};
  if (len < sizeof tv) return std::chrono::nanoseconds{0};
  std::memcpy(&tv, value, sizeof tv);
  return std::chrono::seconds(tv.tv_sec) + std::chrono::microseconds(tv.tv_usec);
}

// Which timeout an option name sets: 'r' receive, 's' send, 0 neither.
char timeout_kind(int level, int name) noexcept {
  if (level != SOL_SOCKET) return 0;
  if (name == SO_RCVTIMEO) return 'r';
  if (name == SO_SNDTIMEO) return 's';
#ifdef SO_RCVTIMEO_NEW
  if (name == SO_RCVTIMEO_NEW) return 'r';
  if (name == SO_SNDTIMEO_NEW) return 's';
#endif
  return 0;
}

}  // namespace
}  // namespace fiberio::patched::detail

using namespace fiberio::patched;
using namespace fiberio::patched::detail;

extern "C" {

int socket(int domain, int type, int protocol) noexcept {
  bool user_nb = type & SOCK_NONBLOCK;
  // Created inside a fiber: make it nonblocking right away, which costs nothing here.
  bool shim_nb = !user_nb && cooperative_hub();
  int fd = real::socket(domain, type | (shim_nb ? SOCK_NONBLOCK : 0), protocol);
  bool tcp = (domain == AF_INET || domain == AF_INET6) && (type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) == SOCK_STREAM &&
             (protocol == 0 || protocol == IPPROTO_TCP);
  if (fd >= 0) FdRegistry::instance().created(fd, true, user_nb, shim_nb, tcp);
  return fd;
}

int socketpair(int domain, int type, int protocol, int sv[2]) noexcept {
  // Left as the user made it until a fiber blocks on it: socketpairs are often handed to children,
  // which must not inherit an O_NONBLOCK they never asked for.
  int r = real::socketpair(domain, type, protocol, sv);
  if (r == 0) {
    bool user_nb = type & SOCK_NONBLOCK;
    FdRegistry::instance().created(sv[0], true, user_nb, false);
    FdRegistry::instance().created(sv[1], true, user_nb, false);
  }
  return r;
}

int accept4(int fd, sockaddr* addr, socklen_t* len, int flags) {
  BlockingCall call(fd, Io::Read);
  bool user_nb = flags & SOCK_NONBLOCK;
  bool shim_nb = !user_nb && cooperative_hub();
  int real_flags = flags | (shim_nb ? SOCK_NONBLOCK : 0);
  auto accepted = [&](int r) {
    if (r >= 0) FdRegistry::instance().created(r, true, user_nb, shim_nb, FdRegistry::instance().lookup(fd).tcp);
    return r;
  };
  if (call.passthrough()) return accepted(real::accept4(fd, addr, len, real_flags));
  for (;;) {
    int r = real::accept4(fd, addr, len, real_flags);
    if (r >= 0) return call.ok(accepted(r));
    if (!call.wait_again()) return -1;
  }
}

int accept(int fd, sockaddr* addr, socklen_t* len) { return accept4(fd, addr, len, 0); }

int connect(int fd, const sockaddr* addr, socklen_t len) {
  BlockingCall call(fd, Io::Write);
  if (call.passthrough()) return real::connect(fd, addr, len);
  Duration pause = std::chrono::milliseconds(1);
  for (;;) {
    if (real::connect(fd, addr, len) == 0) return call.ok(0);
    if (errno == EINPROGRESS) break;
    if (errno == EAGAIN && family_of(fd) == AF_UNIX) {
      if (!pause_before_retry(call, pause)) return -1;
      continue;
    }
    return -1;
  }
  for (;;) {
    if (!call.wait()) {
      if (errno == EAGAIN) errno = EINPROGRESS;  // Linux's blocking connect after SO_SNDTIMEO
      return -1;
    }
    pollfd p{fd, POLLOUT, 0};
    if (real::poll(&p, 1, 0) == 0) continue;  // woken by another event: still connecting
    int err = 0;
    socklen_t elen = sizeof err;
    if (real::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0) return -1;
    if (err) {
      errno = err;
      return -1;
    }
    // Linux reports a completed nonblocking connect once more, as success, to the next connect() on
    // the socket. Take that report here, so the caller's next connect() gets EISCONN, as after a
    // blocking connect.
    (void)real::connect(fd, addr, len);
    return call.ok(0);
  }
}

// A shutdown needs nothing more: the kernel reports it to the hub's epoll as a hang-up, which wakes
// every fiber blocked on the socket (a reader then sees EOF, a listener's accept() sees EINVAL).
int shutdown(int fd, int how) noexcept { return real::shutdown(fd, how); }

int setsockopt(int fd, int level, int name, const void* value, socklen_t len) noexcept {
  int r = real::setsockopt(fd, level, name, value, len);
  // The kernel keeps the value too (getsockopt shows it), but ignores it once the shims made the
  // socket nonblocking: they apply it themselves.
  if (char k = timeout_kind(level, name); r == 0 && k && value)
    FdRegistry::instance().set_timeout(fd, k == 'r', timeval_of(name, value, len));
  return r;
}

int getsockopt(int fd, int level, int name, void* value, socklen_t* len) noexcept {
  int r = real::getsockopt(fd, level, name, value, len);
  // Reading a timeout also re-syncs the bookkeeping (it may have been set by a raw system call).
  if (char k = timeout_kind(level, name); r == 0 && k && value && len)
    FdRegistry::instance().set_timeout(fd, k == 'r', timeval_of(name, value, *len));
  return r;
}

}  // extern "C"
