// Shared support for the seed server demos: command-line parsing with a usage line, Ctrl+C handling,
// and the classic pre-fiber server models (one client at a time, thread per connection, process per
// connection, prefork, thread pool) written with plain blocking POSIX sockets, so each demo can put
// them side by side with its fiberio StreamServer version.
//
// Every blocking wait in the POSIX models polls the client fd together with the stop pipe, so Ctrl+C
// (SIGINT) or SIGTERM stops any model promptly and cleanly: threads are joined, children reaped.
#pragma once
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include <fmt/core.h>

#include "fiberio/server.hpp"
#include "fiberio/stream.hpp"

namespace demo {

// ---------------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------------

struct Option {
  std::string name;         // long name without "--"
  char short_name;          // 0 if none
  std::string value_name;   // empty: a flag; else the option takes a value (shown in the usage)
  std::string help;
};

// --name=value, --name value, -c value and flags. --help/-h prints the usage to stdout and exits 0;
// anything unknown or malformed prints "error: ..." and the usage to stderr and exits 2.
class Cli {
 public:
  Cli(std::string prog, std::string summary, std::vector<Option> options)
      : prog_(std::move(prog)), summary_(std::move(summary)), options_(std::move(options)) {
    options_.push_back({"help", 'h', "", "show this help and exit"});
  }

  void parse(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      std::string_view arg = argv[i];
      const Option* opt = nullptr;
      std::optional<std::string> value;
      if (arg.starts_with("--") && arg.size() > 2) {
        auto body = arg.substr(2);
        auto eq = body.find('=');
        auto name = body.substr(0, eq);
        if (eq != std::string_view::npos) value = std::string(body.substr(eq + 1));
        opt = find(name);
        if (!opt) fail(fmt::format("unknown option '--{}'", name));
      } else if (arg.size() == 2 && arg[0] == '-' && arg[1] != '-') {
        opt = find_short(arg[1]);
        if (!opt) fail(fmt::format("unknown option '{}'", arg));
      } else {
        fail(fmt::format("unexpected argument '{}'", arg));
      }
      if (opt->name == "help") {
        std::fputs(usage().c_str(), stdout);
        std::exit(0);
      }
      if (opt->value_name.empty()) {
        if (value) fail(fmt::format("option '--{}' takes no value", opt->name));
        values_[opt->name].push_back("");
        continue;
      }
      if (!value) {
        if (i + 1 >= argc) fail(fmt::format("option '--{}' needs a value ({})", opt->name, opt->value_name));
        value = argv[++i];
      }
      values_[opt->name].push_back(*value);
    }
  }

  bool has(const std::string& name) const { return values_.count(name) != 0; }

  // The last value given (an option may be repeated).
  std::string get(const std::string& name, std::string def) const {
    auto it = values_.find(name);
    return it == values_.end() ? def : it->second.back();
  }
  // Every value given, in order.
  std::vector<std::string> get_all(const std::string& name) const {
    auto it = values_.find(name);
    return it == values_.end() ? std::vector<std::string>{} : it->second;
  }

  long get_int(const std::string& name, long def, long min, long max) const {
    auto it = values_.find(name);
    if (it == values_.end()) return def;
    auto v = parse_long(it->second.back());
    if (!v || *v < min || *v > max)
      fail(fmt::format("--{} must be an integer in [{}, {}], got '{}'", name, min, max, it->second.back()));
    return *v;
  }

  std::string get_choice(const std::string& name, std::string def, const std::vector<std::string>& choices) const {
    auto v = get(name, def);
    if (std::find(choices.begin(), choices.end(), v) == choices.end()) {
      std::string all;
      for (auto& c : choices) all += (all.empty() ? "" : "|") + c;
      fail(fmt::format("--{} must be one of {}, got '{}'", name, all, v));
    }
    return v;
  }

  [[noreturn]] void fail(const std::string& msg) const {
    std::fprintf(stderr, "%s: error: %s\n%s", prog_.c_str(), msg.c_str(), usage().c_str());
    std::exit(2);
  }

