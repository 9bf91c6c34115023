// Greenlet API: spawn/get/join/kill/link, joinall/killall, error reporting, many greenlets, stacks.
#include <fiberio/fiberio.hpp>
#include <boost/fiber/mutex.hpp>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/child.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;
using fiberio::Greenlet;
using fiberio::GreenletExit;
using fiberio::GreenletRef;

namespace {

// Sets *flag when destroyed: proves a killed greenlet's stack was unwound.
struct SetOnDestroy {
  bool* flag;
  ~SetOnDestroy() { *flag = true; }
};

// Captures what the error handler is given; restores the default handler on destruction.
struct CapturedErrors {
  struct Entry {
    std::string name;
    std::string description;
  };
  std::vector<Entry> entries;
  CapturedErrors() {
    fiberio::set_error_handler([this](const fiberio::GreenletBase& g, std::exception_ptr e) {
      entries.push_back({g.name(), fiberio::describe_exception(e)});
    });
  }
  ~CapturedErrors() { fiberio::set_error_handler(nullptr); }
};

std::size_t count_map_lines() {
  std::ifstream f("/proc/self/maps");
  std::size_t n = 0;
  for (std::string line; std::getline(f, line);) ++n;
  return n;
}

using fiberio_test::run_child;

}  // namespace

// ---- get / join / status ----

TEST(Greenlet, GetReturnsValue) {
  auto g = fiberio::spawn([](int a, std::string b) { return b + std::to_string(a); }, 7, std::string("x"));
  EXPECT_EQ(g.get(), "x7");
  EXPECT_EQ(g.get(), "x7");  // a finished greenlet keeps its value
  EXPECT_TRUE(g.successful());
  EXPECT_TRUE(g.ready());
  EXPECT_TRUE(g.dead());
  EXPECT_FALSE(g.killed());
  EXPECT_EQ(g.exception(), nullptr);
}

// Arguments are passed as std::thread passes them: std::ref(x) reaches a T& parameter (it did not
// compile: make_tuple unwrapped it, and the moved T&& could not bind to T&), and a move-only argument
// moves in.
namespace {
void add_to(int& total, int n) { total += n; }
}  // namespace

TEST(Greenlet, SpawnPassesStdRefAsAReferenceAndMovesMoveOnlyArguments) {
  int total = 0;
  fiberio::spawn(add_to, std::ref(total), 5).join();
  EXPECT_EQ(total, 5);
  fiberio::spawn_later(std::chrono::milliseconds(1), add_to, std::ref(total), 2).join();
  EXPECT_EQ(total, 7);
  auto g = fiberio::spawn([](std::unique_ptr<int> p, const std::string& s) { return *p + static_cast<int>(s.size()); },
                          std::make_unique<int>(40), std::string("ab"));
  EXPECT_EQ(g.get(), 42);
}

TEST(Greenlet, GetRethrowsSameTypeAndWhat) {
  CapturedErrors errors;  // keep the expected failures off stderr
  auto g = fiberio::spawn([]() -> int { throw std::out_of_range("index 42 out of range"); });
  try {
    g.get();
    FAIL() << "get() did not throw";
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "index 42 out of range");
  }
  EXPECT_TRUE(g.dead());
  EXPECT_FALSE(g.successful());
  EXPECT_FALSE(g.killed());
  ASSERT_NE(g.exception(), nullptr);
  EXPECT_THROW(std::rethrow_exception(g.exception()), std::out_of_range);

  struct Custom {
    int code;
  };
  auto h = fiberio::spawn([] { throw Custom{17}; });
  try {
    h.get();
    FAIL() << "get() did not throw";
  } catch (const Custom& c) {
    EXPECT_EQ(c.code, 17);
  }
}

TEST(Greenlet, GetWithTimeoutThrowsAndGreenletKeepsRunning) {
  bool finished = false;
  auto g = fiberio::spawn([&] {
    fiberio::sleep(150ms);
    finished = true;
    return 5;
  });
  EXPECT_THROW(g.get(20ms), fiberio::TimeoutError);
  EXPECT_FALSE(g.dead());
  EXPECT_FALSE(finished);
  EXPECT_EQ(g.get(5s), 5);
  EXPECT_TRUE(finished);
}

