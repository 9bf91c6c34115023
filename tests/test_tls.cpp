// TLS over cooperative sockets (fiberio/tls.hpp): fiberio's server against openssl s_client and curl,
// fiberio's client against openssl s_server, failures (untrusted CA, wrong host, plain text, no
// handshake at all) with their messages and no leaked fd, ALPN, SNI, 1,000 sessions on one hub,
// timeouts, close_notify vs. truncation, and kills at every suspension point.
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <fiberio/fiberio.hpp>
#include <fiberio/tls.hpp>

#include <gtest/gtest.h>
#include <fmt/format.h>

#include <csignal>
#include <exception>
#include <thread>

#include "support/certs.hpp"
#include "support/leak_check.hpp"
#include "support/ports.hpp"
#include "support/servers.hpp"
#include "watchdog.hpp"

using namespace fiberio_test;
using fiberio::Address;
using fiberio::Stream;
using fiberio::StreamServer;
using fiberio::TlsContext;
using fiberio::TlsError;
using fiberio::TlsSocket;

namespace {

// One throwaway PKI for the whole suite (making one takes a few openssl runs).
class Tls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { shared_ = new TestPki; }
  static void TearDownTestSuite() {
    delete shared_;
    shared_ = nullptr;
  }
  void SetUp() override {
    if (!pki.ok) GTEST_SKIP() << pki.why;
  }
  const TestPki& pki = *shared_;

 private:
  static inline TestPki* shared_ = nullptr;
};

// A client context trusting only the test CA.
TlsContext test_client(const TestPki& pki) {
  TlsContext c = TlsContext::client();
  c.load_verify_locations(pki.ca_cert);
  return c;
}

// The messages of exceptions that ended server handlers on this thread, collected while alive.
struct HandlerErrors {
  std::vector<std::string> messages;
  HandlerErrors() {
    fiberio::set_error_handler([this](const fiberio::GreenletBase&, std::exception_ptr e) {
      messages.push_back(fiberio::describe_exception(e));
    });
  }
  ~HandlerErrors() { fiberio::set_error_handler(nullptr); }
  std::string all() const {
    std::string s;
    for (auto& m : messages) s += m + "\n";
    return s;
  }
};

// Replies "hello <SNI> <ALPN>\n" and closes with close_notify.
void greet(TlsSocket& tls, const Address&) {
  tls.sendall(fmt::format("hello {} {}\n", tls.server_name(), tls.alpn_protocol()));
  tls.close_notify();
}

bool run_tool(Process& p, int& status, std::chrono::milliseconds budget = 15000ms) {
  status = p.signal_and_wait(0, budget);
  return status != -1;
}

}  // namespace

TEST_F(Tls, ServerAnswersOpensslSClientWithSniAndAlpn) {
  FIBERIO_WATCHDOG(60);
  LeakCheck leaks;
  {
    auto sctx = TlsContext::server(pki.server_cert, pki.server_key);
    sctx.set_alpn_protocols({"h2", "http/1.1"});
    StreamServer server(Address("127.0.0.1", 0), sctx, greet, quiet());
    server.start();
    std::string log = pki.dir.path + "/s_client.log";
    Process client({pki.openssl(), "s_client", "-connect", fmt::format("127.0.0.1:{}", server.address().port()),
                    "-servername", "localhost", "-CAfile", pki.ca_cert, "-verify_return_error", "-alpn",
                    "http/1.1,h2", "-brief", "-ign_eof"},
                   log);
    int st = 0;
    ASSERT_TRUE(run_tool(client, st)) << read_file(log);
    std::string out = read_file(log);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << out;
    EXPECT_NE(out.find("hello localhost h2"), std::string::npos) << out;   // SNI seen, server's ALPN preference
    EXPECT_NE(out.find("Verification: OK"), std::string::npos) << out;
    server.stop();
  }
  leaks.check();
}

