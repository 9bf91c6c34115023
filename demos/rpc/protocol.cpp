#include "protocol.hpp"

#include <fmt/core.h>

namespace rpc {
namespace {

// nlohmann's DOM builder behind a depth limit: its MessagePack reader recurses once per level, so a
// payload of a million one-element lists would overflow a fiber's stack before the DOM was built.
// Refusing the level past kMaxDepth stops the reader there.
class DepthLimitedSax {
 public:
  explicit DepthLimitedSax(Value& root) : dom_(root, false) {}

  bool null() { return dom_.null(); }
  bool boolean(bool v) { return dom_.boolean(v); }
  bool number_integer(Value::number_integer_t v) { return dom_.number_integer(v); }
  bool number_unsigned(Value::number_unsigned_t v) { return dom_.number_unsigned(v); }
  bool number_float(Value::number_float_t v, const Value::string_t& s) { return dom_.number_float(v, s); }
  bool string(Value::string_t& v) { return dom_.string(v); }
  bool binary(Value::binary_t& v) { return dom_.binary(v); }
  bool key(Value::string_t& v) { return dom_.key(v); }
  bool start_object(std::size_t n) { return deeper() && dom_.start_object(n); }
  bool end_object() { --depth_; return dom_.end_object(); }
  bool start_array(std::size_t n) { return deeper() && dom_.start_array(n); }
  bool end_array() { --depth_; return dom_.end_array(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
    error_ = e.what();
    return false;
  }

  const std::string& error() const { return error_; }

 private:
  bool deeper() {
    if (++depth_ <= kMaxDepth) return true;
    error_ = fmt::format("message nests deeper than {} levels", kMaxDepth);
    return false;
  }

  nlohmann::detail::json_sax_dom_parser<Value> dom_;
  int depth_ = 0;
  std::string error_;
};

std::uint32_t read_be32(const char* p) {
  auto b = [p](int i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(p[i])); };
  return b(0) << 24 | b(1) << 16 | b(2) << 8 | b(3);
}

}  // namespace

std::string encode_frame(const Value& message, std::size_t max_frame) {
  std::string frame(kHeaderBytes, '\0');
  Value::to_msgpack(message, nlohmann::detail::output_adapter<char>(frame));
  std::size_t n = frame.size() - kHeaderBytes;
  if (n > max_frame) throw ProtocolError(fmt::format("message of {} bytes exceeds the frame limit of {} bytes", n, max_frame));
  for (int i = 0; i < 4; ++i) frame[i] = static_cast<char>(n >> (24 - 8 * i) & 0xff);
  return frame;
}

Value decode_payload(std::string_view payload) {
  Value v;
  DepthLimitedSax sax(v);
  bool ok = Value::sax_parse(payload.begin(), payload.end(), &sax, nlohmann::detail::input_format_t::msgpack,
                             /*strict=*/true);
  if (!ok) throw ProtocolError("malformed message: " + (sax.error().empty() ? std::string("not MessagePack") : sax.error()));
  if (!v.is_object()) throw ProtocolError(fmt::format("malformed message: a {} where a map was expected", v.type_name()));
  return v;
}

void FrameDecoder::feed(std::string_view bytes) {
  if (pos_ > 0 && pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  }
  buf_.append(bytes);
  check_header();
}

void FrameDecoder::check_header() const {
  if (buffered() < kHeaderBytes) return;
  std::size_t n = read_be32(buf_.data() + pos_);
  if (n > max_frame_) throw ProtocolError(fmt::format("frame of {} bytes exceeds the limit of {} bytes", n, max_frame_));
}

std::optional<Value> FrameDecoder::next() {
  if (buffered() < kHeaderBytes) return std::nullopt;
  std::size_t n = read_be32(buf_.data() + pos_);
  if (buffered() < kHeaderBytes + n) return std::nullopt;
  std::string_view payload(buf_.data() + pos_ + kHeaderBytes, n);
  pos_ += kHeaderBytes + n;
  Value v = decode_payload(payload);
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ > buf_.size() / 2) {  // keep the buffer from creeping: drop what was consumed
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  check_header();
  return v;
}

}  // namespace rpc