TEST(Greenlet, JoinWithTimeout) {
  auto g = fiberio::spawn([] { fiberio::sleep(100ms); });
  EXPECT_FALSE(g.join(10ms));
  EXPECT_FALSE(g.ready());
  EXPECT_TRUE(g.started());
  EXPECT_TRUE(g.join(5s));
  EXPECT_TRUE(g.ready());
  EXPECT_TRUE(g.join(0ms));  // already finished: true at once
}

TEST(Greenlet, NotRunUntilCallerYields) {
  bool ran = false;
  auto g = fiberio::spawn([&] { ran = true; });
  EXPECT_FALSE(ran);
  fiberio::yield();
  EXPECT_TRUE(ran);
  EXPECT_TRUE(g.dead());
}

// gevent: started is true once the greenlet is scheduled (spawn) and false once it is dead.
TEST(Greenlet, StartedFromSpawnUntilDeath) {
  auto g = fiberio::spawn([] { fiberio::sleep(10ms); });
  EXPECT_TRUE(g.started());  // scheduled, not yet run
  fiberio::yield();
  EXPECT_TRUE(g.started());  // running (sleeping)
  g.join();
  EXPECT_FALSE(g.started());  // dead
  auto k = fiberio::spawn([] {});
  k.kill();  // killed before it ran
  EXPECT_FALSE(k.started());
}

TEST(Greenlet, NameDefaultAndSetName) {
  auto g = fiberio::spawn([] {});
  EXPECT_TRUE(std::regex_match(g.name(), std::regex("Greenlet-[0-9]+"))) << g.name();
  EXPECT_EQ(g.name(), "Greenlet-" + std::to_string(g.id()));
  auto h = fiberio::spawn([] {});
  EXPECT_NE(g.id(), h.id());
  g.set_name("worker");
  EXPECT_EQ(g.name(), "worker");
  GreenletRef r = g;
  EXPECT_EQ(r.name(), "worker");
  fiberio::joinall({g, h});
}

TEST(Greenlet, GetcurrentInsideAndOutside) {
  // gevent: in the main fiber, getcurrent() is the main greenlet — alive, the same every time.
  GreenletRef main = fiberio::getcurrent();
  ASSERT_TRUE(static_cast<bool>(main));
  EXPECT_TRUE(main == fiberio::getcurrent());
  EXPECT_TRUE(main.started());
  EXPECT_FALSE(main.dead());
  EXPECT_FALSE(main.join(0ms));  // it is the caller: never finished
  Greenlet<std::uint64_t> g = fiberio::spawn([] { return fiberio::getcurrent().id(); });
  EXPECT_EQ(g.get(), g.id());
  EXPECT_NE(g.id(), main.id());
  // A greenlet can kill the main greenlet: GreenletExit at main's current suspension point.
  auto killer = fiberio::spawn([main] { main.kill(false); });
  EXPECT_THROW(fiberio::sleep(5s), fiberio::GreenletExit);
  killer.join();
  // A std::thread's main fiber has its own main greenlet.
  std::uint64_t other = 0;
  std::thread([&] { other = fiberio::getcurrent().id(); }).join();
  EXPECT_NE(other, 0u);
  EXPECT_NE(other, main.id());
}

TEST(Greenlet, LinkCallbacks) {
  std::vector<std::string> calls;
  auto g = fiberio::spawn([] { return 3; });
  g.link([&](Greenlet<int> done) { calls.push_back("link:" + std::to_string(done.get())); });
  auto id = g.rawlink([&] { calls.push_back("unlinked"); });
  g.rawlink([&] { calls.push_back("rawlink"); });
  g.unlink(id);
  EXPECT_TRUE(calls.empty());  // nothing runs before the greenlet finishes
  g.join();
  EXPECT_EQ(calls, (std::vector<std::string>{"link:3", "rawlink"}));
  // Linking a finished greenlet runs the callback at once.
  g.link([&](Greenlet<int>) { calls.push_back("late"); });
  EXPECT_EQ(calls.back(), "late");
}

