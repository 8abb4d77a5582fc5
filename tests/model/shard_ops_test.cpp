// The shard-level API: a layer split over chips the way a plan splits it
// (heads, d_ff rows, reductions on block boundaries, KV slices by kv head)
// gives the reference's bits; and every precondition a plan or the wire can
// break is an error in every build type, not wrong numbers or a crash.

#include "model/model_weights.hpp"
#include "model/shard_ops.hpp"

#include <gtest/gtest.h>

#include <bit>
#include <cstring>

namespace lockstep::model {
namespace {

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

std::vector<float> random_x(size_t n, uint64_t seed) {
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i)
    x[i] = uniform_pm1(mix64(seed, i));
  return x;
}

// One sequence's KV storage for kv heads [kv0, kv1) of one layer.
struct kv_store {
  kv_store(const model_spec& s, uint32_t kv0, uint32_t kv1)
      : k(size_t{s.max_context} * (kv1 - kv0) * s.head_dim)
      , v(k.size())
      , kp{k.data()}
      , vp{v.data()}
      , slice{kv0, kv1, s.max_context, s.head_dim, kp, vp} {}
  std::vector<float> k, v;
  std::vector<float*> kp, vp;
  kv_cache_slice slice;
};

class shard_ops : public ::testing::Test {
protected:
  shard_ops()
      : spec_(*find_preset("tiny-8"))
      , w_(model_weights::generate(weight_generator{spec_, 5}))
      , rope_(spec_.head_dim, spec_.rope_theta, spec_.max_context) {}

  attention_shard heads(uint32_t layer, uint32_t h0, uint32_t h1,
                        std::vector<tensor>& keep) const {
    weight_generator gen{spec_, 5};
    uint32_t hd = spec_.head_dim, d = spec_.d_model;
    auto [kv0, kv1] = kv_heads_of(spec_, h0, h1);
    keep.push_back(*gen.generate({layer, tensor_kind::attn_norm}, {0, 1, 0, d}));
    keep.push_back(*gen.generate({layer, tensor_kind::wq}, {h0 * hd, h1 * hd, 0, d}));
    keep.push_back(*gen.generate({layer, tensor_kind::wk}, {kv0 * hd, kv1 * hd, 0, d}));
    keep.push_back(*gen.generate({layer, tensor_kind::wv}, {kv0 * hd, kv1 * hd, 0, d}));
    keep.push_back(*gen.generate({layer, tensor_kind::wo}, {0, d, h0 * hd, h1 * hd}));
    size_t n = keep.size();
    return {keep[n - 5].view(), keep[n - 4].view(), keep[n - 3].view(),
            keep[n - 2].view(), keep[n - 1].view(), h0, h1};
  }

