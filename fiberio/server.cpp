#include "fiberio/server.hpp"
#include "fiberio/hub.hpp"

#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "fiberio/detail/interruption.hpp"
#include "fiberio/event.hpp"
#include "fiberio/greenlet.hpp"
#include "fiberio/io.hpp"
#include "fiberio/local.hpp"
#include "fiberio/signal.hpp"
#include "fiberio/time.hpp"

namespace fiberio {
namespace detail {

namespace {
constexpr Duration kFirstBackoff = std::chrono::milliseconds(5);
constexpr Duration kMaxBackoff = std::chrono::milliseconds(100);
// How long stop() waits for killed handlers to unwind before giving up on them.
constexpr Duration kKillWait = std::chrono::seconds(2);
constexpr std::size_t kMaxDatagram = 65536;

// errno values of accept4 that concern only the connection being accepted: take the next one.
bool per_connection_error(int e) {
  return e == EINTR || e == ECONNABORTED || e == EPROTO || e == EPERM || e == ENOPROTOOPT || e == EHOSTDOWN ||
         e == ENONET || e == EHOSTUNREACH || e == EOPNOTSUPP || e == ENETUNREACH || e == ENETDOWN;
}
// Running out of a resource: retrying at once would spin, so back off until something is freed.
bool resource_error(int e) { return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM; }
}  // namespace

// What the server, its workers and its handler greenlets share. Handlers that outlive a stop()
// (they ignored the kill) keep it alive, so nothing they touch ever dangles.
struct ServerShared {
  ServerOptions opts;
  StreamServer::Handler stream_handler;
  DatagramServer::Handler datagram_handler;
  std::string name;  // "StreamServer(127.0.0.1:8000)"
  std::atomic<std::uint64_t> accepted{0}, backoffs{0}, errors{0}, killed{0}, evicted{0};
  std::atomic<std::size_t> active{0};
  std::atomic<int> running_workers{0};
  Event all_stopped;

  // Whether the running greenlet is one of this server's handlers (they carry a greenlet-local mark).
  local<bool> handler_mark;
  bool in_own_handler() const { return handler_mark.has_value(); }
};

// One accept (or receive) loop on one hub, with the handler greenlets it spawned.
class Worker : public std::enable_shared_from_this<Worker> {
 public:
  Worker(std::shared_ptr<ServerShared> sh, Socket sock, std::size_t limit)
      : sh_(std::move(sh)), sock_(std::move(sock)), limit_(limit) {}

  Socket& socket() noexcept { return sock_; }

  // On the worker's hub: spawns the accept/receive loop.
  void start_loop(bool datagram) {
    auto self = shared_from_this();
    loop_ = datagram ? GreenletRef(spawn([self] { self->datagram_loop(); }))
                     : GreenletRef(spawn([self] { self->accept_loop(); }));
    loop_.set_name(sh_->name + " accept loop");
  }

  // Any thread. The first request's grace wins.
  void request_stop(OptDuration grace) {
    {
      std::lock_guard lk(mu_);
      if (stop_requested_) return;
      stop_requested_ = true;
      grace_ = grace;
    }
    stop_request_.set();
  }

  // Any thread: end the grace period now (a second SIGINT).
  void hurry() {
    hurry_.store(true);
    idle_.set();
  }

  // On the worker's hub: waits for a stop request, then stops. Ends with the worker's
  // running_workers share released (and all_stopped set by the last worker).
  void control() {
    struct Done {
      Worker* w;
      ~Done() {
        if (w->sh_->running_workers.fetch_sub(1) == 1) w->sh_->all_stopped.set();
      }
    } done{this};
    stop_request_.wait();
    OptDuration grace;
    {
      std::lock_guard lk(mu_);
      grace = grace_;
    }
    stop_local(grace);
  }

 private:
  void stop_local(OptDuration grace) {
    if (loop_ && !loop_.dead()) loop_.kill(true, kKillWait);
    loop_ = GreenletRef();
    sock_.close();
    auto deadline = deadline_after(grace);
    while (!handlers_.empty() && !hurry_.load()) {
      idle_.clear();
      if (handlers_.empty() || hurry_.load()) break;
      auto now = Clock::now();
      if (now >= deadline) break;
      idle_.wait(deadline == kNoDeadline ? OptDuration{} : OptDuration{deadline - now});
    }
    if (handlers_.empty()) return;
    std::vector<GreenletRef> rest;
    auto me = getcurrent();
    for (auto& [id, h] : handlers_)
      if (!(h.greenlet == me)) rest.push_back(h.greenlet);
    sh_->killed += rest.size();
    for (auto& g : rest) g.kill(false);
    joinall(rest, kKillWait);
    for (auto& g : rest)
      if (!g.dead())
        std::fprintf(stderr, "fiberio: %s: %s ignored the kill and is still running after stop()\n",
                     sh_->name.c_str(), g.name().c_str());
  }

