// Fiber synchronization primitives, as gevent.lock: Semaphore, BoundedSemaphore, Lock, RLock.
//
// Every wait takes an optional timeout (OptDuration; empty = wait forever) and, like every fiberio
// blocking call, can be interrupted by kill() (GreenletExit) or an enclosing Timeout guard
// (TimeoutError). Waiters are served strictly first-come first-served: release() hands the permit
// (or the lock) directly to the longest-waiting fiber, so a fiber that just released cannot barge
// back in ahead of the waiters, and a waiter that was handed the permit always gets it — even if it
// is killed or its timeout expires in the same instant (the kill is then delivered at its next
// suspension point, where an RAII guard releases what it got).
//
// Ownership (Lock, RLock) is per fiber: the Boost.Fiber context that acquired it, so two greenlets of
// one thread are different owners, and the main fiber is an owner too.
//
// Threads: each object is guarded by its own spinlock, so it may be acquired and released from fibers
// of different threads (and from plain threads, whose code runs as their main fiber); a release on one
// thread wakes a waiter on another. But a wait here counts as *local* for LoopExit detection: if a
// thread's main fiber waits on one of these and that thread has nothing else pending (no ready fiber,
// timer, fd or Event/AsyncResult wait), its hub raises LoopExit even if another thread would release
// it later; give such waits a timeout, or use Event/AsyncResult or a ThreadPool to hand work across.
//
// Lifetime: destroying a primitive while fibers still wait on it makes each of them throw
// std::logic_error (the destructor waits until they have let go), instead of leaving them parked on
// freed memory.
#pragma once
#include <chrono>
#include <cstddef>
#include <stdexcept>

#include "fiberio/park.hpp"

namespace fiberio {

namespace detail {
// Counts the fibers blocked on one object (guarded by that object's lock), so that its destructor can
// evict them rather than leave them parked on freed memory: destroying a primitive that fibers still
// wait on (say a test that returns early while greenlets block on its local Queue) makes each of them
// throw std::logic_error, and the destructor returns only once all have let go of the object.
struct Occupancy {
  std::size_t inside = 0;
  bool destroyed = false;
};

// Marks the calling fiber as blocked on the object while in scope. Create and destroy it with the
// object's lock held (declare it after the SpinLockGuard).
class Occupant {
 public:
  explicit Occupant(Occupancy& o) noexcept : o_(o) { ++o_.inside; }
  ~Occupant() { --o_.inside; }
  Occupant(const Occupant&) = delete;
  Occupant& operator=(const Occupant&) = delete;
  bool evicted() const noexcept { return o_.destroyed; }

 private:
  Occupancy& o_;
};

[[noreturn]] void throw_destroyed(const char* name, const char* operation);

// For destructors: while fibers are inside, wake them all (wake_all() runs with the lock held) and let
// them run until they have left.
template <class WakeAll>
void evict_waiters(Spinlock& lock, Occupancy& o, WakeAll&& wake_all) noexcept {
  SpinLockGuard lk(lock);
  while (o.inside > 0) {
    o.destroyed = true;
    wake_all();
    lk.unlock();
    boost::fibers::context::active()->yield();  // not fiberio::yield(): must not throw a pending kill
    lk.lock();
  }
}

// Any std::chrono duration as fiberio's Duration, saturating instead of overflowing (hours::max()).
template <class Rep, class Period>
Duration saturate_duration(const std::chrono::duration<Rep, Period>& d) {
  using Seconds = std::chrono::duration<double>;
  auto s = std::chrono::duration_cast<Seconds>(d).count();
  if (s >= std::chrono::duration_cast<Seconds>(Duration::max()).count()) return Duration::max();
  if (s <= 0) return Duration::zero();
  return std::chrono::ceil<Duration>(d);
}
}  // namespace detail

// A counter of permits: acquire() takes one, blocking while none is left; release() returns one.
// Meets BasicLockable/Lockable (lock/unlock/try_lock), so std::lock_guard works.
class Semaphore {
 public:
  // value: the initial number of permits (>= 0; std::invalid_argument otherwise).
  explicit Semaphore(std::ptrdiff_t value = 1);
  Semaphore(const Semaphore&) = delete;
  Semaphore& operator=(const Semaphore&) = delete;
  // Fibers still waiting throw std::logic_error (see detail::Occupancy).
  ~Semaphore();

