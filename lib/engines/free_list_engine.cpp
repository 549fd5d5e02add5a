// SPDX-License-Identifier: MIT
// lib/engines/free_list_engine.cpp: the free list engine: chunks and their boundary bitmaps, fit policies, splitting,
// coalescing, quick lists, resize, purging, requests sent upstream, stats and invariants.
#include <strata/detail/core/bits.hpp>
#include <strata/detail/engines/free_list_engine.hpp>

#include <algorithm>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include <strata/detail/ds/block_map.hpp>
#include <strata/detail/core/checks.hpp>
#include <strata/resource.hpp>

namespace strata::detail {

namespace {
constexpr std::size_t npos = ~std::size_t{0};
constexpr std::size_t default_large = std::size_t{256} << 10;

// Mask of the state pairs of granules above g % 32 in g's word.
std::uint64_t above(std::size_t g) noexcept {
  const unsigned s = 2 * static_cast<unsigned>(g & 31) + 2;
  return s >= 64 ? 0 : ~std::uint64_t{0} << s;
}
}  // namespace

// ---- construction --------------------------------------------------------------------------------------------------

std::size_t free_list_engine::chunk_size_for(const free_list_options& opts, const memory_capabilities& caps) noexcept {
  if (opts.chunk_size != 0) return opts.chunk_size;
  const std::size_t huge = caps.huge_pages ? caps.huge_page_size : 0;
  if (opts.huge_pages && huge > (std::size_t{1} << 20) && is_power_of_two(huge) && huge <= max_chunk) return huge;
  return std::size_t{1} << 20;
}

free_list_engine::free_list_engine(const free_list_options& params, std::pmr::memory_resource* upstream,
                                   const void* owner, const char* name)
    : owner_(owner),
      name_(name),
      source_(upstream, {params.chunk_size, 0, true, params.huge_pages, &g_block_map}),
      policy_(static_cast<unsigned>(params.policy)),
      max_empty_(params.max_empty_chunks),
      large_(upstream),
      table_(chunk_source_storage<false>{&source_}, log2_floor(source_.chunk_size())) {
  const std::size_t csize = source_.chunk_size();
  chunk_size_ = csize;
  const memory_capabilities& caps = source_.capabilities();
  // The purge maps have room for a bit per purge_map_page bytes: upstream's pages must be multiples of it.
  if (caps.purge && caps.page_size != 0 && caps.page_size % purge_map_page == 0) {
    page_ = caps.page_size;
    page_shift_ = log2_floor(page_);
  }
  purge_threshold_ = page_ != 0 && params.purge_threshold != 0 ? params.purge_threshold : ~std::size_t{0};
  purge_delay_ = params.purge_delay;
  first_ = first_granule(csize);
  STRATA_ASSERT(first_ >= 3 * 32);  // live_exactly may read the three state words before a block's end word
  large_threshold_ = large_threshold_for(params);
  quick_on_ = policy_ == segregated && params.checks == check_mode::standard;
  if (quick_on_) {
    key_ = random_node_key(this);
    quick_limit_ = quick_limit_for(payload_bytes());
    for (std::size_t n = quick_min; n <= quick_max; n += granule) quick_[n / granule].set_cap(quick_cap_for(n));
    quick_top_ = large_threshold_ < quick_max ? large_threshold_ : quick_max;
  }
}

void free_list_engine::class_sizes() noexcept {
  classes_ = true;
  if (!quick_on_) return;
  for (std::size_t n = class_min + 1024; n <= class_max; n += 1024) quick_[quick_slot(n)].set_cap(quick_cap_for(n));
}

free_list_engine::~free_list_engine() { release(); }

std::size_t free_list_engine::first_granule(std::size_t chunk_size) noexcept {
  const std::size_t granules = chunk_size / granule;
  const std::size_t words = granules / 32 + 1;
  const std::size_t pages = chunk_size / purge_map_page;
  const std::size_t header = sizeof(chunk) + (words + (words + 63) / 64 + (pages + 63) / 64) * sizeof(std::uint64_t);
  return align_up(header, 64) / granule;
}

std::size_t free_list_engine::large_threshold_for(const free_list_options& params) noexcept {
  const std::size_t payload = (params.chunk_size / granule - first_granule(params.chunk_size)) * granule;
  const std::size_t large = params.large_threshold == 0 ? default_large : params.large_threshold;
  return large > payload / 4 ? align_down(payload / 4, granule) : large;
}

// ---- bitmap scans --------------------------------------------------------------------------------------------------

// The first block start after granule g (the sentinel at `end` stops the scan).
STRATA_ALWAYS_INLINE std::size_t free_list_engine::next_boundary(const chunk* c, std::size_t g) noexcept {
  std::size_t i = g >> 5;
  const std::uint64_t w = c->states()[i] & start_bits & above(g);
  if (w != 0) return i * 32 + std::size_t{lowest_bit(w)} / 2;
  // The next state word with a start, by the summary (the sentinel's word has one).
  const std::uint64_t* sum = c->summary();
  std::size_t k = (i + 1) >> 6;
  std::uint64_t m = sum[k] & (~std::uint64_t{0} << ((i + 1) & 63));
  while (m == 0) m = sum[++k];
  i = k * 64 + lowest_bit(m);
  return i * 32 + std::size_t{lowest_bit(c->states()[i] & start_bits)} / 2;
}

// The last block start at or before granule g; npos when there is none (g is in the header).
std::size_t free_list_engine::prev_boundary(const chunk* c, std::size_t g) noexcept {
  std::size_t i = g >> 5;
  std::uint64_t w = c->states()[i] & start_bits & ~above(g);
  while (w == 0) {
    if (i == 0) return npos;
    w = c->states()[--i] & start_bits;
  }
  return i * 32 + std::size_t{highest_bit(w)} / 2;
}

STRATA_ALWAYS_INLINE bool free_list_engine::ours(const void* p) const noexcept {
  const chunk* c = chunk_of(p);
  // The chunk header may lie in another granule than p: it must be mapped (registered) before it is read.
  return block_map_contains(p) && block_map_contains(c) && c->tag == tag_of(c);
}

bool free_list_engine::owns(const void* p) const noexcept { return ours(p); }

// ---- free lists ----------------------------------------------------------------------------------------------------

STRATA_ALWAYS_INLINE free_list_engine::free_block*& free_list_engine::head_for(std::size_t size) noexcept {
  if (policy_ != segregated) return heads_[0][0];
  unsigned fl, sl;
  mapping(size, fl, sl);
  return heads_[fl][sl];
}

// Counts b (its size already written at both ends) as free and, from min_listed bytes up, puts it at the head of its
// list.
STRATA_ALWAYS_INLINE void free_list_engine::link(free_block* b, std::size_t size) noexcept {
  ++free_blocks_;
  free_bytes_ += size;
  if (size < min_listed) {
    ++fragments_[size / granule];
    return;
  }
  free_block** head;
  if (policy_ == segregated) {
    unsigned fl, sl;
    mapping(size, fl, sl);
    head = &heads_[fl][sl];
    fl_map_ |= 1u << fl;
    sl_map_[fl] |= 1u << sl;
  } else {
    head = &heads_[0][0];
  }
  b->next = *head;
  b->prev = nullptr;
  if (*head != nullptr) (*head)->prev = b;
  *head = b;
}

STRATA_ALWAYS_INLINE void free_list_engine::unlink(free_block* b) noexcept {
  const std::size_t size = b->size;
  --free_blocks_;
  free_bytes_ -= size;
  if (b == top_) {
    top_ = nullptr;
    return;
  }
  if (size < min_listed) {
    --fragments_[size / granule];
    return;
  }
  if (rover_ == b) rover_ = b->next;
  if (b->next != nullptr) b->next->prev = b->prev;
  if (b->prev != nullptr) {
    b->prev->next = b->next;
    return;
  }
  if (policy_ != segregated) {
    heads_[0][0] = b->next;
    return;
  }
  unsigned fl, sl;
  mapping(size, fl, sl);
  heads_[fl][sl] = b->next;
  if (b->next == nullptr) {
    sl_map_[fl] &= ~(1u << sl);
    if (sl_map_[fl] == 0) fl_map_ &= ~(1u << fl);
  }
}

// Puts free block nw (size written at both ends) where free block old was: in old's place in its list when both are
// listed in the same list (no bitmap or head changes: the common split and merge with a large block), else by
// unlink and link. nw may overlap old's header.
STRATA_ALWAYS_INLINE void free_list_engine::relink(free_block* old, free_block* nw, std::size_t size) noexcept {
  const std::size_t old_size = old->size;  // (callers write nw's footer after this call: it may be old's header)
  if (old == top_) {  // the top block moves (a split off its front, or a merge in front of it)
    nw->size = size;
    top_ = nw;
    free_bytes_ = free_bytes_ - old_size + size;
    return;
  }
  bool same = old_size >= min_listed && size >= min_listed;
  if (same && policy_ == segregated) {
    unsigned fl, sl, fl2, sl2;
    mapping(old_size, fl, sl);
    mapping(size, fl2, sl2);
    same = fl == fl2 && sl == sl2;
  }
  if (!same) {
    unlink(old);
    nw->size = size;
    link(nw, size);
    return;
  }
  free_block* const next = old->next;
  free_block* const prev = old->prev;
  nw->size = size;
  nw->next = next;
  nw->prev = prev;
  if (next != nullptr) next->prev = nw;
  if (prev != nullptr) prev->next = nw;
  else head_for(size) = nw;
  if (rover_ == old) rover_ = nw;
  free_bytes_ = free_bytes_ - old_size + size;
}

// Whether b's neighbours in its list point back at it (a free block overwritten after its free fails this).
STRATA_ALWAYS_INLINE bool free_list_engine::links_ok(const free_block* b) noexcept {
  if (b->size < min_listed || b == top_) return true;
  const free_block* n = b->next;
  const free_block* p = b->prev;
  if (n != nullptr && (!is_aligned(n, granule) || !ours(n) || n->prev != b)) return false;
  if (p != nullptr) return is_aligned(p, granule) && ours(p) && p->next == b;
  return head_for(b->size) == b;
}

// Granules [g, last] of c, the rest of a free block just taken, become a free block (listed, or the top block again).
void free_list_engine::free_tail(chunk* c, std::size_t g, std::size_t last, bool top) noexcept {
  const std::size_t rest = (last + 1 - g) * granule;
  set(c, g, st_start | st_free);
  auto* r = reinterpret_cast<free_block*>(at(c, g));
  r->size = rest;
  footer(at(c, last + 1)) = rest;
  link(r, rest);
  if (top) make_top(r);
}

// Whether a page overlapping [begin, end) (chunk offsets, begin < end) is marked as given back.
STRATA_ALWAYS_INLINE bool free_list_engine::any_purged(const chunk* c, std::size_t begin, std::size_t end) const noexcept {
  const std::size_t q0 = begin >> page_shift_, q1 = (end - 1) >> page_shift_;
  if ((q0 >> 6) != (q1 >> 6) || q1 - q0 >= 63) return true;  // let touch() look page by page
  const std::uint64_t mask = ((std::uint64_t{2} << (q1 - q0)) - 1) << (q0 & 63);
  return (c->purge_map()[q0 >> 6] & mask) != 0;
}

// Takes b (linked just now) off its list: it becomes the top block, carved from when no listed block fits.
void free_list_engine::make_top(free_block* b) noexcept {
  const std::size_t size = b->size;
  unlink(b);
  ++free_blocks_;
  free_bytes_ += size;
  top_ = b;
}

// Whether the free block of `size` bytes starting at granule g of c agrees with the bitmap and its own footer.
STRATA_ALWAYS_INLINE bool free_list_engine::free_block_ok(chunk* c, std::size_t g, std::size_t size) noexcept {
  if ((size & (granule - 1)) != 0 || size == 0 || size / granule > c->end - g) return false;
  const std::size_t last = g + size / granule - 1;
  return state(c, g) == (st_start | st_free) && (state(c, last) & st_free) != 0 &&
         footer(at(c, last + 1)) == size;
}

// The segregated search: the head of n's own class if it fits, else the head of the first non-empty class above
// (every block there fits). O(1): two bitmap lookups.
STRATA_ALWAYS_INLINE free_list_engine::free_block* free_list_engine::find_segregated(std::size_t n) noexcept {
  unsigned fl, sl;
  mapping(n, fl, sl);
  if (fl >= fl_count) return nullptr;
  if ((sl_map_[fl] >> sl) & 1) {
    free_block* b = heads_[fl][sl];
    if (b->size >= n) return b;
  }
  std::uint32_t m = sl + 1 < sl_count ? sl_map_[fl] & (~0u << (sl + 1)) : 0;
  if (m == 0) {
    const std::uint32_t f = fl + 1 < 32 ? fl_map_ & (~0u << (fl + 1)) : 0;
    if (f == 0) return nullptr;
    fl = lowest_bit(static_cast<std::uint32_t>(f));
    m = sl_map_[fl];
  }
  return heads_[fl][lowest_bit(static_cast<std::uint32_t>(m))];
}

// ---- allocation ----------------------------------------------------------------------------------------------------

void* free_list_engine::allocate_held(std::size_t bytes, std::size_t alignment) {
  return allocate_slow(bytes, alignment, false);
}

void* free_list_engine::allocate_slow(std::size_t bytes, std::size_t alignment, bool grow) {
  check_alignment(name_, alignment);
  if (bytes > large_threshold_ || alignment > max_alignment) return grow ? allocate_upstream(bytes, alignment) : nullptr;
  const std::size_t n = request_bytes(bytes, alignment);
  const std::size_t a = alignment < granule ? granule : alignment;
  void* p;
  if (quick_on_ && quick_size(n) && a <= 16 && (p = take_quick(n, a)) != nullptr) {
    ++allocations_;  // (shaped_ and bytes_out_ counted it already)
    if (bytes_out_ - quick_bytes_ > peak_bytes_) peak_bytes_ = bytes_out_ - quick_bytes_;
    return p;
  }
  p = allocate_in_chunks(n, a);
  if (STRATA_UNLIKELY(p == nullptr) && quick_bytes_ != 0) {  // coalesce what waits in the quick lists, look again
    flush_quick(false);
    p = allocate_in_chunks(n, a);
  }
  if (STRATA_UNLIKELY(p == nullptr)) {
    if (!grow) return nullptr;
    try {
      add_chunk();
    } catch (...) {
      ++failed_;
      throw;
    }
    // The new chunk's block is the top now, and fits. Not a second search: add_chunk listed the old top block,
    // and the search might take that (or another block the first search passed by) and leave the new chunk empty,
    // one more empty chunk than max_empty_chunks allows.
    p = take_from_top(n, a);
    STRATA_ASSERT(p != nullptr);
  }
  note_allocation(n, true);  // the statistics count the block's bytes: a free with any size that rounds the same agrees
  return p;
}

namespace {
// Bytes from b to the first address aligned to a (>= 8) in it.
std::size_t pad_for(const void* b, std::size_t a) noexcept {
  return a == free_list_engine::granule ? std::size_t{0} : align_up(to_address(b), a) - to_address(b);
}
}  // namespace

void* free_list_engine::take_from_top(std::size_t n, std::size_t a) {
  if (top_ == nullptr) return nullptr;
  const std::size_t pad = pad_for(top_, a);
  return top_->size >= n + pad ? take(top_, n, pad) : nullptr;
}

// A block of n bytes aligned to a (>= 8) from the free blocks, or nullptr when none fits.
void* free_list_engine::allocate_in_chunks(std::size_t n, std::size_t a) {
  const auto from_top = [&]() -> void* { return take_from_top(n, a); };  // no listed block fits
  if (policy_ == segregated) {
    free_block* b = find_segregated(n);
    if (b == nullptr) return from_top();
    std::size_t pad = pad_for(b, a);
    if (pad != 0 && b->size < n + pad) {  // misaligned: look for a block that fits whatever its alignment
      if ((b = find_segregated(n + a - granule)) == nullptr) return from_top();
      pad = pad_for(b, a);
    }
    return take(b, n, pad);
  }
  free_block* const head = heads_[0][0];
  if (head == nullptr) return from_top();
  if (policy_ == best_fit) {
    free_block* best = nullptr;
    std::size_t best_pad = 0;
    for (free_block* b = head; b != nullptr; b = b->next) {
      const std::size_t pad = pad_for(b, a);
      if (b->size >= n + pad && (best == nullptr || b->size < best->size)) {
        best = b;
        best_pad = pad;
        if (b->size == n + pad) break;
      }
    }
    return best != nullptr ? take(best, n, best_pad) : from_top();
  }
  free_block* const from = policy_ == next_fit && rover_ != nullptr ? rover_ : head;
  free_block* b = from;
  do {
    const std::size_t pad = pad_for(b, a);
    if (b->size >= n + pad) {
      if (policy_ == next_fit) rover_ = b->next;
      return take(b, n, pad);
    }
    b = b->next != nullptr ? b->next : (policy_ == next_fit ? heads_[0][0] : nullptr);
  } while (b != nullptr && b != from);
  return from_top();
}

// Carves n bytes at b + pad out of free block b: the pad in front (if any) and the rest behind stay free.
void* free_list_engine::take(free_block* b, std::size_t n, std::size_t pad) {
  chunk* c = chunk_of(b);
  const std::size_t g = granule_of(c, b);
  const std::size_t size = b->size;
  if (STRATA_UNLIKELY(!free_block_ok(c, g, size) || !links_ok(b))) {
    report(error_kind::corrupt_metadata, b, n, 0, size, "a free block was overwritten (use after free?)");
    throw std::bad_alloc();
  }
  if (STRATA_UNLIKELY(size == payload_bytes())) --empty_count_;
  const bool was_top = b == top_;
  const std::size_t rest = size - pad - n;
  const std::size_t gp = g + pad / granule, ge = gp + n / granule, last = g + size / granule - 1;
  char* const p = at(c, gp);
  if (STRATA_LIKELY(pad == 0 && rest != 0)) {  // the common split: the rest takes b's place in its list
    clear(c, g, st_free);
    set(c, ge, st_start | st_free);
    relink(b, reinterpret_cast<free_block*>(at(c, ge)), rest);
    footer(at(c, last + 1)) = rest;
  } else {
    unlink(b);
    if (pad == 0) clear(c, g, st_free);
    if (rest == 0) clear(c, last, st_free);
    if (pad != 0) {
      set(c, gp - 1, st_free);
      set(c, gp, st_start);
      b->size = pad;
      footer(p) = pad;
      link(b, pad);
    }
    if (rest != 0) free_tail(c, ge, last, was_top);
  }
  // The free rest gets its size (and, from min_listed bytes up, its links) at its start: a rest of 8 or 16 bytes at
  // the chunk's end writes only those, and no byte past the chunk may count as written.
  const std::size_t written = ge * granule + (rest < sizeof(free_block) ? rest : sizeof(free_block));
  if (STRATA_UNLIKELY(written > c->fresh || (c->purged != 0 && any_purged(c, gp * granule, written))))
    touch(c, gp * granule, written);
  return p;
}

void* free_list_engine::allocate_upstream(std::size_t bytes, std::size_t alignment) {
  void* p;
  p = large_.allocate(bytes, alignment);  // counts its own failures
  note_allocation(bytes, false);
  return p;
}

// ---- deallocation --------------------------------------------------------------------------------------------------

void free_list_engine::report(error_kind kind, const void* p, std::size_t bytes, std::size_t alignment,
                              std::size_t expected, const char* why) const noexcept {
  report_error(error_info{kind, name_, owner_, p, bytes, alignment, expected, why});
}

// Granule g of c does not start a live block: says why (a cold path, so it may scan).
void free_list_engine::report_bad_start(chunk* c, std::size_t g, const void* p, std::size_t bytes,
                                        std::size_t alignment) noexcept {
  const unsigned s = state(c, g);
  if (s == (st_start | st_free)) {
    report(error_kind::double_free, p, bytes, alignment, 0, "the block is already free");
    return;
  }
  const std::size_t b = prev_boundary(c, g);
  if (b != npos && b >= c->first && (state(c, b) & st_free) != 0) {
    report(error_kind::double_free, p, bytes, alignment, 0, "inside a free block (freed already, then merged)");
    return;
  }
  const std::size_t size = b != npos && b >= c->first ? (next_boundary(c, b) - b) * granule : 0;
  if (quick_on_ && quick_size(size) && is_node(at(c, b), key_) && quick_holds(at(c, b), size))
    report(error_kind::double_free, p, bytes, alignment, 0, "inside a freed block (waiting in a quick list)");
  else
    report(error_kind::foreign_pointer, p, bytes, alignment, 0, "inside a live block, not at its start");
}

// p, a live-shaped block of `real` bytes, was named with another size: a block waiting in a quick list freed again, or
// a wrong size.
void free_list_engine::report_wrong_size(const void* p, std::size_t bytes, std::size_t alignment, std::size_t real,
                                         const char* why) const noexcept {
  if (quick_on_ && quick_size(real) && is_node(p, key_) && quick_holds(p, real))
    report(error_kind::double_free, p, bytes, alignment, real,
           "the block is already free (waiting in a quick list), named now with another size");
  else
    report(error_kind::wrong_size, p, bytes, alignment, real, why);
}

// p (freed or resized with a size above the threshold) was not sent upstream: a block of a chunk named with the
// wrong size, or not ours at all.
void free_list_engine::report_not_large(const void* p, std::size_t bytes, std::size_t alignment) const noexcept {
  const chunk* c = chunk_of(p);
  if (is_block_start(p))
    report_wrong_size(p, bytes, alignment, (next_boundary(c, granule_of(c, p)) - granule_of(c, p)) * granule,
                      "a block of a chunk freed with a size above large_threshold");
  else
    report(error_kind::foreign_pointer, p, bytes, alignment, 0, "not an allocation of this resource");
}

// Whether p is the start of a block (live) of one of this engine's chunks.
bool free_list_engine::is_block_start(const void* p) const noexcept {
  const chunk* c = chunk_of(p);
  return ours(p) && is_aligned(p, granule) && granule_of(c, p) >= c->first && state(c, granule_of(c, p)) == st_start;
}

// Whether p is a live block of this engine of exactly n bytes (c and g: its chunk and granule); misuse is reported.
STRATA_ALWAYS_INLINE bool free_list_engine::live_block(const void* p, std::size_t bytes, std::size_t alignment, std::size_t n, chunk*& c,
                                  std::size_t& g) noexcept {
  c = chunk_of(p);
  if (STRATA_UNLIKELY(!ours(p))) {
    if (const auto v = large_.check(p, bytes, alignment); v.kind == error_kind::wrong_size)
      report(error_kind::wrong_size, p, bytes, alignment, v.expected,
             "a large block (sent upstream) freed with a small size");
    else
      report(error_kind::foreign_pointer, p, bytes, alignment, 0, "not a block of this resource");
    return false;
  }
  g = granule_of(c, p);
  if (STRATA_UNLIKELY(!is_aligned(p, granule) || g < c->first)) {
    report(error_kind::foreign_pointer, p, bytes, alignment, 0, "not at a block boundary");
    return false;
  }
  if (STRATA_UNLIKELY(state(c, g) != st_start)) {
    report_bad_start(c, g, p, bytes, alignment);
    return false;
  }
  const std::size_t nb = next_boundary(c, g);
  if (STRATA_UNLIKELY(nb - g != n / granule)) {
    report_wrong_size(p, bytes, alignment, (nb - g) * granule, "the size (rounded) differs from the block's");
    return false;
  }
  return true;
}

// deallocate_slow() and deallocate_in_chunk() once the block is known live and its node looked at.
STRATA_ALWAYS_INLINE void free_list_engine::free_live(chunk* c, std::size_t g, void* p, std::size_t n,
                                                     bool quick) noexcept {
  san::poison(p, n);  // ASan builds: free from here on (sanitizer.hpp)
  if (quick) {
    ++deallocations_;
    cache_block(p, n);
  } else if (!free_now(c, g, n)) {
    return;
  }
  after_free();
}

// deallocate() when its quick checks do not decide: every check, in full.
void free_list_engine::deallocate_slow(void* p, std::size_t bytes, std::size_t alignment) noexcept {
  if (STRATA_UNLIKELY(!is_power_of_two(alignment))) {
    report(error_kind::bad_alignment, p, bytes, alignment, 0, "alignment is not a power of two");
    return;
  }
  if (bytes > large_threshold_ || alignment > max_alignment) return deallocate_upstream(p, bytes, alignment);
  chunk* c;
  std::size_t g;
  const std::size_t n = request_bytes(bytes, alignment);
  if (!live_block(p, bytes, alignment, n, c, g)) return;
  // Live in the bitmap, exactly n bytes: a node there is a block freed already, or data that looks like one.
  const bool quick = quick_on_ && quick_size(n);
  if (quick && STRATA_UNLIKELY(is_node(p, key_)) && cached_twice(p, bytes, alignment, n)) return;
  free_live(c, g, p, n, quick);
}

// The end of a free: nothing live in the chunks, more of them held than max_empty_chunks: coalesce the quick lists,
// so that the emptied chunks go back upstream as they do with strict checks (one chunk is kept with its lists); a
// purge that falls due.
void free_list_engine::after_free() noexcept {
  if (STRATA_UNLIKELY(shaped_bytes_ == quick_bytes_) && quick_bytes_ != 0 && chunk_count_ > max_empty_)
    flush_quick(false);
  if (STRATA_UNLIKELY(deallocations_ >= next_sweep_)) sweep();
}

// deallocate() of the live block of n bytes at granule g of c without a quick list: merged now. (Out of line: the
// quick lists' path stays short.)
bool free_list_engine::free_now(chunk* c, std::size_t g, std::size_t n) noexcept {
  if (!free_range(c, g, g + n / granule)) return false;
  note_deallocation(n, true);
  return true;
}

// Frees granules [g, gn) of c, a live block (a start at g, the next one at gn), merging it with a free block before
// and after it. The neighbours are checked before anything changes: false (reported) when one is corrupt.
STRATA_ALWAYS_INLINE bool free_list_engine::free_range(chunk* c, std::size_t g, std::size_t gn) noexcept {
  free_block* prev = nullptr;
  free_block* next = nullptr;
  std::size_t start = g, end = gn, sp = 0, sn = 0;
  if (state(c, g - 1) & st_free) {  // granule first - 1 is header: never free
    sp = footer(at(c, g));
    if (sp == 0 || (sp & (granule - 1)) != 0 || sp / granule > g - c->first ||
        !free_block_ok(c, g - sp / granule, sp) ||
        reinterpret_cast<free_block*>(at(c, g - sp / granule))->size != sp ||
        !links_ok(reinterpret_cast<free_block*>(at(c, g - sp / granule)))) {
      report(error_kind::corrupt_metadata, at(c, g), (gn - g) * granule, 0, sp,
             "the free block before this one was overwritten");
      return false;
    }
    start = g - sp / granule;
    prev = reinterpret_cast<free_block*>(at(c, start));
  }
  if (state(c, gn) & st_free) {
    next = reinterpret_cast<free_block*>(at(c, gn));
    sn = next->size;
    if (!free_block_ok(c, gn, sn) || !links_ok(next)) {
      report(error_kind::corrupt_metadata, at(c, g), (gn - g) * granule, 0, sn,
             "the free block after this one was overwritten");
      return false;
    }
    end = gn + sn / granule;
  }
  // The merged block [start, end): bitmap first, then its sizes and list place (in a merged neighbour's place when
  // they share a list).
  if (prev != nullptr) {
    if (sp > granule) clear(c, g - 1, st_free);
    clear(c, g, st_start);
  } else {
    set(c, g, st_free);
  }
  if (next != nullptr) clear(c, gn, sn > granule ? (st_start | st_free) : st_start);
  else set(c, gn - 1, st_free);
  const std::size_t total = (end - start) * granule;
  auto* b = reinterpret_cast<free_block*>(at(c, start));
  if (prev != nullptr && next != nullptr && next == top_) {  // everything joins the top block
    unlink(prev);
    relink(next, b, total);
  } else if (prev != nullptr) {
    if (next != nullptr) unlink(next);
    relink(prev, b, total);
  } else if (next != nullptr) {
    relink(next, b, total);
  } else {
    b->size = total;
    link(b, total);
  }
  footer(at(c, end)) = total;
  if (STRATA_UNLIKELY(total == payload_bytes())) {  // the chunk is empty: cache it or give it back
    if (empty_count_ >= max_empty_ && !flushing_) {
      unlink(b);  // (the top block too: the next chunk brings a new one)
      retire(c);
    } else {
      ++empty_count_;
    }
    return true;
  }
  if (STRATA_UNLIKELY(total >= purge_threshold_)) {
    if (purge_delay_ == 0) {
      purge_free_pages(c, start * granule, end * granule);
    } else if (c->purge_at == 0) {  // the chunk's large free blocks go when the delay is over (see sweep)
      c->purge_at = deallocations_ + purge_delay_;
      if (c->purge_at < next_sweep_) next_sweep_ = c->purge_at;
    }
  }
  return true;
}

// ---- quick lists ---------------------------------------------------------------------------------------------------

// Whether p is a node of n's quick list.
bool free_list_engine::quick_holds(const void* p, std::size_t n) const noexcept {
  return quick_[quick_slot(n)].holds(p, key_);
}

// A block of n bytes (aligned to a: 8 or 16) from n's quick list, or nullptr. No bitmap read: the free that cached it
// proved the block live and exactly n bytes long, and nothing but an operation on the block itself changes its bits
// while it waits (a neighbour's merge or split stops at its start).
STRATA_ALWAYS_INLINE void* free_list_engine::take_quick(std::size_t n, std::size_t a) noexcept {
  free_cache& q = quick_[quick_slot(n)];
  for (;;) {
    void* p = q.head;
    if (p == nullptr) {
      if (!q.take_cold()) return nullptr;
      continue;
    }
    if (STRATA_UNLIKELY(a == 16 && !is_aligned(p, 16))) return nullptr;
    if (STRATA_LIKELY((p = q.pop(key_)) != nullptr)) {
      quick_bytes_ -= n;
      return p;
    }
    drop_quick_head(q, n);
  }
}

// q's newest node does not check: reported; its list is set aside (never handed out, never coalesced).
void free_list_engine::drop_quick_head(free_cache& q, std::size_t n) noexcept {
  report(error_kind::double_free, q.head, n, 0, n,
         "a freed block was written after its free, or freed twice (found in its quick list; the blocks waiting "
         "behind it are set aside)");
  const std::size_t k = q.drop_head();
  quick_bytes_ -= k * n;
  set_aside(k, n);
}

// p (n bytes, live in the bitmap, counted as freed) joins its quick list.
STRATA_ALWAYS_INLINE void free_list_engine::cache_block(void* p, std::size_t n) noexcept {
  free_cache& q = quick_[quick_slot(n)];
  if (STRATA_UNLIKELY(q.full() || quick_bytes_ + n > quick_limit_)) return quick_overflow(p, n);
  q.push(p, key_);
  quick_bytes_ += n;
}

// cache_block() when p's list is full (its older half is coalesced) or the lists together pass their byte bound
// (every older half, then everything).
void free_list_engine::quick_overflow(void* p, std::size_t n) noexcept {
  free_cache& q = quick_[quick_slot(n)];
  const bool outer = !flushing_;
  flushing_ = true;
  if (q.full()) {
    std::size_t k = 0;
    void* old = q.push_rotating(p, key_, k);
    quick_bytes_ += n;
    if (old != nullptr) give_quick(old, k, n);
  } else {
    q.push(p, key_);
    quick_bytes_ += n;
  }
  if (quick_bytes_ > quick_limit_) flush_quick(true);
  if (quick_bytes_ > quick_limit_) flush_quick(false);
  end_flush(outer);
}

// p, live in the bitmap with exactly n bytes, is a node: freed a second time when its list holds it (reported);
// else data that looks like a node (or a list broken before p, found when it is used): a live block.
bool free_list_engine::cached_twice(const void* p, std::size_t bytes, std::size_t alignment, std::size_t n) noexcept {
  if (!quick_holds(p, n)) return false;
  report(error_kind::double_free, p, bytes, alignment, 0, "the block is already free (waiting in a quick list)");
  return true;
}

// Gives the k nodes of `list` (detached from quick list n) back through free_range, which coalesces them. A node that
// does not check ends the list (reported; the rest set aside); a block that is no longer live with n bytes was freed
// twice (reported; that second free is undone). Chunks it empties are retired when the flush ends.
void free_list_engine::give_quick(void* list, std::size_t k, std::size_t n) noexcept {
  STRATA_ASSERT(flushing_);
  quick_bytes_ -= k * n;
  void* p = list;
  for (std::size_t i = 0; i < k; ++i) {
    // p came from a node that checked (or is the list's head): it is a block we cached. Unless it is no longer a live
    // block of n bytes (freed twice, the first time already given back in this flush), its node must check too.
    chunk* const c = p != nullptr && is_aligned(p, granule) && ours(p) ? chunk_of(p) : nullptr;
    const std::size_t g = c != nullptr ? granule_of(c, p) : 0;
    const bool node = c != nullptr && g >= c->first && is_node(p, key_);
    if (c != nullptr && g >= c->first && (state(c, g) != st_start || next_boundary(c, g) - g != n / granule)) {
      report(error_kind::double_free, p, n, 0, n, "the block was freed twice (found when its quick list was flushed)");
      --deallocations_;  // that second free is not taken: the block is live (and counted as freed once)
      if (node) {
        p = node_next(p);
        continue;
      }
      set_aside(k - i - 1, n);  // the link is gone: the rest is set aside
      return;
    }
    if (!node) {
      report(error_kind::double_free, p, n, 0, n,
             "a freed block was written after its free, or freed twice (found when its quick list was flushed; the "
             "blocks waiting behind it are set aside)");
      set_aside(k - i, n);
      return;
    }
    void* const next = node_next(p);
    clear_node(p);
    if (free_range(c, g, g + n / granule)) note_freed(n);
    else set_aside(1, n);  // a corrupt neighbour (reported): the block stays live, set aside
    p = next;
  }
}

// Gives back the cold lists of every quick list, or every node.
void free_list_engine::flush_quick(bool cold_only) noexcept {
  const bool outer = !flushing_;
  flushing_ = true;
  for (std::size_t i = quick_min / granule; i < quick_slots; ++i) {
    free_cache& q = quick_[i];
    if (q.cold != nullptr || q.cold_count != 0) {
      void* list = q.cold;
      const std::size_t k = q.cold_count;
      q.cold = nullptr;
      q.cold_count = 0;
      give_quick(list, k, quick_slot_size(i));
    }
    if (!cold_only && (q.head != nullptr || q.count() != 0)) {
      void* list = q.head;
      const std::size_t k = q.count();
      q.head = nullptr;
      q.set_count(0);
      give_quick(list, k, quick_slot_size(i));
    }
  }
  end_flush(outer);
}

// The outermost flush ends: the chunks it emptied beyond max_empty_chunks go back upstream. (Not during it: a node
// met later in a list, freed twice, may lie in such a chunk.)
void free_list_engine::end_flush(bool outer) noexcept {
  if (!outer) return;
  flushing_ = false;
  if (empty_count_ > max_empty_) retire_extra_empty();
}

void free_list_engine::retire_extra_empty() noexcept {
  for (chunk* c = chunks_; c != nullptr && empty_count_ > max_empty_;) {
    chunk* const next = c->next;
    retire_if_empty(c);
    c = next;
  }
}

// Gives c back upstream when its blocks are all free (one free block over the payload).
bool free_list_engine::retire_if_empty(chunk* c) noexcept {
  auto* b = reinterpret_cast<free_block*>(at(c, c->first));
  if (state(c, c->first) != (st_start | st_free) || b->size != payload_bytes()) return false;
  --empty_count_;
  unlink(b);
  retire(c);
  return true;
}

// The block at granule g of c, when it waits in a quick list, is taken out and freed (coalesced) now.
void free_list_engine::uncache_at(chunk* c, std::size_t g) noexcept {
  if (g >= c->end || state(c, g) != st_start) return;
  const std::size_t m = (next_boundary(c, g) - g) * granule;
  void* const p = at(c, g);
  // The neighbour's own words are not read: it may be a live block another thread is writing (the synchronized
  // resource). Its list is walked instead (at most two lists of its bound, cached blocks only).
  if (!quick_size(m) || quick_[quick_slot(m)].total() == 0) return;
  bool found = false;
  quick_[quick_slot(m)].remove_if(key_, [p](void* x) { return x == p; }, [&found](void*) { found = true; });
  if (!found) return;
  clear_node(p);
  quick_bytes_ -= m;
  if (free_range(c, g, g + m / granule)) note_freed(m);
  else set_aside(1, m);
}

// k blocks of n bytes, taken out of a quick list, are set aside (live in the bitmap until release).
// (The caller took their bytes out of quick_bytes_.)
void free_list_engine::set_aside(std::size_t k, std::size_t n) noexcept {
  lost_blocks_ += k;
  lost_bytes_ += k * n;
  bytes_out_ -= k * n;
  shaped_ -= k;
  shaped_bytes_ -= k * n;
}

// A block of n bytes from a quick list (its bytes already out of quick_bytes_) is free in the bitmap now.
void free_list_engine::note_freed(std::size_t n) noexcept {
  bytes_out_ -= n;
  --shaped_;
  shaped_bytes_ -= n;
}

// Blocks waiting in quick lists.
std::size_t free_list_engine::quick_blocks() const noexcept {
  std::size_t k = 0;
  for (std::size_t i = quick_min / granule; i < quick_slots; ++i) k += quick_[i].total();
  return k;
}

std::size_t free_list_engine::cached_blocks() const noexcept { return quick_blocks(); }

void free_list_engine::deallocate_upstream(void* p, std::size_t bytes, std::size_t alignment) noexcept {
  if (const auto v = large_.deallocate(p, bytes, alignment); !v) {
    // A block of a chunk now may sit where a freed large block was (which the ledger remembers as a double free).
    if (v.kind == error_kind::foreign_pointer || is_block_start(p)) return report_not_large(p, bytes, alignment);
    return report(v.kind, p, bytes, alignment, v.expected, v.why);
  }
  note_deallocation(bytes, false);
}

std::size_t free_list_engine::usable_size(const void* p) const noexcept {
  if (!ours(p)) return large_.size_of(p);
  const chunk* c = chunk_of(p);
  const std::size_t g = granule_of(c, p);
  if (!is_aligned(p, granule) || g < c->first || state(c, g) != st_start) return 0;
  const std::size_t size = (next_boundary(c, g) - g) * granule;
  return quick_on_ && quick_size(size) && is_node(p, key_) && quick_holds(p, size) ? 0 : size;
}

std::size_t free_list_engine::deallocate_in_chunk(void* p) noexcept {
  if (!ours(p)) return 0;
  chunk* c = chunk_of(p);
  const std::size_t g = granule_of(c, p);
  if (!is_aligned(p, granule) || g < c->first || state(c, g) != st_start) return 0;
  const std::size_t n = (next_boundary(c, g) - g) * granule;
  // As deallocate_slow(): live in the bitmap, so a node here is a block waiting in a quick list already (or data
  // that looks like one), for the general way to tell apart.
  const bool quick = quick_on_ && quick_size(n);
  if (quick && STRATA_UNLIKELY(is_node(p, key_))) return 0;
  free_live(c, g, p, n, quick);
  return n;
}

// ---- resize --------------------------------------------------------------------------------------------------------

bool free_list_engine::resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) noexcept {
  if (!is_power_of_two(alignment)) return false;
  const bool old_large = old_size > large_threshold_ || alignment > max_alignment;
  const bool new_large = new_size > large_threshold_ || alignment > max_alignment;
  // The block must be live with old_size first, even when the answer is "not in place" anyway: a resize that
  // changes tiers cannot be done, but a freed, foreign or interior pointer is still misuse to report.
  if (old_large) return resize_upstream(p, old_size, new_large ? new_size : old_size, alignment) && new_large;
  const std::size_t n_old = request_bytes(old_size, alignment), n_new = request_bytes(new_size, alignment);
  chunk* c;
  std::size_t g;
  if (!live_block(p, old_size, alignment, n_old, c, g)) return false;
  if (quick_on_ && quick_size(n_old) && is_node(p, key_) && quick_holds(p, n_old)) {
    report(error_kind::double_free, p, old_size, alignment, 0,
           "the block is already free (waiting in a quick list): resized after its free");
    return false;
  }
  if (new_large) return false;
  // A block waiting in a quick list after this one is free: it takes part as in strict checks.
  if (quick_on_ && n_new != n_old) uncache_at(c, g + n_old / granule);
  if (n_new < n_old) {  // the tail becomes a free block (merged with a free block after it)
    const std::size_t gs = g + n_new / granule;
    san::poison(at(c, gs), n_old - n_new);
    set(c, gs, st_start);
    if (!free_range(c, gs, g + n_old / granule)) {
      clear(c, gs, st_start);
      return false;
    }
  } else if (n_new > n_old) {  // grow into the free block after it
    const std::size_t gn = g + n_old / granule, need = n_new - n_old;
    if (!(state(c, gn) & st_free)) return false;
    auto* next = reinterpret_cast<free_block*>(at(c, gn));
    const std::size_t sn = next->size;
    if (!free_block_ok(c, gn, sn) || !links_ok(next)) {
      report(error_kind::corrupt_metadata, p, old_size, alignment, sn, "the free block after this one was overwritten");
      return false;
    }
    if (sn < need) return false;
    const bool was_top = next == top_;
    unlink(next);
    const std::size_t rest = sn - need, ge = g + n_new / granule, last = gn + sn / granule - 1;
    clear(c, gn, st_start | st_free);
    if (rest != 0) free_tail(c, ge, last, was_top);
    else clear(c, last, st_free);
    const std::size_t written = ge * granule + (rest < sizeof(free_block) ? rest : sizeof(free_block));
    if (written > c->fresh || (c->purged != 0 && any_purged(c, gn * granule, written)))
      touch(c, gn * granule, written);
  }
  san::resized(p, n_new, new_size);  // ASan builds: exactly new_size bytes of the block addressable
  bytes_out_ = bytes_out_ - n_old + n_new;
  shaped_bytes_ = shaped_bytes_ - n_old + n_new;
  if (bytes_out_ - quick_bytes_ > peak_bytes_) peak_bytes_ = bytes_out_ - quick_bytes_;
  return true;
}

