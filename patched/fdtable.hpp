// What the shims remember about each fd: whether they may make it cooperative, the user's own view of
// O_NONBLOCK (the shims may set it underneath), and the SO_RCVTIMEO / SO_SNDTIMEO a blocking call
// must honour once the kernel no longer applies them (a nonblocking socket ignores them).
//
// Process-wide (fds are), lock-free, indexed by fd. An entry is reset whenever an fd is created or
// closed through a shim. An fd created and closed behind the shims' back (inside libc) can leave a
// stale entry; the worst that does is make a call on a reused number behave as plain libc.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>

namespace fiberio::patched::detail {

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

// Nothing here allocates with malloc or throws: the shims call it from anywhere. lookup() and a known
// fd's classify() are inline: every shimmed read and write asks.
class FdTable {
 public:
  static FdTable& instance() noexcept {
    static constinit FdTable table;  // constant-initialized: safe however early a shim runs
    return table;
  }

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
  // fd was closed (or is about to be reused by dup2).
  void forget(int fd) noexcept;
  // to is a duplicate of from (dup*, F_DUPFD): same open file description, same view.
  void copy(int from, int to) noexcept;
  void set_user_nonblock(int fd, bool on) noexcept;
  void set_timeout(int fd, bool receive, std::chrono::nanoseconds t) noexcept;
  // Puts O_NONBLOCK on a Managed fd the user left blocking; false if that failed (stay libc).
  bool take_over(int fd) noexcept;

 private:
  // Packed state word: kind (2 bits) | socket | user_nonblock | shim_nonblock | tcp.
  static constexpr std::uint32_t kKindMask = 3, kSocket = 4, kUserNb = 8, kShimNb = 16, kTcp = 32;
  static constexpr int kChunkBits = 12;
  static constexpr int kChunkSize = 1 << kChunkBits;
  static constexpr int kChunks = 256;  // fds below 1M are tracked; others are always plain libc
  static constexpr int kMaxFd = kChunkSize * kChunks;

  struct Entry {
    std::atomic<std::uint32_t> state;
    std::atomic<std::int64_t> rcv_ns;
    std::atomic<std::int64_t> snd_ns;
  };
  static std::uint32_t pack(const FdInfo& i) noexcept {
    return static_cast<std::uint32_t>(i.kind) | (i.socket ? kSocket : 0) | (i.user_nonblock ? kUserNb : 0) |
           (i.shim_nonblock ? kShimNb : 0) | (i.tcp ? kTcp : 0);
  }
  FdInfo classify_new(int fd) noexcept;
  Entry* entry(int fd, bool create) const noexcept {
    if (fd < 0 || fd >= kMaxFd) [[unlikely]] return nullptr;
    void* chunk = chunks_[fd >> kChunkBits].load(std::memory_order_acquire);
    if (!chunk) [[unlikely]] return create ? new_chunk(fd) : nullptr;
    return static_cast<Entry*>(chunk) + (fd & (kChunkSize - 1));
  }
  static Entry* new_chunk(int fd) noexcept;
  static std::atomic<void*> chunks_[kChunks];  // each: kChunkSize Entries, mmap'ed on first use
};

}  // namespace fiberio::patched::detail
