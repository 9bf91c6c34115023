// The run-info dump, hub counters and hooks (fiberio/runinfo.hpp): the dump names what each greenlet
// waits on (a socket recv with its fd and addresses, a sleep with its deadline, an Event, a Lock, a
// Queue, a join on another greenlet), where each was spawned (this file's lines) and by whom; from
// another thread with 10,000 greenlets parked (bounded time and size); a stuck hub is reported as
// not answering; the dump signal prints to stderr; hooks fire with the right ids and stop once
// removed; the counters move.
#include <fiberio/fiberio.hpp>
#include <fiberio/runinfo.hpp>

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/child.hpp"
#include "support/ports.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;

namespace {

bool contains(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

// The dump's entry for greenlet id: its lines up to the next greenlet's.
std::string entry_of(const std::string& dump, std::uint64_t id) {
  auto at = dump.find("  Greenlet " + std::to_string(id) + " ");
  if (at == std::string::npos) return {};
  auto end = dump.find("\n  Greenlet ", at + 1);
  auto main = dump.find("\n  MainGreenlet", at + 1);
  auto more = dump.find("\n  ...", at + 1);
  end = std::min({end, main, more});
  return dump.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

std::string site(int line) { return "test_runinfo.cpp:" + std::to_string(line); }

TEST(RunInfo, NamesWhatEachGreenletWaitsOnAndWhereItWasSpawned) {
  FIBERIO_WATCHDOG(30);
  fiberio::Socket listener = fiberio::Socket::tcp();
  fiberio::Address where("127.0.0.1", static_cast<std::uint16_t>(fiberio_test::free_port()));
  listener.bind(where);
  listener.listen();
  fiberio::Socket client = fiberio::Socket::tcp();
  client.connect(where);
  auto [conn, peer] = listener.accept();
  int conn_fd = conn.fd();

  fiberio::Event event;
  fiberio::Lock lock;
  lock.acquire();
  fiberio::Queue<int> queue;
  int l_recv = __LINE__; auto reader = fiberio::spawn([&] { char buf[16]; conn.recv(buf); });
  int l_sleep = __LINE__; auto sleeper = fiberio::spawn([] { fiberio::sleep(30s); });
  int l_event = __LINE__; auto event_waiter = fiberio::spawn([&] { event.wait(); });
  int l_lock = __LINE__; auto lock_waiter = fiberio::spawn([&] { lock.acquire(); lock.release(); });
  int l_queue = __LINE__; auto queue_waiter = fiberio::spawn([&] { return queue.get(); });
  int l_join = __LINE__; auto joiner = fiberio::spawn([&] { reader.join(); });
  int l_child = 0;
  fiberio::Greenlet<void> child;
  auto parent_body = [&] {
    l_child = __LINE__; child = fiberio::spawn([] { fiberio::sleep(30s); });
    fiberio::sleep(30s);
  };
  int l_parent = __LINE__; auto parent = fiberio::spawn(parent_body);
  parent.set_name("the-parent");
  fiberio::sleep(50ms);  // all of them park

  std::string dump = fiberio::format_run_info();
  SCOPED_TRACE(dump);
  auto e = entry_of(dump, reader.id());
  EXPECT_TRUE(contains(e, "parked on fd " + std::to_string(conn_fd) + " read (local " + where.to_string() + ", peer " +
                              peer.to_string() + ")")) << e;
  EXPECT_TRUE(contains(e, "spawned at ")) << e;
  EXPECT_TRUE(contains(e, site(l_recv) + " ")) << e;
  EXPECT_TRUE(contains(e, "by greenlet 0 (MainGreenlet)")) << e;
  // Where it parked: its recv call, on this file's line (the stack read from the parked fiber).
  EXPECT_TRUE(contains(e, "parked at ") && contains(e, site(l_recv))) << e;
  EXPECT_TRUE(contains(e, "Socket::recv")) << e;

  e = entry_of(dump, sleeper.id());
  EXPECT_TRUE(contains(e, "parked on sleep, for ")) << e;
  EXPECT_TRUE(contains(e, "fires in 29")) << e;  // of 30 s
  EXPECT_TRUE(contains(e, site(l_sleep))) << e;

  e = entry_of(dump, event_waiter.id());
  EXPECT_TRUE(contains(e, fmt::format("parked on fiberio::Event at {}", static_cast<const void*>(&event)))) << e;
  EXPECT_TRUE(contains(e, site(l_event))) << e;

  e = entry_of(dump, lock_waiter.id());
  EXPECT_TRUE(contains(e, "parked on fiberio::Lock at 0x")) << e;
  EXPECT_TRUE(contains(e, site(l_lock))) << e;

  e = entry_of(dump, queue_waiter.id());
  EXPECT_TRUE(contains(e, "parked on fiberio queue: get at 0x")) << e;
  EXPECT_TRUE(contains(e, site(l_queue))) << e;

  e = entry_of(dump, joiner.id());
  EXPECT_TRUE(contains(e, fmt::format("parked on join on greenlet {} ({})", reader.id(), reader.name()))) << e;
  EXPECT_TRUE(contains(e, site(l_join))) << e;

  // The spawn tree: the child names its parent greenlet and the line inside the parent.
  e = entry_of(dump, child.id());
  EXPECT_TRUE(contains(e, site(l_child))) << e;
  EXPECT_TRUE(contains(e, fmt::format("by greenlet {} (the-parent)", parent.id()))) << e;
  EXPECT_TRUE(contains(entry_of(dump, parent.id()), site(l_parent))) << dump;
  EXPECT_TRUE(contains(dump, "MainGreenlet (the thread's main fiber): running")) << dump;

  lock.release();
  event.set();
  queue.put(1);
  fiberio::killall(std::vector<fiberio::GreenletRef>{reader, sleeper, event_waiter, lock_waiter, queue_waiter, joiner,
                                                     child, parent});
}

TEST(RunInfo, FromAnotherThreadWhileTenThousandGreenletsAreParked) {
  FIBERIO_WATCHDOG(60);
#ifdef __SANITIZE_THREAD__
  constexpr int kParked = 4000;  // TSan counts each fiber as a thread, and stops at 8,128 of them
#else
  constexpr int kParked = 10000;
#endif
  std::atomic<bool> ready{false};
  fiberio::Event go;  // settable from any thread
  std::thread hub_thread([&] {
    std::vector<fiberio::Greenlet<void>> gs;
    for (int i = 0; i < kParked; ++i) gs.push_back(fiberio::spawn([&] { go.wait(); }));
    fiberio::sleep(10ms);
    ready = true;
    fiberio::joinall(gs);
  });
  while (!ready) std::this_thread::sleep_for(1ms);
  fiberio::RunInfoOptions opts;
  opts.hub_timeout = 9s;  // the hub answers in well under 1 s; under TSan, in several
  auto start = std::chrono::steady_clock::now();
  std::string dump = fiberio::format_run_info(opts);
  auto took = std::chrono::steady_clock::now() - start;
  go.set();
  hub_thread.join();
  EXPECT_LT(took, 10s);
  // Bounded: 100 listed in full, the rest counted in groups.
  EXPECT_LT(dump.size(), 1u << 20) << dump.size();
  EXPECT_TRUE(contains(dump, fmt::format("... and {} more greenlets", kParked - 100))) << dump.substr(0, 4000);
  EXPECT_TRUE(contains(dump, fmt::format("{} x parked on fiberio::Event", kParked - 100))) << dump.substr(dump.size() - std::min<std::size_t>(dump.size(), 3000));
  // The hub's counter: the greenlets and its main fiber (in joinall).
  EXPECT_TRUE(contains(dump, fmt::format("parked {}", kParked + 1))) << dump.substr(0, 2000);
}

TEST(RunInfo, AStuckHubIsReportedAsNotAnswering) {
  FIBERIO_WATCHDOG(30);
  std::atomic<bool> stuck{false}, release{false};
  std::thread hub_thread([&] {
    auto g = fiberio::spawn([&] {
      stuck = true;
      while (!release) std::this_thread::sleep_for(1ms);  // blocks its hub: never yields
    });
    g.join();
  });
  while (!stuck) std::this_thread::sleep_for(1ms);
  fiberio::RunInfoOptions opts;
  opts.hub_timeout = 200ms;
  auto start = std::chrono::steady_clock::now();
  std::string dump = fiberio::format_run_info(opts);
  auto took = std::chrono::steady_clock::now() - start;
  release = true;
  hub_thread.join();
  EXPECT_LT(took, 5s);
  EXPECT_TRUE(contains(dump, "did not answer within 200 ms")) << dump;
}

TEST(RunInfo, DumpSignalPrintsToStderr) {
  FIBERIO_WATCHDOG(30);
  auto r = fiberio_test::run_child([] {
    fiberio::enable_dump_signal(SIGUSR1);
    auto g = fiberio::spawn([] { fiberio::sleep(30s); });
    g.set_name("sleepy");
    fiberio::sleep(10ms);
    ::raise(SIGUSR1);
    fiberio::sleep(1500ms);  // the dump thread prints meanwhile
    g.kill();
    return 0;
  });
  ASSERT_TRUE(r.exited_ok()) << r.describe();
  EXPECT_TRUE(contains(r.err, "fiberio run info: 1 hub(s)")) << r.err;
  EXPECT_TRUE(contains(r.err, "\"sleepy\": parked on sleep")) << r.err;
  EXPECT_TRUE(contains(r.err, "MainGreenlet (the thread's main fiber): parked on sleep")) << r.err;
}

TEST(RunInfo, ForkedChildDumpsItsOwnGreenletsOnTheSignal) {
  FIBERIO_WATCHDOG(30);
  fiberio::enable_dump_signal(SIGUSR1);  // in the parent: its dump thread and pipe exist before the fork
  for (int round = 0; round < 3; ++round) {
    auto r = fiberio_test::run_child([] {
      auto g = fiberio::spawn([] { fiberio::sleep(30s); });
      g.set_name("forked-sleepy");
      fiberio::sleep(10ms);
      ::raise(SIGUSR1);  // the child's own dump thread answers, on its own pipe
      fiberio::sleep(1500ms);
      g.kill();
      return 0;
    });
    ASSERT_TRUE(r.exited_ok()) << r.describe();
    EXPECT_TRUE(contains(r.err, "\"forked-sleepy\": parked on sleep")) << r.err;
  }
  fiberio::disable_dump_signal();
}

TEST(RunInfo, EnvironmentEnablesTheDumpSignal) {
  FIBERIO_WATCHDOG(30);
  if (std::getenv("FIBERIO_RUNINFO_TEST_CHILD")) {
    // The re-executed child: its first hub read FIBERIO_DUMP_SIGNAL.
    auto g = fiberio::spawn([] { fiberio::sleep(30s); });
    g.set_name("env-sleeper");
    fiberio::sleep(10ms);
    ::raise(SIGUSR2);
    fiberio::sleep(1500ms);
    g.kill();
    return;
  }
  int status = -1;
  std::string out = fiberio_test::rerun_self("FIBERIO_RUNINFO_TEST_CHILD=1 FIBERIO_DUMP_SIGNAL=SIGUSR2",
                                             "RunInfo.EnvironmentEnablesTheDumpSignal", status);
  EXPECT_EQ(status, 0) << out;  // SIGUSR2's default action would have killed it
  EXPECT_TRUE(contains(out, "\"env-sleeper\": parked on sleep")) << out;
}

TEST(RunInfo, BadDumpSignalThrows) {
  FIBERIO_WATCHDOG(10);
  EXPECT_THROW(fiberio::enable_dump_signal(SIGKILL), std::system_error);
  EXPECT_THROW(fiberio::enable_dump_signal(0), std::system_error);
}

struct Recorded {
  std::mutex mu;
  std::vector<fiberio::HubEvent> events;
  std::vector<fiberio::HubEvent> take() {
    std::lock_guard lk(mu);
    return std::exchange(events, {});
  }
};

bool has(const std::vector<fiberio::HubEvent>& es, fiberio::HubEvent::Kind k, std::uint64_t g, std::uint64_t other) {
  for (auto& e : es)
    if (e.kind == k && e.greenlet == g && e.other == other) return true;
  return false;
}

TEST(Hooks, FireWithTheRightIdsAndStopOnceRemoved) {
  FIBERIO_WATCHDOG(30);
  using Kind = fiberio::HubEvent::Kind;
  Recorded rec;
  auto id = fiberio::add_hook([&](const fiberio::HubEvent& e) {
    std::lock_guard lk(rec.mu);
    rec.events.push_back(e);
  });
  fiberio::Greenlet<void> inner;
  auto outer = fiberio::spawn([&] {
    inner = fiberio::spawn([] { fiberio::yield(); });
    fiberio::yield();
  });
  outer.join();
  inner.join();
  auto es = rec.take();
  EXPECT_TRUE(has(es, Kind::Spawn, outer.id(), 0));           // spawned by the main fiber
  EXPECT_TRUE(has(es, Kind::Spawn, inner.id(), outer.id()));  // by outer
  EXPECT_TRUE(has(es, Kind::Finish, outer.id(), 0));
  EXPECT_TRUE(has(es, Kind::Finish, inner.id(), 0));
  bool switched_to_outer = false, switched_to_inner = false, back_to_main = false;
  for (auto& e : es) {
    if (e.kind != Kind::Switch) continue;
    switched_to_outer |= e.greenlet == outer.id();
    switched_to_inner |= e.greenlet == inner.id();
    back_to_main |= e.greenlet == 0;
  }
  EXPECT_TRUE(switched_to_outer && switched_to_inner && back_to_main);

  fiberio::remove_hook(id);
  auto after = fiberio::spawn([] { fiberio::yield(); });
  after.join();
  EXPECT_TRUE(rec.take().empty());
}

TEST(Hooks, FireOnEveryHubThread) {
  FIBERIO_WATCHDOG(30);
  Recorded rec;
  auto id = fiberio::add_hook([&](const fiberio::HubEvent& e) {
    std::lock_guard lk(rec.mu);
    rec.events.push_back(e);
  });
  std::uint64_t gid = 0;
  std::thread t([&] {
    auto g = fiberio::spawn([] { fiberio::sleep(1ms); });
    gid = g.id();
    g.join();
  });
  t.join();
  fiberio::remove_hook(id);
  auto es = rec.take();
  EXPECT_TRUE(has(es, fiberio::HubEvent::Kind::Spawn, gid, 0));
  EXPECT_TRUE(has(es, fiberio::HubEvent::Kind::Finish, gid, 0));
}

TEST(Hooks, StallIsReportedThroughTheHooks) {
  FIBERIO_WATCHDOG(30);
  Recorded rec;
  auto id = fiberio::add_hook([&](const fiberio::HubEvent& e) {
    std::lock_guard lk(rec.mu);
    if (e.kind == fiberio::HubEvent::Kind::Stall) rec.events.push_back(e);
  });
  auto previous = fiberio::set_stall_handler([](const fiberio::StallReport&) {});  // quiet
  fiberio::enable_monitor(50ms);
  auto g = fiberio::spawn([] { std::this_thread::sleep_for(400ms); });  // blocks the hub
  g.join();
  // The report (and the hook) comes from the monitor's thread once it has symbolized the stack.
  for (int i = 0; i < 500; ++i) {
    {
      std::lock_guard lk(rec.mu);
      if (!rec.events.empty()) break;
    }
    std::this_thread::sleep_for(10ms);
  }
  fiberio::disable_monitor();
  fiberio::set_stall_handler(previous);
  fiberio::remove_hook(id);
  auto es = rec.take();
  ASSERT_FALSE(es.empty());
  EXPECT_EQ(es[0].greenlet, g.id());
  EXPECT_GE(es[0].other, 50u);
}

TEST(HubStats, CountersMove) {
  FIBERIO_WATCHDOG(30);
  fiberio::ensure_hub();
  auto before = fiberio::hub_stats();
  fiberio::Event never;
  std::vector<fiberio::Greenlet<void>> gs;
  for (int i = 0; i < 7; ++i) gs.push_back(fiberio::spawn([&] { never.wait(); }));
  fiberio::sleep(20ms);
  auto now = fiberio::hub_stats();
  EXPECT_EQ(now.parked, 7u);  // the main fiber runs (it is asking)
  EXPECT_EQ(now.greenlets, 7u);
  EXPECT_EQ(now.ready, 0u);
  EXPECT_GT(now.switches, before.switches);
  EXPECT_GT(now.loop_iterations, before.loop_iterations);
  EXPECT_GE(now.poll_time - before.poll_time, 15ms);  // the sleep was spent in epoll_wait
  std::uint64_t iterations = 0;
  for (auto n : now.loop_latency) iterations += n;
  EXPECT_EQ(iterations + 1, now.loop_iterations);  // every iteration after the first is in a bucket
  EXPECT_TRUE(contains(now.format(), "parked 7")) << now.format();
  fiberio::killall(gs);
  EXPECT_EQ(fiberio::hub_stats().parked, 0u);
}

}  // namespace