// Both sizes above the threshold: upstream resizes in place if it is a strata::resource and can.
bool free_list_engine::resize_upstream(void* p, std::size_t old_size, std::size_t new_size,
                                       std::size_t alignment) noexcept {
  bool resized;
  if (const auto v = large_.resize(p, old_size, new_size, alignment, resized); !v) {
    if (v.kind == error_kind::foreign_pointer || is_block_start(p)) report_not_large(p, old_size, alignment);
    else report(v.kind, p, old_size, alignment, v.expected, v.why);
    return false;
  }
  if (!resized) return false;
  bytes_out_ = bytes_out_ - old_size + new_size;
  if (bytes_out_ - quick_bytes_ > peak_bytes_) peak_bytes_ = bytes_out_ - quick_bytes_;
  return true;
}

// ---- chunks and pages ----------------------------------------------------------------------------------------------

void free_list_engine::add_chunk() {
  bool zeroed = false;
  void* base = source_.take(&zeroed);  // registered, advised as huge pages where asked and possible
  if (hook_ != nullptr && !hook_(hook_context_, base, chunk_size_, true)) {
    source_.release(base);
    throw_bad_alloc();
  }
  const std::size_t granules = chunk_size_ / granule;
  const std::size_t words = granules / 32 + 1;
  if (!zeroed) std::memset(base, 0, first_ * granule);
  auto* c = new (base) chunk{};
  c->tag = tag_of(c);
  c->first = static_cast<std::uint32_t>(first_);
  c->end = static_cast<std::uint32_t>(granules);
  c->words = static_cast<std::uint32_t>(words);
  // One free block over everything; the sentinel after it.
  set(c, first_, st_start | st_free);
  set(c, granules - 1, st_free);
  set(c, granules, st_start);
  auto* b = reinterpret_cast<free_block*>(at(c, first_));
  b->size = payload_bytes();
  footer(at(c, granules)) = payload_bytes();
  san::poison(b, payload_bytes());  // ASan builds: unpoisoned block by block as they are handed out
  c->next = chunks_;
  c->prev = nullptr;
  if (chunks_ != nullptr) chunks_->prev = c;
  chunks_ = c;
  ++chunk_count_;
  table_.insert(reinterpret_cast<std::uintptr_t>(c));  // (a chunk it cannot enter takes the general way)
  // The new chunk's block is the top; the old top joins the lists.
  if (free_block* t = top_; t != nullptr) {
    top_ = nullptr;
    --free_blocks_;
    free_bytes_ -= t->size;
    link(t, t->size);
  }
  link(b, payload_bytes());
  make_top(b);
  ++empty_count_;
  // Pages past the free block's header, but for the last one (its footer), are not resident until written.
  c->fresh = chunk_size_;
  if (page_ != 0) {
    c->fresh = align_up(first_ * granule + sizeof(free_block), page_);
    untouched_bytes_ += chunk_size_ - page_ - c->fresh;
  }
}

