// SPDX-License-Identifier: MIT
// strata/detail/engines/free_list_engine.hpp: the mechanism behind free_list_resource: chunks with a boundary bitmap, free
// blocks with boundary sizes and list links, four fit policies, splitting, coalescing, quick lists of freed small blocks
// in front of the segregated fit (standard checks), page purging. Not thread-safe; the synchronized resource puts a
// mutex around it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory_resource>

#include <strata/config.hpp>
#include <strata/detail/ds/free_cache.hpp>
#include <strata/detail/parts/chunk_source.hpp>
#include <strata/detail/parts/large_part.hpp>
#include <strata/detail/core/math.hpp>
#include <strata/error.hpp>
#include <strata/options.hpp>
#include <strata/stats.hpp>

namespace strata {
}  // namespace strata

namespace strata::detail {

/// What the resource was asked for (see free_list_options for the meaning of each).
class free_list_engine {
 public:
  /// Every block is a multiple of this many bytes and starts at a multiple of it.
  static constexpr std::size_t granule = 8;
  /// Free blocks this large hold list links; smaller ones (left by a split) are not listed.
  static constexpr std::size_t min_listed = 32;
  /// Alignments above this go upstream.
  static constexpr std::size_t max_alignment = 4096;
  /// A chunk's purge map has a bit per this many bytes (the smallest page there is); upstream pages are multiples.
  static constexpr std::size_t purge_map_page = 4096;
  /// Freed blocks of quick_min..quick_max bytes wait in quick lists (segregated policy, standard checks).
  static constexpr std::size_t quick_min = 16;
  static constexpr std::size_t quick_max = 1024;
  /// Each of a quick list's two lists holds at most this many blocks of `size` bytes: 4 KiB of blocks, 4 to 16.
  static constexpr std::uint32_t quick_cap_for(std::size_t size) noexcept {
    const std::size_t n = 4096 / size;
    return static_cast<std::uint32_t>(n < 4 ? 4 : n > 16 ? 16 : n);
  }

  /// The bytes a request occupies in a chunk.
  static std::size_t rounded(std::size_t bytes, std::size_t alignment) noexcept {
    const std::size_t a = alignment >= 16 ? 16 : 8;
    if (bytes > max_request_size) return bytes;
    return bytes == 0 ? a : align_up(bytes, a);
  }

  /// `opts` as validated by the resource: its chunk_size resolved (chunk_size_for), a power of two from min_chunk to
  /// max_chunk.
  free_list_engine(const free_list_options& opts, std::pmr::memory_resource* upstream, const void* owner,
                   const char* name);

  /// Chunk sizes the engine takes.
  static constexpr std::size_t min_chunk = std::size_t{64} << 10;
  static constexpr std::size_t max_chunk = std::size_t{1} << 30;
  /// opts.chunk_size, or when that is 0 the default over an upstream with `caps`: 1 MiB, or one huge page with
  /// opts.huge_pages where upstream has them (up to max_chunk).
  static std::size_t chunk_size_for(const free_list_options& opts, const memory_capabilities& caps) noexcept;
  ~free_list_engine();
  free_list_engine(const free_list_engine&) = delete;
  free_list_engine& operator=(const free_list_engine&) = delete;

  void* allocate(std::size_t bytes, std::size_t alignment);
  void deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept;
  bool resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) noexcept;
  void release() noexcept;
  void trim() noexcept;
  /// The size of the live block at p (its rounded size in a chunk, its requested size upstream), or 0 when p is not
  /// the start of a live block of this engine. Nothing is reported.
  [[nodiscard]] std::size_t usable_size(const void* p) const noexcept;
  [[nodiscard]] resource_stats stats() const noexcept;
  bool check_invariants() const noexcept;

