// The HTTP server: Boost.Beast's request_parser and serializer over fiberio's Socket (detail::BeastStream),
// one Conn per connection, run by StreamServer's per-connection greenlet.
#include "fiberio/http_server.hpp"

#include <signal.h>
#include <sys/socket.h>

#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <ctime>
#include <mutex>
#include <optional>
#include <unordered_set>

#include "fiberio/detail/http_stream.hpp"
#include "fiberio/greenlet.hpp"
#include "fiberio/signal.hpp"

namespace fiberio::http {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;

// A connection as stop() sees it: its fd (open while it is listed) and whether it is waiting for
// its client (the next request, or a lingering close's drain).
struct ConnSlot {
  int fd = -1;
  std::atomic<bool> idle{false};
};

struct Server::State {
  Handler handler;
  ServerOptions options;
  StreamServer* server = nullptr;  // null once the Server is being destroyed
  // Every connection, listed from its start until before its socket is closed (under mu), so each
  // fd here is open. stop() shuts the reading side of the idle ones: their wait sees EOF and they
  // end. A connection marks itself idle and then checks `stopping`; stop() sets `stopping` and then
  // reads the marks (both sequentially consistent), so one of the two always sees the other.
  std::mutex mu;
  std::unordered_set<ConnSlot*> conns;
  std::atomic<bool> stopping{false};
  std::atomic<std::uint64_t> connections{0}, requests{0}, bad_requests{0}, timeouts{0}, handler_errors{0};

  void begin_stop() {
    std::lock_guard lk(mu);
    stopping.store(true);
    for (ConnSlot* c : conns)
      if (c->idle.load()) ::shutdown(c->fd, SHUT_RD);  // the waiting recv sees EOF
  }
};

namespace {

// "Mon, 30 Nov 2026 17:20:00 GMT" for the Date header, formatted once a second per thread.
std::string_view http_date() {
  thread_local std::time_t cached = 0;
  thread_local char buf[40];
  thread_local std::size_t len = 0;
  std::time_t now = std::time(nullptr);
  if (now != cached) {
    std::tm tm{};
    ::gmtime_r(&now, &tm);
    len = std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    cached = now;
  }
  return {buf, len};
}

int status_for(const beast::error_code& ec) {
  if (ec == bhttp::error::header_limit || ec == bhttp::error::buffer_overflow) return 431;
  if (ec == bhttp::error::body_limit) return 413;
  return 400;
}

// A handler's header must not smuggle a line break into the response (header injection).
void check_field(std::string_view name, std::string_view value) {
  auto bad = [](std::string_view s) { return s.find_first_of("\r\n") != std::string_view::npos; };
  if (name.empty() || bad(name) || bad(value) || name.find(':') != std::string_view::npos)
    throw std::invalid_argument("fiberio::http: response header '" + std::string(name) + "' has a line break, ':' or is empty");
}

// Copies the handler's status and headers into a Beast message, adding Date.
template <class Message>
void fill_header(Message& m, const Response& res) {
  if (res.status < 100 || res.status > 999) throw std::invalid_argument("fiberio::http: bad status " + std::to_string(res.status));
  m.result(static_cast<unsigned>(res.status));
  if (reason(res.status).empty()) m.reason("Status");
  bool has_date = false;
  for (const auto& [n, v] : res.headers) {
    check_field(n, v);
    if (iequals(n, "Date")) has_date = true;
    m.insert(n, v);
  }
  if (!has_date) m.set(bhttp::field::date, http_date());
}

}  // namespace

namespace detail {

// While a connection waits for its client, stop() may end the wait (see Server::State).
// registered() is false if the server is already stopping.
class IdleMark {
 public:
  IdleMark(Server::State* st, ConnSlot& slot) : slot_(st ? &slot : nullptr) {
    if (!slot_) return;
    slot_->idle.store(true);
    if (st->stopping.load()) {
      slot_->idle.store(false);
      slot_ = nullptr;
      stopping_ = true;
    }
  }
  ~IdleMark() {
    if (slot_) slot_->idle.store(false, std::memory_order_relaxed);
  }
  IdleMark(const IdleMark&) = delete;
  IdleMark& operator=(const IdleMark&) = delete;
  bool registered() const noexcept { return !stopping_; }

 private:
  ConnSlot* slot_;
  bool stopping_ = false;
};

class Conn {
 public:
  Conn(Socket& sock, const Address& peer, const Handler& handler, const ServerOptions& o, Server::State* st)
      : sock_(sock), peer_(peer), handler_(handler), o_(o), st_(st), stream_(sock),
        buf_(std::max<std::size_t>(16 * 1024, 2 * o.max_header_bytes)) {
    stream_.set_write_timeout(o.write_timeout);
    slot_.fd = sock.fd();
    if (st_) {
      std::lock_guard lk(st_->mu);
      st_->conns.insert(&slot_);
    }
  }
  ~Conn() {
    if (!st_) return;
    std::lock_guard lk(st_->mu);
    st_->conns.erase(&slot_);
  }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  void run() {
    for (;;) {
      if (buf_.size() == 0) {
        stream_.flush();  // pipelined responses leave together, before we wait
        if (!wait_for_request()) return;
      }
      if (!serve_one()) {
        if (!drop_) linger();
        return;
      }
    }
  }

