// Name resolution and connecting by name (gevent's resolver + socket.create_connection).
//
// getaddrinfo blocks its thread, so each lookup runs on a thread of the resolver's own pool, which
// grows to one thread per lookup in flight (up to resolver_max_threads()) and shrinks when idle: a
// slow name server blocks only the calling fiber, never the hub, and lookups never queue behind each
// other or behind CPU work on default_threadpool(). It is libc's getaddrinfo, so /etc/hosts,
// nsswitch.conf and resolv.conf (search domains, options) behave exactly as in any program. Numeric
// hosts ("127.0.0.1", "::1") are converted in place without a thread hop.
#pragma once
#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "fiberio/address.hpp"
#include "fiberio/event.hpp"
#include "fiberio/socket.hpp"

namespace fiberio {

// The resolver's threads now (busy or idle for less than a few seconds), the most there have been,
// and the cap: FIBERIO_RESOLVER_THREADS, default 256 (read at first use). Lookups beyond the cap queue.
struct ResolverStats {
  std::size_t threads = 0, idle = 0, peak = 0, max_threads = 0;
};
ResolverStats resolver_stats();

namespace detail {
// Queues job on the resolver's threads, starting one if none is idle. Throws std::system_error if no
// thread exists and none can be started.
void resolver_submit(std::function<void()> job);
// Runs f() on a resolver thread; the AsyncResult gets its result or exception (the shims use this).
template <class F>
auto resolver_spawn(F f) {
  using R = std::invoke_result_t<F&>;
  AsyncResult<R> result;
  resolver_submit([result, f = std::move(f)]() mutable {
    try {
      if constexpr (std::is_void_v<R>) {
        f();
        result.set();
      } else {
        result.set(f());
      }
    } catch (...) {
      result.set_exception(std::current_exception());
    }
  });
  return result;
}
}  // namespace detail

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
// The TLS form, create_connection(host, port, tls_context, timeout), is in fiberio/tls.hpp.
// Connects to one address (TCP, or a unix stream socket for unix addresses).
Socket create_connection(const Address& addr, OptDuration timeout = {}, std::optional<Address> source_address = {});

}  // namespace fiberio
