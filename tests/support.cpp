// SPDX-License-Identifier: MIT
// tests/support.cpp
#include "support.hpp"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

#include <doctest/doctest.h>

#include <strata/detail/core/sanitizer.hpp>

#if defined(_WIN32)
#include "os/windows_api.hpp"

#include <fcntl.h>
#include <io.h>
#else
#include <sys/wait.h>
#include <unistd.h>
#endif

namespace strata_test {

// ---- child processes -------------------------------------------------------------------------------------------------

namespace {
constexpr int threw_exit_code = 97;

// In the child: the body runs with faults and aborts ending the process as they would without a test framework.
[[noreturn]] void run_body_and_exit(const std::function<void()>& body) {
#if defined(_WIN32)
  // No crash dialog and no debugger: an unhandled exception ends the process with its code as the exit code.
  ::SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX);
  ::SetUnhandledExceptionFilter([](EXCEPTION_POINTERS*) -> LONG { return EXCEPTION_EXECUTE_HANDLER; });
  ::_setmode(::_fileno(stderr), _O_BINARY);  // lines end in \n, as the library's own writes do
  std::signal(SIGABRT, SIG_DFL);
  std::signal(SIGSEGV, SIG_DFL);
#else
  for (int s : {SIGSEGV, SIGBUS, SIGABRT}) std::signal(s, SIG_DFL);
#endif
  try {
    body();
  } catch (...) {  // a failed REQUIRE in the child: no report, and the parent's checks fail
    std::fflush(nullptr);
    std::_Exit(threw_exit_code);
  }
  std::fflush(nullptr);
  std::_Exit(0);
}

#if defined(_WIN32)
std::string g_test_case;       // the test case running now
unsigned g_child_calls = 0;    // run_in_child calls made in it so far
// In a child: which call of its test case runs the body (0 in the parent).
const unsigned g_child_target = [] {
  const char* v = std::getenv("STRATA_TEST_CHILD");
  return v == nullptr ? 0u : static_cast<unsigned>(std::strtoul(v, nullptr, 10));
}();

// A doctest filter that matches exactly `name`: commas escaped (doctest splits filters at them).
std::string filter_for(const std::string& name) {
  std::string f;
  for (const char c : name) {
    if (c == ',' || c == '\\') f += '\\';
    f += c;
  }
  return f;
}

// `arg` quoted for a Windows command line.
std::string quoted(const std::string& arg) {
  std::string q = "\"";
  std::size_t slashes = 0;
  for (const char c : arg) {
    if (c == '\\') {
      ++slashes;
      continue;
    }
    q.append(c == '"' ? 2 * slashes + 1 : slashes, '\\');
    slashes = 0;
    q += c;
  }
  q.append(2 * slashes, '\\');
  return q + "\"";
}
#endif
}  // namespace

void set_environment(const std::string& name, const char* value) {
#if defined(_WIN32)
  ::_putenv_s(name.c_str(), value == nullptr ? "" : value);
#else
  if (value != nullptr) ::setenv(name.c_str(), value, 1);
  else ::unsetenv(name.c_str());
#endif
}

void test_case_started(const char* name) {
#if defined(_WIN32)
  g_test_case = name;
  g_child_calls = 0;
#else
  (void)name;
#endif
}

child_result run_in_child(const std::function<void()>& body) {
  child_result r;
#if defined(_WIN32)
  const unsigned call = ++g_child_calls;
  if (g_child_target != 0) {
    if (call == g_child_target) run_body_and_exit(body);
    return r;  // a call before the one this child is for
  }
  char exe[MAX_PATH];
  REQUIRE(::GetModuleFileNameA(nullptr, exe, MAX_PATH) != 0);
  std::string command = quoted(exe) + " " + quoted("--test-case=" + filter_for(g_test_case)) + " --no-intro=1";
  SECURITY_ATTRIBUTES inherit{sizeof(SECURITY_ATTRIBUTES), nullptr, TRUE};
  HANDLE read_end = nullptr, write_end = nullptr;
  REQUIRE(::CreatePipe(&read_end, &write_end, &inherit, 0));
  ::SetHandleInformation(read_end, HANDLE_FLAG_INHERIT, 0);
  HANDLE nul = ::CreateFileA("NUL", GENERIC_READ | GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE, &inherit,
                             OPEN_EXISTING, 0, nullptr);
  STARTUPINFOA start{};
  start.cb = sizeof start;
  start.dwFlags = STARTF_USESTDHANDLES;
  start.hStdInput = nul;
  start.hStdOutput = nul;
  start.hStdError = write_end;
  PROCESS_INFORMATION child{};
  ::SetEnvironmentVariableA("STRATA_TEST_CHILD", std::to_string(call).c_str());
  const BOOL started =
      ::CreateProcessA(nullptr, command.data(), nullptr, nullptr, TRUE, 0, nullptr, nullptr, &start, &child);
  ::SetEnvironmentVariableA("STRATA_TEST_CHILD", nullptr);
  ::CloseHandle(write_end);
  ::CloseHandle(nul);
  if (!started) ::CloseHandle(read_end);
  REQUIRE(started);
  char buffer[4096];
  DWORD n = 0;
  while (::ReadFile(read_end, buffer, sizeof buffer, &n, nullptr) && n > 0) r.output.append(buffer, n);
  ::CloseHandle(read_end);
  ::WaitForSingleObject(child.hProcess, INFINITE);
  DWORD code = 0;
  ::GetExitCodeProcess(child.hProcess, &code);
  ::CloseHandle(child.hProcess);
  ::CloseHandle(child.hThread);
  r.faulted = code == static_cast<DWORD>(EXCEPTION_ACCESS_VIOLATION) || code == static_cast<DWORD>(EXCEPTION_IN_PAGE_ERROR);
  r.aborted = code == 3;  // the C runtime's abort()
  r.exit_code = r.faulted ? -1 : static_cast<int>(code);
#else
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    ::dup2(fds[1], 2);
    run_body_and_exit(body);
  }
  ::close(fds[1]);
  char buffer[4096];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;) r.output.append(buffer, static_cast<std::size_t>(n));
  ::close(fds[0]);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  const int signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  r.faulted = signal == SIGSEGV || signal == SIGBUS;
  r.aborted = signal == SIGABRT;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
