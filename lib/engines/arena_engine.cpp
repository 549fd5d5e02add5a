// SPDX-License-Identifier: MIT
// lib/engines/arena_engine.cpp: detail::arena_engine, single-threaded and lock-free.
#include <strata/detail/engines/arena_engine.hpp>

#include <algorithm>
#include <new>

#include <strata/detail/core/checks.hpp>

// What the arena tells ASan and memcheck (detail/core/sanitizer.hpp): a chunk's bytes past its position are poisoned
// (the caller's buffer too, while the arena owns it); allocate unpoisons exactly the bytes asked for, so alignment
// padding and a zero-size block's byte stay poisoned; every accepted deallocate poisons its block, the last block's
// (which the position rolls back over) and any other's: the arena never reuses the latter before a rewind, but the
// program must not touch it, and poison only ever marks what no live block holds, so rollback, resize and rewind
// keep working (each hand-out unpoisons what it gives). Rewind and release poison what they take back; a chunk goes
// back upstream unpoisoned. For memcheck each chunk is a memory pool named by its header's address: a rewind trims
// the position's chunk's pool to the blocks before the position and empties the pools of the chunks after it, so a
// block freed by rewind or release reads as freed.

namespace strata::detail {
namespace {

std::atomic<std::uint64_t> next_arena_id{1};

constexpr std::size_t granule = 4096;  // chunks are whole pages of the usual upstream

template <class T>
T load(const std::atomic<T>& v) noexcept {
  return v.load(std::memory_order_relaxed);
}
template <class T>
T load(const T& v) noexcept {
  return v;
}
template <class T>
void store(std::atomic<T>& v, T x) noexcept {
  v.store(x, std::memory_order_relaxed);
}
template <class T>
void store(T& v, T x) noexcept {
  v = x;
}
template <class T, class U>
void add(std::atomic<T>& v, U x) noexcept {
  v.fetch_add(static_cast<T>(x), std::memory_order_relaxed);
}
template <class T, class U>
void add(T& v, U x) noexcept {
  v += static_cast<T>(x);
}

// Whether no block is live, by the counts. Deallocations read first: a count of allocations read after it includes
// the allocation of every block whose free it counts, so a thread freeing a live block of its own never sees the two
// equal, however many allocate-and-free pairs other threads complete between the two reads (read the other way
// round, it could).
template <class T>
bool none_live(const std::atomic<T>& allocations, const std::atomic<T>& deallocations) noexcept {
  const T d = deallocations.load(std::memory_order_acquire);
  return allocations.load(std::memory_order_acquire) == d;
}
template <class T>
bool none_live(const T& allocations, const T& deallocations) noexcept {
  return allocations == deallocations;
}

}  // namespace

template <bool Sync>
arena_engine<Sync>::arena_engine(const arena_config& config, std::pmr::memory_resource* upstream,
                                 const char* name) noexcept
    : large_min_(std::max<std::size_t>(config.initial_chunk / 4, 1)),
      config_(config),
      upstream_(upstream),
      strata_upstream_(as_strata_resource(upstream)),
      caps_(strata_upstream_ != nullptr ? strata_upstream_->capabilities() : memory_capabilities{}),
      name_(name),
      id_(next_arena_id.fetch_add(1, std::memory_order_relaxed)),
      next_chunk_(config.initial_chunk) {
  if (config.buffer != nullptr && config.buffer_size != 0) {
    const auto b = reinterpret_cast<std::uintptr_t>(config.buffer);
    buffer_chunk_.begin = b;
    buffer_chunk_.end = b + config.buffer_size;
    buffer_chunk_.resident = b + config.buffer_size;
    store(buffer_chunk_.top, b);
    san::poison(config.buffer, config.buffer_size);  // the caller's again (unpoisoned) when the arena goes
    if constexpr (san::valgrind) vg_chunk_made(&buffer_chunk_);
    first_ = &buffer_chunk_;
    enter(&buffer_chunk_);
  }
}

// ---- positions -----------------------------------------------------------------------------------------------------

template <bool Sync>
std::uintptr_t arena_engine<Sync>::top_of(const chunk* c) const noexcept {
  if constexpr (!Sync) {
    if (c == current_) return cursor_;
  }
  return load(c->top);
}

template <bool Sync>
void arena_engine<Sync>::set_top(chunk* c, std::uintptr_t top) noexcept {
  store(c->top, top);
  if constexpr (!Sync) {
    if (c == current_) cursor_ = top;
  }
}

template <bool Sync>
void arena_engine<Sync>::leave_current() noexcept {
  chunk* c = load(current_);
  if (c == nullptr) return;
  const std::uintptr_t top = top_of(c);
  // The single-threaded engine's position lives in cursor_ while the chunk is current. The synchronized engine's is
  // the chunk's top itself, which other threads may still be moving forward (they loaded current_ before it changes):
  // storing the value just read would move it back over a block one of them carved meanwhile, and hand its bytes out
  // twice. (Its resident estimate may then miss that block's bytes: a page left unpurged at most.)
  if constexpr (!Sync) store(c->top, top);
  c->resident = std::max(c->resident, top);
}

template <bool Sync>
void arena_engine<Sync>::enter(chunk* c) noexcept {
  if constexpr (Sync) {
    current_.store(c, std::memory_order_release);
  } else {
    current_ = c;
    cursor_ = c != nullptr ? c->top : 0;
    limit_ = c != nullptr ? c->end : 0;
  }
}

// ---- allocation ----------------------------------------------------------------------------------------------------

template <bool Sync>
void* arena_engine<Sync>::carve(chunk* c, std::size_t bytes, std::size_t alignment) noexcept {
  const std::size_t n = footprint(bytes);
  alignment = carve_alignment(alignment);
  std::uintptr_t top = load(c->top);
  for (;;) {
    const std::size_t pad = (std::uintptr_t{0} - top) & (alignment - 1);
    const std::size_t avail = c->end - top;
    if (n > avail || pad > avail - n) return nullptr;
    if constexpr (Sync) {
      // Acquire: the bytes may be a block another thread just gave back (its release below), whose writes must
      // happen before this thread's.
      if (c->top.compare_exchange_weak(top, top + pad + n, std::memory_order_acquire, std::memory_order_relaxed))
        return reinterpret_cast<void*>(top + pad);
    } else {
      c->top = top + pad + n;
      return reinterpret_cast<void*>(top + pad);
    }
  }
}

template <bool Sync>
void* arena_engine<Sync>::counted(chunk* c, void* p, std::size_t bytes) noexcept {
  handed(c, p, bytes);
  add(allocations_, 1);
  if constexpr (Sync) {
    const std::size_t now = bytes_in_use_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    std::size_t peak = peak_.load(std::memory_order_relaxed);
    while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
  } else {
    bytes_in_use_ += bytes;
  }
  return p;
}

template <bool Sync>
std::size_t arena_engine<Sync>::huge_page_size() const noexcept {
  return config_.huge_pages && caps_.huge_pages ? caps_.huge_page_size : 0;
}

template <bool Sync>
void arena_engine<Sync>::fail() {
  add(failed_, 1);
  throw std::bad_alloc();
}

template <bool Sync>
void* arena_engine<Sync>::allocate_slow(std::size_t bytes, std::size_t alignment) {
  constexpr std::size_t header = align_up(sizeof(chunk), alignof(std::max_align_t));
  if (bytes > max_request_size || alignment > max_request_size / 2) fail();
  std::lock_guard<lock_if<Sync>> guard(lock_);
  chunk* c = load(current_);
  if constexpr (Sync) {
    if (c != nullptr)
      if (void* p = carve(c, bytes, alignment)) return counted(c, p, bytes);  // another thread made one meanwhile
  } else {
    if (void* p = bump(bytes, alignment)) return counted(c, p, bytes);  // a zero-size block
  }
  const std::size_t n = footprint(bytes);
  const std::size_t need = n + (alignment > alignof(std::max_align_t) ? alignment : 0);
  try {
    if (bytes >= large_min_ && need > next_chunk_ / 4) {
      void* p = allocate_large(bytes, alignment);
      return counted(large_, p, bytes);
    }
    // The spare after the position, if the request fits it; spares that do not fit go back upstream.
    chunk* spare = c != nullptr ? c->next : first_;
    if (spare != nullptr) {
      store(spare->top, spare->begin);
      if (void* p = carve(spare, bytes, alignment)) {
        leave_current();
        enter(spare);
        if constexpr (!Sync) cursor_ = spare->top;
        return counted(spare, p, bytes);
      }
      for (chunk* s = spare; s != nullptr;) {
        chunk* next = s->next;
        give_back_chunk(s);
        s = next;
      }
      (c != nullptr ? c->next : first_) = nullptr;
    }
    if constexpr (!Sync) {
      if (c != nullptr && try_grow_in_place(c, need)) {
        if (void* p = bump(bytes, alignment)) return counted(c, p, bytes);
      }
    }
    chunk* fresh = new_chunk(header + need, alignof(std::max_align_t));
    fresh->index = c != nullptr ? c->index + 1 : 0;
    (c != nullptr ? c->next : first_) = fresh;
    void* p = carve(fresh, bytes, alignment);
    leave_current();
    enter(fresh);
    return counted(fresh, p, bytes);
  } catch (const std::bad_alloc&) {
    add(failed_, 1);
    throw;
  }
}

template <bool Sync>
bool arena_engine<Sync>::try_grow_in_place(chunk* c, std::size_t need) {
  if (!caps_.resize_in_place || c->size == 0) return false;
  const auto base = reinterpret_cast<std::uintptr_t>(c);
  const std::size_t used = cursor_ - base;
  std::size_t grown = std::max(static_cast<std::size_t>(static_cast<double>(c->size) * config_.growth),
                               used + need);
  if (grown > config_.max_chunk || grown - c->size > max_request_size) return false;
  grown = align_up(grown, granule);
  if (config_.max_bytes != 0 && grown - c->size > config_.max_bytes - std::min(config_.max_bytes, load(held_)))
    return false;
  {
    const san::internal_scope internal;  // Valgrind builds: the chunk is the arena's memory, no block of the upstream
    if (!strata_upstream_->resize(c, c->size, grown, c->alignment)) return false;
  }
  add(held_, grown - c->size);
  san::poison(reinterpret_cast<void*>(c->end), grown - c->size);
  c->size = grown;
  c->end = base + grown;
  limit_ = c->end;
  if (const std::size_t huge = huge_page_size(); huge != 0 && grown >= huge && c->alignment >= huge)
    (void)strata_upstream_->advise_huge_pages(c, align_down(grown, huge));
  return true;
}

template <bool Sync>
typename arena_engine<Sync>::chunk* arena_engine<Sync>::new_chunk(std::size_t need, std::size_t alignment) {
  if (need > max_request_size) throw std::bad_alloc();
  const std::size_t exact = align_up(need, granule);
  std::size_t size = std::max(next_chunk_, exact);
  const std::size_t huge = huge_page_size();
  if (huge != 0 && size >= huge && size <= max_request_size - huge) {
    size = align_up(size, huge);
    alignment = std::max(alignment, huge);
  }
  if (config_.max_bytes != 0) {
    const std::size_t room = config_.max_bytes - std::min(config_.max_bytes, load(held_));
    if (exact > room) throw std::bad_alloc();
    size = std::min(size, std::max(exact, align_down(room, granule)));
  }
  void* raw = allocate_from(upstream_, size, alignment);
  add(upstream_allocations_, 1);
  add(held_, size);
  if (huge != 0 && size >= huge) (void)strata_upstream_->advise_huge_pages(raw, align_down(size, huge));
  if (size >= next_chunk_) {
    const double grown = static_cast<double>(next_chunk_) * config_.growth;
    next_chunk_ = grown >= static_cast<double>(config_.max_chunk) ? config_.max_chunk
                                                                   : align_up(static_cast<std::size_t>(grown), granule);
  }
  constexpr std::size_t header = align_up(sizeof(chunk), alignof(std::max_align_t));
  const auto base = reinterpret_cast<std::uintptr_t>(raw);
  auto* c = ::new (raw) chunk{nullptr, base + header, base + size, size, alignment, 0, ++serials_, base + header, {}};
  store(c->top, base + header);
  san::poison(reinterpret_cast<void*>(c->begin), c->end - c->begin);  // before the chunk is published
  if constexpr (san::valgrind) vg_chunk_made(c);
  return c;
}

template <bool Sync>
void* arena_engine<Sync>::allocate_large(std::size_t bytes, std::size_t alignment) {
  const std::size_t align = std::max(alignment, alignof(std::max_align_t));
  const std::size_t offset = align_up(sizeof(chunk), align);
  if (bytes > max_request_size - offset) throw std::bad_alloc();
  const std::size_t size = align_up(offset + bytes, granule);
  if (config_.max_bytes != 0 && size > config_.max_bytes - std::min(config_.max_bytes, load(held_)))
    throw std::bad_alloc();
  void* raw = allocate_from(upstream_, size, align);
  add(upstream_allocations_, 1);
  add(held_, size);
  const auto base = reinterpret_cast<std::uintptr_t>(raw);
  auto* c = ::new (raw) chunk{large_, base + offset, base + offset + bytes, size, align, 0, load(allocations_),
                              base + size, {}};
  store(c->top, c->end);
  san::poison(reinterpret_cast<void*>(c->begin), base + size - c->begin);
  if constexpr (san::valgrind) vg_chunk_made(c);
  large_ = c;
  ++large_count_;
  return reinterpret_cast<void*>(c->begin);
}

// ---- deallocation and resize ---------------------------------------------------------------------------------------

template <bool Sync>
void arena_engine<Sync>::deallocate_slow(void* p, std::size_t bytes) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  if (none_live(allocations_, deallocations_) || load(bytes_in_use_) < bytes) {
    report(error_kind::double_free, p, bytes, "the arena has no live block of this size left to free");
    return;
  }
  if (bytes >= large_min_) {
    std::lock_guard<lock_if<Sync>> guard(lock_);
    for (chunk** link = &large_; *link != nullptr; link = &(*link)->next) {
      chunk* c = *link;
      if (c->begin != a) continue;
      if (c->end - c->begin != bytes) {
        report(error_kind::wrong_size, p, bytes, "a large block freed with another size");
        return;
      }
      *link = c->next;
      --large_count_;
      give_back_chunk(c);
      add(deallocations_, 1);
      add(bytes_in_use_, std::size_t{0} - bytes);
      return;
    }
  }
  // Poisoned before the position can move back over it: once it has, another thread may carve these bytes.
  san::poison(p, bytes);
  const std::uintptr_t end = a + footprint(bytes);
  if constexpr (Sync) {
    if (chunk* c = current_.load(std::memory_order_acquire); c != nullptr && a >= c->begin) {
      std::uintptr_t expected = end;
      c->top.compare_exchange_strong(expected, a, std::memory_order_release, std::memory_order_relaxed);
    }
  } else {
    if (end == cursor_ && current_ != nullptr && a >= current_->begin) cursor_ = a;
  }
  add(deallocations_, 1);
  add(bytes_in_use_, std::size_t{0} - bytes);
}

