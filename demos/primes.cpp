// primes: seed 003's CPU-bound exercise. calc_primes(end, workers) finds the primes below `end`,
// split into `workers` contiguous chunks, three ways, each timed with 1 worker and with N (default 5):
//
//   greenlet   each chunk in its own greenlet on this thread's hub. No speed-up: one hub runs one
//              greenlet at a time, on one core (the seed's GIL lesson, without a GIL).
//   threads    each chunk's greenlet hands it to a fiberio::ThreadPool of N OS threads (ThreadPool::
//              apply): real parallelism, up to the number of cores.
//   processes  each chunk's greenlet fork()s a child that computes it and writes the primes back
//              through a pipe, which the greenlet reads cooperatively (fiberio::wait_read).
//
//   $ primes --end 5000000 --workers 5
//
// The seed asks what Ctrl+C does to a run ("did it work?"). Here it works in every mode, and the demo
// says how: greenlets are killed at their next yield (the computing loop yields every few thousand
// numbers, or nothing else, not even the signal handler, could run on the hub); pool threads cannot be
// killed, so they poll a stop flag and return early, and only then do their greenlets' kills take
// effect (ThreadPool::apply waits for its task); child processes are SIGKILLed and reaped. The demo
// then exits with 130 (128 + SIGINT; 143 for SIGTERM).
//
// is_prime divides by 2 and the odd numbers up to sqrt(n). The seed's divides by everything up to
// n/2: the same answer, but end=10^6 would take hours.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "demo_util.hpp"
#include "fiberio/greenlet.hpp"
#include "fiberio/io.hpp"
#include "fiberio/signal.hpp"
#include "fiberio/threadpool.hpp"
#include "fiberio/time.hpp"

namespace {

using Primes = std::vector<std::uint32_t>;
using Seconds = std::chrono::duration<double>;

bool is_prime(std::uint32_t n) {
  if (n < 2) return false;  // the seed: "1 is special" (and 0 is no prime either)
  if (n % 2 == 0) return n == 2;
  for (std::uint64_t d = 3; d * d <= n; d += 2)
    if (n % d == 0) return false;
  return true;
}

// Set by Ctrl+C / SIGTERM: pool threads poll it (they cannot be killed).
std::atomic<bool> g_stop{false};
struct Stopped {};

// The primes in [lo, hi). `yield_every`: in a greenlet, give the hub a turn every that many numbers
// (that is where a kill lands); 0: a pool thread, which polls the stop flag instead.
Primes primes_in(std::uint32_t lo, std::uint32_t hi, std::uint32_t yield_every) {
  Primes out;
  for (std::uint32_t n = lo; n < hi; ++n) {
    if ((n & 1023) == 0) {
      if (yield_every == 0 && g_stop.load(std::memory_order_relaxed)) throw Stopped{};
      if (yield_every && n % yield_every == 0) fiberio::yield();
    }
    if (is_prime(n)) out.push_back(n);
  }
  return out;
}

// The chunk bounds: [0, end) cut into `workers` contiguous pieces.
std::vector<std::pair<std::uint32_t, std::uint32_t>> chunks(std::uint32_t end, unsigned workers) {
  std::vector<std::pair<std::uint32_t, std::uint32_t>> out;
  for (unsigned i = 0; i < workers; ++i)
    out.emplace_back(static_cast<std::uint32_t>(std::uint64_t{end} * i / workers),
                     static_cast<std::uint32_t>(std::uint64_t{end} * (i + 1) / workers));
  return out;
}

// ---- processes ----------------------------------------------------------------------------------

// A forked child computing one chunk; killed (SIGKILL) and reaped however its greenlet ends.
class Child {
 public:
  Child(std::uint32_t lo, std::uint32_t hi) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
    pid_ = ::fork();
    if (pid_ < 0) {
      int e = errno;
      ::close(p[0]);
      ::close(p[1]);
      throw std::system_error(e, std::generic_category(), "fork");
    }
    if (pid_ == 0) run_child(p[1], lo, hi);  // never returns
    ::close(p[1]);
    fd_ = p[0];
    fiberio::set_nonblocking(fd_);
  }
  ~Child() {
    if (fd_ >= 0) fiberio::close(fd_);
    if (!reaped_) {
      ::kill(pid_, SIGKILL);  // still computing (we are being killed): stop it
      ::waitpid(pid_, nullptr, 0);
      ++killed_children();
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // Reads the child's primes (the greenlet waits, the hub runs on), then reaps it.
  Primes result() {
    std::string bytes;
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n > 0) {
        bytes.append(buf, static_cast<std::size_t>(n));
      } else if (n == 0) {
        break;
      } else if (errno == EAGAIN) {
        fiberio::wait_read(fd_);
      } else if (errno != EINTR) {
        throw std::system_error(errno, std::generic_category(), "read from child");
      }
    }
    int status = 0;
    ::waitpid(pid_, &status, 0);  // it closed the pipe by exiting: this returns at once
    reaped_ = true;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || bytes.size() % sizeof(std::uint32_t) != 0)
      throw std::runtime_error(fmt::format("child {} failed (status {:#x})", pid_, status));
    Primes out(bytes.size() / sizeof(std::uint32_t));
    std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
  }

  static int& killed_children() {
    static int n = 0;
    return n;
  }

 private:
  [[noreturn]] static void run_child(int wfd, std::uint32_t lo, std::uint32_t hi) {
    ::signal(SIGINT, SIG_DFL);  // a terminal's Ctrl+C reaches the whole process group: just die
    ::signal(SIGTERM, SIG_DFL);
    // Only our own pipe stays open: a sibling's write end held here would delay its EOF.
    if (wfd > 3) ::close_range(3, static_cast<unsigned>(wfd) - 1, 0);
    ::close_range(static_cast<unsigned>(wfd) + 1, ~0U, 0);
    Primes p;
    try {
      p = primes_in(lo, hi, 0);
    } catch (...) {
      ::_exit(1);
    }
    const char* data = reinterpret_cast<const char*>(p.data());
    std::size_t left = p.size() * sizeof(std::uint32_t);
    while (left > 0) {
      ssize_t n = ::write(wfd, data, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) ::_exit(1);
      data += n;
      left -= static_cast<std::size_t>(n);
    }
    ::_exit(0);  // no atexit handlers, no hub teardown: this is the parent's copy
  }

  pid_t pid_ = -1;
  int fd_ = -1;
  bool reaped_ = false;
};

