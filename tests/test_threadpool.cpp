// ThreadPool: work on OS threads while only the calling fiber waits.
#include <sched.h>
#include <sys/resource.h>

#include <fiberio/fiberio.hpp>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <set>
#include <stdexcept>
#include <thread>

#include "watchdog.hpp"

using namespace std::chrono_literals;
using fiberio::Clock;

TEST(ThreadPool, ApplyReturnsResultFromAnotherThread) {
  fiberio::ThreadPool pool(2);
  EXPECT_EQ(pool.size(), 2u);
  auto caller = std::this_thread::get_id();
  auto [sum, worker] = pool.apply([](int a, int b) { return std::make_pair(a + b, std::this_thread::get_id()); }, 2, 40);
  EXPECT_EQ(sum, 42);
  EXPECT_NE(worker, caller);
  pool.apply([] {});  // void works too
}

TEST(ThreadPool, ApplyRethrowsTypeAndWhat) {
  fiberio::ThreadPool pool(1);
  try {
    pool.apply([]() -> int { throw std::length_error("too long: 12"); });
    FAIL() << "apply did not throw";
  } catch (const std::length_error& e) {
    EXPECT_STREQ(e.what(), "too long: 12");
  }
}

TEST(ThreadPool, BlocksOnlyTheCallingFiber) {
  fiberio::ThreadPool pool(1);
  int ticks = 0;
  bool stop = false;
  auto ticker = fiberio::spawn([&] {
    while (!stop) {
      ++ticks;
      fiberio::sleep(2ms);
    }
  });
  // A blocking OS-level sleep on the pool: the hub keeps running the ticker meanwhile.
  pool.apply([] { std::this_thread::sleep_for(150ms); });
  stop = true;
  ticker.join();
  EXPECT_GE(ticks, 10);
}

TEST(ThreadPool, SpawnReturnsAsyncResult) {
  fiberio::ThreadPool pool(2);
  std::vector<fiberio::AsyncResult<int>> results;
  for (int i = 0; i < 20; ++i) results.push_back(pool.spawn([i] { return i * 3; }));
  for (int i = 0; i < 20; ++i) EXPECT_EQ(results[i].get(10s), i * 3);
  auto failed = pool.spawn([] { throw std::runtime_error("nope"); });
  EXPECT_THROW(failed.get(10s), std::runtime_error);
  EXPECT_FALSE(failed.successful());
}

TEST(ThreadPool, RunsOnAllThreads) {
  fiberio::ThreadPool pool(3);
  std::atomic<int> inside{0};
  std::atomic<int> max_inside{0};
  std::vector<fiberio::AsyncResult<std::thread::id>> rs;
  for (int i = 0; i < 3; ++i)
    rs.push_back(pool.spawn([&] {
      int n = ++inside;
      int m = max_inside.load();
      while (n > m && !max_inside.compare_exchange_weak(m, n)) {
      }
      // Wait (bounded) until all three run at once.
      for (int k = 0; k < 2000 && max_inside.load() < 3; ++k) std::this_thread::sleep_for(1ms);
      --inside;
      return std::this_thread::get_id();
    }));
  std::set<std::thread::id> ids;
  for (auto& r : rs) ids.insert(r.get(10s));
  EXPECT_EQ(ids.size(), 3u);
  EXPECT_EQ(max_inside.load(), 3);
}

TEST(ThreadPool, ManyFibersApplyConcurrently) {
  fiberio::ThreadPool pool(4);
  std::vector<fiberio::Greenlet<int>> gs;
  for (int i = 0; i < 50; ++i)
    gs.push_back(fiberio::spawn([&pool, i] { return pool.apply([i] { return i + 1; }); }));
  int total = 0;
  for (auto& g : gs) total += g.get();
  EXPECT_EQ(total, 50 * 51 / 2);
}

TEST(ThreadPool, DestructorRunsQueuedWork) {
  std::atomic<int> ran{0};
  {
    fiberio::ThreadPool pool(1);
    for (int i = 0; i < 10; ++i) pool.spawn([&] { ++ran; });
  }
  EXPECT_EQ(ran.load(), 10);
  EXPECT_THROW(fiberio::ThreadPool(0), std::invalid_argument);
}

