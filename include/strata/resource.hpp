// SPDX-License-Identifier: MIT
// strata/resource.hpp: strata::resource, the base of every strata memory resource, and the reallocate helper.
#pragma once

#include <strata/config.hpp>

#include <cstddef>
#include <memory_resource>

#include <strata/inspect.hpp>
#include <strata/stats.hpp>

STRATA_PUBLIC_BEGIN
namespace strata {

/// What a resource can do for the memory it hands out, beyond allocate and deallocate. A strategy asks its upstream
/// once, through resource::capabilities(), and uses what it finds: chunks that arrive zeroed need no clearing, free
/// pages inside a chunk can be given back, chunks of a huge page can be backed by one. A resource that forwards to
/// another (an adaptor) forwards these too, so what sits under it stays visible.
struct memory_capabilities {
  /// allocate_zeroed() costs no write for memory that is fresh from the OS (it reads as zero already).
  bool zeroed_pages = false;
  /// purge() gives the physical memory of whole pages inside an allocation back and keeps their addresses.
  bool purge = false;
  /// advise_huge_pages() can back an allocation of whole huge pages with transparent huge pages.
  bool huge_pages = false;
  /// resize() can grow or shrink some allocations in place.
  bool resize_in_place = false;
  /// The granularity of purge() (0 when purge is false).
  std::size_t page_size = 0;
  /// The huge page size (0 when huge_pages is false).
  std::size_t huge_page_size = 0;
};

/// Base of every strata resource: a std::pmr::memory_resource that can also resize a block in place, hand out
/// zero-filled memory, report statistics, and say what it can do for its memory (memory_capabilities).
///
/// Contract kept by every derived resource (see docs/design.md):
/// - allocate() returns memory or throws std::bad_alloc, never nullptr; a size too large to represent is bad_alloc;
///   an alignment that is not a power of two throws std::invalid_argument; every power-of-two alignment is honoured.
/// - deallocate(p, size, alignment) must name the size and alignment given to allocate (or to the last successful
///   resize); detectable misuse is reported through strata::report_error.
/// - After std::bad_alloc from upstream the resource stays consistent and usable.
/// - The destructor returns all memory to upstream.
class resource : public std::pmr::memory_resource {
 public:
  resource() noexcept;
  resource(const resource&) = delete;
  resource& operator=(const resource&) = delete;
  ~resource() override;

  /// Effects: changes the size of the live block `p` (allocated with `old_size` and `alignment`) to `new_size`
  /// without moving it. Returns true on success: from then on the block must be deallocated with `new_size`. Returns
  /// false when it cannot be done in place; the block is then unchanged. Never throws std::bad_alloc.
  /// Throws: std::invalid_argument if `alignment` is not a power of two.
  [[nodiscard]] bool resize(void* p, std::size_t old_size, std::size_t new_size,
              std::size_t alignment = alignof(std::max_align_t));

  /// A snapshot of this resource's statistics. Cheap; thread-safe for thread-safe resources.
  [[nodiscard]] resource_stats stats() const noexcept { return do_stats(); }

  /// What this resource can do for its memory; a resource that forwards to an upstream reports the upstream's.
  [[nodiscard]] memory_capabilities capabilities() const noexcept { return do_capabilities(); }

  /// As allocate(), and the memory reads as zero. Resources that know which memory is still zero (fresh pages, blocks
  /// never handed out) skip the clearing there; the others clear it.
  /// Throws: as allocate().
  [[nodiscard]] void* allocate_zeroed(std::size_t bytes, std::size_t alignment = alignof(std::max_align_t));

  /// Gives the physical memory behind [allocation + offset, allocation + offset + bytes), whole pages inside the live
  /// allocation `allocation`, back to the OS; the pages stay mapped and read as zero when next touched. False (and
  /// nothing done) when this resource cannot (capabilities().purge is false), the range is not page-aligned or not
  /// inside a live allocation of this resource, or the OS refused. Thread-safe where the resource is.
  bool purge(void* allocation, std::size_t offset, std::size_t bytes) noexcept {
    return do_purge(allocation, offset, bytes);
  }

  /// Asks for the live allocation at p (its first `bytes`, whole huge pages) to be backed by transparent huge pages.
  /// False when this resource cannot (capabilities().huge_pages is false), p is not the start of a live allocation of
  /// it, `bytes` exceeds the allocation or is less than one huge page, or the OS refused.
  bool advise_huge_pages(void* p, std::size_t bytes) noexcept { return do_advise_huge_pages(p, bytes); }

  /// The strategy's name as make_resource() spells it ("bitmap", "thread_cache", "page", ...).
  [[nodiscard]] const char* name() const noexcept { return do_name(); }

  /// The resource this one takes its memory from; nullptr for one that takes it from the OS (page_resource).
  [[nodiscard]] std::pmr::memory_resource* upstream_resource() const noexcept { return do_upstream_resource(); }

  /// Reports this resource's size classes, tiers and regions (as `what` asks) to `v`; see inspector. A snapshot: a
  /// thread-safe resource takes its locks in turn, so figures of different callbacks may be apart by what other
  /// threads did meanwhile. Does not allocate from this resource.
  void inspect(inspector& v, unsigned what = inspect_all) const { do_inspect(v, what); }

 protected:
  /// Called by resize() with a valid alignment and a non-null `p` (old_size may equal new_size: true only for a live
  /// block, misuse reported as for deallocate). Default: false.
  virtual bool do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment);
  virtual resource_stats do_stats() const noexcept = 0;
  /// Default: nothing beyond allocate and deallocate.
  virtual memory_capabilities do_capabilities() const noexcept { return {}; }
  /// Called by allocate_zeroed() with a valid alignment. Default: allocate() and clear `bytes` bytes.
  virtual void* do_allocate_zeroed(std::size_t bytes, std::size_t alignment);
  /// Default: false.
  virtual bool do_purge(void* allocation, std::size_t offset, std::size_t bytes) noexcept;
  /// Default: false.
  virtual bool do_advise_huge_pages(void* p, std::size_t bytes) noexcept;
  /// Default: "resource".
  virtual const char* do_name() const noexcept;
  /// Default: nullptr.
  virtual std::pmr::memory_resource* do_upstream_resource() const noexcept;
  /// Default: nothing reported.
  virtual void do_inspect(inspector& v, unsigned what) const;
  /// A strata resource is equal only to itself: memory from one may not be freed through another.
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }
};

/// `r` as a strata::resource (for resize(), allocate_zeroed(), capabilities() and the rest), or nullptr when it is
/// another std::pmr::memory_resource or null.
[[nodiscard]] resource* as_strata_resource(std::pmr::memory_resource* r) noexcept;

/// Effects: gives `p` (allocated from `r` with `old_size` and `alignment`; may be null when old_size is 0) the size
/// `new_size`: in place through resource::resize when `r` is a strata::resource and that succeeds, else by allocating
/// a new block, copying min(old_size, new_size) bytes and deallocating the old one. Returns the block to use from now
/// on (with `new_size`). new_size == 0 deallocates `p` and returns nullptr.
/// Throws: std::bad_alloc if a new block is needed and cannot be had; `p` is then still valid and unchanged.
[[nodiscard]] void* reallocate(std::pmr::memory_resource& r, void* p, std::size_t old_size, std::size_t new_size,
                 std::size_t alignment = alignof(std::max_align_t));

}  // namespace strata
STRATA_PUBLIC_END
