// Cooperative sockets on loopback: timeouts, EOF vs reset vs timeout, close-while-waiting, partial
// writes, concurrent use, IPv6, unix sockets, UDP.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <unistd.h>

#include <fiberio/fiberio.hpp>

#include "support/leak_check.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;
using fiberio::Address;
using fiberio::Socket;

using fiberio_test::count_fds;
using fiberio_test::LeakCheck;

namespace {

Socket listen_tcp(const Address& addr = Address("127.0.0.1", 0)) {
  Socket s = Socket::for_address(addr);
  s.set_reuse_addr();
  s.bind(addr);
  s.listen(128);
  return s;
}

// A connected TCP pair over loopback: {client, server side}.
std::pair<Socket, Socket> tcp_pair(const Address& where = Address("127.0.0.1", 0)) {
  Socket lst = listen_tcp(where);
  Socket client = Socket::for_address(where);
  client.connect(lst.local_address());
  auto [server, peer] = lst.accept();
  EXPECT_EQ(peer, client.local_address());
  return {std::move(client), std::move(server)};
}

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 31 + i / 7) % 251);
  return s;
}

template <class E, class F>
std::string expect_throw(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception: " << fiberio::describe_exception(std::current_exception());
    return "";
  }
  ADD_FAILURE() << "no exception";
  return "";
}

}  // namespace

TEST(Socket, EchoAndEof) {
  LeakCheck leaks;
  {
    Socket lst = listen_tcp();
    auto addr = lst.local_address();
    EXPECT_NE(addr.port(), 0);
    auto server = fiberio::spawn([&] {
      auto [conn, peer] = lst.accept();
      char buf[256];
      std::size_t total = 0;
      while (auto n = conn.recv(buf)) {
        conn.sendall(std::string_view(buf, n));
        total += n;
      }
      return total;  // recv returned 0: EOF
    });
    Socket c = Socket::tcp();
    c.connect(addr);
    EXPECT_EQ(c.peer_address(), addr);
    c.sendall("hello");
    EXPECT_EQ(c.recv(100), "hello");
    c.sendall("world!");
    std::string got;
    while (got.size() < 6) got += c.recv(100);
    EXPECT_EQ(got, "world!");
    c.shutdown(fiberio::ShutdownHow::Write);
    EXPECT_EQ(server.get(), 11u);
    EXPECT_EQ(c.recv(100), "");  // the server closed its side: EOF
  }
  leaks.check();
}

TEST(Socket, TimeoutRaisesTimeoutError) {
  LeakCheck leaks;
  {
    auto [a, b] = tcp_pair();
    a.set_timeout(50ms);
    EXPECT_EQ(a.timeout(), fiberio::OptDuration(50ms));
    auto t0 = fiberio::Clock::now();
    auto msg = expect_throw<fiberio::TimeoutError>([&] { a.recv(10); });
    auto took = fiberio::Clock::now() - t0;
    EXPECT_GE(took, 45ms);
    EXPECT_LT(took, 1s);
    EXPECT_NE(msg.find("recv"), std::string::npos) << msg;
    EXPECT_NE(msg.find("timed out"), std::string::npos) << msg;
    // The socket is still usable after a timeout.
    b.sendall("x");
    EXPECT_EQ(a.recv(10), "x");
    // Without a socket timeout, a Timeout guard still interrupts the wait.
    a.set_timeout({});
    fiberio::Timeout guard(30ms);
    try {
      a.recv(10);
      FAIL() << "recv returned";
    } catch (const fiberio::TimeoutError& e) {
      EXPECT_TRUE(e.is(guard));
    }
  }
  leaks.check();
}

TEST(Socket, OtherFibersRunWhileOneBlocks) {
  auto [a, b] = tcp_pair();
  int ticks = 0;
  auto ticker = fiberio::spawn([&] {
    for (int i = 0; i < 5; ++i) {
      fiberio::sleep(5ms);
      ++ticks;
    }
    b.sendall("done");
  });
  EXPECT_EQ(a.recv(10), "done");  // blocks only this fiber: the ticker ran meanwhile
  EXPECT_EQ(ticks, 5);
  ticker.get();
}

