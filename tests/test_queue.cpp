// Queue, JoinableQueue, Channel: FIFO hand-off, Full/Empty, blocking, timeouts, kill safety, LoopExit.
#include <fiberio/fiberio.hpp>

#include <algorithm>
#include <atomic>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "watchdog.hpp"

using namespace std::chrono_literals;
using fiberio::Clock;

namespace {
// Lets every spawned fiber run until it blocks (round-robin: each yield runs every ready fiber once).
void settle(int rounds = 5) {
  for (int i = 0; i < rounds; ++i) fiberio::yield();
}
}  // namespace

TEST(Queue, FifoAndIntrospection) {
  fiberio::Queue<int> q;
  EXPECT_EQ(q.maxsize(), 0u);
  EXPECT_TRUE(q.empty());
  EXPECT_FALSE(q.full());
  for (int i = 1; i <= 5; ++i) q.put(i);
  EXPECT_EQ(q.qsize(), 5u);
  EXPECT_EQ(q.peek(), 1);
  EXPECT_EQ(q.peek_nowait(), 1);
  EXPECT_EQ(q.qsize(), 5u);
  for (int i = 1; i <= 5; ++i) EXPECT_EQ(q.get(), i);
  EXPECT_TRUE(q.empty());
}

TEST(Queue, NowaitThrowsFullAndEmpty) {
  fiberio::Queue<std::string> q(2);
  EXPECT_EQ(q.maxsize(), 2u);
  q.put_nowait("a");
  q.put_nowait("b");
  EXPECT_TRUE(q.full());
  try {
    q.put_nowait("c");
    ADD_FAILURE() << "put_nowait on a full queue did not throw";
  } catch (const fiberio::Full& e) {
    EXPECT_NE(std::string(e.what()).find("full"), std::string::npos) << e.what();
  }
  EXPECT_EQ(q.get_nowait(), "a");
  EXPECT_EQ(q.get_nowait(), "b");
  EXPECT_THROW(q.get_nowait(), fiberio::Empty);
  EXPECT_THROW(q.peek_nowait(), fiberio::Empty);
  // Both derive from std::runtime_error, so generic handlers see a message.
  try {
    q.get_nowait();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("fiberio::Queue::get_nowait"), std::string::npos) << e.what();
  }
}

TEST(Queue, BoundedPutBlocksUntilSpace) {
  fiberio::Queue<int> q(1);
  q.put(1);
  std::vector<int> put_done;
  std::vector<fiberio::Greenlet<void>> putters;
  for (int i = 2; i <= 4; ++i)
    putters.push_back(fiberio::spawn([&, i] {
      q.put(i);
      put_done.push_back(i);
    }));
  settle();
  EXPECT_TRUE(put_done.empty());
  EXPECT_EQ(q.putters(), 3u);
  EXPECT_EQ(q.qsize(), 1u);
  // Each get makes room, which the longest-waiting putter fills at once.
  for (int want = 1; want <= 4; ++want) {
    EXPECT_EQ(q.get(), want);
    EXPECT_LE(q.qsize(), 1u);
    settle();
  }
  fiberio::joinall(putters);
  EXPECT_EQ(put_done, (std::vector<int>{2, 3, 4}));
  EXPECT_TRUE(q.empty());
}

TEST(Queue, TenWaitingGettersServedInOrder) {
  auto greenlets_before = fiberio::live_greenlets();
  fiberio::Queue<int> q;
  std::vector<int> got(10, -1);
  std::vector<fiberio::Greenlet<void>> getters;
  for (int i = 0; i < 10; ++i) getters.push_back(fiberio::spawn([&, i] { got[i] = q.get(); }));
  settle();
  EXPECT_EQ(q.getters(), 10u);
  for (int item = 0; item < 10; ++item) {
    q.put(item);
    // The item went straight to the first waiting getter; a latecomer's get_nowait finds nothing.
    EXPECT_THROW(q.get_nowait(), fiberio::Empty);
    EXPECT_EQ(q.qsize(), 0u);
  }
  fiberio::joinall(getters);
  std::vector<int> want(10);
  std::iota(want.begin(), want.end(), 0);
  EXPECT_EQ(got, want);
  getters.clear();
  EXPECT_EQ(fiberio::live_greenlets(), greenlets_before);
}