TEST_F(Tls, ServerGivesCurlAnHttpsReply) {
  FIBERIO_WATCHDOG(60);
  std::string curl = find_program("curl");
  if (curl.empty()) GTEST_SKIP() << "curl is not installed (scripts/setup.sh installs it)";
  LeakCheck leaks;
  {
    std::string request_line;
    StreamServer server(
        Address("127.0.0.1", 0), TlsContext::server(pki.server_cert, pki.server_key),
        [&](TlsSocket& tls, const Address&) {
          Stream s(tls);
          request_line = std::string(Stream::chomp(s.read_line()));
          while (Stream::chomp(s.read_line()) != "") {
          }
          s.write("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\nhello curl!\n");
          s.flush();
          tls.close_notify();
        },
        quiet());
    server.start();
    int port = server.address().port();
    std::string log = pki.dir.path + "/curl.log", body = pki.dir.path + "/body";
    Process client({curl, "-sS", "--cacert", pki.ca_cert, "--resolve", fmt::format("localhost:{}:127.0.0.1", port),
                    "-o", body, fmt::format("https://localhost:{}/x", port)},
                   log);
    int st = 0;
    ASSERT_TRUE(run_tool(client, st)) << read_file(log);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << read_file(log);
    EXPECT_EQ(read_file(body), "hello curl!\n");
    EXPECT_EQ(request_line, "GET /x HTTP/1.1");
    server.stop();
  }
  leaks.check();
}

TEST_F(Tls, ClientTalksToOpensslSServer) {
  FIBERIO_WATCHDOG(60);
  LeakCheck leaks;
  {
    int port = free_port();
    std::string log = pki.dir.path + "/s_server.log";
    Process server({pki.openssl(), "s_server", "-accept", fmt::format("127.0.0.1:{}", port), "-cert", pki.server_cert,
                    "-key", pki.server_key, "-www", "-naccept", "1"},
                   log);
    auto ctx = test_client(pki);
    std::optional<TlsSocket> tls;
    // s_server needs a moment to listen; "localhost" may resolve to ::1 first (refused, then 127.0.0.1).
    ASSERT_TRUE(eventually([&] {
      try {
        tls = fiberio::create_connection("localhost", static_cast<std::uint16_t>(port), ctx, 5s);
        return true;
      } catch (const fiberio::ConnectionRefused&) {
        return false;
      }
    }, 10s)) << read_file(log);
    EXPECT_TRUE(tls->handshake_done());
    EXPECT_NE(tls->peer_subject().find("CN=localhost"), std::string::npos) << tls->peer_subject();
    EXPECT_EQ(tls->version().rfind("TLSv1.", 0), 0u) << tls->version();
    Stream s(*tls);
    s.write("GET / HTTP/1.0\r\n\r\n");
    s.flush();
    EXPECT_EQ(Stream::chomp(s.read_line()), "HTTP/1.0 200 ok");
    std::string rest = s.read_all(1 << 20);  // s_server -www ends with close_notify: a clean EOF
    EXPECT_NE(rest.find("s_server"), std::string::npos) << rest;
  }
  leaks.check();
}

