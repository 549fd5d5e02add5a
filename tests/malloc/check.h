/* SPDX-License-Identifier: MIT */
/* tests/malloc/check.h: CHECK for the C test programs of libstrata-malloc: a failed condition is printed with its
   place and the program exits with status 1. */
#pragma once

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                             \
  do {                                                                          \
    if (!(cond)) {                                                              \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      exit(1);                                                                  \
    }                                                                           \
  } while (0)
