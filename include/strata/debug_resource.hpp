// SPDX-License-Identifier: MIT
// strata/debug_resource.hpp: an adaptor over any upstream that finds heap bugs: overflows, writes after free, bad
// frees and leaks, each reported with the block and where it was allocated.
#pragma once

#include <strata/config.hpp>

#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <mutex>
#include <optional>

#include <strata/detail/ds/address_table.hpp>
#include <strata/detail/ds/upstream_storage.hpp>
#include <strata/error.hpp>
#include <strata/fixed_pool_resource.hpp>
#include <strata/page_resource.hpp>
#include <strata/resource.hpp>

STRATA_PUBLIC_BEGIN
namespace strata {

/// Where debug_resource puts an inaccessible page next to each block (debug_options::guard).
enum class guard_mode : std::uint8_t {
  none,       ///< blocks come from upstream with canaries around them: bugs are found at the free or the next check
  overflow,   ///< each block ends against an inaccessible page: a read or write past its end faults at once
  underflow,  ///< each block starts right after an inaccessible page: a read or write before its start faults at once
};

/// Which allocation functions made a block, for a debug heap that serves malloc and operator new alike: a block must
/// be freed by its family's function (free, delete, delete[]). allocate() and deallocate() are the malloc family.
enum class debug_alloc_family : std::uint8_t { malloc, new_single, new_array };

/// What a debug_resource tells its handlers about.
enum class debug_event_kind : std::uint8_t {
  error,         ///< error handler: misuse or a corruption; `error` says which (what the process handler would get)
  leak,          ///< warning handler: one block still live at a leak report
  leak_summary,  ///< message handler: how many blocks and bytes a leak report found (only when it found some)
  call_stack,    ///< message handler: the allocation stack of the block an error is about, just before the error is
                 ///< passed to the process handler (only with backtraces, and only when no error handler is set)
};

/// One event. Pointers are valid only during the handler's call.
struct debug_event {
  debug_event_kind kind;
  const error_info* error;          ///< errors: kind, pointer and sizes as passed, the block's size; else nullptr
  const void* block;                ///< the block concerned (nullptr when none is known)
  std::size_t size;                 ///< its size and alignment as allocated (0 when no block is known)
  std::size_t alignment;
  std::uint64_t sequence;           ///< its allocation number: 1 for the resource's first allocation (0: unknown)
  std::ptrdiff_t offset;            ///< corruption: the first changed byte, from the block's start (negative: before)
  const void* const* call_site;     ///< return addresses of the allocating call, innermost first
  std::size_t call_site_frames;     ///< how many (1 without backtraces: the caller of allocate)
  const char* text;                 ///< the whole report as printed by default: one line, more with a backtrace
};

/// A handler of debug events: a function and the context it is called with. A null function: the default.
struct debug_handler {
  void (*function)(const debug_event& event, void* context) = nullptr;
  void* context = nullptr;
};

/// Options of a debug_resource.
struct debug_options {
  /// Bytes checked on each side of a block (rounded up to a multiple of 16, at most max_canary_size). The canary
  /// after a block starts at its last byte + 1, so a write of one byte past the end is found. 0: no canaries.
  std::size_t canary_size = 16;
  /// New blocks are filled with 0xCD (allocate_zeroed's with zeros) and freed blocks with 0xDD, so that memory read
  /// before it is written, or after it is freed, shows. Without it a write after free cannot be found.
  bool fill = true;
  /// Freed blocks wait here (first in, first out) before they go back upstream, so that their memory is not reused
  /// at once and a write to it is found when they leave (or by check_all()). Counted in the bytes each block takes
  /// from upstream (whole pages in guarded mode). 0: blocks go back at once, after their fill is checked.
  std::size_t quarantine_bytes = std::size_t{1} << 20;
  /// Return addresses recorded per allocation (at most max_backtrace_depth). 0 records only the return address of
  /// the call into the resource, which costs nothing (an unoptimised build may show std::pmr's allocate there); more
  /// unwinds the stack on every allocation (glibc's backtrace(), about 0.2 us per frame) and names the whole call
  /// path in reports.
  unsigned backtrace_depth = 0;
  /// The destructor reports every block still live (one warning each, and a message with the totals).
  bool report_leaks = true;
  /// Guarded mode: every block on pages of its own from the OS with an inaccessible page on one side; freed blocks'
  /// pages become inaccessible while they wait in the quarantine. Each block then costs at least two pages of address
  /// space and one of memory.
  guard_mode guard = guard_mode::none;
  /// Guarded mode: the inaccessible address space on the guarded side of each block, rounded up to whole pages (at
  /// most max_guard_bytes); less than a page, as by default, is one page. A wider zone makes a write that jumps far
  /// past the block (an index well out of range) fault too, where it would otherwise land in whatever is mapped
  /// there. Address space only: it takes no memory and is not counted in the quarantine.
  std::size_t guard_bytes = 0;
  /// Guarded mode: a fault in a guard page or in a freed block's pages is explained on stderr first (which block, at
  /// which offset, where it was allocated and freed), then the process dies of it as it would have. Installs a
  /// SIGSEGV and SIGBUS handler when the resource is made, which hands over to the handlers it found.
  bool explain_faults = true;
  /// Handlers. Default: messages and warnings are printed to stderr; errors go to the process's error handler
  /// (strata::set_error_handler; its default prints one line and aborts).
  debug_handler message;
  debug_handler warning;
  debug_handler error;
};

/// Passes every request to an upstream resource and checks how the program uses the blocks, as a debugging malloc
/// (glibc's MALLOC_CHECK_, mimalloc's debug mode) or, in guarded mode, a page heap (Electric Fence) does.
///
/// - Every block has a header before it (size, alignment, allocation number, where it was allocated), canaries on
///   both sides and, with `fill`, 0xCD in it when new and 0xDD once freed. The header is kept in the block's memory
///   from upstream (in guarded mode in a pool of headers over upstream); the resource's table of blocks lives in
///   upstream memory too: nothing comes from the C++ heap or malloc.
/// - Every deallocate and resize is checked exactly: the pointer must be a live block of this resource, allocated with
///   that size and alignment, its canaries intact. A pointer freed already is a double free while the block waits in
///   the quarantine (later, when its memory went back upstream, a foreign pointer); a pointer into a block is a
///   foreign pointer that names the block.
/// - Freed blocks wait in a quarantine bounded by bytes; when one leaves it, its fill is checked and a change is
///   reported as a write after free, with the offset of the first changed byte.
/// - Misuse and corruption go to the error handler (by default the process's; see debug_options). If it returns, the
///   bad operation does nothing further: a refused free leaves the block as it was, a damaged block is kept and never
///   reused (it goes back upstream with everything else at release() or destruction).
/// - Thread-safe: one lock around each call; handlers are called without it, on the thread that made the call.
/// - resize() shrinks in place and grows back up to the size a block was allocated with (not in guarded mode).
class debug_resource final : public resource {
 public:
  using options = debug_options;

