#include "fiberio/time.hpp"
#include "fiberio/hub.hpp"

#include <boost/context/fiber.hpp>  // forced_unwind, as the configured backend defines it

#include "fiberio/detail/interruption.hpp"

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
  detail::Hub::current();
  detail::fiber_state(ctx_).add_timeout(this, d);
}

Timeout::~Timeout() { detail::fiber_state(ctx_).remove_timeout(this); }

bool Timeout::fired() const noexcept { return detail::fiber_state(ctx_).timeout_fired(this); }

// ---- the guard list each fiber keeps (FiberState's Timeout members) ----
namespace detail {

void FiberState::add_timeout(const Timeout* owner, Duration after) {
  timeouts_.push_back({deadline_after(after), after, owner, false});
  ++Hub::current().armed;  // check_interrupts() must look while a guard lives
}

void FiberState::remove_timeout(const Timeout* owner) noexcept {
  for (auto it = timeouts_.end(); it != timeouts_.begin();) {
    --it;
    if (it->owner == owner) {
      timeouts_.erase(it);
      if (auto* hub = Hub::get()) --hub->armed;
      return;
    }
  }
}

bool FiberState::timeout_fired(const Timeout* owner) const noexcept {
  for (auto& t : timeouts_)
    if (t.owner == owner) return t.fired;
  return false;
}

bool FiberState::any_timeout_fired() const noexcept {
  for (auto& t : timeouts_)
    if (t.fired) return true;
  return false;
}

const Timeout* FiberState::fired_source(const TimeoutError& e) const noexcept {
  for (auto& t : timeouts_)
    if (t.fired && t.owner && e.is(*t.owner)) return t.owner;
  return nullptr;
}

void FiberState::refire(const Timeout* owner) noexcept {
  for (auto& t : timeouts_)
    if (t.owner == owner) t.fired = false;  // still past its deadline: fires at the next suspension point
}

// ---- Interruption ----
bool Interruption::take_current() {
  try {
    throw;
  } catch (const boost::context::detail::forced_unwind&) {
    throw;  // Boost.Context is unwinding this fiber's stack: never swallow that
  } catch (const TimeoutError& e) {
    const Timeout* source = fiber_state().fired_source(e);
    if (!source) return false;  // an operation's own timeout, not an interruption
    timeout_ = source;
    return true;
  } catch (const GreenletExit&) {
  } catch (const LoopExit&) {
  } catch (...) {
    return false;
  }
  if (!kill_) kill_ = std::current_exception();
  return true;
}

void Interruption::rearm() noexcept {
  auto& st = fiber_state();
  if (timeout_) st.refire(timeout_);
  if (kill_) st.interrupt(kill_);
  kill_ = nullptr;
  timeout_ = nullptr;
}

}  // namespace detail
}  // namespace fiberio
