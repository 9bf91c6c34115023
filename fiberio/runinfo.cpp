// Run-info dump, hub counters and hooks: see runinfo.hpp. Symbolization: libbacktrace (carried by
// Boost.Stacktrace's backtrace variant, which the blocking monitor links already), called directly
// for backtrace_pcinfo's whole chain of inlined calls: spawn() is always inlined into its caller, so
// the spawn site's return address lies in inlined fiberio code, and only the chain reaches the
// caller's own file:line.
#include "fiberio/runinfo.hpp"

#if __has_include(<backtrace.h>)
#include <backtrace.h>
#else
// GCC installs libbacktrace's header in its private include directory, where clang (the fuzzing
// build) does not look. The four declarations used here, as libbacktrace's backtrace.h gives them:
#include <cstdint>
extern "C" {
struct backtrace_state;
typedef void (*backtrace_error_callback)(void* data, const char* msg, int errnum);
typedef int (*backtrace_full_callback)(void* data, std::uintptr_t pc, const char* filename, int lineno,
                                       const char* function);
struct backtrace_state* backtrace_create_state(const char* filename, int threaded,
                                               backtrace_error_callback error_callback, void* data);
int backtrace_pcinfo(struct backtrace_state* state, std::uintptr_t pc, backtrace_full_callback callback,
                     backtrace_error_callback error_callback, void* data);
}
#endif
#include <boost/core/demangle.hpp>
#include <fcntl.h>
#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>

#include "fiberio/address.hpp"
#include "fiberio/detail/monitor.hpp"
#include "fiberio/greenlet.hpp"
#include "fiberio/hub.hpp"

namespace fiberio {
namespace detail {
constinit std::atomic<bool> g_hooks_active{false};
}

namespace {

using detail::Hub;

// ---- symbolization ----
struct Location {
  std::string function, file;
  int line = 0;
};

// One libbacktrace state for the process (it is made for one thread at a time: guarded by mu), and
// the locations found so far: a dump of 10,000 greenlets parked at the same line looks it up once.
struct Symbolizer {
  std::mutex mu;
  backtrace_state* state = nullptr;
  std::unordered_map<std::uintptr_t, std::vector<Location>> cache;
};
Symbolizer& symbolizer() {
  static auto* s = new Symbolizer;  // never destroyed: dumps may run during exit
  return *s;
}

// pc's chain of locations, innermost inlined call first, the enclosing function's last.
std::vector<Location> locate(std::uintptr_t pc) {
  auto& s = symbolizer();
  std::lock_guard lk(s.mu);
  if (auto it = s.cache.find(pc); it != s.cache.end()) return it->second;
  if (!s.state) s.state = ::backtrace_create_state(nullptr, 0, [](void*, const char*, int) {}, nullptr);
  std::vector<Location> chain;
  if (s.state)
    ::backtrace_pcinfo(
        s.state, pc,
        [](void* data, std::uintptr_t, const char* file, int line, const char* fn) -> int {
          auto* out = static_cast<std::vector<Location>*>(data);
          if (out->size() < 16) out->push_back({fn ? boost::core::demangle(fn) : std::string(), file ? file : "", line});
          return 0;
        },
        [](void*, const char*, int) {}, &chain);
  if (s.cache.size() < 100000) s.cache.emplace(pc, chain);
  return chain;
}

// fiberio's own sources (this file's directory and patched/), the C++ library's and Boost's headers:
// the dump names the first location outside them as the user's spawn or park site.
bool internal_file(const std::string& file) {
  static const std::string own = [] {
    std::string f = __FILE__;
    auto slash = f.rfind('/');
    f = f.substr(0, slash == std::string::npos ? 0 : slash);  // .../fiberio
    slash = f.rfind('/');
    return slash == std::string::npos ? std::string() : f.substr(0, slash + 1);  // the source root
  }();
  // Relative paths are the system libraries' own debug info (glibc's "./malloc/malloc.c").
  if (file.empty() || file[0] != '/') return true;
  if (file.starts_with("/usr/")) return true;
  if (!own.empty() && (file.starts_with(own + "fiberio/") || file.starts_with(own + "patched/"))) return true;
  return file.find("/fiberio/") != std::string::npos && file.find("/tests/") == std::string::npos &&
         (own.empty() || !file.starts_with(own));
}

std::string short_function(std::string f) {
  if (f.size() > 100) f = f.substr(0, 97) + "...";
  return f;
}

std::string describe_location(const Location& l) {
  std::string out = l.file.empty() ? std::string("??") : fmt::format("{}:{}", l.file, l.line);
  if (!l.function.empty()) out += fmt::format(" ({})", short_function(l.function));
  return out;
}

// The first user location among return addresses, innermost frame first; else the first known one.
std::string user_site(const std::vector<std::uintptr_t>& addrs) {
  const Location* fallback = nullptr;
  std::vector<std::vector<Location>> chains;
  chains.reserve(addrs.size());
  for (auto a : addrs) chains.push_back(locate(a - 1));
  for (auto& chain : chains)
    for (auto& l : chain) {
      if (!internal_file(l.file)) return describe_location(l);
      if (!fallback && !l.file.empty()) fallback = &l;
    }
  return fallback ? describe_location(*fallback) : std::string("unknown (no debug info?)");
}

// ---- one hub's part, collected on its own thread ----
struct GreenletInfo {
  std::uint64_t id = 0;
  std::string name;
  std::string state;  // "running", "ready", "parked", "not started"
  std::string waits;  // what a parked one waits on
  const void* spawn_site = nullptr;
  std::uint64_t spawner = 0;
  std::vector<std::uintptr_t> stack;  // a parked one's return addresses, innermost first
};

struct HubInfo {
  pid_t tid = 0;
  std::string thread_name;
  bool answered = false;
  std::string note;  // why not
  HubStats stats;
  std::vector<GreenletInfo> listed;
  std::size_t total = 0;
  std::map<std::string, std::size_t> groups;  // the others: "state waits | spawn site address" -> count
  std::unordered_map<std::uint64_t, std::string> names;  // every live greenlet's, for the spawn tree
};

std::string ms(Duration d) {
  return fmt::format("{:.1f} ms", std::chrono::duration<double, std::milli>(d).count());
}

std::string socket_addresses(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  std::string out;
  try {
    out = " (local " + Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len).to_string();
    len = sizeof ss;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0)
      out += ", peer " + Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len).to_string();
    out += ")";
  } catch (...) {
    out = " (socket)";
  }
  return out;
}

