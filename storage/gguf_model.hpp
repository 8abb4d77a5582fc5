#pragma once

// A Llama-family model as a GGUF file describes it: its shape, from the
// metadata (llama.block_count, embedding_length, feed_forward_length,
// attention.head_count[_kv], attention.key_length, rope.freq_base,
// attention.layer_norm_rms_epsilon, context_length; the vocabulary from
// token_embd's ne[1]) and checked against every tensor; and where each of
// lockstep's tensors lies in the file, by llama.cpp's names (token_embd,
// blk.N.attn_q/k/v/output, ffn_gate/up/down, attn_norm, ffn_norm,
// output_norm, output). GGUF's ne[0] is the contiguous dimension, so a
// matrix of ne [in, out] is lockstep's [rows = out x cols = in] row-major:
// the same bytes.
//
// The first step of `weights import --gguf` (issue 11); `weights inspect
// --gguf FILE` shows it.

#include "model/model_spec.hpp"
#include "storage/gguf_file.hpp"

#include <caf/expected.hpp>

#include <map>
#include <string>
#include <vector>

namespace lockstep::storage::gguf {

struct gguf_model {
  /// weight_dtype: the matrices' common type when it is F32, F16 or BF16;
  /// f32 otherwise (quantized or mixed types dequantize exactly to f32).
  model::model_spec spec;
  /// No `output.weight`: the LM head is the embedding (`lm_head` below
  /// points at token_embd).
  bool tied_head = false;
  struct entry {
    model::tensor_id id;
    const tensor_info* tensor = nullptr; // in the gguf_file described
  };
  /// Every tensor of `spec` in canonical order (model::all_tensors).
  std::vector<entry> tensors;
  /// Tensors of the file that lockstep does not read.
  std::vector<std::string> unused;
  /// Tensors per ggml type name ("Q4_K": 96, ...).
  std::map<std::string, uint32_t> types;
  /// tokenizer.ggml.tokens' length (0: the file has no vocabulary).
  uint64_t vocabulary_tokens = 0;
};

/// llama.cpp's name of one of lockstep's tensors ("blk.3.attn_q.weight").
std::string gguf_tensor_name(const model::tensor_id& id);

/// Describes `f` as a llama-architecture model. Errors: invalid_file
/// naming the file and the key or tensor: another architecture, a missing
/// or mistyped key, a dimension that is not a multiple of the 64-element
/// reduction block (naming it), a missing tensor or one whose shape
/// contradicts the metadata, a vocabulary size that disagrees between
/// token_embd, llama.vocab_size and the token list, a tensor type this
/// build cannot convert, RoPE scaling (rope_freqs, llama.rope.scaling.*),
/// which lockstep's RoPE does not implement.
caf::expected<gguf_model> describe_model(const gguf_file& f);

} // namespace lockstep::storage::gguf
