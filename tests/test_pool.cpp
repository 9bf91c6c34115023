// Group and Pool (gevent.pool), plus the race_counter demo run as a child process.
#include <fiberio/fiberio.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/leak_check.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;
using fiberio::Clock;

namespace {

// Tracks how many bodies run at once.
struct Concurrency {
  int running = 0;
  int max_seen = 0;
  void enter() { max_seen = std::max(max_seen, ++running); }
  void leave() { --running; }
};

// Silences the "greenlet failed" report of greenlets that fail on purpose, for one test.
struct QuietErrors {
  int reported = 0;
  QuietErrors() {
    fiberio::set_error_handler([this](const fiberio::GreenletBase&, std::exception_ptr) { ++reported; });
  }
  ~QuietErrors() { fiberio::set_error_handler(nullptr); }
};

}  // namespace

TEST(Pool, RejectsNonPositiveSize) {
  EXPECT_THROW(fiberio::Pool(0), std::invalid_argument);
  EXPECT_THROW(fiberio::Pool(-3), std::invalid_argument);
  fiberio::Pool p(4);
  EXPECT_EQ(p.limit(), 4u);
  EXPECT_EQ(p.free_count(), 4u);
  EXPECT_FALSE(p.full());
}

TEST(Pool, LimitsConcurrency) {
  auto live0 = fiberio::live_greenlets();
  fiberio::Pool pool(3);
  Concurrency c;
  std::size_t max_size = 0;
  for (int i = 0; i < 12; ++i) {
    pool.spawn([&] {
      c.enter();
      fiberio::sleep(5ms);
      c.leave();
    });
    max_size = std::max(max_size, pool.size());
  }
  EXPECT_TRUE(pool.join(5s));
  EXPECT_EQ(c.max_seen, 3);  // never more than the limit, and the limit was reached
  EXPECT_EQ(max_size, 3u);
  EXPECT_EQ(pool.size(), 0u);
  EXPECT_EQ(pool.free_count(), 3u);
  EXPECT_EQ(fiberio::live_greenlets(), live0);
}

TEST(Pool, SpawnBlocksWhileFull) {
  fiberio::Pool pool(2);
  fiberio::Event release;
  pool.spawn([&] { release.wait(); });
  pool.spawn([&] { release.wait(); });
  EXPECT_TRUE(pool.full());
  EXPECT_EQ(pool.free_count(), 0u);
  bool third_ran = false;
  auto spawner = fiberio::spawn([&] {
    auto g = pool.spawn([&] { third_ran = true; });  // blocks here until a slot frees
    g.join();
  });
  fiberio::sleep(30ms);
  EXPECT_FALSE(spawner.dead());
  EXPECT_FALSE(third_ran);
  EXPECT_EQ(pool.size(), 2u);
  release.set();
  EXPECT_TRUE(spawner.join(5s));
  EXPECT_TRUE(third_ran);
  EXPECT_TRUE(pool.join(5s));
}

TEST(Pool, WaitAvailableTimesOutThenSeesFreeSlot) {
  fiberio::Pool pool(1);
  fiberio::Event release;
  auto g = pool.spawn([&] { release.wait(); });
  auto t0 = Clock::now();
  EXPECT_EQ(pool.wait_available(30ms), 0u);
  EXPECT_GE(Clock::now() - t0, 25ms);
  EXPECT_EQ(pool.wait_available(0ms), 0u);
  auto setter = fiberio::spawn([&] {
    fiberio::sleep(10ms);
    release.set();
  });
  EXPECT_EQ(pool.wait_available(5s), 1u);
  EXPECT_TRUE(g.dead());
  setter.join();
}

TEST(Pool, WaitAvailablePassesWakeUpToBlockedSpawner) {
  // A wait_available() waiter and a blocked spawn() are both woken by one freed slot.
  fiberio::Pool pool(1);
  fiberio::Event release;
  pool.spawn([&] { release.wait(); });
  std::size_t seen = 0;
  auto watcher = fiberio::spawn([&] { seen = pool.wait_available(); });
  bool spawned = false;
  auto spawner = fiberio::spawn([&] { pool.spawn([&] { spawned = true; }).join(); });
  fiberio::sleep(10ms);
  release.set();
  EXPECT_TRUE(watcher.join(5s));
  EXPECT_TRUE(spawner.join(5s));
  EXPECT_EQ(seen, 1u);
  EXPECT_TRUE(spawned);
}