template <bool Sync>
bool arena_engine<Sync>::resize(void* p, std::size_t old_size, std::size_t new_size) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  if (none_live(allocations_, deallocations_) || load(bytes_in_use_) < old_size) {
    report(error_kind::double_free, p, old_size, "resize of a block the arena does not have live");
    return false;
  }
  if constexpr (!Sync) {
    if (bytes_in_use_ > peak_) peak_ = bytes_in_use_;
  }
  if (old_size >= large_min_) {
    std::lock_guard<lock_if<Sync>> guard(lock_);
    for (chunk* c = large_; c != nullptr; c = c->next)
      if (c->begin == a) {
        if (new_size > old_size) return false;
        san::poison(reinterpret_cast<char*>(p) + new_size, old_size - new_size);
        if constexpr (san::valgrind) vg_resized(c, p, old_size, new_size);
        c->end = a + new_size;
        add(bytes_in_use_, new_size - old_size);
        return true;
      }
  }
  if constexpr (!Sync) {
    const std::uintptr_t end = a + old_size + (old_size == 0);
    if (end == cursor_ && current_ != nullptr && a >= current_->begin) {
      const std::size_t n = new_size + (new_size == 0);
      if (n > limit_ - a) return false;
      cursor_ = a + n;
      bytes_in_use_ = bytes_in_use_ - old_size + new_size;
      if (new_size < old_size) san::poison(reinterpret_cast<char*>(p) + new_size, old_size - new_size);
      else san::handed_out(p, new_size);
      if constexpr (san::valgrind) vg_resized(current_, p, old_size, new_size);
      return true;
    }
  }
  if (new_size > old_size) return false;
  san::poison(reinterpret_cast<char*>(p) + new_size, old_size - new_size);
  if constexpr (san::valgrind) vg_resized(chunk_of(p), p, old_size, new_size);
  add(bytes_in_use_, std::size_t{0} - (old_size - new_size));
  return true;
}

