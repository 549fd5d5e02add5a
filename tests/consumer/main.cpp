// SPDX-License-Identifier: MIT
// A user of an installed strata: a pmr vector on the default page resource.
#include <cstdio>
#include <cstring>
#include <memory_resource>
#include <vector>

#include <strata/strata.hpp>

int main() {
  strata::page_resource pages;
  std::pmr::vector<int> v(&pages);
  for (int i = 0; i < 100000; ++i) v.push_back(i);
  const auto s = pages.stats();
  std::printf("consumer: strata %s, %zu ints, %zu bytes in use\n", strata::library_version(), v.size(),
              s.bytes_in_use);
  const bool same_version = std::strcmp(strata::library_version(), strata::version_string) == 0;
  return same_version && v[99999] == 99999 && s.bytes_in_use >= sizeof(int) * 100000 ? 0 : 1;
}
