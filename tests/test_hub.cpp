// The hub: LoopExit, fd waits, fork, program/thread exit with blocked fibers, stack overflow.
#include <fiberio/fiberio.hpp>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <string>
#include <thread>
#include <vector>

#include "support/leak_check.hpp"
#include "support/child.hpp"
#include "support/pipe.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;
using fiberio::Clock;

namespace {


using fiberio_test::Pipe;

// Writes a marker line to stdout (the child's pipe to the test) when destroyed.
struct Marker {
  const char* text;
  ~Marker() {
    std::string line = std::string(text) + "\n";
    [[maybe_unused]] auto r = ::write(1, line.data(), line.size());
  }
};

using fiberio_test::ChildResult;
using fiberio_test::has_line;
using fiberio_test::run_child;

// Spawns greenlets blocked every way the core offers; each prints its marker when unwound.
void spawn_blocked_greenlets(Pipe& never_written, bool with_unstarted = true) {
  static fiberio::Event* never_set = new fiberio::Event;  // leaked on purpose: outlives the greenlets
  fiberio::spawn([] {
    Marker m{"event"};
    never_set->wait();
  });
  fiberio::spawn([] {
    Marker m{"sleep"};
    fiberio::sleep(3600s);
  });
  fiberio::spawn([fd = never_written.r] {
    Marker m{"fd"};
    fiberio::wait_read(fd);
  });
  fiberio::spawn([] {
    Marker m{"asyncresult"};
    fiberio::AsyncResult<int> r;
    r.get();
  });
  auto forever = fiberio::spawn([] {
    Marker m{"joined"};
    fiberio::sleep(3600s);
  });
  fiberio::spawn([forever] {
    Marker m{"join"};
    forever.join();
  });
  fiberio::spawn([] {
    Marker m{"yield-loop"};
    for (;;) fiberio::yield();
  });
  fiberio::spawn([] {
    Marker m{"cleanup"};
    try {
      fiberio::sleep(3600s);
    } catch (...) {
      fiberio::sleep(5ms);  // cleanup that blocks briefly while unwinding
      throw;
    }
  });
  fiberio::yield();  // all of them start and block
  // Never started (the caller exits before it runs): killed before it runs, its captures are
  // destroyed all the same.
  if (with_unstarted) fiberio::spawn([m = std::shared_ptr<Marker>(new Marker{"never-started"})] { std::abort(); });
}

const char* const kBlockedMarkers[] = {"event", "sleep",   "fd",          "asyncresult", "joined",
                                       "join",  "cleanup", "yield-loop", "never-started"};

}  // namespace

// ---- LoopExit ----

TEST(LoopExit, MainWaitingOnLocalWaitThatNothingCanWake) {
  auto before = fiberio::live_greenlets();
  // a joins b, b joins a: only this hub's fibers could ever wake them, and none will.
  fiberio::Greenlet<void> a, b;
  a = fiberio::spawn([&] { b.join(); });
  b = fiberio::spawn([&] { a.join(); });
  auto t0 = Clock::now();
  try {
    a.get();
    FAIL() << "get() returned";
  } catch (const fiberio::LoopExit& e) {
    EXPECT_NE(std::string(e.what()).find("block forever"), std::string::npos) << e.what();
  }
  EXPECT_LT(Clock::now() - t0, 5s);
  EXPECT_FALSE(a.dead());
  fiberio::killall({a, b});
  EXPECT_TRUE(a.killed());
  EXPECT_TRUE(b.killed());
  EXPECT_EQ(fiberio::live_greenlets(), before);
  // The hub is usable afterwards.
  EXPECT_EQ(fiberio::spawn([] { fiberio::sleep(1ms); return 3; }).get(), 3);
}

TEST(LoopExit, AlsoOnAStdThreadsHub) {
  bool raised = false;
  std::thread t([&] {
    fiberio::Greenlet<void> a;
    a = fiberio::spawn([&] { a.join(); });  // joins itself: never finishes
    try {
      a.join();
    } catch (const fiberio::LoopExit&) {
      raised = true;
    }
    a.kill();
  });
  t.join();
  EXPECT_TRUE(raised);
}

TEST(LoopExit, NotRaisedWhileATimerIsPending) {
  auto sleeper = fiberio::spawn([] { fiberio::sleep(30ms); });
  fiberio::Greenlet<void> stuck;
  stuck = fiberio::spawn([&] { sleeper.join(); });
  EXPECT_NO_THROW(stuck.get());
}

TEST(LoopExit, NotRaisedWhenAnotherThreadWillSetTheEvent) {
  fiberio::Event ev;
  auto waiter = fiberio::spawn([&] { return ev.wait(); });
  std::thread t([&] {
    std::this_thread::sleep_for(50ms);
    ev.set();
  });
  EXPECT_TRUE(waiter.get());  // main: local join; waiter: external wait
  t.join();

  fiberio::Event direct;
  std::thread t2([&] {
    std::this_thread::sleep_for(50ms);
    direct.set();
  });
  EXPECT_TRUE(direct.wait());  // main itself waits for the other thread
  t2.join();
}

