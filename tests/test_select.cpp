// select() over queue receives and sends, Events and a timeout; iwait()/wait() over queues.
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
void settle(int rounds = 5) {
  for (int i = 0; i < rounds; ++i) fiberio::yield();
}

}  // namespace

TEST(Select, ReceiveReadyNowAndWhenPut) {
  fiberio::Queue<int> a, b;
  fiberio::Recv ra(a), rb(b);
  b.put(7);
  EXPECT_EQ(fiberio::select({ra, rb}), 1u);
  EXPECT_EQ(*rb, 7);
  EXPECT_THROW(ra.value(), std::logic_error);  // not chosen
  EXPECT_TRUE(b.empty());

  // Nothing ready: it waits, registered once in each queue's line, and takes exactly the one item.
  auto putter = fiberio::spawn([&] {
    fiberio::sleep(5ms);
    a.put(1);
    a.put(2);
  });
  auto sel = fiberio::spawn([&] { return fiberio::select({ra, rb}); });
  settle();
  EXPECT_EQ(a.getters(), 1u);
  EXPECT_EQ(b.getters(), 1u);
  EXPECT_EQ(sel.get(), 0u);
  EXPECT_EQ(*ra, 1);
  putter.get();
  EXPECT_EQ(a.qsize(), 1u);  // the second item stayed
  EXPECT_EQ(a.get(), 2);
  EXPECT_EQ(a.getters(), 0u);  // no registration left behind
  EXPECT_EQ(b.getters(), 0u);
}

TEST(Select, SendCases) {
  fiberio::Queue<std::string> full(1);
  fiberio::Channel<std::string> ch;
  full.put("old");
  fiberio::Send to_full(full, "x"), to_ch(ch, "y");
  // Neither can proceed: poll (timeout 0) says so and leaves the items with the cases.
  EXPECT_EQ(fiberio::select({to_full, to_ch}, 0ms), std::nullopt);
  EXPECT_FALSE(to_full.sent());
  EXPECT_EQ(full.putters(), 0u);
  EXPECT_EQ(ch.putters(), 0u);
  // A getter arrives on the channel: the send to it happens, the other does not.
  auto getter = fiberio::spawn([&] { return ch.get(); });
  auto sel = fiberio::spawn([&] { return fiberio::select({to_full, to_ch}); });
  EXPECT_EQ(sel.get(), 1u);
  EXPECT_EQ(getter.get(), "y");
  EXPECT_TRUE(to_ch.sent());
  EXPECT_FALSE(to_full.sent());
  EXPECT_EQ(full.qsize(), 1u);
  EXPECT_EQ(full.putters(), 0u);
  // A blocked send case completes when a get makes room; a plain get takes a select's offer.
  auto sel2 = fiberio::spawn([&] { return fiberio::select({to_full, to_ch}); });
  settle();
  EXPECT_EQ(full.putters(), 1u);
  EXPECT_EQ(ch.balance(), 1);
  EXPECT_EQ(full.get(), "old");
  EXPECT_EQ(sel2.get(), 0u);
  EXPECT_EQ(full.get(), "x");
  EXPECT_EQ(ch.balance(), 0);
}

TEST(Select, EventAndTimeout) {
  fiberio::Queue<int> q;
  fiberio::Event ev;
  fiberio::Recv r(q);
  auto t0 = Clock::now();
  EXPECT_EQ(fiberio::select({r, ev}, 30ms), std::nullopt);
  auto took = Clock::now() - t0;
  EXPECT_GE(took, 30ms);
  EXPECT_LT(took, 2s);
  EXPECT_EQ(q.getters(), 0u);
  q.put(1);  // the timed-out select took nothing
  EXPECT_EQ(q.qsize(), 1u);
  q.get();

  auto setter = fiberio::spawn([&] {
    fiberio::sleep(5ms);
    ev.set();
  });
  EXPECT_EQ(fiberio::select({r, ev}, 5s), 1u);
  EXPECT_TRUE(ev.is_set());  // select does not clear it
  EXPECT_EQ(fiberio::select({r, ev}, 0ms), 1u);
  setter.get();
  EXPECT_EQ(q.getters(), 0u);
  // A Timeout guard interrupts a select like any wait.
  ev.clear();
  {
    fiberio::Timeout guard(10ms);
    EXPECT_THROW(fiberio::select({r, ev}), fiberio::TimeoutError);
  }
  EXPECT_EQ(q.getters(), 0u);
}