TEST(Socket, CloseWhileWaitingWakesWithClosedError) {
  LeakCheck leaks;
  {
    auto [a, b] = tcp_pair();
    auto reader = fiberio::spawn([&] {
      try {
        a.recv(10);
      } catch (const fiberio::ClosedError& e) {
        return std::string(e.what());
      }
      return std::string("no error");
    });
    fiberio::sleep(20ms);  // reader is now parked in recv
    auto t0 = fiberio::Clock::now();
    a.close();
    auto msg = reader.get(1s);
    EXPECT_LT(fiberio::Clock::now() - t0, 500ms);
    EXPECT_NE(msg.find("closed"), std::string::npos) << msg;
    EXPECT_FALSE(a.valid());
    EXPECT_THROW(a.recv(10), fiberio::ClosedError);
    EXPECT_THROW(a.sendall("x"), fiberio::ClosedError);
    a.close();  // idempotent
  }
  leaks.check();
}

TEST(Socket, EofResetAndTimeoutAreDistinguishable) {
  LeakCheck leaks;
  {
    // EOF: the peer closes normally.
    auto [c1, s1] = tcp_pair();
    s1.close();
    EXPECT_EQ(c1.recv(10), "");
    // Reset: SO_LINGER 0 makes the peer's close send a RST.
    auto [c2, s2] = tcp_pair();
    s2.set_linger(0s);
    s2.close();
    auto msg = expect_throw<fiberio::ConnectionReset>([&] { c2.recv(10); });
    EXPECT_NE(msg.find("reset"), std::string::npos) << msg;
    try {
      c2.recv(10);
    } catch (const fiberio::ConnectionReset&) {
      ADD_FAILURE() << "a reset is reported once; then the socket reads EOF";
    } catch (...) {
    }
    // Timeout: the peer just stays silent.
    auto [c3, s3] = tcp_pair();
    c3.set_timeout(30ms);
    expect_throw<fiberio::TimeoutError>([&] { c3.recv(10); });
    // ConnectionReset is a ConnectionError is a std::system_error carrying the errno.
    static_assert(std::is_base_of_v<fiberio::ConnectionError, fiberio::ConnectionReset>);
    static_assert(std::is_base_of_v<std::system_error, fiberio::ConnectionError>);
  }
  leaks.check();
}

// ---- the drained hint (Hub::note_drained): a short TCP read lets the next recv wait first ----

// Parks `reader` in recv until the peer writes, so the hub has registered its fd, then returns what
// that first recv read.
std::string first_read_after_wait(Socket& reader, Socket& writer, std::string_view what) {
  auto g = fiberio::spawn([&] { return reader.recv(100); });
  fiberio::sleep(5ms);  // the reader is parked now: its fd is registered with the hub
  writer.sendall(what);
  return g.get();
}

bool drained(const Socket& s) { return fiberio::detail::Hub::current().read_drained(s.fd()); }

TEST(SocketDrainedHint, ShortTcpReadMarksDrainedAndTheNextReadStillGetsData) {
  LeakCheck leaks;
  {
    auto [c, s] = tcp_pair();
    EXPECT_EQ(first_read_after_wait(s, c, "ab"), "ab");
    EXPECT_TRUE(drained(s)) << "a short read of a TCP socket empties its queue";
    // The next recv waits before reading; the peer's next bytes wake it.
    auto g = fiberio::spawn([&] { return s.recv(100); });
    fiberio::sleep(5ms);
    EXPECT_FALSE(g.ready()) << "nothing was sent: the reader waits";
    c.sendall("cd");
    EXPECT_EQ(g.get(), "cd");
    // A zero timeout means "whatever is there now": it reads, even before the hub has seen an event.
    EXPECT_TRUE(drained(s));
    c.sendall("ef");
    s.set_timeout(0ms);
    EXPECT_EQ(s.recv(100), "ef");
    // A full read (buffer filled) proves nothing: no hint, the next recv reads at once.
    s.set_timeout(1s);
    c.sendall("0123456789");
    fiberio::sleep(5ms);
    char four[4];
    EXPECT_EQ(s.recv(four), 4u);
    EXPECT_FALSE(drained(s));
    EXPECT_EQ(s.recv(100), "456789");
  }
  leaks.check();
}

