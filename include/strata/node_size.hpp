// SPDX-License-Identifier: MIT
// strata/node_size.hpp: the size of the node a node-based std::pmr container allocates per element, for sizing a
// fixed_pool_resource (or a bitmap class) to it.
#pragma once

#include <cstddef>
#include <memory_resource>
#include <type_traits>
#include <utility>

#include <strata/config.hpp>

STRATA_PUBLIC_BEGIN
namespace strata {

namespace detail {
/// Records the size and alignment of the first allocation made through it; takes its memory from new/delete.
class first_allocation_probe final : public std::pmr::memory_resource {
 public:
  std::size_t bytes = 0;
  std::size_t alignment = 0;

 private:
  void* do_allocate(std::size_t n, std::size_t a) override {
    if (bytes == 0) {
      bytes = n;
      alignment = a;
    }
    return std::pmr::new_delete_resource()->allocate(n, a);
  }
  void do_deallocate(void* p, std::size_t n, std::size_t a) override {
    std::pmr::new_delete_resource()->deallocate(p, n, a);
  }
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }
};

template <class C, class = void>
struct inserts_at_end : std::false_type {};
template <class C>
struct inserts_at_end<C, std::void_t<decltype(std::declval<C&>().insert(std::declval<C&>().end(),
                                                                         std::declval<typename C::value_type>()))>>
    : std::true_type {};

/// The first allocation `Container` makes for one element.
template <class Container>
const first_allocation_probe& probe_one_element(first_allocation_probe& probe) {
  Container c(&probe);
  if constexpr (inserts_at_end<Container>::value) c.insert(c.end(), typename Container::value_type{});
  else c.push_front(typename Container::value_type{});  // forward_list
  return probe;
}
}  // namespace detail

/// The bytes `Container` (std::pmr::list, forward_list, set, multiset, map or multimap, or another container that
/// allocates one node per element and nothing else for its first element) asks its memory resource for per element:
/// the block size a fixed_pool_resource for its nodes needs. A node is larger than the element (a list node of
/// int holds two links and the int: 24 bytes where sizeof(int) is 4). Found by inserting one value-initialised
/// element into a container over a recording resource, so the value type must be default-constructible.
///
///     strata::fixed_pool_resource nodes(strata::node_size<std::pmr::list<int>>());
///     std::pmr::list<int> l(&nodes);                    // one block per element, no runs
template <class Container>
std::size_t node_size() {
  detail::first_allocation_probe probe;
  return detail::probe_one_element<Container>(probe).bytes;
}

/// The alignment the container asks for with each node (see node_size).
template <class Container>
std::size_t node_alignment() {
  detail::first_allocation_probe probe;
  return detail::probe_one_element<Container>(probe).alignment;
}

}  // namespace strata
STRATA_PUBLIC_END
