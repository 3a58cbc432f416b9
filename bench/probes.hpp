#pragma once
// Machine probes, run in-process before the benchmarks. Every "%peak" and "%bw" counter is relative
// to what this machine does with this compiler and these flags, measured a moment earlier, not to a
// datasheet figure that a VM, a power limit or a missing -march would make unreachable.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <utility>

#include <Eigen/Core>

#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
#include <immintrin.h>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

#include "inputs.hpp"

namespace effattn_bench {

inline int max_threads() noexcept {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline double now_seconds() noexcept {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Which of the ISA macros the compiler targeted for this binary (what -march gave us, not what the
// CPU could do).
inline const char* isa_string() noexcept {
  return ""
#if defined(__AVX512F__)
         "AVX512F "
#endif
#if defined(__AVX2__)
         "AVX2 "
#endif
#if defined(__FMA__)
         "FMA "
#endif
#if !defined(__AVX512F__) && !defined(__AVX2__) && !defined(__FMA__)
         "baseline "
#endif
      ;
}

namespace probe_detail {

// The widest float packet Eigen uses for this target (Packet16f with AVX-512, Packet8f with AVX, ...),
// so the probe measures the same instructions the kernels are compiled to.
using Packet = Eigen::internal::packet_traits<float>::type;
inline constexpr int kLanes = Eigen::internal::packet_traits<float>::size;

// Why 12 independent chains: an FMA has a latency of about 4 cycles and current x86 cores issue two
// per cycle, so at least 4 x 2 = 8 FMAs must be in flight or the probe measures latency instead of
// throughput. 12 leaves margin for 5-cycle FMAs and still fits, with the two operands, in the 16
// vector registers of AVX2 (no spills that would add loads to the loop).
inline constexpr int kChains = 12;

template <std::size_t... I>
[[gnu::noinline]] float fma_chains(long iterations, float mul, float add, std::index_sequence<I...>) {
  using namespace Eigen::internal;
  Packet acc[kChains] = {pset1<Packet>(static_cast<float>(I) * 1e-3f)...};
  const Packet b = pset1<Packet>(mul);
  const Packet c = pset1<Packet>(add);
  for (long n = 0; n < iterations; ++n) {
    // Two rounds per trip halve the loop overhead; each chain still depends only on itself.
    ((acc[I] = pmadd(acc[I], b, c)), ...);
    ((acc[I] = pmadd(acc[I], b, c)), ...);
  }
  // Every chain feeds the result, so none of them is dead code.
  Packet sum = acc[0];
  ((sum = I == 0 ? sum : padd(sum, acc[I])), ...);
  return predux(sum);
}

inline volatile float g_sink = 0;
// Read through volatile so the compiler cannot constant-fold the chains. With mul just below 1 and a
// small add, every chain converges to add / (1 - mul): no overflow and no denormals that would slow
// the FMAs down.
inline volatile float g_mul = 0.999999f;
inline volatile float g_add = 1e-6f;

inline float run_chains(long iterations) {
  return fma_chains(iterations, g_mul, g_add, std::make_index_sequence<kChains>{});
}

// FLOPs of run_chains(iterations): 2 rounds x chains x lanes x 2 (an FMA is a multiply and an add).
inline double chain_flops(long iterations) {
  return 2.0 * static_cast<double>(iterations) * kChains * kLanes * 2.0;
}

}  // namespace probe_detail

// FMA peak in GFLOP/s of `threads` cores together (each runs its own chains). Best of several runs of
// about 0.1 s each, after a warm-up that lets the clock ramp up.
inline double fma_peak_gflops(int threads = 1) {
  using namespace probe_detail;
  // Calibrate single-threaded: iterations for about 0.1 s.
  long iterations = 1 << 16;
  for (;;) {
    const double t0 = now_seconds();
    g_sink = run_chains(iterations);
    const double t = now_seconds() - t0;
    if (t > 0.05) {
      iterations = static_cast<long>(static_cast<double>(iterations) * 0.1 / t) + 1;
      break;
    }
    iterations *= 4;
  }
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    double elapsed = 0;
    int team = 1;
#if defined(_OPENMP)
    if (threads > 1) {
      double t0 = 0;
#pragma omp parallel num_threads(threads)
      {
        // Start and stop the clock at barriers, so the figure is the team's wall time for the same
        // work per thread, not one thread's luck.
#pragma omp barrier
        if (omp_get_thread_num() == 0) {
          team = omp_get_num_threads();
          t0 = now_seconds();
        }
        const float r = run_chains(iterations);
#pragma omp critical
        g_sink = g_sink + r;
#pragma omp barrier
        if (omp_get_thread_num() == 0) elapsed = now_seconds() - t0;
      }
    } else
#endif
    {
      const double t0 = now_seconds();
      g_sink = run_chains(iterations);
      elapsed = now_seconds() - t0;
    }
    best = std::max(best, chain_flops(iterations) * team / elapsed * 1e-9);
  }
  return best;
}

namespace probe_detail {

inline volatile double g_triad_sink = 0;

// One thread's share of a triad pass, [begin, end) in elements (multiples of the vector width).
// Streaming stores write a's lines without reading them first (no write-allocate), so the pass moves
// exactly the 3 arrays it is credited with; plain stores also read a, a fourth array STREAM does not
// count.
inline void triad_range(double* a, const double* b, const double* c, double s, std::ptrdiff_t begin,
                        std::ptrdiff_t end, bool streaming) {
#if defined(__AVX512F__)
  if (streaming) {
    const __m512d vs = _mm512_set1_pd(s);
    for (std::ptrdiff_t i = begin; i < end; i += 8)
      _mm512_stream_pd(a + i, _mm512_add_pd(_mm512_load_pd(b + i), _mm512_mul_pd(vs, _mm512_load_pd(c + i))));
    _mm_sfence();
    return;
  }
#elif defined(__AVX__)
  if (streaming) {
    const __m256d vs = _mm256_set1_pd(s);
    for (std::ptrdiff_t i = begin; i < end; i += 4)
      _mm256_stream_pd(a + i, _mm256_add_pd(_mm256_load_pd(b + i), _mm256_mul_pd(vs, _mm256_load_pd(c + i))));
    _mm_sfence();
    return;
  }
#elif defined(__SSE2__)
  if (streaming) {
    const __m128d vs = _mm_set1_pd(s);
    for (std::ptrdiff_t i = begin; i < end; i += 2)
      _mm_stream_pd(a + i, _mm_add_pd(_mm_load_pd(b + i), _mm_mul_pd(vs, _mm_load_pd(c + i))));
    _mm_sfence();
    return;
  }
#endif
  (void)streaming;
  for (std::ptrdiff_t i = begin; i < end; ++i) a[i] = b[i] + s * c[i];
}

}  // namespace probe_detail

// Whether the target has streaming stores, i.e. whether triad_gbps(threads, true) uses them.
inline constexpr bool kStreamingStores =
#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
    true;
#else
    false;
#endif

// STREAM triad a[i] = b[i] + s * c[i] over three arrays of `mib` MiB each (far beyond the caches), best of
// 5, in GB/s (1e9 bytes), counting STREAM's 3 arrays per pass (b and c read, a written).
// streaming = true stores with non-temporal stores, as tuned STREAM builds do, so the count is the
// real traffic and the figure is the bandwidth a read-mostly kernel (decode) can hope for; with plain
// stores the hidden write-allocate read of a makes the figure about 3/4 of that, and a kernel that only
// reads would show more than 100% of it.
inline double triad_gbps(int threads, bool streaming = true, std::size_t mib = 128) {
  constexpr std::ptrdiff_t kBlock = 1024;  // elements per scheduling block: a multiple of every vector width
  const std::size_t n = mib * (std::size_t{1} << 20) / sizeof(double);
  const auto blocks = static_cast<std::ptrdiff_t>(n) / kBlock;
  // 64-byte aligned (streaming stores need it), and left uninitialised here: the parallel first touch
  // below, with the same static schedule as the timed loop, places each page next to the thread that
  // streams it, as STREAM does.
  AlignedBuffer<double> a(n), b(n), c(n);
  double* pa = a.data();
  double* pb = b.data();
  double* pc = c.data();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
  for (std::ptrdiff_t k = 0; k < blocks; ++k) {
    for (std::ptrdiff_t i = k * kBlock; i < (k + 1) * kBlock; ++i) {
      pa[i] = 0.0;
      pb[i] = 1.0;
      pc[i] = 2.0;
    }
  }
  (void)threads;
  const double s = 3.0;
  double best = 1e300;
  for (int rep = 0; rep < 5; ++rep) {
    const double t0 = now_seconds();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
    for (std::ptrdiff_t k = 0; k < blocks; ++k)
      probe_detail::triad_range(pa, pb, pc, s, k * kBlock, (k + 1) * kBlock, streaming);
    best = std::min(best, now_seconds() - t0);
    probe_detail::g_triad_sink = probe_detail::g_triad_sink + pa[static_cast<std::size_t>(rep) * (n / 7)];
  }
  return 3.0 * static_cast<double>(blocks * kBlock) * sizeof(double) / best * 1e-9;
}

}  // namespace effattn_bench