  // Waits while the worker is at max_connections. Meanwhile, if new connections wait in the backlog,
  // the handler that has made no progress (sent nothing) for the longest, and at least
  // evict_idle_after, is killed to make room: idle or trickling clients cannot lock the others out.
  void wait_capacity() {
    if (!limit_) return;
    SpinLockGuard lk(cap_lock_);
    while (handlers_.size() >= limit_) {
      auto check_at = Clock::now() + std::min<Duration>(sh_->opts.evict_idle_after, std::chrono::milliseconds(100));
      if (park(capacity_, lk, check_at, WaitKind::Local, {"fiberio::StreamServer (max_connections)", this}) || handlers_.size() < limit_) continue;
      pollfd p{sock_.fd(), POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0) continue;  // nobody is waiting to get in
      lk.unlock();
      evict_stalest();
      lk.lock();
    }
  }

  void evict_stalest() {
    const Handler* stalest = nullptr;
    for (auto& [id, h] : handlers_)
      if (h.sock && (!stalest || h.sock->last_progress() < stalest->sock->last_progress())) stalest = &h;
    if (!stalest || Clock::now() - stalest->sock->last_progress() < sh_->opts.evict_idle_after) return;
    ++sh_->evicted;
    GreenletRef victim = stalest->greenlet;
    victim.kill(false);  // its Socket closes as it unwinds; handler_done() frees the slot
  }
  bool at_capacity() const noexcept { return limit_ && handlers_.size() >= limit_; }

  // Registers a spawned handler greenlet; its completion (however it ends) releases its slot.
  // sock: the connection it serves (stream servers), for eviction.
  void track(GreenletRef g, const Socket* sock = nullptr) {
    auto id = g.id();
    handlers_.emplace(id, Handler{g, sock});
    ++sh_->active;
    ++sh_->accepted;
    g.rawlink([self = shared_from_this(), id] { self->handler_done(id); });
  }

  void handler_done(std::uint64_t id) {
    auto it = handlers_.find(id);
    if (it == handlers_.end()) return;
    if (it->second.greenlet.base().status() == GreenletBase::Status::Failed) ++sh_->errors;
    handlers_.erase(it);
    --sh_->active;
    {
      SpinLockGuard lk(cap_lock_);
      capacity_.notify_one();
    }
    if (handlers_.empty()) idle_.set();
  }

  // Marks the running greenlet as one of ours (so stop() called from it does not wait for itself).
  void mark_handler() { *sh_->handler_mark = true; }

  void spawn_stream_handler(Socket conn, Address peer) {
    auto g = spawn([sh = sh_, self = shared_from_this(), conn = std::move(conn), peer]() mutable {
      Socket s = std::move(conn);  // closed when the handler returns or throws
      s.set_request_timeout(sh->opts.request_timeout);
      self->mark_handler();
      self->serving(s);  // the socket lives in this frame: the worker learns where, for eviction
      sh->stream_handler(s, peer);
    });
    g.set_name(fmt::format("{} {}", sh_->name, peer));
    track(g);
  }

  // Called by a stream handler's greenlet with the socket it serves, before the user's handler.
  void serving(const Socket& s) {
    if (auto it = handlers_.find(getcurrent().id()); it != handlers_.end()) it->second.sock = &s;
  }

  // Sleeps with exponential backoff after a resource error, so a full fd table never spins.
  void back_off(Duration& backoff) {
    ++sh_->backoffs;
    sleep(backoff);
    backoff = std::min(backoff * 2, kMaxBackoff);
  }

  // What the receive loop does after a failed take: go on (not counted), go on counting it toward the
  // batch (so failing connections cannot starve others), back off, or stop (the listener is gone).
  enum class After { Next, Count, BackOff, Stop };