TEST(LoopExit, NotRaisedWhileWaitingOnAnFd) {
  Pipe p;
  std::thread writer([&] {
    std::this_thread::sleep_for(30ms);
    [[maybe_unused]] auto r = ::write(p.w, "x", 1);
  });
  auto reader = fiberio::spawn([&] { fiberio::wait_read(p.r); });
  EXPECT_NO_THROW(reader.get());
  writer.join();
}

// ---- fd waits ----

// ---- exit with fibers still blocked ----

TEST(ProgramExit, MainReturnsWithBlockedGreenlets) {
  auto res = run_child([] {
    static Pipe* p = new Pipe;  // the fd-waiter's pipe stays open until exit
    spawn_blocked_greenlets(*p);
    return 0;  // as main() returning: exit() runs with every greenlet still blocked
  });
  ASSERT_TRUE(res.exited_ok()) << res.describe();
  for (const char* m : kBlockedMarkers) EXPECT_TRUE(has_line(res.out, m)) << m << "\n" << res.describe();
  EXPECT_EQ(res.err, "");
}

TEST(ProgramExit, ExitCalledFromAGreenletDoesNotHang) {
  // Boost.Fiber cannot shut down from inside a fiber and exit() hides its status from thread-exit
  // handlers: the others are unwound, then the process ends with status 1 and says why.
  auto res = run_child([] {
    static Pipe* p = new Pipe;
    spawn_blocked_greenlets(*p, false);
    fiberio::spawn([] { std::exit(0); });
    fiberio::sleep(3600s);
    return 2;
  });
  ASSERT_FALSE(res.timed_out) << res.describe();
  ASSERT_TRUE(WIFEXITED(res.status)) << res.describe();
  EXPECT_EQ(WEXITSTATUS(res.status), 1);
  EXPECT_NE(res.err.find("exit() called from inside a greenlet"), std::string::npos) << res.describe();
  for (const char* m : kBlockedMarkers) {
    if (std::string(m) == "never-started") continue;  // it ran (and was unwound) before the exit
    EXPECT_TRUE(has_line(res.out, m)) << m << "\n" << res.describe();
  }
}

TEST(ProgramExit, StdThreadReturnsWithBlockedGreenlets) {
  auto res = run_child([] {
    std::thread t([] {
      static Pipe* p = new Pipe;
      spawn_blocked_greenlets(*p);
      // returns with all of them blocked: the thread's exit unwinds them
    });
    t.join();
    [[maybe_unused]] auto r = ::write(1, "joined-thread\n", 14);
    return 0;
  });
  ASSERT_TRUE(res.exited_ok()) << res.describe();
  EXPECT_TRUE(has_line(res.out, "joined-thread")) << res.describe();
  for (const char* m : kBlockedMarkers) EXPECT_TRUE(has_line(res.out, m)) << m << "\n" << res.describe();
  // Every marker came before the thread was joined.
  EXPECT_GT(res.out.find("joined-thread"), res.out.find("never-started"));
}

TEST(ProgramExit, MainReturnsWhileGreenletsAreRunnable) {
  auto res = run_child([] {
    for (int i = 0; i < 10; ++i)
      fiberio::spawn([] {
        Marker m{"busy"};
        for (;;) fiberio::sleep(0ms);
      });
    fiberio::sleep(5ms);
    return 0;
  });
  ASSERT_TRUE(res.exited_ok()) << res.describe();
  std::size_t n = 0;
  for (std::size_t pos = 0; (pos = res.out.find("busy\n", pos)) != std::string::npos; pos += 5) ++n;
  EXPECT_EQ(n, 10u);
}

TEST(ProgramExit, GreenletIgnoringItsKillEndsTheProcessInsteadOfHanging) {
  auto t0 = Clock::now();
  auto res = run_child([] {
    fiberio::spawn([] {
      for (;;) {
        try {
          fiberio::sleep(3600s);
        } catch (const fiberio::GreenletExit&) {
          // swallowed: keeps running
        }
      }
    });
    fiberio::yield();
    return 0;
  });
  ASSERT_FALSE(res.timed_out) << res.describe();
  EXPECT_LT(Clock::now() - t0, 10s);
  ASSERT_TRUE(WIFEXITED(res.status)) << res.describe();
  EXPECT_EQ(WEXITSTATUS(res.status), 1);
  EXPECT_NE(res.err.find("1 greenlet(s) did not unwind"), std::string::npos) << res.describe();
}

namespace {
// A greenlet-local value whose destructor needs a working hub.
struct NeedsHubOnDestroy {
  ~NeedsHubOnDestroy() {
    int v = fiberio::spawn([] {
      fiberio::sleep(1ms);
      return 7;
    }).get();
    std::string line = "local-destroyed " + std::to_string(v) + "\n";
    [[maybe_unused]] auto r = ::write(1, line.data(), line.size());
  }
};
}  // namespace