// What w's fiber waits on, and since when; on the hub's thread (w's objects are alive while it waits).
std::string describe_wait(const detail::Waiter& w, Clock::time_point now) {
  std::string out;
  bool sleep = w.what == detail::kWaitSleep;
  if (w.what == detail::kWaitRead || w.what == detail::kWaitWrite) {
    auto* st = static_cast<const detail::FdState*>(w.object);
    // A number closed since (perhaps on another thread, perhaps reused) names some other file now.
    bool gone = st->closed || st->stale();
    out = fmt::format("fd {} {}{}", st->fd, w.what, gone ? " (closed since)" : socket_addresses(st->fd));
  } else if (sleep) {
    out = "sleep";
  } else if (w.what == detail::kWaitJoin) {
    auto* g = static_cast<const GreenletBase*>(w.object);
    out = fmt::format("join on greenlet {} ({})", g->id(), g->name());
  } else {
    out = fmt::format("{} at {}", w.what, w.object);
  }
  if (w.since != Clock::time_point{}) out += ", for " + ms(now - w.since);
  if (w.deadline != detail::kNoDeadline)
    out += fmt::format(", {} in {}", sleep ? "fires" : "times out", ms(w.deadline - now));
  return out;
}

HubStats stats_of(Hub& hub, std::size_t greenlets) {
  HubStats s;
  s.switches = hub.switches();
  s.loop_iterations = hub.loop_iterations();
  s.ready = hub.ready_count();
  s.parked = hub.parked();
  s.greenlets = greenlets;
  s.poll_time = std::chrono::duration_cast<std::chrono::nanoseconds>(hub.poll_time());
  s.loop_latency = hub.loop_latency();
  return s;
}

