// SPDX-License-Identifier: MIT
// bench/main.cpp: strata-bench. Two modes:
//   strata-bench run <workload> <resource> [--scale quick|full]   one figure, in this process ("child mode")
//   strata-bench [options]                                        runs every figure in fresh child processes
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "report.hpp"
#include "resources.hpp"
#include "workloads.hpp"

extern char** environ;

namespace strata_bench {
namespace {

const char* scale_name(scale s) { return s == scale::full ? "full" : "quick"; }

bool parse_scale(const std::string& text, scale& out) {
  if (text == "quick") {
    out = scale::quick;
  } else if (text == "full") {
    out = scale::full;
  } else {
    return false;
  }
  return true;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// ---- child mode ---------------------------------------------------------------------------------------------------

int child_main(int argc, char** argv) {
  // argv: strata-bench run <workload> <resource> [--scale quick|full]
  if (argc < 4) {
    std::fprintf(stderr, "usage: strata-bench run <workload> <resource> [--scale quick|full]\n");
    return 2;
  }
  scale s = scale::full;
  for (int i = 4; i < argc; ++i) {
    const std::string a = argv[i];
    std::string value;
    if (a == "--scale" && i + 1 < argc) {
      value = argv[++i];
    } else if (a.rfind("--scale=", 0) == 0) {
      value = a.substr(8);
    } else {
      std::fprintf(stderr, "strata-bench run: unknown argument '%s'\n", a.c_str());
      return 2;
    }
    if (!parse_scale(value, s)) {
      std::fprintf(stderr, "strata-bench run: scale must be quick or full, not '%s'\n", value.c_str());
      return 2;
    }
  }
  const workload* w = find_workload(argv[2]);
  const resource_entry* r = find_resource(argv[3]);
  if (w == nullptr || r == nullptr) {
    std::fprintf(stderr, "strata-bench run: unknown %s '%s' (see --list)\n", w == nullptr ? "workload" : "resource",
                 w == nullptr ? argv[2] : argv[3]);
    return 2;
  }
  if (!fits(*r, w->info)) {
    std::fprintf(stderr, "strata-bench run: %s does not fit workload %s\n", r->name, w->info.name);
    return 2;
  }
  std::string why;
  if (!preload_active(*r, why)) {
    std::fprintf(stderr, "strata-bench run: %s: %s\n", r->name, why.c_str());
    return 3;
  }
  try {
    double value = 0;
    {
      holder_ptr holder = r->make(w->info);  // fresh resource, destroyed before the result is printed
      value = w->run(*holder->get(), w->info, s);
    }
    std::printf("result %.6g %s\n", value, w->info.unit);
    std::fflush(stdout);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "strata-bench run: %s / %s threw: %s\n", w->info.name, r->name, e.what());
    return 4;
  }
  return 0;
}

// ---- running one child --------------------------------------------------------------------------------------------

std::string last_line(const std::string& text) {
  std::size_t end = text.find_last_not_of("\r\n");
  if (end == std::string::npos) return {};
  const std::size_t begin = text.rfind('\n', end);
  return text.substr(begin == std::string::npos ? 0 : begin + 1, end - (begin == std::string::npos ? 0 : begin + 1) + 1);
}

/// Runs `/proc/self/exe run <w> <r> --scale <s>` (argv[0] = `exe`, for ps) in a fresh process with LD_PRELOAD=`preload` (or without LD_PRELOAD), kills it
/// after `timeout_s`, and reads its "result <value> <unit>" line.
rep_outcome run_child(const std::string& exe, const std::string& w, const std::string& r, scale s,
                      const std::string& preload, double timeout_s) {
  rep_outcome out;

  // Everything the forked child needs is built before fork(): after it only async-signal-safe calls are made.
  std::vector<std::string> args = {exe, "run", w, r, "--scale", scale_name(s)};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_store;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "LD_PRELOAD=", 11) != 0) env_store.emplace_back(*e);
  }
  if (!preload.empty()) env_store.push_back("LD_PRELOAD=" + preload);
  std::vector<char*> envp;
  for (auto& e : env_store) envp.push_back(e.data());
  envp.push_back(nullptr);

  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    out.failure = std::string("pipe: ") + std::strerror(errno);
    return out;
  }
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    out.failure = std::string("pipe: ") + std::strerror(errno);
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return out;
  }
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    out.failure = std::string("fork: ") + std::strerror(errno);
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) ::close(fd);
    return out;
  }
  if (pid == 0) {
    ::dup2(out_pipe[1], STDOUT_FILENO);
    ::dup2(err_pipe[1], STDERR_FILENO);
    // /proc/self/exe, not the path: the very binary that is running, even if it was rebuilt since the run began.
    ::execve("/proc/self/exe", argv.data(), envp.data());
    static const char msg[] = "strata-bench: execve failed\n";
    (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);

  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(timeout_s));
  std::string child_out;
  std::string child_err;
  bool timed_out = false;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  while (open_fds > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    const int ready = ::poll(fds, 2, static_cast<int>(std::min<long long>(left, INT_MAX)));
    if (ready < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        std::string& dst = i == 0 ? child_out : child_err;
        dst.append(buf, static_cast<std::size_t>(n));
        if (dst.size() > (64U << 10)) dst.erase(0, dst.size() - (32U << 10));  // keep the tail
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) ::close(f.fd);
  }

  int status = 0;
  if (timed_out) ::kill(pid, SIGKILL);
  for (;;) {  // the pipes closed, so the child is exiting; still, never wait past the deadline
    const pid_t got = ::waitpid(pid, &status, timed_out ? 0 : WNOHANG);
    if (got == pid) break;
    if (got < 0 && errno != EINTR) {
      out.failure = std::string("waitpid: ") + std::strerror(errno);
      return out;
    }
    if (got == 0 && clock::now() >= deadline) {
      timed_out = true;
      ::kill(pid, SIGKILL);
    } else if (got == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }

  char buf[128];
  if (timed_out) {
    std::snprintf(buf, sizeof buf, "timeout after %g s", timeout_s);
    out.failure = buf;
    return out;
  }
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    std::snprintf(buf, sizeof buf, "killed by signal %d (%s)", sig, ::strsignal(sig));
    out.failure = buf;
    const std::string why = last_line(child_err);
    if (!why.empty()) out.failure += ": " + why;
    return out;
  }
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (code != 0) {
    std::snprintf(buf, sizeof buf, "exit code %d", code);
    out.failure = buf;
    const std::string why = last_line(child_err);
    if (!why.empty()) out.failure += ": " + why;
    return out;
  }
  std::istringstream lines(child_out);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("result ", 0) != 0) continue;
    char* end = nullptr;
    const double v = std::strtod(line.c_str() + 7, &end);
    if (end != line.c_str() + 7) {
      out.ok = true;
      out.value = v;
    }
  }
  if (!out.ok) out.failure = "no result line in the child's output";
  return out;
}

