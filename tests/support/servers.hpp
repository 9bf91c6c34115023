// Helpers for tests of servers and anything that waits for them: options without signal handling,
// a line echo handler, one request over a fresh connection, and a bounded cooperative wait.
#pragma once
#include <chrono>
#include <string>
#include <string_view>

#include <fiberio/fiberio.hpp>

namespace fiberio_test {

using namespace std::chrono_literals;

inline fiberio::ServerOptions quiet() {
  fiberio::ServerOptions o;
  o.handle_signals = false;
  return o;
}

// Echoes lines until EOF.
inline void echo_lines(fiberio::Socket& sock, const fiberio::Address&) {
  fiberio::Stream s(sock);
  for (std::string line; !(line = s.read_line(1024)).empty();) {
    s.write(line);
    s.flush();
  }
}

// One request/response over a fresh connection.
inline std::string ask(const fiberio::Address& addr, std::string_view line, fiberio::OptDuration timeout = 5s) {
  fiberio::Socket c = fiberio::create_connection(addr, timeout);
  fiberio::Stream s(c);
  s.write_line(line);
  s.flush();
  return s.read_line();
}

// Waits (bounded) until pred() holds, sleeping cooperatively.
template <class Pred>
bool eventually(Pred pred, fiberio::Duration limit = 5s) {
  auto until = fiberio::Clock::now() + limit;
  while (!pred()) {
    if (fiberio::Clock::now() > until) return false;
    fiberio::sleep(2ms);
  }
  return true;
}

}  // namespace fiberio_test
