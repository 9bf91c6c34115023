// fib_server: "Fibonacci as a Service" (seed 000), one number per request in, fib(n) per line out.
// A request is a line, or what one read returned by itself without a newline, as the seed's server
// reads it (`recv(128)`): its requests-per-second meter sends a bare `1` and waits for the reply.
//
//   $ fib_server                      # fiber model (StreamServer) on 127.0.0.1:25000
//   $ nc localhost 25000
//   10
//   55
//
// --model=blocking  one client at a time, as the seed's first server: a second nc gets nothing
//                   until the first one leaves.
// --model=thread    an OS thread per client (the seed's threaded server).
// --model=fiber     a greenlet per client on one hub (fiberio::StreamServer). The default.
// --offload         (fiber model) compute fib on fiberio's thread pool (run_in_thread) so that one
//                   client asking for fib(40) no longer stalls every other client of the hub
//                   (n >= 20 only: a smaller fib is cheaper than the trip to a pool thread).
//
// fib is the seed's naive doubly recursive one on purpose: it is the CPU-bound work the demo is
// about (fib(40) takes a few hundred ms). n is capped (--max-n, default 45, at most 92 since fib(93)
// overflows 64 bits) so that one request cannot occupy a CPU for minutes; a stop request (Ctrl+C)
// abandons a running computation.
#include <atomic>
#include <cctype>
#include <charconv>
#include <limits>
#include <cstdint>
#include <string>
#include <string_view>

#include "demo_util.hpp"
#include "fiberio/server.hpp"
#include "fiberio/signal.hpp"
#include "fiberio/stream.hpp"
#include "fiberio/threadpool.hpp"

namespace {

constexpr std::size_t kMaxLine = 1024;
constexpr long kMaxRepresentable = 92;  // fib(93) > 2^64 - 1
// --offload ships fib(n) to the pool only from this n up: below it the computation (~30 us at 20)
// costs less than the hop to a pool thread and back, which would only slow small requests down.
constexpr int kOffloadMin = 20;

// Thrown out of fib() when a stop was requested mid-computation.
struct Cancelled {};

std::uint64_t fib(int n) {
  if (n < 2) return static_cast<std::uint64_t>(n);
  // Checking only in the upper levels of the recursion keeps the check's cost negligible while a
  // stop still interrupts fib(45) within microseconds.
  if (n >= 20 && demo::StopSignal::flag().load(std::memory_order_relaxed)) throw Cancelled{};
  return fib(n - 1) + fib(n - 2);
}

struct Request {
  int n = -1;
  std::string error;  // non-empty: reply this instead
};

Request parse_request(std::string_view line, long max_n) {
  while (!line.empty() && std::isspace(static_cast<unsigned char>(line.front()))) line.remove_prefix(1);
  while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.remove_suffix(1);
  if (line.empty()) return {-1, "error: empty request; send a number n (0 <= n <= " + std::to_string(max_n) + ")"};
  long v = 0;
  auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), v);
  bool whole = end == line.data() + line.size();
  // A number too large for a long is still a number: report it as out of range, not as garbage.
  if (ec == std::errc::result_out_of_range && whole) v = line.front() == '-' ? -1 : max_n + 1;
  else if (ec != std::errc{} || !whole) v = std::numeric_limits<long>::min();
  std::string shown(line.substr(0, 40));
  if (line.size() > 40) shown += "...";
  if (v == std::numeric_limits<long>::min()) return {-1, "error: '" + shown + "' is not a number"};
  if (v < 0) return {-1, "error: n must be >= 0, got " + shown};
  if (v > max_n)
    return {-1, "error: n must be <= " + std::to_string(max_n) + " (the naive fib of a larger n takes too long" +
                    (max_n < kMaxRepresentable ? "; see --max-n" : "; fib(93) overflows 64 bits") + "), got " + shown};
  return {static_cast<int>(v), ""};
}

std::string too_long_reply() { return "error: line too long (max " + std::to_string(kMaxLine) + " bytes)"; }