// Takes an empty chunk (its one free block not listed) out and gives it back upstream.
void free_list_engine::retire(chunk* c) noexcept {
  if (c->prev != nullptr) c->prev->next = c->next;
  else chunks_ = c->next;
  if (c->next != nullptr) c->next->prev = c->prev;
  --chunk_count_;
  table_.erase(reinterpret_cast<std::uintptr_t>(c));
  purged_pages_ -= c->purged;
  if (page_ != 0) untouched_bytes_ -= chunk_size_ - page_ - c->fresh;
  if (hook_ != nullptr) hook_(hook_context_, c, chunk_size_, false);
  source_.release(c);
}

// Gives back to the OS the pages wholly inside the free block at [begin, end) (chunk offsets), beyond its size and
// links and before its footer, that were written since the chunk arrived and are not given back already.
void free_list_engine::purge_free_pages(chunk* c, std::size_t begin, std::size_t end) noexcept {
  const std::size_t first_page = align_up(begin + sizeof(free_block), page_) / page_;
  std::size_t end_page = align_down(end - granule, page_);
  if (end_page > c->fresh) end_page = c->fresh;
  end_page /= page_;
  std::uint64_t* map = c->purge_map();
  std::size_t q = first_page;
  while (q < end_page) {
    if ((map[q >> 6] >> (q & 63)) & 1) {
      ++q;
      continue;
    }
    std::size_t r = q;
    while (r < end_page && !((map[r >> 6] >> (r & 63)) & 1)) ++r;
    if (source_.purge(c, q * page_, (r - q) * page_)) {  // refused (by the OS): the pages stay resident and unmarked
      for (std::size_t k = q; k < r; ++k) map[k >> 6] |= std::uint64_t{1} << (k & 63);
      c->purged += static_cast<std::uint32_t>(r - q);
      purged_pages_ += r - q;
    }
    q = r;
  }
}

