// The hub: one per OS thread, created on first use. It is a Boost.Fiber scheduling algorithm —
// round-robin over ready fibers; when none is ready it waits in the Poller (epoll) until the earliest
// timer deadline, an fd event, or a cross-thread wake-up (notify(), the only cross-thread entry).
//
// Everything that blocks in fiberio funnels through detail::park(): a fiber enqueues a Waiter on a
// WaitList and suspends; notify_one/notify_all, its deadline, kill() or a Timeout guard wake it. That
// single funnel is what makes kill() and Timeout work at every suspension point.
//
// Thread exit (including returning from main): the hub kills every greenlet still alive, once, and
// waits up to 3 s for them to unwind (their destructors and catch blocks run; a cleanup may block
// briefly). If some ignore the kill, the process ends with status 1 and a message: Boost.Fiber could
// only wait for them forever. exit() called from inside a greenlet unwinds the others the same way,
// then ends the process with status 1 (Boost.Fiber cannot shut down from inside a fiber, and exit()
// hides its status from thread-exit handlers): call exit() from the main fiber, or return from main.
#pragma once
#include <boost/fiber/algo/algorithm.hpp>
#include <boost/fiber/context.hpp>
#include <boost/fiber/detail/spinlock.hpp>
#include <boost/fiber/properties.hpp>
#include <boost/fiber/scheduler.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "fiberio/errors.hpp"
#include "fiberio/poller.hpp"
#include "fiberio/stack.hpp"

namespace fiberio {

using Clock = std::chrono::steady_clock;
using Duration = Clock::duration;
// Every wait takes std::optional<Duration>: empty means "no timeout".
using OptDuration = std::optional<Duration>;

class GreenletBase;

namespace detail {

using Deadline = Clock::time_point;
inline constexpr Deadline kNoDeadline = Deadline::max();
inline Deadline deadline_after(const OptDuration& d) {
  if (!d) return kNoDeadline;
  if (*d <= Duration::zero()) return Clock::now();
  auto now = Clock::now();
  return (*d >= kNoDeadline - now) ? kNoDeadline : now + *d;
}

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

// A fiber parked on a WaitList. Lives on the parked fiber's stack.
struct Waiter {
  boost::fibers::waker waker;
  Waiter* prev = nullptr;
  Waiter* next = nullptr;
  bool linked = false;
  bool notified = false;
};

// Intrusive FIFO of parked fibers. Not synchronized itself: guarded by the lock passed to park().
class WaitList {
 public:
  bool empty() const noexcept { return head_ == nullptr; }
  Waiter* front() const noexcept { return head_; }
  std::size_t size() const noexcept { return size_; }
  void push_back(Waiter& w) noexcept;
  void remove(Waiter& w) noexcept;
  // Wakes the longest-waiting fiber; false if none was waiting.
  bool notify_one() noexcept;
  void notify_all() noexcept;

