#pragma once
// The RA / LARA golden cases under tests/data/golden: HKUNLP efficient-attention's LinearRA and
// RandomizedAttention in float64 with their random numbers pinned (the standard-normal noise and, for
// RA, the sampled key indices are saved with the case), and the float32-vs-float64 spread the data's
// manifest reports for each. Double implementations are held to 1e-10 * max(1, max|ref|); float ones
// to 10x the spread.

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <effattn/kinds/lara_config.hpp>

#include "support/golden.hpp"
#include "support/npy.hpp"

namespace effattn_test {

struct LaraGoldenSpec {
  const char* name;
  bool ra;              // RandomizedAttention; else LaraAttention
  bool train;           // noise added (HKUNLP's train mode), pinned by the saved draws
  Index num_landmarks;  // LARA's C (0 for RA)
  double f32_out;       // max|out32 - out64| reported by the manifest
};

inline const std::vector<LaraGoldenSpec>& lara_golden_specs() {
  static const std::vector<LaraGoldenSpec> specs = {
      {"lara_misopt_train_b2h3_n64_d33_c8", false, true, 8, 8.4e-8},
      {"lara_misopt_eval_b2h3_n64_d33_c8", false, false, 8, 8.4e-8},
      {"ra_ns1_train_b2h3_n64_d33", true, true, 0, 3.6e-7},
  };
  return specs;
}

// The saved draws converted to T (exact: float32 normals and integer indices), with the views the
// kernels and the reference take. The views point into this object: keep it alive, do not copy it.
template <class T>
struct LaraGoldenDraws {
  std::vector<T> noise;          // LARA [B, H, C, D]; RA [1, B, H, N, D]
  std::vector<Index> key_index;  // RA [1, B, H, N]
  Index B = 0, H = 0, rows = 0, D = 0;

  [[nodiscard]] effattn::LaraDraws<T> lara() const {
    effattn::LaraDraws<T> d;
    if (!noise.empty()) d.noise = effattn::ConstTensor4<T>(noise.data(), B, H, rows, D);
    return d;
  }
  [[nodiscard]] effattn::RaDraws<T> ra() const {
    effattn::RaDraws<T> d;
    if (!noise.empty()) d.noise = effattn::View<const T, 5>(noise.data(), Index{1}, B, H, rows, D);
    if (!key_index.empty()) d.key_index = effattn::View<const Index, 4>(key_index.data(), Index{1}, B, H, rows);
    return d;
  }
};

struct LaraGoldenCase : GoldenTensors {
  LaraGoldenSpec spec;
  std::optional<NpyArray> noise;      // standard normal: LARA [B, H, C, D], RA [B, H, N, D]
  std::optional<NpyArray> key_index;  // RA [B, H, N], integers stored as float64
  std::optional<NpyArray> out_mean;   // LARA train: mean of out over 256 seeds of HKUNLP's own noise
  std::optional<NpyArray> out_std;    // and its standard deviation (ddof 1)

  // The configuration that reproduces the case: HKUNLP's noise is N(0, I) on unscaled vectors
  // (code_compat); its key padding zeroes tokens (zero_compat, inactive here: no case is padded).
  [[nodiscard]] effattn::LaraConfig lara_config() const {
    effattn::LaraConfig c;
    c.num_landmarks = spec.num_landmarks;
    c.weighting = effattn::Weighting::mis_opt;
    c.alpha_coeff = 1.0;
    c.noise = effattn::Noise::code_compat;
    c.padding = effattn::Padding::zero_compat;
    c.sampling = spec.train ? effattn::Sampling::stochastic : effattn::Sampling::deterministic;
    return c;
  }
  // num_samples = 1 draws one key per query; train mode adds the noise.
  [[nodiscard]] effattn::RaConfig ra_config() const {
    effattn::RaConfig c;
    c.samples = 1;
    c.mean = effattn::RaMean::sampled_key;
    c.noise = spec.train ? effattn::Noise::code_compat : effattn::Noise::none;
    return c;
  }

  // The pinned draws as the kernel of scalar T takes them (the reference takes the same type).
  template <class T>
  [[nodiscard]] LaraGoldenDraws<T> draws() const {
    LaraGoldenDraws<T> d;
    if (noise) {
      d.noise.assign(noise->data.begin(), noise->data.end());
      d.B = noise->dim(0), d.H = noise->dim(1), d.rows = noise->dim(2), d.D = noise->dim(3);
    }
    if (key_index) {
      for (double x : key_index->data) d.key_index.push_back(static_cast<Index>(x));
      d.B = key_index->dim(0), d.H = key_index->dim(1), d.rows = key_index->dim(2);
    }
    return d;
  }

  // Absolute tolerance of a double implementation.
  [[nodiscard]] double f64_tolerance() const { return 1e-10 * std::max(1.0, max_abs(out)); }
  // Absolute tolerance of a float implementation.
  [[nodiscard]] double f32_tolerance() const { return 10 * spec.f32_out; }
};

inline LaraGoldenCase load_lara_golden(const LaraGoldenSpec& spec) {
  const auto dir = golden_dir() / spec.name;
  LaraGoldenCase c{load_tensors(dir), spec, std::nullopt, std::nullopt, std::nullopt, std::nullopt};
  const auto optional = [&](const char* file) -> std::optional<NpyArray> {
    if (!std::filesystem::exists(dir / file)) return std::nullopt;
    return read_npy(dir / file);
  };
  c.noise = optional("noise.npy");
  c.key_index = optional("sampled_key_index.npy");
  c.out_mean = optional("out_mean_over_seeds.npy");
  c.out_std = optional("out_std_over_seeds.npy");
  return c;
}

}  // namespace effattn_test
