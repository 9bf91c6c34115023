// Deterministic schedules (fiberio/testing.hpp): seeded scheduling, exploration points, explore() and
// replay(), and virtual time.
#include <fiberio/fiberio.hpp>
#include <fiberio/testing.hpp>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/child.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;
namespace testing_ = fiberio::testing;
using fiberio::Clock;

namespace {

// A small program with every kind of switch: yields, a Queue hand-off, a Lock, and sleeps (on virtual
// time, as replay() runs it by default). Whatever the schedule, it must compute the same sum.
void mixed_workload_with(bool sleeps) {
  fiberio::Queue<int> q(2);
  fiberio::Lock lock;
  long sum = 0;
  std::vector<fiberio::Greenlet<void>> gs;
  for (int p = 0; p < 3; ++p)
    gs.push_back(fiberio::spawn([&, p] {
      for (int i = 0; i < 4; ++i) {
        q.put(p * 10 + i);
        if (i % 2) fiberio::yield();
      }
    }));
  for (int c = 0; c < 2; ++c)
    gs.push_back(fiberio::spawn([&] {
      for (int i = 0; i < 6; ++i) {
        int v = q.get();
        std::lock_guard g(lock);
        if (sleeps) fiberio::sleep(std::chrono::milliseconds(v % 3));
        sum += v;
      }
    }));
  fiberio::joinall(gs, {}, /*raise_error=*/true);
  if (sum != (0 + 1 + 2 + 3) * 3 + (0 + 10 + 20) * 4) throw std::runtime_error("wrong sum");
}
void mixed_workload() { mixed_workload_with(true); }

// The lost update: read, an exploration point (no yield: a plain run never switches there), write.
void racy_increments() {
  int n = 0;
  std::vector<fiberio::Greenlet<void>> gs;
  for (int i = 0; i < 2; ++i)
    gs.push_back(fiberio::spawn([&] {
      int tmp = n;
      testing_::exploration_point();
      n = tmp + 1;
    }));
  fiberio::joinall(gs, {}, true);
  if (n != 2) throw std::runtime_error("lost update: n == " + std::to_string(n) + ", expected 2");
}

// Runs f on a fresh thread (a fresh hub) and returns what it returns.
template <class F>
auto on_fresh_thread(F f) {
  decltype(f()) r{};
  std::thread t([&] { r = f(); });
  t.join();
  return r;
}

}  // namespace

TEST(Schedule, SameSeedGivesTheSameTraceEveryRun) {
  FIBERIO_WATCHDOG(60);
  auto first = testing_::replay(mixed_workload, 42);
  ASSERT_FALSE(first.failed) << first.error;
  ASSERT_GT(first.trace.size(), 20u);
  for (int run = 0; run < 100; ++run) {  // 100 of 100
    auto again = testing_::replay(mixed_workload, 42);
    ASSERT_FALSE(again.failed) << again.error;
    EXPECT_EQ(again.trace, first.trace) << "run " << run;
  }
  // On real time too, as long as no timer is involved (which timers have expired at a given pick
  // depends on real speed).
  auto no_sleeps = [] { mixed_workload_with(false); };
  auto real1 = testing_::replay(no_sleeps, 42, {.virtual_time = false});
  ASSERT_FALSE(real1.failed) << real1.error;
  EXPECT_GT(real1.trace.size(), 20u);
  for (int run = 0; run < 3; ++run) EXPECT_EQ(testing_::replay(no_sleeps, 42, {.virtual_time = false}).trace, real1.trace);
}

TEST(Schedule, DifferentSeedsGiveDifferentTraces) {
  FIBERIO_WATCHDOG(60);
  std::set<std::vector<std::uint32_t>> traces;
  for (std::uint64_t seed = 1; seed <= 8; ++seed) {
    auto r = testing_::replay(mixed_workload, seed);
    ASSERT_FALSE(r.failed) << "seed " << seed << ": " << r.error;
    traces.insert(r.trace);
  }
  EXPECT_GE(traces.size(), 6u) << "8 seeds gave only " << traces.size() << " distinct schedules";
}

TEST(Schedule, SetSeedOnThisThreadRecordsTheTrace) {
  FIBERIO_WATCHDOG(30);
  auto trace_for = [](std::uint64_t seed) {
    return on_fresh_thread([seed] {
      testing_::set_seed(seed);
      EXPECT_EQ(testing_::seed(), seed);
      mixed_workload();
      auto t = testing_::switch_trace();
      testing_::clear_seed();
      EXPECT_FALSE(testing_::seed());
      return t;
    });
  };
  auto a = trace_for(7), b = trace_for(7);
  EXPECT_FALSE(a.empty());
  EXPECT_EQ(a, b);
  EXPECT_NE(a.front(), 0u) << "fiber 0 called set_seed, and then waited: another ran first";
  // Ids are per run: the main fiber and the 5 greenlets of the workload.
  EXPECT_EQ(std::set<std::uint32_t>(a.begin(), a.end()), (std::set<std::uint32_t>{0, 1, 2, 3, 4, 5}));
}

