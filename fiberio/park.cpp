#include "fiberio/park.hpp"

#include <fmt/format.h>

#include "fiberio/detail/schedule.hpp"
#include "fiberio/hub.hpp"

namespace fiberio::detail {

// ---- WaitList ----
bool WaitList::notify_one() noexcept {
  while (Waiter* w = front()) {
    remove(*w);
    // A waiter whose deadline or kill already woke it holds a stale waker: skip to the next one.
    if (w->waker.wake()) {
      w->notified = true;
      return true;
    }
  }
  return false;
}

void WaitList::notify_all() noexcept {
  while (notify_one()) {
  }
}

// ---- parking ----
void FiberState::interrupt(std::exception_ptr e) noexcept {
  if (pending_) return;  // the first interruption wins; it has not been delivered yet
  if (t_hub) ++t_hub->armed;
  pending_ = std::move(e);
  if (parked) parked->waker.wake();
}

FiberState::~FiberState() {
  // An undelivered kill (the fiber ended first) must not keep the hub's fast path disarmed.
  if (pending_ && t_hub) --t_hub->armed;
}

FiberState& fiber_state(boost::fibers::context* ctx) {
  auto* p = ctx->get_properties();
  if (!p) [[unlikely]] {
    p = new FiberState(ctx);
    ctx->set_properties(p);
  }
  return *static_cast<FiberState*>(p);
}

void FiberState::deliver() {
  if (pending_) [[unlikely]] {
    auto e = std::exchange(pending_, nullptr);
    if (t_hub) --t_hub->armed;
    std::rethrow_exception(e);
  }
  if (!timeouts_.empty()) {
    auto now = Clock::now();
    TimeoutEntry* first = nullptr;
    for (auto& t : timeouts_)
      if (!t.fired && t.deadline <= now && (!first || t.deadline < first->deadline)) first = &t;
    if (first) {
      first->fired = true;
      auto ms = std::chrono::duration<double, std::milli>(first->after).count();
      throw TimeoutError(fmt::format("fiberio::Timeout: timed out after {:g} ms", ms), first->owner);
    }
  }
}

void check_interrupts_slow() {
  auto* p = boost::fibers::context::active()->get_properties();
  if (p) static_cast<FiberState*>(p)->deliver();
}

namespace {
// park() with or without a lock: `lk` null means the list is this thread's own.
bool park_on(WaitList& list, SpinLockGuard* lk, Deadline deadline, WaitKind kind, WaitOn on) {
  auto* ctx = boost::fibers::context::active();
  FiberState& st = fiber_state(ctx);
  st.deliver();
  Deadline wake_at = std::min(deadline, st.earliest_timeout());
  if (deadline != kNoDeadline && deadline <= Clock::now()) return false;
  Hub& hub = Hub::current();
  Waiter w;
  w.waker = ctx->create_waker();
  w.what = on.what;
  w.object = on.object;
  w.deadline = wake_at;
  w.since = hub.loop_time();
  list.push_back(w);
  st.parked = &w;
  hub.count_wait(kind, +1);
  // `lk` is released before the switch, not after it as Boost.Fiber does for fibers that may migrate
  // between threads: a fiberio fiber never migrates, and a wake-up from another thread only queues it
  // for this thread's dispatcher, which cannot run before this fiber has suspended. Boost's own
  // hand-off lock is a dummy it unlocks after the switch.
  if (lk) lk->unlock();
  boost::fibers::detail::spinlock unused;
  boost::fibers::detail::spinlock_lock handoff(unused, std::adopt_lock);
  if (wake_at == kNoDeadline) {
    ctx->suspend(handoff);
  } else if (Schedule* sched = hub.schedule(); sched && sched->virtual_time()) [[unlikely]] {
    // Virtual time (testing.hpp): the deadline is on the hub's virtual clock, which Boost's timers (real
    // time) do not know; the hub's Schedule keeps the timer and fires it (Hub::suspend_virtual).
    sched->suspend_until(ctx, wake_at, w.waker, handoff);
  } else {
    ctx->wait_until(wake_at, handoff, boost::fibers::waker(w.waker));
  }
  if (lk) lk->lock();
  hub.count_wait(kind, -1);
  st.parked = nullptr;
  list.remove(w);
  if (w.notified) return true;
  st.deliver();
  return false;
}
}  // namespace

bool park(WaitList& list, SpinLockGuard& lk, Deadline deadline, WaitKind kind, WaitOn on) {
  return park_on(list, &lk, deadline, kind, on);
}

bool park(WaitList& list, Deadline deadline, WaitKind kind, WaitOn on) { return park_on(list, nullptr, deadline, kind, on); }

void park_until(Deadline deadline) {
  Spinlock s;
  SpinLockGuard lk(s);
  WaitList list;
  while (Clock::now() < deadline) park(list, lk, deadline, WaitKind::Local, {kWaitSleep, nullptr});
}

}  // namespace fiberio::detail
