// The demos' stop signal, request framing and server models: the five POSIX models (blocking,
// thread per connection, thread pool, process per connection, prefork) and the fiber model.
#include <chrono>

#include "demo_util.hpp"

namespace demo {

// ---------------------------------------------------------------------------------------------------
// StopSignal
// ---------------------------------------------------------------------------------------------------

namespace {
StopSignal* g_stop = nullptr;  // for the signal handlers
}  // namespace

StopSignal& StopSignal::install(bool watch_children) {
  static StopSignal s;
  s.watch(watch_children);
  return s;
}

std::atomic<bool>& StopSignal::flag() noexcept {
  static std::atomic<bool> f{false};
  return f;
}

void StopSignal::drain_child_pipe() const noexcept {
  char buf[64];
  while (::read(child_[0], buf, sizeof buf) > 0) {
  }
}

void StopSignal::reset() noexcept {
  char buf[64];
  while (::read(stop_[0], buf, sizeof buf) > 0) {
  }
  flag().store(false);
}

void StopSignal::reset_in_child() noexcept {
  ::signal(SIGINT, SIG_DFL);
  ::signal(SIGTERM, SIG_DFL);
  ::signal(SIGCHLD, SIG_DFL);
}

StopSignal::StopSignal() {
  if (::pipe2(stop_, O_CLOEXEC | O_NONBLOCK) != 0 || ::pipe2(child_, O_CLOEXEC | O_NONBLOCK) != 0)
    throw std::system_error(errno, std::generic_category(), "pipe2");
  g_stop = this;
  struct sigaction sa {};
  sa.sa_handler = &StopSignal::on_stop;
  sigemptyset(&sa.sa_mask);
  // No SA_RESTART: a blocking call is interrupted and its poll() then sees the pipe.
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
}

void StopSignal::watch(bool children) {
  if (!children) return;
  struct sigaction sa {};
  sa.sa_handler = &StopSignal::on_child;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  ::sigaction(SIGCHLD, &sa, nullptr);
}

void StopSignal::on_stop(int) noexcept {
  int saved = errno;
  flag().store(true, std::memory_order_relaxed);
  char c = 's';
  [[maybe_unused]] auto r = ::write(g_stop->stop_[1], &c, 1);
  errno = saved;
}

void StopSignal::on_child(int) noexcept {
  int saved = errno;
  char c = 'c';
  [[maybe_unused]] auto r = ::write(g_stop->child_[1], &c, 1);
  errno = saved;
}

// ---------------------------------------------------------------------------------------------------
// Plain sockets
// ---------------------------------------------------------------------------------------------------

std::string format_peer(const sockaddr_in& a) {
  char host[INET_ADDRSTRLEN] = "?";
  ::inet_ntop(AF_INET, &a.sin_addr, host, sizeof host);
  return fmt::format("{}:{}", host, ntohs(a.sin_port));
}

int listen_tcp(const std::string& host, int port, int backlog) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  std::string h = host == "localhost" ? "127.0.0.1" : host;
  if (::inet_pton(AF_INET, h.c_str(), &a.sin_addr) != 1)
    throw std::system_error(EINVAL, std::generic_category(), "not an IPv4 address: '" + host + "'");
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "socket");
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, backlog) != 0) {
    int e = errno;
    ::close(fd);
    throw std::system_error(e, std::generic_category(), fmt::format("cannot listen on {}:{}", host, port));
  }
  return fd;
}

std::string bound_address(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return format_peer(a);
}

// ---------------------------------------------------------------------------------------------------
// RequestFramer
// ---------------------------------------------------------------------------------------------------

void RequestFramer::feed(std::string_view chunk) {
  lone_ = lone_reads_ && buf_.empty() && !discarding_ && !chunk.empty() && chunk.size() <= kLoneMax &&
          chunk.find('\n') == std::string_view::npos;
  buf_.append(chunk);
}

