// The one wait primitive, and each fiber's interruption state.
//
// Everything that blocks in fiberio funnels through park(): a fiber enqueues a Waiter on a WaitList
// and suspends; notify_one/notify_all, its deadline, kill() or a Timeout guard wake it. That single
// funnel is what makes kill() and Timeout work at every suspension point.
//
// The contract: a notification always wins. If a parked fiber was notified, park() returns true, and
// a kill or expired Timeout that arrived meanwhile is delivered at its next suspension point instead —
// no hand-off (a Queue item, a Lock, an Event's set) is ever lost to an interruption.
//
// Interruptions have one way in, FiberState::interrupt (kill, LoopExit, or a fiber handing back one it
// caught: detail/interruption.hpp), and one way out, FiberState::deliver at a suspension point.
#pragma once
#include <boost/fiber/context.hpp>
#include <boost/fiber/properties.hpp>

#include <atomic>
#include <cstdint>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "fiberio/clock.hpp"
#include "fiberio/errors.hpp"

namespace fiberio {

class GreenletBase;

namespace detail {

// The lock guarding fiberio's wait lists and objects; may be taken from any thread.
// Not Boost.Fiber's spinlock: its lock() reserves a ~5 KiB stack frame (for a std::random_device
// used on first contention), so every call from a fiber could touch a second page of the fiber's
// stack, and in a shared library it also calls __tls_get_addr each time.
class Spinlock {
 public:
  void lock() noexcept {
    for (unsigned spins = 0;;) {
      if (!locked_.exchange(true, std::memory_order_acquire)) return;
      while (locked_.load(std::memory_order_relaxed)) {
        // Held by another thread (critical sections are short): spin a little, then let the holder
        // run — on a busy machine it may have been preempted.
        if (++spins < 128) relax();
        else std::this_thread::yield();
      }
    }
  }
  bool try_lock() noexcept {
    return !locked_.load(std::memory_order_relaxed) && !locked_.exchange(true, std::memory_order_acquire);
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  static void relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }
  std::atomic<bool> locked_{false};
};
using SpinLockGuard = std::unique_lock<Spinlock>;

// An intrusive FIFO of nodes that live elsewhere (on parked fibers' stacks): no allocation. Node has
// `Node* prev, *next` and `bool linked`. Not synchronized: its owner's lock guards it.
template <class Node>
class IntrusiveList {
 public:
  bool empty() const noexcept { return head_ == nullptr; }
  Node* front() const noexcept { return head_; }
  std::size_t size() const noexcept { return size_; }
  void push_back(Node& n) noexcept {
    n.prev = tail_;
    n.next = nullptr;
    if (tail_) tail_->next = &n; else head_ = &n;
    tail_ = &n;
    n.linked = true;
    ++size_;
  }
  // Harmless for a node not (or no longer) in the list.
  void remove(Node& n) noexcept {
    if (!n.linked) return;
    if (n.prev) n.prev->next = n.next; else head_ = n.next;
    if (n.next) n.next->prev = n.prev; else tail_ = n.prev;
    n.prev = n.next = nullptr;
    n.linked = false;
    --size_;
  }

