// SPDX-License-Identifier: MIT
// bench/malloc/workloads.cpp: strata-malloc-workloads NAME [quick|full]: programs modeled on the public allocator
// benchmarks, for running under each malloc (LD_PRELOAD) by strata-malloc-bench. Each one allocates through
// malloc/free/realloc or new/delete only, and prints one line that depends on its work alone (not on addresses or
// timing), so that the runs under different allocators can be compared.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

bool g_full = true;
std::size_t pick(std::size_t full, std::size_t quick) { return g_full ? full : quick; }

// xorshift64*: small and fast; one per thread, seeded by the thread's index.
struct rng {
  std::uint64_t s;
  explicit rng(std::uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  std::uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }
  std::size_t between(std::size_t lo, std::size_t hi) { return lo + below(hi - lo + 1); }
};

// A block's contents, written on allocation and checked before its free: a checksum of the work, and a check that
// no allocator hands out memory that is still in use.
char* make(std::size_t n, std::uint64_t tag) {
  auto* p = static_cast<char*>(std::malloc(n));
  if (p == nullptr) {
    std::fprintf(stderr, "out of memory\n");
    std::exit(3);
  }
  p[0] = static_cast<char>(tag);
  p[n - 1] = static_cast<char>(tag >> 8);
  return p;
}
std::uint64_t take(char* p, std::size_t n) {
  const std::uint64_t v = static_cast<unsigned char>(p[0]) + static_cast<unsigned char>(p[n - 1]);
  std::free(p);
  return v;
}

template <class F>
void in_threads(unsigned n, F f) {
  std::vector<std::thread> ts;
  for (unsigned i = 0; i < n; ++i) ts.emplace_back(f, i);
  for (auto& t : ts) t.join();
}

// ---- larson: a server's threads replace random objects; each round's threads take over the previous round's ----
// (Larson and Krishnan's benchmark as mimalloc-bench runs it: objects outlive the thread that made them.)
void larson() {
  constexpr unsigned threads = 4;
  const std::size_t slots = 1000, rounds = pick(40, 8), per_round = pick(20000, 5000);
  struct slot {
    char* p;
    std::size_t n;
  };
  std::vector<std::vector<slot>> arrays(threads, std::vector<slot>(slots));
  std::atomic<std::uint64_t> sum{0};
  for (unsigned t = 0; t < threads; ++t) {
    rng r(t);
    for (auto& s : arrays[t]) {
      s.n = r.between(16, 1000);
      s.p = make(s.n, s.n);
    }
  }
  for (std::size_t round = 0; round < rounds; ++round) {
    in_threads(threads, [&](unsigned t) {
      rng r(round * threads + t + 1);
      std::uint64_t local = 0;
      auto& a = arrays[t];
      for (std::size_t i = 0; i < per_round; ++i) {
        slot& s = a[r.below(slots)];
        local += take(s.p, s.n);
        s.n = r.between(16, 1000);
        s.p = make(s.n, s.n);
      }
      sum += local;
    });
    std::rotate(arrays.begin(), arrays.begin() + 1, arrays.end());  // the next round's thread t takes another's objects
  }
  for (auto& a : arrays)
    for (auto& s : a) sum += take(s.p, s.n);
  std::printf("larson %llu\n", static_cast<unsigned long long>(sum.load()));
}

// ---- xmalloc: producers allocate, consumers free (Lever and Boreham's xmalloc-test) ----------------------------
void xmalloc() {
  constexpr unsigned pairs = 2;
  const std::size_t per_producer = pick(1500000, 300000);
  struct queue {
    std::mutex m;
    std::condition_variable cv;
    std::deque<std::vector<char*>> batches;
    bool done = false;
  };
  std::vector<queue> qs(pairs);
  std::atomic<std::uint64_t> sum{0};
  in_threads(2 * pairs, [&](unsigned t) {
    queue& q = qs[t % pairs];
    if (t < pairs) {
      rng r(t + 7);
      std::vector<char*> batch;
      for (std::size_t i = 0; i < per_producer; ++i) {
        const std::size_t n = r.between(8, 128);
        char* p = make(n, 0);
        p[0] = static_cast<char>(n);
        batch.push_back(p);
        if (batch.size() == 256) {
          std::lock_guard<std::mutex> g(q.m);
          q.batches.push_back(std::move(batch));
          batch.clear();
          q.cv.notify_one();
        }
      }
      std::lock_guard<std::mutex> g(q.m);
      q.batches.push_back(std::move(batch));
      q.done = true;
      q.cv.notify_one();
    } else {
      std::uint64_t local = 0;
      for (;;) {
        std::unique_lock<std::mutex> l(q.m);
        q.cv.wait(l, [&] { return !q.batches.empty() || q.done; });
        if (q.batches.empty()) break;
        std::vector<char*> batch = std::move(q.batches.front());
        q.batches.pop_front();
        l.unlock();
        for (char* p : batch) {
          local += static_cast<unsigned char>(p[0]);
          std::free(p);
        }
      }
      sum += local;
    }
  });
  std::printf("xmalloc %llu\n", static_cast<unsigned long long>(sum.load()));
}

