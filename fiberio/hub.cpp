#include "fiberio/hub.hpp"

#include <fmt/format.h>
#include <poll.h>
#include <pthread.h>

#include <bit>
#include <mutex>

#include "fiberio/detail/fd_registry.hpp"
#include "fiberio/detail/monitor.hpp"
#include "fiberio/detail/schedule.hpp"

namespace fiberio {
namespace detail {

thread_local constinit Hub* t_hub = nullptr;

namespace {

void after_fork_in_child() {
  if (t_hub) t_hub->after_fork_child();
}

constexpr std::uint32_t kDispatchEvery = 64;  // picks between dispatcher turns while fibers stay busy
constexpr std::uint32_t kReapEvery = 16;      // finished greenlets whose fibers wait to be freed, at most
}  // namespace

// ---- Hub ----
Hub& Hub::create() {
  // Touching Boost.Fiber first creates its per-thread scheduler, so that anything per-thread built
  // after the hub (greenlet.cpp's thread-exit unwinding) is destroyed before that scheduler.
  auto* active = boost::fibers::context::active();
  auto* hub = new Hub();
  if (active->is_context(boost::fibers::type::main_context)) hub->main_ctx_ = active;
  t_hub = hub;
  active->get_scheduler()->set_algo(hub);  // the scheduler owns the hub from here on
  static std::once_flag fork_once;
  std::call_once(fork_once, [] { ::pthread_atfork(nullptr, nullptr, after_fork_in_child); });
  install_overflow_reporter(&hub->stacks_);
  FdRegistry::instance().hub_started(hub);
  monitor_hub_started(hub);
  schedule_from_env(*hub);  // FIBERIO_SEED / FIBERIO_VIRTUAL_TIME (testing.hpp)
  return *hub;
}

Hub::Hub() { events_.reserve(64); }

Hub::~Hub() {
  delete sched_;
  monitor_hub_ended(this);
  {
    SpinLockGuard lk(mail_lock_);
    for (auto& fn : calls_) fn(false);  // their callers are told this hub is gone
    calls_.clear();
  }
  FdRegistry::instance().hub_ended(this);
  for (FdState* st : fds_)
    if (st) {
      FdRegistry::instance().unwatch(st->fd, this);
      release(st);
    }
  if (t_hub == this) t_hub = nullptr;
}

void Hub::awakened(boost::fibers::context* ctx) noexcept {
  if (ctx->is_context(boost::fibers::type::dispatcher_context)) [[unlikely]] {
    dispatcher_ = ctx;
    return;
  }
  if (!main_ctx_ && ctx->is_context(boost::fibers::type::main_context)) main_ctx_ = ctx;
  ctx->ready_link(ready_);
}

boost::fibers::context* Hub::pick_next() noexcept {
  if (dispatcher_) {
    // Called by a fiber that suspends or yields: it must get a context back (Boost resumes it
    // unchecked), so the dispatcher takes over when nothing else is ready.
    bool due = ++since_dispatch_ >= kDispatchEvery;
    if (ready_.empty() || due || finished_since_dispatch_ >= kReapEvery) {
      // An empty ready_ does not mean the hub is idle: a fiber that yields is queued only after the
      // switch (Boost hands it to the dispatcher), so one greenlet yielding in a loop finds ready_
      // empty every time. The count therefore runs on until it is due, and then the dispatcher polls
      // either way (before: a lone yielding greenlet reset it on every pick and fds were never polled).
      busy_dispatch_ = due;
      if (due) since_dispatch_ = 0;
      finished_since_dispatch_ = 0;
      count_switch(nullptr);  // the dispatcher: never a greenlet, and freed before the hub at thread exit
      return std::exchange(dispatcher_, nullptr);
    }
  } else if (std::exchange(busy_dispatch_, false)) {
    // Called by the dispatcher while fibers stay busy (an idle hub polls in suspend_until): look at
    // fds too, as Go's scheduler checks its netpoller, so I/O is never starved by CPU-bound yielding.
    // Only here: a fiber calling pick_next may be parked on an fd this poll would wake.
    if (poll(0)) notice_pending_ = true;
  }
  if (ready_.empty()) return nullptr;
  boost::fibers::context* ctx;
  if (sched_ && sched_->seeded()) [[unlikely]] {
    // Seeded mode (detail/schedule.hpp) picks from the whole ready queue, by the seed.
    ctx = sched_->pick();
    ctx->ready_unlink();
  } else {
    ctx = &ready_.front();
    ready_.pop_front();
  }
  count_switch(ctx);
  return ctx;
}

void Hub::suspend_until(std::chrono::steady_clock::time_point const& tp) noexcept {
  if (std::exchange(notice_pending_, false)) return;  // a woken fiber waits to be spliced: go round
  if (sched_ && sched_->virtual_time() && suspend_virtual(tp)) [[unlikely]] return;
  if (tp == (std::chrono::steady_clock::time_point::max)()) {
    if (!shutting_down_ && fd_waiters_ == 0 && external_waiters_ == 0 && !notified_.load()) {
      if (poll(0) || !ready_.empty()) return;  // a wake-up from another thread counts as progress
      raise_loop_exit();
      if (!ready_.empty()) return;
    }
    poll(-1);
    return;
  }
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(tp - Clock::now()).count();
  poll(ns > 0 ? ns : 0);
}

// Virtual time: fibers' timed waits are the Schedule's timers (park.cpp), not Boost's sleep queue, and
// the clock they read only moves here. False when no virtual timer is set (the caller goes on as usual:
// poll, or LoopExit if nothing at all can wake the main fiber).
bool Hub::suspend_virtual(std::chrono::steady_clock::time_point const& tp) noexcept {
  if (sched_->fire_due()) return true;
  auto next = sched_->next_timer();
  if (next == kNoDeadline) return false;
  // Waits on other threads (Event, AsyncResult: external_waiters_) do not hold the clock back: most
  // are set by this hub's own fibers, and an Event never set must not turn a virtual timeout into a
  // real one. A thread-pool job this hub queued does: its result comes at a real time. So a timed wait
  // for work on a thread of the program's own may expire before that work is done (docs/design.md,
  // "Reproducing races"); a wake-up already sent (notified_) is seen first.
  bool only_timers = fd_waiters_ == 0 && sched_->offloads_in_flight()->load() == 0 && !notified_.load() &&
                     tp == (std::chrono::steady_clock::time_point::max)();
  if (only_timers) {
    if (poll(0) || !ready_.empty()) return true;  // a wake-up from another thread came first
    sched_->advance_to(next);  // nothing else can happen before the next deadline: jump to it
    sched_->fire_due();
    return true;
  }
  // An fd event or a Boost timer (tp, a fiber sleeping through Boost.Fiber's own API) may come at any
  // real time: wait for it in real time, up to the next virtual deadline, the virtual clock running at
  // the real pace meanwhile.
  auto real0 = std::chrono::steady_clock::now();
  auto wait = next - sched_->now();
  if (tp != (std::chrono::steady_clock::time_point::max)()) wait = std::min(wait, tp - real0);
  poll(std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::nanoseconds>(wait).count()));
  sched_->advance_to(std::min(next, sched_->now() + (std::chrono::steady_clock::now() - real0)));
  sched_->fire_due();
  return true;
}

void Hub::begin_shutdown() noexcept {
  shutting_down_ = true;
  // The greenlets left are unwound with a time limit (greenlet.cpp) that a frozen clock would never
  // reach: back to real time (their virtual timers are woken).
  if (sched_) sched_->set_virtual_time(false);
}

Schedule& Hub::make_schedule() {
  if (!sched_) {
    sched_ = new Schedule(ready_);
    t_schedule = sched_;
  }
  return *sched_;
}

void Hub::notify() noexcept {
  if (!notified_.exchange(true)) poller_.wake();
}

namespace {
// Once thousands of connections take turns, each wake-up's memory is cold: the fd's state, and the
// parked fiber's stack frames around its Waiter, which the fiber unwinds through when it runs. Asked
// for early (the states a batch ahead, the frames as the waiter is woken, while other fibers still
// run), the misses overlap instead of stalling one after another.
void prefetch_frames(const Waiter* w) noexcept {
  auto* p = reinterpret_cast<const char*>(w);
  for (int off = -320; off <= 448; off += 64) __builtin_prefetch(p + off);
}
}  // namespace

bool Hub::poll(std::int64_t timeout_ns) noexcept {
  events_.clear();
  auto start = Clock::now();
  // How long fibers ran since the last poll: the latency a new event would have seen.
  if (loop_iterations_++) {
    auto us = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(start - loop_time_).count());
    ++latency_[std::min<std::size_t>(static_cast<std::size_t>(std::bit_width(us)), kLatencyBuckets - 1)];
  }
  polling_.store(true, std::memory_order_relaxed);
  poller_.wait(timeout_ns, events_);
  polling_.store(false, std::memory_order_relaxed);
  loop_time_ = Clock::now();
  poll_time_ += loop_time_ - start;
  if (sched_ && sched_->seeded()) [[unlikely]] Schedule::order_events(events_);
  bool noticed = notified_.exchange(false);
  if (has_mail_.load(std::memory_order_acquire)) [[unlikely]] read_mail();
  for (auto& ev : events_)
    if (FdState* st = state_of(ev)) __builtin_prefetch(st);
  for (auto& ev : events_) {
    FdState* st = state_of(ev);
    if (!st) continue;
    if (ev.events & Poller::Hangup) st->hangup_seen = true;
    if (ev.events & Poller::Readable) {
      st->read_drained = false;
      st->read_ready = true;
      if (Waiter* w = st->readers.front()) prefetch_frames(w);
      st->readers.notify_all();
    }
    if (ev.events & Poller::Writable) {
      st->write_ready = true;
      if (Waiter* w = st->writers.front()) prefetch_frames(w);
      st->writers.notify_all();
    }
  }
  return noticed;
}

