// SPDX-License-Identifier: MIT
// bench/malloc/runner.cpp: strata-malloc-bench: runs each program of strata-malloc-workloads under each malloc (glibc;
// mimalloc, jemalloc, tcmalloc and libstrata-malloc preloaded), each run a fresh process, and reports the medians of
// wall time and peak resident set size side by side, with ratios. A run that fails, or prints another line than
// the same program on glibc, is reported as a failure (exit status 1).
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace {

struct allocator {
  std::string name;
  std::string preload;  // empty: glibc
};

struct sample {
  double seconds;
  long max_rss_kb;
};

struct outcome {
  bool ok = false;
  std::string output;
  sample s{};
};

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

bool readable(const std::string& path) { return !path.empty() && access(path.c_str(), R_OK) == 0; }

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

// One run of `exe name scale` with LD_PRELOAD=preload (none: unset), killed after timeout_s.
outcome run_once(const std::string& exe, const std::string& name, const std::string& scale, const std::string& preload,
                 double timeout_s) {
  outcome o;
  int fds[2];
  if (pipe(fds) != 0) return o;
  std::vector<std::string> env_store;
  for (char** e = environ; *e != nullptr; ++e)
    if (std::strncmp(*e, "LD_PRELOAD=", 11) != 0) env_store.emplace_back(*e);
  if (!preload.empty()) env_store.push_back("LD_PRELOAD=" + preload);
  std::vector<char*> envp;
  for (auto& s : env_store) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args{exe, name, scale};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    execve(exe.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  close(fds[1]);
  if (pid < 0) {
    close(fds[0]);
    return o;
  }
  // The output until the child closes it (at its exit), then a blocking wait: the time ends when the child is
  // reaped, not at the next tick of a polling loop (a 1 ms sleep there added 0 or 1 ms to a 5 ms program at random).
  // A child that outlives timeout_s is killed.
  const auto deadline = t0 + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                 std::chrono::duration<double>(timeout_s));
  char buf[4096];
  bool timed_out = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd pfd{fds[0], POLLIN, 0};
    const int r = poll(&pfd, 1, static_cast<int>(std::min<long long>(left.count(), 1000)));
    if (r < 0 && errno != EINTR) break;
    if (r <= 0) continue;
    const ssize_t n = read(fds[0], buf, sizeof buf);
    if (n <= 0) break;  // end of output: the child is exiting
    o.output.append(buf, static_cast<std::size_t>(n));
  }
  close(fds[0]);
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  rusage ru{};
  while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR) {
  }
  if (timed_out) return o;
  const auto t1 = std::chrono::steady_clock::now();
  o.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  o.s.seconds = std::chrono::duration<double>(t1 - t0).count();
  o.s.max_rss_kb = ru.ru_maxrss;
  return o;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