// ---- cache-scratch: threads write their own small objects; false sharing shows (Hoard's cache-scratch) --------
void cache_scratch() {
  constexpr unsigned threads = 2;
  const std::size_t iterations = pick(800, 200), repeats = pick(20000, 5000);
  std::vector<char*> first(threads);
  for (auto& p : first) p = make(8, 1);  // made by one thread: a bad allocator packs them in one line
  std::atomic<std::uint64_t> sum{0};
  in_threads(threads, [&](unsigned t) {
    std::free(first[t]);
    std::uint64_t local = 0;
    for (std::size_t i = 0; i < iterations; ++i) {
      auto* p = static_cast<volatile char*>(std::malloc(8));
      for (std::size_t k = 0; k < repeats; ++k) {
        p[k & 7] = static_cast<char>(p[k & 7] + 1);
      }
      local += static_cast<unsigned char>(p[0]);
      std::free(const_cast<char*>(p));
    }
    sum += local > 0 ? 1 : 0;
  });
  std::printf("cache-scratch %llu\n", static_cast<unsigned long long>(sum.load()));
}

// ---- mstress: threads keep random sets of objects alive for varying times, some handed to other threads --------
// (after mimalloc-bench's mstress)
void mstress() {
  constexpr unsigned threads = 4;
  const std::size_t rounds = pick(10, 3), steps = pick(40000, 10000);
  std::mutex transfer_lock;
  std::vector<std::pair<char*, std::size_t>> transfer;
  std::atomic<std::uint64_t> sum{0};
  for (std::size_t round = 0; round < rounds; ++round) {
    in_threads(threads, [&](unsigned t) {
      rng r(round * 131 + t);
      std::vector<std::pair<char*, std::size_t>> live;
      std::uint64_t local = 0;
      for (std::size_t i = 0; i < steps; ++i) {
        const std::size_t kind = r.below(100);
        std::size_t n = kind < 90 ? r.between(8, 256) : kind < 99 ? r.between(256, 8192) : r.between(8192, 300000);
        live.emplace_back(make(n, n), n);
        if (r.below(4) == 0 && !live.empty()) {
          const std::size_t k = r.below(live.size());
          local += take(live[k].first, live[k].second);
          live[k] = live.back();
          live.pop_back();
        }
        if (live.size() > 2000) {
          for (std::size_t k = 0; k < 1000; ++k) {
            local += take(live.back().first, live.back().second);
            live.pop_back();
          }
        }
      }
      {  // a quarter outlives this thread: the next round frees it on another thread
        std::lock_guard<std::mutex> g(transfer_lock);
        for (std::size_t k = 0; k < live.size(); ++k) {
          if (k % 4 == 0) transfer.push_back(live[k]);
          else local += take(live[k].first, live[k].second);
        }
        if (t == 0) {
          for (std::size_t k = 0; k < transfer.size() / 2; ++k) local += take(transfer[k].first, transfer[k].second);
          transfer.erase(transfer.begin(), transfer.begin() + static_cast<std::ptrdiff_t>(transfer.size() / 2));
        }
      }
      sum += local;
    });
  }
  for (auto& [p, n] : transfer) sum += take(p, n);
  std::printf("mstress %llu\n", static_cast<unsigned long long>(sum.load()));
}

// ---- alloc-test: random sizes 16..8000, one thread, a working set replaced at random (rpmalloc's alloc test) --
void alloc_test() {
  const std::size_t working = 20000, ops = pick(8000000, 1500000);
  rng r(99);
  std::vector<std::pair<char*, std::size_t>> set(working);
  for (auto& s : set) {
    s.second = r.between(16, 8000);
    s.first = make(s.second, s.second);
  }
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < ops; ++i) {
    auto& s = set[r.below(working)];
    sum += take(s.first, s.second);
    s.second = r.between(16, r.below(8) == 0 ? 8000 : 512);
    s.first = make(s.second, s.second);
  }
  for (auto& s : set) sum += take(s.first, s.second);
  std::printf("alloc-test %llu\n", static_cast<unsigned long long>(sum));
}

// ---- glibc-simple: allocate a batch of one size, free it, for each size (glibc's bench-malloc-simple) --------
void glibc_simple() {
  const std::size_t reps = pick(400, 100);
  std::vector<char*> batch(10000);
  std::uint64_t sum = 0;
  for (std::size_t rep = 0; rep < reps; ++rep) {
    for (std::size_t n : {16u, 64u, 256u, 1024u}) {
      for (auto& p : batch) p = make(n, rep);
      for (auto& p : batch) sum += take(p, n);
    }
  }
  std::printf("glibc-simple %llu\n", static_cast<unsigned long long>(sum));
}

