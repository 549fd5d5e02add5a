// SPDX-License-Identifier: MIT
// strata/free_list_resource.hpp: variable sizes from chunks, with explicit free lists, splitting, coalescing (deferred
// through quick lists of small freed blocks with standard checks) and a choice of fit policy (segregated, TLSF-style,
// by default).
#pragma once

#include <strata/detail/core/sync.hpp>
#include <strata/config.hpp>

#include <atomic>
#include <cstddef>
#include <memory_resource>
#include <mutex>
#include <type_traits>

#include <strata/detail/engines/free_list_engine.hpp>
#include <strata/detail/parts/heap_registry.hpp>
#include <strata/detail/parts/thread_registry.hpp>
#include <strata/options.hpp>
#include <strata/page_resource.hpp>
#include <strata/resource.hpp>

STRATA_PUBLIC_BEGIN
namespace strata {



namespace detail {

struct free_list_heap;  // a thread's cache of freed blocks (synchronized resource)

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
  void release() noexcept;
  /// Coalesces the blocks waiting in quick lists (synchronized: the calling thread's cache first), returns the cached
  /// empty chunks upstream and gives back the whole free pages of every free block (over a page_resource), whatever
  /// their size.
  void trim() noexcept;

  [[nodiscard]] fit_policy policy() const noexcept { return static_cast<fit_policy>(first_.engine.policy()); }
  [[nodiscard]] std::size_t chunk_size() const noexcept { return first_.engine.chunk_size(); }
  /// Bytes of a chunk that can hold blocks (the rest is its header and boundary bitmap).
  [[nodiscard]] std::size_t chunk_capacity() const noexcept { return first_.engine.chunk_capacity(); }
  /// Largest request served from chunks; larger ones go upstream.
  [[nodiscard]] std::size_t large_threshold() const noexcept { return first_.engine.large_threshold(); }
  /// Bytes a request occupies in a chunk: `bytes` rounded up to 8 (16 when alignment >= 16), at least 8.
  [[nodiscard]] static std::size_t block_size_for(std::size_t bytes, std::size_t alignment) noexcept {
    return free_list_engine::rounded(bytes, alignment);
  }
  /// Bytes a request occupies as stats() counts it (bytes_in_use is the sum over live blocks): block_size_for()
  /// inside chunks, the request itself above large_threshold() (or aligned above 4 KiB). Freeing with any size that
  /// rounds the same is correct.
  [[nodiscard]] std::size_t round_size(std::size_t bytes,
                                       std::size_t alignment = alignof(std::max_align_t)) const noexcept {
    if (goes_upstream(bytes, alignment)) return bytes;
    return free_list_engine::rounded(bytes, alignment);
  }
  /// Chunks held now (cached empty ones included; the synchronized resource: of every arena).
  [[nodiscard]] std::size_t chunk_count() const noexcept;
  /// Freed blocks waiting in quick lists (standard checks, segregated policy; 0 otherwise; synchronized: and in
  /// thread caches), and their bytes. They count as free in stats(); trim() coalesces them.
  [[nodiscard]] std::size_t cached_blocks() const noexcept;
  [[nodiscard]] std::size_t cached_bytes() const noexcept;
  /// Arenas in use: 1, or for the synchronized resource up to one per CPU (at most 8), made as threads come.
  [[nodiscard]] unsigned arena_count() const noexcept;
  /// Walks every chunk and checks boundary bitmaps, block headers, free lists, bins and counts; reports a broken
  /// invariant through the error handler and returns false. (Synchronized: while no other thread uses the resource.)
  [[nodiscard]] bool check_invariants() const noexcept;

  /// The options the resource was made with.
  [[nodiscard]] const options& get_options() const noexcept { return opts_; }

