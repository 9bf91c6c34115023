// FdRegistry: the one process-wide record of fds — which hub watches each one, a generation that
// changes at every close, and the libc shims' view of it. fds are process-wide, so this is too.
//
// Contract with the hubs (hub.cpp):
//  * A hub that adds fd to its poller first reads its close counter (close_counter(fd)), then adds
//    it, then calls watch(fd, hub, seen), which stores the hub as the owner and checks the counter
//    again: a change means fd was closed while it was being added (the registration may be of another
//    file with that number), and the hub undoes it; its waiter sees Closed. The hub keeps the value
//    with its registration and compares it at every later wait: a different generation means the
//    number was closed (and maybe reused) since, so the hub drops the old registration (its waiters
//    see Closed) and registers the fd afresh. A reused number can never inherit a stale registration.
//  * forget(fd)/closing(fd), from any thread: bump the generation, then tell the hub that watches fd.
//    That hub's own thread forgets it at once; another thread's hub is sent a message (post_forget)
//    and wakes to evict the waiters (Go's rule: closing an fd wakes everything waiting on it).
//    watch() stores the owner before re-reading the generation and forget() bumps the generation
//    before taking the owner (both sequentially consistent), so a close racing a first registration
//    is seen by at least one side. The owner is stored only once the fd is in the poller, so a close
//    that finds the owner is ordered after the hub's epoll_ctl (no data race on the fd, ThreadSanitizer
//    agrees); a hub told of a close on another thread does not touch the closed number again.
//  * An fd watched by two hubs at once is marked shared; closing it tells every hub.
//  * In a vfork() child (it shares the parent's memory, not its fd table) forget/closing do nothing:
//    they would wake the parent's fibers for an fd the parent still has open.
//
// The shims' part (what kind of fd it is, the user's own O_NONBLOCK, SO_RCVTIMEO / SO_SNDTIMEO) is
// reset by closing(). Nothing here allocates with malloc or throws: the shims call it from anywhere.
// lookup() and a known fd's classify() are inline: every shimmed read and write asks.
//
// What no registry can see: a close made with a raw syscall(SYS_close), or inside a library the shims
// do not reach (a static libc, another process sharing the fd table). The hub then keeps a stale
// registration, and a new fd with that number is not watched until forget_fd(fd) is called.
#pragma once
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>

namespace fiberio::detail {

class Hub;

enum class FdKind : std::uint8_t {
  Unknown,      // never seen: classify() decides on first use
  Managed,      // a socket, or a pipe made by the shims: may be made cooperative
  Passthrough,  // anything else (regular file, tty, inherited pipe, eventfd...): always plain libc
};

struct FdInfo {
  FdKind kind = FdKind::Unknown;
  bool socket = false;
  bool tcp = false;            // a TCP stream socket (a short read empties it: Hub::note_drained)
  bool user_nonblock = false;  // O_NONBLOCK as the user set it (fcntl, ioctl FIONBIO, SOCK_NONBLOCK)
  bool shim_nonblock = false;  // O_NONBLOCK is on because a shim put it there
  std::chrono::nanoseconds rcvtimeo{0};  // 0: none
  std::chrono::nanoseconds sndtimeo{0};

  // A blocking-style call on it needs emulation (it is shim-owned and the user wants blocking).
  bool emulated() const noexcept { return kind == FdKind::Managed && shim_nonblock && !user_nonblock; }
};

class FdRegistry {
 public:
  static FdRegistry& instance() noexcept { return instance_; }

  // ---- hubs (see the contract above) ----
  // fd's close counter (null if fd is out of the tracked range), read before the hub adds fd to its
  // poller. Its address is stable.
  const std::atomic<std::uint32_t>* close_counter(int fd) noexcept;
  // hub has added fd to its poller, having read `seen` from close_counter(fd) before: from now on a
  // close reaches hub. False if fd was closed meanwhile: hub must undo the registration.
  bool watch(int fd, Hub* hub, std::uint32_t seen) noexcept;
  // hub no longer watches fd (it forgot it on its own thread).
  void unwatch(int fd, Hub* hub) noexcept;
  // Hubs announce themselves so that a close on another thread can reach them safely.
  void hub_started(Hub* hub);
  void hub_ended(Hub* hub) noexcept;
  // At load, and in a fork()ed child (where only the calling thread, and its hub `own`, exist).
  void new_process(Hub* own) noexcept;

  // ---- closing, from any thread ----
  // fd stops being what hubs watch (it is about to be closed, or was closed behind our back): every
  // waiter on it, on any hub, wakes with Closed; a later fd with this number is registered afresh.
  void forget(int fd) noexcept;
  // forget(fd), and the shims' view of it is reset: call before the number can be reused (close,
  // dup2 onto it). Returns false in a vfork child (nothing was done: the parent's memory is ours).
  bool closing(int fd) noexcept;
  // This is a vfork() child, running in its parent's memory: change nothing here (one getpid()).
  bool in_vfork_child() const noexcept;