TEST(Queue, TimeoutsThrowFullAndEmpty) {
  fiberio::Queue<int> q(1);
  auto t0 = Clock::now();
  try {
    q.get(30ms);
    ADD_FAILURE() << "get on an empty queue did not time out";
  } catch (const fiberio::Empty& e) {
    EXPECT_NE(std::string(e.what()).find("after 30 ms"), std::string::npos) << e.what();
  }
  EXPECT_GE(Clock::now() - t0, 30ms);
  EXPECT_THROW(q.peek(10ms), fiberio::Empty);
  q.put(7);
  t0 = Clock::now();
  EXPECT_THROW(q.put(8, 30ms), fiberio::Full);
  EXPECT_GE(Clock::now() - t0, 30ms);
  EXPECT_THROW(q.put(8, 0ms), fiberio::Full);
  // The timed-out putter left nothing behind: only 7 is queued, and space goes to the next put.
  EXPECT_EQ(q.putters(), 0u);
  EXPECT_EQ(q.get(0ms), 7);
  q.put(9, 0ms);
  EXPECT_EQ(q.get(), 9);
  // A Timeout guard still raises TimeoutError through a queue wait.
  fiberio::Timeout guard(20ms);
  EXPECT_THROW(q.get(), fiberio::TimeoutError);
}

TEST(Queue, TimedOutGetterDoesNotSwallowLaterItem) {
  fiberio::Queue<int> q;
  auto g = fiberio::spawn([&]() -> bool {
    try {
      q.get(10ms);
      return true;
    } catch (const fiberio::Empty&) {
      return false;
    }
  });
  EXPECT_FALSE(g.get());
  q.put(5);
  EXPECT_EQ(q.qsize(), 1u);
  EXPECT_EQ(q.get_nowait(), 5);
}

TEST(Queue, KilledGetterDoesNotLoseItem) {
  fiberio::Queue<int> q;
  auto first = fiberio::spawn([&] { return q.get(); });
  auto second = fiberio::spawn([&] { return q.get(); });
  settle();
  first.kill(false);  // killed, not yet unwound: its waker is spent, so the item must skip it
  q.put(42);
  EXPECT_EQ(second.get(), 42);
  first.join();
  EXPECT_TRUE(first.killed());

  // Killed and fully unwound before the put: the item waits in the queue for the next getter.
  auto third = fiberio::spawn([&] { return q.get(); });
  settle();
  third.kill();
  q.put(43);
  EXPECT_EQ(q.qsize(), 1u);
  EXPECT_EQ(q.get(), 43);
}

TEST(Queue, KilledPutterKeepsItsItemOut) {
  fiberio::Queue<int> q(1);
  q.put(1);
  auto a = fiberio::spawn([&] { q.put(2); });
  auto b = fiberio::spawn([&] { q.put(3); });
  settle();
  a.kill(false);
  EXPECT_EQ(q.get(), 1);  // refills from b, skipping the killed a
  EXPECT_EQ(q.get(), 3);
  b.join();
  a.join();
  EXPECT_TRUE(a.killed());
  EXPECT_TRUE(q.empty());
}

