// SPDX-License-Identifier: MIT
// Built with AddressSanitizer: a program's heap bugs inside strata's pools are reported by ASan at the faulting
// access, as they are for malloc. Each case does one bug in a forked child and checks the child's report; the clean
// cases check that what the contracts allow is not reported. (Without ASan the file has no cases: there is nothing
// to tell ASan.)
#include <strata/detail/core/sanitizer.hpp>

#if STRATA_ADDRESS_SANITIZER

#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory_resource>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <strata/arena_resource.hpp>
#include <strata/bitmap_resource.hpp>
#include <strata/debug_resource.hpp>
#include <strata/fixed_pool_resource.hpp>
#include <strata/free_list_resource.hpp>
#include <strata/page_resource.hpp>
#include <strata/strata.h>
#include <strata/thread_cache_resource.hpp>

namespace {

struct outcome {
  bool died = false;   // the child ended other than by returning from `bug`
  std::string report;  // what it wrote to stderr
};

// Runs `bug` in a forked child whose stderr comes back through a pipe; the child exits 0 if the bug went unreported.
outcome in_child(const std::function<void()>& bug) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  std::fflush(nullptr);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], 2);
    try {
      bug();
    } catch (...) {  // a failed REQUIRE in the child: no report, and the parent's checks fail
      _exit(3);
    }
    _exit(0);
  }
  close(fds[1]);
  outcome o;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) o.report.append(buf, static_cast<std::size_t>(n));
  close(fds[0]);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  o.died = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  return o;
}

// The child's report is ASan's, for an access of `kind` ("READ" or "WRITE") to poisoned memory.
void check_reported(const outcome& o, const char* kind) {
  CHECK(o.died);
  CHECK(o.report.find("AddressSanitizer: use-after-poison") != std::string::npos);
  CHECK(o.report.find(std::string(kind) + " of size") != std::string::npos);
  if (!o.died || o.report.find("use-after-poison") == std::string::npos) MESSAGE(o.report);
}

void check_clean(const outcome& o) {
  CHECK_FALSE(o.died);
  CHECK(o.report.find("AddressSanitizer") == std::string::npos);
  if (o.died) MESSAGE(o.report);
}

// A read or write the compiler keeps (ASan instruments it).
unsigned char read_byte(const void* p, std::size_t i) { return static_cast<const volatile unsigned char*>(p)[i]; }
void write_byte(void* p, std::size_t i) { static_cast<volatile unsigned char*>(p)[i] = 0x5A; }
// Writes n bytes at p (out of line: the compiler cannot know what a resize or usable_size() made addressable).
__attribute__((noinline)) void fill(void* p, int byte, std::size_t n) { std::memset(p, byte, n); }

// The three bugs every pool must show, for a block of `size` bytes: a read of its first byte and a write of its last
// after its free, and a write of the byte past `size` while it is live.
void check_size(std::pmr::memory_resource& r, std::size_t size) {
  CAPTURE(size);
  check_reported(in_child([&] {
                   void* p = r.allocate(size);
                   r.deallocate(p, size);
                   (void)read_byte(p, 0);
                 }),
                 "READ");
  check_reported(in_child([&] {
                   void* p = r.allocate(size);
                   r.deallocate(p, size);
                   write_byte(p, size - 1);
                 }),
                 "WRITE");
  check_reported(in_child([&] {
                   void* p = r.allocate(size);
                   write_byte(p, size);
                 }),
                 "WRITE");
}

// Rounds of blocks of size(i) bytes, each written whole, then freed: nothing reported.
template <class Size>
void check_churn_clean(std::pmr::memory_resource& r, Size size) {
  check_clean(in_child([&] {
    for (int round = 0; round < 3; ++round) {
      void* ps[64];
      for (std::size_t i = 0; i < 64; ++i) {
        ps[i] = r.allocate(size(i));
        fill(ps[i], static_cast<int>(i), size(i));
      }
      for (std::size_t i = 0; i < 64; ++i) r.deallocate(ps[i], size(i));
    }
  }));
}

}  // namespace

TEST_CASE("asan: thread_cache_resource: a read and a write after free are reported at the access") {
  strata::thread_cache_resource r;
  for (std::size_t size : {16u, 24u, 100u, 1000u, 4096u, 8000u}) check_size(r, size);
}

