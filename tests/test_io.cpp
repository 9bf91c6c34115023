// fd readiness (io.hpp): wait_read/wait_write, level-triggered behaviour, close evicting waiters on
// any thread, and fd numbers reused after a close on another thread.
#include <fiberio/fiberio.hpp>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/leak_check.hpp"
#include "support/pipe.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;
using fiberio::Clock;
using fiberio_test::Pipe;

TEST(FdWait, ReadWriteTimeoutAndNoLeak) {
  fiberio::ensure_hub();  // the hub's own epoll and eventfd are not a leak
  auto fds_before = fiberio_test::count_fds();
  {
    Pipe p;
    EXPECT_NO_THROW(fiberio::wait_write(p.w, 1s));  // an empty pipe is writable
    auto t0 = Clock::now();
    EXPECT_THROW(fiberio::wait_read(p.r, 20ms), fiberio::TimeoutError);
    EXPECT_GE(Clock::now() - t0, 20ms);
    auto writer = fiberio::spawn([&] {
      fiberio::sleep(10ms);
      [[maybe_unused]] auto r = ::write(p.w, "hi", 2);
    });
    fiberio::wait_read(p.r, 5s);
    char buf[8];
    EXPECT_EQ(::read(p.r, buf, sizeof buf), 2);
    writer.join();
    // Edge-triggered registration, level-style waits: data already there is seen at once.
    ASSERT_EQ(::write(p.w, "x", 1), 1);
    fiberio::sleep(1ms);
    EXPECT_NO_THROW(fiberio::wait_read(p.r, 1s));
  }
  EXPECT_EQ(fiberio_test::count_fds(), fds_before);
}

TEST(FdWait, CloseWakesWaiterWithClosedError) {
  Pipe p;
  auto waiter = fiberio::spawn([&] {
    try {
      fiberio::wait_read(p.r);
    } catch (const fiberio::ClosedError&) {
      return true;
    }
    return false;
  });
  fiberio::yield();
  fiberio::close(p.r);
  p.r = -1;
  EXPECT_TRUE(waiter.get());
}

TEST(FdWait, SecondReaderIsConcurrentObjectUseError) {
  Pipe p;
  auto first = fiberio::spawn([&] { fiberio::wait_read(p.r, 5s); });
  fiberio::yield();
  EXPECT_THROW(fiberio::wait_read(p.r, 10ms), fiberio::ConcurrentObjectUseError);
  [[maybe_unused]] auto r = ::write(p.w, "x", 1);
  first.join();
  EXPECT_TRUE(first.successful());
}

TEST(FdWait, RegularFileIsNotPollable) {
  char path[] = "/tmp/fiberio_test_XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::unlink(path);
  EXPECT_THROW(fiberio::wait_read(fd, 10ms), std::system_error);
  fiberio::close(fd);
}

TEST(FdWait, KillWakesFdWaiter) {
  Pipe p;
  bool destroyed = false;
  struct Flag {
    bool* f;
    ~Flag() { *f = true; }
  };
  auto g = fiberio::spawn([&] {
    Flag f{&destroyed};
    fiberio::wait_read(p.r);
  });
  fiberio::yield();
  g.kill();
  EXPECT_TRUE(destroyed);
  // The fd can be waited on again afterwards.
  [[maybe_unused]] auto r = ::write(p.w, "x", 1);
  EXPECT_NO_THROW(fiberio::wait_read(p.r, 1s));
}

// io.hpp promises level-triggered waits: an fd that still has data after a partial read is readable,
// and wait_read returns at once — on a pipe and on a socketpair, with and without an earlier wait.
TEST(FdWait, ReturnsAtOnceAfterAPartialRead) {
  auto check = [](int r, int w, bool waited_first, const char* what) {
    ASSERT_EQ(::write(w, "0123456789", 10), 10);
    if (waited_first) fiberio::wait_read(r, 1s);  // registers the fd and consumes its edge
    char buf[4];
    ASSERT_EQ(::read(r, buf, sizeof buf), 4);  // 6 bytes stay unread
    auto t0 = Clock::now();
    EXPECT_NO_THROW(fiberio::wait_read(r, 2s)) << what;
    EXPECT_LT(Clock::now() - t0, 500ms) << what;
    ASSERT_EQ(::read(r, buf, sizeof buf), 4);
    EXPECT_NO_THROW(fiberio::wait_read(r, 2s)) << what << " (second partial read)";
  };
  for (bool waited_first : {true, false}) {
    Pipe p;
    check(p.r, p.w, waited_first, "pipe");
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    check(sv[0], sv[1], waited_first, "socketpair");
    fiberio::close(sv[0]);
    fiberio::close(sv[1]);
  }
}

