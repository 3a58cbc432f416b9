#pragma once
// Library-wide macros. Everything here can be overridden by defining it before the first include.

#include <cassert>

#include "effattn/version.hpp"

// Internal invariants. Public entry points validate their arguments and throw; these guard only
// conditions the library itself establishes, so they are cheap asserts, off under NDEBUG.
#ifndef EFFATTN_ASSERT
#define EFFATTN_ASSERT(cond) assert(cond)
#endif
#ifndef EFFATTN_DASSERT
#ifdef NDEBUG
#define EFFATTN_DASSERT(cond) ((void)0)
#else
#define EFFATTN_DASSERT(cond) assert(cond)
#endif
#endif

// Full unrolling of the micro-kernels' register loops: at -O2 GCC 12 keeps the accumulator arrays
// in memory without it (measured at L = 4096, D = 64 on one Zen 4 core: 30 vs 80 GFLOP/s with
// -march=haswell, 46 vs 98 with AVX-512; -O3 unrolls either way).
#ifndef EFFATTN_UNROLL
#if defined(__clang__) || defined(__GNUC__)
#define EFFATTN_UNROLL _Pragma("GCC unroll 16")
#else
#define EFFATTN_UNROLL
#endif
#endif

#if defined(__GNUC__) || defined(__clang__)
#define EFFATTN_RESTRICT __restrict__
#define EFFATTN_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define EFFATTN_RESTRICT
#define EFFATTN_ALWAYS_INLINE inline
#endif

// Every public name lives in effattn::v0 (inline), so two incompatible versions linked into one
// program fail at link time instead of silently mixing layouts.
#define EFFATTN_BEGIN_NAMESPACE \
  namespace effattn {           \
  inline namespace v0 {
#define EFFATTN_END_NAMESPACE \
  }                           \
  }
