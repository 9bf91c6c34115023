// HTTP/1.1 basics shared by the server (http_server.hpp) and the client (http_client.hpp): header
// lists, URLs, status reasons and the error for malformed messages.
//
// Parsing and serializing HTTP is Boost.Beast's (http::parser / http::serializer, header-only in the
// Boost 1.81 fiberio already depends on), run over fiberio's cooperative Socket; none of Beast shows
// in these headers (fiberio/detail/http_stream.hpp is the adaptor).
#pragma once
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fiberio::http {

// A message the peer sent was not valid HTTP (bad status line, bad chunk, too large), or a URL
// could not be parsed. what() says what and where.
class ProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Header fields in arrival order; names compare case-insensitively (RFC 9110); a name may repeat.
class Headers {
 public:
  using Field = std::pair<std::string, std::string>;

  // Appends a field (repeats allowed: Set-Cookie).
  void add(std::string name, std::string value);
  // Replaces every field of that name with one.
  void set(std::string_view name, std::string value);
  // The first field of that name.
  std::optional<std::string_view> get(std::string_view name) const;
  bool has(std::string_view name) const { return get(name).has_value(); }
  // Removes every field of that name; returns how many.
  std::size_t erase(std::string_view name);
  // The field's value compared case-insensitively as a comma-separated list contains token
  // ("Connection: keep-alive, Upgrade" has "upgrade").
  bool has_token(std::string_view name, std::string_view token) const;

  std::size_t size() const noexcept { return fields_.size(); }
  bool empty() const noexcept { return fields_.empty(); }
  void clear() noexcept { fields_.clear(); }
  auto begin() const noexcept { return fields_.begin(); }
  auto end() const noexcept { return fields_.end(); }

 private:
  std::vector<Field> fields_;
};

bool iequals(std::string_view a, std::string_view b) noexcept;

// "http://host[:port][/target]" (also [v6]:port). https:// is refused (no TLS here): ProtocolError.
struct Url {
  std::string host;
  std::uint16_t port = 80;
  std::string target = "/";  // path and query, never empty

  static Url parse(std::string_view url);
  // "host:port" (the Host header's value; the port is left out when it is 80).
  std::string authority() const;
};

// "OK", "Not Found", ...; "" for a code it does not know.
std::string_view reason(int status) noexcept;

}  // namespace fiberio::http
