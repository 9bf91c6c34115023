// StreamServer / DatagramServer / signal_handler on loopback: concurrency, errors, graceful stop,
// EMFILE recovery and SIGINT draining (in forked children), workers, datagrams, leaks.
#include <netdb.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fiberio/fiberio.hpp>
#include <atomic>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>

#include "support/leak_check.hpp"
#include "support/child.hpp"
#include "support/interrupts.hpp"
#include "support/servers.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;
using fiberio::Address;
using fiberio::Socket;
using fiberio::Stream;
using fiberio::StreamServer;

using fiberio_test::count_fds;
using fiberio_test::LeakCheck;
using fiberio_test::ask;
using fiberio_test::echo_lines;
using fiberio_test::eventually;
using fiberio_test::quiet;

TEST(StreamServer, EchoStartStop) {
  LeakCheck leaks;
  {
    StreamServer server(Address("127.0.0.1", 0), echo_lines, quiet());
    EXPECT_EQ(server.address().port(), 0);
    server.start();
    EXPECT_TRUE(server.started());
    auto addr = server.address();
    EXPECT_NE(addr.port(), 0);  // the real port
    EXPECT_EQ(ask(addr, "hello"), "hello\n");
    EXPECT_EQ(ask(addr, "again"), "again\n");
    EXPECT_EQ(server.stats().accepted, 2u);
    server.stop();
    EXPECT_TRUE(server.stopped());
    Socket c = Socket::tcp();
    EXPECT_THROW(c.connect(addr, 1s), fiberio::ConnectionRefused);  // the listener is closed
    EXPECT_THROW(server.start(), std::logic_error);
  }
  leaks.check();
}

TEST(StreamServer, ClientSocketClosesWhenHandlerReturns) {
  LeakCheck leaks;
  {
    StreamServer server(Address("127.0.0.1", 0), [](Socket& s, const Address&) { s.sendall("bye"); }, quiet());
    server.start();
    Socket c = fiberio::create_connection(server.address(), 2s);
    EXPECT_EQ(c.recv(10), "bye");
    EXPECT_EQ(c.recv(10), "");  // EOF: the handler returned without closing, the server closed
    server.stop();
  }
  leaks.check();
}

TEST(StreamServer, TcpNodelayOnAcceptedAndDialedConnectionsByDefault) {
  // As Go: Nagle's algorithm off, so a reply written in pieces is not held back for the peer's
  // delayed ACK (up to 40 ms per reply). ServerOptions::nodelay / nodelay(false) opts out.
  LeakCheck leaks;
  {
    auto nodelay_of = [](const Socket& s) { return s.getsockopt(IPPROTO_TCP, TCP_NODELAY) != 0; };
    auto report = [&](Socket& s, const Address&) { s.sendall(nodelay_of(s) ? "on" : "off"); };
    StreamServer by_default(Address("127.0.0.1", 0), report, quiet());
    StreamServer opted_out(Address("127.0.0.1", 0), report, quiet());
    EXPECT_TRUE(by_default.options().nodelay);
    opted_out.nodelay(false);
    by_default.start();
    opted_out.start();
    Socket c1 = fiberio::create_connection(by_default.address(), 2s);
    EXPECT_TRUE(nodelay_of(c1)) << "create_connection sets TCP_NODELAY too";
    EXPECT_EQ(c1.recv(10), "on");
    Socket c2 = fiberio::create_connection(opted_out.address(), 2s);
    EXPECT_EQ(c2.recv(10), "off");
    by_default.stop();
    opted_out.stop();
  }
  leaks.check();
}

