// SPDX-License-Identifier: MIT
// soak/stress.cpp: a multi-threaded soak for every thread-safe strata resource, in the spirit of mimalloc's
// test/test-stress.c.
//
// Each round starts THREADS threads that allocate, free, resize and hand objects to each other through a shared
// array of transfer slots (one atomic exchange each), then exit; what is left in the slots is freed by the next
// rounds' threads and, in part, by the main thread between rounds. Now and then a thread hands over a whole batch of
// objects of one size, made back to back, which the receiver frees in that order (the stream cross-thread free
// batching is built for). Sizes are mostly small, some mid, rarely above the resource's own large threshold; each
// resource runs a few option sets (small chunks or blocks that come and go, purge at once, capped pools, one hot size
// class, recording upstreams), one after the other. Every object is patterned when allocated (a cookie
// derived from its address, size and the run's seed, over the whole block, or head, tail and one word per page for
// large ones) and checked before every free, resize and hand-over: a mismatch aborts at once with the resource,
// object, offset and bytes. Between rounds (no thread running) the resource's statistics are compared with what the
// harness knows is live and with its own count of allocations and frees, and check_invariants() walks it. At the end
// of each resource instance everything is freed, the statistics must show nothing live, trim(), and the instance is
// destroyed (over a recording upstream: nothing may be left upstream). strata's error handler aborts on any report.
//
//   strata_soak [THREADS] [SCALE] [ITER] [--threads=N] [--scale=N] [--iter=N] [--seconds=S] [--resource=NAME[/CONFIG]]
//               [--seed=N] [--ctest] [--verbose] [--list]
//
// Environment: SOAK_THREADS, SOAK_SCALE, SOAK_ITER, SOAK_SECONDS, SOAK_RESOURCE, SOAK_SEED (flags win);
// STRATA_TEST_SCALE multiplies ITER (as for the other stress tests).
// Output: one line per resource ("<name>: threads T, seconds S, operations N, ops/s R, ok"), then
// "soak: N passed, M failed". Exit status 0 only when nothing failed.
#include <strata/bitmap_resource.hpp>
#include <strata/error.hpp>
#include <strata/fixed_pool_resource.hpp>
#include <strata/free_list_resource.hpp>
#include <strata/page_resource.hpp>
#include <strata/resource.hpp>
#include <strata/strata.h>
#include <strata/testing.hpp>
#include <strata/thread_cache_resource.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#if defined(__SANITIZE_THREAD__)
#define SOAK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SOAK_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define SOAK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SOAK_ASAN 1
#endif
#endif

namespace {

using clock_type = std::chrono::steady_clock;

// ---- parameters ----------------------------------------------------------------------------------------------------

struct parameters {
  unsigned threads = 32;  // threads per round
  unsigned scale = 10;    // load per thread: 100 * scale * (tid % 8 + 1) allocations (as test-stress)
  unsigned iter = 10;     // rounds per resource instance (a new instance after each ITER rounds with --seconds)
  double seconds = 0;     // > 0: per resource, keep running rounds until this much time has passed
  std::uint64_t seed = 0x5eed5eed2024ull;
  std::string resource = "all";  // NAME, NAME/CONFIG, comma-separated list, or all
  bool verbose = false;
};
parameters g_params;
std::string g_command_line;  // to print how to reproduce a failure

// ---- randomness (deterministic: each thread's stream comes from the seed, the config, the round and its id) --------

std::uint64_t mix64(std::uint64_t x) noexcept {  // splitmix64's finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

struct rng {
  std::uint64_t state;
  explicit rng(std::uint64_t seed) noexcept : state(mix64(seed ^ 0x9e3779b97f4a7c15ull)) {}
  std::uint64_t next() noexcept {
    state += 0x9e3779b97f4a7c15ull;
    return mix64(state);
  }
  std::size_t below(std::size_t n) noexcept { return n == 0 ? 0 : static_cast<std::size_t>(next() % n); }
  bool percent(unsigned p) noexcept { return next() % 100 < p; }
  bool one_in(unsigned n) noexcept { return next() % n == 0; }
  // Log-uniform in [lo, hi]: a power-of-two bucket at random, then a size in it, so small sizes are common and every
  // size can come up.
  std::size_t log_uniform(std::size_t lo, std::size_t hi) noexcept {
    if (hi <= lo) return lo;
    const unsigned e_lo = lo == 0 ? 0 : 63u - static_cast<unsigned>(__builtin_clzll(lo));
    const unsigned e_hi = 63u - static_cast<unsigned>(__builtin_clzll(hi));
    const unsigned e = e_lo + static_cast<unsigned>(below(e_hi - e_lo + 1));
    const std::size_t b_lo = std::max(lo, std::size_t{1} << e);
    const std::size_t b_hi = std::min(hi, (std::size_t{2} << e) - 1);
    return b_lo + below(b_hi - b_lo + 1);
  }
};

// ---- failure reporting ---------------------------------------------------------------------------------------------

std::atomic<const char*> g_current{"(no resource yet)"};  // "resource/config" being soaked
char g_current_name[2][128];                               // its text (two buffers, written between runs)
void set_current(const std::string& alias, const std::string& label) {
  static unsigned flip = 0;
  char* buffer = g_current_name[flip ^= 1];
  std::snprintf(buffer, sizeof g_current_name[0], "%s/%s", alias.c_str(), label.c_str());
  g_current.store(buffer);
}

// What the calling thread is doing with the resource now, for the failure message.
struct operation {
  const char* what = nullptr;
  const void* p = nullptr;
  std::size_t size = 0, align = 0, new_size = 0;
  int thread = -1;  // -1: the main thread
  unsigned round = 0;
};
thread_local operation t_op;

void note_op(const char* what, const void* p, std::size_t size, std::size_t align, std::size_t new_size = 0) noexcept {
  t_op.what = what;
  t_op.p = p;
  t_op.size = size;
  t_op.align = align;
  t_op.new_size = new_size;
}

void print_reproduce() {
  std::fflush(stdout);
  std::fprintf(stderr,
               "soak: reproduce with: %s --resource=%s --threads=%u --scale=%u --iter=%u --seed=%" PRIu64 "%s\n",
               g_command_line.c_str(), g_current.load(), g_params.threads, g_params.scale, g_params.iter, g_params.seed,
               g_params.seconds > 0 ? (" --seconds=" + std::to_string(g_params.seconds)).c_str() : "");
}

[[noreturn]] __attribute__((format(printf, 1, 2))) void die(const char* format, ...) {
  char message[2048];
  va_list args;
  va_start(args, format);
  std::vsnprintf(message, sizeof message, format, args);
  va_end(args);
  std::fprintf(stderr, "soak: FAILED: %s: %s\n", g_current.load(), message);
  if (t_op.what != nullptr) {
    char who[32] = "the main thread";
    if (t_op.thread >= 0) std::snprintf(who, sizeof who, "worker %d", t_op.thread);
    std::fprintf(stderr, "soak: the failing thread (%s, round %u) was in %s(%p, size %zu, alignment %zu%s", who,
                 t_op.round, t_op.what, t_op.p, t_op.size, t_op.align, t_op.align == 0 ? ": C plain" : "");
    if (t_op.new_size != 0) std::fprintf(stderr, ", new size %zu", t_op.new_size);
    std::fprintf(stderr, ")\n");
  }
  print_reproduce();
  std::fflush(stderr);
  std::abort();
}

// Any report from strata is a failure: a correct program gets none.
void on_strata_error(const strata::error_info& info) {
  char message[1024];
  strata::format_error(info, message, sizeof message);
  die("strata reported: %s", message);
}

// ---- objects and their pattern -------------------------------------------------------------------------------------

// One object: where, how large, its alignment (0: the C heap's plain alignment), and the seed of its pattern.
struct object {
  unsigned char* p = nullptr;
  std::size_t size = 0;
  std::size_t align = 0;
  std::uint64_t seed = 0;
  [[nodiscard]] bool empty() const noexcept { return p == nullptr; }
};

constexpr std::size_t full_limit = 16384;  // objects up to this size are patterned whole
constexpr std::size_t edge = 1024;         // larger ones: head and tail of this size, and one word per page
constexpr std::size_t page_stride = 4096;

// The pattern word at 8-byte index i: depends on the seed and the offset only, so a block moved by reallocate keeps
// the same values in its first bytes.
std::uint64_t pattern_word(std::uint64_t seed, std::size_t i) noexcept {
  return mix64(seed + 0xd1b54a32d192ed03ull * (static_cast<std::uint64_t>(i) + 1));
}
unsigned char pattern_byte(std::uint64_t seed, std::size_t k) noexcept {
  return static_cast<unsigned char>(pattern_word(seed, k / 8) >> (8 * (k % 8)));
}

void fill_range(unsigned char* p, std::uint64_t seed, std::size_t a, std::size_t b) noexcept {
  std::size_t k = a;
  while (k < b && k % 8 != 0) p[k] = pattern_byte(seed, k), ++k;
  for (; k + 8 <= b; k += 8) {
    const std::uint64_t w = pattern_word(seed, k / 8);
    std::memcpy(p + k, &w, 8);
  }
  for (; k < b; ++k) p[k] = pattern_byte(seed, k);
}

// The first offset in [a, b) whose byte differs from the pattern, or b.
std::size_t check_range(const unsigned char* p, std::uint64_t seed, std::size_t a, std::size_t b) noexcept {
  std::size_t k = a;
  while (k < b && k % 8 != 0) {
    if (p[k] != pattern_byte(seed, k)) return k;
    ++k;
  }
  for (; k + 8 <= b; k += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + k, 8);
    if (w != pattern_word(seed, k / 8))
      for (std::size_t j = k;; ++j)
        if (p[j] != pattern_byte(seed, j)) return j;
  }
  for (; k < b; ++k)
    if (p[k] != pattern_byte(seed, k)) return k;
  return b;
}

// Calls f(a, b) for each patterned range of an object of `size` bytes.
template <class F>
void for_each_region(std::size_t size, F&& f) {
  if (size <= full_limit) {
    f(std::size_t{0}, size);
    return;
  }
  f(std::size_t{0}, edge);
  for (std::size_t k = page_stride; k + 8 <= size - edge; k += page_stride) f(k, k + 8);
  f(size - edge, size);
}

void fill(const object& o) noexcept {
  for_each_region(o.size, [&](std::size_t a, std::size_t b) { fill_range(o.p, o.seed, a, b); });
}

// Checks the pattern of `o` (only its first `limit` bytes: what a resize or reallocate must keep) and aborts with the
// details on a mismatch. `p` is where the bytes are now (after a move, not o.p).
void verify(const object& o, const unsigned char* p, std::size_t limit, const char* when) {
  for_each_region(o.size, [&](std::size_t a, std::size_t b) {
    b = std::min(b, limit);
    if (a >= b) return;
    const std::size_t bad = check_range(p, o.seed, a, b);
    if (bad == b) return;
    std::size_t count = 0, last = bad;
    for (std::size_t k = bad; k < b; ++k)
      if (p[k] != pattern_byte(o.seed, k)) ++count, last = k;
    char expected[64] = "", found[64] = "";
    for (std::size_t k = bad, n = 0; k < b && n < 16; ++k, ++n) {
      std::snprintf(expected + 3 * n, 4, "%02x ", pattern_byte(o.seed, k));
      std::snprintf(found + 3 * n, 4, "%02x ", p[k]);
    }
    t_op.what = nullptr;  // `when` says what was going on
    die("memory corruption %s: block %p (size %zu, alignment %zu, pattern seed %016" PRIx64
        ") differs from its pattern at byte offset %zu (address %p): %zu of the %zu bytes checked in [%zu, %zu) "
        "differ, the last at offset %zu; expected %sfound %s",
        when, static_cast<const void*>(p), o.size, o.align, o.seed, bad, static_cast<const void*>(p + bad), count,
        b - a, a, b, last, expected, found);
  });
}

// ---- subjects: one resource instance behind a common face ----------------------------------------------------------

// How a subject's requests are spread: mostly small, some mid, rarely large (above the resource's own threshold, so
// that its upstream path runs). Alignment: mostly `plain`, sometimes smaller, rarely larger (up to 64 KiB).
struct size_profile {
  std::size_t small_max;
  std::size_t mid_max;
  std::size_t large_min;
  std::size_t large_max;
  unsigned mid_per_mille = 40;
  unsigned large_per_10k = 15;
  std::size_t plain = alignof(std::max_align_t);
  // Nonzero: nine small requests in ten are of this size (one hot class: its blocks fill, empty and go back while
  // other threads free into them).
  std::size_t one_size = 0;
};

std::size_t large_span(std::size_t threshold) {
  return std::min(std::max(threshold, std::size_t{64} << 10), std::size_t{512} << 10);
}

class subject {
 public:
  explicit subject(std::string label) : label_(std::move(label)) {}
  subject(const subject&) = delete;
  subject& operator=(const subject&) = delete;
  virtual ~subject() = default;