// ---- machine description ------------------------------------------------------------------------------------------

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  std::string fallback;
  while (std::getline(in, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    key.erase(key.find_last_not_of(" \t") + 1);
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    if (key == "model name" && !value.empty()) return value;
    if ((key == "Hardware" || key == "cpu model" || key == "uarch") && fallback.empty()) fallback = value;
  }
  return fallback.empty() ? std::string("unknown CPU") : fallback;
}

std::string machine_line() {
  const long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return std::to_string(n) + " CPUs (nproc), " + cpu_model();
}

std::string build_line() {
#if defined(__clang__)
  std::string s = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  std::string s = std::string("g++ ") + __VERSION__;
#else
  std::string s = "unknown compiler";
#endif
#if defined(STRATA_BENCH_BUILD_TYPE)
  s += std::string(" ") + STRATA_BENCH_BUILD_TYPE;
#endif
  return s;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

std::string self_exe() {
  std::vector<char> buf(PATH_MAX + 1);
  const ssize_t n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (n <= 0) return "/proc/self/exe";
  return std::string(buf.data(), static_cast<std::size_t>(n));
}

// ---- orchestrator -------------------------------------------------------------------------------------------------

const char* const usage_text =
    "usage: strata-bench [--workloads a,b,..] [--resources x,y,..] [--reps N] [--scale quick|full]\n"
    "                    [--out PATH_PREFIX] [--timeout SECONDS] [--list]\n"
    "       strata-bench run <workload> <resource> [--scale quick|full]\n"
    "\n"
    "Runs every (workload, resource) pair that fits, once per repetition, each in a fresh process, and reports the\n"
    "median per pair: markdown table on stdout and in PREFIX.md, every repetition in PREFIX.csv, a chart in\n"
    "PREFIX.svg. Defaults: all workloads and resources, --reps 5, --scale full, --out bench/results/latest,\n"
    "--timeout 120 (full) or 30 (quick). Malloc peers run under LD_PRELOAD; override a library's path with\n"
    "STRATA_BENCH_MIMALLOC, STRATA_BENCH_JEMALLOC or STRATA_BENCH_TCMALLOC.\n";

struct options {
  std::vector<std::string> workloads;
  std::vector<std::string> resources;
  int reps = 5;
  scale s = scale::full;
  std::string out = "bench/results/latest";
  double timeout = 0;  // 0: by scale
  bool list = false;
};

bool parse_options(int argc, char** argv, options& o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string value;
    bool has_value = false;
    if (const auto eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_value = true;
    }
    const auto need_value = [&]() -> bool {
      if (has_value) return true;
      if (i + 1 >= argc) {
        std::fprintf(stderr, "strata-bench: %s needs a value\n", a.c_str());
        return false;
      }
      value = argv[++i];
      return true;
    };
    if (a == "--help" || a == "-h") {
      std::fputs(usage_text, stdout);
      std::exit(0);
    } else if (a == "--list") {
      o.list = true;
    } else if (a == "--workloads") {
      if (!need_value()) return false;
      o.workloads = split_list(value);
    } else if (a == "--resources") {
      if (!need_value()) return false;
      o.resources = split_list(value);
    } else if (a == "--reps") {
      if (!need_value()) return false;
      o.reps = std::atoi(value.c_str());
      if (o.reps < 1 || o.reps > 1000) {
        std::fprintf(stderr, "strata-bench: --reps must be 1..1000\n");
        return false;
      }
    } else if (a == "--scale") {
      if (!need_value()) return false;
      if (!parse_scale(value, o.s)) {
        std::fprintf(stderr, "strata-bench: --scale must be quick or full\n");
        return false;
      }
    } else if (a == "--out") {
      if (!need_value()) return false;
      o.out = value;
    } else if (a == "--timeout") {
      if (!need_value()) return false;
      o.timeout = std::atof(value.c_str());
      if (o.timeout <= 0) {
        std::fprintf(stderr, "strata-bench: --timeout must be positive\n");
        return false;
      }
    } else {
      std::fprintf(stderr, "strata-bench: unknown argument '%s'\n\n%s", argv[i], usage_text);
      return false;
    }
  }
  return true;
}

