// faults: the fault-injection suite (issue 9). Each scenario starts a fresh fiberio StreamServer — this
// program re-executed with --serve, so its fds, memory and CPU are its own — attacks it over loopback
// from fiberio greenlets in this process, stops it with SIGTERM (graceful), and prints one markdown
// table row: the attack, what the server held and what was lost, the server's fds and RSS before and
// after, its CPU time while it should have been idle, and how it exited. Every phase is bounded.
//
//   faults [--only NAME] [--rounds R] [--soak SECONDS] [--soak-connections N] [--server-cpu C]
//
// --server-cpu pins the server to core C; pin this process elsewhere with taskset (RESULTS.md).
//
// Scenarios (all run by default; --only picks one):
//   slowloris  1,000 clients trickle one byte a second into a server with max_connections(1000); a
//              normal client asks every 100 ms: how many of its requests are answered within 2 s.
//   emfile     a server limited to 256 fds gets 1,000 connections at once, held 3 s: it must not spin
//              (CPU while refusing), and serve normally once they go.
//   reset      200 clients ask for 4 MB and reset the connection (SO_LINGER 0) after 64 KiB.
//   halfclose  500 clients send a request then shutdown(SHUT_WR): each reply must arrive in full.
//   churn      20,000 connections, 100 at a time, one exchange each.
//   stop       200 requests that take 500 ms each are in flight when the server gets SIGTERM (grace
//              5 s): every one must be answered before it exits.
//   soak       (only with --soak S) N connections (default 10,000) ping-pong for S seconds, each
//              pausing 0-2 s between requests (about N/s in all); fds and RSS sampled every 10 s.
//
// Loopback only. Exit status 1 if any scenario lost a request, leaked an fd, or the server failed.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <poll.h>
#include <dirent.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "fiberio/fiberio.hpp"

extern char** environ;

namespace {

using namespace std::chrono_literals;
using fiberio::Address;
using fiberio::Socket;
using fiberio::Stream;

// ---- the server side (--serve) ----
struct ServeOptions {
  std::size_t max_connections = 0;
  long request_timeout_ms = 60'000;
  long nofile = 0;
  long grace_ms = 1000;
  int cpu = -1;
};

// A line protocol: "big N" gets N bytes then a newline, "slow MS" gets "done" after MS milliseconds,
// anything else is echoed.
void handle(Socket& sock, const Address&) {
  Stream s(sock);
  for (;;) {
    std::string line = s.read_line(1024);
    if (line.empty()) return;  // the client closed
    std::string_view cmd = Stream::chomp(line);
    if (cmd.starts_with("big ")) {
      std::size_t n = std::strtoul(std::string(cmd.substr(4)).c_str(), nullptr, 10);
      const std::string chunk(64 * 1024, 'x');
      for (std::size_t sent = 0; sent < n; sent += chunk.size()) s.write(std::string_view(chunk).substr(0, n - sent));
      s.write("\n");
    } else if (cmd.starts_with("slow ")) {
      fiberio::sleep(std::chrono::milliseconds(std::strtol(std::string(cmd.substr(5)).c_str(), nullptr, 10)));
      s.write("done\n");
    } else {
      s.write_line(cmd);
    }
    s.flush();
  }
}

int serve(const ServeOptions& o) {
  if (o.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(o.cpu, &set);
    if (::sched_setaffinity(0, sizeof set, &set) != 0) return 4;
  }
  if (o.nofile > 0) {
    rlimit rl{static_cast<rlim_t>(o.nofile), static_cast<rlim_t>(o.nofile)};
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) return 3;
  } else {
    rlimit rl{};
    ::getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  fiberio::StreamServer server(Address("127.0.0.1", 0), handle);
  server.backlog(4096).stop_timeout(std::chrono::milliseconds(o.grace_ms));
  server.request_timeout(std::chrono::milliseconds(o.request_timeout_ms));
  if (o.max_connections) server.max_connections(o.max_connections);
  server.start();
  std::printf("port %u\n", static_cast<unsigned>(server.address().port()));
  std::fflush(stdout);
  server.serve_forever();
  auto st = server.stats();
  std::printf("stats accepted=%llu backoffs=%llu handler_errors=%llu killed=%llu evicted=%llu\n",
              static_cast<unsigned long long>(st.accepted), static_cast<unsigned long long>(st.accept_backoffs),
              static_cast<unsigned long long>(st.handler_errors), static_cast<unsigned long long>(st.killed),
              static_cast<unsigned long long>(st.evicted));
  std::fflush(stdout);
  return 0;
}

// ---- the attacking side ----
int g_server_cpu = -1;  // --server-cpu

struct Sample {
  long fds = -1;
  long rss_kb = -1;
  double cpu_s = 0;
};

Sample sample(pid_t pid) {
  Sample s;
  std::string dir = "/proc/" + std::to_string(pid);
  if (DIR* d = ::opendir((dir + "/fd").c_str())) {
    s.fds = 0;
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') ++s.fds;
    ::closedir(d);
  }
  std::ifstream status(dir + "/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) s.rss_kb = std::strtol(line.c_str() + 6, nullptr, 10);
  std::ifstream stat(dir + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), {});
  if (auto p = text.rfind(')'); p != std::string::npos) {
    std::istringstream rest(text.substr(p + 2));
    std::string f;
    unsigned long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> f; ++i) {
      if (i == 14) utime = std::stoul(f);
      if (i == 15) stime = std::stoul(f);
    }
    s.cpu_s = double(utime + stime) / double(::sysconf(_SC_CLK_TCK));
  }
  return s;
}