// On hub's own thread: its fibers are all suspended (or this one).
HubInfo collect_here(Hub& hub, const RunInfoOptions& opts) {
  HubInfo info;
  info.tid = static_cast<pid_t>(::syscall(SYS_gettid));
  info.answered = true;
  auto now = Clock::now();
  auto* active = boost::fibers::context::active();
  std::unique_ptr<detail::StackScanner> scanner;
  auto stack_of = [&](const detail::Waiter* w, std::uintptr_t top) {
    if (!opts.stacks) return std::vector<std::uintptr_t>{};
    if (!scanner) scanner = std::make_unique<detail::StackScanner>();
    auto lo = reinterpret_cast<std::uintptr_t>(w);
    auto end = scanner->mapping_end(lo);
    if (!top || top <= lo) top = std::min(end, lo + 64 * 1024);
    auto found = scanner->scan(lo, std::min(end, top), 48);
    // A little above the recorded frame: the return address into the greenlet's entry sits there.
    if (top < end) {
      auto more = scanner->scan(top, std::min(end, top + 64), 4);
      found.insert(found.end(), more.begin(), more.end());
    }
    return found;
  };
  auto fill = [&](GreenletInfo& g, boost::fibers::context* ctx, bool started, std::uintptr_t top) {
    const detail::Waiter* w = nullptr;
    if (!started) g.state = "not started";
    else if (ctx == active) g.state = "running";
    else if (auto* p = ctx->get_properties(); p && (w = static_cast<detail::FiberState*>(p)->parked)) {
      g.state = "parked";
      g.waits = describe_wait(*w, now);
    } else g.state = "ready";
    return w ? stack_of(w, top) : std::vector<std::uintptr_t>{};
  };
  auto add = [&](GreenletInfo g, const detail::Waiter* parked_on, bool full) {
    (void)parked_on;
    ++info.total;
    if (full) {
      info.listed.push_back(std::move(g));
    } else {
      auto key = fmt::format("{}{}{}|{}", g.state, g.waits.empty() ? "" : " on ",
                             g.waits.substr(0, g.waits.find(" at ")).substr(0, g.waits.find(", for ")),
                             reinterpret_cast<std::uintptr_t>(g.spawn_site));
      if (info.groups.size() < 1000 || info.groups.count(key)) ++info.groups[key];
      else ++info.groups["(other)|0"];
    }
  };
  // The main fiber first, if it is not the dispatcher's caller... it is a greenlet in gevent's sense.
  if (auto* main = hub.main_context()) {
    GreenletInfo g;
    g.name = "MainGreenlet";
    g.stack = fill(g, main, true, 0);
    info.names[0] = g.name;
    add(std::move(g), nullptr, true);
  }
  std::size_t n = 0;
  detail::for_each_greenlet([&](GreenletBase& gb) {
    GreenletInfo g;
    g.id = gb.id();
    g.spawn_site = gb.spawn_site();
    g.spawner = gb.spawner();
    bool full = n++ < opts.max_greenlets;
    if (full || info.names.size() < 10000) info.names[g.id] = gb.name();
    if (full) g.name = info.names[g.id];
    auto* ctx = gb.context();
    auto stack = fill(g, ctx, ctx != nullptr, reinterpret_cast<std::uintptr_t>(gb.stack_top()));
    if (full) g.stack = std::move(stack);
    add(std::move(g), nullptr, full);
  });
  info.stats = stats_of(hub, n);
  return info;
}

