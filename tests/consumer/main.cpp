#include <fiberio/fiberio.hpp>

#include <chrono>
#include <cstdio>

int main() {
  using namespace std::chrono_literals;
  auto a = fiberio::spawn([] { fiberio::sleep(20ms); return 20; });
  auto b = fiberio::spawn([] { fiberio::sleep(20ms); return 22; });
  int sum = a.get() + b.get();
  std::printf("consumer: %d\n", sum);
  return sum == 42 ? 0 : 1;
}
