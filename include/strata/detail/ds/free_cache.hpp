// SPDX-License-Identifier: MIT
// strata/detail/ds/free_cache.hpp: the free cache: freed blocks kept LIFO in front of the slabs' bitmaps, threaded
// through the blocks themselves, each carrying a check word that ties its address, its link and the owner's key.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include <strata/config.hpp>
#include <strata/detail/core/sanitizer.hpp>

namespace strata::detail {

/// A freed block in a free cache (a "node"): word 0 is the link to the next (older) node, word 1 the check,
/// address ^ link ^ key. The key is random per resource, so user data is a node only by a 1 in 2^64 chance, unless
/// the program stores that value itself.
///
/// Every path that frees a block into a cache makes it a node; the node words stay when the block moves on into a
/// bitmap. Every path that hands a block out checks it (a block that is no node was written after its free, or is
/// being handed out a second time) and clears the check word, so a live block is no node; a block's first hand-out in
/// its present shape clears both words (clear_fresh). Blocks need two words
/// (16 bytes); smaller classes do not use a cache.
///
/// The words are read and written with relaxed atomic accesses (plain moves on the targets we build for): in the
/// thread cache another thread may read them (a free of p checks whether p is some heap's node), and a program's
/// double free across threads must not be a data race inside the library.
///
/// Built with ASan, free blocks are poisoned (sanitizer.hpp): these accessors are then unchecked calls; built for
/// Valgrind, they open the word for memcheck while they access it.
using node_word = std::uintptr_t __attribute__((may_alias));
STRATA_FREE_MEMORY_ACCESS std::uintptr_t load_node_word(const void* p, int i) noexcept {
  san::open_word w(static_cast<const node_word*>(p) + i, sizeof(node_word));
  return __atomic_load_n(static_cast<const node_word*>(p) + i, __ATOMIC_RELAXED);
}
STRATA_FREE_MEMORY_ACCESS void store_node_word(void* p, int i, std::uintptr_t v) noexcept {
  san::open_word w(static_cast<node_word*>(p) + i, sizeof(node_word));
  __atomic_store_n(static_cast<node_word*>(p) + i, v, __ATOMIC_RELAXED);
}
/// Word i of p from `expected` to `desired` by one compare-and-swap (expected gets what was there when it fails).
template <int SuccessOrder>
STRATA_FREE_MEMORY_ACCESS bool exchange_node_word(void* p, int i, std::uintptr_t& expected,
                                                  std::uintptr_t desired) noexcept {
  san::open_word w(static_cast<node_word*>(p) + i, sizeof(node_word));
  return __atomic_compare_exchange_n(static_cast<node_word*>(p) + i, &expected, desired, false, SuccessOrder,
                                     __ATOMIC_RELAXED);
}

/// A key no program can predict, for an owner's nodes.
std::uintptr_t random_node_key(const void* owner) noexcept;

STRATA_ALWAYS_INLINE std::uintptr_t node_check(const void* p, std::uintptr_t next, std::uintptr_t key) noexcept {
  return reinterpret_cast<std::uintptr_t>(p) ^ next ^ key;
}
/// Whether p's first two words form a node under `key`.
STRATA_ALWAYS_INLINE bool is_node(const void* p, std::uintptr_t key) noexcept {
  return load_node_word(p, 1) == node_check(p, load_node_word(p, 0), key);
}

/// Heap keys (the thread cache): heap i makes its nodes with base_key ^ (i << 48), i < 2^16. node_residue(p) is
/// i << 48 when p is a node of heap i; is_any_node(p): p is a node of some heap.
STRATA_ALWAYS_INLINE std::uintptr_t node_residue(const void* p, std::uintptr_t base_key) noexcept {
  return load_node_word(p, 1) ^ node_check(p, load_node_word(p, 0), base_key);
}
STRATA_ALWAYS_INLINE bool is_any_node(const void* p, std::uintptr_t base_key) noexcept {
  return (node_residue(p, base_key) << 16) == 0;
}
/// Whether p is a node of another heap than `key`'s, of the same resource (a key that differs from it only in the
/// top 16 bits). In a list of `key`'s, that is an object freed twice whose other free's node was written last: it
/// is in the other heap's list or queue now.
STRATA_ALWAYS_INLINE bool is_other_heaps_node(const void* p, std::uintptr_t key) noexcept {
  const std::uintptr_t r = node_residue(p, key);
  return r != 0 && (r << 16) == 0;
}
STRATA_ALWAYS_INLINE void make_node(void* p, const void* next, std::uintptr_t key) noexcept {
  const auto n = reinterpret_cast<std::uintptr_t>(next);
  store_node_word(p, 0, n);
  store_node_word(p, 1, node_check(p, n, key));
}
STRATA_ALWAYS_INLINE void* node_next(const void* p) noexcept { return reinterpret_cast<void*>(load_node_word(p, 0)); }
/// Makes p no node (it is being handed out).
STRATA_ALWAYS_INLINE void clear_node(void* p) noexcept { store_node_word(p, 1, 0); }
/// Makes p, a block never handed out in its present shape, no node, whatever its words hold: words of an earlier use
/// of the memory, maybe by blocks at other offsets (a block of slots formatted for another size), so that word 0 may
/// hold an old check word. Were word 0 left so, a live block whose first bytes alone the program writes
/// could complete that old word into one that reads as a node at its own address.
STRATA_ALWAYS_INLINE void clear_fresh(void* p) noexcept {
  store_node_word(p, 0, 0);
  store_node_word(p, 1, 0);
}

/// A bounded LIFO of nodes in two lists of at most `cap` nodes: `head`, where frees push and allocations pop, and
/// `cold`, the older batch. When `head` is full, a free moves it to `cold` whole (giving the previous cold batch
/// back to the bitmaps first); when `head` is empty, an allocation takes `cold` back. Both are pointer moves: no walk.
struct free_cache {
  static constexpr std::uint32_t max_cap = 64;
  /// The bound of each list for objects of `size` bytes: 32 KiB of objects, at least 16 and at most max_cap.
  static constexpr std::uint32_t cap_for(std::size_t size) noexcept {
    const std::size_t n = (std::size_t{32} << 10) / size;
    return static_cast<std::uint32_t>(n < 16 ? 16 : n > max_cap ? max_cap : n);
  }

