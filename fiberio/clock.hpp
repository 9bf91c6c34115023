// Time as fiberio measures it: a monotonic clock, durations, and optional timeouts. No Boost.
#pragma once
#include <chrono>
#include <optional>

namespace fiberio {

using Clock = std::chrono::steady_clock;
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
