// TLS over cooperative sockets (gevent.ssl, Go's crypto/tls), on OpenSSL 3. A separate library:
// link fiberio::tls (libfiberio_tls), so programs without TLS never link OpenSSL.
//
//   // client: verifies the certificate chain against the system's CAs and the host name (both ON)
//   fiberio::TlsContext ctx = fiberio::TlsContext::client();
//   fiberio::TlsSocket tls = fiberio::create_connection("example.com", 443, ctx, 10s);
//   fiberio::Stream s(tls);                               // buffered reading over TLS
//   s.write("GET / HTTP/1.0\r\nHost: example.com\r\n\r\n"); s.flush();
//   std::string status = s.read_line();
//
//   // server: the handshake runs in each connection's greenlet (ServerOptions::handshake_timeout)
//   auto sctx = fiberio::TlsContext::server("chain.pem", "key.pem");
//   fiberio::StreamServer server(addr, sctx, [](fiberio::TlsSocket& tls, const fiberio::Address&) {
//     fiberio::Stream s(tls); ... });
//
// * Blocking-style like Socket: recv/send/sendall block only the fiber. OpenSSL runs on the
//   nonblocking fd through a small BIO of fiberio's own (recv, and send with MSG_NOSIGNAL so a dead
//   peer never raises SIGPIPE); its SSL_ERROR_WANT_READ/WANT_WRITE become waits on the hub, outside
//   any OpenSSL call, so a kill or timeout never unwinds through OpenSSL's frames.
// * Timeouts are the underlying Socket's (set_timeout here sets it there): each recv, each send and
//   sendall as a whole; handshake(timeout) bounds the whole handshake.
// * Reads: recv returns 0 only at a clean end (the peer's close_notify). A peer that closes the TCP
//   connection without close_notify makes recv throw TlsError ("unexpected eof"): a truncation is
//   never mistaken for the end of the data.
// * close_notify(): sends ours (the peer's recv then returns 0). close() sends it too, best effort
//   and without waiting, then closes the fd; so does the destructor, unless the connection broke.
// * Errors: TlsError with OpenSSL's queued reasons and, for certificate failures, the verification
//   result; TimeoutError, ClosedError, ConnectionReset & co. as on Socket. After any error other than
//   a read timeout the connection is unusable (OpenSSL's rule): close it.
// * Concurrency: one fiber reading and one writing at once is fine, as on Socket. An object belongs
//   to its thread (hub); OpenSSL's per-thread error queue is cleared before every call, so one
//   connection's error never shows up in another's exception.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "fiberio/dns.hpp"
#include "fiberio/server.hpp"
#include "fiberio/socket.hpp"
#include "fiberio/stream.hpp"

