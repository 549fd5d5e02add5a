// SPDX-License-Identifier: MIT
// lib/error.cpp: the process-wide misuse handler and the shared throwing helpers.
#include <strata/error.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>

#include <strata/config.hpp>
#include <strata/detail/checks.hpp>

namespace strata {
namespace {

// The installed handler is a pointer to an immutable node, so that a report reads a function and its context that
// belong together. Nodes are never freed: each distinct handler gets one, reused when it is installed again (a
// program installs few), and all stay reachable from g_nodes.
struct handler_node {
  error_handler handler;
  const handler_node* next;
};
std::mutex g_nodes_lock;
const handler_node* g_nodes = nullptr;  // every node made so far
std::atomic<const handler_node*> g_handler{nullptr};  // nullptr: the default handler

const handler_node* node_for(const error_handler& h) noexcept {
  if (h == error_handler{}) return nullptr;
  std::lock_guard<std::mutex> lock(g_nodes_lock);
  for (const handler_node* n = g_nodes; n != nullptr; n = n->next)
    if (n->handler == h) return n;
  auto* n = new (std::nothrow) handler_node{h, g_nodes};
  if (n != nullptr) g_nodes = n;
  return n;  // nullptr when out of memory: the default handler
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
  const handler_node* previous = g_handler.exchange(node_for(handler), std::memory_order_acq_rel);
  return previous != nullptr ? previous->handler : error_handler{};
}

error_handler get_error_handler() noexcept {
  const handler_node* n = g_handler.load(std::memory_order_acquire);
  return n != nullptr ? n->handler : error_handler{};
}

STRATA_COLD void report_error(const error_info& info) {
  const handler_node* n = g_handler.load(std::memory_order_acquire);
  if (n != nullptr) n->handler(info);
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