TEST(StreamServer, ThousandConcurrentClientsOnOneThread) {
  // Generous bounds: under TSan on a loaded 2-core machine the 1000 handshakes alone take 10-30 s
  // (a plain build: well under a second).
  FIBERIO_WATCHDOG(150);
  constexpr int kClients = 1000;
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < 2 * kClients + 100) {
    rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, 2 * kClients + 500);
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur < 2 * kClients + 100) GTEST_SKIP() << "RLIMIT_NOFILE too low for 1000 clients";
  LeakCheck leaks;
  {
    int active = 0, peak = 0;
    fiberio::Event all_in;
    auto main_thread = std::this_thread::get_id();
    bool other_thread = false;
    StreamServer server(
        Address("127.0.0.1", 0),
        [&](Socket& sock, const Address&) {
          if (std::this_thread::get_id() != main_thread) other_thread = true;
          ++active;
          peak = std::max(peak, active);
          if (active == kClients) all_in.set();
          Stream s(sock);
          auto line = s.read_line();
          all_in.wait(90s);  // every handler is in flight at the same time
          s.write(line);
          s.flush();
          --active;
        },
        quiet());
    server.start();
    auto addr = server.address();
    int ok = 0;
    std::vector<fiberio::Greenlet<void>> clients;
    for (int i = 0; i < kClients; ++i)
      clients.push_back(fiberio::spawn([&, i] {
        if (ask(addr, fmt::format("client {}", i), 100s) == fmt::format("client {}\n", i)) ++ok;
      }));
    fiberio::joinall(clients, 120s, true);
    EXPECT_EQ(peak, kClients);
    EXPECT_EQ(ok, kClients);
    EXPECT_FALSE(other_thread);
    EXPECT_EQ(server.stats().accepted, static_cast<std::uint64_t>(kClients));
    server.stop();
  }
  leaks.check();
}

TEST(StreamServer, HandlerExceptionIsReportedAndServerKeepsServing) {
  LeakCheck leaks;
  {
    std::vector<std::string> reports;
    fiberio::set_error_handler([&](const fiberio::GreenletBase& g, std::exception_ptr e) {
      reports.push_back(g.name() + " | " + fiberio::describe_exception(e));
    });
    StreamServer server(
        Address("127.0.0.1", 0),
        [](Socket& sock, const Address&) {
          Stream s(sock);
          auto line = s.read_line();
          if (line == "boom\n") throw std::runtime_error("handler exploded");
          s.write(line);
          s.flush();
        },
        quiet());
    server.start();
    auto addr = server.address();
    {
      Socket c = fiberio::create_connection(addr, 2s);
      c.sendall("boom\n");
      EXPECT_EQ(c.recv(10), "");  // the failing handler's connection was closed
    }
    EXPECT_EQ(ask(addr, "fine"), "fine\n");
    ASSERT_EQ(reports.size(), 1u);
    EXPECT_NE(reports[0].find(fmt::format("StreamServer({})", addr)), std::string::npos) << reports[0];
    EXPECT_NE(reports[0].find("std::runtime_error: handler exploded"), std::string::npos) << reports[0];
    EXPECT_EQ(server.stats().handler_errors, 1u);
    server.stop();
    fiberio::set_error_handler({});
  }
  leaks.check();
}

TEST(StreamServer, GracefulStopFinishesQuickHandlersAndKillsSlowOnes) {
  LeakCheck leaks;
  {
    int destroyed = 0, finished = 0;
    StreamServer server(
        Address("127.0.0.1", 0),
        [&](Socket& sock, const Address&) {
          struct Marker {
            int& n;
            ~Marker() { ++n; }
          } m{destroyed};
          Stream s(sock);
          auto line = s.read_line();
          fiberio::sleep(line == "slow\n" ? 1h : 100ms);
          s.write(line);
          s.flush();
          ++finished;
        },
        quiet());
    server.start();
    auto addr = server.address();
    std::vector<fiberio::Greenlet<std::string>> clients;
    for (auto what : {"quick", "quick", "slow", "slow"})
      clients.push_back(fiberio::spawn([addr, what] {
        try {
          return ask(addr, what);
        } catch (const std::exception& e) {
          return std::string("error: ") + e.what();
        }
      }));
    ASSERT_TRUE(eventually([&] { return server.connections() == 4; }));
    auto t0 = fiberio::Clock::now();
    server.stop(400ms);
    auto took = fiberio::Clock::now() - t0;
    EXPECT_GE(took, 350ms);           // the slow handlers got their grace period
    EXPECT_LT(took, 400ms + 1500ms);  // and no more
    EXPECT_EQ(finished, 2);
    EXPECT_EQ(destroyed, 4);  // the killed handlers unwound: their destructors ran
    EXPECT_EQ(server.connections(), 0u);
    EXPECT_EQ(server.stats().killed, 2u);
    EXPECT_EQ(clients[0].get(), "quick\n");
    EXPECT_EQ(clients[1].get(), "quick\n");
    EXPECT_EQ(clients[2].get(), "");  // killed: connection closed without a reply
    EXPECT_EQ(clients[3].get(), "");
  }
  leaks.check();
}

