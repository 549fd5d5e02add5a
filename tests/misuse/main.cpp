// SPDX-License-Identifier: MIT
// tests/misuse/main.cpp: strata_misuse_matrix: runs every (subject, kind, size) of the misuse matrix in a forked
// child, classifies what happened, compares it with the golden file and checks what the matrix requires; writes the
// golden file, the tables of docs/misuse-matrix.md and the costs there.
//
//   strata_misuse_matrix --subject NAME --golden FILE   one subject's cases (a ctest test each)
//   strata_misuse_matrix --all --golden FILE            every subject
//   strata_misuse_matrix --write-golden FILE            every subject; FILE rewritten (expectations that hold kept)
//   strata_misuse_matrix --markdown FILE --golden FILE  the tables between FILE's matrix markers, rewritten
//   strata_misuse_matrix --costs FILE                   the costs between FILE's costs markers (Release builds)
//   strata_misuse_matrix --case SUBJECT KIND SIZE       one case, with what the child said and wrote to stderr
//
// libstrata-malloc's subjects run in a copy of this program started with it preloaded (--emit).
#include "matrix.hpp"

#include <dlfcn.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace misuse {

// ---- the child's channel -------------------------------------------------------------------------------------------
//
// A child tells its parent, one line each: "B" and "A" before and after the bad access; "R <text>" what it saw;
// "C <stage> <kind>" a report of the error handler (the child then exits); "X <stage> <what>" an exception that ended
// the program; "E" the end.

namespace {
int g_channel = -1;
volatile std::sig_atomic_t g_stage = 0;

// One line to the parent (a newline inside a part becomes a space), with one write: async-signal-safe.
void send(const char* a, const char* b = "", const char* c = "") noexcept {
  char line[512];
  std::size_t n = 0;
  for (const char* part : {a, b, c})
    for (; *part != '\0' && n < sizeof line - 1; ++part) line[n++] = *part == '\n' ? ' ' : *part;
  line[n++] = '\n';
  (void)!write(g_channel, line, n);
}
}  // namespace

void open_channel(int fd) noexcept { g_channel = fd; }
void set_stage(stage s) noexcept { g_stage = static_cast<int>(s); }
void before_access() noexcept { send("B"); }
void after_access() noexcept { send("A"); }
void observe(const char* text, const char* more) noexcept { send("R ", text, more); }

namespace {
// "<stage> ", for the lines that name where the program was.
struct stage_text {
  char text[3] = {static_cast<char>('0' + g_stage), ' ', '\0'};
};
}  // namespace

void report_misuse(const char* kind) noexcept {
  send("C ", stage_text().text, kind);
  _exit(0);
}

namespace {

// ---- one case in a child -------------------------------------------------------------------------------------------

struct case_run {
  std::string outcome;
  std::string channel;  // what the child said
  std::string errors;   // what it wrote to stderr
};

constexpr unsigned case_seconds = 5;

bool is_preloaded() {
  const char* path = malloc_library();
  return path != nullptr && dlopen(path, RTLD_NOW | RTLD_NOLOAD) != nullptr;
}

// A forked child and the pipe it writes to: in the parent the read ends, in the child (pid 0) the write end of
// `output`, with its stderr already on the second pipe when one was asked for.
struct child {
  pid_t pid = -1;
  int output = -1;
  int errors = -1;
};

child start_child(bool capture_errors) {
  int out[2], err[2] = {-1, -1};
  if (pipe(out) != 0 || (capture_errors && pipe(err) != 0)) {
    std::perror("misuse matrix: pipe");
    std::exit(2);
  }
  std::fflush(nullptr);
  child c;
  c.pid = fork();
  if (c.pid < 0) {
    std::perror("misuse matrix: fork");
    std::exit(2);
  }
  if (c.pid == 0) {
    close(out[0]);
    c.output = out[1];
    if (capture_errors) {
      close(err[0]);
      dup2(err[1], 2);
      close(err[1]);
    }
    return c;
  }
  close(out[1]);
  c.output = out[0];
  if (capture_errors) {
    close(err[1]);
    c.errors = err[0];
  }
  return c;
}

// Reads what the child writes (and its stderr) to the end, waits for it, and returns its wait status.
int finish(const child& c, std::string& output, std::string* errors = nullptr) {
  pollfd fds[2] = {{c.output, POLLIN, 0}, {c.errors, POLLIN, 0}};
  for (int open = c.errors < 0 ? 1 : 2; open > 0;) {
    if (poll(fds, c.errors < 0 ? 1 : 2, -1) < 0) continue;
    for (pollfd& f : fds) {
      if (f.fd < 0 || f.revents == 0) continue;
      char buffer[4096];
      const ssize_t n = read(f.fd, buffer, sizeof buffer);
      if (n <= 0) {
        close(f.fd);
        f.fd = -1;
        --open;
      } else if (f.fd == c.output) {
        output.append(buffer, static_cast<std::size_t>(n));
      } else if (errors != nullptr) {
        errors->append(buffer, static_cast<std::size_t>(n));
      }
    }
  }
  int status = 0;
  while (waitpid(c.pid, &status, 0) < 0) {
  }
  return status;
}

std::string signal_name(int sig) {
  switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGABRT: return "SIGABRT";
    case SIGILL: return "SIGILL";
    case SIGFPE: return "SIGFPE";
    default: return "signal " + std::to_string(sig);
  }
}

