// fiberio::tls (libfiberio_tls): TlsContext, TlsSocket and the TLS forms of StreamServer and
// create_connection. See fiberio/tls.hpp.
//
// Why a BIO of our own rather than SSL_set_fd: OpenSSL's socket BIO writes with write(2), which
// raises SIGPIPE when the peer is gone (fiberio promises it never happens: Socket sends with
// MSG_NOSIGNAL), and it leaves the system call's errno to be read back later, after other calls may
// have changed it. Ours sends with MSG_NOSIGNAL and keeps each connection's errno and EOF in the
// connection. It never blocks or throws (an exception must not unwind through OpenSSL's C frames):
// EAGAIN becomes BIO_set_retry_*, hence SSL_ERROR_WANT_READ/WRITE, and the waiting on the hub
// happens between OpenSSL calls, in TlsSocket::drive.
#include "fiberio/tls.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <cerrno>
#include <exception>
#include <mutex>

#include "fiberio/hub.hpp"

namespace fiberio {

namespace {

// Takes every error queued on this thread, as "error:...; error:..." (empty if none).
std::string take_errors() {
  std::string out;
  char buf[256];
  while (unsigned long e = ERR_get_error()) {
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

[[noreturn]] void throw_setup_error(const std::string& what) {
  std::string reason = take_errors();
  throw TlsError(fmt::format("{}: {}", what, reason.empty() ? "unknown OpenSSL error" : reason), reason, 0, {});
}

bool is_ip_literal(std::string_view host) {
  std::string h(host);
  unsigned char buf[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, h.c_str(), buf) == 1 || ::inet_pton(AF_INET6, h.c_str(), buf) == 1;
}

// ---- the BIO over the nonblocking fd ----
struct FdBio {
  Socket* sock = nullptr;
  int err = 0;       // errno of the last failed system call (0: none)
  bool eof = false;  // recv returned 0
};

FdBio& bio_state(BIO* b) { return *static_cast<FdBio*>(BIO_get_data(b)); }

// One system call for the BIO: a byte count, or 0 with the retry flag (EAGAIN) or the errno kept.
// Never blocks and never throws. io(fd) is ::send or ::recv; a 0 from recv is EOF.
template <class Io>
int bio_io(BIO* b, size_t* done, bool reading, Io io) {
  FdBio& c = bio_state(b);
  BIO_clear_retry_flags(b);
  int fd = c.sock->fd();
  if (fd < 0) {
    c.err = EBADF;
    return 0;
  }
  for (;;) {
    ssize_t n = io(fd);
    if (n > 0 || (n == 0 && !reading)) {
      *done = static_cast<size_t>(n);
      return 1;
    }
    if (n == 0) {
      c.eof = true;  // OpenSSL asks BIO_CTRL_EOF to tell an unexpected EOF from an error
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      reading ? BIO_set_retry_read(b) : BIO_set_retry_write(b);
    } else {
      c.err = errno;
    }
    return 0;
  }
}

int bio_write(BIO* b, const char* data, size_t len, size_t* written) {
  return bio_io(b, written, false, [&](int fd) { return ::send(fd, data, len, MSG_NOSIGNAL); });
}

int bio_read(BIO* b, char* buf, size_t len, size_t* got) {
  return bio_io(b, got, true, [&](int fd) { return ::recv(fd, buf, len, 0); });
}

long bio_ctrl(BIO* b, int cmd, long, void*) {
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;  // nothing is buffered here
    case BIO_CTRL_EOF:
      return bio_state(b).eof ? 1 : 0;
    default:
      return 0;
  }
}

const BIO_METHOD* fd_bio_method() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "fiberio socket");
    if (!m || BIO_meth_set_write_ex(m, bio_write) != 1 || BIO_meth_set_read_ex(m, bio_read) != 1 ||
        BIO_meth_set_ctrl(m, bio_ctrl) != 1 || BIO_meth_set_create(m, [](BIO* b) {
          BIO_set_init(b, 1);
          return 1;
        }) != 1)
      throw_setup_error("fiberio::TlsSocket: cannot create its BIO method");
    return m;
  }();
  return method;
}

// ALPN's wire format: each name prefixed by its length.
std::string alpn_wire(const std::vector<std::string>& protocols) {
  std::string wire;
  for (auto& p : protocols) {
    if (p.empty() || p.size() > 255)
      throw std::invalid_argument(fmt::format("fiberio::TlsContext::set_alpn_protocols: bad protocol name \"{}\"", p));
    wire += static_cast<char>(p.size());
    wire += p;
  }
  return wire;
}

}  // namespace

