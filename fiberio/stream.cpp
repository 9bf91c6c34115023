#include "fiberio/stream.hpp"

#include "fiberio/detail/interruption.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <exception>

namespace fiberio {

namespace {
// Reads straight into the caller's string in chunks of at most this, so a large read_exactly(n)
// never allocates n bytes before they have arrived.
constexpr std::size_t kDirectChunk = 256 * 1024;
}  // namespace

Stream::Stream(Socket& sock, std::size_t buffer_size) : sock_(&sock), buffer_size_(std::max<std::size_t>(buffer_size, 64)) {}

Stream::Stream(Socket&& sock, std::size_t buffer_size)
    : owned_(std::move(sock)), sock_(&owned_), buffer_size_(std::max<std::size_t>(buffer_size, 64)) {}

Stream::Stream(StreamTransport& transport, std::size_t buffer_size)
    : sock_(&transport.socket()), transport_(&transport), buffer_size_(std::max<std::size_t>(buffer_size, 64)) {}

Stream::Stream(Stream&& o) noexcept
    : owned_(std::move(o.owned_)),
      sock_(o.sock_ == &o.owned_ ? &owned_ : o.sock_),
      transport_(o.transport_),
      buffer_size_(o.buffer_size_),
      rbuf_(std::move(o.rbuf_)),
      rpos_(std::exchange(o.rpos_, 0)),
      rlen_(std::exchange(o.rlen_, 0)),
      wbuf_(std::move(o.wbuf_)) {
  o.sock_ = &o.owned_;
  o.transport_ = nullptr;
  o.rbuf_.clear();
  o.wbuf_.clear();
}

Stream::~Stream() {
  // Best effort: skip while unwinding (a killed fiber must not block here) and never throw.
  if (wbuf_.empty() || !sock_->valid() || std::uncaught_exceptions() > 0) return;
  try {
    flush();
  } catch (...) {
    // A kill or Timeout that arrived while flushing is delivered at the next suspension point instead.
    detail::defer_current_interruption();
  }
}

std::size_t Stream::fill(std::size_t want) {
  if (rpos_ == rlen_) rpos_ = rlen_ = 0;
  if (rbuf_.size() - rlen_ < want) {
    if (rpos_ > 0) {
      std::memmove(rbuf_.data(), rbuf_.data() + rpos_, rlen_ - rpos_);
      rlen_ -= rpos_;
      rpos_ = 0;
    }
    if (rbuf_.size() - rlen_ < want) rbuf_.resize(rlen_ + want);
  }
  std::size_t n = recv_some(std::span<char>(rbuf_.data() + rlen_, want));
  rlen_ += n;
  return n;
}

std::string Stream::take(std::size_t n) {
  std::string out(rbuf_.data() + rpos_, n);
  rpos_ += n;
  if (rpos_ == rlen_) rpos_ = rlen_ = 0;
  return out;
}

void Stream::unread(std::string_view data) {
  if (data.empty()) return;
  if (rpos_ >= data.size()) {
    rpos_ -= data.size();
    std::memcpy(rbuf_.data() + rpos_, data.data(), data.size());
    return;
  }
  std::string merged;
  merged.reserve(std::max(data.size() + buffered(), buffer_size_));
  merged.append(data);
  merged.append(rbuf_.data() + rpos_, buffered());
  rlen_ = merged.size();
  rpos_ = 0;
  merged.resize(merged.capacity());
  rbuf_ = std::move(merged);
}

std::string Stream::read_line(std::size_t max_len) {
  if (max_len == 0) throw std::invalid_argument("fiberio::Stream::read_line: max_len must be at least 1");
  std::size_t scanned = 0;  // bytes after rpos_ already searched for '\n'
  for (;;) {
    std::size_t limit = std::min(buffered(), max_len);
    if (limit > scanned) {
      const char* start = rbuf_.data() + rpos_;
      if (auto* nl = static_cast<const char*>(std::memchr(start + scanned, '\n', limit - scanned)))
        return take(static_cast<std::size_t>(nl - start) + 1);
      scanned = limit;
    }
    if (buffered() >= max_len)
      throw LineTooLong(fmt::format("fiberio::Stream::read_line: line too long (no newline within {} bytes)", max_len),
                        max_len);
    if (fill(buffer_size_) == 0) return take(buffered());  // EOF: the unterminated rest, or ""
  }
}

std::string Stream::read_exactly(std::size_t n) {
  if (buffered() >= n) return take(n);
  std::string out = take(buffered());
  try {
    while (out.size() < n) {
      std::size_t want = n - out.size();
      std::size_t got;
      if (want >= buffer_size_) {
        std::size_t old = out.size();
        std::size_t chunk = std::min(want, kDirectChunk);
        out.resize(old + chunk);
        try {
          got = recv_some(std::span<char>(out.data() + old, chunk));
        } catch (...) {
          out.resize(old);
          throw;
        }
        out.resize(old + got);
      } else {
        got = fill(buffer_size_);
        out += take(std::min(got, want));
      }
      if (got == 0) {
        auto have = out.size();
        throw IncompleteRead(
            fmt::format("fiberio::Stream::read_exactly({}): connection closed (EOF) after {} bytes", n, have),
            std::move(out), n);
      }
    }
  } catch (const IncompleteRead&) {
    throw;
  } catch (...) {
    // A timeout, kill or reset mid-way: keep what arrived buffered so no byte is lost to a retry.
    unread(out);
    throw;
  }
  return out;
}

std::string Stream::read_some(std::size_t max_bytes) {
  if (max_bytes == 0) return {};
  if (buffered() > 0) return take(std::min(buffered(), max_bytes));
  if (max_bytes >= buffer_size_) {
    std::string out(std::min(max_bytes, kDirectChunk), '\0');
    out.resize(recv_some(std::span<char>(out.data(), out.size())));
    return out;
  }
  std::size_t got = fill(buffer_size_);
  return take(std::min(got, max_bytes));
}

std::string Stream::read_all(std::size_t max_bytes) {
  std::string out = take(buffered());
  try {
    for (;;) {
      if (out.size() > max_bytes)
        throw std::length_error(fmt::format("fiberio::Stream::read_all: more than {} bytes before EOF", max_bytes));
      std::size_t old = out.size();
      std::size_t chunk = std::max(buffer_size_, std::min(old, kDirectChunk));
      out.resize(old + chunk);
      std::size_t got;
      try {
        got = recv_some(std::span<char>(out.data() + old, chunk));
      } catch (...) {
        out.resize(old);
        throw;
      }
      out.resize(old + got);
      if (got == 0) return out;
    }
  } catch (...) {
    unread(out);
    throw;
  }
}

void Stream::write(std::string_view data) {
  if (wbuf_.size() + data.size() > buffer_size_) flush();
  if (data.size() >= buffer_size_) {
    // Large writes bypass the buffer; loop on send() so a failure leaves the unsent rest buffered.
    while (!data.empty()) {
      try {
        data.remove_prefix(send_some(data));
      } catch (...) {
        wbuf_.append(data);
        throw;
      }
    }
    return;
  }
  wbuf_.append(data);
}

void Stream::write_line(std::string_view line) {
  write(line);
  if (line.empty() || line.back() != '\n') write("\n");
}

void Stream::flush() {
  std::size_t sent = 0;
  try {
    while (sent < wbuf_.size()) sent += send_some(std::string_view(wbuf_).substr(sent));
  } catch (...) {
    wbuf_.erase(0, sent);  // what was sent is gone; the rest stays for a retry
    throw;
  }
  wbuf_.clear();
}

void Stream::close() {
  if (sock_->valid()) flush();
  if (sock_ == &owned_) owned_.close();
}

std::string_view Stream::chomp(std::string_view line) noexcept {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

}  // namespace fiberio