TEST(StreamServer, StopWithoutHandlersIsImmediate) {
  StreamServer server(Address("127.0.0.1", 0), echo_lines, quiet());
  server.start();
  auto t0 = fiberio::Clock::now();
  server.stop(10s);
  EXPECT_LT(fiberio::Clock::now() - t0, 1s);
}

TEST(StreamServer, SecondStopWithZeroGraceCutsTheGraceShort) {
  LeakCheck leaks;
  {
    bool unwound = false;
    StreamServer server(
        Address("127.0.0.1", 0),
        [&](Socket& sock, const Address&) {
          struct Marker {
            bool& flag;
            ~Marker() { flag = true; }
          } m{unwound};
          sock.recv(10);  // the client never sends: only a kill ends this
        },
        quiet());
    server.start();
    Socket c = fiberio::create_connection(server.address(), 2s);
    ASSERT_TRUE(eventually([&] { return server.connections() == 1; }));
    auto t0 = fiberio::Clock::now();
    auto patient = fiberio::spawn([&] { server.stop(30s); });
    fiberio::sleep(20ms);
    server.stop(fiberio::Duration::zero());  // as a second Ctrl+C does
    EXPECT_TRUE(patient.join(5s));
    EXPECT_LT(fiberio::Clock::now() - t0, 5s);
    EXPECT_TRUE(unwound);
    EXPECT_EQ(c.recv(10), "");
  }
  leaks.check();
}

TEST(StreamServer, DestroyedWhileServingStopsAndCleansUp) {
  LeakCheck leaks;
  {
    bool unwound = false;
    Socket c;
    {
      StreamServer server(
          Address("127.0.0.1", 0),
          [&](Socket& sock, const Address&) {
            struct Marker {
              bool& flag;
              ~Marker() { flag = true; }
            } m{unwound};
            sock.recv(10);
          },
          quiet());
      server.start();
      c = fiberio::create_connection(server.address(), 2s);
      ASSERT_TRUE(eventually([&] { return server.connections() == 1; }));
    }  // no stop(): the destructor stops without grace
    EXPECT_TRUE(unwound);
    EXPECT_EQ(c.recv(10), "");
  }
  leaks.check();
}

// A kill that lands while ~StreamServer stops its handlers is delivered later, and Timeout guards
// still fire afterwards (the kill used to bypass the hub's bookkeeping and disarm every Timeout).
TEST(StreamServer, KillDuringDestructorKeepsTimeoutsWorking) {
  LeakCheck leaks;
  std::atomic<bool> in_handler{false};
  auto owner = fiberio::spawn([&] {
    Socket c;  // outlives the server: the handler stays blocked until the server stops it
    StreamServer server(
        Address("127.0.0.1", 0),
        [&](Socket& sock, const Address&) {
          in_handler = true;
          try {
            sock.recv(10);
          } catch (const fiberio::GreenletExit&) {
            fiberio::sleep(100ms);  // a slow cleanup: the server's destructor waits for it
            throw;
          }
        },
        quiet());
    server.start();
    c = fiberio::create_connection(server.address(), 2s);
    while (!in_handler) fiberio::sleep(1ms);
  });  // leaving the scope destroys the server, which stops the handler and waits for it
  ASSERT_TRUE(eventually([&] { return in_handler.load(); }));
  fiberio::sleep(20ms);  // owner is in ~StreamServer, waiting for the handler's cleanup
  owner.kill();
  EXPECT_TRUE(owner.dead());
  fiberio_test::expect_timeout_still_fires();
  EXPECT_TRUE(eventually([] { return fiberio::live_greenlets() == 0; }));  // the handler's cleanup ends
  leaks.check();
}