std::string format_hub(const HubInfo& h, const RunInfoOptions& opts) {
  std::string out = fmt::format("Hub on thread {} ({})", h.tid, h.thread_name);
  if (!h.answered) return out + ": " + h.note + "\n";
  out += fmt::format(": {} greenlets + main; {}\n", h.stats.greenlets, h.stats.format());
  auto spawner_name = [&](std::uint64_t id) {
    if (auto it = h.names.find(id); it != h.names.end()) return fmt::format("greenlet {} ({})", id, it->second);
    return fmt::format("greenlet {} (finished, or on another thread)", id);
  };
  for (auto& g : h.listed) {
    bool main = g.name == "MainGreenlet" && g.id == 0;
    out += main ? fmt::format("  MainGreenlet (the thread's main fiber): {}", g.state)
                : fmt::format("  Greenlet {} \"{}\": {}", g.id, g.name, g.state);
    if (!g.waits.empty()) out += " on " + g.waits;
    out += "\n";
    if (!main)
      out += fmt::format("    spawned at {} by {}\n",
                         detail::describe_spawn_site(g.spawn_site),
                         spawner_name(g.spawner));
    if (!g.stack.empty()) {
      out += "    parked at " + user_site(g.stack) + "\n    stack (read from the parked fiber; a stale frame may show):\n";
      int i = 0;
      for (auto a : g.stack) {
        // One line per inlined call, leaving out those in library headers between the first and last.
        auto chain = locate(a - 1);
        if (chain.empty()) out += fmt::format("      #{:<2} 0x{:012x} ??\n", i, a);
        for (std::size_t k = 0; k < chain.size(); ++k)
          if (k == 0 || k + 1 == chain.size() || !chain[k].file.starts_with("/usr/"))
            out += fmt::format("      #{:<2} 0x{:012x} {}\n", i, a, describe_location(chain[k]));
        ++i;
      }
    }
  }
  if (h.total > h.listed.size()) {
    out += fmt::format("  ... and {} more greenlets (max_greenlets = {}), by state and spawn site:\n", h.total - h.listed.size(),
                       opts.max_greenlets);
    std::vector<std::pair<std::size_t, std::string>> groups;
    for (auto& [k, c] : h.groups) groups.emplace_back(c, k);
    std::sort(groups.begin(), groups.end(), [](auto& a, auto& b) { return a.first > b.first; });
    std::size_t shown = 0, rest = 0;
    for (auto& [c, k] : groups) {
      if (shown++ >= opts.max_groups) {
        rest += c;
        continue;
      }
      auto bar = k.rfind('|');
      auto site = std::strtoull(k.c_str() + bar + 1, nullptr, 10);
      out += fmt::format("    {} x {}, spawned at {}\n", c, k.substr(0, bar), detail::describe_spawn_site(reinterpret_cast<const void*>(site)));
    }
    if (rest) out += fmt::format("    {} more in smaller groups\n", rest);
  }
  return out;
}

// A request to another hub: answered on its thread (post_call), or abandoned.
struct Request {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  HubInfo info;
};

std::string run_info(const RunInfoOptions& opts) {
  Hub* self = Hub::get();
  std::vector<HubInfo> hubs;
  std::vector<std::pair<std::size_t, std::shared_ptr<Request>>> asked;
  detail::for_each_hub([&](const detail::HubSlot& slot) {
    HubInfo info;
    info.tid = slot.tid;
    if (slot.hub == self) {
      info.answered = true;  // collected below, outside the registry lock
    } else {
      auto req = std::make_shared<Request>();
      try {
        slot.hub->post_call([req, opts, hub = slot.hub](bool alive) {
          HubInfo got;
          if (alive) {
            try {
              got = collect_here(*hub, opts);
            } catch (const std::exception& e) {
              got.note = fmt::format("could not list its greenlets: {}", e.what());
            }
          } else {
            got.note = "its thread ended during the dump";
          }
          std::lock_guard lk(req->mu);
          req->info = std::move(got);
          req->done = true;
          req->cv.notify_all();
        });
        asked.emplace_back(hubs.size(), req);
      } catch (...) {
        info.note = "could not be asked (out of memory)";
      }
      info.note = slot.stalled_ms >= 0
                      ? fmt::format("did not answer within {} ms; the blocking monitor sees it stalled for {} ms "
                                    "(its report has the running greenlet's stack); {} switches so far",
                                    opts.hub_timeout.count(), slot.stalled_ms, slot.hub->switches())
                      : fmt::format("did not answer within {} ms (a greenlet may block its thread: enable_monitor() "
                                    "reports which); {} switches so far, {}",
                                    opts.hub_timeout.count(), slot.hub->switches(),
                                    slot.hub->polling() ? "waiting in epoll" : "not in epoll");
    }
    hubs.push_back(std::move(info));
  });
  if (self) {
    for (auto& h : hubs)
      if (h.answered) h = collect_here(*self, opts);
  }
  auto give_up = std::chrono::steady_clock::now() + opts.hub_timeout;
  for (auto& [i, req] : asked) {
    std::unique_lock lk(req->mu);
    if (req->cv.wait_until(lk, give_up, [r = req.get()] { return r->done; })) {  // (clang 14 cannot capture a binding)
      auto note = std::move(hubs[i].note);
      auto tid = hubs[i].tid;
      hubs[i] = std::move(req->info);
      hubs[i].tid = tid;
      if (!hubs[i].answered && hubs[i].note.empty()) hubs[i].note = note;
    }
  }
  std::string out = fmt::format("fiberio run info: {} hub(s), asked from thread {}\n", hubs.size(),
                                static_cast<pid_t>(::syscall(SYS_gettid)));
  for (auto& h : hubs) {
    auto copy = std::move(h);
    copy.thread_name = detail::thread_name(copy.tid);
    out += format_hub(copy, opts);
  }
  return out;
}

