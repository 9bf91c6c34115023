// Event and AsyncResult: one-shot signalling between fibers. Both may be set from another OS thread
// (a plain std::thread or a ThreadPool worker): the waiting fiber wakes on its own hub.
// Because another thread may set them, a fiber waiting on one never makes the hub raise LoopExit.
#pragma once
#include <memory>
#include <optional>
#include <stdexcept>
#include <type_traits>

#include "fiberio/park.hpp"
#include "fiberio/links.hpp"

namespace fiberio {

class Event {
 public:
  Event() = default;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  // Wakes every waiter; later wait()s return at once until clear().
  void set();
  void clear();
  bool is_set() const;
  bool ready() const { return is_set(); }
  // true once set; false if timeout passed first.
  bool wait(OptDuration timeout = {});
  // cb runs on set() (on the setting thread); at once if already set.
  detail::Links::Id rawlink(std::function<void()> cb);
  void unlink(detail::Links::Id id);

 private:
  mutable detail::Spinlock lock_;
  bool flag_ = false;
  detail::WaitList waiters_;
  detail::Links links_;
};

// A value (or exception) delivered once, to any number of waiters. A copyable handle: copies share it.
template <class T>
class AsyncResult {
  using Stored = std::conditional_t<std::is_void_v<T>, char, T>;
  struct State {
    detail::Spinlock lock;
    bool done = false;
    std::optional<Stored> value;
    std::exception_ptr error;
    detail::WaitList waiters;
    detail::Links links;
  };

 public:
  AsyncResult() : s_(std::make_shared<State>()) {}

  template <class... V>
  void set(V&&... v) {
    static_assert(sizeof...(V) == (std::is_void_v<T> ? 0 : 1), "AsyncResult<void>::set() takes no value");
    std::optional<Stored> val;
    if constexpr (std::is_void_v<T>) val.emplace('\0');
    else val.emplace(std::forward<V>(v)...);
    complete(std::move(val), nullptr);
  }
  void set_exception(std::exception_ptr e) { complete(std::nullopt, std::move(e)); }

  bool ready() const {
    detail::SpinLockGuard lk(s_->lock);
    return s_->done;
  }
  bool successful() const {
    detail::SpinLockGuard lk(s_->lock);
    return s_->done && !s_->error;
  }
  std::exception_ptr exception() const {
    detail::SpinLockGuard lk(s_->lock);
    return s_->error;
  }
  bool wait(OptDuration timeout = {}) const {
    auto deadline = detail::deadline_after(timeout);
    detail::exploration_point();  // seeded mode may switch here, even when the result is ready
    detail::SpinLockGuard lk(s_->lock);
    while (!s_->done)
      if (!detail::park(s_->waiters, lk, deadline, detail::WaitKind::External, {"fiberio::AsyncResult", s_.get()}) && Clock::now() >= deadline)
        return false;
    return true;
  }
  // The value, or the exception rethrown; TimeoutError if not ready within timeout. A copyable value
  // can be read any number of times; a move-only one is moved out by the first get() (as
  // std::future::get), and a later get() throws std::logic_error.
  T get(OptDuration timeout = {}) const {
    if (!wait(timeout)) throw TimeoutError("fiberio: AsyncResult::get() timed out");
    detail::SpinLockGuard lk(s_->lock);
    if (s_->error) {
      auto e = s_->error;
      lk.unlock();
      std::rethrow_exception(e);
    }
    if constexpr (std::is_void_v<T>) {
      return;
    } else if constexpr (std::is_copy_constructible_v<T>) {
      return *s_->value;
    } else {
      if (!s_->value) throw std::logic_error("fiberio: AsyncResult::get(): its move-only value was already taken");
      T v = std::move(*s_->value);
      s_->value.reset();
      return v;
    }
  }
  detail::Links::Id rawlink(std::function<void()> cb) const {
    {
      detail::SpinLockGuard lk(s_->lock);
      if (!s_->done) return s_->links.add(std::move(cb));
    }
    cb();
    return 0;
  }
  void unlink(detail::Links::Id id) const {
    detail::SpinLockGuard lk(s_->lock);
    s_->links.remove(id);
  }

 private:
  void complete(std::optional<Stored> v, std::exception_ptr e) {
    decltype(s_->links.take()) callbacks;
    {
      detail::SpinLockGuard lk(s_->lock);
      s_->value = std::move(v);
      s_->error = std::move(e);
      s_->done = true;
      s_->waiters.notify_all();
      callbacks = s_->links.take();
    }
    detail::Links::run(callbacks);
  }
  std::shared_ptr<State> s_;
};

}  // namespace fiberio
