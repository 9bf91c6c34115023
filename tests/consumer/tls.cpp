// fiberio::tls from a downstream project: a TLS session over a socket pair, both ends in greenlets.
#include <fiberio/fiberio.hpp>
#include <fiberio/tls.hpp>

#include <cstdio>

int main() {
  auto [a, b] = fiberio::Socket::pair();
  auto client = fiberio::TlsContext::client();
  client.set_verify(false);  // no certificate here: the check is that the library links and runs
  bool ok = false;
  try {
    auto server = fiberio::TlsContext(fiberio::TlsRole::Server);  // no certificate: its handshake fails
    auto s = fiberio::spawn([&] { fiberio::TlsSocket(std::move(b), server).handshake(); });
    fiberio::TlsSocket(std::move(a), client).handshake(std::chrono::seconds(5));
  } catch (const fiberio::TlsError& e) {
    ok = true;  // the expected failure, as a TlsError with OpenSSL's reason
    std::printf("consumer_tls: TlsError %s\n", e.reason().empty() ? "without reason" : "with reason");
  }
  return ok ? 0 : 1;
}
