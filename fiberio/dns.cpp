#include "fiberio/dns.hpp"

#include <arpa/inet.h>
#include <netdb.h>

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <system_error>
#include <thread>

namespace fiberio {

namespace {

// The resolver's pool. A blocking lookup spends its time waiting on the network, not on a CPU, so the
// pool is sized for waiting: a new thread whenever a job arrives and no thread is idle (up to the
// cap), and a thread that has been idle for kIdle exits. Threads are detached and the pool is never
// destroyed: a lookup may outlive its caller (a timeout or kill leaves it running; its answer is then
// dropped), and exit must not wait for a slow name server.
class ResolverPool {
 public:
  static constexpr auto kIdle = std::chrono::seconds(5);

  explicit ResolverPool(std::size_t max_threads) : max_(max_threads) {}

  void submit(std::function<void()> job) {
    std::unique_lock lk(mu_);
    queue_.push_back(std::move(job));
    if (idle_ >= queue_.size() || threads_ >= max_) {
      lk.unlock();
      cv_.notify_one();
      return;
    }
    ++threads_;
    peak_ = std::max(peak_, threads_);
    try {
      std::thread([this] { worker(); }).detach();
    } catch (...) {
      --threads_;
      if (threads_ == 0) {  // nobody would ever run it
        queue_.pop_back();
        throw;
      }
      lk.unlock();
      cv_.notify_one();
    }
  }

  ResolverStats stats() {
    std::lock_guard lk(mu_);
    return {threads_, idle_, peak_, max_};
  }

 private:
  void worker() {
    std::unique_lock lk(mu_);
    for (;;) {
      ++idle_;
      bool got = cv_.wait_for(lk, kIdle, [this] { return !queue_.empty(); });
      --idle_;
      if (!got) {
        --threads_;
        return;
      }
      auto job = std::move(queue_.front());
      queue_.pop_front();
      lk.unlock();
      job();  // never throws: resolver_spawn catches
      job = nullptr;
      lk.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  std::size_t threads_ = 0, idle_ = 0, peak_ = 0;
  const std::size_t max_;
};

// One pool per process. A fork()ed child has none of the parent's threads: it forgets the parent's
// pool (leaked: its mutex may be held by a thread that does not exist there) and makes its own.
std::atomic<ResolverPool*> g_resolver{nullptr};
std::mutex g_resolver_mu;

ResolverPool& resolver_pool() {
  if (auto* p = g_resolver.load(std::memory_order_acquire)) return *p;
  std::lock_guard lk(g_resolver_mu);
  if (auto* p = g_resolver.load()) return *p;
  static std::once_flag once;
  std::call_once(once, [] { ::pthread_atfork(nullptr, nullptr, [] { g_resolver.store(nullptr); }); });
  std::size_t max = 256;
  if (const char* e = std::getenv("FIBERIO_RESOLVER_THREADS")) {
    long v = std::strtol(e, nullptr, 10);
    if (v > 0) max = static_cast<std::size_t>(v);
  }
  auto* p = new ResolverPool(max);
  g_resolver.store(p, std::memory_order_release);
  return *p;
}

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

ResolverStats resolver_stats() { return resolver_pool().stats(); }

void detail::resolver_submit(std::function<void()> job) { resolver_pool().submit(std::move(job)); }

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
  // The job owns its arguments: if this fiber is killed or times out, the lookup finishes on its own
  // and its answer goes to an AsyncResult nobody reads.
  auto result = detail::resolver_spawn([host, port, family] { return getaddrinfo_blocking(host, port, family); });
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
