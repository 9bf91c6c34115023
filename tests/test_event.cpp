// Event and AsyncResult: between fibers, and set from other OS threads.
#include <fiberio/fiberio.hpp>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include "watchdog.hpp"

using namespace std::chrono_literals;
using fiberio::AsyncResult;
using fiberio::Clock;
using fiberio::Event;

TEST(Event, SetWaitClear) {
  Event ev;
  EXPECT_FALSE(ev.is_set());
  EXPECT_FALSE(ev.wait(10ms));
  ev.set();
  EXPECT_TRUE(ev.is_set());
  EXPECT_TRUE(ev.ready());
  EXPECT_TRUE(ev.wait());  // set: returns at once
  ev.clear();
  EXPECT_FALSE(ev.is_set());
  auto t0 = Clock::now();
  EXPECT_FALSE(ev.wait(20ms));
  EXPECT_GE(Clock::now() - t0, 20ms);
}

TEST(Event, WakesWaitingFiber) {
  Event ev;
  auto setter = fiberio::spawn([&] {
    fiberio::sleep(10ms);
    ev.set();
  });
  EXPECT_TRUE(ev.wait(5s));
  setter.join();
}

TEST(Event, ManyWaitersAllWake) {
  auto before = fiberio::live_greenlets();
  Event ev;
  int woke = 0;
  std::vector<fiberio::Greenlet<void>> gs;
  for (int i = 0; i < 200; ++i)
    gs.push_back(fiberio::spawn([&] {
      if (ev.wait()) ++woke;
    }));
  fiberio::yield();
  EXPECT_EQ(woke, 0);
  ev.set();
  fiberio::joinall(gs);
  EXPECT_EQ(woke, 200);
  EXPECT_EQ(fiberio::live_greenlets(), before);
}

TEST(Event, RawlinkRunsOnSet) {
  Event ev;
  int calls = 0;
  auto id = ev.rawlink([&] { ++calls; });
  auto gone = ev.rawlink([&] { calls += 100; });
  ev.unlink(gone);
  EXPECT_EQ(calls, 0);
  ev.set();
  EXPECT_EQ(calls, 1);
  ev.unlink(id);
  int late = 0;
  ev.rawlink([&] { ++late; });  // already set: runs at once
  EXPECT_EQ(late, 1);
}

TEST(EventThreads, StdThreadSetsEventMainFiberWaits) {
  Event ev;
  std::thread t([&] {
    std::this_thread::sleep_for(30ms);
    ev.set();
  });
  // Nothing on this hub could set it: only the other thread. No LoopExit, no hang.
  EXPECT_TRUE(ev.wait(10s));
  t.join();
}

TEST(EventThreads, StdThreadSetsEventGreenletWaits) {
  Event ev;
  auto g = fiberio::spawn([&] { return ev.wait(); });
  std::thread t([&] {
    std::this_thread::sleep_for(20ms);
    ev.set();
  });
  EXPECT_TRUE(g.get());  // main joins (a local wait) a greenlet that waits for another thread
  t.join();
}

TEST(EventThreads, ManyWaitersWokenFromAnotherThread) {
  Event ev;
  std::atomic<int> woke{0};
  std::vector<fiberio::Greenlet<void>> gs;
  for (int i = 0; i < 100; ++i)
    gs.push_back(fiberio::spawn([&] {
      if (ev.wait()) ++woke;
    }));
  std::thread t([&] {
    std::this_thread::sleep_for(10ms);
    ev.set();
  });
  fiberio::joinall(gs);
  t.join();
  EXPECT_EQ(woke.load(), 100);
}

TEST(EventThreads, WaitersOnSeveralHubs) {
  // Fibers on three threads wait for one Event set by a fourth thread.
  Event ev;
  std::atomic<int> woke{0};
  std::vector<std::thread> hubs;
  for (int t = 0; t < 3; ++t)
    hubs.emplace_back([&] {
      std::vector<fiberio::Greenlet<void>> gs;
      for (int i = 0; i < 10; ++i)
        gs.push_back(fiberio::spawn([&] {
          if (ev.wait(10s)) ++woke;
        }));
      fiberio::joinall(gs);
    });
  std::thread setter([&] {
    std::this_thread::sleep_for(30ms);
    ev.set();
  });
  for (auto& t : hubs) t.join();
  setter.join();
  EXPECT_EQ(woke.load(), 30);
}

TEST(EventThreads, PingPongBetweenHubsLosesNoWakeup) {
  // Two threads' fibers hand a token back and forth through two Events: a lost wake-up hangs.
  Event ping, pong;
  constexpr int kRounds = 2000;
  std::atomic<int> other_rounds{0};
  std::thread other([&] {
    for (int i = 0; i < kRounds; ++i) {
      if (!ping.wait(10s)) return;
      ping.clear();
      ++other_rounds;
      pong.set();
    }
  });
  int rounds = 0;
  for (int i = 0; i < kRounds; ++i) {
    ping.set();
    if (!pong.wait(10s)) break;
    pong.clear();
    ++rounds;
  }
  other.join();
  EXPECT_EQ(rounds, kRounds);
  EXPECT_EQ(other_rounds.load(), kRounds);
}

