// Checks that a fiber's interruption bookkeeping is intact: after whatever a test did (a kill caught
// in a destructor, a kill during a shimmed call...), a Timeout guard still fires in a yield loop.
#pragma once
#include <gtest/gtest.h>

#include <chrono>

#include <fiberio/fiberio.hpp>

namespace fiberio_test {

inline void expect_timeout_still_fires() {
  using namespace std::chrono_literals;
  auto t0 = fiberio::Clock::now();
  long yields = 0;
  try {
    fiberio::Timeout t(20ms);
    while (fiberio::Clock::now() - t0 < 2s) {
      fiberio::yield();
      ++yields;
    }
    ADD_FAILURE() << "a 20 ms Timeout did not fire within 2 s (" << yields << " yields)";
  } catch (const fiberio::TimeoutError&) {
    EXPECT_LT(fiberio::Clock::now() - t0, 1s);
  }
}

}  // namespace fiberio_test
