// fork(): the child gets a fresh hub with the same registrations; neither steals the other's events.
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
using fiberio_test::Pipe;
using fiberio_test::run_child;

TEST(Fork, ChildKeepsUsingFiberioAndParentKeepsItsEvents) {
  Pipe to_parent, to_child;
  // Register both read ends with this hub before forking, so both processes inherit the registrations.
  EXPECT_THROW(fiberio::wait_read(to_parent.r, 1ms), fiberio::TimeoutError);
  EXPECT_THROW(fiberio::wait_read(to_child.r, 1ms), fiberio::TimeoutError);
  auto ticker = fiberio::spawn([] { fiberio::sleep(3600s); });  // a parent greenlet, alive across fork
  fiberio::yield();

  int parent_w = to_parent.w, child_r = to_child.r;
  std::fflush(nullptr);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int rc = 0;
    try {
      // sleep and spawn still work in the child
      auto g = fiberio::spawn([] {
        fiberio::sleep(5ms);
        return 7;
      });
      if (g.get() != 7) rc = 10;
      // the child waits on its own pipe end; the parent writes to it
      fiberio::wait_read(child_r, 10s);
      char c;
      if (::read(child_r, &c, 1) != 1 || c != 'p') rc = 11;
      // and answers
      if (::write(parent_w, "c", 1) != 1) rc = 12;
    } catch (...) {
      rc = 13;
    }
    std::fflush(nullptr);
    ::_exit(rc);
  }
  // Parent: both sides must see their own events.
  ASSERT_EQ(::write(to_child.w, "p", 1), 1);
  bool parent_woke = true;
  try {
    fiberio::wait_read(to_parent.r, 10s);
  } catch (const fiberio::TimeoutError&) {
    parent_woke = false;
  }
  EXPECT_TRUE(parent_woke);
  char c = 0;
  EXPECT_EQ(::read(to_parent.r, &c, 1), 1);
  EXPECT_EQ(c, 'c');
  int status = 0;
  for (int i = 0; i < 10000 && ::waitpid(pid, &status, WNOHANG) == 0; ++i) fiberio::sleep(1ms);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  ticker.kill();
}

TEST(Fork, ChildDoesNotStealParentsWakeups) {
  // The child keeps polling while the parent's registered fd becomes ready. Were the epoll instance
  // shared, the child's poll could consume the parent's (edge-triggered) event.
  Pipe p;
  EXPECT_THROW(fiberio::wait_read(p.r, 1ms), fiberio::TimeoutError);
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    try {
      for (int i = 0; i < 200; ++i) fiberio::sleep(1ms);
    } catch (...) {
    }
    ::_exit(0);
  }
  fiberio::sleep(20ms);
  ASSERT_EQ(::write(p.w, "x", 1), 1);
  EXPECT_NO_THROW(fiberio::wait_read(p.r, 2s));
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

// A process that forks before it ever made a hub: the child's closes must still be recorded. The fork
// handler used to be registered with the first hub, so such a child kept its parent's pid, took
// itself for a vfork child, and skipped recording closes: an fd number closed and reused kept the
// closed fd's state, and a recv on the new fd parked where the poller never looked (found as a hung
// RPC call in tests/test_rpc.cpp, whose server runs in a child forked first thing). Run alone (as
// ctest runs it) this process has no hub yet when it forks.
TEST(Fork, ChildForkedBeforeAnyHubRecordsClosesOfReusedFds) {
  auto res = fiberio_test::run_child([] {
    using namespace std::chrono_literals;
    auto [a, b] = fiberio::Socket::pair();
    int number = a.fd();
    a.set_timeout(20ms);
    char buf[8];
    try {
      a.recv(std::span<char>(buf));  // registers the fd with the hub, then times out
    } catch (const fiberio::TimeoutError&) {
    }
    a.close();
    b.close();
    auto [c, d] = fiberio::Socket::pair();
    if (c.fd() != number && d.fd() == number) std::swap(c, d);
    if (c.fd() != number) return 3;  // the number was not reused: nothing to check
    auto writer = fiberio::spawn([&d] {
      fiberio::sleep(20ms);
      d.sendall("x");
    });
    c.set_timeout(3s);
    try {
      if (c.recv(std::span<char>(buf)) != 1) return 4;
    } catch (const fiberio::TimeoutError&) {
      return 5;  // parked on the closed fd's state
    }
    writer.join();
    return 0;
  });
  ASSERT_FALSE(res.timed_out) << res.describe();
  ASSERT_TRUE(WIFEXITED(res.status)) << res.describe();
  EXPECT_NE(WEXITSTATUS(res.status), 3) << "the fd number was not reused; the test checks nothing";
  EXPECT_EQ(WEXITSTATUS(res.status), 0) << res.describe();
}
