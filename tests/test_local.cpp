// local<T>: greenlet-local storage (gevent.local).
#include <fiberio/fiberio.hpp>
#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "watchdog.hpp"

using namespace std::chrono_literals;

namespace {
// Counts live instances, to see when a greenlet's value is destroyed.
struct Tracked {
  static inline int alive = 0;
  int value = 0;
  Tracked() { ++alive; }
  ~Tracked() { --alive; }
  Tracked(const Tracked&) = delete;
  Tracked& operator=(const Tracked&) = delete;
};
}  // namespace

TEST(Local, EachGreenletSeesItsOwnValue) {
  fiberio::local<int> v;
  *v = 100;  // the main fiber's own value
  std::vector<fiberio::Greenlet<bool>> gs;
  for (int i = 0; i < 5; ++i) gs.push_back(fiberio::spawn([&v, i] {
    bool fresh = *v == 0;  // value-initialized on first access, not the main fiber's 100
    *v = i;
    fiberio::sleep(std::chrono::milliseconds(5 - i));  // interleave the others' writes
    return fresh && *v == i && v.get() == i;
  }));
  for (auto& g : gs) EXPECT_TRUE(g.get());
  EXPECT_EQ(*v, 100);
}

TEST(Local, InitializerRunsPerGreenlet) {
  int made = 0;
  fiberio::local<std::string> name([&] { return "anon-" + std::to_string(++made); });
  EXPECT_EQ(*name, "anon-1");
  auto g = fiberio::spawn([&] {
    std::string first = *name;
    name->append("!");
    return first + "|" + *name;
  });
  EXPECT_EQ(g.get(), "anon-2|anon-2!");
  EXPECT_EQ(*name, "anon-1");
  EXPECT_EQ(made, 2);
  EXPECT_THROW(fiberio::local<int>(std::function<int()>{}), std::invalid_argument);
}

TEST(Local, ValueDestroyedWhenGreenletEnds) {
  fiberio::local<Tracked> t;
  int base = Tracked::alive;
  fiberio::Event go;
  auto g = fiberio::spawn([&] {
    t->value = 7;
    go.wait();
    return t->value;
  });
  fiberio::sleep(1ms);
  EXPECT_EQ(Tracked::alive, base + 1);  // the greenlet's value exists while it runs
  go.set();
  EXPECT_EQ(g.get(), 7);
  EXPECT_EQ(Tracked::alive, base);  // and is gone by the time join() returns

  // Also when the greenlet is killed, or fails.
  auto k = fiberio::spawn([&] {
    t->value = 1;
    fiberio::sleep(10s);
  });
  fiberio::sleep(1ms);
  EXPECT_EQ(Tracked::alive, base + 1);
  k.kill();
  EXPECT_EQ(Tracked::alive, base);
  fiberio::set_error_handler([](const fiberio::GreenletBase&, std::exception_ptr) {});
  auto f = fiberio::spawn([&] {
    t->value = 2;
    throw std::runtime_error("fail");
  });
  f.join();
  fiberio::set_error_handler(nullptr);
  EXPECT_EQ(Tracked::alive, base);
}

TEST(Local, HasValueAndReset) {
  fiberio::local<Tracked> t;
  int base = Tracked::alive;
  EXPECT_FALSE(t.has_value());
  t->value = 3;
  EXPECT_TRUE(t.has_value());
  EXPECT_EQ(Tracked::alive, base + 1);
  t.reset();
  EXPECT_FALSE(t.has_value());
  EXPECT_EQ(Tracked::alive, base);
  EXPECT_EQ(t->value, 0);  // a fresh one
}

TEST(Local, DestroyedWhileGreenletsHoldValues) {
  int base = Tracked::alive;
  // A local that dies first: its values in live greenlets are freed when they finish, not used again
  // by a new local built at the same address.
  std::optional<fiberio::local<Tracked>> slot;
  slot.emplace();
  fiberio::Event destroyed;
  auto g = fiberio::spawn([&] {
    (*slot)->value = 42;
    destroyed.wait();
    // slot now holds a different local at the same address: this greenlet must not see its old 42.
    return (*slot)->value;
  });
  fiberio::sleep(1ms);
  (*slot)->value = 5;  // the main fiber's value
  EXPECT_EQ(Tracked::alive, base + 2);
  slot.reset();  // frees the main fiber's value now; the greenlet's stays until it ends
  EXPECT_EQ(Tracked::alive, base + 1);
  slot.emplace();
  destroyed.set();
  EXPECT_EQ(g.get(), 0);
  EXPECT_EQ(Tracked::alive, base);
  slot.reset();
}

TEST(Local, ThreadsHaveTheirOwnValues) {
  fiberio::local<int> v;
  *v = 1;
  int seen_in_thread = -1;
  std::thread th([&] {
    seen_in_thread = *v;  // the other thread's main fiber starts fresh
    *v = 2;
    auto g = fiberio::spawn([&] { return *v; });
    seen_in_thread += 10 * g.get();  // and its greenlets too
  });
  th.join();
  EXPECT_EQ(seen_in_thread, 0);
  EXPECT_EQ(*v, 1);
}

TEST(Local, ManyGreenletsNoLeak) {
  auto live0 = fiberio::live_greenlets();
  fiberio::local<Tracked> t;
  int base = Tracked::alive;
  fiberio::Pool pool(50);
  auto sums = pool.map(
      [&](int i) {
        t->value = i;
        fiberio::yield();
        return t->value;
      },
      std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16});
  for (int i = 0; i < 16; ++i) EXPECT_EQ(sums[i], i + 1);
  EXPECT_EQ(Tracked::alive, base);
  EXPECT_EQ(fiberio::live_greenlets(), live0);
}