std::string fmt(double v, int digits = 3) {
  char b[64];
  if (v >= 100) std::snprintf(b, sizeof b, "%.0f", v);
  else std::snprintf(b, sizeof b, "%.*g", digits, v);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  std::string exe, scale = "full", out_prefix;
  std::vector<std::string> only_workloads, only_allocators;
  int reps = 5;
  double timeout_s = 300;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--workloads-exe") exe = value();
    else if (a == "--scale") scale = value();
    else if (a == "--reps") reps = std::atoi(value().c_str());
    else if (a == "--workloads") only_workloads = split(value());
    else if (a == "--allocators") only_allocators = split(value());
    else if (a == "--out") out_prefix = value();
    else if (a == "--timeout") timeout_s = std::atof(value().c_str());
    else {
      std::fprintf(stderr,
                   "usage: strata-malloc-bench [--reps N] [--scale quick|full] [--workloads a,b] [--allocators x,y]\n"
                   "                           [--out PREFIX] [--timeout SECONDS] [--workloads-exe PATH]\n"
                   "Allocators: glibc, strata (STRATA_BENCH_STRATA_MALLOC overrides its path), mimalloc, jemalloc,\n"
                   "tcmalloc (STRATA_BENCH_MIMALLOC, _JEMALLOC, _TCMALLOC); missing ones are left out.\n");
      return 2;
    }
  }
  if (exe.empty()) exe = STRATA_MALLOC_WORKLOADS_EXE;
  if (reps < 1) reps = 1;

  std::vector<allocator> all{
      {"glibc", ""},
      {"strata", env_or("STRATA_BENCH_STRATA_MALLOC", STRATA_MALLOC_LIBRARY)},
      {"mimalloc", env_or("STRATA_BENCH_MIMALLOC", "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2")},
      {"jemalloc", env_or("STRATA_BENCH_JEMALLOC", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")},
      {"tcmalloc", env_or("STRATA_BENCH_TCMALLOC", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")},
  };
  std::vector<allocator> allocators;
  for (auto& a : all) {
    if (!only_allocators.empty() && std::find(only_allocators.begin(), only_allocators.end(), a.name) ==
                                        only_allocators.end())
      continue;
    if (!a.preload.empty() && !readable(a.preload)) {
      std::fprintf(stderr, "strata-malloc-bench: %s left out (%s not found)\n", a.name.c_str(), a.preload.c_str());
      continue;
    }
    allocators.push_back(a);
  }
  std::vector<std::string> workloads{"larson", "xmalloc", "cache-scratch", "mstress", "alloc-test", "glibc-simple",
                                     "glibc-thread", "cfrac", "large", "small-program"};
  if (!only_workloads.empty()) workloads = only_workloads;

  // samples[workload][allocator]; the reference output of each workload is glibc's (or the first allocator's).
  std::map<std::string, std::map<std::string, std::vector<sample>>> samples;
  std::map<std::string, std::string> reference;
  std::vector<std::string> failures;
  for (int rep = 0; rep < reps; ++rep) {
    for (const auto& w : workloads) {
      for (const auto& a : allocators) {  // interleaved: the host's drift lands on every allocator alike
        const outcome o = run_once(exe, w, scale, a.preload, timeout_s);
        std::string why;
        if (!o.ok) why = "failed or timed out";
        else if (auto it = reference.find(w); it != reference.end() && it->second != o.output)
          why = "printed another result (" + o.output.substr(0, o.output.find('\n')) + " vs " +
                it->second.substr(0, it->second.find('\n')) + ")";
        if (!why.empty()) {
          failures.push_back(w + " on " + a.name + ": " + why);
          continue;
        }
        reference.emplace(w, o.output);
        samples[w][a.name].push_back(o.s);
      }
    }
  }

  // Tables: time (ratio to the fastest) and peak RSS (ratio to the smallest), medians.
  std::ostringstream md;
  md << "strata-malloc-bench: " << reps << " runs per figure, scale " << scale
     << ", each run a fresh process, interleaved; medians. Time: wall seconds (ratio to the fastest in the row); "
        "peak RSS: MiB (ratio to the smallest).\n\n";
  auto table = [&](const char* what, bool time) {
    md << "| " << what << " |";
    for (auto& a : allocators) md << ' ' << a.name << " |";
    md << "\n|:--|";
    for (std::size_t i = 0; i < allocators.size(); ++i) md << "--:|";
    md << '\n';
    std::map<std::string, std::vector<double>> ratios_to_glibc, ratios_to_mimalloc;
    for (auto& w : workloads) {
      std::map<std::string, double> m;
      for (auto& a : allocators) {
        auto& v = samples[w][a.name];
        if (v.empty()) continue;
        std::vector<double> xs;
        for (auto& s : v) xs.push_back(time ? s.seconds : static_cast<double>(s.max_rss_kb) / 1024.0);
        m[a.name] = median(xs);
      }
      double best = 0;
      for (auto& [n, x] : m)
        if (best == 0 || x < best) best = x;
      md << "| " << w << " |";
      for (auto& a : allocators) {
        auto it = m.find(a.name);
        if (it == m.end()) {
          md << " fail |";
          continue;
        }
        const bool is_best = it->second == best;
        md << ' ' << (is_best ? "**" : "") << fmt(it->second) << " (" << fmt(it->second / best, 3) << "x)"
           << (is_best ? "**" : "") << " |";
        if (m.count("glibc")) ratios_to_glibc[a.name].push_back(it->second / m["glibc"]);
        if (m.count("mimalloc")) ratios_to_mimalloc[a.name].push_back(it->second / m["mimalloc"]);
      }
      md << '\n';
    }
    auto geo_row = [&](const char* label, std::map<std::string, std::vector<double>>& r) {
      if (r.empty()) return;
      md << "| " << label << " |";
      for (auto& a : allocators) {
        auto& v = r[a.name];
        if (v.empty()) {
          md << " - |";
          continue;
        }
        double logs = 0;
        for (double x : v) logs += std::log(x);
        md << ' ' << fmt(std::exp(logs / static_cast<double>(v.size())), 3) << "x |";
      }
      md << '\n';
    };
    geo_row("geometric mean, ratio to glibc", ratios_to_glibc);
    geo_row("geometric mean, ratio to mimalloc", ratios_to_mimalloc);
    md << '\n';
  };
  table("time (s)", true);
  table("peak RSS (MiB)", false);
  if (!failures.empty()) {
    md << "Failures:\n";
    for (auto& f : failures) md << "- " << f << '\n';
  }
  std::fputs(md.str().c_str(), stdout);
  if (!out_prefix.empty()) std::ofstream(out_prefix + ".md") << md.str();
  return failures.empty() ? 0 : 1;
}
