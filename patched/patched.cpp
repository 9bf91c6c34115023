#include "fiberio/patched.hpp"

#include <dlfcn.h>
#include <link.h>

#include <cstring>

#include "fiberio/detail/shim_interface.hpp"
#include "patched/mode.hpp"
#include "patched/real.hpp"
#include "patched/private_copy.hpp"

namespace fiberio::patched {

namespace {
constexpr std::string_view kFunctions[] = {
    "socket",        "socketpair",     "connect",         "accept",           "accept4",     "read",
    "readv",         "recv",           "recvfrom",        "recvmsg",          "write",       "writev",
    "send",          "sendto",         "sendmsg",         "poll",             "ppoll",       "select",
    "pselect",       "epoll_wait",     "epoll_pwait",     "epoll_pwait2",     "sleep",       "usleep",
    "nanosleep",     "clock_nanosleep", "close",          "close_range",   "closefrom",      "fclose",  "fdopen",           "shutdown",    "fcntl",
    "fcntl64",       "ioctl",          "setsockopt",      "getsockopt",       "dup",         "dup2",
    "dup3",          "pipe",           "pipe2",           "getaddrinfo",      "getnameinfo", "gethostbyname",
    "gethostbyname2", "gethostbyname_r", "gethostbyname2_r", "__read_chk",    "__recv_chk",  "__recvfrom_chk",
    "__poll_chk",    "__ppoll_chk",
    "waitpid",       "wait",           "wait3",           "wait4",            "waitid",      "system",
    "popen",         "pclose"};

// Where this library is loaded: a symbol resolved into it is one of our shims.
const void* own_base() noexcept {
  static const void* base = [] {
    Dl_info info{};
    return ::dladdr(reinterpret_cast<const void*>(&own_base), &info) ? info.dli_fbase : nullptr;
  }();
  return base;
}

// Sanitizer runtimes (ASan, TSan, UBSan) are loaded first and define libc's functions themselves: each
// such interceptor checks its arguments and forwards the call to the next definition in the search
// order, which is a shim when this library is loaded.
bool is_sanitizer_runtime(const char* path) noexcept {
  const char* name = std::strrchr(path, '/');
  name = name ? name + 1 : path;
  for (const char* prefix : {"libasan.", "libtsan.", "libubsan.", "liblsan.", "libclang_rt."})
    if (std::strncmp(name, prefix, std::strlen(prefix)) == 0) return true;
  return false;
}

// The base of the first loaded shared object, in search order and sanitizer runtimes skipped, that
// defines `symbol` itself.
const void* first_definer(const char* symbol) noexcept {
  const char* names[512];
  struct Names {
    const char** at;
    std::size_t n = 0;
  } list{names};
  ::dl_iterate_phdr(
      [](dl_phdr_info* obj, std::size_t, void* data) {
        auto* l = static_cast<Names*>(data);
        if (obj->dlpi_name && obj->dlpi_name[0] == '/' && !is_sanitizer_runtime(obj->dlpi_name) && l->n < 512)
          l->at[l->n++] = obj->dlpi_name;
        return 0;
      },
      &list);
  // dlopen() outside the iteration, which holds the loader's lock.
  for (std::size_t i = 0; i < list.n; ++i) {
    void* h = ::dlopen(names[i], RTLD_NOLOAD | RTLD_LAZY);
    if (!h) continue;
    void* p = ::dlsym(h, symbol);  // this object's own definition, else one of its dependencies'
    ::dlclose(h);
    Dl_info info{};
    if (p && ::dladdr(p, &info) && info.dli_fname && std::strcmp(info.dli_fname, names[i]) == 0) return info.dli_fbase;
  }
  return nullptr;
}

// Whether a call of `symbol` from the program runs our shim (through a sanitizer's interceptor or not).
bool resolves_here(const char* symbol) noexcept {
  void* p = real::resolved(symbol);
  Dl_info info{};
  if (!p || !::dladdr(p, &info)) return false;
  if (info.dli_fbase == own_base()) return true;
  return info.dli_fname && is_sanitizer_runtime(info.dli_fname) && first_definer(symbol) == own_base();
}

// The runtime's identification symbol (fiberio/detail/shim_interface.hpp): where the process resolves
// it tells which fiberio the shims talk to.
constexpr const char* kRuntimeId = "fiberio_runtime_id";

// Run when the library loads. The shims reach fiberio where the process resolves it: libfiberio.so,
// shared with the program that links it (the normal case), or the program itself when it carries a
// static copy and exports it (which the linker does when the program links fiberio::patched). A
// program with its own static copy that it does not export (libfiberio.a, then LD_PRELOAD) has hubs
// the shims can never see: they would silently do nothing, so say so.
__attribute__((constructor)) void check_reachable_hub() {
  if (detail::in_program(real::resolved(kRuntimeId))) return;  // the program's own fiberio: shared
  if (!detail::program_has_private_fiberio()) return;  // it uses libfiberio.so, or has no fiberio at all
  static const char msg[] =
      "fiberio_patched: this program contains its own static copy of fiberio (libfiberio.a) and does not "
      "export it, so the preloaded shims cannot see its hubs and stay inactive (plain libc). Link the "
      "program against the shared libfiberio.so (fiberio's default build, FIBERIO_SHARED=ON), or link "
      "fiberio::patched into it. See docs/patched.md.\n";
  [[maybe_unused]] auto r = real::write(2, msg, sizeof msg - 1);
}
}  // namespace

bool installed() noexcept { return resolves_here("read"); }

bool is_patched(std::string_view function) noexcept {
  if (function.empty() || function.size() >= 64) return false;
  for (auto f : kFunctions) {
    if (f != function) continue;
    char name[64];
    std::memcpy(name, function.data(), function.size());
    name[function.size()] = '\0';
    return resolves_here(name);
  }
  return false;
}

std::span<const std::string_view> patched_functions() noexcept { return kFunctions; }

void enable() noexcept { detail::g_enabled.store(true); }
void disable() noexcept { detail::g_enabled.store(false); }
bool enabled() noexcept { return detail::g_enabled.load(); }

bool active() noexcept { return installed() && detail::cooperative_hub() != nullptr; }

namespace detail {
const int link_anchor = 1;
}

Disabled::Disabled() noexcept { ++detail::t_disabled; }
Disabled::~Disabled() { --detail::t_disabled; }

}  // namespace fiberio::patched