TEST(Pool, AddBlocksWhileFullAndTimesOut) {
  fiberio::Pool pool(1);
  fiberio::Event release;
  pool.spawn([&] { release.wait(); });
  auto outsider = fiberio::spawn([&] { release.wait(); });
  EXPECT_THROW(pool.add(outsider, 20ms), fiberio::TimeoutError);
  EXPECT_FALSE(pool.contains(outsider));
  auto adder = fiberio::spawn([&] { pool.add(outsider); });
  fiberio::sleep(10ms);
  EXPECT_FALSE(adder.dead());  // still waiting for the slot
  release.set();
  EXPECT_TRUE(adder.join(5s));
  EXPECT_TRUE(pool.join(5s));
  EXPECT_TRUE(outsider.dead());
}

TEST(Pool, DiscardFreesASlotWithoutKilling) {
  fiberio::Pool pool(1);
  fiberio::Event release;
  auto g = pool.spawn([&] { release.wait(); });
  EXPECT_TRUE(pool.full());
  EXPECT_TRUE(pool.discard(g));
  EXPECT_FALSE(pool.discard(g));
  EXPECT_FALSE(pool.contains(g));
  EXPECT_EQ(pool.free_count(), 1u);
  EXPECT_FALSE(g.dead());
  auto h = pool.spawn([] { return 7; });  // does not block: the slot is free
  EXPECT_EQ(h.get(), 7);
  release.set();
  EXPECT_TRUE(g.join(5s));
  EXPECT_TRUE(g.successful());
}

TEST(Group, TracksMembersUntilTheyFinish) {
  auto live0 = fiberio::live_greenlets();
  fiberio::Group group;
  EXPECT_TRUE(group.empty());
  std::vector<fiberio::Greenlet<int>> gs;
  for (int i = 0; i < 5; ++i) gs.push_back(group.spawn([i] {
    fiberio::sleep(std::chrono::milliseconds(5 * i));
    return i;
  }));
  EXPECT_EQ(group.size(), 5u);
  EXPECT_TRUE(group.contains(gs[3]));
  EXPECT_EQ(group.greenlets().size(), 5u);
  EXPECT_TRUE(group.join());
  EXPECT_TRUE(group.empty());
  EXPECT_FALSE(group.contains(gs[3]));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(gs[i].get(), i);
  // A finished greenlet added later leaves at once; adding twice is a no-op.
  group.add(gs[0]);
  EXPECT_EQ(group.size(), 0u);
  fiberio::Event release;
  auto g = fiberio::spawn([&] { release.wait(); });
  group.add(g);
  group.add(g);
  EXPECT_EQ(group.size(), 1u);
  release.set();
  EXPECT_TRUE(group.join(5s));
  EXPECT_EQ(fiberio::live_greenlets(), live0);
}

TEST(Group, JoinTimesOut) {
  fiberio::Group group;
  fiberio::Event release;
  group.spawn([&] { release.wait(); });
  auto t0 = Clock::now();
  EXPECT_FALSE(group.join(20ms));
  EXPECT_GE(Clock::now() - t0, 15ms);
  EXPECT_EQ(group.size(), 1u);
  release.set();
  EXPECT_TRUE(group.join(5s));
}

TEST(Group, JoinRaiseErrorRethrowsAFailure) {
  QuietErrors quiet;
  fiberio::Group group;
  bool slow_done = false;
  group.spawn([&] {
    fiberio::sleep(30ms);
    slow_done = true;
  });
  group.spawn([] {
    fiberio::sleep(5ms);
    throw std::runtime_error("boom");
  });
  try {
    group.join({}, /*raise_error=*/true);
    ADD_FAILURE() << "join(raise_error) did not rethrow";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "boom");
  }
  EXPECT_TRUE(slow_done);  // as gevent: it waited for the whole group first
  EXPECT_EQ(quiet.reported, 1);

  // Without raise_error the failure is not rethrown; a kill is never a failure.
  group.spawn([] { throw std::runtime_error("ignored"); });
  EXPECT_TRUE(group.join());
  auto victim = group.spawn([] { fiberio::sleep(10s); });
  auto killer = fiberio::spawn([&] { victim.kill(); });
  EXPECT_TRUE(group.join(5s, /*raise_error=*/true));
  EXPECT_TRUE(victim.killed());
  killer.join();
}