// OpenSSL's types, so this header does not pull in <openssl/ssl.h>.
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace fiberio {

// A TLS failure: the handshake (protocol, certificate, host name), a bad record, an unexpected EOF.
// what() names the operation and peer, then OpenSSL's reasons; reason() is OpenSSL's queued errors
// alone ("error:0A000086:SSL routines::certificate verify failed"); verify_result() is the
// certificate verification result (X509_V_OK = 0 if the certificate was not the problem) and
// verify_message() its text ("unable to get local issuer certificate").
class TlsError : public std::runtime_error {
 public:
  TlsError(const std::string& what, std::string reason, long verify_result, std::string verify_message)
      : std::runtime_error(what),
        reason_(std::move(reason)),
        verify_result_(verify_result),
        verify_message_(std::move(verify_message)) {}
  const std::string& reason() const noexcept { return reason_; }
  long verify_result() const noexcept { return verify_result_; }
  const std::string& verify_message() const noexcept { return verify_message_; }

 private:
  std::string reason_;
  long verify_result_;
  std::string verify_message_;
};

enum class TlsRole { Client, Server };
enum class TlsVersion { Tls1_2, Tls1_3 };

// Configuration shared by many connections (an SSL_CTX). Cheap to copy: copies share it. Configure
// it before its first connection (OpenSSL's contexts are not safe to change while in use); it may
// then be used from several threads.
class TlsContext {
 public:
  // A client context: verification ON; the system's default CA paths unless load_verify_locations()
  // is called before the first connection; minimum TLS 1.2.
  static TlsContext client();
  // A server context with its certificate chain (PEM: the leaf first, then intermediates) and key.
  static TlsContext server(const std::string& cert_chain_file, const std::string& key_file);

  explicit TlsContext(TlsRole role);

  TlsRole role() const noexcept { return role_; }
  // Certificate chain and private key (PEM files). Throws TlsError (missing file, key mismatch).
  TlsContext& load_cert_chain(const std::string& cert_chain_file, const std::string& key_file);
  // Trusted CAs: a PEM file and/or an OpenSSL hashed directory (c_rehash). Either may be empty.
  TlsContext& load_verify_locations(const std::string& ca_file, const std::string& ca_dir = {});
  // Clients: verify the server (default ON; OFF only for tests). Servers: ask for and require a
  // client certificate (default OFF).
  TlsContext& set_verify(bool on);
  bool verify() const noexcept;
  // ALPN, in preference order ("h2", "http/1.1"). A server picks the first of the client's list it
  // supports; with no overlap the handshake goes on without ALPN (alpn_protocol() is then "").
  TlsContext& set_alpn_protocols(const std::vector<std::string>& protocols);
  TlsContext& set_min_version(TlsVersion v);

  SSL_CTX* native_handle() const noexcept;

 private:
  struct State;
  friend class TlsSocket;
  std::shared_ptr<State> st_;
  TlsRole role_;
};

class TlsSocket final : public StreamTransport {
 public:
  // An empty TLS socket (!valid()).
  TlsSocket() noexcept;
  // TLS over sock, which it then owns (closes). The handshake is not done yet (see handshake()).
  // server_hostname (clients): sent as SNI (unless it is an IP address) and, when verifying,
  // checked against the certificate (SSL_set1_host, or the IP address).
  TlsSocket(Socket&& sock, const TlsContext& ctx, std::string_view server_hostname = {});
  // TLS over a socket the caller keeps alive and owns (StreamServer's handlers use this).
  TlsSocket(Socket& sock, const TlsContext& ctx, std::string_view server_hostname = {});
  ~TlsSocket();
  TlsSocket(TlsSocket&&) noexcept;
  TlsSocket& operator=(TlsSocket&&) noexcept;

  bool valid() const noexcept;
  explicit operator bool() const noexcept { return valid(); }
  // The TCP socket underneath (its fd, addresses, timeouts). ClosedError for an empty TlsSocket.
  Socket& socket() override;
  int fd() const noexcept;
  void set_timeout(OptDuration timeout) noexcept;
  OptDuration timeout() const noexcept;

  // Runs the handshake (idempotent; recv/send also start it if needed, so a reader and a writer
  // fiber may both drive it). `timeout` bounds it as a whole ({}: the socket's timeout). Throws
  // TlsError, TimeoutError, ConnectionError...
  void handshake(OptDuration timeout = {});
  bool handshake_done() const noexcept;

  // Up to buf.size() decrypted bytes (at least one); 0 at the peer's close_notify (or empty buf).
  std::size_t recv(std::span<char> buf) override;
  std::string recv(std::size_t max_bytes);
  // Encrypts and sends some of data (at least one byte); returns how many.
  std::size_t send(std::string_view data) override;
  // All of data; the socket timeout bounds the whole call.
  void sendall(std::string_view data);

  // Sends our close_notify (waits while the socket is not writable, within the timeout). The peer's
  // recv returns 0. Reading stays possible until the peer's close_notify arrives.
  void close_notify();
  // close_notify best effort (never waits), then frees the TLS state and closes the socket if owned.
  void close() noexcept;

  // After the handshake: the ALPN protocol agreed ("" if none), the SNI name the client sent ("" if
  // none; servers), "TLSv1.3", the cipher suite, the peer certificate's subject (one line, "" if none).
  std::string alpn_protocol() const;
  std::string server_name() const;
  std::string version() const;
  std::string cipher() const;
  std::string peer_subject() const;

  SSL* native_handle() const noexcept;

 private:
  struct Impl;
  struct Deadline;
  void init(Socket* borrowed, Socket&& owned, const TlsContext& ctx, std::string_view host);
  Impl& checked(const char* op) const;
  std::string label(const char* op) const;
  [[noreturn]] void throw_tls(const char* op, int ssl_error);
  // Repeats call(ssl) (an SSL_* call: > 0 done, 0 for a clean EOF) while OpenSSL wants to read or
  // write, waiting on the hub until `deadline` (set from `timeout` at the first wait). `natural`: the
  // direction this operation waits in exclusively (the other one is shared; both for the handshake).
  template <class Call>
  int drive(const char* op, std::optional<detail::Io> natural, Deadline& deadline, OptDuration timeout, Call call);
  std::size_t send_some(std::string_view data, Deadline& deadline, const char* op);

  std::unique_ptr<Impl> impl_;
};

// Connects to host:port (as fiberio::create_connection) and runs the TLS handshake, with SNI and
// host name verification for `host`; `timeout` bounds the lookup, each connect and the handshake,
// and becomes the socket's timeout.
TlsSocket create_connection(std::string_view host, std::uint16_t port, const TlsContext& ctx, OptDuration timeout = {},
                            std::optional<Address> source_address = {});

}  // namespace fiberio
