// strata/fixed_pool_resource.hpp: a pool of one block size with O(1) allocate/free, runs of blocks, and a hard cap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory_resource>

#include <strata/detail/address_table.hpp>
#include <strata/detail/upstream_storage.hpp>
#include <strata/error.hpp>
#include <strata/page_resource.hpp>
#include <strata/resource.hpp>

namespace strata {

struct fixed_pool_options {
  /// Hard capacity in bytes: the pool takes this much from upstream up front (address space; with page_resource the
  /// memory arrives as it is touched) and never more. Past it, allocate throws std::bad_alloc. 0: no cap, the pool
  /// grows chunk by chunk.
  std::size_t max_bytes = 0;
  /// Bytes per chunk (a power of two of at least 64 KiB; 0 picks 1 MiB, or more to hold 256 blocks, or less to fit
  /// max_bytes).
  std::size_t chunk_size = 0;
  /// Send requests larger than one block straight upstream instead of serving them from runs of blocks.
  bool forward_large = false;
  /// Empty chunks kept for reuse before they go back upstream (growing pools only).
  std::size_t max_empty_chunks = 1;
};

/// Blocks of one size for programs that allocate and free the same kind of object a great many times (search
/// nodes, graph vertices, particles).
///
/// - Blocks live in chunks (a power of two bytes, aligned to their size). Each chunk starts with a small header and
///   two bitmaps, one bit each per block: free, and first block of an allocation. No block has a header.
/// - One block: O(1). allocate takes the block freed last if it is still free (it is likely in cache), else the first
///   free bit of the current chunk; deallocate finds the chunk by masking and the block by a multiply.
/// - More than one block (a request up to a chunk's capacity): a run of contiguous free blocks found by scanning the
///   free bitmap a word at a time: O(chunk blocks / 64) words per chunk looked at. With `forward_large`, or when a run
///   cannot fit a chunk, the request goes straight upstream (registered, so its free is checked too).
/// - Block alignment: blocks are `block_size` rounded up to a multiple of 8 apart, starting at the chunk base, so each
///   is aligned to the lowest set bit of that stride (capped at 4 KiB). A stricter alignment goes upstream.
/// - Capacity (`max_bytes`): exact; `capacity_blocks()` blocks can be live at once, not one more.
/// - allocate_zeroed(): zero-filled memory; blocks never handed out since their chunk came from a page_resource are
///   known to be zero and are not cleared again.
/// - resize(): a run grows in place into the free blocks after it, and shrinks in place.
/// - release() and the destructor return everything upstream.
/// - Misuse (double free, a pointer not from this pool, a pointer inside a block or a run, a size that does not match
///   the run) is reported through the error handler with the pointer; nothing changes.
/// - Not thread-safe.
class fixed_pool_resource final : public resource {
 public:
  using options = fixed_pool_options;

  /// Throws std::invalid_argument for a zero block size or a chunk size that is not a power of two or too small for
  /// one block; std::bad_alloc when the capacity cannot be reserved.
  explicit fixed_pool_resource(std::size_t block_size, const options& opts = {},
                               std::pmr::memory_resource* upstream = default_page_resource());
  fixed_pool_resource(std::size_t block_size, std::pmr::memory_resource* upstream)
      : fixed_pool_resource(block_size, options{}, upstream) {}
  ~fixed_pool_resource() override;

  /// Zero-filled memory, as allocate() otherwise.
  void* allocate_zeroed(std::size_t bytes, std::size_t alignment = alignof(std::max_align_t));
  /// Frees everything at once and returns it upstream (the capacity reservation too; it is taken again when needed).
  void release() noexcept;

