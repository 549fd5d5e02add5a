// SPDX-License-Identifier: MIT
// lib/page_resource.cpp: page_resource: spans from lib/os, a live-span registry and a bounded span cache.
#include <strata/page_resource.hpp>

#include <cstring>
#include <new>
#include <utility>

#include <strata/detail/core/checks.hpp>
#include <strata/detail/core/math.hpp>
#include <strata/detail/core/sanitizer.hpp>
#include <strata/error.hpp>

#include "os/os.hpp"

namespace strata {

// ---- storage for the registry --------------------------------------------------------------------------------------

void* detail::os_page_storage::allocate(std::size_t bytes) noexcept {
  return os::map(align_up(bytes, os::page_size()));
}

void detail::os_page_storage::deallocate(void* p, std::size_t bytes) noexcept {
  os::release(p, align_up(bytes, os::page_size()));
}

namespace {
// Pages going back to the OS keep no poison of ours on their addresses (ASan builds: the next mapping there may be
// anyone's).
void release_pages(void* p, std::size_t n) noexcept {
  detail::san::clear_poison(p, n);
  os::release(p, n);
}

// A registry value packs the requested size and log2 of the alignment (detail::pack_size_alignment).
using detail::packed_alignment;
using detail::packed_size;
constexpr std::size_t size_mask = detail::packed_size_mask;
std::size_t pack(std::size_t size, std::size_t alignment) noexcept { return detail::pack_size_alignment(size, alignment); }

std::size_t span_of(std::size_t bytes) noexcept { return detail::align_up(bytes == 0 ? 1 : bytes, os::page_size()); }

os::purge_kind purge_kind_of(page_resource::purge_mode m) noexcept {
  return m == page_resource::purge_mode::lazy ? os::purge_kind::lazy : os::purge_kind::eager;
}

// Spans aligned to their own size below this are mapped this many bytes at a time (see allocate_span).
constexpr std::size_t run_bytes = std::size_t{1} << 20;

// Maps a fresh span of `span` bytes aligned to `alignment` (>= page size), followed by `reserved` bytes of
// address space with no memory behind it. Over-aligned requests take the excess and unmap the head and tail around
// the aligned part. Returns the address or 0; counts the system calls in `calls`.
std::uintptr_t map_span(std::size_t span, std::size_t alignment, std::size_t reserved,
                        resource_stats& calls) noexcept {
  const std::size_t page = os::page_size();
  if (alignment <= page && reserved == 0) {
    ++calls.upstream_allocations;
    return detail::to_address(os::map(span));
  }
  // Aligning by over-mapping unmaps the head and tail around the aligned part: an OS that can release whole mappings
  // only cannot serve such alignments here.
  const os::capabilities caps = os::get_capabilities();
  if (alignment > page && !caps.partial_release) return 0;
  std::size_t wanted, total;
  if (!detail::checked_add(span, reserved, wanted) ||
      !detail::checked_add(wanted, alignment > page ? alignment - page : 0, total))
    return 0;
  ++calls.upstream_allocations;
  // With a reservation, map everything inaccessible and open the span; otherwise map it usable at once. Where a
  // released head and tail keep their address space (Windows), the excess is only reserved and the span committed:
  // no memory is charged for the head and tail even for a moment.
  const bool open_later = reserved != 0 || (alignment > page && !caps.release_returns_address_space);
  auto* raw = static_cast<char*>(open_later ? os::reserve(total) : os::map(total));
  if (raw == nullptr) return 0;
  const std::uintptr_t begin = detail::align_up(detail::to_address(raw), alignment);
  const std::size_t head = begin - detail::to_address(raw);
  const std::size_t tail = total - head - wanted;
  if (head != 0) os::release(raw, head);
  if (tail != 0) os::release(reinterpret_cast<void*>(begin + wanted), tail);
  calls.upstream_deallocations += static_cast<std::uint64_t>(head != 0) + static_cast<std::uint64_t>(tail != 0);
  if (open_later && os::commit(reinterpret_cast<void*>(begin), span) != os::result::ok) {
    os::release(reinterpret_cast<void*>(begin), wanted);
    ++calls.upstream_deallocations;
    return 0;
  }
  return begin;
}

}  // namespace

// Spans collected under the lock and unmapped (or purged) after it is dropped. Every operation adds a bounded
// number: an insertion evicts at most what leaves room for its own span (see evict_to_limits), purges are taken
// purge_batch at a time, trim() drains the cache a list at a time.
struct page_resource::release_list {
  static constexpr std::size_t capacity = 64;
  struct span {
    std::uintptr_t begin;
    std::size_t size;
  };
  span spans[capacity];
  std::size_t count = 0;
  void add(std::uintptr_t begin, std::size_t size) noexcept {
    STRATA_ASSERT(count < capacity);
    spans[count++] = span{begin, size};
  }
  [[nodiscard]] std::size_t room() const noexcept { return capacity - count; }
};

namespace {
// Resident spans due for purging taken out of the cache per deallocation; the rest wait for the next one.
constexpr std::size_t purge_batch = 16;
}  // namespace

// ---- construction --------------------------------------------------------------------------------------------------

page_resource::page_resource(const options& opts) noexcept : opts_(opts) {
  const os::capabilities caps = os::get_capabilities();
  // Room to grow is address space reserved after a span, committed or given back in parts as it grows and shrinks.
  // No room where the OS cannot reserve, nor where the process has an address-space limit (`ulimit -v`): rooms of
  // 3 times a span would take the address space that later spans need (a program got half the 1 MiB blocks glibc
  // gives it under `ulimit -v 600000`).
  if (!caps.reserve || !caps.partial_release || os::address_space_limit() != SIZE_MAX) opts_.growth_reserve_min = 0;
  // Where the OS has no lazy purge it purges eagerly: pages read as zero after it, and reuse need not clear them.
  if (!caps.lazy_purge) opts_.purge = purge_mode::eager;
  if (opts_.max_cached_spans > max_cache_slots) opts_.max_cached_spans = max_cache_slots;
  if (opts_.max_resident_cached_bytes > opts_.max_cached_bytes)
    opts_.max_resident_cached_bytes = opts_.max_cached_bytes;
}

page_resource::~page_resource() { release(); }

std::size_t page_resource::page_size() noexcept { return os::page_size(); }
std::size_t page_resource::huge_page_size() noexcept { return os::huge_page_size(); }

std::size_t page_resource::round_size(std::size_t bytes) {
  std::size_t span;
  if (!detail::checked_align_up(bytes == 0 ? 1 : bytes, os::page_size(), span) || span > size_mask)
    detail::throw_bad_alloc();
  return span;
}

page_resource* default_page_resource() noexcept {
  // Constructed on first use and never destroyed, so static objects may use it during their own destruction.
  alignas(page_resource) static unsigned char storage[sizeof(page_resource)];
  static page_resource* const instance = new (storage) page_resource();
  return instance;
}

// ---- allocate / deallocate -----------------------------------------------------------------------------------------

// (Built for Valgrind: each public entry is a tracked_call, which describes the span to memcheck; nothing otherwise.)
void* page_resource::do_allocate(std::size_t bytes, std::size_t alignment) {
  const detail::san::tracked_call call(this);
  return call.allocated(allocate_span(bytes, alignment, false), bytes);
}

void* page_resource::do_allocate_zeroed(std::size_t bytes, std::size_t alignment) {
  const detail::san::tracked_call call(this);
  return call.allocated(allocate_span(bytes, alignment, true), bytes, true);
}

memory_capabilities page_resource::do_capabilities() const noexcept {
  memory_capabilities c;
  c.zeroed_pages = true;
  c.purge = true;
  c.page_size = os::page_size();
  c.huge_page_size = os::huge_page_size();
  c.huge_pages = c.huge_page_size != 0;
  c.resize_in_place = true;
  return c;
}

void* page_resource::allocate_span(std::size_t bytes, std::size_t alignment, bool zero) {
  detail::check_alignment("page_resource::allocate", alignment);
  const std::size_t page = os::page_size();
  std::size_t span;
  if (!detail::checked_align_up(bytes == 0 ? 1 : bytes, page, span) || span > size_mask) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.failed_allocations;
    detail::throw_bad_alloc();
  }
  std::size_t span_alignment = alignment < page ? page : alignment;
  // No huge page is smaller than 1 MiB (s390x's; x86-64 and arm64 have 2 MiB or more): smaller spans do not ask
  // the OS its size (a file read, the first time), so a process that maps only small spans never reads it.
  const std::size_t huge = opts_.transparent_huge_pages && span >= (std::size_t{1} << 20) ? os::huge_page_size() : 0;
  const bool want_huge = huge != 0 && span >= huge;
  if (want_huge && span_alignment < huge && os::get_capabilities().partial_release) span_alignment = huge;

