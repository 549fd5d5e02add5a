// SPDX-License-Identifier: MIT
// strata/free_list_resource.hpp: variable sizes from chunks, with explicit free lists, splitting, immediate
// coalescing and a choice of fit policy (segregated, TLSF-style, by default).
#pragma once

#include <strata/detail/sync.hpp>
#include <strata/config.hpp>

#include <cstddef>
#include <memory_resource>
#include <mutex>
#include <type_traits>

#include <strata/detail/free_list_engine.hpp>
#include <strata/page_resource.hpp>
#include <strata/resource.hpp>

STRATA_PUBLIC_BEGIN
namespace strata {

/// How a free_list_resource picks the free block a request is carved from. n: free blocks in the resource.
enum class fit_policy {
  first_fit,  ///< the first block that fits, walking one LIFO list from its head: O(n) allocate
  next_fit,   ///< as first_fit, but each walk starts where the last one stopped: O(n) allocate
  best_fit,   ///< the smallest block that fits (an exact fit ends the walk): O(n) allocate
  segregated  ///< size-binned lists and a two-level bitmap (TLSF): O(1) allocate, at most one class wider than best
};

/// Options shared by free_list_resource and synchronized_free_list_resource.
struct free_list_options {
  fit_policy policy = fit_policy::segregated;
  /// Bytes per chunk taken from upstream, aligned to its size: a power of two from 64 KiB to 1 GiB. 0 picks 1 MiB, or
  /// the huge page size with `huge_pages` over an upstream with huge pages (memory_capabilities).
  std::size_t chunk_size = 0;
  /// Requests larger than this go straight to upstream. 0 picks 256 KiB; never more than a quarter of chunk_capacity()
  /// (so 253,920 bytes with 1 MiB chunks).
  std::size_t large_threshold = 0;
  /// Chunks that became entirely free kept for reuse before they go back upstream.
  std::size_t max_empty_chunks = 1;
  /// Over an upstream that can purge (a page_resource, or an adaptor over one): free blocks of at least this many bytes give the whole pages inside them back to the OS
  /// (they cost a page fault when next used). 0: never.
  std::size_t purge_threshold = std::size_t{256} << 10;
  /// How long such a block waits before its pages go, counted in deallocations: a chunk's large free blocks are
  /// purged once this many deallocations have happened since the first of them appeared (and they are still free),
  /// so memory freed and soon used again (a batch freed, then the next batch) is not purged and faulted back in.
  /// 0: at once. With no deallocations nothing is purged; trim() purges now.
  std::size_t purge_delay = 65536;
  /// Over an upstream with huge pages (a page_resource where the OS has transparent huge pages, or an adaptor over one): chunks are one huge page (2 MiB on x86-64) and are advised as
  /// such, for fewer TLB misses. Turn off for many small resources.
  bool huge_pages = true;
};

namespace detail {

/// What free_list_resource and synchronized_free_list_resource share; see them for the contract.
template <bool Sync>
class basic_free_list_resource : public resource {
 public:
  using options = free_list_options;

  basic_free_list_resource() : basic_free_list_resource(options{}, default_page_resource()) {}
  explicit basic_free_list_resource(std::pmr::memory_resource* upstream)
      : basic_free_list_resource(options{}, upstream) {}
  /// Throws std::invalid_argument when an option is out of range.
  explicit basic_free_list_resource(const options& opts,
                                    std::pmr::memory_resource* upstream = default_page_resource());
  ~basic_free_list_resource() override;  // out of line: the engine's destructor is the library's own

  /// Frees every allocation at once and returns all memory upstream. The resource stays usable.
  void release() noexcept {
    std::lock_guard<lock_type> g(lock_);
    engine_.release();
  }
  /// Returns the cached empty chunks upstream and gives back the whole free pages of every free block (over a
  /// page_resource), whatever their size.
  void trim() noexcept {
    std::lock_guard<lock_type> g(lock_);
    engine_.trim();
  }