TEST(Group, KillKillsEveryMemberAndWaits) {
  auto live0 = fiberio::live_greenlets();
  fiberio::Group group;
  int unwound = 0;
  struct Unwind {
    int& n;
    ~Unwind() { ++n; }
  };
  for (int i = 0; i < 6; ++i) group.spawn([&] {
    Unwind u{unwound};
    fiberio::sleep(10s);
  });
  fiberio::sleep(1ms);  // let them start
  auto t0 = Clock::now();
  group.kill();
  EXPECT_LT(Clock::now() - t0, 1s);
  EXPECT_EQ(group.size(), 0u);
  EXPECT_EQ(unwound, 6);
  EXPECT_EQ(fiberio::live_greenlets(), live0);
}

TEST(Group, KillFromAMemberSparesItself) {
  fiberio::Group group;
  int killed = 0;
  for (int i = 0; i < 3; ++i) group.spawn([&] {
    try {
      fiberio::sleep(10s);
    } catch (const fiberio::GreenletExit&) {
      ++killed;
      throw;
    }
  });
  auto boss = group.spawn([&] {
    fiberio::sleep(1ms);
    group.kill();
    return group.size();  // only itself left
  });
  EXPECT_EQ(boss.get(), 1u);
  EXPECT_EQ(killed, 3);
  EXPECT_TRUE(group.join(5s));
}

TEST(Group, RejectsGreenletsOfAnotherThread) {
  fiberio::GreenletRef foreign;
  std::thread t([&] {
    auto g = fiberio::spawn([] { return 1; });
    g.join();
    foreign = g;
  });
  t.join();
  fiberio::Group group;
  EXPECT_THROW(group.add(foreign), std::invalid_argument);
  EXPECT_THROW(group.add(fiberio::GreenletRef()), std::invalid_argument);
  EXPECT_EQ(group.size(), 0u);
}

TEST(Group, MapKeepsInputOrderAndRunsConcurrently) {
  fiberio::Pool pool(3);
  Concurrency c;
  std::vector<int> items{1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  auto t0 = Clock::now();
  auto out = pool.map(
      [&](int i) {
        c.enter();
        fiberio::sleep(std::chrono::milliseconds(2 * (11 - i)));  // later items finish first
        c.leave();
        return i * i;
      },
      items);
  EXPECT_LT(Clock::now() - t0, 2s);
  ASSERT_EQ(out.size(), items.size());
  for (std::size_t k = 0; k < items.size(); ++k) EXPECT_EQ(out[k], items[k] * items[k]);
  EXPECT_EQ(c.max_seen, 3);
  EXPECT_EQ(pool.size(), 0u);

  fiberio::Group group;  // unlimited: all at once
  Concurrency all;
  group.map(
      [&](int) {
        all.enter();
        fiberio::sleep(5ms);
        all.leave();
      },
      items);
  EXPECT_EQ(all.max_seen, 10);
}

TEST(Group, MapRethrowsAndKillsTheRest) {
  QuietErrors quiet;
  auto live0 = fiberio::live_greenlets();
  fiberio::Pool pool(4);
  int unwound = 0;
  struct Unwind {
    int& n;
    ~Unwind() { ++n; }
  };
  std::vector<int> items{0, 1, 2, 3, 4, 5, 6, 7};
  auto t0 = Clock::now();
  try {
    pool.map(
        [&](int i) {
          Unwind u{unwound};
          if (i == 2) {
            fiberio::sleep(5ms);
            throw std::out_of_range("item 2");
          }
          fiberio::sleep(10s);
          return i;
        },
        items);
    ADD_FAILURE() << "map did not rethrow";
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "item 2");
  }
  EXPECT_LT(Clock::now() - t0, 2s);
  EXPECT_EQ(pool.size(), 0u);
  // Items 0..3 started (pool of 4); item 2 failed, freeing one slot, so at most one more started.
  EXPECT_GE(unwound, 4);
  EXPECT_LE(unwound, 5);
  EXPECT_EQ(fiberio::live_greenlets(), live0);
}

TEST(Group, ImapUnorderedYieldsInCompletionOrder) {
  fiberio::Group group;
  std::vector<int> delays{80, 20, 60, 40};  // all start together: they finish 20 ms apart
  std::vector<int> got;
  for (int v : group.imap_unordered(
           [](int ms) {
             fiberio::sleep(std::chrono::milliseconds(ms));
             return ms;
           },
           delays))
    got.push_back(v);
  EXPECT_EQ(got, (std::vector<int>{20, 40, 60, 80}));
  EXPECT_EQ(group.size(), 0u);
}

