// http::Server: an HTTP/1.1 server (gevent.pywsgi, Go's net/http) on StreamServer, one greenlet per
// connection.
//
//   fiberio::http::Router router;
//   router.get("/hello", [](fiberio::http::Request&, fiberio::http::Response& res) { res.body = "hello"; });
//   fiberio::http::Server server(fiberio::Address("127.0.0.1", 8080), router);
//   server.serve_forever();   // until stop(), SIGINT or SIGTERM (graceful)
//
// * Keep-alive (HTTP/1.1 by default, 1.0 with "Connection: keep-alive") and pipelining: requests that
//   arrive together are answered in order and their responses leave in one send.
// * Request bodies: Content-Length or chunked, read in full (up to max_body_bytes) before the handler
//   runs; "Expect: 100-continue" gets its "100 Continue" once the headers passed the limits.
// * Errors the client caused: a malformed request 400, headers over max_header_bytes (or more than
//   max_headers fields) 431, a body over max_body_bytes 413; the connection is then closed after a
//   lingering close (FIN, then what the client still sends is drained, bounded), so the reply is not
//   destroyed by a reset.
// * Timeouts: header_timeout runs from a request's first byte to the end of its headers (bytes
//   trickling in do not extend it: a slowloris client is dropped, silently, as nginx and Go do);
//   idle_timeout bounds the wait for the next request on a kept-alive connection; read_timeout each
//   read of a body, write_timeout each send.
// * A handler that throws gets a 500 (if nothing was sent yet; else the connection is closed) and its
//   exception goes to the hub's error handler (fiberio::set_error_handler). GreenletExit passes.
// * Streaming: Response::write() sends the status and headers at the first call, then each write
//   as one chunk (Transfer-Encoding: chunked; raw bytes if the handler set Content-Length, or the
//   client speaks HTTP/1.0, which then ends with the connection).
// * stop(grace): stops accepting, closes idle kept-alive connections at once, lets requests in
//   progress finish (their responses say "Connection: close") for up to grace, then kills the rest.
//   serve_forever() stops that way on SIGINT/SIGTERM when options.server.handle_signals.
// * A Server belongs to the thread that starts it (as StreamServer); with options.server.workers > 1
//   the handler runs on several threads at once.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fiberio/address.hpp"
#include "fiberio/http.hpp"
#include "fiberio/server.hpp"
#include "fiberio/socket.hpp"

namespace fiberio::http {

namespace detail {
class Conn;
}

struct Request {
  std::string method;  // "GET"
  std::string target;  // "/path?query", as sent
  int version = 11;    // 10 or 11
  Headers headers;
  std::string body;  // the whole body (chunked bodies decoded)
  Address peer;

  // The target up to '?', and what follows it ("" if none).
  std::string_view path() const noexcept { return std::string_view(target).substr(0, target.find('?')); }
  std::string_view query() const noexcept;
  std::optional<std::string_view> header(std::string_view name) const { return headers.get(name); }
};

// What a handler answers: fill status/headers/body and return, or stream with write().
class Response {
 public:
  int status = 200;
  Headers headers;  // Date and Content-Length are added (Content-Length unless streaming)
  std::string body;

  // Streams: sends the status line and headers at the first call (status/headers are frozen then;
  // body must be empty), then data as one chunk. Buffered: flush() sends what is written.
  void write(std::string_view data);
  void flush();
  bool headers_sent() const noexcept { return started_; }

  explicit Response(detail::Conn* conn) noexcept : conn_(conn) {}

 private:
  friend class detail::Conn;
  detail::Conn* conn_;
  bool started_ = false;
};

using Handler = std::function<void(Request&, Response&)>;

// Method + exact path → handler. A path ending in "*" matches every path with that prefix (the
// longest prefix wins). No route: 404 (not_found() replaces its handler); a route for the path but
// not the method: 405 with an Allow header. HEAD falls back to the GET route.
class Router {
 public:
  Router& route(std::string method, std::string path, Handler h);
  Router& get(std::string path, Handler h) { return route("GET", std::move(path), std::move(h)); }
  Router& post(std::string path, Handler h) { return route("POST", std::move(path), std::move(h)); }
  Router& put(std::string path, Handler h) { return route("PUT", std::move(path), std::move(h)); }
  Router& del(std::string path, Handler h) { return route("DELETE", std::move(path), std::move(h)); }
  Router& not_found(Handler h);
  void operator()(Request& req, Response& res) const;

 private:
  struct Route {
    std::string method, path;
    Handler handler;
  };
  std::vector<Route> routes_;
  Handler not_found_;
};

struct ServerOptions {
  std::size_t max_header_bytes = 8 * 1024;  // request line + headers; more: 431
  std::size_t max_headers = 100;            // header fields; more: 431
  std::size_t max_body_bytes = 1 << 20;     // more: 413
  Duration header_timeout = std::chrono::seconds(10);
  Duration idle_timeout = std::chrono::seconds(60);
  Duration read_timeout = std::chrono::seconds(30);
  Duration write_timeout = std::chrono::seconds(30);
  // The accept loop's options (backlog, max_connections, workers, handle_signals, stop_timeout...).
  // Its request_timeout is not used: the timeouts above replace it.
  fiberio::ServerOptions server;
};

struct HttpStats {
  std::uint64_t connections = 0;
  std::uint64_t requests = 0;        // handlers run
  std::uint64_t bad_requests = 0;    // 400, 413, 431 answered
  std::uint64_t timeouts = 0;        // connections dropped by header/read/write timeouts
  std::uint64_t handler_errors = 0;  // handlers that threw
};

class Server {
 public:
  Server(Address addr, Handler handler, ServerOptions options = {});
  Server(Socket listener, Handler handler, ServerOptions options = {});
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  void start();
  void serve_forever();
  void stop();  // stop(options.server.stop_timeout)
  void stop(OptDuration grace);

  Address address() const;
  std::size_t connections() const noexcept;
  HttpStats stats() const noexcept;
  const ServerOptions& options() const noexcept;

  // Serves one accepted connection until it ends (what each connection's greenlet runs): for accept
  // loops of one's own, e.g. a prefork worker. Returns when the peer closes, a timeout or an error
  // closes the connection; does not close sock.
  static void serve_connection(Socket& sock, const Address& peer, const Handler& handler, const ServerOptions& options);

  struct State;

 private:
  std::shared_ptr<State> state_;
  std::unique_ptr<StreamServer> server_;
};

}  // namespace fiberio::http
