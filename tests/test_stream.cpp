// Buffered streams over sockets: read_line limits and EOF, read_exactly, read_some, buffered writes.

#include <fiberio/fiberio.hpp>

#include "support/leak_check.hpp"
#include "support/interrupts.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;
using fiberio::Socket;
using fiberio::Stream;

using fiberio_test::count_fds;
using fiberio_test::LeakCheck;


TEST(Stream, ReadLineKeepsNewlineAndReturnsEmptyAtEof) {
  LeakCheck leaks;
  {
    auto [a, b] = Socket::pair();
    // Lines split across writes, several lines in one write, and an unterminated last line.
    auto writer = fiberio::spawn([&b] {
      b.sendall("fir");
      fiberio::sleep(5ms);
      b.sendall("st\nsecond\r\nthi");
      fiberio::sleep(5ms);
      b.sendall("rd\nlast");
      b.close();
    });
    Stream s(a);
    EXPECT_EQ(s.read_line(), "first\n");
    EXPECT_EQ(s.read_line(), "second\r\n");
    EXPECT_EQ(Stream::chomp("second\r\n"), "second");
    EXPECT_EQ(s.read_line(), "third\n");
    EXPECT_EQ(s.read_line(), "last");  // no newline: the peer closed
    EXPECT_EQ(s.read_line(), "");      // EOF
    EXPECT_EQ(s.read_line(), "");
    writer.get();
  }
  leaks.check();
}

TEST(Stream, OverLongLineThrowsWithBoundedMemory) {
  auto [a, b] = Socket::pair();
  // The peer streams 4 MiB without a newline; read_line(1000) must give up after ~1000 bytes.
  auto writer = fiberio::spawn([&b] {
    std::string chunk(64 * 1024, 'a');
    try {
      for (int i = 0; i < 64; ++i) b.sendall(chunk);
    } catch (const std::exception&) {
    }
  });
  Stream s(a, 4096);
  try {
    s.read_line(1000);
    FAIL() << "no LineTooLong";
  } catch (const fiberio::LineTooLong& e) {
    EXPECT_EQ(e.limit(), 1000u);
    EXPECT_NE(std::string(e.what()).find("1000"), std::string::npos) << e.what();
  }
  EXPECT_LT(s.buffered(), 1000u + 4096u);  // never more than the limit plus one read
  a.close();
  writer.kill();
}

TEST(Stream, LineExactlyAtLimitIsAccepted) {
  auto [a, b] = Socket::pair();
  b.sendall("abcd\nabcde\n");
  Stream s(a);
  EXPECT_EQ(s.read_line(5), "abcd\n");  // 5 bytes including "\n"
  EXPECT_THROW(s.read_line(5), fiberio::LineTooLong);
  // The bytes stay buffered after LineTooLong: a larger limit still gets the line.
  EXPECT_EQ(s.read_line(6), "abcde\n");
}

TEST(Stream, ReadExactly) {
  auto [a, b] = Socket::pair();
  auto writer = fiberio::spawn([&b] {
    for (int i = 0; i < 10; ++i) {
      b.sendall(std::string(1000, static_cast<char>('0' + i)));
      fiberio::sleep(1ms);
    }
    b.sendall("tail");
    b.close();
  });
  Stream s(a, 256);
  EXPECT_EQ(s.read_exactly(3), "000");
  auto big = s.read_exactly(9997);  // spans many socket reads and bypasses the small buffer
  EXPECT_EQ(big.size(), 9997u);
  EXPECT_EQ(big.substr(997, 3), "111");
  EXPECT_EQ(big.back(), '9');
  EXPECT_EQ(s.read_exactly(0), "");
  try {
    s.read_exactly(10);
    FAIL() << "no IncompleteRead";
  } catch (const fiberio::IncompleteRead& e) {
    EXPECT_EQ(e.partial(), "tail");
    EXPECT_EQ(e.expected(), 10u);
    EXPECT_NE(std::string(e.what()).find("(EOF) after 4 bytes"), std::string::npos) << e.what();
  }
  writer.get();
}

TEST(Stream, ReadExactlyTimeoutKeepsReceivedBytes) {
  auto [a, b] = Socket::pair();
  a.set_timeout(30ms);
  Stream s(a);
  b.sendall("12345");
  EXPECT_THROW(s.read_exactly(10), fiberio::TimeoutError);
  // Nothing was lost to the timeout: a retry gets all ten bytes.
  b.sendall("67890");
  EXPECT_EQ(s.read_exactly(10), "1234567890");
}