 private:
  Waiter* head_ = nullptr;
  Waiter* tail_ = nullptr;
  std::size_t size_ = 0;
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
bool park(WaitList& list, SpinLockGuard& lk, Deadline deadline, WaitKind kind = WaitKind::Local);
// The same for a list only this thread touches (the hub's fd lists): no lock.
bool park(WaitList& list, Deadline deadline, WaitKind kind);

// Parks with nothing to wait for but the deadline (sleep). Throws as park().
void park_until(Deadline deadline);

class Hub;
// The calling thread's hub, or null. constinit: other translation units read it directly, without a
// TLS wrapper call (it sits on the yield / spawn fast paths).
extern thread_local constinit Hub* t_hub;

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

// Per-fd registration. Touched only by its hub's thread, so nothing here is atomic or locked.
// The hub's table holds one reference and every fiber waiting on the fd another: forget_fd() during a
// wait leaves the state alive until that waiter has seen `closed`.
struct FdState {
  int fd;
  std::uint32_t generation;  // this registration's, in its poller token (stale events are dropped)
  // The fd registry's close counter for this number, and its value when registered: if they differ,
  // the fd was closed since (perhaps on another thread) and this registration is stale.
  const std::atomic<std::uint32_t>* closes = nullptr;
  std::uint32_t closes_seen = 0;
  bool stale() const noexcept { return closes && closes->load(std::memory_order_acquire) != closes_seen; }
  std::uint32_t refs = 1;
  bool closed = false;
  // Edge-triggered events that arrived while no fiber was waiting in that direction would be lost:
  // they are remembered here, and the next wait confirms them with a zero-timeout poll().
  bool read_ready = false, write_ready = false;
  // A short read from a TCP socket emptied its receive queue, and no read event came since: a read
  // now would only return EAGAIN, so the reader may wait first (see Hub::note_drained).
  bool read_drained = false;
  // A hang-up, error or urgent data was reported: a short read no longer proves the queue empty.
  bool hangup_seen = false;
  WaitList readers, writers;
};

enum class Io { Read, Write };
enum class FdWait { Ready, TimedOut, Closed, NotPollable };

class Hub final : public boost::fibers::algo::algorithm {
  friend class fiberio::GreenletBase;
 public:
  // The calling thread's hub, created (and installed as its Boost.Fiber scheduler) on first use.
  static Hub& current() {
    if (t_hub) [[likely]] return *t_hub;
    return create();
  }
  // The calling thread's hub if it has one, else null. Never creates one.
  static Hub* get() noexcept { return t_hub; }

  Hub();
  ~Hub() override;

  // boost::fibers::algo::algorithm
  void awakened(boost::fibers::context* ctx) noexcept override;
  boost::fibers::context* pick_next() noexcept override;
  bool has_ready_fibers() const noexcept override { return !ready_.empty() || dispatcher_; }
  void suspend_until(std::chrono::steady_clock::time_point const& tp) noexcept override;
  void notify() noexcept override;

  StackPool& stacks() noexcept { return stacks_; }
  // True while Boost.Fiber's dispatcher runs (it is held in dispatcher_ whenever any other fiber of
  // this thread runs): the hub itself is polling, and must never park on itself.
  bool dispatching() const noexcept { return dispatcher_ == nullptr; }

  // fd readiness (see io.hpp for the public face).
  // exclusive: a second exclusive waiter in the same direction gets ConcurrentObjectUseError.
  // level: return at once if the fd is ready now (one poll() system call). Without it the wait is for
  // the next readiness edge: right only for callers that just saw EAGAIN, which proves the fd not
  // ready, so that edge is certain to come (Socket and the shims; it saves that system call).
  FdWait wait_fd(int fd, Io dir, Deadline deadline, bool exclusive, bool level = false);
  // Wakes every fiber waiting on fd (they see FdWait::Closed) and unregisters it. This thread only:
  // closes go through FdRegistry (fiberio::close, the shims), which reaches the right hub.
  void forget_fd(int fd) noexcept;
  // From any thread (FdRegistry): an fd this hub watches was closed there. The hub's thread drops the
  // registration, if it is stale, at its next poll.
  void post_forget(int fd) noexcept;

  // The drained hint, as nginx uses it for edge-triggered sockets: a plain read from a TCP socket that
  // returned less than asked emptied its receive queue, so until the next read event another read
  // would only return EAGAIN. The reader calls read_drained() and waits first, saving that system
  // call. Only for TCP stream sockets and reads without flags. Never trusted once a hang-up, error or
  // urgent data was reported: a read returning data also consumes a FIN queued behind it (no event
  // follows), and a read stops short at the urgent mark with bytes still queued.
  void note_drained(int fd) noexcept {
    if (FdState* st = known_fd(fd); st && !st->hangup_seen) {
      st->read_drained = true;
      st->read_ready = false;  // any event seen so far was for the bytes just read
    }
  }
  bool read_drained(int fd) const noexcept {
    FdState* st = known_fd(fd);
    return st && st->read_drained;
  }

  // Greenlet bookkeeping.
  void add_greenlet(GreenletBase* g) noexcept;
  void remove_greenlet(GreenletBase* g) noexcept;
  std::size_t live_greenlets() const noexcept { return greenlets_.size(); }

