// Name resolution on the default thread pool, and create_connection over its results.
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
using fiberio::Address;
using fiberio::Socket;
using fiberio::Stream;
using fiberio::StreamServer;
using fiberio_test::echo_lines;
using fiberio_test::LeakCheck;
using fiberio_test::quiet;

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
