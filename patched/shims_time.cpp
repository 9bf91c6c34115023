// Shims: the sleep family. In a fiber, sleeping parks only that fiber (gevent's patched time.sleep).
//
// Zero and invalid durations go to libc untouched (same result, same EINVAL; Boost.Fiber's spinlock
// backs off with a zero sleep and must never be turned into a fiber switch). A kill or an expired
// Timeout guard ends the sleep early as a signal would (EINTR), but reports nothing left to sleep:
// the usual `while (nanosleep(&t, &t) == -1 && errno == EINTR);` then stops at once instead of
// spinning, and the fiber gets its GreenletExit / TimeoutError at its next suspension point.
#undef _FORTIFY_SOURCE
#include <time.h>
#include <unistd.h>

#include <algorithm>

#include "patched/blocking_call.hpp"
#include "patched/mode.hpp"
#include "patched/real.hpp"

namespace fiberio::patched::detail {
namespace {

bool valid(const timespec* ts) noexcept { return ts && ts->tv_sec >= 0 && ts->tv_nsec >= 0 && ts->tv_nsec < 1000000000; }
bool positive(const timespec* ts) noexcept { return ts->tv_sec > 0 || ts->tv_nsec > 0; }

Duration to_duration(const timespec& ts) noexcept {
  return std::chrono::duration_cast<Duration>(std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec));
}

// Parks for d; true if the whole time passed, false if the fiber was interrupted. errno unchanged.
bool sleep_fiber(Duration d) {
  int saved = errno;
  Waited w = park_until(fiberio::detail::deadline_after(d));
  errno = saved;
  return w != Waited::Cancelled;
}

}  // namespace
}  // namespace fiberio::patched::detail

using namespace fiberio::patched;
using namespace fiberio::patched::detail;

extern "C" {

unsigned sleep(unsigned seconds) {
  if (seconds == 0 || !cooperative_hub()) return real::sleep(seconds);
  auto deadline = fiberio::detail::deadline_after(std::chrono::seconds(seconds));
  if (sleep_fiber(std::chrono::seconds(seconds))) return 0;
  // Interrupted: sleep() reports the whole seconds it did not sleep, as after a signal.
  auto left = std::chrono::ceil<std::chrono::seconds>(std::max(Duration::zero(), deadline - Clock::now()));
  return static_cast<unsigned>(left.count());
}

int usleep(useconds_t usec) {
  if (usec == 0 || !cooperative_hub()) return real::usleep(usec);
  if (sleep_fiber(std::chrono::microseconds(usec))) return 0;
  errno = EINTR;
  return -1;
}

int nanosleep(const timespec* req, timespec* rem) {
  if (!valid(req) || !positive(req) || !cooperative_hub()) return real::nanosleep(req, rem);
  if (sleep_fiber(to_duration(*req))) return 0;
  if (rem) *rem = timespec{0, 0};
  errno = EINTR;
  return -1;
}

int clock_nanosleep(clockid_t clock, int flags, const timespec* req, timespec* rem) {
  bool known_clock = clock == CLOCK_MONOTONIC || clock == CLOCK_REALTIME || clock == CLOCK_BOOTTIME || clock == CLOCK_TAI;
  if (!known_clock || !valid(req) || !cooperative_hub()) return real::clock_nanosleep(clock, flags, req, rem);
  Duration d = to_duration(*req);
  if (flags & TIMER_ABSTIME) {
    timespec now{};
    if (::clock_gettime(clock, &now) != 0) return real::clock_nanosleep(clock, flags, req, rem);
    d -= to_duration(now);
    if (d <= Duration::zero()) return 0;
  } else if (d <= Duration::zero()) {
    return real::clock_nanosleep(clock, flags, req, rem);
  }
  if (sleep_fiber(d)) return 0;
  if (rem && !(flags & TIMER_ABSTIME)) *rem = timespec{0, 0};
  return EINTR;  // clock_nanosleep returns its error; errno is left alone
}

}  // extern "C"