// ---- the dump signal ----
struct DumpSignal {
  std::mutex mu;
  int signo = 0;
  int pipe_read = -1;
  bool thread_running = false;
};
DumpSignal& DS() {
  static auto* d = new DumpSignal;
  return *d;
}
std::atomic<int> g_dump_pipe{-1};

void on_dump_signal(int) {
  int saved = errno;
  int fd = g_dump_pipe.load(std::memory_order_relaxed);
  if (fd >= 0) {
    char b = 1;
    [[maybe_unused]] auto n = ::write(fd, &b, 1);  // a full pipe: a dump is pending already
  }
  errno = saved;
}

void start_dump_thread_locked(DumpSignal& d) {
  if (d.thread_running) return;
  d.thread_running = true;
  std::thread([fd = d.pipe_read] {
    ::pthread_setname_np(::pthread_self(), "fiberio-dump");
    for (;;) {
      char buf[64];
      auto n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      try {
        print_run_info();
      } catch (...) {
        std::fputs("fiberio: the run-info dump failed\n", stderr);
      }
    }
  }).detach();
}

void dump_fork_child() {
  auto& d = DS();
  d.thread_running = false;  // the thread did not survive the fork
  if (d.pipe_read >= 0) {
    // A pipe of its own: on the parent's, either process's dump thread could take the other's signal.
    ::close(d.pipe_read);
    ::close(g_dump_pipe.exchange(-1));
    d.pipe_read = -1;
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) == 0) {
      ::fcntl(fds[1], F_SETFL, O_NONBLOCK);
      d.pipe_read = fds[0];
      g_dump_pipe.store(fds[1]);
    }
  }
  if (d.signo && d.pipe_read >= 0) start_dump_thread_locked(d);
  d.mu.unlock();
}

// ---- hooks ----
using HookList = std::vector<std::pair<HookId, std::function<void(const HubEvent&)>>>;
struct Hooks {
  detail::Spinlock lock;
  std::shared_ptr<const HookList> list;
  HookId next = 1;
};
Hooks& H() {
  static auto* h = new Hooks;
  return *h;
}

void fire(const HubEvent& e) noexcept {
  std::shared_ptr<const HookList> list;
  {
    detail::SpinLockGuard lk(H().lock);
    list = H().list;
  }
  if (!list) return;
  for (auto& [id, fn] : *list) {
    try {
      fn(e);
    } catch (...) {
    }
  }
}

std::uint64_t id_of(boost::fibers::context* ctx) noexcept {
  if (!ctx) return HubEvent::kHub;
  if (auto* p = ctx->get_properties())
    if (GreenletBase* g = static_cast<detail::FiberState*>(p)->greenlet) return g->id();
  return 0;
}

// A switch into a greenlet that has not started yet: its id is known once it runs (fire_spawned).
thread_local std::uint64_t t_switch_from = HubEvent::kHub;

}  // namespace

namespace detail {
void fire_switch(boost::fibers::context* from, boost::fibers::context* to) noexcept {
  if (to && !to->get_properties() && !to->is_context(boost::fibers::type::main_context)) {
    t_switch_from = id_of(from);  // a fresh greenlet: begin() reports the switch with its id
    return;
  }
  fire({HubEvent::Kind::Switch, id_of(to), id_of(from)});
}
void fire_spawn(std::uint64_t id, std::uint64_t spawner) noexcept { fire({HubEvent::Kind::Spawn, id, spawner}); }
void fire_finish(std::uint64_t id) noexcept { fire({HubEvent::Kind::Finish, id, 0}); }
void fire_stall(std::uint64_t id, std::uint64_t ms) noexcept { fire({HubEvent::Kind::Stall, id, ms}); }
void fire_started(std::uint64_t id) noexcept {
  fire({HubEvent::Kind::Switch, id, std::exchange(t_switch_from, HubEvent::kHub)});
}

std::string describe_spawn_site(const void* spawn_site) {
  return spawn_site ? user_site({reinterpret_cast<std::uintptr_t>(spawn_site) + 1}) : "unknown";
}

void dump_signal_from_env() {
  const char* v = std::getenv("FIBERIO_DUMP_SIGNAL");
  if (!v || !*v) return;
  std::string s = v;
  int signo = 0;
  if (std::isdigit(static_cast<unsigned char>(s[0]))) signo = std::atoi(s.c_str());
  else {
    if (s.starts_with("SIG")) s = s.substr(3);
    for (int i = 1; i < NSIG; ++i)
      if (const char* abbrev = ::sigabbrev_np(i); abbrev && s == abbrev) signo = i;
  }
  try {
    if (signo <= 0) throw std::invalid_argument("unknown signal");
    enable_dump_signal(signo);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fiberio: FIBERIO_DUMP_SIGNAL=%s ignored: %s\n", v, e.what());
  }
}
}  // namespace detail

