#pragma once
// The exact-softmax golden cases (PyTorch 1.13 SDPA, float64) under tests/data/golden, with the
// float32-vs-float64 spread the data's manifest reports for each case. The tolerances derive from it:
// double implementations at 1e-10 * max(1, max|ref|); float ones at 10x the observed float32 spread.

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <effattn/core/tensor.hpp>

#include "support/compare.hpp"
#include "support/npy.hpp"

#ifndef EFFATTN_TEST_DATA_DIR
#error "EFFATTN_TEST_DATA_DIR must name the tests/data folder"
#endif

namespace effattn_test {

struct GoldenSpec {
  const char* name;
  bool causal;
  double f32_out;      // max|out32 - out64| reported by the manifest
  double f32_lse;      // max|lse32 - lse64|, or relative when lse_relative
  bool lse_relative;
};

inline const std::vector<GoldenSpec>& golden_specs() {
  static const std::vector<GoldenSpec> specs = {
      {"sdpa_noncausal_b2h3_n64_d64", false, 4.4e-7, 4.4e-7, false},
      {"sdpa_causal_b2h3_n7_d8", true, 2.9e-7, 2.4e-7, false},
      {"sdpa_cross_b2h3_nq7_nk129_d33", false, 1.9e-7, 4.7e-7, false},
      {"sdpa_keypad_b2h3_n64_d33", false, 5.6e-7, 4.5e-7, false},
      {"sdpa_bias_b2h3_n64_d33", false, 1e-6, 4.9e-7, false},
      // Logits ~N(0, 1e4^2): float32 rounding of an lse of ~4e4 is ~1e-2 absolute, so the manifest
      // reports it relative (2.3e-7).
      {"sdpa_hard_spread_b2h3_n64_d33", false, 2.2e-12, 2.3e-7, true},
  };
  return specs;
}

// The attention tensors every golden case holds, [B, H, N, D], and their extents.
struct GoldenTensors {
  NpyArray q, k, v, out;

  [[nodiscard]] Index B() const { return q.dim(0); }
  [[nodiscard]] Index H() const { return q.dim(1); }
  [[nodiscard]] Index Hkv() const { return k.dim(1); }
  [[nodiscard]] Index Lq() const { return q.dim(2); }
  [[nodiscard]] Index Lk() const { return k.dim(2); }
  [[nodiscard]] Index D() const { return q.dim(3); }
  [[nodiscard]] Index Dv() const { return v.dim(3); }

  [[nodiscard]] static double max_abs(const NpyArray& a) {
    double m = 0;
    for (double x : a.data) m = std::max(m, std::abs(x));
    return m;
  }
};

inline GoldenTensors load_tensors(const std::filesystem::path& dir) {
  return {read_npy(dir / "q.npy"), read_npy(dir / "k.npy"), read_npy(dir / "v.npy"), read_npy(dir / "out.npy")};
}

struct GoldenCase : GoldenTensors {
  GoldenSpec spec;
  NpyArray lse;
  std::optional<NpyArray> keep;  // [B, Nk], 1 = valid key
  std::optional<NpyArray> bias;  // [B, H, Nq, Nk]

  // The keep masks pad a suffix, so each row's count of ones is its key length.
  [[nodiscard]] std::vector<Index> key_lengths() const {
    std::vector<Index> lens;
    if (!keep) return lens;
    for (Index b = 0; b < keep->dim(0); ++b) {
      Index n = 0;
      for (Index j = 0; j < keep->dim(1); ++j) n += keep->data[static_cast<std::size_t>(b * keep->dim(1) + j)] != 0.0;
      lens.push_back(n);
    }
    return lens;
  }

};

// Re-stores a [B, H, L, D] array in the given layout as T (exact: the inputs are float32 values).
template <class T>
std::vector<T> in_layout(const NpyArray& a, effattn::Layout layout) {
  std::vector<T> r(a.data.begin(), a.data.end());
  return layout == effattn::Layout::bhld ? r : bhld_to_blhd(r, a.dim(0), a.dim(1), a.dim(2), a.dim(3));
}

inline std::filesystem::path golden_dir() { return std::filesystem::path(EFFATTN_TEST_DATA_DIR) / "golden"; }

inline GoldenCase load_golden(const GoldenSpec& spec) {
  const auto dir = golden_dir() / spec.name;
  GoldenCase c{load_tensors(dir), spec, read_npy(dir / "lse.npy"), std::nullopt, std::nullopt};
  if (std::filesystem::exists(dir / "key_padding_keep.npy")) c.keep = read_npy(dir / "key_padding_keep.npy");
  if (std::filesystem::exists(dir / "bias.npy")) c.bias = read_npy(dir / "bias.npy");
  return c;
}

}  // namespace effattn_test