TEST(Select, ClosedQueues) {
  fiberio::Queue<int> q;
  fiberio::Queue<int> other;
  q.put(1);
  q.close();
  fiberio::Recv r(q), ro(other);
  // Closed with an item left: the item first, then the end of the stream (ready at once, every time).
  EXPECT_EQ(fiberio::select({r, ro}), 0u);
  EXPECT_FALSE(r.closed());
  EXPECT_EQ(*r, 1);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(fiberio::select({r, ro}), 0u);
    EXPECT_TRUE(r.closed());
    EXPECT_FALSE(r.result().has_value());
    EXPECT_THROW(r.value(), fiberio::Closed);
  }
  // A send case on a closed queue is an error, as put().
  fiberio::Send s(q, 5);
  EXPECT_THROW(fiberio::select({s, ro}), fiberio::Closed);
  EXPECT_EQ(other.getters(), 0u);

  // Closed while select waits: the receive case wakes with the end of the stream, the send case with Closed.
  fiberio::Queue<int> a;
  fiberio::Queue<int> full(1);
  full.put(0);
  fiberio::Recv ra(a);
  fiberio::Send sf(full, 9);
  fiberio::Recv ro2(other);  // a case belongs to one select at a time
  auto receiver = fiberio::spawn([&] { return fiberio::select({ra, ro}); });
  auto sender = fiberio::spawn([&]() -> std::string {
    try {
      fiberio::select({sf, ro2});
    } catch (const fiberio::Closed& e) {
      return e.what();
    }
    return "(no Closed)";
  });
  settle();
  EXPECT_EQ(other.getters(), 2u);
  a.close();
  full.close();
  EXPECT_EQ(receiver.get(), 0u);
  EXPECT_TRUE(ra.closed());
  EXPECT_NE(sender.get().find("closed"), std::string::npos) << sender.get();
  EXPECT_EQ(other.getters(), 0u);
  EXPECT_EQ(full.get(), 0);  // the send case's item was not queued
  EXPECT_THROW(full.get_nowait(), fiberio::Closed);
}

// Killed after being woken by its kill but before running, while an item arrives: the item is not
// handed to the dying select (it stays in the queue). Killed after the hand-off: the select keeps the
// item and the kill comes at its next suspension point. Either way nothing is lost or doubled.
TEST(Select, KillRacingAPut) {
  fiberio::Queue<int> a, b;
  int got = -1;
  auto selector = [&] {
    fiberio::Recv ra(a), rb(b);
    auto i = fiberio::select({ra, rb});
    got = i == 0u ? *ra : *rb;
    fiberio::sleep(10s);
  };
  auto g = fiberio::spawn(selector);
  settle();
  ASSERT_EQ(a.getters(), 1u);
  g.kill(false);  // pending, not yet delivered
  a.put(1);       // must skip the dying select
  g.join(5s);
  EXPECT_TRUE(g.killed());
  EXPECT_EQ(got, -1);
  EXPECT_EQ(a.qsize(), 1u);
  EXPECT_EQ(a.get(), 1);
  EXPECT_EQ(a.getters() + b.getters(), 0u);

  auto h = fiberio::spawn(selector);
  settle();
  b.put(2);       // handed over first
  h.kill(false);  // then killed: it still gets the item, and dies in its sleep
  h.join(5s);
  EXPECT_TRUE(h.killed());
  EXPECT_EQ(got, 2);
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(a.getters() + b.getters(), 0u);
}

