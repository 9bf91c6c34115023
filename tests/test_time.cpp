// Time: sleep, yield, Timeout guards, with_timeout.
#include <fiberio/fiberio.hpp>

#include <string>
#include <vector>

#include "watchdog.hpp"

using namespace std::chrono_literals;
using fiberio::Clock;
using fiberio::Timeout;
using fiberio::TimeoutError;

TEST(Sleep, HundredSleepersFinishTogether) {
  auto before = fiberio::live_greenlets();
  int done = 0;
  std::vector<fiberio::Greenlet<void>> gs;
  auto t0 = Clock::now();
  for (int i = 0; i < 100; ++i)
    gs.push_back(fiberio::spawn([&] {
      fiberio::sleep(100ms);
      ++done;
    }));
  fiberio::joinall(gs);
  auto elapsed = Clock::now() - t0;
  EXPECT_EQ(done, 100);
  EXPECT_GE(elapsed, 100ms);
  EXPECT_LT(elapsed, 1s);  // concurrently: not 100 x 100 ms
  EXPECT_EQ(fiberio::live_greenlets(), before);
}

TEST(Sleep, BlocksOnlyTheCallingFiber) {
  int ticks = 0;
  auto ticker = fiberio::spawn([&] {
    for (int i = 0; i < 5; ++i) {
      ++ticks;
      fiberio::sleep(5ms);
    }
  });
  fiberio::sleep(100ms);
  EXPECT_EQ(ticks, 5);
  ticker.join();
}

TEST(Sleep, SleepsAtLeastTheDuration) {
  for (auto d : {1ms, 15ms}) {
    auto t0 = Clock::now();
    fiberio::sleep(d);
    EXPECT_GE(Clock::now() - t0, d);
  }
}

TEST(Yield, RoundRobinOrder) {
  std::string order;
  auto make = [&](char c, bool use_sleep0) {
    return fiberio::spawn([&order, c, use_sleep0] {
      for (int i = 0; i < 4; ++i) {
        order += c;
        if (use_sleep0) fiberio::sleep(0ms);  // sleep(0) is yield()
        else fiberio::yield();
      }
    });
  };
  auto a = make('A', false), b = make('B', true), c = make('C', false);
  fiberio::joinall({a, b, c});
  EXPECT_EQ(order, "ABCABCABCABC");
}

TEST(Yield, LetsOthersRunAndCountsSwitches) {
  bool ran = false;
  auto g = fiberio::spawn([&] { ran = true; });
  auto before = fiberio::hub_switches();
  fiberio::yield();
  EXPECT_TRUE(ran);
  EXPECT_GT(fiberio::hub_switches(), before);
  g.join();
}

TEST(TimeoutGuard, InterruptsSleep) {
  auto t0 = Clock::now();
  try {
    Timeout t(30ms);
    fiberio::sleep(10s);
    FAIL() << "sleep was not interrupted";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("30 ms"), std::string::npos) << e.what();
  }
  EXPECT_LT(Clock::now() - t0, 2s);
}

TEST(TimeoutGuard, InterruptsEventWait) {
  fiberio::Event ev;
  Timeout* mine = nullptr;
  try {
    Timeout t(20ms);
    mine = &t;
    ev.wait();
    FAIL() << "wait was not interrupted";
  } catch (const TimeoutError& e) {
    EXPECT_TRUE(e.is(*mine));
  }
  // The Event still works afterwards.
  auto setter = fiberio::spawn([&] { ev.set(); });
  EXPECT_TRUE(ev.wait(5s));
  setter.join();
}

TEST(TimeoutGuard, InterruptsJoinAndGet) {
  auto g = fiberio::spawn([] {
    fiberio::sleep(300ms);
    return 1;
  });
  EXPECT_THROW(
      {
        Timeout t(20ms);
        g.join();
      },
      TimeoutError);
  EXPECT_THROW(
      {
        Timeout t(20ms);
        g.get();
      },
      TimeoutError);
  EXPECT_FALSE(g.dead());  // only the waiter was interrupted
  EXPECT_EQ(g.get(), 1);
}

