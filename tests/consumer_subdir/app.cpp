// SPDX-License-Identifier: MIT
#include <cstdio>

int sum_of_squares(int n);

int main() {
  const int s = sum_of_squares(10);
  std::printf("subdir consumer: %d\n", s);
  return s == 385 ? 0 : 1;
}