TEST_CASE("asan: thread_cache_resource: a byte past the size asked for is reported, in the class's padding too") {
  strata::thread_cache_resource r;
  // 13 bytes in the 16-byte class, 1,000 in the 1,024-byte class, 5,000 in a 5,120-byte class: the first byte past
  // what was asked, and the last byte of the slot.
  for (std::size_t size : {13u, 1000u, 5000u}) {
    CAPTURE(size);
    const std::size_t slot = r.round_size(size);
    REQUIRE(slot > size);
    check_reported(in_child([&] {
                     void* p = r.allocate(size);
                     write_byte(p, size);
                   }),
                   "WRITE");
    check_reported(in_child([&] {
                     void* p = r.allocate(size);
                     (void)read_byte(p, slot - 1);
                   }),
                   "READ");
  }
  // A slot's last byte, with the next slot never handed out: the overflow by one lands in poisoned memory.
  check_reported(in_child([&] {
                   void* p = r.allocate(64);
                   write_byte(p, 64);
                 }),
                 "WRITE");
}

TEST_CASE("asan: thread_cache_resource: a zero-size block can be neither read nor written") {
  strata::thread_cache_resource r;
  check_reported(in_child([&] { (void)read_byte(r.allocate(0), 0); }), "READ");
  check_reported(in_child([&] { write_byte(r.allocate(0), 0); }), "WRITE");
}

TEST_CASE("asan: thread_cache_resource: what the contracts allow is not reported") {
  strata::thread_cache_resource r;
  check_clean(in_child([&] {
    // Every byte asked for, through reuse of freed slots, a resize in place and usable_size().
    for (int round = 0; round < 3; ++round) {
      void* ps[64];
      for (std::size_t i = 0; i < 64; ++i) {
        const std::size_t n = 1 + i * 37;
        ps[i] = r.allocate(n);
        std::memset(ps[i], static_cast<int>(i), n);
      }
      for (std::size_t i = 0; i < 64; ++i) r.deallocate(ps[i], 1 + i * 37);
    }
    void* p = r.allocate(20);  // 32-byte class: grows to 30 in place
    REQUIRE(r.resize(p, 20, 30));
    fill(p, 1, 30);
    fill(p, 2, r.usable_size(p));
    r.deallocate(p, 30);
  }));
}

TEST_CASE("asan: thread_cache_resource: a block shrunk in place reports a read past its new size") {
  strata::thread_cache_resource r;
  check_reported(in_child([&] {
                   void* p = r.allocate(30);
                   REQUIRE(r.resize(p, 30, 18));
                   (void)read_byte(p, 20);
                 }),
                 "READ");
}

TEST_CASE("asan: C API default heap: use after free, overflow and realloc in place are reported") {
  check_reported(in_child([] {
                   void* p = strata_malloc(40);
                   strata_free(p, 40);
                   (void)read_byte(p, 8);
                 }),
                 "READ");
  check_reported(in_child([] {
                   void* p = strata_malloc(40);
                   strata_free_unsized(p);
                   write_byte(p, 0);
                 }),
                 "WRITE");
  check_reported(in_child([] {
                   void* p = strata_malloc(40);
                   write_byte(p, 40);
                 }),
                 "WRITE");
  // 40 bytes in the 48-byte class: realloc to 44 and to 36 stays in the slot, with exactly that much addressable.
  REQUIRE(strata_round_size(40) == strata_round_size(44));
  REQUIRE(strata_round_size(40) == strata_round_size(36));
  for (std::size_t n : {44u, 36u}) {
    CAPTURE(n);
    check_reported(in_child([n] {
                     void* p = strata_malloc(40);
                     void* q = strata_realloc_unsized(p, n);
                     REQUIRE(q == p);
                     fill(q, 1, n);
                     (void)read_byte(q, n);
                   }),
                   "READ");
  }
  check_clean(in_child([] {
    void* p = strata_malloc(40);
    std::memset(p, 1, 40);
    void* q = strata_realloc_unsized(p, 3000);  // moves: the whole old slot is copied, no report
    std::memset(q, 2, 3000);
    fill(q, 3, strata_usable_size(q));
    strata_free_unsized(q);
  }));
}

