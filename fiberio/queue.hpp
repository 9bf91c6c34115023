// Queues between fibers, as gevent.queue: Queue, LifoQueue, PriorityQueue, JoinableQueue and Channel.
//
// Every blocking call takes an optional timeout (OptDuration; empty = wait forever). As in gevent, a
// put() that times out throws fiberio::Full and a get()/peek() that times out throws fiberio::Empty
// (the non-blocking put_nowait/get_nowait throw the same at once). An enclosing Timeout guard still
// throws TimeoutError, and kill() GreenletExit, as everywhere.
//
// End of stream (Go's close, gevent's shutdown): close() lets readers drain what is queued, then every
// get()/get_nowait()/peek() throws fiberio::Closed, and every put() throws Closed at once. Fibers
// blocked when it closes wake: getters with Closed (there was nothing left for them), putters with
// Closed (their item was never accepted). Range-for over a queue gets items until it is closed and
// drained. select() (select.hpp) waits on several queues, Events and a timeout at once; wait()/iwait()
// (wait.hpp) accept queues too.
//
// Fairness and hand-off: waiters are served strictly first-come first-served. put() gives the item
// straight to the longest-waiting getter (it never sits in the queue where a get_nowait() could snatch
// it), and get() on a full bounded queue pulls the longest-waiting putter's item in. A fiber that was
// handed an item always receives it — a kill or timeout arriving in the same instant is delivered at
// its next suspension point instead — and a waiter that gave up (killed, timed out) before being served
// is skipped, so its turn passes to the next waiter: no item is ever lost or duplicated. A select()
// waiting on several queues is one waiter in each of their lines, and takes at most one item.
//
// Threads: each queue has its own spinlock, so put/get/close/select from fibers of several threads (or
// plain threads) is safe, and an item put on one thread wakes a getter on another. But waits count as
// local for LoopExit: a thread's main fiber blocked here with nothing else pending on its hub gets
// LoopExit even if another thread would fill the queue later; give such waits a timeout.
//
// Lifetime: destroying a queue while fibers still block on it makes each of them throw
// std::logic_error (the destructor waits until they have let go), instead of leaving them parked on
// freed memory.
//
// T's move constructor runs under the spinlock and must not block; it should not throw either (if it
// does while handing an item over, the put() or get() doing the hand-off throws it and that item is lost).
#pragma once
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <iterator>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "fiberio/links.hpp"
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

// The end of a queue's stream: get()/peek() on a closed queue once it is drained, and any put() to a
// closed queue (or a select() send case on one). Not ClosedError, which is a closed socket or fd.
class Closed : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

class SelectCore;
// Commits a select() waiting on several objects to case `index` (select.cpp): false if it already
// committed to another case or gave up (killed, timed out). Takes the select's own lock, so callers
// may hold a queue's lock (the lock order is queue, then select).
bool select_claim(SelectCore& s, std::size_t index) noexcept;

// A fiber blocked in put() or get(), parked on its own one-entry WaitList so that the fiber serving
// it knows exactly whom it woke (notify_one() succeeds only for a live waiter); or one case of a
// select(), which is woken through its SelectCore instead. Lives on the blocked fiber's stack (or in
// the select case); touched by others only under the queue's lock.
template <class T>
struct HandOff {
  WaitList wait;
  HandOff* prev = nullptr;
  HandOff* next = nullptr;
  bool linked = false;
  T* offered = nullptr;       // put(): the item it offers
  std::optional<T> received;  // get(): the item handed to it
  bool evicted = false;       // woken by the queue's destructor, not served
  bool closed = false;        // woken by close(), not served
  SelectCore* select = nullptr;  // set for a select() case
  std::size_t index = 0;         // its case index in that select()

