// SPDX-License-Identifier: MIT
// tests/valgrind/memcheck_probe.cpp: one heap bug (or none) inside one strata resource, for memcheck to report.
// memcheck.sh runs it under Valgrind once per resource and bug and checks what memcheck says; run alone (no
// Valgrind) every case exits 0, which is the point: a pool hides these bugs from the hardware.
//
//   memcheck_probe <resource> <case>
//   resource: page bitmap synchronized_bitmap fixed_pool synchronized_fixed_pool free_list synchronized_free_list
//             thread_cache c_heap nested (a fixed pool over a bitmap over a thread cache) debug (a debug_resource
//             over a thread cache) arena synchronized_arena
//   case:     clean (a churn of every size the resource serves, all freed), use_after_free (a read of a freed
//             block), overflow (a write one byte past the size asked for), leak (a block no one frees), large (a
//             read after free of a block the resource sent upstream), threads (clean: blocks freed by another
//             thread than the one that allocated them; thread-safe resources); arenas only: rewind, release (a
//             read of a block an arena took back by rewind or release), middle (a read of a block deallocated
//             that is not the last one: the arena keeps its bytes, but it is freed), abandon (clean: blocks never
//             deallocated, taken back by a rewind, a release and the arena's end)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <strata/strata.h>
#include <strata/strata.hpp>

