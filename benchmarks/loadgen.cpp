// loadgen: fiberio's own network load generator (single thread, epoll, loopback only).
//
// Modes (each prints exactly one machine-readable `key=value` line on stdout; diagnostics go to stderr):
//
//   loadgen --port P [--connections C] [--duration S] [--requests N] [--warmup S] [--size B]
//           [--server-pid PID]
//     Closed-loop ping-pong: every connection sends one line (B payload bytes + '\n') and waits for
//     the complete reply of the same length (compared case-insensitively, so upper-casing echo servers
//     qualify) before sending again. Connections are first established with a bounded number of
//     handshakes in flight, each proven by one full exchange (so the server has really accepted it);
//     then all of them run for --warmup seconds uncounted, then the measured window runs until
//     --duration seconds or --requests replies, whichever comes first.
//     With --server-pid, the CPU time of every thread of that process and of all its descendants is
//     read from /proc (schedstat, ns) at both ends of the measured window: this is how a
//     process-per-connection server's work is counted too.
//
//   loadgen --idle --port P --connections C --duration S [--server-pid PID]
//     Opens C connections, makes one exchange on each (so every server-side handler has run and now
//     sits waiting), then holds them idle. With --server-pid reports the server tree's VmRSS before
//     connecting and while the C connections are idle, and the difference per connection.
//
//   loadgen --rate-probe --port P --duration S [--probe-line 1] [--hog N] [--warmup S]
//     One connection sends "<probe-line>\n" and waits for a reply line, in a loop, and counts replies
//     per second. With --hog N a second connection loops "N\n" at the same time (seed 000's fib(N)
//     hog), started --warmup seconds before the measured window so the hog is already running.
//
// Every phase has a deadline; a connection that errors (refused, reset, EOF, wrong reply, no reply
// within --timeout) is closed and counted in errors=, never retried. Addresses other than 127.0.0.0/8
// and ::1 are refused.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace {

using i64 = std::int64_t;

i64 now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return i64{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "loadgen: %s\n", msg.c_str());
  std::exit(2);
}

// ---- options ----
struct Options {
  enum class Mode { PingPong, Idle, RateProbe } mode = Mode::PingPong;
  std::string host = "127.0.0.1";
  int port = 0;
  long connections = 1;
  double duration = 5.0;
  long long requests = 0;  // 0 = bounded by --duration only
  double warmup = 1.0;
  long size = 32;
  double timeout = 10.0;           // per request
  double connect_timeout = 60.0;   // whole establishment phase
  long connect_inflight = 128;     // handshakes+first exchanges in flight at once
  long server_pid = 0;
  std::string probe_line = "1";
  long hog = -1;
  double settle = 1.0;  // idle mode: wait after establishing before sampling RSS
};

void usage() {
  std::fputs(
      "usage: loadgen --port P [--host 127.0.0.1] [--connections C] [--duration S] [--requests N]\n"
      "               [--warmup S] [--size BYTES] [--timeout S] [--connect-timeout S]\n"
      "               [--connect-inflight K] [--server-pid PID]\n"
      "       loadgen --idle --port P --connections C --duration S [--settle S] [--server-pid PID]\n"
      "       loadgen --rate-probe --port P --duration S [--probe-line TEXT] [--hog N] [--warmup S]\n",
      stderr);
}

double parse_double(const std::string& flag, const std::string& v, double lo, double hi) {
  char* end = nullptr;
  errno = 0;
  double d = std::strtod(v.c_str(), &end);
  if (v.empty() || *end || errno || !(d >= lo && d <= hi))
    die("bad value '" + v + "' for " + flag + " (expected a number in [" + std::to_string(lo) + ", " +
        std::to_string(hi) + "])");
  return d;
}