  release_list evicted;
  std::uintptr_t begin = 0;
  bool dirty = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!live_.ensure_room()) {
      ++stats_.failed_allocations;
      detail::throw_bad_alloc();
    }
    begin = take_from_cache(span, span_alignment, evicted, dirty);
    if (begin != 0) record_live(begin, bytes, alignment, span, 0);
  }
  unmap(evicted);
  if (begin != 0) {
    // Eagerly purged pages read as zero; resident or lazily purged ones may hold old data.
    if (zero && (dirty || opts_.purge == purge_mode::lazy)) {
      detail::san::unpoison(reinterpret_cast<void*>(begin), span);
      std::memset(reinterpret_cast<void*>(begin), 0, span);
    }
    // ASan builds: a cached span was poisoned whole; the bytes asked for are addressable now, the rest of the last
    // page not.
    detail::san::unpoison(reinterpret_cast<void*>(begin), bytes);
    detail::san::poison(reinterpret_cast<void*>(begin + bytes), span - bytes);
    return reinterpret_cast<void*>(begin);
  }

  std::size_t reserved = 0;
  if (opts_.growth_reserve_min != 0 && span >= opts_.growth_reserve_min &&
      !detail::checked_mul(span, opts_.growth_reserve_ratio, reserved))
    reserved = 0;
  resource_stats calls{};
  // A span aligned to its own size under 1 MiB (the strategies' chunks): a run of them is mapped at once and the rest
  // cached, clean, so that the next ones cost no system call (over-aligned mapping takes one map and one or two
  // unmaps for each).
  std::size_t run = 1;
  if (reserved == 0 && span_alignment > page && span == span_alignment && span < run_bytes &&
      opts_.max_cached_spans != 0 && run_bytes <= opts_.max_cached_bytes)
    run = run_bytes / span;
  begin = map_span(span * run, span_alignment, reserved, calls);
  if (begin == 0 && (run > 1 || reserved != 0)) {
    run = 1;  // a run and room for growth are bonuses: without them, try the span alone
    reserved = 0;
    begin = map_span(span, span_alignment, 0, calls);
  }
  if (begin == 0 && cached_bytes() != 0) {
    // The OS is out of memory or address space (an RLIMIT_AS, overcommit off) while cached spans hold some:
    // give them all back and try once more.
    trim();
    begin = map_span(span, span_alignment, 0, calls);
  }
  if (begin != 0 && want_huge) os::advise_huge_pages(reinterpret_cast<void*>(begin), span, true);

  release_list out;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.upstream_allocations += calls.upstream_allocations;
    stats_.upstream_deallocations += calls.upstream_deallocations;
    if (begin == 0 || !live_.ensure_room()) {
      if (begin != 0) {
        os::release(reinterpret_cast<void*>(begin), span * run + reserved);
        ++stats_.upstream_deallocations;
      }
      ++stats_.failed_allocations;
      detail::throw_bad_alloc();
    }
    record_live(begin, bytes, alignment, span, reserved);
    // ASan builds: a fresh mapping carries no poison; the rest of its last page gets some, and the run's other spans
    // go to the cache poisoned.
    detail::san::poison(reinterpret_cast<void*>(begin + bytes), span - bytes);
    if (run > 1) {
      detail::san::poison(reinterpret_cast<void*>(begin + span), span * (run - 1));
      insert_cached(begin + span, span * (run - 1), false, 0, out);
    }
  }
  unmap(out);
  return reinterpret_cast<void*>(begin);
}

