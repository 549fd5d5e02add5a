// SPDX-License-Identifier: MIT
// strata/make_resource.hpp: resources built from a text spec such as "bitmap(block_size=256KiB) > page", for
// configuration files, environment variables and command lines (docs/configuration.md).
#pragma once

#include <strata/config.hpp>

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <strata/resource.hpp>

STRATA_PUBLIC_BEGIN
namespace strata {

/// What make_resource() and the subsystem functions throw for a spec they cannot use: an unknown strategy or
/// option, a bad value or unit, a value out of range (the resource's own message, with the link it came from), bad
/// syntax. what() names the spec and the position; position() is the 0-based offset in the spec of the text at fault.
class spec_error : public std::invalid_argument {
 public:
  spec_error(const std::string& message, std::size_t position)
      : std::invalid_argument(message), position_(position) {}
  [[nodiscard]] std::size_t position() const noexcept { return position_; }

 private:
  std::size_t position_;
};

/// Owns a resource built by make_resource() and every upstream built for it (the whole chain), like a
/// std::unique_ptr: move-only, and the destructor destroys the chain from the top down, each resource before its
/// upstream. Resources the spec only names (the process's default page resource, `new_delete`) are used, never
/// owned. Every block allocated from the chain must have been freed (or be abandoned) before it is destroyed.
class resource_handle {
 public:
  resource_handle() noexcept = default;
  resource_handle(resource_handle&& other) noexcept;
  resource_handle& operator=(resource_handle&& other) noexcept;
  resource_handle(const resource_handle&) = delete;
  resource_handle& operator=(const resource_handle&) = delete;
  ~resource_handle();

  /// The top of the chain (the first strategy of the spec), or nullptr for an empty handle.
  [[nodiscard]] resource* get() const noexcept { return top_; }
  resource* operator->() const noexcept { return top_; }
  resource& operator*() const noexcept { return *top_; }
  explicit operator bool() const noexcept { return top_ != nullptr; }

  /// The spec the chain was built from, in canonical form (as describe() gives it).
  [[nodiscard]] const std::string& spec() const noexcept { return spec_; }
  /// How many resources the handle owns (0 for a spec naming only the default page resource).
  [[nodiscard]] std::size_t owned_count() const noexcept { return owned_.size(); }

  /// Destroys the chain (top first) and leaves the handle empty.
  void reset() noexcept;
  void swap(resource_handle& other) noexcept;

  // There is no release(): a caller could not destroy a chain from its top alone.

 private:
  friend resource_handle make_resource(std::string_view spec);
  resource* top_ = nullptr;
  std::vector<std::unique_ptr<resource>> owned_;  // the chain's own resources, bottom (last link) first
  std::string spec_;
};

/// Effects: builds the chain of resources `spec` describes and returns it. Grammar (docs/configuration.md):
///
///     spec    := link ( '>' link )*          the first link is the resource returned; each takes the next as upstream
///     link    := name [ '(' [ option ( ',' option )* ] ')' ]
///     option  := key '=' value
///
/// Whitespace may surround every token. Without a '>' the upstream is strata::default_page_resource(). `page` as a
/// link without options is that default page resource (not owned); with options a new page_resource. `new_delete`
/// (std::pmr::new_delete_resource()) may only be the last link. Sizes take B, KiB, MiB, GiB, TiB (1024-based);
/// KB, MB, GB, K, M, G are refused as ambiguous. Bools: true/false, 1/0, on/off, yes/no. Enums by their names.
/// Durations (options ending in _ms): milliseconds, or a number with `ms` or `s`.
///
///     auto h = strata::make_resource("fixed_pool(block_size=48, max_bytes=64MiB) > thread_cache");
///     std::pmr::vector<int> v(h.get());
///
/// Throws: spec_error (a std::invalid_argument) naming the position for any spec it cannot build, including an
/// option the resource refuses; std::bad_alloc when a resource cannot get its memory.
[[nodiscard]] resource_handle make_resource(std::string_view spec);

/// The canonical form of `spec`: single spaces around '>', no other whitespace, options in the order the strategy
/// lists them, sizes in the largest binary unit that divides them, bools as true/false, durations in ms. Two specs
/// with the same canonical form build the same chain. Builds nothing.
/// Throws: spec_error as make_resource() does for syntax, names and values (not for ranges the resource checks).
[[nodiscard]] std::string describe(std::string_view spec);

/// One option of a strategy, for help texts and error messages.
struct option_info {
  const char* name;         ///< as written in a spec
  const char* type;         ///< "size", "count", "bool", "milliseconds", or the enum's names as "a|b|c"
  const char* description;  ///< one line, with the default
};

/// One name make_resource() knows.
struct strategy_info {
  const char* name;
  const char* description;  ///< one line
  bool upstream_only;       ///< true for new_delete: usable only as the last link
  std::vector<option_info> options;
};

/// Every name make_resource() knows, with its options, in a stable order (for --help and error messages).
[[nodiscard]] const std::vector<strategy_info>& resource_names();

}  // namespace strata
STRATA_PUBLIC_END