// The outcome from what the child said and how it ended (see docs/misuse-matrix.md for the words).
std::string classify(const kind& k, const std::string& channel, const std::string& errors, int status) {
  bool before = false, after = false, ended = false;
  std::string report, report_stage, thrown;
  std::vector<std::string> seen;
  std::istringstream lines(channel);
  for (std::string line; std::getline(lines, line);) {
    if (line == "B") before = true;
    else if (line == "A") after = true;
    else if (line == "E") ended = true;
    else if (line.rfind("R ", 0) == 0) seen.push_back(line.substr(2));
    else if (line.rfind("X ", 0) == 0) thrown = line.substr(2);  // "<stage> <what>"
    else if (line.rfind("C ", 0) == 0 && report.empty()) {
      report_stage = line.substr(2, 1);
      report = line.substr(4);
    }
  }
  std::string outcome;
  if (!report.empty()) {
    const char* where = report_stage == "1"   ? "call"
                        : report_stage == "2" ? "later"
                        : report_stage == "3" ? "check"
                                              : "error (set-up)";
    outcome = std::string(where) + ": " + report;
  } else if (WIFSIGNALED(status) && (WTERMSIG(status) == SIGSEGV || WTERMSIG(status) == SIGBUS) && before && !after) {
    outcome = "instr";
  } else if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    if (sig == SIGALRM) seen.push_back("hangs");
    else if (errors.find("assertion failed") != std::string::npos) seen.push_back("an internal assertion fails later");
    else seen.push_back("dies later (" + signal_name(sig) + ")");
    outcome = k.what == group::info ? "" : "none";
  } else if (thrown.rfind("0 ", 0) == 0) {
    outcome = "error (set-up: " + thrown.substr(2) + ")";
  } else if (ended) {
    if (!thrown.empty()) seen.push_back("throws " + thrown.substr(2));
    outcome = k.what == group::info ? "" : "none";
  } else {
    outcome = "error (exit " + std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + ")";
  }
  std::string details;
  for (const std::string& s : seen) details += (details.empty() ? "" : "; ") + s;
  if (outcome.empty()) return details;
  return details.empty() ? outcome : outcome + " (" + details + ")";
}

case_run run_case(const subject& s, const kind& k, std::size_t size) {
  const child c = start_child(true);
  if (c.pid == 0) {
    open_channel(c.output);
    alarm(case_seconds);
    install_error_handler();
    if (s.how == face::malloc) install_malloc_library_handler();
    set_stage(stage::setup);
    try {
      heap& h = s.make(size);
      k.run(h, size);
      set_stage(stage::check);
      h.check();
    } catch (const std::exception& e) {
      send("X ", stage_text().text, e.what());
    }
    send("E");
    _exit(0);
  }
  case_run r;
  const int status = finish(c, r.channel, &r.errors);
  r.outcome = classify(k, r.channel, r.errors, status);
  return r;
}