// ---- what memcheck is told ----------------------------------------------------------------------------------------

template <bool Sync>
typename arena_engine<Sync>::chunk* arena_engine<Sync>::chunk_of(const void* p) const noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  std::lock_guard<lock_if<Sync>> guard(lock_);
  const chunk* cur = load(current_);
  for (chunk* c = first_; c != nullptr; c = c->next) {
    if (a >= c->begin && a < c->end) return c;
    if (c == cur) break;
  }
  for (chunk* c = large_; c != nullptr; c = c->next)
    if (a == c->begin) return c;
  return nullptr;
}

#if STRATA_VALGRIND
template <bool Sync>
void arena_engine<Sync>::vg_handed(chunk* c, void* p, std::size_t bytes) noexcept {
  if (!san::valgrind_running()) return;
  if (config_.describe_blocks && san::internal_depth == 0) VALGRIND_MEMPOOL_ALLOC(c, p, bytes);
  else (void)VALGRIND_MAKE_MEM_DEFINED(p, bytes);  // strata's own memory, or a persistent block
}

template <bool Sync>
void arena_engine<Sync>::freeing(void* p) noexcept {
  if (!san::valgrind_running() || !config_.describe_blocks || san::internal_depth != 0) return;
  if (chunk* c = chunk_of(p)) VALGRIND_MEMPOOL_FREE(c, p);
}

