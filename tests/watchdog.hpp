// A per-test watchdog: if a test does not finish within its budget, print which test hung and abort,
// so a hang fails in seconds with a message instead of waiting for ctest's timeout.
// Use: FIBERIO_WATCHDOG(seconds) at the top of a test, or rely on the default installed for every
// test by including this header (30 s).
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
  explicit Watchdog(int seconds) {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    name_ = info ? std::string(info->test_suite_name()) + "." + info->name() : "unknown test";
    thread_ = std::thread([this, seconds] {
      std::unique_lock lk(mu_);
      if (!cv_.wait_for(lk, std::chrono::seconds(seconds), [this] { return done_; })) {
        std::fprintf(stderr, "\nWATCHDOG: test %s did not finish within %d s (hang?); aborting\n", name_.c_str(),
                     seconds);
        std::fflush(stderr);
        std::_Exit(124);
      }
    });
  }
  ~Watchdog() {
    {
      std::lock_guard lk(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::string name_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

// Installs a default watchdog around every test of the binary.
class WatchdogListener : public ::testing::EmptyTestEventListener {
 public:
  void OnTestStart(const ::testing::TestInfo&) override { dog_ = new Watchdog(default_seconds()); }
  void OnTestEnd(const ::testing::TestInfo&) override {
    delete dog_;
    dog_ = nullptr;
  }
  static int default_seconds() {
    const char* s = std::getenv("FIBERIO_TEST_WATCHDOG");
    return s ? std::atoi(s) : 60;
  }

 private:
  Watchdog* dog_ = nullptr;
};

inline const bool kWatchdogInstalled = [] {
  ::testing::UnitTest::GetInstance()->listeners().Append(new WatchdogListener);
  return true;
}();

}  // namespace fiberio_test

#define FIBERIO_WATCHDOG(seconds) ::fiberio_test::Watchdog fiberio_watchdog_(seconds)
