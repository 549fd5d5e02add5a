// SPDX-License-Identifier: MIT
// bench/workloads.cpp: the workloads. Each one precomputes its random numbers, builds whatever it keeps live before
// the clock starts (where its definition says so), then runs the timed loop and returns one figure.
#include "workloads.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <strata/testing.hpp>

namespace strata_bench {
namespace {

using bench_clock = std::chrono::steady_clock;

/// Results the optimiser must assume are observed.
volatile std::uint64_t g_sink = 0;

double ns_between(bench_clock::time_point a, bench_clock::time_point b) {
  return std::chrono::duration<double, std::nano>(b - a).count();
}

/// SplitMix64: small, fast, good enough to scatter indices and sizes; fixed seeds make every run identical.
struct splitmix64 {
  std::uint64_t state;
  std::uint64_t next() noexcept {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, n).
  std::uint32_t below(std::size_t n) noexcept { return static_cast<std::uint32_t>(next() % n); }
  /// Uniform in [lo, hi].
  std::uint32_t between(std::size_t lo, std::size_t hi) noexcept {
    return static_cast<std::uint32_t>(lo + next() % (hi - lo + 1));
  }
};

unsigned char tag(std::size_t i) noexcept { return static_cast<unsigned char>(i); }

/// Allocates and writes the first and the last byte, so the memory is really used.
unsigned char* alloc_touch(std::pmr::memory_resource& r, std::size_t size, std::size_t align, unsigned char t) {
  auto* p = static_cast<unsigned char*>(r.allocate(size, align));
  p[0] = t;
  p[size - 1] = t;
  return p;
}

/// Reads the block one last time (as a destructor would) and frees it; returns what it read.
std::uint64_t read_free(std::pmr::memory_resource& r, unsigned char* p, std::size_t size, std::size_t align) {
  const std::uint64_t v = p[0];
  r.deallocate(p, size, align);
  return v;
}

void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/// Spin briefly, then give the core away: correct (if slower) even when threads outnumber cores.
struct backoff {
  unsigned spins = 0;
  void pause() noexcept {
    if (++spins < 1024) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
};

void wait_until(const std::atomic<bool>& flag) noexcept {
  backoff b;
  while (!flag.load(std::memory_order_acquire)) b.pause();
}

void wait_count(const std::atomic<int>& counter, int value) noexcept {
  backoff b;
  while (counter.load(std::memory_order_acquire) < value) b.pause();
}

std::size_t pick(scale s, std::size_t full, std::size_t quick) noexcept { return s == scale::full ? full : quick; }

// ---- fixed32_churn ------------------------------------------------------------------------------------------------

double run_fixed_churn(std::pmr::memory_resource& r, const workload_info& w, scale s) {
  constexpr std::size_t live_count = 100'000;
  const std::size_t ops = pick(s, 2'000'000, 500'000);
  const std::size_t size = w.fixed_size;
  const std::size_t align = w.alignment;

  splitmix64 rng{0xF1CED32ULL};
  std::vector<std::uint32_t> victims(ops);
  for (auto& v : victims) v = rng.below(live_count);

  std::vector<unsigned char*> live(live_count);
  for (std::size_t i = 0; i < live_count; ++i) live[i] = alloc_touch(r, size, align, tag(i));

  std::uint64_t sum = 0;
  const auto t0 = bench_clock::now();
  for (std::size_t i = 0; i < ops; ++i) {
    unsigned char*& slot = live[victims[i]];
    sum += read_free(r, slot, size, align);
    slot = alloc_touch(r, size, align, tag(i));
  }
  const auto t1 = bench_clock::now();

  for (auto* p : live) sum += read_free(r, p, size, align);
  g_sink = sum;
  return ns_between(t0, t1) / static_cast<double>(ops);
}

// ---- mixed_lifo ---------------------------------------------------------------------------------------------------

double run_mixed_lifo(std::pmr::memory_resource& r, const workload_info& w, scale s) {
  constexpr std::size_t batch = 256;
  const std::size_t batches = pick(s, 2'000'000, 500'000) / batch;
  const std::size_t align = w.alignment;

  splitmix64 rng{0x11F0ULL};
  std::vector<std::uint16_t> sizes(batches * batch);
  for (auto& sz : sizes) sz = static_cast<std::uint16_t>(rng.between(8, 1024));

  std::array<unsigned char*, batch> ptrs{};
  std::uint64_t sum = 0;
  const auto t0 = bench_clock::now();
  for (std::size_t b = 0; b < batches; ++b) {
    const std::uint16_t* sz = sizes.data() + b * batch;
    for (std::size_t k = 0; k < batch; ++k) ptrs[k] = alloc_touch(r, sz[k], align, tag(k));
    for (std::size_t k = batch; k-- > 0;) sum += read_free(r, ptrs[k], sz[k], align);
  }
  const auto t1 = bench_clock::now();

  g_sink = sum;
  return ns_between(t0, t1) / static_cast<double>(batches * batch);
}

// ---- mixed_random and mt_mixed_random -----------------------------------------------------------------------------

/// One thread's live set of blocks of lo..hi bytes and its precomputed replacement schedule.
class mixed_churn {
 public:
  mixed_churn(std::size_t live_count, std::size_t ops, std::size_t align, std::uint64_t seed, std::size_t lo = 8,
              std::size_t hi = 1024)
      : align_(align), live_(live_count), live_sizes_(live_count), victims_(ops), new_sizes_(ops) {
    splitmix64 rng{seed};
    for (auto& sz : live_sizes_) sz = static_cast<std::uint16_t>(rng.between(lo, hi));
    for (auto& v : victims_) v = rng.below(live_count);
    for (auto& sz : new_sizes_) sz = static_cast<std::uint16_t>(rng.between(lo, hi));
  }

  void fill(std::pmr::memory_resource& r) {
    for (std::size_t i = 0; i < live_.size(); ++i) live_[i] = alloc_touch(r, live_sizes_[i], align_, tag(i));
  }

  void churn(std::pmr::memory_resource& r) {
    std::uint64_t sum = 0;
    for (std::size_t i = 0; i < victims_.size(); ++i) {
      const std::uint32_t v = victims_[i];
      sum += read_free(r, live_[v], live_sizes_[v], align_);
      live_sizes_[v] = new_sizes_[i];
      live_[v] = alloc_touch(r, new_sizes_[i], align_, tag(i));
    }
    sum_ += sum;
  }

  /// Frees the live set; returns the checksum of everything read (for g_sink, written by one thread only).
  std::uint64_t drain(std::pmr::memory_resource& r) {
    for (std::size_t i = 0; i < live_.size(); ++i) sum_ += read_free(r, live_[i], live_sizes_[i], align_);
    live_.clear();
    return sum_;
  }

  [[nodiscard]] std::size_t ops() const noexcept { return victims_.size(); }

  bench_clock::time_point end{};  // when churn() finished (threaded use)

 private:
  std::size_t align_;
  std::vector<unsigned char*> live_;
  std::vector<std::uint16_t> live_sizes_;
  std::vector<std::uint32_t> victims_;
  std::vector<std::uint16_t> new_sizes_;
  std::uint64_t sum_ = 0;
};

double run_mixed_random(std::pmr::memory_resource& r, const workload_info& w, scale s) {
  mixed_churn c(100'000, pick(s, 2'000'000, 500'000), w.alignment, 0x313D0ULL);
  c.fill(r);
  const auto t0 = bench_clock::now();
  c.churn(r);
  const auto t1 = bench_clock::now();
  g_sink = c.drain(r);
  return ns_between(t0, t1) / static_cast<double>(c.ops());
}

double run_mt_mixed_random(std::pmr::memory_resource& r, const workload_info& w, scale s) {
  constexpr std::size_t live_count = 50'000;
  const std::size_t ops = pick(s, 1'000'000, 250'000);
  const std::size_t lo = w.fixed_size != 0 ? w.fixed_size : 8, hi = w.fixed_size != 0 ? w.fixed_size : 1024;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<int> done{0};
  std::atomic<bool> drain{false};

  // Each thread builds (first-touches) its own schedule and live set.
  std::unique_ptr<mixed_churn> other;
  std::uint64_t other_sum = 0;
  std::thread worker([&] {
    other = std::make_unique<mixed_churn>(live_count, ops, w.alignment, 0x3A7E2ULL, lo, hi);
    other->fill(r);
    ready.fetch_add(1, std::memory_order_release);
    wait_until(go);
    other->churn(r);
    other->end = bench_clock::now();
    done.fetch_add(1, std::memory_order_release);
    wait_until(drain);  // free nothing while the other thread is still being timed
    other_sum = other->drain(r);
  });

  mixed_churn mine(live_count, ops, w.alignment, 0x3A7E1ULL, lo, hi);
  mine.fill(r);
  ready.fetch_add(1, std::memory_order_release);
  wait_count(ready, 2);
  const auto t0 = bench_clock::now();
  go.store(true, std::memory_order_release);
  mine.churn(r);
  mine.end = bench_clock::now();
  done.fetch_add(1, std::memory_order_release);
  wait_count(done, 2);
  drain.store(true, std::memory_order_release);
  const std::uint64_t my_sum = mine.drain(r);
  worker.join();
  g_sink = my_sum + other_sum;

  const auto t1 = std::max(mine.end, other->end);
  return ns_between(t0, t1) / static_cast<double>(2 * ops);
}

// ---- pmr_map ------------------------------------------------------------------------------------------------------

double run_pmr_map(std::pmr::memory_resource& r, const workload_info&, scale s) {
  const std::size_t n = pick(s, 1'000'000, 250'000);
  splitmix64 rng{0x3A9ULL};
  std::vector<std::int64_t> keys(n);
  for (auto& k : keys) k = static_cast<std::int64_t>(rng.next());

  const auto t0 = bench_clock::now();
  {
    std::pmr::map<std::int64_t, std::int64_t> m(&r);
    for (const std::int64_t k : keys) m.emplace(k, k);
    g_sink = m.size();
  }  // destruction is part of the timed region
  const auto t1 = bench_clock::now();
  return ns_between(t0, t1) / static_cast<double>(n);
}

// ---- string_vector ------------------------------------------------------------------------------------------------

/// A std::pmr::vector<std::pmr::string> of n strings of 16..200 chars (all past the short-string buffer), built by
/// push_back (the vector's growth reallocations included) and then destroyed.
double run_string_vector(std::pmr::memory_resource& r, const workload_info&, scale s) {
  const std::size_t n = pick(s, 200'000, 50'000);
  splitmix64 rng{0x57C7ULL};
  std::vector<std::uint8_t> lengths(n);
  for (auto& len : lengths) len = static_cast<std::uint8_t>(rng.between(16, 200));

  std::uint64_t sum = 0;
  const auto t0 = bench_clock::now();
  {
    std::pmr::vector<std::pmr::string> v(&r);
    for (std::size_t i = 0; i < n; ++i) v.push_back(std::pmr::string(lengths[i], static_cast<char>('a' + i % 26), &r));
    sum = v.size() + static_cast<unsigned char>(v.back()[0]);
  }  // destruction is part of the timed region
  const auto t1 = bench_clock::now();
  g_sink = sum;
  return ns_between(t0, t1) / static_cast<double>(n);
}

// ---- fragmented_1k, fragmented_100k --------------------------------------------------------------------------------

/// `free_count` free blocks of assorted sizes held apart by live blocks, so they cannot merge: the allocator must find
/// a fitting one for every request. Setup (untimed): 2 x free_count blocks of 16..1024 B, then every other one is
/// freed (blocks 0, 2, 4, ... in allocation order); a window of the 16 most recent blocks is filled and 1024
/// warm-up ops run (so work a malloc defers past the frees, e.g. glibc sorting its unsorted bin, is not timed).
/// Timed: `ops` times, allocate a block of a new random size 16..1024 B and free the oldest in the window. The heap
/// keeps about free_count free blocks throughout. Per allocate+free pair; the same number of pairs for every
/// free_count, so the columns compare.
double run_fragmented(std::pmr::memory_resource& r, const workload_info& w, scale s, std::size_t free_count) {
  constexpr std::size_t window = 16;  // a power of two
  constexpr std::size_t warmup = 1024;
  const std::size_t ops = pick(s, 200'000, 50'000);
  const std::size_t align = w.alignment;

  splitmix64 rng{0xF2A6ULL};  // the same seed for every free_count: the 1k setup is a prefix of the 100k one
  std::vector<std::uint16_t> setup_sizes(2 * free_count);
  for (auto& sz : setup_sizes) sz = static_cast<std::uint16_t>(rng.between(16, 1024));
  splitmix64 rng_ops{0xF2A60F5ULL};  // and the same requests in the timed loop
  // sizes[i] is the size of the i-th block the window holds: window fill, then warm-up ops, then timed ops.
  std::vector<std::uint16_t> sizes(window + warmup + ops);
  for (auto& sz : sizes) sz = static_cast<std::uint16_t>(rng_ops.between(16, 1024));

  std::vector<unsigned char*> blocks(2 * free_count);
  for (std::size_t i = 0; i < blocks.size(); ++i) blocks[i] = alloc_touch(r, setup_sizes[i], align, tag(i));
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < blocks.size(); i += 2) sum += read_free(r, blocks[i], setup_sizes[i], align);

  std::array<unsigned char*, window> win{};
  for (std::size_t k = 0; k < window; ++k) win[k] = alloc_touch(r, sizes[k], align, tag(k));
  // Op i allocates block i + window and frees block i (the oldest), whose pointer is in win[i % window].
  const auto step = [&](std::size_t i) {
    unsigned char* p = alloc_touch(r, sizes[i + window], align, tag(i));
    unsigned char*& slot = win[i & (window - 1)];
    sum += read_free(r, slot, sizes[i], align);
    slot = p;
  };
  for (std::size_t i = 0; i < warmup; ++i) step(i);

  const auto t0 = bench_clock::now();
  for (std::size_t i = warmup; i < warmup + ops; ++i) step(i);
  const auto t1 = bench_clock::now();

  for (std::size_t k = 0; k < window; ++k) {
    const std::size_t i = warmup + ops + k;  // the blocks left in the window: i = warmup + ops .. + window - 1
    sum += read_free(r, win[i & (window - 1)], sizes[i], align);
  }
  for (std::size_t i = 1; i < blocks.size(); i += 2) sum += read_free(r, blocks[i], setup_sizes[i], align);
  g_sink = sum;
  return ns_between(t0, t1) / static_cast<double>(ops);
}

double run_fragmented_1k(std::pmr::memory_resource& r, const workload_info& w, scale s) {
  return run_fragmented(r, w, s, 1'000);
}

double run_fragmented_100k(std::pmr::memory_resource& r, const workload_info& w, scale s) {
  return run_fragmented(r, w, s, 100'000);
}

// ---- resident_24, resident_100 ------------------------------------------------------------------------------------

double run_resident(std::pmr::memory_resource& r, const workload_info& w, scale) {
  constexpr std::size_t count = 1'000'000;  // the same at both scales: it is the live set
  const std::size_t size = w.fixed_size;
  const std::size_t align = w.alignment;

  std::vector<unsigned char*> ptrs(count);
  std::memset(static_cast<void*>(ptrs.data()), 0xFF, count * sizeof(unsigned char*));  // touch the array first
  (void)strata::testing::process_resident_bytes();  // anything its first call sets up is in the baseline
  const std::size_t before = strata::testing::process_resident_bytes();
  for (std::size_t i = 0; i < count; ++i) {
    auto* p = static_cast<unsigned char*>(r.allocate(size, align));
    std::memset(p, tag(i), size);
    ptrs[i] = p;
  }
  const std::size_t after = strata::testing::process_resident_bytes();

  std::uint64_t sum = 0;
  for (auto* p : ptrs) sum += read_free(r, p, size, align);
  g_sink = sum;
  const std::size_t grown = after > before ? after - before : 0;
  return static_cast<double>(grown) / static_cast<double>(count * size);
}

// ---- xthread ------------------------------------------------------------------------------------------------------

/// Bounded single-producer single-consumer ring. Each side caches the other's index to touch the shared line less.
struct spsc_ring {
  static constexpr std::size_t capacity = 1024;  // a power of two
  static constexpr std::size_t mask = capacity - 1;
  alignas(64) std::atomic<std::size_t> head{0};  // next slot to pop; written by the consumer
  alignas(64) std::atomic<std::size_t> tail{0};  // next slot to push; written by the producer
  alignas(64) std::array<unsigned char*, capacity> slots{};
};

double run_xthread(std::pmr::memory_resource& r, const workload_info& w, scale s) {
  const std::size_t n = pick(s, 1'000'000, 250'000);
  const std::size_t align = w.alignment;
  splitmix64 rng{0x7412EADULL};
  std::vector<std::uint16_t> sizes(n);  // both sides know the i-th object's size
  const std::size_t lo = w.fixed_size != 0 ? w.fixed_size : 16, hi = w.fixed_size != 0 ? w.fixed_size : 256;
  for (auto& sz : sizes) sz = static_cast<std::uint16_t>(rng.between(lo, hi));

  auto ring = std::make_unique<spsc_ring>();
  std::atomic<bool> go{false};

  std::thread producer([&] {
    wait_until(go);
    std::size_t tail = 0;
    std::size_t head_seen = 0;
    for (std::size_t i = 0; i < n; ++i) {
      unsigned char* p = alloc_touch(r, sizes[i], align, tag(i));
      backoff b;
      while (tail - head_seen == spsc_ring::capacity) {
        head_seen = ring->head.load(std::memory_order_acquire);
        if (tail - head_seen == spsc_ring::capacity) b.pause();
      }
      ring->slots[tail & spsc_ring::mask] = p;
      ring->tail.store(++tail, std::memory_order_release);
    }
  });

  std::uint64_t sum = 0;
  const auto t0 = bench_clock::now();
  go.store(true, std::memory_order_release);
  std::size_t head = 0;
  std::size_t tail_seen = 0;
  for (std::size_t i = 0; i < n; ++i) {
    backoff b;
    while (head == tail_seen) {
      tail_seen = ring->tail.load(std::memory_order_acquire);
      if (head == tail_seen) b.pause();
    }
    unsigned char* p = ring->slots[head & spsc_ring::mask];
    ring->head.store(++head, std::memory_order_release);
    sum += read_free(r, p, sizes[i], align);
  }
  const auto t1 = bench_clock::now();
  producer.join();
  g_sink = sum;
  return ns_between(t0, t1) / static_cast<double>(n);
}

// ---- large_random -------------------------------------------------------------------------------------------------

constexpr std::size_t touch_stride = 4096;

unsigned char* alloc_touch_pages(std::pmr::memory_resource& r, std::size_t size, std::size_t align, unsigned char t) {
  auto* p = static_cast<unsigned char*>(r.allocate(size, align));
  for (std::size_t off = 0; off < size; off += touch_stride) p[off] = t;
  p[size - 1] = t;
  return p;
}

double run_large_random(std::pmr::memory_resource& r, const workload_info& w, scale s) {
  constexpr std::size_t live_count = 64;
  const std::size_t ops = pick(s, 20'000, 2'500);
  const std::size_t align = w.alignment;

  splitmix64 rng{0x1A26EULL};
  std::vector<std::uint32_t> live_sizes(live_count);
  for (auto& sz : live_sizes) sz = rng.between(std::size_t{4} << 10, std::size_t{1} << 20);
  std::vector<std::uint32_t> victims(ops);
  std::vector<std::uint32_t> new_sizes(ops);
  for (auto& v : victims) v = rng.below(live_count);
  for (auto& sz : new_sizes) sz = rng.between(std::size_t{4} << 10, std::size_t{1} << 20);

  std::vector<unsigned char*> live(live_count);
  for (std::size_t i = 0; i < live_count; ++i) live[i] = alloc_touch_pages(r, live_sizes[i], align, tag(i));

  std::uint64_t sum = 0;
  const auto t0 = bench_clock::now();
  for (std::size_t i = 0; i < ops; ++i) {
    const std::uint32_t v = victims[i];
    sum += read_free(r, live[v], live_sizes[v], align);
    live_sizes[v] = new_sizes[i];
    live[v] = alloc_touch_pages(r, new_sizes[i], align, tag(i));
  }
  const auto t1 = bench_clock::now();

  for (std::size_t i = 0; i < live_count; ++i) sum += read_free(r, live[i], live_sizes[i], align);
  g_sink = sum;
  return ns_between(t0, t1) / static_cast<double>(ops);
}

constexpr std::size_t node_align = alignof(void*);              // a typical node type's alignment
constexpr std::size_t mixed_align = alignof(std::max_align_t);  // what operator new / malloc guarantee

}  // namespace

const std::vector<workload>& workloads() {
  // name, unit, kind, threaded, measures_memory, fixed_size, alignment, description
  static const std::vector<workload> all = {
      {{"fixed32_churn", "ns/op", block_kind::small_fixed, false, false, 32, node_align,
        "100k live 32 B blocks; timed: 2M random replacements (free one, allocate one)"},
       run_fixed_churn},
      {{"mixed_lifo", "ns/op", block_kind::small_mixed, false, false, 0, mixed_align,
        "timed: batches of 256 allocations of 8..1024 B freed in reverse order, ~2M in all; per alloc+free"},
       run_mixed_lifo},
      {{"mixed_random", "ns/op", block_kind::small_mixed, false, false, 0, mixed_align,
        "100k live blocks of 8..1024 B; timed: 2M random replacements with new random sizes"},
       run_mixed_random},
      {{"fragmented_1k", "ns/op", block_kind::small_mixed, false, false, 0, mixed_align,
        "1k free blocks of 16..1024 B between live ones; timed: 200k random allocate + free-oldest-of-16 pairs"},
       run_fragmented_1k},
      {{"fragmented_100k", "ns/op", block_kind::small_mixed, false, false, 0, mixed_align,
        "100k free blocks of 16..1024 B between live ones; timed: 200k random allocate + free-oldest-of-16 pairs"},
       run_fragmented_100k},
      {{"pmr_map", "ns/op", block_kind::small_mixed, false, false, 0, mixed_align,
        "timed: std::pmr::map<int64,int64>, 1M random-key inserts plus destruction; per insert"},
       run_pmr_map},
      {{"string_vector", "ns/op", block_kind::small_mixed, false, false, 0, mixed_align,
        "timed: std::pmr::vector<std::pmr::string>, 200k push_backs of 16..200 chars plus destruction; per string"},
       run_string_vector},
      {{"resident_24", "B/B", block_kind::small_fixed, false, true, 24, node_align,
        "1M live 24 B blocks, every byte written; RSS growth / requested bytes"},
       run_resident},
      {{"resident_100", "B/B", block_kind::small_fixed, false, true, 100, node_align,
        "1M live 100 B blocks, every byte written; RSS growth / requested bytes"},
       run_resident},
      {{"xthread", "ns/op", block_kind::small_mixed, true, false, 0, mixed_align,
        "producer allocates 1M blocks of 16..256 B, SPSC ring, consumer frees them; per object"},
       run_xthread},
      {{"mt_mixed_random", "ns/op", block_kind::small_mixed, true, false, 0, mixed_align,
        "2 threads, each 50k live 8..1024 B and 1M random replacements; wall time per op (both threads' ops)"},
       run_mt_mixed_random},
      {{"mt_fixed32_churn", "ns/op", block_kind::small_fixed, true, false, 32, node_align,
        "2 threads, each 50k live 32 B blocks and 1M random replacements; wall time per op (both threads' ops)"},
       run_mt_mixed_random},
      {{"xthread_fixed32", "ns/op", block_kind::small_fixed, true, false, 32, node_align,
        "producer allocates 1M blocks of 32 B, SPSC ring, consumer frees them; per object"},
       run_xthread},
      {{"large_random", "ns/op", block_kind::large, false, false, 0, mixed_align,
        "64 live blocks of 4 KiB..1 MiB; timed: 20k random replacements, one byte written per 4 KiB"},
       run_large_random},
  };
  return all;
}

const workload* find_workload(std::string_view name) {
  for (const auto& w : workloads()) {
    if (name == w.info.name) return &w;
  }
  return nullptr;
}

}  // namespace strata_bench
