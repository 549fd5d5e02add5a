// SPDX-License-Identifier: MIT
// lib/debug_resource.cpp: debug_resource: block headers, canaries and fills, the quarantine, guarded pages, and the
// reports of what they show.
#include <strata/debug_resource.hpp>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <new>
#include <stdexcept>

#include <strata/detail/core/checks.hpp>
#include <strata/detail/core/math.hpp>
#include <strata/detail/core/sanitizer.hpp>

#include "os/os.hpp"

namespace strata {

using detail::to_address;

// ---- headers -------------------------------------------------------------------------------------------------------

// Before every block: in normal mode in the block's memory from upstream, right before the canary; in guarded mode in
// a pool of headers over upstream (the block's own pages become inaccessible when it is freed). `seal` covers the
// fields above it, so a header the program wrote over is recognised before its links are followed. The return
// addresses of the allocating call follow it.
struct debug_resource::block_header {
  block_header* prev;  // in the live list or the quarantine
  block_header* next;
  unsigned char* user;
  std::size_t size;
  std::size_t alignment;
  std::uint64_t sequence;       // allocation number
  std::uint64_t free_sequence;  // free number; 0 while live
  const void* free_site;        // the caller of deallocate
  std::uint32_t frames;         // return addresses recorded
  std::uint32_t flags;
  std::uintptr_t seal;

  void** call_site() noexcept { return reinterpret_cast<void**>(this + 1); }
  const void* const* call_site() const noexcept { return reinterpret_cast<const void* const*>(this + 1); }
};

/// One report, gathered under the lock and delivered after it is dropped (a handler may call into the resource).
struct debug_resource::problem {
  debug_event_kind event = debug_event_kind::error;
  error_kind kind = error_kind::foreign_pointer;
  const void* pointer = nullptr;  // what the caller passed
  std::size_t size = 0;
  std::size_t alignment = 0;
  std::size_t expected_size = 0;
  const char* what = "";
  bool has_block = false;  // the block concerned
  const void* block = nullptr;
  std::size_t block_size = 0;
  std::size_t block_alignment = 0;
  std::uint64_t sequence = 0;
  const void* free_site = nullptr;
  bool has_offset = false;  // where in or around the block
  bool has_bytes = false;   // what the byte there was, and what it should have been
  std::ptrdiff_t offset = 0;
  unsigned char found = 0;
  unsigned char expected = 0;
  std::size_t frames = 0;
  const void* call_site[max_backtrace_depth] = {};
};

namespace {

constexpr std::uint32_t pages_inaccessible = 1;  // block_header::flags: guarded and freed, its pages decommitted
constexpr std::size_t header_alignment = 16;

unsigned char* align_up(unsigned char* p, std::size_t alignment) noexcept {
  return p + (detail::align_up(to_address(p), alignment) - to_address(p));
}
unsigned char* align_down(unsigned char* p, std::size_t alignment) noexcept {
  return p - (to_address(p) - detail::align_down(to_address(p), alignment));
}

// The canaries and freed blocks are poisoned in ASan builds: their checks read past it. Word by word in between
// (loads, never a library call: ASan intercepts memcmp and its kin whatever the caller's attribute). Built for
// Valgrind, the range is opened for memcheck while it is read.
STRATA_NO_SANITIZE_ADDRESS std::size_t first_mismatch(const unsigned char* p, std::size_t n,
                                                      unsigned char byte) noexcept {
  const detail::san::open_word open(p, n);
  using word = std::uint64_t __attribute__((may_alias));
  const std::uint64_t pattern = 0x0101010101010101ull * byte;
  std::size_t i = 0;
  for (; i < n && (to_address(p + i) & 7) != 0; ++i)
    if (p[i] != byte) return i;
  for (; i + 8 <= n; i += 8)
    if (*reinterpret_cast<const word*>(p + i) != pattern) break;
  for (; i < n; ++i)
    if (p[i] != byte) return i;
  return n;
}
// The last byte that is not `byte` (nearest the block, for the canary before it), or n.
STRATA_NO_SANITIZE_ADDRESS std::size_t last_mismatch(const unsigned char* p, std::size_t n,
                                                     unsigned char byte) noexcept {
  if (first_mismatch(p, n, byte) == n) return n;
  const detail::san::open_word open(p, n);
  for (std::size_t i = n; i-- > 0;)
    if (p[i] != byte) return i;
  return n;
}
STRATA_NO_SANITIZE_ADDRESS unsigned char byte_at(const unsigned char* p) noexcept {
  const detail::san::open_word open(p, 1);
  return *p;
}

// ---- text ----------------------------------------------------------------------------------------------------------

// The format checks of the vsnprintf this calls: mingw-w64's C99 one (libstdc++ asks for it) takes %zu like glibc's.
#if defined(__MINGW32__)
#define STRATA_PRINTF_LIKE(f, a) __attribute__((format(gnu_printf, f, a)))
#else
#define STRATA_PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#endif

// printf into a fixed buffer (no allocation), truncating.
class text {
 public:
  text(char* buffer, std::size_t size) noexcept : buffer_(buffer), size_(size) { buffer_[0] = '\0'; }
  STRATA_PRINTF_LIKE(2, 3) void add(const char* format, ...) noexcept {
    if (length_ + 1 >= size_) return;
    va_list args;
    va_start(args, format);
    const int written = std::vsnprintf(buffer_ + length_, size_ - length_, format, args);
    va_end(args);
    if (written > 0) length_ += static_cast<std::size_t>(written);
    if (length_ >= size_) length_ = size_ - 1;
  }
  /// What format_error() wrote at the start of the buffer.
  void took(std::size_t n) noexcept { length_ = n < size_ ? n : size_ - 1; }
  [[nodiscard]] const char* str() const noexcept { return buffer_; }
  [[nodiscard]] std::size_t size() const noexcept { return length_; }

