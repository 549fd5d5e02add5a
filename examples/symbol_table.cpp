// SPDX-License-Identifier: MIT
// examples/symbol_table.cpp: a compiler's symbol table on a bitmap_resource. Identifiers, their nodes and the hash
// table's buckets are small blocks of a few sizes: size classes in bitmap slabs hold them with no header per block,
// and a whole scope's symbols go back at once when the scope closes.
#include <cstdio>
#include <cstdlib>
#include <memory_resource>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <strata/bitmap_resource.hpp>

namespace {

struct symbol {
  enum kind_t { variable, function, type } kind;
  int line;
  std::pmr::string type_name;  // shares the table's resource (uses-allocator construction)
  using allocator_type = std::pmr::polymorphic_allocator<char>;
  symbol(kind_t k, int l, std::string_view t, allocator_type a = {}) : kind(k), line(l), type_name(t, a) {}
  symbol(const symbol& other, allocator_type a) : kind(other.kind), line(other.line), type_name(other.type_name, a) {}
  symbol(symbol&& other, allocator_type a) : kind(other.kind), line(other.line), type_name(std::move(other.type_name), a) {}
};

/// Nested scopes, innermost last; lookups walk outwards.
class symbol_table {
 public:
  explicit symbol_table(std::pmr::memory_resource* r) : resource_(r), scopes_(r) {
    scopes_.reserve(64);  // deep enough for any program here: no vector growth to account for
    open_scope();
  }

  void open_scope() { scopes_.emplace_back(); }
  void close_scope() { scopes_.pop_back(); }
  std::size_t depth() const { return scopes_.size(); }

  bool declare(std::string_view name, symbol::kind_t kind, int line, std::string_view type) {
    return scopes_.back().try_emplace(std::pmr::string(name, resource_), kind, line, type).second;
  }

  const symbol* lookup(std::string_view name) const {
    const std::pmr::string key(name, resource_);  // C++17 has no heterogeneous lookup for unordered_map
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      if (auto found = it->find(key); found != it->end()) return &found->second;
    }
    return nullptr;
  }

 private:
  using scope_map = std::pmr::unordered_map<std::pmr::string, symbol>;
  std::pmr::memory_resource* resource_;
  std::pmr::vector<scope_map> scopes_;
};

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::printf("  FAILED: %s\n", what);
    ++failures;
  }
}

std::string identifier(unsigned n) {
  // Short names like a real program's (i, tmp3, parse_expression_17): 1 to ~24 characters.
  static const char* const stems[] = {"i", "n", "tmp", "node", "count", "buffer", "parse_expression", "visit_member_"};
  return std::string(stems[n % 8]) + std::to_string(n / 8);
}

}  // namespace

int main() {
  std::printf("strata example: a compiler's symbol table (std::pmr::unordered_map of std::pmr::string) on a "
              "bitmap_resource\n");
  strata::bitmap_resource pool;
  {
    symbol_table table(&pool);
    // Globals: 20,000 functions and types.
    for (unsigned i = 0; i < 20000; ++i)
      expect(table.declare(identifier(i), i % 3 == 0 ? symbol::type : symbol::function, int(i), "int(*)(const char*)"),
             "a global is new");
    const auto globals = pool.stats();
    std::printf("  globals: %llu live blocks, %zu bytes in use, %zu held (%.2f held per byte in use)\n",
                static_cast<unsigned long long>(globals.live_allocations()), globals.bytes_in_use, globals.bytes_held,
                double(globals.bytes_held) / double(globals.bytes_in_use));

    // 2,000 function bodies, each with nested blocks of locals that shadow globals, opened and closed in turn.
    unsigned long long found = 0;
    for (unsigned f = 0; f < 2000; ++f) {
      table.open_scope();
      for (unsigned b = 0; b < 3; ++b) {
        table.open_scope();
        for (unsigned v = 0; v < 40; ++v) table.declare(identifier(v * 8 + b), symbol::variable, int(f), "long");
        for (unsigned v = 0; v < 40; ++v) {
          const symbol* s = table.lookup(identifier(v * 8 + b));
          found += s != nullptr && s->kind == symbol::variable;  // the local shadows the global
        }
      }
      for (unsigned b = 0; b < 3; ++b) table.close_scope();
      table.close_scope();
    }
    expect(found == 2000ull * 3 * 40, "every local is found, shadowing its global");
    expect(table.lookup("count7") != nullptr && table.lookup("count7")->kind != symbol::variable,
           "after the bodies, names resolve to globals again");
    expect(table.lookup("no_such_name") == nullptr, "an undeclared name is not found");

    const auto after = pool.stats();
    std::printf("  after 2,000 bodies (6,000 scopes, 240,000 locals): %llu live blocks, %zu bytes in use, "
                "%zu held; peak in use %zu\n",
                static_cast<unsigned long long>(after.live_allocations()), after.bytes_in_use, after.bytes_held,
                after.peak_bytes_in_use);
    expect(after.live_allocations() == globals.live_allocations() && after.bytes_in_use == globals.bytes_in_use,
           "closed scopes gave back every block they took");
    for (unsigned c = 0; c < pool.class_count(); ++c) {
      const auto cs = pool.class_stats(c);
      if (cs.live_objects != 0)
        std::printf("    class %2u: %4zu-byte slots, %6zu live in %zu slabs\n", c, cs.object_size, cs.live_objects,
                    cs.blocks);
    }
    expect(pool.check_invariants(), "the pool's invariants hold");
  }
  const auto end = pool.stats();
  expect(end.bytes_in_use == 0 && end.live_allocations() == 0, "the table's destruction freed everything");
  pool.release();
  expect(pool.stats().bytes_held == 0, "release() gave every slab back");
  std::printf("%s\n", failures == 0 ? "  ok" : "  FAILED");
  return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
