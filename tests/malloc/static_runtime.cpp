// SPDX-License-Identifier: MIT
// tests/malloc/static_runtime.cpp: a C++ program with its C++ runtime linked in statically (none in the process for
// libstrata-malloc to find), run with the library preloaded. A failing operator new throws std::bad_alloc from the
// library's own runtime into the program's: caught, kept in std::exception_ptr (whose last copy the program's runtime
// frees with free()), rethrown; the nothrow forms return nullptr.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>
#include <vector>

#define CHECK(cond)                                                                    \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)

// A size the optimizer cannot see.
std::size_t opaque(std::size_t n) {
  volatile std::size_t v = n;
  return v;
}

int main() {
  std::vector<std::exception_ptr> kept;
  for (int i = 0; i < 200; ++i) {
    try {
      void* p = ::operator new(opaque(std::size_t{1} << 50));
      ::operator delete(p);
      CHECK(false);
    } catch (const std::bad_alloc&) {
      kept.push_back(std::current_exception());
    }
  }
  int rethrown = 0;
  for (const std::exception_ptr& e : kept) {
    try {
      std::rethrow_exception(e);
    } catch (const std::bad_alloc&) {
      ++rethrown;
    }
  }
  CHECK(rethrown == 200);
  kept.clear();  // the program's runtime frees each exception
  CHECK(::operator new(opaque(std::size_t{1} << 50), std::nothrow) == nullptr);
  CHECK(::operator new[](opaque(std::size_t{1} << 50), std::align_val_t{64}, std::nothrow) == nullptr);
  int* x = new int(42);
  CHECK(*x == 42);
  delete x;
  std::puts("ok");
  return 0;
}
