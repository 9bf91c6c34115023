// fiber_client: the demo driver. Spawns N concurrent client greenlets against any of the demo servers.
//
//   fiber_client --port 25000 -c 3 --line 10     each client sends "10", prints the reply line
//   fiber_client --port 20446 --script lines.txt each client sends every line of the file in turn
//   fiber_client --port 5000 -c 3                no lines: each client just reads the server's one
//                                                line (counter_server) — seed 003's concurrent gevent
//                                                requests, showing the race
//   fiber_client --port 25000 --rate -c 2        seed 000's meter: each client loops send/recv, and
//                                                every second the total requests/s is printed,
//                                                for --duration seconds
//   fiber_client --port 8000 -c 10 --http /io    seed 001's load.sh: each client GETs the path
//                                                (http_server) and prints its start and end time
//                                                and the response body
//
// Replies are printed as "[client i] reply"; then "took N ms". The exit code is 1 if any client failed
// (connection refused, reset, timeout, server closed early), 2 for bad arguments.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>
#include <vector>

#include "demo_util.hpp"
#include "fiberio/dns.hpp"
#include "fiberio/greenlet.hpp"
#include "fiberio/stream.hpp"
#include "fiberio/time.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kMaxReply = 1024 * 1024;

struct Config {
  std::string host;
  std::uint16_t port = 0;
  int clients = 1;
  std::vector<std::string> lines;  // empty: read one line, send nothing
  std::string http_path;           // non-empty: one HTTP GET of this path instead
  std::chrono::milliseconds timeout{10000};
};

long ms_since(Clock::time_point t0) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count());
}

std::string read_reply(fiberio::Stream& s) {
  auto reply = s.read_line(kMaxReply);
  if (reply.empty()) throw std::runtime_error("the server closed the connection before replying");
  return std::string(fiberio::Stream::chomp(reply));
}

// One HTTP/1.1 GET with "Connection: close": the response is everything up to EOF.
void http_get(const Config& cfg, int id, Clock::time_point t0) {
  long start = ms_since(t0);
  auto sock = fiberio::create_connection(cfg.host, cfg.port, cfg.timeout);
  fiberio::Stream s(sock);
  s.write(fmt::format("GET {} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\n\r\n", cfg.http_path, cfg.host, cfg.port));
  s.flush();
  auto status = std::string(fiberio::Stream::chomp(s.read_line(kMaxReply)));
  if (status.empty()) throw std::runtime_error("the server closed the connection before replying");
  while (!fiberio::Stream::chomp(s.read_line(kMaxReply)).empty()) {
  }
  std::string body;
  for (std::string part; !(part = s.read_line(kMaxReply)).empty();) body += part;
  demo::say("[client {}] start +{} ms, end +{} ms: {} | {}", id, start, ms_since(t0), status, fiberio::Stream::chomp(body));
}

// One client conversation; returns normally or throws what went wrong.
void converse(const Config& cfg, int id, Clock::time_point t0) {
  if (!cfg.http_path.empty()) return http_get(cfg, id, t0);
  auto sock = fiberio::create_connection(cfg.host, cfg.port, cfg.timeout);
  fiberio::Stream s(sock);
  if (cfg.lines.empty()) {
    demo::say("[client {}] {}", id, read_reply(s));
    return;
  }
  for (const auto& line : cfg.lines) {
    s.write_line(line);
    s.flush();
    demo::say("[client {}] {}", id, read_reply(s));
  }
}

// Runs body(id) in `clients` greenlets.
template <class Body>
std::vector<fiberio::Greenlet<void>> spawn_clients(const Config& cfg, Body body) {
  std::vector<fiberio::Greenlet<void>> gs;
  for (int i = 1; i <= cfg.clients; ++i) gs.push_back(fiberio::spawn(body, i));
  return gs;
}

std::string message(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return fiberio::describe_exception(e);
  }
}

// Waits for the clients; prints each failure; returns how many failed (a kill is not a failure).
int collect(std::vector<fiberio::Greenlet<void>>& gs) {
  int failed = 0;
  for (std::size_t i = 0; i < gs.size(); ++i) {
    gs[i].join();
    if (gs[i].successful() || gs[i].killed()) continue;
    ++failed;
    std::fprintf(stderr, "[client %zu] error: %s\n", i + 1, message(gs[i].exception()).c_str());
  }
  return failed;
}

int run_once(const Config& cfg) {
  auto t0 = Clock::now();
  auto gs = spawn_clients(cfg, [&cfg, t0](int id) { converse(cfg, id, t0); });
  int failed = collect(gs);
  demo::say("took {} ms ({} clients, {} failed)", ms_since(t0), cfg.clients, failed);
  return failed ? 1 : 0;
}

