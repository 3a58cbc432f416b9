#pragma once
// Element-wise comparison of a kernel result against the double-precision reference, reporting the
// worst element with its multi-index, both values and the caller's context (case and seed), so a
// failure can be reproduced from the log alone.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstddef>
#include <iomanip>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include <Eigen/Core>

namespace effattn_test {

// A short decimal form for RecordProperty (std::to_string prints fixed-point).
inline std::string sci(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", x);
  return buf;
}

// A [B, H, L, D] tensor rewritten as [B, L, H, D] (Layout::blhd).
template <class T>
std::vector<T> bhld_to_blhd(const std::vector<T>& t, Eigen::Index B, Eigen::Index H, Eigen::Index L, Eigen::Index D) {
  std::vector<T> o(t.size());
  for (Eigen::Index b = 0; b < B; ++b)
    for (Eigen::Index h = 0; h < H; ++h)
      for (Eigen::Index l = 0; l < L; ++l)
        for (Eigen::Index d = 0; d < D; ++d)
          o[static_cast<std::size_t>(((b * L + l) * H + h) * D + d)] = t[static_cast<std::size_t>(((b * H + h) * L + l) * D + d)];
  return o;
}

inline double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double e = 0;
  for (std::size_t i = 0; i < a.size(); ++i) e = std::max(e, std::abs(a[i] - b[i]));
  return e;
}

using Index = Eigen::Index;

struct Tolerance {
  double atol = 0;
  double rtol = 0;
};

// Default tolerances of a kernel in T against the double reference, for inputs ~N(0,1) and
// logits of magnitude O(10) (the sweep's inputs).
//  * float: logit rounding is about sqrt(Dqk) * 2^-24 * scale * |q||k| ~ 1e-7 and the Lk-term sums of
//    p*v add about sqrt(Lk) * 2^-24 (Lk <= 3000: ~3e-6); 3e-5 leaves a 10x margin over that while a
//    wrong mask or index is off by O(0.1).
//  * double: the same error budget scaled by the ratio of the epsilons (~2e-9) is ~6e-14; 1e-12 leaves
//    headroom for the vectorised exp, which is accurate to a few ulp.
template <class T>
constexpr Tolerance kTolerance = sizeof(T) == 4 ? Tolerance{3e-5, 3e-5} : Tolerance{1e-12, 1e-12};

inline std::string index_text(Index flat, const std::vector<Index>& dims) {
  std::vector<Index> idx(dims.size());
  for (std::size_t a = dims.size(); a-- > 0;) {
    const Index d = dims[a] > 0 ? dims[a] : 1;
    idx[a] = flat % d;
    flat /= d;
  }
  std::ostringstream os;
  os << "[";
  for (std::size_t a = 0; a < idx.size(); ++a) os << (a ? "," : "") << idx[a];
  os << "]";
  return os.str();
}

// got and want hold dims' elements in row-major order. An infinite reference value (LSE of a fully
// masked row) must be matched exactly; NaN in got never passes. `tol_of(flat)` may override the
// tolerance per element (used where the bound depends on the row).
template <class G, class TolFn>
::testing::AssertionResult all_close_with(std::string_view what, const G* got, const double* want,
                                          const std::vector<Index>& dims, std::string_view axes, TolFn&& tol_of,
                                          std::string_view context) {
  Index n = 1;
  for (Index d : dims) n *= d;
  Index bad = 0, worst = -1;
  double worst_ratio = 0, worst_allowed = 0;
  for (Index i = 0; i < n; ++i) {
    const double g = static_cast<double>(got[i]);
    const double w = want[i];
    const Tolerance tol = tol_of(i);
    const double allowed = tol.atol + tol.rtol * std::abs(w);
    double ratio;
    if (std::isnan(g) || std::isnan(w))
      ratio = INFINITY;
    else if (std::isinf(w) || std::isinf(g))
      ratio = g == w ? 0.0 : INFINITY;
    else if (g == w)
      ratio = 0.0;
    else
      ratio = std::abs(g - w) / allowed;
    if (ratio > 1.0) ++bad;
    if (ratio > worst_ratio || worst < 0) {
      worst_ratio = ratio;
      worst = i;
      worst_allowed = allowed;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  std::ostringstream os;
  os << std::setprecision(17) << what << ": " << bad << " of " << n << " elements out of tolerance; worst at " << axes
     << " = " << index_text(worst, dims) << ": got " << static_cast<double>(got[worst]) << ", want " << want[worst]
     << ", |diff| " << std::abs(static_cast<double>(got[worst]) - want[worst]) << " > atol + rtol*|want| = "
     << worst_allowed << "\n  case: " << context;
  return ::testing::AssertionFailure() << os.str();
}

template <class G>
::testing::AssertionResult all_close(std::string_view what, const G* got, const double* want,
                                     const std::vector<Index>& dims, std::string_view axes, Tolerance tol,
                                     std::string_view context) {
  return all_close_with(what, got, want, dims, axes, [tol](Index) { return tol; }, context);
}

}  // namespace effattn_test
