// Shims: poll, select and epoll_wait families. In a fiber they check readiness without blocking, then
// park the fiber until one of the fds is ready or the timeout passes, and check again: the answer is
// always the real call's own (with a zero timeout), so every event and error bit is libc's.
//
// The signal mask of ppoll / pselect / epoll_pwait applies to those checks only: a parked fiber is not
// a thread in a system call, and the hub's own wait keeps the thread's mask.
#undef _FORTIFY_SOURCE
#include <poll.h>
#include <sys/epoll.h>
#include <sys/select.h>

#include <algorithm>
#include <vector>

#include "patched/blocking_call.hpp"
#include "patched/mode.hpp"
#include "patched/real.hpp"

namespace fiberio::patched::detail {
namespace {

Deadline deadline_of(const timespec* ts) noexcept {
  if (!ts) return kNoDeadline;
  return fiberio::detail::deadline_after(
      std::chrono::duration_cast<Duration>(std::chrono::seconds(ts->tv_sec) + std::chrono::nanoseconds(ts->tv_nsec)));
}

Deadline deadline_of_ms(int ms) noexcept {
  return ms < 0 ? kNoDeadline : fiberio::detail::deadline_after(std::chrono::milliseconds(ms));
}

bool valid(const timespec* ts) noexcept { return !ts || (ts->tv_sec >= 0 && ts->tv_nsec >= 0 && ts->tv_nsec < 1000000000); }
bool is_zero(const timespec* ts) noexcept { return ts && ts->tv_sec == 0 && ts->tv_nsec == 0; }

// Shared tail of every wait: a failed park ends the call like an interrupted libc call would.
int fail(Waited w) noexcept {
  errno = w == Waited::Cancelled ? ECANCELED : EINTR;
  return -1;
}

int poll_in_fiber(Hub& hub, pollfd* fds, nfds_t n, Deadline deadline, const sigset_t* mask) {
  int saved = errno;
  const timespec zero{0, 0};
  for (;;) {
    int r = mask ? real::ppoll(fds, n, &zero, mask) : real::poll(fds, n, 0);
    if (r != 0) {
      if (r > 0) errno = saved;
      return r;
    }
    if (Clock::now() >= deadline) {
      errno = saved;
      return 0;
    }
    Waited w = park_any(hub, fds, n, deadline);
    if (w == Waited::Cancelled || w == Waited::Interrupted) return fail(w);
  }
}

int select_in_fiber(Hub& hub, int nfds, fd_set* rd, fd_set* wr, fd_set* ex, Deadline deadline, timeval* left,
                    const sigset_t* mask) {
  int saved = errno;
  const fd_set none{};
  const fd_set in_rd = rd ? *rd : none, in_wr = wr ? *wr : none, in_ex = ex ? *ex : none;
  std::vector<pollfd> watch;
  for (int fd = 0; fd < nfds; ++fd) {
    short ev = static_cast<short>((FD_ISSET(fd, &in_rd) ? POLLIN : 0) | (FD_ISSET(fd, &in_wr) ? POLLOUT : 0) |
                                  (FD_ISSET(fd, &in_ex) ? POLLPRI : 0));
    if (ev) watch.push_back({fd, ev, 0});
  }
  auto report_left = [&] {
    if (!left) return;
    auto d = deadline == kNoDeadline ? Duration::zero() : std::max(Duration::zero(), deadline - Clock::now());
    left->tv_sec = static_cast<time_t>(std::chrono::duration_cast<std::chrono::seconds>(d).count());
    left->tv_usec = static_cast<suseconds_t>((d % std::chrono::seconds(1)) / std::chrono::microseconds(1));
  };
  for (;;) {
    if (rd) *rd = in_rd;
    if (wr) *wr = in_wr;
    if (ex) *ex = in_ex;
    timespec zero{0, 0};
    timeval tv_zero{0, 0};
    int r = mask ? real::pselect(nfds, rd, wr, ex, &zero, mask) : real::select(nfds, rd, wr, ex, &tv_zero);
    if (r != 0 || Clock::now() >= deadline) {
      if (r >= 0) errno = saved;
      report_left();
      return r;  // on 0 the real call has cleared the sets, as a timed-out select does
    }
    Waited w = park_any(hub, watch.data(), watch.size(), deadline);
    if (w == Waited::Cancelled || w == Waited::Interrupted) {
      report_left();
      return fail(w);
    }
  }
}

template <class Check>
int epoll_in_fiber(Hub& hub, int epfd, Deadline deadline, Check check) {
  int saved = errno;
  for (;;) {
    int r = check();
    if (r != 0) {
      if (r > 0) errno = saved;
      return r;
    }
    if (Clock::now() >= deadline) {
      errno = saved;
      return 0;
    }
    // An epoll fd is itself readable while its set has ready events: wait for that through the hub.
    Waited w = park_fd(hub, epfd, Io::Read, deadline);
    if (w == Waited::Closed) {
      errno = EBADF;
      return -1;
    }
    if (w == Waited::Cancelled || w == Waited::Interrupted) return fail(w);
  }
}

}  // namespace
}  // namespace fiberio::patched::detail