  // The one receive loop of both server kinds (as gevent's baseserver owns the accept loop): while
  // below capacity, take up to accept_batch connections or datagrams, then wait for the listener to
  // be readable (or yield after a full batch, so the new handlers run). Each kind supplies take(fd,
  // backoff) -> 0 when it took one (and spawned its handler) or the errno, and on_error(errno).
  template <class Take, class OnError>
  void receive_loop(Take take, OnError on_error) {
    int fd = sock_.fd();
    Duration backoff = kFirstBackoff;
    for (;;) {
      wait_capacity();
      bool drained = false;
      for (std::size_t n = 0; n < sh_->opts.accept_batch && !at_capacity();) {
        int e = take(fd, backoff);
        if (e == 0) {
          ++n;
          backoff = kFirstBackoff;
          continue;
        }
        if (e == EAGAIN || e == EWOULDBLOCK) {
          drained = true;
          break;
        }
        After next = on_error(e);
        if (next == After::Stop) return;
        if (next == After::Count) ++n;
        if (next != After::BackOff) continue;
        // Then retry directly: with an edge-triggered poller no new event may come.
        back_off(backoff);
        break;
      }
      if (drained) {
        try {
          wait_read(fd);
        } catch (const ClosedError&) {
          return;
        }
      } else {
        yield();
      }
    }
  }

  void accept_loop() {
    bool reported = false;
    auto take = [this](int lfd, Duration& backoff) {
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      int c = ::accept4(lfd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (c < 0) return errno;
      bool tcp = ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
      if (tcp && sh_->opts.nodelay) {
        int one = 1;
        ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // best effort, as Go's
      }
      Socket conn = Socket::adopt(c, tcp);
      try {
        spawn_stream_handler(std::move(conn), Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len));
      } catch (const std::exception&) {
        back_off(backoff);  // no memory for a fiber stack: the connection is closed, slow down
      }
      return 0;
    };
    receive_loop(take, [this, &reported](int e) {
      if (per_connection_error(e)) return After::Count;
      if (resource_error(e)) return After::BackOff;
      if (e == EBADF || e == EINVAL) return After::Stop;  // the listener was closed
      if (!reported) {
        reported = true;
        std::fprintf(stderr, "fiberio: %s: accept failed: %s (retrying)\n", sh_->name.c_str(), std::strerror(e));
      }
      return After::BackOff;
    });
  }

  void datagram_loop() {
    std::vector<char> buf(kMaxDatagram);
    auto take = [this, &buf](int fd, Duration& backoff) {
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      ssize_t got = ::recvfrom(fd, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&ss), &len);
      if (got < 0) return errno;
      auto from = Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
      try {
        auto g = spawn([sh = sh_, self = shared_from_this(), data = std::string(buf.data(), static_cast<std::size_t>(got)), from] {
          self->mark_handler();
          sh->datagram_handler(data, from);
        });
        g.set_name(fmt::format("{} {}", sh_->name, from));
        track(g);
      } catch (const std::exception&) {
        back_off(backoff);
      }
      return 0;
    };
    receive_loop(take, [](int e) {
      // ICMP errors from earlier replies (port unreachable...) surface here: not ours to handle.
      if (e == EINTR || e == ECONNREFUSED || e == EHOSTUNREACH || e == ENETUNREACH || e == ECONNRESET) return After::Next;
      if (e == EBADF) return After::Stop;
      return After::BackOff;
    });
  }

  std::shared_ptr<ServerShared> sh_;
  Socket sock_;
  std::size_t limit_;
  GreenletRef loop_;
  struct Handler {
    GreenletRef greenlet;
    const Socket* sock;  // the connection it serves; null until it runs, and for datagram handlers
  };
  std::unordered_map<std::uint64_t, Handler> handlers_;
  Spinlock cap_lock_;
  WaitList capacity_;
  Event idle_;
  std::atomic<bool> hurry_{false};
  std::mutex mu_;
  bool stop_requested_ = false;
  OptDuration grace_;
  Event stop_request_;
};

// The server object proper: options, listeners, workers and their threads.
class ServerCore : public std::enable_shared_from_this<ServerCore> {
 public:
  ServerCore(const char* kind, Address addr, Socket prebound, ServerOptions opts, bool datagram)
      : sh_(std::make_shared<ServerShared>()), kind_(kind), requested_(std::move(addr)), prebound_(std::move(prebound)),
        datagram_(datagram) {
    sh_->opts = opts;
    if (prebound_) requested_ = prebound_.local_address();
    sh_->name = fmt::format("{}({})", kind_, requested_);
  }