  // ---- streaming (Response::write) ----
  void stream_write(Response& res, std::string_view data) {
    if (!res.started_) start_stream(res);
    if (head_ || data.empty()) return;  // an empty chunk would end the body
    streamed_ += data.size();
    if (chunked_)
      net::write(stream_, bhttp::make_chunk(net::const_buffer(data.data(), data.size())));
    else
      stream_.out().append(data);
    if (stream_.out().size() >= 16 * 1024) guarded_flush();
  }
  void stream_flush(Response& res) {
    if (!res.started_) start_stream(res);
    guarded_flush();
  }

 private:
  // Waits (idle_timeout) for the first bytes of the next request. False: the connection is over
  // (peer closed, idle timeout, or the server stops).
  bool wait_for_request() {
    stream_.set_deadline({});
    stream_.set_read_timeout(o_.idle_timeout);
    IdleMark idle(st_, slot_);
    if (!idle.registered()) return false;
    auto mb = buf_.prepare(16 * 1024);
    beast::error_code ec;
    std::size_t n;
    try {
      n = stream_.read_some(mb, ec);
    } catch (const TimeoutError&) {
      return false;  // idle keep-alive connection: closed quietly, as every server does
    }
    buf_.commit(n);
    return !ec && n > 0;
  }

  // Reads, handles and answers one request (its first bytes are buffered). False: close.
  bool serve_one() {
    std::optional<bhttp::request_parser<bhttp::string_body>> parser;
    parser.emplace();
    auto& p = *parser;
    p.header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(o_.max_header_bytes, UINT32_MAX)));
    p.body_limit(o_.max_body_bytes);
    beast::error_code ec;
    stream_.set_deadline(Clock::now() + o_.header_timeout);
    stream_.set_read_timeout({});
    if (!read_step([&] { bhttp::read_header(stream_, buf_, p, ec); })) return false;
    if (ec) return ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message ? false : reply_error(status_for(ec), ec.message());
    auto& m = p.get();
    if (static_cast<std::size_t>(std::distance(m.begin(), m.end())) > o_.max_headers) return reply_error(431, "too many header fields");
    if (!p.is_done()) {
      if (m.version() >= 11 && bhttp::token_list(m[bhttp::field::expect]).exists("100-continue")) {
        bhttp::response<bhttp::empty_body> cont{bhttp::status::continue_, 11};
        bhttp::write(stream_, cont);
        stream_.flush();
      }
      stream_.set_deadline({});
      stream_.set_read_timeout(o_.read_timeout);
      if (!read_step([&] { bhttp::read(stream_, buf_, p, ec); })) return false;
      if (ec) return reply_error(status_for(ec), ec.message());
    }

    Request req;
    req.method = std::string(m.method_string());
    req.target = std::string(m.target());
    req.version = static_cast<int>(m.version());
    for (const auto& f : m) req.headers.add(std::string(f.name_string()), std::string(f.value()));
    req.body = std::move(m.body());
    req.peer = peer_;
    keep_alive_ = m.keep_alive() && !(st_ && st_->stopping.load(std::memory_order_relaxed));
    head_ = m.method() == bhttp::verb::head;
    version_ = req.version;
    chunked_ = false;
    streamed_ = 0;
    length_.reset();
    broken_ = false;
    parser.reset();

    Response res(this);
    if (st_) st_->requests.fetch_add(1, std::memory_order_relaxed);
    try {
      handler_(req, res);
      if (res.started_) {
        finish_stream(res);
      } else {
        send_response(res);
      }
    } catch (const GreenletExit&) {
      throw;
    } catch (...) {
      if (broken_) {  // our own send failed (the client left): not the handler's fault
        drop_ = true;
        return false;
      }
      if (st_) st_->handler_errors.fetch_add(1, std::memory_order_relaxed);
      if (auto g = getcurrent()) fiberio::detail::report_error(g.base(), std::current_exception());
      if (res.started_) return false;  // a half-sent response: only closing tells the client
      stream_.out().clear();
      return reply_error(500, "Internal Server Error", false);
    }
    if (stream_.out().size() >= 64 * 1024) stream_.flush();
    return keep_alive_;
  }

  // Runs a Beast read; false if it timed out (the connection is dropped without a reply: a
  // slowloris client gets nothing).
  template <class F>
  bool read_step(F f) {
    try {
      f();
      return true;
    } catch (const TimeoutError&) {
      if (st_) st_->timeouts.fetch_add(1, std::memory_order_relaxed);
      drop_ = true;
      return false;
    }
  }

