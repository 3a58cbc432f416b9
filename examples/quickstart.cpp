// Quickstart: causal softmax attention on Eigen tensors, checked against the double reference.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include <effattn/effattn.hpp>
#include <effattn/reference/softmax.hpp>
#include <unsupported/Eigen/CXX11/Tensor>

int main() {
  constexpr Eigen::Index B = 2, H = 4, L = 128, D = 64;  // batch, heads, sequence length, head dim

  // effattn takes row-major [B, H, L, D] tensors: an Eigen::Tensor, a TensorMap or a raw pointer.
  using Tensor = Eigen::Tensor<float, 4, Eigen::RowMajor>;
  Tensor q(B, H, L, D), k(B, H, L, D), v(B, H, L, D), out(B, H, L, D);
  q.setRandom();
  k.setRandom();
  v.setRandom();

  // A TensorMap over existing memory works the same way, without a copy.
  Eigen::TensorMap<const Tensor> q_map(q.data(), B, H, L, D);

  effattn::Mask mask;
  mask.causal = effattn::Causal::bottom_right;  // query i sees keys 0..i (aligned to the last key)

  effattn::SoftmaxAttention<float> attn;  // scale defaults to 1/sqrt(D)
  attn.forward(q_map, k, v, out, mask);

  // The reference computes the same thing naively in double.
  Eigen::Tensor<double, 4, Eigen::RowMajor> expected(B, H, L, D);
  effattn::reference::softmax_attention<float>(q, k, v, expected, mask);

  double max_err = 0;
  for (Eigen::Index i = 0; i < out.size(); ++i)
    max_err = std::max(max_err, std::abs(static_cast<double>(out.data()[i]) - expected.data()[i]));

  std::printf("out[0, 0, 0, :4]   = %+.5f %+.5f %+.5f %+.5f\n", out(0, 0, 0, 0), out(0, 0, 0, 1), out(0, 0, 0, 2),
              out(0, 0, 0, 3));
  std::printf("out[1, 3, L-1, :4] = %+.5f %+.5f %+.5f %+.5f\n", out(1, 3, L - 1, 0), out(1, 3, L - 1, 1),
              out(1, 3, L - 1, 2), out(1, 3, L - 1, 3));
  std::printf("max |effattn - reference| = %.3g\n", max_err);
  return max_err < 1e-4 ? 0 : 1;
}
