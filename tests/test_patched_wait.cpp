// The shims' waits: poll / ppoll / select / pselect / epoll_wait with and without timeouts, the sleep
// family, and the resolver — each parks only the calling fiber and answers as libc would.
#include <netdb.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>

#include <cstring>
#include <thread>

#include "support/patched.hpp"
#include "watchdog.hpp"

using namespace fiberio_test;

namespace {
struct Pairs {
  std::vector<int> a, b;
  explicit Pairs(int n) {
    for (int i = 0; i < n; ++i) {
      int sv[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) throw std::runtime_error("socketpair");
      a.push_back(sv[0]);
      b.push_back(sv[1]);
    }
  }
  ~Pairs() {
    for (int fd : a) ::close(fd);
    for (int fd : b) ::close(fd);
  }
};
}  // namespace

TEST(PatchedWait, PollTimesOutOnTimeWhileOthersRun) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Pairs p(1);
    Ticker ticker;
    pollfd pfd{p.a[0], POLLIN, 0};
    auto t0 = Clock::now();
    EXPECT_EQ(::poll(&pfd, 1, 300), 0);
    double took = ms_since(t0);
    EXPECT_GE(took, 295);
    EXPECT_LT(took, 1500);
    EXPECT_GE(ticker.ticks(), 5);
    EXPECT_LT(ticker.max_gap_ms(), 200) << "no stall anywhere near the 300 ms poll() waited";
    EXPECT_EQ(pfd.revents, 0);
    // Zero timeout: just a look.
    t0 = Clock::now();
    EXPECT_EQ(::poll(&pfd, 1, 0), 0);
    EXPECT_LT(ms_since(t0), 200);
  }
  leaks.check();
}

TEST(PatchedWait, PollOfSeveralFdsWakesOnTheOneThatBecomesReady) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Pairs p(3);
    auto w = fiberio::spawn_later(40ms, [&] { return ::write(p.b[1], "!", 1); });
    std::vector<pollfd> fds;
    for (int fd : p.a) fds.push_back({fd, POLLIN | POLLPRI, 0});
    fds.push_back({-1, POLLIN, 0});  // ignored, as poll() ignores negative fds
    auto t0 = Clock::now();
    EXPECT_EQ(::poll(fds.data(), fds.size(), 5000), 1);
    EXPECT_GE(ms_since(t0), 35);
    EXPECT_LT(ms_since(t0), 1000);
    EXPECT_EQ(fds[0].revents, 0);
    EXPECT_EQ(fds[1].revents, POLLIN);
    EXPECT_EQ(fds[2].revents, 0);
    w.join();
    // Mixed directions: the write side of an empty socket is ready at once.
    pollfd mixed[2] = {{p.a[0], POLLIN, 0}, {p.a[2], POLLOUT, 0}};
    EXPECT_EQ(::poll(mixed, 2, 1000), 1);
    EXPECT_EQ(mixed[1].revents, POLLOUT);
    // ppoll with a timeout and nothing ready.
    timespec ts{0, 60 * 1000 * 1000};
    pollfd one{p.a[2], POLLIN, 0};
    t0 = Clock::now();
    EXPECT_EQ(::ppoll(&one, 1, &ts, nullptr), 0);
    EXPECT_GE(ms_since(t0), 55);
  }
  leaks.check();
}

TEST(PatchedWait, PollReportsHangupAndInvalidFdsAsLibc) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Pairs p(1);
    auto closer = fiberio::spawn_later(20ms, [&] {
      ::close(p.b[0]);
      p.b[0] = -1;
      p.b.clear();
    });
    pollfd pfd{p.a[0], POLLIN, 0};
    EXPECT_EQ(::poll(&pfd, 1, 2000), 1);
    EXPECT_TRUE(pfd.revents & POLLHUP);
    closer.join();
    pollfd bad{999, POLLIN, 0};
    EXPECT_EQ(::poll(&bad, 1, 1000), 1);
    EXPECT_EQ(bad.revents, POLLNVAL);
  }
  leaks.check();
}

