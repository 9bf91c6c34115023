// local<T>: greenlet-local storage, as gevent.local.local. Each greenlet (and each thread's main
// fiber) sees its own T, created on its first access (value-initialized, or by the factory given to
// the constructor) and destroyed when that greenlet finishes — on the finishing greenlet's own fiber,
// before join() returns to anyone waiting for it. The main fiber's values live until its thread ends.
//
//   fiberio::local<std::string> request_id;
//   fiberio::spawn([&] { *request_id = "a"; fiberio::sleep(1ms); assert(*request_id == "a"); });
//
// Destroying a local<T> frees the calling fiber's value at once; other greenlets' values are freed
// when they finish (never used again: a new local at the same address does not see them).
// A local<T> is an identity (keyed by its address), so it is neither copyable nor movable.
#pragma once
#include <concepts>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <utility>

#include "fiberio/hub.hpp"

namespace fiberio {

namespace detail {
// Every stored value starts with the id of the local<T> that made it, so a value left behind by a
// destroyed local is never mistaken for one of a new local that reuses its address.
struct LocalSlotBase {
  std::uint64_t owner;
};
std::uint64_t next_local_id() noexcept;
// Makes the running greenlet (if it is one) free its locals when it finishes. Idempotent.
void arm_local_cleanup(FiberState& st);
}  // namespace detail

template <class T>
class local {
  struct Slot : detail::LocalSlotBase {
    template <class Init>
    Slot(std::uint64_t id, Init& init) : LocalSlotBase{id}, value(init()) {}
    T value;
  };

 public:
  local()
    requires std::default_initializable<T>
      : init_([] { return T(); }) {}
  // Each greenlet's value is made by init() on its first access (in that greenlet).
  explicit local(std::function<T()> init) : init_(std::move(init)) {
    if (!init_) throw std::invalid_argument("fiberio::local: empty initializer");
  }
  local(const local&) = delete;
  local& operator=(const local&) = delete;
  ~local() {
    // A static local outlives its thread's hub and fibers: their values were freed with them.
    if (!detail::Hub::get()) return;
    auto& locals = detail::fiber_state().locals;
    if (find(locals)) locals.erase(this);
  }

  // The calling greenlet's value, created on first access.
  T& get() const {
    detail::Hub::current();  // so ~local() can tell whether the fibers (and their values) still exist
    auto& st = detail::fiber_state();
    if (Slot* s = find(st.locals)) return s->value;
    // Armed before the value exists: arming in a finishing greenlet frees its locals at once.
    detail::arm_local_cleanup(st);
    auto slot = std::make_shared<Slot>(id_, init_);
    T& v = slot->value;
    // Through the base: the map's void* must point at a LocalSlotBase for find() to read it.
    st.locals[this] = std::shared_ptr<detail::LocalSlotBase>(std::move(slot));
    return v;
  }
  T& operator*() const { return get(); }
  T* operator->() const { return &get(); }

  // Whether the calling greenlet has a value yet.
  bool has_value() const { return find(detail::fiber_state().locals) != nullptr; }
  // Drops the calling greenlet's value; the next access makes a fresh one.
  void reset() const {
    auto& locals = detail::fiber_state().locals;
    if (find(locals)) {
      // Out of the map before T's destructor runs, in case it touches this local again.
      auto keep = std::move(locals[this]);
      locals.erase(this);
    }
  }

 private:
  using Map = decltype(detail::FiberState::locals);
  Slot* find(Map& locals) const {
    auto it = locals.find(this);
    if (it == locals.end() || !it->second) return nullptr;
    auto* base = static_cast<detail::LocalSlotBase*>(it->second.get());
    return base->owner == id_ ? static_cast<Slot*>(base) : nullptr;
  }

  std::uint64_t id_ = detail::next_local_id();
  std::function<T()> init_;
};

}  // namespace fiberio
