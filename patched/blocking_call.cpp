#include "patched/blocking_call.hpp"

#include <boost/context/fiber.hpp>  // forced_unwind, as the configured backend defines it
#include <sys/epoll.h>

#include <new>
#include <system_error>

#include "patched/mode.hpp"
#include "patched/real.hpp"

namespace fiberio::patched::detail {

namespace fd = fiberio::detail;

namespace {
Waited interrupted_now() {
  Interruption i;
  i.take_current();
  i.rearm();
  return Waited::Cancelled;
}

int poll_timeout_ms(Deadline deadline) noexcept {
  if (deadline == kNoDeadline) return -1;
  auto left = deadline - Clock::now();
  if (left <= Duration::zero()) return 0;
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return ms > (1 << 30) ? (1 << 30) : static_cast<int>(ms);
}

// poll() events a single hub wait on fd can stand for (the hub watches read and write readiness, and
// reports errors and hang-ups as both).
constexpr short kReadish = POLLIN | POLLRDNORM;
constexpr short kWriteish = POLLOUT | POLLWRNORM;
}  // namespace

// ---- waits ----
Waited park_fd(Hub& hub, int fd, Io dir, Deadline deadline) {
  try {
    switch (hub.wait_fd(fd, dir, deadline, /*exclusive=*/false)) {
      case fd::FdWait::Ready:
        return Waited::Ready;
      case fd::FdWait::TimedOut:
        return Waited::TimedOut;
      case fd::FdWait::Closed:
        return Waited::Closed;
      case fd::FdWait::NotPollable:
        break;
    }
  } catch (const boost::context::detail::forced_unwind&) {
    throw;
  } catch (const TimeoutError&) {
    return interrupted_now();
  } catch (const LoopExit&) {
    return interrupted_now();
  } catch (const GreenletExit&) {
    return interrupted_now();
  } catch (const std::exception&) {
    // The hub could not watch fd (out of memory, epoll refused it): waiting in the thread is still
    // correct, only not cooperative.
  }
  return block_fd(fd, dir, deadline);
}

Waited park_any(Hub& hub, const pollfd* fds, nfds_t n, Deadline deadline) {
  const pollfd* only = nullptr;
  nfds_t valid = 0;
  for (nfds_t i = 0; i < n; ++i)
    if (fds[i].fd >= 0) {
      only = &fds[i];
      ++valid;
    }
  if (valid == 0) return park_until(deadline);
  if (valid == 1 && only->events && !(only->events & ~kReadish))
    return park_fd(hub, only->fd, Io::Read, deadline);
  if (valid == 1 && only->events && !(only->events & ~kWriteish))
    return park_fd(hub, only->fd, Io::Write, deadline);

  // Several fds (or unusual events): collect them in a private level-triggered epoll set and wait
  // for that set to become readable through the hub — one park, however many fds.
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return Waited::Ready;  // the caller re-polls; at worst it waits in the thread
  for (nfds_t i = 0; i < n; ++i) {
    if (fds[i].fd < 0) continue;
    epoll_event ev{};
    // poll's and epoll's event bits have the same values on Linux.
    ev.events = static_cast<std::uint32_t>(fds[i].events) &
                (EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDNORM | EPOLLRDBAND | EPOLLWRNORM | EPOLLWRBAND | EPOLLRDHUP);
    ev.data.fd = fds[i].fd;
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, fds[i].fd, &ev) == 0) continue;
    if (errno == EEXIST) {  // the same fd listed twice: watch the union of its events
      epoll_event cur{};
      for (nfds_t j = 0; j < i; ++j)
        if (fds[j].fd == fds[i].fd) cur.events |= static_cast<std::uint32_t>(fds[j].events);
      ev.events |= cur.events & (EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDNORM | EPOLLRDBAND | EPOLLWRNORM |
                                 EPOLLWRBAND | EPOLLRDHUP);
      if (::epoll_ctl(ep, EPOLL_CTL_MOD, fds[i].fd, &ev) == 0) continue;
    }
    // A regular file (always ready) or a closed fd (POLLNVAL): poll() reports it at once.
    real::close(ep);
    return Waited::Ready;
  }
  Waited w = park_fd(hub, ep, Io::Read, deadline);
  hub.forget_fd(ep);
  real::close(ep);
  return w == Waited::Closed ? Waited::Ready : w;
}

Waited park_until(Deadline deadline) {
  try {
    fd::park_until(deadline);
    return Waited::Ready;
  } catch (const boost::context::detail::forced_unwind&) {
    throw;
  } catch (...) {
    return interrupted_now();
  }
}

Waited block_fd(int fd, Io dir, Deadline deadline) noexcept {
  pollfd p{fd, static_cast<short>(dir == Io::Read ? POLLIN : POLLOUT), 0};
  for (;;) {
    int ms = poll_timeout_ms(deadline);
    int r = real::poll(&p, 1, ms);
    if (r > 0) return (p.revents & POLLNVAL) ? Waited::Closed : Waited::Ready;
    // EINTR: libc would restart a blocking read after an SA_RESTART handler (the usual kind), so do
    // the same; anything else is for the retried call itself to report.
    if (r < 0 && errno != EINTR) return Waited::Ready;
    if (r == 0 && deadline != kNoDeadline && Clock::now() >= deadline) return Waited::TimedOut;
  }
}

// ---- BlockingCall ----
BlockingCall::BlockingCall(int fd, Io dir) noexcept : fd_(fd), dir_(dir), saved_errno_(errno) {
  hub_ = cooperative_hub();
  auto& table = FdRegistry::instance();
  FdInfo info = hub_ ? table.classify(fd) : table.lookup(fd);
  if (info.kind != FdKind::Managed || info.user_nonblock) return;
  if (hub_) {
    if (!info.shim_nonblock && !table.take_over(fd)) return;
    mode_ = Mode::Fiber;
  } else {
    if (!info.shim_nonblock) return;  // really blocking: libc blocks by itself
    mode_ = Mode::Thread;
  }
  tcp_ = info.tcp;
  auto t = dir == Io::Read ? info.rcvtimeo : info.sndtimeo;
  if (t.count() > 0) deadline_ = fd::deadline_after(std::chrono::duration_cast<Duration>(t));
  errno = saved_errno_;  // classification may have touched it
}

bool BlockingCall::wait_again() {
  int e = errno;
  if (e != EAGAIN && e != EWOULDBLOCK) return false;
  return wait();
}

bool BlockingCall::wait() {
  Waited w = mode_ == Mode::Fiber ? park_fd(*hub_, fd_, dir_, deadline_) : block_fd(fd_, dir_, deadline_);
  switch (w) {
    case Waited::Ready:
      return true;
    case Waited::TimedOut:
      errno = EAGAIN;  // what a blocking call reports after SO_RCVTIMEO / SO_SNDTIMEO
      return false;
    case Waited::Closed:
      errno = EBADF;
      return false;
    case Waited::Cancelled:
      errno = ECANCELED;
      return false;
    case Waited::Interrupted:
      errno = EINTR;
      return false;
  }
  return false;
}

}  // namespace fiberio::patched::detail