  void* head = nullptr;
  void* cold = nullptr;
  // Places left in head: cap - its nodes; 0 or less: full (below 0 when a caller hands head a longer list whole,
  // see set_count, which then drains before pushes come back). A push takes a place by a decrement whose own flags
  // say whether there was one (take_place: one instruction and a branch).
  std::int32_t room = 0;
  std::uint32_t cold_count = 0;  // nodes in cold
  std::uint32_t cap = 0;  // at most max_cap; 0: no cache (too small for a node, or strict checks); set by set_cap()

  /// Nodes in head.
  [[nodiscard]] std::uint32_t count() const noexcept {
    return static_cast<std::uint32_t>(static_cast<std::int32_t>(cap) - room);
  }
  /// Says that head holds n nodes.
  void set_count(std::uint32_t n) noexcept { room = static_cast<std::int32_t>(cap) - static_cast<std::int32_t>(n); }
  /// Sets the bound, keeping the count.
  void set_cap(std::uint32_t c) noexcept {
    const std::uint32_t n = count();
    cap = c;
    set_count(n);
  }
  /// Whether head has no place left (a push needs take_place() first, or the caller's own test).
  [[nodiscard]] bool full() const noexcept { return room <= 0; }
  /// Whether head holds no node (count() == 0, in one compare).
  [[nodiscard]] bool head_empty() const noexcept { return room >= static_cast<std::int32_t>(cap); }
  /// Takes a place in head for one push_placed(). False when head is full: the caller's slow way then gives the
  /// place back (untake_place) before anything else, which keeps the fast path to the decrement and its branch.
  STRATA_ALWAYS_INLINE bool take_place() noexcept { return --room >= 0; }
  void untake_place() noexcept { ++room; }

