/* SPDX-License-Identifier: MIT */
/* tests/c_api_test.c: the C API, compiled as C99 (-Wall -Wextra -Werror -pedantic). Each case runs in its own
 * process: `strata_c_api_test NAME` (ctest registers one entry per case); no argument runs them all. */
#include <strata/strata.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_failures = 0;

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
      ++g_failures;                                                                 \
    }                                                                               \
  } while (0)

#define REQUIRE(cond)                                                               \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond);    \
      exit(1);                                                                      \
    }                                                                               \
  } while (0)

/* ---- helpers ------------------------------------------------------------------------------------------------------ */

/* What strata.h promises for a plain allocation of `size` bytes. */
static size_t plain_alignment(size_t size) { return size >= 16 ? 16 : 8; }

static int aligned_to(const void* p, size_t alignment) { return ((uintptr_t)p & (alignment - 1)) == 0; }

static void fill(void* p, size_t n, unsigned seed) {
  unsigned char* b = (unsigned char*)p;
  size_t i;
  for (i = 0; i < n; ++i) b[i] = (unsigned char)(seed + i * 7u);
}

static int filled(const void* p, size_t n, unsigned seed) {
  const unsigned char* b = (const unsigned char*)p;
  size_t i;
  for (i = 0; i < n; ++i)
    if (b[i] != (unsigned char)(seed + i * 7u)) return 0;
  return 1;
}

static int all_zero(const void* p, size_t n) {
  const unsigned char* b = (const unsigned char*)p;
  size_t i;
  for (i = 0; i < n; ++i)
    if (b[i] != 0) return 0;
  return 1;
}

static strata_stats_t heap_stats(void) {
  strata_stats_t s;
  REQUIRE(strata_stats(&s));
  return s;
}

static strata_stats_t stats_of(strata_resource_t* r) {
  strata_stats_t s;
  REQUIRE(strata_resource_stats(r, &s));
  return s;
}

/* Misuse reports are recorded here instead of aborting. */
typedef struct recorder {
  int count;
  strata_misuse_kind_t last_kind;
  const void* last_pointer;
  char last_message[512];
} recorder;

static void record_misuse(const strata_misuse_t* m, void* context) {
  recorder* r = (recorder*)context;
  ++r->count;
  r->last_kind = m->kind;
  r->last_pointer = m->pointer;
  strncpy(r->last_message, m->message, sizeof r->last_message - 1);
  r->last_message[sizeof r->last_message - 1] = '\0';
}

static const size_t sizes[] = {0,    1,     2,     3,     7,     8,      9,      15,     16,     17,        24,
                               25,   31,    32,    33,    48,    64,     100,    127,    128,    200,       255,
                               256,  500,   1000,  1024,  2000,  4095,   4096,   5000,   8191,   8192,      8193,
                               9000, 16384, 20000, 65536, 65537, 100000, 262143, 262144, 262145, 1u << 20, 3000000};
#define SIZE_COUNT (sizeof sizes / sizeof sizes[0])

/* ---- the default heap --------------------------------------------------------------------------------------------- */

/* A handle just made (not NULL): one block allocated and freed, then the handle destroyed. */
static void use_once_and_destroy(strata_resource_t* r) {
  void* p;
  CHECK(r != NULL);
  if (r == NULL) return;
  p = strata_resource_malloc(r, 40);
  CHECK(p != NULL);
  strata_resource_free(r, p, 40);
  strata_resource_destroy(r);
}

static void test_malloc_free(void) {
  void* blocks[SIZE_COUNT];
  const strata_stats_t before = heap_stats();
  size_t expected_bytes = 0, i;
  for (i = 0; i < SIZE_COUNT; ++i) {
    const size_t n = sizes[i];
    blocks[i] = strata_malloc(n);
    REQUIRE(blocks[i] != NULL);
    CHECK(aligned_to(blocks[i], plain_alignment(n)));
    CHECK(strata_round_size(n) >= n);
    CHECK(strata_usable_size(blocks[i]) == strata_round_size(n));
    fill(blocks[i], n, (unsigned)i);
    expected_bytes += strata_round_size(n);
  }
  {
    const strata_stats_t mid = heap_stats();
    CHECK(mid.bytes_in_use - before.bytes_in_use == expected_bytes);
    CHECK(mid.allocations - before.allocations == SIZE_COUNT);
  }
  for (i = 0; i < SIZE_COUNT; ++i) {
    CHECK(filled(blocks[i], sizes[i], (unsigned)i));
    strata_free(blocks[i], sizes[i]);
  }
  {
    const strata_stats_t after = heap_stats();
    CHECK(after.bytes_in_use == before.bytes_in_use);
    CHECK(after.deallocations - before.deallocations == SIZE_COUNT);
  }
  strata_free(NULL, 0); /* ignored */
  strata_free(NULL, 123);
}

static void test_free_any_size_of_the_same_block(void) {
  /* A size that rounds to the same block is accepted: 20 and 30 are both in the 32-byte class. */
  void* p;
  REQUIRE(strata_round_size(20) == strata_round_size(30));
  p = strata_malloc(20);
  REQUIRE(p != NULL);
  strata_free(p, 30);
  CHECK(heap_stats().bytes_in_use == 0);
}

static void test_zero_sizes(void) {
  void* a = strata_malloc(0);
  void* b = strata_malloc(0);
  void* c;
  strata_resource_t* pool = strata_fixed_pool_create(32, 0, NULL);
  REQUIRE(a != NULL && b != NULL);
  CHECK(a != b);
  CHECK(strata_round_size(0) >= 1);
  strata_free(a, 0);
  strata_free(b, 0);
  c = strata_calloc(0, 16);
  CHECK(c != NULL);
  strata_free(c, 0);
  c = strata_calloc(16, 0);
  CHECK(c != NULL);
  strata_free(c, 0);
  c = strata_malloc(10);
  REQUIRE(c != NULL);
  CHECK(strata_realloc(c, 10, 0) == NULL); /* frees */
  CHECK(heap_stats().bytes_in_use == 0);
  REQUIRE(pool != NULL);
  a = strata_resource_malloc(pool, 0);
  b = strata_resource_malloc(pool, 0);
  CHECK(a != NULL && b != NULL && a != b);
  strata_resource_free(pool, a, 0);
  strata_resource_free(pool, b, 0);
  CHECK(stats_of(pool).bytes_in_use == 0);
  strata_resource_destroy(pool);
  a = strata_malloc_aligned(0, 64);
  CHECK(a != NULL && aligned_to(a, 64));
  strata_free_aligned(a, 0, 64);
}

static void test_calloc(void) {
  size_t i;
  /* Dirty the blocks first, so that zeroing is seen to happen. */
  for (i = 0; i < SIZE_COUNT; ++i) {
    const size_t n = sizes[i];
    unsigned char* p = (unsigned char*)strata_malloc(n);
    REQUIRE(p != NULL);
    memset(p, 0xAB, n);
    strata_free(p, n);
    p = (unsigned char*)strata_calloc(1, n);
    REQUIRE(p != NULL);
    CHECK(all_zero(p, n));
    strata_free(p, n);
  }
  {
    int* v = (int*)strata_calloc(1000, sizeof(int));
    REQUIRE(v != NULL);
    CHECK(all_zero(v, 1000 * sizeof(int)));
    strata_free(v, 1000 * sizeof(int));
  }
  /* count * size overflows: NULL, EOVERFLOW, errno ENOMEM, nothing allocated. */
  {
    const strata_stats_t before = heap_stats();
    strata_clear_error();
    errno = 0;
    CHECK(strata_calloc(SIZE_MAX / 2 + 1, 2) == NULL);
    CHECK(strata_last_error() == STRATA_EOVERFLOW);
    CHECK(errno == ENOMEM);
    CHECK(strata_calloc(2, SIZE_MAX) == NULL);
    CHECK(strata_calloc(SIZE_MAX, SIZE_MAX) == NULL);
    CHECK(heap_stats().allocations == before.allocations);
  }
}

static void test_huge_requests(void) {
  strata_clear_error();
  errno = 0;
  CHECK(strata_malloc(SIZE_MAX) == NULL);
  CHECK(strata_last_error() == STRATA_ENOMEM);
  CHECK(errno == ENOMEM);
  CHECK(strata_malloc(SIZE_MAX / 2) == NULL);
  CHECK(strata_malloc_aligned(SIZE_MAX - 100, 4096) == NULL);
  CHECK(strata_persistent_malloc(SIZE_MAX - 8) == NULL);
  CHECK(strata_last_error() == STRATA_ENOMEM);
  /* The heap is still fine. */
  {
    void* p = strata_malloc(100);
    CHECK(p != NULL);
    strata_free(p, 100);
  }
}

