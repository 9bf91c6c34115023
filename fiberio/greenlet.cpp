#include "fiberio/greenlet.hpp"

#include "fiberio/detail/schedule.hpp"
#include "fiberio/hub.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>

namespace fiberio {

namespace detail {

// The greenlets alive on this thread, and the thread-exit unwinding of those left. Built after the
// thread's hub (hence after Boost.Fiber's per-thread scheduler, which the hub's creation makes), so it
// is destroyed before that scheduler, while the remaining fibers can still run.
class ThreadGreenlets;
// A debugging anchor for scripts/fiberio-gdb.py: this thread's registry, at a namespace-scope name gdb
// can read with its type (it cannot type the function-local thread_local in thread_greenlets() below).
// Set once when a thread's registry is built and cleared when it dies: no cost on any hot path.
// Not declared in a header: nothing in fiberio reads it.
thread_local constinit ThreadGreenlets* t_greenlets = nullptr;

class ThreadGreenlets {
 public:
  ThreadGreenlets() noexcept { t_greenlets = this; }
  std::size_t size() const noexcept { return live_.size(); }
  GreenletBase* at(std::size_t i) const noexcept { return live_[i]; }
  void add(GreenletBase* g, const void* site) {
    g->registry_index_ = live_.size();
    live_.push_back(g);
    g->spawn_site_ = site;
    if (auto* p = boost::fibers::context::active()->get_properties())
      if (GreenletBase* parent = static_cast<FiberState*>(p)->greenlet) g->spawner_ = parent->id();
    if (hooks_active()) [[unlikely]] fire_spawn(g->id(), g->spawner_);
  }
  void remove(GreenletBase* g) noexcept {
    auto i = g->registry_index_;
    if (i >= live_.size() || live_[i] != g) return;
    live_[i] = live_.back();
    live_[i]->registry_index_ = i;
    live_.pop_back();
  }

