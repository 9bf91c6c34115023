// The blocking monitor (fiberio/monitor.hpp): one report per stall naming the greenlet, its id and
// its symbolized stack, then one "ended" report; nothing for a hub that switches; only the stalled
// hub of several; no thread while off; thread exit and fork while monitored; blocking calls
// interrupted by nothing (their full time, their data).
#include <fiberio/fiberio.hpp>
#include <fiberio/monitor.hpp>
#include <fiberio/detail/monitor.hpp>
#include <fmt/format.h>

#include <dirent.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/child.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;
using fiberio::StallReport;

namespace {

pid_t gettid_() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

// Reports collected by the test's handler.
struct Reports {
  std::mutex mu;
  std::vector<StallReport> all;
  Reports() {
    fiberio::set_stall_handler([this](const StallReport& r) {
      std::lock_guard lk(mu);
      all.push_back(r);
    });
  }
  ~Reports() { fiberio::set_stall_handler(nullptr); }
  std::vector<StallReport> of(pid_t tid, StallReport::Kind kind) {
    std::lock_guard lk(mu);
    std::vector<StallReport> out;
    for (auto& r : all)
      if (r.thread_id == tid && r.kind == kind) out.push_back(r);
    return out;
  }
  // Waits (switching) until `n` reports of that kind arrived for tid: symbolizing the first stack
  // of a process reads its debug info, which takes a while under a sanitizer.
  void wait_for(pid_t tid, StallReport::Kind kind, std::size_t n, std::chrono::seconds limit = 10s) {
    auto give_up = std::chrono::steady_clock::now() + limit;
    while (of(tid, kind).size() < n && std::chrono::steady_clock::now() < give_up) fiberio::sleep(10ms);
  }
  std::string dump() {
    std::lock_guard lk(mu);
    std::string s;
    for (auto& r : all) s += r.format();
    return s;
  }
};

bool stack_has(const StallReport& r, const std::string& fn) {
  for (auto& f : r.stack)
    if (f.function.find(fn) != std::string::npos) return true;
  return false;
}

// Blocks its thread in the kernel, past the shims and libc: what a library's raw system call does.
[[gnu::noinline]] void monitor_test_raw_nanosleep(std::chrono::milliseconds d) {
  timespec ts{static_cast<time_t>(d.count() / 1000), static_cast<long>(d.count() % 1000) * 1000000L};
  ::syscall(SYS_nanosleep, &ts, nullptr);
  asm volatile("" ::: "memory");  // not a tail call: this frame stays on the stack
}

// Holds its thread in user code.
[[gnu::noinline]] void monitor_test_cpu_loop(std::chrono::milliseconds d) {
  auto end = std::chrono::steady_clock::now() + d;
  volatile std::uint64_t x = 0;
  while (std::chrono::steady_clock::now() < end) x = x + 1;
  asm volatile("" ::: "memory");
}

// Lets the monitor see the hub move again (the ended report), switching all along.
void settle(std::chrono::milliseconds d = 300ms) { fiberio::sleep(d); }

std::size_t count_threads() {
  std::size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/task")) {
    while (auto* e = ::readdir(d))
      if (e->d_name[0] != '.') ++n;
    ::closedir(d);
  }
  return n;
}

// With the monitor on (100 ms), runs `body` in a greenlet named `name` on this hub and returns the
// one stall reported for it, once its end was reported too.
struct OneStall {
  StallReport report;
  std::uint64_t greenlet_id;
  std::string spawned_here;  // "test_monitor.cpp:N", the line that spawned it
};
template <class Body>
OneStall one_stall(Reports& reports, const char* name, Body body) {
  fiberio::enable_monitor(100ms);
  OneStall out;
  out.spawned_here = fmt::format("test_monitor.cpp:{}", __LINE__ + 1);
  auto g = fiberio::spawn(body);
  g.set_name(name);
  out.greenlet_id = g.id();
  g.join();
  reports.wait_for(gettid_(), StallReport::Kind::Ended, 1);
  settle();
  auto stalls = reports.of(gettid_(), StallReport::Kind::Stalled);
  EXPECT_EQ(stalls.size(), 1u) << reports.dump();
  if (!stalls.empty()) out.report = stalls[0];
  return out;
}

