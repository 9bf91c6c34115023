// counter_server: the connection counter of seed 003, which shows a race condition and its fix.
//
//   $ counter_server --model=thread &
//   $ nc localhost 5000
//   <1, took 2.1 ms>
//
// Each connection's handler reads the shared counter n, simulates request processing, then stores
// n + 1 and answers "<n, took X ms>" (X: time from the handler's start, lock wait included).
// Between the read and the write other clients' handlers may run: under --model=thread because threads
// are preempted, under --model=fiber because the processing yields cooperatively (as a database call
// would). Concurrent clients then get the SAME n back: the lost-update race. --lock makes the
// read-modify-write atomic (std::mutex for threads, fiberio::Lock for greenlets) and the race is gone.
// --model=naive handles one connection at a time, so it never races (and never overlaps anything).
#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>

#include "demo_util.hpp"
#include "fiberio/server.hpp"
#include "fiberio/sync.hpp"
#include "fiberio/time.hpp"

namespace {

struct Config {
  std::string model;
  bool lock = false;
  long work = 20'000'000;  // busy-loop iterations: about the 17 ms of the seed's 1M Python iterations
  long delay_ms = 0;      // extra simulated I/O inside the window
};

// Relaxed loads and stores, not a fetch_add: the read-modify-write is deliberately NOT atomic (that is
// the demo's race), but each access is, so the race is a lost update rather than undefined behaviour.
std::atomic<long> g_counter{0};

// The seed's "simulate request processing". The fiber model yields every so often, as real request
// processing would at each I/O; a greenlet that never yields cannot be interleaved.
// stop_fd >= 0 (POSIX models): the stop pipe, so Ctrl+C cuts a long simulated request short.
void process(const Config& cfg, bool cooperative, int stop_fd) {
  volatile long sink = 0;
  for (long i = 0; i < cfg.work; ++i) {
    sink = sink + 1;
    if ((i & 0xFFFF) == 0xFFFF) {
      if (cooperative) fiberio::yield();
      else if (demo::StopSignal::flag().load(std::memory_order_relaxed)) return;
    }
  }
  if (cfg.delay_ms > 0) {
    if (cooperative) {
      fiberio::sleep(std::chrono::milliseconds(cfg.delay_ms));
    } else {
      pollfd p{stop_fd, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(cfg.delay_ms));
    }
  }
}

template <class Mutex>
long count_connection(const Config& cfg, Mutex& mu, bool cooperative, int stop_fd) {
  std::unique_lock lk(mu, std::defer_lock);
  if (cfg.lock) lk.lock();
  long tmp = g_counter.load(std::memory_order_relaxed);
  process(cfg, cooperative, stop_fd);
  g_counter.store(tmp + 1, std::memory_order_relaxed);
  return tmp + 1;
}

std::string reply(long n, std::chrono::steady_clock::time_point t0) {
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return fmt::format("<{}, took {:.1f} ms>\n", n, ms);
}

int run_posix(const Config& cfg, const std::string& host, int port) {
  auto& stop = demo::StopSignal::install();
  int lfd = demo::listen_tcp(host, port);
  demo::say("counter_server (model={}{}) listening on {}", cfg.model, cfg.lock ? ", lock" : "", demo::bound_address(lfd));
  std::mutex mu;
  auto handler = [&](demo::LineConn& conn, const std::string&, int) {
    auto t0 = std::chrono::steady_clock::now();
    long n = count_connection(cfg, mu, false, stop.fd());
    conn.send_all(reply(n, t0));
  };
  if (cfg.model == "naive") demo::serve_blocking(lfd, stop, handler);
  else demo::serve_thread_per_connection(lfd, stop, handler);
  ::close(lfd);
  demo::say("counter_server stopped");
  return 0;
}

int run_fiber(const Config& cfg, const std::string& host, int port) {
  fiberio::Lock lock;
  return demo::serve_fiber("counter_server", cfg.lock ? ", lock" : "", host, port, 1,
                           [&](fiberio::Socket& sock, const fiberio::Address&) {
                             auto t0 = std::chrono::steady_clock::now();
                             long n = count_connection(cfg, lock, true, -1);
                             sock.sendall(reply(n, t0));
                           });
}

}  // namespace

int main(int argc, char** argv) {
  demo::Cli cli("counter_server",
                "Counts connections and answers each with \"<n, took X ms>\"; shows the lost-update race.",
                {
                    {"model", 'm', "naive|thread|fiber", "server model (default fiber)"},
                    {"lock", 0, "", "guard the counter (std::mutex / fiberio::Lock): no more duplicates"},
                    {"host", 0, "HOST", "address to listen on (default 127.0.0.1)"},
                    {"port", 'p', "PORT", "port to listen on, 0 = any free port (default 5000)"},
                    {"work", 0, "N", "busy-loop iterations per request (default 20000000, ~20 ms)"},
                    {"delay", 0, "MS", "extra simulated I/O per request, in ms (default 0)"},
                });
  cli.parse(argc, argv);
  Config cfg;
  cfg.model = cli.get_choice("model", "fiber", {"naive", "thread", "fiber"});
  cfg.lock = cli.has("lock");
  cfg.work = cli.get_int("work", cfg.work, 0, 10'000'000'000L);
  cfg.delay_ms = cli.get_int("delay", 0, 0, 60'000);
  auto host = cli.get("host", "127.0.0.1");
  int port = static_cast<int>(cli.get_int("port", 5000, 0, 65535));
  try {
    return cfg.model == "fiber" ? run_fiber(cfg, host, port) : run_posix(cfg, host, port);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "counter_server: %s\n", e.what());
    return 1;
  }
}
