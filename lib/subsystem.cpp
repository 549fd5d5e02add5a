// SPDX-License-Identifier: MIT
// lib/subsystem.cpp: the process's named resources and where their specs come from.
#include <strata/subsystem.hpp>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <utility>

namespace strata {
namespace {

constexpr const char* built_in_default = "thread_cache";

struct origin_spec {
  std::string spec;    // canonical
  std::string origin;  // where it was read
};
using spec_map = std::map<std::string, origin_spec, std::less<>>;

struct subsystem_entry {
  origin_spec from;
  spec_source source;
  resource_handle handle;
};

struct registry {
  std::mutex mutex;
  std::map<std::string, subsystem_entry, std::less<>> made;
  spec_map configured;                   // configure_subsystem
  spec_map loaded;                       // load_subsystem_config
  std::optional<spec_map> from_env_file; // STRATA_CONFIG, once read
  std::optional<origin_spec> fallback;   // set_subsystem_default
};

// Never destroyed: subsystems' resources outlive static objects that still free into them at exit.
registry& the_registry() {
  static registry* r = new registry;
  return *r;
}

bool valid_name(std::string_view name) noexcept {
  if (name.empty()) return false;
  for (const char c : name)
    if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '_' && c != '.' && c != '-' && c != ':' && c != '/')
      return false;
  return true;
}

void check_name(std::string_view name) {
  if (!valid_name(name))
    throw std::invalid_argument("strata: bad subsystem name \"" + std::string(name) +
                                "\": letters, digits and _ . - : / only, at least one");
}

std::string_view trimmed(std::string_view s) noexcept {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())) != 0) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())) != 0) s.remove_suffix(1);
  return s;
}

// Every line of the file at `path`, checked; throws at the first bad one.
spec_map read_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("strata: cannot read the subsystem config file " + path);
  spec_map out;
  std::string line;
  for (unsigned number = 1; std::getline(in, line); ++number) {
    const std::string where = path + ":" + std::to_string(number);
    std::string_view text = line;
    text = trimmed(text.substr(0, text.find('#')));
    if (text.empty()) continue;
    const std::size_t eq = text.find('=');
    if (eq == std::string_view::npos) throw std::invalid_argument(where + ": expected \"name = spec\"");
    const std::string_view name = trimmed(text.substr(0, eq));
    if (!valid_name(name))
      throw std::invalid_argument(where + ": bad subsystem name \"" + std::string(name) +
                                  "\": letters, digits and _ . - : / only, at least one");
    if (auto it = out.find(name); it != out.end())
      throw std::invalid_argument(where + ": subsystem \"" + std::string(name) + "\" set again (first at " +
                                  it->second.origin + ")");
    try {
      out[std::string(name)] = {describe(trimmed(text.substr(eq + 1))), where};
    } catch (const spec_error& e) {
      throw std::invalid_argument(where + ": " + e.what());
    }
  }
  if (in.bad()) throw std::runtime_error("strata: cannot read the subsystem config file " + path);
  return out;
}

// The spec subsystem `name` is made from, and where it came from. Called under the registry's lock.
std::pair<origin_spec, spec_source> spec_for(registry& r, std::string_view name) {
  if (auto it = r.configured.find(name); it != r.configured.end()) return {it->second, spec_source::code};
  const std::string variable = subsystem_variable(name);
  if (const char* v = std::getenv(variable.c_str()); v != nullptr) return {{v, variable}, spec_source::environment};
  if (auto it = r.loaded.find(name); it != r.loaded.end()) return {it->second, spec_source::file};
  if (!r.from_env_file) {
    const char* path = std::getenv("STRATA_CONFIG");
    r.from_env_file = path != nullptr && *path != '\0' ? read_config(path) : spec_map{};
  }
  if (auto it = r.from_env_file->find(name); it != r.from_env_file->end()) return {it->second, spec_source::file};
  if (r.fallback) return {*r.fallback, spec_source::fallback};
  return {{built_in_default, "built-in default"}, spec_source::fallback};
}

}  // namespace

std::string subsystem_variable(std::string_view name) {
  std::string v = "STRATA_RESOURCE_";
  for (const char c : name)
    v += std::isalnum(static_cast<unsigned char>(c)) != 0 ? static_cast<char>(std::toupper(static_cast<unsigned char>(c)))
                                                          : '_';
  return v;
}

resource& subsystem(std::string_view name) {
  check_name(name);
  registry& r = the_registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  if (auto it = r.made.find(name); it != r.made.end()) return *it->second.handle;
  auto [from, source] = spec_for(r, name);
  resource_handle h;
  try {
    h = make_resource(from.spec);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("strata: subsystem \"" + std::string(name) + "\" (spec from " + from.origin +
                                "): " + e.what());
  }
  from.spec = h.spec();
  auto& entry = r.made[std::string(name)];
  entry = subsystem_entry{std::move(from), source, std::move(h)};
  return *entry.handle;
}

void configure_subsystem(std::string_view name, std::string_view spec) {
  check_name(name);
  std::string canonical = describe(spec);
  registry& r = the_registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  if (auto it = r.made.find(name); it != r.made.end())
    throw std::logic_error("strata: subsystem \"" + std::string(name) + "\" is in use already (made from \"" +
                           it->second.from.spec + "\", " + it->second.from.origin + ")");
  r.configured[std::string(name)] = {std::move(canonical), "configure_subsystem"};
}

void set_subsystem_default(std::string_view spec) {
  std::string canonical = describe(spec);
  registry& r = the_registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  r.fallback = origin_spec{std::move(canonical), "set_subsystem_default"};
}

void load_subsystem_config(const std::string& path) {
  spec_map entries = read_config(path);
  registry& r = the_registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  r.loaded = std::move(entries);
}

std::vector<subsystem_info> subsystems() {
  registry& r = the_registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<subsystem_info> out;
  for (const auto& [name, e] : r.made) out.push_back({name, e.from.spec, e.source, e.from.origin, e.handle.get()});
  return out;
}

void reset_subsystems() noexcept {
  registry& r = the_registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  r.made.clear();
  r.configured.clear();
  r.loaded.clear();
  r.from_env_file.reset();
  r.fallback.reset();
}

}  // namespace strata
