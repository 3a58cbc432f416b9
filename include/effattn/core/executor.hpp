#pragma once
// Where parallel work runs. The library never owns threads: it runs serially, on the OpenMP runtime
// of a consumer that compiles with OpenMP, or on the caller's Eigen::ThreadPoolInterface.
//
// Parallelism has one shape in effattn: a fixed number of parts, part p handled start to finish by one
// call f(p). Which thread runs a part never changes what the part computes, so outputs are bitwise
// identical for any thread count.

#include <algorithm>
#include <functional>

#include <unsupported/Eigen/CXX11/ThreadPool>

#include "effattn/core/tensor.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

EFFATTN_BEGIN_NAMESPACE

class Executor {
 public:
  enum class Kind { serial, openmp, pool };

  // Default: OpenMP with its default team size when the including translation unit is compiled with
  // OpenMP, serial otherwise.
  Executor() noexcept
#if defined(_OPENMP)
      : kind_(Kind::openmp), threads_(0)
#endif
  {
  }

  static Executor serial() noexcept { return Executor(Kind::serial, 1, nullptr); }
  // threads <= 0: omp_get_max_threads(). Serial when the consumer is not compiled with OpenMP.
  static Executor openmp(int threads = 0) noexcept {
#if defined(_OPENMP)
    return Executor(Kind::openmp, threads, nullptr);
#else
    (void)threads;
    return serial();
#endif
  }
  // Runs parts on a pool the caller owns; the pool must outlive the call.
  static Executor pool(Eigen::ThreadPoolInterface& pool) noexcept {
    return Executor(Kind::pool, pool.NumThreads(), &pool);
  }

  [[nodiscard]] Kind kind() const noexcept { return kind_; }

  [[nodiscard]] int num_threads() const noexcept {
    switch (kind_) {
      case Kind::serial: return 1;
#if defined(_OPENMP)
      case Kind::openmp: return threads_ > 0 ? threads_ : omp_get_max_threads();
#else
      case Kind::openmp: return 1;
#endif
      case Kind::pool: return std::max(1, pool_->NumThreads());
    }
    return 1;
  }

  // Calls f(worker, part) for every part in [0, parts), each exactly once, with worker in
  // [0, workers) naming the scratch slot the call may use (callers size scratch for `workers`, read
  // from num_threads() once). f must not throw.
  // Parts are dealt in a snake order (0..n-1, then n-1..0, ...): callers list parts so that cost
  // grows along runs (causal query tiles), and the snake then gives every worker a balanced share
  // (measured: L = 256 causal on 2 threads went from 1.3x to ~1.9x the 1-thread speed).
  template <class F>
  void run(Index parts, int workers, F&& f) const {
    const int threads = static_cast<int>(std::min<Index>(std::min(workers, num_threads()), parts));
#if defined(_OPENMP)
    if (threads > 1 && kind_ == Kind::openmp) {
#pragma omp parallel num_threads(threads)
      {
        const int w = omp_get_thread_num();
        const int n = omp_get_num_threads();
        for_each_part(parts, n, w, [&](Index p) { f(w, p); });
      }
      return;
    }
#endif
    // Serial; also an OpenMP executor reaching code compiled without OpenMP (a program may mix both
    // kinds of translation unit), and a call from inside the pool itself, where waiting on tasks
    // queued behind us could deadlock.
    if (threads <= 1 || kind_ != Kind::pool || pool_->CurrentThreadId() >= 0) {
      for (Index p = 0; p < parts; ++p) f(0, p);
      return;
    }
    Eigen::Barrier barrier(static_cast<unsigned>(threads - 1));
    for (int w = 1; w < threads; ++w) {
      pool_->Schedule([&, w] {
        for_each_part(parts, threads, w, [&](Index p) { f(w, p); });
        barrier.Notify();
      });
    }
    for_each_part(parts, threads, 0, [&](Index p) { f(0, p); });
    barrier.Wait();
  }

 private:
  // The parts of worker w out of n in snake order.
  template <class G>
  static void for_each_part(Index parts, int n, int w, G&& g) {
    for (Index round = 0; round * n < parts; ++round) {
      const Index p = round * n + (round % 2 == 0 ? w : n - 1 - w);
      if (p < parts) g(p);
    }
  }

  Executor(Kind kind, int threads, Eigen::ThreadPoolInterface* pool) noexcept
      : kind_(kind), threads_(threads), pool_(pool) {}

  Kind kind_ = Kind::serial;
  int threads_ = 1;
  Eigen::ThreadPoolInterface* pool_ = nullptr;
};

EFFATTN_END_NAMESPACE
