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
#include "watchdog.hpp"

using namespace std::chrono_literals;
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

namespace {
// One frame much larger than a page, its lowest bytes written first, compiled WITHOUT stack-clash
// probes (as users' code on Debian is by default): it can land past a guard of one page.
[[gnu::noinline, gnu::optimize("no-stack-clash-protection")]] int big_frame() {
  volatile char frame[24 * 1024];
  for (int i = 0; i < 256; ++i) frame[i] = 0x77;
  return frame[0];
}

// Uses the stack in 1 KiB frames down to `floor`, then calls big_frame().
[[gnu::noinline]] int descend(const char* floor) {
  volatile char pad[1024];
  pad[0] = 1;
  if (reinterpret_cast<const volatile char*>(&pad[0]) - floor > 3 * 1024) return descend(floor) + pad[0];
  return big_frame();
}
}  // namespace

// A frame larger than the guard below a fiber's stack used to jump it: the overflowing fiber wrote
// 256 bytes into its neighbour's stack and the program went on (exit 0, no message). The guard region
// is 64 KiB now: the same overflow dies with "fiber stack overflow".
TEST(StackOverflow, LargeFrameCannotJumpTheGuardIntoANeighbour) {
  auto res = run_child([] {
    constexpr std::size_t kMark = 40 * 1024;
    bool intact = true;
    // The neighbour: allocated first, so its stack sits right below the next one's guard. Its
    // frames near its top hold a marked buffer.
    auto neighbour = fiberio::spawn([&intact] {
      volatile char mark[kMark];
      for (std::size_t i = 0; i < kMark; ++i) mark[i] = 0x11;
      fiberio::sleep(100ms);
      for (std::size_t i = 0; i < kMark; ++i)
        if (mark[i] != 0x11) intact = false;
    });
    auto overflowing = fiberio::spawn([] {
      volatile char top = 0;
      const char* floor = const_cast<const char*>(&top) - fiberio::stack_options().size;
      return descend(floor) + top;
    });
    fiberio::sleep(10ms);
    neighbour.join();
    (void)overflowing.join(1s);
    std::printf("neighbour %s\n", intact ? "intact" : "overwritten");
    return 0;
  });
  EXPECT_TRUE(WIFSIGNALED(res.status)) << res.describe();
  EXPECT_NE(res.err.find("fiber stack overflow"), std::string::npos) << res.describe();
}

// After a burst of more live fibers than the guard budget, the stacks of the burst are all free; a
// later fiber must get a guarded one. Before, the free list was one LIFO: the last fiber of the burst
// to finish (unguarded, beyond the budget) gave the next fiber its stack, and that fiber's overflow
// ran into its neighbour with no message (the guard budget is process-wide, so any program that once
// had a burst of 16,384 fibers lost its guards for good).
TEST(StackOverflow, AfterABurstBeyondTheGuardBudgetNewFibersGetAGuardedStack) {
  auto res = run_child([] {
    auto o = fiberio::stack_options();
    o.guard_budget = 32;  // two slabs
    fiberio::set_stack_options(o);
    fiberio::Event go;
    std::vector<fiberio::Greenlet<void>> burst;
    for (int i = 0; i < 128; ++i) burst.push_back(fiberio::spawn([&go] { go.wait(); }));
    fiberio::yield();
    go.set();
    fiberio::joinall(burst);  // the last to finish: beyond the budget
    auto g = fiberio::spawn([] { return recurse(0); });
    return g.get() == 42 ? 0 : 1;
  });
  EXPECT_FALSE(res.timed_out);
  EXPECT_TRUE(WIFSIGNALED(res.status)) << res.describe();
  EXPECT_NE(res.err.find("fiber stack overflow"), std::string::npos) << res.describe();
}
