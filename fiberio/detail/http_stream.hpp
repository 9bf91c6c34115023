// Boost.Beast over fiberio: a SyncReadStream/SyncWriteStream on a fiberio::Socket, so that Beast's
// synchronous http::read/write (its parser and serializer) block only the calling fiber.
//
// * Reads honour a deadline (a point in time that incoming bytes do not move: the header timeout)
//   and a per-read timeout, whichever is sooner; TimeoutError, ClosedError, ConnectionReset and
//   GreenletExit propagate through Beast as exceptions (Beast's sync code is exception-neutral); only
//   EOF is an error_code (asio's eof, which Beast turns into end_of_stream / partial_message).
// * Writes append to an output buffer (no syscall): Beast's serializer writes a message in several
//   pieces, and pipelined responses go out together. flush() sends the buffer.
// Internal: included only by fiberio's HTTP sources (Beast's headers are heavy).
#pragma once
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/system/system_error.hpp>
#include <algorithm>
#include <optional>
#include <string>

#include "fiberio/errors.hpp"
#include "fiberio/socket.hpp"

namespace fiberio::http::detail {

class BeastStream {
 public:
  explicit BeastStream(Socket& sock) noexcept : sock_(sock) {}

  Socket& socket() noexcept { return sock_; }
  std::string& out() noexcept { return out_; }

  // Reads until `at` (nullopt: no deadline), and each read for at most per_read.
  void set_deadline(std::optional<Clock::time_point> at) noexcept { deadline_ = at; }
  void set_read_timeout(OptDuration per_read) noexcept { per_read_ = per_read; }
  void set_write_timeout(OptDuration d) noexcept { write_timeout_ = d; }

  template <class MutableBuffers>
  std::size_t read_some(const MutableBuffers& buffers, boost::system::error_code& ec) {
    ec = {};
    for (auto it = boost::asio::buffer_sequence_begin(buffers); it != boost::asio::buffer_sequence_end(buffers); ++it) {
      boost::asio::mutable_buffer b = *it;
      if (b.size() == 0) continue;
      arm_read();
      std::size_t n = sock_.recv(std::span<char>(static_cast<char*>(b.data()), b.size()));
      if (n == 0) ec = boost::asio::error::eof;
      return n;
    }
    return 0;
  }
  template <class MutableBuffers>
  std::size_t read_some(const MutableBuffers& buffers) {
    boost::system::error_code ec;
    std::size_t n = read_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }

  template <class ConstBuffers>
  std::size_t write_some(const ConstBuffers& buffers, boost::system::error_code& ec) {
    ec = {};
    std::size_t n = 0;
    for (auto it = boost::asio::buffer_sequence_begin(buffers); it != boost::asio::buffer_sequence_end(buffers); ++it) {
      boost::asio::const_buffer b = *it;
      out_.append(static_cast<const char*>(b.data()), b.size());
      n += b.size();
    }
    return n;
  }
  template <class ConstBuffers>
  std::size_t write_some(const ConstBuffers& buffers) {
    boost::system::error_code ec;
    return write_some(buffers, ec);
  }

  // Sends the output buffer (write_timeout bounds the whole send). Throws what sendall throws.
  void flush() {
    if (out_.empty()) return;
    sock_.set_timeout(write_timeout_);
    sock_.sendall(out_);
    out_.clear();
  }

 private:
  void arm_read() {
    OptDuration t = per_read_;
    if (deadline_) {
      auto left = std::max(Duration::zero(), std::chrono::duration_cast<Duration>(*deadline_ - Clock::now()));
      if (left == Duration::zero()) throw TimeoutError("fiberio::http: read deadline passed (fd " + std::to_string(sock_.fd()) + ")");
      if (!t || left < *t) t = left;
    }
    sock_.set_timeout(t);
  }

  Socket& sock_;
  std::string out_;
  std::optional<Clock::time_point> deadline_;
  OptDuration per_read_;
  OptDuration write_timeout_;
};

}  // namespace fiberio::http::detail
