// SPDX-License-Identifier: MIT
// lib/fixed_pool_resource.cpp: the pmr face of the fixed pool engine: the one-block fast path, then the general one.
#include <strata/fixed_pool_resource.hpp>

#include <cstring>
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
      engine_(block_size, validated<Sync>(block_size, opts, upstream, name_of(Sync)), upstream, this, name_of(Sync)) {
  if constexpr (Sync)
    if (engine_.batched()) front_.emplace(engine_, upstream, name_of(Sync), engine_.front_heap_limit());
}

// (Built for Valgrind: `call` describes each block to memcheck, those sent upstream included; nothing otherwise.)
template <bool Sync>
void* basic_fixed_pool_resource<Sync>::do_allocate(std::size_t bytes, std::size_t alignment) {
  const san::tracked_call call(this);
  if constexpr (Sync)  // (front_block(): the front exists)
    if (STRATA_LIKELY(engine_.front_block(bytes, alignment)))
      return call.allocated(san::handed_out(front_->allocate(0), bytes), bytes);
  if (STRATA_LIKELY(engine_.one_block(bytes, alignment)))
    return call.allocated(san::handed_out(engine_.allocate_one(bytes, alignment), bytes), bytes);
  return call.allocated(san::handed_out(engine_.allocate(bytes, alignment, false), bytes), bytes);
}

template <bool Sync>
void basic_fixed_pool_resource<Sync>::do_deallocate(void* p, std::size_t bytes, std::size_t alignment) {
  san::tracked_call(this).freeing(p);
  if constexpr (Sync)
    if (STRATA_LIKELY(engine_.front_block(bytes, alignment))) return front_->deallocate(p, bytes, alignment, 0);
  if (STRATA_LIKELY(engine_.one_block(bytes, alignment))) return engine_.deallocate_one(p, bytes, alignment);
  engine_.deallocate(p, bytes, alignment);  // runs, upstream requests, and every kind of misuse
}

template <bool Sync>
void* basic_fixed_pool_resource<Sync>::do_allocate_zeroed(std::size_t bytes, std::size_t alignment) {
  const san::tracked_call call(this);
  if constexpr (Sync) {
    if (front_.has_value() && engine_.one_block(bytes, alignment)) {
      void* p = san::handed_out(front_->allocate(0), bytes);
      std::memset(p, 0, bytes);
      return call.allocated(p, bytes, true);
    }
  }
  return call.allocated(san::handed_out(engine_.allocate(bytes, alignment, true), bytes), bytes, true);
}

template <bool Sync>
bool basic_fixed_pool_resource<Sync>::do_resize(void* p, std::size_t old_size, std::size_t new_size,
                                                std::size_t alignment) {
  // A block in a thread's cache reads as live in its bitmap: the front tells it from a live one.
  if constexpr (Sync)
    if (front_.has_value() && engine_.one_block(old_size, alignment) &&
        !front_->check_live(p, old_size, alignment, 0))
      return false;
  if (!engine_.resize(p, old_size, new_size, alignment)) return false;
  san::tracked_call(this).resized(p, old_size, new_size);  // Valgrind builds
  return true;
}

template <bool Sync>
void basic_fixed_pool_resource<Sync>::release() noexcept {
  if constexpr (Sync)
    if (front_.has_value()) front_->forget_all();
  engine_.release();
  san::pool_emptied(this);  // Valgrind builds: every block gone
}

template <bool Sync>
void basic_fixed_pool_resource<Sync>::trim() noexcept {
  if constexpr (Sync)
    if (front_.has_value()) front_->flush_calling_thread();
  engine_.trim();
}

template <bool Sync>
std::size_t basic_fixed_pool_resource<Sync>::blocks_in_use() const noexcept {
  std::int64_t n = static_cast<std::int64_t>(engine_.signed_blocks_in_use());
  if constexpr (Sync)
    if (front_.has_value()) n += front_->collect_totals().bytes / static_cast<std::int64_t>(engine_.stride());
  return n > 0 ? static_cast<std::size_t>(n) : 0;
}

template <bool Sync>
std::size_t basic_fixed_pool_resource<Sync>::peak_blocks_in_use() const noexcept {
  std::size_t n = engine_.peak_blocks_in_use();
  if constexpr (Sync)  // the sum of the threads' peaks: an upper bound, as the stripes' are
    if (front_.has_value()) {
      const auto f = front_->collect_totals();
      if (f.peak > 0) n += static_cast<std::size_t>(f.peak) / engine_.stride();
    }
  const std::size_t now = blocks_in_use();
  return n > now ? n : now;
}

template <bool Sync>
std::size_t basic_fixed_pool_resource<Sync>::cached_blocks() const noexcept {
  if constexpr (Sync)
    if (front_.has_value()) return front_->cached_by_calling_thread(0);
  return engine_.cached_blocks();
}

template <bool Sync>
bool basic_fixed_pool_resource<Sync>::check_invariants() const noexcept {
  if (!engine_.check_invariants()) return false;
  if constexpr (Sync)
    if (front_.has_value()) return front_->check_invariants();
  return true;
}

template <bool Sync>
resource_stats basic_fixed_pool_resource<Sync>::do_stats() const noexcept {
  resource_stats s = engine_.stats();
  if constexpr (Sync) {
    if (front_.has_value()) {
      // A block may go the engine's way and come back through a cache (a run shrunk to one block), or the other
      // way round (one block grown into a run): each part may be below zero, the sum is exact.
      s.bytes_in_use = static_cast<std::size_t>(engine_.signed_bytes_in_use());
      const std::size_t heaps = front_->add_totals_to(s);
      s.bytes_held += heaps;
      s.bytes_resident += heaps;
    }
  }
  return s;
}

template <bool Sync>
basic_fixed_pool_resource<Sync>::~basic_fixed_pool_resource() {
  if constexpr (Sync) front_.reset();  // first: from here on no exiting thread hands its cache back
}

template <bool Sync>
void basic_fixed_pool_resource<Sync>::do_inspect(inspector& v, unsigned what) const {
  engine_.inspect(v, what);
  if constexpr (Sync)
    if ((what & inspect_tiers) != 0 && front_.has_value()) v.on_tier(front_->tier());
}

template class basic_fixed_pool_resource<false>;
template class basic_fixed_pool_resource<true>;

}  // namespace strata::detail
