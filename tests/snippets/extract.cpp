// SPDX-License-Identifier: MIT
// tests/snippets/extract.cpp: writes every C and C++ code block of the given Markdown files as a program, so that
// the docs' examples are compiled and run (see snippets.cmake). Usage: extract OUT_DIR FILE.md...
//
// A block fenced ```cpp or ```c becomes OUT_DIR/<page>_<n>.cpp or .c: its #include lines and its definitions
// (a line at column 0 that opens a function, struct or class and ends with "{", up to the next "}" at column 0, or a
// one-line "struct ... };") at file scope, every other line inside main(). A block fenced ```cpp file=PATH quotes
// the repository's PATH: it becomes OUT_DIR/<page>_<n>.quote, whose first line names PATH.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

bool opens_definition(const std::string& line) {
  static const char* const heads[] = {"static ", "struct ", "class ", "enum ", "union ", "template", "namespace ",
                                      "void ", "int ", "typedef "};
  for (const char* h : heads)
    if (starts_with(line, h)) return ends_with(line, "{") || ends_with(line, "};");
  return false;
}

std::string page_name(const std::string& path) {
  std::string base = path.substr(path.find_last_of('/') + 1);
  if (ends_with(base, ".md")) base.resize(base.size() - 3);
  for (char& c : base)
    if (c == '.' || c == '-') c = '_';
  return base;
}

void write_program(const std::string& out, bool cxx, const std::vector<std::string>& block) {
  std::vector<std::string> head, body;
  for (std::size_t i = 0; i < block.size(); ++i) {
    const std::string& line = block[i];
    if (starts_with(line, "#include")) {
      head.push_back(line);
    } else if (opens_definition(line)) {
      head.push_back(line);
      if (ends_with(line, "{"))
        while (++i < block.size()) {
          head.push_back(block[i]);
          if (starts_with(block[i], "}")) break;
        }
    } else {
      body.push_back(line);
    }
  }
  std::ofstream f(out);
  f << (cxx ? "// generated from a code block of the docs\n#include <cstdio>\n#include <cstring>\n"
            : "/* generated from a code block of the docs */\n#include <stdio.h>\n#include <string.h>\n");
  for (const auto& l : head) f << l << '\n';
  f << (cxx ? "int main() {\n" : "int main(void) {\n");
  for (const auto& l : body) f << "  " << l << '\n';
  f << "  return 0;\n}\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: extract OUT_DIR FILE.md...\n");
    return 2;
  }
  const std::string out_dir = argv[1];
  for (int a = 2; a < argc; ++a) {
    std::ifstream in(argv[a]);
    if (!in) {
      std::fprintf(stderr, "extract: cannot read %s\n", argv[a]);
      return 1;
    }
    const std::string page = page_name(argv[a]);
    std::string line, lang, quoted;
    std::vector<std::string> block;
    bool in_block = false;
    int n = 0;
    while (std::getline(in, line)) {
      if (!in_block && starts_with(line, "```")) {
        std::istringstream info(line.substr(3));
        lang.clear();
        info >> lang;
        std::string attr;
        quoted.clear();
        while (info >> attr)
          if (starts_with(attr, "file=")) quoted = attr.substr(5);
        in_block = true;
        block.clear();
        continue;
      }
      if (in_block && starts_with(line, "```")) {
        in_block = false;
        if (lang != "cpp" && lang != "c") continue;
        const std::string base = out_dir + "/" + page + "_" + std::to_string(++n);
        if (!quoted.empty()) {
          std::ofstream f(base + ".quote");
          f << quoted << '\n';
          for (const auto& l : block) f << l << '\n';
          std::cout << base << ".quote\n";
        } else {
          write_program(base + (lang == "cpp" ? ".cpp" : ".c"), lang == "cpp", block);
          std::cout << base << (lang == "cpp" ? ".cpp" : ".c") << '\n';
        }
        continue;
      }
      if (in_block) block.push_back(line);
    }
  }
  return 0;
}
