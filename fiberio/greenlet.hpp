// Greenlets: spawn / get / join / kill / link, joinall / killall — gevent's API on Boost.Fiber.
//
// A Greenlet<R> is a cheap copyable handle (a shared_ptr). Dropping every handle neither blocks nor
// kills the fiber: it runs to completion on its own.
//
// Killed greenlets: kill() delivers fiberio::GreenletExit at the target's current or next suspension
// point (any fiberio blocking call, sleep or yield); its destructors and catch blocks run. A greenlet
// killed before it started never runs. Afterwards: dead() and ready() are true, killed() is true,
// successful() is false, exception() holds the GreenletExit, and get() rethrows GreenletExit.
// (gevent returns the GreenletExit as the value; C++ has no value to return.) joinall(raise_error)
// does not treat a kill as a failure, and the error handler never reports it.
#pragma once
#include <boost/context/fiber.hpp>  // forced_unwind, as the configured backend defines it
#include <boost/fiber/fiber.hpp>

#include <atomic>
#include <concepts>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "fiberio/hub.hpp"
#include "fiberio/links.hpp"
#include "fiberio/time.hpp"

namespace fiberio {

template <class R>
class Greenlet;
namespace detail {
class ThreadGreenlets;
// The GreenletExit every kill delivers: made once, at load, so that kill() never allocates.
const std::exception_ptr& greenlet_exit() noexcept;
}

class GreenletBase : public std::enable_shared_from_this<GreenletBase> {
 public:
  enum class Status { Pending, Running, Succeeded, Failed, Killed };
  GreenletBase(const GreenletBase&) = delete;
  GreenletBase& operator=(const GreenletBase&) = delete;
  virtual ~GreenletBase() = default;

  std::uint64_t id() const noexcept { return id_; }
  detail::Hub* hub() const noexcept { return hub_; }  // the thread it runs on
  std::string name() const;  // "Greenlet-<id>" unless set
  void set_name(std::string name);
  Status status() const;
  // gevent: true once scheduled (spawn), false once dead.
  bool started() const { return !dead(); }
  bool ready() const { return dead(); }
  bool dead() const;
  bool successful() const { return status() == Status::Succeeded; }
  bool killed() const { return status() == Status::Killed; }
  std::exception_ptr exception() const;

  // Waits for the greenlet to finish; false if `timeout` passed first.
  bool join(OptDuration timeout = {});
  // See the top of this file. block: wait (up to timeout) for it to finish unwinding.
  void kill(bool block = true, OptDuration timeout = {});
  // cb runs once when the greenlet finishes (on the finishing fiber); at once if already finished.
  detail::Links::Id rawlink(std::function<void()> cb);
  void unlink(detail::Links::Id id);

  // For the run-info dump (runinfo.hpp); read on the greenlet's own thread. spawn_site: a return
  // address in the code that called spawn (symbolized only when a dump asks); spawner: the id of the
  // greenlet that spawned it (0: a thread's main fiber); stack_top: a frame address near the top of
  // its fiber's stack, below which its own frames lie; context: its fiber once it has started.
  const void* spawn_site() const noexcept { return spawn_site_; }
  std::uint64_t spawner() const noexcept { return spawner_; }
  const void* stack_top() const noexcept { return stack_top_; }
  boost::fibers::context* context() const noexcept { return ctx_; }

 protected:
  GreenletBase();
  struct MainTag {};
  explicit GreenletBase(MainTag);  // the running main fiber, as a started greenlet
  // Runs body in the calling fiber as this greenlet; stores its outcome.
  template <class Body>
  void run(Body& body);
  void rethrow_if_failed() const;

 private:
  void begin() noexcept;
  // Publishes the outcome (under lock_: joiners on other threads read it), reports a failure, wakes
  // joiners and runs the links.
  void finish(Status outcome, std::exception_ptr error) noexcept;