long long parse_int(const std::string& flag, const std::string& v, long long lo, long long hi) {
  char* end = nullptr;
  errno = 0;
  long long n = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end || errno || n < lo || n > hi)
    die("bad value '" + v + "' for " + flag + " (expected an integer in [" + std::to_string(lo) + ", " +
        std::to_string(hi) + "])");
  return n;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i], v;
    if (auto eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      v = a.substr(eq + 1);
      a = a.substr(0, eq);
    } else if (a != "--idle" && a != "--rate-probe" && a != "--help" && a != "-h") {
      if (i + 1 >= argc) die("missing value for " + a);
      v = argv[++i];
    }
    if (a == "--idle") o.mode = Options::Mode::Idle;
    else if (a == "--rate-probe") o.mode = Options::Mode::RateProbe;
    else if (a == "--help" || a == "-h") { usage(); std::exit(0); }
    else if (a == "--host") o.host = v;
    else if (a == "--port") o.port = static_cast<int>(parse_int(a, v, 1, 65535));
    else if (a == "--connections" || a == "-c") o.connections = static_cast<long>(parse_int(a, v, 1, 1'000'000));
    else if (a == "--duration") o.duration = parse_double(a, v, 0.01, 3600);
    else if (a == "--requests") o.requests = parse_int(a, v, 0, 1'000'000'000'000LL);
    else if (a == "--warmup") o.warmup = parse_double(a, v, 0, 600);
    else if (a == "--size") o.size = static_cast<long>(parse_int(a, v, 1, 1 << 20));
    else if (a == "--timeout") o.timeout = parse_double(a, v, 0.001, 3600);
    else if (a == "--connect-timeout") o.connect_timeout = parse_double(a, v, 0.001, 3600);
    else if (a == "--connect-inflight") o.connect_inflight = static_cast<long>(parse_int(a, v, 1, 1'000'000));
    else if (a == "--server-pid") o.server_pid = static_cast<long>(parse_int(a, v, 1, 1L << 30));
    else if (a == "--probe-line") o.probe_line = v;
    else if (a == "--hog") o.hog = static_cast<long>(parse_int(a, v, 0, 1'000'000));
    else if (a == "--settle") o.settle = parse_double(a, v, 0, 600);
    else { usage(); die("unknown option '" + a + "'"); }
  }
  if (o.port == 0) { usage(); die("--port is required"); }
  if (o.probe_line.find('\n') != std::string::npos) die("--probe-line must not contain a newline");
  return o;
}

// ---- loopback-only address ----
sockaddr_storage loopback_address(const std::string& host, int port, socklen_t& len) {
  sockaddr_storage ss{};
  std::string h = host == "localhost" ? "127.0.0.1" : host;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (::inet_pton(AF_INET, h.c_str(), &v4->sin_addr) == 1) {
    if ((ntohl(v4->sin_addr.s_addr) >> 24) != 127)
      die("refusing to load " + host + ": loadgen only targets loopback (127.0.0.0/8, ::1)");
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<std::uint16_t>(port));
    len = sizeof(sockaddr_in);
  } else if (::inet_pton(AF_INET6, h.c_str(), &v6->sin6_addr) == 1) {
    if (!IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr))
      die("refusing to load " + host + ": loadgen only targets loopback (127.0.0.0/8, ::1)");
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<std::uint16_t>(port));
    len = sizeof(sockaddr_in6);
  } else {
    die("--host '" + host + "' is not a numeric loopback address (use 127.0.0.1, ::1 or localhost)");
  }
  return ss;
}

void raise_nofile(long needed) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  ::getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur != RLIM_INFINITY && static_cast<long>(rl.rlim_cur) < needed + 16)
    die("RLIMIT_NOFILE is " + std::to_string(rl.rlim_cur) + " (hard limit) but " + std::to_string(needed) +
        " connections need more: raise `ulimit -Hn`");
}