// ---- TlsContext ----

struct TlsContext::State {
  SSL_CTX* ctx = nullptr;
  bool verify = false;
  bool ca_loaded = false;
  std::once_flag default_paths;
  std::string alpn;  // wire format (servers select from it)
  ~State() { SSL_CTX_free(ctx); }
};

TlsContext::TlsContext(TlsRole role) : st_(std::make_shared<State>()), role_(role) {
  ERR_clear_error();
  st_->ctx = SSL_CTX_new(role == TlsRole::Client ? TLS_client_method() : TLS_server_method());
  if (!st_->ctx) throw_setup_error("fiberio::TlsContext: SSL_CTX_new");
  SSL_CTX_set_min_proto_version(st_->ctx, TLS1_2_VERSION);
  set_verify(role == TlsRole::Client);
}

TlsContext TlsContext::client() { return TlsContext(TlsRole::Client); }

TlsContext TlsContext::server(const std::string& cert_chain_file, const std::string& key_file) {
  TlsContext c(TlsRole::Server);
  c.load_cert_chain(cert_chain_file, key_file);
  return c;
}

TlsContext& TlsContext::load_cert_chain(const std::string& cert_chain_file, const std::string& key_file) {
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(st_->ctx, cert_chain_file.c_str()) != 1)
    throw_setup_error(fmt::format("fiberio::TlsContext::load_cert_chain: certificate chain \"{}\"", cert_chain_file));
  if (SSL_CTX_use_PrivateKey_file(st_->ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1)
    throw_setup_error(fmt::format("fiberio::TlsContext::load_cert_chain: private key \"{}\"", key_file));
  if (SSL_CTX_check_private_key(st_->ctx) != 1)
    throw_setup_error(fmt::format("fiberio::TlsContext::load_cert_chain: key \"{}\" does not match \"{}\"", key_file,
                                  cert_chain_file));
  return *this;
}

TlsContext& TlsContext::load_verify_locations(const std::string& ca_file, const std::string& ca_dir) {
  if (ca_file.empty() && ca_dir.empty())
    throw std::invalid_argument("fiberio::TlsContext::load_verify_locations: neither a CA file nor a directory");
  ERR_clear_error();
  if (SSL_CTX_load_verify_locations(st_->ctx, ca_file.empty() ? nullptr : ca_file.c_str(),
                                    ca_dir.empty() ? nullptr : ca_dir.c_str()) != 1)
    throw_setup_error(fmt::format("fiberio::TlsContext::load_verify_locations(\"{}\", \"{}\")", ca_file, ca_dir));
  st_->ca_loaded = true;
  return *this;
}

TlsContext& TlsContext::set_verify(bool on) {
  st_->verify = on;
  int mode = SSL_VERIFY_NONE;
  if (on) mode = role_ == TlsRole::Client ? SSL_VERIFY_PEER : SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  SSL_CTX_set_verify(st_->ctx, mode, nullptr);
  return *this;
}

bool TlsContext::verify() const noexcept { return st_->verify; }

TlsContext& TlsContext::set_alpn_protocols(const std::vector<std::string>& protocols) {
  std::string wire = alpn_wire(protocols);
  if (role_ == TlsRole::Client) {
    // SSL_CTX_set_alpn_protos returns 0 on success.
    if (SSL_CTX_set_alpn_protos(st_->ctx, reinterpret_cast<const unsigned char*>(wire.data()),
                                static_cast<unsigned>(wire.size())) != 0)
      throw_setup_error("fiberio::TlsContext::set_alpn_protocols");
    return *this;
  }
  st_->alpn = std::move(wire);
  SSL_CTX_set_alpn_select_cb(
      st_->ctx,
      [](SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned inlen,
         void* arg) -> int {
        auto* st = static_cast<State*>(arg);
        unsigned char* chosen = nullptr;
        // Server preference: SSL_select_next_proto walks its first list and finds each in the second.
        if (SSL_select_next_proto(&chosen, outlen, reinterpret_cast<const unsigned char*>(st->alpn.data()),
                                  static_cast<unsigned>(st->alpn.size()), in, inlen) != OPENSSL_NPN_NEGOTIATED)
          return SSL_TLSEXT_ERR_NOACK;
        *out = chosen;
        return SSL_TLSEXT_ERR_OK;
      },
      st_.get());
  return *this;
}

