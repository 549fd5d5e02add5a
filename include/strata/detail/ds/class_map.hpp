// SPDX-License-Identifier: MIT
// strata/detail/ds/class_map.hpp: one resource's map from 64 KiB granules to a small value (a slab's size class, and
// for the thread cache its owner), so that a free finds whether a pointer is one of this resource's slab slots, and
// of which class, with two loads on lines that stay hot, without reading the slab's header.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <type_traits>

#include <strata/config.hpp>
#include <strata/detail/core/sync.hpp>
#include <strata/detail/ds/block_map.hpp>

namespace strata::detail {

/// A two-level table over the 48-bit address space, one `Value` per 64 KiB granule; 0 means "not mapped here".
///
/// The address space is cut into windows of 256 MiB. A window gets a leaf (4096 values) when the first granule in it
/// is set; the root, inside the map, is direct-mapped by window number: 64 entries of (window + 1, leaf). A window
/// whose root entry is taken by another one is chained behind that entry's leaf (found by a slower walk). Heaps of
/// one process sit in few windows, so lookups almost always hit the root entry: one load there, one in the leaf
/// (for a 64 MiB heap, the leaf's values fill 1 KiB: 16 cache lines).
///
/// With use_flat(), granules of the low 128 TiB (all of user space on x86-64) are looked up in a flat table instead:
/// one value per granule over the whole range, mapped sparse (it reads as zero and takes memory only where written:
/// one 4 KiB page per 64 MiB of address space in use with four-byte values), so that a lookup is one compare and one
/// load. It takes address space only: 8 GiB with four-byte values.
///
/// Lookups (`get`) are wait-free and may run on any thread at any time, also while another thread sets or clears
/// granules: a lookup sees a granule's value as it was before or after the change. Leaves are never freed before
/// `reset()` (a lookup of a stale pointer may read them at any time), so a map holds at most one leaf per window its
/// owner has ever used. `set` and `clear` are serialised by a lock of their own.
///
/// Storage has `void* allocate(std::size_t bytes) noexcept` (zero-filled, aligned to 16, or nullptr) and
/// `void deallocate(void* p, std::size_t bytes) noexcept`, as for address_table. Flat: whether use_flat() may be
/// called (lookups then test for the flat table first).
template <class Storage, class Value = std::uint8_t, bool Flat = false>
class class_map {
  static_assert(std::is_unsigned_v<Value> && sizeof(Value) <= 4, "one to four bytes per granule");

 public:
  static constexpr unsigned window_shift = 28;
  static constexpr std::size_t leaf_values = std::size_t{1} << (window_shift - block_map_shift);
  static constexpr unsigned root_entries = 64;
  /// Bytes one leaf takes from the storage.
  static constexpr std::size_t leaf_bytes = 64 + leaf_values * sizeof(Value);
  /// Granules below this many (addresses below 2^47) are in the flat table once use_flat() has made one.
  static constexpr std::size_t flat_granules = std::size_t{1} << (47 - block_map_shift);
  static constexpr std::size_t flat_bytes = flat_granules * sizeof(Value);

  class_map() noexcept = default;
  explicit class_map(Storage storage) noexcept : storage_(storage) {}
  class_map(const class_map&) = delete;
  class_map& operator=(const class_map&) = delete;
  ~class_map() { reset(); }

  /// Looks granules of the low 2^47 bytes up in a flat table from now on (see the class comment). Call it before the
  /// first set(). False, changing nothing, when the OS cannot map the table sparse (the two-level table serves).
  bool use_flat() noexcept {
    static_assert(Flat, "a map made without Flat has no flat table");
    std::lock_guard<std::mutex> g(lock_);
    if (flat_ != nullptr) return true;
    STRATA_ASSERT(leaves_ == 0);
    void* t = map_sparse_table(flat_bytes);
    if (t == nullptr) return false;
    flat_ = static_cast<std::atomic<Value>*>(t);
    flat_limit_ = flat_granules;
    return true;
  }
  /// Whether lookups go through a flat table.
  [[nodiscard]] bool flat() const noexcept { return flat_limit_ != 0; }

  /// The value of p's granule, 0 when none was set (also for addresses outside the 48-bit space).
  STRATA_ALWAYS_INLINE Value get(const void* p) const noexcept {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    if (STRATA_LIKELY(in_flat(a))) return flat_[a >> block_map_shift].load(std::memory_order_relaxed);
    const std::uintptr_t w = a >> window_shift;
    const root_entry& e = root_[w & (root_entries - 1)];
    if (STRATA_LIKELY(e.window.load(std::memory_order_acquire) == w + 1))
      return e.first.load(std::memory_order_relaxed)->at(a).load(std::memory_order_relaxed);
    return get_chained(a);
  }

