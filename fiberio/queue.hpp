// Queues between fibers, as gevent.queue: Queue, JoinableQueue and Channel.
//
// Every blocking call takes an optional timeout (OptDuration; empty = wait forever). As in gevent, a
// put() that times out throws fiberio::Full and a get()/peek() that times out throws fiberio::Empty
// (the non-blocking put_nowait/get_nowait throw the same at once). An enclosing Timeout guard still
// throws TimeoutError, and kill() GreenletExit, as everywhere.
//
// Fairness and hand-off: waiters are served strictly first-come first-served. put() gives the item
// straight to the longest-waiting getter (it never sits in the queue where a get_nowait() could snatch
// it), and get() on a full bounded queue pulls the longest-waiting putter's item in. A fiber that was
// handed an item always receives it — a kill or timeout arriving in the same instant is delivered at
// its next suspension point instead — and a waiter that gave up (killed, timed out) before being served
// is skipped, so its turn passes to the next waiter: no item is ever lost or duplicated.
//
// Threads: each queue has its own spinlock, so put/get from fibers of several threads (or plain
// threads) is safe, and an item put on one thread wakes a getter on another. But waits count as local
// for LoopExit: a thread's main fiber blocked here with nothing else pending on its hub gets LoopExit
// even if another thread would fill the queue later; give such waits a timeout.
//
// Lifetime: destroying a queue while fibers still block on it makes each of them throw
// std::logic_error (the destructor waits until they have let go), instead of leaving them parked on
// freed memory.
//
// T's move constructor runs under the spinlock and must not block; it should not throw either (if it
// does while handing an item over, the put() or get() doing the hand-off throws it and that item is lost).
#pragma once
#include <chrono>
#include <cstddef>
#include <deque>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "fiberio/park.hpp"
#include "fiberio/sync.hpp"

namespace fiberio {

// put_nowait() on a full queue, or put() that timed out while it stayed full.
class Full : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// get_nowait() on an empty queue, or get()/peek() that timed out while it stayed empty.
class Empty : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

// A fiber blocked in put() or get(), parked on its own one-entry WaitList so that the fiber serving
// it knows exactly whom it woke (notify_one() succeeds only for a live waiter). Lives on the blocked
// fiber's stack; touched by others only under the queue's lock.
template <class T>
struct HandOff {
  WaitList wait;
  HandOff* prev = nullptr;
  HandOff* next = nullptr;
  bool linked = false;
  T* offered = nullptr;       // put(): the item it offers
  std::optional<T> received;  // get(): the item handed to it
  bool evicted = false;       // woken by the queue's destructor, not served
};

template <class T>
using HandOffList = IntrusiveList<HandOff<T>>;

// Unlinks a waiter however its wait ends (served, timed out, killed). The queue lock must be held,
// which it is: park() returns and throws with it held.
template <class T>
struct HandOffUnlink {
  HandOffList<T>& list;
  HandOff<T>& h;
  ~HandOffUnlink() { list.remove(h); }
};

inline std::string describe_timeout(const OptDuration& timeout) {
  if (!timeout) return "";
  return fmt::format(" after {:g} ms", std::chrono::duration<double, std::milli>(*timeout).count());
}

// The machinery shared by Queue, JoinableQueue and Channel. capacity: how many items may sit in the
// buffer (kUnbounded, or 0 for a rendezvous Channel).
template <class T>
class QueueBase {
 public:
  QueueBase(const QueueBase&) = delete;
  QueueBase& operator=(const QueueBase&) = delete;
  ~QueueBase() {
    evict_waiters(lock_, occupancy_, [this] {
      for (auto* list : {&getters_, &putters_})
        while (HandOff<T>* h = list->front()) {
          list->remove(*h);
          h->evicted = true;
          h->wait.notify_one();
        }
      peekers_.notify_all();
      joiners_.notify_all();
    });
  }

  // Adds item, blocking while the queue is full. Throws Full if `timeout` passed first.
  void put(T item, OptDuration timeout = {}) { put_impl(item, timeout, true); }
  // Adds item if that needs no waiting; throws Full otherwise.
  void put_nowait(T item) { put_impl(item, Duration::zero(), false); }
  // Removes and returns the next item, blocking while there is none. Throws Empty if `timeout` passed.
  T get(OptDuration timeout = {}) { return get_impl(timeout, true); }
  // Removes and returns the next item if one is there; throws Empty otherwise.
  T get_nowait() { return get_impl(Duration::zero(), false); }