 private:
  char* buffer_;
  std::size_t size_;
  std::size_t length_ = 0;
};

const char* base_name(const char* path) noexcept {
  const char* slash = std::strrchr(path, '/');
  return slash != nullptr ? slash + 1 : path;
}

// The qualified name in a mangled function name made of plain names only ("_ZN2ns6parserEPKc" is "ns::parser"),
// written to `out`; false for anything else (templates, operators, constructors), which is then printed mangled:
// demangling in full takes memory from malloc (__cxa_demangle), which a report must not.
bool plain_name(const char* mangled, char* out, std::size_t size) noexcept {
  const char* s = mangled;
  if (std::strncmp(s, "_Z", 2) != 0) return false;
  s += 2;
  const bool nested = *s == 'N';
  std::size_t n = 0;
  auto put = [&](const char* part, std::size_t length) {
    if (n + length >= size) return false;
    std::memcpy(out + n, part, length);
    n += length;
    out[n] = '\0';
    return true;
  };
  if (nested) {
    for (++s; *s == 'K' || *s == 'V' || *s == 'r' || *s == 'R' || *s == 'O';) ++s;  // qualifiers of a member
    if (s[0] == 'S' && s[1] == 't') {
      if (!put("std::", 5)) return false;
      s += 2;
    }
  }
  for (bool first = true; first || (nested && *s != 'E'); first = false) {
    if (*s < '0' || *s > '9') return false;
    std::size_t length = 0;
    for (; *s >= '0' && *s <= '9'; ++s) length = length * 10 + static_cast<std::size_t>(*s - '0');
    if (length == 0 || std::strlen(s) < length) return false;
    if ((!first && !put("::", 2)) || !put(s, length)) return false;
    s += length;
  }
  return true;
}

// "name+0x1c (object)" for a return address, or "object+0x1234" (what addr2line takes) where no symbol is exported.
// The address looked up is one before the return address: inside the call, even when the call ends a function.
void add_site(text& t, const void* return_address, bool full_path) noexcept {
  const std::uintptr_t a = to_address(return_address);
  os::code_location where;
  if (a == 0 || !os::describe_address(reinterpret_cast<const void*>(a - 1), where)) {
    t.add("%p", return_address);
    return;
  }
  const char* object = where.object == nullptr ? "?" : full_path ? where.object : base_name(where.object);
  char name[256];
  if (where.symbol != nullptr)
    t.add("%s+0x%zx (%s)", plain_name(where.symbol, name, sizeof name) ? name : where.symbol,
          static_cast<std::size_t>(a - where.symbol_address), object);
  else
    t.add("%s+0x%zx", object, static_cast<std::size_t>(a - where.object_base));
}

// The frame a one-line report names: the first with a name outside the standard library and strata (their allocate
// functions and containers stand between the program and this resource, and unoptimised builds keep their inline
// ones, unnamed, in the executable); the first frame when none has.
std::size_t first_program_frame(const void* const* frames, std::size_t n) noexcept {
  static const char* const skipped[] = {"_ZNSt", "_ZNKSt", "_ZSt", "_ZN9__gnu_cxx", "_ZNK9__gnu_cxx", "_ZN6strata",
                                        "_ZNK6strata"};
  for (std::size_t i = 0; i < n; ++i) {
    os::code_location where;
    const std::uintptr_t a = to_address(frames[i]);
    if (a == 0 || !os::describe_address(reinterpret_cast<const void*>(a - 1), where) || where.symbol == nullptr)
      continue;
    bool library = false;
    for (const char* prefix : skipped)
      library = library || std::strncmp(where.symbol, prefix, std::strlen(prefix)) == 0;
    if (!library) return i;
  }
  return 0;
}

void add_stack(text& t, const void* const* frames, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    t.add("\n    #%zu %p in ", i, frames[i]);
    add_site(t, frames[i], true);
  }
}

void deliver(const debug_handler& handler, const debug_event& event) {
  if (handler.function != nullptr) {
    handler.function(event, handler.context);
    return;
  }
  std::fputs(event.text, stderr);
  std::fputc('\n', stderr);
  std::fflush(stderr);
}

unsigned long long number(std::uint64_t n) noexcept { return static_cast<unsigned long long>(n); }

// The guarded resources that explain faults, in a fixed table the signal handler reads without a lock.
std::atomic<const debug_resource*> g_explainers[16];

}  // namespace

// ---- construction --------------------------------------------------------------------------------------------------

debug_resource::debug_resource(const options& opts, std::pmr::memory_resource* upstream)
    : opts_(opts),
      upstream_(upstream),
      strata_upstream_(as_strata_resource(upstream)),
      table_(detail::upstream_storage{upstream}) {
  if (upstream == nullptr) throw std::invalid_argument("debug_resource: the upstream is null");
  if (opts.canary_size > max_canary_size)
    throw std::invalid_argument("debug_resource: canary_size is above max_canary_size (4096)");
  if (opts.backtrace_depth > max_backtrace_depth)
    throw std::invalid_argument("debug_resource: backtrace_depth is above max_backtrace_depth (32)");
  if (opts.guard_bytes > max_guard_bytes)
    throw std::invalid_argument("debug_resource: guard_bytes is above max_guard_bytes (1 GiB)");
  if (opts.guard != guard_mode::none && !os::get_capabilities().reserve)
    throw std::invalid_argument("debug_resource: guarded mode needs an OS that can reserve address space");
  canary_ = detail::align_up(opts.canary_size, header_alignment);
  frame_slots_ = opts.backtrace_depth == 0 ? 1 : opts.backtrace_depth;
  header_bytes_ = detail::align_up(sizeof(block_header) + frame_slots_ * sizeof(void*), header_alignment);
  key_ = static_cast<std::uintptr_t>((to_address(this) ^ os::monotonic_ns()) * 0x9E3779B97F4A7C15ull) | 1;
  if (opts.guard != guard_mode::none) {
    const std::size_t page = os::page_size();
    guard_ = detail::align_up(opts.guard_bytes > page ? opts.guard_bytes : page, page);
    fixed_pool_options pool;
    pool.chunk_size = std::size_t{64} << 10;
    pool.huge_pages = false;
    headers_.emplace(header_bytes_, pool, upstream);
  }
  if (opts.backtrace_depth > 0) {
    // The unwinder's first use loads it, which allocates: better now than inside the first allocation.
    void* warm[4];
    (void)os::capture_stack(warm, 4);
  }
  if (opts.guard != guard_mode::none && opts.explain_faults && os::on_fault(&explain_fault))
    for (auto& slot : g_explainers) {
      const debug_resource* none = nullptr;
      if (slot.compare_exchange_strong(none, this, std::memory_order_acq_rel)) break;
    }
}

debug_resource::~debug_resource() {
  for (auto& slot : g_explainers) {
    const debug_resource* self = this;
    if (slot.compare_exchange_strong(self, nullptr, std::memory_order_acq_rel)) break;
  }
  try {
    if (opts_.report_leaks) (void)leak_report();
    drain(0);
  } catch (...) {
    // A handler that throws: the memory still goes back.
  }
  std::lock_guard<std::mutex> lock(mutex_);
  release_all();
}

// ---- headers, lists, canaries --------------------------------------------------------------------------------------

namespace {
constexpr std::uint64_t prev_factor = 0x9E3779B97F4A7C15ull;
constexpr std::uint64_t next_factor = 0xC2B2AE3D27D4EB4Full;
}  // namespace

