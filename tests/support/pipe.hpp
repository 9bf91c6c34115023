// A nonblocking pipe closed through fiberio (so waits on it are evicted), for fd-wait tests.
#pragma once
#include <fcntl.h>
#include <unistd.h>

#include <stdexcept>

#include <fiberio/fiberio.hpp>

namespace fiberio_test {

struct Pipe {
  int r = -1, w = -1;
  explicit Pipe(int flags = O_NONBLOCK | O_CLOEXEC) {
    int p[2];
    if (::pipe2(p, flags) != 0) throw std::runtime_error("pipe2");
    r = p[0];
    w = p[1];
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  ~Pipe() {
    if (r >= 0) fiberio::close(r);
    if (w >= 0) fiberio::close(w);
  }
};

}  // namespace fiberio_test
