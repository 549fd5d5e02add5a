// SPDX-License-Identifier: MIT
// strata/bitmap_resource.hpp: small objects in size classes, packed in bitmap blocks with no per-object metadata.
#pragma once

#include <strata/config.hpp>

#include <cstddef>
#include <memory_resource>
#include <optional>

#include <strata/detail/engines/bitmap_engine.hpp>
#include <strata/detail/engines/sync_front.hpp>
#include <strata/options.hpp>
#include <strata/page_resource.hpp>
#include <strata/resource.hpp>

STRATA_PUBLIC_BEGIN
namespace strata {

namespace detail {
template <bool Sync>
class basic_bitmap_resource;
}  // namespace detail


/// Per-class figures: object size, alignment, objects per block, blocks and live objects now.
using bitmap_class_stats = detail::bitmap_class_info;

namespace detail {

/// What bitmap_resource and synchronized_bitmap_resource share; see them for the contract.
template <bool Sync>
class basic_bitmap_resource : public resource {
 public:
  using options = bitmap_options;

  basic_bitmap_resource() : basic_bitmap_resource(options{}, default_page_resource()) {}
  explicit basic_bitmap_resource(std::pmr::memory_resource* upstream) : basic_bitmap_resource(options{}, upstream) {}
  /// Throws std::invalid_argument when the options are out of range.
  explicit basic_bitmap_resource(const options& opts,
                                 std::pmr::memory_resource* upstream = default_page_resource());
  /// Returns every block and large allocation upstream.
  ~basic_bitmap_resource() override;

  /// Frees every object at once and returns all memory upstream. The resource stays usable.
  void release() noexcept;
  /// Returns every empty block upstream: the cached ones and each class's current block if it holds no object (the
  /// synchronized variant first collects pending remote frees).
  void trim() noexcept;

  /// Largest request served from blocks; anything larger goes upstream.
  [[nodiscard]] std::size_t max_small_size() const noexcept { return engine_.max_small(); }
  /// Bytes a request of `bytes` really occupies (its class size), or `bytes` for upstream requests.
  [[nodiscard]] std::size_t round_size(std::size_t bytes,
                                       std::size_t alignment = alignof(std::max_align_t)) const noexcept;
  [[nodiscard]] unsigned class_count() const noexcept { return engine_.class_count(); }
  [[nodiscard]] bitmap_class_stats class_stats(unsigned c) const noexcept;
  [[nodiscard]] const options& get_options() const noexcept { return opts_; }
  /// Walks every block and list; reports a broken invariant through the error handler and returns false.
  [[nodiscard]] bool check_invariants() const noexcept;

 protected:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override;
  bool do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) override;
  resource_stats do_stats() const noexcept override;
  /// "bitmap" or "synchronized_bitmap".
  const char* do_name() const noexcept override { return Sync ? "synchronized_bitmap" : "bitmap"; }
  /// The resource blocks and large requests come from.
  std::pmr::memory_resource* do_upstream_resource() const noexcept override { return upstream_; }
  /// Classes: every size class (its slabs, live and free slots). Tiers: "metadata" (the class map's tables, as
  /// bytes_held) and, synchronized with standard checks, "thread_caches" (what threads allocated and freed through
  /// their caches; the caches' own memory as bytes_held). Regions: every slab (kind slab, its class), cached empty
  /// block (cached) and large block. Objects waiting in a thread's cache are live in their slab's bitmap and count
  /// as live there.
  void do_inspect(inspector& v, unsigned what) const override;

 private:
  /// Requests the fast paths leave: alignments above 16 (or not powers of two), sizes past the classes.
  STRATA_NOINLINE void* allocate_other(std::size_t bytes, std::size_t alignment);
  bool resize_block(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment);
  STRATA_NOINLINE void deallocate_other(void* p, std::size_t bytes, std::size_t alignment) noexcept;