TlsContext& TlsContext::set_min_version(TlsVersion v) {
  SSL_CTX_set_min_proto_version(st_->ctx, v == TlsVersion::Tls1_3 ? TLS1_3_VERSION : TLS1_2_VERSION);
  return *this;
}

SSL_CTX* TlsContext::native_handle() const noexcept { return st_->ctx; }

// ---- TlsSocket ----

struct TlsSocket::Impl {
  Socket owned;
  Socket* sock;
  SSL* ssl = nullptr;
  FdBio bio;
  bool handshaken = false;
  bool broken = false;  // a fatal error: OpenSSL forbids SSL_shutdown then
  bool sent_close_notify = false;

  Impl(Socket* borrowed, Socket&& own) : owned(std::move(own)), sock(borrowed ? borrowed : &owned) {
    bio.sock = sock;
  }
  ~Impl() { SSL_free(ssl); }
};

// A call's deadline, fixed at its first wait (the fast path does not read the clock).
struct TlsSocket::Deadline {
  detail::Deadline at{};
  bool known = false;
};

TlsSocket::TlsSocket() noexcept = default;
TlsSocket::~TlsSocket() {
  // A connection abandoned by an exception (a kill, an error) must not look cleanly finished to the
  // peer: no close_notify then, and its recv sees an unexpected EOF.
  if (impl_ && std::uncaught_exceptions() > 0) impl_->broken = true;
  close();
}
TlsSocket::TlsSocket(TlsSocket&&) noexcept = default;
TlsSocket& TlsSocket::operator=(TlsSocket&& o) noexcept {
  if (this != &o) {
    close();
    impl_ = std::move(o.impl_);
  }
  return *this;
}

TlsSocket::TlsSocket(Socket&& sock, const TlsContext& ctx, std::string_view host) { init(nullptr, std::move(sock), ctx, host); }
TlsSocket::TlsSocket(Socket& sock, const TlsContext& ctx, std::string_view host) { init(&sock, Socket(), ctx, host); }

void TlsSocket::init(Socket* borrowed, Socket&& owned, const TlsContext& ctx, std::string_view host) {
  if (host.find('\0') != std::string_view::npos)
    throw std::invalid_argument("fiberio::TlsSocket: NUL byte in server_hostname");
  bool client = ctx.role() == TlsRole::Client;
  if (client && ctx.verify() && host.empty())
    throw std::invalid_argument(
        "fiberio::TlsSocket: a verifying client needs server_hostname (or TlsContext::set_verify(false))");
  TlsContext::State& st = *ctx.st_;
  if (client && st.verify && !st.ca_loaded)
    std::call_once(st.default_paths, [&] { SSL_CTX_set_default_verify_paths(st.ctx); });
  auto impl = std::make_unique<Impl>(borrowed, std::move(owned));
  if (!impl->sock->valid()) throw ClosedError("fiberio::TlsSocket: the socket is closed");
  ERR_clear_error();
  impl->ssl = SSL_new(st.ctx);
  if (!impl->ssl) throw_setup_error("fiberio::TlsSocket: SSL_new");
  BIO* bio = BIO_new(fd_bio_method());
  if (!bio) throw_setup_error("fiberio::TlsSocket: BIO_new");
  BIO_set_data(bio, &impl->bio);
  SSL_set_bio(impl->ssl, bio, bio);  // the SSL owns the BIO now (one reference for both directions)
  SSL_set_mode(impl->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (client) {
    SSL_set_connect_state(impl->ssl);
    if (!host.empty()) {
      std::string h(host);
      if (is_ip_literal(h)) {
        if (st.verify && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(impl->ssl), h.c_str()) != 1)
          throw_setup_error(fmt::format("fiberio::TlsSocket: bad IP address \"{}\"", h));
      } else {
        // SNI (only for names: RFC 6066 forbids IP literals there), then the name check.
        if (SSL_set_tlsext_host_name(impl->ssl, h.c_str()) != 1 || (st.verify && SSL_set1_host(impl->ssl, h.c_str()) != 1))
          throw_setup_error(fmt::format("fiberio::TlsSocket: bad host name \"{}\"", h));
      }
    }
  } else {
    SSL_set_accept_state(impl->ssl);
  }
  impl_ = std::move(impl);
}