  /// get(p) when p's window holds its root entry (almost always), else 0: for fast paths, which take a 0 to their
  /// slow path anyway; makes no call.
  STRATA_ALWAYS_INLINE Value get_direct(const void* p) const noexcept {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    if (STRATA_LIKELY(in_flat(a))) return flat_[a >> block_map_shift].load(std::memory_order_relaxed);
    const std::uintptr_t w = a >> window_shift;
    const root_entry& e = root_[w & (root_entries - 1)];
    // One compare and one load past the root entry: `values_bias` is where the first leaf's values would start
    // for window 0, so the value of granule a >> block_map_shift is at that index from it.
    if (STRATA_LIKELY(e.tag.load(std::memory_order_acquire) == w))
      return reinterpret_cast<const std::atomic<Value>*>(e.values_bias.load(std::memory_order_relaxed) +
                                                         (a >> block_map_shift) * sizeof(Value))
          ->load(std::memory_order_relaxed);
    return 0;
  }

  /// Sets every granule of [base, base + size) (granule-aligned) to v (non-zero). Returns false, changing nothing,
  /// when a leaf was needed and the storage had none, or when the range lies outside the 48-bit space.
  bool set(const void* base, std::size_t size, Value v) noexcept {
    STRATA_ASSERT(v != 0);
    std::lock_guard<std::mutex> g(lock_);
    const auto a = reinterpret_cast<std::uintptr_t>(base);
    if (a + size > block_map_limit || a + size < a) return false;
    // Make every leaf first (for the windows the flat table leaves out), so that a failure changes nothing.
    for (std::uintptr_t w = a >> window_shift; size != 0 && w <= (a + size - 1) >> window_shift; ++w)
      if (!in_flat(w << window_shift) && leaf_of(w, true) == nullptr) return false;
    store(a, size, v);
    return true;
  }

  /// Sets every granule of [base, base + size) back to 0.
  void clear(const void* base, std::size_t size) noexcept {
    std::lock_guard<std::mutex> g(lock_);
    store(reinterpret_cast<std::uintptr_t>(base), size, 0);
  }

  /// Frees every leaf and the flat table (lookups take the two-level table from then on); every granule reads 0. No
  /// lookup may run meanwhile.
  void reset() noexcept {
    std::lock_guard<std::mutex> g(lock_);
    if (flat_ != nullptr) {
      flat_limit_ = 0;
      unmap_sparse_table(flat_, flat_bytes);
      flat_ = nullptr;
    }
    for (root_entry& e : root_) {
      leaf* l = e.first.load(std::memory_order_relaxed);
      set_view(e, nullptr);
      e.window.store(0, std::memory_order_relaxed);
      e.first.store(nullptr, std::memory_order_relaxed);
      while (l != nullptr) {
        leaf* next = l->next.load(std::memory_order_relaxed);
        storage_.deallocate(l, leaf_bytes);
        l = next;
      }
    }
    leaves_ = 0;
  }

  /// Frees the leaves whose granules are all 0. No lookup may run meanwhile (a lookup of a stale pointer could read
  /// a freed leaf).
  void release_empty() noexcept {
    std::lock_guard<std::mutex> g(lock_);
    for (root_entry& e : root_) {
      leaf* keep = nullptr;  // the chain rebuilt from the leaves that stay, in order
      leaf* tail = nullptr;
      for (leaf* l = e.first.load(std::memory_order_relaxed); l != nullptr;) {
        leaf* next = l->next.load(std::memory_order_relaxed);
        if (empty(*l)) {
          storage_.deallocate(l, leaf_bytes);
          --leaves_;
        } else {
          l->next.store(nullptr, std::memory_order_relaxed);
          if (tail == nullptr) keep = l;
          else tail->next.store(l, std::memory_order_relaxed);
          tail = l;
        }
        l = next;
      }
      e.first.store(keep, std::memory_order_relaxed);
      e.window.store(keep == nullptr ? 0 : keep->window + 1, std::memory_order_release);
      set_view(e, keep);
    }
  }

  /// Storage bytes the leaves take (the flat table comes from the OS, not the storage, and is not counted).
  [[nodiscard]] std::size_t bytes_held() const noexcept {
    std::lock_guard<std::mutex> g(lock_);
    return leaves_ * leaf_bytes;
  }

  /// Its lock, for fork() (lock_set).
  void add_fork_locks(lock_set& s) const noexcept { s.add(lock_); }