// ---- server-side accounting from /proc ----
// All descendants of root (root included), from one scan of /proc/*/stat.
std::vector<long> process_tree(long root) {
  std::multimap<long, long> children;
  if (DIR* d = ::opendir("/proc")) {
    while (dirent* e = ::readdir(d)) {
      if (!std::isdigit(static_cast<unsigned char>(e->d_name[0]))) continue;
      long pid = std::atol(e->d_name);
      std::ifstream f(std::string("/proc/") + e->d_name + "/stat");
      std::string s((std::istreambuf_iterator<char>(f)), {});
      auto rp = s.rfind(')');
      if (rp == std::string::npos) continue;
      std::istringstream rest(s.substr(rp + 2));
      char state;
      long ppid;
      if (rest >> state >> ppid) children.emplace(ppid, pid);
    }
    ::closedir(d);
  }
  std::vector<long> out{root};
  for (std::size_t i = 0; i < out.size(); ++i) {
    auto [b, e] = children.equal_range(out[i]);
    for (auto it = b; it != e; ++it) out.push_back(it->second);
  }
  return out;
}

// CPU time of every thread of every process in `pids`, in seconds, from /proc/<pid>/task/<tid>/schedstat
// (nanoseconds on CPU, user and kernel). /proc/<pid>/stat would do for one process, but it counts in
// 10 ms ticks rounded per process: summed over 50 forked children serving a few ms each, that rounding
// loses most of the time. Threads that exit between two samples are not counted; in a closed-loop run
// none does (connections stay open for the whole window).
double tree_cpu_seconds(const std::vector<long>& pids) {
  long long ns = 0;
  for (long p : pids) {
    std::string dir = "/proc/" + std::to_string(p) + "/task";
    DIR* d = ::opendir(dir.c_str());
    if (!d) continue;
    while (dirent* e = ::readdir(d)) {
      if (!std::isdigit(static_cast<unsigned char>(e->d_name[0]))) continue;
      std::ifstream f(dir + "/" + e->d_name + "/schedstat");
      long long run = 0;
      if (f >> run) ns += run;
    }
    ::closedir(d);
  }
  return static_cast<double>(ns) / 1e9;
}

long long tree_rss_kb(const std::vector<long>& pids) {
  long long kb = 0;
  for (long p : pids) {
    std::ifstream f("/proc/" + std::to_string(p) + "/status");
    std::string line;
    while (std::getline(f, line))
      if (line.rfind("VmRSS:", 0) == 0) kb += std::atoll(line.c_str() + 6);
  }
  return kb;
}

// ---- connections ----
enum class Reply { FixedLength, Line };
enum class Phase { Connecting, Established, Dead };

struct Conn {
  int fd = -1;
  Phase phase = Phase::Connecting;
  const std::string* request = nullptr;
  Reply reply = Reply::FixedLength;
  bool is_hog = false;
  bool in_flight = false;   // a request was sent and its reply is not complete yet
  bool connected = false;   // TCP handshake done
  std::size_t sent = 0;     // bytes of request written
  std::string got;          // reply bytes received so far
  i64 sent_at = 0;
};

