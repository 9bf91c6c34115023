#include "fiberio/greenlet.hpp"

#include <fmt/format.h>

#include <cstdio>

namespace fiberio {

namespace {
std::atomic<std::uint64_t> g_next_id{1};

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
    if (!detail::park(joiners_, lk, deadline, kind) && Clock::now() >= deadline) return false;
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
    detail::fiber_state(ctx_).interrupt(std::make_exception_ptr(GreenletExit{}));
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
  ctx_ = boost::fibers::context::active();
  detail::fiber_state(ctx_).greenlet = this;
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
  if (outcome == Status::Failed) hub_->report_error(*this, error);
  decltype(links_.take()) callbacks;
  {
    detail::SpinLockGuard lk(lock_);
    callbacks = links_.take();
    joiners_.notify_all();
  }
  hub_->remove_greenlet(this);
  detail::Links::run(callbacks);
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

GreenletRef getcurrent() {
  auto* ctx = boost::fibers::context::active();
  if (auto* g = detail::fiber_state(ctx).greenlet) return GreenletRef(g->shared_from_this());
  if (!ctx->is_context(boost::fibers::type::main_context)) return GreenletRef();  // a bare Boost fiber
  static thread_local std::shared_ptr<GreenletBase> main;
  if (!main) main = std::make_shared<MainGreenlet>();
  return GreenletRef(main);
}

namespace detail {
void report_callback_error(std::exception_ptr e) noexcept {
  if (Hub* hub = Hub::get())
    if (GreenletRef current = getcurrent()) return hub->report_error(current.base(), e);
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
      if (!detail::park(shared->waiters, lk, deadline, foreign ? detail::WaitKind::External : detail::WaitKind::Local) &&
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

void killall(std::span<const GreenletRef> greenlets, bool block, OptDuration timeout) {
  for (auto& g : greenlets) g.kill(false);
  if (block) joinall(greenlets, timeout);
}

}  // namespace fiberio