TEST(Monitor, KernelBlockedGreenletReportedOnceWithNameIdAndStack) {
  FIBERIO_WATCHDOG(20);
  Reports reports;
  auto [r, id, spawned_here] = one_stall(reports, "stall-sleeper", [] { monitor_test_raw_nanosleep(300ms); });
  EXPECT_EQ(r.greenlet_name, "stall-sleeper") << r.format();
  EXPECT_EQ(r.greenlet_id, id) << r.format();
  EXPECT_GE(r.duration, 100ms) << r.format();
  EXPECT_EQ(r.syscall, SYS_nanosleep) << r.format();
  EXPECT_TRUE(r.scanned) << r.format();
  EXPECT_TRUE(stack_has(r, "monitor_test_raw_nanosleep")) << r.format();
  EXPECT_NE(r.spawned_at.find(spawned_here), std::string::npos) << r.format();
  EXPECT_NE(r.format().find("(spawned at "), std::string::npos) << r.format();
  auto ends = reports.of(gettid_(), StallReport::Kind::Ended);
  ASSERT_EQ(ends.size(), 1u) << reports.dump();
  EXPECT_GE(ends[0].duration, 250ms) << ends[0].format();
  EXPECT_LT(ends[0].duration, 1000ms) << ends[0].format();
  EXPECT_NE(ends[0].format().find("ended after"), std::string::npos);
}

TEST(Monitor, CpuLoopReportedWithItsUnwoundStack) {
  FIBERIO_WATCHDOG(20);
  Reports reports;
  auto [r, id, spawned_here] = one_stall(reports, "fib-on-the-hub", [] { monitor_test_cpu_loop(300ms); });
  EXPECT_EQ(r.greenlet_name, "fib-on-the-hub") << r.format();
  EXPECT_EQ(r.greenlet_id, id);
  EXPECT_EQ(r.syscall, -1) << r.format();
  EXPECT_FALSE(r.scanned) << r.format();  // taken by the signal handler on the thread itself
  EXPECT_TRUE(stack_has(r, "monitor_test_cpu_loop")) << r.format();
  EXPECT_NE(r.spawned_at.find(spawned_here), std::string::npos) << r.format();
  EXPECT_NE(fiberio::monitor_signal(), 0);
  EXPECT_EQ(reports.of(gettid_(), StallReport::Kind::Ended).size(), 1u) << reports.dump();
}

TEST(Monitor, MainFiberStallNamesTheMainGreenlet) {
  FIBERIO_WATCHDOG(20);
  Reports reports;
  fiberio::ensure_hub();
  fiberio::enable_monitor(100ms);
  settle(50ms);
  monitor_test_cpu_loop(300ms);
  reports.wait_for(gettid_(), StallReport::Kind::Ended, 1);
  auto stalls = reports.of(gettid_(), StallReport::Kind::Stalled);
  ASSERT_EQ(stalls.size(), 1u) << reports.dump();
  EXPECT_EQ(stalls[0].greenlet_name, "MainGreenlet") << stalls[0].format();
  EXPECT_TRUE(stalls[0].spawned_at.empty()) << stalls[0].format();  // nobody spawned the main fiber
  EXPECT_TRUE(stack_has(stalls[0], "monitor_test_cpu_loop")) << stalls[0].format();
}

TEST(Monitor, NoReportWhileTheHubSwitches) {
  FIBERIO_WATCHDOG(20);
  Reports reports;
  fiberio::enable_monitor(100ms);
  auto sleeper = fiberio::spawn([] { fiberio::sleep(1s); });
  auto yielder = fiberio::spawn([] {
    auto end = fiberio::Clock::now() + 1s;
    while (fiberio::Clock::now() < end) {
      monitor_test_cpu_loop(20ms);
      fiberio::yield();
    }
  });
  fiberio::joinall({sleeper, yielder});
  settle();
  EXPECT_TRUE(reports.of(gettid_(), StallReport::Kind::Stalled).empty()) << reports.dump();
}

