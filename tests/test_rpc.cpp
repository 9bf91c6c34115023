// The RPC demo (seed 002's homework, demos/rpc/): the frame codec on whole, split, oversized,
// malformed and deeply nested input; the registry's argument checks and error replies; and the
// fiberio client against each of the three server models (epoll state machine, thread per
// connection, fiberio), each run in a forked child and stopped with SIGINT.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fiberio/fiberio.hpp>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "client.hpp"
#include "functions.hpp"
#include "serve.hpp"
#include "support/ports.hpp"
#include "support/servers.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;
using rpc::Value;

namespace {

std::string header(std::uint32_t n) {
  return {static_cast<char>(n >> 24), static_cast<char>(n >> 16 & 0xff), static_cast<char>(n >> 8 & 0xff),
          static_cast<char>(n & 0xff)};
}

std::string frame_of_payload(const std::string& payload) { return header(static_cast<std::uint32_t>(payload.size())) + payload; }

std::string msgpack(const Value& v) {
  auto bytes = Value::to_msgpack(v);
  return std::string(bytes.begin(), bytes.end());
}

}  // namespace

// ---- frames ------------------------------------------------------------------------------------------

TEST(RpcFrame, MessagesSurviveByteAtATimeDelivery) {
  std::vector<Value> sent = {{{"id", 1}, {"call", "func1"}, {"args", {1, 2, 3}}},
                             {{"id", 2}, {"ok", {{"a", 1}, {"b", "two"}}}},
                             {{"id", 3}, {"error", "x"}, {"message", std::string(70000, 'm')}}};
  std::string stream;
  for (auto& m : sent) stream += rpc::encode_frame(m);
  rpc::FrameDecoder d;
  std::vector<Value> got;
  for (char c : stream) {
    d.feed(std::string_view(&c, 1));
    while (auto m = d.next()) got.push_back(*m);
  }
  EXPECT_EQ(got, sent);
  EXPECT_EQ(d.buffered(), 0u);
}

TEST(RpcFrame, AnOversizedHeaderIsRefusedBeforeItsPayloadArrives) {
  rpc::FrameDecoder d(1000);
  EXPECT_THROW(d.feed(header(1001)), rpc::ProtocolError);
  rpc::FrameDecoder ok(1000);
  ok.feed(header(1000));  // the limit itself is allowed
  EXPECT_FALSE(ok.next());
  EXPECT_THROW(rpc::encode_frame(Value{{"s", std::string(2000, 'x')}}, 1000), rpc::ProtocolError);
}

TEST(RpcFrame, ATruncatedFrameWaitsForTheRest) {
  std::string f = rpc::encode_frame(Value{{"id", 1}, {"call", "f"}});
  rpc::FrameDecoder d;
  d.feed(f.substr(0, f.size() - 1));
  EXPECT_FALSE(d.next());
  d.feed(f.substr(f.size() - 1));
  EXPECT_TRUE(d.next());
}

TEST(RpcFrame, APayloadThatIsNotAMessagePackMapIsAProtocolError) {
  for (std::string payload : {msgpack(Value::array({1, 2})), msgpack(Value(5)), std::string("\xc1"), std::string(""),
                              msgpack(Value{{"a", 1}}) + "junk", std::string("\x82\xa1", 2)}) {
    rpc::FrameDecoder d;
    d.feed(frame_of_payload(payload));
    EXPECT_THROW(d.next(), rpc::ProtocolError) << "payload of " << payload.size() << " bytes";
  }
}

// nlohmann's MessagePack reader recurses once per nesting level: without the depth limit a frame of
// a million one-element lists overflows the stack — here a greenlet's.
TEST(RpcFrame, DeepNestingIsRefusedWithoutExhaustingAGreenletsStack) {
  std::string payload = "\x81\xa1k" + std::string(1'000'000, '\x91') + "\xc0";  // {"k": [[[...[nil]...]]]}
  auto g = fiberio::spawn([&] {
    rpc::FrameDecoder d(2 << 20);
    d.feed(frame_of_payload(payload));
    try {
      d.next();
      return std::string("accepted");
    } catch (const rpc::ProtocolError& e) {
      return std::string(e.what());
    }
  });
  EXPECT_NE(g.get().find("deeper than 32 levels"), std::string::npos) << g.get();
}

// ---- the registry -------------------------------------------------------------------------------------

namespace {
Value request(const std::string& call, Value args) { return {{"id", 7}, {"call", call}, {"args", std::move(args)}}; }
}  // namespace

TEST(RpcRegistry, CallsConvertArgumentsAndDescribeSignatures) {
  auto api = rpc::demo_functions();
  EXPECT_EQ(api.handle(request("func1", {1, 2, 3})), (Value{{"id", 7}, {"ok", 9}}));
  EXPECT_EQ(api.handle(request("scale", {{{"x", 1.0}, {"y", 2.0}}, 2}))["ok"], (Value{{"x", 2.0}, {"y", 4.0}}));
  EXPECT_EQ(api.handle(request("word_count", {"a b a"}))["ok"], (Value{{"a", 2}, {"b", 1}}));
  std::vector<std::string> sigs;
  for (auto& f : api.describe()) sigs.push_back(f["signature"]);
  EXPECT_EQ(sigs, (std::vector<std::string>{"concat(str, str) -> str", "divide(int, int) -> int", "func1(int, int, int) -> int",
                                            "scale(Point, float) -> Point", "sum(list[int]) -> int",
                                            "word_count(str) -> dict[str, int]"}));
}