std::string describe_flags(unsigned f) {
  std::string s;
  const auto add = [&s](const char* t) { s += s.empty() ? t : std::string(", ") + t; };
  if ((f & thread_safe) != 0) add("thread-safe");
  if ((f & small_blocks) != 0) add((f & fixed_size_only) != 0 ? "small fixed-size" : "small");
  if ((f & large_blocks) != 0) add("large");
  if ((f & never_frees) != 0) add("never frees");
  return s;
}

int list_main() {
  std::printf("workloads:\n");
  for (const auto& w : workloads()) {
    const char* kind = w.info.kind == block_kind::small_fixed   ? "small fixed-size"
                       : w.info.kind == block_kind::small_mixed ? "small mixed"
                                                                : "large";
    std::printf("  %-16s %-6s %s%s\n  %-16s        %s\n", w.info.name, w.info.unit, kind,
                w.info.threaded ? ", threaded (needs thread-safe)" : "", "", w.info.description);
  }
  std::printf("resources:\n");
  for (const auto& r : resources()) {
    std::string why;
    std::string note;
    if (r.preload != nullptr) {
      const std::string path = find_preload(r, why);
      note = path.empty() ? "  [" + why + "]" : "  [LD_PRELOAD=" + path + "]";
    }
    std::printf("  %-18s %s%s\n", r.name, describe_flags(r.flags).c_str(), note.c_str());
  }
  for (const auto& [name, why] : absent_resources()) std::printf("  %-18s absent: %s\n", name.c_str(), why.c_str());
  return 0;
}

