// SPDX-License-Identifier: MIT
// lib/free_list_resource.cpp: the pmr face of the free list engine (the synchronized one holds a mutex around it).
#include <strata/free_list_resource.hpp>

namespace strata::detail {

template <bool Sync>
basic_free_list_resource<Sync>::basic_free_list_resource(const options& opts, std::pmr::memory_resource* upstream)
    : upstream_(upstream),
      opts_(opts),
      engine_(free_list_params{static_cast<unsigned>(opts.policy), opts.chunk_size, opts.large_threshold,
                               opts.max_empty_chunks, opts.purge_threshold, opts.purge_delay,
                               opts.huge_pages},
              upstream, this, Sync ? "synchronized_free_list_resource" : "free_list_resource") {}

template <bool Sync>
basic_free_list_resource<Sync>::~basic_free_list_resource() = default;

template class basic_free_list_resource<false>;
template class basic_free_list_resource<true>;

}  // namespace strata::detail