TEST(StreamServer, MaxConnectionsPausesAccepting) {
  LeakCheck leaks;
  {
    int active = 0, peak = 0;
    fiberio::Event release;
    StreamServer server(
        Address("127.0.0.1", 0),
        [&](Socket& sock, const Address&) {
          peak = std::max(peak, ++active);
          release.wait(10s);
          sock.sendall("ok");
          --active;
        },
        quiet());
    server.max_connections(3);
    server.start();
    auto addr = server.address();
    std::vector<fiberio::Greenlet<std::string>> clients;
    for (int i = 0; i < 8; ++i)
      clients.push_back(fiberio::spawn([addr] {
        Socket c = fiberio::create_connection(addr, 10s);
        return c.recv(10);
      }));
    fiberio::sleep(100ms);  // every client has connected (into the backlog); only 3 are handled
    EXPECT_EQ(server.connections(), 3u);
    EXPECT_EQ(server.stats().accepted, 3u);
    release.set();
    for (auto& c : clients) EXPECT_EQ(c.get(), "ok");
    EXPECT_EQ(peak, 3);
    EXPECT_EQ(server.stats().accepted, 8u);
    server.stop();
  }
  leaks.check();
}

TEST(StreamServer, StopFromInsideAHandler) {
  LeakCheck leaks;
  {
    StreamServer* self = nullptr;
    StreamServer server(
        Address("127.0.0.1", 0),
        [&](Socket& sock, const Address&) {
          Stream s(sock);
          if (s.read_line() == "quit\n") {
            self->stop();  // returns at once; the stop completes after this handler returns
            s.write_line("stopping");
            s.flush();
          }
        },
        quiet());
    self = &server;
    auto serving = fiberio::spawn([&] { server.serve_forever(); });
    ASSERT_TRUE(eventually([&] { return server.started(); }));
    EXPECT_EQ(ask(server.address(), "quit"), "stopping\n");
    EXPECT_TRUE(serving.join(5s));
    EXPECT_TRUE(server.stopped());
  }
  leaks.check();
}

TEST(StreamServer, StopFromAnotherThread) {
  Address addr;
  std::atomic<bool> ready{false};
  StreamServer* server_ptr = nullptr;
  std::thread t([&] {
    StreamServer server(Address("127.0.0.1", 0), echo_lines, quiet());
    server_ptr = &server;
    server.start();
    addr = server.address();
    ready = true;
    server.serve_forever();  // until the main thread stops it
    server_ptr = nullptr;
  });
  ASSERT_TRUE(eventually([&] { return ready.load(); }));
  EXPECT_EQ(ask(addr, "cross"), "cross\n");
  server_ptr->stop(1s);
  t.join();
  EXPECT_EQ(server_ptr, nullptr);
}

// stop() from another thread may still be finishing when serve_forever() returns and the server is
// destroyed: it must not touch the freed server (a use-after-free ASan and TSan reported). Both
// threads share one CPU here, so the serving thread destroys the server, and overwrites the freed
// memory, before the stopping thread runs again.
TEST(StreamServer, StopFromAnotherThreadOutlivesTheServer) {
  auto res = fiberio_test::run_child([] {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    ::sched_setaffinity(0, sizeof one, &one);
    for (int round = 0; round < 20; ++round) {
      std::atomic<StreamServer*> server_ptr{nullptr};
      std::thread t([&] {
        {
          StreamServer server(Address("127.0.0.1", 0), echo_lines, quiet());
          server.start();
          server_ptr = &server;
          server.serve_forever();  // until the main thread stops it
        }
        std::vector<std::unique_ptr<char[]>> scribble;  // reuse the freed memory at once
        for (std::size_t n = 16; n <= 4096; n += 16) {
          scribble.emplace_back(new char[n]);
          std::memset(scribble.back().get(), 0xA5, n);
        }
      });
      while (!server_ptr) std::this_thread::sleep_for(1ms);
      server_ptr.load()->stop(1s);
      t.join();
    }
    return 0;
  });
  EXPECT_TRUE(res.exited_ok()) << res.describe();
}