  [[nodiscard]] const std::string& label() const noexcept { return label_; }
  [[nodiscard]] const size_profile& sizes() const noexcept { return sizes_; }
  // A capped pool: std::bad_alloc is an expected answer.
  [[nodiscard]] bool may_fail() const noexcept { return may_fail_; }
  // trim() may be called by a worker while others run.
  [[nodiscard]] bool concurrent_trim() const noexcept { return concurrent_trim_; }
  // Divides the load per thread (page_resource: one mapping per object).
  [[nodiscard]] unsigned load_divisor() const noexcept { return load_divisor_; }

  virtual std::size_t pick_align(rng& r) {
    const std::uint64_t k = r.next() % 1000;
    if (k < 850) return sizes_.plain;
    if (k < 950) return std::size_t{1} << r.below(4);                          // 1, 2, 4, 8
    if (k < 999) return std::size_t{32} << r.below(8);                         // 32 .. 4096
    return std::size_t{8192} << r.below(4);                                    // 8 KiB .. 64 KiB
  }
  // nullptr when the request failed (std::bad_alloc); the failure is counted by the caller.
  virtual void* allocate(std::size_t size, std::size_t align) = 0;
  virtual void deallocate(void* p, std::size_t size, std::size_t align) = 0;
  // A block of new_size with the first min(old, new) bytes of p; p itself when done in place; nullptr when it failed
  // (p unchanged).
  virtual void* reallocate(void* p, std::size_t old_size, std::size_t new_size, std::size_t align) = 0;
  virtual bool resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t align) = 0;
  // The alignment a block of (size, align) must have.
  [[nodiscard]] virtual std::size_t required_alignment(std::size_t, std::size_t align) const { return align; }
  // What stats().bytes_in_use counts for a live block of (size, align).
  [[nodiscard]] virtual std::size_t counted(std::size_t size, std::size_t) const { return size; }
  [[nodiscard]] virtual strata::resource_stats stats() const = 0;
  virtual bool check() = 0;
  virtual void trim() = 0;
  // Whether blocks of this alignment can be resized and reallocated (the C API: plain blocks only).
  [[nodiscard]] virtual bool can_resize(std::size_t) const { return true; }
  // Something a worker may do now and then (hand its thread cache back).
  virtual void thread_hook() {}
  // Also free blocks without their size, now and then (the C heap).
  virtual bool free_unsized(void*, std::size_t, std::size_t) { return false; }
  // Trim, destroy and check that nothing was left behind; returns what went wrong, or "".
  virtual std::string finish() = 0;