  // Wakes the waiter and commits it to this hand-off; false if it already gave up (or, for a select,
  // it committed elsewhere), and the turn passes to the next waiter. Queue lock held.
  bool wake() noexcept { return select ? select_claim(*select, index) : wait.notify_one(); }
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

// What select() and wait()/iwait() need of a queue, whatever its buffer (select.hpp's Recv/Send hold
// one). Every *_locked call needs select_lock() held.
template <class T>
class SelectableQueue {
 public:
  virtual Spinlock& select_lock() const noexcept = 0;
  virtual const char* select_name() const noexcept = 0;
  // A get could complete now: takes the next item into `out` and returns true, or returns true with
  // `out` empty if the queue is closed and drained; false if a get would have to wait.
  virtual bool select_recv_locked(std::optional<T>& out) = 0;
  // A put could complete now: hands `item` over (moved from) and returns true; returns true without
  // taking it if the queue is closed; false if a put would have to wait. closed() tells the two apart.
  virtual bool select_send_locked(T& item) = 0;
  // Adds a select case's node to the getters' (or putters') line, and counts it as a fiber blocked on
  // the queue (the destructor waits for it to leave).
  virtual void select_enqueue_locked(HandOff<T>& h, bool send) noexcept = 0;
  // Removes it again (harmless if it was already taken off the line); the queue may be destroyed as
  // soon as the lock is released afterwards.
  virtual void select_dequeue_locked(HandOff<T>& h, bool send) noexcept = 0;
  virtual bool closed_locked() const noexcept = 0;
  // A put could complete, or fail with Closed, without waiting (a getter waits, there is room, closed).
  virtual bool writable_locked() const noexcept = 0;
  // wait()/iwait(): true if a get_nowait() would not throw Empty (an item, or the queue closed).
  virtual bool readable_locked() const noexcept = 0;
  // Callbacks run (with the queue's lock held: they must not touch the queue) whenever it may have
  // become readable: an item buffered, a putter waiting, close().
  virtual Links::Id watch_locked(std::function<void()> cb) = 0;
  virtual void unwatch_locked(Links::Id id) noexcept = 0;

 protected:
  ~SelectableQueue() = default;
};

// Where a queue keeps its items: FIFO (Queue, JoinableQueue), LIFO (LifoQueue), or a heap ordered by
// Compare (PriorityQueue). next() is the item a get() would return.
template <class T>
class FifoBuffer {
 public:
  void push(T&& v) { d_.push_back(std::move(v)); }
  void pop_into(std::optional<T>& out) {
    out.emplace(std::move(d_.front()));
    d_.pop_front();
  }
  const T& next() const { return d_.front(); }
  std::size_t size() const noexcept { return d_.size(); }
  bool empty() const noexcept { return d_.empty(); }

 private:
  std::deque<T> d_;
};

template <class T>
class LifoBuffer {
 public:
  void push(T&& v) { v_.push_back(std::move(v)); }
  void pop_into(std::optional<T>& out) {
    out.emplace(std::move(v_.back()));
    v_.pop_back();
  }
  const T& next() const { return v_.back(); }
  std::size_t size() const noexcept { return v_.size(); }
  bool empty() const noexcept { return v_.empty(); }

 private:
  std::vector<T> v_;
};

// The least item by Compare comes out first (Python's heapq, gevent's PriorityQueue). Equal items
// come out in no particular order.
template <class T, class Compare>
class HeapBuffer {
 public:
  void push(T&& v) {
    v_.push_back(std::move(v));
    std::push_heap(v_.begin(), v_.end(), Later{comp_});
  }
  void pop_into(std::optional<T>& out) {
    std::pop_heap(v_.begin(), v_.end(), Later{comp_});
    out.emplace(std::move(v_.back()));
    v_.pop_back();
  }
  const T& next() const { return v_.front(); }
  std::size_t size() const noexcept { return v_.size(); }
  bool empty() const noexcept { return v_.empty(); }

 private:
  struct Later {  // std::*_heap build a max-heap: inverting Compare puts the least item on top
    Compare& comp;
    bool operator()(const T& a, const T& b) const { return comp(b, a); }
  };
  Compare comp_;
  std::vector<T> v_;
};

// The machinery shared by every queue kind. capacity: how many items may sit in the buffer
// (kUnbounded, or 0 for a rendezvous Channel).
template <class T, class Buffer = FifoBuffer<T>>
class QueueBase : public SelectableQueue<T> {
 public:
  QueueBase(const QueueBase&) = delete;
  QueueBase& operator=(const QueueBase&) = delete;
  ~QueueBase() {
    evict_waiters(lock_, occupancy_, [this] {
      for (auto* list : {&getters_, &putters_})
        while (HandOff<T>* h = list->front()) {
          list->remove(*h);
          h->evicted = true;
          h->wake();
        }
      peekers_.notify_all();
      joiners_.notify_all();
    });
  }