TEST(TimeoutGuard, InterruptsYieldLoop) {
  long spins = 0;
  EXPECT_THROW(
      {
        Timeout t(20ms);
        for (;;) {
          ++spins;
          fiberio::yield();
        }
      },
      TimeoutError);
  EXPECT_GT(spins, 0);
}

TEST(TimeoutGuard, InsideAGreenlet) {
  auto g = fiberio::spawn([] {
    try {
      Timeout t(20ms);
      fiberio::sleep(10s);
    } catch (const TimeoutError& e) {
      return std::string("timed out");
    }
    return std::string("slept");
  });
  EXPECT_EQ(g.get(), "timed out");
}

TEST(TimeoutGuard, NestedOuterEarlierFires) {
  Timeout* outer_ptr = nullptr;
  Timeout* inner_ptr = nullptr;
  bool inner_caught = false;
  auto t0 = Clock::now();
  try {
    Timeout outer(30ms);
    outer_ptr = &outer;
    try {
      Timeout inner(5s);  // later deadline than the outer one
      inner_ptr = &inner;
      fiberio::sleep(10s);
    } catch (const TimeoutError& e) {
      inner_caught = true;
      EXPECT_TRUE(e.is(*outer_ptr));
      EXPECT_FALSE(e.is(*inner_ptr));
      throw;
    }
  } catch (const TimeoutError& e) {
    EXPECT_TRUE(e.is(*outer_ptr));
  }
  EXPECT_TRUE(inner_caught);
  EXPECT_LT(Clock::now() - t0, 2s);
}

TEST(TimeoutGuard, NestedFireInDeadlineOrder) {
  std::vector<std::string> fired;
  Timeout outer(80ms);
  try {
    try {
      Timeout inner(20ms);
      try {
        fiberio::sleep(10s);
      } catch (const TimeoutError& e) {
        fired.push_back(e.is(inner) ? "inner" : e.is(outer) ? "outer" : "other");
        EXPECT_TRUE(inner.fired());
        EXPECT_FALSE(outer.fired());
      }
      fiberio::sleep(10s);  // still inside inner's scope: the outer one is next
    } catch (const TimeoutError& e) {
      fired.push_back(e.is(outer) ? "outer" : "other");
    }
  } catch (...) {
    fired.push_back("unexpected");
  }
  EXPECT_EQ(fired, (std::vector<std::string>{"inner", "outer"}));
  EXPECT_TRUE(outer.fired());
}

TEST(TimeoutGuard, LeftScopeNeverFires) {
  // The guard's deadline is far enough that a loaded machine cannot reach it inside the scope, and the
  // sleep after the scope goes well past it.
  {
    Timeout t(150ms);
    fiberio::sleep(1ms);
  }
  EXPECT_NO_THROW(fiberio::sleep(250ms));
  // The same with a guard still active around it.
  Timeout outer(5s);
  {
    Timeout t(150ms);
  }
  EXPECT_NO_THROW(fiberio::sleep(250ms));
  EXPECT_FALSE(outer.fired());
}

TEST(TimeoutGuard, ExpiredBeforeBlockingThrowsAtOnce) {
  Timeout t(0ms);
  auto t0 = Clock::now();
  EXPECT_THROW(fiberio::sleep(10s), TimeoutError);
  EXPECT_LT(Clock::now() - t0, 1s);
}

TEST(TimeoutGuard, DoesNotFireWhenWorkFinishesInTime) {
  int value = 0;
  {
    Timeout t(5s);
    fiberio::sleep(5ms);
    value = 1;
    EXPECT_FALSE(t.fired());
  }
  EXPECT_EQ(value, 1);
}

TEST(WithTimeout, ReturnsValueOrThrows) {
  EXPECT_EQ(fiberio::with_timeout(5s, [](int x) { fiberio::sleep(1ms); return x * 2; }, 21), 42);
  auto t0 = Clock::now();
  EXPECT_THROW(fiberio::with_timeout(20ms, [] { fiberio::sleep(10s); }), TimeoutError);
  EXPECT_LT(Clock::now() - t0, 2s);
  // The guard is gone afterwards.
  EXPECT_NO_THROW(fiberio::sleep(30ms));
}
