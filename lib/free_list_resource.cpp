// SPDX-License-Identifier: MIT
// lib/free_list_resource.cpp: the pmr face of the free list engine (the synchronized one holds a mutex around it).
#include <strata/free_list_resource.hpp>

#include <stdexcept>
#include <string>

namespace strata::detail {
namespace {

// The options the engine takes: checked, the chunk size chosen for this upstream.
free_list_options validated(free_list_options o, std::pmr::memory_resource* upstream, const char* name, bool sync) {
  if (o.policy != fit_policy::first_fit && o.policy != fit_policy::next_fit && o.policy != fit_policy::best_fit &&
      o.policy != fit_policy::segregated)
    throw std::invalid_argument(std::string(name) + ": unknown fit policy");
  o.chunk_size = free_list_engine::chunk_size_for(o, capabilities_of(upstream));
  if (!is_power_of_two(o.chunk_size) || o.chunk_size < free_list_engine::min_chunk ||
      o.chunk_size > free_list_engine::max_chunk)
    throw std::invalid_argument(std::string(name) + ": chunk_size must be a power of two from 64 KiB to 1 GiB");
  if (o.checks != check_mode::standard && o.checks != check_mode::strict)
    throw std::invalid_argument(std::string(name) + ": unknown check mode");
  if (sync) o.checks = check_mode::strict;  // synchronized: no quick lists, every free coalesces at once under the lock
  return o;
}

constexpr const char* name_of(bool sync) { return sync ? "synchronized_free_list_resource" : "free_list_resource"; }

}  // namespace

template <bool Sync>
basic_free_list_resource<Sync>::basic_free_list_resource(const options& opts, std::pmr::memory_resource* upstream)
    : upstream_(upstream),
      opts_(opts),
      engine_(validated(opts, upstream, name_of(Sync), Sync), upstream, this, name_of(Sync)) {}

template <bool Sync>
basic_free_list_resource<Sync>::~basic_free_list_resource() = default;

template class basic_free_list_resource<false>;
template class basic_free_list_resource<true>;

}  // namespace strata::detail