class Runner {
 public:
  explicit Runner(const Options& o) : o_(o) {
    addr_ = loopback_address(o.host, o.port, addrlen_);
    ep_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) die(std::string("epoll_create1: ") + std::strerror(errno));
  }

  // Stats of the current counting window.
  bool counting = false;
  long long replies = 0, hog_replies = 0, errors = 0;
  std::vector<i64> latencies;
  std::string first_error;

  Conn& add(const std::string* request, Reply reply, bool hog = false) {
    conns_.push_back(std::make_unique<Conn>());
    Conn& c = *conns_.back();
    c.request = request;
    c.reply = reply;
    c.is_hog = hog;
    return c;
  }

  // Starts the TCP handshake of c (nonblocking connect).
  void start_connect(Conn& c) {
    c.fd = ::socket(addr_.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) return fail(c, std::string("socket: ") + std::strerror(errno));
    int one = 1;
    ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int r = ::connect(c.fd, reinterpret_cast<sockaddr*>(&addr_), addrlen_);
    if (r < 0 && errno != EINPROGRESS) return fail(c, std::string("connect: ") + std::strerror(errno));
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
    ev.data.ptr = &c;
    if (::epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev) < 0)
      return fail(c, std::string("epoll_ctl: ") + std::strerror(errno));
    c.sent_at = now_ns();  // the handshake shares the per-request timeout
    if (r == 0) on_connected(c);
  }

  // Sends c's request (or the rest of it).
  void send_request(Conn& c) {
    if (c.phase == Phase::Dead) return;
    if (!c.in_flight) {
      c.in_flight = true;
      c.sent = 0;
      c.got.clear();
      c.sent_at = now_ns();
    }
    const std::string& m = *c.request;
    while (c.sent < m.size()) {
      ssize_t n = ::send(c.fd, m.data() + c.sent, m.size() - c.sent, MSG_NOSIGNAL);
      if (n > 0) { c.sent += static_cast<std::size_t>(n); continue; }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // EPOLLOUT resumes it
      return fail(c, std::string("send: ") + std::strerror(errno));
    }
  }

  // One epoll round, waiting at most until `until_ns`. `resend` says whether completed exchanges
  // immediately send the next request.
  void poll_once(i64 until_ns, bool resend) {
    i64 wait_ns = std::max<i64>(0, until_ns - now_ns());
    int ms = static_cast<int>(std::min<i64>(wait_ns / 1'000'000 + (wait_ns % 1'000'000 ? 1 : 0), 100));
    int n = ::epoll_wait(ep_, events_.data(), static_cast<int>(events_.size()), ms);
    if (n < 0 && errno != EINTR) die(std::string("epoll_wait: ") + std::strerror(errno));
    for (int i = 0; i < n; ++i) handle(*static_cast<Conn*>(events_[i].data.ptr), events_[i].events, resend);
    expire_timeouts();
  }

  std::size_t count(Phase p) const {
    return static_cast<std::size_t>(std::count_if(conns_.begin(), conns_.end(), [p](auto& c) { return c->phase == p; }));
  }
  std::size_t dead() const { return dead_; }
  std::vector<std::unique_ptr<Conn>>& conns() { return conns_; }
  bool any_in_flight() const {
    return std::any_of(conns_.begin(), conns_.end(), [](auto& c) { return c->phase != Phase::Dead && c->in_flight; });
  }

  // Closes c and counts it as an error (never retried).
  void fail(Conn& c, const std::string& why) {
    if (c.phase == Phase::Dead) return;
    if (first_error.empty()) first_error = why;
    ++errors;
    ++dead_;
    c.phase = Phase::Dead;
    c.in_flight = false;
    if (c.fd >= 0) { ::close(c.fd); c.fd = -1; }
  }

  // Closes every connection after collecting the replies still in flight (at most `grace` seconds):
  // closing a socket with unread bytes sends a RST, which servers would rightly report as an error.
  void close_all(double grace = 2.0) {
    i64 end = now_ns() + static_cast<i64>(grace * 1e9);
    while (any_in_flight() && now_ns() < end) poll_once(end, false);
    for (auto& c : conns_)
      if (c->fd >= 0) { ::close(c->fd); c->fd = -1; }
  }

 private:
  void on_connected(Conn& c) {
    c.connected = true;
    send_request(c);
  }

  void handle(Conn& c, std::uint32_t ev, bool resend) {
    if (c.phase == Phase::Dead) return;
    if (!c.connected) {
      if (ev & (EPOLLERR | EPOLLHUP)) {
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        return fail(c, std::string("connect: ") + std::strerror(err ? err : ECONNREFUSED));
      }
      if (ev & EPOLLOUT) on_connected(c);
      if (c.phase == Phase::Dead) return;
    } else if ((ev & EPOLLOUT) && c.in_flight && c.sent < c.request->size()) {
      send_request(c);
      if (c.phase == Phase::Dead) return;
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) receive(c, resend);
  }

  void receive(Conn& c, bool resend) {
    char buf[16384];
    for (;;) {
      ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n < 0) return fail(c, std::string("recv: ") + std::strerror(errno));
      if (n == 0) return fail(c, "server closed the connection");
      if (!c.in_flight) return fail(c, "unsolicited bytes from the server");
      c.got.append(buf, static_cast<std::size_t>(n));
      if (!complete(c)) continue;
      if (c.phase == Phase::Dead) return;
      i64 t = now_ns();
      c.in_flight = false;
      c.phase = Phase::Established;
      if (counting) {
        if (c.is_hog) ++hog_replies;
        else { ++replies; latencies.push_back(t - c.sent_at); }
      }
      if (resend) send_request(c);
      if (c.phase == Phase::Dead || !c.in_flight) return;
    }
  }

  // True when c's reply is complete (and validates it: a wrong reply kills the connection).
  bool complete(Conn& c) {
    const std::string& m = *c.request;
    if (c.reply == Reply::FixedLength) {
      if (c.got.size() < m.size()) return false;
      bool same = c.got.size() == m.size();
      for (std::size_t i = 0; same && i < m.size(); ++i)
        same = std::toupper(static_cast<unsigned char>(c.got[i])) == std::toupper(static_cast<unsigned char>(m[i]));
      if (!same) fail(c, "reply differs from the request (got " + std::to_string(c.got.size()) + " bytes: '" +
                             c.got.substr(0, 40) + "')");
      return true;
    }
    auto nl = c.got.find('\n');
    if (nl == std::string::npos) return false;
    if (nl + 1 != c.got.size()) fail(c, "more than one reply line to one request");
    return true;
  }

  void expire_timeouts() {
    i64 t = now_ns();
    if (t - last_timeout_scan_ < 100'000'000) return;
    last_timeout_scan_ = t;
    i64 limit = static_cast<i64>(o_.timeout * 1e9);
    for (auto& c : conns_)
      if (c->phase != Phase::Dead && (c->in_flight || !c->connected) && c->fd >= 0 && t - c->sent_at > limit)
        fail(*c, c->connected ? "no reply within --timeout" : "connect did not complete within --timeout");
  }

  const Options& o_;
  sockaddr_storage addr_{};
  socklen_t addrlen_ = 0;
  int ep_ = -1;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::vector<epoll_event> events_ = std::vector<epoll_event>(4096);
  i64 last_timeout_scan_ = 0;
  std::size_t dead_ = 0;
};

