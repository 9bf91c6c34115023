// Stream: buffered reading and writing over a Socket (Python's socket.makefile("rwb")).
//
//   void handle(fiberio::Socket& sock, const fiberio::Address&) {
//     fiberio::Stream s(sock);
//     for (std::string line; !(line = s.read_line(1024)).empty();) {   // "" means EOF
//       s.write(line);                                           // line still ends in "\n"
//       s.flush();
//     }
//   }
//
// * read_line KEEPS the trailing "\n" (as Python's readline), so "" unambiguously means EOF and a
//   last line without a newline is visible as such. Use Stream::chomp() to drop "\n" / "\r\n".
// * Memory is bounded by the caller's limits: read_line never buffers more than max_len plus one
//   read's worth; a longer line throws LineTooLong. read_exactly grows only as bytes arrive.
// * Reads and writes use the socket's timeout (each underlying recv / the flush's sendall).
// * Over TLS too: Stream(tls) buffers a TlsSocket (fiberio/tls.hpp) the same way.
// * Writes are buffered until flush(), write_line(.., flush) or the buffer fills. The destructor
//   makes a best-effort flush; call flush() to see errors.
#pragma once
#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

#include "fiberio/socket.hpp"

namespace fiberio {

// read_line found no "\n" within max_len bytes. The bytes stay buffered (the stream is still
// usable, e.g. to read_exactly or to drop the connection).
class LineTooLong : public std::runtime_error {
 public:
  LineTooLong(const std::string& what, std::size_t limit) : std::runtime_error(what), limit_(limit) {}
  std::size_t limit() const noexcept { return limit_; }

 private:
  std::size_t limit_;
};

// EOF came before read_exactly(n) got n bytes. partial() holds what did arrive (it is consumed).
class IncompleteRead : public std::runtime_error {
 public:
  IncompleteRead(const std::string& what, std::string partial, std::size_t expected)
      : std::runtime_error(what), partial_(std::move(partial)), expected_(expected) {}
  const std::string& partial() const noexcept { return partial_; }
  std::size_t expected() const noexcept { return expected_; }

 private:
  std::string partial_;
  std::size_t expected_;
};

// A byte stream that Stream can buffer instead of a plain Socket (TlsSocket is one). recv: up to
// buf.size() bytes, 0 at EOF; send: some of data (at least one byte); socket(): the socket beneath
// (ClosedError if there is none).
class StreamTransport {
 public:
  virtual std::size_t recv(std::span<char> buf) = 0;
  virtual std::size_t send(std::string_view data) = 0;
  virtual Socket& socket() = 0;

 protected:
  ~StreamTransport() = default;
};

class Stream {
 public:
  static constexpr std::size_t kDefaultBufferSize = 16 * 1024;
  static constexpr std::size_t kDefaultMaxLine = 64 * 1024;

  // Over a socket the caller keeps alive (and owns) for the Stream's lifetime.
  explicit Stream(Socket& sock, std::size_t buffer_size = kDefaultBufferSize);
  // Owning: the Stream closes the socket when destroyed.
  explicit Stream(Socket&& sock, std::size_t buffer_size = kDefaultBufferSize);
  // Over another transport (a TlsSocket) the caller keeps alive and owns.
  explicit Stream(StreamTransport& transport, std::size_t buffer_size = kDefaultBufferSize);
  ~Stream();
  Stream(Stream&& o) noexcept;
  Stream& operator=(Stream&&) = delete;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // The socket read and written (beneath the transport, if any).
  Socket& socket() noexcept { return *sock_; }

  // ---- reading ----
  // The next line including its "\n"; at EOF the unterminated rest (possibly ""). "" means EOF.
  // Throws LineTooLong if no "\n" appears within max_len bytes (max_len counts the "\n").
  std::string read_line(std::size_t max_len = kDefaultMaxLine);
  // Exactly n bytes; IncompleteRead if EOF comes first.
  std::string read_exactly(std::size_t n);
  // Whatever is buffered, else one socket read: 1..max_bytes bytes, or "" at EOF.
  std::string read_some(std::size_t max_bytes = kDefaultBufferSize);
  // Everything until EOF; LineTooLong-style std::length_error if more than max_bytes arrive.
  std::string read_all(std::size_t max_bytes);
  // Bytes read from the socket but not yet returned.
  std::size_t buffered() const noexcept { return rlen_ - rpos_; }

  // ---- writing ----
  void write(std::string_view data);
  // write(line) then "\n" (one "\n" is added unless line already ends in one).
  void write_line(std::string_view line);
  // Sends everything buffered (sendall).
  void flush();
  // Bytes written but not yet sent.
  std::size_t pending() const noexcept { return wbuf_.size(); }

  // Flushes, then closes the socket if the Stream owns it (never a transport).
  void close();

  // line without its trailing "\n" or "\r\n".
  static std::string_view chomp(std::string_view line) noexcept;

 private:
  // One socket read of up to `want` bytes appended to the read buffer; returns the bytes read (0 = EOF).
  std::size_t fill(std::size_t want);
  std::string take(std::size_t n);
  // Puts bytes back in front of the buffered ones (a read that failed half-way loses nothing).
  void unread(std::string_view data);

  // The one place reads and writes go: the transport if there is one, else the socket.
  std::size_t recv_some(std::span<char> buf) { return transport_ ? transport_->recv(buf) : sock_->recv(buf); }
  std::size_t send_some(std::string_view data) { return transport_ ? transport_->send(data) : sock_->send(data); }

  Socket owned_;
  Socket* sock_;
  StreamTransport* transport_ = nullptr;
  std::size_t buffer_size_;
  // Buffered bytes are rbuf_[rpos_, rlen_); rbuf_ itself only grows, so refills never re-zero it.
  std::string rbuf_;
  std::size_t rpos_ = 0, rlen_ = 0;
  std::string wbuf_;
};

}  // namespace fiberio
