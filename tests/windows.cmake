# SPDX-License-Identifier: MIT
# The tests cross-built for Windows (the windows preset: mingw-w64) and run under wine (CMAKE_CROSSCOMPILING_EMULATOR,
# set by cmake/toolchains/mingw-w64-x86_64.cmake): the doctest suite with the conformance suite, and the C API test.
# Left out: the Boost.Container tests (Debian's Boost is built for Linux), and what is Linux's alone: the malloc
# override, memcheck, ASan, the misuse matrix's forked children, ulimit, fork(), the consumer builds.
#
# doctest and nlohmann/json are header-only: their Debian headers are reached through a folder of links in the build
# tree, so that the cross compiler never sees the rest of the build machine's /usr/include.
find_path(strata_doctest_include doctest/doctest.h PATHS /usr/include NO_CMAKE_FIND_ROOT_PATH NO_DEFAULT_PATH)
if(NOT strata_doctest_include)
  message(FATAL_ERROR "the Windows tests need doctest's header (Debian: doctest-dev, or make windows-test)")
endif()
set(strata_host_headers ${CMAKE_CURRENT_BINARY_DIR}/host-headers)
file(MAKE_DIRECTORY ${strata_host_headers})
file(CREATE_LINK ${strata_doctest_include}/doctest ${strata_host_headers}/doctest SYMBOLIC)
find_path(strata_nlohmann_include nlohmann/json.hpp PATHS /usr/include NO_CMAKE_FIND_ROOT_PATH NO_DEFAULT_PATH)
if(strata_nlohmann_include)
  file(CREATE_LINK ${strata_nlohmann_include}/nlohmann ${strata_host_headers}/nlohmann SYMBOLIC)
  list(APPEND strata_test_sources stats_io_test.cpp)
endif()
# sanitizer_test.cpp has cases only under ASan (Linux).
list(REMOVE_ITEM strata_test_sources boost_interop_test.cpp sanitizer_test.cpp)

add_executable(strata_tests ${strata_test_sources})
target_include_directories(strata_tests SYSTEM PRIVATE ${strata_host_headers})
target_include_directories(strata_tests PRIVATE ${PROJECT_SOURCE_DIR}/lib)
target_link_libraries(strata_tests PRIVATE strata::strata strata_build_flags)
# Exported symbols: debug_resource's reports name the test's functions from the export table (as -rdynamic on Linux).
target_link_options(strata_tests PRIVATE -Wl,--export-all-symbols)
# One ctest entry per test file (a wine process costs half a second to start: one per test case would take minutes
# more than the tests). Two cases run apart, labelled slow (CI runs the rest: ctest -LE slow): the conformance case
# that makes 850,000 blocks of every size at every alignment (wine's VirtualAlloc and VirtualFree make it take
# minutes for the page resource and what sits on it), and the thread cache's 10,000 short-lived threads (half a
# minute of thread starts under wine; other cases end threads too).
set(strata_slow_cases "*every size 1..64 KiB at every alignment*,*10\\,000 short-lived threads*")
foreach(source IN LISTS strata_test_sources)
  if(source STREQUAL "main.cpp" OR source STREQUAL "support.cpp")
    continue()
  endif()
  get_filename_component(name ${source} NAME_WE)
  add_test(NAME "windows: ${name}"
           COMMAND strata_tests "--source-file=*/tests/${source}" "--test-case-exclude=${strata_slow_cases}")
  set_tests_properties("windows: ${name}" PROPERTIES TIMEOUT 900)
endforeach()
add_test(NAME "windows: the slow cases" COMMAND strata_tests "--test-case=${strata_slow_cases}")
set_tests_properties("windows: the slow cases" PROPERTIES TIMEOUT 1800 LABELS slow)
