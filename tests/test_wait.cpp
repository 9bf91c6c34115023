// wait() / iwait() over mixed greenlets, Events and AsyncResults.
#include <fiberio/fiberio.hpp>
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "watchdog.hpp"

using namespace std::chrono_literals;
using fiberio::Clock;

namespace {
std::vector<std::size_t> indexes(const std::vector<fiberio::Waitable>& ws) {
  std::vector<std::size_t> out;
  for (auto& w : ws) out.push_back(w.index());
  return out;
}
}  // namespace

TEST(Wait, IwaitYieldsMixedObjectsInCompletionOrder) {
  auto live0 = fiberio::live_greenlets();
  fiberio::Event ev, go;
  fiberio::AsyncResult<int> res;
  // Completion order is caused, not timed: ev, then res, then the greenlet (which waits for go).
  auto g = fiberio::spawn([&] {
    go.wait();
    return 1;
  });
  auto setter = fiberio::spawn([&] {
    fiberio::sleep(5ms);
    ev.set();
    fiberio::sleep(5ms);
    res.set(99);
    fiberio::sleep(5ms);
    go.set();
  });
  std::vector<std::size_t> order;
  for (const fiberio::Waitable& w : fiberio::iwait({g, ev, res})) {
    EXPECT_TRUE(w.ready());
    order.push_back(w.index());
    if (w.index() == 0) {
      EXPECT_TRUE(w.greenlet() == g);
    }
    if (w.index() == 1) {
      EXPECT_EQ(w.event(), &ev);
    }
    if (w.index() == 2) {
      ASSERT_NE(w.async_result<int>(), nullptr);
      EXPECT_EQ(w.async_result<int>()->get(), 99);
      EXPECT_EQ(w.async_result<long>(), nullptr);
      EXPECT_EQ(w.event(), nullptr);
    }
  }
  EXPECT_EQ(order, (std::vector<std::size_t>{1, 2, 0}));
  setter.join();
  EXPECT_EQ(fiberio::live_greenlets(), live0);
}

TEST(Wait, AlreadyReadyComeFirstInInputOrder) {
  fiberio::Event a, b;
  b.set();
  auto done = fiberio::spawn([] { return 3; });
  done.join();
  auto later = fiberio::spawn([] { fiberio::sleep(5ms); });
  auto ready = fiberio::wait({a, later, b, done}, 2s, 3);
  EXPECT_EQ(indexes(ready), (std::vector<std::size_t>{2, 3, 1}));
  EXPECT_FALSE(a.is_set());
}

TEST(Wait, CountStopsEarly) {
  std::vector<fiberio::Greenlet<int>> gs;
  for (int i = 0; i < 5; ++i) gs.push_back(fiberio::spawn([i] {
    fiberio::sleep(std::chrono::milliseconds(i == 0 ? 2000 : 15 * i));
    return i;
  }));
  auto t0 = Clock::now();
  auto ready = fiberio::wait(gs, {}, 2);  // a range of Greenlet<int>
  EXPECT_LT(Clock::now() - t0, 1s);
  EXPECT_EQ(indexes(ready), (std::vector<std::size_t>{1, 2}));
  EXPECT_TRUE(fiberio::wait(gs, {}, 0).empty());
  fiberio::killall(gs);
}

TEST(Wait, TimeoutReturnsWhatIsReady) {
  fiberio::Event never, set_now;
  fiberio::AsyncResult<void> pending;
  set_now.set();
  auto t0 = Clock::now();
  auto ready = fiberio::wait({never, set_now, pending}, 30ms);
  auto took = Clock::now() - t0;
  EXPECT_GE(took, 25ms);
  EXPECT_LT(took, 2s);
  EXPECT_EQ(indexes(ready), (std::vector<std::size_t>{1}));
  // timeout 0: a poll.
  EXPECT_EQ(indexes(fiberio::wait({never, set_now}, 0ms)), (std::vector<std::size_t>{1}));
  EXPECT_TRUE(fiberio::wait({never, pending}, 0ms).empty());
}

TEST(Wait, EventSetAgainCountsOnce) {
  fiberio::Event ev, other;
  auto flipper = fiberio::spawn([&] {
    ev.set();
    ev.clear();
    fiberio::sleep(2ms);
    ev.set();
  });
  auto ready = fiberio::wait({ev, other}, 40ms);
  EXPECT_EQ(indexes(ready), (std::vector<std::size_t>{0}));
  flipper.join();
}

TEST(Wait, EventSetFromAnotherThreadWakesIwait) {
  // The main fiber waits with nothing else on its hub: an Event another thread will set must not make
  // it LoopExit, and the cross-thread callback must wake it.
  fiberio::Event ev;
  fiberio::AsyncResult<std::string> res;
  std::thread t([&] {
    std::this_thread::sleep_for(20ms);
    ev.set();
    std::this_thread::sleep_for(10ms);
    res.set("from thread");
  });
  std::vector<std::size_t> order;
  for (auto& w : fiberio::iwait({res, ev}, 5s)) order.push_back(w.index());
  t.join();
  EXPECT_EQ(order, (std::vector<std::size_t>{1, 0}));
  EXPECT_EQ(res.get(), "from thread");
}

TEST(Wait, GreenletOfAnotherThread) {
  fiberio::AsyncResult<fiberio::GreenletRef> handle;
  fiberio::Event finish;
  std::thread t([&] {
    auto g = fiberio::spawn([&] { finish.wait(); });
    handle.set(g);
    g.join();
  });
  auto foreign = handle.get(5s);
  fiberio::Event local_ev;
  auto setter = fiberio::spawn([&] {
    fiberio::sleep(5ms);
    finish.set();  // lets the foreign greenlet finish; only that wakes us
  });
  auto ready = fiberio::wait({local_ev, foreign}, 5s, 1);
  EXPECT_EQ(indexes(ready), (std::vector<std::size_t>{1}));
  EXPECT_TRUE(foreign.dead());
  setter.join();
  t.join();
}

TEST(Wait, LoopExitWhenOnlyLocalGreenletsCannotFinish) {
  // Two greenlets joining each other never finish, and only this hub could wake them: the main fiber
  // waiting for one must get LoopExit rather than hang.
  fiberio::Greenlet<void> a, b;
  a = fiberio::spawn([&] {
    fiberio::sleep(1ms);
    b.join();
  });
  b = fiberio::spawn([&] { a.join(); });
  EXPECT_THROW(fiberio::wait({a}), fiberio::LoopExit);
  fiberio::killall({a, b});
  EXPECT_TRUE(a.killed());
  EXPECT_TRUE(b.killed());
}

TEST(Wait, IwaitStopsEarlyAndUnlinks) {
  fiberio::Event a, b;
  {
    auto it = fiberio::iwait({a, b});
    a.set();
    auto first = it.next();
    ASSERT_TRUE(first);
    EXPECT_EQ(first->index(), 0u);
  }  // dropped with b never set: its link is removed
  b.set();  // must not touch the gone iteration
  auto ready = fiberio::wait({a, b}, 0ms);
  EXPECT_EQ(indexes(ready), (std::vector<std::size_t>{0, 1}));
}

TEST(Wait, KillInterruptsAWaiter) {
  fiberio::Event never;
  auto waiter = fiberio::spawn([&] { return fiberio::wait({never}).size(); });
  fiberio::sleep(2ms);
  waiter.kill();
  EXPECT_TRUE(waiter.killed());
}
