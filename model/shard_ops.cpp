#include "model/shard_ops.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

namespace lockstep::model {

namespace {

caf::error bad_argument(const std::string& what) {
  return caf::make_error(errc::invalid_argument, what);
}

caf::error bad_shard(tensor_kind kind, const std::string& what) {
  return caf::make_error(errc::invalid_shard,
                         std::string{to_string(kind)} + ": " + what);
}

std::string range_text(const shard_range& r) {
  return "rows [" + std::to_string(r.row_begin) + ", " +
         std::to_string(r.row_end) + ") cols [" + std::to_string(r.col_begin) +
         ", " + std::to_string(r.col_end) + ")";
}

// `v` is a view of tensor `kind` covering exactly `want`.
caf::error expect_shard(const model_spec& spec, tensor_kind kind,
                        const tensor_view& v, const shard_range& want) {
  if (v.empty())
    return bad_shard(kind, "missing");
  auto shape = shape_of(spec, kind);
  if (v.full_shape() != shape || v.type() != dtype_of(spec, kind))
    return bad_shard(kind, "wrong tensor shape or dtype");
  if (auto err = check_shard(shape, v.range()))
    return err;
  if (v.range() != want)
    return bad_shard(kind, "holds " + range_text(v.range()) + ", expected " +
                               range_text(want));
  return {};
}

const float* f32_values(const tensor_view& t) {
  return reinterpret_cast<const float*>(t.bytes().data());
}

void norm_rows(const model_spec& spec, const tensor_view& norm,
               const float* x, uint32_t rows, float* out) {
  for (uint32_t t = 0; t < rows; ++t)
    rms_norm(x + size_t{t} * spec.d_model, f32_values(norm), spec.d_model,
             spec.rms_eps, out + size_t{t} * spec.d_model);
}

} // namespace

// --- Embedding -----------------------------------------------------------------

caf::expected<uint32_t> embed_rows(const tensor_view& emb,
                                   std::span<const token_row> rows,
                                   float* out) {
  uint32_t d = emb.cols();
  uint32_t r0 = emb.range().row_begin, r1 = emb.range().row_end;
  uint32_t held = 0;
  for (size_t t = 0; t < rows.size(); ++t) {
    float* dst = out + t * d;
    const auto& row = rows[t];
    if ((row.flags & row_active) != 0 &&
        (row.token < 0 ||
         static_cast<uint32_t>(row.token) >= emb.full_shape().rows))
      return bad_argument("row " + std::to_string(t) + ": token " +
                          std::to_string(row.token) +
                          " outside the vocabulary [0, " +
                          std::to_string(emb.full_shape().rows) + ")");
    auto tok = static_cast<uint32_t>(row.token);
    if ((row.flags & row_active) != 0 && tok >= r0 && tok < r1) {
      emb.to_f32(tok - r0, 0, d, dst);
      ++held;
    } else {
      std::fill(dst, dst + d, 0.0f);
    }
  }
  return held;
}

caf::error select_embedding(std::span<const token_row> rows,
                            std::span<const uint32_t> bounds,
                            std::span<const float* const> parts,
                            uint32_t d_model, float* x) {
  if (bounds.size() != parts.size() + 1 || parts.empty())
    return bad_argument("select: " + std::to_string(parts.size()) +
                        " parts need " + std::to_string(parts.size() + 1) +
                        " vocabulary bounds, got " +
                        std::to_string(bounds.size()));
  for (size_t p = 0; p + 1 < bounds.size(); ++p)
    if (bounds[p] >= bounds[p + 1])
      return bad_argument("select: vocabulary bounds are not increasing");
  for (size_t t = 0; t < rows.size(); ++t) {
    float* dst = x + t * d_model;
    if ((rows[t].flags & row_active) == 0) {
      std::fill(dst, dst + d_model, 0.0f);
      continue;
    }
    auto tok = static_cast<uint32_t>(rows[t].token);
    auto it = std::upper_bound(bounds.begin(), bounds.end(), tok);
    if (rows[t].token < 0 || it == bounds.begin() || it == bounds.end())
      return bad_argument("select: row " + std::to_string(t) + ": token " +
                          std::to_string(rows[t].token) +
                          " is held by no embedding part");
    size_t p = static_cast<size_t>(it - bounds.begin()) - 1;
    std::memcpy(dst, parts[p] + t * d_model, size_t{d_model} * 4);
  }
  return {};
}

// --- Attention -----------------------------------------------------------------

std::pair<uint32_t, uint32_t> kv_heads_of(const model_spec& spec, uint32_t h0,
                                          uint32_t h1) {
  uint32_t group = spec.n_heads / spec.n_kv_heads;
  if (h1 <= h0)
    return {h0 / group, h0 / group};
  return {h0 / group, (h1 - 1) / group + 1};
}

caf::error check_attention_shard(const model_spec& spec,
                                 const attention_shard& w) {
  uint32_t h0 = w.head_begin, h1 = w.head_end, hd = spec.head_dim;
  uint32_t d = spec.d_model;
  if (h0 >= h1 || h1 > spec.n_heads)
    return bad_shard(tensor_kind::wq,
                     "heads [" + std::to_string(h0) + ", " +
                         std::to_string(h1) + ") are not heads of " +
                         spec.name);
  auto [kv0, kv1] = kv_heads_of(spec, h0, h1);
  if (auto err = expect_shard(spec, tensor_kind::attn_norm, w.norm,
                              {0, 1, 0, d}))
    return err;
  if (auto err =
          expect_shard(spec, tensor_kind::wq, w.wq, {h0 * hd, h1 * hd, 0, d}))
    return err;
  if (auto err = expect_shard(spec, tensor_kind::wk, w.wk,
                              {kv0 * hd, kv1 * hd, 0, d}))
    return err;
  if (auto err = expect_shard(spec, tensor_kind::wv, w.wv,
                              {kv0 * hd, kv1 * hd, 0, d}))
    return err;
  return expect_shard(spec, tensor_kind::wo, w.wo, {0, d, h0 * hd, h1 * hd});
}

size_t attention_scratch_floats(const model_spec& spec, uint32_t heads,
                                uint32_t kv_heads, uint32_t rows,
                                uint32_t positions) {
  size_t n = rows, hd = spec.head_dim;
  return n * spec.d_model          // normed x
         + 2 * n * heads * hd      // q, attention output
         + 2 * n * kv_heads * hd   // new k, v
         + positions + (size_t{blocks_of(positions)} + block_lanes) * hd;
}

caf::error attention_part(const model_spec& spec, const attention_shard& w,
                          const rope_table& rope, const float* x,
                          std::span<const token_row> rows, kv_cache_slice& kv,
                          const piece_output& out, std::span<float> scratch,
                          worker_pool* pool) {
  if (auto err = check_attention_shard(spec, w))
    return err;
  uint32_t h0 = w.head_begin, h1 = w.head_end, hd = spec.head_dim;
  auto [kv0, kv1] = kv_heads_of(spec, h0, h1);
  if (kv.kv_head_begin != kv0 || kv.kv_head_end != kv1 || kv.head_dim != hd ||
      kv.k.size() != kv.v.size())
    return bad_argument("attention: the KV slice holds kv heads [" +
                        std::to_string(kv.kv_head_begin) + ", " +
                        std::to_string(kv.kv_head_end) + "), heads [" +
                        std::to_string(h0) + ", " + std::to_string(h1) +
                        ") need [" + std::to_string(kv0) + ", " +
                        std::to_string(kv1) + ")");
  auto n = static_cast<uint32_t>(rows.size());
  uint32_t nh = h1 - h0, nkv = kv1 - kv0, d = spec.d_model;
  for (uint32_t t = 0; t < n; ++t) {
    const auto& r = rows[t];
    if ((r.flags & row_active) == 0)
      continue;
    if (r.sequence >= kv.k.size() || kv.k[r.sequence] == nullptr ||
        kv.v[r.sequence] == nullptr)
      return bad_argument("attention: row " + std::to_string(t) +
                          ": sequence " + std::to_string(r.sequence) +
                          " is not in the KV slice (" +
                          std::to_string(kv.k.size()) + " sequences)");
    if (r.position >= kv.positions || r.position >= rope.positions())
      return bad_argument("attention: row " + std::to_string(t) +
                          ": position " + std::to_string(r.position) +
                          " outside the KV slice's " +
                          std::to_string(kv.positions) + " positions");
  }
  size_t need = attention_scratch_floats(spec, nh, nkv, n, kv.positions);
  if (scratch.size() < need)
    return bad_argument("attention: scratch of " +
                        std::to_string(scratch.size()) + " floats, needs " +
                        std::to_string(need));
  uint32_t qd = nh * hd, kvd = nkv * hd;
  float* xn = scratch.data();
  float* q = xn + size_t{n} * d;
  float* k = q + size_t{n} * qd;
  float* v = k + size_t{n} * kvd;
  float* attn = v + size_t{n} * kvd;
  float* head_scratch = attn + size_t{n} * qd;

  // Rows past the last active one are padding: not computed at all (their
  // outputs keep whatever the buffers held; nothing reads them).
  uint32_t m = active_prefix(rows);
  norm_rows(spec, w.norm, x, m, xn);
  matmul({xn, m, d, w.wq, pool}, q, qd);
  matmul({xn, m, d, w.wk, pool}, k, kvd);
  matmul({xn, m, d, w.wv, pool}, v, kvd);
  // RoPE, then every row's K/V goes into the cache before any row attends:
  // a token attends to positions [0, pos], all written by now (earlier
  // steps, earlier chunks, or earlier rows of this one).
  for (uint32_t t = 0; t < m; ++t) {
    const auto& r = rows[t];
    if ((r.flags & row_active) == 0)
      continue;
    rope.apply(q + size_t{t} * qd, nh, r.position);
    rope.apply(k + size_t{t} * kvd, nkv, r.position);
    std::copy_n(k + size_t{t} * kvd, kvd,
                kv.k[r.sequence] + size_t{r.position} * kvd);
    std::copy_n(v + size_t{t} * kvd, kvd,
                kv.v[r.sequence] + size_t{r.position} * kvd);
  }
  uint32_t group = spec.n_heads / spec.n_kv_heads;
  float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (uint32_t t = 0; t < m; ++t) {
    const auto& r = rows[t];
    float* out_t = attn + size_t{t} * qd;
    if ((r.flags & row_active) == 0) {
      std::fill(out_t, out_t + qd, 0.0f);
      continue;
    }
    for (uint32_t h = h0; h < h1; ++h) {
      uint32_t local_kv = h / group - kv0;
      attention_head(q + size_t{t} * qd + size_t{h - h0} * hd,
                     kv.k[r.sequence] + size_t{local_kv} * hd,
                     kv.v[r.sequence] + size_t{local_kv} * hd, r.position + 1,
                     kvd, hd, scale, out_t + size_t{h - h0} * hd,
                     head_scratch);
    }
  }
  matmul_pieces({attn, m, qd, w.wo, pool}, out);
  return {};
}

uint32_t active_prefix(std::span<const token_row> rows) {
  for (size_t t = rows.size(); t > 0; --t)
    if ((rows[t - 1].flags & row_active) != 0)
      return static_cast<uint32_t>(t);
  return 0;
}

// --- MLP -----------------------------------------------------------------------

caf::error check_mlp_shard(const model_spec& spec, const mlp_shard& w) {
  uint32_t d = spec.d_model;
  if (w.gate.empty())
    return bad_shard(tensor_kind::w_gate, "missing");
  uint32_t f0 = w.gate.range().row_begin, f1 = w.gate.range().row_end;
  auto on_block = [&](uint32_t f) {
    return f % reduction_block_elems == 0 || f == spec.d_ff;
  };
  if (f0 >= f1 || f1 > spec.d_ff || !on_block(f0) || !on_block(f1))
    return bad_shard(tensor_kind::w_gate,
                     "d_ff rows [" + std::to_string(f0) + ", " +
                         std::to_string(f1) +
                         ") are not a block-aligned range of " +
                         std::to_string(spec.d_ff));
  if (auto err =
          expect_shard(spec, tensor_kind::mlp_norm, w.norm, {0, 1, 0, d}))
    return err;
  if (auto err = expect_shard(spec, tensor_kind::w_gate, w.gate, {f0, f1, 0, d}))
    return err;
  if (auto err = expect_shard(spec, tensor_kind::w_up, w.up, {f0, f1, 0, d}))
    return err;
  return expect_shard(spec, tensor_kind::w_down, w.down, {0, d, f0, f1});
}

size_t mlp_scratch_floats(const model_spec& spec, uint32_t ff_rows,
                          uint32_t rows) {
  return size_t{rows} * spec.d_model + 2 * size_t{rows} * ff_rows;
}

caf::error mlp_part(const model_spec& spec, const mlp_shard& w, const float* x,
                    uint32_t rows, const piece_output& out,
                    std::span<float> scratch, worker_pool* pool) {
  if (auto err = check_mlp_shard(spec, w))
    return err;
  uint32_t f = w.gate.rows(), d = spec.d_model;
  size_t need = mlp_scratch_floats(spec, f, rows);
  if (scratch.size() < need)
    return bad_argument("mlp: scratch of " + std::to_string(scratch.size()) +
                        " floats, needs " + std::to_string(need));
  float* xn = scratch.data();
  float* gate = xn + size_t{rows} * d;
  float* up = gate + size_t{rows} * f;
  norm_rows(spec, w.norm, x, rows, xn);
  matmul({xn, rows, d, w.gate, pool}, gate, f);
  matmul({xn, rows, d, w.up, pool}, up, f);
  swiglu(gate, up, rows * f, gate);
  matmul_pieces({gate, rows, f, w.down, pool}, out);
  return {};
}

// --- Combines ------------------------------------------------------------------

caf::error combine(const combine_rule& rule,
                   std::span<const float* const> parts,
                   std::span<const uint32_t> part_nodes, uint32_t rows,
                   uint32_t cols, const float* residual, size_t residual_ld,
                   float* out) {
  size_t total = 0;
  for (auto n : part_nodes)
    total += n;
  if (parts.size() != part_nodes.size() || total != rule.inputs())
    return caf::make_error(errc::invalid_split,
                           "combine: the parts carry " +
                               std::to_string(total) + " node values, the "
                               "rule combines " +
                               std::to_string(rule.inputs()));
  bool root = rule.outputs().size() == 1 &&
              rule.outputs()[0] == tree_node{0, tree_span(rule.n_blocks())};
  if (root != (residual != nullptr))
    return caf::make_error(errc::invalid_split,
                           root ? "combine: a root combine needs the residual"
                                : "combine: a partial combine takes no "
                                  "residual");
  size_t n_out = rule.outputs().size();
  std::vector<float> in(rule.inputs()), value(n_out),
      scratch(rule.scratch_size());
  for (uint32_t t = 0; t < rows; ++t)
    for (uint32_t c = 0; c < cols; ++c) {
      size_t i = 0;
      size_t cell = size_t{t} * cols + c;
      for (size_t p = 0; p < parts.size(); ++p)
        for (uint32_t q = 0; q < part_nodes[p]; ++q)
          in[i++] = parts[p][cell * part_nodes[p] + q];
      rule.eval(in.data(), value.data(), scratch.data());
      if (root) {
        out[cell] = residual[size_t{t} * residual_ld + c] + value[0];
      } else {
        std::copy_n(value.data(), n_out, out + cell * n_out);
      }
    }
  return {};
}

// --- Head ----------------------------------------------------------------------

void final_norm(const model_spec& spec, const tensor_view& norm,
                const float* x, float* out) {
  rms_norm(x, f32_values(norm), spec.d_model, spec.rms_eps, out);
}

void lm_head_rows(const tensor_view& head, const float* x, uint32_t rows,
                  float* out, uint32_t ldo, worker_pool* pool) {
  matmul({x, rows, head.cols(), head, pool}, out, ldo);
}

} // namespace lockstep::model
