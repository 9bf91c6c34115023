#include "fiberio/sync.hpp"

#include <fmt/format.h>

namespace fiberio {

namespace {
std::size_t checked_initial(std::ptrdiff_t value, const char* name) {
  if (value < 0) throw std::invalid_argument(fmt::format("{}: initial value must be >= 0, got {}", name, value));
  return static_cast<std::size_t>(value);
}
}  // namespace

namespace detail {
void throw_destroyed(const char* name, const char* operation) {
  throw std::logic_error(fmt::format("{} was destroyed while this fiber was blocked in {}", name, operation));
}
}  // namespace detail

// ---- Semaphore ----
Semaphore::Semaphore(std::ptrdiff_t value) : Semaphore(value, "fiberio::Semaphore") {}

Semaphore::Semaphore(std::ptrdiff_t value, const char* name)
    : name_(name), initial_(checked_initial(value, name)), counter_(initial_) {}

Semaphore::~Semaphore() {
  detail::evict_waiters(lock_, occupancy_, [this] { waiters_.notify_all(); });
}

bool Semaphore::acquire(OptDuration timeout) {
  detail::exploration_point();  // seeded mode may switch here, even when a permit is free
  auto deadline = detail::deadline_after(timeout);
  detail::SpinLockGuard lk(lock_);
  // Waiters only exist while counter_ is 0 (release() hands permits to them), except stale entries of
  // fibers whose wait already ended: taking a free permit never jumps ahead of a live waiter.
  if (counter_ > 0) {
    --counter_;
    return true;
  }
  detail::Occupant occupant(occupancy_);
  for (;;) {
    // Notified means release() handed us its permit without touching counter_.
    bool handed = detail::park(waiters_, lk, deadline, detail::WaitKind::Local, {name_, this});
    if (occupant.evicted()) detail::throw_destroyed(name_, "acquire()");
    if (handed) return true;
    if (counter_ > 0) {
      --counter_;
      return true;
    }
    if (Clock::now() >= deadline) return false;
  }
}

bool Semaphore::try_acquire() {
  detail::SpinLockGuard lk(lock_);
  if (counter_ == 0) return false;
  --counter_;
  return true;
}

void Semaphore::release() {
  detail::SpinLockGuard lk(lock_);
  if (bounded_ && counter_ >= initial_)
    throw std::logic_error(fmt::format("{}: released too many times (value is already at its initial {})", name_,
                                       initial_));
  if (!waiters_.notify_one()) ++counter_;
}

std::size_t Semaphore::value() const {
  detail::SpinLockGuard lk(lock_);
  return counter_;
}

bool Semaphore::locked() const {
  detail::SpinLockGuard lk(lock_);
  return counter_ == 0;
}

BoundedSemaphore::BoundedSemaphore(std::ptrdiff_t value) : Semaphore(value, "fiberio::BoundedSemaphore") {
  bounded_ = true;
}

// ---- Lock / RLock ----
namespace detail {

OwnedLock::~OwnedLock() {
  evict_waiters(lock_, occupancy_, [this] { waiters_.notify_all(); });
}

bool OwnedLock::acquire(OptDuration timeout, bool block) {
  if (block) exploration_point();  // seeded mode may switch here, even when the lock is free
  auto* me = boost::fibers::context::active();
  auto deadline = deadline_after(timeout);
  SpinLockGuard lk(lock_);
  if (owner_ == me) {
    if (recursive_) {
      ++depth_;
      return true;
    }
    if (!block) return false;
    throw std::logic_error(fmt::format("{}: acquire() by the fiber that already holds it would deadlock (use RLock "
                                       "for recursive locking)",
                                       name_));
  }
  if (!held_) {
    held_ = true;
    owner_ = me;
    depth_ = 1;
    return true;
  }
  if (!block) return false;
  Occupant occupant(occupancy_);
  for (;;) {
    // Notified means release() handed the lock over: held_ stayed true for us.
    bool handed = park(waiters_, lk, deadline, WaitKind::Local, {name_, this});
    if (occupant.evicted()) throw_destroyed(name_, "acquire()");
    if (handed || !held_) {
      held_ = true;
      owner_ = me;
      depth_ = 1;
      return true;
    }
    if (Clock::now() >= deadline) return false;
  }
}

void OwnedLock::release() {
  auto* me = boost::fibers::context::active();
  SpinLockGuard lk(lock_);
  if (!held_) throw std::logic_error(fmt::format("{}: release() of a lock that is not held", name_));
  if (owner_ != me) throw std::logic_error(fmt::format("{}: release() by a fiber that does not own it", name_));
  if (--depth_ > 0) return;
  owner_ = nullptr;
  if (!waiters_.notify_one()) held_ = false;
}

bool OwnedLock::locked() const {
  SpinLockGuard lk(lock_);
  return held_;
}

bool OwnedLock::owned_by_current() const {
  auto* me = boost::fibers::context::active();
  SpinLockGuard lk(lock_);
  return owner_ == me;
}

std::size_t OwnedLock::depth() const {
  SpinLockGuard lk(lock_);
  return owner_ ? depth_ : 0;
}

}  // namespace detail
}  // namespace fiberio