  model_spec spec_;
  model_weights w_;
  rope_table rope_;
};

// Attention split over 2 head ranges (each with its own KV slice by kv
// head), reduce-scattered into 2 slices of d_model and root-combined with
// the residual, equals the whole-model attention + residual, bit for bit,
// over several positions (the KV cache is read back).
TEST_F(shard_ops, split_attention_equals_the_whole) {
  uint32_t d = spec_.d_model, n_heads = spec_.n_heads;
  std::vector<tensor> keep;
  auto whole = heads(0, 0, n_heads, keep);
  auto left = heads(0, 0, n_heads / 2, keep);
  auto right = heads(0, n_heads / 2, n_heads, keep);
  kv_store kv_whole{spec_, 0, spec_.n_kv_heads};
  auto [l0, l1] = kv_heads_of(spec_, 0, n_heads / 2);
  auto [r0, r1] = kv_heads_of(spec_, n_heads / 2, n_heads);
  kv_store kv_left{spec_, l0, l1}, kv_right{spec_, r0, r1};
  uint32_t nb = blocks_of(spec_.q_dim());
  tree_node root{0, tree_span(nb)};
  auto whole_rule = *combine_rule::make(nb, {&root, 1});

  for (uint32_t pos = 0; pos < 5; ++pos) {
    auto x = random_x(d, 100 + pos);
    token_row row{7, pos, 0, row_active | row_emits};
    std::span<const token_row> rows{&row, 1};

    // Whole.
    std::vector<float> y(d), scratch(attention_scratch_floats(
                                 spec_, n_heads, spec_.n_kv_heads, 1,
                                 spec_.max_context));
    const uint32_t all[] = {0, d};
    float* yp = y.data();
    ASSERT_FALSE(attention_part(spec_, whole, rope_, x.data(), rows,
                                kv_whole.slice, {all, {&yp, 1}}, scratch));
    std::vector<float> expect(d);
    const float* part = y.data();
    const uint32_t one = 1;
    ASSERT_FALSE(combine(whole_rule, {&part, 1}, {&one, 1}, 1, d, x.data(), d,
                         expect.data()));

    // Split: each half sends slice j of its pieces to "chip" j.
    const uint32_t cuts[] = {0, d / 2, d};
    std::vector<std::vector<float>> pieces(4);
    std::vector<tree_node> nodes;
    std::vector<uint32_t> counts;
    for (int h = 0; h < 2; ++h) {
      auto& w = h == 0 ? left : right;
      auto p = shard_pieces(w.wo);
      counts.push_back(static_cast<uint32_t>(p.size()));
      nodes.insert(nodes.end(), p.begin(), p.end());
      pieces[2 * h].resize(d / 2 * p.size());
      pieces[2 * h + 1].resize(d / 2 * p.size());
      float* dst[] = {pieces[2 * h].data(), pieces[2 * h + 1].data()};
      ASSERT_FALSE(attention_part(spec_, w, rope_, x.data(), rows,
                                  h == 0 ? kv_left.slice : kv_right.slice,
                                  {cuts, dst}, scratch));
    }
    auto rule = *combine_rule::make(nb, nodes);
    std::vector<float> got(d);
    for (uint32_t j = 0; j < 2; ++j) {
      const float* parts[] = {pieces[j].data(), pieces[2 + j].data()};
      ASSERT_FALSE(combine(rule, parts, counts, 1, d / 2,
                           x.data() + j * d / 2, d, got.data() + j * d / 2));
    }
    EXPECT_TRUE(same_bits(got, expect)) << "position " << pos;
  }
}

// Padding rows after the last active one are not computed: their output
// rows stay exactly as they were (a sentinel here), and the active rows
// are the bits a table without the padding gives.
TEST_F(shard_ops, rows_after_the_last_active_one_are_skipped) {
  uint32_t d = spec_.d_model, n_heads = spec_.n_heads;
  std::vector<tensor> keep;
  auto whole = heads(0, 0, n_heads, keep);
  const uint32_t all[] = {0, d};
  // Rows: active, padding, active, padding, padding.
  std::vector<token_row> rows{{3, 0, 0, row_active},
                              {0, 0, 0, 0},
                              {5, 1, 0, row_active | row_emits},
                              {0, 0, 0, 0},
                              {0, 0, 0, 0}};
  EXPECT_EQ(active_prefix(rows), 3u);
  EXPECT_EQ(active_prefix(std::span<const token_row>{rows}.first(2)), 1u);
  EXPECT_EQ(active_prefix(std::span<const token_row>{rows}.subspan(3)), 0u);
  auto x = random_x(size_t{d} * rows.size(), 42);
  std::vector<float> scratch(attention_scratch_floats(
      spec_, n_heads, spec_.n_kv_heads, 5, spec_.max_context));
  kv_store kv_padded{spec_, 0, spec_.n_kv_heads};
  std::vector<float> padded(size_t{d} * rows.size(), 1234.5f);
  float* pp = padded.data();
  ASSERT_FALSE(attention_part(spec_, whole, rope_, x.data(), rows,
                              kv_padded.slice, {all, {&pp, 1}}, scratch));
  kv_store kv_short{spec_, 0, spec_.n_kv_heads};
  std::vector<float> trimmed(size_t{d} * 3, 0.0f);
  float* tp = trimmed.data();
  ASSERT_FALSE(attention_part(spec_, whole, rope_, x.data(),
                              std::span<const token_row>{rows}.first(3),
                              kv_short.slice, {all, {&tp, 1}}, scratch));
  EXPECT_TRUE(same_bits(std::vector<float>(padded.begin(),
                                           padded.begin() + 3 * d),
                        trimmed));
  for (size_t i = size_t{3} * d; i < padded.size(); ++i)
    ASSERT_EQ(padded[i], 1234.5f) << "padding row value " << i;
}

TEST_F(shard_ops, a_missing_tree_node_is_an_error_not_a_recursion) {
  // Blocks 0..7 but node [4, +4) missing: once this recursed forever.
  std::vector<tree_node> nodes{{0, 4}};
  auto rule = combine_rule::make(8, nodes);
  ASSERT_FALSE(rule);
  EXPECT_EQ(rule.error(), errc::invalid_split);
  EXPECT_NE(detail_of(rule.error()).find("block 4"), std::string::npos)
      << detail_of(rule.error());
  float values[] = {1.0f};
  EXPECT_FALSE(combine_nodes(8, nodes, values));
  // Overlapping nodes, a node that is not a tree node, a gap in a partial.
  EXPECT_FALSE(combine_rule::make(8, std::vector<tree_node>{{0, 8}, {0, 4}}));
  EXPECT_FALSE(combine_rule::make(8, std::vector<tree_node>{{0, 3}, {3, 5}}));
  EXPECT_FALSE(
      combine_rule::make(8, std::vector<tree_node>{{0, 2}, {4, 4}}, false));
  // Ranges outside the reduction (a plan can say anything) yield nothing
  // rather than looping.
  EXPECT_TRUE(canonical_pieces(8, 4, 9).empty());
  EXPECT_TRUE(canonical_pieces(8, 5, 5).empty());
  EXPECT_TRUE(canonical_pieces(8, 6, 2).empty());
  // A partial combine over [2, 6) yields its maximal nodes.
  auto partial = combine_rule::make(
      8, std::vector<tree_node>{{2, 1}, {3, 1}, {4, 2}}, false);
  ASSERT_TRUE(partial) << render(partial.error());
  EXPECT_EQ(partial->outputs(), (std::vector<tree_node>{{2, 2}, {4, 2}}));
}

TEST_F(shard_ops, bad_shards_rows_and_buffers_are_errors) {
  std::vector<tensor> keep;
  auto w = heads(0, 0, 2, keep);
  kv_store kv{spec_, 0, 1};
  std::vector<float> x(spec_.d_model), y(spec_.d_model * 2);
  std::vector<float> scratch(
      attention_scratch_floats(spec_, 2, 1, 1, spec_.max_context));
  const uint32_t cuts[] = {0, spec_.d_model};
  float* yp = y.data();
  piece_output out{cuts, {&yp, 1}};

  token_row far{1, spec_.max_context, 0, row_active};
  auto err = attention_part(spec_, w, rope_, x.data(), {&far, 1}, kv.slice,
                            out, scratch);
  ASSERT_TRUE(err);
  EXPECT_NE(detail_of(err).find("position"), std::string::npos);

  token_row other_seq{1, 0, 3, row_active};
  EXPECT_TRUE(attention_part(spec_, w, rope_, x.data(), {&other_seq, 1},
                             kv.slice, out, scratch));
  // Padding rows are never checked against the slice: they write nothing.
  token_row padding{-1, 99999, 99, 0};
  EXPECT_FALSE(attention_part(spec_, w, rope_, x.data(), {&padding, 1},
                              kv.slice, out, scratch));

  auto wrong = w;
  wrong.head_end = 3; // wq holds heads [0, 2)
  err = attention_part(spec_, wrong, rope_, x.data(), {&padding, 1}, kv.slice,
                       out, scratch);
  ASSERT_TRUE(err);
  EXPECT_EQ(err, errc::invalid_shard);

  std::vector<float> small(8);
  EXPECT_TRUE(attention_part(spec_, w, rope_, x.data(), {&padding, 1},
                             kv.slice, out, small));

  token_row bad_token{5000, 0, 0, row_active};
  std::vector<float> e(spec_.d_model);
  EXPECT_FALSE(embed_rows(w_.tok_embedding.view(), {&bad_token, 1}, e.data()));
  const uint32_t bounds[] = {0, 10};
  const float* parts[] = {e.data()};
  token_row tok{50, 0, 0, row_active};
  EXPECT_TRUE(select_embedding({&tok, 1}, bounds, parts, spec_.d_model,
                               e.data()));
}

} // namespace
} // namespace lockstep::model
