#include "storage/gguf_export.hpp"

#include "storage/gguf_model.hpp"
#include "storage/gguf_vocabulary.hpp"
#include "storage/gguf_writer.hpp"

#include <chrono>
#include <cstdio>
#include <cstring>

namespace lockstep::storage::gguf {

namespace {

value int_array(value_type element, const std::vector<int64_t>& v) {
  value a;
  a.type = value_type::array;
  a.element = element;
  for (auto x : v) {
    value item;
    item.type = element;
    item.i = x;
    a.items.push_back(std::move(item));
  }
  return a;
}

value float_array(const std::vector<double>& v) {
  value a;
  a.type = value_type::array;
  a.element = value_type::f32;
  for (auto x : v) {
    value item;
    item.type = value_type::f32;
    item.f = x;
    a.items.push_back(std::move(item));
  }
  return a;
}

// A SentencePiece-style vocabulary of `n` tokens for a model that has none
// (llama.cpp's "llama" tokenizer wants tokens, scores and types, and the
// special ids): 0 <unk>, 1 <s>, 2 </s>, then byte tokens, then "▁tN".
void made_up_vocabulary(gguf_writer& w, uint32_t n) {
  std::vector<std::string> tokens;
  std::vector<double> scores;
  std::vector<int64_t> types; // llama.cpp: 1 normal, 2 unknown, 3 control, 6 byte
  auto add = [&](std::string t, int64_t type) {
    scores.push_back(tokens.empty() ? 0.0 : -double(tokens.size()));
    tokens.push_back(std::move(t));
    types.push_back(type);
  };
  add("<unk>", 2);
  add("<s>", 3);
  add("</s>", 3);
  for (uint32_t b = 0; b < 256 && tokens.size() < n; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    add(name, 6);
  }
  while (tokens.size() < n)
    add("\xE2\x96\x81t" + std::to_string(tokens.size()), 1);
  tokens.resize(n);
  scores.resize(n);
  types.resize(n);
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_strings("tokenizer.ggml.tokens", std::move(tokens));
  w.set("tokenizer.ggml.scores", float_array(scores));
  w.set("tokenizer.ggml.token_type", int_array(value_type::i32, types));
  w.set_u32("tokenizer.ggml.unknown_token_id", 0);
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  value no;
  no.type = value_type::boolean;
  no.u = 0;
  w.set("tokenizer.ggml.add_bos_token", no);
}

} // namespace

caf::expected<export_report> export_model(const store& s,
                                          const weight_store& ws,
                                          const std::filesystem::path& path) {
  return export_model(s, ws, path, ggml_type::f32);
}

caf::expected<export_report> export_model(const store& s,
                                          const weight_store& ws,
                                          const std::filesystem::path& path,
                                          ggml_type matrices) {
  // f32 here means "as stored"; Q8_0 / Q4_0 quantize the matrices.
  bool quantize = matrices != ggml_type::f32;
  if (quantize && matrices != ggml_type::q8_0 && matrices != ggml_type::q4_0)
    return caf::make_error(errc::invalid_argument,
                           "export quantizes to Q8_0 or Q4_0 only");
  auto t0 = std::chrono::steady_clock::now();
  const auto& m = ws.manifest();
  if (m.partial || m.state != init_state::complete)
    return caf::make_error(errc::invalid_argument,
                           "export needs a complete store of the whole model; "
                           "this one is " +
                               std::string{m.partial ? "partial" : "incomplete"});
  const auto& spec = m.spec;
  gguf_writer w;
  w.set_string("general.architecture", "llama");
  w.set_string("general.name", spec.name);
  w.set_u32("llama.block_count", spec.n_layers);
  w.set_u32("llama.context_length", spec.max_context);
  w.set_u32("llama.embedding_length", spec.d_model);
  w.set_u32("llama.feed_forward_length", spec.d_ff);
  w.set_u32("llama.attention.head_count", spec.n_heads);
  w.set_u32("llama.attention.head_count_kv", spec.n_kv_heads);
  w.set_u32("llama.attention.key_length", spec.head_dim);
  w.set_u32("llama.attention.value_length", spec.head_dim);
  w.set_u32("llama.rope.dimension_count", spec.head_dim);
  w.set_f32("llama.rope.freq_base", static_cast<float>(spec.rope_theta));
  w.set_f32("llama.attention.layer_norm_rms_epsilon", spec.rms_eps);
  w.set_u32("llama.vocab_size", spec.vocab);
  export_report report;
  auto kept = stored_vocabulary(s);
  if (!kept)
    return kept.error();
  if (*kept && !(*kept)->empty()) {
    for (const auto& [key, v] : **kept)
      w.set(key, v);
    report.made_up_vocabulary = false;
  } else {
    made_up_vocabulary(w, spec.vocab);
  }
  // A tied head has no output.weight: llama.cpp then uses token_embd.
  for (auto id : model::stored_tensors(spec)) {
    auto shape = model::shape_of(spec, id.kind);
    auto type = model::dtype_of(spec, id.kind);
    ggml_type out = type == model::dtype::f16    ? ggml_type::f16
                    : type == model::dtype::bf16 ? ggml_type::bf16
                                                 : ggml_type::f32;
    bool q = quantize && !model::is_norm(id.kind);
    if (q)
      out = matrices;
    report.int8_as_f32 |= type == model::dtype::int8;
    std::vector<uint64_t> ne =
        model::is_norm(id.kind) ? std::vector<uint64_t>{shape.cols}
                                : std::vector<uint64_t>{shape.cols, shape.rows};
    w.add_tensor(gguf_tensor_name(id), ne, out,
                 [&ws, id, type, shape, q, out](
                     std::span<std::byte> dst) -> caf::error {
                   auto t = ws.read(id);
                   if (!t)
                     return t.error();
                   if (q) {
                     std::vector<float> row(shape.cols);
                     auto per_row = dst.size() / shape.rows;
                     for (uint32_t r = 0; r < shape.rows; ++r) {
                       t->to_f32(r, 0, shape.cols, row.data());
                       from_f32(out, row,
                                dst.subspan(size_t{r} * per_row, per_row));
                     }
                     return {};
                   }
                   if (type != model::dtype::int8) {
                     auto b = t->bytes();
                     std::memcpy(dst.data(), b.data(), b.size());
                     return {};
                   }
                   auto* f = reinterpret_cast<float*>(dst.data());
                   for (uint32_t r = 0; r < shape.rows; ++r)
                     t->to_f32(r, 0, shape.cols, f + size_t{r} * shape.cols);
                   return {};
                 });
    ++report.tensors;
  }
  if (auto err = w.write(path))
    return err;
  std::error_code ec;
  report.file_bytes = std::filesystem::file_size(path, ec);
  report.seconds = std::chrono::duration<double>(
                       std::chrono::steady_clock::now() - t0)
                       .count();
  return report;
}

} // namespace lockstep::storage::gguf
