// Leak checks for tests: open fds (/proc/self/fd) and live greenlets, before vs after.
#pragma once
#include <dirent.h>
#include <sys/resource.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstddef>

#include <fiberio/fiberio.hpp>

namespace fiberio_test {

inline std::size_t count_fds() {
  std::size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d)) ++n;
    ::closedir(d);
  }
  return n;
}

// Raises this process's soft RLIMIT_NOFILE to at least `want` fds (up to the hard limit); false if it
// cannot reach `want` (the test should GTEST_SKIP).
inline bool ensure_fd_limit(rlim_t want) {
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < want) {
    rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, want + 400);
    ::setrlimit(RLIMIT_NOFILE, &rl);
    ::getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur >= want;
}

// Records fds and greenlets at construction; check() fails the test if either grew.
class LeakCheck {
 public:
  // live_greenlets() first: it creates the hub (epoll + eventfd) if this is the first use.
  LeakCheck() : greenlets_(fiberio::live_greenlets()), fds_(count_fds()) {}
  void check() {
    using namespace std::chrono_literals;
    // Let greenlets that are finishing leave the registry.
    for (int i = 0; i < 40 && fiberio::live_greenlets() > greenlets_; ++i) fiberio::sleep(5ms);
    EXPECT_EQ(count_fds(), fds_) << "fd leak";
    EXPECT_EQ(fiberio::live_greenlets(), greenlets_) << "greenlet leak";
  }

 private:
  std::size_t greenlets_, fds_;
};

}  // namespace fiberio_test