 protected:
  static constexpr std::size_t kUnbounded = std::numeric_limits<std::size_t>::max();
  QueueBase(std::size_t capacity, const char* name) : capacity_(capacity), name_(name) {}

  // Gives item to the longest-waiting live getter, or buffers it if there is room. Lock held.
  bool offer_locked(T& item) {
    while (HandOff<T>* g = getters_.front()) {
      getters_.remove(*g);
      // A wake fails for a getter that already timed out or was killed (it will not look at its
      // slot): the item then goes to the next one.
      if (g->wait.notify_one()) {
        g->received.emplace(std::move(item));
        ++unfinished_;
        return true;
      }
    }
    if (buffer_.size() < capacity_) {
      buffer_.push_back(std::move(item));
      ++unfinished_;
      peekers_.notify_all();
      return true;
    }
    return false;
  }

  // Takes the longest-waiting live putter's item. Lock held.
  std::optional<T> take_from_putter_locked() {
    while (HandOff<T>* p = putters_.front()) {
      putters_.remove(*p);
      // A putter that already gave up (it throws Full, or was killed) keeps its item.
      if (p->wait.notify_one()) {
        ++unfinished_;
        return std::optional<T>(std::move(*p->offered));
      }
    }
    return std::nullopt;
  }

  // Removes the next item: from the buffer (refilled from a waiting putter), else straight from a
  // putter (Channel). Lock held.
  std::optional<T> take_locked() {
    if (!buffer_.empty()) {
      std::optional<T> item(std::move(buffer_.front()));
      buffer_.pop_front();
      if (buffer_.size() < capacity_)
        if (auto more = take_from_putter_locked()) buffer_.push_back(std::move(*more));
      return item;
    }
    return take_from_putter_locked();
  }

  void put_impl(T& item, OptDuration timeout, bool block) {
    auto deadline = deadline_after(timeout);
    SpinLockGuard lk(lock_);
    if (offer_locked(item)) return;
    if (!block) throw Full(fmt::format("{}::put_nowait(): the queue is full", name_));
    Occupant occupant(occupancy_);
    HandOff<T> me;
    me.offered = &item;
    putters_.push_back(me);
    HandOffUnlink<T> unlink{putters_, me};
    for (;;) {
      // Notified means a getter has taken *me.offered.
      bool served = park(me.wait, lk, deadline);
      if (me.evicted) throw_destroyed(name_, "put()");
      if (served) return;
      if (Clock::now() >= deadline)
        throw Full(fmt::format("{}::put(): the queue stayed full{}", name_, describe_timeout(timeout)));
      if (!me.linked) {  // woken without being served before the deadline: queue up again
        if (offer_locked(item)) return;
        putters_.push_back(me);
      }
    }
  }

  T get_impl(OptDuration timeout, bool block) {
    auto deadline = deadline_after(timeout);
    SpinLockGuard lk(lock_);
    if (auto item = take_locked()) return std::move(*item);
    if (!block) throw Empty(fmt::format("{}::get_nowait(): the queue is empty", name_));
    Occupant occupant(occupancy_);
    HandOff<T> me;
    getters_.push_back(me);
    HandOffUnlink<T> unlink{getters_, me};
    for (;;) {
      // Notified means a putter has filled me.received (unless moving the item into it threw, which
      // the putter reports: then this getter just keeps waiting).
      bool served = park(me.wait, lk, deadline);
      if (me.evicted) throw_destroyed(name_, "get()");
      if (served && me.received) return std::move(*me.received);
      if (Clock::now() >= deadline)
        throw Empty(fmt::format("{}::get(): the queue stayed empty{}", name_, describe_timeout(timeout)));
      if (!me.linked) {
        if (auto item = take_locked()) return std::move(*item);
        getters_.push_back(me);
      }
    }
  }

  mutable Spinlock lock_;
  const std::size_t capacity_;
  const char* name_;
  std::deque<T> buffer_;
  HandOffList<T> getters_;
  HandOffList<T> putters_;
  mutable WaitList peekers_;     // peek() waiters: woken whenever an item lands in the buffer
  WaitList joiners_;             // JoinableQueue::join() waiters
  std::size_t unfinished_ = 0;  // items accepted and not yet task_done() (JoinableQueue)
  mutable Occupancy occupancy_;
};

}  // namespace detail

// A FIFO queue. maxsize 0 means unbounded (as gevent and Python's queue); otherwise put() blocks
// while maxsize items are queued.
template <class T>
class Queue : public detail::QueueBase<T> {
  using Base = detail::QueueBase<T>;

 public:
  explicit Queue(std::size_t maxsize = 0) : Queue(maxsize, "fiberio::Queue") {}

