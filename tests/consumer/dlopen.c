/* SPDX-License-Identifier: MIT */
/* Loads libstrata.so with dlopen (argv[1]) and uses the C API's default heap from two threads: a shared strata must
   load into a process that did not link it (plugins, language bindings). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

typedef void* (*malloc_fn)(size_t);
typedef void (*free_fn)(void*, size_t);
static malloc_fn g_malloc;
static free_fn g_free;

static void* churn(void* arg) {
  int i;
  (void)arg;
  for (i = 0; i < 100000; ++i) {
    char* p = (char*)g_malloc((size_t)(i % 512) + 1);
    if (p == NULL) return (void*)1;
    memset(p, 0x5A, (size_t)(i % 512) + 1);
    g_free(p, (size_t)(i % 512) + 1);
  }
  return NULL;
}

int main(int argc, char** argv) {
  void* lib;
  const char* (*version)(void);
  pthread_t t;
  void* failed = NULL;
  if (argc < 2) return 2;
  lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    printf("dlopen failed: %s\n", dlerror());
    return 1;
  }
  g_malloc = (malloc_fn)dlsym(lib, "strata_malloc");
  g_free = (free_fn)dlsym(lib, "strata_free");
  version = (const char* (*)(void))dlsym(lib, "strata_version");
  if (g_malloc == NULL || g_free == NULL || version == NULL) {
    printf("dlsym failed\n");
    return 1;
  }
  if (pthread_create(&t, NULL, churn, NULL) != 0) return 1;
  if (churn(NULL) != NULL) return 1;
  pthread_join(t, &failed);
  printf("dlopen: strata %s: ok\n", version());
  return failed == NULL ? 0 : 1;
}
