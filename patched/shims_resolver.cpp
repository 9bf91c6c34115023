// Shims: the name resolver. glibc's resolver blocks in its own sockets, opened and polled inside libc
// where no shim sees them, so in a fiber a lookup runs on the resolver's own threads (the same path as
// fiberio::resolve: one thread per lookup in flight, never queued behind CPU work on the default pool)
// while only the calling fiber waits (gevent's threaded resolver does the same).
//
// The pool thread writes straight into the caller's buffers, so the caller waits for it even if it is
// killed meanwhile (lookups end by themselves: the resolver has its own timeouts); the kill is
// delivered afterwards, at the fiber's next suspension point. Numeric lookups need no network and
// stay in the calling thread.
#undef _FORTIFY_SOURCE
#include <arpa/inet.h>
#include <netdb.h>

#include <cctype>
#include <memory>
#include <vector>

#include "fiberio/dns.hpp"
#include "patched/blocking_call.hpp"
#include "patched/mode.hpp"
#include "patched/real.hpp"

namespace fiberio::patched::detail {
namespace {

bool numeric_host(const char* node, const addrinfo* hints) noexcept {
  if (!node || (hints && (hints->ai_flags & AI_NUMERICHOST))) return true;
  unsigned char buf[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, node, buf) == 1 || ::inet_pton(AF_INET6, node, buf) == 1;
}

bool numeric_service(const char* service, const addrinfo* hints) noexcept {
  if (!service || (hints && (hints->ai_flags & AI_NUMERICSERV))) return true;
  if (!*service) return false;
  for (const char* p = service; *p; ++p)
    if (!std::isdigit(static_cast<unsigned char>(*p))) return false;
  return true;
}

// Runs job() (returning int) on a resolver thread, waiting uninterruptibly; carries errno and h_errno
// back. Falls back to running it here if no resolver thread can be started.
template <class Job>
int on_pool(Job job) {
  struct Out {
    int rc, err, herr;
  };
  try {
    auto out = wait_uninterruptibly(fiberio::detail::resolver_spawn([job]() mutable {
      int rc = job();
      return Out{rc, errno, h_errno};
    }));
    errno = out.err;
    h_errno = out.herr;
    return out.rc;
  } catch (const std::exception&) {
    return job();
  }
}

// gethostbyname(2) return a pointer to storage valid until the next call: keep one per fiber, so
// concurrent fibers do not overwrite each other's answers (libc keeps one per process).
struct HostStorage {
  hostent entry{};
  std::vector<char> buf = std::vector<char>(1024);
};

hostent* lookup_host(const char* name, int af) {
  static const fiberio::local<HostStorage> storage;  // gethostbyname's static result, per greenlet
  auto& st = *storage;
  for (;;) {
    hostent* result = nullptr;
    int herr = 0;
    int rc = on_pool([&] {
      return af < 0 ? real::gethostbyname_r(name, &st.entry, st.buf.data(), st.buf.size(), &result, &herr)
                    : real::gethostbyname2_r(name, af, &st.entry, st.buf.data(), st.buf.size(), &result, &herr);
    });
    if (rc == ERANGE && st.buf.size() < (1u << 20)) {
      st.buf.resize(st.buf.size() * 4);
      continue;
    }
    h_errno = herr;
    return rc == 0 ? result : nullptr;
  }
}

}  // namespace
}  // namespace fiberio::patched::detail

using namespace fiberio::patched;
using namespace fiberio::patched::detail;

extern "C" {

int getaddrinfo(const char* node, const char* service, const addrinfo* hints, addrinfo** res) {
  if (!cooperative_hub() || (numeric_host(node, hints) && numeric_service(service, hints)))
    return real::getaddrinfo(node, service, hints, res);
  int saved = errno;
  int rc = on_pool([=] { return real::getaddrinfo(node, service, hints, res); });
  if (rc != EAI_SYSTEM) errno = saved;
  return rc;
}

int getnameinfo(const sockaddr* addr, socklen_t len, char* host, socklen_t hostlen, char* serv, socklen_t servlen,
                int flags) {
  bool numeric = (!host || (flags & NI_NUMERICHOST)) && (!serv || (flags & NI_NUMERICSERV));
  if (numeric || !cooperative_hub()) return real::getnameinfo(addr, len, host, hostlen, serv, servlen, flags);
  int saved = errno;
  int rc = on_pool([=] { return real::getnameinfo(addr, len, host, hostlen, serv, servlen, flags); });
  if (rc != EAI_SYSTEM) errno = saved;
  return rc;
}

hostent* gethostbyname(const char* name) {
  if (!cooperative_hub()) return real::gethostbyname(name);
  return lookup_host(name, -1);
}

hostent* gethostbyname2(const char* name, int af) {
  if (!cooperative_hub()) return real::gethostbyname2(name, af);
  return lookup_host(name, af);
}

int gethostbyname_r(const char* name, hostent* ret, char* buf, size_t buflen, hostent** result, int* h_errnop) {
  if (!cooperative_hub()) return real::gethostbyname_r(name, ret, buf, buflen, result, h_errnop);
  return on_pool([=] { return real::gethostbyname_r(name, ret, buf, buflen, result, h_errnop); });
}

int gethostbyname2_r(const char* name, int af, hostent* ret, char* buf, size_t buflen, hostent** result,
                     int* h_errnop) {
  if (!cooperative_hub()) return real::gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop);
  return on_pool([=] { return real::gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop); });
}

}  // extern "C"
