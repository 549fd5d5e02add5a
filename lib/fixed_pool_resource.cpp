// lib/fixed_pool_resource.cpp: chunks of equal blocks with free/start bitmaps, runs, capacity, zeroed allocation.
#include <strata/fixed_pool_resource.hpp>

#include <cstring>
#include <new>
#include <stdexcept>

#include <strata/detail/block_map.hpp>
#include <strata/detail/checks.hpp>
#include <strata/detail/math.hpp>
#include <strata/error.hpp>

namespace strata {

// A chunk starts with this header and its bitmaps: for every 64 slot numbers a free word (1 = free) and a start word
// (1 = first block of a live allocation), side by side. Slot q is at base + q * stride; numbers below `skip` are the
// header's own bytes. A live allocation of k blocks is a start bit followed by k - 1 blocks that are neither free nor
// starts, so a free can check its size exactly without a header per block.
struct fixed_pool_resource::chunk {
  std::uintptr_t tag;  // owner ^ address ^ magic
  chunk* next;
  chunk* prev;
  std::uint32_t skip;        // first slot number
  std::uint32_t limit;       // one past the last
  std::uint32_t free_count;
  std::uint32_t words;
  std::uint32_t hint;        // free words below are all zero
  std::uint32_t fresh_from;  // slots from here on were never handed out since the chunk arrived zero-filled
  bool in_region;            // carved from the capacity reservation
  std::uint64_t* bits() noexcept { return reinterpret_cast<std::uint64_t*>(this + 1); }
  const std::uint64_t* bits() const noexcept { return reinterpret_cast<const std::uint64_t*>(this + 1); }
  std::uint64_t& free_word(std::size_t i) noexcept { return bits()[2 * i]; }
  std::uint64_t& start_word(std::size_t i) noexcept { return bits()[2 * i + 1]; }
  std::uint64_t free_word(std::size_t i) const noexcept { return bits()[2 * i]; }
  std::uint64_t start_word(std::size_t i) const noexcept { return bits()[2 * i + 1]; }
  bool is_free(std::size_t q) const noexcept { return (free_word(q >> 6) >> (q & 63)) & 1; }
  bool is_start(std::size_t q) const noexcept { return (start_word(q >> 6) >> (q & 63)) & 1; }
  /// Allocated and not the first block of its allocation.
  bool is_continuation(std::size_t q) const noexcept { return q < limit && !is_free(q) && !is_start(q); }
};

namespace {

// Sets (value true) or clears the bits [first, first + count) of the words at `word(i)`.
template <class Word>
void set_range(Word word, std::size_t first, std::size_t count, bool value) noexcept {
  while (count != 0) {
    const std::size_t bit = first & 63, n = count < 64 - bit ? count : 64 - bit;
    const std::uint64_t mask = (n == 64 ? ~std::uint64_t{0} : ((std::uint64_t{1} << n) - 1)) << bit;
    std::uint64_t& w = word(first >> 6);
    w = value ? (w | mask) : (w & ~mask);
    first += n;
    count -= n;
  }
}
}  // namespace

// ---- construction --------------------------------------------------------------------------------------------------

fixed_pool_resource::fixed_pool_resource(std::size_t block_size, const options& opts, std::pmr::memory_resource* upstream)
    : upstream_(upstream),
      opts_(opts),
      block_size_(block_size),
      stride_(detail::align_up(block_size == 0 ? 8 : block_size, 8)),
      block_alignment_(0),
      reciprocal_(0),
      chunk_size_(0),
      upstream_zeroes_(dynamic_cast<page_resource*>(upstream) != nullptr),
      large_(detail::upstream_storage{upstream}) {
  if (block_size == 0 || block_size > (std::size_t{1} << 30))
    throw std::invalid_argument("fixed_pool_resource: block_size must be 1 B .. 1 GiB");
  block_alignment_ = stride_ & (~stride_ + 1);
  if (block_alignment_ > 4096) block_alignment_ = 4096;
  reciprocal_ = ((std::uint64_t{1} << 40) / stride_) + 1;
  std::size_t csize = opts.chunk_size;
  if (csize == 0) {
    // Large chunks: few chunk headers (all at chunk-aligned addresses, so they share cache sets) stay in cache.
    csize = detail::next_power_of_two(stride_ * 256 + 4096);
    if (csize < (std::size_t{1} << 20)) csize = std::size_t{1} << 20;
    if (opts.max_bytes != 0)  // a capped pool needs at least one chunk inside the cap
      while (csize > opts.max_bytes && csize > detail::block_map_granule && csize / 2 >= stride_ * 2 + 4096) csize /= 2;
  }
  if (!detail::is_power_of_two(csize) || csize < detail::block_map_granule || csize > (std::size_t{1} << 34) ||
      csize < stride_ + sizeof(chunk) + 64)
    throw std::invalid_argument(
        "fixed_pool_resource: chunk_size must be a power of two of 64 KiB or more that holds a block");
  if (opts.max_bytes != 0 && opts.max_bytes < csize)
    throw std::invalid_argument("fixed_pool_resource: max_bytes must hold at least one chunk (64 KiB or more)");
  chunk_size_ = csize;
  if (opts.max_bytes != 0) {
    region_size_ = opts.max_bytes / chunk_size_ * chunk_size_;
    const std::size_t limit = chunk_size_ / stride_;
    const std::size_t words = (limit + 63) / 64;
    const std::size_t skip = (sizeof(chunk) + words * 16 + stride_ - 1) / stride_;
    capacity_blocks_ = region_size_ / chunk_size_ * (limit - skip);
    if (!reserve_capacity()) {
      large_.reset();
      throw std::bad_alloc();
    }
  }
}

fixed_pool_resource::~fixed_pool_resource() { release(); }

bool fixed_pool_resource::reserve_capacity() {
  try {
    region_ = static_cast<char*>(upstream_zeroes_ ? static_cast<page_resource*>(upstream_)->allocate_zeroed(region_size_, chunk_size_)
                                                  : upstream_->allocate(region_size_, chunk_size_));
  } catch (...) {
    return false;
  }
  ++stats_.upstream_allocations;
  region_used_ = 0;
  return true;
}

// ---- chunks --------------------------------------------------------------------------------------------------------

fixed_pool_resource::chunk* fixed_pool_resource::format(void* base, bool zeroed) noexcept {
  auto* c = new (base) chunk{};
  c->tag = tag_of(c);
  c->limit = static_cast<std::uint32_t>(chunk_size_ / stride_);
  c->words = (c->limit + 63) / 64;
  c->skip = static_cast<std::uint32_t>((sizeof(chunk) + std::size_t{c->words} * 16 + stride_ - 1) / stride_);
  c->free_count = c->limit - c->skip;
  c->hint = c->skip / 64;
  c->fresh_from = zeroed ? c->skip : c->limit;
  std::memset(c->bits(), 0, std::size_t{c->words} * 16);
  set_range([c](std::size_t i) -> std::uint64_t& { return c->free_word(i); }, c->skip, c->free_count, true);
  return c;
}

fixed_pool_resource::chunk* fixed_pool_resource::add_chunk() {
  void* base = nullptr;
  bool zeroed = false, in_region = false;
  if (opts_.max_bytes != 0) {
    if (region_ == nullptr && !reserve_capacity()) throw std::bad_alloc();
    if (region_used_ + chunk_size_ > region_size_) throw std::bad_alloc();  // the cap
    base = region_ + region_used_;
    region_used_ += chunk_size_;
    zeroed = upstream_zeroes_;
    in_region = true;
  } else if (empty_ != nullptr) {
    base = empty_;
    empty_ = empty_->next;
    --empty_count_;
  } else {
    base = upstream_zeroes_ ? static_cast<page_resource*>(upstream_)->allocate_zeroed(chunk_size_, chunk_size_)
                            : upstream_->allocate(chunk_size_, chunk_size_);
    ++stats_.upstream_allocations;
    zeroed = upstream_zeroes_;
  }
  if (!detail::block_map_register(base, chunk_size_)) {
    if (!in_region) {
      upstream_->deallocate(base, chunk_size_, chunk_size_);
      ++stats_.upstream_deallocations;
    } else {
      region_used_ -= chunk_size_;
    }
    throw std::bad_alloc();
  }
  chunk* c = format(base, zeroed);
  c->in_region = in_region;
  c->prev = nullptr;
  c->next = chunks_;
  if (chunks_ != nullptr) chunks_->prev = c;
  chunks_ = c;
  ++chunk_count_;
  return c;
}

void fixed_pool_resource::free_chunk_memory(chunk* c) noexcept {
  detail::block_map_unregister(c, chunk_size_);
  if (!c->in_region) {
    upstream_->deallocate(c, chunk_size_, chunk_size_);
    ++stats_.upstream_deallocations;
  }
}

// An empty chunk of a growing pool leaves the list: cached, or back upstream.
void fixed_pool_resource::retire(chunk* c) noexcept {
  if (c->prev != nullptr) c->prev->next = c->next;
  else chunks_ = c->next;
  if (c->next != nullptr) c->next->prev = c->prev;
  --chunk_count_;
  if (current_ == c) current_ = nullptr;
  if (hot_ != nullptr && chunk_of(hot_) == c) hot_ = nullptr;
  if (empty_count_ < opts_.max_empty_chunks) {
    c->next = empty_;  // stays registered in the block map, formatted again on reuse
    empty_ = c;
    ++empty_count_;
    return;
  }
  free_chunk_memory(c);
}

fixed_pool_resource::chunk* fixed_pool_resource::chunk_of(const void* p) const noexcept {
  return reinterpret_cast<chunk*>(reinterpret_cast<std::uintptr_t>(p) & ~(chunk_size_ - 1));
}

// ---- allocation ----------------------------------------------------------------------------------------------------

bool fixed_pool_resource::pooled(std::size_t bytes, std::size_t alignment) const noexcept {
  if (alignment > block_alignment_) return false;
  if (bytes <= stride_) return true;
  if (opts_.forward_large || bytes > detail::max_request_size) return false;
  const std::size_t limit = chunk_size_ / stride_;
  const std::size_t skip = (sizeof(chunk) + (limit + 63) / 64 * 16 + stride_ - 1) / stride_;
  return blocks_for(bytes) <= limit - skip;
}

// First run of k free blocks in c, claimed; nullptr when there is none. Scans the free words from the hint.
// The block freed last, claimed if it is still free (it is likely still in cache); nullptr otherwise.
void* fixed_pool_resource::claim_hot() noexcept {
  void* p = hot_;
  hot_ = nullptr;
  chunk* c = chunk_of(p);
  const std::size_t q = (static_cast<std::size_t>(static_cast<char*>(p) - reinterpret_cast<char*>(c)) * reciprocal_) >> 40;
  std::uint64_t& f = c->free_word(q >> 6);
  const std::uint64_t m = std::uint64_t{1} << (q & 63);
  if (STRATA_UNLIKELY((f & m) == 0)) return nullptr;  // taken since it was freed
  f &= ~m;
  c->start_word(q >> 6) |= m;
  --c->free_count;
  note_blocks(1);
  return p;
}

// The first free block of c (which has one), claimed: words below the hint are empty, so the one found is the new
// hint.
void* fixed_pool_resource::take_one(chunk* c, bool& fresh) noexcept {
  std::size_t h = c->hint;
  std::uint64_t w = c->free_word(h);
  while (w == 0) w = c->free_word(++h);
  const std::size_t q = h * 64 + static_cast<unsigned>(__builtin_ctzll(w));
  c->free_word(h) = w & (w - 1);
  c->start_word(h) |= std::uint64_t{1} << (q & 63);
  c->hint = static_cast<std::uint32_t>(h);
  --c->free_count;
  fresh = q >= c->fresh_from;
  if (fresh && c->fresh_from != c->limit) c->fresh_from = static_cast<std::uint32_t>(q + 1);
  return reinterpret_cast<char*>(c) + q * stride_;
}

void* fixed_pool_resource::take_run(chunk* c, std::size_t k, bool& fresh) noexcept {
  if (c->free_count < k) return nullptr;
  if (k == 1) return take_one(c, fresh);
  std::size_t run = 0, run_start = 0;
  std::size_t found = c->limit;
  for (std::size_t i = c->hint; i < c->words && found == c->limit; ++i) {
    const std::uint64_t w = c->free_word(i);
    std::size_t pos = 0;
    while (pos < 64) {
      const std::uint64_t rest = w >> pos;
      if (rest == 0) {
        run = 0;
        break;
      }
      const unsigned zeros = static_cast<unsigned>(__builtin_ctzll(rest));
      if (zeros != 0) {
        run = 0;
        pos += zeros;
        continue;
      }
      const std::size_t ones = ~rest == 0 ? 64 - pos : static_cast<unsigned>(__builtin_ctzll(~rest));
      const std::size_t len = ones < 64 - pos ? ones : 64 - pos;
      if (run == 0) run_start = i * 64 + pos;
      run += len;
      if (run >= k) {
        found = run_start;
        break;
      }
      if (pos + len < 64) run = 0;  // the run ends inside this word
      pos += len;
    }
  }
  if (found == c->limit) return nullptr;  // (a run may pass over free blocks, so the hint stays)
  set_range([c](std::size_t i) -> std::uint64_t& { return c->free_word(i); }, found, k, false);
  c->start_word(found >> 6) |= std::uint64_t{1} << (found & 63);
  c->free_count -= static_cast<std::uint32_t>(k);
  fresh = found >= c->fresh_from;
  if (found + k > c->fresh_from && c->fresh_from != c->limit) c->fresh_from = static_cast<std::uint32_t>(found + k);
  return reinterpret_cast<char*>(c) + found * stride_;
}

void* fixed_pool_resource::allocate_blocks(std::size_t k, bool& fresh) {
  fresh = false;
  if (k == 1 && hot_ != nullptr)
    if (void* p = claim_hot()) return p;
  void* p = nullptr;
  if (current_ != nullptr) p = take_run(current_, k, fresh);
  for (chunk* c = chunks_; p == nullptr && c != nullptr; c = c->next)
    if (c != current_) {
      p = take_run(c, k, fresh);
      if (p != nullptr && k == 1) current_ = c;
    }
  if (p == nullptr) {
    chunk* c = add_chunk();  // throws std::bad_alloc at the cap or when upstream has nothing
    if (k == 1 || current_ == nullptr) current_ = c;
    p = take_run(c, k, fresh);
  }
  note_blocks(k);
  return p;
}

void* fixed_pool_resource::do_allocate(std::size_t bytes, std::size_t alignment) {
  if (STRATA_LIKELY(bytes <= stride_ && alignment <= block_alignment_ && detail::is_power_of_two(alignment))) {
    // One block: the block freed last if it is still free, else the first free one of the current chunk.
    void* p = hot_ != nullptr ? claim_hot() : nullptr;
    if (p == nullptr && current_ != nullptr && current_->free_count != 0) {
      bool fresh;
      p = take_one(current_, fresh);
      note_blocks(1);
    }
    if (STRATA_LIKELY(p != nullptr)) {
      note_allocation(bytes);
      return p;
    }
  }
  detail::check_alignment("fixed_pool_resource::allocate", alignment);
  if (!pooled(bytes, alignment)) return allocate_upstream(bytes, alignment);
  bool fresh;
  return allocate_pooled(bytes, fresh);
}

// A pooled request through the general path, counted (a std::bad_alloc counts as a failure).
void* fixed_pool_resource::allocate_pooled(std::size_t bytes, bool& fresh) {
  void* p;
  try {
    p = allocate_blocks(blocks_for(bytes), fresh);
  } catch (...) {
    ++stats_.failed_allocations;
    throw;
  }
  note_allocation(bytes);
  return p;
}

void* fixed_pool_resource::allocate_zeroed(std::size_t bytes, std::size_t alignment) {
  detail::check_alignment("fixed_pool_resource::allocate_zeroed", alignment);
  if (!pooled(bytes, alignment)) {
    void* p = allocate_upstream(bytes, alignment);
    std::memset(p, 0, bytes);
    return p;
  }
  bool fresh;
  void* p = allocate_pooled(bytes, fresh);
  if (!fresh) std::memset(p, 0, bytes);  // fresh blocks came zero-filled from the OS and were never handed out
  return p;
}

// ---- deallocation --------------------------------------------------------------------------------------------------

void fixed_pool_resource::report(error_kind kind, const void* p, std::size_t bytes, std::size_t alignment,
                                 const char* why) const noexcept {
  report_error(error_info{kind, "fixed_pool_resource", this, p, bytes, alignment, 0, why});
}

// Finds the live allocation of k blocks at p; reports misuse and returns false when p is not one.
bool fixed_pool_resource::find_run(const void* p, std::size_t k, chunk*& c, std::size_t& q) noexcept {
  c = chunk_of(p);
  if (!detail::block_map_contains(p) ||
      c->tag != tag_of(c)) {
    report(error_kind::foreign_pointer, p, k * stride_, 0, "not a block of this pool");
    return false;
  }
  const std::size_t offset = static_cast<std::size_t>(static_cast<const char*>(p) - reinterpret_cast<char*>(c));
  q = (offset * reciprocal_) >> 40;
  if (q * stride_ != offset || q < c->skip || q >= c->limit) {
    report(error_kind::foreign_pointer, p, k * stride_, 0, "not at a block boundary");
    return false;
  }
  if (!c->is_start(q)) {
    report(c->is_free(q) ? error_kind::double_free : error_kind::foreign_pointer, p, k * stride_, 0,
           c->is_free(q) ? "the block is already free" : "inside an allocation of several blocks");
    return false;
  }
  bool fits = q + k <= c->limit && !c->is_continuation(q + k);
  for (std::size_t j = q + 1; fits && j < q + k; ++j) fits = c->is_continuation(j);
  if (!fits) {
    report(error_kind::wrong_size, p, k * stride_, 0, "the size does not match the allocation's number of blocks");
    return false;
  }
  return true;
}

void fixed_pool_resource::do_deallocate(void* p, std::size_t bytes, std::size_t alignment) {
  if (STRATA_LIKELY(bytes <= stride_ && alignment <= block_alignment_ && alignment != 0)) {
    // One block: every check on the chunk header line and one pair of bitmap words.
    chunk* c = chunk_of(p);
    const std::size_t offset = static_cast<std::size_t>(static_cast<char*>(p) - reinterpret_cast<char*>(c));
    const std::size_t q = (offset * reciprocal_) >> 40;
    if (STRATA_LIKELY(detail::block_map_contains(p) &&
                      c->tag == tag_of(c) &&
                      q * stride_ == offset && q >= c->skip && q < c->limit)) {
      std::uint64_t& f = c->free_word(q >> 6);
      std::uint64_t& st = c->start_word(q >> 6);
      const std::uint64_t m = std::uint64_t{1} << (q & 63);
      // Live single block: start set; the next block (same word unless q ends it) is not a continuation.
      const bool next_in_word = (q & 63) != 63;
      const bool next_continues =
          next_in_word ? (q + 1 < c->limit && ((f | st) & (m << 1)) == 0) : c->is_continuation(q + 1);
      if (STRATA_LIKELY((st & m) != 0 && !next_continues)) {
        f |= m;
        st &= ~m;
        if ((q >> 6) < c->hint) c->hint = static_cast<std::uint32_t>(q >> 6);
        ++c->free_count;
        --blocks_in_use_;
        ++stats_.deallocations;
        stats_.bytes_in_use -= bytes;
        hot_ = p;
        if (STRATA_UNLIKELY(c->free_count == c->limit - c->skip) && !c->in_region && c != current_) retire(c);
        return;
      }
    }
    // Not a live single block: the general path below says exactly what is wrong.
  }
  if (!detail::is_power_of_two(alignment)) {
    report(error_kind::bad_alignment, p, bytes, alignment, "alignment is not a power of two");
    return;
  }
  if (!pooled(bytes, alignment)) return deallocate_upstream(p, bytes, alignment);
  const std::size_t k = blocks_for(bytes);
  chunk* c;
  std::size_t q;
  if (!find_run(p, k, c, q)) return;
  set_range([c](std::size_t i) -> std::uint64_t& { return c->free_word(i); }, q, k, true);
  c->start_word(q >> 6) &= ~(std::uint64_t{1} << (q & 63));
  if ((q >> 6) < c->hint) c->hint = static_cast<std::uint32_t>(q >> 6);
  c->free_count += static_cast<std::uint32_t>(k);
  blocks_in_use_ -= k;
  ++stats_.deallocations;
  stats_.bytes_in_use -= bytes;
  if (k == 1) hot_ = p;
  if (c->free_count == c->limit - c->skip && !c->in_region && c != current_) retire(c);
}

// ---- upstream requests ---------------------------------------------------------------------------------------------

void* fixed_pool_resource::allocate_upstream(std::size_t bytes, std::size_t alignment) {
  void* p;
  try {
    if (bytes > detail::max_request_size || !large_.ensure_room()) throw std::bad_alloc();
    p = upstream_->allocate(bytes, alignment);
  } catch (...) {
    ++stats_.failed_allocations;
    throw;
  }
  large_.insert(reinterpret_cast<std::uintptr_t>(p), detail::pack_size_alignment(bytes, alignment));
  ++stats_.upstream_allocations;
  note_allocation(bytes);
  return p;
}

void fixed_pool_resource::deallocate_upstream(void* p, std::size_t bytes, std::size_t alignment) noexcept {
  auto* e = large_.find(reinterpret_cast<std::uintptr_t>(p));
  if (e == nullptr || bytes > detail::packed_size_mask || e->value != detail::pack_size_alignment(bytes, alignment)) {
    report(e == nullptr ? error_kind::foreign_pointer : error_kind::wrong_size, p, bytes, alignment,
           e == nullptr ? "not an allocation of this pool" : "size or alignment differs from the allocation's");
    return;
  }
  large_.erase(e);
  upstream_->deallocate(p, bytes, alignment);
  ++stats_.deallocations;
  ++stats_.upstream_deallocations;
  stats_.bytes_in_use -= bytes;
}

// ---- resize --------------------------------------------------------------------------------------------------------

bool fixed_pool_resource::do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) {
  if (!pooled(old_size, alignment) || !pooled(new_size, alignment)) return false;
  const std::size_t k_old = blocks_for(old_size), k_new = blocks_for(new_size);
  chunk* c;
  std::size_t q;
  if (!find_run(p, k_old, c, q)) return false;
  auto free_words = [c](std::size_t i) -> std::uint64_t& { return c->free_word(i); };
  if (k_new < k_old) {  // shrink: the tail blocks become free
    set_range(free_words, q + k_new, k_old - k_new, true);
    if (((q + k_new) >> 6) < c->hint) c->hint = static_cast<std::uint32_t>((q + k_new) >> 6);
    c->free_count += static_cast<std::uint32_t>(k_old - k_new);
    blocks_in_use_ -= k_old - k_new;
  } else if (k_new > k_old) {  // grow into the free blocks that follow
    if (q + k_new > c->limit) return false;
    for (std::size_t j = q + k_old; j < q + k_new; ++j)
      if (!c->is_free(j)) return false;
    set_range(free_words, q + k_old, k_new - k_old, false);
    c->free_count -= static_cast<std::uint32_t>(k_new - k_old);
    note_blocks(k_new - k_old);
    if (q + k_new > c->fresh_from && c->fresh_from != c->limit) c->fresh_from = static_cast<std::uint32_t>(q + k_new);
  }
  stats_.bytes_in_use = stats_.bytes_in_use - old_size + new_size;
  if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
  return true;
}