  /// Class c's allocations and frees: through the threads' caches when there are (Sync, standard checks).
  STRATA_ALWAYS_INLINE void* allocate_class(unsigned c) {
    if constexpr (Sync) {
      if (STRATA_LIKELY(front_.has_value())) return front_->allocate(c);
      return allocate_locked(c);  // out of line: the cached path saves no registers for it
    }
    return engine_.allocate(c);
  }
  STRATA_ALWAYS_INLINE void deallocate_class(void* p, std::size_t bytes, std::size_t alignment, unsigned c) noexcept {
    if constexpr (Sync) {
      if (STRATA_LIKELY(front_.has_value())) return front_->deallocate(p, bytes, alignment, c);
      return deallocate_locked(p, bytes, alignment, c);
    }
    engine_.deallocate(p, bytes, alignment, c);
  }
  /// Sync with strict checks: the engine's locked way.
  STRATA_NOINLINE void* allocate_locked(unsigned c) { return engine_.allocate(c); }
  STRATA_NOINLINE void deallocate_locked(void* p, std::size_t bytes, std::size_t alignment, unsigned c) noexcept {
    engine_.deallocate(p, bytes, alignment, c);
  }

  struct no_front {};

  std::pmr::memory_resource* upstream_;
  options opts_;
  bitmap_engine<Sync> engine_;
  std::conditional_t<Sync, std::optional<sync_front<bitmap_engine<true>>>, no_front> front_;  // Sync with standard checks
};

}  // namespace detail

/// Small objects in size classes, packed back to back in bitmap blocks (block header + bitmap, nothing per object),
/// so resident bytes per requested byte approach 1.0.
///
/// - Classes: every multiple of 8 up to 128 B, then four per power of two, up to `max_small_size` (default 4 KiB);
///   larger requests go straight to upstream. docs/bitmap_resource.md has the table with waste per class.
/// - Alignment: every object is aligned to the lowest set bit of its class size (at most 4 KiB): 8-byte classes are
///   8-aligned, multiples of 16 are 16-aligned, ...; a stricter alignment picks a larger class; above 4 KiB it goes
///   upstream. Any power of two is honoured.
/// - allocate: class lookup (one table load), then the first set bit of the current block's bitmap. deallocate: the
///   block by masking, the slot by a multiply, one bit set. Both O(1) (the slot search resumes at a hint).
/// - Misuse detected always: a double free (bit already set), a pointer in no block of this resource (checked in a
///   process-wide block map before the block header is read), a pointer inside an object, and a size whose class is
///   not the block's. Reported through the error handler with pointer and sizes; nothing changes.
/// - Requests above `max_small_size` (or aligned above 4 KiB) go straight upstream and are registered (outside the
///   blocks, in upstream memory), so their frees are checked too and the destructor returns them.
/// - Memory goes back: a block that becomes empty returns upstream at once, beyond `max_empty_blocks` cached.
/// - Not thread-safe; see synchronized_bitmap_resource.
class bitmap_resource final : public detail::basic_bitmap_resource<false> {
 public:
  using basic_bitmap_resource::basic_bitmap_resource;
};

/// bitmap_resource for many threads.
///
/// Standard checks (the default): each thread keeps a free cache per class, as bitmap_resource does, and takes
/// its class's lock once per batch of objects (filling the cache, or giving its older half back to the blocks). Any
/// thread frees any object into its own cache; a full cache's older half is parked whole for another thread to take
/// (a producer's objects reach its consumer's cache without a bitmap write). A thread's cache goes back to the blocks at trim() by that thread and
/// when the thread exits. A double free is found from the object's first two words and confirmed on a slow path;
/// one of an object in another thread's cache is recognised by its words alone (see docs/bitmap_resource.md).
///
/// Strict checks: allocation takes its size class's lock (a thread allocating 32-byte objects never waits for one
/// allocating 256-byte objects). A free takes its class's lock only if it is free at once; otherwise, for instance
/// while another thread allocates from that class, it sets the slot's bit in the block's remote bitmap with one
/// atomic OR and returns: frees never wait. Remote frees are collected when their class needs slots, and by trim();
/// a block emptied by remote frees goes back upstream when collected.
///
/// stats() is exact for counts and bytes in use once no thread is between calls; `peak_bytes_in_use` is the sum
/// of per-class or per-thread peaks (an upper bound).
class synchronized_bitmap_resource final : public detail::basic_bitmap_resource<true> {
 public:
  using basic_bitmap_resource::basic_bitmap_resource;
};

}  // namespace strata
STRATA_PUBLIC_END
