// Address: a socket address (IPv4, IPv6 or unix-domain) as a value type, with parsing and formatting.
//
// Addresses are always numeric: Address never does DNS (that is fiberio::resolve, in dns.hpp, which
// runs getaddrinfo off the hub). The only names accepted are "" / "*" (every interface, 0.0.0.0) and
// "localhost" (127.0.0.1, which RFC 6761 reserves for loopback), so "localhost:8000" just works.
//
//   Address a("127.0.0.1", 8000);            Address::parse("127.0.0.1:8000")
//   Address b("::1", 8000);                  Address::parse("[::1]:8000")
//   Address c = Address::unix_path("/tmp/s"); Address::parse("unix:/tmp/s")
//   Address::parse(":8000") / Address::parse("8000")   -> 0.0.0.0:8000
//   Address::parse("unix:@name")                          -> Linux abstract-namespace unix socket
//   fmt::format("{}", a) == "127.0.0.1:8000", "[::1]:8000", "unix:/tmp/s"
#pragma once
#include <fmt/format.h>
#include <sys/socket.h>

#include <cstdint>
#include <iosfwd>
#include <string>
#include <string_view>

namespace fiberio {

class Address {
 public:
  // An empty address (family() == AF_UNSPEC); what a default-constructed Address holds.
  Address() noexcept;
  // A numeric IPv4/IPv6 host ("127.0.0.1", "::1", "[::1]", "fe80::1%lo"), "", "*" or "localhost".
  // Throws std::invalid_argument naming the bad text.
  Address(std::string_view host, std::uint16_t port);
  // "host:port", "[v6]:port", ":port", "port", "unix:/path", "unix:@abstract".
  // Throws std::invalid_argument naming the bad text and what is wrong with it.
  static Address parse(std::string_view text);
  // A unix-domain socket path; a leading '@' means the Linux abstract namespace.
  static Address unix_path(std::string_view path);
  // From a kernel-filled sockaddr (accept, recvfrom, getsockname).
  static Address from_sockaddr(const sockaddr* sa, socklen_t len);

  int family() const noexcept { return static_cast<int>(storage_.ss_family); }
  bool empty() const noexcept { return family() == AF_UNSPEC; }
  bool is_ipv4() const noexcept { return family() == AF_INET; }
  bool is_ipv6() const noexcept { return family() == AF_INET6; }
  bool is_unix() const noexcept { return family() == AF_UNIX; }

  // IP text without brackets ("127.0.0.1", "::1", "fe80::1%lo"); "" for unix/empty addresses.
  std::string host() const;
  // 0 for unix/empty addresses.
  std::uint16_t port() const noexcept;
  // The unix socket path ("@name" for an abstract one); "" for IP addresses.
  std::string path() const;
  // A copy with another port (IP addresses only).
  Address with_port(std::uint16_t port) const;

  const sockaddr* sockaddr_ptr() const noexcept { return reinterpret_cast<const sockaddr*>(&storage_); }
  sockaddr* sockaddr_ptr() noexcept { return reinterpret_cast<sockaddr*>(&storage_); }
  socklen_t sockaddr_len() const noexcept { return len_; }

  // "127.0.0.1:8000", "[::1]:8000", "unix:/tmp/x", "unix:@name", "<unspecified>".
  std::string to_string() const;

  friend bool operator==(const Address& a, const Address& b) noexcept;

 private:
  sockaddr_storage storage_;
  socklen_t len_;
};

std::ostream& operator<<(std::ostream& os, const Address& a);

}  // namespace fiberio

template <>
struct fmt::formatter<fiberio::Address> : fmt::formatter<std::string_view> {
  template <class Ctx>
  auto format(const fiberio::Address& a, Ctx& ctx) const {
    return fmt::formatter<std::string_view>::format(a.to_string(), ctx);
  }
};