TEST(Schedule, PlainRunsNeverLoseTheUpdate) {
  FIBERIO_WATCHDOG(30);
  // Without a seed the exploration point is a no-op: the race is invisible, which is the point.
  for (int i = 0; i < 200; ++i) ASSERT_NO_THROW(racy_increments()) << "run " << i;
}

TEST(Schedule, ExploreFindsTheLostUpdateAndReplayReproducesIt) {
  FIBERIO_WATCHDOG(60);
  auto r = testing_::explore(racy_increments, 200, /*seed=*/1);
  ASSERT_TRUE(r.failed) << "200 schedules did not find the lost update";
  EXPECT_LE(r.schedules_run, 200u);
  EXPECT_NE(r.error.find("lost update: n == 1"), std::string::npos) << r.error;
  EXPECT_NE(r.describe().find("FIBERIO_SEED=" + std::to_string(r.seed)), std::string::npos) << r.describe();
  for (int i = 0; i < 3; ++i) {
    auto again = testing_::replay(racy_increments, r.seed);
    EXPECT_TRUE(again.failed);
    EXPECT_EQ(again.error, r.error);
    EXPECT_EQ(again.trace, r.trace);
  }
  // The same exploration finds the same first failure.
  auto r2 = testing_::explore(racy_increments, 200, 1);
  EXPECT_EQ(r2.seed, r.seed);
  EXPECT_EQ(r2.schedules_run, r.schedules_run);
}

TEST(Schedule, ExplorationPointsKeepLocksAndQueuesCorrect) {
  FIBERIO_WATCHDOG(60);
  auto locked = [] {
    int n = 0;
    fiberio::Lock lock;
    std::vector<fiberio::Greenlet<void>> gs;
    for (int i = 0; i < 3; ++i)
      gs.push_back(fiberio::spawn([&] {
        std::lock_guard g(lock);
        int tmp = n;
        testing_::exploration_point();
        n = tmp + 1;
      }));
    fiberio::joinall(gs, {}, true);
    if (n != 3) throw std::runtime_error("lost update under a Lock");
  };
  auto r = testing_::explore(locked, 150, 3);
  EXPECT_FALSE(r.failed) << r.describe();
  EXPECT_EQ(r.schedules_run, 150u);
  auto w = testing_::explore(mixed_workload, 100, 5);
  EXPECT_FALSE(w.failed) << w.describe();
}

// Two greenlets check-then-act across `step`, an operation that would not block: without exploration
// points a plain run never interleaves them; exploring must find the schedule with two winners.
namespace {
void expect_explore_switches_at(const std::function<void()>& step) {
  auto check_then_act = [&] {
    bool taken = false;
    int winners = 0;
    std::vector<fiberio::Greenlet<void>> gs;
    for (int i = 0; i < 2; ++i)
      gs.push_back(fiberio::spawn([&] {
        if (taken) return;
        step();  // does not block: a plain run never switches here
        taken = true;
        ++winners;
      }));
    fiberio::joinall(gs, {}, true);
    if (winners != 1) throw std::runtime_error("two winners");
  };
  EXPECT_NO_THROW(on_fresh_thread([&] {
    check_then_act();
    return 0;
  }));
  auto r = testing_::explore(check_then_act, 200, 9);
  EXPECT_TRUE(r.failed);
  EXPECT_EQ(r.error, "two winners");
}
}  // namespace

TEST(Schedule, ExploreSwitchesAtAnUncontendedLock) {
  FIBERIO_WATCHDOG(60);
  expect_explore_switches_at([] {
    fiberio::Lock lock;
    lock.acquire();
    lock.release();
  });
}

TEST(Schedule, ExploreSwitchesAtTheWaitOfASetEvent) {
  FIBERIO_WATCHDOG(60);
  expect_explore_switches_at([] {
    fiberio::Event ready;
    ready.set();
    ready.wait();
  });
}

TEST(Schedule, ExploreSwitchesAtTheGetOfAReadyAsyncResult) {
  FIBERIO_WATCHDOG(60);
  expect_explore_switches_at([] {
    fiberio::AsyncResult<int> result;
    result.set(1);
    result.get();
  });
}

