// LARA on a ViT-style token grid: 14 x 14 patches, 49 landmarks pooled as 7 x 7 cells, against exact
// softmax attention, Performer with as many random features, and RA (unbiased, quadratic).
#include <cmath>
#include <cstdio>
#include <random>

#include <effattn/effattn.hpp>
#include <unsupported/Eigen/CXX11/Tensor>

using Tensor = Eigen::Tensor<float, 4, Eigen::RowMajor>;

// ||a - b||_F / ||b||_F
static double rel_error(const Tensor& a, const Tensor& b) {
  const Eigen::Tensor<float, 0, Eigen::RowMajor> num = (a - b).square().sum(), den = b.square().sum();
  return std::sqrt(static_cast<double>(num()) / static_cast<double>(den()));
}

int main() {
  constexpr Eigen::Index B = 1, H = 3, side = 14, L = side * side, D = 64;
  // Patch features vary smoothly over the image (neighbouring patches look alike), plus noise: the
  // structure that lets pooled landmarks stand for their cells. The amplitude keeps attention rows
  // moderately peaked; with much larger logits (amplitude 1 here) every estimator degrades and
  // Performer's plateau can undercut LARA: measure on your own activations.
  Tensor q(B, H, L, D), k(B, H, L, D), v(B, H, L, D);
  std::mt19937 gen(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (Tensor* t : {&q, &k, &v})
    for (Eigen::Index h = 0; h < H; ++h)
      for (Eigen::Index d = 0; d < D; ++d) {
        const float fy = 0.3f * normal(gen), fx = 0.3f * normal(gen), a = normal(gen), ph = normal(gen);
        for (Eigen::Index y = 0; y < side; ++y)
          for (Eigen::Index x = 0; x < side; ++x)
            (*t)(0, h, y * side + x, d) = 0.5f * (a * std::sin(fy * y + fx * x + ph) + 0.3f * normal(gen));
      }

  Tensor exact(B, H, L, D), lara_out(B, H, L, D), performer_out(B, H, L, D), ra_out(B, H, L, D);
  effattn::SoftmaxAttention<float>().forward(q, k, v, exact);

  effattn::LaraConfig lara_config;
  lara_config.num_landmarks = 49;
  lara_config.grid = {side, side};
  effattn::LaraAttention<float>(lara_config).forward(q, k, v, lara_out);

  effattn::RfaConfig performer_config;
  performer_config.num_features = 49;
  effattn::RfaAttention<float>(performer_config, H, D).forward(q, k, v, performer_out);

  effattn::RaConfig ra_config;
  ra_config.samples = 49;
  effattn::RandomizedAttention<float>(ra_config).forward(q, k, v, ra_out);

  const double e_lara = rel_error(lara_out, exact), e_perf = rel_error(performer_out, exact);
  std::printf("relative error vs exact softmax, 49 samples each: LARA %.3f  Performer %.3f  RA %.3f\n",
              e_lara, e_perf, rel_error(ra_out, exact));
  return e_lara < e_perf ? 0 : 1;
}
