/* SPDX-License-Identifier: MIT */
/* A C user of an installed strata: the C API's default heap and a fixed pool. */
#include <stdio.h>
#include <string.h>

#include <strata/strata.h>

int main(void) {
  strata_resource_t* pool = strata_fixed_pool_create(32, 0, NULL);
  char* text = (char*)strata_malloc(64);
  void* node = strata_resource_malloc(pool, 32);
  strata_stats_t s;
  int ok = text != NULL && node != NULL && strcmp(strata_version(), STRATA_VERSION_STRING) == 0;
  if (ok) {
    strcpy(text, "strata from C");
    ok = strata_stats(&s) && s.bytes_in_use >= 64;
    printf("consumer (C): %s, %zu bytes in use\n", text, s.bytes_in_use);
  }
  strata_free(text, 64);
  strata_resource_free(pool, node, 32);
  strata_resource_destroy(pool);
  return ok ? 0 : 1;
}
