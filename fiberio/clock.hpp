// Time as fiberio measures it: a monotonic clock, durations, and optional timeouts. No Boost.
#pragma once
#include <chrono>
#include <optional>

namespace fiberio {

namespace detail {
// Set while this thread's hub runs on virtual time (testing.hpp): the time Clock::now() reports there.
extern thread_local constinit const std::chrono::steady_clock::time_point* t_virtual_now;
}  // namespace detail

// std::chrono::steady_clock, except on a hub in virtual-time mode (testing::set_virtual_time), where
// now() is that hub's virtual clock. Its time_point is steady_clock's, so the two mix freely.
struct Clock {
  using duration = std::chrono::steady_clock::duration;
  using rep = duration::rep;
  using period = duration::period;
  using time_point = std::chrono::steady_clock::time_point;
  static constexpr bool is_steady = true;
  static time_point now() noexcept {
    if (const time_point* v = detail::t_virtual_now) [[unlikely]] return *v;
    return std::chrono::steady_clock::now();
  }
};
using Duration = Clock::duration;
// Every wait takes std::optional<Duration>: empty means "no timeout".
using OptDuration = std::optional<Duration>;
namespace detail {

using Deadline = Clock::time_point;
inline constexpr Deadline kNoDeadline = Deadline::max();
inline Deadline deadline_after(const OptDuration& d) {
  if (!d) return kNoDeadline;
  if (*d <= Duration::zero()) return Clock::now();
  auto now = Clock::now();
  return (*d >= kNoDeadline - now) ? kNoDeadline : now + *d;
}}  // namespace detail

}  // namespace fiberio
