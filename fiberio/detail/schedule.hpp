// The hub's testing mode (public face: fiberio/testing.hpp): seeded scheduling, exploration points and
// virtual time. One Schedule per hub, created only when asked for (FIBERIO_SEED, testing::*): while a
// hub has none, every hook below costs one predictable branch on a null pointer.
//
// Seeded scheduling is PCT (Burckhardt et al., "A Randomized Scheduler with Probabilistic Guarantees of
// Finding Bugs", ASPLOS 2010): each fiber gets a random priority when first seen, the hub always runs
// the ready fiber of highest priority, and at d-1 random steps ("change points") the running fiber's
// priority drops below every initial one. A step is a pick or an exploration point. To keep a fiber
// that spins on yield() from starving the one it waits for, one pick in kUniformEvery is uniform.
// Everything is drawn from one splitmix64 stream seeded by the seed alone (no
// std::uniform_int_distribution, whose output differs between standard libraries), so the seed alone
// fixes every choice.
#pragma once
#include <boost/fiber/context.hpp>
#include <boost/fiber/scheduler.hpp>
#include <boost/fiber/waker.hpp>
#include <boost/intrusive/set.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "fiberio/clock.hpp"
#include "fiberio/park.hpp"
#include "fiberio/poller.hpp"

namespace fiberio::detail {

class FiberState;

// splitmix64 (Steele, Lea, Flood 2014): tiny, and the same numbers on every platform.
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) noexcept : s_(seed) {}
  std::uint64_t next() noexcept {
    std::uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n), n > 0 (the modulo bias is below 2^-40 for the small n used here).
  std::uint64_t below(std::uint64_t n) noexcept { return next() % n; }

 private:
  std::uint64_t s_;
};

class Schedule {
 public:
  using ReadyQueue = boost::fibers::scheduler::ready_queue_type;
  explicit Schedule(ReadyQueue& ready) noexcept : ready_(ready) {}
  ~Schedule();

  // ---- seeded scheduling ----
  bool seeded() const noexcept { return seeded_; }
  std::uint64_t seed() const noexcept { return seed_; }
  // Starts a fresh seeded run: new priorities, change points, an empty trace, fiber ids from 0.
  void seed_with(std::uint64_t seed);
  void unseed() noexcept { seeded_ = false; }
  // Chooses the next fiber among ready_ (non-empty) and records it in the trace. Does not unlink it.
  boost::fibers::context* pick() noexcept;
  // An exploration point of the running fiber: counts a step and tells whether a ready fiber now
  // outranks it (the caller then yields).
  bool should_switch() noexcept;
  const std::vector<std::uint32_t>& trace() const noexcept { return trace_; }
  // The names of this run's fibers by id ("" where a greenlet was not named): a greenlet's name is
  // recorded when it begins (greenlet.cpp), so a name set right after spawn() is seen.
  void name_fiber(boost::fibers::context* ctx, std::string name);
  const std::vector<std::string>& names() const noexcept { return names_; }
  std::uint64_t steps() const noexcept { return steps_; }
  // Events of one poll in a fixed order (by fd, then token), so the fibers they wake are queued the same
  // way each run whatever order the kernel listed them in.
  static void order_events(std::vector<Poller::Ready>& events) noexcept;

  // ---- virtual time ----
  bool virtual_time() const noexcept { return virtual_; }
  // Turns it on (the clock starts frozen at the real time now) or off (the timers left are woken, and
  // their fibers see real time again: every fiberio wait treats an early wake-up as spurious).
  void set_virtual_time(bool on) noexcept;
  Clock::time_point now() const noexcept { return vnow_; }
  // Parks the running fiber (ctx) until woken, its waker also woken when the virtual clock reaches
  // `at` (park.cpp's timed wait on virtual time). No allocation: the timer lives on this frame.
  void suspend_until(boost::fibers::context* ctx, Clock::time_point at, const boost::fibers::waker& w,
                     boost::fibers::detail::spinlock_lock& handoff) noexcept;
  bool has_timers() const noexcept { return !timers_.empty(); }
  // The earliest deadline not yet reached (kNoDeadline if none).
  Clock::time_point next_timer() const noexcept {
    for (auto& t : timers_)
      if (t.at > vnow_) return t.at;
    return kNoDeadline;
  }
  // Wakes, in deadline order (ties: the order they were set), every timer due at the virtual now.
  // True if one woke a fiber.
  bool fire_due() noexcept;
  // Moves the virtual clock forward to `t` (never back).
  void advance_to(Clock::time_point t) noexcept {
    if (t > vnow_) vnow_ = t;
  }
  // Thread-pool jobs this hub's fibers queued that have not finished (threadpool.cpp counts them;
  // shared, as a job may outlive the hub): the clock does not jump past a job in flight (tokio's
  // paused clock does not auto-advance while a spawn_blocking task runs either).
  const std::shared_ptr<std::atomic<int>>& offloads_in_flight() const noexcept { return offloads_; }

 private:
  static constexpr std::uint64_t kUniformEvery = 8;
  // The fiber's id and priority in this run, kept in its FiberState (freed with the fiber, so a new
  // fiber at a reused address is never taken for an old one), assigned when first seen.
  FiberState& info(boost::fibers::context* ctx);
  void step(boost::fibers::context* running) noexcept;

  ReadyQueue& ready_;
  std::shared_ptr<std::atomic<int>> offloads_ = std::make_shared<std::atomic<int>>(0);
  bool seeded_ = false;
  std::uint64_t seed_ = 0;
  SplitMix64 rng_{0};
  std::uint64_t steps_ = 0;
  std::vector<std::uint64_t> change_points_;  // sorted steps at which the running fiber is demoted
  std::size_t next_change_ = 0;
  std::uint32_t next_id_ = 0;
  std::uint64_t run_ = 0;  // which seeded run a fiber's FiberState::sched_* fields belong to
  std::vector<std::uint32_t> trace_;
  std::vector<std::string> names_;

  bool virtual_ = false;
  Clock::time_point vnow_{};
  std::uint64_t timer_seq_ = 0;
  // A timed wait, on the waiting fiber's stack; it unlinks itself when that wait ends (auto_unlink),
  // however the fiber was woken. Ordered by deadline, then by the order the waits began.
  struct Timer : boost::intrusive::set_base_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>> {
    Clock::time_point at;
    std::uint64_t seq;
    boost::fibers::waker waker;
    bool operator<(const Timer& o) const noexcept { return at != o.at ? at < o.at : seq < o.seq; }
  };
  boost::intrusive::multiset<Timer, boost::intrusive::constant_time_size<false>> timers_;
};

class Hub;
// Applies FIBERIO_SEED / FIBERIO_VIRTUAL_TIME, if set, to a hub just created.
void schedule_from_env(Hub& hub);

}  // namespace fiberio::detail