TEST(RpcRegistry, BadArgumentsAreNamedAndNothingIsCoercedSilently) {
  rpc::Registry api;
  int calls = 0;
  api.add("small", [&](std::int32_t x, std::string s) { ++calls; return s + std::to_string(x); });
  auto error = [&](Value args) {
    auto r = api.handle(request("small", std::move(args)));
    EXPECT_EQ(r["id"], 7);
    EXPECT_EQ(r["error"], "rpc::BadArguments") << r.dump();
    return r.value("message", std::string());
  };
  EXPECT_EQ(error({"1", "s"}), "small: argument 1: expected int, got string");
  EXPECT_EQ(error({1.5, "s"}), "small: argument 1: expected int, got float");
  EXPECT_EQ(error({1LL << 40, "s"}), "small: argument 1: expected int, got 1099511627776 (out of range)");
  EXPECT_EQ(error({1, 2}), "small: argument 2: expected str, got number");
  EXPECT_EQ(error({1}), "small() takes 2 arguments, 1 given");
  EXPECT_EQ(error(Value{{"x", 1}}), "small: arguments must be a list");
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(api.handle(request("small", {-3, "n"}))["ok"], "n-3");
}

TEST(RpcRegistry, UnknownNamesAndThrowingFunctionsBecomeTypedErrorReplies) {
  auto api = rpc::demo_functions();
  auto r = api.handle(request("nope", Value::array()));
  EXPECT_EQ(r["error"], "rpc::NoSuchFunction");
  EXPECT_EQ(r["message"], "no function named 'nope'");
  r = api.handle(request("divide", {1, 0}));
  EXPECT_EQ(r["error"], "std::domain_error");
  EXPECT_EQ(r["message"], "divide: division by zero");
  r = api.handle(request("func1", {1, 1, 9'000'000'000'000'000'000LL}));  // by squaring: no long loop
  EXPECT_EQ(r["ok"], 2);
  r = api.handle(Value{{"call", "func1"}});  // no id
  EXPECT_EQ(r["error"], "rpc::ProtocolError");
  EXPECT_TRUE(r["id"].is_null());
}

// ---- the client against each server model -------------------------------------------------------------

namespace {

// One of the server models, serving demo_functions() in a forked child on a free port.
class ServerProcess {
 public:
  explicit ServerProcess(const std::string& model) : port_(fiberio_test::free_port()) {
    std::fflush(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::signal(SIGINT, SIG_DFL);
      rpc::ServeOptions o;
      o.port = static_cast<std::uint16_t>(port_);
      o.max_frame = 64 * 1024;
      // Never back into the test's own code: a server that throws ends the child with a message.
      try {
        auto api = rpc::demo_functions();
        std::_Exit(model == "epoll" ? rpc::serve_epoll(api, o) : model == "threads" ? rpc::serve_threads(api, o) : rpc::serve_fiber(api, o));
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rpc %s server: %s\n", model.c_str(), e.what());
        std::_Exit(3);
      }
    }
    EXPECT_TRUE(fiberio_test::eventually([&] {
      try {
        fiberio::create_connection("127.0.0.1", port(), 1s);
        return true;
      } catch (const std::system_error&) {
        return false;
      }
    })) << model << " server did not start";
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  std::uint16_t port() const { return static_cast<std::uint16_t>(port_); }

  // SIGINT, then the exit status (-1: still running after `limit`, then killed).
  int interrupt(std::chrono::milliseconds limit = 3000ms) {
    ::kill(pid_, SIGINT);
    for (auto until = std::chrono::steady_clock::now() + limit; std::chrono::steady_clock::now() < until;) {
      int st = 0;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
      fiberio::sleep(5ms);
    }
    return -1;
  }

 private:
  int port_;
  pid_t pid_ = -1;
};

class RpcServers : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(RpcServers, TheSeedsCallsWorkAndErrorsArriveAsRemoteErrors) {
  ServerProcess server(GetParam());
  rpc::Client c("127.0.0.1", server.port());
  EXPECT_EQ(c.call<long>("func1", 1, 2, 3), 9);
  EXPECT_EQ(c.call<std::string>("concat", "ab", "cd"), "abcd");
  EXPECT_EQ(c.call<long>("sum", std::vector<long>{1, 2, 3, 4}), 10);
  EXPECT_EQ((c.call<std::map<std::string, long>>("word_count", "to be or not to be")),
            (std::map<std::string, long>{{"be", 2}, {"not", 1}, {"or", 1}, {"to", 2}}));
  EXPECT_EQ(c.call<demo::Point>("scale", demo::Point{1, -2}, 0.5), (demo::Point{0.5, -1}));
  auto func1 = c.function<long>("func1");
  EXPECT_EQ(func1(10, 3, 2), 19);
  std::vector<std::string> names;
  for (auto& f : c.functions()) names.push_back(f.name);
  EXPECT_EQ(names, (std::vector<std::string>{"concat", "divide", "func1", "scale", "sum", "word_count"}));

