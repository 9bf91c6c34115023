// Links fiberio::patched: a plain blocking libc call in the main fiber lets the other greenlets run.
#include <fiberio/fiberio.hpp>
#include <fiberio/patched.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>

int main() {
  using namespace std::chrono_literals;
  int ticks = 0;
  bool stop = false;
  auto ticker = fiberio::spawn([&] {
    while (!stop) {
      fiberio::sleep(5ms);
      ++ticks;
    }
  });
  fiberio::sleep(1ms);
  ::usleep(100000);  // libc's usleep, through the shims: parks only this fiber (~20 ticks meanwhile)
  int during = ticks;
  stop = true;
  ticker.join();
  bool ok = fiberio::patched::installed() && during >= 5;
  std::printf("consumer_patched: installed=%d ticks=%d %s\n", fiberio::patched::installed(), during,
              ok ? "cooperative" : "BLOCKED");
  return ok ? 0 : 1;
}
