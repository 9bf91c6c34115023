// The hub: one per OS thread, created on first use. It schedules and polls, nothing else: it is a
// Boost.Fiber scheduling algorithm — round-robin over ready fibers (seeded, virtual-time testing mode:
// testing.hpp, detail/schedule.hpp); when none is ready it waits in the
// Poller (epoll) until the earliest timer deadline, an fd event, or a cross-thread wake-up (notify(),
// the only cross-thread entry besides post_forget()). Fibers block through park() (park.hpp); fds are
// watched through wait_fd, their lifetime across threads is FdRegistry's (detail/fd_registry.hpp).
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
#include <boost/fiber/scheduler.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <vector>

#include "fiberio/clock.hpp"
#include "fiberio/errors.hpp"
#include "fiberio/park.hpp"
#include "fiberio/poller.hpp"
#include "fiberio/stack.hpp"

namespace fiberio {
namespace detail {

// The hot-path side of fiberio's event hooks (runinfo.hpp's add_hook): one relaxed load of a plain
// flag, false while no hook is installed, so an unused hook costs one predictable branch. (Here, not
// in a detail/ header: this header is installed, because public templates reach the hub.)
extern constinit std::atomic<bool> g_hooks_active;
inline bool hooks_active() noexcept { return g_hooks_active.load(std::memory_order_relaxed); }
// The slow paths (runinfo.cpp), called only while hooks_active(). from/to: null is the hub itself.
void fire_switch(boost::fibers::context* from, boost::fibers::context* to) noexcept;
void fire_spawn(std::uint64_t id, std::uint64_t spawner) noexcept;
void fire_finish(std::uint64_t id) noexcept;
void fire_stall(std::uint64_t id, std::uint64_t ms) noexcept;
// A greenlet's first run: the switch into it, reported once its id is known.
void fire_started(std::uint64_t id) noexcept;


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

class Schedule;  // detail/schedule.hpp

enum class Io { Read, Write };
enum class FdWait { Ready, TimedOut, Closed, NotPollable };

class Hub final : public boost::fibers::algo::algorithm {
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
  // still_open: false when fd was closed elsewhere (the poller is then left alone).
  void forget_fd(int fd, bool still_open = true) noexcept;
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

  // A greenlet finished: its fiber terminates next, and only the dispatcher frees a terminated fiber
  // (its stack goes back to the pool then). The hub bounds how many wait for that.
  void fiber_finished() noexcept { ++finished_since_dispatch_; }
  // Thread exit has begun (greenlet.cpp unwinds the greenlets left): never raise LoopExit now.
  void begin_shutdown() noexcept;

  // Testing mode (detail/schedule.hpp, testing.hpp): null unless seeded or on virtual time.
  Schedule* schedule() const noexcept { return sched_; }
  Schedule& make_schedule();

  std::uint64_t switches() const noexcept { return switches_.load(std::memory_order_relaxed); }
  // For the blocking monitor (monitor.cpp), which samples them from its own thread: the fiber picked
  // last (null until the first switch, and while Boost.Fiber's dispatcher runs: it is freed before the
  // hub at thread exit, so no pointer to it is left here) and whether the hub waits in the poller.
  boost::fibers::context* running() const noexcept { return running_.load(std::memory_order_relaxed); }
  // The greenlet running on this hub (null: the main fiber, the dispatcher, or no greenlet yet), for
  // the monitor's thread. Published with release at every switch and when a greenlet begins and ends,
  // so a reader that acquires it also sees the greenlet's construction (id, hub).
  GreenletBase* running_greenlet() const noexcept { return running_greenlet_.load(std::memory_order_acquire); }
  void publish_running_greenlet(GreenletBase* g) noexcept { running_greenlet_.store(g, std::memory_order_release); }
  bool polling() const noexcept { return polling_.load(std::memory_order_relaxed); }
  void count_wait(WaitKind k, int delta) noexcept;

