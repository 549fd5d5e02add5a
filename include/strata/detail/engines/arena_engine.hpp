// SPDX-License-Identifier: MIT
// strata/detail/engines/arena_engine.hpp: the bump mechanism behind arena_resource, synchronized_arena_resource and
// the C API's persistent blocks. Chunks from upstream carved front to back, grown in place where the upstream can,
// markers to rewind to, chunks kept, purged or given back on rewind and release, a cap on the bytes held.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <mutex>
#include <type_traits>

#include <strata/config.hpp>
#include <strata/detail/core/math.hpp>
#include <strata/detail/core/sanitizer.hpp>
#include <strata/detail/core/sync.hpp>
#include <strata/error.hpp>
#include <strata/resource.hpp>
#include <strata/stats.hpp>

namespace strata::detail {

/// What happens to the memory past the position when an arena rewinds or releases.
enum class arena_decommit : std::uint8_t {
  keep,       ///< chunks stay held and resident, for the next use at no cost
  purge,      ///< chunks stay held; whole pages past the watermark go back to the OS through the upstream's purge()
  give_back,  ///< chunks past the position go back upstream; the position's chunk is purged past the watermark
};

/// What release() keeps.
enum class arena_release : std::uint8_t {
  all,         ///< every chunk goes back upstream
  keep_first,  ///< the first chunk taken from upstream stays (decommitted as the decommit policy says)
};

/// How an engine is set up (validated by the pmr class).
struct arena_config {
  std::size_t initial_chunk = std::size_t{64} << 10;  ///< bytes of the first chunk taken from upstream
  std::size_t max_chunk = std::size_t{64} << 20;      ///< chunks grow by `growth` up to this
  double growth = 2.0;
  std::size_t max_bytes = 0;  ///< bytes held from upstream at most (0: no cap)
  arena_decommit decommit = arena_decommit::keep;
  std::size_t watermark = 0;  ///< bytes past the position that stay resident when purging
  bool huge_pages = true;     ///< chunks of a huge page or more aligned to it and advised (where the upstream can)
  arena_release release = arena_release::all;
  void* buffer = nullptr;  ///< memory of the caller's used first, never given back
  std::size_t buffer_size = 0;
  /// Built for Valgrind: describe each block to memcheck as a chunk of a memory pool (the pmr classes do; the C API's
  /// persistent blocks, never freed one by one, are only made addressable).
  bool describe_blocks = false;
};

/// A position in an arena: what mark() returns and rewind() takes.
struct arena_mark {
  const void* chunk = nullptr;     // the chunk of the position (nullptr: before the first)
  std::uintptr_t position = 0;     // its first free byte
  std::size_t index = 0;           // the chunk's place in the arena's sequence
  std::uint64_t serial = 0;        // the chunk's serial number (a chunk given back and another at its address differ)
  std::uint64_t epoch = 0;         // release() calls before it
  std::uint64_t owner = 0;         // the arena's serial number
  std::uint64_t allocations = 0;   // allocations made before it (a total, never decreasing)
  std::uint64_t live = 0;          // blocks live then
  std::size_t bytes_in_use = 0;    // and their bytes
};

/// Bump allocation over chunks. Sync = false: one thread, plain cursor and counters, allocate is an align, a compare
/// and a store. Sync = true: allocate is lock-free (one compare-and-swap on the chunk's top) and new chunks are taken
/// under a mutex; mark, rewind and release must not run concurrently with anything else.
template <bool Sync>
class arena_engine {
 public:
  arena_engine(const arena_config& config, std::pmr::memory_resource* upstream, const char* name) noexcept;
  ~arena_engine() { give_back_everything(); }
  arena_engine(const arena_engine&) = delete;
  arena_engine& operator=(const arena_engine&) = delete;

  /// `bytes` at `alignment` (a power of two). Throws std::bad_alloc.
  STRATA_ALWAYS_INLINE void* allocate(std::size_t bytes, std::size_t alignment) {
    if constexpr (!Sync) {
      // bytes - 1 < avail: at least one byte and no more than there is room for (zero-size blocks, which take one
      // byte so that every block has its own address, go the slow way).
      const std::size_t pad = (std::uintptr_t{0} - cursor_) & (alignment - 1);
      const std::size_t avail = limit_ - cursor_;
      if (STRATA_LIKELY(bytes - 1 < avail && pad <= avail - bytes)) {
        const std::uintptr_t p = cursor_ + pad;
        cursor_ = p + bytes;
        ++allocations_;
        bytes_in_use_ += bytes;
        return handed(current_, reinterpret_cast<void*>(p), bytes);
      }
    } else {
      if (chunk* c = current_.load(std::memory_order_acquire); c != nullptr)
        if (void* p = carve(c, bytes, alignment); STRATA_LIKELY(p != nullptr)) return counted(c, p, bytes);
    }
    return allocate_slow(bytes, alignment);
  }