 protected:
  std::string label_;
  size_profile sizes_{};
  bool may_fail_ = false;
  bool concurrent_trim_ = false;
  unsigned load_divisor_ = 1;
};

enum class upstream_kind { pages, recording, new_delete };

const char* upstream_name(upstream_kind u) {
  switch (u) {
    case upstream_kind::pages: return "pages";
    case upstream_kind::recording: return "recording(pages)";
    case upstream_kind::new_delete: return "new_delete";
  }
  return "?";
}

// What stats().bytes_in_use counts for a block: round_size(bytes, alignment) where the resource has it (bitmap, free
// list, fixed pool, thread cache: class sizes, rounded blocks, whole blocks; the request itself upstream), else the
// request (page_resource, whose round_size is the span: it counts requested sizes).
template <class R>
auto counted_size(const R& r, std::size_t size, std::size_t align, int) -> decltype(r.round_size(size, align)) {
  return r.round_size(size, align);
}
template <class R>
std::size_t counted_size(const R&, std::size_t size, std::size_t, long) {
  return size;
}

template <class T>
auto has_trim(T& r, int) -> decltype(r.trim(), std::true_type{}) {
  return {};
}
template <class T>
std::false_type has_trim(T&, long) {
  return {};
}

// A strata::resource (or a class derived from it) with an upstream of our choice.
template <class R>
class pmr_subject : public subject {
 public:
  using factory = std::function<std::unique_ptr<R>(std::pmr::memory_resource*)>;
  pmr_subject(const std::string& label, upstream_kind up, const factory& make)
      : subject(label + " over " + upstream_name(up)) {
    std::pmr::memory_resource* upstream = strata::default_page_resource();
    if (up == upstream_kind::recording) {
      recording_ = std::make_unique<strata::testing::recording_resource>(strata::default_page_resource());
      upstream = recording_.get();
    } else if (up == upstream_kind::new_delete) {
      upstream = std::pmr::new_delete_resource();
    }
    r_ = make(upstream);
  }
  R& res() noexcept { return *r_; }

  void* allocate(std::size_t size, std::size_t align) override {
    try {
      return r_->allocate(size, align);
    } catch (const std::bad_alloc&) {
      return nullptr;
    }
  }
  void deallocate(void* p, std::size_t size, std::size_t align) override { r_->deallocate(p, size, align); }
  void* reallocate(void* p, std::size_t old_size, std::size_t new_size, std::size_t align) override {
    try {
      return strata::reallocate(*r_, p, old_size, new_size, align);
    } catch (const std::bad_alloc&) {
      return nullptr;
    }
  }
  bool resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t align) override {
    return r_->resize(p, old_size, new_size, align);
  }
  [[nodiscard]] std::size_t counted(std::size_t size, std::size_t align) const override {
    return counted_size(*r_, size, align, 0);
  }
  [[nodiscard]] strata::resource_stats stats() const override { return r_->stats(); }
  bool check() override { return r_->check_invariants(); }
  void trim() override {
    if constexpr (decltype(has_trim(*r_, 0))::value) r_->trim();
  }
  std::string finish() override {
    std::string problem;
    if constexpr (!decltype(has_trim(*r_, 0))::value) {
      // No trim (the fixed pool): release() must give everything back, the capacity reservation too.
      r_->release();
      if (const auto s = r_->stats(); s.bytes_held != 0)
        problem = "release() left bytes_held " + std::to_string(s.bytes_held);
    }
    r_.reset();
    if (recording_ != nullptr) {
      if (recording_->live_blocks() != 0)
        problem += (problem.empty() ? "" : "; ") + std::string("the destructor left ") +
                   std::to_string(recording_->live_blocks()) + " blocks (" + std::to_string(recording_->live_bytes()) +
                   " bytes) upstream";
      if (recording_->mismatches() != 0)
        problem += (problem.empty() ? "" : "; ") + std::to_string(recording_->mismatches()) +
                   " upstream deallocations did not match a live block";
      recording_.reset();
    }
    return problem;
  }

 protected:
  std::unique_ptr<strata::testing::recording_resource> recording_;  // declared first: destroyed after r_
  std::unique_ptr<R> r_;
};

// ---- the subjects per resource -------------------------------------------------------------------------------------

class bitmap_subject final : public pmr_subject<strata::synchronized_bitmap_resource> {
 public:
  bitmap_subject(const std::string& label, upstream_kind up, const strata::bitmap_options& o, bool trim_while_running,
                 std::size_t one_size)
      : pmr_subject(label, up, [o](std::pmr::memory_resource* u) {
          return std::make_unique<strata::synchronized_bitmap_resource>(o, u);
        }) {
    const std::size_t t = r_->max_small_size();
    sizes_ = size_profile{std::min<std::size_t>(512, t), t, t + 1, t + large_span(t)};
    sizes_.one_size = one_size;
    concurrent_trim_ = trim_while_running;
  }
};

class free_list_subject final : public pmr_subject<strata::synchronized_free_list_resource> {
 public:
  free_list_subject(const std::string& label, upstream_kind up, const strata::free_list_options& o,
                    bool trim_while_running)
      : pmr_subject(label, up, [o](std::pmr::memory_resource* u) {
          return std::make_unique<strata::synchronized_free_list_resource>(o, u);
        }) {
    const std::size_t t = r_->large_threshold();
    sizes_ = size_profile{std::min<std::size_t>(256, t), t, t + 1, t + large_span(t)};
    // O(n) fits walk every free block: fewer mid-size holes keep a round's length sane with many threads.
    if (o.policy != strata::fit_policy::segregated) sizes_.mid_per_mille = 20;
    concurrent_trim_ = trim_while_running;
  }
};

class fixed_pool_subject final : public pmr_subject<strata::synchronized_fixed_pool_resource> {
 public:
  fixed_pool_subject(const std::string& label, upstream_kind up, std::size_t block, const strata::fixed_pool_options& o)
      : pmr_subject(label, up, [block, o](std::pmr::memory_resource* u) {
          return std::make_unique<strata::synchronized_fixed_pool_resource>(block, o, u);
        }) {
    // Mostly one block; some runs of blocks (or, forwarding, upstream requests); rarely more than a chunk holds.
    const std::size_t b = r_->block_size(), chunk = r_->chunk_size();
    sizes_ = size_profile{b, std::min(16 * b, chunk / 4), chunk + 1, chunk + (std::size_t{64} << 10)};
    sizes_.large_per_10k = 5;
    sizes_.plain = r_->block_alignment();  // as a program would ask: allocate(sizeof(T), alignof(T))
    may_fail_ = o.max_bytes != 0;
    if (b >= 1024) load_divisor_ = 2;  // small requests take a whole block each: half the load, half the memory
  }
};

class thread_cache_subject final : public pmr_subject<strata::thread_cache_resource> {
 public:
  thread_cache_subject(const std::string& label, upstream_kind up, const strata::thread_cache_options& o,
                       bool trim_while_running, std::size_t one_size)
      : pmr_subject(label, up, [o](std::pmr::memory_resource* u) {
          return std::make_unique<strata::thread_cache_resource>(o, u);
        }) {
    const std::size_t small = r_->max_size(strata::cache_tier::thread);
    const std::size_t shared = r_->max_size(strata::cache_tier::shared);
    sizes_ = size_profile{std::min<std::size_t>(512, small), shared, shared + 1, shared + large_span(shared)};
    sizes_.one_size = one_size;
    concurrent_trim_ = trim_while_running;
  }
  void thread_hook() override { r_->release_thread_cache(); }
};

class page_subject final : public pmr_subject<strata::page_resource> {
 public:
  page_subject(const std::string& label, const strata::page_resource::options& o)
      : pmr_subject(label, upstream_kind::pages,
                    [o](std::pmr::memory_resource*) { return std::make_unique<strata::page_resource>(o); }) {
    // Every object is at least a page and a mapping of its own: a smaller load (the map count is limited).
    sizes_ = size_profile{4096, std::size_t{64} << 10, std::size_t{1} << 20, std::size_t{3} << 20};
    sizes_.large_per_10k = 10;
    concurrent_trim_ = true;
    load_divisor_ = 8;
  }
};

