// A llama GGUF described as a lockstep model (storage/gguf_model.hpp): the
// shape comes from the metadata and every tensor is checked against it;
// files lockstep cannot run faithfully are refused naming why.

#include "storage/gguf_model.hpp"
#include "storage/gguf_writer.hpp"
#include "tests/storage/temp_dir.hpp"

#include <gtest/gtest.h>

namespace lockstep::storage::gguf {
namespace {

// tiny-8's shape: 4 layers, d_model 256, 4 heads (2 kv, head_dim 64),
// d_ff 768, vocab 1024, context 512.
struct llama_file {
  uint32_t layers = 4, width = 256, heads = 4, kv_heads = 2, ff = 768,
           vocab = 1024, context = 512;
  ggml_type matrices = ggml_type::f16;
  bool tied = false;
  bool with_tokens = true;

  gguf_writer writer() const {
    gguf_writer w;
    w.set_string("general.architecture", "llama");
    w.set_string("general.name", "tiny-gguf");
    w.set_u32("llama.block_count", layers);
    w.set_u32("llama.embedding_length", width);
    w.set_u32("llama.feed_forward_length", ff);
    w.set_u32("llama.attention.head_count", heads);
    w.set_u32("llama.attention.head_count_kv", kv_heads);
    w.set_u32("llama.context_length", context);
    w.set_f32("llama.rope.freq_base", 500000.0f);
    w.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-6f);
    if (with_tokens) {
      std::vector<std::string> tokens;
      for (uint32_t i = 0; i < vocab; ++i)
        tokens.push_back("t" + std::to_string(i));
      w.set_strings("tokenizer.ggml.tokens", tokens);
    }
    uint32_t hd = width / heads;
    auto add = [&](const std::string& name, std::vector<uint64_t> ne,
                   ggml_type type) {
      w.add_tensor(name, ne, type,
                   std::vector<std::byte>(tensor_bytes(ne, type)));
    };
    add("token_embd.weight", {width, vocab}, matrices);
    for (uint32_t l = 0; l < layers; ++l) {
      auto blk = "blk." + std::to_string(l) + ".";
      add(blk + "attn_norm.weight", {width}, ggml_type::f32);
      add(blk + "attn_q.weight", {width, heads * hd}, matrices);
      add(blk + "attn_k.weight", {width, kv_heads * hd}, matrices);
      add(blk + "attn_v.weight", {width, kv_heads * hd}, matrices);
      add(blk + "attn_output.weight", {heads * hd, width}, matrices);
      add(blk + "ffn_norm.weight", {width}, ggml_type::f32);
      add(blk + "ffn_gate.weight", {width, ff}, matrices);
      add(blk + "ffn_up.weight", {width, ff}, matrices);
      add(blk + "ffn_down.weight", {ff, width}, matrices);
    }
    add("output_norm.weight", {width}, ggml_type::f32);
    if (!tied)
      add("output.weight", {width, vocab}, matrices);
    return w;
  }
};

class gguf_model_test : public ::testing::Test {
protected:
  caf::expected<gguf_model> describe(const gguf_writer& w) {
    auto path = dir_ / "model.gguf";
    if (auto err = w.write(path))
      return err;
    auto f = gguf_file::open(path);
    if (!f)
      return f.error();
    file_.emplace(std::move(*f));
    return describe_model(*file_);
  }

  // The error's text, expecting invalid_file.
  std::string refusal(const gguf_writer& w) {
    auto m = describe(w);
    EXPECT_FALSE(m);
    if (m)
      return "";
    EXPECT_EQ(m.error().code(), static_cast<uint8_t>(errc::invalid_file));
    return render(m.error());
  }

