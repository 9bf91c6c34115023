// Name resolution and connecting by name (gevent's resolver + socket.create_connection).
//
// getaddrinfo blocks its thread, so it runs on fiberio::default_threadpool(): a slow DNS server
// blocks only the calling fiber, never the hub. Numeric hosts ("127.0.0.1", "::1") are converted
// in place without a thread hop.
#pragma once
#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "fiberio/address.hpp"
#include "fiberio/socket.hpp"

namespace fiberio {

// getaddrinfo failed (Python's socket.gaierror). code() is the EAI_* value.
class DnsError : public std::runtime_error {
 public:
  DnsError(int code, const std::string& what) : std::runtime_error(what), code_(code) {}
  int code() const noexcept { return code_; }

 private:
  int code_;
};

// Every address of host:port (AF_UNSPEC: IPv4 and IPv6, in getaddrinfo's preference order, without
// duplicates). Throws DnsError; TimeoutError if `timeout` passes first (the lookup thread finishes on
// its own).
std::vector<Address> resolve_all(std::string_view host, std::uint16_t port, int family = AF_UNSPEC,
                                 OptDuration timeout = {});
// The first of resolve_all().
Address resolve(std::string_view host, std::uint16_t port, int family = AF_UNSPEC, OptDuration timeout = {});

// Connects a TCP socket to host:port, trying each resolved address in turn until one accepts; rethrows
// the last failure if none does. `timeout` bounds the lookup and each connect attempt, and becomes
// the returned socket's timeout (gevent's create_connection). source_address: bind there first (only
// addresses of its family are tried).
Socket create_connection(std::string_view host, std::uint16_t port, OptDuration timeout = {},
                         std::optional<Address> source_address = {});
// Connects to one address (TCP, or a unix stream socket for unix addresses).
Socket create_connection(const Address& addr, OptDuration timeout = {}, std::optional<Address> source_address = {});

}  // namespace fiberio
