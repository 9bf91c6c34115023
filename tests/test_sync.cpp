// Semaphore, BoundedSemaphore, Lock, RLock: limits, FIFO hand-off, ownership, timeouts, kill.
#include <fiberio/fiberio.hpp>

#include <atomic>
#include <mutex>
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

template <class F>
std::string logic_error_message(F&& f) {
  try {
    f();
  } catch (const std::logic_error& e) {
    return e.what();
  }
  return "(no std::logic_error)";
}
}  // namespace

TEST(Semaphore, LimitsConcurrency) {
  auto greenlets_before = fiberio::live_greenlets();
  fiberio::Semaphore sem(3);
  int active = 0, peak = 0, done = 0;
  std::vector<fiberio::Greenlet<void>> gs;
  for (int i = 0; i < 20; ++i)
    gs.push_back(fiberio::spawn([&] {
      std::lock_guard guard(sem);
      ++active;
      peak = std::max(peak, active);
      fiberio::sleep(2ms);
      fiberio::yield();
      --active;
      ++done;
    }));
  fiberio::joinall(gs);
  EXPECT_EQ(peak, 3);
  EXPECT_EQ(done, 20);
  EXPECT_EQ(sem.value(), 3u);
  EXPECT_FALSE(sem.locked());
  gs.clear();
  EXPECT_EQ(fiberio::live_greenlets(), greenlets_before);
}

TEST(Semaphore, WaitersServedFifoAndReleaseHandsOff) {
  fiberio::Semaphore sem(0);
  EXPECT_TRUE(sem.locked());
  std::vector<int> order;
  std::vector<fiberio::Greenlet<void>> gs;
  for (int i = 0; i < 5; ++i)
    gs.push_back(fiberio::spawn([&, i] {
      sem.acquire();
      order.push_back(i);
    }));
  settle();
  EXPECT_TRUE(order.empty());
  // The permit goes to the first waiter, not to the counter: the releaser cannot take it back.
  sem.release();
  EXPECT_FALSE(sem.try_acquire());
  EXPECT_EQ(sem.value(), 0u);
  for (int i = 0; i < 4; ++i) sem.release();
  fiberio::joinall(gs);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(sem.value(), 0u);
}

TEST(Semaphore, RejectsNegativeInitialValue) {
  EXPECT_THROW(fiberio::Semaphore(-1), std::invalid_argument);
  EXPECT_THROW(fiberio::BoundedSemaphore(-5), std::invalid_argument);
}

TEST(Semaphore, AcquireTimesOut) {
  fiberio::Semaphore sem(0);
  auto t0 = Clock::now();
  EXPECT_FALSE(sem.acquire(30ms));
  EXPECT_GE(Clock::now() - t0, 30ms);
  EXPECT_FALSE(sem.acquire(0ms));
  // A timed-out waiter leaves no trace: the next release goes to the counter.
  sem.release();
  EXPECT_EQ(sem.value(), 1u);
  EXPECT_TRUE(sem.acquire(0ms));
}

TEST(Semaphore, TimedWaiterGetsPermitReleasedBeforeDeadline) {
  fiberio::Semaphore sem(0);
  auto g = fiberio::spawn([&] { return sem.acquire(5s); });
  settle();
  auto releaser = fiberio::spawn_later(10ms, [&] { sem.release(); });
  EXPECT_TRUE(g.get());
  releaser.join();
  EXPECT_EQ(sem.value(), 0u);
}

TEST(BoundedSemaphore, OverReleaseThrows) {
  fiberio::BoundedSemaphore sem(2);
  EXPECT_TRUE(sem.acquire());
  sem.release();
  EXPECT_EQ(sem.value(), 2u);
  auto msg = logic_error_message([&] { sem.release(); });
  EXPECT_NE(msg.find("released too many times"), std::string::npos) << msg;
  EXPECT_EQ(sem.value(), 2u);
  // A plain Semaphore may be released beyond its initial value.
  fiberio::Semaphore plain(1);
  plain.release();
  EXPECT_EQ(plain.value(), 2u);
}

TEST(Lock, MutualExclusionAcrossYields) {
  fiberio::Lock lock;
  int counter = 0;
  int inside = 0;
  bool overlapped = false;
  std::vector<fiberio::Greenlet<void>> gs;
  for (int i = 0; i < 10; ++i)
    gs.push_back(fiberio::spawn([&] {
      for (int k = 0; k < 20; ++k) {
        std::lock_guard guard(lock);
        if (++inside != 1) overlapped = true;
        int v = counter;
        fiberio::yield();  // every other fiber runs here; without the lock they would clobber counter
        counter = v + 1;
        --inside;
      }
    }));
  fiberio::joinall(gs);
  EXPECT_FALSE(overlapped);
  EXPECT_EQ(counter, 200);
  EXPECT_FALSE(lock.locked());
}

