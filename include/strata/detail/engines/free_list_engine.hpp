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
#include <strata/detail/core/sanitizer.hpp>
#include <strata/detail/ds/chunk_table.hpp>
#include <strata/detail/ds/free_cache.hpp>
#include <strata/detail/parts/chunk_source.hpp>
#include <strata/detail/parts/large_part.hpp>
#include <strata/detail/core/math.hpp>
#include <strata/error.hpp>
#include <strata/inspect.hpp>
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
  /// With class_sizes(), requests of more than class_min up to class_max bytes take a class size: eight per doubling,
  /// multiples of 1 KiB, at most 1/8 more than asked (as the size classes of the small-object strategies do); freed
  /// blocks of those sizes wait in quick lists (standard checks).
  static constexpr std::size_t class_min = std::size_t{8} << 10;
  static constexpr std::size_t class_max = std::size_t{32} << 10;
  /// rounded() with the class sizes.
  static std::size_t class_rounded(std::size_t bytes, std::size_t alignment) noexcept {
    const std::size_t n = rounded(bytes, alignment);
    if (n <= class_min || n > class_max) return n;
    const std::size_t step = n <= 2 * class_min ? class_min / 8 : class_min / 4;
    return (n + step - 1) & ~(step - 1);
  }
  /// Each of a quick list's two lists holds at most this many blocks of `size` bytes: 16 KiB of blocks, 8 to 32.
  static constexpr std::uint32_t quick_cap_for(std::size_t size) noexcept {
    const std::size_t n = 16384 / size;
    return static_cast<std::uint32_t>(n < 8 ? 8 : n > 32 ? 32 : n);
  }
  /// The most bytes all quick lists hold together, for chunks of `payload` bytes: three quarters of one, at most
  /// 1 MiB.
  static constexpr std::size_t quick_limit_for(std::size_t payload) noexcept {
    return payload / 4 * 3 < (std::size_t{1} << 20) ? payload / 4 * 3 : std::size_t{1} << 20;
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
  /// The large_threshold() an engine made with `opts` (chunk_size resolved) has: larger requests go upstream.
  static std::size_t large_threshold_for(const free_list_options& opts) noexcept;
  ~free_list_engine();
  free_list_engine(const free_list_engine&) = delete;
  /// A block from the chunks the engine holds, or nullptr when none has room (no chunk is taken from upstream, no
  /// request passed there). Requests as for allocate().
  void* allocate_held(std::size_t bytes, std::size_t alignment);
  /// Told of every chunk the engine takes from upstream (added: true, before any block of it is handed out) and gives
  /// back (false, before it goes): for an owner that keeps a directory of chunks. A false answer to an added chunk
  /// makes the engine give it back and fail the allocation that needed it (std::bad_alloc).
  using chunk_hook = bool (*)(void* context, void* chunk, std::size_t size, bool added) noexcept;
  void set_chunk_hook(chunk_hook hook, void* context) noexcept {
    hook_ = hook;
    hook_context_ = context;
  }
  free_list_engine& operator=(const free_list_engine&) = delete;

  /// A block from the quick list of its exact size when one waits there (no bitmap read: see take_quick), else the
  /// general way.
  STRATA_ALWAYS_INLINE void* allocate(std::size_t bytes, std::size_t alignment) {
    if (STRATA_LIKELY(quick_request(bytes, alignment))) {
      const std::size_t m = alignment > granule ? 15 : 7;
      const std::size_t n = (bytes + m) & ~m;
      if (n > quick_max) __builtin_unreachable();  // (bytes <= quick_top_ <= quick_max)
      free_cache& q = quick_[n / granule];
      void* const p = q.head;
      // (An empty list, a block at an 8-byte boundary for a 16-aligned request, a node that does not check: the
      // general way sorts these out and reports what is misuse.)
      if (STRATA_LIKELY(p != nullptr) && STRATA_LIKELY((reinterpret_cast<std::uintptr_t>(p) & m & 8) == 0)) {
        const std::uintptr_t next = load_node_word(p, 0);
        if (STRATA_LIKELY(load_node_word(p, 1) == node_check(p, next, key_))) {
          q.head = reinterpret_cast<void*>(next);
          ++q.room;
          clear_node(p);
          quick_bytes_ -= n;
          ++allocations_;
          if (STRATA_UNLIKELY(bytes_out_ - quick_bytes_ > peak_bytes_)) peak_bytes_ = bytes_out_ - quick_bytes_;
          return p;
        }
      }
    }
    return allocate_slow(bytes, alignment, true);
  }
  /// Into the quick list of its exact size when the checks that read only the chunk table, the block's bitmap words
  /// and its first two words pass and the list has room; else the general way (which reports misuse).
  STRATA_ALWAYS_INLINE void deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept {
    if (STRATA_LIKELY(quick_request(bytes, alignment))) {
      const std::size_t m = alignment > granule ? 15 : 7;
      const std::size_t n = (bytes + m) & ~m;
      if (n > quick_max) __builtin_unreachable();  // (bytes <= quick_top_ <= quick_max)
      free_cache& q = quick_[n / granule];  // (lists 0 and 1, sizes 0 and 8, have no room: cap 0)
      chunk* const c = chunk_of(p);
      const std::size_t g = granule_of(c, p);
      if (STRATA_LIKELY(table_.offset_unsynchronized(reinterpret_cast<std::uintptr_t>(c)) == 0) &&
          STRATA_LIKELY(is_aligned(p, granule) && g >= first_) && STRATA_LIKELY(!q.full()) &&
          STRATA_LIKELY(quick_bytes_ + n <= quick_limit_) &&
          STRATA_LIKELY(g + n / granule <= chunk_size_ / granule) && STRATA_LIKELY(live_exactly(c, g, n / granule)) &&
          STRATA_LIKELY(!is_node(p, key_))) {
        san::poison(p, n);  // ASan builds: free from here on (sanitizer.hpp); nothing otherwise
        q.push(p, key_);
        quick_bytes_ += n;
        ++deallocations_;
        // Nothing live in the chunks any more, or a purge falls due: the general way's tail.
        if (STRATA_UNLIKELY(quick_bytes_ == shaped_bytes_) || STRATA_UNLIKELY(deallocations_ >= next_sweep_))
          after_free();
        return;
      }
    }
    deallocate_slow(p, bytes, alignment);
  }
  bool resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) noexcept;
  void release() noexcept;
  void trim() noexcept;
  /// The size of the live block at p (its rounded size in a chunk, its requested size upstream), or 0 when p is not
  /// the start of a live block of this engine. Nothing is reported.
  [[nodiscard]] std::size_t usable_size(const void* p) const noexcept;
  /// Frees the live block at p, in a chunk, without its size (one look at its boundaries where usable_size() and
  /// deallocate() take two), into its quick list where it has one: its size. 0, with nothing changed or reported,
  /// when p is no such block, or carries a quick list's node (freed already, or data that looks like one): the
  /// caller takes the general way, which tells the two apart.
  std::size_t deallocate_in_chunk(void* p) noexcept;
  [[nodiscard]] resource_stats stats() const noexcept;
  bool check_invariants() const noexcept;
  /// Reports every chunk (region_kind::chunk; cached when all its blocks are free) and every block sent upstream
  /// (region_kind::large) to v. For a chunk whose on_region() returns true, its runs follow in address order: the
  /// header and boundary bitmap first (a used run), then each block, the blocks waiting in quick lists as free ones.
  /// A chunk's bytes_in_use and live_blocks count the blocks live in its bitmap less those in quick lists. Reads only
  /// the bitmaps, free blocks and quick lists (never a live block's words). Allocates nothing.
  void inspect_regions(inspector& v) const;

  [[nodiscard]] unsigned policy() const noexcept { return policy_; }
  [[nodiscard]] std::size_t chunk_size() const noexcept { return chunk_size_; }
  /// Bytes in the free blocks of the chunks (listed and the top block).
  [[nodiscard]] std::size_t free_bytes() const noexcept { return free_bytes_; }
  [[nodiscard]] std::size_t chunk_capacity() const noexcept { return (chunk_size_ / granule - first_) * granule; }
  [[nodiscard]] std::size_t large_threshold() const noexcept { return large_threshold_; }
  [[nodiscard]] std::size_t chunk_count() const noexcept { return chunk_count_; }
  /// Successful deallocate() calls so far (a caller can tell whether its free was taken or reported).
  [[nodiscard]] std::uint64_t deallocation_count() const noexcept { return deallocations_; }
  /// Rounds requests with class_rounded() from now on, and keeps quick lists for the class sizes where it has quick
  /// lists. Call before the engine hands out a block.
  void class_sizes() noexcept;
  /// Freed blocks waiting in quick lists, and their bytes (free, though the bitmap shows them live).
  [[nodiscard]] std::size_t cached_blocks() const noexcept;
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
  /// granule of a free block"), the summary (one bit per state word: it holds a block start), the purge map (one bit
  /// per page: given back to the OS), then blocks from granule `first` to `end`. Granule `end` (just past the chunk)
  /// reads as a block start: the sentinel. The summary lets the end of a live block be found in a few words whatever
  /// its size (a 32 KiB block spans 128 state words).
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
    std::uint64_t* summary() noexcept { return states() + words; }
    const std::uint64_t* summary() const noexcept { return states() + words; }
    std::uint64_t* purge_map() noexcept { return summary() + (words + 63) / 64; }
    const std::uint64_t* purge_map() const noexcept { return summary() + (words + 63) / 64; }
  };
  enum : std::uint64_t { st_start = 1, st_free = 2 };
  static constexpr std::uint64_t start_bits = 0x5555555555555555ull;

  /// What a free block holds in its own memory (the links only from min_listed bytes up); its last 8 bytes repeat
  /// the size.
  /// Built with ASan, free blocks are poisoned (sanitizer.hpp): their words are read and written unchecked.
  struct free_block {
    san::free_word<std::size_t> size;
    san::free_word<free_block*> next;
    san::free_word<free_block*> prev;
  };

  static unsigned state(const chunk* c, std::size_t g) noexcept {
    return static_cast<unsigned>(c->states()[g >> 5] >> (2 * (g & 31))) & 3;
  }
  // Every write of the state words goes through these two, which keep the summary.
  static void set(chunk* c, std::size_t g, std::uint64_t bits) noexcept {
    c->states()[g >> 5] |= bits << (2 * (g & 31));
    if ((bits & st_start) != 0) c->summary()[g >> 11] |= std::uint64_t{1} << ((g >> 5) & 63);
  }
  static void clear(chunk* c, std::size_t g, std::uint64_t bits) noexcept {
    std::uint64_t& w = c->states()[g >> 5];
    w &= ~(bits << (2 * (g & 31)));
    if ((bits & st_start) != 0 && (w & start_bits) == 0)
      c->summary()[g >> 11] &= ~(std::uint64_t{1} << ((g >> 5) & 63));
  }
  static san::free_word<std::size_t>& footer(char* block_end) noexcept {
    return *reinterpret_cast<san::free_word<std::size_t>*>(block_end - 8);
  }
  static std::size_t next_boundary(const chunk* c, std::size_t g) noexcept;
  static std::size_t prev_boundary(const chunk* c, std::size_t g) noexcept;

  chunk* chunk_of(const void* p) const noexcept {
    return reinterpret_cast<chunk*>(reinterpret_cast<std::uintptr_t>(p) & ~(chunk_size_ - 1));
  }
  std::uintptr_t tag_of(const chunk* c) const noexcept {
    return reinterpret_cast<std::uintptr_t>(this) ^ reinterpret_cast<std::uintptr_t>(c) ^ 0x465245454C495354ull;
  }
  bool ours(const void* p) const noexcept;
  /// The first granule of blocks in a chunk of chunk_size bytes (past its header and bitmaps).
  static std::size_t first_granule(std::size_t chunk_size) noexcept;
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
  /// Frees p, the live block of n bytes at granule g of c: into its quick list when `quick` (quick_on_ and
  /// quick_size(n); the caller looked at its node), else merged now; then after_free(). A corrupt neighbour
  /// (reported) keeps it live.
  void free_live(chunk* c, std::size_t g, void* p, std::size_t n, bool quick) noexcept;
  bool live_block(const void* p, std::size_t bytes, std::size_t alignment, std::size_t n, chunk*& c,
                  std::size_t& g) noexcept;
  STRATA_COLD void report_bad_start(chunk* c, std::size_t g, const void* p, std::size_t bytes,
                                    std::size_t alignment) noexcept;
  STRATA_COLD void report_wrong_size(const void* p, std::size_t bytes, std::size_t alignment, std::size_t real,
                                     const char* why) const noexcept;

  /// Whether a request may be served by (or its free go to) a quick list: 1 to quick_top_ bytes (so within the
  /// large threshold, and 0 bytes go the general way), alignment 1, 2, 4, 8 or 16.
  STRATA_ALWAYS_INLINE bool quick_request(std::size_t bytes, std::size_t alignment) const noexcept {
    return bytes - 1 < quick_top_ && alignment <= 16 && ((0x10116u >> alignment) & 1) != 0;
  }
  /// Whether granule g (>= first_) of c starts a live block of exactly k granules (2 to 128), ending within the chunk
  /// (g + k <= the sentinel's granule): pair(g) is "start, not free", every pair after it up to g + k is 00 (a live
  /// block's inside: any bit there means a start there, or a free block's end whose start is there too), and pair(g + k)
  /// is a start. Without a branch: reads the state words of g and of g + k and the (at most three) words between,
  /// masks them and tests them together.
  alignas(64) static constexpr std::uint64_t span_masks[5][4] = {
      {1, 0, 0, 0}, {~std::uint64_t{0}, 0, 0, 0}, {~std::uint64_t{0}, ~std::uint64_t{0}, 0, 0},
      {~std::uint64_t{0}, ~std::uint64_t{0}, ~std::uint64_t{0}, 0},
      {~std::uint64_t{0}, ~std::uint64_t{0}, ~std::uint64_t{0}, ~std::uint64_t{0}}};
  STRATA_ALWAYS_INLINE static bool live_exactly(const chunk* c, std::size_t g, std::size_t k) noexcept {
    const std::uint64_t* s = c->states();
    const std::size_t e = g + k, i0 = g >> 5, i1 = e >> 5, d = i1 - i0;  // d <= 4
    const unsigned gb = 2 * static_cast<unsigned>(g & 31), eb = 2 * static_cast<unsigned>(e & 31);
    const std::uint64_t w0 = s[i0] >> gb;  // pair(g) in bits 0-1, the later granules' of its word above
    const std::uint64_t w1 = s[i1];
    const std::uint64_t below_e = (std::uint64_t{1} << eb) - 1;
    // By d: what of g's word counts beyond g + k's (all of it, or when one word holds both, pair(g) alone), and
    // which of the three words before g + k's lie between (a table read: a branch on d would be mispredicted on
    // every other free).
    const std::uint64_t* m = span_masks[d];
    // g's word from g on (up to g + k when that is in it too), g + k's word below it (m[0] >> 1: none when it is g's),
    // the words between (i1 - 3 >= first_ / 32 - 3 > 0), then the start at g + k.
    std::uint64_t bad = (w0 & ((below_e >> gb) | m[0])) ^ st_start;
    bad |= w1 & below_e & (m[0] >> 1);
    bad |= (s[i1 - 1] & m[1]) | (s[i1 - 2] & m[2]) | (s[i1 - 3] & m[3]);
    return (bad | ((~w1 >> eb) & 1)) == 0;
  }
  /// grow: take a chunk from upstream (or pass the request there) when the chunks have no room; else nullptr.
  void* allocate_slow(std::size_t bytes, std::size_t alignment, bool grow);
  STRATA_NOINLINE void deallocate_slow(void* p, std::size_t bytes, std::size_t alignment) noexcept;
  STRATA_NOINLINE void after_free() noexcept;
  std::size_t quick_blocks() const noexcept;

  // Quick lists: a freed block of quick_min..quick_max bytes waits, still live in the bitmap, in the list of its exact
  // size, made a node (free_cache); the node tells it from a live block. Flushes give blocks back through free_range.
  bool quick_size(std::size_t n) const noexcept {
    return n - quick_min <= quick_max - quick_min ||
           (classes_ && n - (class_min + 1) < class_max - class_min && n % 1024 == 0);
  }
  /// The bytes a request takes: rounded(), or class_rounded() after class_sizes().
  std::size_t request_bytes(std::size_t bytes, std::size_t alignment) const noexcept {
    return classes_ ? class_rounded(bytes, alignment) : rounded(bytes, alignment);
  }
  /// The quick list of blocks of n bytes (quick_size(n)), and the size of list i's blocks.
  static std::size_t quick_slot(std::size_t n) noexcept {
    return n <= quick_max ? n / granule : quick_max / granule + n / 1024;
  }
  static std::size_t quick_slot_size(std::size_t i) noexcept {
    return i <= quick_max / granule ? i * granule : (i - quick_max / granule) * 1024;
  }
  static constexpr std::size_t quick_slots = quick_max / granule + 1 + class_max / 1024;
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
  void set_aside(std::size_t k, std::size_t n) noexcept;
  void note_freed(std::size_t n) noexcept;

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
  /// A block of `bytes` handed out the general way (in a chunk: `shaped` also counts it there).
  void note_allocation(std::size_t bytes, bool shaped) noexcept {
    ++allocations_;
    bytes_out_ += bytes;
    if (shaped) {
      ++shaped_;
      shaped_bytes_ += bytes;
    }
    if (bytes_out_ - quick_bytes_ > peak_bytes_) peak_bytes_ = bytes_out_ - quick_bytes_;
  }
  /// A block of `bytes` taken back the general way.
  void note_deallocation(std::size_t bytes, bool shaped) noexcept {
    ++deallocations_;
    bytes_out_ -= bytes;
    if (shaped) {
      --shaped_;
      shaped_bytes_ -= bytes;
    }
  }

  // Fixed at construction.
  chunk_hook hook_ = nullptr;
  void* hook_context_ = nullptr;
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
  std::size_t quick_top_ = 0;  // requests of 1 to quick_top_ bytes may use the quick lists (0: none do)
  std::size_t quick_limit_ = 0;
  std::uintptr_t key_ = 0;  // the quick lists' node key

  bool classes_ = false;  // class_sizes(): requests rounded to classes from class_min up, quick lists for them

  // Quick lists: quick_[quick_slot(n)] holds blocks of exactly n bytes.
  free_cache quick_[quick_slots];
  std::size_t quick_bytes_ = 0;
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

  // Counts. A block waiting in a quick list is free, but still counts in bytes_out_, shaped_ and shaped_bytes_: a quick
  // list's push and pop change only quick_bytes_ (bytes in use = bytes_out_ - quick_bytes_; blocks handed out from
  // chunks = shaped_ - the quick lists' blocks).
  std::size_t bytes_out_ = 0, peak_bytes_ = 0;
  std::size_t shaped_ = 0, shaped_bytes_ = 0;  // blocks in chunks live in the bitmap (but set-aside ones), their bytes
  std::uint64_t allocations_ = 0, deallocations_ = 0, failed_ = 0;
  large_part<false> large_;  // requests sent upstream (the owner locks)
  // The chunks (most of them: see chunk_table), for the quick free's ownership test. Its slots come last.
  chunk_table<chunk_source_storage<false>> table_;
};

}  // namespace strata::detail
