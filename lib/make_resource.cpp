// SPDX-License-Identifier: MIT
// lib/make_resource.cpp: the spec parser and the table of strategies make_resource() builds from it.
#include <strata/make_resource.hpp>

#include <cctype>
#include <climits>
#include <limits>
#include <cstdint>
#include <memory_resource>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include <strata/arena_resource.hpp>
#include <strata/bitmap_resource.hpp>
#include <strata/debug_resource.hpp>
#include <strata/fixed_pool_resource.hpp>
#include <strata/free_list_resource.hpp>
#include <strata/page_resource.hpp>
#include <strata/thread_cache_resource.hpp>
#include <strata/tracking_resource.hpp>

namespace strata {
namespace {

// ---- option tables ---------------------------------------------------------------------------------------------

enum class value_kind { size, count, boolean, ms, choice, decimal };

// A decimal option's value is held in millionths until it is stored.
constexpr std::uint64_t decimal_scale = 1000000;

// One option of options struct O: how it is written and read, and how it is stored.
template <class O>
struct option_def {
  option_info info;
  value_kind kind;
  std::uint64_t max;  // the largest value the field holds
  void (*set)(O&, std::uint64_t);
  const char* excludes = nullptr;  // another option that may not be given with this one
};

template <class T>
constexpr std::uint64_t field_max() {
  if constexpr (std::is_same_v<T, bool>) return 1;
  else if constexpr (std::is_enum_v<T>) return UINT64_MAX;  // the choice's index, checked against its names
  else return std::numeric_limits<T>::max();
}

#define STRATA_SPEC_OPTION(O, field, kind, type, description)                                   \
  option_def<O> {                                                                               \
    {#field, type, description}, value_kind::kind, field_max<decltype(O::field)>(),             \
        [](O& o, std::uint64_t v) { o.field = static_cast<decltype(O::field)>(v); }             \
  }

constexpr const char* checks_type = "standard|strict";

const option_def<bitmap_options> bitmap_defs[] = {
    STRATA_SPEC_OPTION(bitmap_options, block_size, size, "size",
                       "bytes per block, a power of two from 64KiB to 16MiB (default 64KiB)"),
    STRATA_SPEC_OPTION(bitmap_options, max_small_size, size, "size",
                       "largest request served from classes, at most block_size/8 and 64KiB (default 4096)"),
    STRATA_SPEC_OPTION(bitmap_options, natural_alignment, boolean, "bool",
                       "power-of-two classes, each block aligned to its size (default false)"),
    STRATA_SPEC_OPTION(bitmap_options, max_empty_blocks, count, "count",
                       "empty blocks kept for reuse (default 2)"),
    STRATA_SPEC_OPTION(bitmap_options, checks, choice, checks_type, "how frees are checked (default standard)"),
};

// The fixed pool's block size is a constructor argument; a spec gives it as an option.
struct fixed_pool_spec : fixed_pool_options {
  std::size_t block_size = 0;
};
const option_def<fixed_pool_spec> fixed_pool_defs[] = {
    STRATA_SPEC_OPTION(fixed_pool_spec, block_size, size, "size", "bytes per block, 1 B to 1GiB (required)"),
    STRATA_SPEC_OPTION(fixed_pool_spec, max_bytes, size, "size", "hard capacity taken up front; 0: grows (default 0)"),
    STRATA_SPEC_OPTION(fixed_pool_spec, chunk_size, size, "size",
                       "bytes per chunk, a power of two from 64KiB to 16GiB; 0: chosen (default 0)"),
    STRATA_SPEC_OPTION(fixed_pool_spec, forward_large, boolean, "bool",
                       "requests above one block go upstream instead of runs of blocks (default false)"),
    STRATA_SPEC_OPTION(fixed_pool_spec, max_empty_chunks, count, "count", "empty chunks kept for reuse (default 1)"),
    STRATA_SPEC_OPTION(fixed_pool_spec, huge_pages, boolean, "bool",
                       "chunks of huge pages where upstream has them (default true)"),
    STRATA_SPEC_OPTION(fixed_pool_spec, checks, choice, checks_type, "how frees are checked (default standard)"),
};

const option_def<free_list_options> free_list_defs[] = {
    STRATA_SPEC_OPTION(free_list_options, policy, choice, "first_fit|next_fit|best_fit|segregated",
                       "how a free block is picked (default segregated)"),
    STRATA_SPEC_OPTION(free_list_options, chunk_size, size, "size",
                       "bytes per chunk, a power of two from 64KiB to 1GiB; 0: 1MiB or a huge page (default 0)"),
    STRATA_SPEC_OPTION(free_list_options, large_threshold, size, "size",
                       "requests above go straight upstream; 0: 256KiB (default 0)"),
    STRATA_SPEC_OPTION(free_list_options, max_empty_chunks, count, "count", "empty chunks kept for reuse (default 1)"),
    STRATA_SPEC_OPTION(free_list_options, purge_threshold, size, "size",
                       "free blocks at least this large give their pages back; 0: never (default 256KiB)"),
    STRATA_SPEC_OPTION(free_list_options, purge_delay, count, "count",
                       "deallocations a large free block waits before its pages go (default 65536)"),
    STRATA_SPEC_OPTION(free_list_options, huge_pages, boolean, "bool",
                       "chunks of one huge page where upstream has them (default true)"),
    STRATA_SPEC_OPTION(free_list_options, checks, choice, checks_type, "how frees are checked (default standard)"),
};

const option_def<thread_cache_options> thread_cache_defs[] = {
    STRATA_SPEC_OPTION(thread_cache_options, max_small_size, size, "size",
                       "largest request of the per-thread caches, at most 8KiB; 0: 8KiB (default 0)"),
    STRATA_SPEC_OPTION(thread_cache_options, max_shared_size, size, "size",
                       "largest request of the shared tier; 0: 256KiB (default 0)"),
    STRATA_SPEC_OPTION(thread_cache_options, max_empty_blocks, count, "count",
                       "empty blocks the shared tier keeps (default 16)"),
    STRATA_SPEC_OPTION(thread_cache_options, checks, choice, checks_type, "how frees are checked (default standard)"),
    STRATA_SPEC_OPTION(thread_cache_options, idle_decay_ms, ms, "milliseconds",
                       "how long a thread keeps extra emptied blocks; 0: never (default 100ms)"),
};

const option_def<debug_options> debug_defs[] = {
    STRATA_SPEC_OPTION(debug_options, canary_size, size, "size",
                       "bytes checked on each side of a block, at most 4096 (default 16)"),
    STRATA_SPEC_OPTION(debug_options, fill, boolean, "bool", "fill new and freed blocks (default true)"),
    STRATA_SPEC_OPTION(debug_options, quarantine_bytes, size, "size",
                       "freed blocks held back before reuse (default 1MiB)"),
    STRATA_SPEC_OPTION(debug_options, backtrace_depth, count, "count",
                       "return addresses recorded per allocation, at most 32 (default 0)"),
    STRATA_SPEC_OPTION(debug_options, report_leaks, boolean, "bool",
                       "report blocks still live at destruction (default true)"),
    option_def<debug_options>{{"guard", "none|overflow|underflow", "inaccessible page after or before each block "
                                                                   "(default none)"},
                              value_kind::choice, UINT64_MAX,
                              [](debug_options& o, std::uint64_t v) { o.guard = static_cast<guard_mode>(v); },
                              "guarded"},
    option_def<debug_options>{{"guarded", "bool", "true: guard=overflow, false: guard=none (default false)"},
                              value_kind::boolean, 1,
                              [](debug_options& o, std::uint64_t v) {
                                o.guard = v != 0 ? guard_mode::overflow : guard_mode::none;
                              },
                              "guard"},
    STRATA_SPEC_OPTION(debug_options, guard_bytes, size, "size",
                       "guarded mode: inaccessible bytes beside each block, at most 1GiB (default one page)"),
    STRATA_SPEC_OPTION(debug_options, explain_faults, boolean, "bool",
                       "guarded mode: explain a fault on stderr first (default true)"),
};

const option_def<page_resource::options> page_defs[] = {
    STRATA_SPEC_OPTION(page_resource::options, max_cached_bytes, size, "size",
                       "bytes of freed spans kept for reuse; 0: no cache (default 64MiB)"),
    STRATA_SPEC_OPTION(page_resource::options, max_cached_spans, count, "count",
                       "freed spans kept for reuse, at most 4096 (default 64)"),
    STRATA_SPEC_OPTION(page_resource::options, max_resident_cached_bytes, size, "size",
                       "cached bytes that may stay resident (default 32MiB)"),
    STRATA_SPEC_OPTION(page_resource::options, purge_delay_ms, ms, "milliseconds",
                       "a cached span unused this long is purged (default 10ms)"),
    STRATA_SPEC_OPTION(page_resource::options, purge, choice, "eager|lazy",
                       "eager: MADV_DONTNEED, lazy: MADV_FREE (default eager)"),
    STRATA_SPEC_OPTION(page_resource::options, transparent_huge_pages, boolean, "bool",
                       "spans of a huge page or more aligned and advised as huge pages (default false)"),
    STRATA_SPEC_OPTION(page_resource::options, growth_reserve_min, size, "size",
                       "spans this large get address space reserved to grow into; 0: none (default 1MiB)"),
    STRATA_SPEC_OPTION(page_resource::options, growth_reserve_ratio, count, "count",
                       "reserved address space as a multiple of the span (default 3)"),
};

const option_def<arena_options> arena_defs[] = {
    STRATA_SPEC_OPTION(arena_options, initial_size, size, "size",
                       "bytes of the first chunk, rounded up to 4KiB (default 64KiB)"),
    STRATA_SPEC_OPTION(arena_options, max_chunk_size, size, "size",
                       "chunks grow up to this size, at least initial_size (default 64MiB)"),
    option_def<arena_options>{{"growth_factor", "decimal", "each chunk this many times the last, at least 1 "
                                                           "(default 2)"},
                              value_kind::decimal, UINT64_MAX,
                              [](arena_options& o, std::uint64_t v) {
                                o.growth_factor = static_cast<double>(v) / static_cast<double>(decimal_scale);
                              }},
    STRATA_SPEC_OPTION(arena_options, max_bytes, size, "size",
                       "bytes held from upstream at most; 0: no cap (default 0)"),
    STRATA_SPEC_OPTION(arena_options, decommit, choice, "keep|purge|give_back",
                       "what rewinding and release do with the memory left behind (default keep)"),
    STRATA_SPEC_OPTION(arena_options, resident_watermark, size, "size",
                       "with purge and give_back: bytes past the position that stay resident (default 0)"),
    STRATA_SPEC_OPTION(arena_options, release, choice, "all|keep_first",
                       "what release() keeps (default all)"),
};

#undef STRATA_SPEC_OPTION

// ---- strategies ------------------------------------------------------------------------------------------------

enum class link_role {
  strategy,    // takes an upstream
  page,        // the last link only; without options the default page resource
  upstream_only  // the last link only, never the first
};

// One option as given in a spec, parsed.
struct given_option {
  std::size_t index;  // into the strategy's options
  std::uint64_t value;
  std::size_t position;
};

struct strategy {
  const char* name;
  const char* description;
  link_role role;
  virtual ~strategy() = default;
  strategy(const char* n, const char* d, link_role r) : name(n), description(d), role(r) {}
  [[nodiscard]] virtual std::size_t option_count() const = 0;
  [[nodiscard]] virtual const option_info& info(std::size_t i) const = 0;
  [[nodiscard]] virtual value_kind kind(std::size_t i) const = 0;
  [[nodiscard]] virtual std::uint64_t max(std::size_t i) const = 0;
  [[nodiscard]] virtual const char* excludes(std::size_t i) const = 0;
  [[nodiscard]] virtual std::unique_ptr<resource> build(const std::vector<given_option>& given,
                                                        std::pmr::memory_resource* upstream) const = 0;
};

template <class O, std::size_t N>
struct strategy_of final : strategy {
  using make_fn = std::unique_ptr<resource> (*)(const O&, std::pmr::memory_resource*);
  strategy_of(const char* n, const char* d, link_role r, const option_def<O> (&defs)[N], make_fn m)
      : strategy(n, d, r), defs_(defs), make_(m) {}
  [[nodiscard]] std::size_t option_count() const override { return N; }
  [[nodiscard]] const option_info& info(std::size_t i) const override { return defs_[i].info; }
  [[nodiscard]] value_kind kind(std::size_t i) const override { return defs_[i].kind; }
  [[nodiscard]] std::uint64_t max(std::size_t i) const override { return defs_[i].max; }
  [[nodiscard]] const char* excludes(std::size_t i) const override { return defs_[i].excludes; }
  [[nodiscard]] std::unique_ptr<resource> build(const std::vector<given_option>& given,
                                                std::pmr::memory_resource* upstream) const override {
    O o{};
    for (const given_option& g : given) defs_[g.index].set(o, g.value);
    return make_(o, upstream);
  }

 private:
  const option_def<O> (&defs_)[N];
  make_fn make_;
};

// A strategy without options: an adaptor over its upstream (tracking), or new_delete (no make function).
struct plain_strategy final : strategy {
  using make_fn = std::unique_ptr<resource> (*)(std::pmr::memory_resource*);
  plain_strategy(const char* n, const char* d, link_role r, make_fn m = nullptr) : strategy(n, d, r), make_(m) {}
  [[nodiscard]] std::size_t option_count() const override { return 0; }
  [[nodiscard]] const option_info& info(std::size_t) const override { throw std::out_of_range("no options"); }
  [[nodiscard]] value_kind kind(std::size_t) const override { return value_kind::count; }
  [[nodiscard]] std::uint64_t max(std::size_t) const override { return 0; }
  [[nodiscard]] const char* excludes(std::size_t) const override { return nullptr; }
  [[nodiscard]] std::unique_ptr<resource> build(const std::vector<given_option>&,
                                                std::pmr::memory_resource* upstream) const override {
    return make_ != nullptr ? make_(upstream) : nullptr;
  }

 private:
  make_fn make_;
};

template <class R, class O>
std::unique_ptr<resource> make_with_options(const O& o, std::pmr::memory_resource* upstream) {
  return std::make_unique<R>(o, upstream);
}
template <class R>
std::unique_ptr<resource> make_fixed_pool(const fixed_pool_spec& o, std::pmr::memory_resource* upstream) {
  if (o.block_size == 0) throw std::invalid_argument("block_size is required and must be at least 1");
  return std::make_unique<R>(o.block_size, static_cast<const fixed_pool_options&>(o), upstream);
}
std::unique_ptr<resource> make_page(const page_resource::options& o, std::pmr::memory_resource*) {
  if (o.max_cached_spans > page_resource::max_cache_slots)
    throw std::invalid_argument("page_resource: max_cached_spans must be at most 4096");
  return std::make_unique<page_resource>(o);
}

template <class O, std::size_t N>
std::unique_ptr<strategy> def(const char* name, const char* description, const option_def<O> (&defs)[N],
                              typename strategy_of<O, N>::make_fn make, link_role role = link_role::strategy) {
  return std::make_unique<strategy_of<O, N>>(name, description, role, defs, make);
}

const std::vector<std::unique_ptr<strategy>>& strategies() {
  static const auto* table = [] {
    auto* t = new std::vector<std::unique_ptr<strategy>>;  // never destroyed: usable from static destructors
    t->push_back(def("page", "whole pages from the OS (without options: the process's default page resource)",
                     page_defs, &make_page, link_role::page));
    t->push_back(def("bitmap", "small objects in size classes in bitmap blocks; one thread at a time", bitmap_defs,
                     &make_with_options<bitmap_resource, bitmap_options>));
    t->push_back(def("synchronized_bitmap", "bitmap, thread-safe", bitmap_defs,
                     &make_with_options<synchronized_bitmap_resource, bitmap_options>));
    t->push_back(def("free_list", "variable sizes carved from chunks, coalesced; one thread at a time",
                     free_list_defs, &make_with_options<free_list_resource, free_list_options>));
    t->push_back(def("synchronized_free_list", "free_list, thread-safe", free_list_defs,
                     &make_with_options<synchronized_free_list_resource, free_list_options>));
    t->push_back(def("fixed_pool", "blocks of one size, O(1), an optional hard cap; one thread at a time",
                     fixed_pool_defs, &make_fixed_pool<fixed_pool_resource>));
    t->push_back(def("synchronized_fixed_pool", "fixed_pool, thread-safe", fixed_pool_defs,
                     &make_fixed_pool<synchronized_fixed_pool_resource>));
    t->push_back(def("thread_cache", "general purpose, per-thread caches in front of a shared tier; thread-safe",
                     thread_cache_defs, &make_with_options<thread_cache_resource, thread_cache_options>));
    t->push_back(def("debug", "finds overflows, writes after free, bad frees and leaks; thread-safe", debug_defs,
                     &make_with_options<debug_resource, debug_options>));
    t->push_back(def("arena", "bump allocation, everything freed at once (release, markers); one thread at a time",
                     arena_defs, &make_with_options<arena_resource, arena_options>));
    t->push_back(def("synchronized_arena", "arena, thread-safe allocation", arena_defs,
                     &make_with_options<synchronized_arena_resource, arena_options>));
    t->push_back(std::make_unique<plain_strategy>(
        "tracking", "counts every call passed to its upstream (statistics for any resource)", link_role::strategy,
        [](std::pmr::memory_resource* upstream) -> std::unique_ptr<resource> {
          return std::make_unique<tracking_resource>(upstream);
        }));
    t->push_back(std::make_unique<plain_strategy>(
        "new_delete", "std::pmr::new_delete_resource() (operator new); only as the last link",
        link_role::upstream_only));
    return t;
  }();
  return *table;
}

// ---- parser ----------------------------------------------------------------------------------------------------

struct parsed_link {
  const strategy* s;
  std::size_t position;
  std::vector<given_option> options;
};

class parser {
 public:
  explicit parser(std::string_view spec) : s_(spec) {}

  [[noreturn]] void fail(std::size_t position, const std::string& what) const {
    throw spec_error("strata: resource spec \"" + std::string(s_) + "\", column " + std::to_string(position + 1) +
                         ": " + what,
                     position);
  }

  std::vector<parsed_link> parse() {
    std::vector<parsed_link> links;
    skip_space();
    if (at_end()) fail(0, "empty spec: expected a strategy name such as thread_cache");
    for (;;) {
      links.push_back(link(links.empty()));
      skip_space();
      if (at_end()) break;
      if (s_[i_] != '>') fail(i_, "unexpected \"" + std::string(s_.substr(i_)) + "\" (expected '>' or the end)");
      ++i_;
    }
    check_roles(links);
    return links;
  }

 private:
  [[nodiscard]] bool at_end() const noexcept { return i_ >= s_.size(); }
  void skip_space() noexcept {
    while (!at_end() && std::isspace(static_cast<unsigned char>(s_[i_])) != 0) ++i_;
  }
  std::string_view word() noexcept {
    const std::size_t b = i_;
    while (!at_end() && (std::isalnum(static_cast<unsigned char>(s_[i_])) != 0 || s_[i_] == '_')) ++i_;
    return s_.substr(b, i_ - b);
  }

  parsed_link link(bool first) {
    skip_space();
    const std::size_t at = i_;
    const std::string_view name = word();
    if (name.empty()) {
      if (at_end()) fail(at, first ? "expected a strategy name" : "expected a strategy name after '>'");
      fail(at, std::string("expected a strategy name, found '") + s_[at] + "'");
    }
    const strategy* found = nullptr;
    for (const auto& s : strategies())
      if (name == s->name) found = s.get();
    if (found == nullptr) {
      std::string known;
      for (const auto& s : strategies()) known += (known.empty() ? "" : ", ") + std::string(s->name);
      fail(at, "unknown strategy \"" + std::string(name) + "\" (known: " + known + ")");
    }
    parsed_link out{found, at, {}};
    skip_space();
    if (at_end() || s_[i_] != '(') return out;
    const std::size_t open = i_++;
    skip_space();
    if (!at_end() && s_[i_] == ')') {
      ++i_;
      return out;
    }
    for (;;) {
      option(out);
      if (at_end()) fail(i_, "missing ')' to close the options opened at column " + std::to_string(open + 1));
      if (s_[i_] != ',' && s_[i_] != ')')
        fail(i_, std::string("expected ',' or ')' after the value, found '") + s_[i_] + "'");
      if (s_[i_++] == ')') return out;
    }
  }

  // key = value, up to the ',' or ')' that follows (not consumed).
  void option(parsed_link& l) {
    skip_space();
    const std::size_t key_at = i_;
    const std::string_view key = word();
    if (key.empty()) {
      if (at_end()) fail(key_at, "missing ')' after '('");
      fail(key_at, std::string("expected an option name, found '") + s_[key_at] + "'");
    }
    const strategy& s = *l.s;
    std::size_t index = s.option_count();
    for (std::size_t k = 0; k < s.option_count(); ++k)
      if (key == s.info(k).name) index = k;
    if (index == s.option_count()) {
      std::string known;
      for (std::size_t k = 0; k < s.option_count(); ++k) known += (k == 0 ? "" : ", ") + std::string(s.info(k).name);
      fail(key_at, "unknown option \"" + std::string(key) + "\" for " + s.name +
                       (known.empty() ? std::string(" (it takes none)") : " (it takes: " + known + ")"));
    }
    for (const given_option& g : l.options) {
      if (g.index == index) fail(key_at, "option \"" + std::string(key) + "\" given twice");
      const char* x = s.excludes(index);
      if (x != nullptr && std::string_view(s.info(g.index).name) == x)
        fail(key_at, "give \"" + std::string(key) + "\" or \"" + x + "\", not both");
    }
    skip_space();
    if (at_end() || s_[i_] != '=') fail(i_, "expected '=' after option \"" + std::string(key) + "\"");
    ++i_;
    skip_space();
    const std::size_t value_at = i_;
    while (!at_end() && s_[i_] != ',' && s_[i_] != ')' && s_[i_] != '>' && s_[i_] != '(') ++i_;
    std::size_t end = i_;
    while (end > value_at && std::isspace(static_cast<unsigned char>(s_[end - 1])) != 0) --end;
    const std::string_view text = s_.substr(value_at, end - value_at);
    if (text.empty()) fail(value_at, "missing value for option \"" + std::string(key) + "\"");
    l.options.push_back({index, value(s, index, text, value_at), value_at});
  }

  std::uint64_t value(const strategy& s, std::size_t index, std::string_view text, std::size_t at) const {
    const option_info& o = s.info(index);
    const std::string name = std::string(s.name) + "." + o.name;
    std::string lower(text);
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    switch (s.kind(index)) {
      case value_kind::boolean:
        if (lower == "true" || lower == "1" || lower == "on" || lower == "yes") return 1;
        if (lower == "false" || lower == "0" || lower == "off" || lower == "no") return 0;
        fail(at, "bad value \"" + std::string(text) + "\" for " + name + ": expected true/false, on/off, yes/no or 1/0");
      case value_kind::choice: {
        std::string_view names = o.type;
        for (std::uint64_t k = 0;; ++k) {
          const std::size_t bar = names.find('|');
          if (names.substr(0, bar) == lower) return k;
          if (bar == std::string_view::npos) break;
          names.remove_prefix(bar + 1);
        }
        fail(at, "bad value \"" + std::string(text) + "\" for " + name + ": expected one of " + o.type);
      }
      default: break;
    }
    if (s.kind(index) == value_kind::decimal) return decimal(text, name, at);
    // A whole number, then a unit.
    std::size_t k = 0;
    std::uint64_t n = 0;
    while (k < text.size() && std::isdigit(static_cast<unsigned char>(text[k])) != 0) {
      const auto d = static_cast<std::uint64_t>(text[k] - '0');
      if (n > (UINT64_MAX - d) / 10) fail(at, "value \"" + std::string(text) + "\" for " + name + " overflows");
      n = n * 10 + d;
      ++k;
    }
    if (k == 0)
      fail(at, "bad value \"" + std::string(text) + "\" for " + name + ": expected a whole number" +
                   (s.kind(index) == value_kind::size ? " of bytes, with an optional unit (B, KiB, MiB, GiB, TiB)"
                                                      : ""));
    std::size_t u = k;
    while (u < text.size() && std::isspace(static_cast<unsigned char>(text[u])) != 0) ++u;
    const std::string unit(lower.substr(u));
    const std::size_t unit_at = at + u;
    std::uint64_t scale = 1;
    switch (s.kind(index)) {
      case value_kind::size:
        if (unit.empty() || unit == "b") scale = 1;
        else if (unit == "kib") scale = std::uint64_t{1} << 10;
        else if (unit == "mib") scale = std::uint64_t{1} << 20;
        else if (unit == "gib") scale = std::uint64_t{1} << 30;
        else if (unit == "tib") scale = std::uint64_t{1} << 40;
        else if (unit == "k" || unit == "kb" || unit == "m" || unit == "mb" || unit == "g" || unit == "gb" ||
                 unit == "t" || unit == "tb")
          fail(unit_at, "ambiguous unit \"" + std::string(text.substr(u)) + "\" for " + name +
                            ": write KiB, MiB, GiB or TiB (powers of 1024), or the number of bytes");
        else
          fail(unit_at, "bad unit \"" + std::string(text.substr(u)) + "\" for " + name +
                            ": expected B, KiB, MiB, GiB or TiB");
        break;
      case value_kind::ms:
        if (unit.empty() || unit == "ms") scale = 1;
        else if (unit == "s") scale = 1000;
        else
          fail(unit_at, "bad unit \"" + std::string(text.substr(u)) + "\" for " + name +
                            ": a duration in ms (or with ms or s)");
        break;
      default:
        if (!unit.empty())
          fail(unit_at, "bad value \"" + std::string(text) + "\" for " + name + ": a count takes no unit");
        break;
    }
    if (n > UINT64_MAX / scale) fail(at, "value \"" + std::string(text) + "\" for " + name + " overflows");
    n *= scale;
    if (n > s.max(index))
      fail(at, "value \"" + std::string(text) + "\" for " + name + " overflows (at most " +
                   std::to_string(s.max(index)) + ")");
    return n;
  }

  // A decimal number of at most six places after the point, in millionths.
  std::uint64_t decimal(std::string_view text, const std::string& name, std::size_t at) const {
    std::uint64_t whole = 0, fraction = 0, scale = decimal_scale;
    std::size_t k = 0;
    for (; k < text.size() && std::isdigit(static_cast<unsigned char>(text[k])) != 0; ++k) {
      whole = whole * 10 + static_cast<std::uint64_t>(text[k] - '0');
      if (whole > UINT64_MAX / decimal_scale) fail(at, "value \"" + std::string(text) + "\" for " + name + " overflows");
    }
    const std::size_t digits = k;
    if (k < text.size() && text[k] == '.') {
      for (++k; k < text.size() && std::isdigit(static_cast<unsigned char>(text[k])) != 0; ++k) {
        if (scale == 1) fail(at + k, "value \"" + std::string(text) + "\" for " + name + ": at most six decimals");
        scale /= 10;
        fraction += static_cast<std::uint64_t>(text[k] - '0') * scale;
      }
    }
    if (digits == 0 || k < text.size())
      fail(at, "bad value \"" + std::string(text) + "\" for " + name + ": expected a number such as 1.5");
    return whole * decimal_scale + fraction;
  }

  void check_roles(const std::vector<parsed_link>& links) const {
    for (std::size_t k = 0; k < links.size(); ++k) {
      const parsed_link& l = links[k];
      const bool last = k + 1 == links.size();
      if (l.s->role == link_role::upstream_only && k == 0)
        fail(l.position, std::string(l.s->name) + " is no strata resource: it can only be the last link, an "
                                                  "upstream (e.g. \"bitmap > " + l.s->name + "\")");
      if (l.s->role != link_role::strategy && !last)
        fail(links[k + 1].position, std::string(l.s->name) + " takes no upstream: it must be the last link");
    }
  }

  std::string_view s_;
  std::size_t i_ = 0;
};

// ---- canonical form --------------------------------------------------------------------------------------------

std::string format_size(std::uint64_t n) {
  static const char* const units[] = {"KiB", "MiB", "GiB", "TiB"};
  if (n == 0) return "0";
  int u = -1;
  while (u < 3 && n % 1024 == 0) {
    n /= 1024;
    ++u;
  }
  return std::to_string(n) + (u < 0 ? "" : units[u]);
}

std::string format_value(const strategy& s, std::size_t index, std::uint64_t v) {
  switch (s.kind(index)) {
    case value_kind::size: return format_size(v);
    case value_kind::boolean: return v != 0 ? "true" : "false";
    case value_kind::ms: return std::to_string(v) + "ms";
    case value_kind::choice: {
      std::string_view names = s.info(index).type;
      for (std::uint64_t k = 0; k < v; ++k) names.remove_prefix(names.find('|') + 1);
      return std::string(names.substr(0, names.find('|')));
    }
    case value_kind::decimal: {
      std::string out = std::to_string(v / decimal_scale);
      std::string fraction = std::to_string(v % decimal_scale + decimal_scale).substr(1);  // six digits
      while (!fraction.empty() && fraction.back() == '0') fraction.pop_back();
      return fraction.empty() ? out : out + "." + fraction;
    }
    case value_kind::count: break;
  }
  return std::to_string(v);
}

bool is_default_page(const parsed_link& l) noexcept { return l.s->role == link_role::page && l.options.empty(); }

std::string canonical(const std::vector<parsed_link>& links) {
  std::string out;
  for (std::size_t k = 0; k < links.size(); ++k) {
    const parsed_link& l = links[k];
    if (k > 0 && k + 1 == links.size() && is_default_page(l)) break;  // the upstream it has anyway
    if (k > 0) out += " > ";
    out += l.s->name;
    if (l.options.empty()) continue;
    out += '(';
    bool first = true;
    for (std::size_t o = 0; o < l.s->option_count(); ++o)
      for (const given_option& g : l.options)
        if (g.index == o) {
          out += (first ? "" : ",") + std::string(l.s->info(o).name) + "=" + format_value(*l.s, o, g.value);
          first = false;
        }
    out += ')';
  }
  return out;
}

}  // namespace

// ---- resource_handle ---------------------------------------------------------------------------------------------

resource_handle::resource_handle(resource_handle&& other) noexcept { swap(other); }

resource_handle& resource_handle::operator=(resource_handle&& other) noexcept {
  if (this != &other) {
    reset();
    swap(other);
  }
  return *this;
}

resource_handle::~resource_handle() { reset(); }

void resource_handle::reset() noexcept {
  top_ = nullptr;
  while (!owned_.empty()) owned_.pop_back();  // the top first: each resource before its upstream
  spec_.clear();
}

void resource_handle::swap(resource_handle& other) noexcept {
  std::swap(top_, other.top_);
  owned_.swap(other.owned_);
  spec_.swap(other.spec_);
}

// ---- make_resource ---------------------------------------------------------------------------------------------

resource_handle make_resource(std::string_view spec) {
  parser p(spec);
  const std::vector<parsed_link> links = p.parse();
  resource_handle h;
  h.spec_ = canonical(links);
  std::pmr::memory_resource* upstream = default_page_resource();
  std::size_t k = links.size();
  if (links.back().s->role == link_role::upstream_only) {
    upstream = std::pmr::new_delete_resource();
    --k;
  } else if (is_default_page(links.back())) {
    h.top_ = default_page_resource();
    --k;
  }
  while (k-- > 0) {
    const parsed_link& l = links[k];
    std::unique_ptr<resource> r;
    try {
      r = l.s->build(l.options, upstream);
    } catch (const std::invalid_argument& e) {
      p.fail(l.position, std::string(l.s->name) + " refused its options: " + e.what());
    }
    upstream = h.top_ = r.get();
    h.owned_.push_back(std::move(r));
  }
  return h;
}

std::string describe(std::string_view spec) { return canonical(parser(spec).parse()); }

const std::vector<strategy_info>& resource_names() {
  static const auto* names = [] {
    auto* v = new std::vector<strategy_info>;  // never destroyed, as the table
    for (const auto& s : strategies()) {
      strategy_info i{s->name, s->description, s->role == link_role::upstream_only, {}};
      for (std::size_t k = 0; k < s->option_count(); ++k) i.options.push_back(s->info(k));
      v->push_back(std::move(i));
    }
    return v;
  }();
  return *names;
}

}  // namespace strata
