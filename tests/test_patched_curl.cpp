// Proof on code nobody here wrote: libcurl's blocking curl_easy_perform, unmodified, against a slow
// local HTTP server (plain blocking sockets, a thread per connection, written here; its threads have
// no hub so the shims leave them alone). 20 fibers each fetch a page the server delays by D.
#include <curl/curl.h>

#include <atomic>
#include <future>
#include <mutex>
#include <thread>

#include "support/patched.hpp"
#include "watchdog.hpp"

using namespace fiberio_test;

namespace {

constexpr int kN = 20;
constexpr int kDelayMs = 300;

class SlowHttpServer {
 public:
  SlowHttpServer() {
    std::promise<int> ready;
    auto port = ready.get_future();
    thread_ = std::thread([this, &ready] { run(ready); });
    port_ = port.get();  // blocks this thread briefly; the server thread needs no hub
  }
  ~SlowHttpServer() {
    stop_ = true;
    ::shutdown(listen_fd_, SHUT_RDWR);  // wakes the blocked accept() with EINVAL
    thread_.join();
    std::lock_guard lk(mu_);
    for (auto& t : handlers_) t.join();
  }
  int port() const { return port_; }
  int served() const { return served_; }

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
    std::string req;
    char buf[1024];
    while (req.find("\r\n\r\n") == std::string::npos && req.size() < 8192) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      req.append(buf, static_cast<size_t>(n));
    }
    ::usleep(kDelayMs * 1000);  // the slow part, server-side
    std::string path = "?";
    if (auto sp = req.find(' '); sp != std::string::npos) path = req.substr(sp + 1, req.find(' ', sp + 1) - sp - 1);
    std::string body = "you asked for " + path;
    std::string resp = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
                       "\r\nConnection: close\r\n\r\n" + body;
    ++served_;  // before replying: the client may finish (and the test read served()) right after the write
    ::write(fd, resp.data(), resp.size());
    ::close(fd);
  }

  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> served_{0};
  std::mutex mu_;
  std::vector<std::thread> handlers_;
  std::thread thread_;
};

size_t append(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

struct Outcome {
  std::string error;
  long status = 0;
  std::string body;
  double call_ms = 0;
  bool switched = false;
};

// What one fiber does: the textbook blocking libcurl fetch.
Outcome fetch(int port, int i) {
  Outcome out;
  CURL* h = curl_easy_init();
  std::string url = "http://127.0.0.1:" + std::to_string(port) + "/item/" + std::to_string(i);
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, append);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &out.body);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
  curl_easy_setopt(h, CURLOPT_PROXY, "");  // never a proxy from the environment: loopback only
  auto before = fiberio::hub_switches();
  auto t0 = Clock::now();
  CURLcode rc = curl_easy_perform(h);
  out.call_ms = ms_since(t0);
  out.switched = fiberio::hub_switches() > before;
  if (rc != CURLE_OK) out.error = curl_easy_strerror(rc);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out.status);
  curl_easy_cleanup(h);
  return out;
}

}  // namespace

TEST(PatchedCurl, TwentyBlockingFetchesFinishInAboutOneDelay) {
  FIBERIO_WATCHDOG(60);
  fiberio::ensure_hub();
  ASSERT_EQ(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
  LeakCheck leaks;
  {
    SlowHttpServer server;
    auto t0 = Clock::now();
    std::vector<fiberio::Greenlet<Outcome>> gs;
    for (int i = 0; i < kN; ++i) gs.push_back(fiberio::spawn(fetch, server.port(), i));
    for (int i = 0; i < kN; ++i) {
      Outcome o = gs[i].get();
      EXPECT_EQ(o.error, "") << "fetch " << i;
      EXPECT_EQ(o.status, 200);
      EXPECT_EQ(o.body, "you asked for /item/" + std::to_string(i));
      EXPECT_GE(o.call_ms, kDelayMs * 0.9);
      EXPECT_TRUE(o.switched) << "the hub ran other fibers while fetch " << i << " waited";
    }
    double took = ms_since(t0);
    EXPECT_GE(took, kDelayMs * 0.9);
    EXPECT_LT(took, kN * kDelayMs / 4.0) << "the " << kN << " blocking fetches overlapped";
    EXPECT_EQ(server.served(), kN);
  }
  leaks.check();
  curl_global_cleanup();
}
