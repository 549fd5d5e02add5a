// SPDX-License-Identifier: MIT
// strata/fixed_pool_resource.hpp: a pool of one block size with O(1) allocate/free, runs of blocks, and a hard cap.
#pragma once

#include <strata/config.hpp>

#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <optional>
#include <type_traits>

#include <strata/detail/engines/fixed_pool_engine.hpp>
#include <strata/detail/engines/sync_front.hpp>
#include <strata/options.hpp>
#include <strata/page_resource.hpp>
#include <strata/resource.hpp>

STRATA_PUBLIC_BEGIN
namespace strata {


namespace detail {

/// What fixed_pool_resource and synchronized_fixed_pool_resource share; see them for the contract.
template <bool Sync>
class basic_fixed_pool_resource : public resource {
 public:
  using options = fixed_pool_options;

  /// Throws std::invalid_argument for a block size of 0 or above 1 GiB, or a chunk size that is not a power of two
  /// from 64 KiB to 16 GiB or too small for one block; std::bad_alloc when the capacity cannot be reserved.
  explicit basic_fixed_pool_resource(std::size_t block_size, const options& opts = {},
                                     std::pmr::memory_resource* upstream = default_page_resource());
  basic_fixed_pool_resource(std::size_t block_size, std::pmr::memory_resource* upstream)
      : basic_fixed_pool_resource(block_size, options{}, upstream) {}
  ~basic_fixed_pool_resource() override;  // out of line: the engine's destructor is the library's own

  /// Frees everything at once and returns it upstream (the capacity reservation too; it is taken again when needed).
  void release() noexcept;
  /// Gives every empty chunk back upstream (a capacity reservation stays). The synchronized pool keeps its chunks
  /// until release(): its lock-free operations may be reading any of them, so this does nothing there.
  void trim() noexcept;

  /// Bytes a request of `bytes` with `alignment` occupies, as stats() counts it: the blocks it takes (block_stride()
  /// for one block, k * block_stride() for a run of k) when the pool serves it, the request itself when it goes
  /// upstream. Any size that rounds to the same blocks frees the block too.
  [[nodiscard]] std::size_t round_size(std::size_t bytes, std::size_t alignment = alignof(std::max_align_t)) const
      noexcept {
    return engine_.round_size(bytes, alignment);
  }
  /// Bytes between consecutive blocks (block_size rounded up to 8).
  [[nodiscard]] std::size_t block_stride() const noexcept { return engine_.stride(); }
  [[nodiscard]] std::size_t block_size() const noexcept { return engine_.block_size(); }
  /// Alignment every block has.
  [[nodiscard]] std::size_t block_alignment() const noexcept { return engine_.block_alignment(); }
  /// Blocks that can be live at once under max_bytes (0 without a cap).
  [[nodiscard]] std::size_t capacity_blocks() const noexcept { return engine_.capacity_blocks(); }
  /// Blocks live now (a run of k counts k), and the most there have been.
  [[nodiscard]] std::size_t blocks_in_use() const noexcept;
  /// Allocations served as runs of two or more blocks since construction. Many runs for one-object requests mean
  /// the block size is smaller than the objects (a container's node is larger than its element: size the pool with
  /// strata::node_size<Container>()); debug builds print a note the first time a request of at most two blocks
  /// takes a run.
  [[nodiscard]] std::uint64_t run_allocations() const noexcept { return engine_.run_allocations(); }
  [[nodiscard]] std::size_t peak_blocks_in_use() const noexcept;
  /// Freed blocks waiting in the free cache (standard checks): free as stats() counts them, back in their chunks'
  /// bitmaps once the cache overflows, on trim(), or when no block is live. The synchronized pool: those in the
  /// calling thread's cache.
  [[nodiscard]] std::size_t cached_blocks() const noexcept;
  [[nodiscard]] std::size_t chunk_size() const noexcept { return engine_.chunk_size(); }
  /// Walks every chunk and checks bitmaps, counts and lists; reports a broken invariant and returns false.
  /// (Synchronized: call it while no other thread uses the pool.)
  [[nodiscard]] bool check_invariants() const noexcept;

  /// The options the pool was made with.
  [[nodiscard]] const options& get_options() const noexcept { return opts_; }

 protected:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override;
  bool do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) override;
  resource_stats do_stats() const noexcept override;
  /// Blocks never handed out since their chunk arrived zeroed are not cleared again (but those from threads' caches,
  /// which are cleared).
  void* do_allocate_zeroed(std::size_t bytes, std::size_t alignment) override;
  /// "fixed_pool" or "synchronized_fixed_pool".
  const char* do_name() const noexcept override { return Sync ? "synchronized_fixed_pool" : "fixed_pool"; }
  /// The resource chunks and large requests come from.
  std::pmr::memory_resource* do_upstream_resource() const noexcept override { return upstream_; }
  /// Classes: the pool's one (class 0, blocks of block_stride() bytes; a run of k blocks counts k live blocks).
  /// Tiers: synchronized with standard checks, "thread_caches" (what threads allocated and freed through their caches;
  /// the caches' own memory as bytes_held). Regions: every chunk (its blocks in use and free), the capacity
  /// reservation's part not carved into chunks yet (cached), cached empty chunks and large blocks. Blocks waiting in a
  /// thread's cache are live in their chunk's bitmap and count as in use there.
  void do_inspect(inspector& v, unsigned what) const override;

 private:
  struct no_front {};
  using front_type = std::conditional_t<Sync, std::optional<sync_front<fixed_pool_engine<true>>>, no_front>;
  [[nodiscard]] bool has_front() const noexcept {
    if constexpr (Sync) return front_.has_value();
    else return false;
  }