 protected:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    // (Built with ASan: exactly the bytes asked for addressable; built for Valgrind: `call` describes the block to
    // memcheck; nothing otherwise.)
    const detail::san::tracked_call call(this);
    void* p;
    if constexpr (!Sync) p = first_.engine.allocate(bytes, alignment);
    else p = allocate_sync(bytes, alignment);
    return call.allocated(detail::san::handed_out(p, bytes), bytes);
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
    detail::san::tracked_call(this).freeing(p);
    if constexpr (!Sync) first_.engine.deallocate(p, bytes, alignment);
    else deallocate_sync(p, bytes, alignment);
  }
  bool do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) override {
    bool done;
    if constexpr (!Sync) done = first_.engine.resize(p, old_size, new_size, alignment);
    else done = resize_sync(p, old_size, new_size, alignment);
    if (done) detail::san::tracked_call(this).resized(p, old_size, new_size);  // Valgrind builds
    return done;
  }
  resource_stats do_stats() const noexcept override;
  /// "free_list" or "synchronized_free_list".
  const char* do_name() const noexcept override { return Sync ? "synchronized_free_list" : "free_list"; }
  /// The resource chunks and large requests come from.
  std::pmr::memory_resource* do_upstream_resource() const noexcept override { return upstream_; }
  /// No classes. Tiers (synchronized): each arena ("arena", its engine's stats) and the threads' caches
  /// ("thread_caches": what was allocated and freed through them, the blocks they hold as free_blocks and
  /// free_bytes, their own memory as bytes_held). Regions: every chunk and large block, each arena under its lock; a
  /// block waiting in a thread's cache is live in its arena's bitmap and shows there as used.
  void do_inspect(inspector& v, unsigned what) const override;

 private:
  // Short critical sections (an upstream call at most): a spin lock (one exchange to take it, a store to give it
  // back), which yields when its holder seems preempted.
  using lock_type = detail::lock_if<Sync, detail::spin_lock>;
  /// A free list engine and the lock that serialises it. The synchronized resource has several: a thread allocates
  /// from the one its thread stripe names (or, when that one is busy, from one that is not), and a block goes back
  /// to the arena whose chunk holds it. Requests sent upstream all go through the first.
  struct alignas(64) arena {
    arena(const free_list_options& o, std::pmr::memory_resource* up, const void* owner, const char* name)
        : engine(o, up, owner, name) {}
    mutable lock_type lock;
    free_list_engine engine;
  };
  static constexpr unsigned max_arenas = Sync ? 8 : 1;

  bool goes_upstream(std::size_t bytes, std::size_t alignment) const noexcept {
    return bytes > first_.engine.large_threshold() || alignment > free_list_engine::max_alignment;
  }
  /// The arena that holds p's chunk; the first one for anything else (a request sent upstream, or misuse).
  arena& arena_of(const void* p) noexcept {
    if constexpr (Sync) {
      for (unsigned i = 1; i < max_arenas; ++i) {
        arena* a = more_[i - 1].load(std::memory_order_acquire);
        if (a == nullptr) break;  // arenas are made in order
        if (a->engine.owns(p)) return *a;
      }
    }
    (void)p;
    return first_;
  }
  /// Sync: arena i (1 <= i < arena_limit_), made from upstream on first use; nullptr when upstream has no memory.
  arena* arena_at(unsigned i);
  void free_arenas() noexcept;
  void* allocate_in_arena(std::size_t bytes, std::size_t alignment);
  /// The sum of f(engine) over the arenas, each under its lock.
  template <class F>
  std::size_t sum_over_arenas(F f) const {
    std::size_t n = 0;
    for_each_arena([&](const arena& a) {
      std::lock_guard<lock_type> g(a.lock);
      n += f(a.engine);
    });
    return n;
  }
  template <class F>
  void for_each_arena(F f) const {
    f(first_);
    if constexpr (Sync) {
      for (unsigned i = 1; i < max_arenas; ++i) {
        const arena* a = more_[i - 1].load(std::memory_order_acquire);
        if (a == nullptr) break;  // arenas are made in order
        f(*a);
      }
    }
  }

  // Sync: each thread's cache of freed blocks (see synchronized_free_list_resource). Its thread pops them without
  // a lock; frees are checked under the lock of the block's arena and pushed there.
  class heap_owner final : public per_thread_owner {
   public:
    explicit heap_owner(basic_free_list_resource* r) noexcept : r_(r) {}
    ~heap_owner() override { leave(); }
    using per_thread_owner::leave;

   protected:
    void thread_exit(void* state) noexcept override { r_->heap_exit(static_cast<free_list_heap*>(state)); }

   private:
    basic_free_list_resource* r_;
  };
  struct no_heaps {  // the unsynchronized resource: no thread has a cache
    explicit no_heaps(const void*) noexcept {}
    void* last_state() const noexcept { return nullptr; }
    void* cached_state() const noexcept { return nullptr; }
    void* registered_state() const noexcept { return nullptr; }
    void* remove_state() noexcept { return nullptr; }
  };
  void* allocate_sync(std::size_t bytes, std::size_t alignment);
  void* allocate_slow(free_list_heap* h, std::size_t bytes, std::size_t alignment);
  void deallocate_sync(void* p, std::size_t bytes, std::size_t alignment) noexcept;
  /// Whether a block of (bytes, alignment) may wait in a thread's cache when freed: its allocation and its free
  /// count in the thread's net (what it allocated less what it freed), and no other does.
  [[nodiscard]] bool cacheable(std::size_t bytes, std::size_t alignment) const noexcept;
  /// A free that no thread cache takes (the block's size, no cache for the thread): the arena's engine, locked.
  /// Frees p the arena's way under its lock; whether that arena holds more chunks than it keeps empty.
  bool deallocate_locked(void* p, std::size_t bytes, std::size_t alignment) noexcept;
  void free_in_arena(arena& a, const free_list_heap* h, void* p, std::size_t bytes, std::size_t alignment) noexcept;
  bool waits_in_cache(arena& a, const free_list_heap* h, const void* p, std::size_t bytes,
                      std::size_t alignment) const noexcept;
  bool resize_sync(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) noexcept;
  /// Under the lock of p's arena: p (a live block of n bytes) reads as a node of some thread's cache. False, reported,
  /// when it waits in one (freed already); true when it is data that only looks like a node of this thread's.
  bool node_is_live(const free_list_heap* h, const void* p, std::size_t bytes, std::size_t alignment,
                    std::size_t n) const noexcept;
  free_list_heap* calling_heap() noexcept;
  free_list_heap* make_heap() noexcept;
  void heap_exit(free_list_heap* h) noexcept;
  /// Gives k nodes of `list` (blocks of n bytes, cached by h) back to their arenas' engines.
  STRATA_NOINLINE void give_back(free_list_heap& h, void* list, std::size_t k, std::size_t n) noexcept;
  /// Gives back every block h caches.
  STRATA_NOINLINE void flush_heap(free_list_heap& h) noexcept;
  STRATA_NOINLINE void flush_if_idle(free_list_heap& h) noexcept;
  STRATA_NOINLINE void shrink_heap(free_list_heap& h) noexcept;
  STRATA_COLD void drop_heap_head(free_list_heap& h, std::size_t n) noexcept;
  struct heap_totals : heap_counts {
    std::int64_t cached_blocks = 0, cached_bytes = 0;
    std::size_t heap_bytes = 0;
  };
  heap_totals collect_heap_totals() const noexcept;
  bool check_heaps() const noexcept;

  std::pmr::memory_resource* upstream_;
  options opts_;
  free_list_options engine_opts_;  // as validated
  arena first_;
  struct no_more {};
  // Sync: arenas 1 .. arena_limit_ - 1, made in order as threads need them (their memory from upstream).
  std::conditional_t<Sync, std::atomic<arena*>[max_arenas - 1 + (Sync ? 0 : 1)], no_more> more_{};
  unsigned arena_limit_ = 1;
  std::conditional_t<Sync, std::mutex, no_more> make_lock_;
  resource_stats retired_arenas_{};  // Sync: what arenas released (and freed) counted
  // Sync: thread caches.
  std::size_t heap_max_ = 0;    // largest request a thread cache serves; 0: none (strict checks, other policies)
  std::size_t heap_limit_ = 0;  // bytes one thread cache holds at most
  std::size_t max_empty_ = 0;
  std::uintptr_t base_key_;  // cache nodes: base_key_ ^ (heap index << 48)
  struct no_registry {
    no_registry(std::pmr::memory_resource*, std::uintptr_t, std::size_t) noexcept {}
  };
  // The caches' memory and indices (destroyed after heaps_ has left the threads' registries).
  std::conditional_t<Sync, heap_registry<free_list_heap>, no_registry> registry_;
  std::conditional_t<Sync, heap_owner, no_heaps> heaps_{this};
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
/// - Quick lists (segregated policy, check_mode::standard, the default): a freed block of 16 to 1024 bytes waits in
///   the list of its exact size instead, still marked live in the bitmap, with a checked link in its first 16 bytes;
///   an allocate of that size takes it back without a search. A full list, the lists' byte bound (256 KiB at most),
///   a request no free block fits, trim(), and nothing live with more chunks held than max_empty_chunks merge the
///   waiting blocks as above. stats() counts them as free blocks; cached_blocks() tells how many wait.
///   check_mode::strict and the other policies merge every free at once.
/// - Every deallocate checks the bitmap: the pointer must start a live block of exactly the size named (no block
///   boundary inside, one right after), and neighbours' sizes and links must agree with the bitmap; a block waiting in
///   a quick list is found there. Double free, foreign and interior pointers, wrong sizes and corrupt free blocks are
///   reported through the error handler with the pointer and sizes; nothing changes. With quick lists, a double free
///   of a block whose link was overwritten after its free is reported when the block would be handed out or merged,
///   never handed out twice.
/// - Requests above large_threshold() go straight upstream (recorded, so their frees are checked too).
/// - A chunk that becomes entirely free is kept (up to max_empty_chunks) or returned upstream. Free blocks of at least
///   purge_threshold bytes give their whole pages back to the OS after purge_delay deallocations.
/// - resize(): shrinks in place always (the tail is freed and merged); grows in place when the next block is free
///   (or waiting in a quick list) and large enough.
/// - stats() adds free_bytes, free_blocks, largest_free_block and external_fragmentation().
/// - Not thread-safe: see synchronized_free_list_resource.
class free_list_resource final : public detail::basic_free_list_resource<false> {
 public:
  using basic_free_list_resource::basic_free_list_resource;
};

