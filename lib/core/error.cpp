// SPDX-License-Identifier: MIT
// lib/core/error.cpp: the process-wide misuse handler and the shared throwing helpers.
#include <strata/error.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>

#include <strata/config.hpp>
#include <strata/detail/core/checks.hpp>
#include <strata/detail/core/interned.hpp>

namespace strata {
namespace {

// The installed handler is a pointer to an interned copy, so that a report reads a function and its context that
// belong together (a program installs few handlers; each distinct one is kept once).
detail::interned_values<error_handler> g_handlers;
std::atomic<const error_handler*> g_handler{nullptr};  // nullptr: the default handler

const error_handler* stable(const error_handler& h) noexcept {
  return h == error_handler{} ? nullptr : g_handlers.get(h);  // nullptr when out of memory too: the default
}

}  // namespace

const char* to_string(error_kind kind) noexcept {
  switch (kind) {
    case error_kind::double_free: return "double free";
    case error_kind::foreign_pointer: return "foreign pointer";
    case error_kind::wrong_size: return "wrong size";
    case error_kind::bad_alignment: return "bad alignment";
    case error_kind::corrupt_metadata: return "corrupt metadata";
    case error_kind::invariant_violated: return "invariant violated";
    case error_kind::buffer_overflow: return "buffer overflow";
    case error_kind::write_after_free: return "write after free";
    case error_kind::mismatched_free: return "mismatched free";
  }
  return "unknown error";
}

std::size_t format_error(const error_info& info, char* buffer, std::size_t buffer_size) noexcept {
  if (buffer_size == 0) return 0;
  std::size_t pos = 0;
  auto append = [&](int written) {
    if (written > 0) pos += static_cast<std::size_t>(written);
    if (pos >= buffer_size) pos = buffer_size - 1;
  };
  append(std::snprintf(buffer, buffer_size, "strata: %s in %s %p: pointer %p, size %zu, alignment %zu",
                       to_string(info.kind), info.resource_name ? info.resource_name : "resource", info.resource,
                       info.pointer, info.size, info.alignment));
  if (info.expected_size != 0)
    append(std::snprintf(buffer + pos, buffer_size - pos, " (allocated with size %zu)", info.expected_size));
  if (info.detail != nullptr) append(std::snprintf(buffer + pos, buffer_size - pos, ": %s", info.detail));
  return pos;
}

void default_error_handler(const error_info& info) noexcept {
  char line[512];
  format_error(info, line, sizeof line);
  std::fprintf(stderr, "%s\n", line);
  std::fflush(stderr);
  std::abort();
}

void error_handler::operator()(const error_info& info) const {
  if (with_context_ != nullptr) with_context_(info, context_);
  else if (plain_ != nullptr) plain_(info);
  else default_error_handler(info);
}

error_handler set_error_handler(error_handler handler) noexcept {
  const error_handler* previous = g_handler.exchange(stable(handler), std::memory_order_acq_rel);
  return previous != nullptr ? *previous : error_handler{};
}

error_handler get_error_handler() noexcept {
  const error_handler* h = g_handler.load(std::memory_order_acquire);
  return h != nullptr ? *h : error_handler{};
}

STRATA_COLD void report_error(const error_info& info) {
  const error_handler* h = g_handler.load(std::memory_order_acquire);
  if (h != nullptr) (*h)(info);
  else default_error_handler(info);
}

namespace detail {

void assertion_failed(const char* expr, const char* file, int line) noexcept {
  std::fprintf(stderr, "strata: assertion failed: %s (%s:%d)\n", expr, file, line);
  std::fflush(stderr);
  std::abort();
}

void throw_bad_alignment(const char* who, std::size_t alignment) {
  throw std::invalid_argument(std::string(who) + ": alignment " + std::to_string(alignment) +
                              " is not a power of two");
}

void throw_bad_alloc() { throw std::bad_alloc(); }

void reject_misaligned(std::pmr::memory_resource* upstream, void* p, std::size_t bytes, std::size_t alignment) {
  upstream->deallocate(p, bytes, alignment);
  throw std::bad_alloc();
}

}  // namespace detail
}  // namespace strata
