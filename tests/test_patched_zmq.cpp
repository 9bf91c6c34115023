// Unmodified libzmq under the shims: REQ sockets in greenlets. libzmq closes each socket's mailbox
// eventfd on its own reaper thread, where the hub that watched it cannot see the close; the next batch
// of sockets gets the same fd numbers. Every batch must still complete (from the second batch on it
// used to hang: the hub trusted its stale registrations of the reused numbers).
#include <zmq.h>

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/patched.hpp"
#include "watchdog.hpp"

using namespace fiberio_test;

namespace {
constexpr int kBatches = 3;
constexpr int kClients = 10;

// A REP server on its own plain thread (no hub: the shims are plain libc there): answers "re:<msg>".
class RepServer {
 public:
  RepServer() : ctx_(zmq_ctx_new()), sock_(zmq_socket(ctx_, ZMQ_REP)) {
    int linger = 0;
    zmq_setsockopt(sock_, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(sock_, "tcp://127.0.0.1:*") != 0) throw std::runtime_error("zmq_bind");
    char ep[256];
    size_t len = sizeof ep;
    zmq_getsockopt(sock_, ZMQ_LAST_ENDPOINT, ep, &len);
    endpoint_ = ep;
    thread_ = std::thread([this] {
      int timeout = 100;
      zmq_setsockopt(sock_, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
      while (!stop_) {
        char buf[64];
        int n = zmq_recv(sock_, buf, sizeof buf, 0);
        if (n < 0) continue;  // timeout: look at stop_
        std::string reply = "re:" + std::string(buf, static_cast<std::size_t>(std::min<int>(n, sizeof buf)));
        zmq_send(sock_, reply.data(), reply.size(), 0);
      }
      zmq_close(sock_);
    });
  }
  ~RepServer() {
    stop_ = true;
    thread_.join();
    zmq_ctx_term(ctx_);
  }
  const std::string& endpoint() const { return endpoint_; }

 private:
  void* ctx_;
  void* sock_;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};
}  // namespace

TEST(PatchedZmq, ReqSocketsInGreenletsOverBatchesThatReuseFdNumbers) {
  FIBERIO_WATCHDOG(60);
  fiberio::ensure_hub();
  ASSERT_TRUE(fiberio::patched::active());
  RepServer server;
  void* ctx = zmq_ctx_new();
  std::vector<std::set<int>> mailbox_fds(kBatches);
  for (int batch = 0; batch < kBatches; ++batch) {
    std::vector<fiberio::Greenlet<std::string>> clients;
    for (int i = 0; i < kClients; ++i)
      clients.push_back(fiberio::spawn([&, batch, i] {
        void* s = zmq_socket(ctx, ZMQ_REQ);
        int linger = 0;
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
        int fd = -1;
        size_t len = sizeof fd;
        zmq_getsockopt(s, ZMQ_FD, &fd, &len);  // the socket's mailbox eventfd
        mailbox_fds[static_cast<std::size_t>(batch)].insert(fd);
        zmq_connect(s, server.endpoint().c_str());
        std::string msg = std::to_string(batch) + "/" + std::to_string(i);
        zmq_send(s, msg.data(), msg.size(), 0);
        char buf[64];
        int n = zmq_recv(s, buf, sizeof buf, 0);  // blocks in poll() on the mailbox: the fiber parks
        zmq_close(s);                            // the reaper thread closes the mailbox later
        return n < 0 ? std::string("error: ") + zmq_strerror(zmq_errno()) : std::string(buf, static_cast<std::size_t>(n));
      }));
    std::size_t answered = 0;
    {
      fiberio::Timeout guard(10s);
      try {
        for (int i = 0; i < kClients; ++i) {
          EXPECT_EQ(clients[static_cast<std::size_t>(i)].get(), "re:" + std::to_string(batch) + "/" + std::to_string(i));
          ++answered;
        }
      } catch (const fiberio::TimeoutError&) {
      }
    }
    ASSERT_EQ(answered, static_cast<std::size_t>(kClients)) << "batch " << batch << " hung";
    fiberio::sleep(100ms);  // the reaper closes this batch's mailboxes; their numbers become free
  }
  // The premise: later batches reused numbers the earlier ones had (else the test proves nothing).
  std::size_t reused = 0;
  for (int fd : mailbox_fds[1]) reused += mailbox_fds[0].count(fd);
  EXPECT_GT(reused, 0u) << "no fd number was reused between batches";
  zmq_ctx_term(ctx);
}