  /// Bytes between consecutive blocks (block_size rounded up to 8).
  [[nodiscard]] std::size_t block_stride() const noexcept { return stride_; }
  [[nodiscard]] std::size_t block_size() const noexcept { return block_size_; }
  /// Alignment every block has.
  [[nodiscard]] std::size_t block_alignment() const noexcept { return block_alignment_; }
  /// Blocks that can be live at once under max_bytes (0 without a cap).
  [[nodiscard]] std::size_t capacity_blocks() const noexcept { return capacity_blocks_; }
  /// Blocks live now (a run of k counts k), and the most there have been.
  [[nodiscard]] std::size_t blocks_in_use() const noexcept { return blocks_in_use_; }
  [[nodiscard]] std::size_t peak_blocks_in_use() const noexcept { return peak_blocks_; }
  [[nodiscard]] std::size_t chunk_size() const noexcept { return chunk_size_; }
  /// Walks every chunk and checks bitmaps, counts and lists; reports a broken invariant and returns false.
  bool check_invariants() const noexcept;

 protected:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override;
  bool do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) override;
  resource_stats do_stats() const noexcept override;

 private:
  struct chunk;

  std::size_t blocks_for(std::size_t bytes) const noexcept { return bytes <= stride_ ? 1 : (bytes + stride_ - 1) / stride_; }
  bool pooled(std::size_t bytes, std::size_t alignment) const noexcept;
  void* allocate_blocks(std::size_t k, bool& fresh);
  void* claim_hot() noexcept;
  void* take_one(chunk* c, bool& fresh) noexcept;
  std::uintptr_t tag_of(const chunk* c) const noexcept {
    return reinterpret_cast<std::uintptr_t>(this) ^ reinterpret_cast<std::uintptr_t>(c) ^ 0x46495845445F504Full;
  }
  void note_blocks(std::size_t k) noexcept {
    blocks_in_use_ += k;
    if (blocks_in_use_ > peak_blocks_) peak_blocks_ = blocks_in_use_;
  }
  void* allocate_pooled(std::size_t bytes, bool& fresh);
  void note_allocation(std::size_t bytes) noexcept {
    ++stats_.allocations;
    stats_.bytes_in_use += bytes;
    if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
  }
  void* take_run(chunk* c, std::size_t k, bool& fresh) noexcept;
  chunk* add_chunk();
  chunk* format(void* base, bool zeroed) noexcept;
  void retire(chunk* c) noexcept;
  chunk* chunk_of(const void* p) const noexcept;
  bool find_run(const void* p, std::size_t k, chunk*& c, std::size_t& q) noexcept;
  void report(error_kind kind, const void* p, std::size_t bytes, std::size_t alignment, const char* why) const noexcept;
  void* allocate_upstream(std::size_t bytes, std::size_t alignment);
  void deallocate_upstream(void* p, std::size_t bytes, std::size_t alignment) noexcept;
  bool reserve_capacity();
  void free_chunk_memory(chunk* c) noexcept;

  std::pmr::memory_resource* upstream_;
  options opts_;
  std::size_t block_size_;
  std::size_t stride_;
  std::size_t block_alignment_;
  std::uint64_t reciprocal_;  // slot = (offset * reciprocal_) >> 40
  std::size_t chunk_size_;
  std::size_t capacity_blocks_ = 0;
  bool upstream_zeroes_;       // upstream is a page_resource: allocate_zeroed on it gives zero pages

  chunk* chunks_ = nullptr;    // every chunk in use, doubly linked
  chunk* current_ = nullptr;   // where single blocks come from
  chunk* empty_ = nullptr;     // cached empty chunks (growing pools)
  std::size_t empty_count_ = 0;
  std::size_t chunk_count_ = 0;
  void* hot_ = nullptr;        // the block freed last
  char* region_ = nullptr;     // capacity mode: the reservation
  std::size_t region_size_ = 0;
  std::size_t region_used_ = 0;  // chunks carved from the region so far (bytes)

  std::size_t blocks_in_use_ = 0;
  std::size_t peak_blocks_ = 0;
  resource_stats stats_{};
  detail::address_table<detail::upstream_storage> large_;  // requests sent upstream: address -> packed size and alignment
};

}  // namespace strata