static void test_realloc_keeps_contents(void) {
  /* Through every tier and back: each step keeps the first min(old, new) bytes. */
  static const size_t steps[] = {1, 16, 17, 100, 5000, 8192, 8193, 100000, 262144, 300000, 1u << 21, 70000, 9000, 40, 3};
  size_t i, old = 0;
  void* p = strata_realloc(NULL, 0, steps[0]); /* p NULL: malloc */
  REQUIRE(p != NULL);
  fill(p, steps[0], 42);
  old = steps[0];
  for (i = 1; i < sizeof steps / sizeof steps[0]; ++i) {
    const size_t n = steps[i];
    const size_t keep = old < n ? old : n;
    void* q = strata_realloc(p, old, n);
    REQUIRE(q != NULL);
    CHECK(aligned_to(q, plain_alignment(n)));
    CHECK(filled(q, keep, 42));
    fill(q, n, 42);
    p = q;
    old = n;
  }
  strata_free(p, old);
  CHECK(heap_stats().bytes_in_use == 0);
}

static void test_realloc_moves_when_it_must(void) {
  /* A thread-tier block cannot grow past its class: realloc moves it, keeps the bytes and frees the old block. */
  unsigned char* p = (unsigned char*)strata_malloc(24);
  unsigned char* q;
  const strata_stats_t before = heap_stats();
  REQUIRE(p != NULL);
  fill(p, 24, 7);
  CHECK(!strata_resize(p, 24, 4000));
  q = (unsigned char*)strata_realloc(p, 24, 4000);
  REQUIRE(q != NULL);
  CHECK(q != p);
  CHECK(filled(q, 24, 7));
  CHECK(heap_stats().deallocations == before.deallocations + 1);
  /* Within its class, realloc stays put. */
  CHECK(strata_realloc(q, 4000, 4001) == q);
  strata_free(q, 4001);
  CHECK(heap_stats().bytes_in_use == 0);
}

static void test_realloc_failure_keeps_the_block(void) {
  void* p = strata_malloc(64);
  REQUIRE(p != NULL);
  fill(p, 64, 3);
  strata_clear_error();
  CHECK(strata_realloc(p, 64, SIZE_MAX / 2) == NULL);
  CHECK(strata_last_error() == STRATA_ENOMEM);
  CHECK(filled(p, 64, 3));
  strata_free(p, 64);
  CHECK(heap_stats().bytes_in_use == 0);
}

static void test_resize(void) {
  /* Same class: in place. */
  void* p = strata_malloc(20);
  REQUIRE(p != NULL);
  CHECK(strata_resize(p, 20, 32));
  CHECK(strata_resize(p, 32, 17));
  /* Another class: refused, unchanged, still freed with its old size. */
  CHECK(!strata_resize(p, 17, 33));
  CHECK(!strata_resize(p, 17, 8));
  CHECK(strata_usable_size(p) == strata_round_size(17));
  strata_free(p, 17);
  /* A shared-tier block grows in place when the space after it is free, and always shrinks in place. */
  {
    void* big = strata_malloc(20000);
    REQUIRE(big != NULL);
    fill(big, 20000, 9);
    CHECK(strata_resize(big, 20000, 12000));
    CHECK(filled(big, 12000, 9));
    CHECK(strata_usable_size(big) == strata_round_size(12000));
    if (strata_resize(big, 12000, 30000)) {
      CHECK(strata_usable_size(big) == strata_round_size(30000));
      strata_free(big, 30000);
    } else {
      strata_free(big, 12000);
    }
  }
  /* Across tiers: refused. */
  {
    void* q = strata_malloc(100);
    REQUIRE(q != NULL);
    CHECK(!strata_resize(q, 100, 100000));
    strata_free(q, 100);
  }
  CHECK(!strata_resize(NULL, 0, 10));
  CHECK(heap_stats().bytes_in_use == 0);
}

static void test_zero_size_alignment(void) {
  /* Size 0 is the smallest block, and it honours the alignment asked for, on the heap and on a thread cache handle. */
  strata_resource_t* tc = strata_thread_cache_create(NULL);
  size_t a;
  REQUIRE(tc != NULL);
  for (a = 1; a <= (size_t)1 << 16; a <<= 1) {
    void* p = strata_malloc_aligned(0, a);
    void* q = strata_malloc_aligned(0, a);
    void* t = strata_resource_malloc_aligned(tc, 0, a);
    REQUIRE(p != NULL && q != NULL && t != NULL);
    CHECK(p != q);
    CHECK(aligned_to(p, a));
    CHECK(aligned_to(q, a));
    CHECK(aligned_to(t, a));
    strata_free_aligned(p, 0, a);
    strata_free_aligned(q, 0, a);
    strata_resource_free_aligned(tc, t, 0, a);
  }
  CHECK(heap_stats().bytes_in_use == 0);
  CHECK(stats_of(tc).bytes_in_use == 0);
  CHECK(strata_resource_check(tc));
  strata_resource_destroy(tc);
}

static void test_realloc_across_plain_alignments(void) {
  /* Sizes below 16 are 8-aligned, from 16 up 16-aligned: a block reallocated across that line is freed with the new
   * size at the new alignment, on the heap and on a thread cache handle, with no report and exact counts. */
  static const size_t pairs[][2] = {{16, 2}, {16, 8}, {16, 12}, {2, 16}, {8, 16}, {12, 16}, {24, 7}, {7, 24}, {15, 16}};
  strata_resource_t* tc = strata_thread_cache_create(NULL);
  recorder rec;
  size_t i;
  REQUIRE(tc != NULL);
  memset(&rec, 0, sizeof rec);
  strata_set_misuse_handler(record_misuse, &rec);
  for (i = 0; i < sizeof pairs / sizeof pairs[0]; ++i) {
    const size_t from = pairs[i][0], to = pairs[i][1], keep = from < to ? from : to;
    void* p = strata_malloc(from);
    void* t = strata_resource_malloc(tc, from);
    REQUIRE(p != NULL && t != NULL);
    fill(p, from, 7);
    fill(t, from, 8);
    p = strata_realloc(p, from, to);
    t = strata_resource_realloc(tc, t, from, to);
    REQUIRE(p != NULL && t != NULL);
    CHECK(filled(p, keep, 7));
    CHECK(filled(t, keep, 8));
    CHECK(aligned_to(p, plain_alignment(to)));
    strata_free(p, to);
    strata_resource_free(tc, t, to);
  }
  CHECK(rec.count == 0);
  CHECK(heap_stats().bytes_in_use == 0);
  CHECK(stats_of(tc).bytes_in_use == 0);
  strata_set_misuse_handler(NULL, NULL);
  strata_resource_destroy(tc);
}