// A sum of the words times odd constants: each product is a bijection, so any one word changed changes the sum. The
// multiplies are independent of one another (they overlap), and a link changed changes the sum by a difference that
// set_links() adds without reading the rest.
std::uintptr_t debug_resource::seal_value(const block_header* h) const noexcept {
  static_assert(sizeof(block_header) % header_alignment == 0, "headers keep the blocks after them 16-aligned");
  std::uint64_t x = key_ ^ to_address(h);
  x += to_address(h->prev) * prev_factor;
  x += to_address(h->next) * next_factor;
  x += to_address(h->user) * 0x165667B19E3779F9ull;
  x += h->size * 0xD6E8FEB86659FD93ull;
  x += h->alignment * 0xFF51AFD7ED558CCDull;
  x += h->sequence * 0xC4CEB9FE1A85EC53ull;
  x += h->free_sequence * 0x94D049BB133111EBull;
  x += to_address(h->free_site) * 0xBF58476D1CE4E5B9ull;
  x += ((std::uint64_t{h->frames} << 32) | h->flags) * 0x27D4EB2F165667C5ull;
  return static_cast<std::uintptr_t>(x);
}

bool debug_resource::intact(const block_header* h) const noexcept { return h->seal == seal_value(h); }
void debug_resource::seal(block_header* h) const noexcept { h->seal = seal_value(h); }

// A neighbour's links change when a block joins or leaves a list: its seal changes by the difference, so a damaged
// header still reads as damaged at its own check.
void debug_resource::set_links(block_header* h, block_header* prev, block_header* next) const noexcept {
  h->seal += static_cast<std::uintptr_t>((to_address(prev) - to_address(h->prev)) * prev_factor +
                                         (to_address(next) - to_address(h->next)) * next_factor);
  h->prev = prev;
  h->next = next;
}

void debug_resource::link(list& l, block_header* h) noexcept {
  h->prev = l.last;
  h->next = nullptr;
  seal(h);
  if (l.last != nullptr) set_links(l.last, l.last->prev, h);
  else l.first = h;
  l.last = h;
}

// The links of a damaged header cannot be followed: its neighbour is found from the list's other end, over sound
// headers (nullptr when another damaged header stands in the way; the blocks behind it then drop out of the list,
// and stay in the table, which returns them upstream at the end).
debug_resource::block_header* debug_resource::neighbour(const list& l, const block_header* h,
                                                        bool after) const noexcept {
  block_header* block_header::*const ahead = after ? &block_header::next : &block_header::prev;
  block_header* block_header::*const back = after ? &block_header::prev : &block_header::next;
  if (intact(h)) return h->*ahead;
  for (block_header* n = after ? l.last : l.first; n != nullptr && n != h; n = n->*back) {
    if (!intact(n)) return nullptr;
    if (n->*back == h) return n;
  }
  return nullptr;
}

void debug_resource::unlink(list& l, block_header* h) noexcept {
  const bool sound = intact(h);
  block_header* const prev = sound ? h->prev : neighbour(l, h, false);
  block_header* const next = sound ? h->next : neighbour(l, h, true);
  if (prev != nullptr) set_links(prev, prev->prev, next);
  else l.first = next;
  if (next != nullptr) set_links(next, prev, next->next);
  else l.last = prev;
}

// Normal mode: canary_ bytes on each side. Guarded mode: every accessible byte of the block's pages that is not the
// block's (the slack alignment leaves before the guard page counts, so that no write inside the pages goes unseen).
void debug_resource::canary_extents(const block_header* h, extent& before, extent& after) const noexcept {
  unsigned char* const p = h->user;
  unsigned char* const end = p + h->size;
  if (opts_.guard == guard_mode::none) {
    before = {p - canary_, p};
    after = {end, end + canary_};
    return;
  }
  const std::size_t page = os::page_size();
  if (h->size == 0) {
    before = after = {p, p};
  } else if (opts_.guard == guard_mode::overflow) {
    before = {align_down(p - canary_, page), p};
    after = {end, align_up(end, page)};
  } else {
    before = {p, p};
    after = {end, align_up(end + canary_, page)};
  }
}

bool debug_resource::canaries_intact(const block_header* h, problem& out) const noexcept {
  extent before{}, after{};
  canary_extents(h, before, after);
  const auto n_before = static_cast<std::size_t>(before.end - before.begin);
  const auto n_after = static_cast<std::size_t>(after.end - after.begin);
  std::size_t i = last_mismatch(before.begin, n_before, canary_byte);
  if (i != n_before) {
    out.offset = -static_cast<std::ptrdiff_t>(n_before - i);
    out.found = byte_at(before.begin + i);
  } else if ((i = first_mismatch(after.begin, n_after, canary_byte)) != n_after) {
    out.offset = static_cast<std::ptrdiff_t>(h->size + i);
    out.found = byte_at(after.begin + i);
  } else {
    return true;
  }
  out.has_offset = out.has_bytes = true;
  out.expected = canary_byte;
  return false;
}

// A freed block still holds its fill and its canaries (unless its pages were made inaccessible).
bool debug_resource::freed_block_intact(const block_header* h, problem& out) const noexcept {
  if ((h->flags & pages_inaccessible) != 0) return true;
  if (opts_.fill) {
    const std::size_t i = first_mismatch(h->user, h->size, freed_byte);
    if (i != h->size) {
      out.has_offset = out.has_bytes = true;
      out.offset = static_cast<std::ptrdiff_t>(i);
      out.found = byte_at(h->user + i);
      out.expected = freed_byte;
      return false;
    }
  }
  return canaries_intact(h, out);
}

// Guarded: the block's pages with one guard page, and its header (a wider guard zone is address space alone).
std::size_t debug_resource::cost(const record& r) const noexcept {
  return opts_.guard == guard_mode::none ? r.span : r.span - (guard_ - os::page_size()) + header_bytes_;
}

// A check found block h damaged (canaries_intact() or freed_block_intact() said where): the report is about it.
void debug_resource::damage_found(const block_header* h, bool freed, problem& out) const noexcept {
  describe(h, out);
  out.pointer = h->user;
  out.size = h->size;
  out.alignment = h->alignment;
  if (freed) {
    out.kind = error_kind::write_after_free;
    out.what = out.offset >= 0 && static_cast<std::size_t>(out.offset) < h->size
                   ? "the block was written to after it was freed"
                   : "a canary of the block changed after it was freed";
  } else {
    out.kind = error_kind::buffer_overflow;
    out.what = out.offset < 0 ? "the canary before the block changed: a write before its start"
                              : "the canary after the block changed: a write past its end";
  }
}