TEST(PatchedWait, SelectWaitsCooperativelyAndUpdatesItsSets) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Pairs p(2);
    Ticker ticker;
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(p.a[0], &rd);
    FD_SET(p.a[1], &rd);
    int nfds = std::max(p.a[0], p.a[1]) + 1;
    timeval tv{0, 100000};
    auto t0 = Clock::now();
    EXPECT_EQ(::select(nfds, &rd, nullptr, nullptr, &tv), 0);
    EXPECT_GE(ms_since(t0), 95);
    EXPECT_FALSE(FD_ISSET(p.a[0], &rd));
    EXPECT_EQ(tv.tv_sec, 0);
    EXPECT_EQ(tv.tv_usec, 0) << "Linux select() leaves the time not slept in the timeval";
    EXPECT_GE(ticker.ticks(), 4);

    auto w = fiberio::spawn_later(30ms, [&] { return ::write(p.b[1], "s", 1); });
    FD_ZERO(&rd);
    FD_SET(p.a[0], &rd);
    FD_SET(p.a[1], &rd);
    fd_set wr;
    FD_ZERO(&wr);
    tv = {5, 0};
    EXPECT_EQ(::select(nfds, &rd, &wr, nullptr, &tv), 1);
    EXPECT_FALSE(FD_ISSET(p.a[0], &rd));
    EXPECT_TRUE(FD_ISSET(p.a[1], &rd));
    EXPECT_GT(tv.tv_sec * 1000000 + tv.tv_usec, 3000000);
    w.join();

    timespec ts{0, 50 * 1000 * 1000};
    FD_ZERO(&rd);
    FD_SET(p.a[0], &rd);
    t0 = Clock::now();
    EXPECT_EQ(::pselect(p.a[0] + 1, &rd, nullptr, nullptr, &ts, nullptr), 0);
    EXPECT_GE(ms_since(t0), 45);
  }
  leaks.check();
}

TEST(PatchedWait, EpollWaitOnALibrarysPrivateSetYieldsToTheHub) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Pairs p(1);
    int ep = ::epoll_create1(EPOLL_CLOEXEC);
    ASSERT_GE(ep, 0);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = 77;
    ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, p.a[0], &ev), 0);
    Ticker ticker;
    epoll_event out[4];
    auto t0 = Clock::now();
    EXPECT_EQ(::epoll_wait(ep, out, 4, 80), 0);
    EXPECT_GE(ms_since(t0), 75);
    EXPECT_GE(ticker.ticks(), 3);
    auto w = fiberio::spawn_later(30ms, [&] { return ::write(p.b[0], "e", 1); });
    EXPECT_EQ(::epoll_wait(ep, out, 4, -1), 1);
    EXPECT_EQ(out[0].data.u32, 77u);
    w.join();
    sigset_t mask;
    sigemptyset(&mask);
    EXPECT_EQ(::epoll_pwait(ep, out, 4, 10, &mask), 1) << "still readable (level-triggered)";
    // Closing the epoll fd under a waiter wakes it with EBADF.
    char c;
    ASSERT_EQ(::read(p.a[0], &c, 1), 1);
    auto waiter = fiberio::spawn([&] {
      epoll_event e[1];
      errno = 0;
      int r = ::epoll_wait(ep, e, 1, -1);
      return std::make_pair(r, errno);
    });
    fiberio::sleep(20ms);
    ::close(ep);
    auto [r, err] = waiter.get();
    EXPECT_EQ(r, -1);
    EXPECT_EQ(err, EBADF);
  }
  leaks.check();
}