  STRATA_ALWAYS_INLINE void push(void* p, std::uintptr_t key) noexcept {
    push_placed(p, key);
    --room;
  }
  /// push() after take_place().
  STRATA_ALWAYS_INLINE void push_placed(void* p, std::uintptr_t key) noexcept {
    make_node(p, head, key);
    head = p;
  }
  /// push() for an object other threads may free at the same moment: word 1 goes from `seen` (what the caller's
  /// checks read there) to `busy` by one compare-and-swap, then word 0 and the check are written. False, with
  /// nothing changed, when another write reached word 1 in between (the object freed twice at once: one of the two
  /// wins). A free that meets `busy` (the push under way) takes it for such a second free too.
  STRATA_ALWAYS_INLINE bool push_exclusive(void* p, std::uintptr_t key, std::uintptr_t seen,
                                           std::uintptr_t busy) noexcept {
    const auto n = reinterpret_cast<std::uintptr_t>(head);
    if (STRATA_UNLIKELY(!exchange_node_word<__ATOMIC_RELAXED>(p, 1, seen, busy)))
      return false;
    store_node_word(p, 0, n);
    store_node_word(p, 1, node_check(p, n, key));
    head = p;
    --room;
    return true;
  }
  [[nodiscard]] std::uint32_t total() const noexcept { return count() + cold_count; }

  /// The newest node, taken off the head list and made no node; nullptr when the list is empty or its head does not
  /// check under `key` (head is then left as it is: the caller tells the two apart and reports the second).
  STRATA_ALWAYS_INLINE void* pop(std::uintptr_t key) noexcept {
    void* p = head;
    if (STRATA_UNLIKELY(p == nullptr)) return nullptr;
    const std::uintptr_t next = load_node_word(p, 0);  // read once: the words are atomics
    if (STRATA_UNLIKELY(load_node_word(p, 1) != node_check(p, next, key))) return nullptr;
    head = reinterpret_cast<void*>(next);
    ++room;
    clear_node(p);
    return p;
  }

  /// The head list is full: it becomes the cold list whole, leaving the head list empty. Returns the previous cold
  /// list (its length in `n`), which the caller gives back to the bitmaps, or nullptr.
  void* rotate(std::size_t& n) noexcept {
    void* old = cold;
    n = cold_count;
    cold = head;
    cold_count = count();
    head = nullptr;
    set_count(0);
    return old;
  }
  /// rotate(), and p starts the new head list.
  void* push_rotating(void* p, std::uintptr_t key, std::size_t& n) noexcept {
    void* old = rotate(n);
    push(p, key);
    return old;
  }
  /// The head list is empty: the cold list takes its place. False when there is none.
  bool take_cold() noexcept {
    if (cold == nullptr) return false;
    head = cold;
    set_count(cold_count);
    cold = nullptr;
    cold_count = 0;
    return true;
  }
  /// The head list cannot be trusted (its newest node does not check): it is dropped, its nodes set aside.
  /// Returns how many.
  std::uint32_t drop_head() noexcept {
    const std::uint32_t n = count();
    head = nullptr;
    set_count(0);
    return n;
  }
  /// Empties the cache: give(list, n) for the head list, then for the cold list (each only when not empty).
  template <class Give>
  void empty_into(Give give) noexcept {
    void* lists[2] = {head, cold};
    const std::uint32_t counts[2] = {count(), cold_count};
    head = cold = nullptr;
    set_count(0);
    cold_count = 0;
    for (int i = 0; i < 2; ++i)
      if (lists[i] != nullptr) give(lists[i], counts[i]);
  }
  /// Unlinks from both lists every node for which match(node) holds, then calls drop(node). Stops a list at a node
  /// that does not check under `key` (found and reported when the list is used).
  template <class Match, class Drop>
  void remove_if(std::uintptr_t key, Match match, Drop drop) noexcept {
    for (void** link : {&head, &cold}) {
      std::uint32_t n_left = link == &head ? count() : cold_count;
      void* prev = nullptr;
      void* n = *link;
      for (std::uint32_t k = 0, total = n_left; k < total && n != nullptr; ++k) {
        if (!is_node(n, key)) break;
        void* next = node_next(n);
        if (match(n)) {
          drop(n);
          if (prev == nullptr) *link = next;
          else make_node(prev, next, key);
          --n_left;
        } else {
          prev = n;
        }
        n = next;
      }
      if (link == &head) set_count(n_left);
      else cold_count = n_left;
    }
  }