  ~ServerCore() {
    try {
      if (started() && !stopped_.load()) stop(Duration::zero());
    } catch (...) {
      defer_current_interruption();  // a kill or Timeout is delivered at the next suspension point
    }
    join_threads();
    unlink_path();
  }

  ServerShared& shared() noexcept { return *sh_; }
  ServerOptions& opts() {
    std::lock_guard lk(mu_);
    if (started_) throw std::logic_error(fmt::format("fiberio::{}: options can only change before start()", kind_));
    return sh_->opts;
  }
  const ServerOptions& opts_view() const noexcept { return sh_->opts; }

  void start() {
    std::lock_guard lk(mu_);
    if (started_) throw std::logic_error(fmt::format("fiberio::{}: start() called twice", sh_->name));
    if (stopped_.load()) throw std::logic_error(fmt::format("fiberio::{}: cannot start after stop()", sh_->name));
    if (!prebound_ && requested_.empty())
      throw std::invalid_argument(fmt::format("fiberio::{}: no address to listen on", kind_));
    auto& o = sh_->opts;
    if (o.workers == 0) o.workers = 1;
    if (o.accept_batch == 0) o.accept_batch = 1;
    unsigned n = datagram_ ? 1 : o.workers;
    if (n > 1 && (prebound_ || requested_.is_unix()))
      throw std::invalid_argument(
          fmt::format("fiberio::{}: workers({}) needs an IP address to bind (SO_REUSEPORT listeners)", sh_->name, n));
    std::vector<Socket> socks;
    if (prebound_) {
      socks.push_back(std::move(prebound_));
      if (!datagram_) socks.back().listen(o.backlog);
    } else {
      // SO_REUSEPORT lets our workers share one port, but would as quietly share it with any other
      // program listening there. Unless asked to share (reuse_port), a port in use is refused exactly
      // as a single listener is: a probe binds it without SO_REUSEPORT first, and is closed at once.
      if (n > 1 && !o.reuse_port && requested_.port() != 0) make_listener(requested_, false, /*listen=*/false);
      for (unsigned i = 0; i < n; ++i) {
        // The first listener learns the real port (when 0 was asked); the others share it.
        socks.push_back(make_listener(i == 0 ? requested_ : bound_, n > 1 || o.reuse_port));
        if (i == 0) bound_ = socks[0].local_address();
      }
      created_path_ = requested_.is_unix() && !requested_.path().starts_with("@");
    }
    bound_ = socks[0].local_address();
    sh_->name = fmt::format("{}({})", kind_, bound_);
    std::size_t limit = 0;
    if (o.max_connections) limit = std::max<std::size_t>(1, (o.max_connections + n - 1) / n);
    sh_->running_workers.store(static_cast<int>(n));
    owner_hub_ = &Hub::current();
    for (auto& s : socks) workers_.push_back(std::make_shared<Worker>(sh_, std::move(s), limit));
    if (n == 1) {
      auto w = workers_[0];
      w->start_loop(datagram_);
      controller_ = spawn([w] { w->control(); });
      controller_.set_name(sh_->name + " controller");
    } else {
      // start() returns only once every worker thread runs its loop (its hub exists, it accepts), so
      // a caller that measures or connects right after start() sees the whole server.
      auto up = std::make_shared<std::pair<std::atomic<unsigned>, Event>>();
      up->first.store(n);
      auto count_up = [up] {
        if (up->first.fetch_sub(1) == 1) up->second.set();
      };
      try {
        for (auto& w : workers_) {
          threads_.emplace_back([w, datagram = datagram_, count_up] {
            w->start_loop(datagram);
            count_up();
            w->control();
          });
        }
        up->second.wait();
      } catch (...) {
        // Could not start every thread: stop the ones that did start before reporting the failure.
        for (auto& w : workers_) w->request_stop(Duration::zero());
        for (auto& t : threads_) t.join();
        threads_.clear();
        workers_.clear();
        throw;
      }
    }
    started_ = true;
  }

