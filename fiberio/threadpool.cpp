#include "fiberio/threadpool.hpp"

#include "fiberio/detail/interruption.hpp"
#include "fiberio/detail/schedule.hpp"
#include "fiberio/hub.hpp"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string_view>

namespace fiberio {

void detail::wait_for_task(const std::function<void()>& wait_once, bool deliver) {
  Interruption caught;
  for (;;) {
    try {
      wait_once();
      break;
    } catch (...) {
      if (!caught.take_current()) throw;  // not an interruption: the wait itself failed
    }
  }
  if (!caught) return;
  caught.rearm();
  if (deliver) check_interrupts();  // throws it now
}

ThreadPool::ThreadPool(std::size_t threads, ThreadPriority priority) : priority_(priority) {
  if (threads == 0) throw std::invalid_argument("fiberio::ThreadPool: needs at least one thread");
  threads_.reserve(threads);
  for (std::size_t i = 0; i < threads; ++i)
    threads_.emplace_back([this] {
      // Linux schedules threads, so class and niceness are set per thread; lowering either needs no
      // privilege. Failure just leaves the thread at normal priority.
      auto tid = static_cast<pid_t>(::syscall(SYS_gettid));
      if (priority_ == ThreadPriority::low) {
        ::setpriority(PRIO_PROCESS, static_cast<id_t>(tid), ::getpriority(PRIO_PROCESS, 0) + 10);
      } else if (priority_ == ThreadPriority::background) {
        sched_param p{};
        ::sched_setscheduler(tid, SCHED_IDLE, &p);
      }
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
  // Under a testing Schedule, count the job in flight until it has delivered its result (set first,
  // then counted out: the hub sees the wake-up or the count, never neither).
  if (detail::Hub* hub = detail::Hub::get(); hub && hub->schedule()) [[unlikely]] {
    auto in_flight = hub->schedule()->offloads_in_flight();
    ++*in_flight;
    task = [task = std::move(task), in_flight] {
      struct CountOut {
        std::atomic<int>& n;
        ~CountOut() { --n; }
      } out{*in_flight};
      task();
    };
  }
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
  auto priority = ThreadPriority::background;
  if (const char* e = std::getenv("FIBERIO_THREADPOOL_PRIORITY")) {
    std::string_view v(e);
    if (v == "normal") priority = ThreadPriority::normal;
    else if (v == "low") priority = ThreadPriority::low;
  }
  auto* pool = new ThreadPool(n, priority);
  static DefaultPoolOwner owner;
  owner.pid = ::getpid();
  g_default.store(pool, std::memory_order_release);
  return *pool;
}

}  // namespace fiberio
