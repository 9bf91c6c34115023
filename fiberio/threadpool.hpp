// ThreadPool: run CPU-heavy or unavoidably blocking work on OS threads while only the calling fiber
// waits (the hub keeps serving everyone else). Results come back as AsyncResult, exceptions included.
#pragma once
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

#include "fiberio/event.hpp"

namespace fiberio {

namespace detail {
// Calls wait_once() until it returns, catching kills and Timeouts meanwhile (an offloaded task may
// still be writing into the caller's memory, so the caller must not unwind before it ends). Then,
// with deliver, throws the first interruption caught; without, leaves it pending for the fiber's
// next suspension point (for callers that must not throw: the libc shims).
void wait_for_task(const std::function<void()>& wait_once, bool deliver);
}  // namespace detail

// How a pool's threads compete for a CPU with the hubs' I/O threads (Linux scheduling class).
enum class ThreadPriority {
  normal,      // as the creating thread
  low,         // nice +10
  background,  // SCHED_IDLE: a hub thread that wakes up preempts it at once; it uses what CPU is left
};

class ThreadPool {
 public:
  // priority: with a spare core it changes nothing; on a shared core, low/background keep CPU work
  // offloaded here from starving the latency-sensitive hubs.
  explicit ThreadPool(std::size_t threads, ThreadPriority priority = ThreadPriority::normal);
  // Runs what is already queued, then joins the threads.
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  std::size_t size() const noexcept { return threads_.size(); }
  ThreadPriority priority() const noexcept { return priority_; }

  // Queues f(args...) and returns at once; the AsyncResult gets its result or exception.
  template <class F, class... Args>
  auto spawn(F&& f, Args&&... args) {
    using R = std::invoke_result_t<std::decay_t<F>&, std::decay_t<Args>...>;
    AsyncResult<R> result;
    submit([result, fn = std::forward<F>(f), tup = std::make_tuple(std::forward<Args>(args)...)]() mutable {
      try {
        if constexpr (std::is_void_v<R>) {
          std::apply(fn, std::move(tup));
          result.set();
        } else {
          result.set(std::apply(fn, std::move(tup)));
        }
      } catch (...) {
        result.set_exception(std::current_exception());
      }
    });
    return result;
  }

  // Runs f(args...) on a pool thread; blocks only the calling fiber; returns its result or rethrows.
  // A kill or a Timeout that arrives meanwhile takes effect when the task has returned, not before:
  // a thread cannot be interrupted, and the task may use memory on the caller's stack (references it
  // captured), which unwinding would free under it. So a task that never returns leaves its caller
  // unkillable: give long tasks their own way to stop (a flag, a deadline). To leave a task running
  // and go on, use spawn() with arguments it owns, and AsyncResult::get(timeout).
  template <class F, class... Args>
  auto apply(F&& f, Args&&... args) {
    auto result = spawn(std::forward<F>(f), std::forward<Args>(args)...);
    detail::wait_for_task([&result] { result.wait(); }, /*deliver=*/true);
    return result.get();
  }

 private:
  void submit(std::function<void()> task);
  void worker();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  ThreadPriority priority_;
  std::vector<std::thread> threads_;
};

// The per-process default pool (max(4, hardware threads) threads), created on first use and again
// in a fork()ed child. Its threads run as ThreadPriority::background (FIBERIO_THREADPOOL_PRIORITY=
// normal|low|background overrides it): offloaded CPU work (run_in_thread) then never starves a hub
// serving I/O on the same core (seed 000's starvation test); with spare cores it runs at full speed.
ThreadPool& default_threadpool();

// default_threadpool().apply(f, args...).
template <class F, class... Args>
auto run_in_thread(F&& f, Args&&... args) {
  return default_threadpool().apply(std::forward<F>(f), std::forward<Args>(args)...);
}

}  // namespace fiberio