// ---- subjects ------------------------------------------------------------------------------------------------------

struct result {
  const kind* k;
  std::size_t size;
  std::string outcome;
};

bool applies(const subject& s, const kind& k) { return !k.malloc_only || s.how == face::malloc; }

// Runs this program again with libstrata-malloc preloaded and the subject's STRATA_CHECKS (and STRATA_DEBUG), and
// returns its output.
std::string run_preloaded(const subject& s, const char* mode) {
  const char* library = malloc_library();
  if (library == nullptr) return "";
  const child c = start_child(false);
  if (c.pid == 0) {
    dup2(c.output, 1);
    setenv("LD_PRELOAD", library, 1);
    setenv("STRATA_CHECKS", s.checks, 1);
    if (s.debug != nullptr) setenv("STRATA_DEBUG", s.debug, 1);
    else unsetenv("STRATA_DEBUG");
    execl("/proc/self/exe", "strata_misuse_matrix", "--emit", mode, s.name, static_cast<char*>(nullptr));
    _exit(127);
  }
  std::string text;
  const int status = finish(c, text);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    std::fprintf(stderr, "misuse matrix: the preloaded run of %s failed (status %d)\n", s.name, status);
  return text;
}

const kind* find_kind(const std::string& name) {
  for (const kind& k : kinds())
    if (name == k.name) return &k;
  return nullptr;
}

std::vector<result> run_subject(const subject& s) {
  std::vector<result> results;
  if (s.how == face::malloc && !is_preloaded()) {
    std::istringstream lines(run_preloaded(s, "cases"));
    for (std::string line; std::getline(lines, line);) {
      const std::size_t a = line.find('\t'), b = line.find('\t', a + 1);
      if (a == std::string::npos || b == std::string::npos) continue;
      if (const kind* k = find_kind(line.substr(0, a)))
        results.push_back({k, std::stoul(line.substr(a + 1, b - a - 1)), line.substr(b + 1)});
    }
    return results;
  }
  if (s.how == face::c_heap) setenv("STRATA_CHECKS", s.checks, 1);  // read when a child makes the heap
  for (const kind& k : kinds()) {
    if (!applies(s, k)) continue;
    for (std::size_t size : sizes) results.push_back({&k, size, run_case(s, k, size).outcome});
  }
  return results;
}

// ---- expectations --------------------------------------------------------------------------------------------------

// What the matrix requires of a cell, beyond the golden file: (a) debug_resource's guarded mode catches every kind an
// allocator can catch at the instruction or in the call; (b) every strategy's default mode reports every double and
// invalid free in the call. nullptr: nothing.
const char* requirement(const subject& s, const kind& k) {
  if (!k.catchable || k.malloc_only) return nullptr;
  const bool frees = k.what == group::double_free || k.what == group::invalid_free;
  if (s.default_mode && frees) return "call: *";
  if (s.guarded && (frees || k.what == group::access)) return "instr | call: *";
  return nullptr;
}

// An expectation: alternatives separated by " | ", each exact or, ending in '*', a prefix.
bool matches(const std::string& expected, const std::string& outcome) {
  std::size_t from = 0;
  for (;;) {
    const std::size_t bar = expected.find(" | ", from);
    const std::string alternative = expected.substr(from, bar == std::string::npos ? std::string::npos : bar - from);
    if (!alternative.empty() && alternative.back() == '*') {
      if (outcome.compare(0, alternative.size() - 1, alternative, 0, alternative.size() - 1) == 0) return true;
    } else if (alternative == outcome) {
      return true;
    }
    if (bar == std::string::npos) return false;
    from = bar + 3;
  }
}

std::string key(const std::string& subject, const std::string& kind, std::size_t size) {
  return subject + "\t" + kind + "\t" + std::to_string(size);
}

