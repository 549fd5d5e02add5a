/* SPDX-License-Identifier: MIT */
/* tests/malloc/many_keys.c: a C program that makes 100 thread-specific keys before its first allocation, so that the
   key libstrata-malloc's heap takes for its thread-exit hook comes after them: setting it for a thread then takes
   memory from malloc (glibc keeps a thread's first 32 keys in place, later ones in blocks from calloc), inside that
   thread's first allocation. 1,000 threads, 50 at a time, each allocate and free 1,000 blocks of 16 B to 1 KiB;
   their heaps are handed back at their exits and reused (kept, 1,000 heaps would hold at least 64 MiB). */
#include <pthread.h>
#include <string.h>

#include <strata/strata.h>

#include "check.h"

static void* run(void* arg) {
  (void)arg;
  char* volatile kept;
  for (int i = 0; i < 1000; ++i) {
    char* p = malloc(16 + (size_t)i);
    CHECK(p != NULL);
    memset(p, 1, 16);
    kept = p;
    free(kept);
  }
  return NULL;
}

int main(void) {
  pthread_key_t keys[100];
  for (int i = 0; i < 100; ++i) CHECK(pthread_key_create(&keys[i], free) == 0);
  for (int round = 0; round < 20; ++round) {
    pthread_t t[50];
    for (int i = 0; i < 50; ++i) CHECK(pthread_create(&t[i], NULL, run, NULL) == 0);
    for (int i = 0; i < 50; ++i) CHECK(pthread_join(t[i], NULL) == 0);
  }
  run(NULL);
  strata_stats_t s;
  CHECK(strata_stats(&s));
  CHECK(s.allocations >= 1001000);
  CHECK(s.bytes_held < ((size_t)32 << 20));
  return 0;
}
