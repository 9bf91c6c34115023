#include "fiberio/address.hpp"

#include <arpa/inet.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <charconv>
#include <cstddef>
#include <cstring>
#include <ostream>
#include <stdexcept>

namespace fiberio {

namespace {

[[noreturn]] void bad(std::string_view fn, std::string_view text, std::string_view why) {
  throw std::invalid_argument(fmt::format("fiberio::Address::{}(\"{}\"): {}", fn, text, why));
}

std::uint16_t parse_port(std::string_view fn, std::string_view text, std::string_view port) {
  if (port.empty()) bad(fn, text, "missing port");
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size())
    bad(fn, text, fmt::format("port \"{}\" is not a number", port));
  if (value > 65535) bad(fn, text, fmt::format("port {} is out of range (0-65535)", port));
  return static_cast<std::uint16_t>(value);
}

}  // namespace

Address::Address() noexcept : storage_{}, len_(0) { storage_.ss_family = AF_UNSPEC; }

Address::Address(std::string_view host, std::uint16_t port) : Address() {
  std::string h(host);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (h.empty() || h == "*") h = "0.0.0.0";
  else if (h == "localhost") h = "127.0.0.1";
  if (h.find('\0') != std::string::npos) bad("Address", host, "host contains a NUL byte");
  // getaddrinfo with AI_NUMERICHOST never touches the network; it also understands "%scope".
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_flags = AI_NUMERICHOST;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(h.c_str(), nullptr, &hints, &res);
  if (rc != 0 || !res)
    bad("Address", host,
        "not a numeric IPv4/IPv6 address (use fiberio::resolve() for host names)");
  std::memcpy(&storage_, res->ai_addr, res->ai_addrlen);
  len_ = res->ai_addrlen;
  ::freeaddrinfo(res);
  if (storage_.ss_family == AF_INET)
    reinterpret_cast<sockaddr_in*>(&storage_)->sin_port = htons(port);
  else
    reinterpret_cast<sockaddr_in6*>(&storage_)->sin6_port = htons(port);
}

Address Address::unix_path(std::string_view path) {
  if (path.empty()) bad("unix_path", path, "empty path");
  Address a;
  auto* un = reinterpret_cast<sockaddr_un*>(&a.storage_);
  un->sun_family = AF_UNIX;
  bool abstract = path.front() == '@';
  // Abstract names have no terminating NUL; paths need room for one.
  std::size_t room = sizeof(un->sun_path) - (abstract ? 0 : 1);
  if (path.size() > room)
    bad("unix_path", path, fmt::format("path is {} bytes; unix socket paths hold at most {}", path.size(), room));
  if (!abstract && path.find('\0') != std::string_view::npos) bad("unix_path", path, "path contains a NUL byte");
  std::memcpy(un->sun_path, path.data(), path.size());
  if (abstract) un->sun_path[0] = '\0';
  a.len_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + (abstract ? 0 : 1));
  return a;
}

Address Address::parse(std::string_view text) {
  if (text.starts_with("unix:")) {
    auto path = text.substr(5);
    if (path.empty()) bad("parse", text, "empty unix socket path");
    try {
      return unix_path(path);
    } catch (const std::invalid_argument&) {
      bad("parse", text, fmt::format("unix socket path is too long or contains a NUL byte"));
    }
  }
  if (text.empty()) bad("parse", text, "empty address (expected \"host:port\", \"[v6]:port\" or \"unix:/path\")");
  std::string_view host, port;
  if (text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos) bad("parse", text, "missing ']' after an IPv6 address");
    host = text.substr(1, close - 1);
    auto rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ':') bad("parse", text, "expected \":port\" after ']'");
    port = rest.substr(1);
    if (host.empty()) bad("parse", text, "empty IPv6 address in brackets");
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      // A bare number is a port on every interface (gevent accepts "8000").
      if (text.find_first_not_of("0123456789") == std::string_view::npos)
        return Address("", parse_port("parse", text, text));
      bad("parse", text, "missing \":port\" (expected \"host:port\", \"[v6]:port\" or \"unix:/path\")");
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos)
      bad("parse", text, "IPv6 addresses need brackets, as in \"[::1]:8000\"");
  }
  auto p = parse_port("parse", text, port);
  try {
    return Address(host, p);
  } catch (const std::invalid_argument&) {
    bad("parse", text,
        fmt::format("\"{}\" is not a numeric IPv4/IPv6 address (use fiberio::resolve() for host names)", host));
  }
}

Address Address::from_sockaddr(const sockaddr* sa, socklen_t len) {
  Address a;
  if (!sa || len == 0) return a;
  if (len > sizeof(a.storage_)) len = sizeof(a.storage_);
  std::memcpy(&a.storage_, sa, len);
  a.len_ = len;
  // An unnamed unix socket (a client's, or socketpair's) reports only the family.
  return a;
}

std::string Address::host() const {
  char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 2] = {};
  if (is_ipv4() || is_ipv6()) {
    if (::getnameinfo(sockaddr_ptr(), len_, buf, sizeof buf, nullptr, 0, NI_NUMERICHOST) == 0) return buf;
  }
  return "";
}

std::uint16_t Address::port() const noexcept {
  if (is_ipv4()) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  if (is_ipv6()) return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
  return 0;
}

std::string Address::path() const {
  if (!is_unix()) return "";
  auto* un = reinterpret_cast<const sockaddr_un*>(&storage_);
  std::size_t n = len_ > offsetof(sockaddr_un, sun_path) ? len_ - offsetof(sockaddr_un, sun_path) : 0;
  if (n == 0) return "";
  if (un->sun_path[0] == '\0') return "@" + std::string(un->sun_path + 1, n - 1);
  return std::string(un->sun_path, ::strnlen(un->sun_path, n));
}

Address Address::with_port(std::uint16_t port) const {
  Address a = *this;
  if (is_ipv4()) reinterpret_cast<sockaddr_in*>(&a.storage_)->sin_port = htons(port);
  else if (is_ipv6()) reinterpret_cast<sockaddr_in6*>(&a.storage_)->sin6_port = htons(port);
  else throw std::invalid_argument(fmt::format("fiberio::Address::with_port: {} is not an IP address", to_string()));
  return a;
}

std::string Address::to_string() const {
  if (is_ipv4()) return fmt::format("{}:{}", host(), port());
  if (is_ipv6()) return fmt::format("[{}]:{}", host(), port());
  if (is_unix()) {
    auto p = path();
    return p.empty() ? "unix:<unnamed>" : "unix:" + p;
  }
  return "<unspecified>";
}

bool operator==(const Address& a, const Address& b) noexcept {
  if (a.family() != b.family()) return false;
  if (a.is_ipv4() || a.is_ipv6()) return a.port() == b.port() && a.host() == b.host();
  if (a.is_unix()) return a.path() == b.path();
  return true;
}

std::ostream& operator<<(std::ostream& os, const Address& a) { return os << a.to_string(); }

}  // namespace fiberio