// A TCP pair whose server side is registered with the hub and drained (a short read after a wait);
// then `reader` runs on it in a greenlet, parks, `peer` acts on the client side, and the reader's
// result is returned. A 2 s socket timeout turns a reader that waits past its data into a failure.
template <class Reader, class Peer>
std::string after_drain(Reader reader, Peer peer) {
  auto [c, s] = tcp_pair();
  EXPECT_EQ(first_read_after_wait(s, c, "x"), "x");
  s.set_timeout(2s);
  auto g = fiberio::spawn([&] { return reader(s); });
  fiberio::sleep(5ms);
  peer(c);  // everything it sends is queued before the reader runs again
  return g.get();
}

// Everything up to EOF, then "|eof" (or "|reset").
std::string read_to_end(Socket& s) {
  std::string got;
  try {
    for (std::string part; !(part = s.recv(100)).empty();) got += part;
    return got + "|eof";
  } catch (const fiberio::ConnectionReset&) {
    return got + "|reset";
  }
}

TEST(SocketDrainedHint, DataFollowedByFinStillReadsEof) {
  // Data and FIN arrive together: the recv that returns the data also consumes the FIN, and no later
  // event will come. The hang-up the hub saw must keep the next recv from waiting for one.
  LeakCheck leaks;
  EXPECT_EQ(after_drain(read_to_end, [](Socket& c) {
              c.sendall("abc");
              c.shutdown(fiberio::ShutdownHow::Write);
            }),
            "abc|eof");
  leaks.check();
}

TEST(SocketDrainedHint, DataFollowedByResetStillReportsTheReset) {
  LeakCheck leaks;
  std::string r = after_drain(read_to_end, [](Socket& c) {
    c.sendall("abc");
    c.set_linger(0s);
    c.close();  // RST right behind the data
  });
  EXPECT_TRUE(r == "abc|reset" || r == "|reset") << r;  // the kernel may drop unread data on a reset
  leaks.check();
}

TEST(SocketDrainedHint, UrgentDataDoesNotStrandTheBytesAfterIt) {
  // A read stops short at TCP's urgent mark with bytes still queued behind it: the urgent data the
  // hub saw must keep the next recv from trusting that short read.
  LeakCheck leaks;
  auto six_bytes = [](Socket& s) {
    std::string got;
    while (got.size() < 6) got += s.recv(100);
    return got;
  };
  EXPECT_EQ(after_drain(six_bytes, [](Socket& c) {
              c.sendall("abc");
              ASSERT_EQ(::send(c.fd(), "U", 1, MSG_OOB), 1);
              c.sendall("def");
            }),
            "abcdef");  // the urgent byte is out of band, not in the stream
  leaks.check();
}

TEST(SocketDrainedHint, OnlyTcpStreamsUseIt) {
  LeakCheck leaks;
  {
    // UDP: a short read is one datagram of several.
    Socket a = Socket::udp(), b = Socket::udp();
    a.bind(Address("127.0.0.1", 0));
    b.bind(Address("127.0.0.1", 0));
    b.set_timeout(2s);
    auto g = fiberio::spawn([&] { return b.recvfrom(100).first; });
    fiberio::sleep(5ms);
    a.sendto("one", b.local_address());
    EXPECT_EQ(g.get(), "one");
    a.sendto("two", b.local_address());
    a.sendto("three", b.local_address());
    fiberio::sleep(5ms);
    char buf[100];
    EXPECT_EQ(b.recv(buf), 3u);
    EXPECT_FALSE(drained(b));
    EXPECT_EQ(b.recv(buf), 5u);
    // A unix stream: the kernel ends a read early between different writers' bytes.
    auto [u1, u2] = Socket::pair();
    EXPECT_EQ(first_read_after_wait(u2, u1, "ab"), "ab");
    EXPECT_FALSE(drained(u2));
    // An adopted TCP fd is recognised as TCP.
    auto [c, s] = tcp_pair();
    Socket adopted(s.release());
    EXPECT_EQ(first_read_after_wait(adopted, c, "ab"), "ab");
    EXPECT_TRUE(drained(adopted));
  }
  leaks.check();
}