// Consumers with tiny timeouts, random kills, a bursty producer: every item must arrive exactly once.
TEST(Queue, NoItemLostOrDuplicatedUnderTimeoutsAndKills) {
  FIBERIO_WATCHDOG(30);
  auto greenlets_before = fiberio::live_greenlets();
  constexpr int kItems = 400;
  fiberio::Queue<int> q(4);
  std::vector<int> received;
  std::mt19937 rng(12345);
  auto consumer = [&](unsigned seed) {
    std::mt19937 r(seed);
    for (;;) {
      try {
        received.push_back(q.get(std::chrono::microseconds(r() % 1500)));
      } catch (const fiberio::Empty&) {
      }
    }
  };
  std::vector<fiberio::Greenlet<void>> consumers;
  for (unsigned i = 0; i < 8; ++i) consumers.push_back(fiberio::spawn(consumer, i));
  auto producer = fiberio::spawn([&] {
    for (int i = 0; i < kItems; ++i) {
      try {
        q.put(i, 2ms);
      } catch (const fiberio::Full&) {
        q.put(i);  // the timed-out put dropped its copy; offer it again
      }
      if (i % 7 == 0) fiberio::sleep(std::chrono::microseconds(rng() % 800));
    }
  });
  auto killer = fiberio::spawn([&] {
    for (int round = 0; round < 30; ++round) {
      fiberio::sleep(1ms);
      auto& victim = consumers[rng() % consumers.size()];
      victim.kill(false);
      victim = fiberio::spawn(consumer, 100u + round);
    }
  });
  producer.get();
  killer.get();
  auto give_up = Clock::now() + 10s;
  while (received.size() + q.qsize() < kItems && Clock::now() < give_up) fiberio::sleep(1ms);
  fiberio::killall(consumers);
  while (!q.empty()) received.push_back(q.get_nowait());
  std::sort(received.begin(), received.end());
  std::vector<int> want(kItems);
  std::iota(want.begin(), want.end(), 0);
  EXPECT_EQ(received, want);
  consumers.clear();
  EXPECT_EQ(fiberio::live_greenlets(), greenlets_before);
}

TEST(Queue, PeekWaitsForItem) {
  fiberio::Queue<int> q;
  auto peeker = fiberio::spawn([&] { return q.peek(5s); });
  settle();
  EXPECT_FALSE(peeker.ready());
  q.put(11);
  EXPECT_EQ(peeker.get(), 11);
  EXPECT_EQ(q.qsize(), 1u);  // peek does not remove
}

TEST(Queue, MoveOnlyItems) {
  fiberio::Queue<std::unique_ptr<int>> q(1);
  auto getter = fiberio::spawn([&] { return *q.get(); });
  settle();
  q.put(std::make_unique<int>(3));
  EXPECT_EQ(getter.get(), 3);
  q.put(std::make_unique<int>(4));
  auto putter = fiberio::spawn([&] { q.put(std::make_unique<int>(5)); });
  settle();
  EXPECT_EQ(*q.get(), 4);
  EXPECT_EQ(*q.get(), 5);
  putter.join();
}

TEST(JoinableQueue, JoinWaitsForTaskDone) {
  fiberio::JoinableQueue<int> q;
  EXPECT_TRUE(q.join(0ms));  // nothing put yet
  int processed = 0;
  std::vector<fiberio::Greenlet<void>> workers;
  for (int w = 0; w < 3; ++w)
    workers.push_back(fiberio::spawn([&] {
      for (;;) {
        q.get();
        fiberio::sleep(1ms);
        ++processed;
        q.task_done();
      }
    }));
  for (int i = 0; i < 30; ++i) q.put(i);
  EXPECT_GT(q.unfinished_tasks(), 0u);
  EXPECT_FALSE(q.join(0ms));
  EXPECT_TRUE(q.join(5s));
  EXPECT_EQ(processed, 30);
  EXPECT_EQ(q.unfinished_tasks(), 0u);
  fiberio::killall(workers);
  EXPECT_THROW(q.task_done(), std::logic_error);
}

