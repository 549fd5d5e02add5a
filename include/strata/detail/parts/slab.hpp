// SPDX-License-Identifier: MIT
// strata/detail/parts/slab.hpp: the slab, the one bitmap-block mechanism behind bitmap_resource, its synchronized variant
// and the thread cache's per-thread heaps: layout, header, format, bitmaps, folding remote frees, lists, checks.
// The engines decide which slab to allocate from and where freed slots go; the slab calls no engine.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include <strata/detail/core/bits.hpp>
#include <strata/config.hpp>
#include <strata/detail/ds/block_map.hpp>
#include <strata/detail/core/math.hpp>
#include <strata/detail/core/sanitizer.hpp>

namespace strata::detail {

/// A slab: a power-of-two number of bytes (at least one block-map granule), aligned to its size, holding objects of
/// one size class back to back, with no metadata in the objects. Slot q lies at base + origin + q * object_size for
/// q in [0, limit); the numbers in [skip_begin, skip_end), whose bytes the header and bitmaps take, are never handed
/// out.
///
/// Where the header sits is the kind's choice (slab_kind::placement):
/// - coloured: one of 16 cache lines past the base, chosen by the base address, so that the headers of many slabs do
///   not all fall into the same cache sets; the bitmaps follow it, the slots start at the base (origin 0, every slot
///   aligned like its size) and the few the header covers are skipped;
/// - packed: the header at the base, the bitmaps after it, and the slots from the first multiple of the class's
///   natural alignment past them (origin), none skipped: what a class's size leaves over past its last slot is
///   spent on the header where it fits (a 64 KiB slab of 7,168-byte objects holds 9 of them, not 8), and the first
///   slots share the header's page. The thread cache's blocks are made so: its frees test slots against per-class
///   constants alone.
/// For each 64 slots there is a local word (1 = free), written by whoever allocates from the slab, and, in slabs that
/// take frees from other threads, a remote word beside it (on the same cache line), which those threads set with an
/// atomic OR and the allocating side folds into the local word.
struct slab {
  enum : std::uint8_t { in_current, in_partial, in_full, in_abandoned, in_empty };
  using word = std::atomic<std::uint64_t>;

  std::uintptr_t tag;        // the engine's key ^ the header's address: owner and header integrity in one compare
  std::atomic<void*> owner;  // thread cache: the heap allocating from it (nullptr while in the shared tier)
  slab* next;                // links on its owner's lists
  slab* prev;
  std::uint32_t object_size;
  std::uint32_t capacity;    // slots that can be handed out
  std::uint32_t limit;       // one past the last slot number
  std::uint32_t skip_begin;  // slot numbers [skip_begin, skip_end) overlap the header and bitmaps
  std::uint32_t skip_end;
  std::uint32_t free_count;  // set bits in the local words (the engine may leave a claimed word out)
  std::uint32_t high_water;  // slot numbers from here on have never been handed out (see free_cache.hpp)
  std::uint16_t words;       // words per bitmap
  std::uint16_t hint;        // local words [0, hint) are zero
  std::uint8_t size_class;
  std::uint8_t where;
  std::uint8_t stride;                     // 1: local words only; 2: local and remote word side by side
  std::atomic<bool> remote_listed;         // synchronized bitmap: on its class's list of slabs to collect
  // Synchronized bitmap: while not zero the slab is not handed on (released, or formatted anew): remote frees
  // between their first and last touch of it.
  std::atomic<std::uint32_t> remote_pins;
  slab* remote_next;                       // synchronized bitmap: that list's link
  // Thread cache: slots freed past the owner's full free cache, as nodes of the owner's key linked through their
  // first words (newest first), and how many; neither free in the bitmaps nor counted in free_count.
  void* list;
  std::uint32_t listed;
  std::uint8_t idle;  // thread cache: all its slots are free, most on its list, kept as they are for reuse
  std::uint16_t origin;  // bytes from the base to slot 0

