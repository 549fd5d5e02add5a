// A user of an installed strata: a pmr vector on the default page resource.
#include <cstdio>
#include <memory_resource>
#include <vector>

#include <strata/strata.hpp>

int main() {
  strata::page_resource pages;
  std::pmr::vector<int> v(&pages);
  for (int i = 0; i < 100000; ++i) v.push_back(i);
  const auto s = pages.stats();
  std::printf("consumer: %zu ints, %zu bytes in use\n", v.size(), s.bytes_in_use);
  return v[99999] == 99999 && s.bytes_in_use >= sizeof(int) * 100000 ? 0 : 1;
}