TEST_F(Tls, UntrustedCaFailsWithTheVerifyReasonAndNoLeak) {
  FIBERIO_WATCHDOG(30);
  LeakCheck leaks;
  {
    HandlerErrors errors;
    StreamServer server(Address("127.0.0.1", 0), TlsContext::server(pki.server_cert, pki.server_key), greet, quiet());
    server.start();
    auto system_cas = TlsContext::client();  // the system's CAs: the test CA is not among them
    try {
      fiberio::create_connection("127.0.0.1", server.address().port(), system_cas, 5s);
      ADD_FAILURE() << "an untrusted certificate was accepted";
    } catch (const TlsError& e) {
      std::string what = e.what();
      EXPECT_NE(what.find("fiberio::TlsSocket::handshake(fd "), std::string::npos) << what;
      EXPECT_NE(what.find("certificate verify failed"), std::string::npos) << what;
      EXPECT_NE(what.find("unable to get local issuer certificate"), std::string::npos) << what;
      EXPECT_EQ(e.verify_result(), X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
      EXPECT_NE(e.reason().find("certificate verify failed"), std::string::npos) << e.reason();
    }
    // The server's side of it: the client's alert ends that handler's handshake, nothing else.
    EXPECT_TRUE(eventually([&] { return !errors.messages.empty(); })) << "the server saw no failure";
    EXPECT_NE(errors.all().find("fiberio::TlsError"), std::string::npos) << errors.all();
    EXPECT_NE(errors.all().find("unknown ca"), std::string::npos) << errors.all();
    server.stop();
  }
  leaks.check();
}

TEST_F(Tls, WrongHostNameFailsButTheRightNameAndIpAddressVerify) {
  FIBERIO_WATCHDOG(30);
  LeakCheck leaks;
  {
    HandlerErrors errors;
    StreamServer wrong(Address("127.0.0.1", 0), TlsContext::server(pki.wrong_cert, pki.wrong_key), greet, quiet());
    wrong.start();
    auto ctx = test_client(pki);
    try {
      fiberio::create_connection("localhost", wrong.address().port(), ctx, 5s);
      ADD_FAILURE() << "a certificate for wrong.example was accepted for localhost";
    } catch (const TlsError& e) {
      std::string what = e.what();
      EXPECT_NE(what.find("certificate verify failed"), std::string::npos) << what;
      EXPECT_NE(what.find("hostname mismatch"), std::string::npos) << what;
      EXPECT_EQ(e.verify_result(), X509_V_ERR_HOSTNAME_MISMATCH);
    }
    wrong.stop();

    StreamServer right(Address("127.0.0.1", 0), TlsContext::server(pki.server_cert, pki.server_key), greet, quiet());
    right.start();
    for (std::string host : {"localhost", "127.0.0.1"}) {  // a DNS name and an IP address SAN
      TlsSocket tls = fiberio::create_connection(host, right.address().port(), ctx, 5s);
      Stream s(tls);
      // SNI carries names only, never an IP address (RFC 6066).
      EXPECT_EQ(s.read_line(), host == "localhost" ? "hello localhost \n" : "hello  \n") << host;
      EXPECT_EQ(s.read_line(), "") << "close_notify reads as EOF";
    }
    right.stop();
  }
  leaks.check();
}

TEST_F(Tls, PlainTextClientAndSilentClientFailOnlyTheirOwnHandshake) {
  FIBERIO_WATCHDOG(30);
  LeakCheck leaks;
  {
    HandlerErrors errors;
    auto opts = quiet();
    opts.handshake_timeout = 300ms;
    StreamServer server(Address("127.0.0.1", 0), TlsContext::server(pki.server_cert, pki.server_key), greet, opts);
    server.start();
    auto addr = server.address();

    // Never says anything: its handshake times out, meanwhile others are served.
    fiberio::Socket silent = fiberio::create_connection(addr, 5s);
    auto ctx = test_client(pki);
    {
      TlsSocket tls = fiberio::create_connection("localhost", addr.port(), ctx, 5s);
      Stream s(tls);
      EXPECT_EQ(s.read_line(), "hello localhost \n");
    }
    EXPECT_TRUE(eventually([&] { return errors.messages.size() == 1; }, 3s)) << errors.all();
    EXPECT_NE(errors.all().find("fiberio::TimeoutError"), std::string::npos) << errors.all();
    EXPECT_NE(errors.all().find("handshake"), std::string::npos) << errors.all();
    EXPECT_EQ(silent.recv(100), "") << "the server closed the silent connection";

    // Speaks HTTP without TLS.
    fiberio::Socket plain = fiberio::create_connection(addr, 5s);
    plain.sendall("GET / HTTP/1.0\r\n\r\n");
    Stream ps(plain);
    std::string answer;
    try {
      answer = ps.read_all(1 << 16);
    } catch (const fiberio::ConnectionReset&) {
      // The server closed with the rest of the request unread: the kernel sends a reset.
    }
    EXPECT_EQ(answer.find("hello"), std::string::npos) << "the connection just ends";
    EXPECT_TRUE(eventually([&] { return errors.messages.size() == 2; }, 3s)) << errors.all();
    std::string second = errors.messages.back();
    EXPECT_NE(second.find("fiberio::TlsError: fiberio::TlsSocket::handshake(fd "), std::string::npos) << second;
    EXPECT_NE(second.find("http request"), std::string::npos) << second;
    EXPECT_EQ(server.stats().handler_errors, 2u);
    server.stop();
  }
  leaks.check();
}

TEST_F(Tls, AlpnPicksTheServersPreferenceOrNothing) {
  FIBERIO_WATCHDOG(30);
  LeakCheck leaks;
  {
    auto sctx = TlsContext::server(pki.server_cert, pki.server_key);
    sctx.set_alpn_protocols({"h2", "http/1.1"});
    StreamServer server(Address("127.0.0.1", 0), sctx, greet, quiet());
    server.start();
    struct Case {
      std::vector<std::string> offer;
      std::string agreed;
    };
    for (const Case& c : {Case{{"http/1.1", "h2"}, "h2"}, Case{{"http/1.1"}, "http/1.1"}, Case{{"spdy/3"}, ""},
                          Case{{}, ""}}) {
      auto ctx = test_client(pki);
      if (!c.offer.empty()) ctx.set_alpn_protocols(c.offer);
      TlsSocket tls = fiberio::create_connection("localhost", server.address().port(), ctx, 5s);
      EXPECT_EQ(tls.alpn_protocol(), c.agreed);
      Stream s(tls);
      EXPECT_EQ(s.read_line(), "hello localhost " + c.agreed + "\n");
    }
    EXPECT_THROW(sctx.set_alpn_protocols({""}), std::invalid_argument);
    server.stop();
  }
  leaks.check();
}

TEST_F(Tls, ThousandConcurrentSessionsOnOneHub) {
  FIBERIO_WATCHDOG(120);
  constexpr int kClients = 1000;
  if (!ensure_fd_limit(2 * kClients + 100)) GTEST_SKIP() << "RLIMIT_NOFILE too low for 1000 clients";
  LeakCheck leaks;
  {
    int active = 0, peak = 0;
    fiberio::Event all_in;
    StreamServer server(
        Address("127.0.0.1", 0), TlsContext::server(pki.server_cert, pki.server_key),
        [&](TlsSocket& tls, const Address&) {
          peak = std::max(peak, ++active);
          if (active == kClients) all_in.set();
          Stream s(tls);
          auto line = s.read_line();
          all_in.wait(60s);  // every session is established at the same time
          s.write(line);
          s.flush();
          --active;
        },
        quiet());
    server.start();
    auto ctx = test_client(pki);
    int ok = 0;
    std::vector<std::string> failures;
    std::vector<fiberio::Greenlet<void>> clients;
    for (int i = 0; i < kClients; ++i)
      clients.push_back(fiberio::spawn([&, i] {
        try {
          TlsSocket tls = fiberio::create_connection("127.0.0.1", server.address().port(), ctx, 60s);
          Stream s(tls);
          s.write_line(fmt::format("client {}", i));
          s.flush();
          if (s.read_line() == fmt::format("client {}\n", i)) ++ok;
        } catch (const std::exception& e) {
          if (failures.size() < 5) failures.push_back(e.what());
        }
      }));
    fiberio::joinall(clients, 90s, true);
    EXPECT_EQ(ok, kClients) << (failures.empty() ? "" : failures[0]);
    EXPECT_EQ(peak, kClients);
    server.stop();
  }
  leaks.check();
}

TEST_F(Tls, ReadTimeoutLeavesTheSessionUsable) {
  FIBERIO_WATCHDOG(30);
  LeakCheck leaks;
  {
    fiberio::Event go;
    StreamServer server(
        Address("127.0.0.1", 0), TlsContext::server(pki.server_cert, pki.server_key),
        [&](TlsSocket& tls, const Address&) {
          go.wait(10s);
          tls.sendall("late\n");
          tls.close_notify();
        },
        quiet());
    server.start();
    TlsSocket tls = fiberio::create_connection("localhost", server.address().port(), test_client(pki), 5s);
    tls.set_timeout(100ms);
    char buf[16];
    try {
      tls.recv(buf);
      ADD_FAILURE() << "recv returned before the server wrote";
    } catch (const fiberio::TimeoutError& e) {
      EXPECT_NE(std::string(e.what()).find("fiberio::Socket::recv"), std::string::npos) << e.what();
    }
    go.set();
    tls.set_timeout(5s);
    Stream s(tls);
    EXPECT_EQ(s.read_line(), "late\n");
    EXPECT_EQ(s.read_line(), "");
    server.stop();
  }
  leaks.check();
}

TEST_F(Tls, CloseNotifyIsEofAndTruncationIsAnError) {
  FIBERIO_WATCHDOG(30);
  LeakCheck leaks;
  {
    HandlerErrors errors;  // the truncated client's alert ends the second handler
    StreamServer server(
        Address("127.0.0.1", 0), TlsContext::server(pki.server_cert, pki.server_key),
        [&](TlsSocket& tls, const Address&) {
          Stream s(tls);
          std::string how = std::string(Stream::chomp(s.read_line()));
          tls.sendall("partial");
          if (how == "clean") {
            tls.close_notify();
          } else {
            tls.socket().shutdown(fiberio::ShutdownHow::Write);  // a FIN without close_notify
          }
          s.read_line();  // until the client is done
        },
        quiet());
    server.start();
    auto ctx = test_client(pki);
    {
      TlsSocket tls = fiberio::create_connection("localhost", server.address().port(), ctx, 5s);
      tls.sendall("clean\n");
      Stream s(tls);
      EXPECT_EQ(s.read_all(1024), "partial");
      EXPECT_EQ(tls.recv(16), "") << "EOF stays EOF";
    }
    {
      TlsSocket tls = fiberio::create_connection("localhost", server.address().port(), ctx, 5s);
      tls.sendall("truncate\n");
      Stream s(tls);
      EXPECT_EQ(s.read_exactly(7), "partial");
      try {
        s.read_some();
        ADD_FAILURE() << "a FIN without close_notify read as a clean EOF";
      } catch (const TlsError& e) {
        EXPECT_NE(std::string(e.what()).find("unexpected eof"), std::string::npos) << e.what();
      }
    }
    server.stop();
  }
  leaks.check();
}

TEST_F(Tls, KilledMidHandshakeReadOrWriteFreesEverything) {
  FIBERIO_WATCHDOG(30);
  LeakCheck leaks;
  {
    auto sctx = TlsContext::server(pki.server_cert, pki.server_key);
    auto ctx = test_client(pki);
    fiberio::Socket listener = fiberio::Socket::tcp();
    listener.bind(Address("127.0.0.1", 0));
    listener.listen();
    auto addr = listener.local_address();

    // Mid-handshake: a server greenlet whose client never speaks.
    fiberio::Socket silent = fiberio::create_connection(addr, 5s);
    auto [conn, peer] = listener.accept();
    auto hs = fiberio::spawn([&sctx, c = std::move(conn)]() mutable {
      TlsSocket tls(std::move(c), sctx);
      tls.handshake();
    });
    fiberio::sleep(50ms);
    hs.kill();
    EXPECT_EQ(silent.recv(16), "") << "the killed handshake's fd was closed";
    silent.close();

    // Mid-read and mid-write: a client the server side never answers and never reads.
    std::optional<TlsSocket> server_side;
    auto acceptor = fiberio::spawn([&] {
      auto [c, p] = listener.accept();
      server_side.emplace(std::move(c), sctx);
      server_side->handshake();
    });
    auto reader = fiberio::spawn([&] {
      TlsSocket tls = fiberio::create_connection("localhost", addr.port(), ctx, 5s);
      char buf[16];
      tls.recv(buf);
    });
    acceptor.join();
    fiberio::sleep(50ms);
    reader.kill();
    EXPECT_TRUE(reader.dead());
    char buf[16];
    EXPECT_THROW(server_side->recv(buf), TlsError) << "the killed reader closed without close_notify";
    server_side.reset();

    acceptor = fiberio::spawn([&] {
      auto [c, p] = listener.accept();
      server_side.emplace(std::move(c), sctx);
      server_side->handshake();
    });
    bool blocked = false;
    auto writer = fiberio::spawn([&] {
      TlsSocket tls = fiberio::create_connection("localhost", addr.port(), ctx, 5s);
      std::string block(64 * 1024, 'x');
      for (;;) {
        blocked = true;
        tls.sendall(block);  // eventually the socket buffers fill up
      }
    });
    acceptor.join();
    EXPECT_TRUE(eventually([&] { return blocked; }));
    fiberio::sleep(100ms);
    writer.kill();
    EXPECT_TRUE(writer.dead());
    server_side.reset();
  }
  leaks.check();
}

TEST_F(Tls, AnotherConnectionsQueuedErrorNeverLeaksIntoAnException) {
  FIBERIO_WATCHDOG(30);
  LeakCheck leaks;
  {
    HandlerErrors errors;  // the wrong server's handshake fails too
    StreamServer server(Address("127.0.0.1", 0), TlsContext::server(pki.wrong_cert, pki.wrong_key), greet, quiet());
    server.start();
    StreamServer good(Address("127.0.0.1", 0), TlsContext::server(pki.server_cert, pki.server_key), greet, quiet());
    good.start();
    auto ctx = test_client(pki);
    // A stale error some other code left on this thread's queue: it fails nothing...
    ERR_raise_data(ERR_LIB_USER, 1, "stale error from elsewhere");
    {
      TlsSocket ok = fiberio::create_connection("localhost", good.address().port(), ctx, 5s);
      Stream s(ok);
      EXPECT_EQ(s.read_line(), "hello localhost \n");
    }
    good.stop();
    // ...and shows up in no exception.
    ERR_raise_data(ERR_LIB_USER, 1, "stale error from elsewhere");
    try {
      fiberio::create_connection("localhost", server.address().port(), ctx, 5s);
      ADD_FAILURE() << "wrong host accepted";
    } catch (const TlsError& e) {
      EXPECT_EQ(std::string(e.what()).find("stale error"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("hostname mismatch"), std::string::npos) << e.what();
    }
    server.stop();
  }
  leaks.check();
}

TEST_F(Tls, ContextAndArgumentErrorsAreClear) {
  FIBERIO_WATCHDOG(30);
  try {
    TlsContext::server(pki.dir.path + "/missing.pem", pki.server_key);
    ADD_FAILURE() << "a missing certificate file was accepted";
  } catch (const TlsError& e) {
    EXPECT_NE(std::string(e.what()).find("missing.pem"), std::string::npos) << e.what();
  }
  try {
    TlsContext::server(pki.server_cert, pki.wrong_key);
    ADD_FAILURE() << "a key of another certificate was accepted";
  } catch (const TlsError& e) {
    EXPECT_NE(std::string(e.what()).find("key values mismatch"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("wrong.key"), std::string::npos) << e.what();
  }
  auto [a, b] = fiberio::Socket::pair();
  EXPECT_THROW(TlsSocket(std::move(a), TlsContext::client()), std::invalid_argument)
      << "a verifying client without a host name to verify";
  EXPECT_THROW(StreamServer(Address("127.0.0.1", 0), TlsContext::client(), greet, quiet()), std::invalid_argument);
  TlsSocket empty;
  char buf[4];
  EXPECT_FALSE(empty.valid());
  EXPECT_THROW(empty.socket(), fiberio::ClosedError);
  EXPECT_THROW(empty.recv(buf), fiberio::ClosedError);
  EXPECT_THROW(Stream{empty}, fiberio::ClosedError);
}

// A reader and a writer fiber on a TlsSocket whose handshake has not run yet: both drive it.
TEST_F(Tls, ReaderAndWriterFibersShareTheHandshake) {
  FIBERIO_WATCHDOG(30);
  LeakCheck leaks;
  {
    StreamServer server(Address("127.0.0.1", 0), TlsContext::server(pki.server_cert, pki.server_key),
                        [](TlsSocket& tls, const Address&) {
                          Stream s(tls);
                          s.write(s.read_line());
                          s.flush();
                        },
                        quiet());
    server.start();
    TlsSocket tls(fiberio::create_connection(server.address(), 5s), test_client(pki), "localhost");
    auto reader = fiberio::spawn([&] { return Stream(tls).read_line(); });
    auto writer = fiberio::spawn([&] { tls.sendall("ping\n"); });
    writer.get();
    EXPECT_EQ(reader.get(), "ping\n");
    EXPECT_TRUE(tls.handshake_done());
    server.stop();
  }
  leaks.check();
}

// A write that cannot go anywhere (EPIPE) throws ConnectionReset: the BIO sends with MSG_NOSIGNAL,
// so no SIGPIPE ends the process (OpenSSL's own socket BIO would write(2) and raise it).
TEST_F(Tls, WritingAfterShutdownThrowsInsteadOfRaisingSigpipe) {
  FIBERIO_WATCHDOG(30);
  auto old = ::signal(SIGPIPE, SIG_DFL);  // the default action: SIGPIPE would kill this test binary
  LeakCheck leaks;
  {
    StreamServer server(Address("127.0.0.1", 0), TlsContext::server(pki.server_cert, pki.server_key), greet, quiet());
    server.start();
    TlsSocket tls = fiberio::create_connection("localhost", server.address().port(), test_client(pki), 5s);
    tls.socket().shutdown(fiberio::ShutdownHow::Write);
    try {
      tls.sendall("after shutdown");
      ADD_FAILURE() << "a write after shutdown(SHUT_WR) succeeded";
    } catch (const fiberio::ConnectionReset& e) {
      EXPECT_EQ(e.code().value(), EPIPE) << e.what();
      EXPECT_NE(std::string(e.what()).find("fiberio::TlsSocket::sendall(fd "), std::string::npos) << e.what();
    }
    server.stop();
  }
  ::signal(SIGPIPE, old);
  leaks.check();
}

// Trusted CAs from a hashed directory (openssl rehash), and a minimum version the peer cannot meet.
TEST_F(Tls, CaDirectoryAndMinimumVersion) {
  FIBERIO_WATCHDOG(30);
  LeakCheck leaks;
  {
    std::string cadir = pki.dir.path + "/cadir";
    std::filesystem::create_directories(cadir);
    std::filesystem::copy_file(pki.ca_cert, cadir + "/ca.pem", std::filesystem::copy_options::overwrite_existing);
    Process rehash({pki.openssl(), "rehash", cadir}, pki.dir.path + "/rehash.log");
    ASSERT_EQ(rehash.signal_and_wait(0, 10000ms), 0) << read_file(pki.dir.path + "/rehash.log");

    HandlerErrors errors;
    auto sctx = TlsContext::server(pki.server_cert, pki.server_key);
    sctx.set_min_version(fiberio::TlsVersion::Tls1_3);
    StreamServer server(Address("127.0.0.1", 0), sctx, greet, quiet());
    server.start();
    auto from_dir = TlsContext::client();
    from_dir.load_verify_locations("", cadir);
    {
      TlsSocket tls = fiberio::create_connection("localhost", server.address().port(), from_dir, 5s);
      EXPECT_EQ(tls.version(), "TLSv1.3");
      EXPECT_EQ(Stream(tls).read_line(), "hello localhost \n");
    }
    auto old_client = test_client(pki);
    SSL_CTX_set_max_proto_version(old_client.native_handle(), TLS1_2_VERSION);
    try {
      fiberio::create_connection("localhost", server.address().port(), old_client, 5s);
      ADD_FAILURE() << "a TLS 1.2 client got past a TLS 1.3 minimum";
    } catch (const TlsError& e) {
      EXPECT_NE(std::string(e.what()).find("protocol version"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(eventually([&] { return !errors.messages.empty(); })) << "the server saw no failure";
    EXPECT_NE(errors.all().find("unsupported protocol"), std::string::npos) << errors.all();
    server.stop();
  }
  leaks.check();
}
