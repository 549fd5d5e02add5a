// SPDX-License-Identifier: MIT
// tests/error_test.cpp: the error handler and its message.
#include <strata/error.hpp>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <string>
#include <thread>


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

namespace {
struct counter {
  int calls = 0;
  const void* last_pointer = nullptr;
};
void count_into(const strata::error_info& info, void* context) {
  auto* c = static_cast<counter*>(context);
  ++c->calls;
  c->last_pointer = info.pointer;
}
// Handlers that check they were called with their own context.
std::atomic<int> g_mismatches{0};
std::atomic<int> g_matched{0};
int g_context_a = 0;
int g_context_b = 0;
void expects_a(const strata::error_info&, void* context) {
  if (context != &g_context_a) g_mismatches.fetch_add(1);
  else g_matched.fetch_add(1);
}
void expects_b(const strata::error_info&, void* context) {
  if (context != &g_context_b) g_mismatches.fetch_add(1);
  else g_matched.fetch_add(1);
}
}  // namespace

TEST_CASE("error: a handler with a context is called with it, and the previous handler comes back") {
  counter mine;
  const strata::error_handler previous = strata::set_error_handler({&count_into, &mine});
  CHECK((previous == &strata::default_error_handler));
  const strata::error_handler now = strata::get_error_handler();
  CHECK((now.function() == &count_into));
  CHECK(now.context() == &mine);
  CHECK((now.plain() == nullptr));
  int x = 0;
  strata::report_error({strata::error_kind::double_free, "test", nullptr, &x, 8, 8, 0, nullptr});
  CHECK(mine.calls == 1);
  CHECK(mine.last_pointer == &x);
  // Another context for the same function is another handler.
  counter other;
  const strata::error_handler was = strata::set_error_handler({&count_into, &other});
  CHECK((was == now));
  strata::report_error({strata::error_kind::wrong_size, "test", nullptr, &x, 8, 8, 16, nullptr});
  CHECK(mine.calls == 1);
  CHECK(other.calls == 1);
  // A plain handler, then back to the first: restoring what set_error_handler returned.
  g_calls = 0;
  const strata::error_handler before_plain = strata::set_error_handler(&counting_handler);
  CHECK(before_plain.context() == &other);
  strata::report_error({strata::error_kind::double_free, "test", nullptr, &x, 8, 8, 0, nullptr});
  CHECK(g_calls == 1);
  strata::set_error_handler(was);
  strata::report_error({strata::error_kind::double_free, "test", nullptr, &x, 8, 8, 0, nullptr});
  CHECK(mine.calls == 2);
  CHECK((strata::set_error_handler(nullptr) == strata::error_handler(&count_into, &mine)));
  CHECK((strata::get_error_handler() == strata::error_handler()));
  CHECK((strata::get_error_handler().plain() == &strata::default_error_handler));
}

TEST_CASE("error: a report racing with set_error_handler calls a handler with its own context") {
  const strata::error_handler previous = strata::get_error_handler();
  g_mismatches = 0;
  g_matched = 0;
  strata::set_error_handler({&expects_a, &g_context_a});
  std::atomic<bool> done{false};
  std::thread setter([&] {
    while (!done.load()) {
      strata::set_error_handler({&expects_b, &g_context_b});
      strata::set_error_handler({&expects_a, &g_context_a});
    }
  });
  int x = 0;
  for (int i = 0; i < 20000; ++i)
    strata::report_error({strata::error_kind::double_free, "test", nullptr, &x, 8, 8, 0, nullptr});
  done = true;
  setter.join();
  strata::set_error_handler(previous);
  CHECK(g_mismatches.load() == 0);
  CHECK(g_matched.load() == 20000);
}

TEST_CASE("error: the message names the kind and resource and pointer and sizes") {
  char line[256];
  const void* p = reinterpret_cast<const void*>(0x1000);
  strata::error_info info{strata::error_kind::wrong_size, "bitmap_resource", nullptr, p, 48, 16, 32, "class differs"};
  const std::size_t n = strata::format_error(info, line, sizeof line);
  const std::string s(line, n);
  CHECK(s.find("wrong size") != std::string::npos);
  CHECK(s.find("bitmap_resource") != std::string::npos);
  char pointer[32];  // as the C library prints a pointer: 0x1000 (glibc), 0000000000001000 (Windows)
  std::snprintf(pointer, sizeof pointer, "%p", p);
  CHECK(s.find(pointer) != std::string::npos);
  CHECK(s.find("size 48") != std::string::npos);
  CHECK(s.find("alignment 16") != std::string::npos);
  CHECK(s.find("allocated with size 32") != std::string::npos);
  CHECK(s.find("class differs") != std::string::npos);
  char tiny[8];
  CHECK(strata::format_error(info, tiny, sizeof tiny) == 7);
  CHECK(std::string(tiny).size() == 7);
  for (auto k : {strata::error_kind::double_free, strata::error_kind::foreign_pointer, strata::error_kind::wrong_size,
                 strata::error_kind::bad_alignment, strata::error_kind::corrupt_metadata,
                 strata::error_kind::invariant_violated, strata::error_kind::buffer_overflow,
                 strata::error_kind::write_after_free, strata::error_kind::mismatched_free})
    CHECK(std::string(strata::to_string(k)) != "unknown error");
}

TEST_CASE("error: the default handler prints one line and aborts") {
  const strata_test::child_result r = strata_test::run_in_child([] {
    strata::report_error({strata::error_kind::double_free, "page_resource", nullptr, nullptr, 64, 8, 0, nullptr});
  });
  CHECK(r.aborted);
  const std::string& out = r.output;
  CHECK(out.rfind("strata: double free in page_resource", 0) == 0);
  CHECK(out.find('\n') == out.size() - 1);  // exactly one line
}