// The golden file: "subject<TAB>kind<TAB>size<TAB>expected[<TAB># note]" per line; '#' lines are comments.
std::map<std::string, std::string> read_golden(const std::string& path) {
  std::map<std::string, std::string> golden;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::size_t tab = 0;
    for (int i = 0; i < 3 && tab != std::string::npos; ++i) tab = line.find('\t', tab + (i == 0 ? 0 : 1));
    if (tab == std::string::npos) continue;
    std::string expected = line.substr(tab + 1);
    if (const std::size_t note = expected.find("\t#"); note != std::string::npos) expected.resize(note);
    golden[line.substr(0, tab)] = expected;
  }
  return golden;
}

// Compares one subject's results with the golden file and the requirements; prints every difference.
int verify(const subject& s, const std::vector<result>& results, const std::map<std::string, std::string>& golden) {
  int failures = 0;
  for (const kind& k : kinds()) {
    if (!applies(s, k)) continue;
    for (std::size_t size : sizes) {
      const bool ran = std::any_of(results.begin(), results.end(),
                                   [&](const result& r) { return r.k == &k && r.size == size; });
      if (!ran) {
        std::printf("MISSING   %s %s %zu: the case did not run\n", s.name, k.name, size);
        ++failures;
      }
    }
  }
  for (const result& r : results) {
    const std::string where = std::string(s.name) + " " + r.k->name + " " + std::to_string(r.size);
    const auto g = golden.find(key(s.name, r.k->name, r.size));
    if (g == golden.end()) {
      std::printf("NEW       %-48s %s (not in the golden file)\n", where.c_str(), r.outcome.c_str());
      ++failures;
    } else if (!matches(g->second, r.outcome)) {
      std::printf("DIFFERS   %-48s expected: %s\n          %-48s got:      %s\n", where.c_str(), g->second.c_str(), "",
                  r.outcome.c_str());
      ++failures;
    }
    if (const char* required = requirement(s, *r.k); required != nullptr && !matches(required, r.outcome)) {
      std::printf("REQUIRED  %-48s must be %s, is: %s\n", where.c_str(),
                  std::strcmp(required, "call: *") == 0 ? "reported in the call"
                                                        : "caught at the instruction or in the call",
                  r.outcome.c_str());
      ++failures;
    }
  }
  std::printf("%s: %zu cases, %d failures\n", s.name, results.size(), failures);
  return failures;
}

using all_results = std::vector<std::pair<const subject*, std::vector<result>>>;

all_results run_all() {
  all_results all;
  for (const subject& s : subjects()) {
    if (s.how == face::malloc && malloc_library() == nullptr) continue;
    std::fprintf(stderr, "misuse matrix: %s\n", s.name);
    all.emplace_back(&s, run_subject(s));
  }
  return all;
}

int write_golden(const std::string& path) {
  const std::map<std::string, std::string> old = read_golden(path);
  std::ostringstream out;
  out << "# The misuse matrix's expected outcomes (tests/misuse/; docs/misuse-matrix.md says what the words mean).\n"
         "# subject<TAB>kind<TAB>size<TAB>expected[<TAB># note]. Alternatives are separated by \" | \"; a trailing *\n"
         "# matches any rest. Written by strata_misuse_matrix --write-golden, which keeps expectations that still\n"
         "# hold and writes what the matrix requires where a cell falls short of it.\n";
  int short_of = 0;
  for (const auto& [s, results] : run_all()) {
    for (const result& r : results) {
      const std::string k = key(s->name, r.k->name, r.size);
      std::string line = k + "\t";
      const char* required = requirement(*s, *r.k);
      if (required != nullptr && !matches(required, r.outcome)) {
        line += std::string(required) + "\t# required; seen: " + r.outcome;
        ++short_of;
      } else if (const auto o = old.find(k); o != old.end() && matches(o->second, r.outcome)) {
        line += o->second;
      } else {
        line += r.outcome;
      }
      out << line << "\n";
    }
  }
  std::ofstream(path) << out.str();
  std::printf("wrote %s (%d cells written as required, not as seen)\n", path.c_str(), short_of);
  return 0;
}

// ---- docs/misuse-matrix.md -----------------------------------------------------------------------------------------

