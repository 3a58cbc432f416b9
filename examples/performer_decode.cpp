// Performer attention from a trained model, then streaming decode.
//
// A model trained with performer-pytorch keeps its random features in a buffer `projection_matrix`
// of shape [m, D] (one for every head). Passing those values to effattn with compat = lucidrains
// reproduces its outputs; here a matrix drawn by effattn stands in for the saved one. The second half
// prefills a causal state with a prompt and then decodes token by token: each step costs the same at
// any position, and the result equals one causal forward over the whole sequence.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include <effattn/effattn.hpp>
#include <unsupported/Eigen/CXX11/Tensor>

using Tensor = Eigen::Tensor<float, 4, Eigen::RowMajor>;

int main() {
  constexpr Eigen::Index B = 1, H = 4, L = 96, D = 32, m = 64, prompt = 64;

  Tensor q(B, H, L, D), k(B, H, L, D), v(B, H, L, D);
  q.setRandom();  // uniform in [-1, 1]: small norms, where random features approximate softmax well
  k.setRandom();
  v.setRandom();
  q = q * 0.5f;
  k = k * 0.5f;

  // 1. A trained model's projection: [m, D] values (here drawn; in practice read from the checkpoint).
  const effattn::Projection saved = effattn::draw_projection(/*heads=*/1, m, D, /*seed=*/7, /*draw=*/0, /*orthogonal=*/true);
  effattn::RfaConfig compat;
  compat.compat = effattn::Compat::lucidrains;  // performer-pytorch's eps and stabilisers
  const effattn::RfaAttention<float> performer(compat, saved);
  Tensor out_model(B, H, L, D);
  performer.forward(q, k, v, out_model);  // what FastAttention(causal=False) computes with that buffer

  // How far is the approximation from exact softmax attention on these inputs?
  Tensor exact(B, H, L, D);
  effattn::SoftmaxAttention<float>{}.forward(q, k, v, exact);
  const Eigen::Tensor<float, 0, Eigen::RowMajor> err = (out_model - exact).abs().maximum();
  std::printf("Performer (m = %d) vs exact softmax: max |difference| %.3g\n", static_cast<int>(m), static_cast<double>(err()));

  // 2. Streaming decode with effattn's own exact stabilisers (compat = none), causal.
  effattn::RfaConfig config;
  config.num_features = m;
  const effattn::RfaAttention<float> rfa(config, /*kv_heads=*/H, D);
  effattn::Mask causal;
  causal.causal = effattn::Causal::top_left;
  Tensor full(B, H, L, D);
  rfa.forward(q, k, v, full, causal);

  auto state = rfa.make_state(B, H, D);
  Tensor step_out(B, H, L, D);
  const auto tokens = [&](const Tensor& t, Eigen::Index first, Eigen::Index count) {
    const Eigen::array<Eigen::Index, 4> offset{0, 0, first, 0}, extent{B, H, count, D};
    return Tensor(t.slice(offset, extent));
  };
  // The prompt in one call, then one token per call; a workspace makes each step allocation-free.
  std::vector<std::byte> workspace;
  for (Eigen::Index t = 0; t < L;) {
    const Eigen::Index n = t == 0 ? prompt : 1;
    const Tensor qs = tokens(q, t, n), ks = tokens(k, t, n), vs = tokens(v, t, n);
    Tensor os(B, H, n, D);
    effattn::Options<float> options;
    workspace.resize(rfa.workspace_bytes(effattn::Problem::of<float>(qs, ks, vs), options.executor.num_threads()));
    options.workspace = workspace;
    rfa.extend(state, qs, ks, vs, os, options);
    const Eigen::array<Eigen::Index, 4> offset{0, 0, t, 0}, extent{B, H, n, D};
    step_out.slice(offset, extent) = os;
    t += n;
  }
  const Eigen::Tensor<float, 0, Eigen::RowMajor> drift = (step_out - full).abs().maximum();
  std::printf("decode after a %d-token prompt vs one causal forward: max |difference| %.3g (tokens in state: %ld)\n",
              static_cast<int>(prompt), static_cast<double>(drift()), static_cast<long>(state.length(0)));
  // Rounding only: the two paths sum in different orders.
  return drift() < 1e-5f && std::isfinite(err()) ? 0 : 1;
}