namespace {

// The size asked for: not a multiple of 8, so that the byte past it lies inside the block's slot.
constexpr std::size_t small = 44;

struct c_heap_resource final : std::pmr::memory_resource {
  void* do_allocate(std::size_t bytes, std::size_t) override { return strata_malloc(bytes); }
  void do_deallocate(void* p, std::size_t, std::size_t) override { strata_free_unsized(p); }
  bool do_is_equal(const std::pmr::memory_resource& o) const noexcept override { return this == &o; }
};

struct chain {
  std::vector<std::unique_ptr<std::pmr::memory_resource>> owned;
  std::pmr::memory_resource* top = nullptr;
  template <class R, class... A>
  R* add(A&&... a) {
    auto r = std::make_unique<R>(std::forward<A>(a)...);
    R* raw = r.get();
    owned.push_back(std::move(r));
    top = raw;
    return raw;
  }
  ~chain() {
    while (!owned.empty()) owned.pop_back();  // the one built last first: it holds memory of those below
  }
};

bool make(const std::string& name, chain& c) {
  if (name == "page") c.add<strata::page_resource>();
  else if (name == "bitmap") c.add<strata::bitmap_resource>();
  else if (name == "synchronized_bitmap") c.add<strata::synchronized_bitmap_resource>();
  else if (name == "fixed_pool") c.add<strata::fixed_pool_resource>(std::size_t{48});
  else if (name == "synchronized_fixed_pool") c.add<strata::synchronized_fixed_pool_resource>(std::size_t{48});
  else if (name == "free_list") c.add<strata::free_list_resource>();
  else if (name == "synchronized_free_list") c.add<strata::synchronized_free_list_resource>();
  else if (name == "thread_cache") c.add<strata::thread_cache_resource>();
  else if (name == "c_heap") c.add<c_heap_resource>();
  else if (name == "arena") c.add<strata::arena_resource>();
  else if (name == "synchronized_arena") c.add<strata::synchronized_arena_resource>();
  else if (name == "debug") c.add<strata::debug_resource>(strata::debug_options{}, c.add<strata::thread_cache_resource>());
  else if (name == "nested") {
    auto* tc = c.add<strata::thread_cache_resource>();
    auto* bm = c.add<strata::bitmap_resource>(strata::bitmap_options{}, tc);
    c.add<strata::fixed_pool_resource>(std::size_t{48}, strata::fixed_pool_options{}, bm);
  } else {
    return false;
  }
  return true;
}

// A mixed churn: blocks of many sizes (those a fixed pool serves only: up to its block), written, freed in another
// order, some reallocated; everything freed at the end. memcheck must find nothing in it.
void churn(std::pmr::memory_resource& r, bool fixed) {
  struct live {
    unsigned char* p;
    std::size_t n;
  };
  std::vector<live> blocks;
  unsigned x = 12345;
  for (int i = 0; i < 4000; ++i) {
    x = x * 1103515245u + 12345u;
    const std::size_t n = fixed ? 1 + (x >> 8) % 48 : 1 + (x >> 8) % ((x >> 20) % 4 == 0 ? 70000 : 600);
    auto* p = static_cast<unsigned char*>(r.allocate(n, 8));
    std::memset(p, static_cast<int>(i), n);
    blocks.push_back({p, n});
    if ((x >> 4) % 3 == 0) {
      const std::size_t k = (x >> 12) % blocks.size();
      if (blocks[k].p[blocks[k].n - 1] != static_cast<unsigned char>(blocks[k].p[0])) std::abort();
      r.deallocate(blocks[k].p, blocks[k].n, 8);
      blocks[k] = blocks.back();
      blocks.pop_back();
    }
  }
  for (auto& b : blocks) r.deallocate(b.p, b.n, 8);
}

// Two threads, each allocating blocks and freeing those the other allocated (the thread caches' remote frees).
void cross_thread(std::pmr::memory_resource& r, bool fixed) {
  std::mutex m;
  std::vector<std::pair<void*, std::size_t>> handed[2];
  auto work = [&](int me) {
    unsigned x = 777u + static_cast<unsigned>(me);
    for (int i = 0; i < 3000; ++i) {
      x = x * 1103515245u + 12345u;
      const std::size_t n = fixed ? 1 + (x >> 8) % 48 : 1 + (x >> 8) % 3000;
      void* p = r.allocate(n, 8);
      std::memset(p, me, n);
      std::pair<void*, std::size_t> theirs{nullptr, 0};
      {
        std::lock_guard<std::mutex> g(m);
        handed[me].push_back({p, n});
        if (!handed[1 - me].empty()) {
          theirs = handed[1 - me].back();
          handed[1 - me].pop_back();
        }
      }
      if (theirs.first != nullptr) r.deallocate(theirs.first, theirs.second, 8);
    }
  };
  std::thread a(work, 0), b(work, 1);
  a.join();
  b.join();
  for (auto& h : handed)
    for (auto& [p, n] : h) r.deallocate(p, n, 8);
}

// The pointer dies with this frame (below the stack pointer, where the leak check does not look).
[[gnu::noinline]] void leak_a_block(std::pmr::memory_resource& r) {
  void* p = r.allocate(small, 8);
  std::memset(p, 1, small);
  std::printf("leaked a block of %zu bytes\n", small);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: memcheck_probe <resource> <case>\n");
    return 2;
  }
  const std::string name = argv[1], what = argv[2];
  chain c;
  if (!make(name, c)) {
    std::fprintf(stderr, "memcheck_probe: unknown resource %s\n", argv[1]);
    return 2;
  }
  std::pmr::memory_resource& r = *c.top;
  const bool fixed = name == "fixed_pool" || name == "synchronized_fixed_pool" || name == "nested";
  if (what == "clean") {
    churn(r, fixed);
  } else if (what == "threads") {
    cross_thread(r, fixed);
  } else if (what == "use_after_free" || what == "large") {
    const std::size_t n = what == "large" ? std::size_t{1} << 20 : small;
    auto* p = static_cast<volatile unsigned char*>(r.allocate(n, 8));
    p[0] = 1;
    r.deallocate(const_cast<unsigned char*>(p), n, 8);
    if (p[8] == 42) std::puts("?");  // the bug: a read of the freed block
  } else if (what == "overflow") {
    auto* p = static_cast<volatile unsigned char*>(r.allocate(small, 8));
    p[small] = 1;  // the bug: one byte past the size asked for
    r.deallocate(const_cast<unsigned char*>(p), small, 8);
  } else if (what == "rewind" || what == "release" || what == "middle" || what == "abandon") {
    auto* arena = dynamic_cast<strata::arena_resource*>(&r);
    auto* sync = dynamic_cast<strata::synchronized_arena_resource*>(&r);
    if (arena == nullptr && sync == nullptr) {
      std::fprintf(stderr, "memcheck_probe: %s is not an arena\n", argv[1]);
      return 2;
    }
    (void)r.allocate(100, 8);  // a block before the marker, which the rewind keeps
    const auto ma = arena != nullptr ? arena->mark() : strata::arena_resource::marker{};
    const auto ms = sync != nullptr ? sync->mark() : strata::synchronized_arena_resource::marker{};
    auto rewind = [&] { arena != nullptr ? arena->rewind(ma) : sync->rewind(ms); };
    auto release = [&] { arena != nullptr ? arena->release() : sync->release(); };
    if (what == "abandon") {
      for (int round = 0; round < 3; ++round) {
        for (int i = 0; i < 2000; ++i) std::memset(r.allocate(1 + static_cast<std::size_t>(i) % 700, 8), i, 1);
        round == 0 ? rewind() : release();
      }
      for (int i = 0; i < 100; ++i) std::memset(r.allocate(300, 8), i, 300);  // the arena's end takes these
      return 0;
    }
    auto* p = static_cast<volatile unsigned char*>(r.allocate(small, 8));
    p[0] = 1;
    if (what == "middle") {
      (void)r.allocate(16, 8);  // after it: p is not the last block
      r.deallocate(const_cast<unsigned char*>(p), small, 8);
    } else {
      for (int i = 0; i < 100; ++i) (void)r.allocate(3000, 8);  // and a few chunks more
      what == "rewind" ? rewind() : release();
    }
    if (p[8] == 42) std::puts("?");  // the bug: a read of the block taken back
  } else if (what == "leak") {
    // Two blocks first, kept (reachable from here): a slab's first slot is named by the slab's own header, which
    // the leak check reads as a pointer to it.
    void* kept[2] = {r.allocate(small, 8), r.allocate(small, 8)};
    leak_a_block(r);
    std::printf("kept %p %p\n", kept[0], kept[1]);
    std::fflush(stdout);
    std::_Exit(0);  // the resources stay (as a process-wide heap does at exit): only the block leaks
  } else {
    std::fprintf(stderr, "memcheck_probe: unknown case %s\n", argv[2]);
    return 2;
  }
  return 0;
}
