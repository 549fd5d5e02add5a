#!/bin/sh
# SPDX-License-Identifier: MIT
# tests/valgrind/memcheck.sh PROBE RESOURCE: runs memcheck_probe under Valgrind's memcheck for one resource, once per
# case, and checks that memcheck reports each bug (naming the block where it can) and nothing in the clean runs.
set -u
probe=$1
resource=$2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
failed=0

run() {  # run CASE: the probe under memcheck, its output in $out, memcheck's exit status returned
  valgrind --tool=memcheck --leak-check=full --error-exitcode=99 --child-silent-after-fork=yes \
    "$probe" "$resource" "$1" >"$out" 2>&1
}
expect() {  # expect CASE TEXT...: every TEXT is in the report and memcheck failed the run
  c=$1
  shift
  run "$c"
  rc=$?
  # (debug_resource then finds the overwritten canary itself at the free, and aborts: 134.)
  if [ "$rc" -ne 99 ] && ! { [ "$resource" = debug ] && [ "$rc" -eq 134 ]; }; then
    echo "FAIL $resource $c: memcheck reported nothing (exit $rc)"
    cat "$out"
    failed=1
    return
  fi
  for t in "$@"; do
    if ! grep -q -- "$t" "$out"; then
      echo "FAIL $resource $c: no \"$t\" in memcheck's report"
      cat "$out"
      failed=1
      return
    fi
  done
  echo "ok   $resource $c"
}
clean() {  # clean CASE: memcheck finds nothing
  run "$1"
  rc=$?
  if [ "$rc" -ne 0 ] || ! grep -q "ERROR SUMMARY: 0 errors" "$out"; then
    echo "FAIL $resource $1: memcheck reported errors in a correct program (exit $rc)"
    cat "$out"
    failed=1
    return
  fi
  echo "ok   $resource $1"
}

clean clean
case $resource in
  bitmap|fixed_pool|free_list|nested|arena) ;;
  *) clean threads ;;
esac
# debug_resource's blocks are its own memory to memcheck (it reports leaks itself); the canaries and the quarantine
# are no-access, so memcheck still reports the access.
if [ "$resource" = debug ]; then
  expect use_after_free "Invalid read of size 1" "memcheck_probe.cpp"
  expect overflow "Invalid write of size 1" "memcheck_probe.cpp"
  expect large "Invalid read of size 1" "memcheck_probe.cpp"
  exit $failed
fi
expect use_after_free "Invalid read of size 1" "is 8 bytes inside a block of size 44 free'd" "Block was alloc'd at"
expect overflow "Invalid write of size 1" "memcheck_probe.cpp"
expect large "Invalid read of size 1" "inside a block of size 1,048,576 free'd"
# An arena's blocks are its memcheck pools' chunks (one pool per arena chunk): rewind and release free those past the
# position, and a deallocate of a block that is not the last one frees it for memcheck though the arena keeps its
# bytes. Blocks never deallocated are not leaks: the arena takes them back at once (abandon is clean); a block lost
# while the arena lives would be reported as any pool's is, which says nothing about the arena, so no leak case.
case $resource in
  arena|synchronized_arena)
    expect rewind "Invalid read of size 1" "is 8 bytes inside a block of size 44 free'd"
    expect release "Invalid read of size 1" "is 8 bytes inside a block of size 44 free'd"
    expect middle "Invalid read of size 1" "is 8 bytes inside a block of size 44 free'd"
    clean abandon
    exit $failed
    ;;
esac
# page_resource records every live span by its address (its table is read by the leak check as a pointer to it):
# a leaked span is "still reachable" there.
if [ "$resource" != page ]; then
  expect leak "44 bytes in 1 blocks are definitely lost" "leak_a_block"
fi
exit $failed
