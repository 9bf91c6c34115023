#include "fiberio/signal.hpp"
#include "fiberio/hub.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "fiberio/greenlet.hpp"
#include "fiberio/io.hpp"

namespace fiberio {

namespace {

// ---- what the async-signal handler may touch: fixed-size, lock-free ----
constexpr int kMaxSlots = 128;  // hubs (threads) with handlers at once
struct Slot {
  std::atomic<int> wfd{-1};
  std::atomic<std::uint64_t> mask{0};  // bit (signum - 1): this hub wants that signal
  std::atomic<pid_t> pid{0};           // the process that owns the pipe (a fork()ed child skips it)
};
Slot g_slots[kMaxSlots];
std::atomic<int> g_in_handler{0};

extern "C" void on_signal(int signo) {
  int saved = errno;
  g_in_handler.fetch_add(1);
  pid_t me = ::getpid();
  std::uint64_t bit = std::uint64_t{1} << (signo - 1);
  for (auto& s : g_slots) {
    if (!(s.mask.load() & bit)) continue;
    int fd = s.wfd.load();
    if (fd >= 0 && s.pid.load() == me) {
      unsigned char b = static_cast<unsigned char>(signo);
      [[maybe_unused]] auto r = ::write(fd, &b, 1);  // a full pipe already has a wake-up queued
    }
  }
  g_in_handler.fetch_sub(1);
  errno = saved;
}

// ---- everything else: under g_mu ----
struct HubSignals;
struct Entry {
  HubSignals* owner;
  int signum;
  std::shared_ptr<std::function<void()>> fn;
};
struct Disposition {
  int refs = 0;
  struct sigaction previous {};
};

std::mutex g_mu;
std::map<std::uint64_t, Entry> g_handlers;
Disposition g_dispositions[65];
bool g_slot_used[kMaxSlots] = {};
std::uint64_t g_next_id = 1;

// One per thread that registered a handler: its self-pipe and the greenlet reading it.
struct HubSignals {
  int slot = -1;
  int rfd = -1, wfd = -1;
  pid_t pid = 0;
  std::size_t handlers = 0;
  int per_signal[65] = {};
  GreenletRef reader;
};

thread_local std::shared_ptr<HubSignals> t_signals;

std::string signal_name(int signum) {
  const char* abbrev = ::sigabbrev_np(signum);
  return abbrev ? fmt::format("SIG{}", abbrev) : fmt::format("signal {}", signum);
}

// Unpublishes the pipe, waits out any signal handler that may still be writing to it, closes it.
// Called with g_mu held, on the owning thread (closing wakes the reader through the hub).
void close_pipe(HubSignals& st) {
  if (st.slot >= 0) {
    g_slots[st.slot].mask.store(0);
    g_slots[st.slot].wfd.store(-1);
    while (g_in_handler.load() != 0) {
    }
    g_slot_used[st.slot] = false;
    st.slot = -1;
  }
  if (st.rfd >= 0) fiberio::close(std::exchange(st.rfd, -1));
  if (st.wfd >= 0) ::close(std::exchange(st.wfd, -1));
}

void dispatch(const std::shared_ptr<HubSignals>& st, int signum) {
  std::vector<std::shared_ptr<std::function<void()>>> fns;
  {
    std::lock_guard lk(g_mu);
    for (auto& [id, e] : g_handlers)
      if (e.owner == st.get() && e.signum == signum) fns.push_back(e.fn);
  }
  for (auto& fn : fns) spawn([fn] { (*fn)(); }).set_name(fmt::format("signal_handler({})", signal_name(signum)));
}

void reader_loop(std::shared_ptr<HubSignals> st, int rfd) {
  unsigned char buf[64];
  for (;;) {
    ssize_t n = ::read(rfd, buf, sizeof buf);
    if (n > 0) {
      for (ssize_t i = 0; i < n; ++i) dispatch(st, buf[i]);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      try {
        wait_read(rfd);
      } catch (const ClosedError&) {
        return;  // the last handler was cancelled
      }
      continue;
    }
    return;
  }
}

// With g_mu held: makes sure this thread has a live pipe (again, after a fork) and a reader.
void ensure_pipe(const std::shared_ptr<HubSignals>& st) {
  if (st->slot >= 0 && st->pid == ::getpid()) return;
  if (st->slot >= 0) {
    // A fork()ed child inherited the parent's pipe: the parent keeps that one; make our own.
    if (st->reader && !st->reader.dead()) st->reader.kill(false);
    g_slots[st->slot].wfd.store(-1);
    if (st->rfd >= 0) fiberio::close(std::exchange(st->rfd, -1));
    if (st->wfd >= 0) ::close(std::exchange(st->wfd, -1));
    st->slot = -1;
  }
  int slot = -1;
  for (int i = 0; i < kMaxSlots; ++i)
    if (!g_slot_used[i]) {
      slot = i;
      break;
    }
  if (slot < 0) throw std::runtime_error("fiberio::signal_handler: too many threads with signal handlers");
  int fds[2];
  if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
    throw std::system_error(errno, std::generic_category(), "fiberio::signal_handler: pipe2");
  st->rfd = fds[0];
  st->wfd = fds[1];
  st->pid = ::getpid();
  st->slot = slot;
  g_slot_used[slot] = true;
  std::uint64_t mask = 0;
  for (int s = 1; s < 65; ++s)
    if (st->per_signal[s] > 0) mask |= std::uint64_t{1} << (s - 1);
  g_slots[slot].pid.store(st->pid);
  g_slots[slot].mask.store(mask);
  g_slots[slot].wfd.store(st->wfd);
  auto reader = spawn(reader_loop, st, st->rfd);
  reader.set_name("signal_handler reader");
  st->reader = reader;
}

}  // namespace

SignalHandle signal_handler(int signum, std::function<void()> f) {
  if (signum < 1 || signum > 64 || signum == SIGKILL || signum == SIGSTOP)
    throw std::invalid_argument(fmt::format("fiberio::signal_handler({}): that signal cannot be caught", signum));
  if (!f) throw std::invalid_argument("fiberio::signal_handler: empty handler");
  detail::Hub::current();
  if (!t_signals) t_signals = std::make_shared<HubSignals>();
  auto& st = t_signals;
  std::lock_guard lk(g_mu);
  ensure_pipe(st);
  auto& disp = g_dispositions[signum];
  if (disp.refs == 0) {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    ::sigemptyset(&sa.sa_mask);
    if (::sigaction(signum, &sa, &disp.previous) < 0)
      throw std::system_error(errno, std::generic_category(),
                              fmt::format("fiberio::signal_handler({}): sigaction", signal_name(signum)));
  }
  ++disp.refs;
  ++st->handlers;
  if (st->per_signal[signum]++ == 0) g_slots[st->slot].mask.fetch_or(std::uint64_t{1} << (signum - 1));
  auto id = g_next_id++;
  g_handlers.emplace(id, Entry{st.get(), signum, std::make_shared<std::function<void()>>(std::move(f))});
  return SignalHandle(id);
}

SignalHandle& SignalHandle::operator=(SignalHandle&& o) noexcept {
  if (this != &o) {
    cancel();
    id_ = std::exchange(o.id_, 0);
  }
  return *this;
}

void SignalHandle::cancel() noexcept {
  if (!id_) return;
  auto id = std::exchange(id_, 0);
  GreenletRef reader_to_kill;
  {
    std::lock_guard lk(g_mu);
    auto it = g_handlers.find(id);
    if (it == g_handlers.end()) return;
    HubSignals* owner = it->second.owner;
    int signum = it->second.signum;
    g_handlers.erase(it);
    if (--owner->per_signal[signum] == 0 && owner->slot >= 0)
      g_slots[owner->slot].mask.fetch_and(~(std::uint64_t{1} << (signum - 1)));
    --owner->handlers;
    // The pipe and reader belong to the owner's hub: only its own thread may close them. A handle
    // cancelled elsewhere leaves an idle pipe behind until that thread registers or cancels again.
    if (owner->handlers == 0 && t_signals.get() == owner) {
      close_pipe(*owner);
      reader_to_kill = std::move(owner->reader);
      owner->reader = GreenletRef();
    }
    auto& disp = g_dispositions[signum];
    if (--disp.refs == 0) ::sigaction(signum, &disp.previous, nullptr);
  }
  // Closing the pipe already woke the reader (it exits on ClosedError); the kill covers a reader
  // that has not started yet.
  if (reader_to_kill && !reader_to_kill.dead() && getcurrent() != reader_to_kill) {
    try {
      reader_to_kill.kill(false);
    } catch (...) {
    }
  }
}

}  // namespace fiberio