// ---- glibc-thread: threads replace random blocks of a working set, sizes skewed small (bench-malloc-thread) --
void glibc_thread() {
  constexpr unsigned threads = 2;
  const std::size_t ops = pick(5000000, 1000000);
  std::atomic<std::uint64_t> sum{0};
  in_threads(threads, [&](unsigned t) {
    rng r(t + 1000);
    constexpr std::size_t working = 1024;
    std::vector<std::pair<char*, std::size_t>> set(working, {nullptr, 0});
    std::uint64_t local = 0;
    for (std::size_t i = 0; i < ops; ++i) {
      auto& s = set[r.below(working)];
      if (s.first != nullptr) local += take(s.first, s.second);
      // glibc's distribution: most requests small, a tail up to 32 KiB
      const std::size_t u = r.below(1000);
      s.second = u < 900 ? r.between(1, 128) : u < 990 ? r.between(129, 4096) : r.between(4097, 32768);
      s.first = make(s.second, s.second);
    }
    for (auto& s : set)
      if (s.first != nullptr) local += take(s.first, s.second);
    sum += local;
  });
  std::printf("glibc-thread %llu\n", static_cast<unsigned long long>(sum.load()));
}

// ---- cfrac-like: arbitrary-precision arithmetic, small vectors grown with realloc and freed at once ----------
struct bignum {
  std::uint32_t* d;
  std::size_t n;
};
bignum big_from(std::uint32_t v) {
  bignum b{static_cast<std::uint32_t*>(std::malloc(sizeof(std::uint32_t))), 1};
  b.d[0] = v;
  return b;
}
bignum big_mul_add(const bignum& a, std::uint32_t m, std::uint32_t add) {
  bignum r{static_cast<std::uint32_t*>(std::malloc(sizeof(std::uint32_t) * a.n)), a.n};
  std::uint64_t carry = add;
  for (std::size_t i = 0; i < a.n; ++i) {
    const std::uint64_t x = static_cast<std::uint64_t>(a.d[i]) * m + carry;
    r.d[i] = static_cast<std::uint32_t>(x);
    carry = x >> 32;
  }
  if (carry != 0) {
    r.d = static_cast<std::uint32_t*>(std::realloc(r.d, sizeof(std::uint32_t) * (r.n + 1)));
    r.d[r.n++] = static_cast<std::uint32_t>(carry);
  }
  return r;
}
void cfrac() {
  const std::size_t outer = pick(1500, 300);
  std::uint64_t sum = 0;
  for (std::size_t k = 0; k < outer; ++k) {
    bignum x = big_from(static_cast<std::uint32_t>(k + 2));
    for (std::uint32_t i = 1; i < 400; ++i) {  // x = x * (k + i) + i, each step a new number, the old one freed
      bignum y = big_mul_add(x, static_cast<std::uint32_t>(k + i), i);
      std::free(x.d);
      x = y;
    }
    sum += x.n + x.d[0] + x.d[x.n - 1];
    std::free(x.d);
  }
  std::printf("cfrac %llu\n", static_cast<unsigned long long>(sum));
}

// ---- large: blocks of 64 KiB .. 4 MiB, eight live, three pages of each touched --------------------------------
void large() {
  const std::size_t ops = pick(100000, 20000);
  rng r(5);
  char* keep[8] = {};
  std::size_t sizes[8] = {};
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < ops; ++i) {
    const std::size_t n = r.between(std::size_t{64} << 10, std::size_t{4} << 20);
    char* p = make(n, i);
    p[n / 2] = 1;
    const std::size_t k = r.below(8);
    if (keep[k] != nullptr) sum += take(keep[k], sizes[k]);
    keep[k] = p;
    sizes[k] = n;
  }
  for (std::size_t k = 0; k < 8; ++k)
    if (keep[k] != nullptr) sum += take(keep[k], sizes[k]);
  std::printf("large %llu\n", static_cast<unsigned long long>(sum));
}

// ---- small-program: what a short command allocates: a few thousand strings, then exit -----------------------
void small_program() {
  std::map<std::string, std::string> m;
  for (int i = 0; i < 2000; ++i) m["key" + std::to_string(i)] = std::string(static_cast<std::size_t>(i % 60), 'v');
  std::size_t total = 0;
  for (auto& [k, v] : m) total += k.size() + v.size();
  std::printf("small-program %zu\n", total);
}

struct workload {
  const char* name;
  void (*run)();
};
const workload workloads[] = {
    {"larson", larson},       {"xmalloc", xmalloc},           {"cache-scratch", cache_scratch},
    {"mstress", mstress},     {"alloc-test", alloc_test},     {"glibc-simple", glibc_simple},
    {"glibc-thread", glibc_thread}, {"cfrac", cfrac},         {"large", large},
    {"small-program", small_program},
};

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3) g_full = std::strcmp(argv[2], "quick") != 0;
  for (const auto& w : workloads) {
    if (argc >= 2 && std::strcmp(argv[1], w.name) == 0) {
      w.run();
      return 0;
    }
  }
  if (argc >= 2 && std::strcmp(argv[1], "--list") == 0) {
    for (const auto& w : workloads) std::printf("%s\n", w.name);
    return 0;
  }
  std::fprintf(stderr, "usage: strata-malloc-workloads NAME [quick|full] (--list for the names)\n");
  return 2;
}
