// A store as a llama GGUF (storage/gguf_export.hpp): what import reads back
// is the same store, tile for tile, for f32, f16 and bf16; int8 comes back
// as its exact f32 values; the file carries what llama.cpp's loader reads.

#include "storage/gguf_export.hpp"
#include "storage/gguf_import.hpp"
#include "tests/storage/synthetic_gguf.hpp"
#include "tests/storage/temp_dir.hpp"
#include "tests/storage/weight_fixture.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>

namespace lockstep::storage::gguf {
namespace {

// Exports a generated tiny-8 store of `type`, imports the file into another
// store; returns both (generated, imported) and the file.
struct round_trip {
  test::temp_dir dir;
  std::unique_ptr<store> generated, imported;
  std::filesystem::path file = dir / "tiny-8.gguf";
  export_report exported;

  explicit round_trip(model::dtype type) {
    auto spec = *model::find_preset("tiny-8");
    spec.weight_dtype = type;
    generated = test::open_store(dir / "generated");
    EXPECT_TRUE(init_weights(*generated, spec, 3));
    auto ws = weight_store::open(*generated);
    EXPECT_TRUE(ws);
    auto r = export_model(*generated, *ws, file);
    EXPECT_TRUE(r) << render(r.error());
    if (r)
      exported = *r;
    auto f = gguf_file::open(file);
    EXPECT_TRUE(f) << render(f.error());
    auto m = describe_model(*f);
    EXPECT_TRUE(m) << render(m.error());
    imported = test::open_store(dir / "imported");
    auto s = import_spec(*m, std::nullopt);
    EXPECT_TRUE(s);
    EXPECT_TRUE(import_model(*imported, *f, *m, *s));
  }
};

TEST(gguf_export, import_of_export_is_the_same_store_for_float_types) {
  for (auto type : {model::dtype::f32, model::dtype::f16, model::dtype::bf16}) {
    round_trip t{type};
    EXPECT_FALSE(t.exported.int8_as_f32);
    EXPECT_EQ(t.exported.tensors, model::all_tensors(
                                      *model::find_preset("tiny-8"))
                                      .size());
    auto a = weight_store::open(*t.generated);
    auto b = weight_store::open(*t.imported);
    ASSERT_TRUE(a && b);
    EXPECT_EQ(b->spec(), a->spec()) << model::to_string(type);
    EXPECT_TRUE(test::content(*t.generated, {column::weights}) ==
                test::content(*t.imported, {column::weights}))
        << model::to_string(type) << ": the tiles differ";
  }
}

TEST(gguf_export, int8_is_written_as_its_f32_values) {
  round_trip t{model::dtype::int8};
  EXPECT_TRUE(t.exported.int8_as_f32);
  auto a = weight_store::open(*t.generated);
  auto b = weight_store::open(*t.imported);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(b->spec().weight_dtype, model::dtype::f32);
  for (auto id : model::all_tensors(a->spec())) {
    auto x = a->read(id);
    auto y = b->read(id);
    ASSERT_TRUE(x && y);
    auto shape = model::shape_of(a->spec(), id.kind);
    std::vector<float> u(shape.cols), v(shape.cols);
    for (uint32_t r = 0; r < shape.rows; r += 97) {
      x->to_f32(r, 0, shape.cols, u.data());
      y->to_f32(r, 0, shape.cols, v.data());
      ASSERT_EQ(0, std::memcmp(u.data(), v.data(), u.size() * 4))
          << model::to_string(id) << " row " << r;
    }
  }
}

TEST(gguf_export, the_file_carries_what_llama_cpp_reads) {
  round_trip t{model::dtype::f16};
  auto f = gguf_file::open(t.file);
  ASSERT_TRUE(f);
  auto key = [&](const std::string& k) {
    const auto* v = f->find(k);
    EXPECT_NE(v, nullptr) << k;
    return v != nullptr ? *v : value{};
  };
  EXPECT_EQ(key("general.architecture").s, "llama");
  EXPECT_EQ(key("llama.rope.dimension_count").u, 64u);
  EXPECT_EQ(key("tokenizer.ggml.model").s, "llama");
  auto tokens = key("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.items.size(), 1024u);
  EXPECT_EQ(tokens.items[1].s, "<s>");
  EXPECT_EQ(tokens.items[3].s, "<0x00>");
  EXPECT_EQ(key("tokenizer.ggml.scores").items.size(), 1024u);
  auto types = key("tokenizer.ggml.token_type");
  ASSERT_EQ(types.items.size(), 1024u);
  EXPECT_EQ(types.items[0].i, 2); // unknown
  EXPECT_EQ(types.items[1].i, 3); // control
  EXPECT_EQ(types.items[3].i, 6); // byte
  EXPECT_EQ(types.items[500].i, 1);
  EXPECT_EQ(key("tokenizer.ggml.bos_token_id").u, 1u);
  EXPECT_EQ(key("tokenizer.ggml.eos_token_id").u, 2u);
  EXPECT_EQ(f->tensor("blk.0.attn_q.weight")->type, ggml_type::f16);
  EXPECT_EQ(f->tensor("blk.0.attn_norm.weight")->type, ggml_type::f32);
  EXPECT_EQ(f->tensor("output.weight")->ne,
            (std::vector<uint64_t>{256, 1024}));
}

// An imported vocabulary is kept in the store and written back, every key
// with its type and value.
TEST(gguf_export, an_imported_vocabulary_survives_the_round_trip) {
  test::temp_dir dir;
  auto spec = *model::find_preset("tiny-8");
  auto w = test::synthetic_llama(spec);
  std::vector<std::string> tokens;
  value scores, types;
  scores.type = types.type = value_type::array;
  scores.element = value_type::f32;
  types.element = value_type::i32;
  for (uint32_t i = 0; i < spec.vocab; ++i) {
    tokens.push_back(i == 5 ? "\xC3\xA9t\xC3\xA9" : "tok" + std::to_string(i));
    value sc, ty;
    sc.type = value_type::f32;
    sc.f = -0.25 * i;
    ty.type = value_type::i32;
    ty.i = i < 3 ? 3 : 1;
    scores.items.push_back(sc);
    types.items.push_back(ty);
  }
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_string("tokenizer.ggml.pre", "llama-bpe");
  w.set_strings("tokenizer.ggml.tokens", tokens);
  w.set("tokenizer.ggml.scores", scores);
  w.set("tokenizer.ggml.token_type", types);
  w.set_strings("tokenizer.ggml.merges", {"t o", "to k"});
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  value yes;
  yes.type = value_type::boolean;
  yes.u = 1;
  w.set("tokenizer.ggml.add_bos_token", yes);
  w.set_string("tokenizer.chat_template", "{{ messages }}");
  auto in = dir / "in.gguf";
  ASSERT_FALSE(w.write(in));
  auto f = gguf_file::open(in);
  ASSERT_TRUE(f);
  auto m = describe_model(*f);
  ASSERT_TRUE(m) << render(m.error());
  auto s = test::open_store(dir / "db");
  ASSERT_TRUE(import_model(*s, *f, *m, m->spec));
  auto ws = weight_store::open(*s);
  ASSERT_TRUE(ws);
  auto out = dir / "out.gguf";
  auto r = export_model(*s, *ws, out);
  ASSERT_TRUE(r) << render(r.error());
  EXPECT_FALSE(r->made_up_vocabulary);
  auto g = gguf_file::open(out);
  ASSERT_TRUE(g);
  size_t keys = 0;
  std::function<void(const value&, const value&, const std::string&)> same =
      [&](const value& a, const value& b, const std::string& where) {
        ASSERT_EQ(a.type, b.type) << where;
        EXPECT_EQ(a.u, b.u) << where;
        EXPECT_EQ(a.i, b.i) << where;
        EXPECT_EQ(a.f, b.f) << where;
        EXPECT_EQ(a.s, b.s) << where;
        ASSERT_EQ(a.items.size(), b.items.size()) << where;
        for (size_t i = 0; i < a.items.size(); ++i)
          same(a.items[i], b.items[i], where + "[" + std::to_string(i) + "]");
      };
  for (const auto& [key, v] : f->metadata()) {
    if (key.rfind("tokenizer.", 0) != 0)
      continue;
    ++keys;
    const auto* back = g->find(key);
    ASSERT_NE(back, nullptr) << key;
    same(v, *back, key);
  }
  EXPECT_EQ(keys, 9u);
}

// A tied store exports without output.weight (llama.cpp's tied form) and
// imports back tied, the same tiles.
TEST(gguf_export, a_tied_head_exports_as_llama_cpp_ties_it) {
  test::temp_dir dir;
  auto spec = *model::find_preset("tiny-8");
  ASSERT_FALSE(test::synthetic_llama(spec, /*tied=*/true).write(dir / "in.gguf"));
  auto f = gguf_file::open(dir / "in.gguf");
  ASSERT_TRUE(f);
  auto m = describe_model(*f);
  ASSERT_TRUE(m);
  auto s = test::open_store(dir / "a");
  ASSERT_TRUE(import_model(*s, *f, *m, m->spec));
  auto ws = weight_store::open(*s);
  ASSERT_TRUE(ws);
  ASSERT_TRUE(export_model(*s, *ws, dir / "out.gguf"));
  auto g = gguf_file::open(dir / "out.gguf");
  ASSERT_TRUE(g);
  EXPECT_EQ(g->tensor("output.weight"), nullptr);
  EXPECT_NE(g->tensor("token_embd.weight"), nullptr);
  auto m2 = describe_model(*g);
  ASSERT_TRUE(m2);
  EXPECT_TRUE(m2->spec.tied_head);
  auto s2 = test::open_store(dir / "b");
  ASSERT_TRUE(import_model(*s2, *g, *m2, m2->spec));
  EXPECT_TRUE(test::content(*s, {column::weights}) ==
              test::content(*s2, {column::weights}));
}

// --quantize: the matrices as ggml's reference quantizers write them; the
// import reads back the blocks' exact values, each within half a step of
// the store's (Q8_0: d = max|x| / 127; Q4_0: d = max / -8, so |error| <= |d|).
TEST(gguf_export, quantized_exports_stay_within_a_step) {
  for (auto type : {ggml_type::q8_0, ggml_type::q4_0}) {
    test::temp_dir dir;
    auto spec = *model::find_preset("tiny-8");
    auto s = test::open_store(dir / "a");
    ASSERT_TRUE(init_weights(*s, spec, 3));
    auto ws = weight_store::open(*s);
    ASSERT_TRUE(ws);
    ASSERT_TRUE(export_model(*s, *ws, dir / "q.gguf", type));
    auto f = gguf_file::open(dir / "q.gguf");
    ASSERT_TRUE(f);
    EXPECT_EQ(f->tensor("blk.0.attn_q.weight")->type, type);
    EXPECT_EQ(f->tensor("blk.0.attn_norm.weight")->type, ggml_type::f32);
    auto m = describe_model(*f);
    ASSERT_TRUE(m);
    auto s2 = test::open_store(dir / "b");
    ASSERT_TRUE(import_model(*s2, *f, *m, m->spec));
    auto back = weight_store::open(*s2);
    model::tensor_id id{0, model::tensor_kind::wq};
    auto a = ws->read(id), b = back->read(id);
    ASSERT_TRUE(a && b);
    std::vector<float> x(spec.d_model), y(spec.d_model);
    a->to_f32(5, 0, spec.d_model, x.data());
    b->to_f32(5, 0, spec.d_model, y.data());
    for (uint32_t c = 0; c < spec.d_model; c += 32) {
      float amax = 0;
      for (uint32_t j = c; j < c + 32; ++j)
        amax = std::max(amax, std::fabs(x[j]));
      float step = type == ggml_type::q8_0 ? amax / 127 : amax / 8;
      for (uint32_t j = c; j < c + 32; ++j)
        EXPECT_LE(std::fabs(x[j] - y[j]), step * 1.01f)
            << (type == ggml_type::q8_0 ? "Q8_0" : "Q4_0") << " col " << j;
    }
  }
}

TEST(gguf_export, a_partial_store_is_refused) {
  test::temp_dir dir;
  auto s = test::open_store(dir / "db");
  auto spec = *model::find_preset("tiny-8");
  ASSERT_TRUE(init_weight_shards(
      *s, spec, 3,
      {{{0, model::tensor_kind::wq}, {0, 64, 0, 256}}}));
  auto ws = weight_store::open(*s);
  ASSERT_TRUE(ws);
  auto r = export_model(*s, *ws, dir / "x.gguf");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), static_cast<uint8_t>(errc::invalid_argument));
  EXPECT_FALSE(std::filesystem::exists(dir / "x.gguf"));
}

} // namespace
} // namespace lockstep::storage::gguf