// bitmap_resource, and the synchronized one with each check mode (standard: threads' free caches in front of the
// class locks; strict: every free into the bitmaps under the lock): the same bugs, through the pmr interface.
namespace {
template <class Options>
Options strict_options() {
  Options o;
  o.checks = strata::check_mode::strict;
  return o;
}
struct plain_bitmap {
  strata::bitmap_resource r;
};
struct sync_bitmap {
  strata::synchronized_bitmap_resource r;
};
struct strict_bitmap {
  strata::synchronized_bitmap_resource r{strict_options<strata::bitmap_resource::options>()};
};
}  // namespace

TEST_CASE_TEMPLATE("asan: bitmap_resource: use after free and overflow are reported at the access", T, plain_bitmap,
                   sync_bitmap, strict_bitmap) {
  T t;
  for (std::size_t size : {8u, 21u, 100u, 1000u, 4000u}) check_size(t.r, size);
  check_reported(in_child([&] { (void)read_byte(t.r.allocate(0), 0); }), "READ");
  check_churn_clean(t.r, [](std::size_t i) { return 1 + i * 53; });
}

// fixed_pool_resource (48-byte blocks), synchronized with each check mode: single blocks and runs of blocks.
namespace {
struct plain_pool {
  strata::fixed_pool_resource r{48};
};
struct sync_pool {
  strata::synchronized_fixed_pool_resource r{48};
};
struct strict_pool {
  strata::synchronized_fixed_pool_resource r{48, strict_options<strata::fixed_pool_resource::options>()};
};
struct strict_plain_pool {
  strata::fixed_pool_resource r{48, strict_options<strata::fixed_pool_resource::options>()};
};
}  // namespace

TEST_CASE_TEMPLATE("asan: fixed_pool_resource: use after free and overflow are reported at the access", T, plain_pool,
                   sync_pool, strict_pool, strict_plain_pool) {
  T t;
  auto& r = t.r;
  for (std::size_t size : {48u, 40u, 130u}) check_size(r, size);  // a block, a block with padding, a run of three
  check_reported(in_child([&] {  // a run shrunk in place: its freed tail
                   void* p = r.allocate(140);
                   REQUIRE(r.resize(p, 140, 50));
                   (void)read_byte(p, 100);
                 }),
                 "READ");
  check_churn_clean(r, [](std::size_t i) -> std::size_t { return i % 5 == 0 ? 100 : 48; });
  check_clean(in_child([&] {
    void* p = r.allocate(50);
    REQUIRE(r.resize(p, 50, 140));  // grows in place into the free blocks after it (a fresh pool)
    fill(p, 1, 140);
    void* z = r.allocate_zeroed(48);
    fill(z, 2, 48);
    r.deallocate(z, 48);
    r.deallocate(p, 140);
  }));
}

// free_list_resource (every fit policy's engine is the same; segregated fit with its quick lists, the default) and
// the synchronized one with its threads' caches; the thread cache's shared tier, which is a free list too.
namespace {
struct plain_list {
  strata::free_list_resource r;
};
struct sync_list {
  strata::synchronized_free_list_resource r;
};
struct first_fit_list {
  strata::free_list_resource r{[] {
    strata::free_list_resource::options o;
    o.policy = strata::fit_policy::first_fit;
    return o;
  }()};
};
}  // namespace

TEST_CASE_TEMPLATE("asan: free_list_resource: use after free and overflow are reported at the access", T, plain_list,
                   sync_list, first_fit_list) {
  T t;
  for (std::size_t size : {16u, 100u, 1000u, 5000u, 40000u}) check_size(t.r, size);
  check_reported(in_child([&] {  // shrunk in place: the freed tail
                   void* p = t.r.allocate(4000);
                   REQUIRE(t.r.resize(p, 4000, 1000));
                   (void)read_byte(p, 2000);
                 }),
                 "READ");
  check_churn_clean(t.r, [](std::size_t i) { return 1 + i * 97; });
  check_clean(in_child([&] {
    void* p = t.r.allocate(1000);
    REQUIRE(t.r.resize(p, 1000, 3000));  // grows in place into the free block after it (a fresh resource)
    fill(p, 1, 3000);
    t.r.deallocate(p, 3000);
  }));
}