  std::pmr::memory_resource* upstream_;
  options opts_;
  fixed_pool_engine<Sync> engine_;
  front_type front_;  // Sync with standard checks: the threads' caches
};

extern template class basic_fixed_pool_resource<false>;
extern template class basic_fixed_pool_resource<true>;

}  // namespace detail

/// Blocks of one size for programs that allocate and free the same kind of object a great many times (search
/// nodes, graph vertices, particles).
///
/// - Blocks live in chunks (a power of two bytes, aligned to their size). Each chunk starts with a small header and a
///   state bitmap, two bits per block (free, first block of an allocation, or continuation of one). No block has a
///   header.
/// - One block: O(1). deallocate finds the chunk by masking (and in the pool's chunk table) and the slot by one
///   multiply (exact for every block and chunk size the options accept). With standard checks (the default) it then
///   checks that the block was handed out before in a chunk that has held no run and is not already a freed block,
///   and pushes it on the free cache: a LIFO threaded through the freed blocks (two words each: a link and a check
///   word keyed per pool), at most two lists of up to 64 blocks; the state bits are written when a list goes back, in
///   a batch, with the exact checks. allocate pops the newest freed block (its check word must hold), else the first
///   free block of the current chunk (a hint skips full words), which must still be the freed block its free left
///   there. With strict checks every free is verified against the block's two bits (and its neighbour's, so a run
///   cannot be freed as one block) and writes them at once; there is no cache.
/// - More than one block (a request up to a chunk's capacity): a run of contiguous free blocks found by scanning the
///   bitmap a word (32 blocks) at a time: O(blocks per chunk / 32) words per chunk looked at. With `forward_large`,
///   or when a run cannot fit a chunk, the request goes straight upstream (registered, so its free is checked too).
/// - Block alignment: blocks are `block_size` rounded up to a multiple of 8 apart, starting at the chunk base, so each
///   is aligned to the lowest set bit of that stride (capped at 4 KiB). A stricter alignment goes upstream.
/// - Capacity (`max_bytes`): exact; `capacity_blocks()` blocks can be live at once, not one more.
/// - allocate_zeroed(): zero-filled memory; blocks never handed out since their chunk came from a page_resource are
///   known to be zero and are not cleared again.
/// - resize(): a run grows in place into the free blocks after it, and shrinks in place; a new size within the same
///   blocks always succeeds. A request sent upstream is resized by upstream if it can (a strata::resource) and stays
///   one sent upstream. With equal sizes it only confirms that the block is live with that size.
/// - stats() counts each live allocation at round_size(): its whole blocks, or the request itself when it went
///   upstream. A free or resize may name any size that rounds to the same blocks.
/// - release() and the destructor return everything upstream.
/// - Misuse (double free, a pointer not from this pool, a pointer inside a block or a run, a size or alignment that
///   does not match the allocation) is reported through the error handler with the pointer, size and alignment the
///   caller gave and, where known, the size expected: the block size for one block, the run's blocks times the
///   stride for a run, the recorded size for a request sent upstream. Nothing changes. With standard checks a double
///   free is found on the second free, or, when the program wrote over the block between the two frees, when the
///   block would be handed out again or its list goes back to the bitmap: never is a block handed out twice
///   without a report.
/// - Not thread-safe: see synchronized_fixed_pool_resource.
class fixed_pool_resource final : public detail::basic_fixed_pool_resource<false> {
 public:
  using basic_fixed_pool_resource::basic_fixed_pool_resource;
};

/// fixed_pool_resource for many threads at once: the same blocks, runs, cap, zeroed allocation and misuse checks.
///
/// - One block, standard checks (the default): each thread has a free cache (the same LIFO of nodes as the
///   single-threaded pool's, two lists of up to 64 blocks), so allocate pops and deallocate pushes with no lock and
///   no atomic read-modify-write on a shared line. deallocate first checks, without the lock, that the block's
///   chunk is in the pool's chunk table, that it is a block boundary the chunk has handed out before and that the
///   chunk has never held a run, and that its first words are no thread's node; anything else takes the exact checks
///   under the lock (a node of the calling thread's cache is looked for there; one of another thread's is reported
///   without that cache being read). Blocks move between a cache and the chunks' bitmaps in batches (a quarter of
///   the bound), under the mutex; a full cache's older list is first offered to a small stash of whole lists that a
///   thread whose cache runs dry takes before it asks the bitmaps (so blocks pass from a freeing thread to an
///   allocating one without a bitmap write or the mutex); a thread's cache goes back when the thread ends, and trim() gives back the calling
///   thread's. A block in another thread's cache is not available to this one until that cache overflows, is
///   trimmed or its thread ends: with max_bytes, up to 128 blocks per thread can be free and yet not be had.
/// - One block, strict checks: lock-free. allocate claims the first free block of the current chunk with one
///   compare-and-swap of its two state bits (threads scan from a shared hint); deallocate checks and flips them with
///   one compare-and-swap, so a double free racing another free of the same block is caught by exactly one of them.
///   Counters are per thread (a stripe each, no shared cache line on the fast path).
/// - Under a mutex: new chunks, runs, resize, requests sent upstream, release() and stats()'s byte totals.
/// - Chunks stay until release() (a lock-free operation may be looking at any of them), so empty chunks are not
///   returned upstream early as the single-threaded pool does.
/// - stats(): counts and bytes_in_use are exact once the threads are quiet; peak_bytes_in_use and
///   peak_blocks_in_use() are the sum of the per-thread peaks: an upper bound.
/// - release() and the destructor must not run while other threads use the pool.
class synchronized_fixed_pool_resource final : public detail::basic_fixed_pool_resource<true> {
 public:
  using basic_fixed_pool_resource::basic_fixed_pool_resource;
};

}  // namespace strata
STRATA_PUBLIC_END
