// Fiber stacks: pooled, recycled, with guard pages under a budget.
//
// * Stacks are carved from slabs (one mmap per kStacksPerSlab stacks) and recycled LIFO on the
//   thread that freed them, so spawning 100,000 fibers costs ~100,000/16 mmaps once, then none.
// * A 64 KiB guard region (PROT_NONE) below a stack turns an overflow into a SIGSEGV that fiberio
//   reports as "fiberio: fiber stack overflow" before the process dies. It is that large so that a
//   frame with a big local array cannot jump it; frames larger still need -fstack-clash-protection
//   (fiberio's own build uses it; see README.md). Each guard splits a mapping in two, and
//   Linux's default vm.max_map_count is 65,530, so only the first `guard_budget` stacks of the process
//   get a guard (default 16,384 ≈ 33k mappings); stacks beyond the budget are unguarded: an overflow
//   there corrupts memory silently, as in any runtime without guards. A free guarded stack is always
//   handed out before an unguarded one, so every fiber has a guard while no more than the budget are
//   live at once — also after a burst of more (before, LIFO reuse handed unguarded stacks of the burst
//   to later fibers). Raise the budget (and vm.max_map_count) or the stack size if you run that many
//   deep fibers at once.
// * Only pages a fiber touched are resident. Up to `hot_cache` freed stacks stay resident for reuse;
//   beyond that, the least recently freed are given back to the kernel (MADV_DONTNEED, in batches of
//   1024, neighbouring stacks in one call) but keep their address range. Reusing a given-back stack
//   costs a page fault again, so raise hot_cache if bursts of more live fibers are the norm.
#pragma once
#include <boost/context/stack_context.hpp>

#include <cstddef>
#include <vector>

namespace fiberio {

struct StackOptions {
  std::size_t size = 128 * 1024;    // usable bytes per fiber stack (rounded up to pages, >= 16 KiB)
  std::size_t guard_budget = 16384; // process-wide number of stacks that get a guard page
  std::size_t hot_cache = 16384;    // freed stacks kept resident per thread
};

// Applies to stacks allocated from now on by the calling thread's hub (size) / the process (budget).
// Environment: FIBERIO_STACK_SIZE (bytes) sets the default size at startup.
void set_stack_options(const StackOptions& opts);
StackOptions stack_options();

namespace detail {

class StackPool {
 public:
  StackPool() = default;
  ~StackPool();
  StackPool(const StackPool&) = delete;
  StackPool& operator=(const StackPool&) = delete;

  // A stack of the current stack_options().size.
  boost::context::stack_context allocate();
  void deallocate(boost::context::stack_context& sc) noexcept;
  std::size_t live() const noexcept { return live_; }
  // Address space this pool has mapped for stacks (guards included); it only grows when more stacks
  // are live at once than ever before.
  std::size_t mapped_bytes() const noexcept { return mapped_; }
  // True if addr lies in a guard page of this pool's stacks (used by the overflow reporter).
  bool is_guard_page(const void* addr) const noexcept;

 private:
  struct Slab {
    char* base;
    std::size_t stride;
    std::size_t count;
    bool guarded;
  };
  struct FreeStacks {
    std::vector<void*> hot;     // freed stack tops, resident
    std::vector<void*> cold;    // freed stack tops, pages returned to the kernel
    std::vector<void*> fresh;   // never used
    void* take() noexcept;      // hot first (resident), then fresh, then cold; null if none
  };
  // Free stacks of one size, guarded ones apart so that they are handed out first. After
  // set_stack_options changes the size, new fibers get stacks of the new size, while stacks of the
  // old size still return to their own class (and serve that size again if it comes back).
  struct SizeClass {
    std::size_t stride;  // stack size + guard region
    FreeStacks guarded, unguarded;
  };
  SizeClass& size_class(std::size_t stride);
  void add_slab(SizeClass& c);
  void trim(SizeClass& c, FreeStacks& f, std::size_t n);
  // The slab holding addr (slabs_ is sorted by address), or null.
  const Slab* slab_of(const void* addr) const noexcept;
  std::vector<Slab> slabs_;
  std::vector<SizeClass> classes_;  // almost always exactly one
  std::size_t live_ = 0;
  std::size_t mapped_ = 0;
};

// The Boost.Context StackAllocator handed to every greenlet's fiber: a pointer to the thread's pool.
struct PooledStack {
  StackPool* pool;
  boost::context::stack_context allocate() { return pool->allocate(); }
  void deallocate(boost::context::stack_context& sc) noexcept { pool->deallocate(sc); }
};

// Installs (once per process) the SIGSEGV reporter and (once per thread) an alternate signal stack.
void install_overflow_reporter(const StackPool* pool);

}  // namespace detail
}  // namespace fiberio