using namespace fiberio::patched;
using namespace fiberio::patched::detail;

extern "C" {

[[noreturn]] void __chk_fail(void);

int poll(pollfd* fds, nfds_t n, int timeout) {
  Hub* hub = cooperative_hub();
  if (!hub || timeout == 0) return real::poll(fds, n, timeout);
  return poll_in_fiber(*hub, fds, n, deadline_of_ms(timeout), nullptr);
}

int ppoll(pollfd* fds, nfds_t n, const timespec* timeout, const sigset_t* mask) {
  Hub* hub = cooperative_hub();
  if (!hub || is_zero(timeout) || !valid(timeout)) return real::ppoll(fds, n, timeout, mask);
  return poll_in_fiber(*hub, fds, n, deadline_of(timeout), mask);
}

int select(int nfds, fd_set* rd, fd_set* wr, fd_set* ex, timeval* timeout) {
  Hub* hub = cooperative_hub();
  bool zero = timeout && timeout->tv_sec == 0 && timeout->tv_usec == 0;
  bool bad = timeout && (timeout->tv_sec < 0 || timeout->tv_usec < 0);
  if (!hub || zero || bad || nfds < 0 || nfds > FD_SETSIZE) return real::select(nfds, rd, wr, ex, timeout);
  Deadline deadline =
      timeout ? fiberio::detail::deadline_after(std::chrono::duration_cast<Duration>(
                    std::chrono::seconds(timeout->tv_sec) + std::chrono::microseconds(timeout->tv_usec)))
              : kNoDeadline;
  return select_in_fiber(*hub, nfds, rd, wr, ex, deadline, timeout, nullptr);
}

int pselect(int nfds, fd_set* rd, fd_set* wr, fd_set* ex, const timespec* timeout, const sigset_t* mask) {
  Hub* hub = cooperative_hub();
  if (!hub || is_zero(timeout) || !valid(timeout) || nfds < 0 || nfds > FD_SETSIZE)
    return real::pselect(nfds, rd, wr, ex, timeout, mask);
  return select_in_fiber(*hub, nfds, rd, wr, ex, deadline_of(timeout), nullptr, mask);
}

int epoll_wait(int epfd, epoll_event* events, int max, int timeout) {
  Hub* hub = cooperative_hub();
  if (!hub || timeout == 0) return real::epoll_wait(epfd, events, max, timeout);
  return epoll_in_fiber(*hub, epfd, deadline_of_ms(timeout), [&] { return real::epoll_wait(epfd, events, max, 0); });
}

int epoll_pwait(int epfd, epoll_event* events, int max, int timeout, const sigset_t* mask) {
  Hub* hub = cooperative_hub();
  if (!hub || timeout == 0) return real::epoll_pwait(epfd, events, max, timeout, mask);
  return epoll_in_fiber(*hub, epfd, deadline_of_ms(timeout),
                        [&] { return real::epoll_pwait(epfd, events, max, 0, mask); });
}

int epoll_pwait2(int epfd, epoll_event* events, int max, const timespec* timeout, const sigset_t* mask) {
  Hub* hub = cooperative_hub();
  if (!hub || is_zero(timeout) || !valid(timeout)) return real::epoll_pwait2(epfd, events, max, timeout, mask);
  const timespec zero{0, 0};
  return epoll_in_fiber(*hub, epfd, deadline_of(timeout),
                        [&] { return real::epoll_pwait2(epfd, events, max, &zero, mask); });
}

int __poll_chk(pollfd* fds, nfds_t n, int timeout, size_t fdslen) {
  if (fdslen / sizeof(*fds) < n) __chk_fail();
  return poll(fds, n, timeout);
}

int __ppoll_chk(pollfd* fds, nfds_t n, const timespec* timeout, const sigset_t* mask, size_t fdslen) {
  if (fdslen / sizeof(*fds) < n) __chk_fail();
  return ppoll(fds, n, timeout, mask);
}

}  // extern "C"