TEST(Socket, WriteToClosedPeerIsAnErrorNotSigpipe) {
  // If MSG_NOSIGNAL were missing, SIGPIPE's default action would kill the test binary.
  auto old = ::signal(SIGPIPE, SIG_DFL);
  {
    auto [c, s] = tcp_pair();
    s.set_linger(0s);
    s.close();
    std::string chunk(64 * 1024, 'x');
    bool got_reset = false;
    for (int i = 0; i < 100 && !got_reset; ++i) {
      try {
        c.sendall(chunk);
      } catch (const fiberio::ConnectionReset& e) {
        got_reset = true;
        EXPECT_TRUE(e.code().value() == ECONNRESET || e.code().value() == EPIPE) << e.what();
      }
    }
    EXPECT_TRUE(got_reset);
  }
  ::signal(SIGPIPE, old);
}

TEST(Socket, SendallToSlowReaderArrivesIntact) {
  LeakCheck leaks;
  {
    auto [a, b] = tcp_pair();
    b.setsockopt(SOL_SOCKET, SO_RCVBUF, 64 * 1024);  // small buffers force many partial writes
    a.setsockopt(SOL_SOCKET, SO_SNDBUF, 64 * 1024);
    const std::string data = pattern(8 << 20);
    int ticks = 0;
    auto writer = fiberio::spawn([&] {
      a.sendall(data);
      a.shutdown(fiberio::ShutdownHow::Write);
    });
    auto ticker = fiberio::spawn([&] {
      for (;;) {
        fiberio::sleep(1ms);
        ++ticks;
      }
    });
    std::string got;
    got.reserve(data.size());
    char buf[32 * 1024];
    int reads = 0;
    while (auto n = b.recv(buf)) {
      got.append(buf, n);
      if (++reads % 16 == 0) fiberio::sleep(1ms);  // read slowly
    }
    writer.get();
    ticker.kill();
    EXPECT_EQ(got.size(), data.size());
    EXPECT_TRUE(got == data) << "payload corrupted";
    EXPECT_GT(ticks, 0) << "the sendall blocked the whole thread";
  }
  leaks.check();
}

TEST(Socket, ConcurrentReadersGetConcurrentObjectUseError) {
  LeakCheck leaks;
  {
    auto [a, b] = tcp_pair();
    auto first = fiberio::spawn([&] { return a.recv(10); });
    fiberio::sleep(10ms);  // first is parked in recv
    auto msg = expect_throw<fiberio::ConcurrentObjectUseError>([&] { a.recv(10); });
    EXPECT_NE(msg.find("read"), std::string::npos) << msg;
    // One reader plus one writer on the same socket is fine.
    a.sendall("ping");
    EXPECT_EQ(b.recv(10), "ping");
    b.sendall("pong");
    EXPECT_EQ(first.get(1s), "pong");
  }
  leaks.check();
}

TEST(Socket, ConcurrentWritersGetConcurrentObjectUseError) {
  auto [a, b] = tcp_pair();
  b.setsockopt(SOL_SOCKET, SO_RCVBUF, 16 * 1024);
  a.setsockopt(SOL_SOCKET, SO_SNDBUF, 16 * 1024);
  std::string big(4 << 20, 'y');
  auto first = fiberio::spawn([&] { a.sendall(big); });
  fiberio::sleep(10ms);  // first is parked: the buffers are full and nobody reads
  expect_throw<fiberio::ConcurrentObjectUseError>([&] { a.sendall("z"); });
  first.kill();
  EXPECT_TRUE(first.killed());
}

TEST(Socket, KillWhileBlockedUnwindsAndClosesFd) {
  LeakCheck leaks;
  {
    Socket lst = listen_tcp();
    auto addr = lst.local_address();
    bool unwound = false;
    auto g = fiberio::spawn([&] {
      struct Marker {
        bool& flag;
        ~Marker() { flag = true; }
      } m{unwound};
      Socket c = Socket::tcp();
      c.connect(addr);
      c.recv(10);  // blocks forever
    });
    fiberio::sleep(20ms);
    g.kill();
    EXPECT_TRUE(g.killed());
    EXPECT_TRUE(unwound);
    auto [conn, peer] = lst.accept();
    EXPECT_EQ(conn.recv(10), "");  // the killed fiber's socket was closed: EOF here
  }
  leaks.check();
}