TEST(AsyncResult, SetBeforeAndAfterWait) {
  AsyncResult<int> r;
  EXPECT_FALSE(r.ready());
  auto g = fiberio::spawn([r]() mutable {
    fiberio::sleep(5ms);
    r.set(42);
  });
  EXPECT_EQ(r.get(), 42);
  EXPECT_TRUE(r.ready());
  EXPECT_TRUE(r.successful());
  EXPECT_EQ(r.get(), 42);  // a copy: any number of gets
  g.join();

  AsyncResult<void> v;
  v.set();
  EXPECT_NO_THROW(v.get());
}

TEST(AsyncResult, ExceptionRethrownWithTypeAndWhat) {
  AsyncResult<std::string> r;
  r.set_exception(std::make_exception_ptr(std::range_error("out of range: 3")));
  EXPECT_TRUE(r.ready());
  EXPECT_FALSE(r.successful());
  EXPECT_NE(r.exception(), nullptr);
  try {
    r.get();
    FAIL();
  } catch (const std::range_error& e) {
    EXPECT_STREQ(e.what(), "out of range: 3");
  }
}

TEST(AsyncResult, GetTimeout) {
  AsyncResult<int> r;
  EXPECT_THROW(r.get(15ms), fiberio::TimeoutError);
  EXPECT_FALSE(r.wait(5ms));
  EXPECT_FALSE(r.ready());
}

TEST(AsyncResult, SetFromStdThread) {
  AsyncResult<std::string> r;
  std::thread t([r]() mutable {
    std::this_thread::sleep_for(20ms);
    r.set("from thread");
  });
  EXPECT_EQ(r.get(10s), "from thread");
  t.join();

  AsyncResult<int> e;
  std::thread t2([e]() mutable {
    std::this_thread::sleep_for(10ms);
    e.set_exception(std::make_exception_ptr(std::overflow_error("too big")));
  });
  EXPECT_THROW(e.get(10s), std::overflow_error);
  t2.join();
}

TEST(AsyncResult, RawlinkRunsOnce) {
  AsyncResult<int> r;
  int calls = 0;
  r.rawlink([&] { ++calls; });
  r.set(1);
  EXPECT_EQ(calls, 1);
  r.rawlink([&] { ++calls; });
  EXPECT_EQ(calls, 2);
}

// gevent: a set() is never lost to a later clear(): every fiber waiting at the set() wakes with true.
TEST(Event, SetThenClearStillWakesEveryWaiter) {
  Event ev;
  int woke = 0;
  std::vector<fiberio::Greenlet<void>> gs;
  for (int i = 0; i < 1000; ++i)
    gs.push_back(fiberio::spawn([&] {
      if (ev.wait(5s)) ++woke;
    }));
  fiberio::sleep(5ms);  // all of them parked
  ev.set();
  ev.clear();
  fiberio::joinall(gs);
  EXPECT_EQ(woke, 1000);
  EXPECT_FALSE(ev.is_set());
}

TEST(Event, SetThenClearFromAnotherThreadStillWakesTheWaiter) {
  for (int round = 0; round < 8; ++round) {
    Event ev;
    std::atomic<bool> parked{false};
    std::thread setter([&] {
      while (!parked.load()) std::this_thread::yield();
      std::this_thread::sleep_for(1ms);
      ev.set();
      ev.clear();
    });
    parked = true;
    EXPECT_TRUE(ev.wait(2s)) << "round " << round;
    setter.join();
  }
}

namespace {
// Collects what the hub's error handler is given, and restores the default on scope exit.
struct CapturedErrors {
  std::vector<std::string> messages;
  CapturedErrors() {
    fiberio::set_error_handler([this](const fiberio::GreenletBase&, std::exception_ptr e) {
      messages.push_back(fiberio::describe_exception(e));
    });
  }
  ~CapturedErrors() { fiberio::set_error_handler(nullptr); }
};
}  // namespace

// gevent reports a failing link through its hub's handler and runs the remaining links.
TEST(Event, ThrowingLinkIsReportedAndLaterLinksAndWaitsStillRun) {
  CapturedErrors errors;
  Event ev;
  int later = 0;
  ev.rawlink([] { throw std::runtime_error("link boom"); });
  ev.rawlink([&] { ++later; });
  auto waiter = fiberio::spawn([&] { return fiberio::wait({fiberio::Waitable(ev)}, 5s).size(); });
  fiberio::yield();  // the wait() registers its link after the throwing one
  EXPECT_NO_THROW(ev.set());
  EXPECT_EQ(later, 1);
  EXPECT_EQ(waiter.get(), 1u);
  ASSERT_EQ(errors.messages.size(), 1u);
  EXPECT_NE(errors.messages[0].find("link boom"), std::string::npos) << errors.messages[0];
}

TEST(AsyncResult, ThrowingLinkIsReportedAndLaterLinksAndWaitsStillRun) {
  CapturedErrors errors;
  AsyncResult<int> r;
  int later = 0;
  r.rawlink([] { throw std::runtime_error("link boom"); });
  r.rawlink([&] { ++later; });
  auto waiter = fiberio::spawn([&] { return fiberio::wait({fiberio::Waitable(r)}, 5s).size(); });
  fiberio::yield();
  EXPECT_NO_THROW(r.set(7));
  EXPECT_EQ(later, 1);
  EXPECT_EQ(waiter.get(), 1u);
  EXPECT_EQ(r.get(), 7);
  ASSERT_EQ(errors.messages.size(), 1u);
  EXPECT_NE(errors.messages[0].find("link boom"), std::string::npos) << errors.messages[0];
}