// The C API's default heap (process-wide, never destroyed), or a thread-cache handle made through the C API.
class c_subject final : public subject {
 public:
  // handle == nullptr: the default heap through strata_malloc & co. `o`: the options the heap or handle was made
  // with (a C++ twin with the same options answers the rounded size of aligned blocks, which the C API does not).
  c_subject(const std::string& label, strata_resource_t* handle, const strata::thread_cache_options& o)
      : subject(label), h_(handle), twin_(std::make_unique<strata::thread_cache_resource>(o)) {
    const std::size_t small = std::min<std::size_t>(512, twin_->max_size(strata::cache_tier::thread));
    const std::size_t shared = twin_->max_size(strata::cache_tier::shared);
    sizes_ = size_profile{small, shared, shared + 1, shared + large_span(shared)};
    sizes_.plain = 0;
    concurrent_trim_ = h_ == nullptr;
  }
  std::size_t pick_align(rng& r) override {
    const std::uint64_t k = r.next() % 1000;
    if (k < 900) return 0;  // plain: strata_malloc / strata_realloc / strata_free
    if (k < 999) return std::size_t{8} << r.below(10);  // 8 .. 4096: strata_malloc_aligned / strata_free_aligned
    return std::size_t{8192} << r.below(4);
  }
  [[nodiscard]] bool can_resize(std::size_t align) const override { return align == 0; }
  void* allocate(std::size_t size, std::size_t align) override {
    if (h_ == nullptr) return align == 0 ? strata_malloc(size) : strata_malloc_aligned(size, align);
    return align == 0 ? strata_resource_malloc(h_, size) : strata_resource_malloc_aligned(h_, size, align);
  }
  void deallocate(void* p, std::size_t size, std::size_t align) override {
    if (h_ == nullptr) {
      if (align == 0) strata_free(p, size);
      else strata_free_aligned(p, size, align);
    } else {
      if (align == 0) strata_resource_free(h_, p, size);
      else strata_resource_free_aligned(h_, p, size, align);
    }
  }
  void* reallocate(void* p, std::size_t old_size, std::size_t new_size, std::size_t) override {
    return h_ == nullptr ? strata_realloc(p, old_size, new_size) : strata_resource_realloc(h_, p, old_size, new_size);
  }
  bool resize(void* p, std::size_t old_size, std::size_t new_size, std::size_t) override {
    return h_ == nullptr ? strata_resize(p, old_size, new_size) : strata_resource_resize(h_, p, old_size, new_size);
  }
  [[nodiscard]] std::size_t required_alignment(std::size_t size, std::size_t align) const override {
    return align != 0 ? align : size >= 16 ? 16 : 8;
  }
  [[nodiscard]] std::size_t counted(std::size_t size, std::size_t align) const override {
    // The default heap and thread-cache handles count each block at its rounded size.
    if (align == 0) {
      const std::size_t n = h_ == nullptr ? strata_round_size(size) : strata_resource_round_size(h_, size);
      if (n != twin_->round_size(size, size >= 16 ? 16 : 8))
        die("strata_round_size(%zu) is %zu, a thread_cache_resource with the same options says %zu", size, n,
            twin_->round_size(size, size >= 16 ? 16 : 8));
      return n;
    }
    return twin_->round_size(size, align);
  }
  [[nodiscard]] strata::resource_stats stats() const override {
    strata_stats_t s{};
    const bool ok = h_ == nullptr ? strata_stats(&s) : strata_resource_stats(h_, &s);
    if (!ok) die("strata_stats failed");
    strata::resource_stats r;
    r.bytes_in_use = s.bytes_in_use;
    r.peak_bytes_in_use = s.peak_bytes_in_use;
    r.bytes_held = s.bytes_held;
    r.bytes_resident = s.bytes_resident;
    r.allocations = s.allocations;
    r.deallocations = s.deallocations;
    r.failed_allocations = s.failed_allocations;
    r.upstream_allocations = s.upstream_allocations;
    r.upstream_deallocations = s.upstream_deallocations;
    return r;
  }
  bool check() override { return strata_resource_check(h_ == nullptr ? strata_default_resource() : h_); }
  void trim() override {
    if (h_ == nullptr) strata_trim();
  }
  void thread_hook() override {
    if (h_ == nullptr) strata_thread_cleanup();
    else strata_resource_thread_cleanup(h_);
  }
  bool free_unsized(void* p, std::size_t size, std::size_t align) override {
    // The usable size is what the request rounded to (0 for a 0-byte request served upstream).
    const std::size_t usable = h_ == nullptr ? strata_usable_size(p) : strata_resource_usable_size(h_, p);
    if (usable != counted(size, align))
      die("strata_usable_size(%p) is %zu for a live block of %zu bytes (alignment %zu), which rounds to %zu", p, usable,
          size, align, counted(size, align));
    if (h_ == nullptr) strata_free_unsized(p);
    else strata_resource_free_unsized(h_, p);
    return true;
  }
  std::string finish() override {
    if (h_ != nullptr) strata_resource_destroy(h_);
    else strata_thread_cleanup();
    h_ = nullptr;
    return "";
  }

 private:
  strata_resource_t* h_;
  std::unique_ptr<strata::thread_cache_resource> twin_;
};

// ---- the catalogue -------------------------------------------------------------------------------------------------

struct config {
  std::string label;
  std::function<std::unique_ptr<subject>()> make;
};
struct resource_entry {
  std::string name;   // the class (or API) soaked
  std::string alias;  // short name for --resource
  std::vector<config> configs;
};

