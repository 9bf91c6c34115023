#include "fiberio/time.hpp"

namespace fiberio {

void sleep(Duration d) {
  if (d <= Duration::zero()) return yield();
  detail::Hub::current();
  detail::park_until(detail::deadline_after(d));
}

void yield() {
  detail::Hub::current();
  detail::check_interrupts();
  boost::fibers::context::active()->yield();
  detail::check_interrupts();
}

Timeout::Timeout(Duration d) : ctx_(boost::fibers::context::active()), after_(d) {
  auto& hub = detail::Hub::current();
  detail::fiber_state(ctx_).timeouts.push_back({detail::deadline_after(d), d, this, false});
  ++hub.armed;
}

Timeout::~Timeout() {
  if (auto* hub = detail::Hub::get()) --hub->armed;
  auto& ts = detail::fiber_state(ctx_).timeouts;
  for (auto it = ts.end(); it != ts.begin();) {
    --it;
    if (it->owner == this) {
      ts.erase(it);
      return;
    }
  }
}

bool Timeout::fired() const noexcept {
  for (auto& t : detail::fiber_state(ctx_).timeouts)
    if (t.owner == this) return t.fired;
  return false;
}

}  // namespace fiberio
