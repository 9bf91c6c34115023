// select(): Go's select over queue receives, queue sends, Events and a timeout.
//
//   fiberio::Recv jobs(job_queue);               // a receive case (any Queue, LifoQueue, PriorityQueue,
//   fiberio::Send out(results, std::string("x")); //   JoinableQueue or Channel); a send case
//   switch (auto i = fiberio::select({jobs, out, stop_event}, 100ms); i.value_or(99)) {
//     case 0: if (jobs.closed()) return; handle(*jobs); break;   // an item, or the end of the stream
//     case 1: break;                                            // "x" was put
//     case 2: return;                                           // stop_event is set
//     default: break;                                           // 100 ms passed: nothing happened
//   }
//
// select() blocks until one case can proceed, performs exactly that one, and returns its position in
// the list; nullopt if `timeout` passed first (timeout 0: a poll, Go's `default`). When several cases
// are ready it picks one uniformly at random (as Go), so no case starves another.
//
// - A receive case takes one item, as get() would, or, on a closed and drained queue, is ready with
//   no item (Recv::closed(); Recv::value() then throws Closed) — a closed queue stays ready, as a
//   closed channel in Go.
// - A send case puts its item as put() would; a send case on a closed queue makes select() throw
//   Closed (Go panics), whether it was closed before or while select() waited.
// - An Event case is ready while the Event is set (select() does not clear it).
//
// Exactly one case happens. A select() waiting is one waiter in each queue's line (served first come,
// first served with plain get()/put()); a queue serving it commits it to that case, and every other
// queue then skips it, so an item goes to exactly one receiver. A kill or enclosing Timeout that ends
// the wait leaves no registration behind and takes no item; one that arrives in the same instant as a
// hand-off is delivered at the next suspension point instead, as for get() (park()'s contract).
//
// Threads: the queues and Events may be used from other threads, which wake the select on its own
// hub. Waits on queues count as local for LoopExit (as Queue::get); with an Event case, as external.
// The cases and their objects must outlive the call; a case belongs to one select() at a time.
#pragma once
#include <cstddef>
#include <initializer_list>
#include <memory>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "fiberio/event.hpp"
#include "fiberio/queue.hpp"

namespace fiberio {

class SelectCase;

namespace detail {

// One select() call's state: which case it committed to, and the fiber's wait. Shared with Event
// callbacks (which may run after select() returned), hence held by a shared_ptr.
class SelectCore {
 public:
  static constexpr std::size_t kNone = static_cast<std::size_t>(-1);   // still open
  static constexpr std::size_t kClosed = static_cast<std::size_t>(-2);  // finished without a case
  Spinlock lock;
  WaitList wait;
  std::size_t winner = kNone;  // a case index, or kNone / kClosed
  bool parked = false;         // the select's fiber is parked on `wait`
};

// Undoes the select's own claim of case `index` when that case turned out not to be ready after all.
void select_unclaim(SelectCore& s, std::size_t index) noexcept;

// What arming a case found.
enum class Armed {
  Waiting,  // registered: an object will claim the select when the case can proceed
  Done,     // it could proceed now: the select claimed it and performed it
  Skipped,  // the select had already committed to another case: nothing done
  Retry,    // looked ready but was not (its waiters had given up): the select scans again
};

std::optional<std::size_t> select(const std::vector<SelectCase*>& cases, OptDuration timeout);
}  // namespace detail

// A case of select(): Recv, Send (or an Event, given directly). Not copyable; reusable across
// select() calls, one at a time.
class SelectCase {
 public:
  SelectCase(const SelectCase&) = delete;
  SelectCase& operator=(const SelectCase&) = delete;
  virtual ~SelectCase() = default;

 protected:
  SelectCase() = default;

 private:
  friend std::optional<std::size_t> detail::select(const std::vector<SelectCase*>&, OptDuration);
  // Called by select() with no lock held. If the case can proceed now, claims `core` for `index`
  // (select_claim) and, if that succeeds, performs it (Done); else registers it (Waiting).
  virtual detail::Armed arm(detail::SelectCore& core, const std::shared_ptr<detail::SelectCore>& shared,
                            std::size_t index) = 0;
  // Undoes a Waiting registration (no-op otherwise). `won`: select() chose this case, so collect what
  // its object handed over. After it returns the object may be destroyed.
  virtual void disarm(bool won) noexcept = 0;
  // After select() chose this case: throws if the case failed (a send on a closed queue; the queue
  // destroyed while select() waited).
  virtual void check() const {}
  // Another thread is expected to complete it (LoopExit must not count the wait as stuck).
  virtual bool external() const noexcept { return false; }
};

// A receive case: takes one item from a queue or channel.
template <class T>
class Recv final : public SelectCase {
 public:
  // q must outlive every select() this case is given to.
  explicit Recv(detail::SelectableQueue<T>& q) : q_(&q) {}

  // After select() chose this case: true if the queue was closed and drained (no item).
  bool closed() const noexcept { return !item_ && closed_; }
  // After select() chose this case: the item received. Throws Closed if the queue was closed and
  // drained instead, std::logic_error if the last select() did not choose this case.
  T& value() {
    if (item_) return *item_;
    if (closed_) throw Closed(fmt::format("{}: select(): the queue is closed and drained", name_));
    throw std::logic_error("fiberio::Recv::value(): select() did not choose this case");
  }
  T& operator*() { return value(); }
  T* operator->() { return &value(); }
  // The item, if this case received one (empty otherwise); it may be moved out.
  std::optional<T>& result() noexcept { return item_; }

