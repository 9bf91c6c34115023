// StreamServer and DatagramServer (gevent.server): accept loops that run each connection's (or
// datagram's) handler in its own greenlet.
//
//   fiberio::StreamServer server(fiberio::Address("127.0.0.1", 8000),
//                                [](fiberio::Socket& sock, const fiberio::Address& peer) {
//                                  fiberio::Stream s(sock);
//                                  for (std::string line; !(line = s.read_line()).empty();) { s.write(line); s.flush(); }
//                                });
//   server.serve_forever();   // until stop(), or SIGINT/SIGTERM (graceful: see handle_signals)
//
// * start() binds and listens (address() then has the real port when 0 was asked) and runs the
//   accept loop in a greenlet; it returns at once. serve_forever() = start() + wait until stopped.
// * Each connection's handler runs in its own greenlet named "StreamServer(<addr>) <peer>"; the
//   socket is closed when the handler returns or throws. A handler's exception goes to the hub's
//   error handler (fiberio::set_error_handler) and the server keeps serving.
// * stop(grace): stops accepting and closes the listener at once, lets running handlers finish for
//   up to `grace`, then kills the rest (their destructors run) and returns.
// * The accept loop takes up to accept_batch connections per wake-up. When the process runs out of
//   fds (EMFILE/ENFILE) or memory it backs off (5 ms doubling to 100 ms) and recovers when fds free
//   up; pending connections wait in the kernel backlog meanwhile.
// * max_connections: while that many handlers run, accepting pauses (clients wait in the backlog).
// * nodelay (default true): accepted TCP connections get TCP_NODELAY, as in Go (create_connection
//   sets it too), so a reply written in pieces is never held back by Nagle's algorithm.
// * workers(N): N threads, each with its own hub and its own SO_REUSEPORT listener on the same
//   address (the kernel spreads connections), each running the accept loop; handlers then run on
//   those threads (so they must be thread-safe with respect to shared data), and their exceptions
//   go to those threads' error handlers (default: stderr). max_connections is split between the
//   workers. stop() stops them all.
// * handle_signals (default true): serve_forever() registers SIGINT and SIGTERM handlers that stop
//   the server with stop_timeout as grace; serve_forever() then returns normally, so main() can
//   exit 0. A second signal during that grace kills the remaining handlers at once.
// * Unix-socket servers remove their socket file on stop; a stale file left by a crashed process
//   makes start() fail with EADDRINUSE (remove it first, as with any unix socket server).
// * A server belongs to the thread that start()s it: call start/serve_forever/destroy there;
//   stop() may be called from any thread.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>

#include "fiberio/address.hpp"
#include "fiberio/socket.hpp"

namespace fiberio {

struct ServerOptions {
  int backlog = 1024;
  std::size_t max_connections = 0;  // 0: unlimited
  bool reuse_addr = true;
  bool reuse_port = false;  // share the port with other SO_REUSEPORT listeners (else a port in use is refused)
  unsigned workers = 1;
  bool handle_signals = true;
  Duration stop_timeout = std::chrono::seconds(1);  // grace of stop() and of a signal-driven stop
  std::size_t accept_batch = 64;                    // connections accepted per wake-up, at most
  // TCP_NODELAY on accepted TCP connections, as Go sets on every TCP connection: a reply written in
  // pieces (headers, then body) goes out at once instead of waiting up to 40 ms for the peer's
  // delayed ACK (Nagle's algorithm).
  bool nodelay = true;
  // Slow clients (slowloris): each accepted connection's socket gets this request timeout
  // (Socket::set_request_timeout): a recv fails with TimeoutError once this long has passed since
  // the handler last sent something, however many bytes trickle in meanwhile. A handler that serves
  // clients which only send (uploads, log shipping) sets its socket's own, or std::nullopt.
  OptDuration request_timeout = std::chrono::seconds(60);
  // At max_connections, with new connections waiting: the connection whose handler has made no
  // progress (sent nothing) for the longest, and at least this long, is closed to make room (its
  // handler is killed), as nginx drops idle keep-alive connections under pressure.
  Duration evict_idle_after = std::chrono::seconds(1);
  // TLS servers: a connection whose handshake has not finished this long after accept is closed (its
  // handler greenlet ends with TimeoutError), so a client that never completes it holds only itself.
  Duration handshake_timeout = std::chrono::seconds(10);
};

struct ServerStats {
  std::uint64_t accepted = 0;         // connections (datagrams) handed to a handler
  std::uint64_t accept_backoffs = 0;  // times accepting paused for EMFILE/ENFILE/ENOBUFS/ENOMEM
  std::uint64_t handler_errors = 0;   // handlers that ended with an exception (kills excluded)
  std::uint64_t killed = 0;           // handlers killed by stop() after the grace period
  std::uint64_t evicted = 0;          // idle connections closed to make room at max_connections
};

namespace detail {
class ServerCore;
}
class TlsContext;
class TlsSocket;

class StreamServer {
 public:
  using Handler = std::function<void(Socket&, const Address&)>;