bool TlsSocket::valid() const noexcept { return impl_ && impl_->sock->valid(); }
Socket& TlsSocket::socket() {
  if (!impl_) throw ClosedError("fiberio::TlsSocket::socket: the TlsSocket is empty (moved from or closed)");
  return *impl_->sock;
}
int TlsSocket::fd() const noexcept { return impl_ ? impl_->sock->fd() : -1; }
void TlsSocket::set_timeout(OptDuration timeout) noexcept {
  if (impl_) impl_->sock->set_timeout(timeout);
}
OptDuration TlsSocket::timeout() const noexcept { return impl_ ? impl_->sock->timeout() : OptDuration{}; }
bool TlsSocket::handshake_done() const noexcept { return impl_ && impl_->handshaken; }
SSL* TlsSocket::native_handle() const noexcept { return impl_ ? impl_->ssl : nullptr; }

TlsSocket::Impl& TlsSocket::checked(const char* op) const {
  if (!impl_ || !impl_->sock->valid()) throw ClosedError(fmt::format("fiberio::TlsSocket::{}: the socket is closed", op));
  return *impl_;
}

std::string TlsSocket::label(const char* op) const {
  int fd = this->fd();
  if (fd < 0) return fmt::format("fiberio::TlsSocket::{}", op);
  try {
    return fmt::format("fiberio::TlsSocket::{}(fd {}, peer {})", op, fd, impl_->sock->peer_address());
  } catch (const std::exception&) {
    return fmt::format("fiberio::TlsSocket::{}(fd {})", op, fd);
  }
}

void TlsSocket::throw_tls(const char* op, int ssl_error) {
  Impl& im = *impl_;
  im.broken = true;
  std::string reason = take_errors();
  long verify = X509_V_OK;
  std::string verify_text;
  if (!im.handshaken && (verify = SSL_get_verify_result(im.ssl)) != X509_V_OK)
    verify_text = X509_verify_cert_error_string(verify);
  if (ssl_error == SSL_ERROR_SYSCALL && im.bio.err) throw_net_error(im.bio.err, label(op));
  std::string text = reason;
  if (text.empty())
    text = im.bio.eof ? "the peer closed the connection (unexpected EOF, no close_notify)" : "TLS error, no reason queued";
  if (!verify_text.empty()) text += fmt::format(" (certificate verification: {})", verify_text);
  throw TlsError(fmt::format("{}: {}", label(op), text), reason, verify, verify_text);
}

template <class Call>
int TlsSocket::drive(const char* op, std::optional<detail::Io> natural, Deadline& deadline, OptDuration timeout,
                     Call call) {
  for (;;) {
    Impl& im = checked(op);
    ERR_clear_error();  // SSL_get_error needs this thread's queue empty before the call
    im.bio.err = 0;
    int r = call(im.ssl);
    if (r > 0) return r;
    int e = SSL_get_error(im.ssl, r);
    detail::Io dir;
    if (e == SSL_ERROR_WANT_READ) {
      dir = detail::Io::Read;
    } else if (e == SSL_ERROR_WANT_WRITE) {
      dir = detail::Io::Write;
    } else if (e == SSL_ERROR_ZERO_RETURN) {
      return 0;
    } else {
      throw_tls(op, e);
    }
    if (!deadline.known) {
      deadline.at = detail::deadline_after(timeout);
      deadline.known = true;
    }
    // The reader that must write (or the writer that must read: TLS 1.3 key updates, tickets) shares
    // that direction with the other fiber, so only its own direction is exclusive. A handshake driven
    // by a reader and a writer at once is one sequence of calls, whichever fiber makes them.
    Socket& s = *im.sock;
    auto w = detail::Hub::current().wait_fd(s.fd(), dir, deadline.at, dir == natural);
    if (w != detail::FdWait::Ready) s.wait_failed(w, deadline.at, op);
  }
}

void TlsSocket::handshake(OptDuration timeout) {
  Impl& im = checked("handshake");
  if (im.handshaken) return;
  Deadline deadline;
  drive("handshake", std::nullopt, deadline, timeout ? timeout : im.sock->timeout(), [&](SSL* ssl) {
    int r = SSL_do_handshake(ssl);
    // A peer that closes cleanly in the middle of the handshake is a failure, not an end of data.
    return r == 0 ? -1 : r;
  });
  im.handshaken = true;
}

