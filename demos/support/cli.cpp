// demo::Cli: the demos' command lines, parsed by CLI11 (Debian's libcli11-dev). The usage text is
// the demos' own (argparse-like, as the seeds' Python scripts print it), and so are the error
// messages the tests and docs/demos.md show; CLI11 does the parsing.
#include <CLI/CLI.hpp>

#include "demo_util.hpp"

namespace demo {

namespace {

constexpr std::size_t kFlagColumn = 26;  // wider option columns put the help on the next line

// The option a CLI11 message is about: CLI11 starts ArgumentMismatch messages with the option's name
// ("--port: 1 required PORT missing", "quiet was given a disallowed flag override").
const Option* culprit(const std::vector<Option>& options, std::string_view msg) {
  const Option* best = nullptr;
  for (const auto& o : options) {
    for (std::string name : {"--" + o.name + ":", o.name + " "})
      if (msg.starts_with(name) && (!best || o.name.size() > best->name.size())) best = &o;
  }
  return best;
}

}  // namespace

Cli::Cli(std::string prog, std::string summary, std::vector<Option> options)
    : prog_(std::move(prog)), summary_(std::move(summary)), options_(std::move(options)) {
  // -h is --help unless a demo gave -h to an option of its own.
  bool h_taken = std::any_of(options_.begin(), options_.end(), [](const Option& o) { return o.short_name == 'h'; });
  options_.push_back({"help", h_taken ? '\0' : 'h', "", "show this help and exit"});
}

void Cli::parse(int argc, char** argv) {
  CLI::App app(summary_, prog_);
  app.set_help_flag(options_.back().short_name ? "-h,--help" : "--help", "show this help and exit");
  std::vector<std::pair<const Option*, CLI::Option*>> added;
  for (const auto& o : options_) {
    if (o.name == "help") continue;
    std::string names = (o.short_name ? fmt::format("-{},", o.short_name) : "") + "--" + o.name;
    if (o.value_name.empty()) {
      added.emplace_back(&o, app.add_flag(names, o.help)->disable_flag_override());
    } else {
      // One value per occurrence; every occurrence kept (get() takes the last, get_all() all).
      added.emplace_back(&o, app.add_option(names, o.help)
                                 ->type_name(o.value_name)
                                 ->expected(1)
                                 ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll));
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::fputs(usage().c_str(), stdout);
    std::exit(0);
  } catch (const CLI::ExtrasError&) {
    // The first argument (in command-line order) that nothing took.
    auto rest = app.remaining();
    std::string arg = rest.empty() ? "" : rest.front();
    for (int i = 1; i < argc; ++i)
      if (std::find(rest.begin(), rest.end(), argv[i]) != rest.end()) {
        arg = argv[i];
        break;
      }
    if (arg.size() > 1 && arg[0] == '-' && arg != "--")
      fail(fmt::format("unknown option '{}'", arg.substr(0, arg.find('='))));
    fail(fmt::format("unexpected argument '{}'", arg));
  } catch (const CLI::ArgumentMismatch& e) {
    if (const Option* o = culprit(options_, e.what())) {
      if (o->value_name.empty()) fail(fmt::format("option '--{}' takes no value", o->name));
      fail(fmt::format("option '--{}' needs a value ({})", o->name, o->value_name));
    }
    fail(e.what());
  } catch (const CLI::ParseError& e) {
    fail(e.what());
  }
  for (auto [o, opt] : added) {
    if (opt->count() == 0) continue;
    auto& values = values_[o->name];
    if (o->value_name.empty()) values.resize(opt->count());
    else values = opt->results();
  }
}

long Cli::get_int(const std::string& name, long def, long min, long max) const {
  auto it = values_.find(name);
  if (it == values_.end()) return def;
  auto v = parse_long(it->second.back());
  if (!v || *v < min || *v > max)
    fail(fmt::format("--{} must be an integer in [{}, {}], got '{}'", name, min, max, it->second.back()));
  return *v;
}

std::string Cli::get_choice(const std::string& name, std::string def, const std::vector<std::string>& choices) const {
  auto v = get(name, def);
  if (std::find(choices.begin(), choices.end(), v) == choices.end()) {
    std::string all;
    for (auto& c : choices) all += (all.empty() ? "" : "|") + c;
    fail(fmt::format("--{} must be one of {}, got '{}'", name, all, v));
  }
  return v;
}

void Cli::fail(const std::string& msg) const {
  std::fflush(stdout);
  // One line, as every error of a demo: what is wrong, and where the usage is.
  std::fprintf(stderr, "%s: error: %s (%s --help shows the usage)\n", prog_.c_str(), msg.c_str(), prog_.c_str());
  std::exit(2);
}

std::string Cli::usage() const {
  std::string line = "usage: " + prog_;
  for (auto& o : options_) {
    if (o.name == "help") continue;
    line += o.value_name.empty() ? fmt::format(" [--{}]", o.name) : fmt::format(" [--{} {}]", o.name, o.value_name);
  }
  std::string text = line + "\n" + summary_ + "\n\noptions:\n";
  std::vector<std::string> flags;
  std::size_t width = 0;
  for (auto& o : options_) {
    std::string flag = o.short_name ? fmt::format("-{}, --{}", o.short_name, o.name) : fmt::format("    --{}", o.name);
    if (!o.value_name.empty()) flag += " " + o.value_name;
    if (flag.size() <= kFlagColumn) width = std::max(width, flag.size());
    flags.push_back(std::move(flag));
  }
  for (std::size_t i = 0; i < options_.size(); ++i) {
    if (flags[i].size() > width)  // too wide for the column: the help goes on the next line
      text += fmt::format("  {}\n  {:<{}}  {}\n", flags[i], "", width, options_[i].help);
    else
      text += fmt::format("  {:<{}}  {}\n", flags[i], width, options_[i].help);
  }
  return text;
}

std::optional<long> Cli::parse_long(std::string_view s) {
  long v = 0;
  if (s.empty()) return std::nullopt;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
  return v;
}

void say_line(std::string line) {
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
}

}  // namespace demo