// Replaces what lies between "<!-- NAME begin -->" and "<!-- NAME end -->" in the file.
int replace_section(const std::string& path, const std::string& name, const std::string& text) {
  std::ifstream in(path);
  std::stringstream whole;
  whole << in.rdbuf();
  std::string doc = whole.str();
  const std::string begin = "<!-- " + name + " begin -->\n", end = "<!-- " + name + " end -->";
  const std::size_t b = doc.find(begin), e = doc.find(end);
  if (b == std::string::npos || e == std::string::npos || e < b) {
    std::fprintf(stderr, "misuse matrix: %s has no %s markers\n", path.c_str(), name.c_str());
    return 1;
  }
  doc.replace(b + begin.size(), e - b - begin.size(), text);
  std::ofstream(path) << doc;
  return 0;
}

std::string size_text(std::size_t size) {
  return size >= 1024 ? std::to_string(size / 1024) + " KiB" : std::to_string(size) + " B";
}

// An outcome's word in the tables: its first word (instr, call, later, check, none), or an informational row's
// observation.
std::string word_of(const kind& k, const std::string& outcome) {
  if (k.what == group::info) return outcome.substr(0, outcome.find(" ("));
  return outcome.substr(0, outcome.find_first_of(":( *"));
}

// A cell's word at one size: the golden expectation's words when the run agrees with it (an outcome that depends on
// what the OS mapped next to a block is "instr or none" there), else what the run saw.
std::string size_word(const kind& k, const std::string& expected, const std::string& outcome) {
  if (expected.empty() || !matches(expected, outcome)) return word_of(k, outcome);
  std::vector<std::string> words;
  for (std::size_t from = 0;;) {
    const std::size_t bar = expected.find(" | ", from);
    std::string w = word_of(k, expected.substr(from, bar == std::string::npos ? std::string::npos : bar - from));
    if (std::find(words.begin(), words.end(), w) == words.end()) words.push_back(w);
    if (bar == std::string::npos) break;
    from = bar + 3;
  }
  // An outcome that depends on the layout may also be a report, when the memory next to the block is the
  // allocator's own: the legend says so, and the cell keeps to "instr or none".
  if (std::find(words.begin(), words.end(), "instr") != words.end() &&
      std::find(words.begin(), words.end(), "none") != words.end())
    return "instr or none";
  std::sort(words.begin(), words.end());
  std::string text;
  for (const std::string& w : words) text += (text.empty() ? "" : " or ") + w;
  return text;
}

// One cell: the word shared by all sizes, or the most common one with the sizes that differ.
std::string cell(const subject& s, const kind& k, const std::vector<result>& results,
                 const std::map<std::string, std::string>& golden) {
  std::vector<std::pair<std::size_t, std::string>> words;
  for (const result& r : results) {
    if (r.k != &k) continue;
    const auto g = golden.find(key(s.name, k.name, r.size));
    words.emplace_back(r.size, size_word(k, g == golden.end() ? "" : g->second, r.outcome));
  }
  if (words.empty()) return "";
  std::map<std::string, int> counts;
  for (const auto& w : words) ++counts[w.second];
  std::string common = words.front().second;
  for (const auto& [word, n] : counts)
    if (n > counts[common]) common = word;
  std::string rest;
  for (const auto& [size, word] : words)
    if (word != common) rest += (rest.empty() ? "" : ", ") + size_text(size) + ": " + word;
  return rest.empty() ? common : common + " (" + rest + ")";
}

std::string table(const all_results& all, const std::map<std::string, std::string>& golden,
                  const std::vector<std::string>& columns) {
  std::string header = "| bug |", rule = "|:--|";
  std::vector<std::pair<const subject*, const std::vector<result>*>> picked;
  for (const std::string& name : columns)
    for (const auto& [s, results] : all)
      if (name == s->name) {
        header += std::string(" ") + s->title + " |";
        rule += ":--|";
        picked.emplace_back(s, &results);
      }
  std::string text = header + "\n" + rule + "\n";
  for (const kind& k : kinds()) {
    std::string row = std::string("| ") + k.title + " |";
    bool any = false;
    for (const auto& [s, results] : picked) {
      const std::string c = cell(*s, k, *results, golden);
      any = any || !c.empty();
      row += " " + (c.empty() ? std::string("-") : c) + " |";
    }
    if (any) text += row + "\n";
  }
  return text;
}