void Hub::raise_loop_exit() noexcept {
  if (!main_ctx_) return;
  auto& st = fiber_state(main_ctx_);
  if (!st.parked) return;
  st.interrupt(std::make_exception_ptr(
      LoopExit("fiberio::LoopExit: this operation would block forever (the main fiber waits, and no "
               "ready fiber, timer, fd or other thread can ever wake it)")));
}

void Hub::count_wait(WaitKind k, int delta) noexcept {
  parked_ += static_cast<std::size_t>(delta);
  if (k == WaitKind::External) external_waiters_ += delta;
  else if (k == WaitKind::Fd) fd_waiters_ += delta;
}

FdState* Hub::register_fd(int fd, FdWait& refused) {
  auto i = static_cast<std::size_t>(fd);
  if (i >= fds_.size()) fds_.resize(std::max<std::size_t>(i + 1, fds_.size() * 2), nullptr);
  auto st = std::make_unique<FdState>();
  st->fd = fd;
  st->generation = next_generation_++;
  // The close counter, the poller, then the owner (FdRegistry's contract): a close racing this
  // registration either finds us as the owner, after our epoll_ctl, or is seen by watch().
  auto& registry = FdRegistry::instance();
  st->closes = registry.close_counter(fd);
  if (st->closes) st->closes_seen = st->closes->load(std::memory_order_seq_cst);
  int err = poller_.add(fd, (std::uint64_t{st->generation} << 32) | static_cast<std::uint32_t>(fd));
  if (!err && !registry.watch(fd, this, st->closes_seen)) {
    poller_.remove(fd);  // closed while we added it: whatever the number names now is not what we were asked to watch
    err = EBADF;
  }
  if (err == EPERM) refused = FdWait::NotPollable;
  else if (err == EBADF) refused = FdWait::Closed;
  else if (err) throw std::system_error(err, std::generic_category(), fmt::format("fiberio: cannot poll fd {}", fd));
  else return fds_[i] = st.release();
  return nullptr;
}