  void stop(OptDuration grace) {
    {
      std::lock_guard lk(mu_);
      if (!started_) {
        stopped_.store(true);
        prebound_.close();
        return;
      }
    }
    bool first = !stop_called_.exchange(true);
    for (auto& w : workers_) w->request_stop(grace);
    if (!first) {
      // A second stop (e.g. a second SIGINT) while the first waits out its grace: finish now.
      if (grace && *grace <= Duration::zero())
        for (auto& w : workers_) w->hurry();
    }
    // From inside one of our handlers: waiting would wait for ourselves. The stop proceeds once this
    // handler returns.
    if (sh_->in_own_handler()) return;
    sh_->all_stopped.wait();
    stopped_.store(true);
    join_threads();
    unlink_path();
    // The controller greenlet sets nothing after it finishes stopping; let it exit before we return so
    // callers see no leftover greenlet.
    if (controller_ && Hub::get() == owner_hub_) controller_.join();
  }

  void hurry() {
    for (auto& w : workers_) w->hurry();
  }

  // Blocks until the server has stopped, stopping it gracefully on SIGINT/SIGTERM if asked.
  void serve_forever() {
    if (!started()) start();
    std::vector<SignalHandle> handles;
    if (sh_->opts.handle_signals) {
      // Weak: a signal's greenlet may run after this server is gone.
      auto on_signal = [weak = weak_from_this()] {
        auto self = weak.lock();
        if (!self) return;
        if (self->stop_called_.load()) {
          self->hurry();  // a second signal: do not wait out the grace period
          return;
        }
        self->stop(self->sh_->opts.stop_timeout);
      };
      handles.push_back(signal_handler(SIGINT, on_signal));
      handles.push_back(signal_handler(SIGTERM, on_signal));
    }
    sh_->all_stopped.wait();
    // all_stopped may be set before the stop() caller finished its bookkeeping: do it here too.
    stopped_.store(true);
    handles.clear();
    join_threads();
    unlink_path();
    if (controller_ && Hub::get() == owner_hub_) controller_.join();
    // Let the signal reader greenlet we just released exit, so none outlives serve_forever().
    yield();
  }

  bool started() const {
    std::lock_guard lk(mu_);
    return started_;
  }
  bool stopped() const noexcept { return stopped_.load() || sh_->all_stopped.is_set(); }
  Address address() const {
    std::lock_guard lk(mu_);
    return started_ ? bound_ : requested_;
  }
  Socket& socket() {
    std::lock_guard lk(mu_);
    if (!started_) {
      if (!prebound_) throw std::logic_error(fmt::format("fiberio::{}: no socket before start()", sh_->name));
      return prebound_;
    }
    return workers_[0]->socket();
  }
  ServerStats stats() const noexcept {
    return {sh_->accepted.load(), sh_->backoffs.load(), sh_->errors.load(), sh_->killed.load(), sh_->evicted.load()};
  }

 private:
  Socket make_listener(const Address& addr, bool reuse_port, bool listen = true) {
    auto& o = sh_->opts;
    Socket s = Socket::for_address(addr, datagram_ ? SOCK_DGRAM : SOCK_STREAM);
    if (!addr.is_unix()) {
      if (o.reuse_addr && !datagram_) s.set_reuse_addr();
      if (reuse_port) s.set_reuse_port();
    }
    s.bind(addr);
    if (listen && !datagram_) s.listen(o.backlog);
    return s;
  }

  void join_threads() {
    std::lock_guard lk(threads_mu_);
    for (auto& t : threads_)
      if (t.joinable() && t.get_id() != std::this_thread::get_id()) t.join();
  }

  void unlink_path() {
    if (created_path_ && stopped_.load()) {
      created_path_ = false;
      ::unlink(requested_.path().c_str());
    }
  }

  std::shared_ptr<ServerShared> sh_;
  const char* kind_;
  Address requested_, bound_;
  Socket prebound_;
  bool datagram_;
  bool created_path_ = false;
  mutable std::mutex mu_;
  bool started_ = false;
  std::atomic<bool> stopped_{false};
  std::atomic<bool> stop_called_{false};
  Hub* owner_hub_ = nullptr;
  std::vector<std::shared_ptr<Worker>> workers_;
  std::mutex threads_mu_;
  std::vector<std::thread> threads_;
  GreenletRef controller_;
};

}  // namespace detail

