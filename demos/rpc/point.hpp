// A user-defined type sent over the RPC demo's protocol (the seed's bonus): it tells nlohmann how it
// is serialized, and rpc::TypeName what to call it in signatures.
#pragma once
#include <nlohmann/json.hpp>

#include "registry.hpp"

namespace demo {
struct Point {
  double x = 0, y = 0;
  bool operator==(const Point&) const = default;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Point, x, y)
}  // namespace demo

RPC_TYPE_NAME(demo::Point, "Point");
