// A per-test watchdog: if a test does not finish within its budget, print which test hung and abort,
// so a hang fails in seconds with a message instead of waiting for ctest's timeout.
// Use: FIBERIO_WATCHDOG(seconds) at the top of a test (a budget from there on), or rely on the
// default armed around every test by including this header (60 s; FIBERIO_TEST_WATCHDOG overrides).
//
// One thread per process, started once and parked on a condition variable between tests: a thread
// started around each test would race the tests that fork(), and a child forked while another thread
// held the sanitizer allocator's lock (ASan's allocator has no fork handlers) deadlocks in its first
// malloc.
#pragma once
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

namespace fiberio_test {

class Watchdog {
 public:
  // The process's watchdog thread, started on first use (and never stopped: it only waits).
  static Watchdog& instance() {
    static Watchdog* dog = new Watchdog;
    return *dog;
  }
  // From now on, `name` has `seconds` to finish.
  void arm(const std::string& name, int seconds) {
    std::lock_guard lk(mu_);
    name_ = name;
    seconds_ = seconds;
    deadline_ = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    armed_ = true;
    ++generation_;
    cv_.notify_all();
  }
  void disarm() {
    std::lock_guard lk(mu_);
    armed_ = false;
    ++generation_;
    cv_.notify_all();
  }
  static std::string current_test() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    return info ? std::string(info->test_suite_name()) + "." + info->name() : "unknown test";
  }

 private:
  Watchdog() {
    std::unique_lock lk(mu_);
    std::thread([this] { run(); }).detach();
    cv_.wait(lk, [this] { return started_; });  // parked before any test runs
  }
  void run() {
    std::unique_lock lk(mu_);
    started_ = true;
    cv_.notify_all();
    for (;;) {
      auto seen = generation_;
      if (!armed_) {
        cv_.wait(lk, [&] { return generation_ != seen; });
        continue;
      }
      if (cv_.wait_until(lk, deadline_, [&] { return generation_ != seen; })) continue;
      std::fprintf(stderr, "\nWATCHDOG: test %s did not finish within %d s (hang?); aborting\n", name_.c_str(),
                   seconds_);
      std::fflush(stderr);
      std::_Exit(124);
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  bool started_ = false;
  bool armed_ = false;
  unsigned long generation_ = 0;
  std::string name_;
  int seconds_ = 0;
  std::chrono::steady_clock::time_point deadline_;
};

// Arms the watchdog around every test of the binary.
class WatchdogListener : public ::testing::EmptyTestEventListener {
 public:
  void OnTestStart(const ::testing::TestInfo&) override {
    Watchdog::instance().arm(Watchdog::current_test(), default_seconds());
  }
  void OnTestEnd(const ::testing::TestInfo&) override { Watchdog::instance().disarm(); }
  static int default_seconds() {
    const char* s = std::getenv("FIBERIO_TEST_WATCHDOG");
    return s ? std::atoi(s) : 60;
  }
};

// A test's own budget, from where it is declared until the test ends.
struct WatchdogBudget {
  explicit WatchdogBudget(int seconds) { Watchdog::instance().arm(Watchdog::current_test(), seconds); }
};

inline const bool kWatchdogInstalled = [] {
  ::testing::UnitTest::GetInstance()->listeners().Append(new WatchdogListener);
  return true;
}();

}  // namespace fiberio_test

#define FIBERIO_WATCHDOG(seconds) ::fiberio_test::WatchdogBudget fiberio_watchdog_(seconds)
