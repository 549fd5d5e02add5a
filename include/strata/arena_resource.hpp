// SPDX-License-Identifier: MIT
// strata/arena_resource.hpp: a monotonic (bump) arena with markers to rewind to, over any upstream.
#pragma once

#include <strata/config.hpp>

#include <cstddef>
#include <memory_resource>

#include <strata/detail/core/checks.hpp>
#include <strata/detail/engines/arena_engine.hpp>
#include <strata/page_resource.hpp>
#include <strata/resource.hpp>

STRATA_PUBLIC_BEGIN
namespace strata {

/// What an arena does with the memory past its position when it rewinds or releases:
/// `keep` (held and resident, reused at no cost), `purge` (held, whole pages past the watermark given back to the OS
/// through the upstream's purge(); needs capabilities().purge of the upstream, else it keeps), `give_back` (chunks
/// past the position go back upstream, the position's own chunk is purged past the watermark).
using arena_decommit = detail::arena_decommit;
/// What release() keeps: `all` gives every chunk back, `keep_first` keeps the first chunk taken from upstream.
using arena_release = detail::arena_release;

/// Options of an arena_resource or synchronized_arena_resource.
struct arena_options {
  /// Bytes of the first chunk taken from upstream (rounded up to 4 KiB).
  std::size_t initial_size = std::size_t{64} << 10;
  /// Chunks grow by `growth_factor` up to this size; a request larger than a quarter of the next chunk gets a chunk
  /// of its own, which goes back upstream as soon as the block is freed.
  std::size_t max_chunk_size = std::size_t{64} << 20;
  /// At least 1.
  double growth_factor = 2.0;
  /// Upper bound on the bytes held from upstream (chunks and large blocks); 0: none. A request that would pass it is
  /// std::bad_alloc, and the arena stays usable.
  std::size_t max_bytes = 0;
  arena_decommit decommit = arena_decommit::keep;
  /// With `purge` and `give_back`: this many bytes past the new position stay resident, for the next use.
  std::size_t resident_watermark = 0;
  arena_release release = arena_release::all;
};

/// A bump allocator: each allocate takes the next bytes of the current chunk (an align, a compare and a store), and
/// memory comes back all at once, by release(), by rewinding to a marker taken earlier, or when a scope ends.
///
/// - Chunks come from upstream, growing geometrically. Where the upstream can resize in place (page_resource reserves
///   address space after large spans), a full chunk grows in place first: the arena then commits as it grows.
/// - deallocate() of the block that ends at the position rolls the position back (so blocks freed in reverse order
///   are reused); a block large enough to have a chunk of its own gives the chunk back; any other deallocate only
///   counts. resize() grows or shrinks the last block in place and shrinks any other.
/// - mark() and rewind(m): everything allocated after m goes at once. scope does it for a block of code. Rewinding to
///   a marker of another arena, or to one past the position (rewound already), is reported through
///   strata::report_error and changes nothing.
/// - An initial buffer (as std::pmr::monotonic_buffer_resource's) is used first; it is never given back.
/// - stats(): allocations and deallocations count calls; bytes_in_use is the sum of the sizes asked for by blocks
///   not yet deallocated (the arena counts each deallocate's size, whether or not it could reuse the bytes), and
///   release() sets it to zero. rewind(m) sets bytes_in_use back to its value at mark() and counts the blocks allocated
///   since as deallocated: exact as long as no block allocated before m was deallocated between mark() and rewind()
///   (such a block counts as live again: the arena does not record which blocks were freed). bytes_held: chunks held
///   from upstream; bytes_resident: pages of them used since they were last purged.
/// - Not thread-safe: one thread at a time (synchronized_arena_resource for several).
template <bool Sync>
class basic_arena_resource : public resource {
  using engine = detail::arena_engine<Sync>;

 public:
  using options = arena_options;

  /// A position of the arena, to rewind to. Valid until the arena is rewound past it or released.
  class marker {
   public:
    marker() = default;