  // 0 if unbounded.
  std::size_t maxsize() const noexcept { return this->capacity_ == Base::kUnbounded ? 0 : this->capacity_; }
  std::size_t qsize() const {
    detail::SpinLockGuard lk(this->lock_);
    return this->buffer_.size();
  }
  bool empty() const { return qsize() == 0; }
  bool full() const {
    detail::SpinLockGuard lk(this->lock_);
    return this->buffer_.size() >= this->capacity_;
  }
  // Fibers blocked in get() / put() right now.
  std::size_t getters() const {
    detail::SpinLockGuard lk(this->lock_);
    return this->getters_.size();
  }
  std::size_t putters() const {
    detail::SpinLockGuard lk(this->lock_);
    return this->putters_.size();
  }

  // A copy of the next item, without removing it; waits while the queue is empty and throws Empty
  // if `timeout` passes first. Items that a put() hands straight to a waiting getter never sit in the
  // queue, so a peek() waiting behind getters sees only what they leave.
  T peek(OptDuration timeout = {}) const {
    auto deadline = detail::deadline_after(timeout);
    detail::SpinLockGuard lk(this->lock_);
    if (!this->buffer_.empty()) return this->buffer_.front();
    detail::Occupant occupant(this->occupancy_);
    while (this->buffer_.empty()) {
      bool notified = detail::park(this->peekers_, lk, deadline);
      if (occupant.evicted()) detail::throw_destroyed(this->name_, "peek()");
      if (!notified && Clock::now() >= deadline)
        throw Empty(
            fmt::format("{}::peek(): the queue stayed empty{}", this->name_, detail::describe_timeout(timeout)));
    }
    return this->buffer_.front();
  }
  T peek_nowait() const {
    detail::SpinLockGuard lk(this->lock_);
    if (this->buffer_.empty()) throw Empty(fmt::format("{}::peek_nowait(): the queue is empty", this->name_));
    return this->buffer_.front();
  }

 protected:
  Queue(std::size_t maxsize, const char* name) : Base(maxsize == 0 ? Base::kUnbounded : maxsize, name) {}
};

// A Queue that counts unfinished work: every item put() is a task until a consumer calls task_done()
// for it; join() waits until there are none left.
template <class T>
class JoinableQueue : public Queue<T> {
 public:
  explicit JoinableQueue(std::size_t maxsize = 0) : Queue<T>(maxsize, "fiberio::JoinableQueue") {}

  // Marks one item as processed. More calls than items put throw std::logic_error.
  void task_done() {
    detail::SpinLockGuard lk(this->lock_);
    if (this->unfinished_ == 0)
      throw std::logic_error("fiberio::JoinableQueue::task_done() called more times than there were items");
    if (--this->unfinished_ == 0) this->joiners_.notify_all();
  }
  // Waits until every item put has been task_done(); false if `timeout` passed first.
  bool join(OptDuration timeout = {}) {
    auto deadline = detail::deadline_after(timeout);
    detail::SpinLockGuard lk(this->lock_);
    if (this->unfinished_ == 0) return true;
    detail::Occupant occupant(this->occupancy_);
    while (this->unfinished_ > 0) {
      bool notified = detail::park(this->joiners_, lk, deadline);
      if (occupant.evicted()) detail::throw_destroyed(this->name_, "join()");
      if (!notified && Clock::now() >= deadline) return false;
    }
    return true;
  }
  std::size_t unfinished_tasks() const {
    detail::SpinLockGuard lk(this->lock_);
    return this->unfinished_;
  }
};

// A rendezvous channel (gevent.queue.Channel): holds no items. put() blocks until a getter takes the
// item from it; get() blocks until a putter offers one. put_nowait() succeeds only if a getter is
// already waiting, get_nowait() only if a putter is.
template <class T>
class Channel : public detail::QueueBase<T> {
 public:
  Channel() : detail::QueueBase<T>(0, "fiberio::Channel") {}

  // Putters minus getters waiting right now (gevent's balance).
  std::ptrdiff_t balance() const {
    detail::SpinLockGuard lk(this->lock_);
    return static_cast<std::ptrdiff_t>(this->putters_.size()) - static_cast<std::ptrdiff_t>(this->getters_.size());
  }
  // Fibers blocked in get() / put() right now.
  std::size_t getters() const {
    detail::SpinLockGuard lk(this->lock_);
    return this->getters_.size();
  }
  std::size_t putters() const {
    detail::SpinLockGuard lk(this->lock_);
    return this->putters_.size();
  }
};

}  // namespace fiberio