// ---- release, stats, invariants ------------------------------------------------------------------------------------

void fixed_pool_resource::release() noexcept {
  while (chunks_ != nullptr) {
    chunk* c = chunks_;
    chunks_ = c->next;
    free_chunk_memory(c);
  }
  while (empty_ != nullptr) {
    chunk* c = empty_;
    empty_ = c->next;
    free_chunk_memory(c);
  }
  chunk_count_ = empty_count_ = 0;
  current_ = nullptr;
  hot_ = nullptr;
  if (region_ != nullptr) {
    upstream_->deallocate(region_, region_size_, chunk_size_);
    ++stats_.upstream_deallocations;
    region_ = nullptr;
    region_used_ = 0;
  }
  large_.for_each([this](const auto& e) {
    upstream_->deallocate(reinterpret_cast<void*>(e.key), detail::packed_size(e.value), detail::packed_alignment(e.value));
    ++stats_.upstream_deallocations;
  });
  large_.reset();
  stats_.deallocations = stats_.allocations;  // every allocation is gone
  stats_.bytes_in_use = 0;
  blocks_in_use_ = 0;
}

resource_stats fixed_pool_resource::do_stats() const noexcept {
  resource_stats s = stats_;
  std::size_t large = 0;
  large_.for_each([&](const auto& e) { large += detail::packed_size(e.value); });
  s.bytes_held = (region_ != nullptr ? region_size_ : (chunk_count_ + empty_count_) * chunk_size_) + large;
  // A reservation is resident only where touched: count the chunks carved from it.
  s.bytes_resident = (region_ != nullptr ? region_used_ : (chunk_count_ + empty_count_) * chunk_size_) + large;
  return s;
}