  // ---- the shims' view ----
  // What is known about fd, without any system call (Unknown if never seen or out of range).
  FdInfo lookup(int fd) const noexcept {
    FdInfo info;
    const Entry* e = entry(fd, false);
    if (!e) return info;
    std::uint32_t s = e->state.load(std::memory_order_acquire);
    info.kind = static_cast<FdKind>(s & kKindMask);
    info.socket = s & kSocket;
    info.user_nonblock = s & kUserNb;
    info.shim_nonblock = s & kShimNb;
    info.tcp = s & kTcp;
    info.rcvtimeo = std::chrono::nanoseconds(e->rcv_ns.load(std::memory_order_relaxed));
    info.sndtimeo = std::chrono::nanoseconds(e->snd_ns.load(std::memory_order_relaxed));
    return info;
  }
  // lookup(), classifying an Unknown fd first (fstat, F_GETFL, and SO_* options for a socket).
  FdInfo classify(int fd) noexcept {
    FdInfo info = lookup(fd);
    return info.kind != FdKind::Unknown ? info : classify_new(fd);
  }
  // A shim just created fd.
  void created(int fd, bool socket, bool user_nonblock, bool shim_nonblock, bool tcp = false) noexcept;
  // to is a duplicate of from (dup*, F_DUPFD): same open file description, same view.
  void copy(int from, int to) noexcept;
  void set_user_nonblock(int fd, bool on) noexcept;
  void set_timeout(int fd, bool receive, std::chrono::nanoseconds t) noexcept;
  // Puts O_NONBLOCK on a Managed fd the user left blocking; false if that failed (stay libc).
  bool take_over(int fd) noexcept;

  // Calls fn(fd) for every fd in [first, last] the registry has ever tracked (close_range, closefrom).
  template <class Fn>
  void for_each_tracked(unsigned first, unsigned last, Fn fn) noexcept {
    for (unsigned c = first >> kChunkBits; c < static_cast<unsigned>(kChunks) && (c << kChunkBits) <= last; ++c) {
      if (!chunks_[c].load(std::memory_order_acquire)) continue;
      unsigned lo = c << kChunkBits, hi = lo + kChunkSize - 1;
      for (unsigned fd = lo < first ? first : lo; fd <= (hi < last ? hi : last); ++fd) fn(static_cast<int>(fd));
    }
  }

 private:
  // Packed state word: kind (2 bits) | socket | user_nonblock | shim_nonblock | tcp | watched by two hubs.
  static constexpr std::uint32_t kKindMask = 3, kSocket = 4, kUserNb = 8, kShimNb = 16, kTcp = 32;
  static constexpr int kChunkBits = 12;
  static constexpr int kChunkSize = 1 << kChunkBits;
  static constexpr int kChunks = 256;  // fds below 1M are tracked; others are always plain libc
  static constexpr int kMaxFd = kChunkSize * kChunks;

  struct Entry {
    std::atomic<std::uint32_t> state;
    std::atomic<std::uint32_t> generation;
    std::atomic<Hub*> owner;   // the hub whose poller has it (null: none)
    std::atomic<bool> shared;  // a second hub watches it too: a close tells every hub
    std::atomic<std::int64_t> rcv_ns;
    std::atomic<std::int64_t> snd_ns;
  };
  static std::uint32_t pack(const FdInfo& i) noexcept {
    return static_cast<std::uint32_t>(i.kind) | (i.socket ? kSocket : 0) | (i.user_nonblock ? kUserNb : 0) |
           (i.shim_nonblock ? kShimNb : 0) | (i.tcp ? kTcp : 0);
  }
  FdInfo classify_new(int fd) noexcept;
  void forget_entry(Entry* e, int fd) noexcept;
  void tell_hubs(int fd, Hub* owner, bool shared) noexcept;
  Entry* entry(int fd, bool create) const noexcept {
    if (fd < 0 || fd >= kMaxFd) [[unlikely]] return nullptr;
    void* chunk = chunks_[fd >> kChunkBits].load(std::memory_order_acquire);
    if (!chunk) [[unlikely]] return create ? new_chunk(fd) : nullptr;
    return static_cast<Entry*>(chunk) + (fd & (kChunkSize - 1));
  }
  static Entry* new_chunk(int fd) noexcept;

  static FdRegistry instance_;
  static std::atomic<void*> chunks_[kChunks];  // each: kChunkSize Entries, mmap'ed on first use
  std::atomic<pid_t> pid_{0};                  // this process (set at first use and in fork children)
};

}  // namespace fiberio::detail
