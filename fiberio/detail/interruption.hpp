// Catching an interruption where it cannot be acted on, and handing it back.
//
// An interruption is a kill (GreenletExit), a LoopExit, or a fired Timeout guard of the running fiber.
// Code that must not let one escape (a destructor, a libc shim returning to C, a wait whose job still
// writes into the caller's memory) catches it, and re-arms it: the fiber's next suspension point then
// delivers it again. Re-arming goes through the fiber's own state (FiberState::interrupt and the
// Timeout guard list), never by writing that state directly, so the hub's "armed" count stays right.
#pragma once
#include <exception>

namespace fiberio {
class Timeout;
}

namespace fiberio::detail {

class Interruption {
 public:
  // Call from a catch block. Remembers the current exception if it is an interruption (a first kill
  // wins over later ones); rethrows Boost.Context's forced unwind. Returns false for other exceptions.
  bool take_current();
  // Makes what was taken pending again on the running fiber (delivered at its next suspension point).
  void rearm() noexcept;
  explicit operator bool() const noexcept { return kill_ || timeout_; }

 private:
  std::exception_ptr kill_;
  const Timeout* timeout_ = nullptr;
};

// In a catch block: re-arms the current exception if it is an interruption (see above), so that it
// is delivered at the fiber's next suspension point. Other exceptions are dropped. For destructors.
inline void defer_current_interruption() {
  Interruption i;
  if (i.take_current()) i.rearm();
}

}  // namespace fiberio::detail