// Selects with short timeouts and random kills, plain getters and a producer on the same queues:
// every item reaches exactly one receiver, and no registration outlives its select.
TEST(Select, ItemsGoToExactlyOneReceiverUnderKillsAndTimeouts) {
  FIBERIO_WATCHDOG(30);
  auto greenlets_before = fiberio::live_greenlets();
  constexpr int kItems = 2000;
  fiberio::Queue<int> q1(3), q2;
  fiberio::Channel<int> ch;
  std::vector<int> received;
  auto selecting = [&](unsigned seed) {
    std::mt19937 r(seed);
    fiberio::Recv r1(q1), r2(q2), r3(ch);
    for (;;) {
      auto i = fiberio::select({r1, r2, r3}, std::chrono::microseconds(r() % 700));
      if (!i) continue;
      auto& c = *i == 0 ? r1.result() : *i == 1 ? r2.result() : r3.result();
      received.push_back(*c);
    }
  };
  auto plain = [&](unsigned seed) {
    std::mt19937 r(seed);
    for (;;) {
      try {
        received.push_back(q2.get(std::chrono::microseconds(r() % 500)));
      } catch (const fiberio::Empty&) {
      }
    }
  };
  std::vector<fiberio::Greenlet<void>> consumers;
  for (unsigned i = 0; i < 6; ++i) consumers.push_back(fiberio::spawn(selecting, i));
  for (unsigned i = 0; i < 2; ++i) consumers.push_back(fiberio::spawn(plain, 50 + i));
  std::mt19937 rng(777);
  auto producer = fiberio::spawn([&] {
    for (int i = 0; i < kItems; ++i) {
      switch (i % 3) {
        case 0: q1.put(i); break;
        case 1: q2.put(i); break;
        default:
          try {
            ch.put(i, 5ms);
          } catch (const fiberio::Full&) {
            q2.put(i);  // nobody took it from the channel in time: it was not delivered
          }
      }
      if (i % 11 == 0) fiberio::sleep(std::chrono::microseconds(rng() % 400));
    }
  });
  auto killer = fiberio::spawn([&] {
    for (int round = 0; round < 40; ++round) {
      fiberio::sleep(std::chrono::microseconds(300 + rng() % 700));
      auto& victim = consumers[rng() % 6];
      victim.kill(false);
      victim = fiberio::spawn(selecting, 100u + round);
    }
  });
  producer.get();
  killer.get();
  auto give_up = Clock::now() + 10s;
  while (received.size() + q1.qsize() + q2.qsize() < kItems && Clock::now() < give_up) fiberio::sleep(1ms);
  fiberio::killall(consumers);
  EXPECT_EQ(q1.getters() + q2.getters() + ch.getters(), 0u);
  while (!q1.empty()) received.push_back(q1.get_nowait());
  while (!q2.empty()) received.push_back(q2.get_nowait());
  std::sort(received.begin(), received.end());
  std::vector<int> want(kItems);
  std::iota(want.begin(), want.end(), 0);
  EXPECT_EQ(received, want);
  consumers.clear();
  EXPECT_EQ(fiberio::live_greenlets(), greenlets_before);
}

// Timeouts (the select's own and a Timeout guard) racing puts, many times at varying offsets: either
// the select got the item or the item is still queued, never both and never neither.
TEST(Select, TimeoutRacingAPut) {
  FIBERIO_WATCHDOG(30);
  fiberio::Queue<int> a, b;
  int taken = 0, left = 0;
  for (int round = 0; round < 200; ++round) {
    bool guard = round % 2 == 1;
    auto sel = fiberio::spawn([&, guard]() -> int {
      fiberio::Recv ra(a), rb(b);
      std::optional<std::size_t> i;
      try {
        if (guard) {
          fiberio::Timeout t(std::chrono::microseconds(200));
          i = fiberio::select({ra, rb});
        } else {
          i = fiberio::select({ra, rb}, std::chrono::microseconds(200));
        }
      } catch (const fiberio::TimeoutError&) {
      }
      if (!i) return -1;
      return *i == 0 ? *ra : *rb;
    });
    fiberio::sleep(std::chrono::microseconds(100 + (round * 7) % 200));
    (round % 3 ? a : b).put(round);
    int got = sel.get();
    int queued = static_cast<int>(a.qsize() + b.qsize());
    if (got == round) {
      ++taken;
      EXPECT_EQ(queued, 0) << round;
    } else {
      ++left;
      EXPECT_EQ(got, -1) << round;
      ASSERT_EQ(queued, 1) << round;
      EXPECT_EQ((round % 3 ? a : b).get_nowait(), round);
    }
    ASSERT_EQ(a.getters() + b.getters(), 0u) << round;
  }
  EXPECT_EQ(taken + left, 200);
}