  using ErrorHandler = std::function<void(const GreenletBase&, std::exception_ptr)>;
  void set_error_handler(ErrorHandler h) { error_handler_ = std::move(h); }
  void report_error(const GreenletBase& g, std::exception_ptr e) noexcept;

  std::uint64_t switches() const noexcept { return switches_; }
  void count_wait(WaitKind k, int delta) noexcept;
  // Fibers of this hub with a pending kill/LoopExit, plus live Timeout guards. While zero,
  // check_interrupts() has nothing to look at and returns at once.
  std::size_t armed = 0;

  // Kills every remaining greenlet and waits (3 s at most) for them to unwind. Run at thread exit.
  // False if some did not (they caught GreenletExit, or block outside fiberio).
  bool shutdown() noexcept;
  void after_fork_child() noexcept;

 private:
  static Hub& create();
  void poll(std::int64_t timeout_ns) noexcept;
  FdState* state_of(const Poller::Ready& ev) const noexcept {
    FdState* st = known_fd(static_cast<int>(static_cast<std::uint32_t>(ev.token)));
    return st && st->generation == static_cast<std::uint32_t>(ev.token >> 32) ? st : nullptr;
  }
  void raise_loop_exit() noexcept;
  FdState* known_fd(int fd) const noexcept {
    return static_cast<std::size_t>(fd) < fds_.size() ? fds_[static_cast<std::size_t>(fd)] : nullptr;
  }
  FdState* register_fd(int fd, FdWait& refused);
  [[noreturn, gnu::noinline, gnu::cold]] static void throw_concurrent_use(int fd, Io dir);
  static void release(FdState* st) noexcept {
    if (--st->refs == 0) delete st;
  }

  boost::fibers::scheduler::ready_queue_type ready_;
  Poller poller_;
  StackPool stacks_;
  std::vector<Poller::Ready> events_;
  std::vector<FdState*> fds_;  // indexed by fd; null: not registered
  std::uint32_t next_generation_ = 1;
  std::vector<GreenletBase*> greenlets_;
  boost::fibers::context* main_ctx_ = nullptr;
  ErrorHandler error_handler_;
  std::atomic<bool> notified_{false};
  // post_forget()'s mailbox: fds closed on other threads; on overflow, every registration is checked.
  void read_mail() noexcept;
  Spinlock mail_lock_;
  std::array<int, 64> mail_{};
  std::size_t mail_count_ = 0;
  bool mail_overflow_ = false;
  std::atomic<bool> has_mail_{false};
  std::size_t external_waiters_ = 0;
  std::size_t fd_waiters_ = 0;
  std::uint64_t switches_ = 0;
  // Boost.Fiber's dispatcher fiber (timers, wake-ups from other threads, freeing finished fibers) is
  // held here rather than queued behind every ready fiber: it runs when nothing else is ready, or
  // once per kDispatchEvery picks while fibers stay busy, or after kReapEvery greenlets finished (it
  // frees their fibers and stacks). A yield between two fibers is then two switches, not three, and
  // it does not read the clock.
  boost::fibers::context* dispatcher_ = nullptr;
  std::uint32_t since_dispatch_ = 0;
  bool busy_dispatch_ = false;  // the dispatcher's turn came while fibers were ready: poll fds then
  std::uint32_t finished_since_dispatch_ = 0;  // their fibers await the dispatcher, which frees them
  bool shutting_down_ = false;
};

inline void check_interrupts() {
  Hub* h = t_hub;
  if (h && h->armed == 0) [[likely]] return;
  check_interrupts_slow();
}

}  // namespace detail

// Number of fiber switches this thread's hub has made (diagnostics; tests use it to prove yielding).
std::uint64_t hub_switches();
// Live greenlets on this thread's hub.
std::size_t live_greenlets();
// Replaces this thread's handler for exceptions escaping greenlets (default: print to stderr).
void set_error_handler(std::function<void(const GreenletBase&, std::exception_ptr)> handler);
// "std::runtime_error: boom" for an exception_ptr (what the default error handler prints).
std::string describe_exception(std::exception_ptr e);

}  // namespace fiberio