std::vector<resource_entry> make_catalogue() {
  using up = upstream_kind;
  std::vector<resource_entry> all;
  constexpr std::size_t kib = 1024;

  {
    resource_entry e{"synchronized_bitmap_resource", "bitmap", {}};
    auto add = [&](const std::string& label, up u, strata::bitmap_options o, bool trim, std::size_t one_size = 0) {
      e.configs.push_back({label, [=] { return std::make_unique<bitmap_subject>(label, u, o, trim, one_size); }});
    };
    add("default", up::pages, {}, false);
    strata::bitmap_options small;  // 64 KiB blocks, none cached: blocks come and go all the time
    small.max_small_size = 1024;
    small.max_empty_blocks = 0;
    add("small-blocks", up::recording, small, true);
    strata::bitmap_options natural;
    natural.block_size = 256 * kib;
    natural.max_small_size = 8 * kib;
    natural.natural_alignment = true;
    natural.max_empty_blocks = 1;
    add("natural-256k", up::new_delete, natural, false);
    strata::bitmap_options hot;  // one hot class of 127 slots per block: blocks empty and go back all the time
    hot.max_small_size = 1024;
    hot.max_empty_blocks = 0;
    add("hot-class-512", up::pages, hot, false, 512);
    // Strict checks: every operation under the class lock, or the remote way.
    strata::bitmap_options strict = small;
    strict.checks = strata::check_mode::strict;
    add("strict-small-blocks", up::recording, strict, true);
    hot.checks = strata::check_mode::strict;
    add("strict-hot-class-512", up::pages, hot, false, 512);
    all.push_back(std::move(e));
  }
  {
    resource_entry e{"synchronized_free_list_resource", "free_list", {}};
    auto add = [&](const std::string& label, up u, strata::free_list_options o, bool trim) {
      e.configs.push_back({label, [=] { return std::make_unique<free_list_subject>(label, u, o, trim); }});
    };
    add("segregated", up::pages, {}, false);
    strata::free_list_options o;
    o.policy = strata::fit_policy::first_fit;
    o.chunk_size = 64 * kib;  // chunks come and go; large requests from 16 KiB
    o.max_empty_chunks = 0;
    o.purge_threshold = 4 * kib;
    o.purge_delay = 0;  // purge at once
    o.huge_pages = false;
    add("first_fit-64k-purge", up::recording, o, true);
    o = {};
    o.policy = strata::fit_policy::next_fit;
    o.chunk_size = 256 * kib;
    o.purge_threshold = 16 * kib;
    o.purge_delay = 64;
    o.huge_pages = false;
    add("next_fit-256k-purge", up::pages, o, false);
    o = {};
    o.policy = strata::fit_policy::best_fit;
    o.chunk_size = 128 * kib;
    o.max_empty_chunks = 2;
    add("best_fit-128k", up::new_delete, o, false);
    o = {};
    o.chunk_size = 64 * kib;
    o.max_empty_chunks = 0;
    o.purge_threshold = 4 * kib;
    o.purge_delay = 0;
    o.huge_pages = false;
    add("segregated-64k-purge", up::recording, o, true);
    all.push_back(std::move(e));
  }
  {
    resource_entry e{"synchronized_fixed_pool_resource", "fixed_pool", {}};
    auto add = [&](const std::string& label, up u, std::size_t block, strata::fixed_pool_options o) {
      e.configs.push_back({label, [=] { return std::make_unique<fixed_pool_subject>(label, u, block, o); }});
    };
    add("24-uncapped", up::pages, 24, {});
    strata::fixed_pool_options o;
    o.max_bytes = 8u << 20;
    add("256-capped-8m", up::pages, 256, o);
    o = {};
    o.chunk_size = 64 * kib;
    o.max_empty_chunks = 0;
    o.huge_pages = false;
    add("64-small-chunks", up::recording, 64, o);
    o = {};
    o.max_bytes = 2048 * kib;  // full much of the time: the cap's bad_alloc path
    o.chunk_size = 64 * kib;
    o.forward_large = true;
    o.huge_pages = false;
    add("1000-capped-2m-forward", up::recording, 1000, o);
    o = {};
    o.forward_large = true;
    o.huge_pages = false;
    add("4096-uncapped-forward", up::new_delete, 4096, o);
    all.push_back(std::move(e));
  }
  {
    resource_entry e{"thread_cache_resource", "thread_cache", {}};
    auto add = [&](const std::string& label, up u, strata::thread_cache_options o, bool trim,
                   std::size_t one_size = 0) {
      e.configs.push_back(
          {label, [=] { return std::make_unique<thread_cache_subject>(label, u, o, trim, one_size); }});
    };
    add("default", up::pages, {}, false);
    strata::thread_cache_options o;
    o.max_small_size = 1024;
    o.max_shared_size = 16 * kib;
    o.max_empty_blocks = 0;
    add("small-tiers", up::recording, o, true);
    o = {};
    o.max_small_size = 256;
    o.max_shared_size = 64 * kib;
    o.max_empty_blocks = 2;
    add("mid-tiers", up::new_delete, o, false);
    o = {};
    o.max_empty_blocks = 0;
    add("hot-class-1024", up::pages, o, false, 1024);
    o = {};
    o.max_small_size = 1024;
    o.max_shared_size = 16 * kib;
    o.max_empty_blocks = 0;
    o.checks = strata::check_mode::strict;
    add("strict-small-tiers", up::recording, o, true);
    o = {};
    o.max_empty_blocks = 0;
    o.checks = strata::check_mode::strict;
    add("strict-hot-class-256", up::pages, o, false, 256);
    all.push_back(std::move(e));
  }
  {
    resource_entry e{"strata_malloc (C API default heap)", "c_heap", {}};
    e.configs.push_back({"default-heap", [] {
                           return std::make_unique<c_subject>("default-heap", nullptr, strata::thread_cache_options{});
                         }});
    e.configs.push_back({"thread-cache-handle", [] {
                           strata_thread_cache_options_t o;
                           strata_thread_cache_options_init(&o);
                           o.max_small_size = 256;
                           o.max_shared_size = 16 * 1024;
                           o.max_empty_blocks = 0;
                           strata_resource_t* h = strata_thread_cache_create(&o);
                           if (h == nullptr) die("strata_thread_cache_create failed");
                           strata::thread_cache_options twin;
                           twin.max_small_size = o.max_small_size;
                           twin.max_shared_size = o.max_shared_size;
                           twin.max_empty_blocks = o.max_empty_blocks;
                           return std::make_unique<c_subject>("thread-cache-handle", h, twin);
                         }});
    e.configs.push_back({"strict-thread-cache-handle", [] {
                           strata_thread_cache_options_t o;
                           strata_thread_cache_options_init(&o);
                           o.checks = STRATA_CHECKS_STRICT;
                           strata_resource_t* h = strata_thread_cache_create(&o);
                           if (h == nullptr) die("strata_thread_cache_create failed");
                           strata::thread_cache_options twin;
                           twin.checks = strata::check_mode::strict;
                           return std::make_unique<c_subject>("strict-thread-cache-handle", h, twin);
                         }});
    all.push_back(std::move(e));
  }
  {
    resource_entry e{"page_resource", "page", {}};
    e.configs.push_back(
        {"default", [] { return std::make_unique<page_subject>("default", strata::page_resource::options{}); }});
    strata::page_resource::options o;
    o.max_cached_bytes = 1u << 20;
    o.max_cached_spans = 8;
    o.max_resident_cached_bytes = 256 * 1024;
    o.purge_delay_ms = 0;
    o.purge = strata::page_resource::purge_mode::lazy;
    e.configs.push_back({"small-cache-lazy", [o] { return std::make_unique<page_subject>("small-cache-lazy", o); }});
    all.push_back(std::move(e));
  }
  return all;
}

// ---- one round: THREADS threads over one subject -------------------------------------------------------------------

constexpr std::size_t transfer_slots = 1024;  // single objects, as test-stress's transfer array
constexpr std::size_t batch_slots = 64;        // runs of objects made one after the other, freed in that order

// A run of objects of one size, allocated back to back by one thread and freed in the same order by another: the
// stream of frees into the same bitmap words that cross-thread free batching is made for.
struct batch {
  std::vector<object> items;
};

struct counts {
  std::uint64_t ops = 0, allocations = 0, deallocations = 0, failed = 0, unexpected_failures = 0;
  void add(const counts& o) noexcept {
    ops += o.ops;
    allocations += o.allocations;
    deallocations += o.deallocations;
    failed += o.failed;
    unexpected_failures += o.unexpected_failures;
  }
};

struct instance_state {
  subject* s;
  std::unique_ptr<std::atomic<object*>[]> transfer{new std::atomic<object*>[transfer_slots]};
  std::unique_ptr<std::atomic<batch*>[]> batches{new std::atomic<batch*>[batch_slots]};
  std::uint64_t seed;
  clock_type::time_point deadline = clock_type::time_point::max();
  std::atomic<bool> stop{false};
  std::mutex totals_lock;
  counts totals;
  // Broken contracts that corrupt nothing (a misaligned block, a stats() snapshot out of bounds): how many, and the
  // first one.
  std::uint64_t violations = 0;
  std::string first_violation;
  void note_violation(const char* what) {
    std::lock_guard<std::mutex> g(totals_lock);
    if (violations++ == 0) first_violation = what;
  }
  instance_state(subject* subj, std::uint64_t sd) : s(subj), seed(sd) {
    for (std::size_t i = 0; i < transfer_slots; ++i) transfer[i].store(nullptr, std::memory_order_relaxed);
    for (std::size_t i = 0; i < batch_slots; ++i) batches[i].store(nullptr, std::memory_order_relaxed);
  }
};

class worker {
 public:
  worker(instance_state& st, unsigned round, unsigned tid)
      : st_(st), s_(*st.s), r_(st.seed ^ mix64((std::uint64_t{round} << 32) | tid)), tid_(tid) {
    t_op.thread = static_cast<int>(tid);
    t_op.round = round;
  }