  detail::Hub* hub_;
  std::uint64_t id_;
  std::unique_ptr<std::string> name_;
  Status status_ = Status::Pending;
  bool kill_requested_ = false;
  std::exception_ptr exception_;
  boost::fibers::context* ctx_ = nullptr;
  mutable detail::Spinlock lock_;
  detail::WaitList joiners_;
  detail::Links links_;
  friend class detail::ThreadGreenlets;
  std::size_t registry_index_ = 0;  // its place in this thread's live greenlets
  bool killed_at_exit_ = false;     // thread exit has killed it once
  const void* spawn_site_ = nullptr;
  std::uint64_t spawner_ = 0;
  const void* stack_top_ = nullptr;
};

template <class Body>
void GreenletBase::run(Body& body) {
  begin();
  Status outcome = Status::Killed;
  std::exception_ptr error;
  if (!kill_requested_) {
    try {
      body();
      outcome = Status::Succeeded;
    } catch (const boost::context::detail::forced_unwind&) {
      throw;  // Boost.Context is unwinding this fiber's stack: let it
    } catch (const GreenletExit&) {
      error = std::current_exception();
    } catch (...) {
      error = std::current_exception();
      outcome = Status::Failed;
    }
  } else {
    error = detail::greenlet_exit();
  }
  finish(outcome, std::move(error));
}

namespace detail {
template <class R>
struct Unit {
  using type = R;
};
template <>
struct Unit<void> {
  struct type {};
};

template <class R>
class GreenletState final : public GreenletBase {
 public:
  template <class Fn>
  void run_body(Fn& fn) {
    auto body = [&] {
      if constexpr (std::is_void_v<R>) fn();
      else value_.emplace(fn());
    };
    run(body);
  }
  R value() const {
    rethrow_if_failed();
    if constexpr (!std::is_void_v<R>) return *value_;
  }
  // A move-only result is moved out once (as std::future::get); a second get() is an error.
  R take_value() {
    rethrow_if_failed();
    if (!value_)
      throw std::logic_error("fiberio: " + name() + ".get(): its move-only result was already taken by an earlier get()");
    R r = std::move(*value_);
    value_.reset();
    return r;
  }

 private:
  std::optional<typename Unit<R>::type> value_;
};
}  // namespace detail

// A type-erased handle to any greenlet: what joinall/killall take and return.
class GreenletRef {
 public:
  GreenletRef() = default;
  explicit GreenletRef(std::shared_ptr<GreenletBase> s) : s_(std::move(s)) {}

  explicit operator bool() const noexcept { return static_cast<bool>(s_); }
  GreenletBase& base() const { return *s_; }
  std::uint64_t id() const { return s_->id(); }
  std::string name() const { return s_->name(); }
  void set_name(std::string n) const { s_->set_name(std::move(n)); }
  bool started() const { return s_->started(); }
  bool ready() const { return s_->ready(); }
  bool dead() const { return s_->dead(); }
  bool successful() const { return s_->successful(); }
  bool killed() const { return s_->killed(); }
  std::exception_ptr exception() const { return s_->exception(); }
  bool join(OptDuration timeout = {}) const { return s_->join(timeout); }
  void kill(bool block = true, OptDuration timeout = {}) const { s_->kill(block, timeout); }
  detail::Links::Id rawlink(std::function<void()> cb) const { return s_->rawlink(std::move(cb)); }
  void unlink(detail::Links::Id id) const { s_->unlink(id); }
  friend bool operator==(const GreenletRef& a, const GreenletRef& b) noexcept { return a.s_ == b.s_; }

 protected:
  std::shared_ptr<GreenletBase> s_;
};

template <class R>
class Greenlet : public GreenletRef {
 public:
  Greenlet() = default;
  explicit Greenlet(std::shared_ptr<detail::GreenletState<R>> s) : GreenletRef(std::move(s)) {}

  // The result, or the greenlet's exception rethrown (same type, same what()). A copyable result can
  // be read any number of times; a move-only one (std::unique_ptr...) is moved out by the first get().
  R get() const {
    s_->join();
    return result();
  }
  // As get(), but throws TimeoutError if not finished within timeout (the greenlet keeps running).
  R get(OptDuration timeout) const {
    if (!s_->join(timeout)) throw TimeoutError(fmt_timeout());
    return result();
  }
  // cb(this greenlet) runs once it finishes.
  detail::Links::Id link(std::function<void(Greenlet<R>)> cb) const {
    auto self = *this;
    return s_->rawlink([self, cb = std::move(cb)] { cb(self); });
  }