TEST(Greenlet, LinkRunsForFailedAndKilled) {
  CapturedErrors errors;
  int called = 0;
  auto f = fiberio::spawn([] { throw std::runtime_error("x"); });
  f.rawlink([&] { ++called; });
  auto k = fiberio::spawn([] { fiberio::sleep(10s); });
  k.rawlink([&] { ++called; });
  fiberio::yield();
  k.kill();
  f.join();
  EXPECT_EQ(called, 2);
}

// ---- kill ----

TEST(GreenletKill, RunsDestructorsOfKilledGreenlet) {
  auto before = fiberio::live_greenlets();
  bool destroyed = false, after_sleep = false;
  auto g = fiberio::spawn([&] {
    SetOnDestroy guard{&destroyed};
    fiberio::sleep(10s);
    after_sleep = true;
  });
  fiberio::yield();  // let it start and block
  EXPECT_FALSE(destroyed);
  auto t0 = fiberio::Clock::now();
  g.kill();
  EXPECT_LT(fiberio::Clock::now() - t0, 2s);
  EXPECT_TRUE(destroyed);
  EXPECT_FALSE(after_sleep);
  EXPECT_TRUE(g.dead());
  EXPECT_TRUE(g.ready());
  EXPECT_TRUE(g.killed());
  EXPECT_FALSE(g.successful());
  EXPECT_THROW(g.get(), GreenletExit);
  ASSERT_NE(g.exception(), nullptr);
  EXPECT_THROW(std::rethrow_exception(g.exception()), GreenletExit);
  EXPECT_EQ(fiberio::live_greenlets(), before);
}

TEST(GreenletKill, CatchAllCleanupRunsAndRethrows) {
  bool cleaned = false, after = false;
  auto g = fiberio::spawn([&] {
    try {
      fiberio::sleep(10s);
    } catch (...) {
      cleaned = true;
      throw;
    }
    after = true;
  });
  fiberio::yield();
  g.kill();
  EXPECT_TRUE(cleaned);
  EXPECT_FALSE(after);
  EXPECT_TRUE(g.killed());
}

TEST(GreenletKill, CleanupMayBlockWhileUnwinding) {
  bool cleaned = false;
  auto g = fiberio::spawn([&] {
    try {
      fiberio::sleep(10s);
    } catch (...) {
      fiberio::sleep(20ms);  // the kill was consumed: the cleanup may block
      cleaned = true;
      throw;
    }
  });
  fiberio::yield();
  g.kill();
  EXPECT_TRUE(cleaned);
  EXPECT_TRUE(g.killed());
}

TEST(GreenletKill, StdExceptionHandlerDoesNotSwallowGreenletExit) {
  bool swallowed = false, after = false;
  auto g = fiberio::spawn([&] {
    try {
      fiberio::sleep(10s);
    } catch (const std::exception&) {
      swallowed = true;
    }
    after = true;
  });
  fiberio::yield();
  g.kill();
  EXPECT_FALSE(swallowed);
  EXPECT_FALSE(after);
  EXPECT_TRUE(g.killed());
}

TEST(GreenletKill, BeforeStartNeverRunsBody) {
  bool ran = false;
  auto g = fiberio::spawn([&] { ran = true; });
  g.kill();
  EXPECT_FALSE(ran);
  EXPECT_TRUE(g.dead());
  EXPECT_TRUE(g.killed());
  EXPECT_THROW(g.get(), GreenletExit);

  bool later_ran = false;
  auto l = fiberio::spawn_later(10ms, [&] { later_ran = true; });
  fiberio::yield();  // started: sleeping out its delay
  l.kill();
  fiberio::sleep(30ms);
  EXPECT_FALSE(later_ran);
  EXPECT_TRUE(l.killed());
}