  // Adds item, blocking while the queue is full. Throws Full if `timeout` passed first, Closed if the
  // queue is closed (or closes while this waits: the item is then not queued).
  void put(T item, OptDuration timeout = {}) { put_impl(item, timeout, true); }
  // Adds item if that needs no waiting; throws Full otherwise, Closed if the queue is closed.
  void put_nowait(T item) { put_impl(item, Duration::zero(), false); }
  // Removes and returns the next item, blocking while there is none. Throws Empty if `timeout` passed,
  // Closed once the queue is closed and drained.
  T get(OptDuration timeout = {}) { return get_impl(timeout, true); }
  // Removes and returns the next item if one is there; throws Empty otherwise (Closed if the queue is
  // closed and drained).
  T get_nowait() { return get_impl(Duration::zero(), false); }

  // Ends the stream: later puts throw Closed; gets take what is left, then throw Closed. Wakes every
  // fiber blocked in put()/get()/peek() on it (and select()s waiting on it), on any thread: putters
  // throw Closed, getters throw Closed. Closing a closed queue does nothing. Any thread may call it.
  void close() {
    SpinLockGuard lk(lock_);
    if (closed_) return;
    closed_ = true;
    for (auto* list : {&getters_, &putters_})
      while (HandOff<T>* h = list->front()) {
        list->remove(*h);
        if (h->wake()) h->closed = true;
      }
    peekers_.notify_all();
    fire_watchers_locked();
  }
  // True once close() was called (items may still be left to get).
  bool closed() const {
    SpinLockGuard lk(lock_);
    return closed_;
  }

  // Range-for over the queue: each iteration get()s the next item, blocking while there is none; the
  // loop ends once the queue is closed and drained. An input range: iterate it once, from one fiber.
  class iterator {
   public:
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    T& operator*() const { return *current_; }
    T* operator->() const { return &*current_; }
    iterator& operator++() {
      advance();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return !it.current_; }

   private:
    friend class QueueBase;
    explicit iterator(QueueBase* q) : q_(q) { advance(); }
    void advance() {
      current_.reset();
      try {
        current_.emplace(q_->get());
      } catch (const Closed&) {
      }
    }
    QueueBase* q_ = nullptr;
    mutable std::optional<T> current_;
  };
  // Blocks for the first item (or the end).
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() const noexcept { return {}; }

  // ---- SelectableQueue (for select() and wait()) ----
  Spinlock& select_lock() const noexcept final { return lock_; }
  const char* select_name() const noexcept final { return name_; }
  bool select_recv_locked(std::optional<T>& out) final {
    out = take_locked();
    return out.has_value() || closed_;
  }
  bool select_send_locked(T& item) final { return closed_ || offer_locked(item); }
  void select_enqueue_locked(HandOff<T>& h, bool send) noexcept final {
    (send ? putters_ : getters_).push_back(h);
    ++occupancy_.inside;
    if (send) fire_watchers_locked();
  }
  void select_dequeue_locked(HandOff<T>& h, bool send) noexcept final {
    (send ? putters_ : getters_).remove(h);
    --occupancy_.inside;
  }
  bool closed_locked() const noexcept final { return closed_; }
  bool writable_locked() const noexcept final {
    return closed_ || !getters_.empty() || buffer_.size() < capacity_;
  }
  bool readable_locked() const noexcept final { return closed_ || !buffer_.empty() || !putters_.empty(); }
  Links::Id watch_locked(std::function<void()> cb) final { return watchers_.add(std::move(cb)); }
  void unwatch_locked(Links::Id id) noexcept final { watchers_.remove(id); }

 protected:
  static constexpr std::size_t kUnbounded = std::numeric_limits<std::size_t>::max();
  QueueBase(std::size_t capacity, const char* name) : capacity_(capacity), name_(name) {}

  [[noreturn]] void throw_closed(const char* operation) const {
    throw Closed(fmt::format("{}::{}: the queue is closed", name_, operation));
  }

  void fire_watchers_locked() {
    if (!watchers_.empty()) [[unlikely]]
      Links::run(watchers_.copy());
  }

