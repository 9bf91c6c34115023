// Kills at every suspension point: each scenario runs in a target greenlet that a killer greenlet
// kills after k hub rounds (k = 0, 1, 2, ... until the scenario finishes first), so every point where
// the target parks — and every point where a peer of it parks — sees a kill in one of the runs. After
// each run the scenario's own invariants must hold (nothing lost, nothing left locked, peers
// unblocked), and the process must be as before: no fd left open, no greenlet left alive, the hub
// still sleeping and waking on time. Under ASan (scripts/sanitize.sh) this is also a use-after-free
// hunt: the offload and DNS scenarios finish their threads' work after the greenlet that asked for it
// is gone.
#include <dirent.h>
#include <sys/wait.h>

#include <fiberio/fiberio.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "support/leak_check.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;

namespace {

// What the open fds are, for a failure message.
std::string fd_table() {
  std::string out;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (auto* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      char target[256] = {};
      ::readlink(("/proc/self/fd/" + std::string(e->d_name)).c_str(), target, sizeof target - 1);
      out += std::string(e->d_name) + " -> " + target + "\n";
    }
    ::closedir(d);
  }
  return out;
}

// One scenario: `run` is the target's work; `check(finished)` asserts its invariants once the target
// is gone (finished: it ran to the end before the kill). The peers it spawns are killed after the
// check, before the scenario's members (which they use) are destroyed.
struct World {
  virtual ~World() = default;
  virtual void run() = 0;
  virtual void check(bool finished) = 0;
  // One round of the killer's count: a hub round, or for scenarios that wait on time or on other
  // threads (where hub rounds pass by the thousand while the target sleeps), a slice of time.
  virtual void step() { fiberio::yield(); }
  std::vector<fiberio::GreenletRef> peers;
};

// Runs the sweep; returns how many kill points it took before the scenario outran the killer.
template <class W>
int sweep(int max_rounds = 3000) {
  fiberio::yield();  // the hub's own fds (epoll, eventfd) are not the scenario's
  const std::size_t fds = fiberio_test::count_fds();
  const std::size_t greenlets = fiberio::live_greenlets();
  for (int k = 0; k < max_rounds; ++k) {
    bool finished = false;
    {
      W world;
      auto target = fiberio::spawn([&] {
        world.run();
        finished = true;
      });
      auto killer = fiberio::spawn([&, k] {
        for (int i = 0; i < k; ++i) world.step();
        target.kill(true, 5s);
      });
      EXPECT_TRUE(killer.join(10s)) << "k=" << k << ": the kill did not return";
      EXPECT_TRUE(target.dead()) << "k=" << k << ": a killed greenlet outlived a 5 s blocking kill";
      if (target.dead() && !target.successful() && !target.killed())
        ADD_FAILURE() << "k=" << k << ": the target failed with something else than its kill";
      world.check(finished);
      fiberio::killall(world.peers, true, 5s);
    }
    // The peers are gone with the world; their greenlets must be too, and every fd closed.
    for (int i = 0; i < 5 && fiberio::live_greenlets() != greenlets; ++i) fiberio::sleep(1ms);
    EXPECT_EQ(fiberio::live_greenlets(), greenlets) << "k=" << k;
    // A lookup abandoned by its killed greenlet still runs on its resolver thread, with the files and
    // sockets getaddrinfo opens, for a moment: count once every resolver thread is idle again.
    for (int i = 0; i < 5000; ++i) {
      auto r = fiberio::resolver_stats();
      if (r.idle == r.threads) break;
      std::this_thread::sleep_for(1ms);
    }
    EXPECT_EQ(fiberio_test::count_fds(), fds) << "k=" << k << "\n" << fd_table();
    if (::testing::Test::HasFailure()) return k;
    if (finished) {
      ::testing::Test::RecordProperty("kill_points", k);
      // The hub is sane afterwards: a short sleep is neither lost nor early.
      auto t0 = fiberio::Clock::now();
      fiberio::sleep(2ms);
      EXPECT_GE(fiberio::Clock::now() - t0, 2ms);
      return k;
    }
  }
  ADD_FAILURE() << "the scenario never finished within " << max_rounds << " rounds";
  return max_rounds;
}

