// SPDX-License-Identifier: MIT
// lib/fixed_pool_resource.cpp: the pmr face of the fixed pool engine: the one-block fast path, then the general one.
#include <strata/fixed_pool_resource.hpp>

namespace strata::detail {

template <bool Sync>
basic_fixed_pool_resource<Sync>::basic_fixed_pool_resource(std::size_t block_size, const options& opts,
                                                           std::pmr::memory_resource* upstream)
    : upstream_(upstream),
      opts_(opts),
      engine_(fixed_pool_params{block_size, opts.max_bytes, opts.chunk_size, opts.forward_large, opts.max_empty_chunks,
                                opts.huge_pages},
              upstream, this, Sync ? "synchronized_fixed_pool_resource" : "fixed_pool_resource") {}

template <bool Sync>
void* basic_fixed_pool_resource<Sync>::do_allocate(std::size_t bytes, std::size_t alignment) {
  if (STRATA_LIKELY(engine_.one_block(bytes, alignment)))
    if (void* p = engine_.try_allocate_one(); STRATA_LIKELY(p != nullptr)) return p;
  return engine_.allocate(bytes, alignment, false);
}

template <bool Sync>
void basic_fixed_pool_resource<Sync>::do_deallocate(void* p, std::size_t bytes, std::size_t alignment) {
  if (STRATA_LIKELY(engine_.one_block(bytes, alignment) && engine_.try_deallocate_one(p))) return;
  engine_.deallocate(p, bytes, alignment);  // runs, upstream requests, and every kind of misuse
}

template <bool Sync>
basic_fixed_pool_resource<Sync>::~basic_fixed_pool_resource() = default;

template class basic_fixed_pool_resource<false>;
template class basic_fixed_pool_resource<true>;

}  // namespace strata::detail