// Under mutex_, with room in the registry.
void page_resource::record_live(std::uintptr_t begin, std::size_t bytes, std::size_t alignment, std::size_t span,
                                std::size_t reserved) noexcept {
  live_.insert(begin, live_span{pack(bytes, alignment), reserved});
  live_span_bytes_ += span;
  stats_.bytes_in_use += bytes;
  if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
  ++stats_.allocations;
}

// Under mutex_.
void page_resource::record_resize(std::size_t old_size, std::size_t new_size) noexcept {
  stats_.bytes_in_use = stats_.bytes_in_use - old_size + new_size;
  if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
}

void page_resource::do_deallocate(void* p, std::size_t bytes, std::size_t alignment) {
  const detail::san::tracked_call call(this);
  call.freeing(p);
  const std::uintptr_t begin = detail::to_address(p);
  std::size_t span = 0, reserved = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto* e = begin != 0 ? live_.find(begin) : nullptr;
    if (e != nullptr && detail::is_power_of_two(alignment) && bytes <= size_mask &&
        e->value.packed == pack(bytes, alignment)) {
      reserved = e->value.reserved;
      live_.erase(e);
      span = span_of(bytes);
      live_span_bytes_ -= span;
      stats_.bytes_in_use -= bytes;
      ++stats_.deallocations;
    }
  }
  if (span == 0) {
    report_bad_pointer(p, bytes, alignment);
    return;
  }
  give_back(begin, span, reserved);
}

