#pragma once

// GGUF files of lockstep's synthetic models, for the import tests: llama.cpp's
// tensor names and GGUF's dimension order spelt out here, independently of
// the importer's own mapping (storage/gguf_model.cpp).

#include "model/weight_gen.hpp"
#include "storage/gguf_writer.hpp"

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace lockstep::test {

using storage::gguf::ggml_type;
using storage::gguf::gguf_writer;

using model::tensor_kind;

inline std::string llama_cpp_name(const model::tensor_id& id) {
  static const std::map<tensor_kind, std::string> blk{
      {tensor_kind::attn_norm, "attn_norm"}, {tensor_kind::wq, "attn_q"},
      {tensor_kind::wk, "attn_k"},           {tensor_kind::wv, "attn_v"},
      {tensor_kind::wo, "attn_output"},      {tensor_kind::mlp_norm, "ffn_norm"},
      {tensor_kind::w_gate, "ffn_gate"},     {tensor_kind::w_up, "ffn_up"},
      {tensor_kind::w_down, "ffn_down"}};
  switch (id.kind) {
  case tensor_kind::tok_embedding:
    return "token_embd.weight";
  case tensor_kind::final_norm:
    return "output_norm.weight";
  case tensor_kind::lm_head:
    return "output.weight";
  default:
    return "blk." + std::to_string(id.layer) + "." + blk.at(id.kind) +
           ".weight";
  }
}

// A GGUF of `spec`'s synthetic weights (seed `seed`) in the spec's dtype
// (f32 or f16; norms f32): a [rows x cols] row-major matrix is ne [cols,
// rows]. `replace` may add a tensor itself instead (returning true).
using replacer = std::function<bool(const model::tensor_id&, gguf_writer&)>;
inline gguf_writer synthetic_llama(const model::model_spec& spec, bool tied = false,
                            uint64_t seed = 7, const replacer& replace = {}) {
  gguf_writer w;
  w.set_string("general.architecture", "llama");
  w.set_string("general.name", spec.name);
  w.set_u32("llama.block_count", spec.n_layers);
  w.set_u32("llama.embedding_length", spec.d_model);
  w.set_u32("llama.feed_forward_length", spec.d_ff);
  w.set_u32("llama.attention.head_count", spec.n_heads);
  w.set_u32("llama.attention.head_count_kv", spec.n_kv_heads);
  w.set_u32("llama.attention.key_length", spec.head_dim);
  w.set_u32("llama.context_length", spec.max_context);
  w.set_f32("llama.rope.freq_base", static_cast<float>(spec.rope_theta));
  w.set_f32("llama.attention.layer_norm_rms_epsilon", spec.rms_eps);
  model::weight_generator gen{spec, seed};
  for (auto id : model::all_tensors(spec)) {
    if (tied && id.kind == tensor_kind::lm_head)
      continue;
    if (replace && replace(id, w))
      continue;
    auto t = gen.generate(id);
    auto shape = model::shape_of(spec, id.kind);
    auto type = model::dtype_of(spec, id.kind) == model::dtype::f16
                    ? ggml_type::f16
                    : ggml_type::f32;
    std::vector<uint64_t> ne =
        model::is_norm(id.kind) ? std::vector<uint64_t>{shape.cols}
                                : std::vector<uint64_t>{shape.cols, shape.rows};
    auto b = t.bytes();
    w.add_tensor(llama_cpp_name(id), ne, type, {b.begin(), b.end()});
  }
  return w;
}

} // namespace lockstep::test