// One request and its reply on a fresh connection, within `limit`.
bool exchange(const Address& a, const std::string& msg, std::chrono::milliseconds limit) {
  try {
    return fiberio::with_timeout(limit, [&] {
      Socket s = Socket::tcp();
      s.connect(a);
      Stream st(s);
      st.write_line(msg);
      st.flush();
      return Stream::chomp(st.read_line(1024)) == msg;
    });
  } catch (const std::exception&) {
    return false;
  }
}

class Server {
 public:
  explicit Server(ServeOptions o) {
    o.cpu = g_server_cpu;
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);  // handler failures: counted in stats
    std::vector<std::string> args = {"faults", "--serve", "--max-connections", std::to_string(o.max_connections),
                                     "--request-timeout-ms", std::to_string(o.request_timeout_ms),
                                     "--nofile", std::to_string(o.nofile), "--grace-ms", std::to_string(o.grace_ms),
                                     "--cpu", std::to_string(o.cpu)};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int rc = ::posix_spawn(&pid_, "/proc/self/exe", &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    out_ = out[0];
    if (rc != 0) throw std::runtime_error("posix_spawn: " + std::string(std::strerror(rc)));
    std::string line = read_line(5s);
    if (line.rfind("port ", 0) != 0) throw std::runtime_error("server did not start: '" + line + "'");
    port_ = static_cast<std::uint16_t>(std::strtoul(line.c_str() + 5, nullptr, 10));
    // Served once: the server has opened all it keeps (its hub's epoll and eventfd, signal handling),
    // so the fds and RSS sampled now are its resting state.
    ready_ = exchange(address(), "ready", 5s);
    if (!ready_) throw std::runtime_error("server on port " + std::to_string(port_) + " does not answer");
    fiberio::sleep(300ms);  // and has closed that connection
  }
  ~Server() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(out_);
  }
  Address address() const { return Address("127.0.0.1", port_); }
  pid_t pid() const { return pid_; }
  // SIGTERM (a graceful stop), then its stats line and its exit; "hung" if it takes over 15 s.
  std::string stop() {
    ::kill(pid_, SIGTERM);
    std::string stats = read_line(15s);
    int status = 0;
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) return "hung";
      fiberio::sleep(10ms);
    }
    pid_ = -1;
    std::string how = WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status))
                                        : "signal " + std::to_string(WTERMSIG(status));
    return how + (stats.empty() ? "" : "; " + stats.substr(stats.find(' ') + 1));
  }

 private:
  std::string read_line(std::chrono::milliseconds limit) {
    std::string line;
    auto deadline = std::chrono::steady_clock::now() + limit;
    char c;
    while (std::chrono::steady_clock::now() < deadline) {
      try {
        fiberio::wait_read(out_, 100ms);
      } catch (const fiberio::TimeoutError&) {
        continue;
      }
      if (::read(out_, &c, 1) != 1) break;
      if (c == '\n') return line;
      line += c;
    }
    return line;
  }
  pid_t pid_ = -1;
  int out_ = -1;
  std::uint16_t port_ = 0;
  bool ready_ = false;
};