std::optional<RequestFramer::Request> RequestFramer::next() {
  if (auto nl = buf_.find('\n'); nl != std::string::npos) {
    Request r;
    if (discarding_ || nl > max_len_) {
      r.too_long = true;
      discarding_ = false;
    } else {
      r.text = buf_.substr(0, nl);
      if (!r.text.empty() && r.text.back() == '\r') r.text.pop_back();
    }
    buf_.erase(0, nl + 1);
    return r;
  }
  if (lone_) return take_rest();
  if (buf_.size() > max_len_) {
    discarding_ = true;
    buf_.clear();
  }
  return std::nullopt;
}

std::optional<RequestFramer::Request> RequestFramer::finish() {
  if (discarding_) {
    discarding_ = false;
    buf_.clear();
    return Request{"", true, true};
  }
  if (buf_.empty()) return std::nullopt;
  return take_rest();
}

RequestFramer::Request RequestFramer::take_rest() {
  Request r{std::move(buf_), false, false};
  buf_.clear();
  lone_ = false;
  if (!r.text.empty() && r.text.back() == '\r') r.text.pop_back();
  return r;
}

// ---------------------------------------------------------------------------------------------------
// LineConn
// ---------------------------------------------------------------------------------------------------

LineConn::~LineConn() { ::close(fd_); }

void LineConn::linger() {
  ::shutdown(fd_, SHUT_WR);
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  char sink[4096];
  for (std::size_t total = 0; total < (1u << 20);) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    pollfd p{fd_, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return;
    ssize_t n = ::read(fd_, sink, sizeof sink);
    if (n <= 0) return;
    total += static_cast<std::size_t>(n);
  }
}

bool LineConn::send_all(std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

LineConn::Status LineConn::read(std::string& text, std::size_t max_len, bool lone_reads) {
  framer_.configure(max_len, lone_reads);
  for (;;) {
    if (auto r = framer_.next()) return take(*r, text);
    pollfd p[2] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return Status::Eof;
    }
    if (p[1].revents) return Status::Stopped;
    char chunk[RequestFramer::kChunk];
    ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) {
      if (auto r = framer_.finish()) return take(*r, text);
      return Status::Eof;
    }
    framer_.feed({chunk, static_cast<std::size_t>(n)});
  }
}

LineConn::Status LineConn::take(RequestFramer::Request& r, std::string& text) {
  text = std::move(r.text);
  terminated_ = r.terminated;
  return r.too_long ? Status::TooLong : Status::Line;
}

// ---------------------------------------------------------------------------------------------------
// The POSIX models
// ---------------------------------------------------------------------------------------------------

namespace {

struct Accepted {
  int fd;
  std::string peer;
};

// Waits for a client or a stop. nullopt: stop requested. extra_fd (if >= 0) readable also returns
// nullopt with *extra_ready set, so a parent can reap children.
std::optional<Accepted> accept_or_stop(int listen_fd, const StopSignal& stop, int extra_fd = -1,
                                       bool* extra_ready = nullptr) {
  for (;;) {
    pollfd p[3] = {{listen_fd, POLLIN, 0}, {stop.fd(), POLLIN, 0}, {extra_fd, POLLIN, 0}};
    int n = ::poll(p, extra_fd >= 0 ? 3 : 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "poll");
    }
    if (p[1].revents) return std::nullopt;
    if (extra_fd >= 0 && p[2].revents) {
      *extra_ready = true;
      return std::nullopt;
    }
    sockaddr_in a{};
    socklen_t len = sizeof a;
    int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&a), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      // EAGAIN: another prefork worker won the race for this client. The rest (ECONNABORTED, EMFILE,
      // ...) concern one client: keep serving the others.
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
        std::fprintf(stderr, "accept: %s\n", std::strerror(errno));
      if (errno == EMFILE || errno == ENFILE) ::usleep(10000);
      continue;
    }
    return Accepted{fd, format_peer(a)};
  }
}

void serve_one(const ConnHandler& handler, int fd, const std::string& peer, const StopSignal& stop, int worker) {
  LineConn conn(fd, stop.fd());
  try {
    handler(conn, peer, worker);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "handler for %s failed: %s\n", peer.c_str(), e.what());
  }
}