namespace {
// A slowloris client: connects and trickles one byte every 50 ms, never finishing a line, until the
// server closes the connection or `limit` passes. Returns how long the server put up with it.
fiberio::Duration trickle(const Address& addr, fiberio::Duration limit) {
  auto t0 = fiberio::Clock::now();
  try {
    Socket c = fiberio::create_connection(addr, 2s);
    while (fiberio::Clock::now() - t0 < limit) {
      c.sendall("x");
      fiberio::sleep(50ms);
    }
  } catch (const std::exception&) {  // reset or broken pipe: the server dropped us
  }
  return fiberio::Clock::now() - t0;
}
}  // namespace

// Slowloris: clients that trickle a request byte by byte used to hold their connections forever, and
// at max_connections nobody else got in (0 of 5 answered). Bytes trickling in do not extend the
// request timeout, so they are dropped, and the others are served.
TEST(StreamServer, SlowlorisClientsAreDroppedAndTheOthersServed) {
  StreamServer server(Address("127.0.0.1", 0), echo_lines, quiet());
  server.max_connections(10).request_timeout(500ms);
  fiberio::set_error_handler([](const fiberio::GreenletBase&, std::exception_ptr) {});  // their timeouts
  server.start();
  std::vector<fiberio::Greenlet<fiberio::Duration>> slow;
  for (int i = 0; i < 10; ++i) slow.push_back(fiberio::spawn(trickle, server.address(), fiberio::Duration(5s)));
  fiberio::sleep(100ms);  // they hold all 10 slots
  int answered = 0;
  std::vector<fiberio::Greenlet<void>> normal;
  for (int i = 0; i < 5; ++i)
    normal.push_back(fiberio::spawn([&] {
      if (ask(server.address(), "hello", 5s) == "hello\n") ++answered;
    }));
  fiberio::joinall(normal);
  EXPECT_EQ(answered, 5);
  for (auto& g : slow) EXPECT_LT(g.get(), 3s) << "a trickling client was held for its whole run";
  server.stop();
  fiberio::set_error_handler(nullptr);
}

// At max_connections, with clients waiting to get in, the connection idle for longest is closed to
// make room (idle: its handler has sent nothing for evict_idle_after).
TEST(StreamServer, IdleConnectionsAreEvictedToMakeRoomAtTheLimit) {
  StreamServer server(Address("127.0.0.1", 0), echo_lines, quiet());
  server.max_connections(5).request_timeout(std::nullopt).evict_idle_after(200ms);
  server.start();
  std::vector<Socket> idle;
  for (int i = 0; i < 5; ++i) idle.push_back(fiberio::create_connection(server.address(), 2s));
  ASSERT_TRUE(eventually([&] { return server.connections() == 5; }));
  auto t0 = fiberio::Clock::now();
  EXPECT_EQ(ask(server.address(), "let me in", 5s), "let me in\n");
  EXPECT_LT(fiberio::Clock::now() - t0, 2s);
  EXPECT_GE(server.stats().evicted, 1u);
  server.stop();
}

TEST(StreamServer, UnixSocketServer) {
  LeakCheck leaks;
  {
    std::string path = fmt::format("/tmp/fiberio-server-{}.sock", ::getpid());
    ::unlink(path.c_str());
    StreamServer server(Address::unix_path(path), echo_lines, quiet());
    server.start();
    EXPECT_EQ(fmt::format("{}", server.address()), "unix:" + path);
    EXPECT_EQ(ask(server.address(), "over unix"), "over unix\n");
    server.stop();
    EXPECT_NE(::access(path.c_str(), F_OK), 0) << "the socket file is removed on stop";
  }
  leaks.check();
}

TEST(StreamServer, Ipv6Server) {
  Socket probe = Socket::tcp(AF_INET6);
  try {
    probe.bind(Address("::1", 0));
  } catch (const std::system_error& e) {
    GTEST_SKIP() << "no IPv6 loopback: " << e.what();
  }
  probe.close();
  StreamServer server(Address::parse("[::1]:0"), echo_lines, quiet());
  server.start();
  EXPECT_TRUE(server.address().is_ipv6());
  EXPECT_EQ(ask(server.address(), "six"), "six\n");
  server.stop();
}

