// Name resolution, and create_connection over its results. The lookups run against a name server of
// the test's own on loopback that answers after a delay (support/dns_server.hpp: a private mount and
// network namespace whose /etc/resolv.conf names it), so "never queues" is measured, not assumed.
#include <fiberio/fiberio.hpp>
#include <netdb.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>

#include "support/dns_server.hpp"
#include "support/leak_check.hpp"
#include "support/servers.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;
using fiberio::Address;
using fiberio::Socket;
using fiberio::Stream;
using fiberio::StreamServer;
using fiberio_test::echo_lines;
using fiberio_test::LeakCheck;
using fiberio_test::quiet;
using fiberio_test::SlowDnsServer;

namespace {

// Enter the sandbox while the process still has one thread (before main, the watchdog and any hub).
const bool kSandboxEntered = (fiberio_test::dns_sandbox_error(), true);

#define REQUIRE_DNS_SANDBOX()                                                                             \
  do {                                                                                                    \
    if (!fiberio_test::dns_sandbox_error().empty())                                                       \
      GTEST_SKIP() << "cannot point the resolver at a test name server: " << fiberio_test::dns_sandbox_error(); \
  } while (0)

double ms_since(fiberio::Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(fiberio::Clock::now() - t0).count();
}

// n names "n<i>.fiberio.test" -> 10.0.<i/256>.<i%256>.
void add_names(SlowDnsServer& dns, int n) {
  for (int i = 0; i < n; ++i)
    dns.add("n" + std::to_string(i) + ".fiberio.test", "10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256));
}

// Resolves n names at once from n fibers of this thread; returns the milliseconds it took.
double resolve_concurrently(int n, int family = AF_UNSPEC) {
  std::vector<fiberio::Greenlet<Address>> gs;
  auto t0 = fiberio::Clock::now();
  for (int i = 0; i < n; ++i)
    gs.push_back(fiberio::spawn([i, family] { return fiberio::resolve("n" + std::to_string(i) + ".fiberio.test", 80, family); }));
  for (int i = 0; i < n; ++i)
    EXPECT_EQ(gs[static_cast<std::size_t>(i)].get(),
              Address("10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256), 80));
  return ms_since(t0);
}

}  // namespace

TEST(Dns, ResolveLocalhostAndCreateConnection) {
  LeakCheck leaks;
  {
    auto addrs = fiberio::resolve_all("localhost", 80);
    ASSERT_FALSE(addrs.empty());
    for (auto& a : addrs) {
      EXPECT_TRUE(a.host() == "127.0.0.1" || a.host() == "::1") << a;
      EXPECT_EQ(a.port(), 80);
    }
    EXPECT_EQ(fiberio::resolve("127.0.0.1", 5).host(), "127.0.0.1");  // numeric: no thread hop
    EXPECT_EQ(fiberio::resolve("localhost", 1, AF_INET), Address("127.0.0.1", 1));
    // (No lookup of a missing name: that would query the configured DNS server, off loopback.)
    try {
      fiberio::resolve("127.0.0.1", 80, AF_INET6);
      FAIL() << "an IPv4 literal resolved as IPv6";
    } catch (const fiberio::DnsError& e) {
      EXPECT_EQ(e.code(), EAI_FAMILY);
      EXPECT_NE(std::string(e.what()).find("127.0.0.1"), std::string::npos) << e.what();
    }
    EXPECT_THROW(fiberio::resolve("", 80), std::invalid_argument);

    StreamServer server(Address("127.0.0.1", 0), echo_lines, quiet());
    server.start();
    {
      Socket c = fiberio::create_connection("localhost", server.address().port(), 2s);
      EXPECT_EQ(c.timeout(), fiberio::OptDuration(2s));
      EXPECT_EQ(c.peer_address(), server.address());
      c.sendall("via name\n");
      EXPECT_EQ(Stream(c).read_line(), "via name\n");
      Socket d = fiberio::create_connection("127.0.0.1", server.address().port(), {}, Address("127.0.0.1", 0));
      EXPECT_EQ(d.local_address().host(), "127.0.0.1");
    }  // closed: their handlers see EOF, so stop() need not wait out its grace
    server.stop();
    // Nothing listens there now: every address is refused and the last refusal is rethrown.
    EXPECT_THROW(fiberio::create_connection("localhost", server.address().port(), 2s), fiberio::ConnectionRefused);
  }
  leaks.check();
}

// Issue 12.5: lookups never queue. 20 lookups in flight at once each wait for the server's 300 ms, all
// at the same time: about 300 ms in all. (On four shared pool threads they took 5 x 300 = 1.5 s.)
TEST(Dns, TwentyConcurrentLookupsTakeOneServerDelay) {
  REQUIRE_DNS_SANDBOX();
  SlowDnsServer dns(300ms);
  add_names(dns, 20);
  LeakCheck leaks;
  {
    double ms = resolve_concurrently(20);
    std::printf("20 concurrent lookups, server delay 300 ms: %.0f ms; %d queries, at most %d in flight\n", ms,
                dns.queries(), dns.max_in_flight());
    EXPECT_GE(ms, 290);
    EXPECT_LT(ms, 800) << "lookups queued behind each other";
    EXPECT_GE(dns.max_in_flight(), 20) << "the server never saw the 20 lookups at once";
    auto st = fiberio::resolver_stats();
    EXPECT_GE(st.peak, 20u) << "one resolver thread per lookup in flight";
    EXPECT_GE(st.idle, 1u) << "threads stay a while for the next lookups";
  }
  leaks.check();
}

TEST(Dns, TwoHundredConcurrentLookupsTakeOneServerDelay) {
  REQUIRE_DNS_SANDBOX();
  SlowDnsServer dns(300ms);
  add_names(dns, 200);
  LeakCheck leaks;
  {
    double ms = resolve_concurrently(200, AF_INET);
    auto st = fiberio::resolver_stats();
    std::printf("200 concurrent lookups (AF_INET), server delay 300 ms: %.0f ms; at most %d in flight; resolver "
                "threads: %zu now, %zu at most (cap %zu)\n", ms, dns.max_in_flight(), st.threads, st.peak,
                st.max_threads);
    EXPECT_LE(st.peak, st.max_threads);
    EXPECT_LT(ms, 1200) << "lookups queued behind each other";
  }
  leaks.check();
}

// The hub keeps running while lookups wait, and a CPU task on the default pool does not hold them up.
TEST(Dns, LookupsNeitherStallTheHubNorWaitForThePool) {
  REQUIRE_DNS_SANDBOX();
  SlowDnsServer dns(300ms);
  add_names(dns, 1);
  std::atomic<bool> stop{false};
  // Occupy every default pool thread with work that ends only when the lookup is done.
  std::vector<fiberio::AsyncResult<void>> busy;
  for (std::size_t i = 0; i < fiberio::default_threadpool().size(); ++i)
    busy.push_back(fiberio::default_threadpool().spawn([&stop] {
      while (!stop) std::this_thread::sleep_for(1ms);
    }));
  int ticks = 0;
  auto ticker = fiberio::spawn([&] {
    for (;;) {
      fiberio::sleep(10ms);
      ++ticks;
    }
  });
  auto t0 = fiberio::Clock::now();
  Address a;
  try {
    a = fiberio::resolve("n0.fiberio.test", 7, AF_UNSPEC, 3s);
  } catch (...) {
    stop = true;
    throw;
  }
  double ms = ms_since(t0);
  stop = true;
  for (auto& b : busy) b.get();
  ticker.kill();
  EXPECT_EQ(a, Address("10.0.0.0", 7));
  EXPECT_LT(ms, 800) << "the lookup waited for a default-pool thread";
  EXPECT_GE(ticks, 15) << "the hub stalled during the lookup";
}

// /etc/hosts is read first (nsswitch's "files"): no query for localhost. A short name goes through
// resolv.conf's search domain. Numeric hosts are converted in place.
TEST(Dns, HostsFileSearchDomainAndNumericHosts) {
  REQUIRE_DNS_SANDBOX();
  SlowDnsServer dns(0ms);
  dns.add("short.fiberio.test", "10.9.8.7");
  EXPECT_EQ(fiberio::resolve("localhost", 1, AF_INET), Address("127.0.0.1", 1));
  EXPECT_EQ(fiberio::resolve("10.1.2.3", 2), Address("10.1.2.3", 2));
  EXPECT_EQ(fiberio::resolve("::1", 3), Address("::1", 3));
  // (Late lookups of earlier tests in this process may still reach this server: look at names only.)
  for (auto& name : dns.asked())
    EXPECT_TRUE(name.find("localhost") == std::string::npos && name.find("10.1.2.3") == std::string::npos &&
                name.find("::1") == std::string::npos)
        << "localhost and numeric hosts must not reach the name server: asked " << name;
  EXPECT_EQ(fiberio::resolve("short", 4, AF_INET), Address("10.9.8.7", 4));
  auto asked = dns.asked();
  EXPECT_NE(std::find(asked.begin(), asked.end(), "short.fiberio.test"), asked.end()) << "the search domain was not tried";
}

TEST(Dns, MissingNameIsDnsErrorWithEaiCodeAndTheName) {
  REQUIRE_DNS_SANDBOX();
  SlowDnsServer dns(0ms);
  try {
    fiberio::resolve("missing.fiberio.test", 80);
    FAIL() << "a missing name resolved";
  } catch (const fiberio::DnsError& e) {
    EXPECT_EQ(e.code(), EAI_NONAME) << e.what();
    std::string what = e.what();
    EXPECT_NE(what.find("missing.fiberio.test"), std::string::npos) << what;
    EXPECT_NE(what.find(::gai_strerror(EAI_NONAME)), std::string::npos) << what;
  }
  EXPECT_GE(dns.queries(), 1);
}

// A timeout ends the wait at the timeout; the answer that comes later is dropped, nothing leaks.
TEST(Dns, TimeoutEndsTheLookupAndTheLateAnswerIsDiscarded) {
  REQUIRE_DNS_SANDBOX();
  SlowDnsServer dns(300ms);
  add_names(dns, 1);
  LeakCheck leaks;
  {
    auto t0 = fiberio::Clock::now();
    EXPECT_THROW(fiberio::resolve("n0.fiberio.test", 80, AF_UNSPEC, 50ms), fiberio::TimeoutError);
    double ms = ms_since(t0);
    EXPECT_GE(ms, 45);
    EXPECT_LT(ms, 200);
    {
      fiberio::Timeout guard(50ms);  // a Timeout guard around the lookup acts the same
      EXPECT_THROW(fiberio::resolve("n0.fiberio.test", 80), fiberio::TimeoutError);
    }
    fiberio::sleep(400ms);  // the late answers arrive now, and nobody wants them
    EXPECT_EQ(fiberio::resolve("n0.fiberio.test", 81), Address("10.0.0.0", 81)) << "the resolver still works";
  }
  leaks.check();
}

// kill() during a lookup: the greenlet dies at once (the lookup's thread owns everything it touches).
TEST(Dns, KillDuringLookupEndsTheGreenletAtOnce) {
  REQUIRE_DNS_SANDBOX();
  SlowDnsServer dns(300ms);
  add_names(dns, 1);
  LeakCheck leaks;
  {
    bool after = false;
    auto g = fiberio::spawn([&] {
      fiberio::resolve("n0.fiberio.test", 80);
      after = true;
    });
    fiberio::sleep(50ms);
    auto t0 = fiberio::Clock::now();
    g.kill();
    EXPECT_LT(ms_since(t0), 100) << "kill waited for the lookup";
    EXPECT_TRUE(g.killed());
    EXPECT_FALSE(after);
    fiberio::sleep(400ms);  // the answer comes and is discarded
  }
  leaks.check();
}

// Several threads, each with its own hub and fibers, resolve at once: still one server delay.
TEST(Dns, LookupsFromSeveralHubsAtOnce) {
  REQUIRE_DNS_SANDBOX();
  SlowDnsServer dns(300ms);
  add_names(dns, 20);
  auto t0 = fiberio::Clock::now();
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([t, &ok] {
      std::vector<fiberio::Greenlet<Address>> gs;
      for (int i = t * 5; i < t * 5 + 5; ++i)
        gs.push_back(fiberio::spawn([i] { return fiberio::resolve("n" + std::to_string(i) + ".fiberio.test", 80); }));
      for (int k = 0; k < 5; ++k)
        if (gs[static_cast<std::size_t>(k)].get() == Address("10.0.0." + std::to_string(t * 5 + k), 80)) ++ok;
    });
  for (auto& th : threads) th.join();
  double ms = ms_since(t0);
  EXPECT_EQ(ok, 20);
  EXPECT_LT(ms, 800) << "lookups from 4 hubs queued behind each other";
}
