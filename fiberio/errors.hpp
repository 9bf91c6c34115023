// The exceptions fiberio throws. Names follow gevent.
#pragma once
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>

namespace fiberio {

class Timeout;
class GreenletBase;

// A blocking call did not finish in time: get(timeout), a socket timeout, or a Timeout guard.
class TimeoutError : public std::runtime_error {
 public:
  explicit TimeoutError(const std::string& what, const Timeout* source = nullptr)
      : std::runtime_error(what), source_(source) {}
  // True if this error was raised by that Timeout guard (as gevent's `except Timeout as t: if t is mine`).
  bool is(const Timeout& t) const noexcept { return source_ == &t; }

 private:
  const Timeout* source_;
};

// Delivered into a greenlet by kill(). Deliberately NOT a std::exception (as gevent's GreenletExit is a
// BaseException): `catch (const std::exception&)` in user code does not swallow a kill.
class GreenletExit {
 public:
  const char* what() const noexcept { return "fiberio::GreenletExit: greenlet killed"; }
};

// The main fiber blocked with nothing left that could ever wake it.
class LoopExit : public std::runtime_error {
 public:
  explicit LoopExit(const std::string& what) : std::runtime_error(what) {}
};

// Two fibers used one object in a way that would interleave, e.g. both reading one socket.
class ConcurrentObjectUseError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The fd a fiber was waiting on was closed by another fiber (Go: "use of closed network connection").
class ClosedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// ---- reporting (gevent's hub.handle_error) ----
// Replaces this thread's handler for exceptions escaping greenlets and link callbacks (default, or
// after nullptr: one line on stderr). The handler must not throw; if it does, one line says so.
void set_error_handler(std::function<void(const GreenletBase&, std::exception_ptr)> handler);
// "std::runtime_error: boom" for an exception_ptr (what the default error handler prints).
std::string describe_exception(std::exception_ptr e);

namespace detail {
// Hands e, which escaped greenlet g (or a link callback run by it), to this thread's error handler.
void report_error(const GreenletBase& g, std::exception_ptr e) noexcept;
}  // namespace detail

}  // namespace fiberio