TEST(StreamServer, WorkersSpreadConnectionsAcrossThreads) {
  LeakCheck leaks;
  {
    std::mutex mu;
    std::set<std::thread::id> threads;
    StreamServer server(
        Address("127.0.0.1", 0),
        [&](Socket& sock, const Address& a) {
          {
            std::lock_guard lk(mu);
            threads.insert(std::this_thread::get_id());
          }
          echo_lines(sock, a);
        },
        quiet());
    server.workers(2);
    server.start();
    auto addr = server.address();
    EXPECT_NE(addr.port(), 0);
    int ok = 0;
    std::vector<fiberio::Greenlet<void>> clients;
    for (int i = 0; i < 64; ++i)
      clients.push_back(fiberio::spawn([&, i] {
        if (ask(addr, fmt::format("w{}", i)) == fmt::format("w{}\n", i)) ++ok;
      }));
    fiberio::joinall(clients, 20s, true);
    EXPECT_EQ(ok, 64);
    server.stop(1s);
    EXPECT_TRUE(server.stopped());
    std::lock_guard lk(mu);
    EXPECT_EQ(threads.size(), 2u) << "SO_REUSEPORT should spread 64 connections over both workers";
    EXPECT_EQ(threads.count(std::this_thread::get_id()), 0u);
    EXPECT_EQ(server.stats().accepted, 64u);
  }
  leaks.check();
}

TEST(StreamServer, OptionsAreFixedAfterStart) {
  StreamServer server(Address("127.0.0.1", 0), echo_lines, quiet());
  server.backlog(16).max_connections(10).stop_timeout(2s);
  EXPECT_EQ(server.options().backlog, 16);
  EXPECT_EQ(server.options().max_connections, 10u);
  server.start();
  EXPECT_THROW(server.backlog(32), std::logic_error);
  EXPECT_THROW(server.start(), std::logic_error);
  EXPECT_THROW(StreamServer(Address("127.0.0.1", 0), nullptr), std::invalid_argument);
}

TEST(StreamServer, BindErrorNamesTheAddress) {
  StreamServer a(Address("127.0.0.1", 0), echo_lines, quiet());
  a.start();
  StreamServer b(a.address(), echo_lines, quiet());
  try {
    b.start();
    FAIL() << "second bind succeeded";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EADDRINUSE);
    EXPECT_NE(std::string(e.what()).find(a.address().to_string()), std::string::npos) << e.what();
  }
}

// SO_REUSEPORT (workers) must not turn "port in use" into "share the port": whoever listens there
// first — another fiberio server with workers, one without, or any SO_REUSEPORT listener — keeps it,
// and the second start() is refused with the same error as a single listener gets.
TEST(StreamServer, PortInUseIsRefusedWithWorkersToo) {
  auto expect_refused = [](const Address& addr, unsigned workers, const char* what) {
    StreamServer b(addr, echo_lines, quiet());
    b.workers(workers);
    try {
      b.start();
      ADD_FAILURE() << what << ": workers(" << workers << ") started on a port in use";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code().value(), EADDRINUSE) << what;
      EXPECT_NE(std::string(e.what()).find(addr.to_string()), std::string::npos) << e.what();
    }
  };
  {
    StreamServer a(Address("127.0.0.1", 0), echo_lines, quiet());
    a.workers(2);
    a.start();
    expect_refused(a.address(), 1, "fiber server with workers");
    expect_refused(a.address(), 2, "fiber server with workers");
    expect_refused(a.address(), 3, "fiber server with workers");
    EXPECT_EQ(ask(a.address(), "still mine"), "still mine\n");
  }
  {
    StreamServer a(Address("127.0.0.1", 0), echo_lines, quiet());
    a.start();
    expect_refused(a.address(), 2, "fiber server without workers");
  }
  {
    Socket other = Socket::tcp();  // another program that opted into SO_REUSEPORT itself
    other.set_reuse_addr();
    other.set_reuse_port();
    other.bind(Address("127.0.0.1", 0));
    other.listen();
    expect_refused(other.local_address(), 2, "SO_REUSEPORT listener");
  }
}

