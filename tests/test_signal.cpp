// Signal handlers that run in a greenlet on the registering hub.
#include <fiberio/fiberio.hpp>
#include <netdb.h>
#include <signal.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "support/leak_check.hpp"
#include "support/servers.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;
using fiberio_test::eventually;
using fiberio_test::LeakCheck;

TEST(SignalHandler, RunsInAGreenletOnTheRegisteringHub) {
  LeakCheck leaks;
  {
    struct sigaction before {};
    ::sigaction(SIGUSR1, nullptr, &before);
    int calls = 0;
    std::string name;
    fiberio::Event ran;
    {
      auto h = fiberio::signal_handler(SIGUSR1, [&] {
        ++calls;
        name = fiberio::getcurrent().name();
        ran.set();
      });
      EXPECT_TRUE(h.active());
      ::raise(SIGUSR1);
      EXPECT_TRUE(ran.wait(2s));
      EXPECT_EQ(calls, 1);
      EXPECT_EQ(name, "signal_handler(SIGUSR1)");
      // From another thread: still runs here.
      ran.clear();
      std::thread([] { ::kill(::getpid(), SIGUSR1); }).join();
      EXPECT_TRUE(ran.wait(2s));
      EXPECT_EQ(calls, 2);
      h.cancel();
      EXPECT_FALSE(h.active());
    }
    struct sigaction after {};
    ::sigaction(SIGUSR1, nullptr, &after);
    EXPECT_EQ(after.sa_handler, before.sa_handler);
    EXPECT_THROW((void)fiberio::signal_handler(SIGKILL, [] {}), std::invalid_argument);
  }
  leaks.check();
}

TEST(SignalHandler, TwoHandlersBothRunAndDispositionRestoredAfterLast) {
  LeakCheck leaks;
  struct sigaction before {};
  ::sigaction(SIGUSR2, nullptr, &before);
  int a = 0, b = 0;
  auto ha = fiberio::signal_handler(SIGUSR2, [&] { ++a; });
  auto hb = fiberio::signal_handler(SIGUSR2, [&] { ++b; });
  ::raise(SIGUSR2);
  EXPECT_TRUE(eventually([&] { return a == 1 && b == 1; }, 2s));
  ha.cancel();
  struct sigaction mid {};
  ::sigaction(SIGUSR2, nullptr, &mid);
  EXPECT_NE(mid.sa_handler, before.sa_handler);  // hb still needs it
  ::raise(SIGUSR2);
  EXPECT_TRUE(eventually([&] { return b == 2; }, 2s));
  EXPECT_EQ(a, 1);
  hb = fiberio::SignalHandle();  // move-assign cancels
  struct sigaction after {};
  ::sigaction(SIGUSR2, nullptr, &after);
  EXPECT_EQ(after.sa_handler, before.sa_handler);
  leaks.check();  // the pipe is closed and its reader greenlet gone
}

// A process whose own code takes a signal every 200 µs (an interval timer, a handler installed
// without SA_RESTART, as a profiler or a watchdog library would): every system call of the hub
// and of the I/O paths may fail with EINTR. No byte is lost, no wait is cut short or lost, no
// offload is abandoned.
TEST(SignalStorm, IoTimersAndOffloadsAreUnaffectedByEintr) {
  FIBERIO_WATCHDOG(60);
  static std::atomic<long> alarms{0};
  struct sigaction sa {}, before {};
  sa.sa_handler = [](int) { alarms.fetch_add(1, std::memory_order_relaxed); };
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: interrupted calls fail with EINTR
  ASSERT_EQ(::sigaction(SIGALRM, &sa, &before), 0);
  itimerval every{{0, 200}, {0, 200}}, off{};
  ASSERT_EQ(::setitimer(ITIMER_REAL, &every, nullptr), 0);

  constexpr int kPairs = 20, kMessages = 200;
  std::vector<fiberio::GreenletRef> all;
  std::atomic<int> echoed{0};
  std::vector<std::pair<fiberio::Socket, fiberio::Socket>> pairs;
  for (int i = 0; i < kPairs; ++i) pairs.push_back(fiberio::Socket::pair());
  for (auto& [a, b] : pairs) {
    all.push_back(fiberio::spawn([&b = b] {
      fiberio::Stream s(b);
      for (std::string line; !(line = s.read_line()).empty();) {
        s.write(line);
        s.flush();
      }
    }));
    all.push_back(fiberio::spawn([&a = a, &echoed] {
      fiberio::Stream s(a);
      const std::string big(3000, 'b');  // lines larger than a single read, some of them
      for (int m = 0; m < kMessages; ++m) {
        std::string line = (m % 10 == 0 ? big : std::string("m")) + std::to_string(m) + "\n";
        s.write(line);
        s.flush();
        ASSERT_EQ(s.read_line(), line);
        ++echoed;
      }
      a.shutdown(fiberio::ShutdownHow::Write);
    }));
  }
  // Sleeps are never cut short by the signals, and offloads are waited for.
  all.push_back(fiberio::spawn([] {
    for (int i = 0; i < 20; ++i) {
      auto t0 = fiberio::Clock::now();
      fiberio::sleep(2ms);
      EXPECT_GE(fiberio::Clock::now() - t0, 2ms);
      EXPECT_EQ(fiberio::default_threadpool().apply([i] {
        std::this_thread::sleep_for(100us);
        return i;
      }), i);
    }
  }));
  EXPECT_EQ(fiberio::joinall(all, 30s).size(), all.size());
  ::setitimer(ITIMER_REAL, &off, nullptr);
  ::sigaction(SIGALRM, &before, nullptr);
  for (auto& g : all) EXPECT_TRUE(g.successful());
  EXPECT_EQ(echoed.load(), kPairs * kMessages);
  EXPECT_GT(alarms.load(), 10);  // the storm really happened
}