TEST(PatchedWait, SleepFamilyParksOnlyTheFiber) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    // 40 fibers, each sleeping 200 ms through a different libc entry point: ~200 ms in all.
    auto t0 = Clock::now();
    std::vector<fiberio::Greenlet<int>> gs;
    for (int i = 0; i < 40; ++i) {
      gs.push_back(fiberio::spawn([i]() -> int {
        switch (i % 5) {
          case 0:
            return ::usleep(200000);
          case 1: {
            timespec ts{0, 200000000};
            return ::nanosleep(&ts, nullptr);
          }
          case 2: {
            timespec ts{0, 200000000};
            return ::clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, nullptr);
          }
          case 3: {
            timespec now;
            ::clock_gettime(CLOCK_REALTIME, &now);
            now.tv_nsec += 200000000;
            if (now.tv_nsec >= 1000000000) {
              now.tv_nsec -= 1000000000;
              ++now.tv_sec;
            }
            return ::clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &now, nullptr);
          }
          default:
            std::this_thread::sleep_for(200ms);  // libstdc++ calls nanosleep
            return 0;
        }
      }));
    }
    for (auto& g : gs) EXPECT_EQ(g.get(), 0);
    double took = ms_since(t0);
    EXPECT_GE(took, 195);
    EXPECT_LT(took, 40 * 200 / 4);
    // sleep(1) in 10 fibers: one second, not ten.
    t0 = Clock::now();
    std::vector<fiberio::Greenlet<unsigned>> ss;
    for (int i = 0; i < 10; ++i) ss.push_back(fiberio::spawn([] { return ::sleep(1); }));
    for (auto& s : ss) EXPECT_EQ(s.get(), 0u);
    EXPECT_LT(ms_since(t0), 2500);
    // Invalid arguments still get libc's answer.
    timespec bad{0, 2000000000};
    errno = 0;
    EXPECT_EQ(::nanosleep(&bad, nullptr), -1);
    EXPECT_EQ(errno, EINVAL);
    EXPECT_EQ(::clock_nanosleep(CLOCK_MONOTONIC, 0, &bad, nullptr), EINVAL);
  }
  leaks.check();
}

TEST(PatchedWait, KilledSleepReturnsEintrWithNothingLeftThenDies) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    int rc = 0, err = 0;
    auto g = fiberio::spawn([&] {
      // The classic retry loop must not spin after a kill: the shim reports nothing left to sleep.
      timespec ts{10, 0};
      int loops = 0;
      while ((rc = ::nanosleep(&ts, &ts)) == -1 && errno == EINTR && ++loops < 1000) err = errno;
      fiberio::sleep(1ms);
    });
    fiberio::sleep(30ms);
    auto t0 = Clock::now();
    g.kill();
    EXPECT_LT(ms_since(t0), 500);
    EXPECT_TRUE(g.killed());
    EXPECT_EQ(err, EINTR);
    EXPECT_EQ(rc, 0) << "the retry with the remaining {0,0} returned at once";
  }
  leaks.check();
}

TEST(PatchedWait, ResolverRunsOnThePoolWhileTheHubRuns) {
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    constexpr int kN = 8;
    std::vector<fiberio::Greenlet<std::string>> gs;
    for (int i = 0; i < kN; ++i) {
      gs.push_back(fiberio::spawn([] {
        addrinfo hints{};
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* res = nullptr;
        auto before = fiberio::hub_switches();
        int rc = ::getaddrinfo("localhost", "http", &hints, &res);
        bool switched = fiberio::hub_switches() > before;
        if (rc != 0) return std::string("error: ") + gai_strerror(rc);
        char host[64];
        auto* sin = reinterpret_cast<sockaddr_in*>(res->ai_addr);
        ::inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
        std::string out = std::string(host) + ":" + std::to_string(ntohs(sin->sin_port)) + (switched ? " switched" : "");
        ::freeaddrinfo(res);
        return out;
      }));
    }
    // Most fibers park until their resolver thread answers. One may find the answer ready when it
    // starts waiting (a resolver thread runs at normal priority and /etc/hosts takes microseconds), so
    // it never switches: that is fine. PatchedDns proves the hub runs during a slow lookup.
    int switched = 0;
    for (auto& g : gs) {
      auto got = g.get();
      switched += got.ends_with(" switched");
      EXPECT_TRUE(got == "127.0.0.1:80" || got == "127.0.0.1:80 switched") << got;
    }
    EXPECT_GE(switched, kN / 2) << "the lookups did not run on another thread";
    // The other entry points.
    hostent* he = ::gethostbyname("localhost");
    ASSERT_NE(he, nullptr);
    EXPECT_EQ(he->h_addrtype, AF_INET);
    hostent ret{}, *result = nullptr;
    char buf[2048];
    int herr = 0;
    EXPECT_EQ(::gethostbyname_r("localhost", &ret, buf, sizeof buf, &result, &herr), 0);
    EXPECT_EQ(result, &ret);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(80);
    char host[256], serv[64];
    EXPECT_EQ(::getnameinfo(reinterpret_cast<sockaddr*>(&sa), sizeof sa, host, sizeof host, serv, sizeof serv, 0), 0);
    EXPECT_STREQ(serv, "http");
    EXPECT_STREQ(host, "localhost");  // from /etc/hosts: these tests never query a DNS server
  }
  leaks.check();
}
