#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# tests/malloc/small_rss.sh LIBRARY PROGRAM: a C program that allocates little pays no fixed cost for the malloc it
# runs on: its peak resident set size with LIBRARY (libstrata-malloc.so) preloaded stays within 1 MiB of glibc's.
# PROGRAM is small_rss (it prints its own peak in KiB); each figure is the smallest of five runs.
set -euo pipefail
lib=$1
program=$2
smallest() {
  local best=
  for _ in 1 2 3 4 5; do
    local kib
    kib=$(env "$@" "$program")
    if [ -z "$best" ] || [ "$kib" -lt "$best" ]; then best=$kib; fi
  done
  echo "$best"
}
glibc=$(smallest LD_PRELOAD=)
strata=$(smallest LD_PRELOAD="$lib")
echo "peak resident: glibc $glibc KiB, strata $strata KiB"
if [ "$strata" -gt $((glibc + 1024)) ]; then
  echo "more than 1 MiB above glibc's"
  exit 1
fi