  // The handler's status and headers into m. The response is the connection's last if the handler
  // said "Connection: close" or a stop came while it ran.
  template <class Message>
  void begin_response(Message& m, const Response& res) {
    if (st_ && st_->stopping.load(std::memory_order_relaxed)) keep_alive_ = false;
    m.version(version_);
    fill_header(m, res);
    if (res.headers.has_token("Connection", "close")) keep_alive_ = false;
  }

  void send_response(Response& res) {
    bhttp::response<bhttp::string_body> r;
    begin_response(r, res);
    r.keep_alive(keep_alive_);
    r.body() = std::move(res.body);
    r.prepare_payload();
    if (head_) {
      bhttp::response_serializer<bhttp::string_body> sr{r};
      bhttp::write_header(stream_, sr);
    } else {
      bhttp::write(stream_, r);
    }
  }

  void start_stream(Response& res) {
    bhttp::response<bhttp::empty_body> h;
    begin_response(h, res);
    if (auto cl = res.headers.get("Content-Length")) {
      length_ = std::stoull(std::string(*cl));
    } else if (version_ >= 11) {
      h.chunked(true);
      chunked_ = true;
    } else {
      keep_alive_ = false;  // an HTTP/1.0 body of unknown length ends with the connection
    }
    h.keep_alive(keep_alive_);
    bhttp::response_serializer<bhttp::empty_body> sr{h};
    bhttp::write_header(stream_, sr);
    res.started_ = true;
    if (!res.body.empty()) {
      std::string first = std::move(res.body);
      res.body.clear();
      stream_write(res, first);
    }
  }

  void finish_stream(Response& res) {
    if (!res.body.empty()) {
      std::string last = std::move(res.body);
      res.body.clear();
      stream_write(res, last);
    }
    if (chunked_ && !head_) net::write(stream_, bhttp::make_chunk_last());
    if (length_ && *length_ != streamed_ && !head_) keep_alive_ = false;  // the client cannot frame what follows
  }

  void guarded_flush() {
    try {
      stream_.flush();
    } catch (...) {
      broken_ = true;
      throw;
    }
  }

  // An error reply, then the connection closes.
  bool reply_error(int status, std::string_view why, bool bad_request = true) {
    if (bad_request && st_) st_->bad_requests.fetch_add(1, std::memory_order_relaxed);
    bhttp::response<bhttp::string_body> r{static_cast<bhttp::status>(status), 11};
    r.set(bhttp::field::content_type, "text/plain; charset=utf-8");
    r.set(bhttp::field::date, http_date());
    r.body() = std::string(reason(status)) + ": " + std::string(why) + "\n";
    r.keep_alive(false);
    r.prepare_payload();
    bhttp::write(stream_, r);
    return false;
  }

  // Closing with unread input makes the kernel send a reset, which can destroy the reply before the
  // client reads it: send FIN first, then drain what still comes (bounded in bytes and time).
  void linger() noexcept {
    try {
      stream_.flush();
      sock_.shutdown(ShutdownHow::Write);
      // A stop ends the drain at once; once stopping, only what has already arrived is drained.
      IdleMark idle(st_, slot_);
      auto until = Clock::now() + (idle.registered() ? std::chrono::seconds(1) : Duration::zero());
      char scratch[16 * 1024];
      for (std::size_t total = 0; total < (1u << 20);) {
        sock_.set_timeout(std::max(Duration::zero(), std::chrono::duration_cast<Duration>(until - Clock::now())));
        std::size_t n = sock_.recv(std::span<char>(scratch, sizeof scratch));
        if (n == 0) break;
        total += n;
      }
    } catch (const std::exception&) {  // timed out, reset, closed: close now
    }
  }

  Socket& sock_;
  const Address& peer_;
  const Handler& handler_;
  const ServerOptions& o_;
  Server::State* st_;
  ConnSlot slot_;
  BeastStream stream_;
  beast::flat_buffer buf_;
  bool keep_alive_ = true;
  bool head_ = false;
  bool chunked_ = false;
  bool broken_ = false;
  bool drop_ = false;  // close without the lingering drain (a timed-out or vanished client)
  int version_ = 11;
  std::size_t streamed_ = 0;
  std::optional<std::uint64_t> length_;
};

}  // namespace detail

void Response::write(std::string_view data) { conn_->stream_write(*this, data); }
void Response::flush() { conn_->stream_flush(*this); }

std::string_view Request::query() const noexcept {
  auto q = target.find('?');
  return q == std::string::npos ? std::string_view() : std::string_view(target).substr(q + 1);
}

// ---- Router ----

Router& Router::route(std::string method, std::string path, Handler h) {
  routes_.push_back({std::move(method), std::move(path), std::move(h)});
  return *this;
}

