#include "fiberio/select.hpp"

#include <cstdint>
#include <deque>
#include <random>

#include "fiberio/detail/interruption.hpp"

namespace fiberio {

namespace detail {

// The select's fiber claims its own cases while it scans them (parked false: no wake needed). Others
// claim it while it is parked only if their wake reaches it: a fiber already woken by its kill or
// deadline has given up, and the item goes to the next waiter instead, as with a plain get().
bool select_claim(SelectCore& s, std::size_t index) noexcept {
  SpinLockGuard lk(s.lock);
  if (s.winner != SelectCore::kNone) return false;
  if (s.parked && !s.wait.notify_one()) return false;
  s.winner = index;
  return true;
}

void select_unclaim(SelectCore& s, std::size_t index) noexcept {
  SpinLockGuard lk(s.lock);
  if (s.winner == index) s.winner = SelectCore::kNone;
}

namespace {

// Fairness needs no strong randomness, only an independent pick per select: a per-thread xorshift.
std::uint64_t next_random() noexcept {
  thread_local std::uint64_t x = [] {
    std::random_device rd;
    std::uint64_t seed = (std::uint64_t{rd()} << 32) ^ rd();
    return seed ? seed : 0x9e3779b97f4a7c15ull;
  }();
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return x;
}

// An Event case: ready while the Event is set. Its callback may outlive the select (Event::set runs a
// copy of its callbacks), so it holds the core by shared_ptr; a late one finds the core closed.
class EventCase final : public SelectCase {
 public:
  explicit EventCase(Event& e) : e_(&e) {}

 private:
  Armed arm(SelectCore& core, const std::shared_ptr<SelectCore>& shared, std::size_t index) override {
    if (e_->is_set()) return select_claim(core, index) ? Armed::Done : Armed::Skipped;
    id_ = e_->rawlink([s = shared, index] { select_claim(*s, index); });  // at once if set meanwhile
    linked_ = true;
    return Armed::Waiting;
  }
  void disarm(bool) noexcept override {
    if (linked_) e_->unlink(id_);
    linked_ = false;
  }
  bool external() const noexcept override { return true; }

  Event* e_;
  Links::Id id_ = 0;
  bool linked_ = false;
};

}  // namespace

std::optional<std::size_t> select(const std::vector<SelectCase*>& cases, OptDuration timeout) {
  const auto deadline = deadline_after(timeout);
  exploration_point();  // seeded mode may switch here, even when a case is ready
  const std::size_t n = cases.size();
  auto kind = WaitKind::Local;
  for (auto* c : cases)
    if (c->external()) kind = WaitKind::External;
  auto core = std::make_shared<SelectCore>();
  std::vector<std::size_t> order(n);
  std::vector<bool> armed(n, false);
  auto disarm_all = [&](std::size_t winner) noexcept {
    for (std::size_t i = 0; i < n; ++i)
      if (armed[i]) {
        cases[i]->disarm(i == winner);
        armed[i] = false;
      }
  };
  // Closes the core to every claim unless one already won (whose hand-off must then be kept).
  auto close_core = [&](std::size_t as) {
    SpinLockGuard lk(core->lock);
    if (core->winner == SelectCore::kNone) core->winner = as;
    return core->winner;
  };

  Interruption deferred;
  std::size_t winner;
  for (;;) {
    // Scan the cases in a random order (the first ready one wins: uniform among the ready), and
    // register with each that is not ready.
    for (std::size_t i = 0; i < n; ++i) {
      std::size_t j = static_cast<std::size_t>((next_random() >> 32) * (i + 1) >> 32);
      order[i] = order[j];
      order[j] = i;
    }
    bool retry = false;
    for (std::size_t k = 0; k < n; ++k) {
      std::size_t i = order[k];
      Armed a;
      try {
        a = cases[i]->arm(*core, core, i);
      } catch (...) {  // bad_alloc registering an Event callback
        close_core(SelectCore::kClosed);
        disarm_all(SelectCore::kClosed);
        throw;
      }
      if (a == Armed::Waiting) armed[i] = true;
      if (a == Armed::Retry) retry = true;
      if (a != Armed::Waiting) break;
    }

    SpinLockGuard lk(core->lock);
    if (retry && core->winner == SelectCore::kNone) {
      // Close the core while disarming (a claim then skips this select rather than commit to a case
      // about to be dropped), then scan again: what the skipped claims offered is seen then.
      core->winner = SelectCore::kClosed;
      lk.unlock();
      disarm_all(SelectCore::kClosed);
      lk.lock();
      core->winner = SelectCore::kNone;
      continue;
    }
    bool spurious = false;
    try {
      while (core->winner == SelectCore::kNone) {
        core->parked = true;
        bool notified = park(core->wait, lk, deadline, kind, {"fiberio::select", &*core});
        core->parked = false;
        if (core->winner != SelectCore::kNone) break;
        if (!notified && Clock::now() >= deadline) {
          core->winner = SelectCore::kClosed;
          break;
        }
        if (!notified) {  // woken for nothing: drop the registrations and scan again
          spurious = true;
          core->winner = SelectCore::kClosed;
          break;
        }
      }
    } catch (...) {
      core->parked = false;
      if (core->winner == SelectCore::kNone || !deferred.take_current()) {
        // Killed or timed out before any case happened: leave no registration behind.
        if (core->winner == SelectCore::kNone) core->winner = SelectCore::kClosed;
        std::size_t w = core->winner;
        lk.unlock();
        disarm_all(w);
        throw;
      }
      // A case was handed over at the same instant: it wins; the interruption comes next time.
    }
    winner = core->winner;
    lk.unlock();
    disarm_all(winner);
    if (spurious) {
      SpinLockGuard relock(core->lock);
      core->winner = SelectCore::kNone;
      continue;
    }
    break;
  }
  if (deferred) deferred.rearm();
  if (winner == SelectCore::kClosed) return std::nullopt;
  cases[winner]->check();
  return winner;
}

}  // namespace detail

std::optional<std::size_t> select(const std::vector<SelectArg>& args, OptDuration timeout) {
  std::deque<detail::EventCase> events;  // not movable: a deque never relocates them
  std::vector<SelectCase*> cases;
  cases.reserve(args.size());
  for (auto& a : args) {
    if (a.event()) {
      events.emplace_back(*a.event());
      cases.push_back(&events.back());
    } else {
      cases.push_back(a.select_case());
    }
  }
  return detail::select(cases, timeout);
}

std::optional<std::size_t> select(std::initializer_list<SelectArg> args, OptDuration timeout) {
  return select(std::vector<SelectArg>(args), timeout);
}

}  // namespace fiberio
