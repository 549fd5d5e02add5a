// SPDX-License-Identifier: MIT
// examples/boost_containers.cpp: Boost.Container pmr containers on a strata resource, and a Boost pool under std::pmr.
#include <cstdio>
#include <string>

#include <boost/container/pmr/flat_map.hpp>
#include <boost/container/pmr/stable_vector.hpp>
#include <boost/container/pmr/unsynchronized_pool_resource.hpp>
#include <strata/boost_interop.hpp>
#include <strata/page_resource.hpp>

int main() {
  std::printf("strata example: Boost.Container interop\n");
  strata::page_resource pages;
  strata::boost_resource_adapter as_boost(&pages);  // strata -> boost
  {
    boost::container::pmr::flat_map<int, long long> index(&as_boost);
    for (int i = 0; i < 100000; ++i) index.emplace(i, static_cast<long long>(i) * i);
    boost::container::pmr::stable_vector<int> stable(&as_boost);
    for (int i = 0; i < 1000; ++i) stable.push_back(i);
    std::printf("  flat_map of %zu entries and stable_vector of %zu on page_resource: %zu bytes in use\n",
                index.size(), stable.size(), pages.stats().bytes_in_use);
  }
  // A Boost pool (over strata pages) serving a std::pmr container.
  std::size_t total = 0;
  {
    boost::container::pmr::unsynchronized_pool_resource pool(&as_boost);
    strata::std_resource_adapter as_std(&pool);  // boost -> std
    std::pmr::vector<std::pmr::string> names(&as_std);
    for (int i = 0; i < 10000; ++i) names.emplace_back("name number " + std::to_string(i));
    for (const auto& n : names) total += n.size();
    std::printf("  10000 std::pmr strings through a Boost pool over page_resource: %zu chars, %zu bytes in use\n",
                total, pages.stats().bytes_in_use);
  }
  std::printf("  pool destroyed: page_resource has %zu bytes in use\n", pages.stats().bytes_in_use);
  return pages.stats().bytes_in_use == 0 ? 0 : 1;
}