// A TCP exchange larger than the socket buffers: connect, sendall 256 KiB, read the peer's reply.
struct TcpExchange : World {
  fiberio::Socket listener{AF_INET, SOCK_STREAM};
  std::string reply;
  std::size_t served = 0;
  TcpExchange() {
    listener.bind(fiberio::Address("127.0.0.1", 0));
    listener.listen();
    peers.push_back(fiberio::spawn([this] {
      auto [conn, peer] = listener.accept();
      fiberio::Stream s(conn);
      try {
        std::string got = s.read_exactly(256 * 1024);
        served = got.size();
        s.write("ok\n");
        s.flush();
        s.read_some();  // until the client closes
      } catch (const fiberio::IncompleteRead&) {
        // the client was killed before it sent everything
      }
    }));
  }
  void run() override {
    auto sock = fiberio::create_connection(listener.local_address(), 5s);
    sock.sendall(std::string(256 * 1024, 'x'));
    fiberio::Stream s(sock);
    reply = s.read_line();
  }
  void check(bool finished) override {
    if (finished) {
      EXPECT_EQ(served, 256u * 1024);
      EXPECT_EQ(reply, "ok\n");
    }
  }
};

// Lines through a Stream over a socketpair, echoed by a peer.
struct StreamEcho : World {
  std::pair<fiberio::Socket, fiberio::Socket> pair = fiberio::Socket::pair();
  int echoed = 0, got = 0;
  StreamEcho() {
    peers.push_back(fiberio::spawn([this] {
      fiberio::Stream s(pair.second);
      for (std::string line; !(line = s.read_line()).empty(); ++echoed) {
        s.write(line);
        s.flush();
      }
    }));
  }
  void run() override {
    fiberio::Stream s(pair.first);
    for (int i = 0; i < 6; ++i) {
      s.write_line("line " + std::to_string(i));
      s.flush();
      EXPECT_EQ(s.read_line(), "line " + std::to_string(i) + "\n");
      ++got;
    }
  }
  void check(bool finished) override {
    if (finished) {
      EXPECT_EQ(got, 6);
    }
    EXPECT_LE(got, 6);
  }
};

// A Lock and a Semaphore under contention: a kill never leaves either taken.
struct LockContention : World {
  fiberio::Lock lock;
  fiberio::Semaphore sem{2};
  LockContention() {
    for (int i = 0; i < 3; ++i)
      peers.push_back(fiberio::spawn([this] {
        for (int round = 0; round < 5; ++round) {
          std::lock_guard g(lock);
          fiberio::yield();
        }
      }));
  }
  void run() override {
    for (int round = 0; round < 5; ++round) {
      sem.acquire();
      std::unique_ptr<fiberio::Semaphore, void (*)(fiberio::Semaphore*)> held(&sem, [](fiberio::Semaphore* s) { s->release(); });
      std::lock_guard g(lock);
      fiberio::yield();
    }
  }
  void check(bool) override {
    fiberio::joinall(peers, 5s);
    EXPECT_FALSE(lock.locked());
    EXPECT_TRUE(lock.try_acquire());
    lock.release();
    EXPECT_TRUE(sem.try_acquire());
    EXPECT_TRUE(sem.try_acquire());
    EXPECT_FALSE(sem.try_acquire());
    sem.release();
    sem.release();
  }
};

// A bounded queue between a producer and the target: no item is lost or doubled by a kill, whether
// it lands in a get() that waits, or in one that was just handed an item (notification wins: the
// item is the target's).
struct QueueHandOff : World {
  fiberio::Queue<int> q{1};
  std::vector<int> got;
  int offered = 0;  // items the producer has started to put
  QueueHandOff() {
    peers.push_back(fiberio::spawn([this] {
      for (int i = 0; i < 10; ++i) {
        ++offered;
        q.put(i);
      }
    }));
  }
  void run() override {
    for (int i = 0; i < 10; ++i) got.push_back(q.get());
  }
  void check(bool finished) override {
    if (finished) {
      EXPECT_EQ(got.size(), 10u);
    }
    // What the producer put is either the target's or still queued, in order; only the item of a
    // put() still waiting for room may be missing.
    std::vector<int> all = got;
    while (!q.empty()) all.push_back(q.get_nowait());
    EXPECT_GE(static_cast<int>(all.size()), offered - 1);
    EXPECT_LE(static_cast<int>(all.size()), offered);
    for (std::size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], static_cast<int>(i));
  }
};

// select() over two queues fed by two producers.
struct SelectLoop : World {
  fiberio::Queue<int> a{1}, b{1};
  int offered_a = 0, offered_b = 0, got_a = 0, got_b = 0;
  SelectLoop() {
    peers.push_back(fiberio::spawn([this] {
      for (int i = 0; i < 6; ++i) {
        ++offered_a;
        a.put(i);
      }
    }));
    peers.push_back(fiberio::spawn([this] {
      for (int i = 0; i < 6; ++i) {
        ++offered_b;
        b.put(i);
      }
    }));
  }
  void run() override {
    fiberio::Recv ra(a), rb(b);
    for (int i = 0; i < 12; ++i) {
      if (fiberio::select({ra, rb}) == 0) {
        EXPECT_EQ(*ra, got_a++);
      } else {
        EXPECT_EQ(*rb, got_b++);
      }
    }
  }
  void check(bool finished) override {
    if (finished) {
      EXPECT_EQ(got_a + got_b, 12);
    }
    // Each item is the target's or still queued (or in a put() still waiting for room).
    for (auto [got, q, offered] : {std::tuple{got_a, &a, offered_a}, std::tuple{got_b, &b, offered_b}}) {
      EXPECT_GE(got + static_cast<int>(q->qsize()), offered - 1);
      EXPECT_LE(got + static_cast<int>(q->qsize()), offered);
    }
  }
};