TEST(ThreadPool, RunInThreadUsesDefaultPool) {
  auto& pool = fiberio::default_threadpool();
  EXPECT_EQ(&pool, &fiberio::default_threadpool());
  EXPECT_GE(pool.size(), 4u);
  auto caller = std::this_thread::get_id();
  auto id = fiberio::run_in_thread([] { return std::this_thread::get_id(); });
  EXPECT_NE(id, caller);
  EXPECT_EQ(fiberio::run_in_thread([](int x) { return x * x; }, 9), 81);
  EXPECT_THROW(fiberio::run_in_thread([] { throw std::logic_error("x"); }), std::logic_error);
}

// Offloaded CPU work must not starve the hub on a shared core: pool threads run in the scheduling
// class asked for (the default pool as background = SCHED_IDLE); the hub's thread keeps its own.
TEST(ThreadPool, ThreadsRunAtTheRequestedPriority) {
  const int base = ::getpriority(PRIO_PROCESS, 0);
  auto nice_and_class = [] { return std::pair(::getpriority(PRIO_PROCESS, 0), ::sched_getscheduler(0)); };
  fiberio::ThreadPool low(1, fiberio::ThreadPriority::low);
  EXPECT_EQ(low.apply(nice_and_class), std::pair(std::min(19, base + 10), int(SCHED_OTHER)));
  fiberio::ThreadPool plain(1);
  EXPECT_EQ(plain.apply(nice_and_class), std::pair(base, int(SCHED_OTHER)));
  fiberio::ThreadPool background(1, fiberio::ThreadPriority::background);
  EXPECT_EQ(background.apply(nice_and_class).second, SCHED_IDLE);
  EXPECT_EQ(fiberio::run_in_thread(nice_and_class).second, SCHED_IDLE) << "the default pool is background";
  EXPECT_EQ(nice_and_class(), std::pair(base, int(SCHED_OTHER))) << "the hub's own thread is untouched";
}

TEST(ThreadPool, MoveOnlyResults) {
  fiberio::ThreadPool pool(1);
  std::unique_ptr<int> p = pool.apply([] { return std::make_unique<int>(7); });
  ASSERT_TRUE(p);
  EXPECT_EQ(*p, 7);
  auto r = pool.spawn([] { return std::make_unique<std::string>("moved"); });
  EXPECT_EQ(*r.get(), "moved");
  EXPECT_THROW(r.get(), std::logic_error);
  fiberio::AsyncResult<std::unique_ptr<int>> a;
  a.set(std::make_unique<int>(3));
  EXPECT_EQ(*a.get(), 3);
}

// A greenlet killed while it waits in run_in_thread must not unwind while the task still writes
// through references into its stack: that stack would go back to the pool and to another greenlet
// (which used to find 4 KiB of its own frame overwritten, with no message).
TEST(RunInThread, KillTakesEffectWhenTheTaskReturnsAndNoStackIsOverwritten) {
  for (int round = 0; round < 5; ++round) {
    std::atomic<bool> task_done{false};
    auto victim = fiberio::spawn([&] {
      char buf[4096];
      fiberio::run_in_thread([&buf, &task_done] {
        auto until = std::chrono::steady_clock::now() + 50ms;
        while (std::chrono::steady_clock::now() < until) std::memset(buf, 0x5A, sizeof buf);
        task_done = true;
      });
    });
    fiberio::sleep(10ms);  // the task is writing into victim's frame
    victim.kill();         // returns once victim has unwound
    EXPECT_TRUE(task_done) << "round " << round << ": the greenlet unwound while its task still ran";
    EXPECT_TRUE(victim.killed());
    auto other = fiberio::spawn([] {  // likely to get victim's recycled stack
      char mine[4096];
      std::memset(mine, 1, sizeof mine);
      fiberio::sleep(60ms);
      return std::count(mine, mine + sizeof mine, 1) == static_cast<long>(sizeof mine);
    });
    EXPECT_TRUE(other.get()) << "round " << round << ": another greenlet's stack was overwritten";
  }
}

TEST(RunInThread, TimeoutTakesEffectWhenTheTaskReturns) {
  std::atomic<bool> done{false};
  auto t0 = fiberio::Clock::now();
  bool raised = false;
  {
    fiberio::Timeout guard(10ms);
    try {
      fiberio::run_in_thread([&done] {
        std::this_thread::sleep_for(60ms);
        done = true;
      });
    } catch (const fiberio::TimeoutError& e) {
      raised = e.is(guard);
    }
  }
  EXPECT_TRUE(raised);
  EXPECT_TRUE(done);
  EXPECT_GE(fiberio::Clock::now() - t0, 60ms);
}
