// Shared support for the seed server demos (the library fiberio_demo_support; its code is in
// demos/support/): command-line parsing with a usage line (CLI11 underneath), Ctrl+C handling, and
// the classic pre-fiber server models (one client at a time, thread per connection, process per
// connection, prefork, thread pool) written with plain blocking POSIX sockets, so each demo can put
// them side by side with its fiberio StreamServer version. tests/test_demo_support.cpp tests them.
//
// Every blocking wait in the POSIX models polls the client fd together with the stop pipe, so Ctrl+C
// (SIGINT) or SIGTERM stops any model promptly and cleanly: threads are joined, children reaped.
#pragma once
// The includes are the ones this header always had (the demos rely on them), though the
// declarations below need fewer.
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

// --name=value, --name value, -c value, -cvalue and flags (parsed by CLI11). An option may be
// repeated. --help/-h prints the usage to stdout and exits 0; anything unknown or malformed prints
// "<prog>: error: ..." and the usage to stderr and exits 2, as do get_int, get_choice and fail.
class Cli {
 public:
  Cli(std::string prog, std::string summary, std::vector<Option> options);

  void parse(int argc, char** argv);

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
  // The last value as an integer in [min, max]; def if not given.
  long get_int(const std::string& name, long def, long min, long max) const;
  // The last value, which must be one of choices; def if not given.
  std::string get_choice(const std::string& name, std::string def, const std::vector<std::string>& choices) const;

  [[noreturn]] void fail(const std::string& msg) const;
  std::string usage() const;

  // Strict: the whole string must be a decimal integer (no spaces, no trailing junk).
  static std::optional<long> parse_long(std::string_view s);

 private:
  std::string prog_, summary_;
  std::vector<Option> options_;
  std::map<std::string, std::vector<std::string>> values_;  // flags: one "" per occurrence
};

// Prints and flushes at once: demo output is watched live (and read by the tests from a file).
void say_line(std::string line);
template <class... T>
void say(fmt::format_string<T...> f, T&&... args) {
  say_line(fmt::format(f, std::forward<T>(args)...));
}

// ---------------------------------------------------------------------------------------------------
// Ctrl+C for the POSIX models: a self-pipe that becomes (and stays) readable once SIGINT/SIGTERM
// arrives, so every poll() in every thread — and in forked children, which inherit it — sees it.
// SIGCHLD, when watched, pokes a second pipe so a parent reaps children as soon as they exit.
// ---------------------------------------------------------------------------------------------------

class StopSignal {
 public:
  // The process's one StopSignal; the first call installs the SIGINT/SIGTERM handlers (and ignores
  // SIGPIPE), a call with watch_children the SIGCHLD one.
  static StopSignal& install(bool watch_children = false);
  int fd() const noexcept { return stop_[0]; }
  int child_fd() const noexcept { return child_[0]; }
  // Set by the signal handler; long computations poll it to give up early.
  static std::atomic<bool>& flag() noexcept;
  // Drains the SIGCHLD pipe (the caller then reaps with waitpid).
  void drain_child_pipe() const noexcept;
  // Forgets a stop: the pipe is drained and flag() cleared, so the models can serve again (the tests
  // run one model after another in one process).
  void reset() noexcept;
  // For a forked child: Ctrl+C / SIGTERM act by default again (the parent coordinates the stop).
  static void reset_in_child() noexcept;

 private:
  StopSignal();
  void watch(bool children);
  static void on_stop(int) noexcept;
  static void on_child(int) noexcept;

  int stop_[2] = {-1, -1};
  int child_[2] = {-1, -1};
};

// ---------------------------------------------------------------------------------------------------
// Plain sockets
// ---------------------------------------------------------------------------------------------------

std::string format_peer(const sockaddr_in& a);

