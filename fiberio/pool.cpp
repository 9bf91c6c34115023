#include "fiberio/pool.hpp"
#include "fiberio/hub.hpp"

#include <fmt/format.h>

#include <unordered_set>

namespace fiberio {
namespace detail {

namespace {
GreenletBase* current_greenlet() noexcept { return fiber_state().greenlet; }
}  // namespace

void redeliver_later(std::exception_ptr e) noexcept {
  if (e) fiber_state().interrupt(std::move(e));
}

GroupState::GroupState(std::optional<std::size_t> limit) : hub_(&Hub::current()), limit_(limit) {}

void GroupState::check_thread(const char* what) const {
  if (Hub::get() != hub_)
    throw std::logic_error(fmt::format("fiberio: Group::{}() called from a thread other than the group's", what));
}

void GroupState::check_member(const GreenletRef& g) const {
  if (!g) throw std::invalid_argument("fiberio: Group::add() of an empty GreenletRef");
  if (g.base().hub() != hub_)
    throw std::invalid_argument(
        fmt::format("fiberio: Group::add(): {} runs on another thread; a Group holds its own thread's greenlets",
                    g.name()));
}

bool GroupState::wait_slot(Deadline deadline) {
  SpinLockGuard lk(lock_);
  while (!has_free_slot())
    if (!park(slot_waiters_, lk, deadline, WaitKind::Local, {"fiberio::Pool (a free slot)", this}) && Clock::now() >= deadline) return has_free_slot();
  return true;
}

void GroupState::insert_now(const GreenletRef& g) {
  check_member(g);
  std::uint64_t token;
  {
    SpinLockGuard lk(lock_);
    auto [it, fresh] = members_.try_emplace(&g.base(), Member{g, next_token_, 0});
    if (!fresh) return;
    token = next_token_++;
  }
  // Links outside the lock: a finished greenlet runs the callback at once, which removes it again.
  auto id = g.rawlink([w = weak_from_this(), p = &g.base(), token] {
    if (auto s = w.lock()) s->on_finished(p, token);
  });
  SpinLockGuard lk(lock_);
  auto it = members_.find(&g.base());
  if (it != members_.end() && it->second.token == token) it->second.link = id;
}

void GroupState::add(const GreenletRef& g, OptDuration timeout) {
  check_thread("add");
  check_member(g);
  if (contains(g) || g.dead()) {
    insert_now(g);  // a no-op for a member; a dead greenlet joins and leaves at once (no slot needed)
    return;
  }
  if (!wait_slot(deadline_after(timeout)))
    throw TimeoutError(fmt::format("fiberio: Pool::add({}) timed out waiting for a free slot", g.name()));
  insert_now(g);
}

void GroupState::on_finished(GreenletBase* g, std::uint64_t token) {
  GreenletRef gone;  // released after the lock: it may hold the last reference
  SpinLockGuard lk(lock_);
  auto it = members_.find(g);
  if (it == members_.end() || it->second.token != token) return;
  gone = std::move(it->second.ref);
  members_.erase(it);
  if (raise_joiners_ > 0 && g->status() == GreenletBase::Status::Failed) failures_.push_back(gone);
  slot_waiters_.notify_one();
  change_waiters_.notify_all();
}

bool GroupState::discard(const GreenletRef& g) {
  if (!g) return false;
  Member m;
  {
    SpinLockGuard lk(lock_);
    auto it = members_.find(&g.base());
    if (it == members_.end()) return false;
    m = std::move(it->second);
    members_.erase(it);
    slot_waiters_.notify_one();
    change_waiters_.notify_all();
  }
  if (m.link) m.ref.unlink(m.link);
  return true;
}

bool GroupState::contains(const GreenletRef& g) const {
  if (!g) return false;
  SpinLockGuard lk(lock_);
  return members_.count(&g.base()) != 0;
}

std::size_t GroupState::size() const {
  SpinLockGuard lk(lock_);
  return members_.size();
}

std::vector<GreenletRef> GroupState::greenlets() const {
  std::vector<GreenletRef> out;
  SpinLockGuard lk(lock_);
  out.reserve(members_.size());
  for (auto& [p, m] : members_) out.push_back(m.ref);
  return out;
}

std::size_t GroupState::free_count() const {
  SpinLockGuard lk(lock_);
  return limit_ ? (members_.size() < *limit_ ? *limit_ - members_.size() : 0) : SIZE_MAX;
}

std::size_t GroupState::wait_available(OptDuration timeout) {
  auto deadline = deadline_after(timeout);
  SpinLockGuard lk(lock_);
  while (!has_free_slot())
    if (!park(slot_waiters_, lk, deadline, WaitKind::Local, {"fiberio::Pool (a free slot)", this}) && Clock::now() >= deadline) break;
  if (!has_free_slot()) return 0;
  // We take no slot: pass the wake-up on so a spawn() waiting behind us is not left parked.
  slot_waiters_.notify_one();
  return limit_ ? *limit_ - members_.size() : SIZE_MAX;
}

std::size_t GroupState::others(GreenletBase* self) const {
  std::size_t n = members_.size();
  if (self && members_.count(self)) --n;
  return n;
}

bool GroupState::join(OptDuration timeout, bool raise_error) {
  auto deadline = deadline_after(timeout);
  auto* self = current_greenlet();
  std::exception_ptr failure;
  bool emptied = true;
  {
    SpinLockGuard lk(lock_);
    // Counts this join among those collecting failures, also if the wait throws (kill/Timeout).
    struct Collecting {
      GroupState& s;
      bool on;
      std::size_t start;
      ~Collecting() {
        if (on && --s.raise_joiners_ == 0) s.failures_.clear();
      }
    } collecting{*this, raise_error, failures_.size()};
    if (raise_error) ++raise_joiners_;
    while (others(self) != 0) {
      if (!park(change_waiters_, lk, deadline, WaitKind::Local, {"fiberio::Group (join/kill)", this}) && Clock::now() >= deadline) {
        emptied = false;
        break;
      }
    }
    if (raise_error && failures_.size() > collecting.start) failure = failures_[collecting.start].exception();
  }
  if (failure) std::rethrow_exception(failure);
  return emptied;
}

void GroupState::kill(bool block, OptDuration timeout) {
  auto deadline = deadline_after(timeout);
  auto* self = current_greenlet();
  // Killed once each (a second GreenletExit would hit a greenlet already unwinding); the refs keep
  // their addresses from being reused by a new member during this call.
  std::vector<GreenletRef> killed;
  std::unordered_set<const GreenletBase*> seen;
  for (;;) {
    for (auto& g : greenlets()) {
      if (&g.base() == self || !seen.insert(&g.base()).second) continue;
      g.kill(false);
      killed.push_back(g);
    }
    if (!block) return;
    SpinLockGuard lk(lock_);
    if (others(self) == 0) return;
    bool newcomer = false;
    for (auto& [p, m] : members_)
      if (p != self && !seen.count(p)) newcomer = true;
    if (newcomer) continue;
    if (!park(change_waiters_, lk, deadline, WaitKind::Local, {"fiberio::Group (join/kill)", this}) && Clock::now() >= deadline) return;
  }
}

void GroupState::detach() noexcept {
  std::vector<Member> all;
  {
    SpinLockGuard lk(lock_);
    for (auto& [p, m] : members_) all.push_back(std::move(m));
    members_.clear();
  }
  for (auto& m : all)
    if (m.link) m.ref.unlink(m.link);
}

}  // namespace detail

Group::Group() : Group(std::optional<std::size_t>{}) {}

Group::Group(std::optional<std::size_t> limit) : state_(std::make_shared<detail::GroupState>(limit)) {}

Group::Group(std::initializer_list<GreenletRef> greenlets) : Group() {
  for (auto& g : greenlets) add(g);
}

Group::~Group() { state_->detach(); }

Pool::Pool(std::ptrdiff_t size)
    : Group(size >= 1 ? std::optional<std::size_t>(static_cast<std::size_t>(size))
                      : throw std::invalid_argument(
                            fmt::format("fiberio: Pool size must be at least 1, got {}", size))) {}

}  // namespace fiberio