void page_resource::report_bad_pointer(void* p, std::size_t bytes, std::size_t alignment) noexcept {
  error_info info{error_kind::foreign_pointer, "page_resource", this, p, bytes, alignment, 0, nullptr};
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const std::uintptr_t a = detail::to_address(p);
    if (auto* e = a != 0 ? live_.find(a) : nullptr) {
      info.kind = error_kind::wrong_size;
      info.expected_size = packed_size(e->value.packed);
      if (info.expected_size == bytes) info.detail = "alignment differs from the one allocated with";
    } else {
      for (std::size_t i = 0; i < cache_count_; ++i)
        if (a >= cache_[i].begin && a < cache_[i].begin + cache_[i].size) {
          info.kind = error_kind::double_free;
          info.detail = "the pages are already free";
        }
    }
  }
  report_error(info);
}

// ---- the span cache ------------------------------------------------------------------------------------------------
// cache_[0, cache_count_) is sorted by address and disjoint; adjacent spans of the same residency are merged.

void page_resource::give_back(std::uintptr_t begin, std::size_t span, std::size_t reserved) noexcept {
  release_list out;
  if (span > opts_.max_cached_bytes || opts_.max_cached_spans == 0) {
    release_pages(reinterpret_cast<void*>(begin), span + reserved);
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.upstream_deallocations;
    return;
  }
  detail::san::poison(reinterpret_cast<void*>(begin), span);  // ASan builds: a cached span is no one's to touch
  if (reserved != 0) out.add(begin + span, reserved);  // cached spans keep no reservation
  release_list purge;
  const std::uint64_t now = os::monotonic_ns();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    insert_cached(begin, span, true, now, out);
    take_purge_candidates(now, purge);
  }
  unmap(out);
  purge_and_recache(purge);
}

// Under mutex_: takes out of the cache the resident spans to purge now: those unused for purge_delay_ms, then the
// oldest while resident cached bytes exceed their bound. They come back, purged, through purge_and_recache; while
// out, nobody can be handed memory that is being purged.
void page_resource::take_purge_candidates(std::uint64_t now, release_list& purge) noexcept {
  const std::uint64_t delay = std::uint64_t{opts_.purge_delay_ms} * 1000000u;
  const auto due = [&](std::uint64_t freed) { return freed <= now && now - freed >= delay; };
  // Nothing resident was freed long enough ago, and resident bytes are within their bound: no scan.
  if (!due(resident_since_) && cache_resident_bytes_ <= opts_.max_resident_cached_bytes) return;
  auto take = [&](std::size_t i) {
    purge.add(cache_[i].begin, cache_[i].size);
    cache_bytes_ -= cache_[i].size;
    cache_resident_bytes_ -= cache_[i].size;
    erase_cached(i);
  };
  std::uint64_t since = ~std::uint64_t{0};
  for (std::size_t i = 0; i < cache_count_;) {
    if (!cache_[i].resident) {
      ++i;
    } else if (due(cache_[i].freed_ns) && purge.count < purge_batch) {
      take(i);
    } else {
      if (cache_[i].freed_ns < since) since = cache_[i].freed_ns;
      ++i;
    }
  }
  while (cache_resident_bytes_ > opts_.max_resident_cached_bytes && purge.count < purge_batch) {
    std::size_t oldest = cache_count_;
    for (std::size_t i = 0; i < cache_count_; ++i)
      if (cache_[i].resident && (oldest == cache_count_ || cache_[i].freed_ns < cache_[oldest].freed_ns)) oldest = i;
    if (oldest == cache_count_) break;
    take(oldest);
  }
  resident_since_ = since;  // a bound from below for what is left (taking more only raises the true oldest)
}

void page_resource::purge_and_recache(const release_list& purge) noexcept {
  if (purge.count == 0) return;
  bool purged[release_list::capacity];
  for (std::size_t i = 0; i < purge.count; ++i)
    purged[i] = os::purge(reinterpret_cast<void*>(purge.spans[i].begin), purge.spans[i].size,
                          purge_kind_of(opts_.purge)) == os::result::ok;
  release_list out;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (std::size_t i = 0; i < purge.count; ++i) {
      if (purged[i])
        insert_cached(purge.spans[i].begin, purge.spans[i].size, false, 0, out);
      else
        out.add(purge.spans[i].begin, purge.spans[i].size);  // could not purge: unmap instead
    }
  }
  unmap(out);
}