std::size_t TlsSocket::recv(std::span<char> buf) {
  Impl& im = checked("recv");
  if (!im.handshaken) handshake();
  if (buf.empty()) return 0;
  Socket& s = *im.sock;
  Deadline deadline;
  OptDuration timeout = s.timeout();
  if (s.request_timeout()) {  // the earlier of the call's timeout and the request's deadline, as Socket::recv
    deadline.at = std::min(detail::deadline_after(timeout), s.last_progress() + *s.request_timeout());
    deadline.known = true;
  }
  std::size_t n = 0;
  drive("recv", detail::Io::Read, deadline, timeout, [&](SSL* ssl) { return SSL_read_ex(ssl, buf.data(), buf.size(), &n); });
  return n;
}

std::string TlsSocket::recv(std::size_t max_bytes) {
  std::string s(max_bytes, '\0');
  s.resize(recv(std::span<char>(s.data(), s.size())));
  return s;
}

std::size_t TlsSocket::send(std::string_view data) {
  Deadline deadline;
  return send_some(data, deadline, "send");
}

std::size_t TlsSocket::send_some(std::string_view data, Deadline& deadline, const char* op) {
  Impl& im = checked(op);
  if (!im.handshaken) handshake();
  if (data.empty()) return 0;
  std::size_t n = 0;
  if (drive(op, detail::Io::Write, deadline, im.sock->timeout(),
            [&](SSL* ssl) { return SSL_write_ex(ssl, data.data(), data.size(), &n); }) == 0)
    throw_tls(op, SSL_ERROR_ZERO_RETURN);  // a write never "ends" like a read
  im.sock->sent();
  return n;
}

void TlsSocket::sendall(std::string_view data) {
  Deadline deadline;  // one deadline for the whole data
  do {
    data.remove_prefix(send_some(data, deadline, "sendall"));
  } while (!data.empty());
}

void TlsSocket::close_notify() {
  Impl& im = checked("close_notify");
  if (im.sent_close_notify || !im.handshaken) return;
  Deadline deadline;
  // SSL_shutdown: 0 = ours sent, theirs not yet received (all we wait for), 1 = both.
  drive("close_notify", detail::Io::Write, deadline, im.sock->timeout(),
        [](SSL* ssl) { return SSL_shutdown(ssl) >= 0 ? 1 : -1; });
  im.sent_close_notify = true;
}

void TlsSocket::close() noexcept {
  if (!impl_) return;
  Impl& im = *impl_;
  if (im.handshaken && !im.broken && !im.sent_close_notify && im.sock->valid()) {
    ERR_clear_error();
    SSL_shutdown(im.ssl);  // one try, never waits: a full socket buffer just loses the alert
    ERR_clear_error();
  }
  impl_.reset();  // SSL_free, and the owned socket closes
}

std::string TlsSocket::alpn_protocol() const {
  const unsigned char* p = nullptr;
  unsigned len = 0;
  if (impl_) SSL_get0_alpn_selected(impl_->ssl, &p, &len);
  return p ? std::string(reinterpret_cast<const char*>(p), len) : std::string();
}

std::string TlsSocket::server_name() const {
  const char* n = impl_ ? SSL_get_servername(impl_->ssl, TLSEXT_NAMETYPE_host_name) : nullptr;
  return n ? n : "";
}

std::string TlsSocket::version() const { return impl_ ? SSL_get_version(impl_->ssl) : ""; }

std::string TlsSocket::cipher() const {
  const char* c = impl_ ? SSL_get_cipher_name(impl_->ssl) : nullptr;
  return c ? c : "";
}

std::string TlsSocket::peer_subject() const {
  if (!impl_) return {};
  X509* cert = SSL_get1_peer_certificate(impl_->ssl);
  if (!cert) return {};
  char buf[512];
  X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof buf);
  X509_free(cert);
  return buf;
}

// ---- the TLS forms of create_connection and StreamServer ----

TlsSocket create_connection(std::string_view host, std::uint16_t port, const TlsContext& ctx, OptDuration timeout,
                            std::optional<Address> source_address) {
  TlsSocket tls(create_connection(host, port, timeout, source_address), ctx, host);
  tls.handshake(timeout);
  return tls;
}

StreamServer::StreamServer(Address addr, const TlsContext& tls, TlsHandler handler, ServerOptions options)
    : StreamServer(
          std::move(addr),
          [ctx = tls, handler = std::move(handler), limit = options.handshake_timeout](Socket& sock, const Address& peer) {
            TlsSocket conn(sock, ctx);
            conn.handshake(limit);
            handler(conn, peer);
          },
          options) {
  if (tls.role() != TlsRole::Server)
    throw std::invalid_argument("fiberio::StreamServer: the TLS context is a client's (use TlsContext::server)");
}

}  // namespace fiberio
