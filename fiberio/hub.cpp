#include "fiberio/hub.hpp"

#include <cxxabi.h>
#include <fmt/format.h>
#include <poll.h>
#include <pthread.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <typeinfo>
#include <unordered_set>

#include "fiberio/detail/fd_registry.hpp"
#include "fiberio/greenlet.hpp"
#include "fiberio/time.hpp"

namespace fiberio {
namespace detail {

thread_local constinit Hub* t_hub = nullptr;

namespace {

// Destroyed at thread exit before Boost.Fiber's own per-thread scheduler (it is constructed after it),
// so the remaining fibers are killed and unwound while the scheduler can still run them.
struct HubShutdown {
  ~HubShutdown() {
    if (!t_hub) return;
    if (!t_hub->shutdown()) {
      // Boost.Fiber's scheduler teardown, next, would wait for these fibers forever (spinning).
      std::fputs("fiberio: ending the process: greenlets that ignore their kill would keep this thread "
                 "from ever exiting\n",
                 stderr);
      std::fflush(nullptr);
      std::_Exit(EXIT_FAILURE);
    }
    if (!boost::fibers::context::active()->is_context(boost::fibers::type::main_context)) {
      // exit() was called from inside a greenlet. Boost.Fiber can tear a thread's scheduler down only
      // from the thread's main fiber (from here it would wait forever for this very fiber to end),
      // and exit() does not tell its status to thread-exit handlers. The other greenlets have been
      // unwound; end the process now rather than hang.
      std::fputs("fiberio: exit() called from inside a greenlet: other greenlets were unwound, but atexit "
                 "handlers and static destructors are skipped and the exit status is lost (exiting with 1); "
                 "return from main() or call exit() from the main fiber instead\n",
                 stderr);
      std::fflush(nullptr);
      std::_Exit(EXIT_FAILURE);
    }
    // The main fiber's greenlet-local values die with the thread: now, while the hub still exists
    // (Boost.Fiber would free them after its scheduler, where their destructors could not use fiberio).
    if (auto* p = boost::fibers::context::active()->get_properties()) static_cast<FiberState*>(p)->locals.clear();
  }
};

void after_fork_in_child() {
  if (t_hub) t_hub->after_fork_child();
}

constexpr std::uint32_t kDispatchEvery = 64;  // picks between dispatcher turns while fibers stay busy
constexpr std::uint32_t kReapEvery = 16;      // finished greenlets whose fibers wait to be freed, at most
}  // namespace

// ---- WaitList ----
void WaitList::push_back(Waiter& w) noexcept {
  w.prev = tail_;
  w.next = nullptr;
  if (tail_) tail_->next = &w; else head_ = &w;
  tail_ = &w;
  w.linked = true;
  ++size_;
}

void WaitList::remove(Waiter& w) noexcept {
  if (!w.linked) return;
  if (w.prev) w.prev->next = w.next; else head_ = w.next;
  if (w.next) w.next->prev = w.prev; else tail_ = w.prev;
  w.prev = w.next = nullptr;
  w.linked = false;
  --size_;
}

bool WaitList::notify_one() noexcept {
  while (Waiter* w = head_) {
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
bool park_on(WaitList& list, SpinLockGuard* lk, Deadline deadline, WaitKind kind) {
  auto* ctx = boost::fibers::context::active();
  FiberState& st = fiber_state(ctx);
  st.deliver();
  Deadline wake_at = std::min(deadline, st.earliest_timeout());
  if (deadline != kNoDeadline && deadline <= Clock::now()) return false;
  Hub& hub = Hub::current();
  Waiter w;
  w.waker = ctx->create_waker();
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
  if (wake_at == kNoDeadline)
    ctx->suspend(handoff);
  else
    ctx->wait_until(wake_at, handoff, boost::fibers::waker(w.waker));
  if (lk) lk->lock();
  hub.count_wait(kind, -1);
  st.parked = nullptr;
  list.remove(w);
  if (w.notified) return true;
  st.deliver();
  return false;
}
}  // namespace

bool park(WaitList& list, SpinLockGuard& lk, Deadline deadline, WaitKind kind) {
  return park_on(list, &lk, deadline, kind);
}

bool park(WaitList& list, Deadline deadline, WaitKind kind) { return park_on(list, nullptr, deadline, kind); }

void park_until(Deadline deadline) {
  Spinlock s;
  SpinLockGuard lk(s);
  WaitList list;
  while (Clock::now() < deadline) park(list, lk, deadline);
}

// ---- Hub ----
Hub& Hub::create() {
  // Touching Boost.Fiber first creates its per-thread scheduler before our HubShutdown below, so
  // thread-exit destroys HubShutdown first (reverse order of construction).
  auto* active = boost::fibers::context::active();
  auto* hub = new Hub();
  if (active->is_context(boost::fibers::type::main_context)) hub->main_ctx_ = active;
  t_hub = hub;
  active->get_scheduler()->set_algo(hub);  // the scheduler owns the hub from here on
  static thread_local HubShutdown shutdown_at_thread_exit;
  (void)shutdown_at_thread_exit;
  static std::once_flag fork_once;
  std::call_once(fork_once, [] { ::pthread_atfork(nullptr, nullptr, after_fork_in_child); });
  install_overflow_reporter(&hub->stacks_);
  FdRegistry::instance().hub_started(hub);
  return *hub;
}

Hub::Hub() { events_.reserve(64); }

Hub::~Hub() {
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
      busy_dispatch_ = due && !ready_.empty();
      since_dispatch_ = 0;
      finished_since_dispatch_ = 0;
      ++switches_;
      return std::exchange(dispatcher_, nullptr);
    }
  } else if (std::exchange(busy_dispatch_, false)) {
    // Called by the dispatcher while fibers stay busy (an idle hub polls in suspend_until): look at
    // fds too, as Go's scheduler checks its netpoller, so I/O is never starved by CPU-bound yielding.
    // Only here: a fiber calling pick_next may be parked on an fd this poll would wake.
    poll(0);
  }
  if (ready_.empty()) return nullptr;
  auto* ctx = &ready_.front();
  ready_.pop_front();
  ++switches_;
  return ctx;
}

void Hub::suspend_until(std::chrono::steady_clock::time_point const& tp) noexcept {
  if (tp == (std::chrono::steady_clock::time_point::max)()) {
    if (!shutting_down_ && fd_waiters_ == 0 && external_waiters_ == 0 && !notified_.load()) {
      poll(0);
      if (!ready_.empty()) return;
      raise_loop_exit();
      if (!ready_.empty()) return;
    }
    poll(-1);
    return;
  }
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(tp - Clock::now()).count();
  poll(ns > 0 ? ns : 0);
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

void Hub::poll(std::int64_t timeout_ns) noexcept {
  events_.clear();
  poller_.wait(timeout_ns, events_);
  notified_.store(false);
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
  if (k == WaitKind::External) external_waiters_ += delta;
  else if (k == WaitKind::Fd) fd_waiters_ += delta;
}

FdState* Hub::register_fd(int fd, FdWait& refused) {
  auto i = static_cast<std::size_t>(fd);
  if (i >= fds_.size()) fds_.resize(std::max<std::size_t>(i + 1, fds_.size() * 2), nullptr);
  auto st = std::make_unique<FdState>();
  st->fd = fd;
  st->generation = next_generation_++;
  // Owner first, then the close counter (FdRegistry's contract): a close racing this registration
  // either sees us as the owner or is counted in closes_seen.
  st->closes = FdRegistry::instance().watch(fd, this);
  if (st->closes) st->closes_seen = st->closes->load(std::memory_order_seq_cst);
  int err = poller_.add(fd, (std::uint64_t{st->generation} << 32) | static_cast<std::uint32_t>(fd));
  if (err) FdRegistry::instance().unwatch(fd, this);
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
    forget_fd(fd);
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
  bool notified = park(list, deadline, WaitKind::Fd);
  if (st->closed) return FdWait::Closed;
  if (!notified) return FdWait::TimedOut;
  ready = false;  // this waiter consumes the event that woke it
  return FdWait::Ready;
}

void Hub::forget_fd(int fd) noexcept {
  FdState* st = known_fd(fd);
  if (!st) return;
  FdRegistry::instance().unwatch(fd, this);
  fds_[static_cast<std::size_t>(fd)] = nullptr;
  st->closed = true;
  poller_.remove(fd);
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

void Hub::read_mail() noexcept {
  std::array<int, 64> fds;
  std::size_t n;
  bool overflow;
  {
    SpinLockGuard lk(mail_lock_);
    has_mail_.store(false, std::memory_order_relaxed);
    n = std::exchange(mail_count_, 0);
    std::copy_n(mail_.begin(), n, fds.begin());
    overflow = std::exchange(mail_overflow_, false);
  }
  // Only a stale registration is dropped: the number may have been reused and registered again.
  if (overflow) {
    for (std::size_t fd = 0; fd < fds_.size(); ++fd)
      if (fds_[fd] && fds_[fd]->stale()) forget_fd(static_cast<int>(fd));
    return;
  }
  for (std::size_t k = 0; k < n; ++k)
    if (FdState* st = known_fd(fds[k]); st && st->stale()) forget_fd(fds[k]);
}

void Hub::add_greenlet(GreenletBase* g) noexcept {
  g->registry_index_ = greenlets_.size();
  greenlets_.push_back(g);
}

void Hub::remove_greenlet(GreenletBase* g) noexcept {
  // Called as the greenlet finishes: its fiber terminates next, and only the dispatcher frees a
  // terminated fiber (its stack goes back to the pool then). Bound how many wait for that.
  ++finished_since_dispatch_;
  auto i = g->registry_index_;
  if (i >= greenlets_.size() || greenlets_[i] != g) return;
  greenlets_[i] = greenlets_.back();
  greenlets_[i]->registry_index_ = i;
  greenlets_.pop_back();
}

void Hub::report_error(const GreenletBase& g, std::exception_ptr e) noexcept {
  try {
    if (error_handler_) return error_handler_(g, e);
    std::string msg = fmt::format("fiberio: {} failed with {}\n", g.name(), describe_exception(e));
    std::fputs(msg.c_str(), stderr);
  } catch (...) {
    std::fputs("fiberio: a greenlet failed, and reporting it failed too\n", stderr);
  }
}

bool Hub::shutdown() noexcept {
  shutting_down_ = true;
  auto give_up = Clock::now() + std::chrono::seconds(3);
  GreenletBase* self = fiber_state().greenlet;  // exit() may be called from a greenlet
  // Each greenlet is killed once (a second kill could land in the cleanup code the first one started,
  // even in a destructor). Holding them keeps their addresses from being reused by new greenlets.
  std::vector<std::shared_ptr<GreenletBase>> killed;
  std::unordered_set<const GreenletBase*> seen;
  auto others_alive = [&] { return greenlets_.size() > (self && self->hub_ == this && !self->dead() ? 1u : 0u); };
  while (others_alive() && Clock::now() < give_up) {
    try {
      std::vector<GreenletBase*> now_alive = greenlets_;
      for (auto* g : now_alive) {
        if (g == self || !seen.insert(g).second) continue;
        killed.push_back(g->shared_from_this());
        g->kill(false);
      }
      sleep(std::chrono::milliseconds(1));
    } catch (...) {
    }
  }
  if (!others_alive()) return true;
  std::fprintf(stderr, "fiberio: %zu greenlet(s) did not unwind within 3 s of being killed at thread exit\n",
               greenlets_.size() - (self ? 1 : 0));
  return false;
}

void Hub::after_fork_child() noexcept {
  std::vector<Poller::Registration> regs;
  for (FdState* st : fds_)
    if (st) regs.push_back({st->fd, (std::uint64_t{st->generation} << 32) | static_cast<std::uint32_t>(st->fd)});
  poller_.reopen(regs);
  notified_.store(false);
}

}  // namespace detail

std::uint64_t hub_switches() { return detail::Hub::current().switches(); }
std::size_t live_greenlets() { return detail::Hub::current().live_greenlets(); }
void set_error_handler(std::function<void(const GreenletBase&, std::exception_ptr)> handler) {
  detail::Hub::current().set_error_handler(std::move(handler));
}

std::string describe_exception(std::exception_ptr e) {
  if (!e) return "no exception";
  auto demangle = [](const char* name) {
    int status = 0;
    char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
    std::string s = status == 0 && d ? d : name;
    std::free(d);
    return s;
  };
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return demangle(typeid(ex).name()) + ": " + ex.what();
  } catch (const GreenletExit& ex) {
    return ex.what();
  } catch (...) {
    auto* t = abi::__cxa_current_exception_type();
    return t ? demangle(t->name()) : std::string("unknown exception");
  }
}

}  // namespace fiberio