  /// The fills and the canaries' byte.
  static constexpr unsigned char allocated_byte = 0xCD;
  static constexpr unsigned char freed_byte = 0xDD;
  static constexpr unsigned char canary_byte = 0xFD;
  static constexpr unsigned max_backtrace_depth = 32;
  static constexpr std::size_t max_canary_size = 4096;
  static constexpr std::size_t max_guard_bytes = std::size_t{1} << 30;
  /// A size deallocate_as() is not told (an unsized free), and what allocated_size() gives for no live block.
  static constexpr std::size_t unknown_size = ~std::size_t{0};

  /// Effects: a debug resource over `upstream` (not owned; it must outlive this resource). With backtraces it
  /// unwinds once now, so that the unwinder is loaded before the first allocation.
  /// Throws: std::invalid_argument when an option is out of range, `upstream` is null, or guarded mode is asked for
  /// where the OS cannot reserve address space.
  explicit debug_resource(const options& opts = {}, std::pmr::memory_resource* upstream = default_page_resource());
  explicit debug_resource(std::pmr::memory_resource* upstream) : debug_resource(options{}, upstream) {}
  /// Reports leaks (with `report_leaks`), checks the blocks still in the quarantine, and returns everything upstream.
  ~debug_resource() override;

  /// allocate() (with `zeroed`, allocate_zeroed()) of a block of `family`, for a heap behind malloc and operator new.
  /// Throws: as allocate().
  [[nodiscard]] void* allocate_as(std::size_t bytes, std::size_t alignment, debug_alloc_family family,
                                  bool zeroed = false);
  /// deallocate() of a block of `family`. `bytes` may be unknown_size and `alignment` 0 where the caller does not
  /// know them (free(), unsized delete): they are then not checked. A block of another family is misuse
  /// (error_kind::mismatched_free): reported, and the block stays live.
  void deallocate_as(void* p, std::size_t bytes, std::size_t alignment, debug_alloc_family family);
  /// The size of the live block `p` (as allocated, or last resized). A pointer that is no live block is reported as
  /// a free of it would be (double free, foreign pointer) and gives unknown_size.
  [[nodiscard]] std::size_t allocated_size(const void* p) const;