  auto remote_error = [&](auto&& call) -> std::pair<std::string, std::string> {
    try {
      call();
    } catch (const rpc::RemoteError& e) {
      return {e.type(), e.message()};
    }
    return {"no error", ""};
  };
  EXPECT_EQ(remote_error([&] { c.call("divide", 1, 0); }), std::make_pair(std::string("std::domain_error"), std::string("divide: division by zero")));
  EXPECT_EQ(remote_error([&] { c.call("func1", 1, "2", 3); }).first, "rpc::BadArguments");
  EXPECT_EQ(remote_error([&] { c.call("no_such"); }).first, "rpc::NoSuchFunction");
  EXPECT_THROW(c.call<std::string>("func1", 1, 2, 3), rpc::ResultTypeError);
  EXPECT_EQ(c.call<long>("func1", 1, 2, 3), 9);  // the connection survives every error above
  EXPECT_EQ(server.interrupt(), 0);
}

TEST_P(RpcServers, AMalformedOrOversizedFrameIsAnsweredAndTheConnectionClosed) {
  ServerProcess server(GetParam());
  for (std::string bad : {frame_of_payload("\xc1"), header(64 * 1024 + 1)}) {
    fiberio::Socket s = fiberio::create_connection("127.0.0.1", server.port(), 5s);
    s.sendall(bad);
    rpc::FrameDecoder d;
    std::optional<Value> reply;
    char buf[4096];
    while (!reply) {
      std::size_t n = s.recv(std::span<char>(buf));
      ASSERT_GT(n, 0u) << "closed without an error reply";
      d.feed(std::string_view(buf, n));
      reply = d.next();
    }
    EXPECT_EQ((*reply)["error"], "rpc::ProtocolError") << reply->dump();
    EXPECT_TRUE((*reply)["id"].is_null());
    EXPECT_EQ(s.recv(std::span<char>(buf)), 0u) << "the connection must close after a malformed frame";
  }
  rpc::Client c("127.0.0.1", server.port());
  EXPECT_EQ(c.call<long>("func1", 1, 2, 3), 9);
  EXPECT_EQ(server.interrupt(), 0);
}

// A client that sends 3,000 requests before reading any reply: the replies outgrow the socket
// buffers, so the server must hold them back (the epoll model switches to EPOLLOUT and stops
// reading) and still answer every one, in order.
TEST_P(RpcServers, PipelinedRequestsAreAllAnsweredInOrderUnderBackPressure) {
  ServerProcess server(GetParam());
  fiberio::Socket s = fiberio::create_connection("127.0.0.1", server.port(), 10s);
  constexpr int kRequests = 3000;
  std::string blob(200, 'x');
  auto writer = fiberio::spawn([&] {
    for (int i = 1; i <= kRequests; ++i) s.sendall(rpc::encode_frame(Value{{"id", i}, {"call", "concat"}, {"args", {blob, std::to_string(i)}}}));
  });
  fiberio::sleep(200ms);  // the writer fills the buffers while nobody reads
  rpc::FrameDecoder d;
  int next = 1;
  char buf[16384];
  while (next <= kRequests) {
    std::size_t n = s.recv(std::span<char>(buf));
    ASSERT_GT(n, 0u) << "closed after " << next - 1 << " replies";
    d.feed(std::string_view(buf, n));
    while (auto r = d.next()) {
      ASSERT_EQ((*r)["id"], next) << r->dump();
      ASSERT_EQ((*r)["ok"], blob + std::to_string(next));
      ++next;
    }
  }
  writer.join();
  EXPECT_EQ(server.interrupt(), 0);
}

TEST_P(RpcServers, TwoHundredConcurrentClientsGetTheirOwnAnswers) {
  ServerProcess server(GetParam());
  std::vector<fiberio::GreenletRef> clients;
  int wrong = 0, done = 0;
  for (int i = 0; i < 200; ++i) {
    clients.push_back(fiberio::spawn([&, i] {
      rpc::Client c("127.0.0.1", server.port());
      for (int k = 0; k < 20; ++k)
        if (c.call<long>("func1", i, k, 1) != i + k) ++wrong;
      ++done;
    }));
  }
  fiberio::joinall(clients, 20s, /*raise_error=*/true);
  EXPECT_EQ(done, 200);
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(server.interrupt(), 0);  // with 200 connections still open in the threads model's case
}

TEST_P(RpcServers, SigintStopsTheServerWithClientsConnected) {
  ServerProcess server(GetParam());
  std::vector<rpc::Client> idle;
  for (int i = 0; i < 20; ++i) idle.emplace_back("127.0.0.1", server.port());
  EXPECT_EQ(idle.back().call<long>("func1", 0, 2, 10), 1024);
  EXPECT_EQ(server.interrupt(), 0);
}

INSTANTIATE_TEST_SUITE_P(Models, RpcServers, ::testing::Values("epoll", "threads", "fiber"));