// Under mutex_: the table of cached spans, mapped at the first use; false when it cannot be (nothing is cached then).
bool page_resource::cache_table() noexcept {
  if (cache_ == nullptr && opts_.max_cached_spans != 0)
    cache_ = static_cast<cached_span*>(detail::os_page_storage::allocate(opts_.max_cached_spans * sizeof(cached_span)));
  return cache_ != nullptr;
}

void page_resource::insert_cached(std::uintptr_t begin, std::size_t span, bool resident, std::uint64_t now,
                                  release_list& out) noexcept {
  // The first cached span at or after begin.
  std::size_t i = 0, n = cache_count_;
  while (n > 0) {
    const std::size_t half = n / 2;
    if (cache_[i + half].begin < begin) {
      i += half + 1;
      n -= half + 1;
    } else {
      n = half;
    }
  }
  const std::uint64_t stamp = ++stamp_;
  cache_bytes_ += span;
  if (resident) {
    cache_resident_bytes_ += span;
    if (now < resident_since_) resident_since_ = now;
  }
  // Merge with the left and right neighbours when they touch and share residency. A merged span keeps the older
  // free time, so no memory stays resident past purge_delay_ms (the fresh part may go back a little early).
  if (i > 0 && cache_[i - 1].begin + cache_[i - 1].size == begin && cache_[i - 1].resident == resident) {
    --i;
    cache_[i].size += span;
    cache_[i].stamp = stamp;
  } else {
    if (cache_count_ == opts_.max_cached_spans || !cache_table()) {
      // No slot (the table is full, or could not be mapped): the new span goes straight back to the OS.
      cache_bytes_ -= span;
      if (resident) cache_resident_bytes_ -= span;
      out.add(begin, span);
      return;
    }
    open_cached(i);
    cache_[i] = cached_span{begin, span, stamp, now, resident};
  }
  if (i + 1 < cache_count_ && cache_[i].begin + cache_[i].size == cache_[i + 1].begin &&
      cache_[i + 1].resident == resident) {
    cache_[i].size += cache_[i + 1].size;
    if (cache_[i + 1].freed_ns < cache_[i].freed_ns) cache_[i].freed_ns = cache_[i + 1].freed_ns;
    erase_cached(i + 1);
  }
  evict_to_limits(i, out);
}

void page_resource::erase_cached(std::size_t index) noexcept {
  std::memmove(static_cast<void*>(cache_ + index), cache_ + index + 1, (cache_count_ - index - 1) * sizeof(cached_span));
  --cache_count_;
}

// A free entry at index (the caller fills it); the table has room.
void page_resource::open_cached(std::size_t index) noexcept {
  std::memmove(static_cast<void*>(cache_ + index + 1), cache_ + index, (cache_count_ - index) * sizeof(cached_span));
  ++cache_count_;
}

// Evicts the least recently cached spans until the cache is within its limits, sparing the one at keep_index (the
// span just cached) while `out` has room for more: when it has room for one span only, that one goes, and the
// cache is within its limits again (it was before that span came).
void page_resource::evict_to_limits(std::size_t keep_index, release_list& out) noexcept {
  std::uintptr_t keep = keep_index < cache_count_ ? cache_[keep_index].begin : 0;
  while (cache_count_ > opts_.max_cached_spans || cache_bytes_ > opts_.max_cached_bytes) {
    const bool last_room = out.room() == 1;
    std::size_t victim = cache_count_;
    for (std::size_t j = 0; j < cache_count_; ++j) {
      if (keep != 0 && last_room) {
        if (cache_[j].begin == keep) victim = j;
      } else if (cache_[j].begin != keep && (victim == cache_count_ || cache_[j].stamp < cache_[victim].stamp)) {
        victim = j;
      }
    }
    if (victim == cache_count_) victim = 0;  // only the kept span is left: it goes too
    const cached_span v = cache_[victim];
    cache_bytes_ -= v.size;
    if (v.resident) cache_resident_bytes_ -= v.size;
    out.add(v.begin, v.size);
    erase_cached(victim);
    if (v.begin == keep) keep = 0;
  }
}

