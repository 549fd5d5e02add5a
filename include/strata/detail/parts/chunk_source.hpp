// SPDX-License-Identifier: MIT
// strata/detail/parts/chunk_source.hpp: where every strategy's chunks come from. Chunks of one size, aligned to their size,
// taken from an upstream resource and registered in a block map; a bounded cache of empty chunks; what the upstream
// can do for them (zeroed pages, purging, huge pages), asked once through strata::resource::capabilities(); the
// upstream counters. The strategies format and list chunks; the source only hands them out and takes them back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory_resource>

#include <strata/detail/ds/block_map.hpp>
#include <strata/detail/core/sync.hpp>
#include <strata/inspect.hpp>
#include <strata/resource.hpp>

namespace strata::detail {

/// What `upstream` can do for its memory: its capabilities when it is a strata::resource (adaptors forward theirs),
/// nothing otherwise.
memory_capabilities capabilities_of(std::pmr::memory_resource* upstream) noexcept;

/// Sync = true: any number of threads may take and give chunks at once (a spin lock over the cache, atomic
/// counters). Sync = false: one thread at a time.
template <bool Sync>
class chunk_source {
 public:
  struct config {
    std::size_t chunk_size = 0;  ///< a power of two, at least block_map_granule
    std::size_t max_cached = 0;  ///< empty chunks kept for reuse
    bool zeroed = false;         ///< take fresh chunks zeroed where upstream does that without writing
    bool huge_pages = false;     ///< advise each fresh chunk as huge pages (where upstream can and it holds whole ones)
    block_map* map = &g_block_map;  ///< where chunks are registered while the source holds them
    /// Beyond max_cached, up to this many empty chunks (and no more than are in use) are kept while they keep being
    /// taken again: once more than max_cached have been cached for decay_ms, drain_excess() hands the rest out.
    /// Not above max_cached: none beyond it.
    std::size_t burst_cached = 0;
    std::uint32_t decay_ms = 0;
  };

  chunk_source(std::pmr::memory_resource* upstream, const config& cfg) noexcept;
  /// Returns the cached chunks upstream. Chunks taken and not given back are the owner's to release first.
  ~chunk_source() { release_cached(); }
  chunk_source(const chunk_source&) = delete;
  chunk_source& operator=(const chunk_source&) = delete;

  [[nodiscard]] std::pmr::memory_resource* upstream() const noexcept { return upstream_; }
  [[nodiscard]] std::size_t chunk_size() const noexcept { return cfg_.chunk_size; }
  [[nodiscard]] const memory_capabilities& capabilities() const noexcept { return caps_; }
  /// Whether fresh chunks are advised as huge pages.
  [[nodiscard]] bool huge_pages() const noexcept { return huge_; }

  /// A chunk, registered: a cached one, else a fresh one from upstream. `zeroed` (if given) says whether it reads as
  /// zero (fresh chunks with config::zeroed over an upstream with zeroed pages). Throws std::bad_alloc; nothing is
  /// held then.
  void* take(bool* zeroed = nullptr);
  /// As take(), nullptr where take() throws.
  void* try_take(bool* zeroed = nullptr) noexcept;
  /// Keeps an empty chunk (still registered; its last word becomes the cache's link) when the cache has room: true.
  /// False when it is full: the caller then gives the chunk back with release(), after what must come first.
  bool cache(void* chunk) noexcept;
  /// Unregisters a chunk and returns it upstream.
  void release(void* chunk) noexcept;
  /// Empties the cache and calls f(chunk) on each chunk it held (the caller's steps before release(), then
  /// release()); the cache's links are read before each call, so f may write anywhere in the chunk.
  template <class F>
  void drain_cached(F&& f) noexcept {
    drain_beyond(0, false, f);
  }
  /// When more than max_cached chunks have been cached for decay_ms: takes those beyond max_cached out of the cache
  /// and calls f(chunk) on each, as drain_cached() does. Else nothing (one look at the clock while above max_cached).
  template <class F>
  void drain_excess(F&& f) noexcept {
    drain_beyond(cfg_.max_cached, true, f);
  }
  /// Returns every cached chunk upstream at once.
  void release_cached() noexcept {
    drain_cached([this](void* c) { release(c); });
  }

  /// Gives the physical memory of whole pages [chunk + offset, + bytes) back through upstream's purge. False when
  /// upstream cannot or refused.
  bool purge(void* chunk, std::size_t offset, std::size_t bytes) noexcept;