  // Gives item to the longest-waiting live getter, or buffers it if there is room. Lock held.
  bool offer_locked(T& item) {
    while (HandOff<T>* g = getters_.front()) {
      getters_.remove(*g);
      // A wake fails for a getter that already timed out or was killed (it will not look at its
      // slot), or a select() that took another case: the item then goes to the next one.
      if (g->wake()) {
        g->received.emplace(std::move(item));
        ++unfinished_;
        return true;
      }
    }
    if (buffer_.size() < capacity_) {
      buffer_.push(std::move(item));
      ++unfinished_;
      peekers_.notify_all();
      fire_watchers_locked();
      return true;
    }
    return false;
  }

  // Takes the longest-waiting live putter's item. Lock held.
  std::optional<T> take_from_putter_locked() {
    while (HandOff<T>* p = putters_.front()) {
      putters_.remove(*p);
      // A putter that already gave up (it throws Full, or was killed) keeps its item.
      if (p->wake()) {
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
      std::optional<T> item;
      buffer_.pop_into(item);
      if (buffer_.size() < capacity_)
        if (auto more = take_from_putter_locked()) buffer_.push(std::move(*more));
      return item;
    }
    return take_from_putter_locked();
  }

  void put_impl(T& item, OptDuration timeout, bool block) {
    exploration_point();  // seeded mode may switch here, even when there is room
    auto deadline = deadline_after(timeout);
    SpinLockGuard lk(lock_);
    if (closed_) [[unlikely]]
      throw_closed(block ? "put()" : "put_nowait()");
    if (offer_locked(item)) return;
    if (!block) throw Full(fmt::format("{}::put_nowait(): the queue is full", name_));
    Occupant occupant(occupancy_);
    HandOff<T> me;
    me.offered = &item;
    putters_.push_back(me);
    HandOffUnlink<T> unlink{putters_, me};
    fire_watchers_locked();  // a waiting putter makes a Channel readable
    for (;;) {
      // Notified means a getter has taken *me.offered, or close() woke this putter.
      bool served = park(me.wait, lk, deadline, WaitKind::Local, {"fiberio queue: put", this});
      if (me.evicted) throw_destroyed(name_, "put()");
      if (served && !me.closed) return;
      if (closed_) throw_closed("put()");
      if (Clock::now() >= deadline)
        throw Full(fmt::format("{}::put(): the queue stayed full{}", name_, describe_timeout(timeout)));
      if (!me.linked) {  // woken without being served before the deadline: queue up again
        if (offer_locked(item)) return;
        putters_.push_back(me);
      }
    }
  }

  T get_impl(OptDuration timeout, bool block) {
    exploration_point();  // seeded mode may switch here, even when an item is waiting
    auto deadline = deadline_after(timeout);
    SpinLockGuard lk(lock_);
    if (auto item = take_locked()) return std::move(*item);
    if (closed_) throw_closed(block ? "get()" : "get_nowait()");
    if (!block) throw Empty(fmt::format("{}::get_nowait(): the queue is empty", name_));
    Occupant occupant(occupancy_);
    HandOff<T> me;
    getters_.push_back(me);
    HandOffUnlink<T> unlink{getters_, me};
    for (;;) {
      // Notified means a putter has filled me.received (unless moving the item into it threw, which
      // the putter reports: then this getter just keeps waiting), or close() woke this getter.
      bool served = park(me.wait, lk, deadline, WaitKind::Local, {"fiberio queue: get", this});
      if (me.evicted) throw_destroyed(name_, "get()");
      if (served && me.received) return std::move(*me.received);
      if (closed_) {
        if (auto item = take_locked()) return std::move(*item);
        throw_closed("get()");
      }
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
  bool closed_ = false;
  Buffer buffer_;
  HandOffList<T> getters_;
  HandOffList<T> putters_;
  mutable WaitList peekers_;     // peek() waiters: woken whenever an item lands in the buffer
  WaitList joiners_;             // JoinableQueue::join() waiters
  std::size_t unfinished_ = 0;  // items accepted and not yet task_done() (JoinableQueue)
  mutable Occupancy occupancy_;
  Links watchers_;              // wait()/iwait() over this queue
};

// Queue, LifoQueue and PriorityQueue: a QueueBase with a buffer and gevent's introspection.
template <class T, class Buffer>
class BufferedQueue : public QueueBase<T, Buffer> {
  using Base = QueueBase<T, Buffer>;

 public:
  // 0 if unbounded.
  std::size_t maxsize() const noexcept { return this->capacity_ == Base::kUnbounded ? 0 : this->capacity_; }
  std::size_t qsize() const {
    SpinLockGuard lk(this->lock_);
    return this->buffer_.size();
  }
  bool empty() const { return qsize() == 0; }
  bool full() const {
    SpinLockGuard lk(this->lock_);
    return this->buffer_.size() >= this->capacity_;
  }
  // Fibers blocked in get() / put() right now (select() cases included).
  std::size_t getters() const {
    SpinLockGuard lk(this->lock_);
    return this->getters_.size();
  }
  std::size_t putters() const {
    SpinLockGuard lk(this->lock_);
    return this->putters_.size();
  }

  // A copy of the next item, without removing it; waits while the queue is empty and throws Empty
  // if `timeout` passes first, Closed if it is (or becomes) closed and drained. Items that a put()
  // hands straight to a waiting getter never sit in the queue, so a peek() waiting behind getters
  // sees only what they leave.
  T peek(OptDuration timeout = {}) const {
    auto deadline = deadline_after(timeout);
    SpinLockGuard lk(this->lock_);
    if (!this->buffer_.empty()) return this->buffer_.next();
    Occupant occupant(this->occupancy_);
    while (this->buffer_.empty()) {
      if (this->closed_) this->throw_closed("peek()");
      bool notified = park(this->peekers_, lk, deadline, WaitKind::Local, {"fiberio queue: peek", this});
      if (occupant.evicted()) throw_destroyed(this->name_, "peek()");
      if (!notified && this->buffer_.empty() && !this->closed_ && Clock::now() >= deadline)
        throw Empty(fmt::format("{}::peek(): the queue stayed empty{}", this->name_, describe_timeout(timeout)));
    }
    return this->buffer_.next();
  }
  // A copy of the next item; throws Empty if there is none (Closed if closed and drained).
  T peek_nowait() const {
    SpinLockGuard lk(this->lock_);
    if (this->buffer_.empty()) {
      if (this->closed_) this->throw_closed("peek_nowait()");
      throw Empty(fmt::format("{}::peek_nowait(): the queue is empty", this->name_));
    }
    return this->buffer_.next();
  }

 protected:
  BufferedQueue(std::size_t maxsize, const char* name) : Base(maxsize == 0 ? Base::kUnbounded : maxsize, name) {}
};

}  // namespace detail

// A FIFO queue. maxsize 0 means unbounded (as gevent and Python's queue); otherwise put() blocks
// while maxsize items are queued.
template <class T>
class Queue : public detail::BufferedQueue<T, detail::FifoBuffer<T>> {
 public:
  explicit Queue(std::size_t maxsize = 0) : Queue(maxsize, "fiberio::Queue") {}

 protected:
  Queue(std::size_t maxsize, const char* name) : detail::BufferedQueue<T, detail::FifoBuffer<T>>(maxsize, name) {}
};

// A LIFO queue (a stack): get() returns the most recently put item. maxsize as Queue.
template <class T>
class LifoQueue : public detail::BufferedQueue<T, detail::LifoBuffer<T>> {
 public:
  explicit LifoQueue(std::size_t maxsize = 0)
      : detail::BufferedQueue<T, detail::LifoBuffer<T>>(maxsize, "fiberio::LifoQueue") {}
};

// A priority queue: get() returns the least queued item by Compare (std::less: the smallest first, as
// gevent's PriorityQueue and Python's heapq; pass std::greater<T> for the largest first). Items that
// compare equal come out in no particular order: put (priority, sequence) pairs for FIFO among equals.
// A put() that finds a getter waiting hands the item straight to it, as every queue here. maxsize as
// Queue.
template <class T, class Compare = std::less<T>>
class PriorityQueue : public detail::BufferedQueue<T, detail::HeapBuffer<T, Compare>> {
 public:
  explicit PriorityQueue(std::size_t maxsize = 0)
      : detail::BufferedQueue<T, detail::HeapBuffer<T, Compare>>(maxsize, "fiberio::PriorityQueue") {}
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
      bool notified = detail::park(this->joiners_, lk, deadline, detail::WaitKind::Local, {"fiberio::JoinableQueue: join", this});
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