// Gives back the whole free pages of every free block of c of at least min_size bytes. Free starts are the granules
// with both state bits set, so the scan reads only the bitmap.
void free_list_engine::purge_chunk(chunk* c, std::size_t min_size) noexcept {
  for (std::size_t i = c->first / 32; i < c->words; ++i) {
    const std::uint64_t w = c->states()[i];
    for (std::uint64_t x = w & (w >> 1) & start_bits; x != 0; x &= x - 1) {
      const std::size_t g = i * 32 + std::size_t{lowest_bit(x)} / 2;
      const std::size_t size = reinterpret_cast<free_block*>(at(c, g))->size;
      if (size >= min_size) purge_free_pages(c, g * granule, g * granule + size);
    }
  }
  c->purge_at = 0;
}

// Purges the chunks whose delay is over; finds when the next one falls due.
void free_list_engine::sweep() noexcept {
  next_sweep_ = ~std::uint64_t{0};
  for (chunk* c = chunks_; c != nullptr; c = c->next) {
    if (c->purge_at == 0) continue;
    if (c->purge_at <= deallocations_) purge_chunk(c, purge_threshold_);
    else if (c->purge_at < next_sweep_) next_sweep_ = c->purge_at;
  }
}

// Bytes [begin, end) of c (chunk offsets) are about to be written: their pages are no longer given back or fresh.
void free_list_engine::touch(chunk* c, std::size_t begin, std::size_t end) noexcept {
  STRATA_ASSERT(begin < end && end <= chunk_size_);
  if (c->purged != 0) {
    std::uint64_t* map = c->purge_map();
    for (std::size_t q = begin / page_; q * page_ < end; ++q)
      if ((map[q >> 6] >> (q & 63)) & 1) {
        map[q >> 6] &= ~(std::uint64_t{1} << (q & 63));
        --c->purged;
        --purged_pages_;
      }
  }
  if (end > c->fresh) {
    std::size_t f = align_up(end, page_);
    if (f > chunk_size_ - page_) f = chunk_size_ - page_;
    if (f > c->fresh) {
      untouched_bytes_ -= f - c->fresh;
      c->fresh = f;
    }
  }
}