void debug_resource::describe(const block_header* h, problem& out) const noexcept {
  out.has_block = true;
  out.block = h->user;
  out.block_size = h->size;
  out.block_alignment = h->alignment;
  out.sequence = h->sequence;
  out.free_site = h->free_site;
  out.frames = h->frames < frame_slots_ ? h->frames : frame_slots_;
  for (std::size_t i = 0; i < out.frames; ++i) out.call_site[i] = h->call_site()[i];
}

// ---- allocation ----------------------------------------------------------------------------------------------------

void* debug_resource::do_allocate(std::size_t bytes, std::size_t alignment) {
  return allocate_block(bytes, alignment, false,
                        request{debug_alloc_family::malloc, true, __builtin_return_address(0)});
}

void* debug_resource::do_allocate_zeroed(std::size_t bytes, std::size_t alignment) {
  return allocate_block(bytes, alignment, true,
                        request{debug_alloc_family::malloc, true, __builtin_return_address(0)});
}

void* debug_resource::allocate_as(std::size_t bytes, std::size_t alignment, debug_alloc_family family, bool zeroed) {
  return allocate_block(bytes, alignment, zeroed, request{family, true, __builtin_return_address(0)});
}

void* debug_resource::allocate_block(std::size_t bytes, std::size_t alignment, bool zeroed, const request& how) {
  const void* const caller = how.caller;
  detail::check_alignment("debug_resource::allocate", alignment);
  if (bytes > detail::max_request_size || alignment > detail::max_request_size) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.failed_allocations;
    detail::throw_bad_alloc();
  }
  // The call site: the caller of the public entry, and with backtraces the frames from there on.
  void* frames[max_backtrace_depth];
  std::size_t count = 0;
  if (opts_.backtrace_depth > 0) {
    void* stack[64];
    const std::size_t got = os::capture_stack(stack, 64);
    std::size_t from = 0;
    while (from < got && stack[from] != caller) ++from;
    for (std::size_t i = from; i < got && count < opts_.backtrace_depth; ++i) frames[count++] = stack[i];
  }
  if (count == 0) frames[count++] = const_cast<void*>(caller);
  for (bool retried = false;; retried = true) {
    try {
      return opts_.guard == guard_mode::none ? place_block(bytes, alignment, zeroed, how.family, frames, count)
                                             : place_guarded(bytes, alignment, zeroed, how.family, frames, count);
    } catch (const std::bad_alloc&) {
      // What the quarantine holds is the program's memory: it is given back before the program runs out.
      if (!retried && quarantined_blocks() != 0) {
        trim();
        continue;
      }
      std::lock_guard<std::mutex> lock(mutex_);
      ++stats_.failed_allocations;
      throw;
    }
  }
}

// Upstream block: [padding to the alignment][header][canary][the block][canary]. The block is at least 16-aligned,
// so the header right before its canary is too.
void* debug_resource::place_block(std::size_t bytes, std::size_t alignment, bool zeroed, debug_alloc_family family,
                                  void* const* frames, std::size_t count) {
  const std::size_t a = alignment < header_alignment ? header_alignment : alignment;
  std::size_t front = 0, span = 0;
  if (!detail::checked_align_up(header_bytes_ + canary_, a, front) || !detail::checked_add(front, bytes, span) ||
      !detail::checked_add(span, canary_, span))
    detail::throw_bad_alloc();
  std::lock_guard<std::mutex> lock(mutex_);
  if (!table_.ensure_room()) detail::throw_bad_alloc();
  void* base;
  const bool upstream_zeroes = zeroed && strata_upstream_ != nullptr;
  if (upstream_zeroes) {
    {
      const detail::san::internal_scope internal;  // Valgrind builds: memory of this resource's own (sanitizer.hpp)
      base = strata_upstream_->allocate_zeroed(span, a);
    }
    if (!detail::is_aligned(base, a)) detail::reject_misaligned(upstream_, base, span, a);
  } else {
    base = detail::allocate_from(upstream_, span, a);
  }
  unsigned char* const p = static_cast<unsigned char*>(base) + front;
  auto* const h = reinterpret_cast<block_header*>(p - canary_ - header_bytes_);
  h->user = p;
  h->size = bytes;
  h->alignment = alignment;
  h->flags = 0;
  std::memset(p - canary_, canary_byte, canary_);
  if (zeroed) {
    if (!upstream_zeroes) std::memset(p, 0, bytes);
  } else if (opts_.fill) {
    std::memset(p, allocated_byte, bytes);
  }
  std::memset(p + bytes, canary_byte, canary_);
  admit(h, record{h, base, span, bytes, block_state::live, static_cast<std::uint8_t>(detail::log2_floor(a)), family},
        frames, count);
  detail::san::poison(p - canary_, canary_ + bytes + canary_);
  detail::san::unpoison(p, bytes);
  return p;
}

// Guarded: the block's own reservation from the OS, inaccessible but for the pages that hold the block, so that the
// guard_ bytes after it (overflow) or before it (underflow) fault. Its header comes from the header pool.
void* debug_resource::place_guarded(std::size_t bytes, std::size_t alignment, bool zeroed,
                                    debug_alloc_family family, void* const* frames, std::size_t count) {
  const std::size_t page = os::page_size();
  const std::size_t extra = alignment > page ? alignment : 0;  // room to align within the reservation
  const bool under = opts_.guard == guard_mode::underflow;
  bool fits = true;
  auto add = [&fits](std::size_t x, std::size_t y) {
    std::size_t sum = 0;
    fits = fits && detail::checked_add(x, y, sum);
    return sum;
  };
  auto pages = [&fits, page](std::size_t x) {
    std::size_t rounded = 0;
    fits = fits && detail::checked_align_up(x, page, rounded);
    return rounded;
  };
  std::size_t reserved;
  if (bytes == 0) reserved = add(add(guard_, page), extra);  // an inaccessible page amid the guard
  else if (under) reserved = add(add(guard_, extra), pages(add(bytes, canary_)));
  else if (extra == 0) reserved = add(pages(add(add(canary_, bytes), alignment - 1)), guard_);
  else reserved = add(add(add(pages(canary_), pages(bytes)), extra), guard_);
  if (!fits) detail::throw_bad_alloc();

  std::lock_guard<std::mutex> lock(mutex_);
  if (!table_.ensure_room()) detail::throw_bad_alloc();
  const detail::san::internal_scope internal;  // Valgrind builds: the headers are this resource's own memory
  auto* const h = static_cast<block_header*>(headers_->allocate(header_bytes_, header_alignment));
  auto* const base = static_cast<unsigned char*>(os::reserve(reserved));
  if (base == nullptr) {
    headers_->deallocate(h, header_bytes_, header_alignment);
    detail::throw_bad_alloc();
  }
  unsigned char* p;
  if (bytes == 0) p = align_up(under ? base + guard_ : base, alignment);
  else if (under) p = align_up(base + guard_, alignment);
  else if (extra == 0) p = align_down(base + reserved - guard_ - bytes, alignment);
  else p = align_up(base + canary_, alignment);
  h->user = p;
  h->size = bytes;
  h->alignment = alignment;
  h->flags = 0;
  extent before{}, after{};
  canary_extents(h, before, after);
  const auto data = static_cast<std::size_t>(after.end - before.begin);
  if (data != 0 && os::commit(before.begin, data) != os::result::ok) {
    os::release(base, reserved);
    headers_->deallocate(h, header_bytes_, header_alignment);
    detail::throw_bad_alloc();
  }
  std::memset(before.begin, canary_byte, static_cast<std::size_t>(before.end - before.begin));
  std::memset(after.begin, canary_byte, static_cast<std::size_t>(after.end - after.begin));
  if (!zeroed && opts_.fill) std::memset(p, allocated_byte, bytes);  // committed pages are zero already
  admit(h, record{h, base, reserved, bytes, block_state::live, 0, family}, frames, count);
  if (data != 0) {
    detail::san::poison(before.begin, data);
    detail::san::unpoison(p, bytes);
  }
  return p;
}

