// signal_handler: run a function in a fresh greenlet when a POSIX signal arrives (gevent.signal_handler).
//
//   auto h = fiberio::signal_handler(SIGINT, [&] { server.stop(); });
//   ...                      // h.cancel() or h's destructor unregisters
//
// The C-level handler only writes the signal number to a nonblocking self-pipe owned by each hub
// that registered a handler (async-signal-safe); a greenlet on that hub reads the pipe and spawns
// each matching handler in a new greenlet named "signal_handler(SIGINT)". So handlers run on the
// thread that registered them, may block, and see ordinary fiberio semantics. A burst of one signal
// may coalesce into one call (as POSIX signals do). When the last handler for a signal number is
// cancelled (in the whole process), its previous disposition is restored. When the last handler of a
// hub is cancelled its pipe is closed and the reader greenlet exits at the hub's next switch.
// A fork()ed child does not receive signals through the parent's pipes: registering a handler in the
// child gives it its own.
#pragma once
#include <cstdint>
#include <functional>

namespace fiberio {

class SignalHandle {
 public:
  SignalHandle() noexcept = default;
  SignalHandle(SignalHandle&& o) noexcept : id_(o.id_) { o.id_ = 0; }
  SignalHandle& operator=(SignalHandle&& o) noexcept;
  SignalHandle(const SignalHandle&) = delete;
  SignalHandle& operator=(const SignalHandle&) = delete;
  ~SignalHandle() { cancel(); }

  // Unregisters the handler; idempotent. Call it on the thread that registered it.
  void cancel() noexcept;
  bool active() const noexcept { return id_ != 0; }

 private:
  friend SignalHandle signal_handler(int, std::function<void()>);
  explicit SignalHandle(std::uint64_t id) noexcept : id_(id) {}
  std::uint64_t id_ = 0;
};

// Registers f to run (in a new greenlet on the calling thread's hub) each time signum arrives.
// Throws std::invalid_argument for signals that cannot be caught (SIGKILL, SIGSTOP, out of range).
[[nodiscard]] SignalHandle signal_handler(int signum, std::function<void()> f);

}  // namespace fiberio