// A Pool that is full: spawn() waits for a slot; its members run on after the target dies.
struct PoolSpawn : World {
  fiberio::Pool pool{2};
  int done = 0;
  void run() override {
    for (int i = 0; i < 5; ++i)
      pool.spawn([this] {
        for (int r = 0; r < 3; ++r) fiberio::yield();
        ++done;
      });
    pool.join();
  }
  void check(bool finished) override {
    EXPECT_TRUE(pool.join(5s));
    if (finished) {
      EXPECT_EQ(done, 5);
    }
    EXPECT_EQ(pool.free_count(), 2u);
    EXPECT_EQ(pool.size(), 0u);
  }
};

// Joining a child greenlet, and waiting on an Event and an AsyncResult set by peers.
struct JoinAndEvents : World {
  fiberio::Event ev;
  fiberio::AsyncResult<int> result;
  JoinAndEvents() {
    peers.push_back(fiberio::spawn([this] {
      fiberio::yield();
      fiberio::yield();
      ev.set();
      fiberio::yield();
      result.set(42);
    }));
  }
  void run() override {
    auto child = fiberio::spawn([] {
      for (int r = 0; r < 3; ++r) fiberio::yield();
      return 7;
    });
    EXPECT_EQ(child.get(), 7);
    EXPECT_TRUE(ev.wait());
    EXPECT_EQ(result.get(), 42);
  }
  void check(bool) override {}
};

// Work offloaded to the thread pool outlives the greenlet that asked for it; the pool's thread must
// not touch the dead greenlet's frame when it finishes.
struct Offload : World {
  std::shared_ptr<std::atomic<int>> ran = std::make_shared<std::atomic<int>>(0);
  void run() override {
    for (int i = 0; i < 3; ++i) {
      std::string payload(1024, 'p');
      auto r = fiberio::default_threadpool().apply([ran = ran, &payload] {
        std::this_thread::sleep_for(1ms);
        ++*ran;
        return payload.size();
      });
      EXPECT_EQ(r, 1024u);
    }
  }
  void check(bool finished) override {
    if (finished) {
      EXPECT_EQ(ran->load(), 3);
    }
  }
  void step() override { fiberio::sleep(100us); }
};

// A connect, a recv with a timeout that fires, and a Timeout guard around a sleep.
struct Timeouts : World {
  fiberio::Socket listener{AF_INET, SOCK_STREAM};
  Timeouts() {
    listener.bind(fiberio::Address("127.0.0.1", 0));
    listener.listen();
  }
  void run() override {
    auto sock = fiberio::create_connection(listener.local_address(), 5s);
    sock.set_timeout(2ms);
    // Not EXPECT_THROW: it would catch the kill (GreenletExit) too.
    int timeouts = 0;
    char buf[16];
    try {
      sock.recv(buf);
    } catch (const fiberio::TimeoutError&) {
      ++timeouts;
    }
    try {
      fiberio::with_timeout(1ms, [] { fiberio::sleep(1s); });
    } catch (const fiberio::TimeoutError&) {
      ++timeouts;
    }
    EXPECT_EQ(timeouts, 2);
  }
  void check(bool) override {}
  void step() override { fiberio::sleep(100us); }
};

// A server owned by the target: started, serving a client of its own, stopped with a grace period.
// A kill anywhere, the stop's grace included, destroys the server with its handlers still running.
struct ServerLifecycle : World {
  std::string reply;
  void run() override {
    fiberio::StreamServer server(fiberio::Address("127.0.0.1", 0), [](fiberio::Socket& sock, const fiberio::Address&) {
      fiberio::Stream s(sock);
      for (std::string line; !(line = s.read_line()).empty();) {
        s.write(line);
        s.flush();
      }
    });
    server.handle_signals(false);
    server.start();
    auto sock = fiberio::create_connection(server.address(), 5s);
    fiberio::Stream s(sock);
    s.write_line("hello");
    s.flush();
    reply = s.read_line();
    server.stop(2ms);  // the handler still reads: it is killed when the grace ends
  }
  void check(bool finished) override {
    if (finished) {
      EXPECT_EQ(reply, "hello\n");
    }
  }
  // Hub rounds through start, connect and the echo; then slices of time through the stop's grace
  // (a time, which a fast machine fills with thousands of rounds).
  void step() override {
    if (++steps_ < 300) {
      fiberio::yield();
    } else {
      fiberio::sleep(100us);
    }
  }
  int steps_ = 0;
};

