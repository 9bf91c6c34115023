// libFuzzer: Address::parse on any text. It either throws std::invalid_argument or gives an address
// whose text form parses back to the same address.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include "fiberio/address.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  fiberio::Address a;
  try {
    a = fiberio::Address::parse(text);
  } catch (const std::invalid_argument&) {
    return 0;  // bad input: a clear error, as promised
  }
  std::string shown = a.to_string();
  fiberio::Address b = fiberio::Address::parse(shown);  // must not throw: it printed it
  if (!(a == b)) __builtin_trap();
  return 0;
}
