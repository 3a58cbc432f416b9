#pragma once
// draw_projection: the random matrices W of the random-feature maps, iid Gaussian or orthogonal
// random features (ORF), one [rows, dim] matrix per head.
//
// Head h's matrix is a function of the stream (seed, h, draw) alone (counter_rng.hpp): it does not
// depend on how many heads are drawn, in which order, or on the thread count, and advancing `draw`
// gives a fresh, independent set. Entries sit at fixed stream positions, so fewer rows are a prefix
// of more rows (for ORF, of the same stacked blocks).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include <Eigen/Core>
#include <Eigen/QR>

#include "effattn/core/errors.hpp"
#include "effattn/core/tensor.hpp"
#include "effattn/feature_maps/counter_rng.hpp"
#include "effattn/feature_maps/projection.hpp"

EFFATTN_BEGIN_NAMESPACE

namespace detail {

// The rows of Q^T for G = QR, G square (one ORF block: orthonormal rows, before the length rescale).
//
// Why the sign fix: a Householder QR in the LAPACK style (Eigen's HouseholderQR included) reflects
// each column onto -sign(pivot) * |column|, so R_kk's sign is tied to the data rather than random:
// column 0 of Q is G's column 0 divided by R_00, whose (0, 0) entry is therefore always negative, and
// the later diagonal entries lean negative the same way (the last 1x1 step reflects nothing, so Q_nn
// leans positive). Q is then not Haar-distributed. Measured at dim = 8 over 20000
// blocks without the fix: the mean block is close to -0.25 I (diagonal -0.29 ... -0.23, last +0.22;
// 0 for a Haar Q, |entries| <= 0.007 with the fix), and the ORF estimate of exp(x.y) at
// |x| = |y| = 1, m = dim = 8 is biased by -12% to -15%, 40 to 60 standard errors over 40000 draws
// (tests/feature_maps/projection_test.cpp). Multiplying column j of Q by sign(R_jj) gives the QR with
// a positive diagonal, which is unique; since G's distribution is invariant under rotations, that Q is
// Haar (F. Mezzadri, "How to generate random matrices from the classical compact groups", 2006;
// Notices of the AMS 54, 2007). sign(0) counts as +1 (probability zero for a Gaussian G).
inline Eigen::MatrixXd orthogonal_block(const Eigen::Ref<const Eigen::MatrixXd>& g, bool sign_fix) {
  EFFATTN_ASSERT(g.rows() == g.cols() && g.rows() >= 1);
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
  Eigen::MatrixXd q = qr.householderQ();
  if (sign_fix)
    for (Index j = 0; j < q.cols(); ++j)
      if (qr.matrixQR()(j, j) < 0) q.col(j) = -q.col(j);
  return q.transpose();
}

// One head's [rows, dim] matrix into out (row-major). Stream layout:
//   iid:  entry (r, d) is normal(r * dim + d);
//   ORF:  block b (rows b*dim ...) uses positions from p = 2 * dim^2 * b: G(i, j) = normal(p + i*dim + j),
//         and row i's length is |g_i| with g_i(j) = normal(p + dim^2 + i*dim + j).
// A block owns its positions whether or not it is truncated, so truncation changes no other value.
inline void draw_matrix(const CounterRng& rng, Index rows, Index dim, bool orthogonal, bool sign_fix, double* out) {
  const auto n = static_cast<std::uint64_t>(dim);
  if (!orthogonal) {
    rng.normals(0, static_cast<std::size_t>(rows * dim), out);
    return;
  }
  using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  RowMajor g(dim, dim);
  std::vector<double> len(static_cast<std::size_t>(dim));
  for (Index b = 0; b * dim < rows; ++b) {
    const std::uint64_t p = 2 * n * n * static_cast<std::uint64_t>(b);
    rng.normals(p, static_cast<std::size_t>(n * n), g.data());
    const Eigen::MatrixXd block = orthogonal_block(g, sign_fix);
    const Index kept = std::min(dim, rows - b * dim);
    for (Index i = 0; i < kept; ++i) {
      rng.normals(p + n * n + static_cast<std::uint64_t>(i) * n, len.size(), len.data());
      double sq = 0;
      for (double v : len) sq += v * v;
      // Rows of Q^T have unit length; a chi(dim) length makes each row's marginal exactly N(0, I),
      // which the positive-feature estimator needs to stay unbiased (all rows at sqrt(dim) would not).
      const double length = std::sqrt(sq);
      double* row = out + (b * dim + i) * dim;
      for (Index d = 0; d < dim; ++d) row[d] = block(i, d) * length;
    }
  }
}

}  // namespace detail

// [heads][rows][dim] projection. orthogonal: ORF, blocks of dim mutually orthogonal rows (the sign-fixed
// QR of a Gaussian matrix, so each block is a Haar-random rotation), ceil(rows / dim) independent blocks
// stacked and truncated to rows, every row rescaled to the length of an independent N(0, I_dim) vector.
// Otherwise every entry is iid N(0, 1). Throws config_error when an extent is < 1 or the size overflows.
inline Projection draw_projection(Index heads, Index rows, Index dim, std::uint64_t seed, std::uint64_t draw,
                                  bool orthogonal) {
  if (heads < 1 || rows < 1 || dim < 1)
    throw config_error(detail::cat("draw_projection: [heads, rows, dim] = [", heads, ", ", rows, ", ", dim,
                                   "]; every extent must be >= 1"));
  const Index max = std::numeric_limits<Index>::max();
  if (rows > max / dim || heads > max / (rows * dim))
    throw config_error(detail::cat("draw_projection: [heads, rows, dim] = [", heads, ", ", rows, ", ", dim,
                                   "] is too large"));
  std::vector<double> w(static_cast<std::size_t>(heads * rows * dim));
  for (Index h = 0; h < heads; ++h)
    detail::draw_matrix(detail::CounterRng(seed, static_cast<std::uint64_t>(h), draw), rows, dim, orthogonal, true,
                        w.data() + h * rows * dim);
  return Projection(std::move(w), heads, rows, dim);
}

EFFATTN_END_NAMESPACE