  StreamServer(Address addr, Handler handler, ServerOptions options = {});
  // Serves on an already bound socket (listening or not); workers(N) is not available then.
  StreamServer(Socket listener, Handler handler, ServerOptions options = {});
  // A TLS server (fiberio/tls.hpp; link fiberio::tls): each connection's greenlet runs the handshake
  // (bounded by options.handshake_timeout) and then the handler. A failed handshake ends that
  // greenlet with TlsError / TimeoutError (the hub's error handler sees it) and nothing else.
  using TlsHandler = std::function<void(TlsSocket&, const Address&)>;
  StreamServer(Address addr, const TlsContext& tls, TlsHandler handler, ServerOptions options = {});
  // Stops (no grace) if still running.
  ~StreamServer();
  StreamServer(const StreamServer&) = delete;
  StreamServer& operator=(const StreamServer&) = delete;

  // Option setters: before start() only (std::logic_error afterwards).
  StreamServer& backlog(int n);
  StreamServer& max_connections(std::size_t n);
  StreamServer& reuse_port(bool on);
  StreamServer& workers(unsigned n);
  StreamServer& request_timeout(OptDuration d);
  StreamServer& evict_idle_after(Duration d);
  StreamServer& handle_signals(bool on);
  StreamServer& stop_timeout(Duration grace);
  StreamServer& nodelay(bool on);
  const ServerOptions& options() const noexcept;

  void start();
  void serve_forever();
  // stop(options().stop_timeout).
  void stop();
  // {} = wait for handlers as long as they take.
  void stop(OptDuration grace);

  bool started() const noexcept;
  bool stopped() const noexcept;
  // The listening address (the real port once started). Before start(): the requested address.
  Address address() const;
  // Handlers running now (all workers).
  std::size_t connections() const noexcept;
  ServerStats stats() const noexcept;

 private:
  std::shared_ptr<detail::ServerCore> core_;
};

class DatagramServer {
 public:
  // data is valid during the call only. Each datagram's handler runs in its own greenlet.
  using Handler = std::function<void(std::string_view data, const Address& from)>;

  // options.max_connections bounds concurrently running handlers (receiving pauses while full;
  // 0 = unlimited; default here 1024). backlog/workers/reuse_addr do not apply.
  DatagramServer(Address addr, Handler handler, ServerOptions options = default_options());
  DatagramServer(Socket sock, Handler handler, ServerOptions options = default_options());
  ~DatagramServer();
  DatagramServer(const DatagramServer&) = delete;
  DatagramServer& operator=(const DatagramServer&) = delete;

  static ServerOptions default_options() {
    ServerOptions o;
    o.max_connections = 1024;
    return o;
  }

  void start();
  void serve_forever();
  void stop();
  void stop(OptDuration grace);
  // Sends a datagram from the server's socket (the usual way to reply).
  std::size_t sendto(std::string_view data, const Address& to);

  bool started() const noexcept;
  bool stopped() const noexcept;
  Address address() const;
  Socket& socket();
  ServerStats stats() const noexcept;

 private:
  std::shared_ptr<detail::ServerCore> core_;
};

}  // namespace fiberio
