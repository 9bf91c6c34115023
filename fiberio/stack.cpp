#include "fiberio/stack.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <memory>
#include <new>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

namespace fiberio {

namespace {
constexpr std::size_t kStacksPerSlab = 16;
constexpr std::size_t kMinStack = 16 * 1024;
// Freed stacks beyond hot_cache are given back to the kernel this many at a time (batched madvise).
constexpr std::size_t kTrimBatch = 1024;  // room for Boost's context record and a few frames

std::size_t page_size() {
  static const std::size_t p = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return p;
}

std::size_t round_pages(std::size_t n) { return (n + page_size() - 1) / page_size() * page_size(); }

// The inaccessible region below each guarded stack. One page can be jumped by a single large frame
// (a 16 KiB local array whose far end is written first lands in the neighbouring stack, silently);
// 64 KiB of address space per stack cannot be jumped by frames that size, and costs no memory.
// Larger frames need the compiler's stack-clash protection (-fstack-clash-protection), which probes
// every page as the frame grows: fiberio is built with it, and README.md asks it of users' code.
std::size_t guard_bytes() { return std::max<std::size_t>(64 * 1024, page_size()); }

StackOptions initial_options() {
  StackOptions o;
  if (const char* s = std::getenv("FIBERIO_STACK_SIZE")) {
    char* end = nullptr;
    unsigned long long v = std::strtoull(s, &end, 10);
    if (end != s && v >= kMinStack) o.size = static_cast<std::size_t>(v);
  }
  return o;
}

// Process-wide because both the mapping limit and the option are process-wide. The size and the
// hot-cache bound are also kept in atomics: they are read on every spawn and every fiber exit.
std::mutex g_opts_mu;
StackOptions g_opts = initial_options();
std::atomic<std::size_t> g_size{g_opts.size};
std::atomic<std::size_t> g_hot_cache{g_opts.hot_cache};
std::atomic<std::size_t> g_guarded{0};
}  // namespace

void set_stack_options(const StackOptions& opts) {
  std::lock_guard lk(g_opts_mu);
  g_opts = opts;
  g_size.store(opts.size, std::memory_order_relaxed);
  g_hot_cache.store(opts.hot_cache, std::memory_order_relaxed);
}

StackOptions stack_options() {
  std::lock_guard lk(g_opts_mu);
  return g_opts;
}

namespace detail {

StackPool::~StackPool() {
  // Stacks still live belong to fibers that never terminated; keep their memory mapped.
  if (live_ != 0) return;
  for (auto& s : slabs_) ::munmap(s.base, s.stride * s.count);
}

StackPool::SizeClass& StackPool::size_class(std::size_t stride) {
  for (auto& c : classes_)
    if (c.stride == stride) return c;
  classes_.push_back(SizeClass{stride, {}, {}});
  return classes_.back();
}

void* StackPool::FreeStacks::take() noexcept {
  for (auto* list : {&hot, &fresh, &cold}) {
    if (list->empty()) continue;
    void* top = list->back();
    list->pop_back();
    return top;
  }
  return nullptr;
}

const StackPool::Slab* StackPool::slab_of(const void* addr) const noexcept {
  auto a = reinterpret_cast<std::uintptr_t>(addr);
  auto it = std::upper_bound(slabs_.begin(), slabs_.end(), a,
                             [](std::uintptr_t v, const Slab& s) { return v < reinterpret_cast<std::uintptr_t>(s.base); });
  if (it == slabs_.begin()) return nullptr;
  const Slab& s = *--it;
  return a < reinterpret_cast<std::uintptr_t>(s.base) + s.stride * s.count ? &s : nullptr;
}

void StackPool::add_slab(SizeClass& c) {
  std::size_t bytes = c.stride * kStacksPerSlab;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  ::madvise(p, bytes, MADV_NOHUGEPAGE);  // a huge page would make every touched stack 2 MiB resident
  char* base = static_cast<char*>(p);
  std::size_t budget = stack_options().guard_budget;
  bool guarded = g_guarded.fetch_add(kStacksPerSlab) + kStacksPerSlab <= budget;
  if (!guarded) g_guarded.fetch_sub(kStacksPerSlab);
  FreeStacks& free = guarded ? c.guarded : c.unguarded;
  free.fresh.reserve(free.fresh.size() + kStacksPerSlab);
  Slab slab{base, c.stride, kStacksPerSlab, guarded};
  try {
    slabs_.insert(std::upper_bound(slabs_.begin(), slabs_.end(), slab,
                                   [](const Slab& a, const Slab& b) { return a.base < b.base; }),
                  slab);
  } catch (...) {
    ::munmap(p, bytes);
    if (guarded) g_guarded.fetch_sub(kStacksPerSlab);
    throw;
  }
  for (std::size_t i = kStacksPerSlab; i-- > 0;) {
    char* lo = base + i * c.stride;
    if (guarded) ::mprotect(lo, guard_bytes(), PROT_NONE);
    free.fresh.push_back(lo + c.stride);
  }
  mapped_ += bytes;
}

boost::context::stack_context StackPool::allocate() {
  std::size_t stride = round_pages(std::max(g_size.load(std::memory_order_relaxed), kMinStack)) + guard_bytes();
  SizeClass& c = size_class(stride);
  // Room, now, for every live stack to come back: deallocate() runs where nothing may throw and,
  // short of memory, must still not lose the stack (a kill under memory pressure frees stacks).
  for (auto* hot : {&c.guarded.hot, &c.unguarded.hot})
    if (std::size_t need = hot->size() + live_ + 1; hot->capacity() < need) hot->reserve(std::max(need, 2 * hot->capacity()));
  void* top = c.guarded.take();
  if (!top) top = c.unguarded.take();
  if (!top) {
    add_slab(c);
    top = c.guarded.take();
    if (!top) top = c.unguarded.take();
  }
  ++live_;
  boost::context::stack_context sc;
  sc.sp = top;
  sc.size = stride - guard_bytes();
  return sc;
}

void StackPool::deallocate(boost::context::stack_context& sc) noexcept {
  --live_;
#if defined(__SANITIZE_ADDRESS__)
  // Frames the last fiber left behind (redzones of locals it never returned past) stay poisoned in
  // ASan's shadow; the next fiber on this stack must not trip over them.
  ASAN_UNPOISON_MEMORY_REGION(static_cast<char*>(sc.sp) - sc.size, sc.size);
#endif
  try {
    SizeClass& c = size_class(sc.size + guard_bytes());
    const Slab* slab = slab_of(static_cast<char*>(sc.sp) - 1);
    FreeStacks& free = slab && slab->guarded ? c.guarded : c.unguarded;
    free.hot.push_back(sc.sp);
    std::size_t cap = g_hot_cache.load(std::memory_order_relaxed);
    if (free.hot.size() >= cap + kTrimBatch) trim(c, free, free.hot.size() - cap);
  } catch (...) {
    // Out of memory for the free list: the stack's range is leaked, never reused while in use.
  }
}

void StackPool::trim(SizeClass& c, FreeStacks& f, std::size_t n) {
  // The n least recently freed (the front of the LIFO list) are the least likely to be reused soon.
  std::vector<void*> victims(f.hot.begin(), f.hot.begin() + static_cast<std::ptrdiff_t>(n));
  f.hot.erase(f.hot.begin(), f.hot.begin() + static_cast<std::ptrdiff_t>(n));
  std::sort(victims.begin(), victims.end());
  // Stacks one stride apart are contiguous and fully mapped (guard pages included), so a run of them
  // — typically whole slabs after a burst — costs one madvise and one TLB flush, not one per stack.
  const auto stride = static_cast<std::ptrdiff_t>(c.stride);
  const std::size_t usable = c.stride - guard_bytes();
  for (std::size_t i = 0; i < victims.size();) {
    std::size_t j = i + 1;
    while (j < victims.size() && static_cast<char*>(victims[j]) - static_cast<char*>(victims[j - 1]) == stride) ++j;
    char* lo = static_cast<char*>(victims[i]) - usable;
    char* hi = static_cast<char*>(victims[j - 1]);
    ::madvise(lo, static_cast<std::size_t>(hi - lo), MADV_DONTNEED);
    i = j;
  }
  f.cold.insert(f.cold.end(), victims.begin(), victims.end());
}

bool StackPool::is_guard_page(const void* addr) const noexcept {
  const Slab* s = slab_of(addr);
  if (!s || !s->guarded) return false;
  return static_cast<std::size_t>(static_cast<const char*>(addr) - s->base) % s->stride < guard_bytes();
}

namespace {
thread_local const StackPool* t_pool = nullptr;
struct sigaction g_prev_segv;

void write_str(const char* s) { [[maybe_unused]] auto r = ::write(2, s, std::strlen(s)); }

void on_segv(int sig, siginfo_t* info, void* uctx) {
  if (t_pool && t_pool->is_guard_page(info->si_addr)) {
    write_str("fiberio: fiber stack overflow (hit the guard page below a fiber's stack); "
              "raise fiberio::StackOptions::size or FIBERIO_STACK_SIZE\n");
  }
  // Hand over to whoever was there before (or the default action, which dumps core).
  if (g_prev_segv.sa_flags & SA_SIGINFO) {
    if (g_prev_segv.sa_sigaction) return g_prev_segv.sa_sigaction(sig, info, uctx);
  } else if (g_prev_segv.sa_handler != SIG_DFL && g_prev_segv.sa_handler != SIG_IGN) {
    return g_prev_segv.sa_handler(sig);
  }
  ::signal(SIGSEGV, SIG_DFL);  // returning re-executes the faulting access, which now dumps core
}
}  // namespace

void install_overflow_reporter(const StackPool* pool) {
  t_pool = pool;
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGSEGV, &sa, &g_prev_segv);
  });
  stack_t cur{};
  if (::sigaltstack(nullptr, &cur) == 0 && !(cur.ss_flags & SS_DISABLE) && cur.ss_sp) return;
  // One alternate stack per hub thread, so the reporter can run after the fiber's stack is exhausted.
  // Disabled before it is freed at thread exit: the kernel must never deliver a signal onto freed memory.
  struct AltStack {
    std::unique_ptr<char[]> mem;
    ~AltStack() {
      if (!mem) return;
      stack_t off{};
      off.ss_flags = SS_DISABLE;
      ::sigaltstack(&off, nullptr);
    }
  };
  static thread_local AltStack altstack;
  std::size_t sz = 64 * 1024;
  altstack.mem.reset(new char[sz]);
  stack_t ss{};
  ss.ss_sp = altstack.mem.get();
  ss.ss_size = sz;
  ::sigaltstack(&ss, nullptr);
}

}  // namespace detail
}  // namespace fiberio