TEST(JoinableQueue, JoinTimesOutWhileWorkIsPending) {
  fiberio::JoinableQueue<int> q;
  q.put(1);
  auto t0 = Clock::now();
  EXPECT_FALSE(q.join(30ms));
  EXPECT_GE(Clock::now() - t0, 30ms);
  q.get();
  // A task taken but not finished is still unfinished.
  EXPECT_FALSE(q.join(0ms));
  auto joiner = fiberio::spawn([&] { return q.join(); });
  settle();
  EXPECT_FALSE(joiner.ready());
  q.task_done();
  EXPECT_TRUE(joiner.get());
  EXPECT_THROW(q.task_done(), std::logic_error);
}

TEST(JoinableQueue, HandedOffItemsAreCountedBeforeTheGetterRuns) {
  fiberio::JoinableQueue<int> q;
  auto getter = fiberio::spawn([&] {
    q.get();
    q.task_done();  // would throw if the hand-off had not counted the item yet
  });
  settle();
  q.put(1);
  EXPECT_EQ(q.unfinished_tasks(), 1u);
  EXPECT_TRUE(q.join(5s));
  getter.get();
}

TEST(Channel, PutBlocksUntilTaken) {
  fiberio::Channel<int> ch;
  EXPECT_THROW(ch.put_nowait(1), fiberio::Full);  // no getter waiting
  EXPECT_THROW(ch.get_nowait(), fiberio::Empty);  // no putter waiting
  bool put_returned = false;
  auto putter = fiberio::spawn([&] {
    ch.put(1);
    put_returned = true;
  });
  settle();
  EXPECT_FALSE(put_returned);
  EXPECT_EQ(ch.balance(), 1);
  EXPECT_EQ(ch.get(), 1);
  putter.join();
  EXPECT_TRUE(put_returned);
  EXPECT_EQ(ch.balance(), 0);

  auto getter = fiberio::spawn([&] { return ch.get(); });
  settle();
  EXPECT_EQ(ch.balance(), -1);
  ch.put_nowait(2);  // a getter is waiting: hands over without blocking
  EXPECT_EQ(getter.get(), 2);
}

TEST(Channel, RendezvousOrdering) {
  fiberio::Channel<int> ch;
  std::vector<std::string> log;
  auto producer = fiberio::spawn([&] {
    for (int i = 0; i < 3; ++i) {
      log.push_back("offer " + std::to_string(i));
      ch.put(i);
      log.push_back("taken " + std::to_string(i));
    }
  });
  auto consumer = fiberio::spawn([&] {
    for (int i = 0; i < 3; ++i) {
      fiberio::sleep(2ms);  // the producer is always waiting by now
      log.push_back("get " + std::to_string(ch.get()));
    }
  });
  fiberio::joinall({producer, consumer});
  // Each put returns only after its item was taken, and the next offer comes after that.
  auto pos = [&](const std::string& s) { return std::find(log.begin(), log.end(), s) - log.begin(); };
  for (int i = 0; i < 3; ++i) {
    auto n = std::to_string(i);
    EXPECT_LT(pos("offer " + n), pos("get " + n));
    EXPECT_LT(pos("get " + n), pos("taken " + n));
    if (i < 2) {
      EXPECT_LT(pos("taken " + n), pos("offer " + std::to_string(i + 1)));
    }
  }
  EXPECT_EQ(log.size(), 9u);
}

