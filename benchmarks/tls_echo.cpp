// TLS echo: sessions per second, each a TCP connect + TLS handshake + one 1 KiB round trip + close.
//   tls_echo server --model fiber|thread --port P --cert C --key K
//       fiber:  fiberio's StreamServer with a TlsContext (one hub, a greenlet per connection)
//       thread: plain blocking OpenSSL (SSL_accept/SSL_read/SSL_write), a thread per connection
//   tls_echo client --port P --ca CA --conns N --seconds S
//       N greenlets, each running sessions back to back for S seconds; prints sessions/s.
// benchmarks/tls_echo.sh makes a throwaway PKI and runs both models, pinned (server CPU 0, client CPU 1).
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fiberio/fiberio.hpp>
#include <fiberio/tls.hpp>
#include <fmt/format.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <thread>

namespace {

constexpr std::size_t kMessage = 1024;

std::map<std::string, std::string> parse(int argc, char** argv) {
  std::map<std::string, std::string> a;
  for (int i = 2; i + 1 < argc; i += 2) a[argv[i]] = argv[i + 1];
  return a;
}

// The blocking reference: what a thread-per-connection C server does with OpenSSL.
void thread_server(int port, const std::string& cert, const std::string& key) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) {
    std::fprintf(stderr, "tls_echo: cannot load %s / %s\n", cert.c_str(), key.c_str());
    std::exit(1);
  }
  int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(lfd, 1024) != 0) {
    std::perror("tls_echo: bind/listen");
    std::exit(1);
  }
  for (;;) {
    int fd = ::accept(lfd, nullptr, nullptr);
    if (fd < 0) continue;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::thread([ctx, fd] {
      SSL* ssl = SSL_new(ctx);
      SSL_set_fd(ssl, fd);
      if (SSL_accept(ssl) == 1) {
        char buf[kMessage];
        std::size_t got = 0, n = 0;
        while (got < kMessage && SSL_read_ex(ssl, buf + got, kMessage - got, &n) == 1) got += n;
        if (got == kMessage) SSL_write_ex(ssl, buf, kMessage, &n);
        SSL_shutdown(ssl);
      }
      SSL_free(ssl);
      ::close(fd);
    }).detach();
  }
}

void fiber_server(int port, const std::string& cert, const std::string& key) {
  fiberio::ServerOptions o;
  o.backlog = 1024;
  fiberio::StreamServer server(fiberio::Address("127.0.0.1", static_cast<std::uint16_t>(port)),
                               fiberio::TlsContext::server(cert, key),
                               [](fiberio::TlsSocket& tls, const fiberio::Address&) {
                                 fiberio::Stream s(tls);
                                 tls.sendall(s.read_exactly(kMessage));
                                 tls.close_notify();
                               },
                               o);
  server.serve_forever();
}

int client(int port, const std::string& ca, int conns, double seconds) {
  auto ctx = fiberio::TlsContext::client();
  ctx.load_verify_locations(ca);
  const std::string message(kMessage, 'x');
  std::uint64_t sessions = 0, errors = 0;
  auto until = fiberio::Clock::now() + std::chrono::duration_cast<fiberio::Duration>(std::chrono::duration<double>(seconds));
  auto t0 = fiberio::Clock::now();
  std::vector<fiberio::Greenlet<void>> gs;
  for (int i = 0; i < conns; ++i)
    gs.push_back(fiberio::spawn([&] {
      while (fiberio::Clock::now() < until) {
        try {
          fiberio::TlsSocket tls = fiberio::create_connection("localhost", static_cast<std::uint16_t>(port), ctx,
                                                              std::chrono::seconds(10));
          tls.sendall(message);
          fiberio::Stream s(tls);
          if (s.read_exactly(kMessage) == message) ++sessions;
        } catch (const std::exception& e) {
          if (++errors == 1) std::fprintf(stderr, "tls_echo client: %s\n", e.what());
        }
      }
    }));
  fiberio::joinall(gs);
  double took = std::chrono::duration<double>(fiberio::Clock::now() - t0).count();
  std::printf("sessions %llu errors %llu seconds %.2f sessions_per_s %.0f\n",
              static_cast<unsigned long long>(sessions), static_cast<unsigned long long>(errors), took,
              static_cast<double>(sessions) / took);
  return errors == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: tls_echo server|client [--options] (see the top of tls_echo.cpp)\n");
    return 2;
  }
  auto a = parse(argc, argv);
  std::string mode = argv[1];
  int port = std::stoi(a.count("--port") ? a["--port"] : "8443");
  if (mode == "server") {
    if (a["--model"] == "thread") thread_server(port, a["--cert"], a["--key"]);
    else fiber_server(port, a["--cert"], a["--key"]);
    return 0;
  }
  return client(port, a["--ca"], std::stoi(a.count("--conns") ? a["--conns"] : "50"),
                std::stod(a.count("--seconds") ? a["--seconds"] : "5"));
}
