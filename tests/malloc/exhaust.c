/* SPDX-License-Identifier: MIT */
/* tests/malloc/exhaust.c: memory runs out (run under a `ulimit -v`, see address_limit.sh). One thread takes all it
   can get, in blocks of several sizes, and holds it; another thread, which had not allocated yet, then makes its
   first allocations, which fail with ENOMEM (its set-up must not need memory it cannot get: no abort); once the
   first thread frees everything, threads allocate again. The heap's tables fit the limit (no table that needs more address space than a small
   `ulimit -v` allows). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"


enum { max_held = 1 << 20 };
static void* held[max_held];
static size_t held_count;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int exhausted;

static void* late_thread(void* arg) {
  int* failed = arg;
  pthread_mutex_lock(&lock);
  while (!exhausted) pthread_cond_wait(&cond, &lock);
  pthread_mutex_unlock(&lock);
  errno = 0;
  void* p = malloc(24);
  void* q = malloc(3000);
  *failed = (p == NULL && q == NULL && errno == ENOMEM);
  free(p);
  free(q);
  return NULL;
}

static void* second_try(void* arg) {
  (void)arg;
  for (int i = 0; i < 1000; ++i) {
    char* p = malloc(16 + (size_t)i * 37);
    if (p == NULL) return (void*)1;
    memset(p, 1, 16);
    free(p);
  }
  return NULL;
}

int main(void) {
  pthread_t t;
  int failed = 0;
  CHECK(pthread_create(&t, NULL, late_thread, &failed) == 0);  /* its stack before memory runs out */
  const size_t sizes[] = {1 << 20, 100000, 20000, 3000, 200, 24};
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; ++s) {
    for (;;) {
      if (held_count == max_held) break;
      char* p = malloc(sizes[s]);
      if (p == NULL) {
        CHECK(errno == ENOMEM);
        break;
      }
      p[0] = 1;
      held[held_count++] = p;
    }
  }
  CHECK(held_count > 100);
  pthread_mutex_lock(&lock);
  exhausted = 1;
  pthread_cond_signal(&cond);
  pthread_mutex_unlock(&lock);
  CHECK(pthread_join(t, NULL) == 0);
  CHECK(failed);
  for (size_t i = 0; i < held_count; ++i) free(held[i]);
  void* result = (void*)2;
  CHECK(pthread_create(&t, NULL, second_try, NULL) == 0);
  CHECK(pthread_join(t, &result) == 0);
  CHECK(result == NULL);
  CHECK(second_try(NULL) == NULL);
  printf("ok: %zu blocks held at the limit\n", held_count);
  return 0;
}