static void test_resize_checks_the_block(void) {
  /* A freed pointer or a static buffer is misuse for resize and realloc, also when the sizes round to the same
   * block (20 and 24 both take 32 bytes): reported, nothing changes, false or NULL. */
  static char buffer[64];
  recorder rec;
  strata_resource_t* tc = strata_thread_cache_create(NULL);
  void* p;
  void* t;
  strata_stats_t before, tc_before;
  REQUIRE(tc != NULL);
  REQUIRE(strata_round_size(20) == strata_round_size(24));
  memset(&rec, 0, sizeof rec);
  strata_set_misuse_handler(record_misuse, &rec);
  p = strata_malloc(20);
  t = strata_resource_malloc(tc, 20);
  REQUIRE(p != NULL && t != NULL);
  strata_free(p, 20);
  strata_resource_free(tc, t, 20);
  before = heap_stats();
  tc_before = stats_of(tc);

  CHECK(!strata_resize(p, 20, 24));
  CHECK(rec.count == 1 && rec.last_kind == STRATA_MISUSE_DOUBLE_FREE && rec.last_pointer == p);
  CHECK(!strata_resize(p, 20, 20));
  CHECK(rec.count == 2 && rec.last_kind == STRATA_MISUSE_DOUBLE_FREE);
  strata_clear_error();
  CHECK(strata_realloc(p, 20, 24) == NULL);
  CHECK(rec.count == 3 && rec.last_kind == STRATA_MISUSE_DOUBLE_FREE && rec.last_pointer == p);
  CHECK(strata_last_error() == STRATA_EMISUSE);
  CHECK(strata_realloc(p, 20, 4000) == NULL); /* a move would read and free a block that is not there */
  CHECK(rec.count == 4);
  CHECK(!strata_resize(buffer, 20, 24));
  CHECK(rec.count == 5 && rec.last_kind == STRATA_MISUSE_FOREIGN_POINTER && rec.last_pointer == buffer);
  CHECK(strata_realloc(buffer, 20, 24) == NULL);
  CHECK(rec.count == 6 && rec.last_kind == STRATA_MISUSE_FOREIGN_POINTER);

  CHECK(!strata_resource_resize(tc, t, 20, 24));
  CHECK(rec.count == 7 && rec.last_kind == STRATA_MISUSE_DOUBLE_FREE && rec.last_pointer == t);
  CHECK(strata_resource_realloc(tc, t, 20, 24) == NULL);
  CHECK(rec.count == 8 && rec.last_kind == STRATA_MISUSE_DOUBLE_FREE);
  CHECK(!strata_resource_resize(tc, buffer, 20, 20));
  CHECK(rec.count == 9 && rec.last_kind == STRATA_MISUSE_FOREIGN_POINTER);
  /* A pointer that the new size's alignment rules out, or a resize across the 8/16 line: not in place either way,
   * but a pointer that is no live block is still reported. */
  CHECK(!strata_resize(buffer + 1, 20, 24));
  CHECK(rec.count == 10);
  CHECK(!strata_resize(p, 8, 4000));
  CHECK(rec.count == 11 && rec.last_pointer == p);
  {
    const strata_stats_t after = heap_stats();
    const strata_stats_t tc_after = stats_of(tc);
    CHECK(after.allocations == before.allocations && after.deallocations == before.deallocations);
    CHECK(after.bytes_in_use == before.bytes_in_use);
    CHECK(tc_after.allocations == tc_before.allocations && tc_after.deallocations == tc_before.deallocations);
    CHECK(tc_after.bytes_in_use == tc_before.bytes_in_use);
  }
  /* A live block still resizes and reallocates in place within its block. */
  p = strata_malloc(20);
  REQUIRE(p != NULL);
  CHECK(strata_resize(p, 20, 24));
  CHECK(strata_resize(p, 24, 24));
  CHECK(strata_realloc(p, 24, 30) == p);
  strata_free(p, 30);
  CHECK(rec.count == 11);
  CHECK(heap_stats().bytes_in_use == 0);
  CHECK(strata_resource_check(tc));
  strata_set_misuse_handler(NULL, NULL);
  strata_resource_destroy(tc);
}

static void test_aligned(void) {
  size_t a;
  for (a = 1; a <= (size_t)1 << 16; a <<= 1) {
    size_t i;
    for (i = 0; i < SIZE_COUNT; i += 3) {
      const size_t n = sizes[i];
      void* p = strata_malloc_aligned(n, a);
      REQUIRE(p != NULL);
      CHECK(aligned_to(p, a));
      fill(p, n, (unsigned)a);
      CHECK(strata_usable_size(p) >= n);
      CHECK(filled(p, n, (unsigned)a));
      strata_free_aligned(p, n, a);
    }
  }
  strata_clear_error();
  errno = 0;
  CHECK(strata_malloc_aligned(64, 3) == NULL);
  CHECK(strata_last_error() == STRATA_EINVAL);
  CHECK(errno == EINVAL);
  CHECK(strata_malloc_aligned(64, 0) == NULL);
  strata_free_aligned(NULL, 64, 64);
  CHECK(heap_stats().bytes_in_use == 0);
}

static void test_unsized(void) {
  /* Every tier, plain and aligned blocks: freed without their size, the statistics come back exactly. */
  const strata_stats_t before = heap_stats();
  size_t i;
  for (i = 0; i < SIZE_COUNT; ++i) {
    void* p = strata_malloc(sizes[i]);
    void* q = strata_malloc_aligned(sizes[i], 256);
    REQUIRE(p != NULL && q != NULL);
    CHECK(strata_usable_size(p) == strata_round_size(sizes[i]));
    CHECK(strata_usable_size(q) >= sizes[i]);
    strata_free_unsized(p);
    strata_free_unsized(q);
  }
  strata_free_unsized(NULL);
  {
    const strata_stats_t after = heap_stats();
    CHECK(after.bytes_in_use == before.bytes_in_use);
    CHECK(after.allocations - before.allocations == 2 * SIZE_COUNT);
    CHECK(after.deallocations - before.deallocations == 2 * SIZE_COUNT);
  }
  /* realloc without sizes, through the tiers. */
  {
    void* p = strata_realloc_unsized(NULL, 10);
    REQUIRE(p != NULL);
    fill(p, 10, 5);
    p = strata_realloc_unsized(p, 5000);
    REQUIRE(p != NULL);
    CHECK(filled(p, 10, 5));
    fill(p, 5000, 6);
    p = strata_realloc_unsized(p, 500000);
    REQUIRE(p != NULL);
    CHECK(filled(p, 5000, 6));
    p = strata_realloc_unsized(p, 20);
    REQUIRE(p != NULL);
    CHECK(filled(p, 20, 6));
    CHECK(strata_realloc_unsized(p, 0) == NULL);
  }
  CHECK(heap_stats().bytes_in_use == before.bytes_in_use);
  CHECK(strata_usable_size(NULL) == 0);
}

static void test_realloc_unsized_checks_the_block(void) {
  /* Without a size, a thread-tier object stays where it is within its class (20 and 24 both take 32 bytes) and
   * moves beyond it, its bytes kept; a freed object or an interior pointer is reported once and nothing changes,
   * whether the new size names the same class or another (nothing is read from it or freed). */
  recorder rec;
  strata_stats_t before;
  char* p = (char*)strata_malloc(20);
  char* q;
  void* r;
  REQUIRE(p != NULL);
  REQUIRE(strata_round_size(20) == strata_round_size(24));
  fill(p, 20, 3);
  CHECK(strata_realloc_unsized(p, 24) == p);
  CHECK(filled(p, 20, 3));
  q = (char*)strata_realloc_unsized(p, 200);
  REQUIRE(q != NULL && q != p);
  CHECK(filled(q, 20, 3));
  memset(&rec, 0, sizeof rec);
  strata_set_misuse_handler(record_misuse, &rec);
  before = heap_stats();
  strata_clear_error();
  CHECK(strata_realloc_unsized(p, 24) == NULL); /* p was freed by the move */
  CHECK(rec.count == 1 && rec.last_kind == STRATA_MISUSE_DOUBLE_FREE && rec.last_pointer == p);
  CHECK(strata_last_error() == STRATA_EMISUSE);
  CHECK(strata_realloc_unsized(p, 4000) == NULL);
  CHECK(rec.count == 2 && rec.last_kind == STRATA_MISUSE_DOUBLE_FREE);
  CHECK(strata_realloc_unsized(p, 0) == NULL);
  CHECK(rec.count == 3 && rec.last_kind == STRATA_MISUSE_DOUBLE_FREE);
  CHECK(strata_realloc_unsized(q + 16, 8) == NULL);
  CHECK(rec.count == 4 && rec.last_kind == STRATA_MISUSE_FOREIGN_POINTER && rec.last_pointer == q + 16);
  {
    const strata_stats_t after = heap_stats();
    CHECK(after.allocations == before.allocations && after.deallocations == before.deallocations);
    CHECK(after.bytes_in_use == before.bytes_in_use);
  }
  strata_set_misuse_handler(NULL, NULL);
  r = strata_realloc_unsized(q, 5);
  REQUIRE(r != NULL);
  CHECK(filled(r, 5, 3));
  strata_free_unsized(r);
}

static void test_tiers(void) {
  CHECK(strata_tier_of(1) == STRATA_TIER_THREAD);
  CHECK(strata_tier_of(strata_tier_max_size(STRATA_TIER_THREAD)) == STRATA_TIER_THREAD);
  CHECK(strata_tier_of(strata_tier_max_size(STRATA_TIER_THREAD) + 1) == STRATA_TIER_SHARED);
  CHECK(strata_tier_min_size(STRATA_TIER_SHARED) == strata_tier_max_size(STRATA_TIER_THREAD) + 1);
  CHECK(strata_tier_of(strata_tier_max_size(STRATA_TIER_SHARED)) == STRATA_TIER_SHARED);
  CHECK(strata_tier_of(strata_tier_max_size(STRATA_TIER_SHARED) + 1) == STRATA_TIER_UPSTREAM);
  CHECK(strata_tier_min_size(STRATA_TIER_THREAD) == 1);
  CHECK(strata_tier_max_size(STRATA_TIER_THREAD) == 8192);
  CHECK(strata_tier_max_size(STRATA_TIER_UPSTREAM) > ((size_t)1 << 40));
}