// arena_resource and synchronized_arena_resource, over the page resource and over a caller's buffer: a chunk's
// unused tail, alignment padding, blocks given back by deallocate (the last one, which the position rolls back over,
// and any other, which the arena never reuses before a rewind), by rewind, by a scope's end and by release() are
// poisoned; the caller's buffer is the caller's again, whole, when the arena goes.
namespace {
struct plain_arena {
  strata::arena_resource r;
};
struct sync_arena {
  strata::synchronized_arena_resource r;
};
struct buffer_arena {
  alignas(64) unsigned char buffer[8192];
  strata::arena_resource r{buffer, sizeof buffer};
};
}  // namespace

TEST_CASE_TEMPLATE("asan: arena_resource: overflow and use after deallocate, rewind and release are reported", T,
                   plain_arena, sync_arena, buffer_arena) {
  T t;
  auto& r = t.r;
  // 40000 bytes: a large block, in a chunk of its own.
  for (std::size_t size : {1u, 8u, 21u, 100u, 5000u, 40000u}) check_size(r, size);
  check_reported(in_child([&] {  // a block that is not the last one: only counted, but poisoned
                   void* a = r.allocate(24);
                   void* b = r.allocate(24);
                   r.deallocate(a, 24);
                   (void)read_byte(a, 0);
                   r.deallocate(b, 24);
                 }),
                 "READ");
  check_reported(in_child([&] {  // alignment padding between two blocks
                   auto* a = static_cast<unsigned char*>(r.allocate(1, 1));
                   void* b = r.allocate(8, 64);
                   REQUIRE(static_cast<unsigned char*>(b) - a > 8);
                   (void)read_byte(a, 8);
                 }),
                 "READ");
  check_reported(in_child([&] { (void)read_byte(r.allocate(0), 0); }), "READ");
  check_reported(in_child([&] {  // rewind, within the chunk
                   const auto m = r.mark();
                   void* p = r.allocate(100);
                   r.rewind(m);
                   (void)read_byte(p, 50);
                 }),
                 "READ");
  check_reported(in_child([&] {  // rewind over chunks: a block of a later chunk, kept as a spare
                   (void)r.allocate(16);
                   const auto m = r.mark();
                   void* p = nullptr;
                   for (int i = 0; i < 200; ++i) p = r.allocate(4000);
                   r.rewind(m);
                   write_byte(p, 0);
                 }),
                 "WRITE");
  check_reported(in_child([&] {  // a scope's end
                   void* p = nullptr;
                   {
                     typename decltype(t.r)::scope s(r);
                     p = r.allocate(300);
                   }
                   (void)read_byte(p, 299);
                 }),
                 "READ");
  check_reported(in_child([&] {  // release(), over a kept chunk or the caller's buffer
                   void* p = r.allocate(100);
                   r.release();
                   (void)read_byte(p, 0);
                 }),
                 "READ");
  check_churn_clean(r, [](std::size_t i) { return 1 + i * 53; });
  check_clean(in_child([&] {
    void* p = r.allocate(100);
    // The last block grows in place (not the synchronized arena's): its new bytes are addressable.
    const std::size_t n = r.resize(p, 100, 600) ? 600 : 100;
    fill(p, 1, n);
    REQUIRE(r.resize(p, n, 50));
    fill(p, 2, 50);
    const auto m = r.mark();
    for (int i = 0; i < 100; ++i) fill(r.allocate(3000), 3, 3000);
    r.rewind(m);
    for (int i = 0; i < 100; ++i) fill(r.allocate(2999), 4, 2999);  // rewound bytes handed out again
    r.release();
    fill(r.allocate(5000), 5, 5000);
  }));
}

TEST_CASE("asan: arena_resource: a shrunk block's tail is reported, and the caller's buffer while the arena owns it") {
  strata::arena_resource r;
  check_reported(in_child([&] {
                   void* p = r.allocate(1000);
                   (void)r.allocate(8);
                   REQUIRE(r.resize(p, 1000, 100));  // not the last block: shrinks all the same
                   (void)read_byte(p, 100);
                 }),
                 "READ");
  alignas(64) unsigned char buffer[4096];
  check_reported(in_child([&] {  // the buffer's unused part, while the arena owns it
                   strata::arena_resource a(buffer, sizeof buffer);
                   (void)a.allocate(100);
                   (void)read_byte(buffer, 2000);
                 }),
                 "READ");
  check_clean(in_child([&] {
    {
      strata::arena_resource a(buffer, sizeof buffer);
      fill(a.allocate(100), 1, 100);
      fill(a.allocate(5000), 2, 5000);  // past the buffer: a chunk from upstream
    }
    fill(buffer, 3, sizeof buffer);
  }));
}