int write_markdown(const std::string& path, const std::string& golden_path) {
  const all_results all = run_all();
  const std::map<std::string, std::string> golden = read_golden(golden_path);
  std::string text = "Strategies:\n\n" +
                     table(all, golden,
                           {"page", "bitmap", "bitmap-strict", "sync-bitmap", "sync-bitmap-strict", "fixed-pool",
                            "fixed-pool-strict", "sync-fixed-pool", "sync-fixed-pool-strict"}) +
                     "\n" +
                     table(all, golden, {"free-list", "free-list-strict", "sync-free-list", "thread-cache",
                                        "thread-cache-strict", "arena", "sync-arena"}) +
                     "\nThe C API, libstrata-malloc and debug_resource:\n\n" +
                     table(all, golden, {"c-heap", "malloc", "malloc-strict", "malloc-debug", "malloc-guarded", "debug", "debug-guarded"});
  // What "none" left behind, where the program could see it.
  std::string consequences;
  for (const kind& k : kinds()) {
    if (k.what == group::info) continue;
    std::set<std::string> effects;
    for (const auto& [s, results] : all)
      for (const result& r : results)
        if (r.k == &k && r.outcome.rfind("none (", 0) == 0) effects.insert(r.outcome.substr(6, r.outcome.size() - 7));
    std::string line;
    for (const std::string& e : effects) line += (line.empty() ? "" : "; ") + e;
    if (!line.empty()) consequences += std::string("- ") + k.title + ": " + line + "\n";
  }
  text += "\nWhat the program saw where nothing caught the bug (\"none\"), by row:\n\n" + consequences;
  return replace_section(path, "matrix", text);
}

// ---- costs ---------------------------------------------------------------------------------------------------------

struct costs {
  double pair_ns = 0;        // an allocate and a free
  double resident = 0;       // memory per live 8-byte block, bytes
  double address_space = 0;  // address space per live 8-byte block, bytes
};

double now_ns() {
  return static_cast<double>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

// The process's address space and resident memory, in bytes: the size from /proc/self/statm, the resident set from
// /proc/self/smaps_rollup (exact: statm's resident count is kept per CPU and lags by up to a few hundred KiB).
void memory_now(double& size, double& resident) {
  unsigned long pages = 0, kib = 0;
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%lu", &pages) != 1) pages = 0;
    std::fclose(f);
  }
  if (std::FILE* f = std::fopen("/proc/self/smaps_rollup", "r")) {
    char line[256];
    while (std::fgets(line, sizeof line, f) != nullptr)
      if (std::sscanf(line, "Rss: %lu kB", &kib) == 1) break;
    std::fclose(f);
  }
  size = static_cast<double>(pages) * static_cast<double>(sysconf(_SC_PAGESIZE));
  resident = static_cast<double>(kib) * 1024;
}

// Time of an allocate+free pair: one run of at least 20 ms, after runs that find how long that is (and warm the
// allocator up).
double pair_time(heap& h, std::size_t n) {
  auto run = [&](std::size_t count) {
    const double start = now_ns();
    for (std::size_t i = 0; i < count; ++i) {
      void* p = h.allocate(n);
      asm volatile("" : : "r"(p) : "memory");
      h.deallocate(p, n);
    }
    return now_ns() - start;
  };
  std::size_t rounds = 1000;
  while (run(rounds) < 20e6 && rounds < (std::size_t{1} << 26)) rounds *= 2;
  return run(rounds) / static_cast<double>(rounds);
}

