#include "fiberio/wait.hpp"
#include "fiberio/hub.hpp"

#include <algorithm>

namespace fiberio {

namespace {
struct GreenletModel final : detail::WaitableModel {
  explicit GreenletModel(GreenletRef ref) : g(std::move(ref)) {}
  bool ready() const override { return g.ready(); }
  detail::Links::Id rawlink(std::function<void()> cb) const override { return g.rawlink(std::move(cb)); }
  void unlink(detail::Links::Id id) const override { g.unlink(id); }
  bool external() const override { return g.base().hub() != detail::Hub::get(); }
  GreenletRef g;
};

struct EventModel final : detail::WaitableModel {
  explicit EventModel(Event& ev) : e(&ev) {}
  bool ready() const override { return e->is_set(); }
  detail::Links::Id rawlink(std::function<void()> cb) const override { return e->rawlink(std::move(cb)); }
  void unlink(detail::Links::Id id) const override { e->unlink(id); }
  bool external() const override { return true; }
  Event* e;
};
}  // namespace

Waitable::Waitable(const GreenletRef& g) {
  if (!g) throw std::invalid_argument("fiberio::Waitable: empty GreenletRef");
  m_ = std::make_shared<GreenletModel>(g);
}

Waitable::Waitable(Event& e) : m_(std::make_shared<EventModel>(e)) {}

GreenletRef Waitable::greenlet() const {
  auto* g = dynamic_cast<const GreenletModel*>(m_.get());
  return g ? g->g : GreenletRef();
}

Event* Waitable::event() const noexcept {
  auto* e = dynamic_cast<const EventModel*>(m_.get());
  return e ? e->e : nullptr;
}

// Written by link callbacks, possibly on other threads (Event::set, AsyncResult::set, a foreign
// greenlet finishing) and possibly after the IWait is gone: hence shared and spinlocked.
struct IWait::Shared {
  detail::Spinlock lock;
  detail::WaitList waiters;
  std::vector<std::size_t> ready;  // indexes in completion order
  std::vector<bool> fired;         // an Event set twice is reported once
};

IWait::IWait(std::vector<Waitable> objects, OptDuration timeout, std::optional<std::size_t> count)
    : objects_(std::move(objects)),
      links_(objects_.size(), 0),
      shared_(std::make_shared<Shared>()),
      deadline_(detail::deadline_after(timeout)),
      want_(std::min(count.value_or(objects_.size()), objects_.size())) {
  detail::Hub::current();
  shared_->fired.assign(objects_.size(), false);
  shared_->ready.reserve(objects_.size());
  for (std::size_t i = 0; i < objects_.size(); ++i) {
    objects_[i].set_index(i);
    if (objects_[i].model().external()) external_ = true;
  }
  try {
    for (std::size_t i = 0; i < objects_.size(); ++i) {
      links_[i] = objects_[i].model().rawlink([s = shared_, i] {
        detail::SpinLockGuard lk(s->lock);
        if (s->fired[i]) return;
        s->fired[i] = true;
        s->ready.push_back(i);
        s->waiters.notify_one();
      });
    }
  } catch (...) {
    for (std::size_t i = 0; i < objects_.size(); ++i)
      if (links_[i]) objects_[i].model().unlink(links_[i]);
    throw;
  }
}

IWait::~IWait() {
  for (std::size_t i = 0; i < objects_.size(); ++i)
    if (links_[i]) objects_[i].model().unlink(links_[i]);
}

std::optional<Waitable> IWait::next() {
  if (returned_ >= want_) return std::nullopt;
  auto kind = external_ ? detail::WaitKind::External : detail::WaitKind::Local;
  detail::SpinLockGuard lk(shared_->lock);
  while (shared_->ready.size() <= returned_) {
    if (!detail::park(shared_->waiters, lk, deadline_, kind, {"fiberio::wait", shared_.get()}) && Clock::now() >= deadline_) {
      if (shared_->ready.size() > returned_) break;  // became ready just as the time ran out
      return std::nullopt;
    }
  }
  return objects_[shared_->ready[returned_++]];
}

IWait iwait(std::initializer_list<Waitable> objects, OptDuration timeout, std::optional<std::size_t> count) {
  return IWait(std::vector<Waitable>(objects), timeout, count);
}

std::vector<Waitable> wait(std::initializer_list<Waitable> objects, OptDuration timeout,
                           std::optional<std::size_t> count) {
  std::vector<Waitable> out;
  for (auto& w : iwait(objects, timeout, count)) out.push_back(w);
  return out;
}

}  // namespace fiberio
