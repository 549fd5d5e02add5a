// SPDX-License-Identifier: MIT
// tests/malloc/debug_heap_test.cpp: the default heap's debug modes seen from a program, with libstrata-malloc
// preloaded: STRATA_DEBUG=1 (canaries, fills, quarantine, family checks) and STRATA_DEBUG=guarded (and
// guarded-underflow). ctest sets the mode for the whole process (it is read at the first allocation); each case runs
// in a forked child, which must die of the bug the way the mode promises (strata's report and abort in the failing
// call or at exit, or a fault at the faulting instruction explained first), or, for the cases that are no bug, live.
//
//   debug_heap_test MODE   (MODE: 1, guarded or guarded-underflow, as STRATA_DEBUG is set; leaks: STRATA_DEBUG=1
//                          with STRATA_DEBUG_BACKTRACE and STRATA_DEBUG_LEAKS)
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <string>
#include <vector>

namespace {

int failures = 0;

// Writes through a volatile pointer: the compiler keeps the program's bug.
[[gnu::noinline]] void poke(void* p, std::ptrdiff_t offset, unsigned char v) { static_cast<volatile unsigned char*>(p)[offset] = v; }
[[gnu::noinline]] unsigned char peek(const void* p, std::ptrdiff_t offset) {
  return static_cast<const volatile unsigned char*>(p)[offset];
}

// Runs `body` in a child. `signal_expected`: the signal it must die of (0: it must exit 0); `text`: what its stderr
// must say.
void expect(const std::string& name, int signal_expected, const char* text, const std::function<void()>& body) {
  int fds[2];
  if (pipe(fds) != 0) std::abort();
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 2);
    close(fds[0]);
    body();
    std::exit(0);  // exit handlers run: the debug heap's check at exit among them
  }
  close(fds[1]);
  std::string err;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) err.append(buf, static_cast<std::size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  const int got = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  const bool exited_well = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  const bool ok = (signal_expected == 0 ? exited_well : got == signal_expected) &&
                  (text == nullptr || err.find(text) != std::string::npos);
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", name.c_str());
  if (!ok) {
    ++failures;
    std::printf("  expected %s%s%s; got %s %d; stderr:\n%s\n", signal_expected ? strsignal(signal_expected) : "exit 0",
                text ? ", saying: " : "", text ? text : "", WIFSIGNALED(status) ? "signal" : "exit status",
                WIFSIGNALED(status) ? got : WEXITSTATUS(status), err.c_str());
  }
}

void canaries_mode() {
  for (const std::size_t n : {std::size_t{8}, std::size_t{4096}, std::size_t{256} << 10}) {
    const std::string at = " at " + std::to_string(n) + " bytes";
    expect("overflow by 1" + at, SIGABRT, "buffer overflow", [n] {
      void* p = std::malloc(n);
      poke(p, static_cast<std::ptrdiff_t>(n), 1);
      std::free(p);
    });
    expect("overflow by 32 through memcpy" + at, SIGABRT, "buffer overflow", [n] {
      char* p = static_cast<char*>(std::malloc(n));
      char src[40] = {};
      std::memcpy(p + n - 8, src, 9);
      std::free(p);
    });
    expect("underflow by 1" + at, SIGABRT, "buffer overflow", [n] {
      void* p = std::malloc(n);
      poke(p, -1, 1);
      std::free(p);
    });
    expect("write after free, found at exit" + at, SIGABRT, "write after free", [n] {
      void* p = std::malloc(n);
      std::free(p);
      poke(p, 0, 1);
    });
    expect("double free at once" + at, SIGABRT, "double free", [n] {
      void* p = std::malloc(n);
      std::free(p);
      std::free(p);
    });
    // (Once the freed block has left the quarantine, its address may lie inside a newer block: a foreign pointer.)
    expect("double free after 1000 others" + at, SIGABRT, "in debug_resource", [n] {
      void* p = std::malloc(n);
      std::free(p);
      for (int i = 0; i < 1000; ++i) std::free(std::malloc(n));
      std::free(p);
    });
    expect("interior free" + at, SIGABRT, "foreign pointer", [n] {
      char* p = static_cast<char*>(std::malloc(n));
      std::free(p + n / 2 + 1);
    });
    expect("new[] freed with delete" + at, SIGABRT, "mismatched", [n] {
      char* p = new char[n];
      ::operator delete(p);
    });
    expect("new freed with delete[]" + at, SIGABRT, "mismatched", [n] {
      void* p = ::operator new(n);
      ::operator delete[](p);
    });
    expect("new freed with free" + at, SIGABRT, "mismatched", [n] {
      void* p = ::operator new(n);
      std::free(p);
    });
    expect("sized delete with a wrong size" + at, SIGABRT, "wrong size", [n] {
      void* p = ::operator new(n);
      ::operator delete(p, n + 8);
    });
    expect("new memory is patterned, not zero" + at, 0, nullptr, [n] {
      auto* p = static_cast<unsigned char*>(std::malloc(n));
      for (std::size_t i = 0; i < n; ++i)
        if (p[i] != 0xCD) std::abort();
      std::free(p);
      auto* z = static_cast<unsigned char*>(std::calloc(1, n));
      for (std::size_t i = 0; i < n; ++i)
        if (z[i] != 0) std::abort();
      std::free(z);
    });
    expect("correct use stays quiet" + at, 0, nullptr, [n] {
      std::vector<void*> v;
      for (int i = 0; i < 200; ++i) v.push_back(std::malloc(n + static_cast<std::size_t>(i)));
      for (void*& p : v) p = std::realloc(p, n * 2);
      for (void* p : v) std::free(p);
      delete[] new int[n / 4 + 1];
      delete new std::string(n, 'x');
    });
  }
  expect("invalid free of a stack address", SIGABRT, "foreign pointer", [] {
    char local[16];
    std::free(local + static_cast<int>(getpid() & 0));
  });
}

