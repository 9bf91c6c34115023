// Group and Pool: sets of greenlets managed together, as gevent.pool.
//
// A Group tracks greenlets: spawn() starts one and adds it, add() adopts an existing one, and each
// member leaves the group by itself when it finishes. join() waits until the group is empty, kill()
// kills every member, map()/imap_unordered() run a function over a range concurrently.
// A Pool is a Group with a limit on its size: spawn() and add() block the calling fiber while it is
// full, so at most limit() of its greenlets run at once.
//
// Names differ from gevent in one place: gevent's `pool.size` (the limit) is limit() here, because
// size() is the number of members (gevent's len(pool)), as for every C++ container.
//
// Threads: a Group belongs to the thread that created it; its members are greenlets of that thread
// (add() of another thread's greenlet, or spawn() from another thread, throws). Destroying a Group
// neither kills nor waits for its members: they run on, as in gevent.
//
// Killed members: as with Greenlet::get(), a member that was killed has no value, so map() and the
// imap_unordered() iteration rethrow its GreenletExit.
#pragma once
#include <cstddef>
#include <deque>
#include <exception>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <span>
#include <stdexcept>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "fiberio/greenlet.hpp"
#include "fiberio/hub.hpp"

namespace fiberio {

namespace detail {

// The shared body of a Group: member callbacks hold a weak reference to it, so a Group may be destroyed
// while its members still run (and while one of them is in the middle of finishing).
class GroupState : public std::enable_shared_from_this<GroupState> {
 public:
  explicit GroupState(std::optional<std::size_t> limit);
  GroupState(const GroupState&) = delete;
  GroupState& operator=(const GroupState&) = delete;

  // Blocks until a slot is free; false if `deadline` passed first. Never blocks without a limit.
  bool wait_slot(Deadline deadline);
  // Adds g now, without waiting for a slot: the caller has just checked (wait_slot) and not suspended since.
  void insert_now(const GreenletRef& g);
  // Waits for a slot (as wait_slot) and adds g; TimeoutError if none was free within `timeout`.
  void add(const GreenletRef& g, OptDuration timeout);
  bool discard(const GreenletRef& g);
  bool contains(const GreenletRef& g) const;
  std::size_t size() const;
  std::vector<GreenletRef> greenlets() const;
  std::optional<std::size_t> limit() const noexcept { return limit_; }
  std::size_t free_count() const;
  // Waits until a slot is free (without taking it); the free slots then, 0 if `timeout` passed first.
  std::size_t wait_available(OptDuration timeout);
  bool join(OptDuration timeout, bool raise_error);
  void kill(bool block, OptDuration timeout);
  // Drops every member's completion callback (the Group is going away).
  void detach() noexcept;

  // Throws std::logic_error unless called on the group's own thread.
  void check_thread(const char* what) const;

  template <class F, class... Args>
  auto spawn(F&& f, Args&&... args) {
    check_thread("spawn");
    wait_slot(kNoDeadline);
    // No suspension between the slot check and insert_now(): nobody can take the slot in between.
    auto g = fiberio::spawn(std::forward<F>(f), std::forward<Args>(args)...);
    insert_now(g);
    return g;
  }

 private:
  struct Member {
    GreenletRef ref;
    std::uint64_t token;
    Links::Id link = 0;
  };
  void on_finished(GreenletBase* g, std::uint64_t token);
  void check_member(const GreenletRef& g) const;
  bool has_free_slot() const noexcept { return !limit_ || members_.size() < *limit_; }
  // Members other than `self` (the fiber calling join()/kill(), which cannot wait for itself).
  std::size_t others(GreenletBase* self) const;

  Hub* hub_;
  std::optional<std::size_t> limit_;
  mutable Spinlock lock_;
  std::unordered_map<GreenletBase*, Member> members_;
  std::uint64_t next_token_ = 1;
  WaitList slot_waiters_;    // spawn()/add()/wait_available() waiting for a free slot
  WaitList change_waiters_;  // join()/kill() waiting for members to leave
  // Failures recorded while some join(raise_error=true) is running (raise_joiners_ > 0).
  std::vector<GreenletRef> failures_;
  std::size_t raise_joiners_ = 0;
};

// Re-delivers an exception caught in a destructor (which must not throw) at the fiber's next
// suspension point, so a kill or Timeout that arrives while a destructor waits is postponed, not lost.
void redeliver_later(std::exception_ptr e) noexcept;

// The state shared by an imap_unordered() iteration, its feeder greenlet and the workers' callbacks.
template <class R>
struct IMapState {
  Spinlock lock;
  WaitList waiters;
  std::deque<Greenlet<R>> done;  // finished workers, in completion order, not yet yielded
  std::unordered_map<GreenletBase*, GreenletRef> running;  // to kill them if the iteration is dropped
  std::size_t spawned = 0, finished = 0;
  bool feeding_done = false;
  std::exception_ptr feed_error;  // the range (or copying f) threw in the feeder