 private:
  struct leaf {
    std::uintptr_t window;
    std::atomic<leaf*> next;  // the next leaf whose window shares this one's root entry
    char pad[64 - sizeof(std::uintptr_t) - sizeof(std::atomic<leaf*>)];
    std::atomic<Value> values[leaf_values];
    std::atomic<Value>& at(std::uintptr_t a) noexcept { return values[(a >> block_map_shift) & (leaf_values - 1)]; }
  };
  static_assert(sizeof(leaf) == leaf_bytes, "leaf layout");
  static_assert(std::is_trivially_destructible_v<std::atomic<Value>>, "zero-filled storage is a valid leaf");

  struct alignas(32) root_entry {
    // get_direct()'s view of `first`: its window number (no_tag while empty), set after values_bias, and the
    // address of its values less that window's first granule number times sizeof(Value).
    std::atomic<std::uintptr_t> tag{no_tag};
    std::atomic<std::uintptr_t> values_bias{0};
    std::atomic<std::uintptr_t> window{0};  // window number + 1 of `leaf`, 0 while empty; set once, after `leaf`
    std::atomic<leaf*> first{nullptr};
  };
  static constexpr std::uintptr_t no_tag = ~std::uintptr_t{0};  // no address has this window number

  /// Points e's fast view at leaf l (nullptr: none).
  static void set_view(root_entry& e, leaf* l) noexcept {
    if (l == nullptr) {
      e.tag.store(no_tag, std::memory_order_relaxed);
      e.values_bias.store(0, std::memory_order_relaxed);
      return;
    }
    const std::uintptr_t first_granule = l->window << (window_shift - block_map_shift);
    e.values_bias.store(reinterpret_cast<std::uintptr_t>(l->values) - first_granule * sizeof(Value),
                        std::memory_order_relaxed);
    e.tag.store(l->window, std::memory_order_release);
  }

  static bool empty(const leaf& l) noexcept {
    for (const auto& v : l.values)
      if (v.load(std::memory_order_relaxed) != 0) return false;
    return true;
  }

  STRATA_COLD Value get_chained(std::uintptr_t a) const noexcept {
    const std::uintptr_t w = a >> window_shift;
    const root_entry& e = root_[w & (root_entries - 1)];
    if (e.window.load(std::memory_order_acquire) == 0) return 0;
    for (leaf* l = e.first.load(std::memory_order_relaxed)->next.load(std::memory_order_acquire); l != nullptr;
         l = l->next.load(std::memory_order_acquire))
      if (l->window == w) return l->at(a).load(std::memory_order_relaxed);
    return 0;
  }

  /// The leaf of window w, made (when `make`) if there is none; nullptr when there is none. Under lock_.
  leaf* leaf_of(std::uintptr_t w, bool make) noexcept {
    root_entry& e = root_[w & (root_entries - 1)];
    leaf* last = nullptr;
    for (leaf* l = e.first.load(std::memory_order_relaxed); l != nullptr; l = l->next.load(std::memory_order_relaxed)) {
      if (l->window == w) return l;
      last = l;
    }
    if (!make) return nullptr;
    auto* fresh = static_cast<leaf*>(storage_.allocate(leaf_bytes));
    if (fresh == nullptr) return nullptr;
    fresh->window = w;  // the rest is zero: no next, every value 0
    ++leaves_;
    if (last == nullptr) {
      e.first.store(fresh, std::memory_order_relaxed);
      e.window.store(w + 1, std::memory_order_release);
      set_view(e, fresh);
    } else {
      last->next.store(fresh, std::memory_order_release);
    }
    return fresh;
  }

  /// Whether address a is looked up in the flat table (never without Flat: the test folds away).
  STRATA_ALWAYS_INLINE bool in_flat(std::uintptr_t a) const noexcept {
    return Flat && (a >> block_map_shift) < flat_limit_;
  }

  void store(std::uintptr_t a, std::size_t size, Value v) noexcept {
    STRATA_ASSERT(a % block_map_granule == 0 && size % block_map_granule == 0);
    leaf* l = nullptr;
    for (std::uintptr_t g = a; g < a + size; g += block_map_granule) {
      if (in_flat(g)) {
        flat_[g >> block_map_shift].store(v, std::memory_order_relaxed);
        continue;
      }
      if (l == nullptr || l->window != g >> window_shift) l = leaf_of(g >> window_shift, false);
      if (l != nullptr) l->at(g).store(v, std::memory_order_relaxed);
    }
  }

  // The flat table (use_flat()): flat_limit_ granules of it are looked up (0: none, or no table).
  std::atomic<Value>* flat_ = nullptr;
  std::size_t flat_limit_ = 0;
  root_entry root_[root_entries];
  Storage storage_{};
  mutable std::mutex lock_;
  std::size_t leaves_ = 0;
};

}  // namespace strata::detail
