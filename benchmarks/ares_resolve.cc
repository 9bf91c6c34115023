// The c-ares side of issue 12.5's comparison (benchmarks/RESULTS.md, "Name resolution"): N
// concurrent ares_getaddrinfo lookups on one thread (c-ares's own sockets in a poll loop, as a hub's
// poller would run them) against the tests' slow loopback name server, in the tests' sandbox.
// Not part of the CMake build (fiberio does not depend on c-ares); build it by hand, as root:
//
//   apt-get install libc-ares-dev
//   g++ -std=c++20 -O2 -I tests benchmarks/ares_resolve.cc -o /tmp/ares_resolve -lcares -lpthread
//   /tmp/ares_resolve 20 && /tmp/ares_resolve 200
#include <ares.h>
#include <poll.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "support/dns_server.hpp"

namespace {

struct Lookup {
  std::string name, got;
  bool done = false;
};

void on_result(void* arg, int status, int, ares_addrinfo* res) {
  auto* l = static_cast<Lookup*>(arg);
  l->done = true;
  if (status != ARES_SUCCESS) {
    l->got = std::string("error: ") + ares_strerror(status);
  } else {
    for (auto* n = res->nodes; n; n = n->ai_next)
      if (n->ai_family == AF_INET) {
        char host[INET_ADDRSTRLEN];
        ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(n->ai_addr)->sin_addr, host, sizeof host);
        l->got = host;
        break;
      }
  }
  if (res) ares_freeaddrinfo(res);
}

// Runs the channel until every lookup is done; c-ares's fds are polled, its timeouts honoured.
void run(ares_channel ch, const std::vector<Lookup>& ls) {
  auto pending = [&] {
    for (auto& l : ls)
      if (!l.done) return true;
    return false;
  };
  while (pending()) {
    ares_socket_t socks[ARES_GETSOCK_MAXNUM];
    int bits = ares_getsock(ch, socks, ARES_GETSOCK_MAXNUM);
    std::vector<pollfd> fds;
    for (int i = 0; i < ARES_GETSOCK_MAXNUM; ++i) {
      short ev = (ARES_GETSOCK_READABLE(bits, i) ? POLLIN : 0) | (ARES_GETSOCK_WRITABLE(bits, i) ? POLLOUT : 0);
      if (ev) fds.push_back({socks[i], ev, 0});
    }
    timeval tv{}, max{1, 0};
    ares_timeout(ch, &max, &tv);
    ::poll(fds.data(), fds.size(), static_cast<int>(tv.tv_sec * 1000 + tv.tv_usec / 1000));
    if (fds.empty()) ares_process_fd(ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    for (auto& p : fds)
      ares_process_fd(ch, (p.revents & (POLLIN | POLLERR | POLLHUP)) ? p.fd : ARES_SOCKET_BAD,
                      (p.revents & POLLOUT) ? p.fd : ARES_SOCKET_BAD);
  }
}

double lookup_all(ares_channel ch, std::vector<Lookup>& ls, int family) {
  auto t0 = std::chrono::steady_clock::now();
  ares_addrinfo_hints hints{};
  hints.ai_family = family;
  hints.ai_socktype = SOCK_STREAM;
  for (auto& l : ls) ares_getaddrinfo(ch, l.name.c_str(), "80", &hints, on_result, &l);
  run(ch, ls);
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  int n = argc > 1 ? std::stoi(argv[1]) : 20;
  if (auto err = fiberio_test::enter_dns_sandbox(); !err.empty()) {
    std::fprintf(stderr, "ares_resolve: %s\n", err.c_str());
    return 1;
  }
  fiberio_test::SlowDnsServer dns(std::chrono::milliseconds(300));
  for (int i = 0; i < n; ++i)
    dns.add("n" + std::to_string(i) + ".fiberio.test", "10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256));
  dns.add("short.fiberio.test", "10.9.8.7");
  ares_library_init(ARES_LIB_INIT_ALL);
  ares_channel ch;
  ares_options opts{};
  opts.lookups = const_cast<char*>("fb");  // /etc/hosts, then DNS (c-ares's default too)
  if (ares_init_options(&ch, &opts, ARES_OPT_LOOKUPS) != ARES_SUCCESS) return 1;
  for (int family : {AF_UNSPEC, AF_INET}) {
    std::vector<Lookup> ls(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) ls[static_cast<std::size_t>(i)].name = "n" + std::to_string(i) + ".fiberio.test";
    double ms = lookup_all(ch, ls, family);
    int ok = 0;
    for (int i = 0; i < n; ++i)
      ok += ls[static_cast<std::size_t>(i)].got == "10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256);
    std::printf("c-ares, %d concurrent lookups (%s), server delay 300 ms: %.0f ms, %d/%d right, 1 thread, "
                "at most %d queries in flight\n",
                n, family == AF_INET ? "AF_INET" : "AF_UNSPEC", ms, ok, n, dns.max_in_flight());
  }
  int before = dns.queries();
  std::vector<Lookup> local(1), short_name(1);
  local[0].name = "localhost";
  short_name[0].name = "short";
  lookup_all(ch, local, AF_INET);
  int local_queries = dns.queries() - before;
  lookup_all(ch, short_name, AF_INET);
  std::printf("c-ares: localhost -> %s (%d queries: /etc/hosts), short -> %s (search domain; asked %s)\n",
              local[0].got.c_str(), local_queries, short_name[0].got.c_str(), dns.asked().back().c_str());
  ares_destroy(ch);
  ares_library_cleanup();
}