void Hub::throw_concurrent_use(int fd, Io dir) {
  throw ConcurrentObjectUseError(
      fmt::format("fiberio: another fiber is already waiting to {} fd {}", dir == Io::Read ? "read" : "write", fd));
}

FdWait Hub::wait_fd(int fd, Io dir, Deadline deadline, bool exclusive, bool level) {
  if (fd < 0) return FdWait::Closed;
  FdState* st = known_fd(fd);
  if (st && st->stale()) [[unlikely]] {
    // Closed since it was registered (on any thread) and the number reused: watch the new fd.
    forget_fd(fd, false);
    st = nullptr;
  }
  if (!st) {
    FdWait refused{};
    st = register_fd(fd, refused);
    if (!st) return refused;
  }
  WaitList& list = dir == Io::Read ? st->readers : st->writers;
  if (exclusive && !list.empty()) [[unlikely]] throw_concurrent_use(fd, dir);
  bool& ready = dir == Io::Read ? st->read_ready : st->write_ready;
  if (ready || level) {
    // An event came while nobody waited. It may be stale (the caller already consumed the data), so
    // confirm; this costs a syscall only after such an unattended event, or when asked to.
    check_interrupts();  // (before clearing the flag: a throw here must not lose the event)
    ready = false;
    pollfd p{fd, static_cast<short>(dir == Io::Read ? POLLIN : POLLOUT), 0};
    if (::poll(&p, 1, 0) > 0) return FdWait::Ready;
  }
  struct Hold {  // forget_fd() while we wait must not free the state under us
    FdState* st;
    explicit Hold(FdState* s) noexcept : st(s) { ++st->refs; }
    ~Hold() { release(st); }
  } hold(st);
  bool notified = park(list, deadline, WaitKind::Fd, {dir == Io::Read ? kWaitRead : kWaitWrite, st});
  if (st->closed) return FdWait::Closed;
  if (!notified) return FdWait::TimedOut;
  ready = false;  // this waiter consumes the event that woke it
  return FdWait::Ready;
}