// ---- release, trim -------------------------------------------------------------------------------------------------

void free_list_engine::release() noexcept {
  while (chunks_ != nullptr) {
    chunk* c = chunks_;
    chunks_ = c->next;
    if (hook_ != nullptr) hook_(hook_context_, c, chunk_size_, false);
    source_.release(c);
  }
  large_.release_all();
  table_.reset();
  chunk_count_ = empty_count_ = purged_pages_ = untouched_bytes_ = 0;
  next_sweep_ = ~std::uint64_t{0};
  fl_map_ = 0;
  std::memset(sl_map_, 0, sizeof sl_map_);
  std::memset(heads_, 0, sizeof heads_);
  rover_ = top_ = nullptr;
  free_bytes_ = free_blocks_ = 0;
  std::memset(fragments_, 0, sizeof fragments_);
  for (free_cache& q : quick_) q.head = q.cold = nullptr, q.set_count(0), q.cold_count = 0;
  quick_bytes_ = lost_blocks_ = lost_bytes_ = 0;
  // Every allocation is gone: it counts as deallocated.
  deallocations_ = allocations_;
  bytes_out_ = shaped_ = shaped_bytes_ = 0;
}

void free_list_engine::trim() noexcept {
  if (quick_bytes_ != 0) flush_quick(false);
  for (chunk* c = chunks_; c != nullptr;) {
    chunk* next = c->next;
    if (!retire_if_empty(c) && purge_threshold_ != ~std::size_t{0}) purge_chunk(c, 0);
    c = next;
  }
}

