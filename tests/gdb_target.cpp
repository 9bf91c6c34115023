// The program tests/test_gdb.cpp debugs with gdb and scripts/fiberio-gdb.py: named greenlets parked
// in known functions (a sleep, an Event wait, a socket recv) on the main thread and on a second
// thread, while each thread blocks outside fiberio in a plain read() of its stdin (so the process
// sits still while gdb attaches). Prints "ready <ids...>" once every greenlet is parked; exits when
// stdin closes.
#include <fiberio/fiberio.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

using namespace std::chrono_literals;

// The frames `greenlet bt` must show. noinline, and each does something after its call so the call
// is not a tail call (its frame stays on the stack).
extern "C" {
__attribute__((noinline)) void gdb_target_sleeping() {
  fiberio::sleep(1h);
  asm volatile("" ::: "memory");
}
__attribute__((noinline)) void gdb_target_waiting_for_event(fiberio::Event* event) {
  event->wait();
  asm volatile("" ::: "memory");
}
__attribute__((noinline)) void gdb_target_receiving(fiberio::Socket* sock) {
  char buf[16];
  sock->recv(buf);
  asm volatile("" ::: "memory");
}
}

namespace {
// Blocks the thread in read() until fd reaches EOF: gdb sees the thread stopped outside fiberio.
void block_in_read(int fd) {
  char c;
  while (::read(fd, &c, 1) > 0) {
  }
}
}  // namespace

int main() {
  fiberio::Event event;
  auto [a, b] = fiberio::Socket::pair();
  auto sleeper = fiberio::spawn([] { gdb_target_sleeping(); });
  sleeper.set_name("gdb-sleeper");
  auto waiter = fiberio::spawn([&] { gdb_target_waiting_for_event(&event); });
  waiter.set_name("gdb-event-waiter");
  auto reader = fiberio::spawn([&] { gdb_target_receiving(&a); });
  reader.set_name("gdb-reader");

  // A second thread with a hub and a parked greenlet of its own: the script walks every thread.
  int hold[2];
  if (::pipe(hold) != 0) return 1;
  std::uint64_t other_id = 0;
  fiberio::Event other_parked;
  std::thread other([&] {
    auto g = fiberio::spawn([] { gdb_target_sleeping(); });
    g.set_name("gdb-other-thread");
    other_id = g.id();
    fiberio::sleep(10ms);  // lets it park
    other_parked.set();
    block_in_read(hold[0]);
    g.kill();
  });
  fiberio::sleep(10ms);  // lets the three park
  other_parked.wait();
  std::printf("ready %llu %llu %llu %llu\n", static_cast<unsigned long long>(sleeper.id()),
              static_cast<unsigned long long>(waiter.id()), static_cast<unsigned long long>(reader.id()),
              static_cast<unsigned long long>(other_id));
  std::fflush(stdout);
  block_in_read(0);
  ::close(hold[1]);
  other.join();
  ::close(hold[0]);
  event.set();
  b.close();
  fiberio::killall({sleeper, waiter, reader});
}
