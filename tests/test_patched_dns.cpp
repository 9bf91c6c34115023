// The shims' resolver: plain getaddrinfo / gethostbyname / gethostbyname_r in fibers take the same
// path as fiberio::resolve (the resolver's own threads, one per lookup in flight), so 20 fibers
// resolving against a name server that answers after 300 ms finish in about 300 ms, and the hub runs
// meanwhile. The name server is the test's own (support/dns_server.hpp).
#include <arpa/inet.h>
#include <netdb.h>

#include <cstring>
#include <string>
#include <vector>

#include "support/dns_server.hpp"
#include "support/patched.hpp"
#include "watchdog.hpp"

using namespace fiberio_test;

namespace {

// Enter the sandbox while the process still has one thread.
const bool kSandboxEntered = (dns_sandbox_error(), true);

#define REQUIRE_DNS_SANDBOX()                                                                             \
  do {                                                                                                    \
    if (!dns_sandbox_error().empty())                                                                     \
      GTEST_SKIP() << "cannot point the resolver at a test name server: " << dns_sandbox_error();         \
  } while (0)

std::string ipv4_of(const addrinfo* res) {
  if (!res || res->ai_family != AF_INET) return "none";
  char host[INET_ADDRSTRLEN];
  ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(res->ai_addr)->sin_addr, host, sizeof host);
  return host;
}

void add_names(SlowDnsServer& dns, int n) {
  for (int i = 0; i < n; ++i) dns.add("n" + std::to_string(i) + ".fiberio.test", "10.0.0." + std::to_string(i));
}

}  // namespace

TEST(PatchedDns, TwentyFibersCallingGetaddrinfoTakeOneServerDelay) {
  REQUIRE_DNS_SANDBOX();
  fiberio::ensure_hub();
  SlowDnsServer dns(300ms);
  add_names(dns, 20);
  LeakCheck leaks;
  {
    Ticker ticker;
    std::vector<fiberio::Greenlet<std::string>> gs;
    auto t0 = Clock::now();
    for (int i = 0; i < 20; ++i)
      gs.push_back(fiberio::spawn([i] {
        addrinfo hints{};
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* res = nullptr;
        std::string name = "n" + std::to_string(i) + ".fiberio.test";
        int rc = ::getaddrinfo(name.c_str(), "80", &hints, &res);  // plain libc call, AF_UNSPEC
        if (rc != 0) return std::string("error: ") + ::gai_strerror(rc);
        std::string out = ipv4_of(res);
        ::freeaddrinfo(res);
        return out;
      }));
    for (int i = 0; i < 20; ++i) EXPECT_EQ(gs[static_cast<std::size_t>(i)].get(), "10.0.0." + std::to_string(i));
    double ms = ms_since(t0);
    std::printf("20 fibers in getaddrinfo, server delay 300 ms: %.0f ms\n", ms);
    EXPECT_GE(ms, 290);
    EXPECT_LT(ms, 800) << "the lookups queued behind each other";
    EXPECT_LT(ticker.max_gap_ms(), 150) << "the hub stalled during the lookups";
  }
  leaks.check();
}

TEST(PatchedDns, TwentyFibersCallingGethostbynameTakeOneServerDelay) {
  REQUIRE_DNS_SANDBOX();
  fiberio::ensure_hub();
  SlowDnsServer dns(300ms);
  add_names(dns, 20);
  LeakCheck leaks;
  {
    std::vector<fiberio::Greenlet<std::string>> gs;
    auto t0 = Clock::now();
    for (int i = 0; i < 20; ++i)
      gs.push_back(fiberio::spawn([i] {
        std::string name = "n" + std::to_string(i) + ".fiberio.test";
        std::string out;
        if (i % 2 == 0) {
          hostent* he = ::gethostbyname(name.c_str());  // per-fiber static storage
          if (!he || he->h_addrtype != AF_INET || !he->h_addr_list[0]) return std::string("error");
          char host[INET_ADDRSTRLEN];
          ::inet_ntop(AF_INET, he->h_addr_list[0], host, sizeof host);
          out = host;
        } else {
          hostent ret{}, *result = nullptr;
          char buf[2048];
          int herr = 0;
          if (::gethostbyname_r(name.c_str(), &ret, buf, sizeof buf, &result, &herr) != 0 || !result)
            return std::string("error");
          char host[INET_ADDRSTRLEN];
          ::inet_ntop(AF_INET, result->h_addr_list[0], host, sizeof host);
          out = host;
        }
        return out;
      }));
    for (int i = 0; i < 20; ++i) EXPECT_EQ(gs[static_cast<std::size_t>(i)].get(), "10.0.0." + std::to_string(i));
    double ms = ms_since(t0);
    EXPECT_LT(ms, 800) << "the lookups queued behind each other";
    // A missing name: NULL and h_errno HOST_NOT_FOUND, as libc.
    EXPECT_EQ(::gethostbyname("missing.fiberio.test"), nullptr);
    EXPECT_EQ(h_errno, HOST_NOT_FOUND);
  }
  leaks.check();
}

// A C caller cannot be unwound mid-call: a kill during getaddrinfo waits for the lookup (the resolver
// thread writes into the caller's result), then is delivered at the fiber's next suspension point.
TEST(PatchedDns, KillDuringGetaddrinfoIsDeliveredWhenTheLookupReturns) {
  REQUIRE_DNS_SANDBOX();
  fiberio::ensure_hub();
  SlowDnsServer dns(300ms);
  add_names(dns, 1);
  LeakCheck leaks;
  {
    int rc = -1;
    bool after_sleep = false;
    auto g = fiberio::spawn([&] {
      addrinfo* res = nullptr;
      rc = ::getaddrinfo("n0.fiberio.test", nullptr, nullptr, &res);
      if (rc == 0) ::freeaddrinfo(res);
      fiberio::sleep(1s);  // the kill lands here
      after_sleep = true;
    });
    fiberio::sleep(50ms);
    auto t0 = Clock::now();
    g.kill();
    double ms = ms_since(t0);
    EXPECT_TRUE(g.killed());
    EXPECT_EQ(rc, 0) << "the lookup completed before the kill was delivered";
    EXPECT_FALSE(after_sleep);
    EXPECT_LT(ms, 600);
  }
  leaks.check();
}
