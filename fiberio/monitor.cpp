// The blocking monitor: see monitor.hpp. Stack library: capture with libgcc's _Unwind_Backtrace (in
// the signal handler: glibc 2.36's _dl_find_object makes its FDE lookup lock-free, and it is warmed up
// at enable), symbolization with Boost.Stacktrace's backtrace variant (libboost_stacktrace_backtrace,
// which carries libbacktrace: function names of static and non-exported functions too, and file:line,
// read from the debug info on the monitor thread). dladdr alone sees only exported symbols.
#include "fiberio/monitor.hpp"

#define BOOST_STACKTRACE_LINK
#include <boost/stacktrace/frame.hpp>

#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <ucontext.h>
#include <unistd.h>
#include <unwind.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>

#include "fiberio/detail/monitor.hpp"
#include "fiberio/greenlet.hpp"
#include "fiberio/hub.hpp"
#include "fiberio/park.hpp"

namespace fiberio {
namespace {

using SteadyClock = std::chrono::steady_clock;
constexpr int kMaxFrames = 64;

// One per hub; lives from the hub's creation to its destructor (under Monitor::mu).
struct Slot {
  detail::Hub* hub;
  pid_t tid;
  // Sampling state: the monitor thread's only.
  std::uint64_t last_progress = 0;
  SteadyClock::time_point since{};
  bool reported = false;
  bool fresh = true;
  // The capture, written by the signal handler on the hub's thread: 1 asked, 3 being written, 2 done.
  std::atomic<int> capture{0};
  void* frames[kMaxFrames];
  int nframes = 0;
  std::uintptr_t interrupted_ip = 0;
  std::uint64_t greenlet_id = 0;
  const void* spawn_site = nullptr;
  bool in_greenlet = false;
  std::weak_ptr<GreenletBase> greenlet;  // empty before each capture: the handler never frees one
};

thread_local constinit Slot* t_slot = nullptr;

// Never destroyed: hubs unregister during thread-local and static destruction at exit.
struct Monitor {
  std::mutex cycle;  // one sampling/report cycle; fork() waits for it (then takes mu)
  std::mutex mu;     // slots, settings
  std::condition_variable cv;
  std::vector<Slot*> slots;
  bool enabled = false;
  bool thread_running = false;
  std::chrono::milliseconds threshold{0};
  int signo = 0;
  StallHandler handler;
  std::vector<StallReport> ended;  // stalls whose hub went away before the monitor saw them end
};
Monitor& M() {
  static Monitor* m = new Monitor;
  return *m;
}

// ---- on the hub's thread, in the signal handler: async-signal-safe only ----
struct Unwind {
  void** frames;
  int n;
  int max;
};
_Unwind_Reason_Code collect(_Unwind_Context* ctx, void* arg) {
  auto* u = static_cast<Unwind*>(arg);
  if (u->n >= u->max) return _URC_END_OF_STACK;
  auto ip = _Unwind_GetIP(ctx);
  if (!ip) return _URC_END_OF_STACK;
  u->frames[u->n++] = reinterpret_cast<void*>(ip);
  return _URC_NO_REASON;
}

void on_signal(int, siginfo_t*, void* uc) {
  int saved_errno = errno;
  Slot* s = t_slot;
  int asked = 1;
  if (s && s->capture.compare_exchange_strong(asked, 3, std::memory_order_acquire)) {
    Unwind u{s->frames, 0, kMaxFrames};
    _Unwind_Backtrace(collect, &u);
    s->nframes = u.n;
    s->interrupted_ip = static_cast<std::uintptr_t>(static_cast<ucontext_t*>(uc)->uc_mcontext.gregs[REG_RIP]);
    // The running fiber's greenlet: its properties exist already (nothing is allocated here).
    s->in_greenlet = false;
    s->spawn_site = nullptr;
    if (auto* ctx = boost::fibers::context::active())
      if (auto* p = ctx->get_properties())
        if (GreenletBase* g = static_cast<detail::FiberState*>(p)->greenlet) {
          s->in_greenlet = true;
          s->greenlet_id = g->id();
          s->spawn_site = g->spawn_site();
          s->greenlet = g->weak_from_this();  // an atomic increment into an empty weak_ptr
        }
    s->capture.store(2, std::memory_order_release);
  }
  errno = saved_errno;
}

// ---- on the monitor thread ----
using detail::thread_name;

// "running", or the syscall number followed by its six arguments, the stack pointer and the pc.
struct SyscallState {
  bool blocked = false;
  long nr = -1;
  std::uintptr_t sp = 0, pc = 0;
};
SyscallState syscall_state(pid_t tid) {
  SyscallState st;
  std::ifstream f(fmt::format("/proc/self/task/{}/syscall", tid));
  std::string first;
  if (!(f >> first) || first == "running") return st;
  std::vector<std::string> rest;
  for (std::string w; f >> w;) rest.push_back(w);
  if (rest.size() < 2) return st;
  st.blocked = true;
  st.nr = std::strtol(first.c_str(), nullptr, 10);
  st.sp = std::strtoull(rest[rest.size() - 2].c_str(), nullptr, 16);
  st.pc = std::strtoull(rest.back().c_str(), nullptr, 16);
  return st;
}

// The stack of a thread blocked in the kernel: pc, then the return addresses found above sp.
std::vector<std::uintptr_t> scan_stack(const SyscallState& st) {
  std::vector<std::uintptr_t> out{st.pc};
  detail::StackScanner scanner;
  std::uintptr_t end = scanner.mapping_end(st.sp);
  if (!end) return out;
  auto found = scanner.scan(st.sp, std::min(end, st.sp + 256 * 1024), kMaxFrames - 1);
  out.insert(out.end(), found.begin(), found.end());
  return out;
}

StallFrame symbolize(std::uintptr_t addr, bool return_address) {
  StallFrame f;
  f.address = addr;
  // A return address points after the call: look up the call's own line.
  boost::stacktrace::frame fr(reinterpret_cast<boost::stacktrace::frame::native_frame_ptr_t>(return_address ? addr - 1 : addr));
  f.function = fr.name();
  f.file = fr.source_file();
  f.line = static_cast<unsigned>(fr.source_line());
  return f;
}

void deliver(const StallReport& r) {
  if (r.kind == StallReport::Kind::Stalled && detail::hooks_active())
    detail::fire_stall(r.greenlet_id, static_cast<std::uint64_t>(r.duration.count()));
  StallHandler h;
  {
    std::lock_guard lk(M().mu);
    h = M().handler;
  }
  try {
    if (h) return h(r);
    std::string text = r.format();
    std::fwrite(text.data(), 1, text.size(), stderr);
    std::fflush(stderr);
  } catch (...) {
    std::fputs("fiberio: the stall handler threw; report dropped\n", stderr);
  }
}

// Takes s's stack and greenlet; under M().mu (s cannot go away).
StallReport capture(Slot& s, std::chrono::milliseconds so_far, int signo) {
  StallReport r;
  r.thread_id = s.tid;
  r.thread_name = thread_name(s.tid);
  r.duration = so_far;
  SyscallState st = syscall_state(s.tid);
  std::vector<std::uintptr_t> addrs;
  std::shared_ptr<GreenletBase> g;
  bool known = false, in_greenlet = false;
  const void* spawn_site = nullptr;
  if (st.blocked) {
    // Frozen in the kernel: read, don't signal. The running greenlet is read while the hub has not
    // switched (checked after): its fiber cannot have ended meanwhile.
    r.syscall = st.nr;
    r.scanned = true;
    auto before = s.hub->switches();
    if (before == s.last_progress) {
      // The greenlet running now: it cannot end (nor be freed) while its thread is frozen in the
      // kernel. Read through the hub's published pointer (acquire), never through the fiber's
      // properties, which only its own thread may read unordered. No running context: no switch yet
      // (the main fiber), or the hub's own dispatcher (no greenlet).
      if (GreenletBase* gb = s.hub->running_greenlet()) {
        in_greenlet = true;
        r.greenlet_id = gb->id();
        r.greenlet_name = gb->name();
        spawn_site = gb->spawn_site();
      } else if (!s.hub->running() && before != 0) {
        in_greenlet = true;
        r.greenlet_name = "(none: the hub's own dispatcher)";
      }
      known = s.hub->switches() == before;
    }
    addrs = scan_stack(st);
  } else {
    s.greenlet.reset();
    s.capture.store(1, std::memory_order_release);
    if (::syscall(SYS_tgkill, ::getpid(), s.tid, signo) == 0) {
      auto give_up = SteadyClock::now() + std::chrono::milliseconds(200);
      while (s.capture.load(std::memory_order_acquire) != 2 && SteadyClock::now() < give_up)
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    int asked = 1;
    if (!s.capture.compare_exchange_strong(asked, 0)) {
      while (s.capture.load(std::memory_order_acquire) == 3) std::this_thread::yield();
      if (s.capture.load(std::memory_order_acquire) == 2) {
        known = true;
        in_greenlet = s.in_greenlet;
        r.greenlet_id = s.greenlet_id;
        spawn_site = s.spawn_site;
        g = s.greenlet.lock();
        s.greenlet.reset();
        // Drop the handler's own frames, up to the signal trampoline: start at the interrupted pc.
        int first = 0;
        for (int i = 0; i < s.nframes; ++i)
          if (reinterpret_cast<std::uintptr_t>(s.frames[i]) == s.interrupted_ip) {
            first = i;
            break;
          }
        for (int i = first; i < s.nframes; ++i) addrs.push_back(reinterpret_cast<std::uintptr_t>(s.frames[i]));
      }
      s.capture.store(0);
    }
  }
  if (!known) r.greenlet_name = "(unknown)";
  else if (!in_greenlet) r.greenlet_name = "MainGreenlet";
  else if (g) r.greenlet_name = g->name();
  else if (r.greenlet_name.empty()) r.greenlet_name = fmt::format("Greenlet-{} (finished since)", r.greenlet_id);
  if (known && spawn_site) r.spawned_at = detail::describe_spawn_site(spawn_site);
  for (std::size_t i = 0; i < addrs.size(); ++i) r.stack.push_back(symbolize(addrs[i], i > 0));
  return r;
}

void run_monitor() {
  auto& m = M();
  for (;;) {
    std::chrono::milliseconds threshold;
    int signo;
    {
      std::unique_lock lk(m.mu);
      m.cv.wait(lk, [&] { return m.enabled; });
      threshold = m.threshold;
      signo = m.signo;
      auto tick = std::max(std::chrono::milliseconds(1), threshold / 4);
      m.cv.wait_for(lk, tick);
      if (!m.enabled) continue;
    }
    std::vector<StallReport> reports;
    {
      std::lock_guard cycle(m.cycle);
      {
        std::lock_guard lk(m.mu);
        reports = std::exchange(m.ended, {});
        auto now = SteadyClock::now();
        for (Slot* s : m.slots) {
          auto progress = s->hub->switches();
          if (s->fresh || s->hub->polling() || progress != s->last_progress) {
            if (s->reported) {
              StallReport end;
              end.kind = StallReport::Kind::Ended;
              end.thread_id = s->tid;
              end.duration = std::chrono::duration_cast<std::chrono::milliseconds>(now - s->since);
              reports.push_back(std::move(end));
              s->reported = false;
            }
            s->fresh = false;
            s->last_progress = progress;
            s->since = now;
            continue;
          }
          auto so_far = std::chrono::duration_cast<std::chrono::milliseconds>(now - s->since);
          if (!s->reported && so_far >= threshold) {
            s->reported = true;
            reports.push_back(capture(*s, so_far, signo));
          }
        }
      }
      // Symbolized and delivered outside mu: hubs come and go meanwhile; fork() waits for `cycle`.
      for (auto& r : reports) {
        if (r.kind == StallReport::Kind::Ended && r.thread_name.empty()) r.thread_name = thread_name(r.thread_id);
        deliver(r);
      }
    }
  }
}

int pick_signal() {
  for (int sig = SIGRTMAX; sig >= SIGRTMIN; --sig) {
    struct sigaction cur {};
    if (::sigaction(sig, nullptr, &cur) == 0 && !(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == SIG_DFL) return sig;
  }
  return 0;
}

void start_thread_locked(Monitor& m) {
  if (m.thread_running) return;
  m.thread_running = true;
  std::thread([] {
    ::pthread_setname_np(::pthread_self(), "fiberio-monitor");
    run_monitor();
  }).detach();
}

void fork_prepare() {
  M().cycle.lock();
  M().mu.lock();
}
void fork_parent() {
  M().mu.unlock();
  M().cycle.unlock();
}
void fork_child() {
  auto& m = M();
  // Only the forking thread survives: keep its hub, if any; the others' slots name dead threads.
  std::erase_if(m.slots, [](Slot* s) {
    if (s == t_slot) return false;
    delete s;
    return true;
  });
  if (t_slot) {
    t_slot->tid = static_cast<pid_t>(::syscall(SYS_gettid));
    t_slot->fresh = true;
    t_slot->reported = false;
    t_slot->capture.store(0);
  }
  m.thread_running = false;
  if (m.enabled) start_thread_locked(m);  // re-armed: the child is watched as its parent was
  m.mu.unlock();
  m.cycle.unlock();
}

void install_once() {
  static std::once_flag once;
  std::call_once(once, [] { ::pthread_atfork(fork_prepare, fork_parent, fork_child); });
}

}  // namespace

std::string StallReport::format() const {
  if (kind == Kind::Ended)
    return fmt::format("fiberio: stall on thread {} ({}) ended after {} ms\n", thread_id, thread_name, duration.count());
  std::string out = fmt::format("fiberio: hub on thread {} ({}) stalled for {} ms so far: greenlet {} (id {}) is running",
                                thread_id, thread_name, duration.count(), greenlet_name, greenlet_id);
  if (!spawned_at.empty()) out += fmt::format(" (spawned at {})", spawned_at);
  if (syscall >= 0) out += fmt::format(", blocked in system call {}", syscall);
  out += scanned ? "\n  its stack (read from the blocked thread; a stale frame may show):\n" : "\n  its stack:\n";
  if (stack.empty()) out += "  (unavailable: the thread did not run the monitor's signal handler within 200 ms; is the signal blocked there?)\n";
  int i = 0;
  for (auto& f : stack) {
    out += fmt::format("  #{:<2} 0x{:012x} {}", i++, f.address, f.function.empty() ? "??" : f.function);
    if (!f.file.empty()) out += fmt::format(" at {}:{}", f.file, f.line);
    out += '\n';
  }
  return out;
}

void enable_monitor(std::chrono::milliseconds threshold) {
  if (threshold <= std::chrono::milliseconds::zero()) throw std::invalid_argument("fiberio::enable_monitor: threshold must be > 0");
  install_once();
  auto& m = M();
  std::lock_guard lk(m.mu);
  if (!m.signo) {
    m.signo = pick_signal();
    if (!m.signo) throw std::runtime_error("fiberio::enable_monitor: no free real-time signal");
    struct sigaction sa {};
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    ::sigaction(m.signo, &sa, nullptr);
    // The unwinder's first call may allocate (it sets itself up): make it here, not in the handler.
    void* warm[4];
    Unwind u{warm, 0, 4};
    _Unwind_Backtrace(collect, &u);
    boost::stacktrace::frame(reinterpret_cast<boost::stacktrace::frame::native_frame_ptr_t>(&enable_monitor)).name();
  }
  m.threshold = threshold;
  m.enabled = true;
  for (Slot* s : m.slots) s->fresh = true;
  start_thread_locked(m);
  m.cv.notify_all();
}

void disable_monitor() {
  auto& m = M();
  std::lock_guard lk(m.mu);
  m.enabled = false;
  for (Slot* s : m.slots) s->reported = false;
  m.cv.notify_all();
}

bool monitor_enabled() {
  std::lock_guard lk(M().mu);
  return M().enabled;
}

StallHandler set_stall_handler(StallHandler h) {
  std::lock_guard lk(M().mu);
  return std::exchange(M().handler, std::move(h));
}

int monitor_signal() {
  std::lock_guard lk(M().mu);
  return M().signo;
}

namespace detail {
std::string thread_name(pid_t tid) {
  std::ifstream f(fmt::format("/proc/self/task/{}/comm", tid));
  std::string name;
  std::getline(f, name);
  return name;
}

bool read_memory(std::uintptr_t addr, void* out, std::size_t n) noexcept {
  iovec local{out, n}, remote{reinterpret_cast<void*>(addr), n};
  return ::process_vm_readv(::getpid(), &local, 1, &remote, 1, 0) == static_cast<ssize_t>(n);
}

StackScanner::StackScanner() {
  std::ifstream f("/proc/self/maps");
  for (std::string line; std::getline(f, line);) {
    std::istringstream in(line);
    std::string range, perms;
    in >> range >> perms;
    auto dash = range.find('-');
    if (dash == std::string::npos) continue;
    maps_.push_back({std::strtoull(range.substr(0, dash).c_str(), nullptr, 16),
                     std::strtoull(range.substr(dash + 1).c_str(), nullptr, 16), perms.size() > 2 && perms[2] == 'x'});
  }
  std::sort(maps_.begin(), maps_.end(), [](const Mapping& a, const Mapping& b) { return a.lo < b.lo; });
}

const StackScanner::Mapping* StackScanner::find(std::uintptr_t a) const noexcept {
  auto it = std::upper_bound(maps_.begin(), maps_.end(), a, [](std::uintptr_t x, const Mapping& m) { return x < m.lo; });
  if (it == maps_.begin()) return nullptr;
  --it;
  return a < it->hi ? &*it : nullptr;
}

std::uintptr_t StackScanner::mapping_end(std::uintptr_t addr) const noexcept {
  const Mapping* m = find(addr);
  return m ? m->hi : 0;
}

// x86-64: is w a return address, i.e. just after a call (e8 rel32, or ff /2 of 2 to 7 bytes)?
bool StackScanner::after_call(std::uintptr_t w) {
  if (auto it = after_call_.find(w); it != after_call_.end()) return it->second;
  unsigned char b[7];
  bool yes = false;
  if (read_memory(w - 7, b, 7)) {
    yes = b[2] == 0xe8;
    for (int len = 2; len <= 7 && !yes; ++len)
      if (b[7 - len] == 0xff && ((b[8 - len] >> 3) & 7) == 2) yes = true;
  }
  after_call_.emplace(w, yes);
  return yes;
}

std::vector<std::uintptr_t> StackScanner::scan(std::uintptr_t lo, std::uintptr_t hi, std::size_t max) {
  std::vector<std::uintptr_t> out;
  lo &= ~(sizeof(std::uintptr_t) - 1);
  if (hi <= lo) return out;
  std::vector<std::uintptr_t> words((hi - lo) / sizeof(std::uintptr_t));
  if (words.empty() || !read_memory(lo, words.data(), words.size() * sizeof(std::uintptr_t))) return out;
  for (auto w : words) {
    if (out.size() >= max) break;
    const Mapping* m = w > 7 ? find(w) : nullptr;
    if (m && m->exec && after_call(w)) out.push_back(w);
  }
  return out;
}

void for_each_hub(const std::function<void(const HubSlot&)>& fn) {
  std::lock_guard lk(M().mu);
  auto now = SteadyClock::now();
  for (Slot* s : M().slots) {
    HubSlot h{s->hub, s->tid, -1};
    if (s->reported && M().enabled) h.stalled_ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - s->since).count();
    fn(h);
  }
}

void monitor_hub_started(Hub* hub) {
  auto* s = new Slot{};
  s->hub = hub;
  s->tid = static_cast<pid_t>(::syscall(SYS_gettid));
  {
    std::lock_guard lk(M().mu);
    M().slots.push_back(s);
    t_slot = s;
  }
  static std::once_flag env_once;
  std::call_once(env_once, [] {
    if (const char* v = std::getenv("FIBERIO_MONITOR_MS"); v && *v) {
      long ms = std::strtol(v, nullptr, 10);
      if (ms > 0) enable_monitor(std::chrono::milliseconds(ms));
    }
    dump_signal_from_env();
  });
}

std::size_t monitored_hubs() {
  std::lock_guard lk(M().mu);
  return M().slots.size();
}

void monitor_hub_ended(Hub* hub) noexcept {
  std::lock_guard lk(M().mu);
  auto it = std::find_if(M().slots.begin(), M().slots.end(), [&](Slot* s) { return s->hub == hub; });
  if (it == M().slots.end()) return;
  Slot* s = *it;
  if (s->reported && M().enabled) {
    // The thread ends inside a reported stall: its "ended" line goes out with the next sample.
    try {
      StallReport end;
      end.kind = StallReport::Kind::Ended;
      end.thread_id = s->tid;
      char name[32] = "";
      ::pthread_getname_np(::pthread_self(), name, sizeof name);
      end.thread_name = std::string(name) + ", exiting";
      end.duration = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - s->since);
      M().ended.push_back(std::move(end));
    } catch (...) {
    }
  }
  if (t_slot == s) t_slot = nullptr;
  delete s;
  M().slots.erase(it);
}
}  // namespace detail
}  // namespace fiberio
