#include "fiberio/stack.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <memory>
#include <new>

namespace fiberio {

namespace {
constexpr std::size_t kStacksPerSlab = 16;

std::size_t page_size() {
  static const std::size_t p = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return p;
}

std::size_t round_pages(std::size_t n) { return (n + page_size() - 1) / page_size() * page_size(); }

StackOptions initial_options() {
  StackOptions o;
  if (const char* s = std::getenv("FIBERIO_STACK_SIZE")) {
    char* end = nullptr;
    unsigned long long v = std::strtoull(s, &end, 10);
    if (end != s && v >= 16 * 1024) o.size = static_cast<std::size_t>(v);
  }
  return o;
}

// Process-wide because both the mapping limit and the option are process-wide.
std::mutex g_opts_mu;
StackOptions g_opts = initial_options();
std::atomic<std::size_t> g_guarded{0};
}  // namespace

void set_stack_options(const StackOptions& opts) {
  std::lock_guard lk(g_opts_mu);
  g_opts = opts;
}

StackOptions stack_options() {
  std::lock_guard lk(g_opts_mu);
  return g_opts;
}

namespace detail {

StackPool::StackPool() : stride_(round_pages(stack_options().size) + page_size()) {}

StackPool::~StackPool() {
  // Stacks still live belong to fibers that never terminated; keep their memory mapped.
  if (live_ != 0) return;
  for (auto& s : slabs_) ::munmap(s.base, s.stride * s.count);
}

void StackPool::add_slab() {
  std::size_t bytes = stride_ * kStacksPerSlab;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  ::madvise(p, bytes, MADV_NOHUGEPAGE);  // a huge page would make every touched stack 2 MiB resident
  char* base = static_cast<char*>(p);
  std::size_t budget = stack_options().guard_budget;
  bool guarded = g_guarded.fetch_add(kStacksPerSlab) + kStacksPerSlab <= budget;
  if (!guarded) g_guarded.fetch_sub(kStacksPerSlab);
  for (std::size_t i = kStacksPerSlab; i-- > 0;) {
    char* lo = base + i * stride_;
    if (guarded) ::mprotect(lo, page_size(), PROT_NONE);
    fresh_.push_back(lo + stride_);
  }
  slabs_.push_back({base, stride_, kStacksPerSlab, guarded});
}

boost::context::stack_context StackPool::allocate() {
  void* top;
  if (!hot_.empty()) {
    top = hot_.back();
    hot_.pop_back();
  } else if (!fresh_.empty()) {
    top = fresh_.back();
    fresh_.pop_back();
  } else if (!cold_.empty()) {
    top = cold_.back();
    cold_.pop_back();
  } else {
    add_slab();
    top = fresh_.back();
    fresh_.pop_back();
  }
  ++live_;
  boost::context::stack_context sc;
  sc.sp = top;
  sc.size = stride_ - page_size();
  return sc;
}

void StackPool::deallocate(boost::context::stack_context& sc) noexcept {
  --live_;
  try {
    if (hot_.size() < stack_options().hot_cache) {
      hot_.push_back(sc.sp);
    } else {
      ::madvise(static_cast<char*>(sc.sp) - sc.size, sc.size, MADV_DONTNEED);
      cold_.push_back(sc.sp);
    }
  } catch (...) {
    // Out of memory for the free list: the stack's range is leaked, never reused while in use.
  }
}

bool StackPool::is_guard_page(const void* addr) const noexcept {
  auto a = reinterpret_cast<std::uintptr_t>(addr);
  for (const auto& s : slabs_) {
    auto b = reinterpret_cast<std::uintptr_t>(s.base);
    if (!s.guarded || a < b || a >= b + s.stride * s.count) continue;
    return (a - b) % s.stride < page_size();
  }
  return false;
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
  static thread_local std::unique_ptr<char[]> altstack;
  std::size_t sz = 64 * 1024;
  altstack.reset(new char[sz]);
  stack_t ss{};
  ss.ss_sp = altstack.get();
  ss.ss_size = sz;
  ::sigaltstack(&ss, nullptr);
}

}  // namespace detail
}  // namespace fiberio
