// libFuzzer: Stream::read_line / read_exactly / read_some over a socket the input arrives on, in
// pieces. Whatever the bytes and limits, reading never crashes or hangs, never allocates beyond its
// limit plus one read, and what it returns is the input's bytes, in order (a prefix of the input).
#include <cstdint>
#include <string>

#include "fiberio/fiberio.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  const std::size_t limit = 1 + data[0] % 80;  // read_line's max / read_exactly's n / read_some's max
  const int mode = data[1] % 3;
  const std::size_t piece = 1 + data[2] % 50;  // how the writer splits the input
  const std::string input(reinterpret_cast<const char*>(data) + 3, size - 3);
  auto sockets = fiberio::Socket::pair();
  fiberio::Socket& a = sockets.first;
  fiberio::Socket& b = sockets.second;
  auto writer = fiberio::spawn([&b, &input, piece] {
    try {
      for (std::size_t at = 0; at < input.size(); at += piece) {
        b.sendall(std::string_view(input).substr(at, piece));
        fiberio::yield();
      }
    } catch (const fiberio::ConnectionError&) {  // the reader stopped (LineTooLong) and closed
    }
    b.close();
  });
  fiberio::Stream s(a, 16);
  std::string got;
  try {
    for (;;) {
      std::string part = mode == 0 ? s.read_line(limit) : mode == 1 ? s.read_exactly(limit) : s.read_some(limit);
      if (part.empty()) break;
      if (part.size() > limit) __builtin_trap();  // never more than asked
      got += part;
      if (s.buffered() > limit + 16 + 4096) __builtin_trap();  // bounded buffering
    }
  } catch (const fiberio::LineTooLong&) {
  } catch (const fiberio::IncompleteRead& e) {
    got += e.partial();
  }
  // A reader that stopped early must close, or a writer blocked on the full socket would wait forever
  // (one-byte pieces fill a unix socket's buffer after a few hundred).
  a.close();
  writer.join();
  if (input.compare(0, got.size(), got) != 0) __builtin_trap();  // nothing invented or reordered
  return 0;
}