TEST(GreenletKill, NonBlockingKillReturnsBeforeUnwindEnds) {
  bool cleaned = false;
  auto g = fiberio::spawn([&] {
    try {
      fiberio::sleep(10s);
    } catch (...) {
      fiberio::sleep(30ms);
      cleaned = true;
      throw;
    }
  });
  fiberio::yield();
  g.kill(/*block=*/false);
  EXPECT_FALSE(g.dead());
  EXPECT_FALSE(cleaned);
  EXPECT_TRUE(g.join(5s));
  EXPECT_TRUE(cleaned);
  EXPECT_TRUE(g.killed());
}

TEST(GreenletKill, BlockingKillWithTimeout) {
  auto g = fiberio::spawn([&] {
    try {
      fiberio::sleep(10s);
    } catch (...) {
      fiberio::sleep(200ms);
      throw;
    }
  });
  fiberio::yield();
  auto t0 = fiberio::Clock::now();
  g.kill(true, 20ms);
  EXPECT_LT(fiberio::Clock::now() - t0, 150ms);
  EXPECT_FALSE(g.dead());
  g.join();
  EXPECT_TRUE(g.killed());
}

TEST(GreenletKill, WhileWaitingOnEvent) {
  fiberio::Event ev;
  bool destroyed = false;
  auto g = fiberio::spawn([&] {
    SetOnDestroy guard{&destroyed};
    ev.wait();
  });
  fiberio::yield();
  g.kill();
  EXPECT_TRUE(destroyed);
  EXPECT_TRUE(g.killed());
  EXPECT_FALSE(ev.is_set());
}

TEST(GreenletKill, WhileJoiningAnother) {
  auto sleeper = fiberio::spawn([] { fiberio::sleep(10s); });
  bool destroyed = false;
  auto joiner = fiberio::spawn([&] {
    SetOnDestroy guard{&destroyed};
    sleeper.join();
  });
  fiberio::yield();
  joiner.kill();
  EXPECT_TRUE(destroyed);
  EXPECT_TRUE(joiner.killed());
  EXPECT_FALSE(sleeper.dead());  // killing the joiner leaves the joined one alone
  sleeper.kill();
  EXPECT_TRUE(sleeper.killed());
}

TEST(GreenletKill, WhileYieldingInALoop) {
  long spins = 0;
  auto g = fiberio::spawn([&] {
    for (;;) {
      ++spins;
      fiberio::yield();
    }
  });
  for (int i = 0; i < 5; ++i) fiberio::yield();
  g.kill();
  EXPECT_TRUE(g.killed());
  EXPECT_GT(spins, 0);
  auto seen = spins;
  fiberio::yield();
  EXPECT_EQ(spins, seen);
}

TEST(GreenletKill, WhileWaitingOnBoostPrimitive) {
  // A greenlet parked outside fiberio (a Boost.Fiber primitive) cannot be woken by kill; the kill is
  // delivered at its next fiberio suspension point, and a blocking kill with a timeout returns.
  boost::fibers::mutex m;
  std::unique_lock lk(m);
  bool after_lock = false;
  auto g = fiberio::spawn([&] {
    std::lock_guard inner(m);
    after_lock = true;
    fiberio::sleep(10s);
  });
  fiberio::yield();
  g.kill(true, 20ms);
  EXPECT_FALSE(g.dead());
  lk.unlock();
  EXPECT_TRUE(g.join(5s));
  EXPECT_TRUE(after_lock);
  EXPECT_TRUE(g.killed());
}

TEST(GreenletKill, NotificationWinsOverKill) {
  fiberio::Event ev;
  bool woke = false, after_sleep = false;
  auto g = fiberio::spawn([&] {
    woke = ev.wait();
    fiberio::sleep(10s);
    after_sleep = true;
  });
  fiberio::yield();
  ev.set();        // g is now ready with its notification...
  g.kill(false);   // ...and the kill comes after: g sees the event, then dies at its next block
  g.join();
  EXPECT_TRUE(woke);
  EXPECT_FALSE(after_sleep);
  EXPECT_TRUE(g.killed());
}