  word& local(std::size_t i) noexcept { return bits()[i * stride]; }
  const word& local(std::size_t i) const noexcept { return bits()[i * stride]; }
  /// Only in slabs with remote words (stride 2).
  word& remote(std::size_t i) noexcept { return bits()[i * stride + 1]; }
  const word& remote(std::size_t i) const noexcept { return bits()[i * stride + 1]; }
  /// remote(i) of a slab known to have remote words, without reading its header.
  word& remote_word(std::size_t i) noexcept { return bits()[i * 2 + 1]; }
  [[nodiscard]] bool has_remote() const noexcept { return stride == 2; }
  /// Bits of local word i that stand for slots.
  [[nodiscard]] std::uint64_t valid_mask(std::size_t i) const noexcept {
    return slot_mask(i, skip_begin, skip_end, limit);
  }
  /// Free slots the bitmaps record: local bits plus remote bits (a slot free in both is counted twice: two frees
  /// that raced, both counted until the fold settles them).
  [[nodiscard]] std::size_t free_slots() const noexcept;

  /// The slots [q, ...) of local word i set in `bits`, as addresses, for f(void*).
  template <class F>
  void for_each_slot(char* base, std::size_t i, std::uint64_t bits, F&& f) const {
    for (; bits != 0; bits &= bits - 1) f(slot_at(base, i, lowest_bit(bits)));
  }
  /// The slot of bit `bit` of bitmap word i (base: the slots' start).
  char* slot_at(char* base, std::size_t i, unsigned bit) const noexcept {
    return base + (i * 64 + std::size_t{bit}) * object_size;
  }

  static void push(slab*& head, slab* s) noexcept {
    s->prev = nullptr;
    s->next = head;
    if (head != nullptr) head->prev = s;
    head = s;
  }
  static void unlink(slab*& head, slab* s) noexcept {
    if (s->prev != nullptr) s->prev->next = s->next;
    else head = s->next;
    if (s->next != nullptr) s->next->prev = s->prev;
    s->next = s->prev = nullptr;
  }

 private:
  word* bits() noexcept { return reinterpret_cast<word*>(this + 1); }
  const word* bits() const noexcept { return reinterpret_cast<const word*>(this + 1); }
};

static_assert(sizeof(slab) == 96, "a slab's header takes 96 bytes: one and a half cache lines");

/// What the slabs of one engine share: their size, the engine's key, and whether they take remote frees. Finds,
/// formats, folds and checks slabs.
class slab_kind {
 public:
  /// Where a slab's slots lie for a given object size and header offset.
  struct layout {
    std::size_t limit, words, skip_begin, skip_end;
    [[nodiscard]] std::size_t capacity() const noexcept { return limit - (skip_end - skip_begin); }
  };

  /// Where a slab's header sits (see slab).
  enum class placement : std::uint8_t { coloured, packed };

  slab_kind(std::size_t slab_size, std::uintptr_t key, bool remote, placement where = placement::coloured) noexcept
      : size_(slab_size), key_(key), stride_(remote ? 2 : 1), coloured_(where == placement::coloured) {}

  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool remote() const noexcept { return stride_ == 2; }