std::uintptr_t page_resource::take_from_cache(std::size_t span, std::size_t alignment, release_list& out,
                                              bool& dirty) noexcept {
  std::size_t best = cache_count_;
  std::uintptr_t best_begin = 0;
  for (std::size_t i = 0; i < cache_count_; ++i) {
    const cached_span& c = cache_[i];
    if (c.size < span) continue;
    const std::uintptr_t a = detail::align_up(c.begin, alignment);
    if (a - c.begin > c.size - span) continue;
    // Resident spans first (no page faults to refill them, and no more memory resident), then the best fit.
    if (best == cache_count_ || (c.resident && !cache_[best].resident) ||
        (c.resident == cache_[best].resident && c.size < cache_[best].size)) {
      best = i;
      best_begin = a;
      if (c.resident && c.size == span) break;  // none fits better
    }
  }
  if (best == cache_count_) return 0;
  dirty = cache_[best].resident;
  take_cached_range(best, best_begin, span, out);
  return best_begin;
}

void page_resource::take_cached_range(std::size_t index, std::uintptr_t begin, std::size_t span,
                                      release_list& out) noexcept {
  const cached_span c = cache_[index];
  STRATA_ASSERT(begin >= c.begin && begin + span <= c.begin + c.size);
  const std::size_t head = begin - c.begin;
  const std::size_t tail = c.size - head - span;
  cache_bytes_ -= span;
  if (c.resident) cache_resident_bytes_ -= span;
  if (head != 0 && tail != 0) {
    cache_[index].size = head;
    if (cache_count_ == opts_.max_cached_spans) {
      // No slot for the tail piece: unmap it.
      cache_bytes_ -= tail;
      if (c.resident) cache_resident_bytes_ -= tail;
      out.add(begin + span, tail);
      return;
    }
    open_cached(index + 1);
    cache_[index + 1] = cached_span{begin + span, tail, c.stamp, c.freed_ns, c.resident};
    evict_to_limits(cache_count_, out);
  } else if (head != 0) {
    cache_[index].size = head;
  } else if (tail != 0) {
    cache_[index].begin = begin + span;
    cache_[index].size = tail;
  } else {
    erase_cached(index);
  }
}

void page_resource::unmap(const release_list& spans) noexcept {
  if (spans.count == 0) return;
  for (std::size_t i = 0; i < spans.count; ++i)
    release_pages(reinterpret_cast<void*>(spans.spans[i].begin), spans.spans[i].size);
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.upstream_deallocations += spans.count;
}

// The cache is emptied a list at a time; its table goes too (mapped again when a span is next cached).
void page_resource::trim() noexcept {
  for (bool more = true; more;) {
    release_list out;
    cached_span* table = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (cache_count_ > 0 && out.room() > 0) {
        const cached_span& c = cache_[--cache_count_];
        out.add(c.begin, c.size);
        cache_bytes_ -= c.size;
        if (c.resident) cache_resident_bytes_ -= c.size;
      }
      more = cache_count_ > 0;
      if (!more) std::swap(table, cache_);
    }
    unmap(out);
    if (table != nullptr) detail::os_page_storage::deallocate(table, opts_.max_cached_spans * sizeof(cached_span));
  }
}

// Unmaps under the lock: the live spans are unbounded in number (no release_list holds them), and release() is the
// rare free-everything call.
void page_resource::release() noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  std::uint64_t calls = 0;
  live_.for_each([&](const auto& e) {
    release_pages(reinterpret_cast<void*>(e.key), span_of(packed_size(e.value.packed)) + e.value.reserved);
    ++calls;
  });
  live_.reset();
  for (std::size_t i = 0; i < cache_count_; ++i)
    release_pages(reinterpret_cast<void*>(cache_[i].begin), cache_[i].size);
  calls += cache_count_;
  cache_count_ = 0;
  if (cache_ != nullptr) detail::os_page_storage::deallocate(cache_, opts_.max_cached_spans * sizeof(cached_span));
  cache_ = nullptr;
  cache_bytes_ = 0;
  cache_resident_bytes_ = 0;
  live_span_bytes_ = 0;
  stats_.upstream_deallocations += calls;
  stats_.deallocations = stats_.allocations;
  stats_.bytes_in_use = 0;
}

// ---- huge pages ----------------------------------------------------------------------------------------------------

bool page_resource::do_advise_huge_pages(void* p, std::size_t bytes) noexcept {
  const std::size_t huge = os::huge_page_size();
  const auto begin = reinterpret_cast<std::uintptr_t>(p);
  if (huge == 0 || bytes < huge) return false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto* e = live_.find(begin);
    if (e == nullptr || bytes > span_of(packed_size(e->value.packed))) return false;
  }
  // The caller owns the allocation, so it cannot be freed meanwhile: advise outside the lock.
  return os::advise_huge_pages(p, bytes, true) == os::result::ok;
}