  // Takes a permit; false if `timeout` passed first (an empty timeout waits forever).
  bool acquire(OptDuration timeout = {});
  // Takes a permit only if one is free right now; never blocks, ignores queued waiters' stale turns.
  bool try_acquire();
  // Returns a permit: to the longest-waiting fiber if any, else to the counter.
  void release();
  // Free permits right now.
  std::size_t value() const;
  // True if acquire() would block.
  bool locked() const;

  void lock() { acquire(); }
  bool try_lock() { return try_acquire(); }
  void unlock() { release(); }

 protected:
  Semaphore(std::ptrdiff_t value, const char* name);
  const char* name_;
  std::size_t initial_;
  // Checked by release() under the lock: BoundedSemaphore refuses to go above its initial value.
  bool bounded_ = false;

 private:
  mutable detail::Spinlock lock_;
  std::size_t counter_;
  detail::WaitList waiters_;
  detail::Occupancy occupancy_;
};

// A Semaphore that refuses to be released more often than acquired: release() beyond the initial
// value throws std::logic_error (gevent raises ValueError) — it catches double-release bugs.
class BoundedSemaphore : public Semaphore {
 public:
  explicit BoundedSemaphore(std::ptrdiff_t value = 1);
};

namespace detail {
// The shared body of Lock and RLock: a one-permit semaphore that remembers its owning fiber.
class OwnedLock {
 public:
  OwnedLock(bool recursive, const char* name) : recursive_(recursive), name_(name) {}
  ~OwnedLock();
  OwnedLock(const OwnedLock&) = delete;
  OwnedLock& operator=(const OwnedLock&) = delete;
  bool acquire(OptDuration timeout, bool block);
  void release();
  bool locked() const;
  bool owned_by_current() const;
  std::size_t depth() const;

 private:
  mutable Spinlock lock_;
  const bool recursive_;
  const char* name_;
  // held_ stays true while the lock is handed from a releaser to the next waiter, whose context is
  // written into owner_ only once it runs: in between nobody (not even the releaser) owns it.
  bool held_ = false;
  boost::fibers::context* owner_ = nullptr;
  std::size_t depth_ = 0;
  WaitList waiters_;
  Occupancy occupancy_;
};
}  // namespace detail

namespace detail {
// The interface Lock and RLock share: gevent's acquire/release plus what std::lock_guard,
// std::unique_lock (incl. try_lock_for/try_lock_until) and std::scoped_lock need.
class LockInterface {
 public:
  LockInterface(const LockInterface&) = delete;
  LockInterface& operator=(const LockInterface&) = delete;

  // false if `timeout` passed first.
  bool acquire(OptDuration timeout = {}) { return impl_.acquire(timeout, true); }
  bool try_acquire() { return impl_.acquire(Duration::zero(), false); }
  void release() { impl_.release(); }
  bool locked() const { return impl_.locked(); }
  // True if the calling fiber holds it.
  bool owned() const { return impl_.owned_by_current(); }

  void lock() { acquire(); }
  bool try_lock() { return try_acquire(); }
  void unlock() { release(); }
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& d) {
    return acquire(saturate_duration(d));
  }
  template <class C, class D>
  bool try_lock_until(const std::chrono::time_point<C, D>& tp) {
    return acquire(saturate_duration(tp - C::now()));
  }

 protected:
  LockInterface(bool recursive, const char* name) : impl_(recursive, name) {}
  OwnedLock impl_;
};
}  // namespace detail

// A non-recursive mutual-exclusion lock owned by the fiber that acquired it. Misuse throws
// std::logic_error instead of deadlocking or corrupting: release() by a fiber that does not hold it
// (or of an unlocked lock), and a blocking acquire() by the fiber that already holds it (a
// guaranteed self-deadlock; try_acquire() just returns false there).
class Lock : public detail::LockInterface {
 public:
  Lock() : LockInterface(false, "fiberio::Lock") {}
};

// A recursive lock: the owning fiber may acquire it again; it is free once released as many times.
// release() by a fiber that does not own it throws std::logic_error.
class RLock : public detail::LockInterface {
 public:
  RLock() : LockInterface(true, "fiberio::RLock") {}
  // How many times the owner has acquired it (0 if free).
  std::size_t depth() const { return impl_.depth(); }
};

}  // namespace fiberio