  void run() {
    std::size_t allocs = std::max<std::size_t>(
        1, 100u * g_params.scale * (tid_ % 8 + 1) / s_.load_divisor());  // some threads do more (as test-stress)
    std::size_t retain = allocs / 2;
    data_.reserve(allocs);
    retained_.reserve(retain);
    std::uint64_t step = 0;
    while (allocs > 0 || retain > 0) {
      if ((++step & 255) == 0 && (st_.stop.load(std::memory_order_relaxed) || clock_type::now() >= st_.deadline)) {
        st_.stop.store(true, std::memory_order_relaxed);
        break;
      }
      if (retain == 0 || (r_.percent(50) && allocs > 0)) {
        --allocs;
        data_.push_back(allocate());  // 50%+: allocate
      } else {
        retained_.push_back(allocate());  // kept to the thread's end
        --retain;
      }
      if (r_.percent(66) && !data_.empty()) release(data_[r_.below(data_.size())], "before deallocate");
      if (r_.percent(25) && !data_.empty()) exchange(data_[r_.below(data_.size())]);
      if (r_.percent(5) && !data_.empty()) resize(data_[r_.below(data_.size())]);
      if (r_.one_in(64)) exchange_batch();
      if (r_.one_in(4096)) {
        note_op("thread_hook", nullptr, 0, 0);
        s_.thread_hook();
        ++c_.ops;
      }
      if (s_.concurrent_trim() && r_.one_in(8192)) {
        note_op("trim", nullptr, 0, 0);
        s_.trim();
        ++c_.ops;
      }
      if (tid_ == 0 && (step & 511) == 0) {
        note_op("stats", nullptr, 0, 0);
        const auto s = s_.stats();  // from any thread, any time
        if (s.bytes_resident > s.bytes_held) {
          char b[160];
          std::snprintf(b, sizeof b, "stats() from a worker: bytes_resident %zu above bytes_held %zu", s.bytes_resident,
                        s.bytes_held);
          st_.note_violation(b);
        }
        ++c_.ops;
      }
    }
    for (object& o : retained_) release(o, "before deallocate (thread end)");
    for (object& o : data_) release(o, "before deallocate (thread end)");
    for (object* d : spare_) delete d;
    std::lock_guard<std::mutex> g(st_.totals_lock);
    st_.totals.add(c_);
  }

 private:
  std::size_t pick_size() {
    const size_profile& z = s_.sizes();
    const std::uint64_t k = r_.next() % 10000;
    if (k < z.large_per_10k) return z.large_min + r_.below(z.large_max - z.large_min + 1);
    if (k < z.large_per_10k + 10 * z.mid_per_mille) return r_.log_uniform(z.small_max + 1, z.mid_max);
    if (k % 97 == 0) return 0;  // now and then a zero-size request
    if (z.one_size != 0 && k % 10 != 0) return z.one_size;
    return r_.log_uniform(1, z.small_max);
  }

  // A failed request: expected from a capped pool (which then gets some room back: a few of this thread's objects
  // are freed, as a program at its cap would), a failure otherwise.
  void counted_failure() {
    ++c_.failed;
    if (!s_.may_fail()) {
      ++c_.unexpected_failures;
      return;
    }
    for (int i = 0; i < 4; ++i) {
      std::vector<object>& v = retained_.empty() || r_.percent(25) ? data_ : retained_;
      if (!v.empty()) release(v[r_.below(v.size())], "before deallocate (room for a capped pool)");
    }
  }

  // A misaligned block is a broken contract but no corruption: counted and reported at the end of the instance, so
  // that the soak goes on looking for the rest.
  void check_alignment(const object& o, const char* what) const {
    const std::size_t a = s_.required_alignment(o.size, o.align);
    if (reinterpret_cast<std::uintptr_t>(o.p) % a == 0) return;
    char b[200];
    std::snprintf(b, sizeof b, "%s(%zu bytes, alignment %zu) returned %p, not aligned to %zu", what, o.size, o.align,
                  static_cast<void*>(o.p), a);
    st_.note_violation(b);
  }

  object allocate() {
    const std::size_t size = pick_size();  // (in this order: the draws make the run)
    return allocate(size, s_.pick_align(r_));
  }

  object allocate(std::size_t size, std::size_t align) {
    ++c_.ops;
    object o;
    o.size = size;
    o.align = align;
    note_op("allocate", nullptr, o.size, o.align);
    o.p = static_cast<unsigned char*>(s_.allocate(o.size, o.align));
    if (o.p == nullptr) {
      counted_failure();
      return object{};
    }
    ++c_.allocations;
    check_alignment(o, "allocate");
    o.seed = mix64(reinterpret_cast<std::uintptr_t>(o.p) ^ (std::uint64_t{o.size} << 20) ^ r_.next());
    fill(o);
    return o;
  }

  void release(object& o, const char* when) {
    if (o.empty()) return;
    ++c_.ops;
    verify(o, o.p, o.size, when);
    note_op("deallocate (or the unsized free)", o.p, o.size, o.align);
    // Now and then without the size, where the subject has such a free (the C heap).
    if (!(r_.one_in(64) && s_.free_unsized(o.p, o.size, o.align))) s_.deallocate(o.p, o.size, o.align);
    ++c_.deallocations;
    o = object{};
  }

  // Swaps the local object (or nothing) with a transfer slot (test-stress's "transfer"): the other thread frees it.
  void exchange(object& mine) {
    ++c_.ops;
    object* out = nullptr;
    if (!mine.empty()) {
      verify(mine, mine.p, mine.size, "before handing it to another thread");
      if (spare_.empty()) {
        out = new object(mine);
      } else {
        out = spare_.back();
        spare_.pop_back();
        *out = mine;
      }
    }
    object* in = st_.transfer[r_.below(transfer_slots)].exchange(out, std::memory_order_acq_rel);
    mine = object{};
    if (in != nullptr) {
      mine = *in;
      spare_.push_back(in);
      verify(mine, mine.p, mine.size, "after receiving it from another thread");
    }
  }

  // Makes a batch of 8 to 64 small objects of one size, swaps it with a batch slot, and frees what it got in the
  // order it was made.
  void exchange_batch() {
    std::size_t size = pick_size();
    if (size > s_.sizes().small_max) size = s_.sizes().small_max;
    auto* out = new batch;
    const std::size_t n = 8 + r_.below(57);
    out->items.reserve(n);
    for (std::size_t i = 0; i < n; ++i)
      if (object o = allocate(size, s_.sizes().plain); !o.empty()) out->items.push_back(o);
    ++c_.ops;
    batch* in = st_.batches[r_.below(batch_slots)].exchange(out, std::memory_order_acq_rel);
    if (in == nullptr) return;
    for (object& o : in->items) release(o, "before deallocate (received in a batch, freed in allocation order)");
    delete in;
  }

  void resize(object& o) {
    if (o.empty() || !s_.can_resize(o.align)) return;
    ++c_.ops;
    verify(o, o.p, o.size, "before resize");
    std::size_t n;
    switch (r_.below(4)) {
      case 0: n = o.size + 1 + r_.below(64); break;                   // grow a little: in place, often
      case 1: n = o.size / 2 + r_.below(o.size / 2 + 1); break;      // shrink
      default: n = pick_size(); break;
    }
    if (n == 0) n = 1;  // reallocate(..., 0) would free
    if (n == o.size) return;
    object moved = o;
    moved.size = n;
    if (r_.percent(30)) {  // in place or not at all
      note_op("resize", o.p, o.size, o.align, n);
      if (!s_.resize(o.p, o.size, n, o.align)) {
        verify(o, o.p, o.size, "after a resize that failed");
        return;
      }
    } else {
      note_op("reallocate", o.p, o.size, o.align, n);
      void* q = s_.reallocate(o.p, o.size, n, o.align);
      if (q == nullptr) {
        counted_failure();
        verify(o, o.p, o.size, "after a reallocate that failed");
        return;
      }
      moved.p = static_cast<unsigned char*>(q);
      if (moved.p != o.p) ++c_.allocations, ++c_.deallocations;
    }
    check_alignment(moved, "reallocate");
    char when[160];
    std::snprintf(when, sizeof when, "after resizing from %zu to %zu bytes (%s %p)", o.size, n,
                  moved.p == o.p ? "in place at" : "moved from", static_cast<void*>(o.p));
    verify(o, moved.p, std::min(o.size, n), when);  // what it kept: the old pattern, up to the smaller size
    fill(moved);  // same seed: the kept bytes get the same values; the rest is written
    o = moved;
  }

