// wait() and iwait(): wait for any mix of greenlets, Events, AsyncResults and queues, as gevent.wait/iwait.
//
//   for (fiberio::Waitable w : fiberio::iwait({g1, g2, event, result}))   // as each becomes ready
//     if (w.index() == 2) ...                                               // position in the input
//   auto ready = fiberio::wait({g1, event}, 100ms);                         // the ready ones, after 100 ms
//
// Objects already ready come first, in input order; the rest as they become ready. `count` stops after
// that many; `timeout` (counted from the call) ends the wait early. An Event counts once even if it is
// set again. Events and AsyncResults may be set from other threads; greenlets of other threads may be
// waited for too (such waits never make the hub raise LoopExit).
// A queue (any kind, or a Channel) is ready when a get_nowait() would not throw Empty: an item is
// queued, a putter waits, or it is closed (then get_nowait() throws Closed once drained). Another
// getter may still take the item first: get_nowait() after iwait() can throw Empty. To take an item
// from whichever queue has one, atomically, use select() (select.hpp). Waits on queues alone count as
// local for LoopExit, as Queue::get.
// The objects must outlive the wait: an Event is held by reference (greenlets and AsyncResults are
// shared handles, held by copy).
#pragma once
#include <concepts>
#include <cstddef>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <vector>

#include "fiberio/event.hpp"
#include "fiberio/greenlet.hpp"
#include "fiberio/queue.hpp"

namespace fiberio {

namespace detail {
// What wait()/iwait() need from an object: gevent's rawlink/unlink protocol.
struct WaitableModel {
  virtual ~WaitableModel() = default;
  virtual bool ready() const = 0;
  virtual Links::Id rawlink(std::function<void()> cb) const = 0;
  virtual void unlink(Links::Id id) const = 0;
  // True if another thread may complete it (the waiter must not count as stuck).
  virtual bool external() const = 0;
};
}  // namespace detail

// One object to wait for: a greenlet, an Event, an AsyncResult or a queue. Cheap to copy.
class Waitable {
 public:
  Waitable(const GreenletRef& g);  // also any Greenlet<R>
  Waitable(Event& e);
  template <class T>
  Waitable(const AsyncResult<T>& r) : m_(std::make_shared<AsyncModel<T>>(r)) {}
  // Any Queue, LifoQueue, PriorityQueue, JoinableQueue or Channel (held by reference: it must outlive
  // the wait).
  template <class T>
  Waitable(detail::SelectableQueue<T>& q) : m_(std::make_shared<QueueModel<T>>(q)) {}

  bool ready() const { return m_->ready(); }
  // Its position in the objects given to wait()/iwait() (0 for one not obtained from them).
  std::size_t index() const noexcept { return index_; }
  // The greenlet, if it is one (else an empty handle).
  GreenletRef greenlet() const;
  // The Event, if it is one (else null).
  Event* event() const noexcept;
  // The AsyncResult, if it is an AsyncResult<T> (else null).
  template <class T>
  const AsyncResult<T>* async_result() const noexcept {
    auto* a = dynamic_cast<const AsyncModel<T>*>(m_.get());
    return a ? &a->r : nullptr;
  }

  // For wait()/iwait() and other waiting code.
  const detail::WaitableModel& model() const noexcept { return *m_; }
  void set_index(std::size_t i) noexcept { index_ = i; }

 private:
  template <class T>
  struct AsyncModel final : detail::WaitableModel {
    explicit AsyncModel(const AsyncResult<T>& res) : r(res) {}
    bool ready() const override { return r.ready(); }
    detail::Links::Id rawlink(std::function<void()> cb) const override { return r.rawlink(std::move(cb)); }
    void unlink(detail::Links::Id id) const override { r.unlink(id); }
    bool external() const override { return true; }
    AsyncResult<T> r;
  };
  template <class T>
  struct QueueModel final : detail::WaitableModel {
    explicit QueueModel(detail::SelectableQueue<T>& queue) : q(&queue) {}
    bool ready() const override {
      detail::SpinLockGuard lk(q->select_lock());
      return q->readable_locked();
    }
    // The callback runs with the queue's lock held (iwait's only takes its own lock).
    detail::Links::Id rawlink(std::function<void()> cb) const override {
      detail::Links::Id id;
      bool now;
      {
        detail::SpinLockGuard lk(q->select_lock());
        id = q->watch_locked(cb);
        now = q->readable_locked();
      }
      if (now) cb();
      return id;
    }
    void unlink(detail::Links::Id id) const override {
      detail::SpinLockGuard lk(q->select_lock());
      q->unwatch_locked(id);
    }
    bool external() const override { return false; }
    detail::SelectableQueue<T>* q;
  };
  std::shared_ptr<const detail::WaitableModel> m_;
  std::size_t index_ = 0;
};

template <class Range>
concept WaitableRange = std::ranges::input_range<Range> &&
                        std::constructible_from<Waitable, std::ranges::range_reference_t<Range>>;

// The ready objects of an iwait(), one by one as they become ready: a range for range-for, or call
// next(). The objects are watched from the call until this is destroyed.
class IWait {
 public:
  class iterator {
   public:
    using value_type = Waitable;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    const Waitable& operator*() const { return *owner_->current_; }
    const Waitable* operator->() const { return &*owner_->current_; }
    iterator& operator++() {
      owner_->current_ = owner_->next();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return it.at_end(); }

   private:
    bool at_end() const { return !owner_->current_; }
    friend class IWait;
    explicit iterator(IWait* o) : owner_(o) {}
    IWait* owner_ = nullptr;
  };

  IWait(std::vector<Waitable> objects, OptDuration timeout = {}, std::optional<std::size_t> count = {});
  IWait(const IWait&) = delete;
  IWait& operator=(const IWait&) = delete;
  ~IWait();

  // The next object to become ready, or nullopt once `count` were returned, all were, or the timeout passed.
  std::optional<Waitable> next();

  // Waits for the first one.
  iterator begin() {
    current_ = next();
    return iterator(this);
  }
  std::default_sentinel_t end() const noexcept { return {}; }

 private:
  struct Shared;
  std::vector<Waitable> objects_;
  std::vector<detail::Links::Id> links_;
  std::shared_ptr<Shared> shared_;
  detail::Deadline deadline_;
  std::size_t want_;
  std::size_t returned_ = 0;
  bool external_ = false;
  std::optional<Waitable> current_;
};

IWait iwait(std::initializer_list<Waitable> objects, OptDuration timeout = {}, std::optional<std::size_t> count = {});
template <WaitableRange Range>
IWait iwait(Range&& objects, OptDuration timeout = {}, std::optional<std::size_t> count = {}) {
  std::vector<Waitable> v;
  for (auto&& o : objects) v.emplace_back(o);
  return IWait(std::move(v), timeout, count);
}

// Waits until `count` objects (default: all) are ready or `timeout` passed; returns the ready ones
// in the order they became ready (already-ready ones first, in input order).
std::vector<Waitable> wait(std::initializer_list<Waitable> objects, OptDuration timeout = {},
                           std::optional<std::size_t> count = {});
template <WaitableRange Range>
std::vector<Waitable> wait(Range&& objects, OptDuration timeout = {}, std::optional<std::size_t> count = {}) {
  std::vector<Waitable> out;
  for (auto& w : iwait(std::forward<Range>(objects), timeout, count)) out.push_back(w);
  return out;
}

}  // namespace fiberio