  /// Keeps the nodes for which keep(node) holds (newest in the head list) and passes the others, in their order, to
  /// give(list, n) in lists of at most max_cap nodes. Changes nothing and returns false when a node does not check
  /// under `key` (the use that reaches it reports it); also when every node is kept.
  template <class Keep, class Give>
  bool split(std::uintptr_t key, Keep keep, Give give) noexcept {
    void* nodes[2 * max_cap];
    std::size_t n = 0;
    for (int which = 0; which < 2; ++which) {
      void* list = which == 0 ? head : cold;
      const std::uint32_t k = which == 0 ? count() : cold_count;
      for (std::uint32_t i = 0; i < k; ++i, list = node_next(list)) {
        // A node met twice, or a list shorter than its count (links written over): left as they are.
        if (list == nullptr || !is_node(list, key) || std::find(nodes, nodes + n, list) != nodes + n) return false;
        nodes[n++] = list;
      }
    }
    // Kept ones first, in order; then the others, in order.
    void* others[2 * max_cap];
    std::size_t kept = 0, backs = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (keep(nodes[i])) nodes[kept++] = nodes[i];
      else others[backs++] = nodes[i];
    }
    if (backs == 0) return false;
    // The cache first (a give-back may walk it), newest in the head list.
    const std::size_t in_head = kept < cap ? kept : cap;
    void* lists[2] = {nullptr, nullptr};
    for (std::size_t i = kept; i-- > 0;) {
      void*& list = lists[i < in_head ? 0 : 1];
      make_node(nodes[i], list, key);
      list = nodes[i];
    }
    head = lists[0];
    set_count(static_cast<std::uint32_t>(in_head));
    cold = lists[1];
    cold_count = static_cast<std::uint32_t>(kept - in_head);
    // The others, oldest last, in lists of at most max_cap.
    for (std::size_t from = 0; from < backs; from += max_cap) {
      const std::size_t to = from + max_cap < backs ? from + max_cap : backs;
      void* back = nullptr;
      for (std::size_t i = to; i-- > from;) {
        make_node(others[i], back, key);
        back = others[i];
      }
      give(back, to - from);
    }
    return true;
  }

  /// Whether p is one of the nodes (walks at most total() nodes; stops at a node that does not check).
  [[nodiscard]] bool holds(const void* p, std::uintptr_t key) const noexcept {
    return list_holds(head, count(), p, key) || list_holds(cold, cold_count, p, key);
  }
  /// How many nodes lie in [begin, end) (walks at most total() nodes; a node that does not check ends its list), for
  /// inspection.
  [[nodiscard]] std::size_t nodes_in(const void* begin, const void* end, std::uintptr_t key) const noexcept {
    return list_nodes_in(head, count(), begin, end, key) + list_nodes_in(cold, cold_count, begin, end, key);
  }

 private:
  static std::size_t list_nodes_in(const void* n, std::uint32_t nodes, const void* begin, const void* end,
                                   std::uintptr_t key) noexcept {
    const auto b = reinterpret_cast<std::uintptr_t>(begin), e = reinterpret_cast<std::uintptr_t>(end);
    std::size_t in = 0;
    for (std::uint32_t k = 0; n != nullptr && k < nodes && is_node(n, key); ++k, n = node_next(n)) {
      const auto a = reinterpret_cast<std::uintptr_t>(n);
      if (a >= b && a < e) ++in;
    }
    return in;
  }
  static bool list_holds(const void* n, std::uint32_t nodes, const void* p, std::uintptr_t key) noexcept {
    for (std::uint32_t k = 0; n != nullptr && k < nodes; ++k, n = node_next(n)) {
      if (n == p) return true;
      if (!is_node(n, key)) return false;
    }
    return false;
  }
};

}  // namespace strata::detail