// When several cases are ready, each is picked with equal probability. 30,000 selects over three
// always-ready queues: each count is Binomial(30000, 1/3), mean 10,000, sd 82; the bound (±1,500,
// over 18 sd) cannot be missed by chance, but a select that favoured its first ready case (or any
// fixed order) would pick one case every time.
TEST(Select, FairAmongReadyCases) {
  FIBERIO_WATCHDOG(30);
  constexpr int kRounds = 30000;
  fiberio::Queue<int> q[3];
  for (int i = 0; i < 3; ++i) q[i].put(i);
  fiberio::Recv r0(q[0]), r1(q[1]), r2(q[2]);
  int count[3] = {0, 0, 0};
  for (int round = 0; round < kRounds; ++round) {
    auto i = fiberio::select({r0, r1, r2});
    ASSERT_TRUE(i.has_value());
    ++count[*i];
    q[*i].put(static_cast<int>(*i));  // keep every case ready
  }
  for (int i = 0; i < 3; ++i) {
    EXPECT_GT(count[i], 10000 - 1500) << "case " << i;
    EXPECT_LT(count[i], 10000 + 1500) << "case " << i;
  }
  // An always-set Event against an always-ready queue: 20,000 rounds, sd 71, bound ±1,500.
  fiberio::Event ev;
  ev.set();
  int ev_count = 0;
  for (int round = 0; round < 20000; ++round) {
    auto i = fiberio::select({r0, ev});
    if (*i == 1) ++ev_count;
    else q[0].put(0);
  }
  EXPECT_GT(ev_count, 10000 - 1500);
  EXPECT_LT(ev_count, 10000 + 1500);
}

TEST(Select, MainFiberSelectNobodyCanFinishRaisesLoopExit) {
  fiberio::Queue<int> a;
  fiberio::Channel<int> ch;
  fiberio::Recv r(a);
  fiberio::Send s(ch, 1);
  EXPECT_THROW(fiberio::select({r, s}), fiberio::LoopExit);
  EXPECT_EQ(a.getters(), 0u);
  EXPECT_EQ(ch.putters(), 0u);
}

TEST(Select, QueueDestroyedWhileSelectWaits) {
  auto q = std::make_unique<fiberio::Queue<int>>();
  fiberio::Queue<int> other;
  auto sel = fiberio::spawn([&, raw = q.get()]() -> std::string {
    fiberio::Recv r(*raw), ro(other);
    try {
      fiberio::select({r, ro});
    } catch (const std::logic_error& e) {
      return e.what();
    }
    return "(no logic_error)";
  });
  settle();
  q.reset();
  EXPECT_NE(sel.get().find("was destroyed while this fiber was blocked in select()"), std::string::npos) << sel.get();
  EXPECT_EQ(other.getters(), 0u);
}