// Under the lock: block h (its header's place, size, alignment and flags set) joins the live blocks.
void debug_resource::admit(block_header* h, const record& r, void* const* frames, std::size_t count) noexcept {
  h->sequence = ++sequence_;
  h->free_sequence = 0;
  h->free_site = nullptr;
  h->frames = static_cast<std::uint32_t>(count);
  std::memcpy(h->call_site(), frames, count * sizeof(void*));
  link(live_, h);
  table_.insert(to_address(h->user), r);  // room was made before the upstream call
  ++live_count_;
  ++stats_.allocations;
  ++stats_.upstream_allocations;
  stats_.bytes_in_use += h->size;
  if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
  stats_.bytes_held += cost(r);
}

// ---- checks of frees and resizes -----------------------------------------------------------------------------------

// Under the lock. Misuse (refused) changes nothing; a damaged block (its header or a canary) is the caller's to put
// aside. The table, out of the program's reach, answers first: a header is read only once it is known to be one.
debug_resource::verdict debug_resource::classify(const void* p, std::size_t bytes, std::size_t alignment,
                                                 const request& how, problem& out) const noexcept {
  out.pointer = p;
  out.size = bytes == unknown_size ? 0 : bytes;
  out.alignment = alignment == unknown_size ? 0 : alignment;
  if (alignment != unknown_size && !detail::is_power_of_two(alignment)) {
    out.kind = error_kind::bad_alignment;
    out.what = "the alignment is not a power of two";
    return verdict::refused;
  }
  const auto* e = p != nullptr ? table_.find(to_address(p)) : nullptr;
  if (e == nullptr) {
    out.kind = error_kind::foreign_pointer;
    out.what = "not a block of this resource (or one that left the quarantine)";
    // A pointer into a block names that block (a look at every block: this is the error path).
    const auto* q = static_cast<const unsigned char*>(p);
    for (const list* l : {&live_, &quarantine_})
      for (const block_header* h = l->first; h != nullptr; h = successor(*l, h))
        if (intact(h) && q > h->user && q < h->user + h->size) {
          describe(h, out);
          out.what = l == &live_ ? "a pointer into a live block, not its start"
                                 : "a pointer into a freed block, not its start";
          out.has_offset = true;
          out.offset = q - h->user;
          return verdict::refused;
        }
    return verdict::refused;
  }
  const record& r = e->value;
  if (r.state != block_state::live) {
    out.kind = error_kind::double_free;
    out.what = r.state == block_state::quarantined
                   ? "the block was freed already (it waits in the quarantine)"
                   : "the block was freed already (it was found damaged and is kept aside)";
    if (intact(r.header)) describe(r.header, out);
    return verdict::refused;
  }
  if (bytes != unknown_size && r.size != bytes) {
    out.kind = error_kind::wrong_size;
    out.expected_size = r.size;
    out.what = "the size differs from the block's";
    if (intact(r.header)) describe(r.header, out);
    return verdict::refused;
  }
  if (how.check_family && r.family != how.family) {
    // [allocated by][freed by]
    static const char* const phrases[3][3] = {
        {"", "allocated by malloc (or allocate()), freed by delete",
         "allocated by malloc (or allocate()), freed by delete[]"},
        {"allocated by new, freed by free (or deallocate())", "", "allocated by new, freed by delete[]"},
        {"allocated by new[], freed by free (or deallocate())", "allocated by new[], freed by delete", ""}};
    out.kind = error_kind::mismatched_free;
    out.what = phrases[static_cast<int>(r.family)][static_cast<int>(how.family)];
    if (intact(r.header)) describe(r.header, out);
    return verdict::refused;
  }
  if (!intact(r.header)) {
    out.kind = error_kind::corrupt_metadata;
    out.what = "the block's header was overwritten (a write before the block, past its canary?)";
    return verdict::damaged;
  }
  describe(r.header, out);
  if (alignment != unknown_size && r.header->alignment != alignment) {
    out.kind = error_kind::wrong_size;
    out.expected_size = r.size;
    out.what = "the alignment differs from the block's";
    return verdict::refused;
  }
  if (!canaries_intact(r.header, out)) {
    damage_found(r.header, false, out);
    return verdict::damaged;
  }
  return verdict::ok;
}

void debug_resource::do_deallocate(void* p, std::size_t bytes, std::size_t alignment) {
  free_at(p, bytes, alignment, request{debug_alloc_family::malloc, true, __builtin_return_address(0)});
}

void debug_resource::deallocate_as(void* p, std::size_t bytes, std::size_t alignment, debug_alloc_family family) {
  free_at(p, bytes, alignment == 0 ? unknown_size : alignment, request{family, true, __builtin_return_address(0)});
}

void debug_resource::free_at(void* p, std::size_t bytes, std::size_t alignment, const request& how) {
  problem pr;
  std::unique_lock<std::mutex> lock(mutex_);
  const verdict v = free_block(p, bytes, alignment, how, pr);
  // An accepted free makes the oldest blocks leave the quarantine, under the same lock; a damaged one stops that.
  const bool report = v != verdict::ok || evict(opts_.quarantine_bytes, pr);
  lock.unlock();
  if (!report) return;
  emit(pr);
  if (v == verdict::ok) drain(opts_.quarantine_bytes);
}