  // ---- counters for hub_stats() and the run-info dump (runinfo.hpp): this thread's only ----
  // When the last poll returned: "now" to within one loop iteration, for free (park() stamps it).
  Clock::time_point loop_time() const noexcept { return loop_time_; }
  std::uint64_t loop_iterations() const noexcept { return loop_iterations_; }
  Duration poll_time() const noexcept { return poll_time_; }
  std::size_t parked() const noexcept { return parked_; }
  std::size_t ready_count() const noexcept;
  boost::fibers::context* main_context() const noexcept { return main_ctx_; }
  static constexpr std::size_t kLatencyBuckets = 24;
  // Loop iterations by the time the hub ran fibers between two polls: bucket 0 under 1 us, bucket i
  // in [2^(i-1), 2^i) us, the last one everything longer.
  const std::array<std::uint64_t, kLatencyBuckets>& loop_latency() const noexcept { return latency_; }
  // From any thread: runs fn(true) on this hub's thread at its next poll (fn(false) there instead if
  // the hub is destroyed first). fn must not throw or block. For runinfo.cpp's cross-thread dump.
  void post_call(std::function<void(bool)> fn);
  // Fibers of this hub with a pending kill/LoopExit, plus live Timeout guards. While zero,
  // check_interrupts() has nothing to look at and returns at once.
  std::size_t armed = 0;

  void after_fork_child() noexcept;

 private:
  static Hub& create();
  // Waits up to timeout_ns for fds; true if it consumed a wake-up another thread sent (notify()).
  bool poll(std::int64_t timeout_ns) noexcept;
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
  boost::fibers::context* main_ctx_ = nullptr;
  std::atomic<bool> notified_{false};
  std::size_t external_waiters_ = 0;
  std::size_t fd_waiters_ = 0;
  // Written by this thread only, read by the monitor's: relaxed plain loads and stores (no locked
  // instruction), so counting costs what the plain counter did.
  std::atomic<std::uint64_t> switches_{0};
  std::atomic<boost::fibers::context*> running_{nullptr};
  std::atomic<GreenletBase*> running_greenlet_{nullptr};
  std::atomic<bool> polling_{false};
  void count_switch(boost::fibers::context* to) noexcept {
    switches_.store(switches_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    if (hooks_active()) [[unlikely]] fire_switch(running_.load(std::memory_order_relaxed), to);
    running_.store(to, std::memory_order_relaxed);
    // A release store is a plain store on x86-64; the properties are this thread's to read.
    auto* p = to ? to->get_properties() : nullptr;
    publish_running_greenlet(p ? static_cast<FiberState*>(p)->greenlet : nullptr);
  }
  Clock::time_point loop_time_{};
  std::uint64_t loop_iterations_ = 0;
  Duration poll_time_{};
  std::size_t parked_ = 0;
  std::array<std::uint64_t, kLatencyBuckets> latency_{};
  // Boost.Fiber's dispatcher fiber (timers, wake-ups from other threads, freeing finished fibers) is
  // held here rather than queued behind every ready fiber: it runs when nothing else is ready, or
  // once per kDispatchEvery picks while fibers stay busy, or after kReapEvery greenlets finished (it
  // frees their fibers and stacks). A yield between two fibers is then two switches, not three, and
  // it does not read the clock.
  boost::fibers::context* dispatcher_ = nullptr;
  std::uint32_t since_dispatch_ = 0;
  bool busy_dispatch_ = false;  // the dispatcher's turn came while fibers were ready: poll fds then
  // The busy poll in pick_next consumed another thread's wake-up. The fiber it woke may still sit in
  // Boost's remote-ready queue, which the dispatcher splices only before pick_next: the next
  // suspend_until must return at once instead of sleeping on the notice already consumed.
  bool notice_pending_ = false;
  std::uint32_t finished_since_dispatch_ = 0;  // their fibers await the dispatcher, which frees them
  bool shutting_down_ = false;
  // Testing mode, owned (detail/schedule.hpp). Each hook on it is one branch on this null pointer.
  Schedule* sched_ = nullptr;
  bool suspend_virtual(std::chrono::steady_clock::time_point const& tp) noexcept;
  // post_forget()'s mailbox: fds closed on other threads; on overflow, every registration is checked.
  // Last: cold, and kept off the cache lines the scheduling fields above share.
  void read_mail() noexcept;
  Spinlock mail_lock_;
  std::atomic<bool> has_mail_{false};
  bool mail_overflow_ = false;
  std::size_t mail_count_ = 0;
  std::array<int, 64> mail_{};
  std::vector<std::function<void(bool)>> calls_;  // post_call()'s, under mail_lock_
};

inline void check_interrupts() {
  Hub* h = t_hub;
  if (h && h->armed == 0) [[likely]] return;
  check_interrupts_slow();
}

}  // namespace detail

// Creates the calling thread's hub now, if it has none (it is otherwise created on first use): for
// code that must have it before a measurement, a fork, or counting fds.
void ensure_hub();
// Number of fiber switches this thread's hub has made (diagnostics; tests use it to prove yielding).
std::uint64_t hub_switches();

}  // namespace fiberio

