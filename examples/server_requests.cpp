// SPDX-License-Identifier: MIT
// examples/server_requests.cpp: a server loop with an arena per request. Everything a request needs (its parsed
// headers, query parameters, the response it builds) is allocated from an arena that starts in a buffer on the
// worker's stack and is rewound when the request is done: no frees, nothing left behind between requests, and a
// request much larger than the rest takes chunks that go back upstream as soon as it ends.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory_resource>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <strata/arena_resource.hpp>

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::printf("  FAILED: %s\n", what);
    ++failures;
  }
}

struct request {
  std::pmr::string method, path;
  std::pmr::map<std::pmr::string, std::pmr::string> query;
  std::pmr::vector<std::pair<std::pmr::string, std::pmr::string>> headers;
  std::pmr::string body;
  explicit request(std::pmr::memory_resource* r) : method(r), path(r), query(r), headers(r), body(r) {}
};

std::string_view next_token(std::string_view& text, char separator) {
  const auto at = text.find(separator);
  const std::string_view token = text.substr(0, at);
  text = at == std::string_view::npos ? std::string_view{} : text.substr(at + 1);
  return token;
}

/// Parses "METHOD /path?k=v&k=v\nName: value\n...\n\nbody" into `out`, every string in the request's arena.
void parse(std::string_view text, request& out) {
  std::string_view line = next_token(text, '\n');
  out.method = next_token(line, ' ');
  std::string_view target = next_token(line, ' ');
  out.path = next_token(target, '?');
  while (!target.empty()) {
    std::string_view pair = next_token(target, '&');
    const std::string_view key = next_token(pair, '=');
    out.query.emplace(key, pair);
  }
  for (line = next_token(text, '\n'); !line.empty(); line = next_token(text, '\n')) {
    const std::string_view name = next_token(line, ':');
    out.headers.emplace_back(name, line.substr(line.find_first_not_of(' ')));
  }
  out.body = text;
}

/// The response, built in the same arena.
std::pmr::string respond(const request& r, std::pmr::memory_resource* arena) {
  std::pmr::string response(arena);
  response += "HTTP/1.1 200 OK\ncontent-type: text/plain\n\n";
  response += r.method;
  response += ' ';
  response += r.path;
  for (const auto& [key, value] : r.query) {
    response += "\n  ";
    response += key;
    response += " = ";
    response += value;
  }
  response += "\n  headers: ";
  response += std::to_string(r.headers.size());
  response += ", body: ";
  response += std::to_string(r.body.size());
  response += " bytes";
  return response;
}

std::string make_request(unsigned n, std::size_t body_bytes) {
  std::string text = "POST /api/items/" + std::to_string(n) + "?page=" + std::to_string(n % 7) +
                     "&sort=name&filter=active&user=someone_with_a_long_name\n";
  for (unsigned h = 0; h < 12; ++h)
    text += "x-header-" + std::to_string(h) + ": a value that is long enough not to fit in a short string\n";
  text += "\n";
  text.append(body_bytes, 'b');
  return text;
}

}  // namespace

int main() {
  std::printf("strata example: a server loop with an arena per request\n");

  // 16 KiB on the worker's stack serve a typical request; more comes from 64 KiB chunks upstream. Chunks past the
  // first go back upstream whenever the arena rewinds (give_back), so one large request does not keep its memory.
  alignas(16) unsigned char stack_buffer[16 << 10];
  strata::arena_options opts;
  opts.initial_size = std::size_t{64} << 10;
  opts.decommit = strata::arena_decommit::give_back;
  strata::arena_resource arena(stack_buffer, sizeof stack_buffer, opts);

  const auto baseline = arena.stats();
  std::size_t typical_held = 0;
  std::uint64_t typical_upstream = 0;
  std::size_t largest_in_use = 0;
  constexpr unsigned requests = 20000;
  std::size_t response_bytes = 0;

  for (unsigned n = 0; n < requests; ++n) {
    // Every 5,000th request carries a 2 MiB upload; the others a few hundred bytes.
    const std::string wire = make_request(n, n % 5000 == 4999 ? std::size_t{2} << 20 : 200 + n % 300);
    {
      strata::arena_resource::scope per_request(arena);
      request r(&arena);
      parse(wire, r);
      const std::pmr::string response = respond(r, &arena);
      response_bytes += response.size();
      if (r.query.size() != 4 || r.headers.size() != 12 || r.path.substr(0, 11) != "/api/items/") {
        expect(false, "the request parses");
        break;
      }
      largest_in_use = std::max(largest_in_use, arena.stats().bytes_in_use);
    }
    if (n == 100) {
      typical_held = arena.stats().bytes_held;
      typical_upstream = arena.stats().upstream_allocations;
    }
    if (n % 5000 == 4999)
      std::printf("  request %u (2 MiB body): largest in use so far %zu B, held after it %zu B\n", n, largest_in_use,
                  arena.stats().bytes_held);
  }

  const auto s = arena.stats();
  std::printf("  %u requests, %zu response bytes; %llu allocations, %llu upstream calls, %zu B held at the end "
              "(%zu B after 100 typical requests)\n",
              requests, response_bytes, static_cast<unsigned long long>(s.allocations),
              static_cast<unsigned long long>(s.upstream_allocations), s.bytes_held, typical_held);

  expect(s.bytes_in_use == baseline.bytes_in_use, "every request's memory was rewound");
  expect(s.bytes_held == typical_held, "the large requests' chunks went back upstream");
  expect(s.upstream_allocations - typical_upstream <= 2 * (requests / 5000) * 8,
         "typical requests took nothing from upstream; only the large ones did");
  expect(largest_in_use > (std::size_t{2} << 20), "a large request's body was in the arena");
  expect(arena.check_invariants(), "the arena's invariants hold");
  std::printf("%s\n", failures == 0 ? "  ok" : "  FAILED");
  return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