  /// A region of `bytes` (a multiple of the chunk size) aligned to the chunk size, straight from upstream, advised and
  /// zeroed as chunks are; not registered (the caller registers the chunks it carves). Throws std::bad_alloc.
  void* take_region(std::size_t bytes, bool* zeroed);
  void release_region(void* region, std::size_t bytes) noexcept;
  /// Zero-filled memory for the owner's own tables (aligned to max_align_t), or nullptr; and its return.
  void* take_table(std::size_t bytes) noexcept;
  void release_table(void* table, std::size_t bytes) noexcept;

  /// Chunks taken from upstream and not returned (cached ones included); cached ones; upstream calls.
  [[nodiscard]] std::size_t held() const noexcept { return counter_read(held_); }
  [[nodiscard]] std::size_t cached() const noexcept {
    lock_guard g(lock_);
    return cached_;
  }
  [[nodiscard]] std::uint64_t upstream_allocations() const noexcept { return counter_read(upstream_allocations_); }
  [[nodiscard]] std::uint64_t upstream_deallocations() const noexcept {
    return counter_read(upstream_deallocations_);
  }

  /// Reports each cached empty chunk to v as a cached region of `kind`, under the cache's lock.
  void inspect_cached(inspector& v, region_kind kind) const {
    lock_guard g(lock_);
    for (void* c = cached_list_; c != nullptr; c = *link(c)) {
      region_detail r;
      r.address = c;
      r.size = cfg_.chunk_size;
      r.kind = kind;
      r.cached = true;
      v.on_region(r);
    }
  }
  /// Checks the cache (count, bound, every chunk registered and aligned); what is broken, or nullptr.
  [[nodiscard]] const char* check() const noexcept;

  /// Its lock, for fork() (lock_set).
  void add_fork_locks(lock_set& s) const noexcept { s.add(lock_); }

 private:
  using lock_type = lock_if<Sync, spin_lock>;
  using lock_guard = std::lock_guard<lock_type>;

  void** link(void* chunk) const noexcept {
    return reinterpret_cast<void**>(static_cast<char*>(chunk) + cfg_.chunk_size) - 1;
  }
  void* fresh(std::size_t bytes, bool* zeroed);
  /// Takes the cached chunks beyond the newest `keep` out of the cache (when `timed`, only once more than max_cached
  /// have been cached for decay_ms) and calls f on each, its link read first.
  template <class F>
  void drain_beyond(std::size_t keep, bool timed, F& f) noexcept {
    void* c = nullptr;
    {
      lock_guard g(lock_);
      if (timed && (over_since_ == 0 || monotonic_since(over_since_) < std::uint64_t{cfg_.decay_ms} * 1000000u))
        return;
      for (; cached_ > keep; --cached_) {
        void* const next = *link(cached_list_);
        *link(cached_list_) = c;
        c = cached_list_;
        cached_list_ = next;
      }
      over_since_ = 0;
    }
    while (c != nullptr) {
      void* next = *link(c);
      f(c);
      c = next;
    }
  }
  /// Nanoseconds since a monotonic time `t` (see os::monotonic_ns).
  static std::uint64_t monotonic_since(std::uint64_t t) noexcept;

  std::pmr::memory_resource* upstream_;
  resource* strata_upstream_;  // upstream as a strata::resource, or null
  config cfg_;
  memory_capabilities caps_;
  bool zeroed_;  // fresh chunks arrive zeroed
  bool huge_;    // fresh chunks are advised as huge pages

  mutable lock_type lock_;
  void* cached_list_ = nullptr;
  std::size_t cached_ = 0;
  std::uint64_t over_since_ = 0;  // since when more than max_cached are cached (monotonic ns | 1), else 0
  counter_if<Sync, std::size_t> held_{0};
  counter_if<Sync, std::uint64_t> upstream_allocations_{0};
  counter_if<Sync, std::uint64_t> upstream_deallocations_{0};
};

extern template class chunk_source<false>;
extern template class chunk_source<true>;

/// Storage for the ds layer's tables (class_map, chunk_table) through a chunk source: an engine's tables come from
/// upstream too.
template <bool Sync>
struct chunk_source_storage {
  chunk_source<Sync>* source = nullptr;
  void* allocate(std::size_t bytes) noexcept { return source->take_table(bytes); }
  void deallocate(void* p, std::size_t bytes) noexcept { source->release_table(p, bytes); }
};

}  // namespace strata::detail