  /// Whether `p` is a live block of this resource of exactly `size` bytes with intact canaries. Reports nothing.
  [[nodiscard]] bool validate(const void* p, std::size_t size) const noexcept;
  /// Checks every live block's canaries and header and every quarantined block's fill; reports each problem found
  /// (an error each) and returns how many there were. Damaged blocks stay where they are.
  std::size_t check_all() const;
  /// Reports every live block: a warning each (address, size, alignment, allocation number, call site), then a
  /// message with the totals when there were any. Returns how many blocks it reported.
  std::size_t leak_report() const;

  /// Blocks live now (allocated and not yet freed).
  [[nodiscard]] std::size_t live_blocks() const noexcept;
  /// Blocks and bytes (as held from upstream) waiting in the quarantine.
  [[nodiscard]] std::size_t quarantined_blocks() const noexcept;
  [[nodiscard]] std::size_t quarantined_bytes() const noexcept;

  /// Empties the quarantine: each block's fill is checked (changes reported) and it goes back upstream.
  void trim();
  /// Frees every block at once and returns all memory upstream (the quarantine checked first, as by trim()). No
  /// leak report. The resource stays usable. No other call may use those blocks meanwhile.
  void release();

  /// Verifies the lists, the table and the counters; reports a broken invariant through the error handler and
  /// returns false. Blocks the program damaged are check_all()'s business, not an invariant.
  [[nodiscard]] bool check_invariants() const;

  /// The usable size of a block of `bytes`: `bytes` itself (its canary starts right after it).
  [[nodiscard]] std::size_t round_size(std::size_t bytes,
                                       std::size_t alignment = alignof(std::max_align_t)) const noexcept {
    static_cast<void>(alignment);
    return bytes;
  }
  [[nodiscard]] const options& get_options() const noexcept { return opts_; }

 protected:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override;
  bool do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) override;
  void* do_allocate_zeroed(std::size_t bytes, std::size_t alignment) override;
  resource_stats do_stats() const noexcept override;
  /// "debug".
  const char* do_name() const noexcept override { return "debug"; }
  /// The resource blocks come from.
  std::pmr::memory_resource* do_upstream_resource() const noexcept override { return upstream_; }
  /// No classes. Tiers: "metadata" (the table of blocks, as bytes_held) and "quarantine" (freed blocks held back:
  /// free_blocks, and their bytes as bytes_held). Regions (under the lock): each block held, live or quarantined
  /// (cached), kind large, from the start of what it holds from upstream: its header, canaries and padding around the
  /// block; bytes_in_use is the block's size. A guarded block's region spans its guard pages too, whose address space
  /// bytes_held does not count.
  void do_inspect(inspector& v, unsigned what) const override;
  memory_capabilities do_capabilities() const noexcept override;

 private:
  struct block_header;  // lib/debug_resource.cpp
  struct problem;
  /// What the table knows of a block, out of the program's reach: its header, and what it holds from upstream (or,
  /// in guarded mode, the OS), so that everything can go back even when a header was overwritten.
  enum class block_state : std::uint8_t { live, quarantined, retired };
  struct record {
    block_header* header;
    void* base;
    std::size_t span;
    std::size_t size;          // as allocated (or last resized)
    block_state state;
    std::uint8_t align_log2;   // of the alignment `base` was asked for from upstream (normal mode)
    debug_alloc_family family;
  };
  /// What a check of a free or resize found: nothing, misuse (nothing changes), or a damaged block.
  enum class verdict : std::uint8_t { ok, refused, damaged };
  struct extent {
    unsigned char* begin;
    unsigned char* end;
  };
  struct list {
    block_header* first = nullptr;
    block_header* last = nullptr;
  };