static void test_version(void) {
  CHECK(strcmp(strata_version(), STRATA_VERSION_STRING) == 0);
  CHECK(strata_version_number() == STRATA_VERSION_NUMBER);
  CHECK(STRATA_VERSION_NUMBER == STRATA_VERSION_MAJOR * 10000 + STRATA_VERSION_MINOR * 100 + STRATA_VERSION_PATCH);
  {
    char expect[32];
    snprintf(expect, sizeof expect, "%d.%d.%d", STRATA_VERSION_MAJOR, STRATA_VERSION_MINOR, STRATA_VERSION_PATCH);
    CHECK(strcmp(expect, STRATA_VERSION_STRING) == 0);
  }
  /* The build's version (CMake's project version) is the header's. */
  CHECK(strcmp(STRATA_TEST_PROJECT_VERSION, STRATA_VERSION_STRING) == 0);
}

/* Written C11's way round, a size-first call asks for the wrong block; strata_malloc_aligned is size first. */
static void test_aligned_size_first(void) {
  unsigned char* p = (unsigned char*)strata_malloc_aligned(8192, 64);
  CHECK(p != NULL);
  CHECK(((uintptr_t)p & 63) == 0);
  CHECK(strata_usable_size(p) >= 8192);
  memset(p, 0xA5, 8192);
  strata_free_aligned(p, 8192, 64);
  p = (unsigned char*)strata_malloc_aligned(64, 8192);
  CHECK(p != NULL);
  CHECK(((uintptr_t)p & 8191) == 0);
  CHECK(strata_usable_size(p) >= 64);
  strata_free_aligned(p, 64, 8192);
}

/* A write of a program's bug, past AddressSanitizer in ASan builds (which would report it first: the canaries are
   poisoned there). */
#if defined(__GNUC__)
__attribute__((no_sanitize_address, noinline))
#endif
static void write_unchecked(unsigned char* p, size_t i, unsigned char v) {
  p[i] = v;
}

/* A debug handle: exact frees, canaries checked by strata_debug_check_all, a leak report; other handles refuse. */
static void test_debug_handle(void) {
  strata_debug_options_t o;
  recorder rec;
  strata_resource_t* d;
  unsigned char* p;
  unsigned char* q;
  memset(&rec, 0, sizeof rec);
  strata_debug_options_init(&o);
  CHECK(o.canary_size == 16 && o.fill && o.guard == STRATA_GUARD_NONE && o.upstream == NULL);
  o.report_leaks = false;
  d = strata_debug_create(&o);
  REQUIRE(d != NULL);
  CHECK(strcmp(strata_resource_name(d), "debug_resource") == 0);
  strata_set_misuse_handler(record_misuse, &rec);
  p = (unsigned char*)strata_resource_malloc(d, 24);
  q = (unsigned char*)strata_resource_malloc(d, 40);
  REQUIRE(p != NULL && q != NULL);
  CHECK(p[0] == 0xCD && p[23] == 0xCD); /* new memory is patterned */
  CHECK(strata_debug_check_all(d) == 0);
  write_unchecked(p, 24, 1); /* one byte past the block */
  CHECK(strata_debug_check_all(d) == 1);
  CHECK(rec.count == 1 && rec.last_kind == STRATA_MISUSE_BUFFER_OVERFLOW);
  write_unchecked(p, 24, 0xFD); /* the canary as it was */
  strata_resource_free(d, q, 41); /* a wrong size: reported, the block stays live */
  CHECK(rec.count == 2 && rec.last_kind == STRATA_MISUSE_WRONG_SIZE);
  strata_resource_free(d, q, 40);
  strata_resource_free(d, q, 40); /* a double free */
  CHECK(rec.count == 3 && rec.last_kind == STRATA_MISUSE_DOUBLE_FREE);
  CHECK(strata_debug_leak_report(d) == 1); /* p */
  strata_resource_free(d, p, 24);
  CHECK(strata_debug_leak_report(d) == 0);
  strata_set_misuse_handler(NULL, NULL);
  CHECK(strata_debug_check_all(strata_page_resource()) == 0 && strata_last_error() == STRATA_EINVAL);
  o.guard = (strata_guard_t)7;
  CHECK(strata_debug_create(&o) == NULL && strata_last_error() == STRATA_EINVAL);
  strata_resource_destroy(d);
}

static void test_errors(void) {
  strata_clear_error();
  CHECK(strata_last_error() == STRATA_OK);
  CHECK(strcmp(strata_error_string(STRATA_OK), "no error") == 0);
  CHECK(strcmp(strata_error_string(STRATA_ENOMEM), "out of memory") == 0);
  CHECK(strata_error_string(STRATA_EOVERFLOW) != NULL);
  CHECK(strata_error_string(STRATA_EINVAL) != NULL);
  CHECK(strata_error_string(STRATA_ENOTSUP) != NULL);
  CHECK(strata_error_string(STRATA_EMISUSE) != NULL);
  CHECK(strata_error_string((strata_error_t)99) != NULL);
  /* A success leaves the last error as it was. */
  CHECK(strata_malloc_aligned(8, 5) == NULL);
  {
    void* p = strata_malloc(8);
    CHECK(strata_last_error() == STRATA_EINVAL);
    strata_free(p, 8);
  }
  /* NULL handles. */
  strata_clear_error();
  CHECK(strata_resource_malloc(NULL, 8) == NULL);
  CHECK(strata_last_error() == STRATA_EINVAL);
  CHECK(!strata_resource_stats(NULL, NULL));
  CHECK(!strata_stats(NULL));
  CHECK(strcmp(strata_resource_name(NULL), "(null)") == 0);
  strata_resource_destroy(NULL);
  /* Rounding a size near SIZE_MAX: 0 and EOVERFLOW, never an exception. */
  {
    strata_resource_t* pool = strata_fixed_pool_create(24, 0, NULL);
    REQUIRE(pool != NULL);
    strata_clear_error();
    CHECK(strata_resource_round_size(pool, SIZE_MAX) == 0);
    CHECK(strata_last_error() == STRATA_EOVERFLOW);
    CHECK(strata_fixed_pool_capacity(pool) == 0); /* no cap */
    strata_resource_destroy(pool);
    strata_clear_error();
    CHECK(strata_resource_round_size(strata_page_resource(), SIZE_MAX) == 0);
    CHECK(strata_last_error() == STRATA_EOVERFLOW);
    CHECK(strata_resource_round_size(strata_page_resource(), 1) == 4096);
    strata_clear_error();
    CHECK(strata_fixed_pool_capacity(strata_default_resource()) == 0);
    CHECK(strata_last_error() == STRATA_EINVAL);
  }
}

static void test_misuse_handler(void) {
  recorder rec;
  int on_stack = 0;
  memset(&rec, 0, sizeof rec);
  strata_set_misuse_handler(record_misuse, &rec);
  {
    void* p = strata_malloc(48);
    REQUIRE(p != NULL);
    strata_free(p, 48);
    strata_clear_error();
    strata_free(p, 48); /* double free */
    CHECK(rec.count == 1);
    CHECK(rec.last_kind == STRATA_MISUSE_DOUBLE_FREE);
    CHECK(rec.last_pointer == p);
    CHECK(strstr(rec.last_message, "double free") != NULL);
    CHECK(strata_last_error() == STRATA_EMISUSE);
  }
  strata_free_unsized(&on_stack); /* not from the heap */
  CHECK(rec.count == 2);
  CHECK(rec.last_kind == STRATA_MISUSE_FOREIGN_POINTER);
  CHECK(strata_usable_size(&on_stack) == 0);
  CHECK(rec.count == 3);
  {
    /* Wrong size on a fixed pool: nothing changes. */
    strata_resource_t* pool = strata_fixed_pool_create(64, 0, NULL);
    void* p;
    REQUIRE(pool != NULL);
    p = strata_resource_malloc(pool, 64);
    REQUIRE(p != NULL);
    strata_resource_free(pool, p, 200);
    CHECK(rec.count == 4);
    CHECK(rec.last_kind == STRATA_MISUSE_WRONG_SIZE);
    CHECK(stats_of(pool).bytes_in_use == 64);
    strata_resource_free(pool, p, 64);
    CHECK(stats_of(pool).bytes_in_use == 0);
    strata_resource_destroy(pool);
  }
  CHECK(heap_stats().bytes_in_use == 0);
  strata_set_misuse_handler(NULL, NULL);
}

/* ---- threads ------------------------------------------------------------------------------------------------------- */

typedef struct thread_job {
  void* blocks[256];
  size_t sizes[256];
  int ok;
} thread_job;

