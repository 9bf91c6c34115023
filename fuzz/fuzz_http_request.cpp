// libFuzzer: the http_server demo's request reading (seed 001) on any bytes, split into lines as the
// server's line reader does. It returns a path or an error reply (400, 405, 431), never crashes, and
// reads no more than its header limits allow.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "http_request.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  int lines = 0;
  auto next_line = [&](bool& too_long) -> std::optional<std::string> {
    if (rest.empty()) return std::nullopt;
    ++lines;
    auto nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    too_long = line.size() > demo::http::kMaxLine;
    if (too_long) return std::string();
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    return std::string(line);
  };
  auto r = demo::http::read_request(next_line);
  if (auto* reply = std::get_if<demo::http::Response>(&r)) {
    if (reply->status != 400 && reply->status != 405 && reply->status != 431) __builtin_trap();
    if (demo::http::render(*reply).find("\r\n\r\n") == std::string::npos) __builtin_trap();
  } else if (std::get<std::string>(r).empty()) {
    __builtin_trap();  // a request line with a path always has one
  }
  // The request line, at most kMaxHeaders + 1 header lines, and the blank line or the one that trips
  // the limit: the header count is bounded.
  if (lines > demo::http::kMaxHeaders + 3) __builtin_trap();
  return 0;
}
