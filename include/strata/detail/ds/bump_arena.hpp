// SPDX-License-Identifier: MIT
// strata/detail/ds/bump_arena.hpp: a thread-safe bump allocator whose blocks are never freed one by one, only all at
// once (the C API's persistent allocation).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <mutex>

#include <strata/stats.hpp>

namespace strata::detail {

/// Chunks from upstream, carved front to back. allocate is lock-free (one compare-and-swap on the current chunk's
/// offset); a new chunk is taken under a mutex. Requests above a quarter of a chunk get a chunk of their own.
class bump_arena {
 public:
  static constexpr std::size_t default_chunk_size = std::size_t{1} << 20;

  explicit bump_arena(std::pmr::memory_resource* upstream, std::size_t chunk_size = default_chunk_size) noexcept
      : upstream_(upstream), chunk_size_(chunk_size) {}
  ~bump_arena() { release(); }
  bump_arena(const bump_arena&) = delete;
  bump_arena& operator=(const bump_arena&) = delete;

  /// `bytes` aligned to `alignment` (a power of two). Throws std::bad_alloc.
  void* allocate(std::size_t bytes, std::size_t alignment);
  /// Returns every chunk upstream. Not concurrent with allocate().
  void release() noexcept;
  [[nodiscard]] resource_stats stats() const noexcept;

 private:
  struct chunk {
    chunk* next;
    std::size_t size;                 // bytes, this header included
    std::atomic<std::size_t> offset;  // first free byte, from the chunk's start
  };
  static void* carve(chunk* c, std::size_t bytes, std::size_t alignment) noexcept;
  chunk* new_chunk(std::size_t size);

  std::pmr::memory_resource* upstream_;
  std::size_t chunk_size_;
  std::atomic<chunk*> current_{nullptr};
  std::mutex lock_;        // new chunks, release()
  chunk* chunks_ = nullptr;  // every chunk, under lock_
  std::atomic<std::size_t> bytes_{0}, held_{0}, peak_{0};
  std::atomic<std::uint64_t> allocations_{0}, failed_{0}, upstream_allocations_{0}, upstream_deallocations_{0},
      deallocations_{0};
};

}  // namespace strata::detail