  static constexpr std::size_t header_colors = 16;
  /// Bytes from a slab's base to its header.
  static std::uintptr_t header_offset(std::uintptr_t base) noexcept {
    return ((base >> block_map_shift) & (header_colors - 1)) * 64;
  }
  /// Whether address a, in a slab of mask + 1 bytes (a power of two) holding objects of `object_size` bytes,
  /// starts a slot that lies wholly in the slab and clear of its header and bitmaps, from per-class constants
  /// only (no read of the slab): r_high = reciprocal40(object_size) << 24, meta_span = header and bitmap
  /// bytes + object_size - 1. The three tests never change their way for a valid slot, whatever its place (one
  /// test for the slots near the header alone would be mispredicted).
  STRATA_ALWAYS_INLINE static bool starts_slot(std::uintptr_t a, std::uintptr_t mask, std::size_t object_size,
                                               std::uint64_t r_high, std::size_t meta_span) noexcept {
    const std::size_t off = a & mask;
    const std::size_t last = off + object_size - 1;  // the slot's last byte
    const std::uintptr_t header = header_offset(a & ~mask);
    return divides40(off, r_high) && last <= mask && last - header >= meta_span;
  }
  /// Bytes from a slab's base to its header, for this kind.
  [[nodiscard]] std::uintptr_t header_at(std::uintptr_t base) const noexcept {
    return coloured_ ? header_offset(base) : 0;  // packed: at the base
  }
  /// The header of the slab holding any address p (whether that is a slab is for the caller to know).
  STRATA_ALWAYS_INLINE slab* slab_of(const void* p) const noexcept {
    const std::uintptr_t base = reinterpret_cast<std::uintptr_t>(p) & ~(size_ - 1);
    return reinterpret_cast<slab*>(base + header_at(base));
  }
  STRATA_ALWAYS_INLINE char* base_of(const slab* s) const noexcept {
    return reinterpret_cast<char*>(reinterpret_cast<std::uintptr_t>(s) & ~(size_ - 1));
  }
  STRATA_ALWAYS_INLINE std::size_t offset_of(const void* p) const noexcept {
    return reinterpret_cast<std::uintptr_t>(p) & (size_ - 1);
  }
  [[nodiscard]] std::uintptr_t tag_of(const slab* s) const noexcept {
    return key_ ^ reinterpret_cast<std::uintptr_t>(s);
  }
  /// Whether s carries this kind's tag: a header formatted by this engine (s must be readable).
  [[nodiscard]] bool tagged(const slab* s) const noexcept { return s->tag == tag_of(s); }
  /// p's distance from slot 0 of s (past the slab's end, by wrapping, for an address below it).
  STRATA_ALWAYS_INLINE std::size_t slot_offset(const slab* s, const void* p) const noexcept {
    return offset_of(p) - s->origin;
  }
  /// Slot 0 of s.
  STRATA_ALWAYS_INLINE char* slots_of(const slab* s) const noexcept { return base_of(s) + s->origin; }
  /// Whether p is exactly the start of a slot of s (not a header slot, not past the limit).
  [[nodiscard]] bool is_slot(const slab* s, const void* p) const noexcept {
    const std::size_t off = slot_offset(s, p);
    const std::size_t q = off / s->object_size;
    return off % s->object_size == 0 && q < s->limit && (q < s->skip_begin || q >= s->skip_end);
  }
  /// is_slot() for q, p's slot number by its class's reciprocal (divide40): a multiply where is_slot divides.
  [[nodiscard]] bool is_slot_number(const slab* s, const void* p, std::size_t q) const noexcept {
    return q * s->object_size == slot_offset(s, p) && q < s->limit && (q < s->skip_begin || q >= s->skip_end);
  }
  [[nodiscard]] void* slot(const slab* s, std::size_t q) const noexcept { return slots_of(s) + q * s->object_size; }
  /// Built with ASan or for Valgrind: poisons every slot of s, just formatted (each is unpoisoned as it is handed out); the header,
  /// the bitmaps and any leftover bytes stay as they are. Nothing otherwise.
  void poison_slots(const slab* s) const noexcept {
    if constexpr (san::marks_memory) {
      char* const slot0 = slots_of(s);
      const std::size_t n = s->object_size;
      san::poison(slot0, std::size_t{s->skip_begin} * n);
      san::poison(slot0 + std::size_t{s->skip_end} * n, std::size_t{s->limit - s->skip_end} * n);
    }
  }

  [[nodiscard]] layout layout_of(std::size_t object_size, std::size_t header) const noexcept;
  /// Bytes from a slab's base to slot 0 for objects of object_size (0 unless packed).
  [[nodiscard]] std::size_t origin_of(std::size_t object_size) const noexcept;
  /// The layout of a slab whose header sits at colour 0 (others hold at most one slot more or fewer).
  [[nodiscard]] layout typical_layout(std::size_t object_size) const noexcept { return layout_of(object_size, 0); }
  /// Formats `base` (size() bytes, aligned to them) as an empty slab of class c, owned by nobody, on no list.
  slab* format(void* base, unsigned c, std::size_t object_size) const noexcept;