// What a live block of 8 bytes takes, at the margin: 10,000 more blocks once 10,000 are live (so that what the
// allocator takes once, its first chunk and tables, is not counted), each written so that its page is resident.
// Transparent huge pages are off for the measurement, so that memory grows by 4 KiB pages, not by the 2 MiB a pool's
// first touch of a huge page would make resident.
void* g_blocks[20000];
void memory_per_block(heap& h, double& resident, double& address_space) {
  prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
  std::memset(g_blocks, 0, sizeof g_blocks);  // resident before the count
  constexpr std::size_t count = sizeof g_blocks / sizeof g_blocks[0] / 2;
  double size[2], rss[2];
  for (std::size_t i = 0; i < 2 * count; ++i) {
    if (i == count) memory_now(size[0], rss[0]);
    g_blocks[i] = h.allocate(8);
    *static_cast<volatile unsigned char*>(g_blocks[i]) = 1;
  }
  memory_now(size[1], rss[1]);
  resident = (rss[1] - rss[0]) / static_cast<double>(count);
  address_space = (size[1] - size[0]) / static_cast<double>(count);
}

// A figure for a fresh allocator in a child (the fixed pools are made for the size measured): the time of a pair of
// `n` bytes, or with n == 0 the memory per 8-byte block.
costs measure_in_child(const subject& s, std::size_t n) {
  const child c = start_child(false);
  if (c.pid == 0) {
    if (s.how == face::malloc) install_malloc_library_handler();
    costs m;
    if (n != 0) m.pair_ns = pair_time(s.make(n), n);
    else memory_per_block(s.make(8), m.resident, m.address_space);
    char line[128];
    const int len = std::snprintf(line, sizeof line, "%.3f %.1f %.1f\n", m.pair_ns, m.resident, m.address_space);
    (void)!write(c.output, line, static_cast<std::size_t>(len));
    _exit(0);
  }
  std::string line;
  (void)finish(c, line);
  costs m;
  if (std::sscanf(line.c_str(), "%lf %lf %lf", &m.pair_ns, &m.resident, &m.address_space) != 3) m = costs{};
  return m;
}

// One sample of a subject's costs, "name ns8 ns4k resident address_space", each figure from a child of its own.
std::string costs_line(const subject& s) {
  const costs small = measure_in_child(s, 8), page = measure_in_child(s, 4096), memory = measure_in_child(s, 0);
  char line[256];
  std::snprintf(line, sizeof line, "%s\t%.1f\t%.1f\t%.1f\t%.1f", s.name, small.pair_ns, page.pair_ns,
                memory.resident, memory.address_space);
  return line;
}

std::string fixed(double x, int digits) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", digits, x);
  return text;
}

std::string bytes_text(double b) { return b < 1024 ? fixed(b, 0) + " B" : fixed(b / 1024, 1) + " KiB"; }

// Five rounds over every subject, so that a busy moment of the machine falls on one sample of each, not on all five
// of one subject; the median of the five per figure.
int write_costs(const std::string& path) {
  struct sample {
    double small_ns, page_ns, resident, address_space;
  };
  std::map<const subject*, std::vector<sample>> samples;
  for (int round = 0; round < 5; ++round) {
    for (const subject& s : subjects()) {
      if (s.how == face::malloc && malloc_library() == nullptr) continue;
      std::fprintf(stderr, "misuse matrix: costs of %s, round %d\n", s.name, round + 1);
      const std::string line = s.how == face::malloc && !is_preloaded() ? run_preloaded(s, "costs") : costs_line(s);
      char name[64];
      sample x{};
      if (std::sscanf(line.c_str(), "%63s %lf %lf %lf %lf", name, &x.small_ns, &x.page_ns, &x.resident,
                      &x.address_space) == 5)
        samples[&s].push_back(x);
    }
  }
  std::string rows, reserved;
  for (const subject& s : subjects()) {
    const auto found = samples.find(&s);
    if (found == samples.end()) continue;
    auto median = [&](double sample::*figure) {
      std::vector<double> v;
      for (const sample& x : found->second) v.push_back(x.*figure);
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    rows += std::string("| ") + s.title + " | " + fixed(median(&sample::small_ns), 1) + " | " +
            fixed(median(&sample::page_ns), 1) + " | " + bytes_text(median(&sample::resident)) + " |\n";
    if (const double space = median(&sample::address_space); space > 1024 && space > 1.5 * median(&sample::resident))
      reserved += (reserved.empty() ? "" : ", ") + std::string(s.title) + " " + bytes_text(space);
  }
  char date[32];
  const std::time_t t = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&t));
  std::string text = std::string("Measured ") + date +
                     " on a 2-core AMD EPYC VM, Linux 6.18, Release build (`strata_misuse_matrix --costs`), one "
                     "thread: an allocate and a free in a loop, the median of 5 runs of at least 20 ms, each with a "
                     "fresh allocator; the memory a live 8-byte block adds once 10,000 are live (resident, each "
                     "block written).\n\n"
                     "| subject | 8 B allocate + free, ns | 4 KiB allocate + free, ns | memory per live 8 B block |\n"
                     "|:--|--:|--:|--:|\n" +
                     rows;
  if (!reserved.empty())
    text += "\nAddress space per live 8 B block, where it is more than the memory: " + reserved + ".\n";
  return replace_section(path, "costs", text);
}