TEST(ProgramExit, MainFiberLocalsDieWhileTheHubStillWorks) {
  auto res = run_child([] {
    static fiberio::local<NeedsHubOnDestroy> value;
    std::thread t([] { (void)*value; });  // the thread's main fiber gets a value, then the thread ends
    t.join();
    return 0;
  });
  ASSERT_TRUE(res.exited_ok()) << res.describe();
  EXPECT_TRUE(has_line(res.out, "local-destroyed 7")) << res.describe();
}

// ---- fork ----

TEST(Hub, ErrorHandlerIsPerThread) {
  int here = 0;
  fiberio::set_error_handler([&](const fiberio::GreenletBase&, std::exception_ptr) { ++here; });
  std::string other_text;
  std::thread t([&] {
    // This thread's hub has the default handler; capture via its own handler to check isolation.
    int there = 0;
    fiberio::set_error_handler([&](const fiberio::GreenletBase&, std::exception_ptr) { ++there; });
    fiberio::spawn([] { throw std::runtime_error("there"); }).join();
    other_text = std::to_string(there);
  });
  t.join();
  fiberio::spawn([] { throw std::runtime_error("here"); }).join();
  fiberio::set_error_handler(nullptr);
  EXPECT_EQ(here, 1);
  EXPECT_EQ(other_text, "1");
}

TEST(Hub, DescribeException) {
  EXPECT_EQ(fiberio::describe_exception(std::make_exception_ptr(std::runtime_error("x"))), "std::runtime_error: x");
  EXPECT_EQ(fiberio::describe_exception(std::make_exception_ptr(fiberio::GreenletExit{})),
            "fiberio::GreenletExit: greenlet killed");
  EXPECT_EQ(fiberio::describe_exception(std::make_exception_ptr(42)), "int");
  EXPECT_EQ(fiberio::describe_exception(nullptr), "no exception");
}

// A lone greenlet that yields in a loop (a CPU-bound computation giving the hub its turns) must not
// starve fd waiters, nor the signal handlers that read a pipe: the hub polls every so many picks.
// Before the fix, a yielder that was the only ready fiber found the ready queue empty on every pick
// (Boost queues a yielding fiber after the switch), which reset the count, so fds were never polled:
// a pipe written 50 ms in was seen only when the yielder stopped, and primes' Ctrl+C waited for it.
TEST(Hub, ALoneGreenletYieldingInALoopDoesNotStarveFdWaiters) {
  FIBERIO_WATCHDOG(20);
  for (bool main_yields : {false, true}) {
    SCOPED_TRACE(main_yields ? "the main fiber yields" : "a greenlet yields, main joins it");
    Pipe p;
    bool woke = false;
    auto waiter = fiberio::spawn([&] {
      fiberio::wait_read(p.r);
      woke = true;
    });
    fiberio::yield();  // the waiter parks on the pipe
    auto t0 = Clock::now();
    std::thread writer([&] {
      std::this_thread::sleep_for(50ms);
      [[maybe_unused]] auto n = ::write(p.w, "x", 1);
    });
    auto spin = [&] {
      while (!woke && Clock::now() - t0 < 3s) fiberio::yield();
    };
    if (main_yields) spin();
    else fiberio::spawn(spin).join();
    auto took = Clock::now() - t0;
    writer.join();
    EXPECT_TRUE(woke);
    EXPECT_LT(took, 1s);
    waiter.kill();
  }
}

// A wake-up from another thread must not be lost to the hub's busy poll. While fibers stay ready, the
// dispatcher polls fds from pick_next; that poll also consumed the eventfd notice of a fiber another
// thread had just woken, which sat in Boost's remote-ready queue (spliced only before pick_next), so
// the hub went to sleep until its next timer: here the producers' 5 s put timeouts, a round that
// takes milliseconds took seconds. Found by tests of select across threads (issue 12).
TEST(Hub, AWakeUpFromAnotherThreadIsNotLostToTheBusyPoll) {
  FIBERIO_WATCHDOG(120);
  using namespace std::chrono_literals;
  int slow_rounds = 0;
  auto until = std::chrono::steady_clock::now() + 40s;
  for (int round = 0; round < 300 && std::chrono::steady_clock::now() < until; ++round) {
    constexpr int kItems = 2000;
    fiberio::Queue<int> q(2);
    std::vector<std::thread> consumers;
    for (int t = 0; t < 2; ++t)
      consumers.emplace_back([&] {
        try {
          while (q.get(5s) >= 0) {
          }
        } catch (const fiberio::Empty&) {
        }
      });
    auto t0 = std::chrono::steady_clock::now();
    auto even = fiberio::spawn([&] { for (int i = 0; i < kItems; i += 2) q.put(i, 5s); });
    auto odd = fiberio::spawn([&] { for (int i = 1; i < kItems; i += 2) q.put(i, 5s); });
    even.join();
    odd.join();
    q.put(-1, 5s);
    q.put(-1, 5s);
    for (auto& t : consumers) t.join();
    if (std::chrono::steady_clock::now() - t0 > 1s) ++slow_rounds;
    ASSERT_TRUE(even.successful() && odd.successful()) << "round " << round << ": a put timed out";
  }
  EXPECT_EQ(slow_rounds, 0) << "rounds that stalled for a second or more (a lost cross-thread wake-up)";
}