static void* make_blocks(void* arg) {
  thread_job* job = (thread_job*)arg;
  int i;
  job->ok = 1;
  for (i = 0; i < 256; ++i) {
    job->sizes[i] = (size_t)(i * 37 % 3000) + 1;
    job->blocks[i] = strata_malloc(job->sizes[i]);
    if (job->blocks[i] == NULL) job->ok = 0;
    else fill(job->blocks[i], job->sizes[i], (unsigned)i);
  }
  /* Give the cache back early, then keep allocating: the thread gets a heap again. */
  strata_thread_cleanup();
  strata_thread_cleanup();
  {
    void* p = strata_malloc(100);
    if (p == NULL) job->ok = 0;
    strata_free(p, 100);
  }
  strata_thread_cleanup();
  return NULL;
}

static void test_threads(void) {
  /* Blocks made on other threads that gave their caches back are freed here (cross-thread frees). */
  pthread_t threads[4];
  thread_job jobs[4];
  int t, i;
  for (t = 0; t < 4; ++t) REQUIRE(pthread_create(&threads[t], NULL, make_blocks, &jobs[t]) == 0);
  for (t = 0; t < 4; ++t) REQUIRE(pthread_join(threads[t], NULL) == 0);
  for (t = 0; t < 4; ++t) {
    CHECK(jobs[t].ok);
    for (i = 0; i < 256; ++i) {
      CHECK(filled(jobs[t].blocks[i], jobs[t].sizes[i], (unsigned)i));
      if (i % 2 == 0) strata_free(jobs[t].blocks[i], jobs[t].sizes[i]);
      else strata_free_unsized(jobs[t].blocks[i]);
    }
  }
  strata_thread_cleanup();
  strata_trim();
  CHECK(heap_stats().bytes_in_use == 0);
  CHECK(strata_resource_check(strata_default_resource()));
}

/* ---- persistent allocation ----------------------------------------------------------------------------------------- */

static void test_persistent(void) {
  char* blocks[2000];
  size_t i, total = 0;
  strata_stats_t s;
  for (i = 0; i < 2000; ++i) {
    const size_t n = i == 1000 ? 3000000 : i % 300 + 1; /* one request larger than a chunk: a chunk of its own */
    blocks[i] = (char*)strata_persistent_malloc(n);
    REQUIRE(blocks[i] != NULL);
    CHECK(aligned_to(blocks[i], plain_alignment(n)));
    memset(blocks[i], (int)(i & 0x7f), n);
    total += n;
  }
  for (i = 0; i < 2000; ++i) CHECK(blocks[i][0] == (char)(i & 0x7f));
  CHECK(strata_persistent_malloc(0) != strata_persistent_malloc(0));
  total += 2;
  REQUIRE(strata_persistent_stats(&s));
  CHECK(s.bytes_in_use == total);
  CHECK(s.allocations == 2002);
  CHECK(s.bytes_held >= total);
  CHECK(s.upstream_allocations >= 2);
  strata_persistent_cleanup();
  REQUIRE(strata_persistent_stats(&s));
  CHECK(s.bytes_in_use == 0);
  CHECK(s.bytes_held == 0);
  CHECK(s.upstream_deallocations == s.upstream_allocations);
  CHECK(!strata_persistent_stats(NULL));
  /* Usable again after cleanup. */
  CHECK(strata_persistent_malloc(10) != NULL);
  strata_persistent_cleanup();
}

/* ---- handles ------------------------------------------------------------------------------------------------------- */

/* Every per-handle call, on one handle: plain, zeroed, aligned, realloc, resize, round_size, stats, check, release. */
static void exercise(strata_resource_t* r, size_t max_size, int can_release) {
  void* blocks[64];
  size_t lens[64];
  int i;
  const strata_stats_t before = stats_of(r);
  REQUIRE(r != NULL);
  CHECK(strlen(strata_resource_name(r)) > 0);
  for (i = 0; i < 64; ++i) {
    lens[i] = (size_t)(i * 97 % 5000) % max_size + 1;
    blocks[i] = i % 3 == 0 ? strata_resource_calloc(r, 1, lens[i]) : strata_resource_malloc(r, lens[i]);
    REQUIRE(blocks[i] != NULL);
    if (i % 3 == 0) CHECK(all_zero(blocks[i], lens[i]));
    CHECK(strata_resource_round_size(r, lens[i]) >= lens[i]);
    fill(blocks[i], lens[i], (unsigned)i);
  }
  CHECK(stats_of(r).allocations - before.allocations == 64);
  for (i = 0; i < 64; i += 2) {
    const size_t n = (lens[i] * 3) % max_size + 1;
    void* q = strata_resource_realloc(r, blocks[i], lens[i], n);
    REQUIRE(q != NULL);
    CHECK(filled(q, lens[i] < n ? lens[i] : n, (unsigned)i));
    fill(q, n, (unsigned)i);
    blocks[i] = q;
    lens[i] = n;
  }
  for (i = 1; i < 64; i += 4) {
    /* A shrink to a size that rounds to the same block always stays in place. */
    if (strata_resource_round_size(r, lens[i] - 1) == strata_resource_round_size(r, lens[i]) && lens[i] > 1) {
      CHECK(strata_resource_resize(r, blocks[i], lens[i], lens[i] - 1));
      lens[i] -= 1;
    }
  }
  CHECK(strata_resource_check(r));
  for (i = 0; i < 64; ++i) {
    CHECK(filled(blocks[i], lens[i], (unsigned)i));
    strata_resource_free(r, blocks[i], lens[i]);
  }
  {
    size_t a;
    for (a = 1; a <= 4096; a <<= 2) {
      void* p = strata_resource_malloc_aligned(r, 100, a);
      REQUIRE(p != NULL);
      CHECK(aligned_to(p, a));
      strata_resource_free_aligned(r, p, 100, a);
    }
  }
  {
    const strata_stats_t after = stats_of(r);
    CHECK(after.bytes_in_use == before.bytes_in_use);
    CHECK(after.deallocations - before.deallocations == after.allocations - before.allocations);
  }
  CHECK(strata_resource_check(r));
  /* release frees everything at once. */
  for (i = 0; i < 16; ++i) CHECK(strata_resource_malloc(r, 40) != NULL);
  if (can_release) {
    CHECK(strata_resource_release(r));
    CHECK(stats_of(r).bytes_in_use == 0);
    CHECK(strata_resource_malloc(r, 40) != NULL); /* still usable */
  } else {
    strata_clear_error();
    CHECK(!strata_resource_release(r));
    CHECK(strata_last_error() == STRATA_ENOTSUP);
  }
}

static void test_handles(void) {
  strata_bitmap_options_t bo;
  strata_free_list_options_t fo;
  strata_fixed_pool_options_t po;
  strata_thread_cache_options_t to;
  strata_resource_t* r;
  int fit, sync;

  for (sync = 0; sync <= 1; ++sync) {
    strata_bitmap_options_init(&bo);
    CHECK(bo.block_size == 65536 && bo.max_small_size == 4096 && !bo.synchronized && bo.upstream == NULL);
    bo.synchronized = sync != 0;
    r = strata_bitmap_create(&bo);
    exercise(r, 20000, 1);
    strata_resource_destroy(r);

    for (fit = STRATA_FIT_SEGREGATED; fit <= STRATA_FIT_BEST; ++fit) {
      strata_free_list_options_init(&fo);
      CHECK(fo.fit == STRATA_FIT_SEGREGATED && fo.max_empty_chunks == 1);
      fo.fit = (strata_fit_t)fit;
      fo.synchronized = sync != 0;
      r = strata_free_list_create(&fo);
      exercise(r, 300000, 1);
      strata_resource_destroy(r);
    }

    strata_fixed_pool_options_init(&po);
    CHECK(po.max_empty_chunks == 1 && po.huge_pages);
    po.synchronized = sync != 0;
    po.huge_pages = 0;
    r = strata_fixed_pool_create(48, 0, &po);
    exercise(r, 48 * 20, 1);
    strata_resource_destroy(r);
  }
  strata_thread_cache_options_init(&to);
  CHECK(to.max_empty_blocks == 16);
  r = strata_thread_cache_create(&to);
  exercise(r, 400000, 1);
  strata_resource_destroy(r);

  /* Defaults (NULL options). */
  r = strata_bitmap_create(NULL);
  exercise(r, 5000, 1);
  strata_resource_destroy(r);
  r = strata_free_list_create(NULL);
  exercise(r, 5000, 1);
  strata_resource_destroy(r);
  r = strata_thread_cache_create(NULL);
  exercise(r, 5000, 1);
  strata_resource_destroy(r);

  /* The process-wide handles. */
  exercise(strata_page_resource(), 100000, 0);
  CHECK(strcmp(strata_resource_name(strata_page_resource()), "page_resource") == 0);
  {
    void* p = strata_resource_malloc(strata_system_resource(), 100);
    strata_stats_t s;
    CHECK(p != NULL);
    strata_resource_free(strata_system_resource(), p, 100);
    strata_clear_error();
    CHECK(!strata_resource_stats(strata_system_resource(), &s));
    CHECK(strata_last_error() == STRATA_ENOTSUP);
  }
  strata_clear_error();
  strata_resource_destroy(strata_default_resource()); /* ignored */
  CHECK(strata_last_error() == STRATA_EINVAL);
  CHECK(!strata_resource_release(strata_default_resource()));
  {
    void* p = strata_resource_malloc(strata_default_resource(), 77);
    REQUIRE(p != NULL);
    CHECK(strata_usable_size(p) == strata_resource_usable_size(strata_default_resource(), p));
    strata_free(p, 77); /* the same heap */
  }
  CHECK(heap_stats().bytes_in_use == 0);
}