TEST(Monitor, BlockingCallsKeepTheirFullTimeAndTheirData) {
  FIBERIO_WATCHDOG(20);
  Reports reports;
  fiberio::enable_monitor(50ms);
  // A raw sleep (libc's, unpatched here): the report must not cut it short with EINTR.
  auto t0 = std::chrono::steady_clock::now();
  auto g = fiberio::spawn([] {
    unsigned left = ::sleep(1);
    EXPECT_EQ(left, 0u);
  });
  g.join();
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 1s);
  // A blocking read on a pipe that another thread writes to later.
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  std::thread writer([w = p[1]] {
    std::this_thread::sleep_for(400ms);
    [[maybe_unused]] auto n = ::write(w, "x", 1);
  });
  auto r = fiberio::spawn([fd = p[0]] {
    char c = 0;
    errno = 0;
    auto n = ::read(fd, &c, 1);
    EXPECT_EQ(n, 1) << "errno " << errno;
    EXPECT_EQ(c, 'x');
  });
  r.join();
  writer.join();
  ::close(p[0]);
  ::close(p[1]);
  reports.wait_for(gettid_(), StallReport::Kind::Ended, 2);
  settle();
  auto stalls = reports.of(gettid_(), StallReport::Kind::Stalled);
  ASSERT_EQ(stalls.size(), 2u) << reports.dump();  // the sleep, the read
  EXPECT_EQ(stalls[0].syscall, SYS_clock_nanosleep) << stalls[0].format();
  EXPECT_EQ(stalls[1].syscall, SYS_read) << stalls[1].format();
}

TEST(Monitor, OnlyTheStalledHubOfTwoThreadsIsReported) {
  FIBERIO_WATCHDOG(20);
  Reports reports;
  fiberio::ensure_hub();
  fiberio::enable_monitor(100ms);
  std::atomic<pid_t> stalled_tid{0}, busy_tid{0};
  std::atomic<int> done{0};
  std::thread stalled([&] {
    stalled_tid = gettid_();
    fiberio::spawn([] { monitor_test_cpu_loop(300ms); }).join();
    fiberio::sleep(300ms);
    ++done;
  });
  std::thread busy([&] {
    busy_tid = gettid_();
    auto a = fiberio::spawn([] { fiberio::sleep(600ms); });
    auto b = fiberio::spawn([] {
      for (int i = 0; i < 60; ++i) fiberio::sleep(10ms);
    });
    fiberio::joinall({a, b});
    ++done;
  });
  while (done < 2) fiberio::sleep(10ms);  // this hub keeps switching too
  stalled.join();
  busy.join();
  reports.wait_for(stalled_tid, StallReport::Kind::Ended, 1);
  auto s = reports.of(stalled_tid, StallReport::Kind::Stalled);
  ASSERT_EQ(s.size(), 1u) << reports.dump();
  EXPECT_TRUE(stack_has(s[0], "monitor_test_cpu_loop")) << s[0].format();
  EXPECT_EQ(reports.of(stalled_tid, StallReport::Kind::Ended).size(), 1u) << reports.dump();
  EXPECT_TRUE(reports.of(busy_tid, StallReport::Kind::Stalled).empty()) << reports.dump();
  EXPECT_TRUE(reports.of(gettid_(), StallReport::Kind::Stalled).empty()) << reports.dump();
}

TEST(Monitor, ThreadsExitingWhileSampledUnregisterTheirHubs) {
  FIBERIO_WATCHDOG(30);
  Reports reports;
  fiberio::ensure_hub();
  auto before = fiberio::detail::monitored_hubs();
  fiberio::enable_monitor(5ms);  // sampled every ~1 ms: captures race the exits
  for (int round = 0; round < 20; ++round) {
    std::atomic<int> finished{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i)
      threads.emplace_back([i, &finished] {
        fiberio::ensure_hub();
        if (i % 2) monitor_test_cpu_loop(std::chrono::milliseconds(5 + i * 2));
        else monitor_test_raw_nanosleep(std::chrono::milliseconds(5 + i * 2));
        ++finished;
      });  // exits at once, perhaps while the monitor signals or scans it
    while (finished < 4) fiberio::sleep(1ms);
    for (auto& t : threads) t.join();
  }
  EXPECT_EQ(fiberio::detail::monitored_hubs(), before);
  EXPECT_FALSE(reports.of(0, StallReport::Kind::Stalled).size());  // no report of an unknown thread
  // Still working afterwards.
  fiberio::enable_monitor(100ms);
  settle(100ms);
  {
    std::lock_guard lk(reports.mu);
    reports.all.clear();
  }
  auto g = fiberio::spawn([] { monitor_test_cpu_loop(300ms); });
  g.join();
  reports.wait_for(gettid_(), StallReport::Kind::Ended, 1);
  EXPECT_EQ(reports.of(gettid_(), StallReport::Kind::Stalled).size(), 1u) << reports.dump();
}