TEST(Socket, ConnectRefused) {
  Address addr;
  {
    Socket tmp = Socket::tcp();
    tmp.bind(Address("127.0.0.1", 0));
    addr = tmp.local_address();  // nothing listens on it once closed
  }
  Socket c = Socket::tcp();
  auto msg = expect_throw<fiberio::ConnectionRefused>([&] { c.connect(addr, 1s); });
  EXPECT_NE(msg.find(addr.to_string()), std::string::npos) << msg;
}

TEST(Socket, ConnectTimeoutWhenBacklogIsFull) {
  // A listener that never accepts with backlog 0: once its queue is full the kernel drops SYNs, so a
  // further connect can only time out.
  Socket lst = Socket::tcp();
  lst.bind(Address("127.0.0.1", 0));
  lst.listen(0);
  std::vector<Socket> clients;
  bool timed_out = false;
  for (int i = 0; i < 8 && !timed_out; ++i) {
    Socket c = Socket::tcp();
    try {
      c.connect(lst.local_address(), 100ms);
      clients.push_back(std::move(c));
    } catch (const fiberio::TimeoutError& e) {
      timed_out = true;
      EXPECT_NE(std::string(e.what()).find("connect"), std::string::npos);
    }
  }
  EXPECT_TRUE(timed_out);
}

TEST(Socket, AcceptTimeout) {
  Socket lst = listen_tcp();
  lst.set_timeout(20ms);
  expect_throw<fiberio::TimeoutError>([&] { lst.accept(); });
}

TEST(Socket, Ipv6Loopback) {
  Socket probe = Socket::tcp(AF_INET6);
  try {
    probe.bind(Address("::1", 0));
  } catch (const std::system_error& e) {
    GTEST_SKIP() << "no IPv6 loopback here: " << e.what();
  }
  probe.close();
  LeakCheck leaks;
  {
    auto [c, s] = tcp_pair(Address("::1", 0));
    EXPECT_TRUE(c.peer_address().is_ipv6());
    EXPECT_EQ(c.peer_address().host(), "::1");
    EXPECT_EQ(fmt::format("{}", c.peer_address()), fmt::format("[::1]:{}", c.peer_address().port()));
    c.sendall("v6");
    EXPECT_EQ(s.recv(10), "v6");
  }
  leaks.check();
}

TEST(Socket, UnixStream) {
  LeakCheck leaks;
  {
    std::string path = fmt::format("/tmp/fiberio-test-{}.sock", ::getpid());
    ::unlink(path.c_str());
    auto addr = Address::parse("unix:" + path);
    Socket lst = Socket::unix_stream();
    lst.bind(addr);
    lst.listen();
    EXPECT_EQ(lst.local_address(), addr);
    auto server = fiberio::spawn([&] {
      auto [conn, peer] = lst.accept();
      EXPECT_TRUE(peer.is_unix());
      auto s = conn.recv(100);
      conn.sendall("re:" + s);
    });
    Socket c = Socket::unix_stream();
    c.connect(addr);
    c.sendall("unix");
    EXPECT_EQ(c.recv(100), "re:unix");
    server.get();
    ::unlink(path.c_str());
    // A missing socket file is a refusal, not a bare ENOENT.
    Socket d = Socket::unix_stream();
    EXPECT_THROW(d.connect(addr), fiberio::ConnectionRefused);
  }
  leaks.check();
}

TEST(Socket, UnixAbstractAndSocketpair) {
  auto addr = Address::parse(fmt::format("unix:@fiberio-test-{}", ::getpid()));
  Socket lst = Socket::unix_stream();
  lst.bind(addr);
  lst.listen();
  Socket c = Socket::unix_stream();
  c.connect(addr);
  auto [conn, peer] = lst.accept();
  c.sendall("abstract");
  EXPECT_EQ(conn.recv(100), "abstract");

  auto [x, y] = Socket::pair();
  x.sendall("pair");
  EXPECT_EQ(y.recv(10), "pair");
}