Router& Router::not_found(Handler h) {
  not_found_ = std::move(h);
  return *this;
}

void Router::operator()(Request& req, Response& res) const {
  auto path = req.path();
  // The routes for this path: the exact ones, else those of the longest matching prefix.
  std::size_t best = 0;
  bool exact = false, any = false;
  for (const auto& r : routes_) {
    if (r.path == path) {
      exact = true;
      any = true;
    } else if (!exact && r.path.ends_with('*') && path.starts_with(std::string_view(r.path).substr(0, r.path.size() - 1))) {
      best = std::max(best, r.path.size());
      any = true;
    }
  }
  auto matches = [&](const Route& r) { return exact ? r.path == path : r.path.size() == best && r.path.ends_with('*') && path.starts_with(std::string_view(r.path).substr(0, best - 1)); };
  if (any) {
    const Route* get = nullptr;
    std::string allow;
    for (const auto& r : routes_) {
      if (!matches(r)) continue;
      if (r.method == req.method) return r.handler(req, res);
      if (r.method == "GET") get = &r;
      if (allow.find(r.method) == std::string::npos) allow += (allow.empty() ? "" : ", ") + r.method;
    }
    if (req.method == "HEAD" && get) return get->handler(req, res);
    res.status = 405;
    res.headers.set("Allow", allow);
    res.body = "method " + req.method + " not allowed here\n";
    return;
  }
  if (not_found_) return not_found_(req, res);
  res.status = 404;
  res.body = "not found: " + std::string(path) + "\n";
}

// ---- Server ----

void Server::serve_connection(Socket& sock, const Address& peer, const Handler& handler, const ServerOptions& options) {
  detail::Conn conn(sock, peer, handler, options, nullptr);
  try {
    conn.run();
  } catch (const std::exception&) {  // reset, closed, a send that timed out: the peer is gone
  }
}

namespace {
fiberio::ServerOptions accept_options(const ServerOptions& o) {
  auto s = o.server;
  s.request_timeout.reset();  // Conn keeps its own timeouts
  s.handle_signals = false;   // Server::serve_forever handles them (closing idle connections first)
  return s;
}

StreamServer::Handler connection_handler(const std::shared_ptr<Server::State>& st) {
  return [st](Socket& sock, const Address& peer) {
    st->connections.fetch_add(1, std::memory_order_relaxed);
    detail::Conn conn(sock, peer, st->handler, st->options, st.get());
    try {
      conn.run();
    } catch (const TimeoutError&) {
      st->timeouts.fetch_add(1, std::memory_order_relaxed);
    } catch (const std::exception&) {  // reset, closed: the peer is gone
    }
  };
}
}  // namespace

Server::Server(Address addr, Handler handler, ServerOptions options) : state_(std::make_shared<State>()) {
  state_->handler = std::move(handler);
  state_->options = std::move(options);
  server_ = std::make_unique<StreamServer>(std::move(addr), connection_handler(state_), accept_options(state_->options));
  state_->server = server_.get();
}

Server::Server(Socket listener, Handler handler, ServerOptions options) : state_(std::make_shared<State>()) {
  state_->handler = std::move(handler);
  state_->options = std::move(options);
  server_ = std::make_unique<StreamServer>(std::move(listener), connection_handler(state_), accept_options(state_->options));
  state_->server = server_.get();
}

Server::~Server() {
  state_->server = nullptr;
  state_->begin_stop();
  server_->stop(Duration::zero());
}

void Server::start() { server_->start(); }

void Server::serve_forever() {
  std::vector<SignalHandle> handles;
  if (state_->options.server.handle_signals) {
    // Weak: a signal's greenlet may run after this server is gone.
    auto on_signal = [weak = std::weak_ptr<State>(state_)] {
      auto st = weak.lock();
      if (!st || !st->server) return;
      st->begin_stop();
      st->server->stop(st->options.server.stop_timeout);
    };
    handles.push_back(signal_handler(SIGINT, on_signal));
    handles.push_back(signal_handler(SIGTERM, on_signal));
  }
  server_->serve_forever();
}

void Server::stop() { stop(state_->options.server.stop_timeout); }

void Server::stop(OptDuration grace) {
  state_->begin_stop();
  server_->stop(grace);
}

Address Server::address() const { return server_->address(); }
std::size_t Server::connections() const noexcept { return server_->connections(); }
const ServerOptions& Server::options() const noexcept { return state_->options; }

HttpStats Server::stats() const noexcept {
  HttpStats s;
  s.connections = state_->connections.load();
  s.requests = state_->requests.load();
  s.bad_requests = state_->bad_requests.load();
  s.timeouts = state_->timeouts.load();
  s.handler_errors = state_->handler_errors.load();
  return s;
}

}  // namespace fiberio::http