/// free_list_resource for many threads, in arenas: up to one per CPU (at most 8), each a whole free_list_resource
/// engine (chunks, fit, quick lists) with its own spin lock, made as threads come (arena 0 with the resource, the
/// others from upstream). A thread allocates from the arena its thread stripe names, or from another one that is not
/// busy at that moment; a free, resize or in-place check goes to the arena whose chunk holds the block, under its
/// lock. Requests sent upstream all go through arena 0. Each arena keeps its own empty chunks (max_empty_chunks each).
///
/// Thread caches (standard checks, segregated policy): each thread keeps the blocks of 16 to 1024 bytes it frees in
/// lists of their exact size, as the quick lists do, and an allocation of such a size (alignment up to 16) takes one
/// back with no lock and no atomic read-modify-write. Every free is still checked at once, under the lock of the
/// block's arena, with the engine's checks; a block waiting in any thread's cache is live in its bitmap and reads as
/// that cache's node, so freeing it again (from any thread, at the same moment too) is reported. A cache holds at most
/// four times an arena's quick lists (1 MiB with the default chunks); beyond that, older lists go back to their
/// arenas. A thread that has freed as many blocks as it allocated caches no more, and gives its cache back when
/// more chunks are held than max_empty_chunks; a thread's exit gives its cache back. Cached blocks count as free
/// blocks in stats() and in cached_blocks(); resize() cannot grow into a block waiting in a thread's cache.
///
/// stats() sums the arenas and the caches (exact when no thread is between calls; peaks: the sum of the parts'
/// peaks, an upper bound). trim() gives the calling thread's cache back, then trims every arena; other threads'
/// caches stay theirs. release() frees everything, caches included (the calling thread's cache memory and the
/// arenas' own too: threads make them again as they need them).
/// release() and check_invariants() (every arena, and the calling thread's cache) must not run while other threads
/// use the resource.
class synchronized_free_list_resource final : public detail::basic_free_list_resource<true> {
 public:
  using basic_free_list_resource::basic_free_list_resource;
};

}  // namespace strata
STRATA_PUBLIC_END