  /// What allocate_block() and classify() are told of a request beside its size and alignment.
  struct request {
    debug_alloc_family family = debug_alloc_family::malloc;
    bool check_family = true;
    const void* caller = nullptr;  // the return address of the public entry
  };
  void* allocate_block(std::size_t bytes, std::size_t alignment, bool zeroed, const request& how);
  void* place_block(std::size_t bytes, std::size_t alignment, bool zeroed, debug_alloc_family family,
                    void* const* frames, std::size_t count);
  void* place_guarded(std::size_t bytes, std::size_t alignment, bool zeroed, debug_alloc_family family,
                      void* const* frames, std::size_t count);
  void admit(block_header* h, const record& r, void* const* frames, std::size_t count) noexcept;
  void free_at(void* p, std::size_t bytes, std::size_t alignment, const request& how);
  verdict free_block(void* p, std::size_t bytes, std::size_t alignment, const request& how, problem& out);
  verdict resize_block(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment, problem& out,
                       bool& resized);
  verdict classify(const void* p, std::size_t bytes, std::size_t alignment, const request& how,
                   problem& out) const noexcept;
  bool evict(std::size_t bound, problem& out) noexcept;
  void drain(std::size_t bound);
  void give_back(const record& r) noexcept;
  void release_all() noexcept;
  template <class Visit>
  std::size_t walk(bool quarantine, Visit&& visit) const;

  void link(list& l, block_header* h) noexcept;
  void unlink(list& l, block_header* h) noexcept;
  void set_links(block_header* h, block_header* prev, block_header* next) const noexcept;
  block_header* neighbour(const list& l, const block_header* h, bool after) const noexcept;
  block_header* successor(const list& l, const block_header* h) const noexcept { return neighbour(l, h, true); }
  [[nodiscard]] std::uintptr_t seal_value(const block_header* h) const noexcept;
  [[nodiscard]] bool intact(const block_header* h) const noexcept;
  void seal(block_header* h) const noexcept;
  void canary_extents(const block_header* h, extent& before, extent& after) const noexcept;
  [[nodiscard]] bool canaries_intact(const block_header* h, problem& out) const noexcept;
  [[nodiscard]] bool freed_block_intact(const block_header* h, problem& out) const noexcept;
  [[nodiscard]] std::size_t cost(const record& r) const noexcept;

  void describe(const block_header* h, problem& out) const noexcept;
  void damage_found(const block_header* h, bool freed, problem& out) const noexcept;
  void emit(const problem& pr) const;
  static void explain_fault(const void* address) noexcept;
  bool describe_fault(const void* address) const noexcept;

  options opts_;
  std::pmr::memory_resource* upstream_;
  resource* strata_upstream_;  // upstream as a strata::resource, or null
  std::size_t canary_;         // canary bytes per side, a multiple of 16
  std::size_t frame_slots_;    // return addresses per header
  std::size_t header_bytes_;   // header size with its frames, a multiple of 16
  std::uintptr_t key_;         // mixed into every header's seal
  std::size_t guard_ = 0;      // guarded mode: the inaccessible bytes on the guarded side, whole pages
  mutable std::mutex mutex_;
  detail::address_table<detail::upstream_storage, record> table_;  // every block held, by its address
  std::optional<fixed_pool_resource> headers_;  // guarded mode: the headers, over upstream
  list live_;                  // live blocks, oldest first
  list quarantine_;            // freed blocks, oldest (next to leave) first
  std::size_t live_count_ = 0;
  std::size_t quarantine_count_ = 0;
  std::size_t quarantine_bytes_ = 0;
  std::uint64_t sequence_ = 0;       // allocations so far
  std::uint64_t free_sequence_ = 0;  // frees accepted so far
  resource_stats stats_{};
};

}  // namespace strata
STRATA_PUBLIC_END