void Hub::forget_fd(int fd, bool still_open) noexcept {
  FdState* st = known_fd(fd);
  if (!st) return;
  FdRegistry::instance().unwatch(fd, this);
  fds_[static_cast<std::size_t>(fd)] = nullptr;
  st->closed = true;
  // Closed elsewhere: the kernel dropped the registration with the file (and the number, maybe
  // reused, is not ours to touch); an fd that is still open is removed from the poller here.
  if (still_open) poller_.remove(fd);
  st->readers.notify_all();
  st->writers.notify_all();
  release(st);
}

void Hub::post_forget(int fd) noexcept {
  {
    SpinLockGuard lk(mail_lock_);
    if (mail_count_ < mail_.size()) mail_[mail_count_++] = fd;
    else mail_overflow_ = true;
  }
  has_mail_.store(true, std::memory_order_release);
  notify();
}

void Hub::post_call(std::function<void(bool)> fn) {
  {
    SpinLockGuard lk(mail_lock_);
    calls_.push_back(std::move(fn));
  }
  has_mail_.store(true, std::memory_order_release);
  notify();
}

std::size_t Hub::ready_count() const noexcept { return ready_.size(); }

void Hub::read_mail() noexcept {
  std::array<int, 64> fds;
  std::size_t n;
  bool overflow;
  std::vector<std::function<void(bool)>> calls;
  {
    SpinLockGuard lk(mail_lock_);
    has_mail_.store(false, std::memory_order_relaxed);
    n = std::exchange(mail_count_, 0);
    std::copy_n(mail_.begin(), n, fds.begin());
    overflow = std::exchange(mail_overflow_, false);
    calls.swap(calls_);
  }
  for (auto& fn : calls) fn(true);
  // Only a stale registration is dropped: the number may have been reused and registered again.
  if (overflow) {
    for (std::size_t fd = 0; fd < fds_.size(); ++fd)
      if (fds_[fd] && fds_[fd]->stale()) forget_fd(static_cast<int>(fd), false);
    return;
  }
  for (std::size_t k = 0; k < n; ++k)
    if (FdState* st = known_fd(fds[k]); st && st->stale()) forget_fd(fds[k], false);
}

void Hub::after_fork_child() noexcept {
  std::vector<Poller::Registration> regs;
  for (FdState* st : fds_)
    if (st) regs.push_back({st->fd, (std::uint64_t{st->generation} << 32) | static_cast<std::uint32_t>(st->fd)});
  poller_.reopen(regs);
  notified_.store(false);
}

}  // namespace detail

void ensure_hub() { detail::Hub::current(); }
std::uint64_t hub_switches() { return detail::Hub::current().switches(); }
}  // namespace fiberio