// ---- stats, invariants ---------------------------------------------------------------------------------------------

resource_stats free_list_engine::stats() const noexcept {
  resource_stats s;
  s.bytes_in_use = bytes_out_ - quick_bytes_;
  s.peak_bytes_in_use = peak_bytes_;
  s.allocations = allocations_;
  s.deallocations = deallocations_;
  const auto large = large_.get_totals();
  s.failed_allocations = failed_ + large.failed;
  s.upstream_allocations = source_.upstream_allocations() + large.allocations;
  s.upstream_deallocations = source_.upstream_deallocations() + large.deallocations;
  s.bytes_held = chunk_count_ * chunk_size_ + large.bytes;
  s.bytes_resident = s.bytes_held - purged_pages_ * page_ - untouched_bytes_;
  s.free_bytes = free_bytes_;
  s.free_blocks = free_blocks_;
  // The largest free block: in the highest non-empty bin (segregated) or anywhere in the list; else a fragment.
  std::size_t largest = 0;
  const free_block* list = nullptr;
  if (policy_ == segregated) {
    if (fl_map_ != 0) {
      const unsigned fl = highest_bit(fl_map_);
      list = heads_[fl][highest_bit(sl_map_[fl])];
    }
  } else {
    list = heads_[0][0];
  }
  // (Sizes are read from free blocks: one the program overwrote is skipped, so stats() never reports garbage.)
  auto* self = const_cast<free_list_engine*>(this);
  const auto size_of = [self](const free_block* b) {
    chunk* c = self->chunk_of(b);
    const std::size_t n = b->size;
    return self->free_block_ok(c, granule_of(c, b), n) ? n : std::size_t{0};
  };
  for (const free_block* b = list; b != nullptr && self->ours(b); b = b->next)
    if (size_of(b) > largest) largest = size_of(b);
  if (top_ != nullptr && size_of(top_) > largest) largest = size_of(top_);
  for (std::size_t k = min_listed / granule; largest == 0 && k-- > 1;)
    if (fragments_[k] != 0) largest = k * granule;
  s.free_bytes += quick_bytes_;
  s.free_blocks += quick_blocks();
  for (std::size_t i = quick_slots - 1; quick_bytes_ != 0 && i >= quick_min / granule; --i)
    if (quick_[i].total() != 0) {
      if (quick_slot_size(i) > largest) largest = quick_slot_size(i);
      break;
    }
  s.largest_free_block = largest;
  return s;
}