struct Row {
  Row(std::string n, std::string a) : name(std::move(n)), attack(std::move(a)) {}
  std::string name, attack, outcome;
  Sample before, after;
  std::vector<Sample> later;  // after each further, identical round (where there are some)
  double idle_cpu_s = -1;  // server CPU over a quiet second after the attack
  std::string exit;
  bool ok = true;
};

void print_header() {
  std::printf("| scenario | attack (repeated --rounds times against one server) | outcome | server fds: before → after each round | RSS KiB: before → after each round | CPU in 1 s idle after | exit |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
}

void print(const Row& r) {
  std::string fds = std::to_string(r.before.fds) + " → " + std::to_string(r.after.fds);
  std::string rss = std::to_string(r.before.rss_kb) + " → " + std::to_string(r.after.rss_kb);
  for (const Sample& s : r.later) {
    fds += " → " + std::to_string(s.fds);
    rss += " → " + std::to_string(s.rss_kb);
  }
  std::printf("| %s | %s | %s | %s | %s | %.2f s | %s |%s\n", r.name.c_str(), r.attack.c_str(), r.outcome.c_str(),
              fds.c_str(), rss.c_str(), r.idle_cpu_s, r.exit.c_str(), r.ok ? "" : " **FAILED**");
  std::fflush(stdout);
}

// The server once an attack is over and its connections are gone: its fds must come back.
Sample quiesce(Server& srv, const Sample& before) {
  Sample now;
  auto deadline = std::chrono::steady_clock::now() + 10s;
  do {
    fiberio::sleep(200ms);
    now = sample(srv.pid());
  } while (now.fds > before.fds && std::chrono::steady_clock::now() < deadline);
  return now;
}

// Checks the quiet server (no fd kept, no busy loop, still serving) and stops it.
void settle(Row& r, Server& srv) {
  if (r.after.fds < 0) r.after = quiesce(srv, r.before);
  Sample a = sample(srv.pid());
  fiberio::sleep(1s);
  r.idle_cpu_s = sample(srv.pid()).cpu_s - a.cpu_s;
  if (r.after.fds != r.before.fds) r.ok = false;
  for (const Sample& s : r.later)
    if (s.fds != r.before.fds) r.ok = false;
  if (r.idle_cpu_s > 0.2) r.ok = false;  // a busy loop
  if (!exchange(srv.address(), "still-alive", 2s)) {
    r.outcome += "; NOT serving afterwards";
    r.ok = false;
  }
  r.exit = srv.stop();
  if (r.exit.rfind("exit 0", 0) != 0) r.ok = false;
}

struct Outcome {
  std::string text;
  bool ok;
};

int g_rounds = 3;  // --rounds

// One server, the same attack g_rounds times. The first rounds warm the server's caches (fiber
// stacks, malloc arenas); later rounds must not keep needing more: RSS that grows by over 10% from
// the end of the second round (the first, with two) to the end of the last is counted as a leak.
Row rounds(const char* name, const char* attack, const ServeOptions& o, Outcome (*fn)(Server&)) {
  Row r(name, attack);
  Server srv(o);
  r.before = sample(srv.pid());
  Outcome first = fn(srv);
  r.after = quiesce(srv, r.before);
  r.outcome = first.text;
  r.ok = first.ok;
  for (int i = 2; i <= g_rounds; ++i) {
    Outcome again = fn(srv);
    r.later.push_back(quiesce(srv, r.before));
    if (again.text != first.text) r.outcome += "; round " + std::to_string(i) + ": " + again.text;
    r.ok &= again.ok;
  }
  // Warm-up may take two rounds (the second can touch a little more); from then on RSS must stay put.
  const Sample& warm = r.later.size() >= 2 ? r.later.front() : r.after;
  if (!r.later.empty() && r.later.back().rss_kb > warm.rss_kb + warm.rss_kb / 10) r.ok = false;
  settle(r, srv);
  return r;
}

Outcome attack_slowloris(Server& srv) {
  std::atomic<int> held{0};
  fiberio::Group attackers;
  auto until = std::chrono::steady_clock::now() + 20s;
  for (int i = 0; i < 1000; ++i)
    attackers.spawn([&] {
      try {
        Socket s = Socket::tcp();
        s.connect(srv.address());
        ++held;
        while (std::chrono::steady_clock::now() < until) {
          s.sendall("a");
          fiberio::sleep(1s);
        }
      } catch (const std::exception&) {
      }
    });
  int asked = 0, answered = 0;
  fiberio::sleep(1s);  // the slow clients are in
  while (std::chrono::steady_clock::now() < until - 1s) {
    ++asked;
    answered += exchange(srv.address(), "normal " + std::to_string(asked), 2s);
    fiberio::sleep(100ms);
  }
  attackers.join();
  return {"normal client answered " + std::to_string(answered) + "/" + std::to_string(asked) +
              "; slow clients that got in: " + std::to_string(held.load()), answered == asked};
}

Outcome attack_emfile(Server& srv) {
  std::vector<Socket> conns;
  int refused = 0;
  for (int i = 0; i < 1000; ++i) {
    try {
      Socket s = Socket::tcp();
      s.connect(srv.address(), 2s);
      conns.push_back(std::move(s));
    } catch (const std::exception&) {
      ++refused;
    }
  }
  Sample a = sample(srv.pid());
  fiberio::sleep(3s);
  double storm_cpu = sample(srv.pid()).cpu_s - a.cpu_s;
  conns.clear();
  return {std::to_string(1000 - refused) + " connected (the backlog holds what the server cannot accept); server CPU " +
              std::to_string(storm_cpu).substr(0, 4) + " s over the 3 s at the limit", storm_cpu < 0.5};
}

Outcome attack_reset(Server& srv) {
  std::atomic<int> done{0};
  fiberio::Group g;
  for (int i = 0; i < 200; ++i)
    g.spawn([&] {
      try {
        Socket s = Socket::tcp();
        s.connect(srv.address());
        s.sendall("big 4000000\n");
        char buf[4096];
        std::size_t got = 0;
        while (got < 64 * 1024) got += s.recv(buf);
        s.set_linger(0s);
        s.close();
        ++done;
      } catch (const std::exception&) {
      }
    });
  g.join();
  return {std::to_string(done.load()) + "/200 reset mid-reply", done == 200};
}

Outcome attack_halfclose(Server& srv) {
  std::atomic<int> complete{0};
  fiberio::Group g;
  for (int i = 0; i < 500; ++i)
    g.spawn([&, i] {
      try {
        fiberio::with_timeout(10s, [&] {
          Socket s = Socket::tcp();
          s.connect(srv.address());
          std::string msg = "half " + std::to_string(i) + std::string(1000, 'h');
          s.sendall(msg + "\n");
          s.shutdown(fiberio::ShutdownHow::Write);
          std::string got;
          char buf[4096];
          while (std::size_t n = s.recv(buf)) got.append(buf, n);
          if (got == msg + "\n") ++complete;
        });
      } catch (const std::exception&) {
      }
    });
  g.join();
  return {"replies complete " + std::to_string(complete.load()) + "/500, lost " + std::to_string(500 - complete.load()), complete == 500};
}

Outcome attack_churn(Server& srv) {
  std::atomic<int> next{0}, ok{0};
  auto t0 = std::chrono::steady_clock::now();
  fiberio::Group g;
  for (int w = 0; w < 100; ++w)
    g.spawn([&] {
      for (int i; (i = next++) < 20000;) ok += exchange(srv.address(), "churn " + std::to_string(i), 5s);
    });
  g.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return {"answered " + std::to_string(ok.load()) + "/20000 in " + std::to_string(secs).substr(0, 4) + " s, lost " +
              std::to_string(20000 - ok.load()), ok == 20000};
}

Row stop_in_flight() {
  Row r("stop", "200 requests of 500 ms in flight, then SIGTERM (grace 5 s)");
  ServeOptions o;
  o.grace_ms = 5000;
  Server srv(o);
  r.before = sample(srv.pid());
  std::atomic<int> sent{0}, answered{0};
  fiberio::Group g;
  for (int i = 0; i < 200; ++i)
    g.spawn([&] {
      try {
        fiberio::with_timeout(10s, [&] {
          Socket s = Socket::tcp();
          s.connect(srv.address());
          Stream st(s);
          st.write_line("slow 500");
          st.flush();
          ++sent;
          if (Stream::chomp(st.read_line(64)) == "done") ++answered;
        });
      } catch (const std::exception&) {
      }
    });
  for (auto until = std::chrono::steady_clock::now() + 10s; sent < 200 && std::chrono::steady_clock::now() < until;)
    fiberio::sleep(5ms);
  fiberio::sleep(100ms);  // every request has reached its handler
  r.after = r.before;     // the server exits: no after-sample
  auto t0 = std::chrono::steady_clock::now();
  r.exit = srv.stop();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  g.join();
  r.outcome = "answered " + std::to_string(answered.load()) + "/200, lost " + std::to_string(200 - answered.load()) +
              "; server exited " + std::to_string(secs).substr(0, 4) + " s after SIGTERM";
  r.ok = answered == 200 && r.exit.rfind("exit 0", 0) == 0;
  r.idle_cpu_s = 0;
  return r;
}

Row soak(int seconds, int connections) {
  Row r("soak", std::to_string(connections) + " connections ping-pong for " + std::to_string(seconds) +
                    " s, 0-2 s between requests");
  Server srv(ServeOptions{});
  r.before = sample(srv.pid());
  std::atomic<long> requests{0}, failures{0};
  std::atomic<bool> running{true};
  fiberio::Group g;
  for (int i = 0; i < connections; ++i) {
    g.spawn([&, i] {
      std::minstd_rand rng(static_cast<unsigned>(i));
      try {
        Socket s = Socket::tcp();
        s.connect(srv.address(), 10s);
        Stream st(s);
        std::string msg = "soak " + std::to_string(i);
        while (running) {
          st.write_line(msg);
          st.flush();
          if (Stream::chomp(fiberio::with_timeout(10s, [&] { return st.read_line(64); })) != msg) {
            ++failures;
            return;
          }
          ++requests;
          fiberio::sleep(std::chrono::milliseconds(rng() % 2000));
        }
      } catch (const std::exception&) {
        ++failures;
      }
    });
    if (i % 500 == 499) fiberio::sleep(50ms);  // connect in waves: loopback's SYN backlog
  }
  Sample peak = sample(srv.pid()), first{}, last{};
  for (int t = 0; t < seconds; t += 10) {
    fiberio::sleep(10s);
    Sample now = sample(srv.pid());
    if (t == 0) first = now;
    last = now;
    if (now.rss_kb > peak.rss_kb) peak = now;
    std::fprintf(stderr, "soak: %3d s, %ld requests, %ld failures, server fds %ld, RSS %ld KiB\n", t + 10,
                 requests.load(), failures.load(), now.fds, now.rss_kb);
  }
  running = false;
  g.join();
  r.outcome = std::to_string(requests.load()) + " requests, " + std::to_string(failures.load()) +
              " failed; server RSS " + std::to_string(first.rss_kb) + " KiB after 10 s, " + std::to_string(last.rss_kb) +
              " KiB at the end (peak " + std::to_string(peak.rss_kb) + "), fds " + std::to_string(last.fds);
  // Memory in use at steady state must not creep: at most 10% above where it was after 10 s.
  r.ok = failures == 0 && last.rss_kb <= first.rss_kb + first.rss_kb / 10;
  settle(r, srv);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0] == "--serve") {
    ServeOptions o;
    for (std::size_t i = 1; i + 1 < args.size(); i += 2) {
      long v = std::strtol(args[i + 1].c_str(), nullptr, 10);
      if (args[i] == "--max-connections") o.max_connections = static_cast<std::size_t>(v);
      else if (args[i] == "--request-timeout-ms") o.request_timeout_ms = v;
      else if (args[i] == "--nofile") o.nofile = v;
      else if (args[i] == "--grace-ms") o.grace_ms = v;
      else if (args[i] == "--cpu") o.cpu = static_cast<int>(v);
    }
    try {
      return serve(o);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "faults --serve: %s\n", e.what());
      return 1;
    }
  }
  std::string only;
  int soak_seconds = 0, soak_connections = 10000;
  for (std::size_t i = 0; i < args.size(); ++i) {
    bool has = i + 1 < args.size();
    if (args[i] == "--only" && has) only = args[++i];
    else if (args[i] == "--soak" && has) soak_seconds = std::atoi(args[++i].c_str());
    else if (args[i] == "--soak-connections" && has) soak_connections = std::atoi(args[++i].c_str());
    else if (args[i] == "--server-cpu" && has) g_server_cpu = std::atoi(args[++i].c_str());
    else if (args[i] == "--rounds" && has) g_rounds = std::max(1, std::atoi(args[++i].c_str()));
    else {
      std::fprintf(stderr, "faults: unknown option %s (usage: faults [--only NAME] [--rounds R] [--soak SECONDS] [--soak-connections N] [--server-cpu C])\n",
                   args[i].c_str());
      return 2;
    }
  }
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &rl);

  ServeOptions slow_guard;  // what slowloris meets: a connection limit and a request deadline
  slow_guard.max_connections = 1000;
  slow_guard.request_timeout_ms = 5000;
  ServeOptions few_fds;
  few_fds.nofile = 256;
  const std::pair<const char*, std::function<Row()>> scenarios[] = {
      {"slowloris", [&] { return rounds("slowloris", "1,000 clients send 1 byte/s for 20 s; max_connections 1000, request_timeout 5 s", slow_guard, attack_slowloris); }},
      {"emfile", [&] { return rounds("emfile", "1,000 connections at once, held 3 s, against RLIMIT_NOFILE 256", few_fds, attack_emfile); }},
      {"reset", [] { return rounds("reset", "200 clients ask for 4 MB, read 64 KiB, then reset (SO_LINGER 0)", {}, attack_reset); }},
      {"halfclose", [] { return rounds("halfclose", "500 clients send one request, then shutdown(SHUT_WR), read to EOF", {}, attack_halfclose); }},
      {"churn", [] { return rounds("churn", "20,000 connections, 100 at a time, one exchange each", {}, attack_churn); }},
      {"stop", stop_in_flight}};
  bool all_ok = true, ran = false;
  print_header();
  try {
    for (auto& [name, run] : scenarios) {
      if (!only.empty() && only != name) continue;
      if (only.empty() && soak_seconds > 0) break;  // --soak alone runs only the soak
      ran = true;
      Row r = run();
      print(r);
      all_ok &= r.ok;
    }
    if (soak_seconds > 0 && (only.empty() || only == "soak")) {
      ran = true;
      Row r = soak(soak_seconds, soak_connections);
      print(r);
      all_ok &= r.ok;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "faults: %s\n", e.what());
    return 1;
  }
  if (!ran) {
    std::fprintf(stderr, "faults: no scenario named '%s'\n", only.c_str());
    return 2;
  }
  return all_ok ? 0 : 1;
}
