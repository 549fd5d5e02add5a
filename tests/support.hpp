// SPDX-License-Identifier: MIT
// tests/support.hpp: helpers shared by the test files: error capture, content patterns, a small RNG.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory_resource>
#include <new>
#include <string>
#include <vector>

#include <strata/error.hpp>
#include <strata/stats.hpp>

namespace strata_test {

/// An upstream that hands out one region of `size` bytes, aligned to `size`, over and over: a request aligned to
/// `size` gets its base, any other request of more than 4 KiB base + `offset`; one such block at a time, other requests
/// (a resource's own tables) go to the C++ heap. It makes a
/// resource reuse the address of a block it freed for another kind of block, as a caching upstream may.
class reusing_upstream : public std::pmr::memory_resource {
 public:
  explicit reusing_upstream(std::size_t size) : size_(size) {
    mem_ = static_cast<char*>(::operator new(2 * size, std::align_val_t{size}));
    raw_ = mem_;
  }
  ~reusing_upstream() override { ::operator delete(mem_, std::align_val_t{size_}); }
  reusing_upstream(const reusing_upstream&) = delete;
  reusing_upstream& operator=(const reusing_upstream&) = delete;
  char* base() const noexcept { return raw_; }
  /// Hands out the second region of `size` bytes instead (an address with other low bits).
  void use_second() noexcept { raw_ = mem_ + size_; }
  std::size_t offset = 0;

 private:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    char* p = alignment >= size_ ? raw_ : raw_ + offset;
    if (used_ || bytes <= 4096 || p + bytes > raw_ + size_)
      return std::pmr::new_delete_resource()->allocate(bytes, alignment);
    used_ = true;
    return p;
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
    if (p >= mem_ && p < mem_ + 2 * size_) used_ = false;
    else std::pmr::new_delete_resource()->deallocate(p, bytes, alignment);
  }
  bool do_is_equal(const std::pmr::memory_resource& o) const noexcept override { return this == &o; }
  std::size_t size_;
  char* mem_ = nullptr;
  char* raw_ = nullptr;
  bool used_ = false;
};

/// How a child process made by run_in_child() ended.
struct child_result {
  bool faulted = false;  ///< by an access fault (SIGSEGV or SIGBUS; Windows: an access violation)
  bool aborted = false;  ///< by abort() (SIGABRT; Windows: the C runtime's abort exit code, 3)
  int exit_code = -1;    ///< its exit code when it exited (0: the body returned; 97: it threw)
  std::string output;    ///< what it wrote to stderr
};
/// Runs `body` in a child process with the default handling of faults and aborts (no test framework's handler turns
/// them into a report of its own) and its stderr captured. Linux: a forked child. Windows: this program started again
/// on the current test case, which runs up to this call and then runs `body` instead (the calls before it return an
/// empty result in the child: a test case must run the same way up to there, and may not REQUIRE on their results).
child_result run_in_child(const std::function<void()>& body);
/// Sets environment variable `name` to `value`, or removes it when `value` is null (setenv and unsetenv; Windows:
/// _putenv_s, which getenv reads).
void set_environment(const std::string& name, const char* value);

/// Called by the runner when a test case starts (the name the Windows child is started with).
void test_case_started(const char* name);

/// Deterministic, fast RNG (splitmix64) so failures reproduce.
class rng {
 public:
  explicit rng(std::uint64_t seed) noexcept : state_(seed) {}
  std::uint64_t next() noexcept {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  /// Uniform in [lo, hi].
  std::size_t between(std::size_t lo, std::size_t hi) noexcept {
    return lo + static_cast<std::size_t>(next() % (hi - lo + 1));
  }

 private:
  std::uint64_t state_;
};

/// Fills [p, p+n) with a pattern derived from `seed`; check_pattern verifies it.
void fill_pattern(void* p, std::size_t n, std::uint64_t seed) noexcept;
bool check_pattern(const void* p, std::size_t n, std::uint64_t seed) noexcept;
/// Sparse variants for large blocks: every `stride`-th byte and the last one.
void fill_sparse(void* p, std::size_t n, std::uint64_t seed, std::size_t stride) noexcept;
bool check_sparse(const void* p, std::size_t n, std::uint64_t seed, std::size_t stride) noexcept;

/// One error the handler saw, with its formatted message.
struct captured_error {
  strata::error_kind kind;
  const void* pointer;
  std::size_t size;
  std::size_t expected_size;
  std::string message;
};

/// While alive, the error handler records instead of aborting.
class error_capture {
 public:
  error_capture();
  ~error_capture();
  error_capture(const error_capture&) = delete;
  error_capture& operator=(const error_capture&) = delete;
  [[nodiscard]] const std::vector<captured_error>& errors() const;
  [[nodiscard]] std::size_t count() const { return errors().size(); }
  void clear();

 private:
  strata::error_handler previous_;
};

/// Writes n bytes of `byte` at p the way a program's bug would (after a free, over a header), past ASan: built with
/// it, strata keeps free memory poisoned, and a test of strata's own checks must get its write through.
void write_unchecked(void* p, int byte, std::size_t n) noexcept;
/// Copies n bytes from src to dst, neither checked by ASan (reading or restoring what a test wrote over).
void copy_unchecked(void* dst, const void* src, std::size_t n) noexcept;

/// How many iterations a stress test runs: its default times STRATA_TEST_SCALE (environment, default 1).
std::size_t scaled(std::size_t n);

/// Every field of two stats snapshots agrees (a misuse report changed nothing). Reports through doctest.
void check_unchanged(const strata::resource_stats& before, const strata::resource_stats& after);

/// check_error: match any expected size.
inline constexpr std::size_t any_size = ~std::size_t{0};
/// The last captured error (of `count` so far) is of `kind`, for `p`, with the caller's `size` and, unless any_size,
/// the expected size; its message names `resource`. Reports through doctest.
void check_error(const char* resource, const error_capture& errors, std::size_t count, strata::error_kind kind,
                 const void* p, std::size_t size, std::size_t expected = any_size);

}  // namespace strata_test