TEST(Group, ImapUnorderedUnderAPoolStreamsAndStopsOnBreak) {
  auto live0 = fiberio::live_greenlets();
  fiberio::Pool pool(2);
  Concurrency c;
  int taken = 0;
  {
    // An rvalue range is moved into the iteration.
    auto results = pool.imap_unordered(
        [&](int i) {
          c.enter();
          fiberio::sleep(3ms);
          c.leave();
          return i;
        },
        std::vector<int>(50, 1));
    for (int v : results) {
      taken += v;
      if (taken == 3) break;  // drop the rest: the feeder and running calls are killed
    }
  }
  EXPECT_EQ(taken, 3);
  EXPECT_EQ(c.max_seen, 2);
  EXPECT_EQ(pool.size(), 0u);
  EXPECT_EQ(fiberio::live_greenlets(), live0);
}

TEST(Group, ImapUnorderedRethrowsAFailedCall) {
  QuietErrors quiet;
  fiberio::Pool pool(3);
  std::vector<int> items{1, 2, 3};
  std::vector<int> got;
  auto it = pool.imap_unordered(
      [](int i) {
        fiberio::sleep(std::chrono::milliseconds(15 * i));
        if (i == 2) throw std::invalid_argument("bad item 2");
        return i;
      },
      items);
  EXPECT_EQ(it.next(), std::optional<int>(1));
  EXPECT_THROW(it.next(), std::invalid_argument);
  EXPECT_EQ(it.next(), std::optional<int>(3));
  EXPECT_EQ(it.next(), std::nullopt);
}

TEST(Group, ApplyAndBracedLists) {
  fiberio::Pool pool(1);
  EXPECT_EQ(pool.apply([](int a, int b) { return a * b; }, 6, 7), 42);
  EXPECT_EQ(pool.map([](int i) { return -i; }, {1, 2, 3}), (std::vector<int>{-1, -2, -3}));
  int sum = 0;
  for (int v : pool.imap_unordered([](int i) { return i * 10; }, {1, 2, 3})) sum += v;
  EXPECT_EQ(sum, 60);
  EXPECT_EQ(pool.size(), 0u);
}

// ---- the race_counter demo ----
namespace {
struct DemoRun {
  long expected = -1, got = -1;
  std::string output;
  int status = -1;
};

DemoRun run_race_counter(const std::string& args) {
  DemoRun r;
  std::string cmd = std::string(FIBERIO_BINARY_DIR "/demos/race_counter ") + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) r.output += buf;
  r.status = ::pclose(p);
  std::smatch m;
  if (std::regex_search(r.output, m, std::regex(R"(expected (\d+), got (\d+))"))) {
    r.expected = std::stol(m[1]);
    r.got = std::stol(m[2]);
  }
  return r;
}
}  // namespace

TEST(RaceCounterDemo, LosesUpdatesWithoutLockAndNoneWithLock) {
  ASSERT_EQ(::access(FIBERIO_BINARY_DIR "/demos/race_counter", X_OK), 0)
      << "build the demos (target race_counter) first";
  std::size_t fds0 = fiberio_test::count_fds();

  auto racy = run_race_counter("-n 10");
  EXPECT_EQ(racy.status, 0) << racy.output;
  EXPECT_EQ(racy.expected, 10) << racy.output;
  EXPECT_LT(racy.got, 10) << racy.output;
  EXPECT_GE(racy.got, 1) << racy.output;
  EXPECT_NE(racy.output.find(std::to_string(10 - racy.got) + " update"), std::string::npos) << racy.output;
  EXPECT_NE(racy.output.find("lost"), std::string::npos) << racy.output;
  EXPECT_NE(racy.output.find("time taken"), std::string::npos) << racy.output;

  auto locked = run_race_counter("-n 10 --lock");
  EXPECT_EQ(locked.status, 0) << locked.output;
  EXPECT_EQ(locked.expected, 10) << locked.output;
  EXPECT_EQ(locked.got, 10) << locked.output;
  EXPECT_NE(locked.output.find("no update lost"), std::string::npos) << locked.output;

  auto many = run_race_counter("--greenlets 200 --yield");
  EXPECT_EQ(many.expected, 200) << many.output;
  EXPECT_LT(many.got, 200) << many.output;

  auto bad = run_race_counter("-n zero");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("race_counter: error: "), std::string::npos) << bad.output;
  auto help = run_race_counter("--help");
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.output.find("usage:"), std::string::npos) << help.output;

  EXPECT_EQ(fiberio_test::count_fds(), fds0);
}