TEST(GreenletKill, KillSelfThrowsGreenletExit) {
  bool after = false;
  Greenlet<void> g;
  g = fiberio::spawn([&] {
    fiberio::getcurrent().kill();
    after = true;
  });
  g.join();
  EXPECT_FALSE(after);
  EXPECT_TRUE(g.killed());
}

TEST(GreenletKill, KilledIsNotReportedAsError) {
  CapturedErrors errors;
  auto g = fiberio::spawn([] { fiberio::sleep(10s); });
  fiberio::yield();
  g.kill();
  EXPECT_TRUE(errors.entries.empty());
}

TEST(GreenletKill, FromAnotherThreadIsRefused) {
  auto g = fiberio::spawn([] { fiberio::sleep(10s); });
  fiberio::yield();
  bool refused = false;
  std::thread t([&] {
    try {
      g.kill();
    } catch (const std::logic_error&) {
      refused = true;
    }
  });
  t.join();
  EXPECT_TRUE(refused);
  g.kill();
}

// ---- error reporting ----

TEST(GreenletErrors, ReportedAtOnceWithNameTypeAndWhat) {
  CapturedErrors errors;
  auto g = fiberio::spawn([] {
    fiberio::sleep(5ms);
    throw std::invalid_argument("bad thing 7");
  });
  g.set_name("parser");
  // Nobody calls get(): the report comes when the greenlet dies.
  fiberio::sleep(50ms);
  ASSERT_EQ(errors.entries.size(), 1u);
  EXPECT_EQ(errors.entries[0].name, "parser");
  EXPECT_EQ(errors.entries[0].description, "std::invalid_argument: bad thing 7");
  EXPECT_TRUE(g.dead());
}

TEST(GreenletErrors, DefaultHandlerPrintsToStderr) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  std::fflush(stderr);
  int saved = ::dup(2);
  ::dup2(p[1], 2);
  auto g = fiberio::spawn([] { throw std::runtime_error("kaboom 99"); });
  g.join();
  fiberio::spawn([] { fiberio::sleep(10s); }).kill();  // a kill prints nothing
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  ::close(p[1]);
  std::string text;
  char buf[1024];
  for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) > 0;) text.append(buf, static_cast<std::size_t>(n));
  ::close(p[0]);
  EXPECT_EQ(fiberio_test::without_sanitizer_notes(text), "fiberio: " + g.name() + " failed with std::runtime_error: kaboom 99\n");
}

TEST(GreenletErrors, ThrowingLinkCallbackIsReportedNotFatal) {
  CapturedErrors errors;
  auto g = fiberio::spawn([] { return 1; });
  g.rawlink([] { throw std::runtime_error("link failed"); });
  bool second = false;
  g.rawlink([&] { second = true; });
  EXPECT_EQ(g.get(), 1);
  EXPECT_TRUE(second);
  ASSERT_EQ(errors.entries.size(), 1u);
  EXPECT_EQ(errors.entries[0].description, "std::runtime_error: link failed");
}

// ---- joinall / killall ----

TEST(Joinall, CompletionOrder) {
  auto a = fiberio::spawn([] { fiberio::sleep(60ms); return 1; });
  auto b = fiberio::spawn([] { fiberio::sleep(10ms); return 2; });
  auto c = fiberio::spawn([] { fiberio::sleep(35ms); return 3; });
  auto done = fiberio::joinall({a, b, c});
  ASSERT_EQ(done.size(), 3u);
  EXPECT_TRUE(done[0] == b);
  EXPECT_TRUE(done[1] == c);
  EXPECT_TRUE(done[2] == a);
}

TEST(Joinall, AlreadyFinishedComeFirstInGivenOrder) {
  auto slow = fiberio::spawn([] { fiberio::sleep(20ms); });
  auto x = fiberio::spawn([] {});
  auto y = fiberio::spawn([] {});
  fiberio::yield();
  auto done = fiberio::joinall({slow, y, x});
  ASSERT_EQ(done.size(), 3u);
  EXPECT_TRUE(done[0] == y);
  EXPECT_TRUE(done[1] == x);
  EXPECT_TRUE(done[2] == slow);
}