  /// Takes every free bit of s's first local word that has one (s has some) out of the bitmap; returns the word's
  /// index and sets `bits` to them and `fresh` to those never handed out. The high-water mark moves past the word:
  /// the caller hands the bits out lowest first, and gives the rest back with return_claim().
  static std::size_t claim(slab* s, std::uint64_t& bits, std::uint64_t& fresh) noexcept {
    const std::size_t w = first_free_word(s);
    bits = s->local(w).load(std::memory_order_relaxed);
    s->local(w).store(0, std::memory_order_relaxed);
    s->free_count -= static_cast<std::uint32_t>(popcount(bits));
    const std::size_t first = w * 64;
    fresh = s->high_water <= first ? bits
            : s->high_water >= first + 64 ? 0
                                           : bits & (~std::uint64_t{0} << (s->high_water - first));
    const std::size_t end = first + 64 < s->limit ? first + 64 : s->limit;
    if (s->high_water < end) s->high_water = static_cast<std::uint32_t>(end);
    return w;
  }
  /// claim() into the state of a class allocating from s (the bitmap engine's class state, the thread cache's bin:
  /// fields fresh_from, fresh_span, claimed_word, claimed, claimed_fresh, claimed_base, object_size): first the range
  /// of s never handed out, from its high-water mark (exact here: no word of s is claimed), then the claimed word.
  template <class ClassState>
  static void claim_into(ClassState& st, slab* s, char* base) noexcept {
    const std::size_t never_used = s->high_water;
    st.fresh_from = reinterpret_cast<std::uintptr_t>(base) + never_used * st.object_size;
    st.fresh_span = never_used < s->limit ? (s->limit - never_used) * std::size_t{st.object_size} : 0;
    std::uint64_t fresh = 0;
    st.claimed_word = static_cast<std::uint32_t>(claim(s, st.claimed, fresh));
    st.claimed_fresh = fresh;
    st.claimed_base = base + std::size_t{st.claimed_word} * 64 * st.object_size;
  }
  /// Gives the bits of claimed word w not handed out back to s; `fresh` are those never handed out.
  static void return_claim(slab* s, std::size_t w, std::uint64_t bits, std::uint64_t fresh) noexcept {
    if (bits == 0) return;
    s->local(w).store(s->local(w).load(std::memory_order_relaxed) | bits, std::memory_order_relaxed);
    s->free_count += static_cast<std::uint32_t>(popcount(bits));
    if (w < s->hint) s->hint = static_cast<std::uint16_t>(w);
    // Bits go out lowest first, so the fresh ones left are the word's top ones: the mark moves back to the first.
    if ((fresh & bits) != 0) s->high_water = static_cast<std::uint32_t>(w * 64 + std::size_t{lowest_bit(fresh & bits)});
  }

  /// The first local word at or past the hint with a free bit (s has one); moves the hint there.
  static std::size_t first_free_word(slab* s) noexcept {
    std::size_t w = s->hint;
    while (s->local(w).load(std::memory_order_relaxed) == 0) ++w;
    s->hint = static_cast<std::uint16_t>(w);
    return w;
  }

  /// Folds s's remote frees into its local bitmap (by whoever allocates from s, with none of its words claimed).
  /// For each word with remote bits, calls settle(i, folded, both) after taking them: `folded` are the remote bits
  /// taken, `both` those also free locally already (a double free by two threads that raced: the slot stays free
  /// once; the caller reports it and undoes one count). settle() returns the bits of `folded` not to make free (the
  /// caller found their frees wrong). Returns the slots gained.
  template <class Settle>
  std::size_t fold_remote(slab* s, Settle&& settle) const noexcept {
    std::size_t gained = 0;
    for (std::size_t i = 0; i < s->words; ++i) {
      slab::word& r = s->remote(i);
      if (r.load(std::memory_order_relaxed) == 0) continue;
      // seq_cst: the freeing threads' writes happen before, and the synchronized bitmap's pin protocol needs it.
      std::uint64_t v = r.exchange(0, std::memory_order_seq_cst);
      STRATA_INJECT_DELAY();
      const std::uint64_t local = s->local(i).load(std::memory_order_relaxed);
      const std::uint64_t both = v & local;
      v &= ~(both | settle(i, v, both));
      s->local(i).store(local | v, std::memory_order_relaxed);
      gained += static_cast<std::size_t>(popcount(v));
      if (v != 0 && i < s->hint) s->hint = static_cast<std::uint16_t>(i);
    }
    s->free_count += static_cast<std::uint32_t>(gained);
    return gained;
  }

  /// Checks s's header and bitmaps: tag, class, layout, no bits outside the slots, the hint, and free_count
  /// against the local bits (leaving out local word `claimed`, if any). Returns what is broken or nullptr.
  /// `object_size` is what class `c` holds. Slots free in both bitmaps are not broken structure (see free_slots).
  const char* check(const slab* s, unsigned c, std::size_t object_size,
                    std::size_t claimed = ~std::size_t{0}) const noexcept;

 private:
  std::size_t size_;
  std::uintptr_t key_;
  std::uint8_t stride_;
  bool coloured_;
};

}  // namespace strata::detail
