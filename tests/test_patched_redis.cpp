// Proof on code nobody here wrote: hiredis's blocking API (redisConnect + redisCommand), unmodified,
// against a real redis-server this test starts and stops. 20 fibers each block server-side for D in
// BLPOP; with the shims the batch takes about D, not 20 x D, on one thread.
#include <hiredis/hiredis.h>

#include "support/patched.hpp"
#include "watchdog.hpp"

using namespace fiberio_test;

namespace {

constexpr int kN = 20;
constexpr double kDelay = 0.3;  // seconds each BLPOP blocks in the server

class RedisServer {
 public:
  RedisServer() : port_(free_port()) {
    std::string exe = find_program("redis-server", {"/usr/bin", "/usr/local/bin"});
    if (exe.empty()) throw std::runtime_error("redis-server is not installed (scripts/setup.sh installs it)");
    log_ = dir_.path + "/redis.log";
    child_ = std::make_unique<Child>(
        std::vector<std::string>{exe, "--port", std::to_string(port_), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", dir_.path, "--daemonize", "no", "--protected-mode",
                                 "no", "--maxclients", "200"},
        log_);
    if (!wait_for_port(port_, 10000ms))
      throw std::runtime_error("redis-server did not start; its log:\n" + read_file(log_));
  }
  int port() const { return port_; }

 private:
  TempDir dir_;
  int port_;
  std::string log_;
  std::unique_ptr<Child> child_;  // stopped (SIGTERM, then SIGKILL) before dir_ is removed
};

struct Outcome {
  std::string error;
  bool nil = false;
  std::string value;
  double call_ms = 0;
  bool switched = false;
};

// What one fiber does: plain blocking hiredis, no fiberio call anywhere.
Outcome client(int port, int i) {
  Outcome out;
  redisContext* c = redisConnect("127.0.0.1", port);
  if (!c || c->err) {
    out.error = c ? c->errstr : "redisConnect failed";
    if (c) redisFree(c);
    return out;
  }
  auto* r = static_cast<redisReply*>(redisCommand(c, "SET fiberio:v:%d value-%d", i, i));
  if (r) freeReplyObject(r);
  auto before = fiberio::hub_switches();
  auto t0 = Clock::now();
  r = static_cast<redisReply*>(redisCommand(c, "BLPOP fiberio:empty:%d %.2f", i, kDelay));
  out.call_ms = ms_since(t0);
  out.switched = fiberio::hub_switches() > before;
  if (!r) {
    out.error = c->errstr;
  } else {
    out.nil = r->type == REDIS_REPLY_NIL;
    freeReplyObject(r);
    r = static_cast<redisReply*>(redisCommand(c, "GET fiberio:v:%d", i));
    if (r && r->type == REDIS_REPLY_STRING) out.value.assign(r->str, r->len);
    if (r) freeReplyObject(r);
  }
  redisFree(c);
  return out;
}

}  // namespace

TEST(PatchedRedis, TwentyBlockingClientsFinishInAboutOneDelay) {
  FIBERIO_WATCHDOG(60);
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    RedisServer server;
    auto t0 = Clock::now();
    std::vector<fiberio::Greenlet<Outcome>> gs;
    for (int i = 0; i < kN; ++i) gs.push_back(fiberio::spawn(client, server.port(), i));
    for (int i = 0; i < kN; ++i) {
      Outcome o = gs[i].get();
      EXPECT_EQ(o.error, "") << "client " << i;
      EXPECT_TRUE(o.nil) << "BLPOP on an empty list times out with nil (client " << i << ")";
      EXPECT_EQ(o.value, "value-" + std::to_string(i)) << "the connection stayed in sync";
      EXPECT_GE(o.call_ms, kDelay * 1000 * 0.8) << "BLPOP really blocked server-side";
      EXPECT_TRUE(o.switched) << "the hub ran other fibers while client " << i << " waited";
    }
    double took = ms_since(t0);
    EXPECT_GE(took, kDelay * 1000 * 0.8);
    EXPECT_LT(took, kN * kDelay * 1000 / 4) << "the " << kN << " blocking calls overlapped";
  }
  leaks.check();
}

TEST(PatchedRedis, WithoutTheShimsTheSameCodeRunsOneAtATime) {
  FIBERIO_WATCHDOG(60);
  fiberio::ensure_hub();
  RedisServer server;
  constexpr int kFew = 4;
  auto t0 = Clock::now();
  std::vector<fiberio::Greenlet<Outcome>> gs;
  for (int i = 0; i < kFew; ++i)
    gs.push_back(fiberio::spawn([&, i] {
      fiberio::patched::Disabled off;  // this fiber's calls block the thread: nobody else runs
      return client(server.port(), i);
    }));
  for (int i = 0; i < kFew; ++i) {
    Outcome o = gs[i].get();
    EXPECT_EQ(o.error, "");
    EXPECT_TRUE(o.nil);
    EXPECT_FALSE(o.switched) << "no switch happened during a call that blocked the thread";
  }
  EXPECT_GE(ms_since(t0), kFew * kDelay * 1000 * 0.8) << "serial: one delay after the other";
}