TEST(Schedule, ExploreSwitchesAtASelectWithAReadyCase) {
  FIBERIO_WATCHDOG(60);
  expect_explore_switches_at([] {
    fiberio::Event ready;  // an Event case: arming it does not wait on the Event
    ready.set();
    fiberio::select({ready});
  });
}

// ---- virtual time ----

TEST(VirtualTime, AnHourOfSleepsTakesNoRealTimeAndKeepsTheOrder) {
  FIBERIO_WATCHDOG(30);
  auto real0 = std::chrono::steady_clock::now();
  std::vector<int> order;
  Clock::duration advanced{};
  on_fresh_thread([&] {
    testing_::set_virtual_time(true);
    EXPECT_TRUE(testing_::virtual_time());
    auto v0 = Clock::now();
    std::vector<fiberio::Greenlet<void>> gs;
    // Wake-ups at 10, 20, ... 50 minutes, spawned out of order; and three at the same instant, which
    // wake in the order they started waiting.
    for (int m : {30, 10, 50, 20, 40})
      gs.push_back(fiberio::spawn([&, m] {
        fiberio::sleep(std::chrono::minutes(m));
        order.push_back(m);
      }));
    for (int k = 0; k < 3; ++k)
      gs.push_back(fiberio::spawn([&, k] {
        fiberio::sleep(55min);
        order.push_back(100 + k);
      }));
    fiberio::joinall(gs);
    fiberio::sleep(5min);  // the main fiber sleeps too: 60 minutes in all
    advanced = Clock::now() - v0;
    testing_::set_virtual_time(false);
    EXPECT_FALSE(testing_::virtual_time());
    return 0;
  });
  EXPECT_EQ(advanced, 1h);
  EXPECT_EQ(order, (std::vector<int>{10, 20, 30, 40, 50, 100, 101, 102}));
  EXPECT_LT(std::chrono::steady_clock::now() - real0, 1s);
}

TEST(VirtualTime, TimeoutsFireOnVirtualTime) {
  FIBERIO_WATCHDOG(30);
  on_fresh_thread([] {
    testing_::set_virtual_time(true);
    auto v0 = Clock::now();
    fiberio::Queue<int> q;
    EXPECT_THROW(q.get(std::chrono::hours(2)), fiberio::Empty);
    EXPECT_EQ(Clock::now() - v0, 2h);
    {
      fiberio::Timeout t(30min);
      fiberio::Event never;
      EXPECT_THROW(never.wait(), fiberio::TimeoutError);
    }
    EXPECT_EQ(Clock::now() - v0, 2h + 30min);
    fiberio::Event ev;
    auto setter = fiberio::spawn([&] {
      fiberio::sleep(10min);
      ev.set();
    });
    EXPECT_TRUE(ev.wait(1h));
    EXPECT_EQ(Clock::now() - v0, 2h + 40min);
    setter.join();
    return 0;
  });
}

TEST(VirtualTime, DoesNotJumpWhileAnFdWaitIsPending) {
  FIBERIO_WATCHDOG(30);
  auto real0 = std::chrono::steady_clock::now();
  std::vector<std::string> order;
  Clock::duration reader_saw{}, total{};
  on_fresh_thread([&] {
    testing_::set_virtual_time(true);
    auto v0 = Clock::now();
    auto [a, b] = fiberio::Socket::pair();
    // Data arrives from another thread after 100 ms of real time.
    std::thread writer([fd = b.fd()] {
      std::this_thread::sleep_for(100ms);
      EXPECT_EQ(::write(fd, "x", 1), 1);
    });
    auto reader = fiberio::spawn([&, &a = a] {
      EXPECT_EQ(a.recv(16), "x");
      reader_saw = Clock::now() - v0;
      order.push_back("reader");
    });
    auto sleeper = fiberio::spawn([&] {
      fiberio::sleep(1h);
      order.push_back("sleeper");
    });
    fiberio::joinall({reader, sleeper});
    total = Clock::now() - v0;
    writer.join();
    return 0;
  });
  EXPECT_EQ(order, (std::vector<std::string>{"reader", "sleeper"}));
  // While the read waited, virtual time ran at the real pace, not by jumps.
  EXPECT_GE(reader_saw, 90ms);
  EXPECT_LT(reader_saw, 1h);
  EXPECT_EQ(total, 1h);
  EXPECT_LT(std::chrono::steady_clock::now() - real0, 5s);
}