  void push(const Greenlet<R>& g) {
    SpinLockGuard lk(lock);
    done.push_back(g);
    running.erase(&g.base());
    ++finished;
    waiters.notify_one();
  }
};
}  // namespace detail

// The results of Group::imap_unordered(): an input range (use it with range-for) that yields each
// call's result as soon as that call finishes — completion order, not input order. A call that threw
// rethrows its exception when the iteration reaches it. Calls are started by a feeder greenlet as the
// group admits them, so a Pool keeps at most limit() running while results are already being consumed.
// Dropping the object (e.g. `break` out of the loop) kills the feeder and every call still running,
// and waits for them to unwind. The range and function passed in must outlive the iteration when
// passed as lvalues (rvalue ranges are moved in).
template <class R>
class IMapUnordered {
 public:
  class iterator {
   public:
    using value_type = R;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    R& operator*() const { return *owner_->current_; }
    R* operator->() const { return &*owner_->current_; }
    iterator& operator++() {
      owner_->advance();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return it.at_end(); }

   private:
    bool at_end() const { return !owner_->current_; }
    friend class IMapUnordered;
    explicit iterator(IMapUnordered* o) : owner_(o) {}
    IMapUnordered* owner_ = nullptr;
  };

  IMapUnordered(std::shared_ptr<detail::IMapState<R>> st, GreenletRef feeder)
      : st_(std::move(st)), feeder_(std::move(feeder)) {}
  IMapUnordered(const IMapUnordered&) = delete;
  IMapUnordered& operator=(const IMapUnordered&) = delete;
  ~IMapUnordered() { stop(); }

  // Waits for the first result. Call once.
  iterator begin() {
    if (started_) throw std::logic_error("fiberio: IMapUnordered can be iterated only once");
    started_ = true;
    advance();
    return iterator(this);
  }
  std::default_sentinel_t end() const noexcept { return {}; }

  // The next result in completion order, or nullopt once every call has been yielded.
  std::optional<R> next() {
    started_ = true;
    Greenlet<R> g;
    {
      detail::SpinLockGuard lk(st_->lock);
      for (;;) {
        if (!st_->done.empty()) {
          g = std::move(st_->done.front());
          st_->done.pop_front();
          break;
        }
        if (st_->feed_error) {
          auto e = std::exchange(st_->feed_error, nullptr);
          lk.unlock();
          std::rethrow_exception(e);
        }
        if (st_->feeding_done && st_->finished == st_->spawned) return std::nullopt;
        detail::park(st_->waiters, lk, detail::kNoDeadline, detail::WaitKind::Local, {"fiberio::Pool imap", st_.get()});
      }
    }
    return g.get();  // the worker has finished: returns at once, or rethrows its exception
  }

 private:
  void advance() {
    current_.reset();
    if (auto v = next()) current_.emplace(std::move(*v));
  }
  void stop() noexcept {
    try {
      feeder_.kill(true);
      std::vector<GreenletRef> alive;
      {
        detail::SpinLockGuard lk(st_->lock);
        for (auto& [p, g] : st_->running) alive.push_back(g);
      }
      killall(alive, true);
    } catch (...) {
      detail::redeliver_later(std::current_exception());
    }
  }

  std::shared_ptr<detail::IMapState<R>> st_;
  GreenletRef feeder_;
  std::optional<R> current_;
  bool started_ = false;
};

class Group {
 public:
  Group();
  // Starts with these members (as add() for each).
  Group(std::initializer_list<GreenletRef> greenlets);
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;
  ~Group();

  // Starts f(args...) in a new greenlet and adds it (for a Pool: first waits while full).
  template <class F, class... Args>
  auto spawn(F&& f, Args&&... args) {
    return state_->spawn(std::forward<F>(f), std::forward<Args>(args)...);
  }
  // Adds a greenlet of this thread (no-op if already a member; a finished one leaves at once).
  // For a Pool, waits while full; TimeoutError if no slot freed within `timeout`.
  void add(const GreenletRef& g, OptDuration timeout = {}) { state_->add(g, timeout); }
  // Removes g without killing it (frees its Pool slot); false if it was not a member.
  bool discard(const GreenletRef& g) { return state_->discard(g); }
  bool contains(const GreenletRef& g) const { return state_->contains(g); }
  // The number of members (gevent's len(group)).
  std::size_t size() const { return state_->size(); }
  bool empty() const { return size() == 0; }
  // The members now, in no particular order.
  std::vector<GreenletRef> greenlets() const { return state_->greenlets(); }

  // Waits until the group is empty (a member calling this does not wait for itself); false if
  // `timeout` passed first. raise_error: afterwards (even on timeout) rethrow the exception of the
  // first member that failed while this join was waiting (a kill is not a failure), as gevent does.
  bool join(OptDuration timeout = {}, bool raise_error = false) { return state_->join(timeout, raise_error); }
  // Kills every member (except the calling greenlet), including members added while it waits; with
  // block, waits up to `timeout` until they have all left.
  void kill(bool block = true, OptDuration timeout = {}) { state_->kill(block, timeout); }