// Seed 000's requests/s meter. All clients run on this one hub, so the counters need no lock. With
// several clients each one's share is printed too: it shows who starves under which server model.
int run_rate(const Config& cfg, std::chrono::seconds duration) {
  std::vector<long> counts(static_cast<std::size_t>(cfg.clients) + 1, 0);  // [0]: unused
  long total = 0;
  auto t0 = Clock::now();
  auto gs = spawn_clients(cfg, [&](int id) {
    auto sock = fiberio::create_connection(cfg.host, cfg.port, cfg.timeout);
    fiberio::Stream s(sock);
    for (std::size_t i = 0;; i = (i + 1) % cfg.lines.size()) {  // until killed at the deadline
      s.write_line(cfg.lines[i]);
      s.flush();
      read_reply(s);
      ++counts[static_cast<std::size_t>(id)];
    }
  });
  auto deadline = t0 + duration;
  for (int sec = 1; Clock::now() < deadline; ++sec) {
    fiberio::sleep(std::min(t0 + std::chrono::seconds(sec), deadline) - Clock::now());
    long sum = 0;
    std::string each;
    for (std::size_t i = 1; i < counts.size(); ++i) {
      sum += counts[i];
      each += " " + std::to_string(counts[i]);
      counts[i] = 0;
    }
    if (cfg.clients > 1) demo::say("{} reqs/sec (per client:{})", sum, each);
    else demo::say("{} reqs/sec", sum);
    total += sum;
    if (std::all_of(gs.begin(), gs.end(), [](auto& g) { return g.dead(); })) break;  // all failed
  }
  fiberio::killall(gs);
  int failed = collect(gs);
  long ms = ms_since(t0);
  demo::say("took {} ms ({} clients, {} requests, {} reqs/sec on average, {} failed)", ms, cfg.clients, total,
            total * 1000 / std::max(1L, ms), failed);
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  demo::Cli cli("fiber_client", "Runs N concurrent client greenlets against a demo server (line protocol, or one HTTP GET each).",
                {
                    {"host", 0, "HOST", "server host (default 127.0.0.1)"},
                    {"port", 'p', "PORT", "server port (required)"},
                    {"clients", 'c', "N", "concurrent clients (default 1)"},
                    {"line", 'l', "TEXT", "request line each client sends (repeatable)"},
                    {"script", 's', "FILE", "send each line of FILE in turn"},
                    {"rate", 'r', "", "loop send/recv, print requests per second every second"},
                    {"http", 0, "PATH", "one HTTP GET of PATH per client instead of lines (http_server)"},
                    {"duration", 'd', "S", "--rate: run for S seconds (default 5)"},
                    {"timeout", 't', "S", "connect and per-reply timeout in seconds (default 10)"},
                });
  cli.parse(argc, argv);
  Config cfg;
  cfg.host = cli.get("host", "127.0.0.1");
  if (!cli.has("port")) cli.fail("--port is required");
  cfg.port = static_cast<std::uint16_t>(cli.get_int("port", 0, 1, 65535));
  cfg.clients = static_cast<int>(cli.get_int("clients", 1, 1, 10000));
  cfg.timeout = std::chrono::seconds(cli.get_int("timeout", 10, 1, 3600));
  for (const auto& l : cli.get_all("line")) cfg.lines.push_back(l);
  if (cli.has("script")) {
    std::ifstream in(cli.get("script", ""));
    if (!in) cli.fail("cannot read script file '" + cli.get("script", "") + "'");
    for (std::string l; std::getline(in, l);) {
      if (!l.empty() && l.back() == '\r') l.pop_back();
      cfg.lines.push_back(l);
    }
    if (cfg.lines.empty()) cli.fail("script file '" + cli.get("script", "") + "' has no lines");
  }
  for (const auto& l : cfg.lines)
    if (l.find('\n') != std::string::npos) cli.fail("a request line cannot contain a newline");
  bool rate = cli.has("rate");
  cfg.http_path = cli.get("http", "");
  if (cli.has("http") && (rate || !cfg.lines.empty())) cli.fail("--http cannot be combined with --rate, --line or --script");
  if (cli.has("http") && !cfg.http_path.starts_with("/")) cli.fail("--http takes a path starting with '/'");
  auto duration = std::chrono::seconds(cli.get_int("duration", 5, 1, 3600));
  if (rate && cfg.lines.empty()) cfg.lines.push_back("1");  // the seed's meter sends "1"
  // Failed clients are reported by collect(), once, as "[client i] error: ...".
  fiberio::set_error_handler([](const fiberio::GreenletBase&, std::exception_ptr) {});
  try {
    return rate ? run_rate(cfg, duration) : run_once(cfg);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fiber_client: %s\n", e.what());
    return 1;
  }
}
