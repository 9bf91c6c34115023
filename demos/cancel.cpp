// cancel: seed 003's thredo slide ("Ever tried to cancel a thread while it's working?"), with greenlets.
//
// 1. thredo's example as it is: a worker greenlet takes items from a Queue and prints them; main puts
//    0..9 (sleeping --interval-ms between them; the seed sleeps 1 s) and then a sentinel, and joins it.
// 2. kill() of a greenlet blocked in each kind of wait: a Queue get, a socket recv (a loopback TCP
//    connection on which nothing arrives), a sleep, and a thread-pool call. Each is left blocked for
//    a moment, then killed; the time from kill() to the greenlet being dead is printed.
//
// The thread-pool case is shown twice, because an OS thread cannot be interrupted:
//   run_in_thread   the greenlet waits for its task: fiberio delivers the kill only once the task has
//                   returned (the task may still use the greenlet's stack), so the kill takes as long
//                   as the task has left. Its result is discarded.
//   ThreadPool::spawn + AsyncResult::get   the greenlet waits on a result the task owns: the kill is
//                   immediate, the OS thread runs its task to completion anyway and its result is
//                   discarded (nobody reads it). The demo prints when that thread's work actually ends.
#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "demo_util.hpp"
#include "fiberio/address.hpp"
#include "fiberio/event.hpp"
#include "fiberio/greenlet.hpp"
#include "fiberio/queue.hpp"
#include "fiberio/socket.hpp"
#include "fiberio/threadpool.hpp"
#include "fiberio/time.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Ms = std::chrono::duration<double, std::milli>;

Clock::time_point g_start;
double now_ms() { return Ms(Clock::now() - g_start).count(); }

// thredo's worker: take items until the sentinel (None there, an empty optional here).
void worker(fiberio::Queue<std::optional<int>>& q) {
  for (;;) {
    auto item = q.get();
    if (!item) break;
    demo::say("Got: {}", *item);
  }
}

// Spawns `body`, lets it block for `blocked`, kills it, and prints how long the kill took to land.
template <class Body>
void kill_blocked(const std::string& what, Body body, std::chrono::milliseconds blocked) {
  auto g = fiberio::spawn(std::move(body));
  fiberio::sleep(blocked);
  auto t0 = Clock::now();
  g.kill(/*block=*/false);
  double requested = Ms(Clock::now() - t0).count();
  g.join();
  double dead = Ms(Clock::now() - t0).count();
  demo::say("  {:<34} dead {:.3f} ms after kill() (kill(block=false) returned in {:.3f} ms; killed()={})", what, dead,
            requested, g.killed());
}

}  // namespace

int main(int argc, char** argv) {
  demo::Cli cli("cancel",
                "thredo's cancellation slide (seed 003) with greenlets: a queue worker, then kill() of greenlets "
                "blocked in a queue get, a recv, a sleep and a thread-pool call.",
                {
                    {"interval-ms", 'i', "MS", "part 1: pause between items (default 100; the seed sleeps 1000)"},
                    {"task-ms", 't', "MS", "part 2: how long the thread-pool task blocks its OS thread (default 1000)"},
                    {"blocked-ms", 'b', "MS", "part 2: how long each greenlet is left blocked before the kill (default 50)"},
                });
  cli.parse(argc, argv);
  auto interval = std::chrono::milliseconds(cli.get_int("interval-ms", 100, 0, 10000));
  auto task = std::chrono::milliseconds(cli.get_int("task-ms", 1000, 1, 60000));
  auto blocked = std::chrono::milliseconds(cli.get_int("blocked-ms", 50, 0, 10000));
  g_start = Clock::now();
  try {
    demo::say("1. thredo's example: a worker greenlet over a queue");
    {
      fiberio::Queue<std::optional<int>> q;
      auto t = fiberio::spawn([&q] { worker(q); });
      for (int n = 0; n < 10; ++n) {
        q.put(n);
        fiberio::sleep(interval);
      }
      q.put(std::nullopt);
      t.join();
      demo::say("  worker finished (got the sentinel) at +{:.0f} ms", now_ms());
    }

    demo::say("2. kill() of a greenlet blocked in each kind of wait (left blocked {} ms, then killed)", blocked.count());
    {
      fiberio::Queue<int> q;
      kill_blocked("a queue get", [&q] { q.get(); }, blocked);
    }
    {
      fiberio::Socket listener = fiberio::Socket::tcp();
      listener.bind(fiberio::Address("127.0.0.1", 0));
      listener.listen();
      fiberio::Socket client = fiberio::Socket::tcp();
      client.connect(listener.local_address());
      auto [server_side, peer] = listener.accept();
      kill_blocked("a socket recv (nothing arrives)",
                   [&client] {
                     char buf[64];
                     client.recv(buf);
                   },
                   blocked);
    }
    kill_blocked("a sleep (60 s)", [] { fiberio::sleep(60s); }, blocked);

    fiberio::ThreadPool pool(2);
    {
      auto finished = std::make_shared<std::atomic<double>>(-1);
      double killed_at = 0;
      auto g = fiberio::spawn([&] {
        return fiberio::run_in_thread([task, finished] {
          std::this_thread::sleep_for(task);  // blocks the OS thread: nothing can interrupt it
          *finished = now_ms();
          return 42;
        });
      });
      fiberio::sleep(blocked);
      auto t0 = Clock::now();
      killed_at = now_ms();
      g.kill(false);
      g.join();
      double dead = Ms(Clock::now() - t0).count();
      demo::say("  {:<34} dead {:.3f} ms after kill(): run_in_thread waits for its task, the kill lands when it "
                "returns", "a thread-pool call (run_in_thread)", dead);
      demo::say("    its OS thread: killed at +{:.0f} ms, the task's {} ms sleep ran on and finished at +{:.0f} ms; "
                "result 42 discarded", killed_at, task.count(), finished->load());
    }
    {
      auto finished = std::make_shared<fiberio::Event>();
      auto finished_at = std::make_shared<std::atomic<double>>(-1);
      double killed_at = 0;
      auto g = fiberio::spawn([&pool, task, finished, finished_at] {
        // The task owns everything it touches (copies, shared_ptrs): the greenlet may leave without it.
        auto r = pool.spawn([task, finished, finished_at] {
          std::this_thread::sleep_for(task);
          *finished_at = now_ms();
          finished->set();
          return 42;
        });
        return r.get();
      });
      fiberio::sleep(blocked);
      auto t0 = Clock::now();
      killed_at = now_ms();
      g.kill(false);
      g.join();
      double dead = Ms(Clock::now() - t0).count();
      demo::say("  {:<34} dead {:.3f} ms after kill(); the OS thread goes on ...", "a thread-pool result (spawn + get)",
                dead);
      finished->wait();
      demo::say("    its OS thread: killed at +{:.0f} ms, the task's {} ms sleep ran on and finished at +{:.0f} ms "
                "({:.0f} ms after the kill); result 42 discarded (nobody holds the AsyncResult)",
                killed_at, task.count(), finished_at->load(), finished_at->load() - killed_at);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cancel: %s\n", e.what());
    return 1;
  }
  demo::say("done at +{:.0f} ms", now_ms());
  return 0;
}