   private:
    friend class basic_arena_resource;
    explicit marker(const detail::arena_mark& m) noexcept : m_(m) {}
    detail::arena_mark m_;
  };

  /// Rewinds the arena to where it was when the scope began, when the scope ends. Scopes nest.
  class scope {
   public:
    explicit scope(basic_arena_resource& arena) noexcept : arena_(arena), start_(arena.mark()) {}
    ~scope() { arena_.rewind(start_); }
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;
    [[nodiscard]] const marker& start() const noexcept { return start_; }

   private:
    basic_arena_resource& arena_;
    marker start_;
  };

  basic_arena_resource() : basic_arena_resource(options{}, default_page_resource()) {}
  explicit basic_arena_resource(std::pmr::memory_resource* upstream) : basic_arena_resource(options{}, upstream) {}
  /// Throws: std::invalid_argument for a null upstream, growth_factor below 1 or max_chunk_size below initial_size.
  explicit basic_arena_resource(const options& opts,
                                std::pmr::memory_resource* upstream = default_page_resource());
  /// Uses [buffer, buffer + buffer_size) first (not owned; it must outlive the arena), then upstream.
  basic_arena_resource(void* buffer, std::size_t buffer_size,
                       std::pmr::memory_resource* upstream = default_page_resource())
      : basic_arena_resource(buffer, buffer_size, options{}, upstream) {}
  basic_arena_resource(void* buffer, std::size_t buffer_size, const options& opts,
                       std::pmr::memory_resource* upstream = default_page_resource());
  /// Returns every chunk upstream.
  ~basic_arena_resource() override;  // out of line: the engine's code is the library's own

  /// Effects: every block goes at once; chunks go back upstream but what the release policy keeps (decommitted as
  /// the decommit policy says); the arena then starts again at its initial buffer or first chunk.
  void release() noexcept;

  /// The current position.
  [[nodiscard]] marker mark() const noexcept;
  /// Effects: frees every block allocated after `m` was taken; memory past the position is kept, purged or given
  /// back as the decommit policy says. Misuse (a marker of another arena, or past the position) is reported and
  /// changes nothing.
  void rewind(const marker& m) noexcept;

  [[nodiscard]] const options& get_options() const noexcept { return opts_; }
  /// Chunks held from upstream now (large blocks' own chunks included).
  [[nodiscard]] std::size_t chunk_count() const noexcept;
  /// Verifies the chunks, the position and the counters; reports a broken invariant and returns false.
  [[nodiscard]] bool check_invariants() const noexcept;

 protected:
  // Out of line, in the library, where the engine's fast paths inline into them (the engine is not exported).
  void* do_allocate(std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override;
  bool do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) override;
  resource_stats do_stats() const noexcept override;
  memory_capabilities do_capabilities() const noexcept override;
  const char* do_name() const noexcept override;
  std::pmr::memory_resource* do_upstream_resource() const noexcept override { return engine_.upstream(); }
  void do_inspect(inspector& v, unsigned what) const override;

 private:
  STRATA_COLD void report_bad_alignment(void* p, std::size_t bytes, std::size_t alignment) const noexcept;
  static detail::arena_config config_of(const options& opts, std::pmr::memory_resource* upstream, void* buffer,
                                        std::size_t buffer_size);

  options opts_;
  engine engine_;
};

extern template class basic_arena_resource<false>;
extern template class basic_arena_resource<true>;

/// A single-threaded arena: the fastest allocate there is, no atomics and no locks.
using arena_resource = basic_arena_resource<false>;
/// The same arena for several threads: allocate and deallocate are lock-free (a compare-and-swap on the current
/// chunk's top; new chunks under a mutex). mark(), rewind() and release() must not run concurrently with other calls.
/// Chunks do not grow in place.
using synchronized_arena_resource = basic_arena_resource<true>;

}  // namespace strata
STRATA_PUBLIC_END
