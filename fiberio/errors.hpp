// The exceptions fiberio throws. Names follow gevent.
#pragma once
#include <stdexcept>
#include <string>

namespace fiberio {

class Timeout;

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

}  // namespace fiberio