 private:
  detail::Armed arm(detail::SelectCore& core, const std::shared_ptr<detail::SelectCore>&,
                    std::size_t index) override {
    item_.reset();
    closed_ = evicted_ = enqueued_ = false;
    detail::SpinLockGuard lk(q_->select_lock());
    name_ = q_->select_name();
    if (q_->readable_locked()) {
      if (!detail::select_claim(core, index)) return detail::Armed::Skipped;
      if (q_->select_recv_locked(item_)) {
        closed_ = !item_;
        return detail::Armed::Done;
      }
      detail::select_unclaim(core, index);
      return detail::Armed::Retry;
    }
    node_.received.reset();
    node_.evicted = node_.closed = false;
    node_.select = &core;
    node_.index = index;
    q_->select_enqueue_locked(node_, false);
    enqueued_ = true;
    return detail::Armed::Waiting;
  }
  void disarm(bool won) noexcept override {
    if (!enqueued_) return;
    detail::SpinLockGuard lk(q_->select_lock());
    q_->select_dequeue_locked(node_, false);
    enqueued_ = false;
    if (!won) return;
    if (node_.received) item_.emplace(std::move(*node_.received));
    node_.received.reset();
    closed_ = node_.closed;
    evicted_ = node_.evicted;
  }
  void check() const override {
    if (evicted_) detail::throw_destroyed(name_, "select()");
  }

  detail::SelectableQueue<T>* q_;
  detail::HandOff<T> node_;
  std::optional<T> item_;
  const char* name_ = "fiberio::Queue";
  bool closed_ = false;
  bool evicted_ = false;
  bool enqueued_ = false;
};

// A send case: puts its item into a queue or channel. The item is moved out when it is sent (sent()
// tells); give a new one with item() before using the case in another select().
template <class T>
class Send final : public SelectCase {
 public:
  // q must outlive every select() this case is given to.
  Send(detail::SelectableQueue<T>& q, std::type_identity_t<T> item) : q_(&q), item_(std::move(item)) {}

  // True once select() chose this case: the item was put.
  bool sent() const noexcept { return sent_; }
  T& item() noexcept { return item_; }

 private:
  detail::Armed arm(detail::SelectCore& core, const std::shared_ptr<detail::SelectCore>&,
                    std::size_t index) override {
    sent_ = closed_ = evicted_ = enqueued_ = false;
    detail::SpinLockGuard lk(q_->select_lock());
    name_ = q_->select_name();
    if (q_->writable_locked()) {
      if (!detail::select_claim(core, index)) return detail::Armed::Skipped;
      if (q_->closed_locked()) {
        closed_ = true;
        return detail::Armed::Done;
      }
      if (q_->select_send_locked(item_)) {
        sent_ = true;
        return detail::Armed::Done;
      }
      detail::select_unclaim(core, index);
      return detail::Armed::Retry;
    }
    node_.evicted = node_.closed = false;
    node_.select = &core;
    node_.index = index;
    node_.offered = &item_;
    q_->select_enqueue_locked(node_, true);
    enqueued_ = true;
    return detail::Armed::Waiting;
  }
  void disarm(bool won) noexcept override {
    if (!enqueued_) return;
    detail::SpinLockGuard lk(q_->select_lock());
    q_->select_dequeue_locked(node_, true);
    enqueued_ = false;
    if (!won) return;
    closed_ = node_.closed;
    evicted_ = node_.evicted;
    sent_ = !closed_ && !evicted_;
  }
  void check() const override {
    if (evicted_) detail::throw_destroyed(name_, "select()");
    if (closed_) throw Closed(fmt::format("{}: select(): send case: the queue is closed", name_));
  }

  detail::SelectableQueue<T>* q_;
  detail::HandOff<T> node_;
  T item_;
  const char* name_ = "fiberio::Queue";
  bool sent_ = false;
  bool closed_ = false;
  bool evicted_ = false;
  bool enqueued_ = false;
};

// One entry of select()'s list: a Recv, a Send, or an Event (ready while set).
class SelectArg {
 public:
  SelectArg(SelectCase& c) noexcept : case_(&c) {}
  SelectArg(Event& e) noexcept : event_(&e) {}
  SelectCase* select_case() const noexcept { return case_; }
  Event* event() const noexcept { return event_; }

 private:
  SelectCase* case_ = nullptr;
  Event* event_ = nullptr;
};

// Waits until one case can proceed, performs it and returns its index in `cases`; nullopt if
// `timeout` passed first (0: poll once). Picks uniformly at random among cases ready together.
// Throws Closed for a send case on a closed queue, and GreenletExit / TimeoutError / LoopExit as any
// blocking call (then no case happened).
std::optional<std::size_t> select(std::initializer_list<SelectArg> cases, OptDuration timeout = {});
std::optional<std::size_t> select(const std::vector<SelectArg>& cases, OptDuration timeout = {});

}  // namespace fiberio
