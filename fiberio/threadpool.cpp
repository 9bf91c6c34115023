#include "fiberio/threadpool.hpp"

#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>

namespace fiberio {

ThreadPool::ThreadPool(std::size_t threads, int nice) : nice_(nice) {
  if (threads == 0) throw std::invalid_argument("fiberio::ThreadPool: needs at least one thread");
  threads_.reserve(threads);
  for (std::size_t i = 0; i < threads; ++i)
    threads_.emplace_back([this] {
      // Linux niceness is per thread: raise this thread's (lowering its priority needs no privilege).
      if (nice_ != 0) ::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), ::getpriority(PRIO_PROCESS, 0) + nice_);
      worker();
    });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::submit(std::function<void()> task) {
  {
    std::lock_guard lk(mu_);
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
}

void ThreadPool::worker() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

namespace {
// The default pool is process-wide by nature (as gevent's hub.threadpool is per process). A fork()ed
// child has no pool threads, so it forgets the parent's pool (leaking it: its threads do not exist
// there to be joined) and makes its own on first use.
std::atomic<ThreadPool*> g_default{nullptr};
std::mutex g_default_mu;
void forget_default_pool_in_child() { g_default.store(nullptr); }

struct DefaultPoolOwner {
  ~DefaultPoolOwner() {
    // Joined at exit only in the process that created it.
    if (pid == ::getpid()) delete g_default.exchange(nullptr);
  }
  pid_t pid = ::getpid();
};
}  // namespace

ThreadPool& default_threadpool() {
  if (auto* p = g_default.load(std::memory_order_acquire)) return *p;
  std::lock_guard lk(g_default_mu);
  if (auto* p = g_default.load()) return *p;
  static std::once_flag once;
  std::call_once(once, [] { ::pthread_atfork(nullptr, nullptr, forget_default_pool_in_child); });
  auto n = std::max<std::size_t>(4, std::thread::hardware_concurrency());
  int nice = 19;
  if (const char* e = std::getenv("FIBERIO_THREADPOOL_NICE")) nice = std::atoi(e);
  auto* pool = new ThreadPool(n, nice);
  static DefaultPoolOwner owner;
  owner.pid = ::getpid();
  g_default.store(pool, std::memory_order_release);
  return *pool;
}

}  // namespace fiberio
