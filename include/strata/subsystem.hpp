// SPDX-License-Identifier: MIT
// strata/subsystem.hpp: one named resource per subsystem of a program, its spec chosen by code, the environment or a
// config file, made on first use (docs/configuration.md).
#pragma once

#include <strata/config.hpp>

#include <string>
#include <string_view>
#include <vector>

#include <strata/make_resource.hpp>
#include <strata/resource.hpp>

STRATA_PUBLIC_BEGIN
namespace strata {

/// Where a subsystem's spec came from, highest precedence first.
enum class spec_source {
  code,         ///< configure_subsystem()
  environment,  ///< the variable STRATA_RESOURCE_<NAME>
  file,         ///< a line of a config file (load_subsystem_config(), else the file named by STRATA_CONFIG)
  fallback,     ///< set_subsystem_default(), else the built-in default "thread_cache"
};

/// A subsystem made so far.
struct subsystem_info {
  std::string name;
  std::string spec;    ///< canonical (describe())
  spec_source source;
  std::string origin;  ///< e.g. "STRATA_RESOURCE_NET", "/etc/app/strata.conf:3", "configure_subsystem"
  resource* r;
};

/// The resource of subsystem `name`, made on first use from the first spec found in this order:
/// 1. configure_subsystem(name, spec);
/// 2. the environment variable STRATA_RESOURCE_<NAME> (subsystem_variable(name));
/// 3. a line `name = spec` of the config file given to load_subsystem_config() (the last load wins), else of the file
///    the environment variable STRATA_CONFIG names (read at the first subsystem() call);
/// 4. set_subsystem_default(spec), else "thread_cache": each subsystem gets a resource of its own, so that its
///    statistics are its own.
/// Names: letters, digits and _ . - : / (at least one character).
///
/// The resource lives until the process ends (it is never destroyed, so containers in static objects may still free
/// into it at exit), or until reset_subsystems(). Thread-safe: threads asking for the same name at once get the same
/// resource. Each call takes a lock: keep the reference.
/// Throws: std::invalid_argument for a bad name, a spec (from whichever source) that cannot be built, the message
/// naming the source (the variable, file:line), or a bad line in the STRATA_CONFIG file (path:line); nothing is made
/// then, and a later call tries again. std::runtime_error when the STRATA_CONFIG file cannot be read; std::bad_alloc.
[[nodiscard]] resource& subsystem(std::string_view name);

/// Effects: subsystem(name) will be built from `spec` (checked now for syntax, names and values).
/// Throws: spec_error for a bad spec, std::invalid_argument for a bad name, std::logic_error when the subsystem was
/// made already.
void configure_subsystem(std::string_view name, std::string_view spec);

/// Effects: subsystems made from now on with no other spec are built from `spec` instead of "thread_cache" (each its
/// own chain). Throws: spec_error for a bad spec.
void set_subsystem_default(std::string_view spec);

/// Effects: reads the config file at `path`: one `name = spec` per line; `#` starts a comment; blank lines are
/// skipped. Every line is checked first (name, syntax, strategies, options, values); a bad line throws and nothing of
/// the file is used. Its entries replace those of an earlier load; they apply to subsystems not made yet.
/// Throws: std::invalid_argument with "path:line: " and the reason; std::runtime_error when the file cannot be read.
void load_subsystem_config(const std::string& path);

/// The environment variable that configures subsystem `name`: STRATA_RESOURCE_ followed by the name in upper case,
/// every character that is not a letter or digit written as '_' ("net.io" -> STRATA_RESOURCE_NET_IO; "net_io" has the
/// same variable).
[[nodiscard]] std::string subsystem_variable(std::string_view name);

/// The subsystems made so far, by name, with the spec each was built from and its resource (for a stats table).
[[nodiscard]] std::vector<subsystem_info> subsystems();

/// Destroys every subsystem's resource and forgets every configuration (code, files, the default); STRATA_CONFIG is
/// read again at the next subsystem() call. For tests: no block of any subsystem may be in use, and references
/// from subsystem() (and C handles from strata_subsystem) must not be used again.
void reset_subsystems() noexcept;

}  // namespace strata
STRATA_PUBLIC_END