void free_list_engine::inspect_regions(inspector& v) const {
  // The quick lists' blocks are live in the bitmap: a look in the list of the block's size tells them apart (no
  // allocation here: this may run inside the program's malloc).
  const auto is_quick = [this](const void* p, std::size_t n) { return quick_on_ && quick_size(n) && quick_holds(p, n); };
  for (const chunk* c = chunks_; c != nullptr; c = c->next) {
    region_detail r;
    r.address = c;
    r.size = chunk_size_;
    r.kind = region_kind::chunk;
    for (std::size_t g = c->first; g < c->end;) {
      const std::size_t nb = next_boundary(c, g);
      const std::size_t size = (nb - g) * granule;
      if ((state(c, g) & st_free) != 0 || is_quick(at(const_cast<chunk*>(c), g), size)) {
        ++r.free_blocks;
      } else {
        ++r.live_blocks;
        r.bytes_in_use += size;
      }
      g = nb;
    }
    r.cached = r.live_blocks == 0;
    if (!v.on_region(r)) continue;
    v.on_run(run_detail{0, std::size_t{c->first} * granule, false});
    for (std::size_t g = c->first; g < c->end;) {
      const std::size_t nb = next_boundary(c, g);
      const bool free = (state(c, g) & st_free) != 0 || is_quick(at(const_cast<chunk*>(c), g), (nb - g) * granule);
      v.on_run(run_detail{g * granule, (nb - g) * granule, free});
      g = nb;
    }
  }
  large_.inspect_regions(v);
}