// Waits (bounded) for the given children, SIGKILLing any that ignore SIGTERM.
void stop_children(std::set<pid_t>& children) {
  for (pid_t p : children) ::kill(p, SIGTERM);
  for (int round = 0; round < 300 && !children.empty(); ++round) {  // up to ~3 s
    for (auto it = children.begin(); it != children.end();) {
      pid_t r = ::waitpid(*it, nullptr, WNOHANG);
      it = (r == *it || (r < 0 && errno == ECHILD)) ? children.erase(it) : std::next(it);
    }
    if (!children.empty()) ::usleep(10000);
  }
  for (pid_t p : children) {
    ::kill(p, SIGKILL);
    ::waitpid(p, nullptr, 0);
  }
  children.clear();
}

// Reaps every exited child; returns their pids.
std::vector<pid_t> reap_children(std::set<pid_t>& children) {
  std::vector<pid_t> dead;
  for (;;) {
    int status = 0;
    pid_t p = ::waitpid(-1, &status, WNOHANG);
    if (p <= 0) break;
    children.erase(p);
    dead.push_back(p);
  }
  return dead;
}

}  // namespace

void serve_blocking(int listen_fd, const StopSignal& stop, const ConnHandler& handler) {
  while (auto c = accept_or_stop(listen_fd, stop)) serve_one(handler, c->fd, c->peer, stop, 0);
}

void serve_thread_per_connection(int listen_fd, const StopSignal& stop, const ConnHandler& handler) {
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Worker> workers;
  int next_id = 0;
  while (auto c = accept_or_stop(listen_fd, stop)) {
    std::erase_if(workers, [](Worker& w) {
      if (!w.done->load()) return false;
      w.thread.join();
      return true;
    });
    auto done = std::make_shared<std::atomic<bool>>(false);
    int id = ++next_id;
    workers.push_back({std::thread([&handler, &stop, fd = c->fd, peer = c->peer, done, id] {
                         serve_one(handler, fd, peer, stop, id);
                         done->store(true);
                       }),
                       done});
  }
  for (auto& w : workers) w.thread.join();
}

void serve_threadpool(int listen_fd, const StopSignal& stop, const ConnHandler& handler, int size) {
  std::mutex mu;
  std::condition_variable not_empty, not_full;
  std::deque<Accepted> queue;
  const std::size_t capacity = static_cast<std::size_t>(size) * 4;
  bool stopping = false;
  std::vector<std::thread> pool;
  for (int i = 0; i < size; ++i) {
    pool.emplace_back([&, i] {
      for (;;) {
        Accepted c;
        {
          std::unique_lock lk(mu);
          not_empty.wait(lk, [&] { return stopping || !queue.empty(); });
          if (stopping) return;
          c = std::move(queue.front());
          queue.pop_front();
        }
        not_full.notify_one();
        serve_one(handler, c.fd, c.peer, stop, i);
      }
    });
  }
  while (auto c = accept_or_stop(listen_fd, stop)) {
    std::unique_lock lk(mu);
    not_full.wait(lk, [&] { return queue.size() < capacity; });
    queue.push_back(std::move(*c));
    lk.unlock();
    not_empty.notify_one();
  }
  {
    std::lock_guard lk(mu);
    stopping = true;
    for (auto& c : queue) ::close(c.fd);  // accepted but never served
    queue.clear();
  }
  not_empty.notify_all();
  for (auto& t : pool) t.join();
}