// ---- one run --------------------------------------------------------------------------------------

struct Interrupt {
  int signum = 0;
  std::chrono::steady_clock::time_point at;
  std::vector<fiberio::Greenlet<Primes>>* running = nullptr;  // the run's chunk greenlets
  unsigned workers = 0;
};
Interrupt g_interrupt;

// calc_primes(end, workers) under `model`: one greenlet per chunk, each computing it its model's way.
Primes calc_primes(const std::string& model, std::uint32_t end, unsigned workers) {
  if (g_interrupt.signum) throw Stopped{};  // it came between two runs
  std::optional<fiberio::ThreadPool> pool;
  if (model == "threads") pool.emplace(workers, fiberio::ThreadPriority::normal);
  std::vector<fiberio::Greenlet<Primes>> gs;
  for (auto [lo, hi] : chunks(end, workers)) {
    if (model == "greenlet") {
      gs.push_back(fiberio::spawn(primes_in, lo, hi, std::uint32_t{4096}));
    } else if (model == "threads") {
      gs.push_back(fiberio::spawn([&pool, lo, hi] { return pool->apply(primes_in, lo, hi, std::uint32_t{0}); }));
    } else {
      gs.push_back(fiberio::spawn([lo, hi] { return Child(lo, hi).result(); }));
    }
  }
  g_interrupt.running = &gs;
  g_interrupt.workers = workers;
  fiberio::joinall(gs);
  g_interrupt.running = nullptr;
  if (g_interrupt.signum) throw Stopped{};
  Primes all;
  for (auto& g : gs) {
    auto part = g.get();  // a failed chunk rethrows here
    all.insert(all.end(), part.begin(), part.end());
  }
  return all;
}

