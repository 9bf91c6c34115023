// Helpers shared by the test_patched_* tests: loopback sockets, leak checks, child processes (real
// servers the tests start and always stop), temp dirs, and a ticker that measures how long the hub
// stalled.
#pragma once
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <fiberio/fiberio.hpp>
#include <gtest/gtest.h>
#include <fiberio/patched.hpp>

#include "leak_check.hpp"
#include "process.hpp"
#include "ports.hpp"

extern char** environ;

namespace fiberio_test {

using namespace std::chrono_literals;
using fiberio::Clock;

inline double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// A TCP listener on 127.0.0.1 with a kernel-chosen port. Made with the patched socket() (so inside a
// fiber it is shim-owned), left blocking as the user sees it.
struct Listener {
  int fd = -1;
  int port = 0;
  explicit Listener(int backlog = 512) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error("socket");
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, backlog) != 0)
      throw std::runtime_error("bind/listen");
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~Listener() {
    if (fd >= 0) ::close(fd);
  }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
};

// A blocking connect() to 127.0.0.1:port; -1 on failure (errno set).
inline int connect_to(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

// Waits (cooperatively) until something accepts connections on 127.0.0.1:port.
inline bool wait_for_port(int port, std::chrono::milliseconds budget) {
  auto give_up = Clock::now() + budget;
  while (Clock::now() < give_up) {
    int fd = connect_to(port);
    if (fd >= 0) {
      ::close(fd);
      return true;
    }
    fiberio::sleep(20ms);
  }
  return false;
}

// A real server run by a test, stopped when the object goes away; it waits with the real usleep,
// never through the shims these tests exercise.
class Child : public Process {
 public:
  Child(std::vector<std::string> argv, const std::string& log, std::vector<std::string> extra_env = {})
      : Process(std::move(argv), log, std::move(extra_env), [] { fiberio::patched::original::usleep(10000); }) {}
};

// Several greenlets ticking every `period` and recording the longest gap between their ticks: a gap
// far above the period means the hub was blocked.
class Ticker {
 public:
  explicit Ticker(std::chrono::milliseconds period = 10ms) {
    g_ = fiberio::spawn([this, period] {
      auto last = Clock::now();
      while (!stop_) {
        fiberio::sleep(period);
        auto now = Clock::now();
        max_gap_ = std::max(max_gap_, now - last);
        last = now;
        ++ticks_;
      }
    });
  }
  ~Ticker() { stop(); }
  void stop() {
    stop_ = true;
    g_.join();
  }
  double max_gap_ms() const { return std::chrono::duration<double, std::milli>(max_gap_).count(); }
  int ticks() const { return ticks_; }
  void reset() { max_gap_ = {}; ticks_ = 0; }

 private:
  bool stop_ = false;
  int ticks_ = 0;
  fiberio::Duration max_gap_{};
  fiberio::Greenlet<void> g_;
};

}  // namespace fiberio_test