// Establishes every connection: handshake plus one full exchange, at most `inflight` at a time.
// Returns the number established; the rest are counted as errors.
long establish(Runner& r, const Options& o) {
  auto& cs = r.conns();
  std::size_t next = 0;
  i64 deadline = now_ns() + static_cast<i64>(o.connect_timeout * 1e9);
  std::size_t pending = 0;
  for (;;) {
    pending = 0;
    for (auto& c : cs) pending += c->phase == Phase::Connecting && c->fd >= 0;
    while (next < cs.size() && pending < static_cast<std::size_t>(o.connect_inflight)) {
      r.start_connect(*cs[next++]);
      ++pending;
    }
    if (next == cs.size() && pending == 0) break;
    if (now_ns() >= deadline) break;
    r.poll_once(deadline, /*resend=*/false);
  }
  long ok = 0;
  for (auto& c : cs) {
    if (c->phase == Phase::Established) { ++ok; continue; }
    if (c->phase == Phase::Connecting) r.fail(*c, "connection not established within --connect-timeout");
  }
  return ok;
}

struct Percentiles {
  double p50 = 0, p99 = 0, max = 0;
};
Percentiles percentiles(std::vector<i64>& v) {
  Percentiles p;
  if (v.empty()) return p;
  auto at = [&](double q) {
    auto k = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1));
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
    return static_cast<double>(v[k]) / 1000.0;
  };
  p.p50 = at(0.50);
  p.p99 = at(0.99);
  p.max = static_cast<double>(*std::max_element(v.begin(), v.end())) / 1000.0;
  return p;
}