static void test_handle_unsized(void) {
  strata_resource_t* tc = strata_thread_cache_create(NULL);
  strata_resource_t* bm = strata_bitmap_create(NULL);
  size_t i;
  REQUIRE(tc != NULL && bm != NULL);
  for (i = 0; i < SIZE_COUNT; ++i) {
    void* p = strata_resource_malloc(tc, sizes[i]);
    REQUIRE(p != NULL);
    CHECK(strata_resource_usable_size(tc, p) == strata_resource_round_size(tc, sizes[i]));
    strata_resource_free_unsized(tc, p);
  }
  CHECK(stats_of(tc).bytes_in_use == 0);
  {
    void* p = strata_resource_malloc(bm, 40);
    strata_clear_error();
    CHECK(strata_resource_usable_size(bm, p) == 0);
    CHECK(strata_last_error() == STRATA_ENOTSUP);
    strata_clear_error();
    strata_resource_free_unsized(bm, p); /* not done: the block is still live */
    CHECK(strata_last_error() == STRATA_ENOTSUP);
    CHECK(stats_of(bm).bytes_in_use == strata_resource_round_size(bm, 40)); /* blocks count at their rounded size */
    strata_resource_thread_cleanup(bm);
    CHECK(strata_last_error() == STRATA_ENOTSUP);
    strata_resource_free(bm, p, 40);
  }
  strata_resource_thread_cleanup(tc);
  strata_resource_destroy(tc);
  strata_resource_destroy(bm);
}

static void test_capped_pool(void) {
  /* mempool style: a pool of 64-byte blocks holding at most 64 KiB: NULL when full, usable again after a free. */
  strata_resource_t* pool = strata_fixed_pool_create(64, (size_t)64 << 10, NULL);
  void* blocks[2048];
  size_t n = 0, i;
  REQUIRE(pool != NULL);
  for (;;) {
    void* p = strata_resource_malloc(pool, 64);
    if (p == NULL) break;
    REQUIRE(n < 2048);
    blocks[n++] = p;
  }
  CHECK(strata_last_error() == STRATA_ENOMEM);
  CHECK(n == strata_fixed_pool_capacity(pool));
  CHECK(n > 500 && n * 64 <= ((size_t)64 << 10));
  CHECK(strata_resource_malloc(pool, 64) == NULL);
  CHECK(strata_resource_calloc(pool, 1, 64) == NULL);
  CHECK(stats_of(pool).failed_allocations >= 3);
  strata_resource_free(pool, blocks[n / 2], 64);
  blocks[n / 2] = strata_resource_malloc(pool, 64);
  CHECK(blocks[n / 2] != NULL);
  for (i = 0; i < n; ++i) strata_resource_free(pool, blocks[i], 64);
  CHECK(stats_of(pool).bytes_in_use == 0);
  CHECK(strata_resource_check(pool));
  strata_resource_destroy(pool);
}

static void test_fixed_pool_alignment(void) {
  /* 24-byte blocks are 8-byte aligned: plain allocations take them as they are, with no upstream detour. */
  strata_resource_t* pool = strata_fixed_pool_create(24, (size_t)1 << 16, NULL);
  void* p;
  void* q;
  REQUIRE(pool != NULL);
  p = strata_resource_malloc(pool, 24);
  q = strata_resource_malloc(pool, 24);
  REQUIRE(p != NULL && q != NULL);
  CHECK(aligned_to(p, 8) && aligned_to(q, 8));
  CHECK((char*)q - (char*)p == 24 || (char*)p - (char*)q == 24);
  CHECK(strata_resource_round_size(pool, 24) == 24);
  CHECK(strata_resource_round_size(pool, 1) == 24);
  CHECK(stats_of(pool).upstream_allocations == 1); /* the capacity reservation only */
  strata_resource_free(pool, p, 24);
  strata_resource_free(pool, q, 24);
  strata_resource_destroy(pool);
}

static void test_destroy_with_live_blocks(void) {
  /* Handles with live blocks (small and large) over a free-list handle, and one over the C library's heap:
   * destroying them gives everything back (the free list's statistics show it; LSan checks the other). */
  strata_bitmap_options_t bo;
  strata_resource_t* upstream;
  strata_resource_t* chained[4];
  int k, i;
  strata_bitmap_options_init(&bo);
  bo.max_small_size = 4096;
  upstream = strata_free_list_create(NULL);
  REQUIRE(upstream != NULL);
  {
    strata_fixed_pool_options_t po;
    strata_free_list_options_t fo;
    strata_thread_cache_options_t to;
    strata_fixed_pool_options_init(&po);
    po.upstream = upstream;
    po.huge_pages = 0;
    po.chunk_size = 65536;
    bo.upstream = upstream;
    strata_free_list_options_init(&fo);
    fo.upstream = upstream;
    fo.chunk_size = 65536;
    fo.huge_pages = 0;
    strata_thread_cache_options_init(&to);
    to.upstream = strata_system_resource(); /* operator new: leak checkers see it */
    chained[0] = strata_fixed_pool_create(32, 0, &po);
    chained[1] = strata_bitmap_create(&bo);
    chained[2] = strata_free_list_create(&fo);
    chained[3] = strata_thread_cache_create(&to);
  }
  for (k = 0; k < 4; ++k) {
    REQUIRE(chained[k] != NULL);
    for (i = 0; i < 500; ++i) CHECK(strata_resource_malloc(chained[k], (size_t)(i % 32) + 1) != NULL);
    CHECK(strata_resource_malloc(chained[k], 100000) != NULL); /* a large one too */
  }
  CHECK(stats_of(upstream).bytes_in_use > 0);
  for (k = 0; k < 4; ++k) strata_resource_destroy(chained[k]);
  CHECK(stats_of(upstream).bytes_in_use == 0);
  CHECK(stats_of(upstream).allocations == stats_of(upstream).deallocations);
  strata_resource_destroy(upstream);
}

static void test_bad_options(void) {
  strata_bitmap_options_t bo;
  strata_free_list_options_t fo;
  strata_thread_cache_options_t to;
  strata_bitmap_options_init(&bo);
  bo.block_size = 1000;
  strata_clear_error();
  errno = 0;
  CHECK(strata_bitmap_create(&bo) == NULL);
  CHECK(strata_last_error() == STRATA_EINVAL);
  CHECK(errno == EINVAL);
  strata_bitmap_options_init(&bo);
  CHECK(bo.checks == STRATA_CHECKS_STANDARD);
  bo.checks = (strata_checks_t)7;
  strata_clear_error();
  CHECK(strata_bitmap_create(&bo) == NULL);
  CHECK(strata_last_error() == STRATA_EINVAL);
  bo.checks = STRATA_CHECKS_STRICT;
  use_once_and_destroy(strata_bitmap_create(&bo));
  strata_free_list_options_init(&fo);
  fo.fit = (strata_fit_t)17;
  strata_clear_error();
  CHECK(strata_free_list_create(&fo) == NULL);
  CHECK(strata_last_error() == STRATA_EINVAL);
  strata_clear_error();
  CHECK(strata_fixed_pool_create(0, 0, NULL) == NULL);
  CHECK(strata_last_error() == STRATA_EINVAL);
  strata_thread_cache_options_init(&to);
  to.max_small_size = 100000;
  strata_clear_error();
  CHECK(strata_thread_cache_create(&to) == NULL);
  CHECK(strata_last_error() == STRATA_EINVAL);
  strata_thread_cache_options_init(&to);
  CHECK(to.checks == STRATA_CHECKS_STANDARD);
  to.checks = (strata_checks_t)3;
  strata_clear_error();
  CHECK(strata_thread_cache_create(&to) == NULL);
  CHECK(strata_last_error() == STRATA_EINVAL);
  to.checks = STRATA_CHECKS_STRICT;
  use_once_and_destroy(strata_thread_cache_create(&to));
  /* Options init ignores NULL. */
  strata_bitmap_options_init(NULL);
  strata_free_list_options_init(NULL);
  strata_fixed_pool_options_init(NULL);
  strata_thread_cache_options_init(NULL);
}