 private:
  Node* head_ = nullptr;
  Node* tail_ = nullptr;
  std::size_t size_ = 0;
};

// What a parked fiber waits on, for the run-info dump (runinfo.hpp): a static description and the
// object's address. Two words, passed in registers and stored at the park point. The descriptions
// below are told apart by address: for kWaitRead/kWaitWrite `object` is the FdState*, for kWaitJoin
// the GreenletBase*.
struct WaitOn {
  const char* what = kWaitOther;
  const void* object = nullptr;
  static constexpr const char kWaitOther[] = "wait";
};
inline constexpr const char kWaitRead[] = "read";
inline constexpr const char kWaitWrite[] = "write";
inline constexpr const char kWaitSleep[] = "sleep";
inline constexpr const char kWaitJoin[] = "join";

// A fiber parked on a WaitList. Lives on the parked fiber's stack.
struct Waiter {
  boost::fibers::waker waker;
  Waiter* prev = nullptr;
  Waiter* next = nullptr;
  bool linked = false;
  bool notified = false;
  // For the run-info dump, read only on the parked fiber's own thread: what it waits on, its deadline
  // (kNoDeadline: none), and since when (the hub's loop time: at most one loop iteration early).
  // Left uninitialized here: park() sets them (this struct is built on every park).
  const char* what;
  const void* object;
  Deadline deadline;
  Clock::time_point since;
};

// The parked fibers of one object, in arrival order. Guarded by the lock passed to park().
class WaitList : public IntrusiveList<Waiter> {
 public:
  // Wakes the longest-waiting fiber; false if none was waiting.
  bool notify_one() noexcept;
  void notify_all() noexcept;
};

// What a parked fiber waits for, so the hub can tell whether anything could ever wake it (LoopExit).
enum class WaitKind {
  Local,     // only a fiber of this hub can wake it (Queue, Lock, join...)
  External,  // another thread may wake it (Event, AsyncResult, cross-thread join)
  Fd,        // an fd event wakes it
};

// Parks the running fiber on `list` until notified, `deadline` passes, it is killed, or an enclosing
// Timeout guard expires. `lk` is held on entry and on return (released while parked).
// Returns true if notified, false if `deadline` passed. Throws GreenletExit / TimeoutError / LoopExit.
// A notification always wins: if the fiber was notified it returns true, and a pending kill or
// expired Timeout is delivered at its next suspension point instead — no hand-off is ever lost.
// `on` says what it waits on, for the run-info dump.
bool park(WaitList& list, SpinLockGuard& lk, Deadline deadline, WaitKind kind = WaitKind::Local, WaitOn on = {});
// The same for a list only this thread touches (the hub's fd lists): no lock.
bool park(WaitList& list, Deadline deadline, WaitKind kind, WaitOn on = {});

// Parks with nothing to wait for but the deadline (sleep). Throws as park().
void park_until(Deadline deadline);

class Hub;
// The calling thread's hub, or null. constinit: other translation units read it directly, without a
// TLS wrapper call (it sits on the yield / spawn fast paths).
extern thread_local constinit Hub* t_hub;

class Schedule;
// This thread's hub's testing mode (detail/schedule.hpp, testing.hpp), or null: the common case.
extern thread_local constinit Schedule* t_schedule;
void exploration_point_slow() noexcept;
// A point where, in seeded mode, the running fiber may be switched out although it would not block
// (an uncontended Lock, a Queue put with room). Never throws; one branch when seeded mode is off.
inline void exploration_point() noexcept {
  if (t_schedule) [[unlikely]] exploration_point_slow();
}

// Throws the running fiber's pending kill or expired Timeout, if any. Cheap; called at every
// suspension point. Inline fast path: nothing is armed on this hub (no pending kill, no Timeout).
void check_interrupts_slow();
inline void check_interrupts();

// A Timeout guard registered on the running fiber.
struct TimeoutEntry {
  Deadline deadline;
  Duration after;
  const Timeout* owner;
  bool fired;
};

// Per-fiber state, attached to each Boost.Fiber context (main fiber included) on first use. Only the
// fiber's own thread touches it. Interruptions have one way in (interrupt) and one way out (deliver);
// Timeout guards are kept by fiberio::Timeout (time.cpp) through the members below.
class FiberState : public boost::fibers::fiber_properties {
 public:
  explicit FiberState(boost::fibers::context* ctx) : fiber_properties(ctx) {}
  ~FiberState() override;
  GreenletBase* greenlet = nullptr;  // null for the main fiber
  Waiter* parked = nullptr;          // set while parked: interrupt() wakes it through this
  std::unordered_map<const void*, std::shared_ptr<void>> locals;  // fiberio::local<T> storage
  // Seeded scheduling (detail/schedule.hpp): this fiber's id and PCT priority in run sched_run.
  std::uint64_t sched_run = 0, sched_priority = 0;
  std::uint32_t sched_id = 0;

  // Makes e (GreenletExit, LoopExit) pending: the fiber's next suspension point throws it; wakes the
  // fiber if it is parked. From another fiber of this thread (kill), or from the fiber itself to hand
  // back a kill it caught where it could not act on it (detail::Interruption). A first kill wins.
  void interrupt(std::exception_ptr e) noexcept;
  // Throws the pending interruption, or the earliest expired Timeout guard, if any. Called by the
  // fiber itself at every suspension point.
  void deliver();
  Deadline earliest_timeout() const noexcept {
    Deadline d = kNoDeadline;
    for (auto& t : timeouts_)
      if (!t.fired && t.deadline < d) d = t.deadline;
    return d;
  }

  // ---- Timeout guards (defined in time.cpp) ----
  void add_timeout(const Timeout* owner, Duration after);
  void remove_timeout(const Timeout* owner) noexcept;
  bool timeout_fired(const Timeout* owner) const noexcept;
  // True if any guard of this fiber has fired (its TimeoutError is the caller's, not an operation's).
  bool any_timeout_fired() const noexcept;
  // The guard of this fiber that threw e, if e came from one that fired; else null.
  const Timeout* fired_source(const TimeoutError& e) const noexcept;
  // Makes a fired guard expire again at the next suspension point (it is still past its deadline).
  void refire(const Timeout* owner) noexcept;

 private:
  std::exception_ptr pending_;  // counted in the hub's `armed` while set
  std::vector<TimeoutEntry> timeouts_;
};

FiberState& fiber_state(boost::fibers::context* ctx = boost::fibers::context::active());
}  // namespace detail
}  // namespace fiberio
