#include "fiberio/hub.hpp"

#include <cxxabi.h>
#include <fmt/format.h>
#include <pthread.h>

#include <cstdio>
#include <mutex>
#include <typeinfo>

#include "fiberio/greenlet.hpp"
#include "fiberio/time.hpp"

namespace fiberio {
namespace detail {

namespace {
thread_local Hub* t_hub = nullptr;

// Destroyed at thread exit before Boost.Fiber's own per-thread scheduler (it is constructed after it),
// so the remaining fibers are killed and unwound while the scheduler can still run them.
struct HubShutdown {
  ~HubShutdown() {
    if (t_hub) t_hub->shutdown();
  }
};

void after_fork_in_child() {
  if (t_hub) t_hub->after_fork_child();
}

constexpr std::uint32_t kPollEvery = 64;  // picks between non-blocking polls while fibers stay busy
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
  pending = std::move(e);
  if (parked) parked->waker.wake();
}

FiberState& fiber_state(boost::fibers::context* ctx) {
  auto* p = ctx->get_properties();
  if (!p) [[unlikely]] {
    p = new FiberState(ctx);
    ctx->set_properties(p);
  }
  return *static_cast<FiberState*>(p);
}

namespace {
[[noreturn]] void fire_timeout(TimeoutEntry& t) {
  t.fired = true;
  auto ms = std::chrono::duration<double, std::milli>(t.after).count();
  throw TimeoutError(fmt::format("fiberio::Timeout: timed out after {:g} ms", ms), t.owner);
}

void deliver(FiberState& st) {
  if (st.pending) [[unlikely]] {
    auto e = std::exchange(st.pending, nullptr);
    std::rethrow_exception(e);
  }
  if (!st.timeouts.empty()) {
    auto now = Clock::now();
    TimeoutEntry* first = nullptr;
    for (auto& t : st.timeouts)
      if (!t.fired && t.deadline <= now && (!first || t.deadline < first->deadline)) first = &t;
    if (first) fire_timeout(*first);
  }
}
}  // namespace

void check_interrupts() {
  auto* p = boost::fibers::context::active()->get_properties();
  if (p) deliver(*static_cast<FiberState*>(p));
}

bool park(WaitList& list, SpinLockGuard& lk, Deadline deadline, WaitKind kind) {
  auto* ctx = boost::fibers::context::active();
  FiberState& st = fiber_state(ctx);
  deliver(st);
  Deadline wake_at = std::min(deadline, st.earliest_timeout());
  if (deadline != kNoDeadline && deadline <= Clock::now()) return false;
  Hub& hub = Hub::current();
  Waiter w;
  w.waker = ctx->create_waker();
  list.push_back(w);
  st.parked = &w;
  hub.count_wait(kind, +1);
  if (wake_at == kNoDeadline)
    ctx->suspend(lk);
  else
    ctx->wait_until(wake_at, lk, boost::fibers::waker(w.waker));
  lk.lock();
  hub.count_wait(kind, -1);
  st.parked = nullptr;
  list.remove(w);
  if (w.notified) return true;
  deliver(st);
  return false;
}

void park_until(Deadline deadline) {
  Spinlock s;
  SpinLockGuard lk(s);
  WaitList list;
  while (Clock::now() < deadline) park(list, lk, deadline);
}

// ---- Hub ----
Hub* Hub::get() noexcept { return t_hub; }

Hub& Hub::current() {
  if (t_hub) [[likely]] return *t_hub;
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
  return *hub;
}

Hub::Hub() { events_.reserve(256); }

Hub::~Hub() {
  if (t_hub == this) t_hub = nullptr;
}

void Hub::awakened(boost::fibers::context* ctx) noexcept {
  if (!main_ctx_ && ctx->is_context(boost::fibers::type::main_context)) main_ctx_ = ctx;
  ctx->ready_link(ready_);
}

boost::fibers::context* Hub::pick_next() noexcept {
  // Busy fibers never leave the ready queue empty, so look at fds every kPollEvery switches too
  // (as Go's scheduler checks its netpoller): I/O is never starved by CPU-bound yielding.
  if (++dispatcher_rounds_ >= kPollEvery) {
    dispatcher_rounds_ = 0;
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

void Hub::poll(std::int64_t timeout_ns) noexcept {
  events_.clear();
  poller_.wait(timeout_ns, events_);
  notified_.store(false);
  for (auto& ev : events_) {
    auto fd = static_cast<std::uint32_t>(ev.token);
    auto gen = static_cast<std::uint32_t>(ev.token >> 32);
    if (fd >= fds_.size() || !fds_[fd] || fds_[fd]->generation != gen) continue;
    auto st = fds_[fd];
    if (ev.events & Poller::Readable) st->readers.notify_all();
    if (ev.events & Poller::Writable) st->writers.notify_all();
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

std::shared_ptr<FdState>& Hub::fd_slot(int fd) {
  auto i = static_cast<std::size_t>(fd);
  if (i >= fds_.size()) fds_.resize(std::max<std::size_t>(i + 1, fds_.size() * 2));
  return fds_[i];
}

FdWait Hub::wait_fd(int fd, Io dir, Deadline deadline, bool exclusive) {
  if (fd < 0) return FdWait::Closed;
  auto& slot = fd_slot(fd);
  if (!slot) {
    auto st = std::make_shared<FdState>();
    st->fd = fd;
    st->generation = next_generation_++;
    int err = poller_.add(fd, (std::uint64_t{st->generation} << 32) | static_cast<std::uint32_t>(fd));
    if (err == EPERM) return FdWait::NotPollable;
    if (err == EBADF) return FdWait::Closed;
    if (err) throw std::system_error(err, std::generic_category(), fmt::format("fiberio: cannot poll fd {}", fd));
    slot = std::move(st);
  }
  std::shared_ptr<FdState> st = slot;  // keeps the state alive if the fd is forgotten while we wait
  WaitList& list = dir == Io::Read ? st->readers : st->writers;
  if (exclusive && !list.empty())
    throw ConcurrentObjectUseError(fmt::format("fiberio: another fiber is already waiting to {} fd {}",
                                               dir == Io::Read ? "read" : "write", fd));
  Spinlock s;  // the hub's fd lists are touched only by this thread
  SpinLockGuard lk(s);
  bool notified = park(list, lk, deadline, WaitKind::Fd);
  if (st->closed) return FdWait::Closed;
  return notified ? FdWait::Ready : FdWait::TimedOut;
}

void Hub::forget_fd(int fd) noexcept {
  if (fd < 0 || static_cast<std::size_t>(fd) >= fds_.size() || !fds_[fd]) return;
  auto st = std::move(fds_[fd]);
  st->closed = true;
  poller_.remove(fd);
  st->readers.notify_all();
  st->writers.notify_all();
}

void Hub::add_greenlet(GreenletBase* g) noexcept {
  g->registry_index_ = greenlets_.size();
  greenlets_.push_back(g);
}

void Hub::remove_greenlet(GreenletBase* g) noexcept {
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

void Hub::shutdown() noexcept {
  shutting_down_ = true;
  auto give_up = Clock::now() + std::chrono::seconds(3);
  try {
    while (!greenlets_.empty() && Clock::now() < give_up) {
      std::vector<std::shared_ptr<GreenletBase>> alive;
      for (auto* g : greenlets_) alive.push_back(g->shared_from_this());
      for (auto& g : alive) g->kill(false);
      sleep(std::chrono::milliseconds(1));
    }
  } catch (...) {
  }
  if (!greenlets_.empty())
    std::fprintf(stderr, "fiberio: %zu greenlet(s) did not unwind at thread exit\n", greenlets_.size());
}

void Hub::after_fork_child() noexcept {
  std::vector<Poller::Registration> regs;
  for (auto& st : fds_)
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