  ~ThreadGreenlets() {
    struct Unanchor {
      ~Unanchor() { t_greenlets = nullptr; }
    } unanchor;
    auto* hub = Hub::get();
    if (!hub) return;
    if (!unwind_all(*hub)) {
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
    fiber_state().locals.clear();
  }

 private:
  // Kills every remaining greenlet once and waits (3 s at most) for them to unwind. False if some did
  // not (they caught GreenletExit, or block outside fiberio).
  bool unwind_all(Hub& hub) noexcept {
    hub.begin_shutdown();
    auto give_up = Clock::now() + std::chrono::seconds(3);
    GreenletBase* self = fiber_state().greenlet;  // exit() may be called from a greenlet
    auto others_alive = [&] { return live_.size() > (self && !self->dead() ? 1u : 0u); };
    while (others_alive() && Clock::now() < give_up) {
      try {
        // Each greenlet is killed once (a second kill could land in the cleanup code the first one
        // started, even in a destructor). Nothing here allocates: a thread may end for want of memory.
        for (std::size_t i = 0; i < live_.size(); ++i) {
          GreenletBase* g = live_[i];
          if (g == self || g->killed_at_exit_) continue;
          g->killed_at_exit_ = true;
          g->kill(false);
        }
        fiberio::sleep(std::chrono::milliseconds(1));
      } catch (...) {
      }
    }
    if (!others_alive()) return true;
    std::fprintf(stderr, "fiberio: %zu greenlet(s) did not unwind within 3 s of being killed at thread exit\n",
                 live_.size() - (self ? 1 : 0));
    return false;
  }

  std::vector<GreenletBase*> live_;
};

}  // namespace detail

namespace {
std::atomic<std::uint64_t> g_next_id{1};

detail::ThreadGreenlets& thread_greenlets() {
  detail::Hub::current();  // first: see ThreadGreenlets
  static thread_local detail::ThreadGreenlets t;
  return t;
}

detail::WaitKind join_kind(detail::Hub* owner) {
  // Joining a greenlet of another thread: that thread will wake us, so it never counts as "stuck".
  return detail::Hub::get() == owner ? detail::WaitKind::Local : detail::WaitKind::External;
}
}  // namespace

GreenletBase::GreenletBase() : hub_(&detail::Hub::current()), id_(g_next_id.fetch_add(1)) {}

std::string GreenletBase::name() const {
  detail::SpinLockGuard lk(lock_);
  return name_ ? *name_ : fmt::format("Greenlet-{}", id_);
}

void GreenletBase::set_name(std::string name) {
  detail::SpinLockGuard lk(lock_);
  name_ = std::make_unique<std::string>(std::move(name));
}

GreenletBase::Status GreenletBase::status() const {
  detail::SpinLockGuard lk(lock_);
  return status_;
}

bool GreenletBase::dead() const {
  auto s = status();
  return s == Status::Succeeded || s == Status::Failed || s == Status::Killed;
}

std::exception_ptr GreenletBase::exception() const {
  detail::SpinLockGuard lk(lock_);
  return exception_;
}

void GreenletBase::rethrow_if_failed() const {
  if (auto e = exception()) std::rethrow_exception(e);
}

bool GreenletBase::join(OptDuration timeout) {
  auto deadline = detail::deadline_after(timeout);
  auto kind = join_kind(hub_);
  detail::SpinLockGuard lk(lock_);
  while (!(status_ == Status::Succeeded || status_ == Status::Failed || status_ == Status::Killed)) {
    if (!detail::park(joiners_, lk, deadline, kind, {detail::kWaitJoin, this}) && Clock::now() >= deadline) return false;
  }
  return true;
}

void GreenletBase::kill(bool block, OptDuration timeout) {
  if (dead()) return;
  if (detail::Hub::get() != hub_)
    throw std::logic_error(fmt::format("fiberio: {}.kill() called from another thread", name()));
  auto* self = boost::fibers::context::active();
  if (ctx_ == self) throw GreenletExit{};
  if (status() == Status::Pending) {
    kill_requested_ = true;  // it is queued to start: it will finish at once without running
  } else {
    detail::fiber_state(ctx_).interrupt(detail::greenlet_exit());
  }
  if (block) join(timeout);
}

detail::Links::Id GreenletBase::rawlink(std::function<void()> cb) {
  {
    detail::SpinLockGuard lk(lock_);
    if (!(status_ == Status::Succeeded || status_ == Status::Failed || status_ == Status::Killed))
      return links_.add(std::move(cb));
  }
  cb();
  return 0;
}

void GreenletBase::unlink(detail::Links::Id id) {
  detail::SpinLockGuard lk(lock_);
  links_.remove(id);
}

void GreenletBase::begin() noexcept {
  stack_top_ = __builtin_frame_address(0);  // the body's frames, and any parked waiter, lie below
  ctx_ = boost::fibers::context::active();
  detail::fiber_state(ctx_).greenlet = this;
  hub_->publish_running_greenlet(this);
  if (detail::hooks_active()) [[unlikely]] detail::fire_started(id_);
  if (auto* sched = hub_->schedule(); sched && sched->seeded()) [[unlikely]] {
    std::string name;
    {
      detail::SpinLockGuard lk(lock_);
      if (name_) name = *name_;
    }
    sched->name_fiber(ctx_, std::move(name));  // for the switch trace of testing::explore()
  }
  detail::SpinLockGuard lk(lock_);
  status_ = Status::Running;
}

void GreenletBase::finish(Status outcome, std::exception_ptr error) noexcept {
  // Keep ourselves alive through the callbacks even if every handle is gone.
  auto self = shared_from_this();
  {
    detail::SpinLockGuard lk(lock_);
    status_ = outcome;
    exception_ = error;
  }
  if (outcome == Status::Failed) detail::report_error(*this, error);
  decltype(links_.take()) callbacks;
  {
    detail::SpinLockGuard lk(lock_);
    callbacks = links_.take();
    joiners_.notify_all();
  }
  thread_greenlets().remove(this);
  hub_->fiber_finished();
  if (detail::hooks_active()) [[unlikely]] detail::fire_finish(id_);
  detail::Links::run(callbacks);
  hub_->publish_running_greenlet(nullptr);
  detail::fiber_state(ctx_).greenlet = nullptr;
}

namespace {
// gevent's main greenlet: the thread's main fiber seen as a greenlet (getcurrent() there). Never
// registered with the hub (thread exit does not kill it); kill() interrupts the main fiber.
class MainGreenlet final : public GreenletBase {
 public:
  MainGreenlet() : GreenletBase(MainTag{}) {}
};
}  // namespace

GreenletBase::GreenletBase(MainTag) : GreenletBase() {
  ctx_ = boost::fibers::context::active();
  status_ = Status::Running;
  name_ = std::make_unique<std::string>("MainGreenlet");
}

std::size_t live_greenlets() { return thread_greenlets().size(); }

GreenletRef getcurrent() {
  auto* ctx = boost::fibers::context::active();
  if (auto* g = detail::fiber_state(ctx).greenlet) return GreenletRef(g->shared_from_this());
  if (!ctx->is_context(boost::fibers::type::main_context)) return GreenletRef();  // a bare Boost fiber
  static thread_local std::shared_ptr<GreenletBase> main;
  if (!main) main = std::make_shared<MainGreenlet>();
  return GreenletRef(main);
}

namespace detail {
const std::exception_ptr& greenlet_exit() noexcept {
  static const std::exception_ptr e = std::make_exception_ptr(GreenletExit{});
  return e;
}
namespace {
[[maybe_unused]] const bool made_at_load = static_cast<bool>(greenlet_exit());  // before memory runs short
}

void register_greenlet(GreenletBase* g, const void* site) { thread_greenlets().add(g, site); }

void for_each_greenlet(const std::function<void(GreenletBase&)>& fn) {
  for (std::size_t i = 0; i < thread_greenlets().size(); ++i) fn(*thread_greenlets().at(i));
}

const void* caller_address() noexcept { return __builtin_return_address(0); }
void clean_up_at_thread_exit() { thread_greenlets(); }

void report_callback_error(std::exception_ptr e) noexcept {
  if (Hub::get())
    if (GreenletRef current = getcurrent()) return report_error(current.base(), e);
  std::string msg = "fiberio: a link callback failed with " + describe_exception(e) + "\n";
  std::fputs(msg.c_str(), stderr);
}

void Links::run(const std::vector<std::pair<Id, std::function<void()>>>& callbacks) {
  for (auto& [id, cb] : callbacks) {
    try {
      cb();
    } catch (const boost::context::detail::forced_unwind&) {
      throw;  // Boost.Context is unwinding this fiber's stack: let it
    } catch (const GreenletExit&) {
      // a callback that blocked was killed along with its fiber: not an error
    } catch (...) {
      report_callback_error(std::current_exception());
    }
  }
}
}  // namespace detail

std::vector<GreenletRef> joinall(std::span<const GreenletRef> greenlets, OptDuration timeout, bool raise_error,
                                 std::optional<std::size_t> count) {
  std::size_t want = std::min(count.value_or(greenlets.size()), greenlets.size());
  auto deadline = detail::deadline_after(timeout);
  // Completion notifications may come from other threads' greenlets: guard them.
  struct Shared {
    detail::Spinlock lock;
    detail::WaitList waiters;
    std::vector<GreenletRef> done;
  };
  auto shared = std::make_shared<Shared>();
  bool foreign = false;
  std::vector<detail::Links::Id> ids(greenlets.size(), 0);
  for (std::size_t i = 0; i < greenlets.size(); ++i) {
    const GreenletRef& g = greenlets[i];
    if (detail::Hub::get() != g.base().hub()) foreign = true;
    ids[i] = g.rawlink([shared, g] {
      detail::SpinLockGuard lk(shared->lock);
      shared->done.push_back(g);
      shared->waiters.notify_one();
    });
  }
  auto unlink_all = [&] {
    for (std::size_t i = 0; i < greenlets.size(); ++i)
      if (ids[i]) greenlets[i].unlink(ids[i]);
  };
  std::vector<GreenletRef> result;
  try {
    detail::SpinLockGuard lk(shared->lock);
    std::size_t seen = 0;
    while (true) {
      for (; seen < shared->done.size(); ++seen) {
        if (raise_error && shared->done[seen].base().status() == GreenletBase::Status::Failed) {
          auto e = shared->done[seen].exception();
          lk.unlock();
          unlink_all();
          std::rethrow_exception(e);
        }
      }
      if (shared->done.size() >= want) break;
      if (!detail::park(shared->waiters, lk, deadline, foreign ? detail::WaitKind::External : detail::WaitKind::Local,
                        {"fiberio::joinall", shared.get()}) &&
          Clock::now() >= deadline)
        break;
    }
    result.assign(shared->done.begin(), shared->done.begin() + std::min(want, shared->done.size()));
  } catch (...) {
    unlink_all();
    throw;
  }
  unlink_all();
  return result;
}

}  // namespace fiberio
