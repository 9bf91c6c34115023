// Time: sleep, yield, and the Timeout guard.
#pragma once
#include <functional>
#include <utility>

#include "fiberio/park.hpp"

namespace fiberio {

// Blocks the calling fiber (only) for d. sleep(0) is yield().
void sleep(Duration d);
// Lets every other ready fiber run once (round-robin), then continues.
void yield();

// A scoped deadline for the calling fiber: every cooperative blocking call inside its scope throws
// TimeoutError once the deadline passes (TimeoutError::is(*this) tells it was this guard). Nested
// guards fire in deadline order; a guard that has left its scope never fires. Cooperative: a CPU loop
// that never blocks or yields is not interrupted.
class Timeout {
 public:
  explicit Timeout(Duration d);
  ~Timeout();
  Timeout(const Timeout&) = delete;
  Timeout& operator=(const Timeout&) = delete;
  Duration duration() const noexcept { return after_; }
  // True once this guard has thrown its TimeoutError.
  bool fired() const noexcept;

 private:
  boost::fibers::context* ctx_;
  Duration after_;
};

// Runs f(args...) under a Timeout(d); TimeoutError propagates if it expires.
template <class F, class... Args>
decltype(auto) with_timeout(Duration d, F&& f, Args&&... args) {
  Timeout t(d);
  return std::invoke(std::forward<F>(f), std::forward<Args>(args)...);
}

}  // namespace fiberio