TEST(Stream, ReadExactlyTimeoutKeepsLargePartialRead) {
  auto [a, b] = Socket::pair();
  a.set_timeout(30ms);
  Stream s(a, 256);  // smaller than the partial read: it takes the direct-read path
  const std::string data = [] {
    std::string d(5000, '\0');
    for (std::size_t i = 0; i < d.size(); ++i) d[i] = static_cast<char>('a' + i % 26);
    return d;
  }();
  b.sendall(std::string_view(data).substr(0, 1000));
  EXPECT_THROW(s.read_exactly(5000), fiberio::TimeoutError);
  EXPECT_EQ(s.buffered(), 1000u);
  b.sendall(std::string_view(data).substr(1000));
  EXPECT_EQ(s.read_exactly(5000), data);
}

TEST(Stream, ReadSomeAndReadAll) {
  auto [a, b] = Socket::pair();
  b.sendall("hello\nrest of it");
  Stream s(a);
  EXPECT_EQ(s.read_line(), "hello\n");
  EXPECT_EQ(s.read_some(4), "rest");  // served from the buffer
  b.sendall(" and more");
  b.close();
  EXPECT_EQ(s.read_all(1000), " of it and more");
  EXPECT_EQ(s.read_some(), "");  // EOF

  auto [c, d] = Socket::pair();
  d.sendall(std::string(100, 'x'));
  d.close();
  Stream t(c);
  EXPECT_THROW(t.read_all(50), std::length_error);
}

TEST(Stream, BufferedWritesAndFlush) {
  auto [a, b] = Socket::pair();
  Stream w(a, 1024);
  w.write("abc");
  w.write_line("def");
  w.write_line("ghi\n");
  EXPECT_EQ(w.pending(), 11u);
  b.set_timeout(20ms);
  EXPECT_THROW(b.recv(100), fiberio::TimeoutError);  // nothing sent before flush
  w.flush();
  EXPECT_EQ(w.pending(), 0u);
  Stream r(b);
  EXPECT_EQ(r.read_line(), "abcdef\n");
  EXPECT_EQ(r.read_line(), "ghi\n");
  // A write larger than the buffer goes out directly, after what was buffered before it.
  w.write("x");
  w.write(std::string(5000, 'y'));
  EXPECT_EQ(w.pending(), 0u);
  auto got = r.read_exactly(5001);
  EXPECT_EQ(got.front(), 'x');
  EXPECT_EQ(got.back(), 'y');
}

TEST(Stream, DestructorFlushesAndOwningStreamCloses) {
  LeakCheck leaks;
  {
    auto [a, b] = Socket::pair();
    {
      Stream w(std::move(a));
      w.write_line("bye");
    }  // flushes and, owning the socket, closes it
    Stream r(b);
    EXPECT_EQ(r.read_line(), "bye\n");
    EXPECT_EQ(r.read_line(), "");
  }
  leaks.check();
}

TEST(Stream, MovedStreamKeepsBuffersAndSocket) {
  auto [a, b] = Socket::pair();
  b.sendall("one\ntwo\n");
  Stream s1(std::move(a));
  EXPECT_EQ(s1.read_line(), "one\n");
  Stream s2(std::move(s1));
  EXPECT_EQ(s2.read_line(), "two\n");
  s2.write_line("back");
  s2.flush();
  EXPECT_EQ(b.recv(100), "back\n");
}

TEST(Stream, LineProtocolOverTcp) {
  LeakCheck leaks;
  {
    Socket lst = Socket::tcp();
    lst.bind(fiberio::Address("127.0.0.1", 0));
    lst.listen();
    auto server = fiberio::spawn([&] {
      auto [conn, peer] = lst.accept();
      Stream s(conn);
      int n = 0;
      for (std::string line; !(line = s.read_line(100)).empty();) {
        s.write(fmt::format("{}:{}", ++n, line));
        s.flush();
      }
      return n;
    });
    Socket c = Socket::tcp();
    c.connect(lst.local_address());
    Stream cs(c);
    for (int i = 0; i < 100; ++i) {
      cs.write_line(fmt::format("line {}", i));
      cs.flush();
      EXPECT_EQ(cs.read_line(), fmt::format("{}:line {}\n", i + 1, i));
    }
    c.shutdown(fiberio::ShutdownHow::Write);
    EXPECT_EQ(server.get(), 100);
  }
  leaks.check();
}

// A kill that lands while ~Stream flushes is delivered later, and the hub's interruption bookkeeping
// stays right: Timeout guards still fire afterwards (they stopped firing for the rest of the process).
TEST(Stream, KillDuringDestructorFlushKeepsTimeoutsWorking) {
  auto [a, b] = Socket::pair();  // b never reads: once the socket buffer is full, a flush blocks
  std::string chunk(64 * 1024, 'x');
  while (::send(a.fd(), chunk.data(), chunk.size(), MSG_DONTWAIT) > 0) {
  }
  auto g = fiberio::spawn([&a] {
    Stream s(a);
    s.write("blocked in the destructor's flush");
  });
  fiberio::sleep(20ms);  // g is parked in ~Stream's flush
  g.kill();
  EXPECT_TRUE(g.dead());
  fiberio_test::expect_timeout_still_fires();
}
