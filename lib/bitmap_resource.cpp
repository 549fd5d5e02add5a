// SPDX-License-Identifier: MIT
// lib/bitmap_resource.cpp: the pmr face of detail::bitmap_engine: routing, large requests, stats.
#include <strata/bitmap_resource.hpp>

#include <cstring>
#include <new>
#include <stdexcept>

#include <strata/detail/core/checks.hpp>

namespace strata::detail {
namespace {

const bitmap_options& validated(const bitmap_options& o) {
  if (!is_power_of_two(o.block_size) || o.block_size < block_map_granule || o.block_size > (std::size_t{16} << 20))
    throw std::invalid_argument("bitmap_resource: block_size must be a power of two from 64 KiB to 16 MiB");
  if (o.max_small_size < 8 || o.max_small_size > o.block_size / 8 || o.max_small_size > (std::size_t{64} << 10))
    throw std::invalid_argument("bitmap_resource: max_small_size must be 8 .. min(block_size / 8, 64 KiB)");
  return o;
}


}  // namespace

template <bool Sync>
basic_bitmap_resource<Sync>::basic_bitmap_resource(const options& opts, std::pmr::memory_resource* upstream)
    : upstream_(upstream),
      opts_(validated(opts)),
      engine_(opts_, upstream, this, Sync ? "synchronized_bitmap_resource" : "bitmap_resource") {
  if constexpr (Sync)
    if (opts.checks == check_mode::standard) front_.emplace(engine_, upstream, "synchronized_bitmap_resource");
}

template <bool Sync>
basic_bitmap_resource<Sync>::~basic_bitmap_resource() {
  if constexpr (Sync) front_.reset();  // first: from here on no exiting thread hands its cache back
  engine_.release_all();
}

template <bool Sync>
void basic_bitmap_resource<Sync>::release() noexcept {
  if constexpr (Sync)
    if (front_.has_value()) front_->forget_all();
  engine_.release_all();
  san::pool_emptied(this);  // Valgrind builds: every block gone
}

template <bool Sync>
void basic_bitmap_resource<Sync>::trim() noexcept {
  if constexpr (Sync)
    if (front_.has_value()) front_->flush_calling_thread();
  engine_.trim();
}

template <bool Sync>
bitmap_class_stats basic_bitmap_resource<Sync>::class_stats(unsigned c) const noexcept {
  bitmap_class_stats info = engine_.class_info(c);
  if constexpr (Sync)  // objects in other threads' caches count as live until those threads trim or exit
    if (front_.has_value()) info.live_objects -= front_->cached_by_calling_thread(c);
  return info;
}

template <bool Sync>
bool basic_bitmap_resource<Sync>::check_invariants() const noexcept {
  if (!engine_.check_invariants()) return false;
  if constexpr (Sync)
    if (front_.has_value()) return front_->check_invariants();
  return true;
}

template <bool Sync>
std::size_t basic_bitmap_resource<Sync>::round_size(std::size_t bytes, std::size_t alignment) const noexcept {
  if (!is_power_of_two(alignment)) return bytes;
  const unsigned c = engine_.class_for(bytes, alignment);
  return c == engine_.no_class ? bytes : engine_.class_size(c);
}

// ---- allocate / deallocate -----------------------------------------------------------------------------------------

// The fast paths: alignment 1, 2, 4, 8 or 16 (one bit test) and a size a class serves. Everything else leaves at
// once, through a tail call, so that these functions save no registers. (Built for Valgrind: `call` describes each
// block to memcheck, large ones included; nothing otherwise.)
template <bool Sync>
void* basic_bitmap_resource<Sync>::do_allocate(std::size_t bytes, std::size_t alignment) {
  const san::tracked_call call(this);
  const std::size_t x = (bytes - 1) | (alignment - 1);
  if (STRATA_LIKELY(is_plain_alignment(alignment) && x < engine_.plain_limit()))
    return call.allocated(san::handed_out(allocate_class(engine_.plain_class(x)), bytes), bytes);  // counts failures
  return call.allocated(allocate_other(bytes, alignment), bytes);
}

template <bool Sync>
void basic_bitmap_resource<Sync>::do_deallocate(void* p, std::size_t bytes, std::size_t alignment) {
  san::tracked_call(this).freeing(p);
  const std::size_t x = (bytes - 1) | (alignment - 1);
  if (STRATA_LIKELY(is_plain_alignment(alignment) && x < engine_.plain_limit()))
    return deallocate_class(p, bytes, alignment, engine_.plain_class(x));
  deallocate_other(p, bytes, alignment);
}

template <bool Sync>
void* basic_bitmap_resource<Sync>::allocate_other(std::size_t bytes, std::size_t alignment) {
  if (alignment <= 16) {
    if (!is_plain_alignment(alignment)) throw_bad_alignment("bitmap_resource::allocate", alignment);
  } else {
    check_alignment("bitmap_resource::allocate", alignment);
  }
  const unsigned c = engine_.class_for(bytes, alignment);
  if (c != engine_.no_class) return san::handed_out(allocate_class(c), bytes);
  return engine_.allocate_large(bytes, alignment);
}

// An alignment that is not a power of two may still give the block's class: it is checked first, and reported by
// deallocate_large.
template <bool Sync>
void basic_bitmap_resource<Sync>::deallocate_other(void* p, std::size_t bytes, std::size_t alignment) noexcept {
  if (alignment > 16 ? !is_power_of_two(alignment) : !is_plain_alignment(alignment))
    return engine_.deallocate_large(p, bytes, alignment);
  const unsigned c = engine_.class_for(bytes, alignment);
  if (c != engine_.no_class) return deallocate_class(p, bytes, alignment, c);
  engine_.deallocate_large(p, bytes, alignment);
}

// ---- resize --------------------------------------------------------------------------------------------------------

template <bool Sync>
bool basic_bitmap_resource<Sync>::do_resize(void* p, std::size_t old_size, std::size_t new_size,
                                            std::size_t alignment) {
  const bool done = resize_block(p, old_size, new_size, alignment);
  if (done) san::tracked_call(this).resized(p, old_size, new_size);  // Valgrind builds
  return done;
}

template <bool Sync>
bool basic_bitmap_resource<Sync>::resize_block(void* p, std::size_t old_size, std::size_t new_size,
                                               std::size_t alignment) {
  const unsigned old_class = engine_.class_for(old_size, alignment);
  const unsigned new_class = engine_.class_for(new_size, alignment);
  // The block must be live with old_size first, even when the answer is "not in place" anyway (another class):
  // a freed, foreign or interior pointer, or a wrong size, is misuse to report.
  if (old_class != engine_.no_class) {
    // Within its class a block keeps its size: the statistics count class sizes, so nothing changes but the
    // caller's size.
    bool live;
    if constexpr (Sync) live = front_.has_value() ? front_->check_live(p, old_size, alignment, old_class)
                                                  : engine_.check_live(p, old_size, alignment, old_class);
    else live = engine_.check_live(p, old_size, alignment, old_class);
    if constexpr (san::address_sanitizer)  // new_size bytes addressable
      if (live && old_class == new_class) san::resized(p, engine_.class_size(old_class), new_size);
    return live && old_class == new_class;
  }
  // Large: only upstream can grow or shrink it in place, and it must stay large.
  return engine_.resize_large(p, old_size, new_size, alignment, new_class == engine_.no_class);
}

// ---- stats ---------------------------------------------------------------------------------------------------------

template <bool Sync>
resource_stats basic_bitmap_resource<Sync>::do_stats() const noexcept {
  auto t = engine_.collect_totals();
  if constexpr (Sync) {
    if (front_.has_value()) t.table_bytes += front_->add_totals_to(t);
  }
  const auto large = engine_.large_totals();
  resource_stats s{};
  s.allocations = t.allocations + large.allocations;
  s.deallocations = t.deallocations + large.deallocations;
  s.bytes_in_use = t.bytes_in_use + large.bytes;
  s.peak_bytes_in_use = t.peak_bytes_in_use + large.peak;
  s.bytes_held = t.blocks * engine_.block_size() + t.table_bytes + large.bytes;
  s.bytes_resident = s.bytes_held;
  s.failed_allocations = engine_.failed() + large.failed;
  s.upstream_allocations = engine_.upstream_allocations() + large.allocations;
  s.upstream_deallocations = engine_.upstream_deallocations() + large.deallocations;
  return s;
}

template <bool Sync>
void basic_bitmap_resource<Sync>::do_inspect(inspector& v, unsigned what) const {
  engine_.inspect(v, what);
  if ((what & inspect_tiers) == 0) return;
  tier_detail meta;
  meta.name = "metadata";
  meta.stats.bytes_held = meta.stats.bytes_resident = engine_.collect_totals().table_bytes;
  v.on_tier(meta);
  if constexpr (Sync) {
    if (front_.has_value()) v.on_tier(front_->tier());
  }
}

template class basic_bitmap_resource<false>;
template class basic_bitmap_resource<true>;

}  // namespace strata::detail
