#include "patched/fdtable.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>

#include <atomic>

#include "patched/real.hpp"

namespace fiberio::patched::detail {

namespace {
std::chrono::nanoseconds query_timeout(int fd, int name) noexcept {
  timeval tv{};
  socklen_t len = sizeof tv;
  if (real::getsockopt(fd, SOL_SOCKET, name, &tv, &len) != 0) return std::chrono::nanoseconds{0};
  return std::chrono::seconds(tv.tv_sec) + std::chrono::microseconds(tv.tv_usec);
}

int query_int(int fd, int name) noexcept {
  int v = -1;
  socklen_t len = sizeof v;
  return real::getsockopt(fd, SOL_SOCKET, name, &v, &len) == 0 ? v : -1;
}
}  // namespace

std::atomic<void*> FdTable::chunks_[FdTable::kChunks];

FdTable::Entry* FdTable::new_chunk(int fd) noexcept {
  auto& slot = chunks_[fd >> kChunkBits];
  void* chunk = nullptr;
  // mmap, not malloc: a shim may run inside a malloc replacement's own initialisation.
  void* fresh = ::mmap(nullptr, sizeof(Entry) * kChunkSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (fresh == MAP_FAILED) return nullptr;
  if (slot.compare_exchange_strong(chunk, fresh, std::memory_order_acq_rel)) chunk = fresh;
  else ::munmap(fresh, sizeof(Entry) * kChunkSize);
  return static_cast<Entry*>(chunk) + (fd & (kChunkSize - 1));
}

FdInfo FdTable::classify_new(int fd) noexcept {
  FdInfo info;
  Entry* e = entry(fd, true);
  struct stat st;
  int fl = real::fcntl(fd, F_GETFL, nullptr);
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

void FdTable::created(int fd, bool socket, bool user_nonblock, bool shim_nonblock, bool tcp) noexcept {
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

void FdTable::forget(int fd) noexcept {
  if (Entry* e = entry(fd, false)) {
    e->state.store(0, std::memory_order_release);
    e->rcv_ns.store(0, std::memory_order_relaxed);
    e->snd_ns.store(0, std::memory_order_relaxed);
  }
}

void FdTable::copy(int from, int to) noexcept {
  FdInfo info = lookup(from);
  if (info.kind == FdKind::Unknown) return forget(to);
  Entry* e = entry(to, true);
  if (!e) return;
  e->rcv_ns.store(info.rcvtimeo.count(), std::memory_order_relaxed);
  e->snd_ns.store(info.sndtimeo.count(), std::memory_order_relaxed);
  e->state.store(pack(info), std::memory_order_release);
}

void FdTable::set_user_nonblock(int fd, bool on) noexcept {
  Entry* e = entry(fd, false);
  if (!e) return;
  std::uint32_t s = e->state.load(std::memory_order_acquire);
  if ((s & kKindMask) == 0) return;  // unknown: classify() will read the real flag
  while (!e->state.compare_exchange_weak(s, on ? (s | kUserNb) : (s & ~kUserNb), std::memory_order_acq_rel)) {
  }
}

void FdTable::set_timeout(int fd, bool receive, std::chrono::nanoseconds t) noexcept {
  Entry* e = entry(fd, false);
  if (!e || (e->state.load(std::memory_order_acquire) & kKindMask) == 0) return;
  (receive ? e->rcv_ns : e->snd_ns).store(t.count(), std::memory_order_relaxed);
}

bool FdTable::take_over(int fd) noexcept {
  Entry* e = entry(fd, false);
  if (!e) return false;
  int fl = real::fcntl(fd, F_GETFL, nullptr);
  if (fl < 0) return false;
  if (!(fl & O_NONBLOCK) &&
      real::fcntl(fd, F_SETFL, reinterpret_cast<void*>(static_cast<long>(fl | O_NONBLOCK))) != 0)
    return false;
  e->state.fetch_or(kShimNb, std::memory_order_acq_rel);
  return true;
}

}  // namespace fiberio::patched::detail