// A thread-pool job holds the virtual clock as an fd wait does: its result comes at a real time, and
// jumping an hour would have expired the wait for it (with the old clock: TimeoutError at once).
TEST(VirtualTime, DoesNotJumpWhileAnOffloadedJobRuns) {
  FIBERIO_WATCHDOG(30);
  auto real0 = std::chrono::steady_clock::now();
  std::vector<std::string> order;
  Clock::duration waiter_saw{}, total{};
  on_fresh_thread([&] {
    testing_::set_virtual_time(true);
    auto v0 = Clock::now();
    auto waiter = fiberio::spawn([&] {
      auto job = fiberio::default_threadpool().spawn([] {
        std::this_thread::sleep_for(100ms);
        return 7;
      });
      EXPECT_EQ(job.get(30min), 7);  // a timed wait: the next virtual deadline is 30 min away
      waiter_saw = Clock::now() - v0;
      order.push_back("waiter");
    });
    auto sleeper = fiberio::spawn([&] {
      fiberio::sleep(1h);
      order.push_back("sleeper");
    });
    fiberio::joinall({waiter, sleeper});
    total = Clock::now() - v0;
    return 0;
  });
  EXPECT_EQ(order, (std::vector<std::string>{"waiter", "sleeper"}));
  EXPECT_GE(waiter_saw, 90ms);
  EXPECT_LT(waiter_saw, 30min);
  EXPECT_EQ(total, 1h);  // once the job is done, the clock jumps again
  EXPECT_LT(std::chrono::steady_clock::now() - real0, 5s);
}

TEST(VirtualTime, NothingToWaitForStillRaisesLoopExit) {
  FIBERIO_WATCHDOG(30);
  on_fresh_thread([] {
    testing_::set_virtual_time(true);
    fiberio::Queue<int> q;
    EXPECT_THROW(q.get(), fiberio::LoopExit);
    // With a sleeper, the clock jumps to it instead, and the get is served.
    auto g = fiberio::spawn([&] {
      fiberio::sleep(24h);
      q.put(5);
    });
    EXPECT_EQ(q.get(), 5);
    g.join();
    return 0;
  });
}

TEST(VirtualTime, KillingASleeperLeavesNoTimerBehind) {
  FIBERIO_WATCHDOG(30);
  on_fresh_thread([] {
    testing_::set_virtual_time(true);
    auto v0 = Clock::now();
    auto g = fiberio::spawn([] { fiberio::sleep(10h); });
    fiberio::yield();  // it sleeps
    g.kill();
    EXPECT_TRUE(g.dead());
    fiberio::sleep(1min);  // the killed sleeper's 10 h deadline is gone: the clock jumps 1 min only
    EXPECT_EQ(Clock::now() - v0, 1min);
    // Virtual deadlines mean nothing in real time: turning it off while a fiber sleeps is refused.
    auto s = fiberio::spawn([] { fiberio::sleep(20ms); });
    fiberio::yield();
    EXPECT_THROW(testing_::set_virtual_time(false), std::logic_error);
    EXPECT_TRUE(testing_::virtual_time());
    s.join();
    testing_::set_virtual_time(false);
    EXPECT_FALSE(testing_::virtual_time());
    return 0;
  });
}

TEST(VirtualTime, SeededAndVirtualSleepsReplayExactly) {
  FIBERIO_WATCHDOG(30);
  auto sleepy = [] {
    std::vector<fiberio::Greenlet<void>> gs;
    for (int i = 0; i < 4; ++i)
      gs.push_back(fiberio::spawn([i] {
        for (int k = 0; k < 3; ++k) fiberio::sleep(std::chrono::seconds((i * 7 + k * 3) % 5));
      }));
    fiberio::joinall(gs);
  };
  auto a = testing_::replay(sleepy, 99), b = testing_::replay(sleepy, 99);
  EXPECT_FALSE(a.failed);
  EXPECT_FALSE(a.trace.empty());
  EXPECT_EQ(a.trace, b.trace);
}

// ---- the race_counter demo's --seed ----
namespace {
// env: assignments put before the command ("FIBERIO_SEED=3 "), args after it.
std::string run_demo(const std::string& args, const std::string& env = "") {
  std::string cmd = env + FIBERIO_BINARY_DIR "/demos/race_counter " + args + " 2>&1";
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  EXPECT_EQ(::pclose(p), 0) << out;
  return fiberio_test::without_sanitizer_notes(out);  // ASan's notes name the pid
}
}  // namespace

