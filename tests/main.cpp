// SPDX-License-Identifier: MIT
// tests/main.cpp: the doctest runner for strata_tests.
//
// ctest runs every test case on its own, by name (--test-case=NAME). A name that the filter cannot match (CMake
// splits the discovered names at semicolons, doctest splits filters at unescaped commas) would run nothing and pass:
// a run that names test cases and runs none fails here instead.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>

#include "support.hpp"

namespace {

unsigned g_cases_run = 0;

struct count_cases : doctest::IReporter {
  explicit count_cases(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats& stats) override { g_cases_run = stats.numTestCasesPassingFilters; }
  void test_case_start(const doctest::TestCaseData& data) override { strata_test::test_case_started(data.m_name); }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};
REGISTER_LISTENER("count_cases", 1, count_cases);

bool names_test_cases(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    for (const char* flag : {"--test-case=", "-tc=", "--dt-test-case=", "--dt-tc="})
      if (std::strncmp(argv[i], flag, std::strlen(flag)) == 0) return true;
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  const int result = context.run();
  if (context.shouldExit()) return result;  // --help, --list-test-cases and the like
  if (result == 0 && names_test_cases(argc, argv) && g_cases_run == 0) {
    std::fprintf(stderr, "strata_tests: no test case matches the names given\n");
    return 1;
  }
  return result;
}