  std::string usage() const {
    std::string line = "usage: " + prog_;
    for (auto& o : options_) {
      if (o.name == "help") continue;
      line += o.value_name.empty() ? fmt::format(" [--{}]", o.name) : fmt::format(" [--{} {}]", o.name, o.value_name);
    }
    std::string text = line + "\n" + summary_ + "\n\noptions:\n";
    std::vector<std::string> flags;
    std::size_t width = 0;
    for (auto& o : options_) {
      std::string flag = o.short_name ? fmt::format("-{}, --{}", o.short_name, o.name) : fmt::format("    --{}", o.name);
      if (!o.value_name.empty()) flag += " " + o.value_name;
      if (flag.size() <= kFlagColumn) width = std::max(width, flag.size());
      flags.push_back(std::move(flag));
    }
    for (std::size_t i = 0; i < options_.size(); ++i) {
      if (flags[i].size() > width)  // too wide for the column: the help goes on the next line
        text += fmt::format("  {}\n  {:<{}}  {}\n", flags[i], "", width, options_[i].help);
      else
        text += fmt::format("  {:<{}}  {}\n", flags[i], width, options_[i].help);
    }
    return text;
  }

  // Strict: the whole string must be a decimal integer (no spaces, no trailing junk).
  static std::optional<long> parse_long(std::string_view s) {
    long v = 0;
    if (s.empty()) return std::nullopt;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
    return v;
  }

 private:
  const Option* find(std::string_view name) const {
    for (auto& o : options_)
      if (o.name == name) return &o;
    return nullptr;
  }
  const Option* find_short(char c) const {
    for (auto& o : options_)
      if (o.short_name == c) return &o;
    return nullptr;
  }

  static constexpr std::size_t kFlagColumn = 26;
  std::string prog_, summary_;
  std::vector<Option> options_;
  std::map<std::string, std::vector<std::string>> values_;
};

// Prints and flushes at once: demo output is watched live (and read by the tests from a file).
template <class... T>
void say(fmt::format_string<T...> f, T&&... args) {
  auto s = fmt::format(f, std::forward<T>(args)...);
  s += '\n';
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------------------------------
// Ctrl+C for the POSIX models: a self-pipe that becomes (and stays) readable once SIGINT/SIGTERM
// arrives, so every poll() in every thread — and in forked children, which inherit it — sees it.
// SIGCHLD, when watched, pokes a second pipe so a parent reaps children as soon as they exit.
// ---------------------------------------------------------------------------------------------------

class StopSignal {
 public:
  static StopSignal& install(bool watch_children = false) {
    static StopSignal s;
    s.watch(watch_children);
    return s;
  }
  int fd() const noexcept { return stop_[0]; }
  int child_fd() const noexcept { return child_[0]; }
  // Set by the signal handler; long computations poll it to give up early.
  static std::atomic<bool>& flag() noexcept {
    static std::atomic<bool> f{false};
    return f;
  }
  // Drains the SIGCHLD pipe (the caller then reaps with waitpid).
  void drain_child_pipe() const noexcept {
    char buf[64];
    while (::read(child_[0], buf, sizeof buf) > 0) {
    }
  }
  // For a forked child: Ctrl+C / SIGTERM act by default again (the parent coordinates the stop).
  static void reset_in_child() noexcept {
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGCHLD, SIG_DFL);
  }

 private:
  StopSignal() {
    if (::pipe2(stop_, O_CLOEXEC | O_NONBLOCK) != 0 || ::pipe2(child_, O_CLOEXEC | O_NONBLOCK) != 0)
      throw std::system_error(errno, std::generic_category(), "pipe2");
    self() = this;
    struct sigaction sa {};
    sa.sa_handler = &StopSignal::on_stop;
    sigemptyset(&sa.sa_mask);
    // No SA_RESTART: a blocking call is interrupted and its poll() then sees the pipe.
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
  }
  void watch(bool children) {
    if (!children) return;
    struct sigaction sa {};
    sa.sa_handler = &StopSignal::on_child;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    ::sigaction(SIGCHLD, &sa, nullptr);
  }
  static StopSignal*& self() noexcept {
    static StopSignal* p = nullptr;
    return p;
  }
  static void on_stop(int) noexcept {
    int saved = errno;
    flag().store(true, std::memory_order_relaxed);
    char c = 's';
    [[maybe_unused]] auto r = ::write(self()->stop_[1], &c, 1);
    errno = saved;
  }
  static void on_child(int) noexcept {
    int saved = errno;
    char c = 'c';
    [[maybe_unused]] auto r = ::write(self()->child_[1], &c, 1);
    errno = saved;
  }

  int stop_[2] = {-1, -1};
  int child_[2] = {-1, -1};
};