TEST(StreamServer, ServesOnAPreboundSocket) {
  Socket lst = Socket::tcp();
  lst.bind(Address("127.0.0.1", 0));
  auto addr = lst.local_address();
  StreamServer server(std::move(lst), echo_lines, quiet());
  server.start();
  EXPECT_EQ(server.address(), addr);
  EXPECT_EQ(ask(addr, "prebound"), "prebound\n");
}

// EMFILE: in a child with a tiny fd limit, fill the fd table, connect clients the server cannot
// accept, check it backs off without spinning, free fds and check everyone gets served.
namespace {
int emfile_child() {
  StreamServer server(Address("127.0.0.1", 0), echo_lines, quiet());
  server.start();
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = count_fds() + 24;
  if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) return 10;
  std::vector<Socket> clients;
  for (;;) {
    try {
      clients.push_back(Socket::tcp());
    } catch (const std::system_error& e) {
      if (e.code().value() != EMFILE) return 11;
      break;
    }
    if (clients.size() > 100) return 12;
  }
  clients.resize(clients.size() - 6);  // 6 free fds: the server can accept 6, the rest must wait
  for (auto& c : clients) c.connect(server.address(), 2s);  // completes in the kernel backlog
  if (!eventually([&] { return server.stats().accept_backoffs > 0; }, 3s)) return 13;
  // Backing off, not spinning: little CPU while the table stays full.
  rusage r0{}, r1{};
  ::getrusage(RUSAGE_SELF, &r0);
  auto backoffs0 = server.stats().accept_backoffs;
  fiberio::sleep(300ms);
  ::getrusage(RUSAGE_SELF, &r1);
  auto cpu_us = [](const rusage& r) {
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1000000L + r.ru_utime.tv_usec + r.ru_stime.tv_usec;
  };
  if (cpu_us(r1) - cpu_us(r0) > 150000) return 14;
  if (server.stats().accept_backoffs - backoffs0 > 60) return 15;  // 5 ms doubling to 100 ms
  // Free fds: close the first half of the clients; the rest must all be served now.
  std::size_t half = clients.size() / 2;
  clients.erase(clients.begin(), clients.begin() + static_cast<std::ptrdiff_t>(half));
  int ok = 0;
  std::vector<fiberio::Greenlet<void>> gs;
  for (auto& c : clients)
    gs.push_back(fiberio::spawn([&ok, &c] {
      c.set_timeout(5s);
      Stream s(c);
      s.write_line("alive");
      s.flush();
      if (s.read_line() == "alive\n") ++ok;
    }));
  fiberio::joinall(gs, 10s);
  if (ok != static_cast<int>(clients.size())) return 16;
  clients.clear();
  server.stop(1s);
  return 0;
}
}  // namespace

TEST(StreamServer, RecoversFromEmfile) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::alarm(20);  // a hang in the child kills it (and fails the test) rather than hanging it
    int rc = 99;
    try {
      rc = emfile_child();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "emfile child: %s\n", e.what());
      rc = 98;
    }
    std::fflush(stderr);
    ::_exit(rc);
  }
  int status = 0;
  ASSERT_TRUE(eventually([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 30s));
  ASSERT_TRUE(WIFEXITED(status)) << "child died by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "see emfile_child() for what this code means";
}