TEST(Socket, UdpSendtoRecvfrom) {
  LeakCheck leaks;
  {
    Socket server = Socket::udp();
    server.bind(Address("127.0.0.1", 0));
    Socket client = Socket::udp();
    client.bind(Address("127.0.0.1", 0));
    auto echo = fiberio::spawn([&] {
      auto [data, from] = server.recvfrom(1500);
      server.sendto("echo:" + data, from);
      return from;
    });
    client.sendto("dgram", server.local_address());
    auto [reply, from] = client.recvfrom(1500);
    EXPECT_EQ(reply, "echo:dgram");
    EXPECT_EQ(from, server.local_address());
    EXPECT_EQ(echo.get(), client.local_address());
    client.set_timeout(20ms);
    EXPECT_THROW(client.recvfrom(10), fiberio::TimeoutError);
  }
  leaks.check();
}

TEST(Socket, FdIsNonblockingCloexecAndOptionsWork) {
  Socket s = Socket::tcp();
  int fl = ::fcntl(s.fd(), F_GETFL);
  EXPECT_TRUE(fl & O_NONBLOCK);
  EXPECT_TRUE(::fcntl(s.fd(), F_GETFD) & FD_CLOEXEC);
  s.set_reuse_addr();
  EXPECT_NE(s.getsockopt(SOL_SOCKET, SO_REUSEADDR), 0);
  s.set_reuse_port();
  EXPECT_NE(s.getsockopt(SOL_SOCKET, SO_REUSEPORT), 0);
  s.set_nodelay();
  EXPECT_NE(s.getsockopt(IPPROTO_TCP, TCP_NODELAY), 0);
  s.set_keepalive();
  EXPECT_NE(s.getsockopt(SOL_SOCKET, SO_KEEPALIVE), 0);
  EXPECT_EQ(s.family(), AF_INET);
  EXPECT_EQ(s.type(), SOCK_STREAM);

  // Adopting a plain blocking fd makes it nonblocking + cloexec too.
  int raw = ::socket(AF_INET, SOCK_STREAM, 0);
  Socket adopted(raw);
  EXPECT_TRUE(::fcntl(raw, F_GETFL) & O_NONBLOCK);
  EXPECT_TRUE(::fcntl(raw, F_GETFD) & FD_CLOEXEC);

  // Move and release.
  Socket moved = std::move(adopted);
  EXPECT_FALSE(adopted.valid());
  EXPECT_EQ(moved.fd(), raw);
  int fd = moved.release();
  EXPECT_EQ(fd, raw);
  EXPECT_FALSE(moved.valid());
  EXPECT_EQ(fiberio::close(fd), 0);
}

TEST(Socket, PeerAddressOfUnconnectedSocketThrows) {
  Socket s = Socket::tcp();
  EXPECT_THROW(s.peer_address(), std::system_error);
  EXPECT_THROW(Socket(-1), std::invalid_argument);
}

// set_timeout restarts with every recv, so a peer trickling one byte at a time never trips it; the
// request timeout is a deadline that incoming bytes do not extend, and that sending re-arms.
TEST(Socket, RequestTimeoutIsNotExtendedByTrickledBytes) {
  auto [a, b] = Socket::pair();
  auto trickler = fiberio::spawn([&b] {
    try {
      for (int i = 0; i < 40; ++i) {
        b.sendall("x");
        fiberio::sleep(25ms);
      }
    } catch (const std::exception&) {
    }
  });
  a.set_timeout(200ms);          // never trips: a byte comes every 25 ms
  a.set_request_timeout(300ms);  // trips: bytes do not extend it
  auto t0 = fiberio::Clock::now();
  try {
    for (;;) a.recv(1);
  } catch (const fiberio::TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("request timeout"), std::string::npos) << e.what();
  }
  auto took = fiberio::Clock::now() - t0;
  EXPECT_GE(took, 280ms);
  EXPECT_LT(took, 800ms);
  // Sending is progress: a socket that answers every 100 ms never hits its 300 ms request timeout.
  a.set_request_timeout(300ms);
  auto t1 = fiberio::Clock::now();
  EXPECT_NO_THROW({
    while (fiberio::Clock::now() - t1 < 600ms) {
      a.recv(1);
      if (fiberio::Clock::now() - a.last_progress() > 100ms) a.sendall("ack");
    }
  });
  a.close();
  trickler.join();
}