  /// The block ending at the position goes back (the position moves to its start); a large block's chunk goes back
  /// upstream; any other block is only counted (and, for a checker, freed: poisoned, and a memcheck free).
  STRATA_ALWAYS_INLINE void deallocate(void* p, std::size_t bytes) noexcept {
    if constexpr (san::valgrind) freeing(p);
    if constexpr (!Sync) {
      // A block that ends at the cursor is the last one handed out (blocks never overlap), so it lies in the current
      // chunk: no need to look at the chunk's bounds.
      const auto a = reinterpret_cast<std::uintptr_t>(p);
      const std::size_t in_use = bytes_in_use_;
      if (STRATA_UNLIKELY(in_use > peak_)) peak_ = in_use;
      if (STRATA_UNLIKELY(bytes >= large_min_ || in_use < bytes)) return deallocate_slow(p, bytes);
      san::poison(p, bytes);  // a non-last block too: the program must not touch it again
      if (a + bytes == cursor_) cursor_ = a;  // a zero-size block (one byte) only counts
      ++deallocations_;
      bytes_in_use_ = in_use - bytes;
    } else {
      deallocate_slow(p, bytes);
    }
  }

  /// Resizes the block ending at the position (up to its chunk's end) or shrinks any block; false otherwise.
  bool resize(void* p, std::size_t old_size, std::size_t new_size) noexcept;

  [[nodiscard]] arena_mark mark() const noexcept;
  /// Rewinds to `m`. Reports a marker of another arena, or one past the position, and changes nothing then.
  void rewind(const arena_mark& m) noexcept;
  /// Every block goes; chunks go back upstream but what the release policy keeps; the caller's buffer is kept.
  void release() noexcept;

  [[nodiscard]] resource_stats stats() const noexcept;
  void inspect(inspector& v, unsigned what) const;
  [[nodiscard]] bool check_invariants() const noexcept;

  [[nodiscard]] std::pmr::memory_resource* upstream() const noexcept { return upstream_; }
  [[nodiscard]] const arena_config& config() const noexcept { return config_; }
  /// Chunks taken from upstream and not given back (large blocks' own chunks included).
  [[nodiscard]] std::size_t chunk_count() const noexcept;

 private:
  using top_type = std::conditional_t<Sync, std::atomic<std::uintptr_t>, std::uintptr_t>;
  using count_type = std::conditional_t<Sync, std::atomic<std::uint64_t>, std::uint64_t>;
  using bytes_type = std::conditional_t<Sync, std::atomic<std::size_t>, std::size_t>;

  /// The header of a chunk (at its start), or the descriptor of the caller's buffer.
  struct chunk {
    chunk* next;           // the chunk used after this one (in use or a spare); for large chunks the older one
    std::uintptr_t begin;  // first byte to hand out
    std::uintptr_t end;    // one past the last
    std::size_t size;      // bytes held from upstream (0: the caller's buffer)
    std::size_t alignment; // asked of upstream
    std::size_t index;     // place in the sequence (large chunks: 0)
    std::uint64_t stamp;   // large chunks: allocations before theirs, to rewind them in order; others: a serial
    std::uintptr_t resident;  // estimate: bytes from the chunk's start that may be resident
    top_type top;          // first free byte (the current chunk's is cursor_ in the single-threaded engine)
  };

