// fiberio_echo: the minimal fiberio echo server, written the way a user would write it — one
// StreamServer, one greenlet per connection, plain blocking-style recv/sendall. benchmarks/run_net.sh
// compares its requests per server-CPU-second with raw_epoll_echo (the hand-written epoll reference)
// and measures its memory per idle connection.
//
//   fiberio_echo --port P [--host 127.0.0.1]
//
// Echoes every byte back unchanged; stops gracefully on SIGINT/SIGTERM.
#include <sys/resource.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "fiberio/server.hpp"
#include "fiberio/socket.hpp"

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  long port = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--port") port = std::strtol(argv[i + 1], nullptr, 10);
    else if (a == "--host") host = argv[i + 1];
    else { std::fprintf(stderr, "fiberio_echo: unknown option %s\n", a.c_str()); return 2; }
  }
  if (argc % 2 == 0 || port <= 0 || port > 65535) {
    std::fprintf(stderr, "usage: fiberio_echo --port P [--host 127.0.0.1]\n");
    return 2;
  }
  // 10,000 connections need more than the usual soft limit of 1,024 fds.
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) { rl.rlim_cur = rl.rlim_max; ::setrlimit(RLIMIT_NOFILE, &rl); }

  try {
    fiberio::StreamServer server(
        fiberio::Address(host, static_cast<std::uint16_t>(port)),
        [](fiberio::Socket& sock, const fiberio::Address&) {
          // 1 KiB, as in the Python/gevent echo examples (recv(1024)). It lives on the greenlet's stack,
          // so its size decides how many stack pages an idle connection keeps resident: with 1 KiB
          // the handler and the recv/park frames below it fit in one 4 KiB page; a 4 KiB buffer
          // pushes them onto a second one (RESULTS.md "## Network" gives both figures).
          std::array<char, 1024> buf;
          while (std::size_t n = sock.recv(buf)) sock.sendall({buf.data(), n});
        });
    server.backlog(4096);
    server.serve_forever();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fiberio_echo: %s\n", e.what());
    return 1;
  }
  return 0;
}
