/* SPDX-License-Identifier: MIT */
/* tests/malloc/throws_inside.c: a C program (no C++ runtime of its own) on libstrata-malloc, linked, where the
   library's own code throws and catches: an impossible malloc as the very first call of the process (the heap's
   page resource throws std::bad_alloc where its lock is held and the exception's memory must not come from the
   heap), impossible aligned and zeroed requests, and the C API's constructors refusing bad options
   (std::invalid_argument inside, STRATA_EINVAL out), many times over and from several threads at once. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <strata/strata.h>

#include "check.h"


static void* refused_options(void* arg) {
  (void)arg;
  for (int i = 0; i < 2000; ++i) {
    strata_bitmap_options_t o;
    strata_bitmap_options_init(&o);
    o.block_size = 1000; /* not a power of two: the constructor throws */
    CHECK(strata_bitmap_create(&o) == NULL);
    CHECK(strata_last_error() == STRATA_EINVAL);
    void* p = malloc((size_t)1 << 50);
    CHECK(p == NULL && errno == ENOMEM);
  }
  return NULL;
}

int main(void) {
  errno = 0;
  void* p = malloc((size_t)1 << 50);
  CHECK(p == NULL && errno == ENOMEM);
  void* q = NULL;
  CHECK(posix_memalign(&q, 4096, (size_t)1 << 50) == ENOMEM && q == NULL);
  errno = 0;
  CHECK(aligned_alloc(64, (size_t)1 << 50) == NULL && errno == ENOMEM);
  errno = 0;
  volatile size_t half = (size_t)1 << 33; /* a product that overflows, out of the compiler's sight */
  CHECK(calloc(half, half) == NULL && errno == ENOMEM);
  char* s = malloc(100);
  CHECK(s != NULL);
  strcpy(s, "still allocating");
  pthread_t threads[8];
  for (int t = 0; t < 8; ++t) CHECK(pthread_create(&threads[t], NULL, refused_options, NULL) == 0);
  for (int t = 0; t < 8; ++t) CHECK(pthread_join(threads[t], NULL) == 0);
  CHECK(strcmp(s, "still allocating") == 0);
  free(s);
  puts("ok");
  return 0;
}