TEST(RaceCounterDemo, SeedShowsTheSameInterleavingEveryRun) {
  FIBERIO_WATCHDOG(60);
  ASSERT_EQ(::access(FIBERIO_BINARY_DIR "/demos/race_counter", X_OK), 0) << "build the demos (target race_counter) first";
  for (std::string work : {"", " --yield"}) {
    SCOPED_TRACE(work);
    auto first = run_demo("-n 8 --seed 3" + work);
    EXPECT_NE(first.find("seed 3: greenlets wrote n in this order:"), std::string::npos) << first;
    for (int i = 0; i < 3; ++i) EXPECT_EQ(run_demo("-n 8 --seed 3" + work), first);
    // FIBERIO_SEED in the environment seeds the demo's hub the same way.
    auto out = run_demo("-n 8" + work, "FIBERIO_SEED=3 ");
    EXPECT_EQ(out, first);
  }
  // Other seeds: other interleavings (with yields the schedule alone decides who writes when).
  std::set<std::string> outs;
  for (int seed = 1; seed <= 6; ++seed) {
    auto out = run_demo("-n 8 --yield --seed " + std::to_string(seed));
    auto at = out.find("in this order:");
    ASSERT_NE(at, std::string::npos) << out;
    outs.insert(out.substr(at, out.find('\n', at) - at));
  }
  EXPECT_GE(outs.size(), 4u);
}

// The demo's subtler race: 1,000 plain runs never overdraw; explore() finds the overdraft, names the
// greenlets in its switch trace, and the replay fails the same way with the same trace.
TEST(RaceCounterDemo, ExploreFindsTheOverdraftThatPlainRunsNeverShowAndReplaysIt) {
  FIBERIO_WATCHDOG(120);
  auto out = run_demo("--explore");
  EXPECT_NE(out.find("1000 plain runs: 0 overdrew the account"), std::string::npos) << out;
  EXPECT_NE(out.find("overdrawn: the balance went to -60"), std::string::npos) << out;
  EXPECT_NE(out.find("FIBERIO_SEED="), std::string::npos) << out;
  std::regex trace(R"(switch trace \(\d+ switches[^)]*\):.*\balice\b.*\bbob\b|switch trace \(\d+ switches[^)]*\):.*\bbob\b.*\balice\b)");
  EXPECT_TRUE(std::regex_search(out, trace)) << out;
  EXPECT_NE(out.find(": overdrawn: the balance went to -60; the same switch trace: yes"), std::string::npos) << out;
}

TEST(Schedule, FailedCheckStopsTheExplorationWithItsMessage) {
  FIBERIO_WATCHDOG(60);
  auto r = testing_::explore([] { fiberio::testing::check(false, "the invariant"); }, 10);
  EXPECT_TRUE(r.failed);
  EXPECT_EQ(r.schedules_run, 1u);
  EXPECT_EQ(r.error, "the invariant");
}

TEST(Schedule, FiberioSeedInTheEnvironmentReplaysTheFailure) {
  FIBERIO_WATCHDOG(60);
  if (std::getenv("FIBERIO_SCHEDULE_CHILD")) {
    // The child: explores from another seed, which FIBERIO_SEED overrides with the one failing schedule.
    auto r = testing_::explore(racy_increments, 200, /*seed=*/987654321);
    std::printf("CHILD-REPORT-BEGIN\n%s\nCHILD-REPORT-END\n", r.describe().c_str());
    // FIBERIO_VIRTUAL_TIME=1 puts every new hub on virtual time: a 10 h sleep returns at once.
    bool virtual_on = on_fresh_thread([] {
      auto real0 = std::chrono::steady_clock::now();
      fiberio::sleep(10h);
      return testing_::virtual_time() && std::chrono::steady_clock::now() - real0 < 10s;
    });
    std::printf("VIRTUAL=%d\n", virtual_on ? 1 : 0);
    return;
  }
  auto r = testing_::explore(racy_increments, 200, 1);
  ASSERT_TRUE(r.failed);
  std::string cmd = "FIBERIO_SEED=" + std::to_string(r.seed) +
                    " FIBERIO_VIRTUAL_TIME=1 FIBERIO_SCHEDULE_CHILD=1 /proc/" + std::to_string(::getpid()) +
                    "/exe --gtest_filter=Schedule.FiberioSeedInTheEnvironmentReplaysTheFailure 2>&1";
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  char buf[4096];
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  EXPECT_EQ(::pclose(p), 0) << out;
  auto begin = out.find("CHILD-REPORT-BEGIN\n"), end = out.find("\nCHILD-REPORT-END");
  ASSERT_TRUE(begin != std::string::npos && end != std::string::npos) << out;
  begin += std::strlen("CHILD-REPORT-BEGIN\n");
  // The same seed, error and switch trace (the report numbers the schedule 1: it ran only that one).
  auto expected = r;
  expected.schedules_run = 1;
  EXPECT_EQ(out.substr(begin, end - begin), expected.describe());
  EXPECT_NE(out.find("VIRTUAL=1"), std::string::npos) << out;
}
