#include "fiberio/detail/fd_registry.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <new>
#include <vector>

#include "fiberio/detail/shim_interface.hpp"
#include "fiberio/hub.hpp"

extern "C" [[gnu::used, gnu::visibility("default")]] const char fiberio_runtime_id[] = FIBERIO_RUNTIME_ID;

namespace fiberio::detail {

constinit FdRegistry FdRegistry::instance_;
std::atomic<void*> FdRegistry::chunks_[FdRegistry::kChunks];

namespace {
// The kernel's answers, never a shim's: the shims interpose fcntl and getsockopt with the user's view.
int kernel_fcntl(int fd, int cmd, long arg = 0) noexcept { return static_cast<int>(::syscall(SYS_fcntl, fd, cmd, arg)); }

int kernel_getsockopt(int fd, int name, void* value, socklen_t* len) noexcept {
  return static_cast<int>(::syscall(SYS_getsockopt, fd, SOL_SOCKET, name, value, len));
}

std::chrono::nanoseconds query_timeout(int fd, int name) noexcept {
  timeval tv{};
  socklen_t len = sizeof tv;
  if (kernel_getsockopt(fd, name, &tv, &len) != 0) return std::chrono::nanoseconds{0};
  return std::chrono::seconds(tv.tv_sec) + std::chrono::microseconds(tv.tv_usec);
}

int query_int(int fd, int name) noexcept {
  int v = -1;
  socklen_t len = sizeof v;
  return kernel_getsockopt(fd, name, &v, &len) == 0 ? v : -1;
}

// The live hubs, so that a close on one thread can reach the hub of another safely: a message is
// posted only to a hub still in this list, and a hub leaves it (under the lock) before it is destroyed.
struct HubDirectory {
  std::mutex mu;
  std::vector<Hub*> hubs;
};
HubDirectory& directory() {
  static HubDirectory* d = new HubDirectory;  // never destroyed: closes may come during exit
  return *d;
}

void after_fork_child_handler() noexcept { FdRegistry::instance().new_process(Hub::get()); }

// The pid is known before any shim or fiber can run, so a vfork child (which shares this memory but
// has its own pid) is never mistaken for the parent. The fork handler is registered here too, not
// when the first hub starts: a process that forks before it ever made a hub (a prefork server, a test
// that forks its server first) would otherwise leave its child with the parent's pid, and every close
// in that child would be taken for a vfork child's and not recorded, so a reused fd number kept the
// closed fd's stale state and its waiter parked on an fd the poller no longer watched.
[[gnu::constructor]] void at_load() {
  FdRegistry::instance().new_process(nullptr);
  ::pthread_atfork(nullptr, nullptr, after_fork_child_handler);
}
}  // namespace

FdRegistry::Entry* FdRegistry::new_chunk(int fd) noexcept {
  auto& slot = chunks_[fd >> kChunkBits];
  void* chunk = nullptr;
  // mmap, not malloc: a shim may run inside a malloc replacement's own initialisation.
  void* fresh = ::mmap(nullptr, sizeof(Entry) * kChunkSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (fresh == MAP_FAILED) return nullptr;
  if (slot.compare_exchange_strong(chunk, fresh, std::memory_order_acq_rel)) chunk = fresh;
  else ::munmap(fresh, sizeof(Entry) * kChunkSize);
  return static_cast<Entry*>(chunk) + (fd & (kChunkSize - 1));
}

// ---- hubs ----
const std::atomic<std::uint32_t>* FdRegistry::close_counter(int fd) noexcept {
  Entry* e = entry(fd, true);
  return e ? &e->generation : nullptr;
}

bool FdRegistry::watch(int fd, Hub* hub, std::uint32_t seen) noexcept {
  Entry* e = entry(fd, false);
  if (!e) return true;  // not tracked: nothing to compare
  Hub* prev = e->owner.exchange(hub, std::memory_order_seq_cst);
  if (prev && prev != hub) e->shared.store(true, std::memory_order_seq_cst);
  if (e->generation.load(std::memory_order_seq_cst) == seen) return true;
  unwatch(fd, hub);
  return false;
}

void FdRegistry::unwatch(int fd, Hub* hub) noexcept {
  if (Entry* e = entry(fd, false)) {
    Hub* expected = hub;
    e->owner.compare_exchange_strong(expected, nullptr, std::memory_order_seq_cst);
  }
}

void FdRegistry::hub_started(Hub* hub) {
  auto& d = directory();
  std::lock_guard lk(d.mu);
  d.hubs.push_back(hub);
}

void FdRegistry::hub_ended(Hub* hub) noexcept {
  auto& d = directory();
  std::lock_guard lk(d.mu);
  d.hubs.erase(std::remove(d.hubs.begin(), d.hubs.end(), hub), d.hubs.end());
}

void FdRegistry::new_process(Hub* own) noexcept {
  pid_.store(::getpid(), std::memory_order_relaxed);
  // The other threads (and their hubs) do not exist here, and one of them may have held the lock.
  auto& d = directory();
  new (&d.mu) std::mutex;
  d.hubs.clear();
  if (own) d.hubs.push_back(own);  // capacity is there: it was in the list before the fork
}

// ---- closing ----
bool FdRegistry::in_vfork_child() const noexcept {
  pid_t p = pid_.load(std::memory_order_relaxed);
  return p != 0 && ::getpid() != p;
}

void FdRegistry::forget(int fd) noexcept {
  Entry* e = entry(fd, false);
  if (e && !in_vfork_child()) forget_entry(e, fd);
}

void FdRegistry::forget_entry(Entry* e, int fd) noexcept {
  e->generation.fetch_add(1, std::memory_order_seq_cst);
  Hub* owner = e->owner.exchange(nullptr, std::memory_order_seq_cst);
  bool shared = e->shared.exchange(false, std::memory_order_seq_cst);
  if (owner || shared) tell_hubs(fd, owner, shared);
}

void FdRegistry::tell_hubs(int fd, Hub* owner, bool shared) noexcept {
  Hub* own = Hub::get();
  if (owner == own && !shared) return own->forget_fd(fd);  // its own thread: at once, no lock
  auto& d = directory();
  std::lock_guard lk(d.mu);
  for (Hub* h : d.hubs) {
    if (h != owner && !shared) continue;
    if (h == own) h->forget_fd(fd);
    else h->post_forget(fd);  // that hub's thread evicts the waiters
  }
}

bool FdRegistry::closing(int fd) noexcept {
  Entry* e = entry(fd, false);
  if (!e) return true;
  if (!e->owner.load(std::memory_order_seq_cst) && !e->shared.load(std::memory_order_relaxed) &&
      !e->state.load(std::memory_order_relaxed)) {
    // Nothing watches it and the shims know nothing of it (closefrom() meets thousands of these): only
    // the count, for a registration racing this close. Harmless even from a vfork child.
    e->generation.fetch_add(1, std::memory_order_seq_cst);
    return true;
  }
  if (in_vfork_child()) return false;
  forget_entry(e, fd);
  e->state.store(0, std::memory_order_release);
  e->rcv_ns.store(0, std::memory_order_relaxed);
  e->snd_ns.store(0, std::memory_order_relaxed);
  return true;
}

// ---- the shims' view ----
FdInfo FdRegistry::classify_new(int fd) noexcept {
  FdInfo info;
  Entry* e = entry(fd, true);
  struct stat st;
  int fl = kernel_fcntl(fd, F_GETFL);
  if (!e || fl < 0 || ::fstat(fd, &st) != 0) {
    info.kind = FdKind::Passthrough;  // not cached: let the real call report EBADF
    return info;
  }
  // Only sockets are taken over on first sight: an inherited pipe or tty (stdout under a test runner,
  // a terminal) shares its open file description with other processes, which must never find it
  // switched to O_NONBLOCK underneath them.
  info.socket = S_ISSOCK(st.st_mode);
  info.kind = info.socket ? FdKind::Managed : FdKind::Passthrough;
  info.user_nonblock = fl & O_NONBLOCK;
  if (info.socket) {
    info.tcp = query_int(fd, SO_PROTOCOL) == IPPROTO_TCP && query_int(fd, SO_TYPE) == SOCK_STREAM;
    info.rcvtimeo = query_timeout(fd, SO_RCVTIMEO);
    info.sndtimeo = query_timeout(fd, SO_SNDTIMEO);
  }
  e->rcv_ns.store(info.rcvtimeo.count(), std::memory_order_relaxed);
  e->snd_ns.store(info.sndtimeo.count(), std::memory_order_relaxed);
  e->state.store(pack(info), std::memory_order_release);
  return info;
}

void FdRegistry::created(int fd, bool socket, bool user_nonblock, bool shim_nonblock, bool tcp) noexcept {
  Entry* e = entry(fd, true);
  if (!e) return;
  FdInfo info;
  info.kind = FdKind::Managed;
  info.socket = socket;
  info.user_nonblock = user_nonblock;
  info.shim_nonblock = shim_nonblock;
  info.tcp = tcp;
  e->rcv_ns.store(0, std::memory_order_relaxed);
  e->snd_ns.store(0, std::memory_order_relaxed);
  e->state.store(pack(info), std::memory_order_release);
}

void FdRegistry::copy(int from, int to) noexcept {
  FdInfo info = lookup(from);
  Entry* e = entry(to, info.kind != FdKind::Unknown);
  if (!e) return;
  e->rcv_ns.store(info.rcvtimeo.count(), std::memory_order_relaxed);
  e->snd_ns.store(info.sndtimeo.count(), std::memory_order_relaxed);
  e->state.store(info.kind == FdKind::Unknown ? 0 : pack(info), std::memory_order_release);
}

void FdRegistry::set_user_nonblock(int fd, bool on) noexcept {
  Entry* e = entry(fd, false);
  if (!e) return;
  std::uint32_t s = e->state.load(std::memory_order_acquire);
  if ((s & kKindMask) == 0) return;  // unknown: classify() will read the real flag
  while (!e->state.compare_exchange_weak(s, on ? (s | kUserNb) : (s & ~kUserNb), std::memory_order_acq_rel)) {
  }
}

void FdRegistry::set_timeout(int fd, bool receive, std::chrono::nanoseconds t) noexcept {
  Entry* e = entry(fd, false);
  if (!e || (e->state.load(std::memory_order_acquire) & kKindMask) == 0) return;
  (receive ? e->rcv_ns : e->snd_ns).store(t.count(), std::memory_order_relaxed);
}

bool FdRegistry::take_over(int fd) noexcept {
  Entry* e = entry(fd, false);
  if (!e) return false;
  // Once per fd, before the shims first change it: is it still the socket or pipe that was registered?
  // A close made as a raw system call (sanitizer runtimes, syscall(SYS_close)) passes no shim, and the
  // number may since name a regular file, which must never be switched to O_NONBLOCK.
  struct stat st;
  if (::fstat(fd, &st) != 0) return false;
  bool socket = S_ISSOCK(st.st_mode);
  if ((!socket && !S_ISFIFO(st.st_mode)) || socket != bool(e->state.load(std::memory_order_acquire) & kSocket)) {
    forget(fd);  // its hub registration died with the old file; waiters on that file wake
    e->state.store(0, std::memory_order_release);
    classify_new(fd);
    return false;  // this call runs as plain libc; the next one sees the fd as it is now
  }
  int fl = kernel_fcntl(fd, F_GETFL);
  if (fl < 0) return false;
  if (!(fl & O_NONBLOCK) && kernel_fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) return false;
  e->state.fetch_or(kShimNb, std::memory_order_acq_rel);
  return true;
}

}  // namespace fiberio::detail