TEST_CASE("asan: synchronized_arena_resource: threads' blocks side by side are never poisoned by another thread") {
  // Odd sizes at alignment 1: without blocks of whole granules, one thread's poisoning of a freed block (or of the
  // tail past its bytes) would write a shadow byte another thread's fresh neighbour shares.
  strata::synchronized_arena_resource r;
  check_clean(in_child([&] {
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&r, t] {
        for (int i = 0; i < 20000; ++i) {
          const std::size_t n = 1 + static_cast<std::size_t>((i * 7 + t) % 13);
          void* p = r.allocate(n, 1);
          fill(p, t, n);
          void* q = r.allocate(n, 1);
          fill(q, t, n);
          r.deallocate(q, n, 1);  // often the last block: the position rolls back
          fill(p, t + 1, n);
          r.deallocate(p, n, 1);
        }
      });
    for (auto& th : threads) th.join();
  }));
}

TEST_CASE("asan: thread_cache_resource: mid-size blocks (the shared tier) report use after free and overflow") {
  strata::thread_cache_resource r;
  REQUIRE(r.tier_of(20000) == strata::cache_tier::shared);
  for (std::size_t size : {10000u, 20000u, 100000u}) check_size(r, size);
}

TEST_CASE("asan: page_resource: a cached span, the rest of the last page and a shrunk tail are reported") {
  strata::page_resource r;
  for (std::size_t size : {std::size_t{1}, std::size_t{5000}, std::size_t{100000}, (std::size_t{3} << 20) + 5}) check_size(r, size);
  check_reported(in_child([&] { (void)read_byte(r.allocate(0), 0); }), "READ");
  check_reported(in_child([&] {
                   void* p = r.allocate(std::size_t{4} << 20);
                   REQUIRE(r.resize(p, std::size_t{4} << 20, 10000));
                   (void)read_byte(p, 20000);
                 }),
                 "READ");
  check_clean(in_child([&] {
    void* p = r.allocate((std::size_t{1} << 20) + 100);  // a span this large has room reserved after it
    REQUIRE(r.resize(p, (std::size_t{1} << 20) + 100, std::size_t{2} << 20));  // grows into it
    fill(p, 1, std::size_t{2} << 20);
    void* z = r.allocate_zeroed(30000);
    fill(z, 2, 30000);
    r.deallocate(z, 30000);
    r.deallocate(p, std::size_t{2} << 20);
  }));
  check_churn_clean(r, [](std::size_t i) { return 1 + i * 4099; });
}

TEST_CASE("asan: thread_cache_resource: large blocks (page spans) report use after free and overflow") {
  strata::thread_cache_resource r;
  REQUIRE(r.tier_of(std::size_t{1} << 20) == strata::cache_tier::upstream);
  for (std::size_t size : {(std::size_t{1} << 20) + 100, (std::size_t{3} << 20) + 5}) check_size(r, size);
}

TEST_CASE("asan: debug_resource: its canaries, its quarantine and a shrunk block's tail are reported at the access") {
  strata::debug_resource r;
  for (std::size_t size : {1u, 24u, 100u, 5000u, 100000u}) check_size(r, size);
  check_reported(in_child([&] { (void)read_byte(r.allocate(0), 0); }), "READ");
  check_reported(in_child([&] {
                   void* p = r.allocate(100);
                   REQUIRE(r.resize(p, 100, 40));
                   (void)read_byte(p, 50);
                 }),
                 "READ");
  check_clean(in_child([&] {
    void* p = r.allocate(100);
    REQUIRE(r.resize(p, 100, 40));
    REQUIRE(r.resize(p, 40, 100));  // back up to its size: all of it usable again
    fill(p, 1, 100);
    void* z = r.allocate_zeroed(3000);
    fill(z, 2, 3000);
    r.deallocate(z, 3000);
    r.deallocate(p, 100);
    if (r.check_all() != 0) std::abort();  // its own checks read past the poison
  }));
  check_churn_clean(r, [](std::size_t i) { return 1 + i * 97; });
}

#endif  // STRATA_ADDRESS_SANITIZER