int orchestrate(const options& o) {
  const auto wall_start = std::chrono::steady_clock::now();

  std::vector<const workload*> ws;
  if (o.workloads.empty()) {
    for (const auto& w : workloads()) ws.push_back(&w);
  } else {
    for (const auto& name : o.workloads) {
      const workload* w = find_workload(name);
      if (w == nullptr) {
        std::fprintf(stderr, "strata-bench: unknown workload '%s' (see --list)\n", name.c_str());
        return 2;
      }
      ws.push_back(w);
    }
  }

  report_data d;
  std::vector<std::string> wanted = o.resources;
  if (wanted.empty()) {
    for (const auto& r : resources()) wanted.emplace_back(r.name);
    for (const auto& a : absent_resources()) d.notes.push_back("absent " + a.first + ": " + a.second);
  }
  std::vector<const resource_entry*> rs;
  std::vector<std::string> preloads;
  for (const auto& name : wanted) {
    const resource_entry* r = find_resource(name);
    if (r == nullptr) {
      const auto& absent = absent_resources();
      const auto it = std::find_if(absent.begin(), absent.end(), [&](const auto& a) { return a.first == name; });
      if (it == absent.end()) {
        std::fprintf(stderr, "strata-bench: unknown resource '%s' (see --list)\n", name.c_str());
        return 2;
      }
      d.notes.push_back("absent " + it->first + ": " + it->second);
      continue;
    }
    std::string why;
    std::string path = find_preload(*r, why);
    if (r->preload != nullptr && path.empty()) {
      d.notes.push_back(std::string("skipped ") + r->name + ": " + why);
      continue;
    }
    rs.push_back(r);
    preloads.push_back(path);
  }
  for (const auto& n : d.notes) std::fprintf(stderr, "%s\n", n.c_str());

#if !defined(__OPTIMIZE__)
  std::fprintf(stderr, "note: this strata-bench was built without optimisation; its figures mean little\n");
  d.notes.push_back("strata-bench was built without optimisation");
#endif

  d.reps = o.reps;
  d.scale = scale_name(o.s);
  d.date = utc_now();
  d.machine = machine_line();
  d.build = build_line();
  for (const workload* w : ws) {
    d.workloads.emplace_back(w->info.name);
    d.units.emplace_back(w->info.unit);
    d.workload_descriptions.emplace_back(w->info.description);
  }
  for (const auto* r : rs) {
    d.resources.emplace_back(r->name);
    if (std::strncmp(r->name, "strata", 6) == 0) d.strata_resources.emplace_back(r->name);
  }
  // One figure per pair that fits; figure_index[w][r] points into d.figures.
  std::vector<std::vector<long>> figure_index(ws.size(), std::vector<long>(rs.size(), -1));
  for (std::size_t wi = 0; wi < ws.size(); ++wi) {
    for (std::size_t ri = 0; ri < rs.size(); ++ri) {
      if (!fits(*rs[ri], ws[wi]->info)) continue;
      figure_index[wi][ri] = static_cast<long>(d.figures.size());
      d.figures.push_back(figure{ws[wi]->info.name, rs[ri]->name, ws[wi]->info.unit, {}});
    }
  }
  if (d.figures.empty()) {
    std::fprintf(stderr, "strata-bench: no selected resource fits any selected workload\n");
    return 2;
  }

  const std::string exe = self_exe();
  const double timeout = o.timeout > 0 ? o.timeout : (o.s == scale::full ? 120.0 : 30.0);
  const std::size_t total = d.figures.size() * static_cast<std::size_t>(o.reps);
  std::size_t done = 0;
  std::fprintf(stderr, "strata-bench: %zu figures x %d reps = %zu runs, scale %s, timeout %g s each\n",
               d.figures.size(), o.reps, total, scale_name(o.s), timeout);
  for (int rep = 0; rep < o.reps; ++rep) {
    for (std::size_t wi = 0; wi < ws.size(); ++wi) {
      // Interleaved: every resource runs each workload once per rep, so drift hits all alike; the starting resource
      // rotates with the rep so none is always first (or right after the same neighbour).
      for (std::size_t k = 0; k < rs.size(); ++k) {
        const std::size_t ri = (k + static_cast<std::size_t>(rep)) % rs.size();
        const long fi = figure_index[wi][ri];
        if (fi < 0) continue;
        figure& f = d.figures[static_cast<std::size_t>(fi)];
        rep_outcome r = run_child(exe, f.workload, f.resource, o.s, preloads[ri], timeout);
        ++done;
        if (r.ok) {
          std::fprintf(stderr, "[%4zu/%zu] rep %d/%d  %-16s %-18s %10s %s\n", done, total, rep + 1, o.reps,
                       f.workload.c_str(), f.resource.c_str(), format_value(r.value).c_str(), f.unit.c_str());
        } else {
          std::fprintf(stderr, "[%4zu/%zu] rep %d/%d  %-16s %-18s FAIL: %s\n", done, total, rep + 1, o.reps,
                       f.workload.c_str(), f.resource.c_str(), r.failure.c_str());
        }
        f.reps.push_back(std::move(r));
      }
    }
  }
  d.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();

  const std::string md = render_markdown(d);
  std::fputs(md.c_str(), stdout);
  std::fflush(stdout);

  const std::filesystem::path prefix(o.out);
  std::error_code ec;
  if (prefix.has_parent_path()) std::filesystem::create_directories(prefix.parent_path(), ec);
  if (ec) {
    std::fprintf(stderr, "strata-bench: cannot create %s: %s\n", prefix.parent_path().c_str(), ec.message().c_str());
    return 1;
  }
  bool written = true;
  const auto write = [&written](const std::string& path, const std::string& text) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << text;
    if (!f) {
      std::fprintf(stderr, "strata-bench: cannot write %s\n", path.c_str());
      written = false;
    }
  };
  write(o.out + ".md", md);
  write(o.out + ".csv", render_csv(d));
  write(o.out + ".svg", render_svg(d));
  std::fprintf(stderr, "strata-bench: wrote %s.md, %s.csv, %s.svg; wall time %.1f s\n", o.out.c_str(),
               o.out.c_str(), o.out.c_str(), d.wall_seconds);
  return written ? 0 : 1;
}

}  // namespace
}  // namespace strata_bench

int main(int argc, char** argv) {
  using namespace strata_bench;
  if (argc >= 2 && std::strcmp(argv[1], "run") == 0) return child_main(argc, argv);
  options o;
  if (!parse_options(argc, argv, o)) return 2;
  if (o.list) return list_main();
  return orchestrate(o);
}