TEST(Channel, WaitersServedFifo) {
  fiberio::Channel<int> ch;
  std::vector<fiberio::Greenlet<void>> putters;
  for (int i = 0; i < 3; ++i) putters.push_back(fiberio::spawn([&, i] { ch.put(i); }));
  settle();
  EXPECT_EQ(ch.putters(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(ch.get(), i);
  fiberio::joinall(putters);

  std::vector<int> got(3, -1);
  std::vector<fiberio::Greenlet<void>> getters;
  for (int i = 0; i < 3; ++i) getters.push_back(fiberio::spawn([&, i] { got[i] = ch.get(); }));
  settle();
  EXPECT_EQ(ch.getters(), 3u);
  for (int i = 0; i < 3; ++i) ch.put(10 + i);
  fiberio::joinall(getters);
  EXPECT_EQ(got, (std::vector<int>{10, 11, 12}));
}

TEST(Channel, Timeouts) {
  fiberio::Channel<int> ch;
  auto t0 = Clock::now();
  EXPECT_THROW(ch.get(30ms), fiberio::Empty);
  EXPECT_GE(Clock::now() - t0, 30ms);
  t0 = Clock::now();
  EXPECT_THROW(ch.put(1, 30ms), fiberio::Full);
  EXPECT_GE(Clock::now() - t0, 30ms);
  // The timed-out put withdrew its offer.
  EXPECT_EQ(ch.balance(), 0);
  EXPECT_THROW(ch.get_nowait(), fiberio::Empty);
}

// A plain thread feeds a bounded queue that the main fiber drains: wake-ups cross threads both ways
// (the producer blocks while full). Timeouts keep each side's wait from counting as a deadlock.
TEST(Queue, SharedWithAnotherThread) {
  constexpr int kItems = 2000;
  fiberio::Queue<int> q(8);
  std::atomic<int> put_failures{0};
  std::thread producer([&] {
    for (int i = 0; i < kItems; ++i) {
      try {
        q.put(i, 10s);
      } catch (const fiberio::Full&) {
        ++put_failures;
        return;
      }
    }
  });
  std::vector<int> got;
  try {
    for (int i = 0; i < kItems; ++i) got.push_back(q.get(10s));
  } catch (const fiberio::Empty&) {
  }
  producer.join();
  EXPECT_EQ(put_failures.load(), 0);
  std::vector<int> want(kItems);
  std::iota(want.begin(), want.end(), 0);
  EXPECT_EQ(got, want);
  EXPECT_TRUE(q.empty());
}

TEST(Queue, MainFiberGetFromQueueNobodyFillsRaisesLoopExit) {
  auto greenlets_before = fiberio::live_greenlets();
  fiberio::Queue<int> q;
  EXPECT_THROW(q.get(), fiberio::LoopExit);
  // The abandoned wait left no trace: the queue still works.
  EXPECT_EQ(q.getters(), 0u);
  q.put(1);
  EXPECT_EQ(q.get(), 1);
  fiberio::Channel<int> ch;
  EXPECT_THROW(ch.put(1), fiberio::LoopExit);
  EXPECT_EQ(ch.putters(), 0u);
  EXPECT_EQ(fiberio::live_greenlets(), greenlets_before);
}

// Destroying a queue under blocked fibers evicts them with a clear error instead of leaving them
// parked on freed memory (which would crash or hang later).
TEST(Queue, DestroyedWhileFibersWaitEvictsThem) {
  auto greenlets_before = fiberio::live_greenlets();
  std::vector<fiberio::Greenlet<std::string>> waiters;
  auto message = [](auto&& op) {
    return [op]() -> std::string {
      try {
        op();
      } catch (const std::logic_error& e) {
        return e.what();
      }
      return "(no std::logic_error)";
    };
  };
  {
    auto q = std::make_unique<fiberio::JoinableQueue<int>>(1);
    q->put(1);
    auto* raw = q.get();
    waiters.push_back(fiberio::spawn(message([raw] { raw->put(2); })));
    waiters.push_back(fiberio::spawn(message([raw] { raw->join(); })));
    auto empty_q = std::make_unique<fiberio::Queue<int>>();
    auto* raw_empty = empty_q.get();
    waiters.push_back(fiberio::spawn(message([raw_empty] { raw_empty->get(); })));
    waiters.push_back(fiberio::spawn(message([raw_empty] { raw_empty->peek(); })));
    settle();
    q.reset();
    empty_q.reset();
  }
  for (auto& w : waiters) {
    auto msg = w.get();
    EXPECT_NE(msg.find("was destroyed while this fiber was blocked in"), std::string::npos) << msg;
  }
  waiters.clear();
  EXPECT_EQ(fiberio::live_greenlets(), greenlets_before);
}