int run_pingpong(const Options& o) {
  Runner r(o);
  std::string msg;
  for (long i = 0; i < o.size; ++i) msg.push_back(static_cast<char>('a' + i % 26));
  msg.push_back('\n');
  for (long i = 0; i < o.connections; ++i) r.add(&msg, Reply::FixedLength);
  long ok = establish(r, o);
  if (ok == 0) {
    std::printf("mode=pingpong conns=%ld established=0 requests=0 seconds=0 rps=0 p50_us=0 p99_us=0 errors=%lld\n",
                o.connections, r.errors);
    std::fprintf(stderr, "loadgen: no connection could be established: %s\n", r.first_error.c_str());
    return 1;
  }

  // Warm-up: everyone sends at once, nothing counted.
  for (auto& c : r.conns()) r.send_request(*c);
  i64 warm_end = now_ns() + static_cast<i64>(o.warmup * 1e9);
  while (now_ns() < warm_end) r.poll_once(warm_end, true);

  // Measured window. Replies to requests sent during warm-up complete inside it and count: the
  // pipeline stays full, which is the steady state being measured.
  std::vector<long> tree;
  double cpu0 = 0;
  if (o.server_pid) {
    tree = process_tree(o.server_pid);
    cpu0 = tree_cpu_seconds(tree);
  }
  r.latencies.reserve(1 << 20);
  r.counting = true;
  i64 t0 = now_ns();
  i64 end = t0 + static_cast<i64>(o.duration * 1e9);
  while (now_ns() < end && (o.requests == 0 || r.replies < o.requests) && r.dead() < r.conns().size())
    r.poll_once(end, true);
  r.counting = false;
  i64 t1 = now_ns();
  double cpu1 = 0;
  if (o.server_pid) {
    // Processes forked during the window (none in a steady closed loop) ran only inside it.
    std::unordered_set<long> known(tree.begin(), tree.end());
    for (long p : process_tree(o.server_pid))
      if (known.insert(p).second) tree.push_back(p);
    cpu1 = tree_cpu_seconds(tree);
  }
  double secs = static_cast<double>(t1 - t0) / 1e9;

  auto p = percentiles(r.latencies);
  double rps = static_cast<double>(r.replies) / secs;
  std::printf("mode=pingpong conns=%ld established=%ld requests=%lld seconds=%.3f rps=%.1f p50_us=%.1f "
              "p99_us=%.1f max_us=%.1f errors=%lld",
              o.connections, ok, r.replies, secs, rps, p.p50, p.p99, p.max, r.errors);
  if (o.server_pid) {
    double cpu = cpu1 - cpu0;
    std::printf(" server_procs=%zu server_cpu_s=%.3f req_per_cpu_s=%.1f", tree.size(), cpu,
                cpu > 0 ? static_cast<double>(r.replies) / cpu : 0.0);
  }
  std::printf("\n");
  std::fflush(stdout);
  if (r.errors) std::fprintf(stderr, "loadgen: %lld connection errors; first: %s\n", r.errors, r.first_error.c_str());
  r.close_all();
  return 0;
}