/* ---- resources by name and subsystems ----------------------------------------------------------------------------- */

static int contains(const char* text, const char* part) { return text != NULL && strstr(text, part) != NULL; }

#define CHECK_MESSAGE_HAS(part)                                                                                  \
  do {                                                                                                           \
    if (!contains(strata_last_error_message(), (part))) {                                                        \
      fprintf(stderr, "%s:%d: message \"%s\" lacks \"%s\"\n", __FILE__, __LINE__, strata_last_error_message(), \
              (part));                                                                                           \
      ++g_failures;                                                                                              \
    }                                                                                                            \
  } while (0)

static void test_resource_create(void) {
  strata_resource_t* r = strata_resource_create("bitmap(block_size=128KiB, checks=strict) > page");
  void* p;
  REQUIRE(r != NULL);
  CHECK(strcmp(strata_last_error_message(), "") == 0);
  CHECK(strcmp(strata_resource_name(r), "bitmap_resource") == 0);
  p = strata_resource_malloc(r, 100);
  REQUIRE(p != NULL);
  fill(p, 100, 3);
  CHECK(filled(p, 100, 3));
  CHECK(stats_of(r).bytes_in_use >= 100);
  strata_resource_free(r, p, 100);
  CHECK(stats_of(r).bytes_in_use == 0);
  CHECK(strata_resource_check(r));
  CHECK(strata_resource_release(r));
  strata_resource_destroy(r);

  /* A capped fixed pool over a thread cache: the pool's own calls work on the handle. */
  r = strata_resource_create("fixed_pool(block_size=48, max_bytes=1MiB) > thread_cache");
  REQUIRE(r != NULL);
  CHECK(strcmp(strata_resource_name(r), "fixed_pool_resource") == 0);
  CHECK(strata_fixed_pool_capacity(r) > 10000);
  CHECK(strata_resource_round_size(r, 10) == 48);
  p = strata_resource_malloc(r, 48);
  REQUIRE(p != NULL);
  CHECK(aligned_to(p, 16));
  strata_resource_free(r, p, 48);
  strata_resource_destroy(r);

  /* A thread cache's unsized calls. */
  r = strata_resource_create("thread_cache(max_small_size=1KiB, checks=strict)");
  REQUIRE(r != NULL);
  p = strata_resource_malloc(r, 100);
  REQUIRE(p != NULL);
  CHECK(strata_resource_usable_size(r, p) >= 100);
  strata_resource_free_unsized(r, p);
  strata_resource_destroy(r);

  /* A debug resource over a free list is a debug handle. */
  r = strata_resource_create("debug(report_leaks=false) > free_list(policy=best_fit)");
  REQUIRE(r != NULL);
  CHECK(strcmp(strata_resource_name(r), "debug_resource") == 0);
  p = strata_resource_malloc(r, 32);
  REQUIRE(p != NULL);
  CHECK(strata_debug_check_all(r) == 0);
  strata_resource_free(r, p, 32);
  strata_resource_destroy(r);

  /* An arena over a tracking adaptor: the arena releases, the adaptor has nothing to release. */
  r = strata_resource_create("arena(initial_size=64KiB, growth_factor=1.5) > tracking");
  REQUIRE(r != NULL);
  CHECK(strcmp(strata_resource_name(r), "arena_resource") == 0);
  p = strata_resource_malloc(r, 1000);
  REQUIRE(p != NULL);
  CHECK(stats_of(r).bytes_in_use == 1000);
  CHECK(strata_resource_release(r));
  CHECK(stats_of(r).bytes_in_use == 0);
  strata_resource_destroy(r);
  r = strata_resource_create("tracking > bitmap");
  REQUIRE(r != NULL);
  CHECK(strcmp(strata_resource_name(r), "tracking_resource") == 0);
  strata_clear_error();
  CHECK(!strata_resource_release(r));
  CHECK(strata_last_error() == STRATA_ENOTSUP);
  strata_resource_destroy(r);

  /* The default page resource alone: the handle owns nothing, so it releases nothing. */
  r = strata_resource_create("page");
  REQUIRE(r != NULL);
  CHECK(strcmp(strata_resource_name(r), "page_resource") == 0);
  strata_clear_error();
  CHECK(!strata_resource_release(r));
  CHECK(strata_last_error() == STRATA_ENOTSUP);
  p = strata_resource_malloc(r, 5000);
  REQUIRE(p != NULL);
  strata_resource_free(r, p, 5000);
  strata_resource_destroy(r);
}

static void check_spec_error(const char* spec, const char* part, int line) {
  strata_resource_t* r;
  strata_clear_error();
  r = strata_resource_create(spec);
  if (r != NULL || strata_last_error() != STRATA_EINVAL || !contains(strata_last_error_message(), part)) {
    fprintf(stderr, "%s:%d: spec \"%s\": error %d, message \"%s\", expected EINVAL and \"%s\"\n", __FILE__, line,
            spec ? spec : "(null)", (int)strata_last_error(), strata_last_error_message(), part);
    ++g_failures;
  }
  strata_resource_destroy(r);
}

static void test_resource_create_errors(void) {
  strata_resource_t* r;
  check_spec_error("", "empty spec", __LINE__);
  check_spec_error("bitmapp", "unknown strategy \"bitmapp\"", __LINE__);
  check_spec_error("bitmap(blok=1)", "column 8: unknown option \"blok\" for bitmap", __LINE__);
  check_spec_error("bitmap(checks=maybe)", "expected one of standard|strict", __LINE__);
  check_spec_error("bitmap(block_size=64XiB)", "bad unit \"XiB\"", __LINE__);
  check_spec_error("bitmap(block_size=64KB)", "ambiguous unit \"KB\"", __LINE__);
  check_spec_error("bitmap(block_size=99999999999999999999)", "overflows", __LINE__);
  check_spec_error("bitmap(block_size=64KiB", "missing ')'", __LINE__);
  check_spec_error("bitmap x", "unexpected \"x\"", __LINE__);
  check_spec_error("bitmap(block_size=1000)", "bitmap refused its options", __LINE__);
  check_spec_error("new_delete", "can only be the last link", __LINE__);
  check_spec_error("bitmap > new_delete > page", "takes no upstream", __LINE__);
  check_spec_error(NULL, "NULL", __LINE__);
  /* A later success clears the message. */
  r = strata_resource_create("bitmap");
  REQUIRE(r != NULL);
  CHECK(strcmp(strata_last_error_message(), "") == 0);
  strata_resource_destroy(r);
}

static void test_subsystems(void) {
  const char* path = "strata_c_api_test_subsystems.conf";
  strata_resource_t *code, *file, *other;
  void* p;
  FILE* f = fopen(path, "w");
  REQUIRE(f != NULL);
  fputs("# subsystems of this test\n\nc.file = free_list(policy=best_fit)  # a comment\nc.code = bitmap\n", f);
  fclose(f);
  CHECK(strata_configure_subsystem("c.code", "fixed_pool(block_size=32)"));
  CHECK(strata_load_subsystem_config(path));
  CHECK(strata_set_subsystem_default("synchronized_bitmap"));
  /* Code before the file, the file before the default. */
  code = strata_subsystem("c.code");
  file = strata_subsystem("c.file");
  other = strata_subsystem("c.other");
  REQUIRE(code != NULL && file != NULL && other != NULL);
  CHECK(strcmp(strata_resource_name(code), "fixed_pool_resource") == 0);
  CHECK(strcmp(strata_resource_name(file), "free_list_resource") == 0);
  CHECK(strcmp(strata_resource_name(other), "synchronized_bitmap_resource") == 0);
  CHECK(strata_subsystem("c.code") == code);
  /* A subsystem's handle lives until the process ends. */
  strata_clear_error();
  strata_resource_destroy(code);
  CHECK(strata_last_error() == STRATA_EINVAL);
  p = strata_resource_malloc(code, 32);
  REQUIRE(p != NULL);
  strata_resource_free(code, p, 32);

  strata_clear_error();
  CHECK(!strata_configure_subsystem("c.code", "bitmap"));
  CHECK(strata_last_error() == STRATA_EINVAL);
  CHECK_MESSAGE_HAS("is in use already");
  CHECK(!strata_configure_subsystem("c.new", "bitmap("));
  CHECK_MESSAGE_HAS("missing ')'");
  CHECK(strata_subsystem("bad name") == NULL);
  CHECK_MESSAGE_HAS("bad subsystem name");
  CHECK(!strata_set_subsystem_default("nothing"));
  CHECK_MESSAGE_HAS("unknown strategy \"nothing\"");
  f = fopen(path, "w");
  REQUIRE(f != NULL);
  fputs("ok = bitmap\nbad = bitmap(blok=1)\n", f);
  fclose(f);
  CHECK(!strata_load_subsystem_config(path));
  CHECK_MESSAGE_HAS("strata_c_api_test_subsystems.conf:2: ");
  CHECK_MESSAGE_HAS("unknown option \"blok\"");
  CHECK(!strata_load_subsystem_config("/nonexistent/strata.conf"));
  CHECK_MESSAGE_HAS("cannot read");
  CHECK(!strata_load_subsystem_config(NULL));
  CHECK(strata_last_error() == STRATA_EINVAL);
  remove(path);
}