// ---- StreamServer ----
StreamServer::StreamServer(Address addr, Handler handler, ServerOptions options)
    : core_(std::make_shared<detail::ServerCore>("StreamServer", std::move(addr), Socket(), options, false)) {
  if (!handler) throw std::invalid_argument("fiberio::StreamServer: empty handler");
  core_->shared().stream_handler = std::move(handler);
}

StreamServer::StreamServer(Socket listener, Handler handler, ServerOptions options)
    : core_(std::make_shared<detail::ServerCore>("StreamServer", Address(), std::move(listener), options, false)) {
  if (!handler) throw std::invalid_argument("fiberio::StreamServer: empty handler");
  core_->shared().stream_handler = std::move(handler);
}

StreamServer::~StreamServer() = default;

StreamServer& StreamServer::backlog(int n) {
  core_->opts().backlog = n;
  return *this;
}
StreamServer& StreamServer::max_connections(std::size_t n) {
  core_->opts().max_connections = n;
  return *this;
}
StreamServer& StreamServer::nodelay(bool on) {
  core_->opts().nodelay = on;
  return *this;
}
StreamServer& StreamServer::reuse_port(bool on) {
  core_->opts().reuse_port = on;
  return *this;
}
StreamServer& StreamServer::request_timeout(OptDuration d) {
  core_->opts().request_timeout = d;
  return *this;
}
StreamServer& StreamServer::evict_idle_after(Duration d) {
  core_->opts().evict_idle_after = d;
  return *this;
}
StreamServer& StreamServer::workers(unsigned n) {
  if (n == 0) throw std::invalid_argument("fiberio::StreamServer::workers: needs at least 1");
  core_->opts().workers = n;
  return *this;
}
StreamServer& StreamServer::handle_signals(bool on) {
  core_->opts().handle_signals = on;
  return *this;
}
StreamServer& StreamServer::stop_timeout(Duration grace) {
  core_->opts().stop_timeout = grace;
  return *this;
}
const ServerOptions& StreamServer::options() const noexcept { return core_->opts_view(); }

void StreamServer::start() { core_->start(); }
void StreamServer::serve_forever() { core_->serve_forever(); }
// stop() may be called from another thread, whose call can outlive this object: serve_forever()
// returns as soon as the server has stopped, and its caller may destroy the server while stop() still
// finishes its bookkeeping. The call holds the core alive until it returns.
void StreamServer::stop() { stop(core_->opts_view().stop_timeout); }
void StreamServer::stop(OptDuration grace) {
  auto core = core_;
  core->stop(grace);
}
bool StreamServer::started() const noexcept { return core_->started(); }
bool StreamServer::stopped() const noexcept { return core_->stopped(); }
Address StreamServer::address() const { return core_->address(); }
std::size_t StreamServer::connections() const noexcept { return core_->shared().active.load(); }
ServerStats StreamServer::stats() const noexcept { return core_->stats(); }

// ---- DatagramServer ----
DatagramServer::DatagramServer(Address addr, Handler handler, ServerOptions options)
    : core_(std::make_shared<detail::ServerCore>("DatagramServer", std::move(addr), Socket(), options, true)) {
  if (!handler) throw std::invalid_argument("fiberio::DatagramServer: empty handler");
  core_->shared().datagram_handler = std::move(handler);
}

DatagramServer::DatagramServer(Socket sock, Handler handler, ServerOptions options)
    : core_(std::make_shared<detail::ServerCore>("DatagramServer", Address(), std::move(sock), options, true)) {
  if (!handler) throw std::invalid_argument("fiberio::DatagramServer: empty handler");
  core_->shared().datagram_handler = std::move(handler);
}

DatagramServer::~DatagramServer() = default;

void DatagramServer::start() { core_->start(); }
void DatagramServer::serve_forever() { core_->serve_forever(); }
void DatagramServer::stop() { stop(core_->opts_view().stop_timeout); }
void DatagramServer::stop(OptDuration grace) {
  auto core = core_;  // as StreamServer::stop
  core->stop(grace);
}
std::size_t DatagramServer::sendto(std::string_view data, const Address& to) { return core_->socket().sendto(data, to); }
bool DatagramServer::started() const noexcept { return core_->started(); }
bool DatagramServer::stopped() const noexcept { return core_->stopped(); }
Address DatagramServer::address() const { return core_->address(); }
Socket& DatagramServer::socket() { return core_->socket(); }
ServerStats DatagramServer::stats() const noexcept { return core_->stats(); }

}  // namespace fiberio
