# SPDX-License-Identifier: MIT
# Cross-compiling strata for 64-bit Windows with Debian's mingw-w64 (g++-mingw-w64-x86-64-posix: GCC with POSIX
# threads, so std::thread and std::mutex work), the programs run under wine64 (the `windows` preset, make windows-test).
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(strata_mingw_prefix x86_64-w64-mingw32)
set(CMAKE_C_COMPILER ${strata_mingw_prefix}-gcc-posix)
set(CMAKE_CXX_COMPILER ${strata_mingw_prefix}-g++-posix)
set(CMAKE_RC_COMPILER ${strata_mingw_prefix}-windres)
set(CMAKE_FIND_ROOT_PATH /usr/${strata_mingw_prefix})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# The C and C++ runtimes and winpthreads linked in: the programs (and a strata DLL) need no mingw DLLs beside them.
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static -static-libgcc -static-libstdc++")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "-static -static-libgcc -static-libstdc++")
# ctest and doctest's test discovery run the programs through wine.
find_program(STRATA_WINE NAMES wine64 wine PATHS /usr/lib/wine NO_CMAKE_FIND_ROOT_PATH)
if(STRATA_WINE)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${STRATA_WINE})
endif()
