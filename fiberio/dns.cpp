#include "fiberio/dns.hpp"

#include <arpa/inet.h>
#include <netdb.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "fiberio/threadpool.hpp"

namespace fiberio {

namespace {

bool is_ip_literal(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 || ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

std::vector<Address> getaddrinfo_blocking(const std::string& host, std::uint16_t port, int family) {
  addrinfo hints{};
  hints.ai_family = family;
  hints.ai_socktype = SOCK_STREAM;  // one entry per address instead of one per socket type
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0) {
    std::string why = rc == EAI_SYSTEM ? std::strerror(errno) : ::gai_strerror(rc);
    throw DnsError(rc, fmt::format("fiberio::resolve(\"{}\", {}): {}", host, port, why));
  }
  std::vector<Address> out;
  for (auto* ai = res; ai; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    auto a = Address::from_sockaddr(ai->ai_addr, ai->ai_addrlen).with_port(port);
    if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(std::move(a));
  }
  ::freeaddrinfo(res);
  if (out.empty())
    throw DnsError(EAI_NONAME, fmt::format("fiberio::resolve(\"{}\", {}): no IPv4/IPv6 address", host, port));
  return out;
}

// True if a Timeout guard of the running fiber has fired: that TimeoutError is the caller's, not a
// connect attempt's, so create_connection must not swallow it and try the next address.
bool guard_fired() {
  return detail::fiber_state().any_timeout_fired();
}

}  // namespace

std::vector<Address> resolve_all(std::string_view host_in, std::uint16_t port, int family, OptDuration timeout) {
  std::string host(host_in);
  if (host.empty() || host.find('\0') != std::string::npos)
    throw std::invalid_argument(fmt::format("fiberio::resolve(\"{}\", {}): empty host name or a NUL byte in it",
                                            host, port));
  if (family != AF_UNSPEC && family != AF_INET && family != AF_INET6)
    throw std::invalid_argument(fmt::format("fiberio::resolve(\"{}\"): family must be AF_UNSPEC, AF_INET or AF_INET6", host));
  if (is_ip_literal(host)) {
    Address a(host, port);
    if (family != AF_UNSPEC && a.family() != family)
      throw DnsError(EAI_FAMILY, fmt::format("fiberio::resolve(\"{}\", {}): address is not of the requested family",
                                             host, port));
    return {a};
  }
  auto result = default_threadpool().spawn(getaddrinfo_blocking, host, port, family);
  if (!result.wait(timeout))
    throw TimeoutError(fmt::format("fiberio::resolve(\"{}\", {}): timed out after {:g} ms", host, port,
                                   std::chrono::duration<double, std::milli>(*timeout).count()));
  return result.get();
}

Address resolve(std::string_view host, std::uint16_t port, int family, OptDuration timeout) {
  return resolve_all(host, port, family, timeout).front();
}

Socket create_connection(const Address& addr, OptDuration timeout, std::optional<Address> source_address) {
  Socket s = Socket::for_address(addr, SOCK_STREAM);
  if (source_address) s.bind(*source_address);
  s.connect(addr, timeout);
  if (!addr.is_unix()) s.set_nodelay();  // as Go's Dial and the StreamServer (ServerOptions::nodelay)
  s.set_timeout(timeout);
  return s;
}

Socket create_connection(std::string_view host, std::uint16_t port, OptDuration timeout,
                         std::optional<Address> source_address) {
  auto addrs = resolve_all(host, port, AF_UNSPEC, timeout);
  std::exception_ptr last;
  for (auto& a : addrs) {
    if (source_address && source_address->family() != a.family()) continue;
    try {
      return create_connection(a, timeout, source_address);
    } catch (const TimeoutError&) {
      if (guard_fired()) throw;
      last = std::current_exception();
    } catch (const std::system_error&) {
      last = std::current_exception();
    }
  }
  if (last) std::rethrow_exception(last);
  throw std::invalid_argument(fmt::format("fiberio::create_connection(\"{}\", {}): no address of {}'s family",
                                          host, port, source_address ? source_address->to_string() : ""));
}

}  // namespace fiberio
