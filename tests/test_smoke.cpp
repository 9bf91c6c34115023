#include <fiberio/fiberio.hpp>
#include "watchdog.hpp"
using namespace std::chrono_literals;
TEST(Smoke, SpawnGet) {
  auto g = fiberio::spawn([](int a, int b) { return a + b; }, 2, 3);
  EXPECT_EQ(g.get(), 5);
  auto t0 = fiberio::Clock::now();
  std::vector<fiberio::Greenlet<void>> gs;
  for (int i = 0; i < 100; ++i) gs.push_back(fiberio::spawn([] { fiberio::sleep(100ms); }));
  fiberio::joinall(gs);
  EXPECT_LT(fiberio::Clock::now() - t0, 500ms);
}
TEST(Smoke, LoopExit) {
  fiberio::Event never;
  fiberio::AsyncResult<int> r;
  auto g = fiberio::spawn([] { fiberio::sleep(10ms); return 1; });
  EXPECT_EQ(g.get(), 1);
}
