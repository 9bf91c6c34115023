// Signal handlers that run in a greenlet on the registering hub.
#include <fiberio/fiberio.hpp>
#include <netdb.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

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