#define SUBSYSTEM_THREADS 8
static strata_resource_t* g_subsystem_seen[SUBSYSTEM_THREADS];
static volatile int g_subsystem_ready = 0;
static pthread_mutex_t g_subsystem_lock = PTHREAD_MUTEX_INITIALIZER;

static void* ask_for_subsystem(void* slot) {
  int ready;
  void* p;
  pthread_mutex_lock(&g_subsystem_lock);
  ++g_subsystem_ready;
  pthread_mutex_unlock(&g_subsystem_lock);
  do {
    pthread_mutex_lock(&g_subsystem_lock);
    ready = g_subsystem_ready;
    pthread_mutex_unlock(&g_subsystem_lock);
  } while (ready < SUBSYSTEM_THREADS);
  *(strata_resource_t**)slot = strata_subsystem("c.race");
  p = strata_resource_malloc(*(strata_resource_t**)slot, 64);
  strata_resource_free(*(strata_resource_t**)slot, p, 64);
  return NULL;
}

static void test_subsystem_threads(void) {
  pthread_t threads[SUBSYSTEM_THREADS];
  int i;
  /* Configured here: when every case runs in one process, test_subsystems has set another default. */
  CHECK(strata_configure_subsystem("c.race", "thread_cache"));
  for (i = 0; i < SUBSYSTEM_THREADS; ++i)
    REQUIRE(pthread_create(&threads[i], NULL, ask_for_subsystem, &g_subsystem_seen[i]) == 0);
  for (i = 0; i < SUBSYSTEM_THREADS; ++i) pthread_join(threads[i], NULL);
  REQUIRE(g_subsystem_seen[0] != NULL);
  for (i = 1; i < SUBSYSTEM_THREADS; ++i) CHECK(g_subsystem_seen[i] == g_subsystem_seen[0]);
  CHECK(strcmp(strata_resource_name(g_subsystem_seen[0]), "thread_cache_resource") == 0);
}

/* ---- driver -------------------------------------------------------------------------------------------------------- */

typedef struct test_case {
  const char* name;
  void (*run)(void);
} test_case;

/* strata_stats_json: snprintf-style sizes, a chain of three levels named in order, the system resource's level. */
static void test_stats_json(void) {
  strata_bitmap_options_t bo;
  strata_fixed_pool_options_t po;
  strata_resource_t *bitmap, *pool;
  void* p;
  size_t need, again;
  char small[8];
  char* text;
  const char *first, *second, *third;
  strata_bitmap_options_init(&bo);
  bo.upstream = strata_page_resource();
  bitmap = strata_bitmap_create(&bo);
  REQUIRE(bitmap != NULL);
  strata_fixed_pool_options_init(&po);
  po.upstream = bitmap;
  pool = strata_fixed_pool_create(64, 0, &po);
  REQUIRE(pool != NULL);
  p = strata_resource_malloc(pool, 64);
  REQUIRE(p != NULL);

  need = strata_stats_json(pool, NULL, 0);
  CHECK(need > 100);
  /* Cut short: at most `capacity` bytes written, NUL-terminated, the whole length returned. */
  memset(small, 'x', sizeof small);
  CHECK(strata_stats_json(pool, small, sizeof small) == need);
  CHECK(small[7] == '\0');
  CHECK(strncmp(small, "{\"level", 7) == 0);
  text = (char*)malloc(need + 1);
  REQUIRE(text != NULL);
  again = strata_stats_json(pool, text, need + 1);
  CHECK(again == need);
  CHECK(strlen(text) == need);
  CHECK(text[need - 1] == '}');
  first = strstr(text, "\"name\":\"fixed_pool\"");
  second = strstr(text, "\"name\":\"bitmap\"");
  third = strstr(text, "\"name\":\"page\"");
  CHECK(first != NULL && second != NULL && third != NULL);
  CHECK(first < second && second < third);
  /* The first level's stats are the pool's. */
  {
    strata_stats_t st;
    const char* at = first != NULL ? strstr(first, "\"stats\":{\"bytes_in_use\":") : NULL;
    REQUIRE(strata_resource_stats(pool, &st));
    REQUIRE(at != NULL);
    CHECK(strtoull(at + strlen("\"stats\":{\"bytes_in_use\":"), NULL, 10) == st.bytes_in_use);
    CHECK(st.bytes_in_use == 64);
  }
  free(text);

  strata_resource_free(pool, p, 64);
  strata_resource_destroy(pool);
  strata_resource_destroy(bitmap);
}

static void test_stats_json_errors(void) {
  char buffer[512];
  CHECK(strata_stats_json(NULL, buffer, sizeof buffer) == 0);
  CHECK(strata_last_error() == STRATA_EINVAL);
  CHECK(strata_stats_json(strata_page_resource(), NULL, 16) == 0);
  CHECK(strata_last_error() == STRATA_EINVAL);
  /* A resource strata cannot look into ends the chain with its name alone. */
  CHECK(strata_stats_json(strata_system_resource(), buffer, sizeof buffer) < sizeof buffer);
  {
    static const char head[] = "{\"levels\":[{\"name\":\"std::pmr::new_delete_resource\",";
    CHECK(strncmp(buffer, head, strlen(head)) == 0);
  }
  CHECK(strstr(buffer, "\"stats\"") == NULL);
}

static const test_case cases[] = {
    {"malloc_free", test_malloc_free},
    {"free_any_size_of_the_same_block", test_free_any_size_of_the_same_block},
    {"zero_sizes", test_zero_sizes},
    {"calloc", test_calloc},
    {"huge_requests", test_huge_requests},
    {"realloc_keeps_contents", test_realloc_keeps_contents},
    {"realloc_moves_when_it_must", test_realloc_moves_when_it_must},
    {"realloc_failure_keeps_the_block", test_realloc_failure_keeps_the_block},
    {"resize", test_resize},
    {"zero_size_alignment", test_zero_size_alignment},
    {"resize_checks_the_block", test_resize_checks_the_block},
    {"realloc_across_plain_alignments", test_realloc_across_plain_alignments},
    {"aligned", test_aligned},
    {"unsized", test_unsized},
    {"realloc_unsized_checks_the_block", test_realloc_unsized_checks_the_block},
    {"tiers", test_tiers},
    {"version", test_version},
    {"aligned_size_first", test_aligned_size_first},
    {"errors", test_errors},
    {"misuse_handler", test_misuse_handler},
    {"threads", test_threads},
    {"persistent", test_persistent},
    {"handles", test_handles},
    {"handle_unsized", test_handle_unsized},
    {"capped_pool", test_capped_pool},
    {"fixed_pool_alignment", test_fixed_pool_alignment},
    {"destroy_with_live_blocks", test_destroy_with_live_blocks},
    {"bad_options", test_bad_options},
    {"debug_handle", test_debug_handle},
    {"resource_create", test_resource_create},
    {"resource_create_errors", test_resource_create_errors},
    {"subsystems", test_subsystems},
    {"subsystem_threads", test_subsystem_threads},
    {"stats_json", test_stats_json},
    {"stats_json_errors", test_stats_json_errors},
};

int main(int argc, char** argv) {
  size_t i;
  int ran = 0;
  for (i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
    if (argc > 1 && strcmp(argv[1], cases[i].name) != 0) continue;
    cases[i].run();
    ++ran;
  }
  if (ran == 0) {
    fprintf(stderr, "no test case named %s\n", argc > 1 ? argv[1] : "");
    return 2;
  }
  if (g_failures != 0) fprintf(stderr, "%d check(s) failed\n", g_failures);
  return g_failures == 0 ? 0 : 1;
}
