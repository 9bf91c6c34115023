// libFuzzer: the RPC demo's frame decoder (demos/rpc/protocol.hpp) on any bytes, delivered in pieces
// of a size the input chooses, and every message it yields handed to the demo's registry, as a
// server would. Nothing may crash, the decoder's buffer stays within one frame plus one piece, and
// every reply re-encodes.
#include <cstdint>
#include <string_view>

#include "functions.hpp"
#include "protocol.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  static const rpc::Registry api = rpc::demo_functions();
  constexpr std::size_t kMaxFrame = 4096;
  std::size_t piece = data[0] % 64 + 1;
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  rpc::FrameDecoder decoder(kMaxFrame);
  try {
    while (!rest.empty()) {
      auto p = rest.substr(0, piece);
      rest.remove_prefix(p.size());
      decoder.feed(p);
      if (decoder.buffered() > kMaxFrame + rpc::kHeaderBytes + piece) __builtin_trap();
      while (auto message = decoder.next()) {
        rpc::Value reply = api.handle(*message);
        if (!reply.contains("ok") && !reply.contains("error")) __builtin_trap();
        (void)rpc::encode_frame(reply, SIZE_MAX);
      }
    }
  } catch (const rpc::ProtocolError&) {
    // the answer to a bad frame: the server replies with it and closes the connection
  }
  return 0;
}
