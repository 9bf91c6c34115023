#include "fiberio/http.hpp"

#include <ostream>  // boost/core/detail/string_view.hpp needs it and does not include it

#include <boost/beast/http/status.hpp>
#include <algorithm>
#include <charconv>

namespace fiberio::http {

bool iequals(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; };
           return lower(x) == lower(y);
         });
}

void Headers::add(std::string name, std::string value) { fields_.emplace_back(std::move(name), std::move(value)); }

void Headers::set(std::string_view name, std::string value) {
  erase(name);
  fields_.emplace_back(std::string(name), std::move(value));
}

std::optional<std::string_view> Headers::get(std::string_view name) const {
  for (const auto& [n, v] : fields_)
    if (iequals(n, name)) return std::string_view(v);
  return std::nullopt;
}

std::size_t Headers::erase(std::string_view name) {
  return std::erase_if(fields_, [name](const Field& f) { return iequals(f.first, name); });
}

bool Headers::has_token(std::string_view name, std::string_view token) const {
  for (const auto& [n, v] : fields_) {
    if (!iequals(n, name)) continue;
    std::string_view rest = v;
    while (!rest.empty()) {
      auto comma = rest.find(',');
      auto item = rest.substr(0, comma);
      while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
      while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
      if (iequals(item, token)) return true;
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  return false;
}

Url Url::parse(std::string_view url) {
  auto fail = [url](const char* why) -> Url {
    throw ProtocolError("fiberio::http: bad URL '" + std::string(url) + "': " + why);
  };
  constexpr std::string_view kScheme = "http://";
  if (url.size() >= 8 && iequals(url.substr(0, 8), "https://")) return fail("https is not supported (no TLS)");
  if (url.size() < kScheme.size() || !iequals(url.substr(0, kScheme.size()), kScheme)) return fail("expected http://");
  std::string_view rest = url.substr(kScheme.size());
  auto slash = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, slash);
  std::string_view target = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  if (auto hash = target.find('#'); hash != std::string_view::npos) target = target.substr(0, hash);  // never sent
  if (authority.find('@') != std::string_view::npos) return fail("user info is not supported");
  Url u;
  std::string_view port;
  if (authority.starts_with('[')) {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return fail("unclosed '['");
    u.host = std::string(authority.substr(1, close - 1));
    auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return fail("junk after ']'");
      port = after.substr(1);
    }
  } else {
    auto colon = authority.rfind(':');
    u.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (u.host.empty()) return fail("no host");
  if (!port.empty()) {
    unsigned p = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc() || end != port.data() + port.size() || p == 0 || p > 65535) return fail("bad port");
    u.port = static_cast<std::uint16_t>(p);
  }
  if (target.empty()) target = "/";
  // (assign + append: GCC 12 warns, wrongly, of overlapping copies in "/" + std::string(...))
  u.target.assign(target.front() == '?' ? "/" : "");
  u.target.append(target);
  for (char c : u.target)
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) return fail("space or control character in the path");
  return u;
}

std::string Url::authority() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return port == 80 ? h : h + ":" + std::to_string(port);
}

std::string_view reason(int status) noexcept {
  auto r = boost::beast::http::obsolete_reason(static_cast<boost::beast::http::status>(status));
  return r == "<unknown-status>" ? std::string_view() : std::string_view(r.data(), r.size());
}

}  // namespace fiberio::http