debug_resource::verdict debug_resource::free_block(void* p, std::size_t bytes, std::size_t alignment,
                                                   const request& how, problem& out) {
  const verdict v = classify(p, bytes, alignment, how, out);
  auto* const e = v != verdict::refused ? table_.find(to_address(p)) : nullptr;
  if (e == nullptr) return verdict::refused;  // classify() found it: e is never null here
  record& r = e->value;
  block_header* const h = r.header;
  unlink(live_, h);
  --live_count_;
  ++stats_.deallocations;
  stats_.bytes_in_use -= r.size;
  if (v == verdict::damaged) {  // never reused; it goes back upstream with everything at the end
    r.state = block_state::retired;
    return v;
  }
  if (opts_.guard == guard_mode::none) {
    if (opts_.fill) std::memset(h->user, freed_byte, h->size);
    detail::san::poison(h->user, h->size);
  } else {
    extent before{}, after{};
    canary_extents(h, before, after);
    const auto data = static_cast<std::size_t>(after.end - before.begin);
    detail::san::clear_poison(before.begin, data);
    if (data == 0 || os::decommit(before.begin, data) == os::result::ok) {
      h->flags |= pages_inaccessible;
    } else {  // the OS refused: the block waits accessible, filled, as in normal mode
      if (opts_.fill) std::memset(h->user, freed_byte, h->size);
      detail::san::poison(before.begin, data);
    }
  }
  h->free_sequence = ++free_sequence_;
  h->free_site = how.caller;
  link(quarantine_, h);
  r.state = block_state::quarantined;
  ++quarantine_count_;
  quarantine_bytes_ += cost(r);
  return verdict::ok;
}

// Under the lock: the oldest quarantined blocks leave until the quarantine holds at most `bound` bytes; those intact
// go back upstream. Stops at a damaged one (put aside, described in `out`) and returns true.
bool debug_resource::evict(std::size_t bound, problem& out) noexcept {
  while (quarantine_bytes_ > bound && quarantine_.first != nullptr) {
    block_header* const h = quarantine_.first;
    auto* e = intact(h) ? table_.find(to_address(h->user)) : nullptr;
    if (e == nullptr) {  // its header was overwritten: the table knows it by its header
      std::uintptr_t key = 0;
      table_.for_each([&](const auto& x) {
        if (x.value.header == h) key = x.key;
      });
      unlink(quarantine_, h);
      out.kind = error_kind::corrupt_metadata;
      out.what = "the header of a freed block was overwritten (a write after free?)";
      out.pointer = reinterpret_cast<const void*>(key);
      if (key == 0 || (e = table_.find(key)) == nullptr) return true;  // not in the table either: nothing to account
      --quarantine_count_;
      quarantine_bytes_ -= cost(e->value);
      out.size = e->value.size;
      e->value.state = block_state::retired;
      return true;
    }
    const bool clean = freed_block_intact(h, out);
    unlink(quarantine_, h);
    --quarantine_count_;
    quarantine_bytes_ -= cost(e->value);
    if (!clean) {
      e->value.state = block_state::retired;
      damage_found(h, true, out);
      return true;
    }
    const record r = e->value;
    table_.erase(e);
    give_back(r);
  }
  return false;
}

void debug_resource::drain(std::size_t bound) {
  for (;;) {
    problem pr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!evict(bound, pr)) return;
    }
    emit(pr);
  }
}

// Under the lock (or in the destructor). Memory goes back without ASan's poison of ours on it.
void debug_resource::give_back(const record& r) noexcept {
  detail::san::clear_poison(r.base, r.span);
  if constexpr (detail::san::valgrind && !detail::san::address_sanitizer)  // memcheck: nothing no-access upstream
    if (opts_.guard == guard_mode::none) detail::san::unpoison(r.base, r.span);
  stats_.bytes_held -= cost(r);
  ++stats_.upstream_deallocations;
  if (opts_.guard == guard_mode::none) {
    detail::give_back_to(upstream_, r.base, r.span, std::size_t{1} << r.align_log2);
  } else {
    os::release(r.base, r.span);
    const detail::san::internal_scope internal;
    headers_->deallocate(r.header, header_bytes_, header_alignment);
  }
}

void debug_resource::release_all() noexcept {
  table_.for_each([this](const auto& e) { give_back(e.value); });
  table_.reset();
  live_ = list{};
  quarantine_ = list{};
  live_count_ = quarantine_count_ = quarantine_bytes_ = 0;
  stats_.bytes_in_use = 0;
  stats_.deallocations = stats_.allocations;
}

void debug_resource::trim() { drain(0); }

void debug_resource::release() {
  drain(0);
  std::lock_guard<std::mutex> lock(mutex_);
  release_all();
}

bool debug_resource::do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) {
  problem pr;
  bool resized = false;
  verdict v;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    v = resize_block(p, old_size, new_size, alignment, pr, resized);
  }
  if (v != verdict::ok) emit(pr);
  return resized;
}

// In place within what the block holds from upstream: shrinking moves the canary after it down to the new end;
// growing (back, after a shrink) fills the new bytes as new memory. A guarded block's place depends on its size:
// reallocate() moves it, and the old pages fault from then on.
debug_resource::verdict debug_resource::resize_block(void* p, std::size_t old_size, std::size_t new_size,
                                                     std::size_t alignment, problem& out, bool& resized) {
  const verdict v = classify(p, old_size, alignment, request{debug_alloc_family::malloc, false, nullptr}, out);
  if (v != verdict::ok) return v;
  if (new_size == old_size) {
    resized = true;
    return v;
  }
  auto* const e = opts_.guard == guard_mode::none ? table_.find(to_address(p)) : nullptr;
  if (e == nullptr) return v;
  record& r = e->value;
  block_header* const h = r.header;
  unsigned char* const user = h->user;
  const std::size_t room = r.span - static_cast<std::size_t>(user - static_cast<unsigned char*>(r.base)) - canary_;
  if (new_size > room) return v;
  const std::size_t reach = (new_size > old_size ? new_size : old_size) + canary_;
  detail::san::unpoison(user, reach);
  if (new_size > old_size && opts_.fill) std::memset(user + old_size, allocated_byte, new_size - old_size);
  std::memset(user + new_size, canary_byte, canary_);
  detail::san::poison(user + new_size, reach - new_size);
  h->size = r.size = new_size;
  seal(h);
  stats_.bytes_in_use = stats_.bytes_in_use - old_size + new_size;
  if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
  resized = true;
  return v;
}