int run_idle(const Options& o) {
  Runner r(o);
  std::string msg = "idle\n";
  std::vector<long> tree;
  long long rss0 = 0;
  if (o.server_pid) {
    tree = process_tree(o.server_pid);
    rss0 = tree_rss_kb(tree);
  }
  for (long i = 0; i < o.connections; ++i) r.add(&msg, Reply::FixedLength);
  long ok = establish(r, o);
  i64 t0 = now_ns();
  i64 settle_end = t0 + static_cast<i64>(o.settle * 1e9);
  while (now_ns() < settle_end) r.poll_once(settle_end, false);
  long long rss1 = 0;
  if (o.server_pid) {
    tree = process_tree(o.server_pid);
    rss1 = tree_rss_kb(tree);
  }
  i64 end = t0 + static_cast<i64>(std::max(o.duration, o.settle) * 1e9);
  while (now_ns() < end) r.poll_once(end, false);
  long alive = static_cast<long>(r.count(Phase::Established));
  std::printf("mode=idle conns=%ld established=%ld alive=%ld seconds=%.3f errors=%lld", o.connections, ok, alive,
              static_cast<double>(now_ns() - t0) / 1e9, r.errors);
  if (o.server_pid)
    std::printf(" server_procs=%zu rss0_kb=%lld rss_idle_kb=%lld bytes_per_conn=%.0f", tree.size(), rss0, rss1,
                ok ? static_cast<double>(rss1 - rss0) * 1024.0 / static_cast<double>(ok) : 0.0);
  std::printf("\n");
  std::fflush(stdout);
  if (r.errors) std::fprintf(stderr, "loadgen: %lld connection errors; first: %s\n", r.errors, r.first_error.c_str());
  r.close_all();
  return 0;
}

int run_rate_probe(const Options& o) {
  Runner r(o);
  std::string probe = o.probe_line + "\n";
  std::string hog = std::to_string(o.hog) + "\n";
  Conn* hc = o.hog >= 0 ? &r.add(&hog, Reply::Line, /*hog=*/true) : nullptr;
  r.add(&probe, Reply::Line);
  // The hog starts first and its first reply is not awaited (it may take long: that is the point).
  if (hc) r.start_connect(*hc);
  i64 deadline = now_ns() + static_cast<i64>(o.connect_timeout * 1e9);
  Conn& pc = *r.conns().back();
  r.start_connect(pc);
  while (pc.phase == Phase::Connecting && pc.fd >= 0 && now_ns() < deadline) r.poll_once(deadline, hc != nullptr);
  if (pc.phase != Phase::Established) {
    std::printf("mode=rate-probe hog=%ld requests=0 seconds=0 rps=0 errors=%lld\n", o.hog, r.errors + 1);
    std::fprintf(stderr, "loadgen: the probe connection could not be established: %s\n", r.first_error.c_str());
    return 1;
  }
  // From here every completed exchange (probe or hog) immediately sends its next request.
  r.send_request(pc);
  i64 warm_end = now_ns() + static_cast<i64>(o.warmup * 1e9);
  while (now_ns() < warm_end) r.poll_once(warm_end, true);
  r.latencies.reserve(1 << 20);
  r.counting = true;
  i64 t0 = now_ns();
  i64 end = t0 + static_cast<i64>(o.duration * 1e9);
  while (now_ns() < end && pc.phase != Phase::Dead) r.poll_once(end, true);
  r.counting = false;
  double secs = static_cast<double>(now_ns() - t0) / 1e9;
  auto p = percentiles(r.latencies);
  std::printf("mode=rate-probe hog=%ld requests=%lld seconds=%.3f rps=%.1f p50_us=%.1f p99_us=%.1f max_us=%.1f "
              "hog_replies=%lld errors=%lld\n",
              o.hog, r.replies, secs, static_cast<double>(r.replies) / secs, p.p50, p.p99, p.max, r.hog_replies,
              r.errors);
  std::fflush(stdout);
  if (r.errors) std::fprintf(stderr, "loadgen: %lld connection errors; first: %s\n", r.errors, r.first_error.c_str());
  r.close_all();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  raise_nofile(o.connections + 2);
  switch (o.mode) {
    case Options::Mode::PingPong: return run_pingpong(o);
    case Options::Mode::Idle: return run_idle(o);
    case Options::Mode::RateProbe: return run_rate_probe(o);
  }
  return 2;
}
