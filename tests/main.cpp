// SPDX-License-Identifier: MIT
// tests/main.cpp: the doctest runner for strata_tests.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