// ---- checks on demand ----------------------------------------------------------------------------------------------

std::size_t debug_resource::allocated_size(const void* p) const {
  problem pr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto* e = p != nullptr ? table_.find(to_address(p)) : nullptr;
    if (e != nullptr && e->value.state == block_state::live) return e->value.size;
    (void)classify(p, unknown_size, unknown_size, request{debug_alloc_family::malloc, false, nullptr}, pr);
  }
  emit(pr);
  return unknown_size;
}

bool debug_resource::validate(const void* p, std::size_t size) const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto* e = p != nullptr ? table_.find(to_address(p)) : nullptr;
  if (e == nullptr || e->value.state != block_state::live || e->value.size != size || !intact(e->value.header))
    return false;
  problem unused;
  return canaries_intact(e->value.header, unused);
}

// Visits the live blocks (or the quarantine) in order, reporting each block visit() describes, without the lock. The
// walk goes on after each report from the block it reported, found again by its allocation (or free) number: the
// lists stay ordered by it, whatever changed meanwhile.
template <class Visit>
std::size_t debug_resource::walk(bool quarantine, Visit&& visit) const {
  const list& l = quarantine ? quarantine_ : live_;
  const block_state state = quarantine ? block_state::quarantined : block_state::live;
  auto key_of = [quarantine](const block_header* h) { return quarantine ? h->free_sequence : h->sequence; };
  std::size_t reported = 0;
  std::uint64_t after = 0;            // blocks up to this number were visited
  const block_header* last = nullptr;  // the block reported last, and its address
  const void* last_user = nullptr;
  for (;;) {
    problem pr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const block_header* h = l.first;
      if (last != nullptr) {  // resume right after it if it is where it was
        const auto* e = table_.find(to_address(last_user));
        if (e != nullptr && e->value.header == last && e->value.state == state && intact(last) &&
            key_of(last) == after)
          h = successor(l, last);
      }
      last = nullptr;
      for (; h != nullptr; h = successor(l, h)) {
        const block_header* next = successor(l, h);
        // A damaged header's number cannot be read: it sits just below its successor's.
        const std::uint64_t key = intact(h) ? key_of(h) : next != nullptr ? key_of(next) - 1 : ~std::uint64_t{0};
        if (key > after && visit(h, pr)) {
          after = key;
          if (intact(h)) last = h, last_user = h->user;
          break;
        }
      }
      if (h == nullptr) return reported;
    }
    emit(pr);
    ++reported;
  }
}

std::size_t debug_resource::check_all() const {
  auto check = [this](bool freed) {
    return [this, freed](const block_header* h, problem& out) {
      if (!intact(h)) {
        out.kind = error_kind::corrupt_metadata;
        out.pointer = h;
        out.what = freed ? "the header of a freed block was overwritten (at this address; a write after free?)"
                         : "the header of a live block was overwritten (at this address; a write before the block?)";
        return true;
      }
      if (freed ? freed_block_intact(h, out) : canaries_intact(h, out)) return false;
      damage_found(h, freed, out);
      return true;
    };
  };
  return walk(false, check(false)) + walk(true, check(true));
}

std::size_t debug_resource::leak_report() const {
  std::size_t bytes = 0;
  const std::size_t blocks = walk(false, [this, &bytes](const block_header* h, problem& out) {
    out.event = debug_event_kind::leak;
    if (intact(h)) {
      describe(h, out);
      bytes += h->size;
    } else {
      out.pointer = h;
    }
    return true;
  });
  if (blocks != 0) {
    char buffer[256];
    text t(buffer, sizeof buffer);
    t.add("strata: debug_resource %p: %zu block%s (%zu bytes) still live", static_cast<const void*>(this), blocks,
          blocks == 1 ? "" : "s", bytes);
    const debug_event event{debug_event_kind::leak_summary, nullptr, nullptr, bytes, 0, 0, 0, nullptr, 0, t.str()};
    deliver(opts_.message, event);
  }
  return blocks;
}

std::size_t debug_resource::live_blocks() const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return live_count_;
}

std::size_t debug_resource::quarantined_blocks() const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return quarantine_count_;
}

std::size_t debug_resource::quarantined_bytes() const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return quarantine_bytes_;
}

bool debug_resource::check_invariants() const {
  problem pr;
  pr.kind = error_kind::invariant_violated;
  pr.what = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    std::size_t live = 0, quarantined = 0, quarantined_bytes = 0, held = 0, in_use = 0;
    table_.for_each([&](const auto& e) {
      held += cost(e.value);
      if (e.value.state == block_state::live) ++live, in_use += e.value.size;
      if (e.value.state == block_state::quarantined) ++quarantined, quarantined_bytes += cost(e.value);
      if (e.value.header == nullptr || e.value.base == nullptr) pr.what = "a table entry without a header or memory";
    });
    if (live != live_count_ || stats_.allocations - stats_.deallocations != live_count_)
      pr.what = "the live count differs from the table's";
    else if (quarantined != quarantine_count_ || quarantined_bytes != quarantine_bytes_)
      pr.what = "the quarantine's count or bytes differ from the table's";
    else if (in_use != stats_.bytes_in_use || held != stats_.bytes_held)
      pr.what = "bytes in use or held differ from the table's";
    // Each list holds exactly the table's blocks of its state, in order; damaged headers are check_all()'s.
    for (const list* l : {&live_, &quarantine_}) {
      const bool q = l == &quarantine_;
      std::size_t n = 0;
      bool damaged = false;
      std::uint64_t previous = 0;
      for (const block_header* h = l->first; h != nullptr; h = successor(*l, h)) {
        if (!intact(h)) {
          damaged = true;
          continue;
        }
        ++n;
        const auto* e = table_.find(to_address(h->user));
        const std::uint64_t key = q ? h->free_sequence : h->sequence;
        if (e == nullptr || e->value.header != h ||
            e->value.state != (q ? block_state::quarantined : block_state::live) || key <= previous)
          pr.what = "a listed block is not in the table as such, or out of order";
        previous = key;
      }
      if (!damaged && n != (q ? quarantine_count_ : live_count_)) pr.what = "a list's length differs from its count";
    }
  }
  if (pr.what == nullptr) return true;
  emit(pr);
  return false;
}

// ---- statistics and capabilities -----------------------------------------------------------------------------------

resource_stats debug_resource::do_stats() const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  resource_stats s = stats_;
  s.bytes_held += table_.storage_bytes();
  s.bytes_resident = s.bytes_held;
  // A guarded block in the quarantine keeps its addresses and no memory.
  if (opts_.guard != guard_mode::none) s.bytes_resident -= quarantine_bytes_ - quarantine_count_ * header_bytes_;
  return s;
}