#endif
  return r;
}

// ---- error capture ---------------------------------------------------------------------------------------------------

namespace {
std::mutex g_mutex;
std::vector<captured_error> g_errors;

void record(const strata::error_info& info) {
  char line[512];
  strata::format_error(info, line, sizeof line);
  std::lock_guard<std::mutex> lock(g_mutex);
  g_errors.push_back(captured_error{info.kind, info.pointer, info.size, info.expected_size, line});
}

inline unsigned char pattern_byte(std::size_t i, std::uint64_t seed) noexcept {
  return static_cast<unsigned char>((seed >> ((i & 7) * 8)) ^ (i * 131) ^ (i >> 8));
}
}  // namespace

void fill_pattern(void* p, std::size_t n, std::uint64_t seed) noexcept {
  auto* b = static_cast<unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) b[i] = pattern_byte(i, seed);
}

bool check_pattern(const void* p, std::size_t n, std::uint64_t seed) noexcept {
  const auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i)
    if (b[i] != pattern_byte(i, seed)) return false;
  return true;
}

void fill_sparse(void* p, std::size_t n, std::uint64_t seed, std::size_t stride) noexcept {
  auto* b = static_cast<unsigned char*>(p);
  for (std::size_t i = 0; i < n; i += stride) b[i] = pattern_byte(i, seed);
  if (n != 0) b[n - 1] = pattern_byte(n - 1, seed);
}

bool check_sparse(const void* p, std::size_t n, std::uint64_t seed, std::size_t stride) noexcept {
  const auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; i += stride)
    if (b[i] != pattern_byte(i, seed)) return false;
  return n == 0 || b[n - 1] == pattern_byte(n - 1, seed);
}

error_capture::error_capture() : previous_(strata::set_error_handler(&record)) { clear(); }
error_capture::~error_capture() { strata::set_error_handler(previous_); }

const std::vector<captured_error>& error_capture::errors() const { return g_errors; }

void error_capture::clear() {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_errors.clear();
}

std::size_t scaled(std::size_t n) {
  const char* s = std::getenv("STRATA_TEST_SCALE");
  const long k = s != nullptr ? std::atol(s) : 1;
  return n * static_cast<std::size_t>(k > 0 ? k : 1);
}

void check_unchanged(const strata::resource_stats& before, const strata::resource_stats& after) {
  CHECK(after.bytes_in_use == before.bytes_in_use);
  CHECK(after.peak_bytes_in_use == before.peak_bytes_in_use);
  CHECK(after.bytes_held == before.bytes_held);
  CHECK(after.bytes_resident == before.bytes_resident);
  CHECK(after.allocations == before.allocations);
  CHECK(after.deallocations == before.deallocations);
  CHECK(after.failed_allocations == before.failed_allocations);
  CHECK(after.upstream_allocations == before.upstream_allocations);
  CHECK(after.upstream_deallocations == before.upstream_deallocations);
  CHECK(after.free_bytes == before.free_bytes);
  CHECK(after.free_blocks == before.free_blocks);
  CHECK(after.largest_free_block == before.largest_free_block);
}

void check_error(const char* resource, const error_capture& errors, std::size_t count, strata::error_kind kind,
                 const void* p, std::size_t size, std::size_t expected) {
  REQUIRE(errors.count() == count);
  const auto& e = errors.errors().back();
  CAPTURE(e.message);
  CHECK(e.kind == kind);
  CHECK(e.pointer == p);
  CHECK(e.size == size);
  if (expected != any_size) CHECK(e.expected_size == expected);
  CHECK(e.message.find(resource) != std::string::npos);
}

// Byte by byte through volatile pointers: a loop the compiler turns into memset or memcpy would go through ASan's
// interceptors, which check the range whatever the caller's attribute.
STRATA_NO_SANITIZE_ADDRESS void write_unchecked(void* p, int byte, std::size_t n) noexcept {
  auto* d = static_cast<volatile unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) d[i] = static_cast<unsigned char>(byte);
}
STRATA_NO_SANITIZE_ADDRESS void copy_unchecked(void* dst, const void* src, std::size_t n) noexcept {
  auto* d = static_cast<volatile unsigned char*>(dst);
  const auto* s = static_cast<const volatile unsigned char*>(src);
  for (std::size_t i = 0; i < n; ++i) d[i] = s[i];
}

}  // namespace strata_test
