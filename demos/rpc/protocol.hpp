// The RPC demo's wire protocol (seed 002's homework): messages are MessagePack maps, each sent as a
// frame — a 4-byte big-endian payload length, then the payload. Nothing is evaluated: the server
// looks a function up by name in a Registry and converts each argument to the type it declares.
//
//   request   {"id": 7, "call": "func1", "args": [1, 2, 3]}
//   reply     {"id": 7, "ok": 9}
//   error     {"id": 7, "error": "rpc::BadArguments", "message": "func1: argument 2 ..."}
//
// "rpc.functions" (no arguments) is answered with every registered function's name and signature.
// A frame larger than the receiver's limit, or a payload that is not a MessagePack map (or nests
// deeper than kMaxDepth), is a ProtocolError: the server answers it with an error whose id is null
// and closes the connection.
//
// This file knows nothing of sockets or fibers: every server model and the client use it, and so
// does the fuzzer (fuzz/fuzz_rpc_frame.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace rpc {

using Value = nlohmann::json;

inline constexpr std::size_t kHeaderBytes = 4;
inline constexpr std::size_t kDefaultMaxFrame = 1 << 20;  // payload bytes
inline constexpr int kMaxDepth = 32;                      // nesting of lists and maps in one message
inline constexpr std::string_view kListFunctions = "rpc.functions";

// A frame that cannot be a message: too large, not MessagePack, not a map, too deep.
class ProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A header and a MessagePack payload. Throws ProtocolError if the payload would exceed max_frame.
std::string encode_frame(const Value& message, std::size_t max_frame = kDefaultMaxFrame);

// Reassembles frames from whatever pieces the transport delivers.
//
//   FrameDecoder d;
//   d.feed(bytes_just_read);
//   while (auto message = d.next()) handle(*message);
//
// Memory is bounded: a header announcing more than max_frame bytes throws at once, before any of the
// payload is buffered, so the buffer never holds more than one frame plus what a single feed() added.
class FrameDecoder {
 public:
  explicit FrameDecoder(std::size_t max_frame = kDefaultMaxFrame) : max_frame_(max_frame) {}

  // Appends bytes. Throws ProtocolError if the next frame's header announces too large a payload.
  void feed(std::string_view bytes);
  // The next complete message, or nullopt until more bytes are fed. Throws ProtocolError for a bad
  // payload; after any ProtocolError the stream is out of step and the decoder must not be used again.
  std::optional<Value> next();
  // Bytes fed but not yet returned as messages.
  std::size_t buffered() const noexcept { return buf_.size() - pos_; }
  std::size_t max_frame() const noexcept { return max_frame_; }

 private:
  void check_header() const;

  std::size_t max_frame_;
  std::string buf_;
  std::size_t pos_ = 0;  // start of the first frame not yet returned
};

// One payload (no header) to a message: a MessagePack map nesting at most kMaxDepth deep.
Value decode_payload(std::string_view payload);

}  // namespace rpc