// ---------------------------------------------------------------------------------------------------
// Plain sockets
// ---------------------------------------------------------------------------------------------------

inline std::string format_peer(const sockaddr_in& a) {
  char host[INET_ADDRSTRLEN] = "?";
  ::inet_ntop(AF_INET, &a.sin_addr, host, sizeof host);
  return fmt::format("{}:{}", host, ntohs(a.sin_port));
}

// A listening IPv4 TCP socket (SO_REUSEADDR, as the seeds). Port 0 picks a free port; bound_address()
// tells which. Throws std::system_error saying what failed and for which address.
inline int listen_tcp(const std::string& host, int port, int backlog = 128) {
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

inline std::string bound_address(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return format_peer(a);
}

// Requests as the seeds' servers see them. A line ending in "\n" (a "\r" before it dropped) is one
// request. With lone_reads, so is a short message without "\n" that one read returned by itself:
// the seeds' own clients send `1` (seed 000's meter) and `hello` (seed 004) that way and wait for the
// reply, and the seeds' servers answer whatever one recv() returned. A long line arriving in pieces
// stays one line (a first piece longer than kLoneMax waits for the rest). Over-long lines are skipped
// up to their end and reported (bounded memory); an unterminated last line before EOF is a request.
class RequestFramer {
 public:
  static constexpr std::size_t kChunk = 4096;  // what one read asks for
  // The longest message taken whole without a newline: the seeds' servers read recv(128) (seed 000)
  // and recv(1000) (seed 004), and their clients send a few bytes. A longer unterminated read is the
  // first piece of a line still arriving.
  static constexpr std::size_t kLoneMax = 128;
  struct Request {
    std::string text;
    bool terminated = true;  // it ended with "\n"
    bool too_long = false;   // it exceeded the limit and was skipped (text empty)
  };

  void configure(std::size_t max_len, bool lone_reads) {
    max_len_ = max_len;
    lone_reads_ = lone_reads;
  }
  // Adds what one read returned.
  void feed(std::string_view chunk) {
    lone_ = lone_reads_ && buf_.empty() && !discarding_ && !chunk.empty() && chunk.size() <= kLoneMax &&
            chunk.find('\n') == std::string_view::npos;
    buf_.append(chunk);
  }
  // The next request in what was fed, if one is complete.
  std::optional<Request> next() {
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
  // At EOF: the unterminated last line (or the report of a skipped one), if any.
  std::optional<Request> finish() {
    if (discarding_) {
      discarding_ = false;
      buf_.clear();
      return Request{"", true, true};
    }
    if (buf_.empty()) return std::nullopt;
    return take_rest();
  }

 private:
  Request take_rest() {
    Request r{std::move(buf_), false, false};
    buf_.clear();
    lone_ = false;
    if (!r.text.empty() && r.text.back() == '\r') r.text.pop_back();
    return r;
  }
  std::string buf_;
  std::size_t max_len_ = 1024;
  bool lone_reads_ = false;
  bool lone_ = false;  // buf_ holds exactly one short read without "\n"
  bool discarding_ = false;
};

// One client connection of a POSIX model: owns the fd; line reads that give up when a stop is
// requested; over-long lines are skipped (bounded memory) and reported, so the connection stays usable.
class LineConn {
 public:
  enum class Status { Line, Eof, TooLong, Stopped };

  LineConn(int fd, int stop_fd) : fd_(fd), stop_fd_(stop_fd) {}
  ~LineConn() { ::close(fd_); }

  // A lingering close, as nginx's lingering_close: closing with request bytes still unread makes the
  // kernel send an RST, which can destroy the reply before the client has read it. So: FIN first,
  // then read and drop what the client still sends, until its EOF, 1 s, or 1 MiB.
  void linger() {
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
  LineConn(const LineConn&) = delete;
  LineConn& operator=(const LineConn&) = delete;

  // One line without its "\n" (and a "\r" before it). TooLong: the line exceeded max_len bytes and
  // was discarded up to its end.
  Status read_line(std::string& line, std::size_t max_len) { return read(line, max_len, false); }
  // One request as the seeds' servers see them (RequestFramer: lines, and a short message that one
  // read returned by itself). terminated(): whether it ended with "\n".
  Status read_request(std::string& text, std::size_t max_len) { return read(text, max_len, true); }
  bool terminated() const noexcept { return terminated_; }

  // False if the peer is gone.
  bool send_all(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

 private:
  Status read(std::string& text, std::size_t max_len, bool lone_reads) {
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
  Status take(RequestFramer::Request& r, std::string& text) {
    text = std::move(r.text);
    terminated_ = r.terminated;
    return r.too_long ? Status::TooLong : Status::Line;
  }

  int fd_;
  int stop_fd_;
  RequestFramer framer_;
  bool terminated_ = true;
};

// handler(connection, peer, worker id). It runs in whichever thread or process the model gives it.
using ConnHandler = std::function<void(LineConn&, const std::string&, int)>;

namespace detail {

// Waits for a client or a stop. nullopt: stop requested. extra_fd (if >= 0) readable also returns
// nullopt with *extra_ready set, so a parent can reap children.
struct Accepted {
  int fd;
  std::string peer;
};
inline std::optional<Accepted> accept_or_stop(int listen_fd, const StopSignal& stop, int extra_fd = -1,
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

inline void serve_one(const ConnHandler& handler, int fd, const std::string& peer, const StopSignal& stop,
                      int worker) {
  LineConn conn(fd, stop.fd());
  try {
    handler(conn, peer, worker);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "handler for %s failed: %s\n", peer.c_str(), e.what());
  }
}

// Waits (bounded) for the given children, SIGKILLing any that ignore SIGTERM.
inline void stop_children(std::set<pid_t>& children) {
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
inline std::vector<pid_t> reap_children(std::set<pid_t>& children) {
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

}  // namespace detail

// One client at a time, as the very first seed server: a second client waits until the first leaves.
inline void serve_blocking(int listen_fd, const StopSignal& stop, const ConnHandler& handler) {
  while (auto c = detail::accept_or_stop(listen_fd, stop)) detail::serve_one(handler, c->fd, c->peer, stop, 0);
}

// A new OS thread per client. Finished threads are joined as new clients arrive; all at the stop.
inline void serve_thread_per_connection(int listen_fd, const StopSignal& stop, const ConnHandler& handler) {
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Worker> workers;
  int next_id = 0;
  while (auto c = detail::accept_or_stop(listen_fd, stop)) {
    std::erase_if(workers, [](Worker& w) {
      if (!w.done->load()) return false;
      w.thread.join();
      return true;
    });
    auto done = std::make_shared<std::atomic<bool>>(false);
    int id = ++next_id;
    workers.push_back({std::thread([&handler, &stop, fd = c->fd, peer = c->peer, done, id] {
                         detail::serve_one(handler, fd, peer, stop, id);
                         done->store(true);
                       }),
                       done});
  }
  for (auto& w : workers) w.thread.join();
}

// A fixed pool of `size` threads fed through a bounded queue of accepted connections; when every
// thread is busy and the queue is full, the acceptor waits (back-pressure instead of unbounded growth).
inline void serve_threadpool(int listen_fd, const StopSignal& stop, const ConnHandler& handler, int size) {
  std::mutex mu;
  std::condition_variable not_empty, not_full;
  std::deque<detail::Accepted> queue;
  const std::size_t capacity = static_cast<std::size_t>(size) * 4;
  bool stopping = false;
  std::vector<std::thread> pool;
  for (int i = 0; i < size; ++i) {
    pool.emplace_back([&, i] {
      for (;;) {
        detail::Accepted c;
        {
          std::unique_lock lk(mu);
          not_empty.wait(lk, [&] { return stopping || !queue.empty(); });
          if (stopping) return;
          c = std::move(queue.front());
          queue.pop_front();
        }
        not_full.notify_one();
        detail::serve_one(handler, c.fd, c.peer, stop, i);
      }
    });
  }
  while (auto c = detail::accept_or_stop(listen_fd, stop)) {
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

// fork() per client; the parent only accepts and reaps (SIGCHLD), so no zombies pile up.
inline void serve_process_per_connection(int listen_fd, StopSignal& stop, const ConnHandler& handler) {
  std::set<pid_t> children;
  int next_id = 0;
  for (;;) {
    bool child_exited = false;
    auto c = detail::accept_or_stop(listen_fd, stop, stop.child_fd(), &child_exited);
    if (child_exited) {
      stop.drain_child_pipe();
      detail::reap_children(children);
      continue;
    }
    if (!c) break;
    int id = ++next_id;
    std::fflush(stdout);
    pid_t pid = ::fork();
    if (pid == 0) {
      StopSignal::reset_in_child();
      ::close(listen_fd);
      detail::serve_one(handler, c->fd, c->peer, stop, id);
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
  detail::stop_children(children);
}

// `size` worker processes, forked up front, all accepting on the one shared (nonblocking) listening
// socket; the kernel hands each client to one of them. A worker that dies is replaced.
inline void serve_prefork(int listen_fd, StopSignal& stop, const ConnHandler& handler, int size) {
  int flags = ::fcntl(listen_fd, F_GETFL);
  ::fcntl(listen_fd, F_SETFL, flags | O_NONBLOCK);  // losers of an accept race get EAGAIN, not a hang
  std::map<pid_t, int> worker_of;
  std::set<pid_t> children;
  auto start_worker = [&](int id) {
    std::fflush(stdout);
    pid_t pid = ::fork();
    if (pid == 0) {
      StopSignal::reset_in_child();
      while (auto c = detail::accept_or_stop(listen_fd, stop)) detail::serve_one(handler, c->fd, c->peer, stop, id);
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
      for (pid_t dead : detail::reap_children(children)) {
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
  detail::stop_children(children);
}

// ---------------------------------------------------------------------------------------------------
// The fiber model: a StreamServer on `workers` hub threads, announced with the same "listening on"
// line as the POSIX models ("<name> (model=fiber<detail>) listening on <address>"), served until
// SIGINT/SIGTERM (StreamServer's graceful stop).
// ---------------------------------------------------------------------------------------------------

inline int serve_fiber(const std::string& name, const std::string& detail, const std::string& host, int port,
                       unsigned workers, fiberio::StreamServer::Handler handler) {
  fiberio::StreamServer server(fiberio::Address(host, static_cast<std::uint16_t>(port)), std::move(handler));
  server.workers(workers);
  server.start();
  say("{} (model=fiber{}) listening on {}", name, detail, server.address());
  server.serve_forever();
  say("{} stopped", name);
  return 0;
}

// ---------------------------------------------------------------------------------------------------
// The fiber model's requests, framed as LineConn::read_request frames them.
class SocketRequests {
 public:
  SocketRequests(fiberio::Socket& sock, std::size_t max_len) : sock_(sock) { framer_.configure(max_len, true); }
  std::optional<RequestFramer::Request> next() {
    for (;;) {
      if (auto r = framer_.next()) return r;
      char chunk[RequestFramer::kChunk];
      std::size_t n = sock_.recv(chunk);
      if (n == 0) return framer_.finish();
      framer_.feed({chunk, n});
    }
  }

 private:
  fiberio::Socket& sock_;
  RequestFramer framer_;
};

// The fiber model's line reading, with the same over-long-line policy as LineConn.
// ---------------------------------------------------------------------------------------------------

// The next line without "\n" / "\r\n"; nullopt at EOF. A line longer than max_len is skipped up to
// its end and reported with too_long set (and an empty line), so the caller can answer an error and go on.
inline std::optional<std::string> read_request_line(fiberio::Stream& s, std::size_t max_len, bool& too_long) {
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