  test::temp_dir dir_;
  std::optional<gguf_file> file_;
};

TEST_F(gguf_model_test, the_shape_comes_from_the_metadata) {
  llama_file l;
  auto m = describe(l.writer());
  ASSERT_TRUE(m) << render(m.error());
  const auto& s = m->spec;
  EXPECT_EQ(s.name, "tiny-gguf");
  EXPECT_EQ(s.n_layers, 4u);
  EXPECT_EQ(s.d_model, 256u);
  EXPECT_EQ(s.n_heads, 4u);
  EXPECT_EQ(s.n_kv_heads, 2u);
  EXPECT_EQ(s.head_dim, 64u);
  EXPECT_EQ(s.d_ff, 768u);
  EXPECT_EQ(s.vocab, 1024u);
  EXPECT_EQ(s.max_context, 512u);
  EXPECT_EQ(s.rope_theta, 500000.0);
  EXPECT_EQ(s.rms_eps, 1e-6f);
  EXPECT_EQ(s.weight_dtype, model::dtype::f16);
  EXPECT_FALSE(m->tied_head);
  EXPECT_EQ(m->vocabulary_tokens, 1024u);
  EXPECT_TRUE(m->unused.empty());
  // Every tensor of the spec, in canonical order, each the file's own.
  auto ids = model::all_tensors(s);
  ASSERT_EQ(m->tensors.size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(m->tensors[i].id, ids[i]);
    auto shape = model::shape_of(s, ids[i].kind);
    EXPECT_EQ(m->tensors[i].tensor->elements(), shape.elements())
        << model::to_string(ids[i]);
  }
  EXPECT_EQ(m->tensors[2].tensor->name, "blk.0.attn_q.weight");
  EXPECT_EQ(m->types.at("F16"), 4u * 7 + 2);
  EXPECT_EQ(m->types.at("F32"), 4u * 2 + 1);
}

TEST_F(gguf_model_test, a_file_without_output_ties_the_head_to_the_embedding) {
  llama_file l;
  l.tied = true;
  auto m = describe(l.writer());
  ASSERT_TRUE(m) << render(m.error());
  EXPECT_TRUE(m->tied_head);
  EXPECT_TRUE(m->spec.tied_head);
  EXPECT_EQ(m->tensors.back().id.kind, model::tensor_kind::lm_head);
  EXPECT_EQ(m->tensors.back().tensor->name, "token_embd.weight");
}

TEST_F(gguf_model_test, quantized_or_mixed_matrices_import_as_f32) {
  llama_file l;
  l.matrices = ggml_type::q8_0;
  auto m = describe(l.writer());
  ASSERT_TRUE(m) << render(m.error());
  EXPECT_EQ(m->spec.weight_dtype, model::dtype::f32);
  EXPECT_EQ(m->types.at("Q8_0"), 4u * 7 + 2);
}

TEST_F(gguf_model_test, files_lockstep_cannot_run_are_refused_naming_why) {
  {
    llama_file l;
    auto w = l.writer();
    w.set_string("general.architecture", "falcon");
    EXPECT_NE(refusal(w).find("architecture 'falcon'"), std::string::npos);
  }
  {
    llama_file l;
    auto w = l.writer();
    // d_model 288 (heads of 64 still): not whole 64-element blocks.
    w.set_u32("llama.embedding_length", 288);
    w.set_u32("llama.attention.key_length", 64);
    auto why = refusal(w);
    EXPECT_NE(why.find("llama.embedding_length = 288 is not a multiple"),
              std::string::npos)
        << why;
  }
  {
    // d_ff 800: not whole 64-element blocks, named.
    llama_file l;
    l.ff = 800;
    auto why = refusal(l.writer());
    EXPECT_NE(why.find("llama.feed_forward_length = 800"), std::string::npos)
        << why;
  }
  {
    // The token list disagrees with token_embd.
    llama_file l;
    auto w = l.writer();
    w.set_strings("tokenizer.ggml.tokens", {"a", "b"});
    auto why = refusal(w);
    EXPECT_NE(why.find("tokenizer.ggml.tokens has 2 tokens"),
              std::string::npos)
        << why;
  }
  {
    llama_file l;
    auto w = l.writer();
    w.set_u32("llama.vocab_size", 1000);
    EXPECT_NE(refusal(w).find("llama.vocab_size 1000"), std::string::npos);
  }
  {
    llama_file l;
    auto w = l.writer();
    w.set_string("llama.rope.scaling.type", "linear");
    EXPECT_NE(refusal(w).find("RoPE scaling"), std::string::npos);
  }
  {
    // A tensor of a type lockstep does not convert, named with its type.
    llama_file l;
    l.matrices = ggml_type::q5_k;
    auto why = refusal(l.writer());
    EXPECT_NE(why.find("of type Q5_K"), std::string::npos) << why;
  }
  {
    llama_file l;
    auto w = l.writer();
    w.set_string("llama.block_count", "four");
    EXPECT_NE(refusal(w).find("'llama.block_count' is a string"),
              std::string::npos);
  }
  {
    // 5 layers in the metadata, 4 in the file: blk.4 is missing.
    llama_file l;
    auto w = l.writer();
    w.set_u32("llama.block_count", 5);
    EXPECT_NE(refusal(w).find("'blk.4.attn_norm.weight' is missing"),
              std::string::npos);
  }
}

} // namespace
} // namespace lockstep::storage::gguf
