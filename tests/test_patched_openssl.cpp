// Proof on code nobody here wrote: OpenSSL's blocking SSL_connect / SSL_write / SSL_read on a plain
// blocking socket, unmodified, against a TLS echo server (a thread per connection, written here) whose
// certificate (signed by a test CA) the test makes with the openssl command. The server answers each message
// after D; 20 fibers' exchanges overlap and the batch takes about D. Certificates are verified.
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <future>
#include <mutex>
#include <thread>

#include "support/certs.hpp"
#include "support/patched.hpp"
#include "watchdog.hpp"

using namespace fiberio_test;

namespace {

constexpr int kN = 20;
constexpr int kDelayMs = 300;

std::string ssl_error() {
  char buf[256];
  unsigned long e = ERR_get_error();
  if (!e) return "unknown TLS error";
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

// The test PKI (tests/support/certs.hpp), made without going through the shims under test.
struct Certificate {
  TestPki pki{[] { fiberio::patched::original::usleep(10000); }};
  const std::string& cert = pki.server_cert;
  const std::string& key = pki.server_key;
  Certificate() {
    if (!pki.ok) throw std::runtime_error(pki.why);
  }
};

class TlsEchoServer {
 public:
  explicit TlsEchoServer(const Certificate& c) {
    ctx_ = SSL_CTX_new(TLS_server_method());
    if (SSL_CTX_use_certificate_file(ctx_, c.cert.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx_, c.key.c_str(), SSL_FILETYPE_PEM) != 1)
      throw std::runtime_error("server certificate: " + ssl_error());
    std::promise<int> ready;
    auto port = ready.get_future();
    thread_ = std::thread([this, &ready] { run(ready); });
    port_ = port.get();
  }
  ~TlsEchoServer() {
    stop_ = true;
    ::shutdown(listen_fd_, SHUT_RDWR);
    thread_.join();
    {
      std::lock_guard lk(mu_);
      for (auto& t : handlers_) t.join();
    }
    SSL_CTX_free(ctx_);
  }
  int port() const { return port_; }

 private:
  void run(std::promise<int>& ready) {
    fiberio_test::Listener listener(128);  // closed when this loop ends
    listen_fd_ = listener.fd;
    ready.set_value(listener.port);
    while (!stop_) {
      int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) break;
      std::lock_guard lk(mu_);
      handlers_.emplace_back([this, fd] { handle(fd); });
    }
  }

  void handle(int fd) {
    SSL* ssl = SSL_new(ctx_);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) == 1) {
      char buf[256];
      int n = SSL_read(ssl, buf, sizeof buf);
      if (n > 0) {
        ::usleep(kDelayMs * 1000);
        std::string reply = "echo: " + std::string(buf, static_cast<size_t>(n));
        SSL_write(ssl, reply.data(), static_cast<int>(reply.size()));
      }
      SSL_shutdown(ssl);
    }
    SSL_free(ssl);
    ::close(fd);
  }

  SSL_CTX* ctx_ = nullptr;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<std::thread> handlers_;
  std::thread thread_;
};

struct Outcome {
  std::string error;
  std::string reply;
  bool verified = false;
  double call_ms = 0;
  bool switched = false;
};

// What one fiber does: a blocking socket and OpenSSL's blocking calls on it.
Outcome exchange(SSL_CTX* ctx, int port, int i) {
  Outcome out;
  int fd = connect_to(port);
  if (fd < 0) {
    out.error = std::string("connect: ") + std::strerror(errno);
    return out;
  }
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  SSL_set_tlsext_host_name(ssl, "localhost");
  SSL_set1_host(ssl, "localhost");
  if (SSL_connect(ssl) != 1) {
    out.error = "SSL_connect: " + ssl_error();
  } else {
    out.verified = SSL_get_verify_result(ssl) == X509_V_OK;
    std::string msg = "hello " + std::to_string(i);
    SSL_write(ssl, msg.data(), static_cast<int>(msg.size()));
    char buf[256];
    auto before = fiberio::hub_switches();
    auto t0 = Clock::now();
    int n = SSL_read(ssl, buf, sizeof buf);
    out.call_ms = ms_since(t0);
    out.switched = fiberio::hub_switches() > before;
    if (n > 0) out.reply.assign(buf, static_cast<size_t>(n));
    else out.error = "SSL_read: " + ssl_error();
    SSL_shutdown(ssl);
  }
  SSL_free(ssl);
  ::close(fd);
  return out;
}

}  // namespace

TEST(PatchedOpenssl, TwentyBlockingTlsExchangesFinishInAboutOneDelay) {
  FIBERIO_WATCHDOG(60);
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Certificate cert;
    TlsEchoServer server(cert);
    SSL_CTX* client_ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(client_ctx, SSL_VERIFY_PEER, nullptr);
    ASSERT_EQ(SSL_CTX_load_verify_locations(client_ctx, cert.pki.ca_cert.c_str(), nullptr), 1);
    auto t0 = Clock::now();
    std::vector<fiberio::Greenlet<Outcome>> gs;
    for (int i = 0; i < kN; ++i) gs.push_back(fiberio::spawn(exchange, client_ctx, server.port(), i));
    for (int i = 0; i < kN; ++i) {
      Outcome o = gs[i].get();
      EXPECT_EQ(o.error, "") << "exchange " << i;
      EXPECT_TRUE(o.verified) << "the certificate verified against the test CA";
      EXPECT_EQ(o.reply, "echo: hello " + std::to_string(i));
      EXPECT_GE(o.call_ms, kDelayMs * 0.9);
      EXPECT_TRUE(o.switched) << "the hub ran other fibers while exchange " << i << " waited";
    }
    double took = ms_since(t0);
    EXPECT_GE(took, kDelayMs * 0.9);
    EXPECT_LT(took, kN * kDelayMs / 4.0) << "the " << kN << " blocking TLS exchanges overlapped";
    SSL_CTX_free(client_ctx);
  }
  leaks.check();
}