bool fixed_pool_resource::check_invariants() const noexcept {
  const char* broken = nullptr;
  std::size_t chunks = 0, used = 0;
  for (const chunk* c = chunks_; c != nullptr && broken == nullptr; c = c->next) {
    ++chunks;
    if (c->tag != tag_of(c)) broken = "chunk tag corrupt";
    else if (!detail::block_map_contains(c)) broken = "chunk missing from the block map";
    if (broken != nullptr) break;
    std::size_t free = 0;
    for (std::size_t i = 0; i < c->words; ++i) {
      const std::uint64_t f = c->free_word(i), s = c->start_word(i);
      std::uint64_t valid = ~std::uint64_t{0};
      const std::size_t lo = i * 64;
      if (c->skip > lo) valid &= c->skip - lo >= 64 ? 0 : ~std::uint64_t{0} << (c->skip - lo);
      if (c->limit < lo + 64) valid &= c->limit <= lo ? 0 : (std::uint64_t{1} << (c->limit - lo)) - 1;
      if (((f | s) & ~valid) != 0) broken = "bits outside the chunk's blocks";
      if ((f & s) != 0) broken = "a block both free and the start of an allocation";
      if (i < c->hint && f != 0) broken = "free bits below the hint";
      free += static_cast<std::size_t>(__builtin_popcountll(f));
    }
    if (broken == nullptr && free != c->free_count) broken = "free count disagrees with the bitmap";
    used += c->limit - c->skip - c->free_count;
  }
  if (broken == nullptr && chunks != chunk_count_) broken = "chunk count disagrees with the list";
  if (broken == nullptr && used != blocks_in_use_) broken = "blocks in use disagree with the bitmaps";
  if (broken == nullptr && capacity_blocks_ != 0 && blocks_in_use_ > capacity_blocks_) broken = "capacity exceeded";
  if (broken == nullptr) return true;
  report_error(error_info{error_kind::invariant_violated, "fixed_pool_resource", this, nullptr, 0, 0, 0, broken});
  return false;
}

}  // namespace strata
