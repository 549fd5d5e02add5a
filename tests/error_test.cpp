// SPDX-License-Identifier: MIT
// tests/error_test.cpp: the error handler and its message.
#include <strata/error.hpp>

#include <csignal>
#include <cstdio>
#include <string>

#include <sys/wait.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include "support.hpp"

namespace {
int g_calls = 0;
void counting_handler(const strata::error_info&) { ++g_calls; }
}  // namespace

TEST_CASE("error: set_error_handler returns the previous handler and nullptr restores the default") {
  auto previous = strata::set_error_handler(&counting_handler);
  CHECK((previous == &strata::default_error_handler));
  CHECK((strata::get_error_handler() == &counting_handler));
  int x = 0;
  strata::report_error({strata::error_kind::double_free, "test", nullptr, &x, 8, 8, 0, nullptr});
  CHECK(g_calls == 1);
  CHECK((strata::set_error_handler(nullptr) == &counting_handler));
  CHECK((strata::get_error_handler() == &strata::default_error_handler));
}

TEST_CASE("error: the message names the kind and resource and pointer and sizes") {
  char line[256];
  const void* p = reinterpret_cast<const void*>(0x1000);
  strata::error_info info{strata::error_kind::wrong_size, "bitmap_resource", nullptr, p, 48, 16, 32, "class differs"};
  const std::size_t n = strata::format_error(info, line, sizeof line);
  const std::string s(line, n);
  CHECK(s.find("wrong size") != std::string::npos);
  CHECK(s.find("bitmap_resource") != std::string::npos);
  CHECK(s.find("0x1000") != std::string::npos);
  CHECK(s.find("size 48") != std::string::npos);
  CHECK(s.find("alignment 16") != std::string::npos);
  CHECK(s.find("allocated with size 32") != std::string::npos);
  CHECK(s.find("class differs") != std::string::npos);
  char tiny[8];
  CHECK(strata::format_error(info, tiny, sizeof tiny) == 7);
  CHECK(std::string(tiny).size() == 7);
  for (auto k : {strata::error_kind::double_free, strata::error_kind::foreign_pointer, strata::error_kind::wrong_size,
                 strata::error_kind::bad_alignment, strata::error_kind::corrupt_metadata,
                 strata::error_kind::invariant_violated})
    CHECK(std::string(strata::to_string(k)) != "unknown error");
}

TEST_CASE("error: the default handler prints one line and aborts") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    std::signal(SIGABRT, SIG_DFL);  // doctest's crash handler must not report the child's abort
    ::dup2(fds[1], 2);
    ::close(1);
    strata::report_error({strata::error_kind::double_free, "page_resource", nullptr, nullptr, 64, 8, 0, nullptr});
    ::_exit(0);  // not reached
  }
  ::close(fds[1]);
  char buf[512] = {};
  std::size_t got = 0;
  ssize_t n;
  while ((n = ::read(fds[0], buf + got, sizeof buf - 1 - got)) > 0) got += static_cast<std::size_t>(n);
  ::close(fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGABRT);
  const std::string out(buf, got);
  CHECK(out.rfind("strata: double free in page_resource", 0) == 0);
  CHECK(out.find('\n') == out.size() - 1);  // exactly one line
}