void serve_process_per_connection(int listen_fd, StopSignal& stop, const ConnHandler& handler) {
  std::set<pid_t> children;
  int next_id = 0;
  for (;;) {
    bool child_exited = false;
    auto c = accept_or_stop(listen_fd, stop, stop.child_fd(), &child_exited);
    if (child_exited) {
      stop.drain_child_pipe();
      reap_children(children);
      continue;
    }
    if (!c) break;
    int id = ++next_id;
    std::fflush(stdout);
    pid_t pid = ::fork();
    if (pid == 0) {
      StopSignal::reset_in_child();
      ::close(listen_fd);
      serve_one(handler, c->fd, c->peer, stop, id);
      std::fflush(stdout);
      std::_Exit(0);  // not exit(): the parent's atexit handlers and static objects are not ours
    }
    ::close(c->fd);  // the child has its own copy
    if (pid < 0) {
      std::fprintf(stderr, "fork: %s\n", std::strerror(errno));
      continue;
    }
    children.insert(pid);
  }
  stop_children(children);
}

void serve_prefork(int listen_fd, StopSignal& stop, const ConnHandler& handler, int size) {
  int flags = ::fcntl(listen_fd, F_GETFL);
  ::fcntl(listen_fd, F_SETFL, flags | O_NONBLOCK);  // losers of an accept race get EAGAIN, not a hang
  std::map<pid_t, int> worker_of;
  std::set<pid_t> children;
  auto start_worker = [&](int id) {
    std::fflush(stdout);
    pid_t pid = ::fork();
    if (pid == 0) {
      StopSignal::reset_in_child();
      while (auto c = accept_or_stop(listen_fd, stop)) serve_one(handler, c->fd, c->peer, stop, id);
      std::fflush(stdout);
      std::_Exit(0);
    }
    if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
    children.insert(pid);
    worker_of[pid] = id;
  };
  for (int i = 0; i < size; ++i) start_worker(i);
  int respawns = 0;
  for (;;) {
    pollfd p[2] = {{stop.fd(), POLLIN, 0}, {stop.child_fd(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0 && errno != EINTR) throw std::system_error(errno, std::generic_category(), "poll");
    if (p[0].revents) break;
    if (p[1].revents) {
      stop.drain_child_pipe();
      for (pid_t dead : reap_children(children)) {
        int id = worker_of[dead];
        worker_of.erase(dead);
        // Bounded, so a worker that crashes at start cannot make us fork forever.
        if (respawns++ < 100) {
          say("prefork: worker {} (pid {}) exited; starting a new one", id, dead);
          start_worker(id);
        }
      }
    }
  }
  stop_children(children);
}

// ---------------------------------------------------------------------------------------------------
// The fiber model
// ---------------------------------------------------------------------------------------------------

int serve_fiber(const std::string& name, const std::string& detail, const std::string& host, int port,
                unsigned workers, fiberio::StreamServer::Handler handler) {
  fiberio::StreamServer server(fiberio::Address(host, static_cast<std::uint16_t>(port)), std::move(handler));
  server.workers(workers);
  server.start();
  say("{} (model=fiber{}) listening on {}", name, detail, server.address());
  server.serve_forever();
  say("{} stopped", name);
  return 0;
}

std::optional<RequestFramer::Request> SocketRequests::next() {
  for (;;) {
    if (auto r = framer_.next()) return r;
    char chunk[RequestFramer::kChunk];
    std::size_t n = sock_.recv(chunk);
    if (n == 0) return framer_.finish();
    framer_.feed({chunk, n});
  }
}

std::optional<std::string> read_request_line(fiberio::Stream& s, std::size_t max_len, bool& too_long) {
  too_long = false;
  for (;;) {
    std::string line;
    try {
      line = s.read_line(max_len + 1);  // + 1: read_line's limit counts the "\n"
    } catch (const fiberio::LineTooLong&) {
      // No "\n" in the first max_len + 1 bytes: drop max_len of them and look again.
      too_long = true;
      s.read_exactly(max_len);
      continue;
    }
    if (line.empty()) return too_long ? std::optional<std::string>(std::string()) : std::nullopt;
    if (too_long) return std::string();  // the tail of the skipped line
    // An unterminated last line (EOF right after it) is still a request: "10" then EOF gets "55".
    line = std::string(fiberio::Stream::chomp(line));
    return line;
  }
}

}  // namespace demo