std::string format_run_info(const RunInfoOptions& opts) { return run_info(opts); }

void print_run_info(const RunInfoOptions& opts) {
  std::string text = run_info(opts);
  std::fwrite(text.data(), 1, text.size(), stderr);
  std::fflush(stderr);
}

void enable_dump_signal(int signo) {
  if (signo <= 0 || signo >= NSIG || signo == SIGKILL || signo == SIGSTOP)
    throw std::system_error(EINVAL, std::generic_category(), fmt::format("fiberio::enable_dump_signal({})", signo));
  auto& d = DS();
  std::lock_guard lk(d.mu);
  if (d.pipe_read < 0) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
      throw std::system_error(errno, std::generic_category(), "fiberio::enable_dump_signal: pipe");
    ::fcntl(fds[1], F_SETFL, O_NONBLOCK);
    d.pipe_read = fds[0];
    g_dump_pipe.store(fds[1]);
    static std::once_flag once;
    std::call_once(once, [] { ::pthread_atfork([] { DS().mu.lock(); }, [] { DS().mu.unlock(); }, dump_fork_child); });
  }
  start_dump_thread_locked(d);
  struct sigaction sa {};
  sa.sa_handler = on_dump_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (::sigaction(signo, &sa, nullptr) != 0)
    throw std::system_error(errno, std::generic_category(), fmt::format("fiberio::enable_dump_signal({})", signo));
  if (d.signo && d.signo != signo) ::signal(d.signo, SIG_DFL);
  d.signo = signo;
}

void disable_dump_signal() {
  auto& d = DS();
  std::lock_guard lk(d.mu);
  if (d.signo) ::signal(d.signo, SIG_DFL);
  d.signo = 0;
}

std::string HubStats::format() const {
  std::string out = fmt::format("switches {}, loop iterations {}, ready {}, parked {}, in epoll_wait {}", switches,
                                loop_iterations, ready, parked, ms(poll_time));
  std::string buckets;
  for (std::size_t i = 0; i < loop_latency.size(); ++i) {
    if (!loop_latency[i]) continue;
    auto bound = i == 0 ? std::string("<1us") : i + 1 == loop_latency.size() ? fmt::format(">={}us", 1ull << (i - 1))
                                                                               : fmt::format("<{}us", 1ull << i);
    buckets += fmt::format("{}{}: {}", buckets.empty() ? "" : ", ", bound, loop_latency[i]);
  }
  if (!buckets.empty()) out += "; loop latency " + buckets;
  return out;
}

HubStats hub_stats() { return stats_of(Hub::current(), live_greenlets()); }

HookId add_hook(std::function<void(const HubEvent&)> fn) {
  if (!fn) throw std::invalid_argument("fiberio::add_hook: empty function");
  auto& h = H();
  detail::SpinLockGuard lk(h.lock);
  auto list = std::make_shared<HookList>(h.list ? *h.list : HookList{});
  HookId id = h.next++;
  list->emplace_back(id, std::move(fn));
  h.list = std::move(list);
  detail::g_hooks_active.store(true, std::memory_order_relaxed);
  return id;
}

void remove_hook(HookId id) {
  auto& h = H();
  std::shared_ptr<const HookList> old;
  detail::SpinLockGuard lk(h.lock);
  if (!h.list) return;
  auto list = std::make_shared<HookList>(*h.list);
  std::erase_if(*list, [&](auto& p) { return p.first == id; });
  old = std::exchange(h.list, list->empty() ? nullptr : std::move(list));
  detail::g_hooks_active.store(h.list != nullptr, std::memory_order_relaxed);
  lk.unlock();
}

}  // namespace fiberio