template <bool Sync>
void arena_engine<Sync>::vg_resized(chunk* c, void* p, std::size_t old_size, std::size_t new_size) noexcept {
  if (!san::valgrind_running()) return;
  if (c != nullptr && config_.describe_blocks && san::internal_depth == 0) VALGRIND_MEMPOOL_CHANGE(c, p, p, new_size);
  char* b = static_cast<char*>(p);
  if (new_size > old_size) (void)VALGRIND_MAKE_MEM_UNDEFINED(b + old_size, new_size - old_size);
  else (void)VALGRIND_MAKE_MEM_NOACCESS(b + new_size, old_size - new_size);
}

template <bool Sync>
void arena_engine<Sync>::vg_chunk_made(const void* c) noexcept {
  if (san::valgrind_running() && config_.describe_blocks) VALGRIND_CREATE_MEMPOOL(c, 0, 0);
}

template <bool Sync>
void arena_engine<Sync>::vg_chunk_emptied(const void* c, std::uintptr_t begin, std::uintptr_t keep_to) noexcept {
  if (!san::valgrind_running() || !config_.describe_blocks) return;
  // Blocks inside [begin, keep_to) stay; the rest of the pool's blocks (past the position) are freed: memcheck
  // then names them freed blocks (a pool destroyed only makes its blocks no-access). A chunk with none kept: the
  // range of its header's first byte, which holds no block.
  if (keep_to > begin) VALGRIND_MEMPOOL_TRIM(c, reinterpret_cast<void*>(begin), keep_to - begin);
  else VALGRIND_MEMPOOL_TRIM(c, c, 1);
}