  instance_state& st_;
  subject& s_;
  rng r_;
  unsigned tid_;
  counts c_;
  std::vector<object> data_, retained_;
  std::vector<object*> spare_;  // transfer descriptors to reuse
};

// ---- one resource instance: ITER rounds, checks between them, and the end -------------------------------------------

struct instance_result {
  counts c;
  std::string problem;  // empty: ok
};

std::string describe(const strata::resource_stats& s) {
  char b[256];
  std::snprintf(b, sizeof b,
                "allocations %" PRIu64 ", deallocations %" PRIu64 ", failed %" PRIu64
                ", bytes_in_use %zu, bytes_held %zu",
                s.allocations, s.deallocations, s.failed_allocations, s.bytes_in_use, s.bytes_held);
  return b;
}

// Compares the statistics with what the harness knows (no thread running): counts since `base`, live blocks and bytes.
std::string compare_stats(const subject& s, const strata::resource_stats& base, const counts& c, std::uint64_t live,
                          std::size_t live_bytes, const char* when) {
  const strata::resource_stats now = s.stats();
  std::string bad;
  auto expect = [&](const char* what, std::uint64_t got, std::uint64_t want) {
    if (got == want) return;
    char b[200];
    std::snprintf(b, sizeof b, "%s%s is %" PRIu64 ", expected %" PRIu64, bad.empty() ? "" : "; ", what, got, want);
    bad += b;
  };
  expect("allocations", now.allocations - base.allocations, c.allocations);
  expect("deallocations", now.deallocations - base.deallocations, c.deallocations);
  expect("failed_allocations", now.failed_allocations - base.failed_allocations, c.failed);
  expect("live_allocations()", now.live_allocations() - base.live_allocations(), live);
  expect("bytes_in_use", now.bytes_in_use - base.bytes_in_use, live_bytes);
  if (bad.empty()) return bad;
  return std::string("statistics ") + when + ": " + bad + " (stats now: " + describe(now) + ")";
}

instance_result run_instance(const config& cfg, std::uint64_t seed, unsigned rounds, clock_type::time_point deadline) {
  instance_result res;
  std::unique_ptr<subject> s = cfg.make();
  const strata::resource_stats base = s->stats();
  instance_state st(s.get(), seed);
  st.deadline = deadline;
  rng main_rng(seed ^ 0x6d61696eull);
  counts& c = res.c;

  // Frees what is left in the slots (each with chance `percent`); returns the live objects and bytes that remain.
  auto drain = [&](unsigned percent, std::uint64_t& live, std::size_t& bytes) {
    live = 0;
    bytes = 0;
    for (std::size_t i = 0; i < batch_slots; ++i) {
      batch* b = st.batches[i].load(std::memory_order_acquire);
      if (b == nullptr) continue;
      if (main_rng.percent(percent)) {
        st.batches[i].store(nullptr, std::memory_order_relaxed);
        for (const object& o : b->items) {
          verify(o, o.p, o.size, "before deallocate (left in a batch slot, freed by the main thread)");
          note_op("deallocate", o.p, o.size, o.align);
          s->deallocate(o.p, o.size, o.align);
          ++c.deallocations;
          ++c.ops;
        }
        delete b;
      } else {
        for (const object& o : b->items) {
          ++live;
          bytes += s->counted(o.size, o.align);
        }
      }
    }
    for (std::size_t i = 0; i < transfer_slots; ++i) {
      object* o = st.transfer[i].load(std::memory_order_acquire);
      if (o == nullptr) continue;
      if (main_rng.percent(percent)) {
        st.transfer[i].store(nullptr, std::memory_order_relaxed);
        verify(*o, o->p, o->size, "before deallocate (left in a transfer slot, freed by the main thread)");
        note_op("deallocate", o->p, o->size, o->align);
        s->deallocate(o->p, o->size, o->align);
        ++c.deallocations;
        ++c.ops;
        delete o;
      } else {
        ++live;
        bytes += s->counted(o->size, o->align);
      }
    }
  };

  for (unsigned round = 0; round < rounds && res.problem.empty(); ++round) {
    t_op.round = round;
    if (round > 0 && clock_type::now() >= deadline) break;
    std::vector<std::thread> threads;
    threads.reserve(g_params.threads);
    for (unsigned t = 0; t < g_params.threads; ++t)
      threads.emplace_back([&st, round, t] { worker(st, round, t).run(); });
    for (auto& t : threads) t.join();
    {
      std::lock_guard<std::mutex> g(st.totals_lock);
      c.add(st.totals);
      st.totals = counts{};
    }
    const bool last = round + 1 == rounds || st.stop.load() || clock_type::now() >= deadline;
    std::uint64_t live;
    std::size_t bytes;
    drain(last ? 100 : 50, live, bytes);  // half the leftovers survive into the next round
    if (c.unexpected_failures != 0)
      res.problem = std::to_string(c.unexpected_failures) + " unexpected std::bad_alloc (or NULL) answers";
    if (st.violations != 0)
      res.problem += (res.problem.empty() ? "" : "; ") + std::to_string(st.violations) +
                     " broken contracts (a misaligned block, stats() out of bounds), the first: " + st.first_violation;
    if (res.problem.empty())
      res.problem = compare_stats(*s, base, c, live, bytes, ("after round " + std::to_string(round)).c_str());
    if (!s->check()) res.problem += "check_invariants() failed after round " + std::to_string(round);
    if (last) break;
  }
  std::uint64_t live;
  std::size_t bytes;
  drain(100, live, bytes);
  if (res.problem.empty()) res.problem = compare_stats(*s, base, c, 0, 0, "with every block freed");
  if (!s->check()) res.problem += "; check_invariants() failed with every block freed";
  s->trim();
  if (res.problem.empty()) res.problem = compare_stats(*s, base, c, 0, 0, "after trim()");
  if (!s->check()) res.problem += "; check_invariants() failed after trim()";
  if (std::string f = s->finish(); !f.empty()) res.problem += (res.problem.empty() ? "" : "; ") + f;
  return res;
}

// ---- driver --------------------------------------------------------------------------------------------------------