// Producers on two plain threads, the main fiber selecting: every item arrives once, and each
// thread's items in order.
TEST(Select, ItemsFromAnotherThreadEachOnce) {
  FIBERIO_WATCHDOG(30);
  constexpr int kItems = 2000;
  fiberio::Queue<int> a(4);
  fiberio::Channel<int> ch;
  std::thread pa([&] {
    for (int i = 0; i < kItems; ++i) a.put(i, 10s);
    a.close();
  });
  std::thread pc([&] {
    for (int i = 0; i < kItems; ++i) ch.put(kItems + i, 10s);
    ch.close();
  });
  std::vector<int> from_a, from_ch;
  fiberio::Recv ra(a), rc(ch);
  // A closed queue stays ready (its receive ends the stream every time), so it leaves the list, as a
  // Go program sets a closed channel's variable to nil.
  std::vector<fiberio::Recv<int>*> open{&ra, &rc};
  while (!open.empty()) {
    std::vector<fiberio::SelectArg> cases;
    for (auto* r : open) cases.emplace_back(*r);
    auto i = fiberio::select(cases, 10s);
    ASSERT_TRUE(i.has_value()) << "select timed out";
    auto* r = open[*i];
    if (r->closed()) {
      open.erase(open.begin() + static_cast<std::ptrdiff_t>(*i));
      continue;
    }
    (r == &ra ? from_a : from_ch).push_back(**r);
  }
  pa.join();
  pc.join();
  ASSERT_EQ(from_a.size(), static_cast<std::size_t>(kItems));
  ASSERT_EQ(from_ch.size(), static_cast<std::size_t>(kItems));
  for (int i = 0; i < kItems; ++i) {
    ASSERT_EQ(from_a[i], i);
    ASSERT_EQ(from_ch[i], kItems + i);
  }
}

// Two threads each select over the same two queues, which this thread's main fiber fills and closes:
// the items are split between them, each exactly once (a select claimed by one queue is skipped by
// the other).
TEST(Select, SelectsOnTwoOtherThreadsShareItems) {
  FIBERIO_WATCHDOG(30);
  constexpr int kItems = 3000;
  fiberio::Queue<int> a(2), b(2);
  std::vector<int> got[2];
  bool timed_out[2] = {false, false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&, t] {
      fiberio::Recv ra(a), rb(b);
      std::vector<fiberio::Recv<int>*> open{&ra, &rb};
      while (!open.empty()) {
        std::vector<fiberio::SelectArg> cases;
        for (auto* r : open) cases.emplace_back(*r);
        auto i = fiberio::select(cases, 10s);
        if (!i) {
          timed_out[t] = true;
          return;
        }
        if (open[*i]->closed()) {
          open.erase(open.begin() + static_cast<std::ptrdiff_t>(*i));
          continue;
        }
        got[t].push_back(**open[*i]);
      }
    });
  for (int i = 0; i < kItems; ++i) (i % 2 ? b : a).put(i, 10s);
  a.close();
  b.close();
  for (auto& t : threads) t.join();
  EXPECT_FALSE(timed_out[0]);
  EXPECT_FALSE(timed_out[1]);
  std::vector<int> all = got[0];
  all.insert(all.end(), got[1].begin(), got[1].end());
  std::sort(all.begin(), all.end());
  std::vector<int> want(kItems);
  std::iota(want.begin(), want.end(), 0);
  EXPECT_EQ(all, want);
}

// ---- wait() / iwait() over queues ----

TEST(Select, IwaitAcceptsQueues) {
  fiberio::Queue<int> q;
  fiberio::Channel<int> ch;
  fiberio::PriorityQueue<int> pq;
  fiberio::Event ev;
  pq.put(3);  // ready before the call: first
  auto feeder = fiberio::spawn([&] {
    fiberio::sleep(3ms);
    ch.put(1);  // a waiting putter makes a channel ready
  });
  auto feeder2 = fiberio::spawn([&] {
    fiberio::sleep(8ms);
    q.put(2);
  });
  std::vector<std::size_t> order;
  for (auto& w : fiberio::iwait({q, ch, ev, pq}, 5s, 3)) {
    order.push_back(w.index());
    EXPECT_TRUE(w.ready());
  }
  EXPECT_EQ(order, (std::vector<std::size_t>{3, 1, 0}));
  EXPECT_EQ(ch.get(), 1);
  feeder.get();
  feeder2.get();
  EXPECT_EQ(q.get_nowait(), 2);
  // A closed queue is ready (its get ends the stream); an empty open one is not.
  fiberio::Queue<int> closed_q, open_q;
  closed_q.close();
  auto ready = fiberio::wait({open_q, closed_q}, 20ms);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0].index(), 1u);
  // Closing wakes a waiter.
  auto closer = fiberio::spawn([&] {
    fiberio::sleep(2ms);
    open_q.close();
  });
  EXPECT_EQ(fiberio::wait({open_q}, 5s).size(), 1u);
  closer.get();
}