TEST(Lock, OwnershipIsChecked) {
  fiberio::Lock lock;
  auto unlocked = logic_error_message([&] { lock.release(); });
  EXPECT_NE(unlocked.find("not held"), std::string::npos) << unlocked;

  lock.acquire();
  EXPECT_TRUE(lock.owned());
  EXPECT_FALSE(lock.try_acquire());  // non-recursive
  auto self = logic_error_message([&] { lock.acquire(); });
  EXPECT_NE(self.find("deadlock"), std::string::npos) << self;

  auto other = fiberio::spawn([&] {
    EXPECT_FALSE(lock.owned());
    return logic_error_message([&] { lock.release(); });
  });
  EXPECT_NE(other.get().find("does not own"), std::string::npos) << other.get();
  EXPECT_TRUE(lock.locked());  // the failed release changed nothing
  lock.release();
  EXPECT_FALSE(lock.locked());
}

TEST(Lock, AcquireTimesOutAndLockStaysConsistent) {
  fiberio::Lock lock;
  fiberio::Event release_it;
  auto holder = fiberio::spawn([&] {
    std::lock_guard guard(lock);
    release_it.wait();
  });
  settle();
  EXPECT_TRUE(lock.locked());
  auto t0 = Clock::now();
  EXPECT_FALSE(lock.acquire(30ms));
  EXPECT_GE(Clock::now() - t0, 30ms);
  EXPECT_FALSE(lock.try_acquire());
  release_it.set();
  holder.join();
  EXPECT_TRUE(lock.acquire(0ms));
  lock.release();
}

TEST(Lock, TimeoutGuardInterruptsAcquire) {
  fiberio::Lock lock;
  fiberio::Event release_it;
  auto holder = fiberio::spawn([&] {
    std::lock_guard guard(lock);
    release_it.wait();
  });
  settle();
  {
    fiberio::Timeout t(20ms);
    EXPECT_THROW(lock.acquire(), fiberio::TimeoutError);
  }
  release_it.set();
  holder.join();
  EXPECT_FALSE(lock.locked());
}

TEST(Lock, KilledWaiterDoesNotLoseTheLock) {
  fiberio::Lock lock;
  lock.acquire();
  bool first_got = false, second_got = false;
  auto first = fiberio::spawn([&] {
    std::lock_guard guard(lock);
    first_got = true;
  });
  auto second = fiberio::spawn([&] {
    std::lock_guard guard(lock);
    second_got = true;
  });
  settle();
  first.kill(false);  // killed but not yet unwound: its turn must pass to `second`
  lock.release();
  second.join();
  first.join();
  EXPECT_TRUE(first.killed());
  EXPECT_FALSE(first_got);
  EXPECT_TRUE(second_got);
  EXPECT_FALSE(lock.locked());
}

