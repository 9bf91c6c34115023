// Fiber stacks: an overflow dies with a message, an ordinary crash is not called one.
#include <fiberio/fiberio.hpp>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "support/child.hpp"
#include "support/pipe.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;
using fiberio::Clock;
using fiberio_test::ChildResult;
using fiberio_test::has_line;
using fiberio_test::Pipe;
using fiberio_test::run_child;

namespace {
[[gnu::noinline]] int recurse(int depth) {
  volatile char frame[256];
  frame[0] = static_cast<char>(depth);
  return depth > 1'000'000'000 ? frame[0] : recurse(depth + 1) + frame[0];
}
}  // namespace

TEST(StackOverflow, DeepRecursionDiesWithMessage) {
  auto res = run_child([] {
    auto g = fiberio::spawn([] { return recurse(0); });
    return g.get() == 42 ? 0 : 1;
  });
  EXPECT_FALSE(res.timed_out);
  EXPECT_TRUE(WIFSIGNALED(res.status)) << res.describe();
  if (WIFSIGNALED(res.status)) {
    EXPECT_EQ(WTERMSIG(res.status), SIGSEGV);
  }
  EXPECT_NE(res.err.find("fiber stack overflow"), std::string::npos) << res.describe();
}

TEST(StackOverflow, OrdinarySegfaultIsNotReportedAsOverflow) {
  auto res = run_child([] {
    fiberio::spawn([] {
      static volatile std::uintptr_t bad_address = 16;  // opaque to the compiler
      *reinterpret_cast<volatile int*>(bad_address) = 1;
    }).join();
    return 0;
  });
  EXPECT_TRUE(WIFSIGNALED(res.status)) << res.describe();
  EXPECT_EQ(res.err.find("stack overflow"), std::string::npos) << res.describe();
}