// SIGINT: a child serving forever with an in-flight handler gets SIGINT; serve_forever must return
// (exit code 0) within the grace period, after the handler's destructors ran.
TEST(StreamServer, SigintDrainsAndServeForeverReturns) {
  auto [parent_end, child_end] = Socket::pair();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::alarm(20);
    parent_end.close();
    int report = child_end.fd();
    auto say = [report](std::string_view s) { [[maybe_unused]] auto r = ::write(report, s.data(), s.size()); };
    int rc = 0;
    try {
      fiberio::ServerOptions o;
      o.stop_timeout = 300ms;  // handle_signals stays at its default: true
      StreamServer server(
          Address("127.0.0.1", 0),
          [&](Socket& sock, const Address&) {
            struct Marker {
              decltype(say)& out;
              ~Marker() { out("handler unwound\n"); }
            } m{say};
            Stream s(sock);
            s.read_line();
            s.write_line("in flight");
            s.flush();
            fiberio::sleep(1h);
          },
          o);
      server.start();
      say(fmt::format("port {}\n", server.address().port()));
      server.serve_forever();
      say("serve_forever returned\n");
    } catch (const std::exception& e) {
      say(fmt::format("error {}\n", e.what()));
      rc = 1;
    }
    ::_exit(rc);
  }
  child_end.close();
  parent_end.set_timeout(10s);
  Stream report(parent_end);
  auto port_line = report.read_line();
  ASSERT_TRUE(port_line.starts_with("port ")) << port_line;
  auto port = static_cast<std::uint16_t>(std::stoi(port_line.substr(5)));
  Socket c = fiberio::create_connection(Address("127.0.0.1", port), 5s);
  Stream cs(c);
  cs.write_line("hi");
  cs.flush();
  EXPECT_EQ(cs.read_line(), "in flight\n");  // the handler is now in flight
  auto t0 = fiberio::Clock::now();
  ASSERT_EQ(::kill(pid, SIGINT), 0);
  EXPECT_EQ(report.read_line(), "handler unwound\n");
  EXPECT_EQ(report.read_line(), "serve_forever returned\n");
  int status = 0;
  ASSERT_TRUE(eventually([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 10s));
  EXPECT_LT(fiberio::Clock::now() - t0, 300ms + 2s);
  ASSERT_TRUE(WIFEXITED(status)) << "child died by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(cs.read_line(), "");  // the killed handler's connection was closed
}

TEST(StreamServer, SigtermStopsServeForeverInProcess) {
  LeakCheck leaks;
  {
    struct sigaction before {};
    ::sigaction(SIGTERM, nullptr, &before);
    fiberio::ServerOptions o;
    o.stop_timeout = 100ms;
    StreamServer server(Address("127.0.0.1", 0), echo_lines, o);
    auto serving = fiberio::spawn([&] { server.serve_forever(); });
    ASSERT_TRUE(eventually([&] { return server.started(); }));
    EXPECT_EQ(ask(server.address(), "x"), "x\n");
    ::kill(::getpid(), SIGTERM);  // without serve_forever's handler this would kill the test
    EXPECT_TRUE(serving.join(5s));
    EXPECT_TRUE(server.stopped());
    struct sigaction after {};
    ::sigaction(SIGTERM, nullptr, &after);
    EXPECT_EQ(after.sa_handler, before.sa_handler) << "the previous disposition is restored";
  }
  leaks.check();
}

TEST(DatagramServer, Echo) {
  LeakCheck leaks;
  {
    fiberio::DatagramServer* self = nullptr;
    fiberio::ServerOptions o = fiberio::DatagramServer::default_options();
    o.handle_signals = false;
    fiberio::DatagramServer server(
        Address("127.0.0.1", 0),
        [&](std::string_view data, const Address& from) { self->sendto(fmt::format("echo:{}", data), from); }, o);
    self = &server;
    server.start();
    auto addr = server.address();
    EXPECT_NE(addr.port(), 0);
    Socket c = Socket::udp();
    c.set_timeout(2s);
    std::set<std::string> got;
    for (int i = 0; i < 20; ++i) c.sendto(fmt::format("d{}", i), addr);
    for (int i = 0; i < 20; ++i) {
      auto [data, from] = c.recvfrom(100);
      EXPECT_EQ(from, addr);
      got.insert(data);
    }
    EXPECT_EQ(got.size(), 20u);
    EXPECT_EQ(got.count("echo:d7"), 1u);
    EXPECT_EQ(server.stats().accepted, 20u);
    server.stop();
    EXPECT_TRUE(server.stopped());
  }
  leaks.check();
}