// A listening IPv4 TCP socket (SO_REUSEADDR, as the seeds). Port 0 picks a free port; bound_address()
// tells which. Throws std::system_error saying what failed and for which address.
int listen_tcp(const std::string& host, int port, int backlog = 128);
std::string bound_address(int fd);

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
  void feed(std::string_view chunk);
  // The next request in what was fed, if one is complete.
  std::optional<Request> next();
  // At EOF: the unterminated last line (or the report of a skipped one), if any.
  std::optional<Request> finish();

 private:
  Request take_rest();
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
  ~LineConn();
  LineConn(const LineConn&) = delete;
  LineConn& operator=(const LineConn&) = delete;
  int fd() const noexcept { return fd_; }

  // A lingering close, as nginx's lingering_close: closing with request bytes still unread makes the
  // kernel send an RST, which can destroy the reply before the client has read it. So: FIN first,
  // then read and drop what the client still sends, until its EOF, 1 s, or 1 MiB.
  void linger();

  // One line without its "\n" (and a "\r" before it). TooLong: the line exceeded max_len bytes and
  // was discarded up to its end.
  Status read_line(std::string& line, std::size_t max_len) { return read(line, max_len, false); }
  // One request as the seeds' servers see them (RequestFramer: lines, and a short message that one
  // read returned by itself). terminated(): whether it ended with "\n".
  Status read_request(std::string& text, std::size_t max_len) { return read(text, max_len, true); }
  bool terminated() const noexcept { return terminated_; }

  // False if the peer is gone.
  bool send_all(std::string_view data);

 private:
  Status read(std::string& text, std::size_t max_len, bool lone_reads);
  Status take(RequestFramer::Request& r, std::string& text);

  int fd_;
  int stop_fd_;
  RequestFramer framer_;
  bool terminated_ = true;
};

// ---------------------------------------------------------------------------------------------------
// The POSIX server models. Each serves listen_fd until `stop` fires, then returns with every thread
// joined, every child process reaped and every connection closed. A handler that throws is reported
// on stderr and its connection closed; the others go on.
// ---------------------------------------------------------------------------------------------------

// handler(connection, peer, worker id). It runs in whichever thread or process the model gives it.
using ConnHandler = std::function<void(LineConn&, const std::string&, int)>;

// One client at a time, as the very first seed server: a second client waits until the first leaves.
void serve_blocking(int listen_fd, const StopSignal& stop, const ConnHandler& handler);
// A new OS thread per client (worker ids 1, 2, ...). Finished threads are joined as new clients
// arrive; all at the stop.
void serve_thread_per_connection(int listen_fd, const StopSignal& stop, const ConnHandler& handler);
// A fixed pool of `size` threads (worker ids 0..size-1) fed through a bounded queue of accepted
// connections; when every thread is busy and the queue is full, the acceptor waits (back-pressure
// instead of unbounded growth). Connections still queued at the stop are closed unserved.
void serve_threadpool(int listen_fd, const StopSignal& stop, const ConnHandler& handler, int size);
// fork() per client (worker ids 1, 2, ...); the parent only accepts and reaps (SIGCHLD: install the
// StopSignal with watch_children), so no zombies pile up.
void serve_process_per_connection(int listen_fd, StopSignal& stop, const ConnHandler& handler);
// `size` worker processes (ids 0..size-1), forked up front, all accepting on the one shared
// (nonblocking) listening socket; the kernel hands each client to one of them. A worker that dies is
// replaced (at most 100 times). Needs watch_children as well.
void serve_prefork(int listen_fd, StopSignal& stop, const ConnHandler& handler, int size);

// ---------------------------------------------------------------------------------------------------
// The fiber model: a StreamServer on `workers` hub threads, announced with the same "listening on"
// line as the POSIX models ("<name> (model=fiber<detail>) listening on <address>"), served until
// SIGINT/SIGTERM (StreamServer's graceful stop).
// ---------------------------------------------------------------------------------------------------

int serve_fiber(const std::string& name, const std::string& detail, const std::string& host, int port,
                unsigned workers, fiberio::StreamServer::Handler handler);

// The fiber model's requests, framed as LineConn::read_request frames them.
class SocketRequests {
 public:
  SocketRequests(fiberio::Socket& sock, std::size_t max_len) : sock_(sock) { framer_.configure(max_len, true); }
  // The next request; nullopt at EOF.
  std::optional<RequestFramer::Request> next();

 private:
  fiberio::Socket& sock_;
  RequestFramer framer_;
};

// The fiber model's line reading, with the same over-long-line policy as LineConn: the next line
// without "\n" / "\r\n"; nullopt at EOF. A line longer than max_len is skipped up to its end and
// reported with too_long set (and an empty line), so the caller can answer an error and go on.
std::optional<std::string> read_request_line(fiberio::Stream& s, std::size_t max_len, bool& too_long);

}  // namespace demo