  [[nodiscard]] fit_policy policy() const noexcept { return static_cast<fit_policy>(engine_.policy()); }
  [[nodiscard]] std::size_t chunk_size() const noexcept { return engine_.chunk_size(); }
  /// Bytes of a chunk that can hold blocks (the rest is its header and boundary bitmap).
  [[nodiscard]] std::size_t chunk_capacity() const noexcept { return engine_.chunk_capacity(); }
  /// Largest request served from chunks; larger ones go upstream.
  [[nodiscard]] std::size_t large_threshold() const noexcept { return engine_.large_threshold(); }
  /// Bytes a request occupies in a chunk: `bytes` rounded up to 8 (16 when alignment >= 16), at least 8.
  [[nodiscard]] static std::size_t block_size_for(std::size_t bytes, std::size_t alignment) noexcept {
    return free_list_engine::rounded(bytes, alignment);
  }
  /// Bytes a request occupies as stats() counts it (bytes_in_use is the sum over live blocks): block_size_for()
  /// inside chunks, the request itself above large_threshold() (or aligned above 4 KiB). Freeing with any size that
  /// rounds the same is correct.
  [[nodiscard]] std::size_t round_size(std::size_t bytes,
                                       std::size_t alignment = alignof(std::max_align_t)) const noexcept {
    if (bytes > engine_.large_threshold() || alignment > free_list_engine::max_alignment) return bytes;
    return free_list_engine::rounded(bytes, alignment);
  }
  /// Chunks held now (cached empty ones included).
  [[nodiscard]] std::size_t chunk_count() const noexcept {
    std::lock_guard<lock_type> g(lock_);
    return engine_.chunk_count();
  }
  /// Walks every chunk and checks boundary bitmaps, block headers, free lists, bins and counts; reports a broken
  /// invariant through the error handler and returns false.
  [[nodiscard]] bool check_invariants() const noexcept {
    std::lock_guard<lock_type> g(lock_);
    return engine_.check_invariants();
  }

  /// The resource chunks and large requests come from.
  [[nodiscard]] std::pmr::memory_resource* upstream_resource() const noexcept { return upstream_; }
  /// The options the resource was made with.
  [[nodiscard]] const options& get_options() const noexcept { return opts_; }

 protected:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    std::lock_guard<lock_type> g(lock_);
    return engine_.allocate(bytes, alignment);
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
    std::lock_guard<lock_type> g(lock_);
    engine_.deallocate(p, bytes, alignment);
  }
  bool do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) override {
    std::lock_guard<lock_type> g(lock_);
    return engine_.resize(p, old_size, new_size, alignment);
  }
  resource_stats do_stats() const noexcept override {
    std::lock_guard<lock_type> g(lock_);
    return engine_.stats();
  }

 private:
  using lock_type = detail::lock_if<Sync>;
  std::pmr::memory_resource* upstream_;
  options opts_;

  mutable lock_type lock_;
  free_list_engine engine_;
};

extern template class basic_free_list_resource<false>;
extern template class basic_free_list_resource<true>;

}  // namespace detail

/// Blocks of any size carved from chunks: buffers, strings and blobs whose sizes vary too much for size classes, and
/// blocks that grow and shrink in place.
///
/// - Chunks (chunk_size bytes, aligned to their size) come from upstream. Each starts with a header and a boundary
///   bitmap of two bits per 8 bytes: "a block starts here" and "first or last 8 bytes of a free block". Allocated
///   blocks carry no header at all: a request of n bytes occupies n rounded up to 8 (to 16 for alignment >= 16).
///   The bitmap costs 1/32 of the chunk.
/// - Free blocks hold their size at both ends and, from 32 bytes up, the links of their free list; smaller free
///   blocks (8 to 24 bytes, left by splits) are not listed and wait for a neighbour to be freed.
/// - allocate: a free block is chosen by the fit policy and split; the rest stays free. deallocate: the block is
///   merged at once with a free block before and after it (found through the bitmap and the neighbours' sizes).
/// - Every deallocate checks the bitmap: the pointer must start a live block of exactly the size named (no block
///   boundary inside, one right after), and neighbours' sizes and links must agree with the bitmap. Double free,
///   foreign and interior pointers, wrong sizes and corrupt free blocks are reported through the error handler with
///   the pointer and sizes; nothing changes.
/// - Requests above large_threshold() go straight upstream (recorded, so their frees are checked too).
/// - A chunk that becomes entirely free is kept (up to max_empty_chunks) or returned upstream. Free blocks of at least
///   purge_threshold bytes give their whole pages back to the OS after purge_delay deallocations.
/// - resize(): shrinks in place always (the tail is freed and merged); grows in place when the next block is free
///   and large enough.
/// - stats() adds free_bytes, free_blocks, largest_free_block and external_fragmentation().
/// - Not thread-safe: see synchronized_free_list_resource.
class free_list_resource final : public detail::basic_free_list_resource<false> {
 public:
  using basic_free_list_resource::basic_free_list_resource;
};

/// free_list_resource for many threads: every operation (allocate, deallocate, resize, stats, release, trim,
/// check_invariants) holds one std::mutex for its whole length; upstream is called under it too. Simple and correct;
/// it does not scale across threads (thread_cache_resource does).
class synchronized_free_list_resource final : public detail::basic_free_list_resource<true> {
 public:
  using basic_free_list_resource::basic_free_list_resource;
};

}  // namespace strata
STRATA_PUBLIC_END