  // f(args...) in a member greenlet, waiting for its result (rethrows its exception).
  template <class F, class... Args>
  auto apply(F&& f, Args&&... args) {
    return spawn(std::forward<F>(f), std::forward<Args>(args)...).get();
  }

  // f(item) for every item of `items`, concurrently in member greenlets (a Pool runs at most limit()
  // at once); returns the results in input order (nothing for a void f). If a call throws, no new
  // call is started, the others are killed, and the first exception (in completion order) is rethrown.
  template <class F, std::ranges::input_range Range>
  auto map(F f, Range&& items) {
    using Item = std::decay_t<std::ranges::range_reference_t<Range>>;
    using R = std::invoke_result_t<F&, Item>;
    std::vector<Greenlet<R>> gs;
    auto failed = std::make_shared<bool>(false);
    try {
      for (auto&& item : items) {
        if (*failed) break;
        auto g = spawn(f, item);
        g.rawlink([failed, p = &g.base()] {
          if (p->status() == GreenletBase::Status::Failed) *failed = true;
        });
        gs.push_back(std::move(g));
      }
      joinall(gs, {}, /*raise_error=*/true);
    } catch (...) {
      // Stop the calls still running: they may use what the caller is about to unwind.
      killall(gs, true);
      throw;
    }
    if constexpr (std::is_void_v<R>) {
      for (auto& g : gs) g.get();  // rethrows only a GreenletExit (a member was killed)
    } else {
      std::vector<R> out;
      out.reserve(gs.size());
      for (auto& g : gs) out.push_back(g.get());
      return out;
    }
  }

  // As map() over a braced list: pool.map(f, {1, 2, 3}).
  template <class F, class T>
  auto map(F f, std::initializer_list<T> items) {
    return map(std::move(f), std::vector<T>(items));
  }

  // f(item) for every item, concurrently; iterate the result to get each call's value as it finishes
  // (completion order), as gevent's imap_unordered. See IMapUnordered.
  template <class F, std::ranges::input_range Range>
  auto imap_unordered(F f, Range&& items) {
    using Item = std::decay_t<std::ranges::range_reference_t<Range>>;
    using R = std::invoke_result_t<F&, Item>;
    static_assert(!std::is_void_v<R>, "imap_unordered needs a function returning a value; use map() for void");
    state_->check_thread("imap_unordered");
    auto st = std::make_shared<detail::IMapState<R>>();
    auto feeder = fiberio::spawn(
        [st, gs = state_, f = std::move(f), r = std::views::all(std::forward<Range>(items))]() mutable {
          struct Done {  // the iteration must end even if the feeder is killed or the range throws
            detail::IMapState<R>& s;
            ~Done() {
              detail::SpinLockGuard lk(s.lock);
              s.feeding_done = true;
              s.waiters.notify_one();
            }
          } done{*st};
          try {
            for (auto&& item : r) {
              auto g = gs->spawn(f, item);
              {
                detail::SpinLockGuard lk(st->lock);
                ++st->spawned;
                st->running.emplace(&g.base(), g);
              }
              g.rawlink([w = std::weak_ptr(st), g] {
                if (auto s = w.lock()) s->push(g);
              });
            }
          } catch (const GreenletExit&) {
            throw;
          } catch (...) {
            detail::SpinLockGuard lk(st->lock);
            st->feed_error = std::current_exception();
          }
        });
    return IMapUnordered<R>(std::move(st), std::move(feeder));
  }
  // Over a braced list (copied, so it outlives the iteration).
  template <class F, class T>
  auto imap_unordered(F f, std::initializer_list<T> items) {
    return imap_unordered(std::move(f), std::vector<T>(items));
  }

 protected:
  explicit Group(std::optional<std::size_t> limit);
  std::shared_ptr<detail::GroupState> state_;
};

// A Group of at most `size` greenlets (gevent.pool.Pool): spawn() and add() block while it is full.
class Pool : public Group {
 public:
  // size >= 1; std::invalid_argument otherwise.
  explicit Pool(std::ptrdiff_t size);

  // The maximum number of members (gevent's pool.size).
  std::size_t limit() const noexcept { return *state_->limit(); }
  // Slots free right now.
  std::size_t free_count() const { return state_->free_count(); }
  bool full() const { return free_count() == 0; }
  // Waits until at least one slot is free, without taking it. Returns the free slots, or 0 if
  // `timeout` passed first. (Another fiber may take the slot before the caller spawns, unless the
  // caller spawns right away without blocking in between.)
  std::size_t wait_available(OptDuration timeout = {}) { return state_->wait_available(timeout); }
};

}  // namespace fiberio