template <bool Sync>
void arena_engine<Sync>::vg_chunk_dropped(const void* c) noexcept {
  if (!san::valgrind_running() || !config_.describe_blocks) return;
  VALGRIND_MEMPOOL_TRIM(c, c, 1);  // its blocks freed (see vg_chunk_emptied)
  VALGRIND_DESTROY_MEMPOOL(c);
}
#else
template <bool Sync>
void arena_engine<Sync>::vg_handed(chunk*, void*, std::size_t) noexcept {}
template <bool Sync>
void arena_engine<Sync>::freeing(void*) noexcept {}
template <bool Sync>
void arena_engine<Sync>::vg_resized(chunk*, void*, std::size_t, std::size_t) noexcept {}
template <bool Sync>
void arena_engine<Sync>::vg_chunk_made(const void*) noexcept {}
template <bool Sync>
void arena_engine<Sync>::vg_chunk_emptied(const void*, std::uintptr_t, std::uintptr_t) noexcept {}
template <bool Sync>
void arena_engine<Sync>::vg_chunk_dropped(const void*) noexcept {}
#endif

// ---- markers, rewind, release --------------------------------------------------------------------------------------

template <bool Sync>
arena_mark arena_engine<Sync>::mark() const noexcept {
  arena_mark m;
  const chunk* c = load(current_);
  m.chunk = c;
  m.position = c != nullptr ? top_of(c) : 0;
  m.index = c != nullptr ? c->index : 0;
  m.serial = c != nullptr ? c->stamp : 0;
  m.epoch = epoch_;
  m.owner = id_;
  m.allocations = load(allocations_);
  m.live = load(allocations_) - load(deallocations_);
  m.bytes_in_use = load(bytes_in_use_);
  return m;
}

