// SPDX-License-Identifier: MIT
// strata/resource.hpp: strata::resource, the base of every strata memory resource, and the reallocate helper.
#pragma once

#include <strata/config.hpp>

#include <cstddef>
#include <memory_resource>

#include <strata/stats.hpp>

STRATA_PUBLIC_BEGIN
namespace strata {

/// Base of every strata resource: a std::pmr::memory_resource that can also resize a block in place and report
/// statistics.
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
  resource() = default;
  resource(const resource&) = delete;
  resource& operator=(const resource&) = delete;
  ~resource() override = default;

  /// Effects: changes the size of the live block `p` (allocated with `old_size` and `alignment`) to `new_size`
  /// without moving it. Returns true on success: from then on the block must be deallocated with `new_size`. Returns
  /// false when it cannot be done in place; the block is then unchanged. Never throws std::bad_alloc.
  /// Throws: std::invalid_argument if `alignment` is not a power of two.
  [[nodiscard]] bool resize(void* p, std::size_t old_size, std::size_t new_size,
              std::size_t alignment = alignof(std::max_align_t));

  /// A snapshot of this resource's statistics. Cheap; thread-safe for thread-safe resources.
  [[nodiscard]] resource_stats stats() const noexcept { return do_stats(); }

 protected:
  /// Called by resize() with a valid alignment and a non-null `p` (old_size may equal new_size: true only for a live
  /// block, misuse reported as for deallocate). Default: false.
  virtual bool do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment);
  virtual resource_stats do_stats() const noexcept = 0;
  /// A strata resource is equal only to itself: memory from one may not be freed through another.
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }
};

/// Effects: gives `p` (allocated from `r` with `old_size` and `alignment`; may be null when old_size is 0) the size
/// `new_size`: in place through resource::resize when `r` is a strata::resource and that succeeds, else by allocating
/// a new block, copying min(old_size, new_size) bytes and deallocating the old one. Returns the block to use from now
/// on (with `new_size`). new_size == 0 deallocates `p` and returns nullptr.
/// Throws: std::bad_alloc if a new block is needed and cannot be had; `p` is then still valid and unchanged.
[[nodiscard]] void* reallocate(std::pmr::memory_resource& r, void* p, std::size_t old_size, std::size_t new_size,
                 std::size_t alignment = alignof(std::max_align_t));

}  // namespace strata
STRATA_PUBLIC_END
