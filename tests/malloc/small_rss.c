/* SPDX-License-Identifier: MIT */
/* tests/malloc/small_rss.c: a C program that allocates little (a few dozen blocks of 16 B to 2 KiB, written), then
   prints its peak resident set size in KiB (VmHWM). small_rss.sh runs it on glibc's malloc and on libstrata-malloc. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
  void* blocks[48];
  for (int i = 0; i < 48; ++i) {
    const size_t n = 16 + (size_t)i * 43;
    blocks[i] = malloc(n);
    if (blocks[i] == NULL) return 1;
    memset(blocks[i], i, n);
  }
  for (int i = 0; i < 48; i += 2) free(blocks[i]);
  long peak = -1;
  FILE* f = fopen("/proc/self/status", "r");
  if (f == NULL) return 1;
  char line[256];
  while (fgets(line, sizeof line, f) != NULL)
    if (strncmp(line, "VmHWM:", 6) == 0) peak = strtol(line + 6, NULL, 10);
  fclose(f);
  for (int i = 1; i < 48; i += 2) free(blocks[i]);
  if (peak < 0) return 1;
  printf("%ld\n", peak);
  return 0;
}