void debug_resource::do_inspect(inspector& v, unsigned what) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if ((what & inspect_tiers) != 0) {
    tier_detail meta;
    meta.name = "metadata";
    meta.stats.bytes_held = meta.stats.bytes_resident = table_.storage_bytes();
    v.on_tier(meta);
    tier_detail q;
    q.name = "quarantine";
    q.stats.free_blocks = quarantine_count_;
    q.stats.bytes_held = quarantine_bytes_;
    v.on_tier(q);
  }
  if ((what & inspect_regions) == 0) return;
  table_.for_each([&](const auto& e) {
    const record& r = e.value;
    if (r.state == block_state::retired) return;
    const bool live = r.state == block_state::live;
    region_detail d;
    d.address = r.base;
    d.size = opts_.guard == guard_mode::none ? cost(r) : r.span;
    d.kind = region_kind::large;
    d.bytes_in_use = live ? r.size : 0;
    d.live_blocks = live ? 1 : 0;
    d.free_blocks = live ? 0 : 1;
    d.cached = !live;
    v.on_region(d);
  });
}

memory_capabilities debug_resource::do_capabilities() const noexcept {
  memory_capabilities c;
  if (opts_.guard == guard_mode::none) {
    c.zeroed_pages = strata_upstream_ != nullptr && strata_upstream_->capabilities().zeroed_pages;
    c.resize_in_place = true;
  } else {
    c.zeroed_pages = true;
  }
  return c;
}

// ---- reports -------------------------------------------------------------------------------------------------------

// In the signal handler of a fault (os::on_fault): each guarded resource looks for the address among its blocks.
void debug_resource::explain_fault(const void* address) noexcept {
  for (auto& slot : g_explainers)
    if (const debug_resource* r = slot.load(std::memory_order_acquire); r != nullptr && r->describe_fault(address))
      return;
}

// Without waiting for the lock: the faulting thread may hold it (then nothing is said).
bool debug_resource::describe_fault(const void* address) const noexcept {
  if (!mutex_.try_lock()) return false;
  const auto* a = static_cast<const unsigned char*>(address);
  const record* found = nullptr;
  table_.for_each([&](const auto& e) {
    const auto* base = static_cast<const unsigned char*>(e.value.base);
    if (a >= base && a < base + e.value.span) found = &e.value;
  });
  if (found == nullptr || !intact(found->header)) {
    mutex_.unlock();
    return false;
  }
  const block_header* h = found->header;
  const char* where = found->state != block_state::live ? "inside it, after it was freed"
                      : h->size == 0                    ? "a zero-size block: no byte of it may be touched"
                      : a < h->user                     ? "before its start"
                                                        : "past its end";
  char buffer[4096];
  text t(buffer, sizeof buffer);
  t.add("strata: debug_resource %p: the fault at %p is at offset %td of block %p (allocation #%llu, %zu bytes, "
        "alignment %zu): %s",
        static_cast<const void*>(this), address, a - h->user, static_cast<const void*>(h->user), number(h->sequence),
        h->size, h->alignment, where);
  const std::size_t frames = h->frames < frame_slots_ ? h->frames : frame_slots_;
  if (h->free_site != nullptr) {
    t.add("; freed at ");
    add_site(t, h->free_site, false);
  }
  t.add("; allocated at");
  if (frames == 1) {
    t.add(" ");
    add_site(t, h->call_site()[0], false);
  } else {
    t.add(":");
    add_stack(t, h->call_site(), frames);
  }
  t.add("\n");
  mutex_.unlock();
  os::write_error(t.str(), t.size());
  return true;
}

void debug_resource::emit(const problem& pr) const {
  char detail[768];
  text d(detail, sizeof detail);
  d.add("%s", pr.what);
  if (pr.has_offset) d.add(" at offset %td", pr.offset);
  if (pr.has_bytes) d.add(" (0x%02x instead of 0x%02x)", pr.found, pr.expected);
  if (pr.has_block) {
    d.add("; block %p (allocation #%llu, %zu bytes, alignment %zu)", pr.block, number(pr.sequence), pr.block_size,
          pr.block_alignment);
    if (pr.frames != 0) {
      d.add(", allocated at ");
      add_site(d, pr.call_site[first_program_frame(pr.call_site, pr.frames)], false);
    }
    if (pr.free_site != nullptr) {
      d.add(", freed at ");
      add_site(d, pr.free_site, false);
    }
  }
  char buffer[8192];
  text t(buffer, sizeof buffer);
  debug_event event{pr.event,        nullptr,        pr.has_block ? pr.block : nullptr,
                    pr.block_size,   pr.block_alignment,
                    pr.sequence,     pr.has_offset ? pr.offset : 0,
                    pr.call_site,    pr.frames,      buffer};
  if (pr.event == debug_event_kind::leak) {
    if (pr.has_block)
      t.add("strata: debug_resource %p: leaked block %p of %zu bytes (alignment %zu, allocation #%llu), allocated at",
            static_cast<const void*>(this), pr.block, pr.block_size, pr.block_alignment, number(pr.sequence));
    else
      t.add("strata: debug_resource %p: leaked block with its header at %p overwritten", static_cast<const void*>(this),
            pr.pointer);
    if (pr.frames == 1) {
      t.add(" ");
      add_site(t, pr.call_site[0], false);
    } else if (pr.frames > 1) {
      t.add(":");
      add_stack(t, pr.call_site, pr.frames);
    }
    deliver(opts_.warning, event);
    return;
  }
  const error_info info{pr.kind, "debug_resource", this, pr.pointer, pr.size, pr.alignment, pr.expected_size,
                        detail};
  event.error = &info;
  if (opts_.error.function != nullptr) {
    t.took(format_error(info, buffer, sizeof buffer));
    if (pr.frames > 1) {
      t.add("\n  the block was allocated at:");
      add_stack(t, pr.call_site, pr.frames);
    }
    opts_.error.function(event, opts_.error.context);
    return;
  }
  // The process handler prints one line: the whole allocation stack goes out first, as a message.
  if (pr.frames > 1) {
    t.add("strata: debug_resource %p: block %p (allocation #%llu) was allocated at:", static_cast<const void*>(this),
          pr.block, number(pr.sequence));
    add_stack(t, pr.call_site, pr.frames);
    event.kind = debug_event_kind::call_stack;
    event.error = nullptr;
    deliver(opts_.message, event);
  }
  report_error(info);
}

}  // namespace strata