  [[nodiscard]] unsigned policy() const noexcept { return policy_; }
  [[nodiscard]] std::size_t chunk_size() const noexcept { return chunk_size_; }
  [[nodiscard]] std::size_t chunk_capacity() const noexcept { return (chunk_size_ / granule - first_) * granule; }
  [[nodiscard]] std::size_t large_threshold() const noexcept { return large_threshold_; }
  [[nodiscard]] std::size_t chunk_count() const noexcept { return chunk_count_; }
  /// Successful deallocate() calls so far (a caller can tell whether its free was taken or reported).
  [[nodiscard]] std::uint64_t deallocation_count() const noexcept { return deallocations_; }
  /// Freed blocks waiting in quick lists, and their bytes (free, though the bitmap shows them live).
  [[nodiscard]] std::size_t cached_blocks() const noexcept { return quick_blocks_; }
  [[nodiscard]] std::size_t cached_bytes() const noexcept { return quick_bytes_; }
  /// The most bytes the quick lists hold together.
  [[nodiscard]] std::size_t quick_limit() const noexcept { return quick_limit_; }

  /// Whether p lies in one of this engine's chunks (the block map, then the chunk's tag; no lock: for finding which
  /// of several engines holds a block).
  [[nodiscard]] bool owns(const void* p) const noexcept;

 private:
  enum : unsigned { first_fit = 0, next_fit = 1, best_fit = 2, segregated = 3 };
  /// Segregated bins: sizes below 256 in classes 8 bytes wide (fl 0); from 256 up, each power of two split in 32.
  static constexpr unsigned sl_log2 = 5;
  static constexpr unsigned sl_count = 1u << sl_log2;
  static constexpr unsigned fl_count = 24;  // blocks up to 2^31 bytes (chunks are at most 1 GiB)

  /// A chunk: this header, the state words (two bits per granule: bit 0 "a block starts here", bit 1 "first or last
  /// granule of a free block"), the purge map (one bit per page: given back to the OS), then blocks from granule
  /// `first` to `end`. Granule `end` (just past the chunk) reads as a block start: the sentinel.
  struct chunk {
    std::uintptr_t tag;  // engine ^ address ^ magic
    chunk* next;
    chunk* prev;
    std::uint32_t first;   // first granule of the blocks
    std::uint32_t end;     // granules in the chunk
    std::uint32_t words;   // state words
    std::uint32_t purged;  // pages given back to the OS and not used since
    std::size_t fresh;       // pages from this offset to the last page were never written (upstream with zeroed pages)
    std::uint64_t purge_at;  // deallocation count at which its large free blocks are purged; 0: none waiting
    std::uint64_t* states() noexcept { return reinterpret_cast<std::uint64_t*>(this + 1); }
    const std::uint64_t* states() const noexcept { return reinterpret_cast<const std::uint64_t*>(this + 1); }
    std::uint64_t* purge_map() noexcept { return states() + words; }
    const std::uint64_t* purge_map() const noexcept { return states() + words; }
  };
  enum : std::uint64_t { st_start = 1, st_free = 2 };
  static constexpr std::uint64_t start_bits = 0x5555555555555555ull;

  /// What a free block holds in its own memory (the links only from min_listed bytes up); its last 8 bytes repeat
  /// the size.
  struct free_block {
    std::size_t size;
    free_block* next;
    free_block* prev;
  };

  static unsigned state(const chunk* c, std::size_t g) noexcept {
    return static_cast<unsigned>(c->states()[g >> 5] >> (2 * (g & 31))) & 3;
  }
  static void set(chunk* c, std::size_t g, std::uint64_t bits) noexcept {
    c->states()[g >> 5] |= bits << (2 * (g & 31));
  }
  static void clear(chunk* c, std::size_t g, std::uint64_t bits) noexcept {
    c->states()[g >> 5] &= ~(bits << (2 * (g & 31)));
  }
  static std::size_t& footer(char* block_end) noexcept { return *reinterpret_cast<std::size_t*>(block_end - 8); }
  static std::size_t next_boundary(const chunk* c, std::size_t g) noexcept;
  static std::size_t prev_boundary(const chunk* c, std::size_t g) noexcept;

