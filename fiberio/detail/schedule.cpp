#include "fiberio/detail/schedule.hpp"

#include <algorithm>

#include "fiberio/hub.hpp"
#include "fiberio/park.hpp"

namespace fiberio::detail {

thread_local constinit Schedule* t_schedule = nullptr;
thread_local constinit const std::chrono::steady_clock::time_point* t_virtual_now = nullptr;

Schedule::~Schedule() {
  if (t_virtual_now == &vnow_) t_virtual_now = nullptr;
  if (t_schedule == this) t_schedule = nullptr;
}

void Schedule::seed_with(std::uint64_t seed) {
  seeded_ = true;
  seed_ = seed;
  rng_ = SplitMix64(seed);
  ++run_;
  steps_ = 0;
  next_id_ = 0;
  trace_.clear();
  names_.clear();
  // PCT's parameters come from the seed too, so that the seed alone replays a schedule: the depth d
  // (2..4: d-1 change points) and the horizon the change points fall in, log-uniform over 8..32768
  // steps, since how many steps the program takes is not known in advance.
  std::uint64_t depth = 2 + rng_.below(3);
  std::uint64_t horizon = std::uint64_t{8} << rng_.below(13);
  change_points_.clear();
  for (std::uint64_t i = 1; i < depth; ++i) change_points_.push_back(1 + rng_.below(horizon));
  std::sort(change_points_.begin(), change_points_.end());
  next_change_ = 0;
  info(boost::fibers::context::active());  // the fiber starting the run is fiber 0 of its trace
}

void Schedule::name_fiber(boost::fibers::context* ctx, std::string name) {
  std::uint32_t id = info(ctx).sched_id;
  if (names_.size() <= id) names_.resize(id + 1);
  names_[id] = std::move(name);
}

FiberState& Schedule::info(boost::fibers::context* ctx) {
  FiberState& st = fiber_state(ctx);
  if (st.sched_run != run_) {
    st.sched_run = run_;
    st.sched_id = next_id_++;
    // Initial priorities sit above every value a change point gives (1..d-1).
    st.sched_priority = rng_.next() | (std::uint64_t{1} << 63);
  }
  return st;
}

void Schedule::step(boost::fibers::context* running) noexcept {
  ++steps_;
  std::uint64_t lowered = 0;
  while (next_change_ < change_points_.size() && change_points_[next_change_] <= steps_) {
    ++next_change_;
    lowered = next_change_;  // the i-th change point demotes to priority i: below all before it
  }
  if (lowered && running && !running->is_context(boost::fibers::type::dispatcher_context))
    info(running).sched_priority = lowered;
}

boost::fibers::context* Schedule::pick() noexcept {
  step(boost::fibers::context::active());
  boost::fibers::context* best = nullptr;
  if (rng_.below(kUniformEvery) == 0) {
    std::uint64_t k = rng_.below(static_cast<std::uint64_t>(ready_.size()));
    auto it = ready_.begin();
    std::advance(it, static_cast<std::ptrdiff_t>(k));
    best = &*it;
  } else {
    std::uint64_t best_priority = 0;
    for (auto& ctx : ready_)
      if (std::uint64_t p = info(&ctx).sched_priority; !best || p > best_priority) {
        best = &ctx;
        best_priority = p;
      }
  }
  // Bounded: a long-running seeded program keeps its first million switches.
  if (trace_.size() < (std::size_t{1} << 20)) trace_.push_back(info(best).sched_id);
  return best;
}

bool Schedule::should_switch() noexcept {
  auto* me = boost::fibers::context::active();
  step(me);
  std::uint64_t mine = info(me).sched_priority;
  for (auto& ctx : ready_)
    if (info(&ctx).sched_priority > mine) return true;
  return false;
}

void Schedule::order_events(std::vector<Poller::Ready>& events) noexcept {
  std::sort(events.begin(), events.end(), [](const Poller::Ready& a, const Poller::Ready& b) {
    return static_cast<std::uint32_t>(a.token) != static_cast<std::uint32_t>(b.token)
               ? static_cast<std::uint32_t>(a.token) < static_cast<std::uint32_t>(b.token)
               : a.token < b.token;
  });
}

void Schedule::set_virtual_time(bool on) noexcept {
  if (on == virtual_) return;
  virtual_ = on;
  if (on) {
    vnow_ = std::chrono::steady_clock::now();
    t_virtual_now = &vnow_;
    return;
  }
  t_virtual_now = nullptr;
  // Their deadlines are virtual: wake them to wait again on real time (each wait loops on early
  // wake-ups). Each entry stays until its fiber runs (see suspend_until).
  for (auto& t : timers_) t.waker.wake();
}

void Schedule::suspend_until(boost::fibers::context* ctx, Clock::time_point at, const boost::fibers::waker& w,
                             boost::fibers::detail::spinlock_lock& handoff) noexcept {
  Timer t;
  t.at = at;
  t.seq = timer_seq_++;
  t.waker = w;
  timers_.insert(t);
  ctx->suspend(handoff);
}  // t unlinks itself here

bool Schedule::fire_due() noexcept {
  // Entries leave when their fibers run, not here; a fired entry's waker is stale from then on, and
  // waking it again does nothing.
  bool woke = false;
  for (auto it = timers_.begin(); it != timers_.end() && it->at <= vnow_; ++it) woke |= it->waker.wake();
  return woke;
}

void exploration_point_slow() noexcept {
  Schedule* s = t_schedule;
  Hub* hub = t_hub;
  if (!s->seeded() || !hub || hub->dispatching()) return;
  if (s->should_switch()) boost::fibers::context::active()->yield();
}

}  // namespace fiberio::detail
