// strata/detail/free_cache.hpp: the free cache: freed blocks kept LIFO in front of the slabs' bitmaps, threaded
// through the blocks themselves, each carrying a check word that ties its address, its link and the owner's key.
#pragma once

#include <cstddef>
#include <cstdint>

#include <strata/config.hpp>

namespace strata::detail {

/// A freed block in a free cache (a "node"): word 0 is the link to the next (older) node, word 1 the check,
/// address ^ link ^ key. The key is random per resource, so user data is a node only by a 1 in 2^64 chance, unless
/// the program stores that value itself.
///
/// Every path that frees a block into a cache makes it a node; the node words stay when the block moves on into a
/// bitmap. Every path that hands a block out checks it (a block that is no node was written after its free, or is
/// being handed out a second time) and clears the check word, so a live block is no node. Blocks need two words
/// (16 bytes); smaller classes do not use a cache.
using node_word = std::uintptr_t __attribute__((may_alias));

STRATA_ALWAYS_INLINE std::uintptr_t node_check(const void* p, std::uintptr_t next, std::uintptr_t key) noexcept {
  return reinterpret_cast<std::uintptr_t>(p) ^ next ^ key;
}
/// Whether p's first two words form a node under `key`.
STRATA_ALWAYS_INLINE bool is_node(const void* p, std::uintptr_t key) noexcept {
  const auto* w = static_cast<const node_word*>(p);
  return w[1] == node_check(p, w[0], key);
}
STRATA_ALWAYS_INLINE void make_node(void* p, const void* next, std::uintptr_t key) noexcept {
  auto* w = static_cast<node_word*>(p);
  const auto n = reinterpret_cast<std::uintptr_t>(next);
  w[0] = n;
  w[1] = node_check(p, n, key);
}
STRATA_ALWAYS_INLINE void* node_next(const void* p) noexcept {
  return reinterpret_cast<void*>(static_cast<const node_word*>(p)[0]);
}
/// Makes p no node (it is being handed out).
STRATA_ALWAYS_INLINE void clear_node(void* p) noexcept { static_cast<node_word*>(p)[1] = 0; }

/// A bounded LIFO of nodes in two lists of at most `cap` nodes: `head`, where frees push and allocations pop, and
/// `cold`, the older batch. When `head` is full, a free moves it to `cold` whole (giving the previous cold batch
/// back to the bitmaps first); when `head` is empty, an allocation takes `cold` back. Both are pointer moves: no walk.
struct free_cache {
  static constexpr std::uint32_t max_cap = 64;

  void* head = nullptr;
  void* cold = nullptr;
  std::uint32_t count = 0;       // nodes in head
  std::uint32_t cold_count = 0;  // nodes in cold
  std::uint32_t cap = 0;         // at most max_cap; 0: no cache (the class is too small for a node, or checks are strict)

  STRATA_ALWAYS_INLINE void push(void* p, std::uintptr_t key) noexcept {
    make_node(p, head, key);
    head = p;
    ++count;
  }
  [[nodiscard]] std::uint32_t total() const noexcept { return count + cold_count; }

  /// Whether p is one of the nodes (walks at most total() nodes; stops at a node that does not check).
  [[nodiscard]] bool holds(const void* p, std::uintptr_t key) const noexcept {
    return list_holds(head, count, p, key) || list_holds(cold, cold_count, p, key);
  }

 private:
  static bool list_holds(const void* n, std::uint32_t count, const void* p, std::uintptr_t key) noexcept {
    for (std::uint32_t k = 0; n != nullptr && k < count; ++k, n = node_next(n)) {
      if (n == p) return true;
      if (!is_node(n, key)) return false;
    }
    return false;
  }
};

}  // namespace strata::detail