// blocking and thread models: the seed's handler, over plain sockets.
void posix_handler(demo::LineConn& conn, const std::string& peer, long max_n) {
  demo::say("Connection {}", peer);
  std::string line;
  for (;;) {
    auto st = conn.read_request(line, kMaxLine);
    if (st == demo::LineConn::Status::Eof || st == demo::LineConn::Status::Stopped) break;
    std::string reply;
    if (st == demo::LineConn::Status::TooLong) {
      reply = too_long_reply();
    } else {
      auto req = parse_request(line, max_n);
      try {
        reply = req.error.empty() ? std::to_string(fib(req.n)) : req.error;
      } catch (const Cancelled&) {
        break;
      }
    }
    if (!conn.send_all(reply + "\n")) break;
  }
  demo::say("Close {}", peer);
}

int run_posix(const std::string& model, const std::string& host, int port, long max_n) {
  auto& stop = demo::StopSignal::install();
  // The seed's listen(5) for its one-client-at-a-time server; a roomier queue for threads.
  int lfd = demo::listen_tcp(host, port, model == "blocking" ? 5 : 128);
  demo::say("fib_server (model={}) listening on {}", model, demo::bound_address(lfd));
  auto handler = [max_n](demo::LineConn& c, const std::string& peer, int) { posix_handler(c, peer, max_n); };
  if (model == "blocking") demo::serve_blocking(lfd, stop, handler);
  else demo::serve_thread_per_connection(lfd, stop, handler);
  ::close(lfd);
  demo::say("fib_server stopped");
  return 0;
}

int run_fiber(const std::string& host, int port, long max_n, bool offload) {
  auto handler = [max_n, offload](fiberio::Socket& sock, const fiberio::Address& peer) {
    demo::say("Connection {}", peer);
    demo::SocketRequests requests(sock, kMaxLine);
    try {
      while (auto r = requests.next()) {
        std::string reply;
        if (r->too_long) {
          reply = too_long_reply();
        } else if (auto req = parse_request(r->text, max_n); !req.error.empty()) {
          reply = req.error;
        } else if (offload && req.n >= kOffloadMin) {
          // Only this greenlet waits for the pool thread; the hub keeps serving everyone else.
          reply = std::to_string(fiberio::run_in_thread(fib, req.n));
        } else {
          reply = std::to_string(fib(req.n));  // runs on the hub: every other client waits
        }
        sock.sendall(reply + "\n");
      }
    } catch (const Cancelled&) {
    } catch (const std::exception& e) {
      demo::say("Close {} ({})", peer, e.what());
      return;
    }
    demo::say("Close {}", peer);
  };
  fiberio::StreamServer server(fiberio::Address(host, static_cast<std::uint16_t>(port)), handler);
  server.handle_signals(false);
  // Our own handlers also raise the cancel flag, so pool threads abandon running computations
  // instead of holding up the exit.
  auto on_stop = [&server] {
    demo::StopSignal::flag().store(true);
    server.stop();
  };
  auto h_int = fiberio::signal_handler(SIGINT, on_stop);
  auto h_term = fiberio::signal_handler(SIGTERM, on_stop);
  server.start();
  demo::say("fib_server (model=fiber{}) listening on {}", offload ? ", offload" : "", server.address());
  server.serve_forever();
  demo::say("fib_server stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  demo::Cli cli("fib_server", "Fibonacci as a service: send a number n per line, get fib(n) per line.",
                {
                    {"model", 'm', "blocking|thread|fiber", "server model (default fiber)"},
                    {"offload", 0, "", "fiber model: compute fib on the thread pool (run_in_thread)"},
                    {"host", 0, "HOST", "address to listen on (default 127.0.0.1)"},
                    {"port", 'p', "PORT", "port to listen on, 0 = any free port (default 25000)"},
                    {"max-n", 0, "N", "largest n accepted (default 45; each +1 costs ~1.6x the CPU; at most 92)"},
                });
  cli.parse(argc, argv);
  auto model = cli.get_choice("model", "fiber", {"blocking", "thread", "fiber"});
  bool offload = cli.has("offload");
  if (offload && model != "fiber") cli.fail("--offload applies to --model=fiber only");
  auto host = cli.get("host", "127.0.0.1");
  int port = static_cast<int>(cli.get_int("port", 25000, 0, 65535));
  long max_n = cli.get_int("max-n", 45, 0, kMaxRepresentable);
  try {
    return model == "fiber" ? run_fiber(host, port, max_n, offload) : run_posix(model, host, port, max_n);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fib_server: %s\n", e.what());
    return 1;
  }
}