  chunk* chunk_of(const void* p) const noexcept {
    return reinterpret_cast<chunk*>(reinterpret_cast<std::uintptr_t>(p) & ~(chunk_size_ - 1));
  }
  std::uintptr_t tag_of(const chunk* c) const noexcept {
    return reinterpret_cast<std::uintptr_t>(this) ^ reinterpret_cast<std::uintptr_t>(c) ^ 0x465245454C495354ull;
  }
  bool ours(const void* p) const noexcept;
  bool is_block_start(const void* p) const noexcept;
  std::size_t payload_bytes() const noexcept { return (chunk_size_ / granule - first_) * granule; }
  static char* at(chunk* c, std::size_t g) noexcept { return reinterpret_cast<char*>(c) + g * granule; }
  static std::size_t granule_of(const chunk* c, const void* p) noexcept {
    return static_cast<std::size_t>(static_cast<const char*>(p) - reinterpret_cast<const char*>(c)) / granule;
  }

  // Bins and lists.
  static void mapping(std::size_t size, unsigned& fl, unsigned& sl) noexcept {
    if (size < (std::size_t{1} << (sl_log2 + 3))) {
      fl = 0;
      sl = static_cast<unsigned>(size >> 3);
    } else {
      const unsigned l = log2_floor(size);
      fl = l - (sl_log2 + 2);
      sl = static_cast<unsigned>(size >> (l - sl_log2)) ^ sl_count;
    }
  }
  free_block*& head_for(std::size_t size) noexcept;
  void link(free_block* b, std::size_t size) noexcept;
  void unlink(free_block* b) noexcept;
  void relink(free_block* old, free_block* nw, std::size_t size) noexcept;
  void make_top(free_block* b) noexcept;
  void free_tail(chunk* c, std::size_t g, std::size_t last, bool top) noexcept;
  bool any_purged(const chunk* c, std::size_t begin, std::size_t end) const noexcept;
  bool links_ok(const free_block* b) noexcept;
  bool free_block_ok(chunk* c, std::size_t g, std::size_t size) noexcept;
  free_block* find_segregated(std::size_t n) noexcept;
  void* allocate_in_chunks(std::size_t n, std::size_t alignment);
  /// n bytes aligned to a from the top block, or nullptr when it is missing or too small.
  void* take_from_top(std::size_t n, std::size_t a);
  void* take(free_block* b, std::size_t n, std::size_t pad);
  bool free_range(chunk* c, std::size_t g, std::size_t gn) noexcept;
  STRATA_NOINLINE bool free_now(chunk* c, std::size_t g, std::size_t n) noexcept;
  bool live_block(const void* p, std::size_t bytes, std::size_t alignment, std::size_t n, chunk*& c,
                  std::size_t& g) noexcept;
  STRATA_COLD void report_bad_start(chunk* c, std::size_t g, const void* p, std::size_t bytes,
                                    std::size_t alignment) noexcept;
  STRATA_COLD void report_wrong_size(const void* p, std::size_t bytes, std::size_t alignment, std::size_t real,
                                     const char* why) const noexcept;

  // Quick lists: a freed block of quick_min..quick_max bytes waits, still live in the bitmap, in the list of its exact
  // size, made a node (free_cache); the node tells it from a live block. Flushes give blocks back through free_range.
  static bool quick_size(std::size_t n) noexcept { return n - quick_min <= quick_max - quick_min; }
  bool quick_holds(const void* p, std::size_t n) const noexcept;
  void* take_quick(std::size_t n, std::size_t alignment) noexcept;
  STRATA_COLD void drop_quick_head(free_cache& q, std::size_t n) noexcept;
  void cache_block(void* p, std::size_t n) noexcept;
  STRATA_COLD bool cached_twice(const void* p, std::size_t bytes, std::size_t alignment, std::size_t n) noexcept;
  STRATA_NOINLINE void quick_overflow(void* p, std::size_t n) noexcept;
  void give_quick(void* list, std::size_t k, std::size_t n) noexcept;
  void flush_quick(bool cold_only) noexcept;
  void end_flush(bool outer) noexcept;
  void retire_extra_empty() noexcept;
  bool retire_if_empty(chunk* c) noexcept;
  void uncache_at(chunk* c, std::size_t g) noexcept;