TEST(Monitor, OffStartsNoThreadAndSendsNoSignal) {
  FIBERIO_WATCHDOG(20);
  if (std::getenv("FIBERIO_MONITOR_MS")) GTEST_SKIP() << "FIBERIO_MONITOR_MS is set";
  if (!std::getenv("FIBERIO_MONITOR_OFF_CHILD")) {
    // In a fresh process: the tests before this one in the same binary enabled the monitor.
    int status = -1;
    std::string out = fiberio_test::rerun_self("FIBERIO_MONITOR_OFF_CHILD=1", "Monitor.OffStartsNoThreadAndSendsNoSignal", status);
    EXPECT_EQ(status, 0) << out;
    return;
  }
  fiberio::ensure_hub();
  auto threads = count_threads();
  auto g = fiberio::spawn([] { monitor_test_cpu_loop(300ms); });
  g.join();
  EXPECT_EQ(count_threads(), threads);
  EXPECT_FALSE(fiberio::monitor_enabled());
  EXPECT_EQ(fiberio::monitor_signal(), 0);
}

TEST(Monitor, EnvironmentEnablesIt) {
  FIBERIO_WATCHDOG(30);
  if (std::getenv("FIBERIO_MONITOR_TEST_CHILD")) {
    // The re-executed child: its first hub read FIBERIO_MONITOR_MS.
    fiberio::ensure_hub();
    EXPECT_TRUE(fiberio::monitor_enabled());
    fiberio::spawn([] { monitor_test_cpu_loop(300ms); }).set_name("env-stall");
    fiberio::sleep(3s);  // the default handler prints both reports meanwhile (slower under a sanitizer)
    return;
  }
  int status = -1;
  std::string out = fiberio_test::rerun_self("FIBERIO_MONITOR_TEST_CHILD=1 FIBERIO_MONITOR_MS=100",
                                             "Monitor.EnvironmentEnablesIt", status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("stalled for"), std::string::npos) << out;  // the default handler: stderr
  EXPECT_NE(out.find("env-stall"), std::string::npos) << out;
  EXPECT_NE(out.find("monitor_test_cpu_loop"), std::string::npos) << out;
  EXPECT_NE(out.find("ended after"), std::string::npos) << out;
}

TEST(Monitor, ForkedChildIsWatchedByItsOwnMonitorThread) {
  FIBERIO_WATCHDOG(30);
  fiberio::ensure_hub();
  fiberio::enable_monitor(100ms);
  // Another hub thread in the parent: the child must not report (or signal) it.
  fiberio::Event stop;  // set from this thread: the other hub parks on it, in its poller
  std::thread other([&] { stop.wait(); });
  auto res = fiberio_test::run_child([] {
    fiberio::set_stall_handler(nullptr);  // the default: the child's stderr
    auto g = fiberio::spawn([] { monitor_test_raw_nanosleep(300ms); });
    g.set_name("child-stall");
    g.join();
    fiberio::sleep(3s);
    std::printf("hubs=%zu\n", fiberio::detail::monitored_hubs());
    // _exit: LeakSanitizer would count the thread-exit records of the parent's other threads, which
    // a forked child does not have, as leaks (and fail the exit status).
    std::fflush(nullptr);
    ::_exit(0);
    return 0;
  });
  stop.set();
  other.join();
  ASSERT_TRUE(res.exited_ok()) << res.describe();
  EXPECT_NE(res.err.find("child-stall"), std::string::npos) << res.describe();
  EXPECT_NE(res.err.find("monitor_test_raw_nanosleep"), std::string::npos) << res.describe();
  EXPECT_NE(res.err.find("ended after"), std::string::npos) << res.describe();
  EXPECT_NE(res.out.find("hubs=1"), std::string::npos) << res.describe();
}

TEST(Monitor, DisableStopsReporting) {
  FIBERIO_WATCHDOG(20);
  Reports reports;
  fiberio::enable_monitor(50ms);
  fiberio::disable_monitor();
  fiberio::spawn([] { monitor_test_cpu_loop(200ms); }).join();
  settle(100ms);
  EXPECT_TRUE(reports.of(gettid_(), StallReport::Kind::Stalled).empty()) << reports.dump();
  EXPECT_THROW(fiberio::enable_monitor(0ms), std::invalid_argument);
}

}  // namespace
