#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <fiberio/fiberio.hpp>
#include <sstream>

#include "watchdog.hpp"

using fiberio::Address;

namespace {
// The invalid_argument's message, or "" if parse did not throw one.
std::string parse_error(std::string_view text) {
  try {
    Address::parse(text);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Address, Ipv4FromHostPort) {
  Address a("127.0.0.1", 8000);
  EXPECT_TRUE(a.is_ipv4());
  EXPECT_EQ(a.family(), AF_INET);
  EXPECT_EQ(a.host(), "127.0.0.1");
  EXPECT_EQ(a.port(), 8000);
  EXPECT_EQ(fmt::format("{}", a), "127.0.0.1:8000");
  auto* sin = reinterpret_cast<const sockaddr_in*>(a.sockaddr_ptr());
  EXPECT_EQ(a.sockaddr_len(), sizeof(sockaddr_in));
  EXPECT_EQ(ntohs(sin->sin_port), 8000);
  EXPECT_EQ(ntohl(sin->sin_addr.s_addr), 0x7f000001u);
}

TEST(Address, Ipv6FromHostPort) {
  Address a("::1", 8000);
  EXPECT_TRUE(a.is_ipv6());
  EXPECT_EQ(a.host(), "::1");
  EXPECT_EQ(a.port(), 8000);
  EXPECT_EQ(fmt::format("{}", a), "[::1]:8000");
  EXPECT_EQ(Address("[::1]", 1), Address("::1", 1));
}

TEST(Address, SpecialHosts) {
  EXPECT_EQ(Address("", 80).host(), "0.0.0.0");
  EXPECT_EQ(Address("*", 80).host(), "0.0.0.0");
  EXPECT_EQ(Address("localhost", 80).host(), "127.0.0.1");
}

TEST(Address, ParseForms) {
  EXPECT_EQ(Address::parse("127.0.0.1:8000"), Address("127.0.0.1", 8000));
  EXPECT_EQ(Address::parse("[::1]:8000"), Address("::1", 8000));
  EXPECT_EQ(Address::parse("[::]:0").port(), 0);
  EXPECT_EQ(Address::parse(":8000"), Address("0.0.0.0", 8000));
  EXPECT_EQ(Address::parse("8000"), Address("0.0.0.0", 8000));
  EXPECT_EQ(Address::parse("localhost:65535").port(), 65535);
  auto u = Address::parse("unix:/tmp/x");
  EXPECT_TRUE(u.is_unix());
  EXPECT_EQ(u.path(), "/tmp/x");
  EXPECT_EQ(u.port(), 0);
  EXPECT_EQ(u.host(), "");
  EXPECT_EQ(fmt::format("{}", u), "unix:/tmp/x");
}

TEST(Address, RoundTripThroughFormat) {
  for (const char* text : {"10.1.2.3:1", "[fe80::1]:443", "[2001:db8::42]:65535", "unix:/run/a.sock", "unix:@abstract"})
    EXPECT_EQ(fmt::format("{}", Address::parse(text)), text);
}

TEST(Address, UnixAbstract) {
  auto a = Address::parse("unix:@fiberio-test");
  EXPECT_TRUE(a.is_unix());
  EXPECT_EQ(a.path(), "@fiberio-test");
  auto* un = reinterpret_cast<const sockaddr_un*>(a.sockaddr_ptr());
  EXPECT_EQ(un->sun_path[0], '\0');  // the kernel's abstract-namespace marker
  EXPECT_EQ(std::string(un->sun_path + 1, 12), "fiberio-test");
}

TEST(Address, ParseErrorsNameTheText) {
  struct Case {
    const char* text;
    const char* why;
  } cases[] = {
      {"", "empty"},
      {"127.0.0.1", "missing"},
      {"127.0.0.1:", "missing port"},
      {"127.0.0.1:http", "not a number"},
      {"127.0.0.1:65536", "out of range"},
      {"127.0.0.1:-1", "not a number"},
      {"127.0.0.1:80x", "not a number"},
      {"::1:80", "brackets"},
      {"[::1:80", "missing ']'"},
      {"[::1]80", "expected"},
      {"[]:80", "empty IPv6"},
      {"999.1.1.1:80", "not a numeric"},
      {"example.com:80", "resolve"},
      {"unix:", "empty"},
  };
  for (auto& c : cases) {
    auto msg = parse_error(c.text);
    EXPECT_NE(msg.find(fmt::format("\"{}\"", c.text)), std::string::npos) << c.text << " -> " << msg;
    EXPECT_NE(msg.find(c.why), std::string::npos) << c.text << " -> " << msg;
  }
  std::string long_path = "unix:/" + std::string(200, 'a');
  EXPECT_NE(parse_error(long_path).find("too long"), std::string::npos);
}

TEST(Address, ConstructorRejectsNames) {
  try {
    Address("example.com", 80);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("example.com"), std::string::npos);
  }
}

TEST(Address, FromSockaddrAndEquality) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(1234);
  sin.sin_addr.s_addr = htonl(0x0a000001);
  auto a = Address::from_sockaddr(reinterpret_cast<sockaddr*>(&sin), sizeof sin);
  EXPECT_EQ(a, Address("10.0.0.1", 1234));
  EXPECT_FALSE(a == Address("10.0.0.1", 1235));
  EXPECT_FALSE(a == Address("::1", 1234));
  EXPECT_EQ(a.with_port(9), Address("10.0.0.1", 9));
  EXPECT_THROW(Address::unix_path("/x").with_port(1), std::invalid_argument);
  Address empty;
  EXPECT_TRUE(empty.empty());
  EXPECT_EQ(fmt::format("{}", empty), "<unspecified>");
  std::ostringstream os;
  os << a;
  EXPECT_EQ(os.str(), "10.0.0.1:1234");
}
