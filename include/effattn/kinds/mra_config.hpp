#pragma once
// MraConfig and MraSelection: the configuration of MraAttention (kinds/mra.hpp) and the tiles it chose,
// in their own header so the reference (reference/mra.hpp) states the same semantics without the kernel.
//
// MRA-2 (Zeng et al., ICML 2022) splits queries and keys into blocks of `block` tokens. Every block
// pair (I, J) gets a coarse logit C_IJ = scale * mean(q in I) . mean(k in J) over the real tokens; the
// budget's highest-ranked pairs are computed exactly (all token pairs), and in full mode every other
// pair contributes its real keys with the coarse logit. The result is exact softmax attention over the
// modified logits
//   S^_tu = scale q_t.k_u  if (I(t), I(u)) is selected,
//           C_I(t)I(u)     otherwise (full mode), -inf (sparse mode),
//           -inf           for a padded key u,
// and a padded query row gives 0 (with Lq == Lk, key_lengths pads the queries too).
//
// Selection, per (batch, head), over all query-block x key-block pairs at once (the official global
// top-k): pairs rank first by tier, then by P_IJ = C_IJ - max_J' C_IJ' (the row maximum over every key
// block, empty ones included, as the official code takes it before masking), then by the smaller flat
// index I * key_blocks + J. The tier is the number of priors a pair earns (diagonal band, row I <
// prior_first, column J < prior_first: 0 to 3), minus 2 for a pair without a real query or real key.
// The official code adds 5e3 per prior and -1e4 for empty pairs to P instead; the order is the same
// whenever the logits span less than 5e3, and ours does not depend on that.

#include <algorithm>
#include <cmath>
#include <optional>
#include <span>
#include <vector>

#include "effattn/core/errors.hpp"
#include "effattn/core/tensor.hpp"

EFFATTN_BEGIN_NAMESPACE

enum class MraMode {
  full,    // MRA-2: exact selected tiles plus the coarse part everywhere else
  sparse,  // MRA-2-s: exact selected tiles only; a row whose block has none gives 0
};

struct MraConfig {
  Index block = 32;          // tokens per block (the official kernels' 32); any block >= 1
  Index blocks_per_row = 4;  // budget = blocks_per_row * query blocks (HF MraConfig's block_per_row)
  Index num_blocks = 0;      // > 0: the budget per (batch, head) directly (the official num_block)
  MraMode mode = MraMode::full;
  Index prior_first = 0;  // rows I < prior_first and columns J < prior_first earn a prior each
  Index prior_diag = 0;   // > 0: pairs with |I - J| <= prior_diag / 2 earn a prior (self-attention only)
  std::optional<double> scale{};  // default 1 / sqrt(Dqk)

  [[nodiscard]] Status validate() const {
    if (block < 1) return detail::error(ErrorCode::config, "MraAttention::Config: block is ", block, "; it must be >= 1");
    if (num_blocks < 0 || blocks_per_row < 0 || (num_blocks == 0 && blocks_per_row == 0))
      return detail::error(ErrorCode::config, "MraAttention::Config: num_blocks is ", num_blocks, " and blocks_per_row is ",
                           blocks_per_row, "; give num_blocks > 0, or num_blocks = 0 and blocks_per_row >= 1");
    if (prior_first < 0 || prior_diag < 0)
      return detail::error(ErrorCode::config, "MraAttention::Config: prior_first is ", prior_first, " and prior_diag is ",
                           prior_diag, "; both must be >= 0");
    if (scale && !std::isfinite(*scale))
      return detail::error(ErrorCode::config, "MraAttention::Config: scale is ", *scale, "; it must be finite");
    return {};
  }

  // Exactly computed tiles per (batch, head): the budget, clamped to the number of block pairs.
  [[nodiscard]] Index budget(Index query_blocks, Index key_blocks) const noexcept {
    const Index pairs = query_blocks * key_blocks;
    const Index want = num_blocks > 0 ? num_blocks : blocks_per_row * query_blocks;
    return std::min(want, pairs);
  }
};

// The tiles MRA computed exactly, per (batch, head), grouped by query block: key blocks of (b, h, I)
// are cols[offsets[o + I], offsets[o + I + 1]) with o = (b * heads + h) * (query_blocks + 1), in
// increasing order.
struct MraSelection {
  Index batch = 0, heads = 0;
  Index query_blocks = 0, key_blocks = 0;
  Index block = 0;
  std::vector<Index> offsets;
  std::vector<Index> cols;

  [[nodiscard]] std::span<const Index> key_blocks_of(Index b, Index h, Index I) const noexcept {
    const Index o = (b * heads + h) * (query_blocks + 1) + I;
    const auto first = static_cast<std::size_t>(offsets[static_cast<std::size_t>(o)]);
    const auto last = static_cast<std::size_t>(offsets[static_cast<std::size_t>(o + 1)]);
    return {cols.data() + first, last - first};
  }
  [[nodiscard]] bool contains(Index b, Index h, Index I, Index J) const noexcept {
    const auto row = key_blocks_of(b, h, I);
    return std::binary_search(row.begin(), row.end(), J);
  }
  // Selected tiles of (b, h).
  [[nodiscard]] Index tiles(Index b, Index h) const noexcept {
    const Index o = (b * heads + h) * (query_blocks + 1);
    return offsets[static_cast<std::size_t>(o + query_blocks)] - offsets[static_cast<std::size_t>(o)];
  }
};

EFFATTN_END_NAMESPACE