TEST(FdWait, WaitWriteReturnsAtOnceWhileThereIsRoom) {
  Pipe p;
  fiberio::wait_write(p.w, 1s);
  ASSERT_EQ(::write(p.w, "x", 1), 1);  // still plenty of room
  auto t0 = Clock::now();
  EXPECT_NO_THROW(fiberio::wait_write(p.w, 2s));
  EXPECT_LT(Clock::now() - t0, 500ms);
}

namespace {
// A thread with its own hub that waits on fds it is handed, one at a time.
class WaitingThread {
 public:
  WaitingThread()
      : thread_([this] {
          for (;;) {
            int fd;
            while ((fd = next_.load()) == kNone) fiberio::sleep(1ms);
            if (fd == kStop) return;
            next_ = kNone;
            std::string r;
            try {
              fiberio::wait_read(fd, 3s);
              r = "ready";
            } catch (const fiberio::ClosedError&) {
              r = "closed";
            } catch (const fiberio::TimeoutError&) {
              r = "timeout";
            } catch (const std::exception& e) {
              r = e.what();
            }
            std::lock_guard lk(mu_);
            results_.push_back(r);
          }
        }) {}
  ~WaitingThread() {
    next_ = kStop;
    thread_.join();
  }
  void wait_on(int fd) { next_ = fd; }
  // The result of the n-th wait, once it is there (up to 5 s).
  std::string result(std::size_t n) {
    for (int i = 0; i < 5000; ++i) {
      {
        std::lock_guard lk(mu_);
        if (results_.size() > n) return results_[n];
      }
      fiberio::sleep(1ms);
    }
    return "no result";
  }

 private:
  static constexpr int kNone = -1, kStop = -2;
  std::atomic<int> next_{kNone};
  std::mutex mu_;
  std::vector<std::string> results_;
  std::thread thread_;
};
}  // namespace

// Go's rule, across threads: closing an fd evicts its waiters, whichever thread's hub they wait on.
TEST(FdWait, CloseOnAnotherThreadWakesTheWaiterWithClosedError) {
  WaitingThread b;
  Pipe p;
  b.wait_on(p.r);
  fiberio::sleep(50ms);  // parked on b's hub
  auto t0 = Clock::now();
  fiberio::close(p.r);
  p.r = -1;
  EXPECT_EQ(b.result(0), "closed");
  EXPECT_LT(Clock::now() - t0, 1s);
}

// A number closed where its hub could not see it, then reused by a new fd: the hub must watch the new
// fd, not trust its stale registration (it used to wait out the timeout although data had arrived).
TEST(FdWait, NumberReusedAfterACloseOnAnotherThreadIsWatchedAgain) {
  WaitingThread b;
  Pipe first;
  b.wait_on(first.r);
  fiberio::sleep(20ms);
  ASSERT_EQ(::write(first.w, "x", 1), 1);
  ASSERT_EQ(b.result(0), "ready");  // first.r is now registered with b's hub
  int number = first.r;
  fiberio::close(first.r);  // on this thread, not b's
  first.r = -1;
  Pipe second;
  ASSERT_EQ(second.r, number) << "the kernel did not reuse the number; the test needs it";
  b.wait_on(second.r);
  fiberio::sleep(50ms);
  ASSERT_EQ(::write(second.w, "y", 1), 1);
  auto t0 = Clock::now();
  EXPECT_EQ(b.result(1), "ready");
  EXPECT_LT(Clock::now() - t0, 1s);
}