bool page_resource::do_purge(void* allocation, std::size_t offset, std::size_t bytes) noexcept {
  const std::size_t page = os::page_size();
  const auto begin = reinterpret_cast<std::uintptr_t>(allocation);
  if (bytes == 0 || offset % page != 0 || bytes % page != 0) return false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto* e = live_.find(begin);
    if (e == nullptr || offset > span_of(packed_size(e->value.packed)) ||
        bytes > span_of(packed_size(e->value.packed)) - offset)
      return false;
  }
  // The caller owns the allocation, so it cannot be freed meanwhile: purge outside the lock.
  return os::purge(static_cast<char*>(allocation) + offset, bytes, os::purge_kind::eager) == os::result::ok;
}

// ---- resize --------------------------------------------------------------------------------------------------------

bool page_resource::do_resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) {
  const detail::san::tracked_call call(this);
  if (!resize_span(p, old_size, new_size, alignment)) return false;
  // ASan builds: the bytes gained addressable (they may have been a cached span's), the rest of the last page not.
  char* const b = static_cast<char*>(p);
  if (new_size > old_size) detail::san::unpoison(b + old_size, new_size - old_size);
  detail::san::poison(b + new_size, span_of(new_size) - new_size);
  call.resized(p, old_size, new_size);
  return true;
}

bool page_resource::resize_span(void* p, std::size_t old_size, std::size_t new_size, std::size_t alignment) {
  const std::uintptr_t begin = detail::to_address(p);
  const std::size_t page = os::page_size();
  std::size_t new_span;
  if (!detail::checked_align_up(new_size == 0 ? 1 : new_size, page, new_span) || new_span > size_mask) return false;
  enum class step { report, done, give_tail, decommit_tail, commit_reserved, extend } next = step::report;
  std::size_t old_span = 0, drop_reserved = 0;
  const bool can_extend = os::get_capabilities().extend_in_place;
  release_list out;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto* e = live_.find(begin);
    if (e != nullptr && old_size <= size_mask && e->value.packed == pack(old_size, alignment)) {
      old_span = span_of(old_size);
      live_span& s = e->value;
      if (new_span <= old_span) {
        // Shrink: a large span folds the freed pages into its reservation (room to grow back); a small one gives
        // them to the cache.
        s.packed = pack(new_size, alignment);
        live_span_bytes_ -= old_span - new_span;
        record_resize(old_size, new_size);
        const bool keep_room = s.reserved != 0 || (opts_.growth_reserve_min != 0 && old_span >= opts_.growth_reserve_min);
        next = new_span == old_span ? step::done : keep_room ? step::decommit_tail : step::give_tail;
        if (next == step::decommit_tail) s.reserved += old_span - new_span;
      } else if (const std::size_t need = new_span - old_span; s.reserved >= need) {
        // Grow into our own reservation: claim it now, commit outside the lock.
        s.packed = pack(new_size, alignment);
        s.reserved -= need;
        live_span_bytes_ += need;
        record_resize(old_size, new_size);
        next = step::commit_reserved;
      } else {
        next = step::extend;
        if (can_extend) {
          drop_reserved = s.reserved;  // too small: give it up and try to extend over it and beyond
          s.reserved = 0;
        }
        for (std::size_t i = 0; drop_reserved == 0 && i < cache_count_ && cache_[i].begin <= begin + old_span; ++i) {
          if (cache_[i].begin == begin + old_span && cache_[i].size >= need) {
            // A cached span starts right where this one ends.
            take_cached_range(i, begin + old_span, need, out);
            s.packed = pack(new_size, alignment);
            live_span_bytes_ += need;
            record_resize(old_size, new_size);
            next = step::done;
          }
        }
      }
    }
  }
  unmap(out);
  switch (next) {
    case step::report:
      report_bad_pointer(p, old_size, alignment);
      return false;
    case step::done:
      return true;
    case step::give_tail:
      give_back(begin + new_span, old_span - new_span, 0);
      return true;
    case step::decommit_tail:
      detail::san::poison(reinterpret_cast<void*>(begin + new_span), old_span - new_span);  // room, no one's
      if (os::decommit(reinterpret_cast<void*>(begin + new_span), old_span - new_span) != os::result::ok)
        os::purge(reinterpret_cast<void*>(begin + new_span), old_span - new_span, os::purge_kind::eager);
      return true;
    case step::commit_reserved: {
      if (os::commit(reinterpret_cast<void*>(begin + old_span), new_span - old_span) == os::result::ok) return true;
      std::lock_guard<std::mutex> lock(mutex_);
      if (auto* e = live_.find(begin)) {  // undo the claim
        e->value.packed = pack(old_size, alignment);
        e->value.reserved += new_span - old_span;
        live_span_bytes_ -= new_span - old_span;
        stats_.bytes_in_use = stats_.bytes_in_use - new_size + old_size;
      }
      return false;
    }
    case step::extend:
      if (!can_extend) return false;  // the OS cannot grow a mapping where it is
      break;
  }
  if (drop_reserved != 0) {
    release_pages(reinterpret_cast<void*>(begin + old_span), drop_reserved);
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.upstream_deallocations;
  }
  // Grow into unmapped address space.
  const os::result r = os::extend_in_place(p, old_span, new_span);
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.upstream_allocations;
  if (r != os::result::ok) return false;
  auto* e = live_.find(begin);
  if (e == nullptr) return true;  // freed by another thread meanwhile: the caller broke the contract
  e->value.packed = pack(new_size, alignment);
  live_span_bytes_ += new_span - old_span;
  record_resize(old_size, new_size);
  return true;
}