template <bool Sync>
void arena_engine<Sync>::rewind(const arena_mark& m) noexcept {
  if (m.owner != id_) {
    report(error_kind::foreign_pointer, m.chunk, 0, "rewind to a marker of another arena");
    return;
  }
  chunk* target = nullptr;
  chunk* const cur = load(current_);
  if (m.chunk != nullptr) {
    for (chunk* c = first_; c != nullptr; c = c->next) {
      if (c == m.chunk) {
        target = c;
        break;
      }
      if (c == cur) break;
    }
    if (target == nullptr || target->index != m.index || target->stamp != m.serial || m.epoch != epoch_ ||
        m.position < target->begin || m.position > top_of(target) || m.allocations > load(allocations_)) {
      report(error_kind::double_free, m.chunk, 0, "rewind to a marker past the arena's position (rewound already)");
      return;
    }
  } else if (m.epoch != epoch_ || m.allocations > load(allocations_)) {
    report(error_kind::double_free, nullptr, 0, "rewind to a marker past the arena's position (rewound already)");
    return;
  }
  const std::size_t now = load(bytes_in_use_);
  if (now > load(peak_)) store(peak_, now);
  drop_large_after(m.allocations);
  drop_after(target, m.position, false);
  const std::uint64_t live = load(allocations_) - load(deallocations_);
  if (live > m.live) add(deallocations_, live - m.live);
  store(bytes_in_use_, m.bytes_in_use);
}

template <bool Sync>
void arena_engine<Sync>::release() noexcept {
  const std::size_t now = load(bytes_in_use_);
  if (now > load(peak_)) store(peak_, now);
  drop_large_after(0);
  chunk* target = nullptr;
  if (first_ == &buffer_chunk_) target = &buffer_chunk_;
  else if (config_.release == arena_release::keep_first) target = first_;
  drop_after(target, target != nullptr ? target->begin : 0, true);
  store(deallocations_, load(allocations_));
  store(bytes_in_use_, std::size_t{0});
  ++epoch_;
  next_chunk_ = config_.initial_chunk;
  if (target != nullptr && target->size != 0) {
    const double grown = static_cast<double>(next_chunk_) * config_.growth;
    next_chunk_ = std::min(config_.max_chunk, align_up(static_cast<std::size_t>(grown), granule));
  }
}

template <bool Sync>
void arena_engine<Sync>::drop_large_after(std::uint64_t stamp) noexcept {
  std::lock_guard<lock_if<Sync>> guard(lock_);
  while (large_ != nullptr && large_->stamp >= stamp) {
    chunk* c = large_;
    large_ = c->next;
    --large_count_;
    give_back_chunk(c);
  }
}

