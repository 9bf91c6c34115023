#include "fiberio/event.hpp"

namespace fiberio {

void Event::set() {
  decltype(links_.copy()) callbacks;
  {
    detail::SpinLockGuard lk(lock_);
    flag_ = true;
    waiters_.notify_all();
    callbacks = links_.copy();
  }
  detail::Links::run(callbacks);
}

void Event::clear() {
  detail::SpinLockGuard lk(lock_);
  flag_ = false;
}

bool Event::is_set() const {
  detail::SpinLockGuard lk(lock_);
  return flag_;
}

bool Event::wait(OptDuration timeout) {
  auto deadline = detail::deadline_after(timeout);
  detail::exploration_point();  // seeded mode may switch here, even when the event is set
  detail::SpinLockGuard lk(lock_);
  // A set() wakes every fiber waiting at that moment, even if clear() follows before it runs (gevent).
  while (!flag_)
    if (detail::park(waiters_, lk, deadline, detail::WaitKind::External, {"fiberio::Event", this})) return true;
    else if (Clock::now() >= deadline) return flag_;
  return true;
}

detail::Links::Id Event::rawlink(std::function<void()> cb) {
  detail::Links::Id id;
  {
    detail::SpinLockGuard lk(lock_);
    id = links_.add(cb);
    if (!flag_) return id;
  }
  cb();
  return id;
}

void Event::unlink(detail::Links::Id id) {
  detail::SpinLockGuard lk(lock_);
  links_.remove(id);
}

}  // namespace fiberio