bool run_resource(const resource_entry& e, std::size_t index, const std::string& only_config) {
  std::vector<const config*> configs;
  for (const config& c : e.configs)
    if (only_config.empty() || c.label == only_config) configs.push_back(&c);
  if (configs.empty()) {
    std::printf("%s: no config named '%s'\n", e.name.c_str(), only_config.c_str());
    return false;
  }
  const auto t0 = clock_type::now();
  counts total;
  std::string problem;
  for (std::size_t k = 0; k < configs.size() && problem.empty(); ++k) {
    const config& cfg = *configs[k];
    set_current(e.alias, cfg.label);
    const auto c0 = clock_type::now();
    clock_type::time_point slice_end = clock_type::time_point::max();
    if (g_params.seconds > 0)
      slice_end = c0 + std::chrono::duration_cast<clock_type::duration>(
                           std::chrono::duration<double>(g_params.seconds / static_cast<double>(configs.size())));
    counts here;
    unsigned instances = 0;
    do {
      const std::uint64_t seed =
          mix64(g_params.seed ^ mix64((std::uint64_t{index} << 48) ^ (std::uint64_t{k} << 32) ^ instances));
      instance_result r = run_instance(cfg, seed, g_params.iter, slice_end);
      here.add(r.c);
      ++instances;
      if (!r.problem.empty()) problem = cfg.label + ": " + r.problem;
    } while (problem.empty() && g_params.seconds > 0 && clock_type::now() < slice_end);
    total.add(here);
    if (g_params.verbose) {
      const double secs = std::chrono::duration<double>(clock_type::now() - c0).count();
      std::printf("  %s/%s: %u instance(s), seconds %.1f, operations %" PRIu64
                  ", ops/s %.0f, failed allocations %" PRIu64 "\n",
                  e.alias.c_str(), cfg.label.c_str(), instances, secs, here.ops, static_cast<double>(here.ops) / secs,
                  here.failed);
      std::fflush(stdout);
    }
  }
  const double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
  std::printf("%s: threads %u, seconds %.1f, operations %" PRIu64 ", ops/s %.0f, %s%s\n", e.name.c_str(),
              g_params.threads, secs, total.ops, static_cast<double>(total.ops) / secs,
              problem.empty() ? "ok" : "FAILED: ", problem.c_str());
  if (!problem.empty()) print_reproduce();
  std::fflush(stdout);
  return problem.empty();
}

bool parse_unsigned(const char* s, unsigned long long& out) {
  if (s == nullptr || *s == '\0') return false;
  char* end = nullptr;
  out = std::strtoull(s, &end, 0);
  return end != nullptr && *end == '\0';
}

[[noreturn]] void usage(const char* bad) {
  std::fprintf(stderr,
               "strata_soak: bad argument '%s'\n"
               "usage: strata_soak [THREADS] [SCALE] [ITER] [--threads=N] [--scale=N] [--iter=N] [--seconds=S]\n"
               "                   [--resource=all|NAME[/CONFIG][,...]] [--seed=N] [--ctest] [--verbose] [--list]\n",
               bad);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  strata::set_error_handler(&on_strata_error);
  g_command_line = argv[0];

  // Environment first, flags override.
  unsigned long long v;
  if (parse_unsigned(std::getenv("SOAK_THREADS"), v) && v > 0) g_params.threads = static_cast<unsigned>(v);
  if (parse_unsigned(std::getenv("SOAK_SCALE"), v) && v > 0) g_params.scale = static_cast<unsigned>(v);
  if (parse_unsigned(std::getenv("SOAK_ITER"), v) && v > 0) g_params.iter = static_cast<unsigned>(v);
  if (parse_unsigned(std::getenv("SOAK_SEED"), v)) g_params.seed = v;
  if (const char* s = std::getenv("SOAK_SECONDS"); s != nullptr && *s != '\0') g_params.seconds = std::atof(s);
  if (const char* s = std::getenv("SOAK_RESOURCE"); s != nullptr && *s != '\0') g_params.resource = s;

  bool list = false;
  unsigned positional = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* flag) -> const char* {
      const std::size_t n = std::strlen(flag);
      return a.compare(0, n, flag) == 0 ? argv[i] + n : nullptr;
    };
    if (const char* x = value("--threads=")) {
      if (!parse_unsigned(x, v) || v == 0) usage(argv[i]);
      g_params.threads = static_cast<unsigned>(v);
    } else if (const char* x2 = value("--scale=")) {
      if (!parse_unsigned(x2, v) || v == 0) usage(argv[i]);
      g_params.scale = static_cast<unsigned>(v);
    } else if (const char* x3 = value("--iter=")) {
      if (!parse_unsigned(x3, v) || v == 0) usage(argv[i]);
      g_params.iter = static_cast<unsigned>(v);
    } else if (const char* x4 = value("--seed=")) {
      if (!parse_unsigned(x4, v)) usage(argv[i]);
      g_params.seed = v;
    } else if (const char* x5 = value("--seconds=")) {
      g_params.seconds = std::atof(x5);
    } else if (const char* x6 = value("--resource=")) {
      g_params.resource = x6;
    } else if (a == "--ctest") {
      // The small run registered with ctest: a few seconds per resource, smaller under the sanitizers.
      g_params.threads = 8;
      g_params.scale = 4;
      g_params.iter = 5;
      g_params.seconds = 0;
#if defined(SOAK_TSAN)
      g_params.scale = 1;  // ThreadSanitizer: ~10x slower, and delays injected at the publication points
      g_params.iter = 3;
#elif defined(SOAK_ASAN) || !defined(NDEBUG)
      g_params.scale = 1;  // AddressSanitizer or an unoptimised build
      g_params.iter = 4;
#endif
    } else if (a == "--verbose" || a == "-v") {
      g_params.verbose = true;
    } else if (a == "--list") {
      list = true;
    } else if (a[0] != '-' && parse_unsigned(argv[i], v) && v > 0 && positional < 3) {
      unsigned& field = positional == 0 ? g_params.threads : positional == 1 ? g_params.scale : g_params.iter;
      field = static_cast<unsigned>(v);
      ++positional;
    } else {
      usage(argv[i]);
    }
  }
  if (const char* s = std::getenv("STRATA_TEST_SCALE"); parse_unsigned(s, v) && v > 1)
    g_params.iter *= static_cast<unsigned>(v);

  const std::vector<resource_entry> catalogue = make_catalogue();
  if (list) {
    for (const resource_entry& e : catalogue) {
      std::printf("%s (%s):", e.alias.c_str(), e.name.c_str());
      for (const config& c : e.configs) std::printf(" %s", c.label.c_str());
      std::printf("\n");
    }
    return 0;
  }

  // Which resources (and configs): all, or a comma-separated list of NAME or NAME/CONFIG.
  std::vector<std::pair<std::size_t, std::string>> chosen;
  std::string spec = g_params.resource;
  for (std::size_t start = 0; start <= spec.size();) {
    std::size_t comma = spec.find(',', start);
    if (comma == std::string::npos) comma = spec.size();
    std::string item = spec.substr(start, comma - start);
    start = comma + 1;
    if (item.empty()) continue;
    std::string cfg;
    if (const std::size_t slash = item.find('/'); slash != std::string::npos) {
      cfg = item.substr(slash + 1);
      item.resize(slash);
    }
    bool found = false;
    for (std::size_t i = 0; i < catalogue.size(); ++i)
      if (item == "all" || item == catalogue[i].alias || item == catalogue[i].name) {
        chosen.emplace_back(i, cfg);
        found = true;
      }
    if (!found) {
      std::fprintf(stderr, "strata_soak: no resource named '%s' (--list shows them)\n", item.c_str());
      return 2;
    }
  }

  const char* build =
#if defined(SOAK_TSAN)
      "ThreadSanitizer";
#elif defined(SOAK_ASAN)
      "AddressSanitizer";
#elif !defined(NDEBUG)
      "debug";
#else
      "optimised";
#endif
  std::printf("soak: threads %u, scale %u, iter %u, seconds %s, seed %" PRIu64 ", resource %s (%s build, asserts %s, "
              "injected delays %s)\n",
              g_params.threads, g_params.scale, g_params.iter,
              g_params.seconds > 0 ? std::to_string(g_params.seconds).c_str() : "-", g_params.seed,
              g_params.resource.c_str(), build, STRATA_ASSERTS_ENABLED ? "on" : "off",
#if defined(STRATA_INJECT_DELAYS)
              "on"
#else
              "off"
#endif
  );
  std::fflush(stdout);

  unsigned passed = 0, failed = 0;
  for (const auto& [i, cfg] : chosen) (run_resource(catalogue[i], i, cfg) ? passed : failed) += 1;
  std::printf("soak: %u passed, %u failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
