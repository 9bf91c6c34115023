// http::Client: an HTTP/1.1 client (Python's http.client / requests, Go's http.Client) that blocks
// only the calling fiber.
//
//   fiberio::http::Client client;
//   auto r = client.get("http://127.0.0.1:8080/hello");   // r.status, r.headers, r.body
//   client.post("http://127.0.0.1:8080/items", R"({"a":1})", "application/json");
//
// * Keep-alive: a connection whose response was read in full goes back to a small per-host pool
//   (max_idle_per_host) and the next request to that host reuses it. A pooled connection the server
//   closed meanwhile is noticed before use; one that fails before any response byte arrived is
//   retried once on a new connection (idempotent methods only, as Go does).
// * Timeouts: connect_timeout for the lookup and connect, timeout for the whole request (connect,
//   send, and the response in full): TimeoutError.
// * Responses with Content-Length, chunked, or ending at close; bodies over max_body_bytes throw
//   ProtocolError, as does a malformed response. Redirects are returned as they are unless
//   max_redirects > 0 (then 301/302/303 become GET without body, 307/308 repeat the request).
// * http:// only (no TLS). A Client belongs to one thread; fibers of that thread may share it.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fiberio/clock.hpp"
#include "fiberio/http.hpp"
#include "fiberio/socket.hpp"

namespace fiberio::http {

struct ClientOptions {
  Duration connect_timeout = std::chrono::seconds(10);
  OptDuration timeout = std::chrono::seconds(30);  // per request, all of it; {} = none
  std::size_t max_body_bytes = 64 << 20;
  std::size_t max_header_bytes = 64 * 1024;
  std::size_t max_idle_per_host = 4;
  int max_redirects = 0;  // 0: redirects are returned, not followed
  std::string user_agent = "fiberio";
};

struct ClientResponse {
  int status = 0;
  std::string reason;
  int version = 11;
  Headers headers;
  std::string body;
  std::optional<std::string_view> header(std::string_view name) const { return headers.get(name); }
};

struct ClientStats {
  std::uint64_t connections = 0;  // connections opened
  std::uint64_t reused = 0;       // requests sent on a pooled connection
  std::uint64_t retried = 0;      // requests sent again after a pooled connection failed
};

class Client {
 public:
  explicit Client(ClientOptions options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  ClientResponse get(std::string_view url, const Headers& headers = {});
  ClientResponse post(std::string_view url, std::string body, std::string_view content_type = "application/octet-stream",
                      const Headers& headers = {});
  // Any method; a body is sent with Content-Length (none for an empty body on GET/HEAD).
  ClientResponse request(std::string_view method, std::string_view url, std::string body = {}, const Headers& headers = {});

  // Closes the pooled connections.
  void close_idle();
  std::size_t idle_connections() const noexcept;
  ClientStats stats() const noexcept { return stats_; }
  const ClientOptions& options() const noexcept { return o_; }

 private:
  ClientResponse once(std::string_view method, const Url& url, const std::string& body, const Headers& headers);
  Socket take(const Url& url, bool& reused);
  void give_back(const Url& url, Socket sock);

  ClientOptions o_;
  std::map<std::string, std::vector<Socket>> idle_;  // "host:port" -> connections, newest last
  ClientStats stats_;
};

}  // namespace fiberio::http