TEST(Joinall, Count) {
  auto a = fiberio::spawn([] { fiberio::sleep(10s); });
  auto b = fiberio::spawn([] { fiberio::sleep(5ms); });
  auto c = fiberio::spawn([] { fiberio::sleep(10ms); });
  auto done = fiberio::joinall({a, b, c}, {}, false, 2);
  ASSERT_EQ(done.size(), 2u);
  EXPECT_TRUE(done[0] == b);
  EXPECT_TRUE(done[1] == c);
  EXPECT_FALSE(a.dead());
  a.kill();
}

TEST(Joinall, Timeout) {
  auto a = fiberio::spawn([] { fiberio::sleep(10s); });
  auto b = fiberio::spawn([] { fiberio::sleep(5ms); });
  auto t0 = fiberio::Clock::now();
  auto done = fiberio::joinall({a, b}, 50ms);
  EXPECT_LT(fiberio::Clock::now() - t0, 2s);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_TRUE(done[0] == b);
  EXPECT_FALSE(a.dead());
  a.kill();
}

TEST(Joinall, RaiseErrorRethrowsFirstFailure) {
  CapturedErrors errors;
  auto ok = fiberio::spawn([] { fiberio::sleep(1ms); return 1; });
  auto first = fiberio::spawn([] {
    fiberio::sleep(10ms);
    throw std::domain_error("first failure");
  });
  auto second = fiberio::spawn([] {
    fiberio::sleep(40ms);
    throw std::logic_error("second failure");
  });
  try {
    fiberio::joinall({ok, first, second}, {}, true);
    FAIL() << "joinall did not throw";
  } catch (const std::domain_error& e) {
    EXPECT_STREQ(e.what(), "first failure");
  }
  EXPECT_FALSE(second.dead());  // it stopped waiting at the first failure
  second.join();
  // Without raise_error, failures are just returned.
  EXPECT_EQ(fiberio::joinall({ok, first, second}).size(), 3u);
}

TEST(Joinall, KillIsNotAFailure) {
  auto k = fiberio::spawn([] { fiberio::sleep(10s); });
  fiberio::yield();
  k.kill();
  EXPECT_NO_THROW(fiberio::joinall({k}, {}, true));
}

TEST(Joinall, MixedResultTypesInBracedList) {
  Greenlet<int> gi = fiberio::spawn([] { return 1; });
  Greenlet<void> gv = fiberio::spawn([] { fiberio::sleep(1ms); });
  Greenlet<std::string> gs = fiberio::spawn([] { return std::string("s"); });
  auto done = fiberio::joinall({gi, gv, gs});
  EXPECT_EQ(done.size(), 3u);
  EXPECT_EQ(gi.get(), 1);
  EXPECT_EQ(gs.get(), "s");
}