// A name lookup on the resolver's threads.
struct Lookup : World {
  void run() override {
    auto addr = fiberio::resolve("localhost", 80, AF_INET);
    EXPECT_EQ(addr.port(), 80);
  }
  void check(bool) override {}
  void step() override { fiberio::sleep(100us); }
};

// HTTP requests on a keep-alive client against a server of the world's.
struct HttpRequests : World {
  fiberio::http::Server server{fiberio::Address("127.0.0.1", 0), [](fiberio::http::Request& req, fiberio::http::Response& res) {
                                 res.body = "echo " + req.body;
                               }};
  int answered = 0;
  HttpRequests() { server.start(); }
  ~HttpRequests() override { server.stop(std::chrono::milliseconds(0)); }
  void run() override {
    fiberio::http::Client client;
    auto url = "http://127.0.0.1:" + std::to_string(server.address().port()) + "/";
    for (int i = 0; i < 3; ++i) {
      auto r = client.post(url, std::string(100'000, 'h'), "text/plain");  // larger than one read
      EXPECT_EQ(r.status, 200);
      EXPECT_EQ(r.body.size(), 100'005u);
      ++answered;
    }
  }
  void check(bool finished) override {
    if (finished) {
      EXPECT_EQ(answered, 3);
    }
  }
};

// A child process run to completion, its output piped: a kill leaves neither a zombie nor a pipe.
struct ChildProcess : World {
  void run() override {
    auto r = fiberio::subprocess::run({"/bin/sh", "-c", "echo out; echo err >&2; sleep 0.005"},
                                      {.out = fiberio::subprocess::Stdio::Pipe, .err = fiberio::subprocess::Stdio::Pipe});
    EXPECT_EQ(r.out, "out\n");
    EXPECT_EQ(r.err, "err\n");
  }
  void check(bool) override {
    int status = 0;
    EXPECT_LE(::waitpid(-1, &status, WNOHANG), 0) << "a child was left to be reaped";
  }
  void step() override { fiberio::sleep(500us); }
};

}  // namespace

TEST(KillSweep, TcpExchange) {
  FIBERIO_WATCHDOG(120);
  EXPECT_GT(sweep<TcpExchange>(), 1);
}

TEST(KillSweep, StreamEcho) {
  FIBERIO_WATCHDOG(120);
  EXPECT_GT(sweep<StreamEcho>(), 1);
}

TEST(KillSweep, LockAndSemaphore) {
  FIBERIO_WATCHDOG(120);
  EXPECT_GT(sweep<LockContention>(), 1);
}

TEST(KillSweep, QueueHandOff) {
  FIBERIO_WATCHDOG(120);
  EXPECT_GT(sweep<QueueHandOff>(), 1);
}

TEST(KillSweep, Select) {
  FIBERIO_WATCHDOG(120);
  EXPECT_GT(sweep<SelectLoop>(), 1);
}

TEST(KillSweep, PoolSpawn) {
  FIBERIO_WATCHDOG(120);
  EXPECT_GT(sweep<PoolSpawn>(), 1);
}

TEST(KillSweep, JoinAndEvents) {
  FIBERIO_WATCHDOG(120);
  EXPECT_GT(sweep<JoinAndEvents>(), 1);
}

TEST(KillSweep, ThreadPoolOffload) {
  FIBERIO_WATCHDOG(120);
  EXPECT_GT(sweep<Offload>(), 1);
}

TEST(KillSweep, Timeouts) {
  FIBERIO_WATCHDOG(120);
  EXPECT_GT(sweep<Timeouts>(), 1);
}

TEST(KillSweep, ServerLifecycle) {
  FIBERIO_WATCHDOG(120);
  EXPECT_GT(sweep<ServerLifecycle>(), 1);
}

TEST(KillSweep, LookupOnResolverThreads) {
  FIBERIO_WATCHDOG(120);
  // No lower bound on the kill points: the resolver's thread may answer before the target parks
  // (seen under TSan), and then the first run finishes; every run's checks still apply.
  sweep<Lookup>();
}

TEST(KillSweep, HttpRequests) {
  FIBERIO_WATCHDOG(120);
  EXPECT_GT(sweep<HttpRequests>(), 1);
}

TEST(KillSweep, ChildProcess) {
  FIBERIO_WATCHDOG(120);
  EXPECT_GT(sweep<ChildProcess>(), 1);
}