// ---- observers -----------------------------------------------------------------------------------------------------

resource_stats page_resource::do_stats() const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  resource_stats s = stats_;
  const std::size_t table = detail::align_up(live_.storage_bytes(), os::page_size());
  s.bytes_held = live_span_bytes_ + cache_bytes_ + table;
  s.bytes_resident = live_span_bytes_ + cache_resident_bytes_ + table;
  return s;
}

void page_resource::do_inspect(inspector& v, unsigned what) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if ((what & inspect_tiers) != 0) {
    tier_detail meta;
    meta.name = "metadata";
    meta.stats.bytes_held = meta.stats.bytes_resident = detail::align_up(live_.storage_bytes(), os::page_size());
    v.on_tier(meta);
  }
  if ((what & inspect_regions) == 0) return;
  live_.for_each([&](const auto& e) {
    region_detail r;
    r.address = reinterpret_cast<const void*>(e.key);
    r.size = span_of(packed_size(e.value.packed));
    r.kind = region_kind::span;
    r.bytes_in_use = packed_size(e.value.packed);
    r.live_blocks = 1;
    v.on_region(r);
  });
  for (std::size_t i = 0; i < cache_count_; ++i) {
    region_detail r;
    r.address = reinterpret_cast<const void*>(cache_[i].begin);
    r.size = cache_[i].size;
    r.kind = region_kind::span;
    r.cached = true;
    v.on_region(r);
  }
}

std::size_t page_resource::cached_bytes() const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return cache_bytes_;
}

std::size_t page_resource::cached_spans() const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return cache_count_;
}

bool page_resource::check_invariants() const noexcept {
  const char* broken = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const std::size_t page = os::page_size();
    std::size_t bytes = 0, resident = 0;
    for (std::size_t i = 0; i < cache_count_ && broken == nullptr; ++i) {
      const cached_span& c = cache_[i];
      if (c.size == 0 || c.begin % page != 0 || c.size % page != 0) broken = "cached span not page-aligned";
      if (i + 1 < cache_count_ && c.begin + c.size > cache_[i + 1].begin) broken = "cached spans overlap or unsorted";
      bytes += c.size;
      if (c.resident) resident += c.size;
    }
    if (broken == nullptr && (bytes != cache_bytes_ || resident != cache_resident_bytes_))
      broken = "cache byte counters disagree with the cached spans";
    if (broken == nullptr && (cache_count_ > opts_.max_cached_spans || cache_bytes_ > opts_.max_cached_bytes))
      broken = "cache exceeds its limits";
    std::size_t live_bytes = 0, live_spans = 0, in_use = 0;
    live_.for_each([&](const auto& e) {
      const std::size_t span = span_of(packed_size(e.value.packed));
      if (e.key % page != 0 || e.key % packed_alignment(e.value.packed) != 0) broken = "live span misaligned";
      if (e.value.reserved % page != 0) broken = "reservation not page-aligned";
      for (std::size_t i = 0; i < cache_count_; ++i)
        if (e.key < cache_[i].begin + cache_[i].size && cache_[i].begin < e.key + span + e.value.reserved)
          broken = "live span overlaps a cached span";
      live_bytes += span;
      in_use += packed_size(e.value.packed);
      ++live_spans;
    });
    if (broken == nullptr && (live_bytes != live_span_bytes_ || in_use != stats_.bytes_in_use ||
                              live_spans != stats_.allocations - stats_.deallocations))
      broken = "live span counters disagree with the registry";
  }
  if (broken == nullptr) return true;
  report_error(error_info{error_kind::invariant_violated, "page_resource", this, nullptr, 0, 0, 0, broken});
  return false;
}

}  // namespace strata