 private:
  detail::GreenletState<R>& state() const { return static_cast<detail::GreenletState<R>&>(*s_); }
  R result() const {
    if constexpr (std::is_void_v<R> || std::is_copy_constructible_v<R>) return state().value();
    else return state().take_value();
  }
  std::string fmt_timeout() const { return "fiberio: " + name() + ".get() timed out"; }
};

namespace detail {
// This thread's live greenlets (greenlet.cpp): what live_greenlets() counts and thread exit unwinds.
// site: where spawn was called (spawn_site()).
void register_greenlet(GreenletBase* g, const void* site = nullptr);
// Calls fn for each live greenlet of this thread (the run-info dump); fn must not spawn or block.
void for_each_greenlet(const std::function<void(GreenletBase&)>& fn);
// Its caller's return address: called from spawn(), which is always inlined, it is an address in the
// code that called spawn. Costs a call; the debug info turns it into file:line only when a dump asks.
[[gnu::noinline]] const void* caller_address() noexcept;
// Makes sure thread exit unwinds this thread's greenlets and frees its main fiber's locals.
void clean_up_at_thread_exit();

template <class R, class Fn>
Greenlet<R> launch(Fn&& fn, const void* site = nullptr) {
  Hub& hub = Hub::current();
  auto st = std::make_shared<GreenletState<R>>();
  boost::fibers::fiber f(std::allocator_arg, PooledStack{&hub.stacks()},
                         [st, fn = std::forward<Fn>(fn)]() mutable { st->run_body(fn); });
  f.detach();
  register_greenlet(st.get(), site);  // only once the fiber exists: a failed spawn leaves no registration
  return Greenlet<R>(std::move(st));
}
}  // namespace detail

// Starts f(args...) in a new greenlet; it runs when the caller next blocks or yields. The arguments
// are copied or moved into the greenlet, as std::thread's are: pass std::ref(x) for f to take a T&.
// Always inlined, so that the run-info dump can name the line that spawned (detail::caller_address).
template <class F, class... Args>
[[gnu::always_inline]] inline auto spawn(F&& f, Args&&... args) {
  using R = std::invoke_result_t<std::decay_t<F>&, std::decay_t<Args>...>;
  // A tuple of the decayed types, not make_tuple: make_tuple turns std::ref(x) into a T& member, which
  // std::move then made a T&& that a T& parameter cannot take.
  return detail::launch<R>([fn = std::forward<F>(f), tup = std::tuple<std::decay_t<Args>...>(std::forward<Args>(args)...)]() mutable -> R {
    return std::apply([&](auto&&... a) -> R { return std::invoke(fn, std::move(a)...); }, tup);
  }, detail::caller_address());
}

// As spawn(), but f starts only after `delay` (killing it before then means it never runs).
template <class F, class... Args>
[[gnu::always_inline]] inline auto spawn_later(Duration delay, F&& f, Args&&... args) {
  using R = std::invoke_result_t<std::decay_t<F>&, std::decay_t<Args>...>;
  return detail::launch<R>(
      [delay, fn = std::forward<F>(f), tup = std::tuple<std::decay_t<Args>...>(std::forward<Args>(args)...)]() mutable -> R {
        sleep(delay);
        return std::apply([&](auto&&... a) -> R { return std::invoke(fn, std::move(a)...); }, tup);
      }, detail::caller_address());
}

// Live greenlets on this thread.
std::size_t live_greenlets();

// The running greenlet; in a thread's main fiber, that thread's main greenlet (gevent's
// getcurrent()), which other greenlets of the thread may kill. Empty only in a bare Boost fiber.
GreenletRef getcurrent();

// Waits for greenlets to finish; returns the finished ones in completion order (already-finished ones
// first, in the given order). Stops after `count` have finished or `timeout` passed. With
// raise_error, rethrows the first failure (a kill is not a failure).
std::vector<GreenletRef> joinall(std::span<const GreenletRef> greenlets, OptDuration timeout = {},
                                 bool raise_error = false, std::optional<std::size_t> count = {});
inline std::vector<GreenletRef> joinall(std::initializer_list<GreenletRef> greenlets, OptDuration timeout = {},
                                        bool raise_error = false, std::optional<std::size_t> count = {}) {
  return joinall(std::span<const GreenletRef>(greenlets.begin(), greenlets.size()), timeout, raise_error, count);
}
template <class Range>
  requires std::convertible_to<std::ranges::range_value_t<Range>, GreenletRef>
std::vector<GreenletRef> joinall(const Range& greenlets, OptDuration timeout = {}, bool raise_error = false,
                                 std::optional<std::size_t> count = {}) {
  std::vector<GreenletRef> refs(std::ranges::begin(greenlets), std::ranges::end(greenlets));
  return joinall(std::span<const GreenletRef>(refs), timeout, raise_error, count);
}

// Kills all; with block, waits (up to timeout) until they have all unwound. Allocates nothing, so a
// program short of memory can still kill (each kill delivers the same, preallocated GreenletExit).
template <class Range>
  requires std::convertible_to<std::ranges::range_value_t<Range>, GreenletRef>
void killall(const Range& greenlets, bool block = true, OptDuration timeout = {}) {
  for (const auto& g : greenlets) g.kill(false);
  if (!block) return;
  auto deadline = detail::deadline_after(timeout);
  for (const auto& g : greenlets) {
    if (deadline == detail::kNoDeadline) {
      g.join();
      continue;
    }
    auto left = deadline - Clock::now();
    if (left <= Duration::zero() || !g.join(left)) return;
  }
}
inline void killall(std::initializer_list<GreenletRef> greenlets, bool block = true, OptDuration timeout = {}) {
  killall(std::span<const GreenletRef>(greenlets.begin(), greenlets.size()), block, timeout);
}

}  // namespace fiberio