template <bool Sync>
void arena_engine<Sync>::drop_after(chunk* target, std::uintptr_t position, bool releasing) noexcept {
  std::lock_guard<lock_if<Sync>> guard(lock_);
  leave_current();
  std::size_t watermark = config_.watermark;
  const bool purging = config_.decommit != arena_decommit::keep;
  if (target != nullptr) {
    san::poison(reinterpret_cast<void*>(position), top_of(target) - position);
    if constexpr (san::valgrind) vg_chunk_emptied(target, target->begin, position);
    store(target->top, position);
    if (purging) purge_tail(target, position, watermark);
  }
  chunk*& link = target != nullptr ? target->next : first_;
  if (releasing || config_.decommit == arena_decommit::give_back) {
    for (chunk* c = link; c != nullptr;) {
      chunk* next = c->next;
      give_back_chunk(c);
      c = next;
    }
    link = nullptr;
  } else {
    for (chunk* c = link; c != nullptr; c = c->next) {
      san::poison(reinterpret_cast<void*>(c->begin), top_of(c) - c->begin);
      if constexpr (san::valgrind) vg_chunk_emptied(c, c->begin, c->begin);
      store(c->top, c->begin);
      if (purging) purge_tail(c, c->begin, watermark);
    }
  }
  enter(target);
}

template <bool Sync>
void arena_engine<Sync>::purge_tail(chunk* c, std::uintptr_t from, std::size_t& watermark) noexcept {
  if (!caps_.purge || c->size == 0 || caps_.page_size == 0) return;
  const std::size_t keep = std::min<std::size_t>(watermark, c->end - from);
  watermark -= keep;
  const auto base = reinterpret_cast<std::uintptr_t>(c);
  const std::uintptr_t start = align_up(from + keep, caps_.page_size);
  const std::uintptr_t stop = std::min<std::uintptr_t>(align_up(c->resident, caps_.page_size), base + c->size);
  if (start >= stop) return;
  if (strata_upstream_->purge(c, start - base, stop - start)) c->resident = start;
}

template <bool Sync>
void arena_engine<Sync>::give_back_chunk(chunk* c) noexcept {
  const std::size_t size = c->size, alignment = c->alignment;
  store(held_, load(held_) - size);
  add(upstream_deallocations_, 1);
  if constexpr (san::valgrind) vg_chunk_dropped(c);
  if constexpr (san::address_sanitizer) san::clear_poison(c, size);
  else san::unpoison(c, size);  // Valgrind builds: addressable, as the upstream gave it
  c->~chunk();
  give_back_to(upstream_, c, size, alignment);
}

template <bool Sync>
void arena_engine<Sync>::give_back_everything() noexcept {
  drop_large_after(0);
  std::lock_guard<lock_if<Sync>> guard(lock_);
  for (chunk* c = first_; c != nullptr;) {
    chunk* next = c->next;
    if (c != &buffer_chunk_) give_back_chunk(c);
    c = next;
  }
  if (first_ == &buffer_chunk_) {
    if constexpr (san::valgrind) vg_chunk_dropped(&buffer_chunk_);
    san::unpoison(config_.buffer, config_.buffer_size);  // the caller's memory again
  }
  first_ = nullptr;
}

// ---- stats, inspect, invariants ------------------------------------------------------------------------------------

template <bool Sync>
std::size_t arena_engine<Sync>::chunk_count() const noexcept {
  std::lock_guard<lock_if<Sync>> guard(lock_);
  std::size_t n = large_count_;
  for (const chunk* c = first_; c != nullptr; c = c->next) n += c->size != 0;
  return n;
}

template <bool Sync>
resource_stats arena_engine<Sync>::stats() const noexcept {
  resource_stats s;
  s.allocations = load(allocations_);
  s.deallocations = load(deallocations_);
  s.bytes_in_use = load(bytes_in_use_);
  s.peak_bytes_in_use = std::max(load(peak_), s.bytes_in_use);
  s.failed_allocations = load(failed_);
  s.upstream_allocations = load(upstream_allocations_);
  s.upstream_deallocations = load(upstream_deallocations_);
  std::lock_guard<lock_if<Sync>> guard(lock_);
  s.bytes_held = load(held_);
  const auto resident_of = [this](const chunk* c) -> std::size_t {
    const auto base = reinterpret_cast<std::uintptr_t>(c);
    const std::uintptr_t r = std::max(c->resident, top_of(c));
    return std::min(align_up(r, granule) - base, c->size);
  };
  for (const chunk* c = first_; c != nullptr; c = c->next)
    if (c->size != 0) s.bytes_resident += resident_of(c);
  for (const chunk* c = large_; c != nullptr; c = c->next) s.bytes_resident += c->size;
  return s;
}