  /// Bytes a block of `bytes` takes at the position. ASan builds of the synchronized engine round blocks to whole
  /// 8-byte granules of ASan's shadow (and align them to one): two threads then never write the same shadow byte, so
  /// one thread's poisoning can never cover another's fresh block.
  static constexpr std::size_t footprint(std::size_t bytes) noexcept {
    const std::size_t n = bytes + (bytes == 0);
    return Sync && san::address_sanitizer ? (n + 7) & ~std::size_t{7} : n;
  }
  static constexpr std::size_t carve_alignment(std::size_t alignment) noexcept {
    return Sync && san::address_sanitizer && alignment < 8 ? 8 : alignment;
  }
  static void* carve(chunk* c, std::size_t bytes, std::size_t alignment) noexcept;
  /// A block handed out of chunk c: its bytes made addressable for a checker (ASan: exactly `bytes`; memcheck: a
  /// block of c's memory pool, or only addressable memory in an internal_scope or when not describing blocks).
  STRATA_ALWAYS_INLINE void* handed(chunk* c, void* p, std::size_t bytes) noexcept {
    if constexpr (san::valgrind) vg_handed(c, p, bytes);
    return san::handed_out(p, bytes);
  }
  void vg_handed(chunk* c, void* p, std::size_t bytes) noexcept;
  /// Valgrind builds: p is being freed (a memcheck free of it in its chunk's pool; before the checks, as every
  /// strata resource does, so memcheck names a second free with both stacks).
  void freeing(void* p) noexcept;
  /// Valgrind builds: the memcheck pool of chunk c (its header's address names it) made, emptied, dropped.
  void vg_chunk_made(const void* c) noexcept;
  void vg_chunk_emptied(const void* c, std::uintptr_t begin, std::uintptr_t keep_to) noexcept;
  void vg_chunk_dropped(const void* c) noexcept;
  void vg_resized(chunk* c, void* p, std::size_t old_size, std::size_t new_size) noexcept;
  /// The chunk (of the sequence up to the position, or large) that holds p, or nullptr; under the lock.
  chunk* chunk_of(const void* p) const noexcept;
  /// The single-threaded engine's bump at the cursor, or nullptr when the chunk has no room.
  STRATA_ALWAYS_INLINE void* bump(std::size_t bytes, std::size_t alignment) noexcept {
    const std::size_t n = bytes + (bytes == 0);  // every block a distinct address (the single-threaded footprint)
    const std::size_t pad = (std::uintptr_t{0} - cursor_) & (alignment - 1);
    const std::size_t avail = limit_ - cursor_;
    if (STRATA_UNLIKELY(n > avail || pad > avail - n)) return nullptr;
    const std::uintptr_t p = cursor_ + pad;
    cursor_ = p + n;
    return reinterpret_cast<void*>(p);
  }
  void* counted(chunk* c, void* p, std::size_t bytes) noexcept;
  STRATA_NOINLINE void* allocate_slow(std::size_t bytes, std::size_t alignment);
  STRATA_NOINLINE void deallocate_slow(void* p, std::size_t bytes) noexcept;
  void* allocate_large(std::size_t bytes, std::size_t alignment);
  bool try_grow_in_place(chunk* c, std::size_t need);
  chunk* new_chunk(std::size_t need, std::size_t alignment);
  void enter(chunk* c) noexcept;
  void leave_current() noexcept;
  std::uintptr_t top_of(const chunk* c) const noexcept;
  void set_top(chunk* c, std::uintptr_t top) noexcept;
  void drop_after(chunk* keep_upto, std::uintptr_t position, bool releasing) noexcept;
  void purge_tail(chunk* c, std::uintptr_t from, std::size_t& watermark) noexcept;
  void give_back_chunk(chunk* c) noexcept;
  void give_back_everything() noexcept;
  void drop_large_after(std::uint64_t stamp) noexcept;
  [[noreturn]] void fail();
  /// The huge page size chunks are aligned to and advised for; 0 when not.
  std::size_t huge_page_size() const noexcept;
  void report(error_kind kind, const void* p, std::size_t bytes, const char* detail) const noexcept;

  // Hot: the single-threaded engine's position and counters.
  std::uintptr_t cursor_ = 0;
  std::uintptr_t limit_ = 0;
  std::conditional_t<Sync, std::atomic<chunk*>, chunk*> current_{nullptr};
  count_type allocations_{0};
  count_type deallocations_{0};
  bytes_type bytes_in_use_{0};
  bytes_type peak_{0};
  std::size_t large_min_;  // smallest request that may have a chunk of its own

  arena_config config_;
  std::pmr::memory_resource* upstream_;
  resource* strata_upstream_;  // upstream as a strata::resource, or null
  memory_capabilities caps_;
  const char* name_;
  std::uint64_t id_;
  chunk buffer_chunk_{};
  chunk* first_ = nullptr;  // the sequence: the caller's buffer, then chunks in use, then spares
  chunk* large_ = nullptr;  // chunks of one large block each, newest first
  std::size_t next_chunk_;
  std::uint64_t serials_ = 0;  // chunks taken so far
  std::uint64_t epoch_ = 0;    // release() calls so far
  mutable lock_if<Sync> lock_;  // new chunks, large chunks, walks of the chunks
  bytes_type held_{0};
  std::size_t large_count_ = 0;
  count_type failed_{0}, upstream_allocations_{0}, upstream_deallocations_{0};
};

extern template class arena_engine<false>;
extern template class arena_engine<true>;

}  // namespace strata::detail
