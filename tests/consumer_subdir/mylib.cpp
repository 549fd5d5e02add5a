// SPDX-License-Identifier: MIT
#include <memory_resource>
#include <vector>

#include <strata/strata.hpp>

// A library that keeps its nodes on a strata pool.
int sum_of_squares(int n) {
  strata::bitmap_resource pool;
  std::pmr::vector<int> v(&pool);
  for (int i = 1; i <= n; ++i) v.push_back(i * i);
  int s = 0;
  for (int x : v) s += x;
  return s;
}
