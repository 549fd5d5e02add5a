// SPDX-License-Identifier: MIT
// lib/fixed_pool_resource.cpp: the pmr face of the fixed pool engine: the one-block fast path, then the general one.
#include <strata/fixed_pool_resource.hpp>

#include <stdexcept>
#include <string>

namespace strata::detail {
namespace {

// The options the engine takes: checked, the chunk size chosen for this block size and upstream.
template <bool Sync>
fixed_pool_options validated(std::size_t block_size, fixed_pool_options o, std::pmr::memory_resource* upstream,
                             const char* name) {
  using engine = fixed_pool_engine<Sync>;
  if (block_size == 0 || block_size > pool_max_block_size)
    throw std::invalid_argument(std::string(name) + ": block_size must be 1 B .. 1 GiB");
  o.chunk_size = engine::chunk_size_for(block_size, o, capabilities_of(upstream));
  const std::size_t c = o.chunk_size;
  if (!is_power_of_two(c) || c < block_map_granule || c > pool_max_chunk_size || !engine::holds_a_block(c, block_size))
    throw std::invalid_argument(std::string(name) +
                                ": chunk_size must be a power of two from 64 KiB to 16 GiB that holds a block");
  if (o.max_bytes != 0 && o.max_bytes < c)
    throw std::invalid_argument(std::string(name) + ": max_bytes must hold at least one chunk (64 KiB or more)");
  return o;
}

constexpr const char* name_of(bool sync) { return sync ? "synchronized_fixed_pool_resource" : "fixed_pool_resource"; }

}  // namespace

template <bool Sync>
basic_fixed_pool_resource<Sync>::basic_fixed_pool_resource(std::size_t block_size, const options& opts,
                                                           std::pmr::memory_resource* upstream)
    : upstream_(upstream),
      opts_(opts),
      engine_(block_size, validated<Sync>(block_size, opts, upstream, name_of(Sync)), upstream, this, name_of(Sync)) {}

template <bool Sync>
void* basic_fixed_pool_resource<Sync>::do_allocate(std::size_t bytes, std::size_t alignment) {
  if (STRATA_LIKELY(engine_.one_block(bytes, alignment))) return engine_.allocate_one(bytes, alignment);
  return engine_.allocate(bytes, alignment, false);
}

template <bool Sync>
void basic_fixed_pool_resource<Sync>::do_deallocate(void* p, std::size_t bytes, std::size_t alignment) {
  if (STRATA_LIKELY(engine_.one_block(bytes, alignment))) return engine_.deallocate_one(p, bytes, alignment);
  engine_.deallocate(p, bytes, alignment);  // runs, upstream requests, and every kind of misuse
}

template <bool Sync>
basic_fixed_pool_resource<Sync>::~basic_fixed_pool_resource() = default;

template class basic_fixed_pool_resource<false>;
template class basic_fixed_pool_resource<true>;

}  // namespace strata::detail