// ---- main ----------------------------------------------------------------------------------------------------------

int usage() {
  std::fprintf(stderr,
               "usage: strata_misuse_matrix --subject NAME --golden FILE | --all --golden FILE | --write-golden FILE |"
               " --markdown FILE --golden FILE | --costs FILE | --case SUBJECT KIND SIZE | --list\n");
  return 2;
}

}  // namespace
}  // namespace misuse

int main(int argc, char** argv) {
  using namespace misuse;
  const std::vector<std::string> args(argv + 1, argv + argc);
  auto arg = [&](std::size_t i) { return i < args.size() ? args[i] : std::string(); };
  const std::string command = arg(0);
  if (command == "--list") {
    for (const subject& s : subjects()) std::printf("%s\n", s.name);
    return 0;
  }
  if (command == "--emit") {  // inside the preloaded copy: results (or costs) on stdout
    const subject* s = find_subject(arg(2));
    if (s == nullptr || !is_preloaded()) return 2;
    if (arg(1) == "costs") {
      std::printf("%s\n", costs_line(*s).c_str());
      return 0;
    }
    for (const result& r : run_subject(*s)) std::printf("%s\t%zu\t%s\n", r.k->name, r.size, r.outcome.c_str());
    return 0;
  }
  if (command == "--subject" && arg(2) == "--golden") {
    const subject* s = find_subject(arg(1));
    if (s == nullptr) return usage();
    if (s->how == face::malloc && malloc_library() == nullptr) {
      std::printf("libstrata-malloc was not built: skipped\n");
      return 77;
    }
    return verify(*s, run_subject(*s), read_golden(arg(3))) == 0 ? 0 : 1;
  }
  if (command == "--all" && arg(1) == "--golden") {
    const auto golden = read_golden(arg(2));
    int failures = 0;
    for (const auto& [s, results] : run_all()) failures += verify(*s, results, golden);
    return failures == 0 ? 0 : 1;
  }
  if (command == "--write-golden" && !arg(1).empty()) return write_golden(arg(1));
  if (command == "--markdown" && !arg(1).empty() && arg(2) == "--golden") return write_markdown(arg(1), arg(3));
  if (command == "--costs" && !arg(1).empty()) return write_costs(arg(1));
  if (command == "--case" && args.size() == 4) {
    const subject* s = find_subject(arg(1));
    const kind* k = find_kind(arg(2));
    if (s == nullptr || k == nullptr) return usage();
    if (s->how == face::malloc && !is_preloaded()) {
      setenv("LD_PRELOAD", malloc_library(), 1);
      setenv("STRATA_CHECKS", s->checks, 1);
      if (s->debug != nullptr) setenv("STRATA_DEBUG", s->debug, 1);
      else unsetenv("STRATA_DEBUG");
      execv("/proc/self/exe", argv);
      return 127;
    }
    if (s->how == face::c_heap) setenv("STRATA_CHECKS", s->checks, 1);
    const case_run r = run_case(*s, *k, std::stoul(arg(3)));
    std::printf("outcome: %s\n--- channel\n%s--- stderr\n%s", r.outcome.c_str(), r.channel.c_str(), r.errors.c_str());
    return 0;
  }
  return usage();
}
