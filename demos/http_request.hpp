// Seed 001's request handling, apart from the server so that a fuzzer can drive it
// (fuzz/fuzz_http_request.cpp): the request line and headers of one request, and the reply's bytes.
#pragma once
#include <fmt/format.h>

#include <cstddef>
#include <optional>
#include <string>
#include <variant>

namespace demo::http {

constexpr std::size_t kMaxLine = 8 * 1024;
constexpr int kMaxHeaders = 100;

struct Response {
  int status;
  std::string body;
};

inline std::string render(const Response& r) {
  const char* reason = r.status == 200   ? "OK"
                       : r.status == 400 ? "Bad Request"
                       : r.status == 404 ? "Not Found"
                       : r.status == 405 ? "Method Not Allowed"
                                         : "Request Header Fields Too Large";
  return fmt::format("HTTP/1.1 {} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                     r.status, reason, r.body.size() + 1, r.body + "\n");
}

// The request line and headers, read through `next_line` (a line without "\r\n", nullopt at EOF,
// "too long" reported through its flag). Returns the path of a well-formed GET, or an error response.
template <class NextLine>
std::variant<std::string, Response> read_request(NextLine next_line) {
  bool too_long = false;
  auto request = next_line(too_long);
  if (!request) return Response{400, "empty request"};
  if (too_long) return Response{431, "request line too long"};
  for (int headers = 0;; ++headers) {  // headers are read and ignored, up to the blank line
    auto h = next_line(too_long);
    if (too_long || headers > kMaxHeaders) return Response{431, "headers too large"};
    if (!h || h->empty()) break;
  }
  auto sp1 = request->find(' '), sp2 = request->rfind(' ');
  // (An empty path, "GET  HTTP/1.1", is malformed too: the fuzzer found it accepted.)
  if (sp1 == std::string::npos || sp2 <= sp1 + 1 || !request->substr(sp2 + 1).starts_with("HTTP/"))
    return Response{400, "malformed request line"};
  if (request->substr(0, sp1) != "GET") return Response{405, "only GET"};
  return request->substr(sp1 + 1, sp2 - sp1 - 1);
}

}  // namespace demo::http