TEST(Joinall, VectorOfGreenlets) {
  std::vector<Greenlet<int>> gs;
  for (int i = 0; i < 50; ++i)
    gs.push_back(fiberio::spawn([i] {
      fiberio::sleep(std::chrono::milliseconds(i % 5));
      return i * i;
    }));
  auto done = fiberio::joinall(gs);
  EXPECT_EQ(done.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(gs[i].get(), i * i);
}

TEST(Killall, KillsAllAndWaits) {
  auto before = fiberio::live_greenlets();
  int destroyed_count = 0;
  struct Count {
    int* n;
    ~Count() { ++*n; }
  };
  std::vector<Greenlet<void>> gs;
  for (int i = 0; i < 20; ++i)
    gs.push_back(fiberio::spawn([&] {
      Count c{&destroyed_count};
      fiberio::sleep(10s);
    }));
  fiberio::yield();
  fiberio::killall(gs);
  EXPECT_EQ(destroyed_count, 20);
  for (auto& g : gs) EXPECT_TRUE(g.killed());
  EXPECT_EQ(fiberio::live_greenlets(), before);

  // Non-blocking killall, then join.
  Greenlet<void> a = fiberio::spawn([] { fiberio::sleep(10s); });
  Greenlet<int> b = fiberio::spawn([] { fiberio::sleep(10s); return 0; });
  fiberio::yield();
  fiberio::killall({a, b}, false);
  EXPECT_FALSE(a.dead());
  fiberio::joinall({a, b});
  EXPECT_TRUE(a.killed());
  EXPECT_TRUE(b.killed());
}

// ---- stacks and scale ----

TEST(GreenletStacks, SizeOptionIsHonoured) {
  // 600 KiB of locals: fits a 1 MiB stack, and must not fit a 128 KiB one.
  auto touch = [](std::size_t bytes) {
    return fiberio::spawn([bytes] {
      // Touch from the top down, as a growing stack does, so an overflow meets the guard page first.
      auto* p = static_cast<volatile char*>(__builtin_alloca(bytes));
      for (std::size_t i = bytes; i >= 512; i -= 512) p[i - 1] = 1;
      return static_cast<int>(p[bytes / 2 - 1]);
    });
  };
  auto big = run_child([&] {
    auto o = fiberio::stack_options();
    o.size = 1024 * 1024;
    fiberio::set_stack_options(o);
    return touch(600 * 1024).get() == 1 ? 0 : 1;
  });
  EXPECT_TRUE(WIFEXITED(big.status) && WEXITSTATUS(big.status) == 0) << big.err;

  auto small = run_child([&] {
    auto o = fiberio::stack_options();
    o.size = 64 * 1024;
    // A new size takes a new slab: let it have guards even when the tests before this one (in a
    // shuffled order, the scale tests) used up the process's guard budget.
    o.guard_budget = std::size_t{1} << 40;
    fiberio::set_stack_options(o);
    return touch(200 * 1024).get() == 1 ? 0 : 1;
  });
  EXPECT_TRUE(WIFSIGNALED(small.status)) << small.status;
  EXPECT_NE(small.err.find("fiber stack overflow"), std::string::npos) << small.err;
}


TEST(GreenletScale, HundredThousandLiveGreenlets) {
  constexpr int kN = 100'000;
  auto before = fiberio::live_greenlets();
  fiberio::Event go;
  int waiting = 0, finished = 0;
  std::vector<Greenlet<void>> gs;
  gs.reserve(kN);
  for (int i = 0; i < kN; ++i)
    gs.push_back(fiberio::spawn([&] {
      ++waiting;
      go.wait();
      ++finished;
    }));
  fiberio::yield();  // every one runs once and parks on the Event
  EXPECT_EQ(waiting, kN);
  EXPECT_EQ(finished, 0);
  EXPECT_EQ(fiberio::live_greenlets(), before + kN);
  go.set();
  EXPECT_EQ(fiberio::joinall(gs).size(), static_cast<std::size_t>(kN));
  EXPECT_EQ(finished, kN);
  EXPECT_EQ(fiberio::live_greenlets(), before);
}

TEST(GreenletScale, StacksAreRecycled) {
  auto round = [] {
    fiberio::Event go;
    std::vector<Greenlet<void>> gs;
    gs.reserve(10'000);
    for (int i = 0; i < 10'000; ++i) gs.push_back(fiberio::spawn([&] { go.wait(); }));
    fiberio::yield();
    go.set();
    fiberio::joinall(gs);
    // Finished fibers are freed by Boost.Fiber's dispatcher (after a few exits or when the hub is
    // idle): let it run, so every stack is back in the pool.
    fiberio::sleep(1ms);
  };
  round();
  auto maps = count_map_lines();
  auto mapped = fiberio::detail::Hub::current().stacks().mapped_bytes();
  round();
#if !defined(__SANITIZE_ADDRESS__)
  // (Under ASan its own allocator maps new regions for the round's objects while the last round's sit
  // in its quarantine; the pool's own count below is the exact check there.)
  EXPECT_LE(count_map_lines(), maps);
#else
  (void)maps;
#endif
  EXPECT_EQ(fiberio::detail::Hub::current().stacks().mapped_bytes(), mapped);
}

TEST(Greenlet, MoveOnlyResultIsMovedOutByGet) {
  auto g = fiberio::spawn([] { return std::make_unique<int>(42); });
  std::unique_ptr<int> p = g.get();
  ASSERT_TRUE(p);
  EXPECT_EQ(*p, 42);
  try {
    g.get();
    FAIL() << "a second get() of a move-only result must not hand out a moved-from value";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("already taken"), std::string::npos) << e.what();
  }
  // A copyable result can be read again and again.
  auto s = fiberio::spawn([] { return std::string("again"); });
  EXPECT_EQ(s.get(), "again");
  EXPECT_EQ(s.get(), "again");
}

// Out of memory, killing must still work: kill() used to allocate its GreenletExit per call, and with
// the address space exhausted killall() of 3,000 greenlets ended in std::terminate.
TEST(GreenletKill, KillallWithMemoryExhaustedNeitherAllocatesNorTerminates) {
  auto res = fiberio_test::run_child([] {
    std::vector<fiberio::GreenletRef> gs;
    gs.reserve(3000);
    for (int i = 0; i < 3000; ++i) gs.push_back(fiberio::spawn([] { fiberio::sleep(60s); }));
    fiberio::sleep(10ms);  // all started and parked
    // The address-space limit just above what is mapped now, then the rest eaten by malloc.
    long pages = 0;
    if (FILE* f = std::fopen("/proc/self/statm", "r")) {
      if (std::fscanf(f, "%ld", &pages) != 1) pages = 0;
      std::fclose(f);
    }
    if (pages <= 0) return 3;
    static void* eaten[1 << 20];
    rlimit lim{};
    lim.rlim_cur = lim.rlim_max = static_cast<rlim_t>(pages) * static_cast<rlim_t>(::sysconf(_SC_PAGESIZE)) + (4 << 20);
    if (::setrlimit(RLIMIT_AS, &lim) != 0) return 4;
    std::size_t n = 0;
    while (n < (1 << 20) && (eaten[n] = std::malloc(4096))) ++n;
    while (n < (1 << 20) && (eaten[n] = std::malloc(64))) ++n;
    fiberio::killall(gs);
    int alive = 0;
    for (auto& g : gs) alive += !g.killed();
    for (std::size_t i = 0; i < n; ++i) std::free(eaten[i]);
    return alive == 0 ? 0 : 2;
  });
  EXPECT_TRUE(res.exited_ok()) << res.describe();
}

// The default handler is rate-limited: a flood of failures (a client resetting every connection)
// prints at most 20 lines a second per thread, then one line that counts the rest.
TEST(GreenletErrors, DefaultHandlerDoesNotFloodTheLog) {
  auto res = fiberio_test::run_child([] {
    std::vector<fiberio::Greenlet<void>> gs;
    for (int i = 0; i < 1000; ++i) gs.push_back(fiberio::spawn([] { throw std::runtime_error("reset"); }));
    fiberio::joinall(gs);
    fiberio::sleep(1100ms);
    fiberio::spawn([] { throw std::runtime_error("later"); }).join();
    return 0;
  });
  ASSERT_TRUE(res.exited_ok()) << res.describe();
  std::size_t lines = std::count(res.err.begin(), res.err.end(), '\n');
  EXPECT_LE(lines, 22u) << res.err.substr(0, 2000);
  // Printed and not printed add up to the 1,000 failures. (Not a fixed 20 + 980: when this test runs
  // in one process after others, the child inherits the current second's count from its parent.)
  std::smatch m;
  ASSERT_TRUE(std::regex_search(res.err, m, std::regex(R"(fiberio: (\d+) more greenlet failure\(s\) on this thread were not printed)")))
      << res.err.substr(0, 2000);
  std::size_t printed = 0;
  for (std::size_t at = 0; (at = res.err.find("failed with std::runtime_error: reset", at)) != std::string::npos; ++at) ++printed;
  EXPECT_LE(printed, 20u);
  EXPECT_EQ(printed + std::stoul(m[1]), 1000u) << res.err.substr(0, 2000);
  EXPECT_NE(res.err.find("failed with std::runtime_error: later"), std::string::npos);
}