void on_signal(int signum) {
  if (g_interrupt.signum) return;
  g_interrupt.signum = signum;
  g_interrupt.at = std::chrono::steady_clock::now();
  g_stop = true;  // pool threads see this within ~1,000 numbers
  if (g_interrupt.running) fiberio::killall(*g_interrupt.running, /*block=*/false);
}

}  // namespace

int main(int argc, char** argv) {
  demo::Cli cli("primes",
                "Seed 003's exercise: the primes below --end with 1 and N workers, as greenlets, threads and "
                "processes.",
                {
                    {"end", 'e', "N", "find the primes below N (default 5000000)"},
                    {"workers", 'w', "N", "the parallel run's worker count, compared with 1 (default 5)"},
                    {"model", 'm', "greenlet|threads|processes|all", "which models to run (default all)"},
                    {"parallel-only", 0, "", "skip the 1-worker runs (no speed-up column then)"},
                });
  cli.parse(argc, argv);
  auto end = static_cast<std::uint32_t>(cli.get_int("end", 5000000, 0, 1000000000));
  auto workers = static_cast<unsigned>(cli.get_int("workers", 5, 1, 64));
  auto model = cli.get_choice("model", "all", {"greenlet", "threads", "processes", "all"});
  std::vector<std::string> models =
      model == "all" ? std::vector<std::string>{"greenlet", "threads", "processes"} : std::vector<std::string>{model};
  std::vector<unsigned> counts = workers == 1 || cli.has("parallel-only") ? std::vector<unsigned>{workers}
                                                                         : std::vector<unsigned>{1, workers};

  auto h_int = fiberio::signal_handler(SIGINT, [] { on_signal(SIGINT); });
  auto h_term = fiberio::signal_handler(SIGTERM, [] { on_signal(SIGTERM); });

  demo::say("calc_primes(end={}, workers=1|{}) on {} CPU cores", end, workers, std::thread::hardware_concurrency());
  demo::say("{:<10} {:>7} {:>9} {:>10} {:>9}", "model", "workers", "seconds", "primes", "speed-up");
  std::optional<std::size_t> expected;
  std::string current;
  try {
    for (auto& m : models) {
      double base = 0;
      for (unsigned w : counts) {
        current = fmt::format("{} x{}", m, w);
        auto t0 = std::chrono::steady_clock::now();
        auto primes = calc_primes(m, end, w);
        double secs = Seconds(std::chrono::steady_clock::now() - t0).count();
        if (w == counts.front()) base = secs;
        demo::say("{:<10} {:>7} {:>9.3f} {:>10} {:>8.2f}x", m, w, secs, primes.size(), secs > 0 ? base / secs : 1.0);
        if (end <= 100 && w == counts.back()) {
          std::string list;
          for (auto p : primes) list += (list.empty() ? "" : ", ") + std::to_string(p);
          demo::say("  [{}]", list);
        }
        if (expected && *expected != primes.size()) {
          std::fprintf(stderr, "primes: %s found %zu primes, but an earlier run found %zu\n", current.c_str(),
                       primes.size(), *expected);
          return 1;
        }
        expected = primes.size();
      }
    }
  } catch (const Stopped&) {
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - g_interrupt.at).count();
    const char* name = g_interrupt.signum == SIGINT ? "SIGINT" : "SIGTERM";
    std::string how;
    unsigned n = g_interrupt.workers;
    if (current.starts_with("greenlet"))
      how = fmt::format("{} greenlet(s) killed at their next yield", n);
    else if (current.starts_with("threads"))
      how = fmt::format("{} pool thread(s) cannot be killed: they saw the stop flag and returned early, then the "
                        "kills of the {} greenlet(s) waiting for them took effect",
                        n, n);
    else
      how = fmt::format("{} child process(es) killed (SIGKILL) and reaped", Child::killed_children());
    demo::say("interrupted by {} during {}: {}; everything stopped {:.1f} ms after the signal", name, current, how,
              ms);
    return 128 + g_interrupt.signum;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "primes: %s\n", e.what());
    return 1;
  }
  demo::say("every run found {} primes below {}", expected.value_or(0), end);
  return 0;
}