  // Chunks and pages.
  void add_chunk();
  void retire(chunk* c) noexcept;
  void purge_free_pages(chunk* c, std::size_t begin, std::size_t end) noexcept;
  void touch(chunk* c, std::size_t begin, std::size_t end) noexcept;
  void purge_chunk(chunk* c, std::size_t min_size) noexcept;
  void sweep() noexcept;

  // Requests sent upstream.
  void* allocate_upstream(std::size_t bytes, std::size_t alignment);
  void deallocate_upstream(void* p, std::size_t bytes, std::size_t alignment) noexcept;
  bool resize_upstream(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) noexcept;

  STRATA_COLD void report_not_large(const void* p, std::size_t bytes, std::size_t alignment) const noexcept;
  STRATA_COLD void report(error_kind kind, const void* p, std::size_t bytes, std::size_t alignment,
                          std::size_t expected, const char* why) const noexcept;
  void note_allocation(std::size_t bytes) noexcept {
    ++allocations_;
    bytes_in_use_ += bytes;
    if (bytes_in_use_ > peak_bytes_) peak_bytes_ = bytes_in_use_;
  }

  // Fixed at construction.
  const void* owner_;
  const char* name_;
  chunk_source<false> source_;  // chunks from upstream; what upstream can do for them
  std::size_t page_ = 0;   // the page size when upstream can purge, else 0
  unsigned page_shift_ = 0;
  unsigned policy_;
  std::size_t chunk_size_ = 0;
  std::size_t first_ = 0;  // first block granule of every chunk
  std::size_t large_threshold_ = 0;
  std::size_t max_empty_ = 1;
  std::size_t purge_threshold_ = 0;  // SIZE_MAX when nothing is purged
  std::size_t purge_delay_ = 0;
  bool quick_on_ = false;
  std::size_t quick_limit_ = 0;
  std::uintptr_t key_ = 0;  // the quick lists' node key

  // Quick lists: quick_[n / 8] holds blocks of exactly n bytes.
  free_cache quick_[quick_max / granule + 1];
  std::size_t quick_blocks_ = 0, quick_bytes_ = 0;
  std::size_t lost_blocks_ = 0, lost_bytes_ = 0;  // set aside after a misuse (live in the bitmap until release)
  bool flushing_ = false;                         // chunks emptied by a flush are retired when it ends

  // Free blocks.
  std::uint32_t fl_map_ = 0;
  std::uint32_t sl_map_[fl_count] = {};
  free_block* heads_[fl_count][sl_count] = {};  // first_fit, next_fit, best_fit use heads_[0][0] alone
  free_block* rover_ = nullptr;                 // next_fit: where the next walk starts
  free_block* top_ = nullptr;  // the newest chunk's last free block: on no list, carved when no listed block fits
  std::size_t free_bytes_ = 0;
  std::size_t free_blocks_ = 0;
  std::size_t fragments_[min_listed / granule] = {};  // unlisted free blocks by size / 8

  // Chunks.
  chunk* chunks_ = nullptr;
  std::size_t chunk_count_ = 0;
  std::size_t empty_count_ = 0;   // chunks whose blocks are all free
  std::size_t purged_pages_ = 0;     // over every chunk
  std::size_t untouched_bytes_ = 0;  // over every chunk: from `fresh` to the last page
  std::uint64_t next_sweep_ = ~std::uint64_t{0};  // deallocation count at which a chunk's purge falls due

  // Counts.
  std::size_t bytes_in_use_ = 0, peak_bytes_ = 0, live_ = 0;  // live_: allocations in chunks
  std::uint64_t allocations_ = 0, deallocations_ = 0, failed_ = 0;
  large_part<false> large_;  // requests sent upstream (the owner locks)
};

}  // namespace strata::detail