bool free_list_engine::check_invariants() const noexcept {
  auto* self = const_cast<free_list_engine*>(this);
  const char* broken = nullptr;
  const std::size_t large_bytes = large_.get_totals().bytes;
  std::size_t chunks = 0, empty = 0, free_count = 0, free_bytes = 0, listed = 0, live = 0, in_blocks = 0, purged = 0,
              untouched = 0, tops = 0;
  std::size_t fragments[min_listed / granule] = {};
  for (chunk* c = chunks_; c != nullptr && broken == nullptr; c = c->next) {
    ++chunks;
    if (c->tag != tag_of(c)) broken = "chunk tag corrupt";
    else if (!block_map_contains(c)) broken = "chunk missing from the block map";
    else if (c->first != first_ || c->end != chunk_size_ / granule) broken = "chunk geometry corrupt";
    else if (state(c, c->end) != st_start) broken = "the sentinel after the last block is gone";
    for (std::size_t g = 0; g < c->first && broken == nullptr; ++g)
      if (state(c, g) != 0) broken = "a state bit over the chunk header";
    for (std::size_t i = 0; i < c->words && broken == nullptr; ++i)
      if (((c->summary()[i >> 6] >> (i & 63)) & 1) != ((c->states()[i] & start_bits) != 0 ? 1u : 0u))
        broken = "the summary of block starts disagrees with the state words";
    std::size_t chunk_purged = 0;
    for (std::size_t q = 0; q < chunk_size_ / purge_map_page; ++q)
      if ((c->purge_map()[q >> 6] >> (q & 63)) & 1) {
        ++chunk_purged;
        if ((q + 1) * page_ > c->fresh) broken = "a page counted both as given back and as never written";
      }
    untouched += page_ != 0 ? chunk_size_ - page_ - c->fresh : 0;
    if (broken == nullptr && chunk_purged != c->purged) broken = "purged page count disagrees with the purge map";
    purged += c->purged;
    bool prev_free = false;
    for (std::size_t g = c->first; g < c->end && broken == nullptr;) {
      const unsigned s = state(c, g);
      const std::size_t nb = next_boundary(c, g);
      const std::size_t size = (nb - g) * granule;
      if (!(s & st_start)) broken = "a block without a start bit";
      else if (nb > c->end) broken = "a block runs past its chunk";
      if (broken != nullptr) break;
      // State bits inside the block, other than at its ends: none.
      if (nb > g + 2 && !two_bit_fields_zero([c](std::size_t i) { return c->states()[i]; }, g + 1, nb - 1))
        broken = "a free mark inside a block";
      if (s & st_free) {
        const auto* b = reinterpret_cast<const free_block*>(at(c, g));
        if (prev_free) broken = "two free blocks side by side (not merged)";
        else if (!(state(c, nb - 1) & st_free)) broken = "a free block without its end mark";
        else if (b->size != size || footer(at(c, nb)) != size) broken = "a free block's sizes disagree with the bitmap";
        ++free_count;
        free_bytes += size;
        if (b == top_) ++tops;
        else if (size >= min_listed) ++listed;
        else ++fragments[size / granule];
        if (size == payload_bytes()) ++empty;
        // Only the interior pages of a free block may be given back.
        if (c->purged != 0) {
          const std::size_t lo = align_up(g * granule + sizeof(free_block), page_);
          const std::size_t hi = align_down(nb * granule - granule, page_);
          for (std::size_t off = align_down(g * granule, page_); off < nb * granule; off += page_) {
            const std::size_t q = off / page_;
            if (((c->purge_map()[q >> 6] >> (q & 63)) & 1) && (off < lo || off + page_ > hi))
              broken = "a purged page holds block data";
          }
        }
      } else {
        if (state(c, nb - 1) != (nb - 1 == g ? static_cast<unsigned>(st_start) : 0u)) broken = "a free mark at the end of a live block";
        ++live;
        in_blocks += size;
        if (c->purged != 0)
          for (std::size_t off = align_down(g * granule, page_); off < nb * granule; off += page_)
            if ((c->purge_map()[off / page_ >> 6] >> (off / page_ & 63)) & 1) broken = "a purged page under a live block";
        const std::size_t last_page = page_ != 0 ? chunk_size_ - page_ : chunk_size_;
        if (c->fresh < last_page && nb * granule > c->fresh && g * granule < last_page)
          broken = "a live block over pages counted as never written";
      }
      prev_free = (s & st_free) != 0;
      g = nb;
    }
  }
  // Lists: every listed block is free, in our chunks, in the right list, with consistent links.
  std::size_t on_lists = 0;
  for (unsigned fl = 0; fl < fl_count && broken == nullptr; ++fl)
    for (unsigned sl = 0; sl < sl_count && broken == nullptr; ++sl) {
      const free_block* prev = nullptr;
      for (const free_block* b = heads_[fl][sl]; b != nullptr && broken == nullptr; b = b->next) {
        ++on_lists;
        if (on_lists > free_count + 1) broken = "a free list has a cycle";
        else if (!ours(b)) broken = "a listed block outside the chunks";
        else if (b == top_) broken = "the top block is on a list";
        else if (state(chunk_of(b), granule_of(chunk_of(b), b)) != (st_start | st_free))
          broken = "a listed block that is not free";
        else if (b->prev != prev) broken = "a free list's back link is wrong";
        else if (&self->head_for(b->size) != &self->heads_[fl][sl]) broken = "a free block in the wrong list";
        prev = b;
      }
      if (broken == nullptr && policy_ == segregated &&
          (((sl_map_[fl] >> sl) & 1) != 0) != (heads_[fl][sl] != nullptr))
        broken = "the bin bitmap disagrees with the lists";
    }
  // Quick lists: bounded, counted, every node a live block of its list's size in the bitmap, none listed twice. A node
  // that does not check (written after its free) ends a walk: the use that reaches it reports it.
  std::size_t cached = 0, cached_bytes = 0;
  for (std::size_t i = 0; i < quick_slots && broken == nullptr; ++i) {
    const free_cache& q = quick_[i];
    const std::size_t n = quick_slot_size(i);
    if ((!quick_on_ || !quick_size(n)) && (q.total() != 0 || q.head != nullptr || q.cold != nullptr))
      broken = "a quick list where there are none";
    else if (q.count() > q.cap || q.cold_count > q.cap) broken = "a quick list holds more than its bound";
    cached += q.total();
    cached_bytes += q.total() * n;
    // A block is in its own size's list only (its bitmap says its size): a block listed twice is listed twice in
    // one list. Live blocks' words are not read (other threads may be writing them).
    const void* seen[2 * free_cache::max_cap];
    std::size_t seen_count = 0;
    for (int which = 0; which < 2 && broken == nullptr; ++which) {
      const void* b = which == 0 ? q.head : q.cold;
      const std::uint32_t count = which == 0 ? q.count() : q.cold_count;
      for (std::uint32_t k = 0; k < count && b != nullptr && is_node(b, key_); ++k, b = node_next(b)) {
        if (std::find(seen, seen + seen_count, b) != seen + seen_count) broken = "a block listed twice in the quick lists";
        else if (seen_count < 2 * free_cache::max_cap) seen[seen_count++] = b;
        chunk* c = chunk_of(b);
        const std::size_t g = granule_of(c, b);
        if (!is_aligned(b, granule) || !ours(b) || g < c->first || state(c, g) != st_start ||
            next_boundary(c, g) - g != n / granule)
          broken = "a block in a quick list is not a live block of its list's size";
      }
    }
  }
  if (broken == nullptr) {
    if (cached_bytes != quick_bytes_) broken = "quick list counts disagree with the lists";
    else if (quick_bytes_ > quick_limit_) broken = "the quick lists hold more than their byte bound";
  }
  if (broken == nullptr && policy_ == segregated)
    for (unsigned fl = 0; fl < fl_count; ++fl)
      if ((((fl_map_ >> fl) & 1) != 0) != (sl_map_[fl] != 0)) broken = "the first-level bitmap disagrees";
  if (broken == nullptr) {
    if (chunks != chunk_count_) broken = "chunk count disagrees with the list";
    else if (tops != (top_ != nullptr ? 1u : 0u)) broken = "the top block is not a free block of a chunk";
    else if (empty != empty_count_) broken = "empty chunk count disagrees";
    else if (empty > max_empty_) broken = "more empty chunks kept than allowed";
    else if (on_lists != listed) broken = "listed blocks disagree with the bitmaps";
    else if (free_count != free_blocks_ || free_bytes != free_bytes_) broken = "free counts disagree with the bitmaps";
    else if (std::memcmp(fragments, fragments_, sizeof fragments) != 0) broken = "fragment counts disagree";
    else if (live != shaped_ + lost_blocks_) broken = "live blocks disagree with the count";
    else if (purged != purged_pages_) broken = "purged page total disagrees";
    else if (untouched != untouched_bytes_) broken = "never-written byte total disagrees";
    else if (shaped_bytes_ + lost_bytes_ != in_blocks || bytes_out_ - large_bytes != shaped_bytes_)
      broken = "bytes in use disagree with the live blocks";
    else if (large_bytes > bytes_out_ - quick_bytes_) broken = "upstream bytes exceed bytes in use";
    else if (cached > shaped_) broken = "more blocks in quick lists than live in the bitmap";
    else if (rover_ != nullptr && (policy_ != next_fit || !ours(rover_) ||
                                   state(chunk_of(rover_), granule_of(chunk_of(rover_), rover_)) != (st_start | st_free)))
      broken = "the next-fit rover is not a free block";
  }
  if (broken == nullptr) return true;
  report_error(error_info{error_kind::invariant_violated, name_, owner_, nullptr, 0, 0, 0, broken});
  return false;
}

}  // namespace strata::detail