TEST(Lock, WaitersServedFifo) {
  fiberio::Lock lock;
  lock.acquire();
  std::vector<int> order;
  std::vector<fiberio::Greenlet<void>> gs;
  for (int i = 0; i < 5; ++i)
    gs.push_back(fiberio::spawn([&, i] {
      std::lock_guard guard(lock);
      order.push_back(i);
      fiberio::yield();
    }));
  settle();
  lock.release();
  // Handed to the first waiter: the releaser cannot barge back in.
  EXPECT_FALSE(lock.try_acquire());
  fiberio::joinall(gs);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST(RLock, RecursionAndOwnership) {
  fiberio::RLock rlock;
  EXPECT_EQ(rlock.depth(), 0u);
  rlock.acquire();
  EXPECT_TRUE(rlock.acquire(0ms));
  EXPECT_TRUE(rlock.try_acquire());
  EXPECT_EQ(rlock.depth(), 3u);
  EXPECT_TRUE(rlock.owned());

  auto other = fiberio::spawn([&] {
    EXPECT_FALSE(rlock.try_acquire());
    EXPECT_FALSE(rlock.acquire(10ms));
    return logic_error_message([&] { rlock.release(); });
  });
  EXPECT_NE(other.get().find("does not own"), std::string::npos) << other.get();
  EXPECT_EQ(rlock.depth(), 3u);

  rlock.release();
  rlock.release();
  EXPECT_TRUE(rlock.locked());
  auto waiter = fiberio::spawn([&] {
    std::lock_guard guard(rlock);
    return rlock.depth();
  });
  settle();
  EXPECT_FALSE(waiter.ready());  // still held once
  rlock.release();
  EXPECT_EQ(waiter.get(), 1u);
  EXPECT_FALSE(rlock.locked());
  auto unlocked = logic_error_message([&] { rlock.release(); });
  EXPECT_NE(unlocked.find("not held"), std::string::npos) << unlocked;
}

TEST(RLock, NestedLockGuards) {
  fiberio::RLock rlock;
  int entered = 0;
  std::function<void(int)> recurse = [&](int n) {
    std::lock_guard guard(rlock);
    ++entered;
    if (n > 0) recurse(n - 1);
  };
  auto g = fiberio::spawn([&] { recurse(4); });
  g.get();
  EXPECT_EQ(entered, 5);
  EXPECT_FALSE(rlock.locked());
}

TEST(Lock, StdUniqueLockTryLockForAndUntil) {
  fiberio::Lock lock;
  fiberio::Event release_it;
  auto holder = fiberio::spawn([&] {
    std::unique_lock guard(lock);
    release_it.wait();
  });
  settle();
  {
    std::unique_lock ul(lock, std::defer_lock);
    EXPECT_FALSE(ul.try_lock());
    EXPECT_FALSE(ul.try_lock_for(20ms));
    EXPECT_FALSE(ul.try_lock_until(std::chrono::system_clock::now() + 10ms));
    EXPECT_FALSE(ul.owns_lock());
  }
  auto setter = fiberio::spawn_later(10ms, [&] { release_it.set(); });
  {
    std::unique_lock ul(lock, std::defer_lock);
    EXPECT_TRUE(ul.try_lock_for(std::chrono::hours::max()));  // saturates instead of overflowing
    EXPECT_TRUE(lock.owned());
  }
  EXPECT_FALSE(lock.locked());
  {
    std::unique_lock ul(lock, 1s);  // constructor form of try_lock_for
    EXPECT_TRUE(ul.owns_lock());
  }
  fiberio::Lock other;
  {
    std::scoped_lock both(lock, other);
    EXPECT_TRUE(lock.owned());
    EXPECT_TRUE(other.owned());
  }
  EXPECT_FALSE(lock.locked());
  EXPECT_FALSE(other.locked());
  setter.join();
  holder.join();
}

TEST(RLock, TimedAcquireFromOtherFiber) {
  fiberio::RLock rlock;
  rlock.acquire();
  auto waiter = fiberio::spawn([&] { return rlock.acquire(5s); });
  settle();
  auto t0 = Clock::now();
  auto timed_out = fiberio::spawn([&] { return rlock.acquire(20ms); });
  EXPECT_FALSE(timed_out.get());
  EXPECT_GE(Clock::now() - t0, 20ms);
  rlock.release();
  EXPECT_TRUE(waiter.get());
  // The waiter finished while still holding it: nobody else can take it.
  EXPECT_TRUE(rlock.locked());
  EXPECT_FALSE(rlock.owned());
}

// Fibers on two OS threads contend for one Lock. The waits carry a timeout so that a thread's main
// fiber waiting on the other thread is not mistaken for a deadlock (see sync.hpp on threads).
TEST(Lock, SharedBetweenThreads) {
  fiberio::Lock lock;
  long counter = 0;
  std::atomic<int> failures{0};
  auto work = [&] {
    for (int i = 0; i < 2000; ++i) {
      if (!lock.acquire(10s)) {
        ++failures;
        return;
      }
      long v = counter;
      if (i % 64 == 0) fiberio::yield();
      counter = v + 1;
      lock.release();
    }
  };
  std::thread a(work), b(work);
  a.join();
  b.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(counter, 4000);
  EXPECT_FALSE(lock.locked());
}

TEST(Semaphore, MainFiberWaitingForeverGetsLoopExit) {
  fiberio::Semaphore sem(0);
  EXPECT_THROW(sem.acquire(), fiberio::LoopExit);
  fiberio::Lock lock;
  auto holder = fiberio::spawn([&] { lock.acquire(); });
  holder.join();  // it exits holding the lock: nobody can ever release it
  EXPECT_THROW(lock.acquire(), fiberio::LoopExit);
  sem.release();
  EXPECT_TRUE(sem.acquire(0ms));
}

TEST(Semaphore, DestroyedWhileFibersWaitEvictsThem) {
  std::vector<fiberio::Greenlet<std::string>> waiters;
  {
    fiberio::Semaphore sem(0);
    fiberio::Lock lock;
    fiberio::RLock rlock;
    lock.acquire();
    rlock.acquire();
    waiters.push_back(fiberio::spawn([&] { return logic_error_message([&] { sem.acquire(); }); }));
    waiters.push_back(fiberio::spawn([&] { return logic_error_message([&] { lock.acquire(5s); }); }));
    waiters.push_back(fiberio::spawn([&] { return logic_error_message([&] { rlock.acquire(); }); }));
    settle();
  }  // destroyed here, with the three fibers blocked
  for (auto& w : waiters) {
    auto msg = w.get();
    EXPECT_NE(msg.find("was destroyed while this fiber was blocked in acquire()"), std::string::npos) << msg;
  }
}
