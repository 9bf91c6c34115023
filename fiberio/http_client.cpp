// The HTTP client: Boost.Beast's request serializer and response_parser over fiberio's Socket.
#include "fiberio/http_client.hpp"

#include <sys/socket.h>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>

#include "fiberio/detail/http_stream.hpp"
#include "fiberio/dns.hpp"
#include "fiberio/time.hpp"

namespace fiberio::http {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

namespace {

std::string pool_key(const Url& u) { return u.host + ":" + std::to_string(u.port); }

bool idempotent(std::string_view m) {
  return m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "TRACE" || m == "PUT" || m == "DELETE";
}

// Location may be absolute (http://...) or a path on the same host.
Url follow(const Url& from, std::string_view location) {
  if (location.starts_with('/') && !location.starts_with("//")) {
    Url u = from;
    u.target = std::string(location);
    return u;
  }
  return Url::parse(location);
}

void check_token(std::string_view what, std::string_view s) {
  if (s.empty() || s.find_first_of("\r\n \t:") != std::string_view::npos)
    throw std::invalid_argument("fiberio::http: bad " + std::string(what) + " '" + std::string(s) + "'");
}

// A pooled connection is usable if nothing is waiting on it: EOF or stray bytes mean the server
// closed it (or broke the protocol) while it sat in the pool.
bool looks_alive(const Socket& s) {
  char c;
  ssize_t n = ::recv(s.fd(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

}  // namespace

Client::Client(ClientOptions options) : o_(std::move(options)) {}
Client::~Client() = default;

ClientResponse Client::get(std::string_view url, const Headers& headers) { return request("GET", url, {}, headers); }

ClientResponse Client::post(std::string_view url, std::string body, std::string_view content_type, const Headers& headers) {
  Headers h = headers;
  if (!h.has("Content-Type")) h.add("Content-Type", std::string(content_type));
  return request("POST", url, std::move(body), h);
}

ClientResponse Client::request(std::string_view method, std::string_view url, std::string body, const Headers& headers) {
  check_token("method", method);
  Url u = Url::parse(url);
  std::optional<Timeout> guard;
  if (o_.timeout) guard.emplace(*o_.timeout);
  std::string m(method);
  for (int hop = 0;; ++hop) {
    auto r = once(m, u, body, headers);
    bool redirect = r.status == 301 || r.status == 302 || r.status == 303 || r.status == 307 || r.status == 308;
    auto location = r.header("Location");
    if (!redirect || !location || hop >= o_.max_redirects) return r;
    u = follow(u, *location);
    if (r.status == 303 || ((r.status == 301 || r.status == 302) && m != "GET" && m != "HEAD")) {
      m = "GET";
      body.clear();
    }
  }
}

ClientResponse Client::once(std::string_view method, const Url& url, const std::string& body, const Headers& headers) {
  bhttp::request<bhttp::string_body> req;
  req.method_string(method);
  req.target(url.target);
  req.version(11);
  req.set(bhttp::field::host, url.authority());
  if (!o_.user_agent.empty()) req.set(bhttp::field::user_agent, o_.user_agent);
  for (const auto& [n, v] : headers) {
    check_token("header name", n);
    if (v.find_first_of("\r\n") != std::string::npos) throw std::invalid_argument("fiberio::http: header '" + n + "' has a line break");
    req.insert(n, v);
  }
  if (!body.empty() || !(method == "GET" || method == "HEAD" || method == "DELETE" || method == "OPTIONS")) {
    req.body() = body;
    req.prepare_payload();
  }

  for (int attempt = 0;; ++attempt) {
    bool reused = false;
    Socket sock = take(url, reused);
    detail::BeastStream s(sock);
    bool sent = false;
    std::optional<bhttp::response_parser<bhttp::string_body>> parser;
    parser.emplace();
    auto& p = *parser;
    p.body_limit(o_.max_body_bytes);
    p.header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(o_.max_header_bytes, UINT32_MAX)));
    if (method == "HEAD") p.skip(true);
    beast::flat_buffer buf;
    beast::error_code ec;
    try {
      bhttp::write(s, req);
      s.flush();
      sent = true;
      bhttp::read(s, buf, p, ec);
      // A 1xx (100 Continue, 103 Early Hints) precedes the real response.
      while (!ec && p.get().result_int() / 100 == 1 && p.get().result_int() != 101) {
        parser.emplace();
        parser->body_limit(o_.max_body_bytes);
        if (method == "HEAD") parser->skip(true);
        bhttp::read(s, buf, *parser, ec);
      }
    } catch (const ConnectionError&) {
      if (!(reused && attempt == 0 && (!sent || (!parser->got_some() && idempotent(method))))) throw;
      ++stats_.retried;
      continue;
    }
    auto& p2 = *parser;
    if (ec == bhttp::error::end_of_stream && reused && attempt == 0 && idempotent(method)) {
      ++stats_.retried;  // the server closed the pooled connection as we sent: send again on a new one
      continue;
    }
    if (ec)
      throw ProtocolError("fiberio::http: " + std::string(method) + " http://" + url.authority() + url.target + ": " + ec.message());
    auto& m = p2.get();
    ClientResponse r;
    r.status = static_cast<int>(m.result_int());
    r.reason = std::string(m.reason());
    r.version = static_cast<int>(m.version());
    for (const auto& f : m) r.headers.add(std::string(f.name_string()), std::string(f.value()));
    r.body = std::move(m.body());
    // Reusable only if the response was framed (not ended by close) and nothing extra arrived.
    if (m.keep_alive() && buf.size() == 0 && !p2.need_eof()) give_back(url, std::move(sock));
    return r;
  }
}

Socket Client::take(const Url& url, bool& reused) {
  auto it = idle_.find(pool_key(url));
  while (it != idle_.end() && !it->second.empty()) {
    Socket s = std::move(it->second.back());
    it->second.pop_back();
    if (looks_alive(s)) {
      reused = true;
      ++stats_.reused;
      return s;
    }
  }
  reused = false;
  Socket s = create_connection(url.host, url.port, o_.connect_timeout);
  s.set_timeout({});  // the request's Timeout bounds what follows
  ++stats_.connections;
  return s;
}

void Client::give_back(const Url& url, Socket sock) {
  auto& pool = idle_[pool_key(url)];
  if (pool.size() >= o_.max_idle_per_host) pool.erase(pool.begin());  // the oldest goes
  pool.push_back(std::move(sock));
}

void Client::close_idle() { idle_.clear(); }

std::size_t Client::idle_connections() const noexcept {
  std::size_t n = 0;
  for (const auto& [k, v] : idle_) n += v.size();
  return n;
}

}  // namespace fiberio::http
