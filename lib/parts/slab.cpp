// SPDX-License-Identifier: MIT
// lib/parts/slab.cpp: formatting and checking slabs.
#include <strata/detail/core/bits.hpp>
#include <strata/detail/parts/slab.hpp>

#include <strata/detail/ds/free_cache.hpp>

#include <new>

namespace strata::detail {

// The engine's address (randomised by ASLR) mixed with a per-process counter and the cycle counter, through a 64-bit
// finaliser.
std::uintptr_t random_node_key(const void* owner) noexcept {
  static std::atomic<std::uint64_t> counter{0};
  std::uint64_t x = reinterpret_cast<std::uintptr_t>(owner) ^ (counter.fetch_add(1, std::memory_order_relaxed) << 48);
#if defined(__x86_64__) || defined(__i386__)
  x ^= __builtin_ia32_rdtsc();
#endif
  x ^= reinterpret_cast<std::uintptr_t>(&counter) << 7;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return static_cast<std::uintptr_t>(x ^ (x >> 31));
}

std::size_t slab::free_slots() const noexcept {
  std::size_t n = 0;
  for (std::size_t i = 0; i < words; ++i) {
    n += static_cast<std::size_t>(popcount(local(i).load(std::memory_order_relaxed)));
    if (has_remote()) n += static_cast<std::size_t>(popcount(remote(i).load(std::memory_order_relaxed)));
  }
  return n;
}

std::size_t slab_kind::origin_of(std::size_t object_size) const noexcept {
  if (coloured_) return 0;
  // Past the header and the bitmaps for as many slots as could fit, at the class's natural alignment up to 4 KiB
  // (what the size classes promise an aligned request), so that every slot is aligned as a slot at a multiple of
  // the size would be.
  const std::size_t words = (size_ / object_size + 63) / 64;
  return align_up(sizeof(slab) + words * 8 * stride_, natural_alignment(object_size, 4096));
}

auto slab_kind::layout_of(std::size_t object_size, std::size_t header) const noexcept -> layout {
  layout l{};
  if (!coloured_) {  // packed: the slots from the origin to the slab's end, none skipped
    l.limit = (size_ - origin_of(object_size)) / object_size;
    l.words = (l.limit + 63) / 64;
    l.skip_begin = l.skip_end = l.limit;
    return l;
  }
  l.limit = size_ / object_size;
  l.words = (l.limit + 63) / 64;
  l.skip_begin = header / object_size;
  l.skip_end = (header + sizeof(slab) + l.words * 8 * stride_ + object_size - 1) / object_size;
  return l;
}

slab* slab_kind::format(void* base, unsigned c, std::size_t object_size) const noexcept {
  const std::size_t header = header_at(reinterpret_cast<std::uintptr_t>(base));
  const layout l = layout_of(object_size, header);
  auto* s = new (static_cast<char*>(base) + header) slab{};
  s->tag = tag_of(s);
  s->owner.store(nullptr, std::memory_order_relaxed);
  s->object_size = static_cast<std::uint32_t>(object_size);
  s->limit = static_cast<std::uint32_t>(l.limit);
  s->skip_begin = static_cast<std::uint32_t>(l.skip_begin);
  s->skip_end = static_cast<std::uint32_t>(l.skip_end);
  s->capacity = static_cast<std::uint32_t>(l.capacity());
  s->free_count = s->capacity;
  s->high_water = 0;
  s->words = static_cast<std::uint16_t>(l.words);
  s->hint = 0;
  s->size_class = static_cast<std::uint8_t>(c);
  s->where = slab::in_current;
  s->stride = stride_;
  s->origin = static_cast<std::uint16_t>(origin_of(object_size));
  for (std::size_t i = 0; i < l.words; ++i) {
    new (&s->local(i)) slab::word(slot_mask(i, l.skip_begin, l.skip_end, l.limit));
    if (stride_ == 2) new (&s->remote(i)) slab::word(0);
  }
  return s;
}

const char* slab_kind::check(const slab* s, unsigned c, std::size_t object_size,
                             std::size_t claimed) const noexcept {
  if (!tagged(s)) return "slab tag corrupt";
  if (s->size_class != c || s->object_size != object_size) return "slab in the wrong class";
  if (s->stride != stride_ || s->origin != origin_of(object_size)) return "slab bitmap stride or origin corrupt";
  const layout l = layout_of(s->object_size, header_at(reinterpret_cast<std::uintptr_t>(base_of(s))));
  if (s->limit != l.limit || s->words != l.words || s->skip_begin != l.skip_begin || s->skip_end != l.skip_end ||
      s->capacity != l.capacity())
    return "slab layout corrupt";
  std::size_t local = 0;
  for (std::size_t i = 0; i < s->words; ++i) {
    const std::uint64_t valid = s->valid_mask(i);
    const std::uint64_t v = s->local(i).load(std::memory_order_relaxed);
    if ((v & ~valid) != 0) return "free bits set for slots that do not exist";
    if (s->has_remote() && (s->remote(i).load(std::memory_order_relaxed) & ~valid) != 0)
      return "remote bits set for slots that do not exist";
    if (v != 0 && i < s->hint) return "free bits below the hint";
    if (i != claimed) local += static_cast<std::size_t>(popcount(v));
  }
  if (local != s->free_count) return "free count differs from the local bitmap";
  return nullptr;
}

}  // namespace strata::detail