void guarded_mode(bool underflow) {
  for (const std::size_t n : {std::size_t{8}, std::size_t{4096}, std::size_t{256} << 10}) {
    const std::string at = " at " + std::to_string(n) + " bytes";
    if (!underflow) {
      expect("overflow by 1 faults at the write" + at, SIGSEGV, "past its end", [n] {
        void* p = std::malloc(n);
        poke(p, static_cast<std::ptrdiff_t>(n), 1);
        std::_Exit(3);  // not reached
      });
      expect("overflow by 32 through memcpy" + at, SIGSEGV, "past its end", [n] {
        char* p = static_cast<char*>(std::malloc(n));
        char src[40] = {};
        std::memcpy(p + n, src, 32);
        std::_Exit(3);
      });
      expect("overflow by 1 MiB" + at, SIGSEGV, nullptr, [n] {
        void* p = std::malloc(n);
        poke(p, static_cast<std::ptrdiff_t>(n + (std::size_t{1} << 20)), 1);
        std::_Exit(3);
      });
      expect("zero-size block read" + at, SIGSEGV, nullptr, [] {
        void* p = std::malloc(0);
        (void)peek(p, 0);
        std::_Exit(3);
      });
    } else {
      expect("underflow by 1 faults at the write" + at, SIGSEGV, "before its start", [n] {
        void* p = std::malloc(n);
        poke(p, -1, 1);
        std::_Exit(3);
      });
    }
    expect("read after free faults" + at, SIGSEGV, "after it was freed", [n] {
      void* p = std::malloc(n);
      std::free(p);
      (void)peek(p, 0);
      std::_Exit(3);
    });
    expect("zeroing after free faults" + at, SIGSEGV, "after it was freed", [n] {
      void* p = std::malloc(n);
      std::free(p);
      std::memset(p, 0, n);
      std::_Exit(3);
    });
    expect("double free" + at, SIGABRT, "double free", [n] {
      void* p = std::malloc(n);
      std::free(p);
      std::free(p);
    });
    expect("a freed address is not reused at once" + at, 0, nullptr, [n] {
      void* p = std::malloc(n);
      std::free(p);
      void* q = std::malloc(n);
      if (q == p) std::abort();
      std::free(q);
    });
    expect("new[] freed with delete" + at, SIGABRT, "mismatched", [n] {
      char* p = new char[n];
      ::operator delete(p);
    });
    expect("correct use stays quiet" + at, 0, nullptr, [n] {
      std::vector<void*> v;
      for (int i = 0; i < 50; ++i) v.push_back(std::malloc(n + static_cast<std::size_t>(i)));
      for (void*& p : v) p = std::realloc(p, n * 2);
      for (void* p : v) std::free(p);
    });
  }
}

}  // namespace

// With STRATA_DEBUG_BACKTRACE and STRATA_DEBUG_LEAKS (the "leaks" run): the report at exit names this function.
extern "C" [[gnu::noinline]] void* debug_heap_test_leak_from_here(std::size_t n) {
  void* p = std::malloc(n);
  std::memset(p, 1, n);
  return p;
}

namespace {
void leaks_mode() {
  expect("a leak at exit names where it was allocated, through the unwinder", 0, "debug_heap_test_leak_from_here", [] {
    std::printf("%p\n", debug_heap_test_leak_from_here(24));  // the only pointer, gone
    for (int i = 0; i < 100; ++i) std::free(std::malloc(static_cast<std::size_t>(i)));
  });
}
}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  const char* env = std::getenv("STRATA_DEBUG");
  if (mode == "leaks" && env != nullptr && std::string(env) == "1") {
    leaks_mode();
    std::printf("%d failed\n", failures);
    return failures == 0 ? 0 : 1;
  }
  if (env == nullptr || mode != env) {
    std::fprintf(stderr, "debug_heap_test: run with STRATA_DEBUG=%s (and libstrata-malloc preloaded)\n", mode.c_str());
    return 2;
  }
  if (mode == "1") canaries_mode();
  else if (mode == "guarded") guarded_mode(false);
  else if (mode == "guarded-underflow") guarded_mode(true);
  else return 2;
  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
