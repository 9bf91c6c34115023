#include "patched/private_copy.hpp"

#include <link.h>

#include <cstdint>
#include <cstring>
#include <string_view>

#include "fiberio/detail/shim_interface.hpp"

namespace fiberio::patched::detail {

namespace {

// Only an object that contains fiberio's runtime holds its identification text (shim_interface.hpp);
// an executable that merely calls into libfiberio.so does not.
constexpr std::string_view kHubMarker = FIBERIO_RUNTIME_ID;

bool contains(const dl_phdr_info& obj, std::uintptr_t address) {
  for (int i = 0; i < obj.dlpi_phnum; ++i) {
    const auto& ph = obj.dlpi_phdr[i];
    std::uintptr_t start = obj.dlpi_addr + ph.p_vaddr;
    if (ph.p_type == PT_LOAD && address >= start && address - start < ph.p_memsz) return true;
  }
  return false;
}

// Whether [base, base + size) holds `marker`. It reads a whole mapped segment byte by byte, string
// literals and the bytes between them alike, so it is left uninstrumented: under ASan the gaps between
// a sanitized object's globals are poisoned redzones, which this scan must read through, not report.
__attribute__((no_sanitize_address)) bool segment_contains(const char* base, std::size_t size,
                                                          std::string_view marker) noexcept {
  if (marker.empty() || size < marker.size()) return false;
  for (std::size_t i = 0; i + marker.size() <= size; ++i) {
    std::size_t k = 0;
    while (k < marker.size() && base[i + k] == marker[k]) ++k;
    if (k == marker.size()) return true;
  }
  return false;
}

bool has_marker(const dl_phdr_info& obj, std::uintptr_t) {
  for (int i = 0; i < obj.dlpi_phnum; ++i) {
    const auto& ph = obj.dlpi_phdr[i];
    // String literals live in read-only segments (.rodata; merged into the text segment by older linkers).
    if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_R) || (ph.p_flags & PF_W)) continue;
    const char* base = reinterpret_cast<const char*>(obj.dlpi_addr + ph.p_vaddr);
    if (segment_contains(base, ph.p_filesz, kHubMarker)) return true;
  }
  return false;
}

// Asks `question(object, address)` of one loaded object: the main program (which dl_iterate_phdr
// always lists first), or the object that contains `address`.
struct Query {
  bool main_program;
  std::uintptr_t address;
  bool (*question)(const dl_phdr_info&, std::uintptr_t);
  bool answer = false;
};

int visit(dl_phdr_info* obj, std::size_t, void* data) {
  auto* q = static_cast<Query*>(data);
  if (!q->main_program && !contains(*obj, q->address)) return 0;
  q->answer = q->question(*obj, q->address);
  return 1;  // stop
}

bool ask(bool main_program, const void* address, bool (*question)(const dl_phdr_info&, std::uintptr_t)) {
  Query q{main_program, reinterpret_cast<std::uintptr_t>(address), question};
  ::dl_iterate_phdr(visit, &q);
  return q.answer;
}

}  // namespace

bool object_has_fiberio_hub(const void* address) noexcept {
  return address && ask(false, address, has_marker);
}

bool program_has_private_fiberio() noexcept { return ask(true, nullptr, has_marker); }

bool in_program(const void* address) noexcept { return address && ask(true, address, contains); }

}  // namespace fiberio::patched::detail