template <bool Sync>
void arena_engine<Sync>::inspect(inspector& v, unsigned what) const {
  if ((what & inspect_regions) == 0) return;
  std::lock_guard<lock_if<Sync>> guard(lock_);
  const chunk* cur = load(current_);
  bool past = cur == nullptr;
  for (const chunk* c = first_; c != nullptr; c = c->next) {
    const std::uintptr_t base = c->size != 0 ? reinterpret_cast<std::uintptr_t>(c) : c->begin;
    const std::uintptr_t top = top_of(c);
    region_detail r;
    r.address = reinterpret_cast<const void*>(base);
    r.size = c->size != 0 ? c->size : c->end - c->begin;
    r.kind = region_kind::chunk;
    r.bytes_in_use = top - c->begin;
    r.cached = past;
    if (v.on_region(r)) {
      if (top > c->begin) v.on_run(run_detail{c->begin - base, top - c->begin, false});
      if (c->end > top) v.on_run(run_detail{top - base, c->end - top, true});
    }
    if (c == cur) past = true;
  }
  for (const chunk* c = large_; c != nullptr; c = c->next) {
    region_detail r;
    r.address = c;
    r.size = c->size;
    r.kind = region_kind::large;
    r.bytes_in_use = c->end - c->begin;
    r.live_blocks = 1;
    if (v.on_region(r)) v.on_run(run_detail{c->begin - reinterpret_cast<std::uintptr_t>(c), c->end - c->begin, false});
  }
}

template <bool Sync>
bool arena_engine<Sync>::check_invariants() const noexcept {
  const char* broken = nullptr;
  {
    std::lock_guard<lock_if<Sync>> guard(lock_);
    const chunk* cur = load(current_);
    std::size_t held = 0, index = 0, large = 0;
    bool found = cur == nullptr, past = cur == nullptr;
    for (const chunk* c = first_; c != nullptr && broken == nullptr; c = c->next, ++index) {
      const std::uintptr_t top = top_of(c);
      if (c->index != index) broken = "chunk indices out of sequence";
      else if (top < c->begin || top > c->end) broken = "a chunk's top outside the chunk";
      else if (past && top != c->begin) broken = "a spare chunk with blocks in it";
      else if (c != first_ && c == &buffer_chunk_) broken = "the caller's buffer is not first";
      held += c->size;
      if (c == cur) found = past = true;
    }
    for (const chunk* c = large_; c != nullptr && broken == nullptr; c = c->next, ++large) {
      held += c->size;
      if (c->next != nullptr && c->next->stamp > c->stamp) broken = "large chunks out of order";
    }
    if (broken != nullptr) {
    } else if (!found) {
      broken = "the current chunk is not in the sequence";
    } else if (held != load(held_)) {
      broken = "bytes held differ from the chunks' sizes";
    } else if (large != large_count_) {
      broken = "large chunk count differs from the list";
    } else if (load(deallocations_) > load(allocations_)) {
      broken = "more deallocations than allocations";
    } else if constexpr (!Sync) {
      if (cur != nullptr && (cursor_ < cur->begin || cursor_ > cur->end || limit_ != cur->end))
        broken = "the cursor outside the current chunk";
      else if (cur == nullptr && (cursor_ != 0 || limit_ != 0))
        broken = "a cursor without a chunk";
    }
  }
  if (broken == nullptr) return true;
  report(error_kind::invariant_violated, this, 0, broken);
  return false;
}

template <bool Sync>
void arena_engine<Sync>::report(error_kind kind, const void* p, std::size_t bytes, const char* detail) const noexcept {
  report_error(error_info{kind, name_, this, p, bytes, 0, 0, detail});
}

template class arena_engine<false>;
template class arena_engine<true>;

}  // namespace strata::detail
