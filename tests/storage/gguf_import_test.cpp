// Importing a llama GGUF into a weight store (storage/gguf_import.hpp).
// The files are written here from lockstep's own synthetic models, with
// llama.cpp's names and GGUF's dimension order spelt out again in this test
// (not taken from the importer): the import of tiny-8's weights must be
// tiny-8's store, tile for tile.

#include "model/generation.hpp"
#include "model/model_weights.hpp"
#include "model/reference_engine.hpp"
#include "model/weight_gen.hpp"
#include "storage/detail/tile_codec.hpp"
#include "storage/gguf_import.hpp"
#include "storage/gguf_writer.hpp"
#include "tests/storage/synthetic_gguf.hpp"
#include "tests/storage/temp_dir.hpp"
#include "tests/storage/weight_fixture.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <map>

namespace lockstep::storage::gguf {
namespace {

using model::tensor_kind;
using test::synthetic_llama;

class gguf_import : public ::testing::Test {
protected:
  // Writes `w`, opens and describes it.
  void load(const gguf_writer& w) {
    auto path = dir_ / "model.gguf";
    ASSERT_FALSE(w.write(path));
    auto f = gguf_file::open(path);
    ASSERT_TRUE(f) << render(f.error());
    file_.emplace(std::move(*f));
    auto m = describe_model(*file_);
    ASSERT_TRUE(m) << render(m.error());
    model_ = std::move(*m);
  }

  test::temp_dir dir_;
  std::optional<gguf_file> file_;
  gguf_model model_;
};

// Every tensor of two stores, equal bit for bit.
void expect_same_weights(const weight_store& a, const weight_store& b) {
  for (auto id : model::all_tensors(a.spec())) {
    auto x = a.read(id);
    auto y = b.read(id);
    ASSERT_TRUE(x && y) << model::to_string(id);
    EXPECT_TRUE(*x == *y) << model::to_string(id);
  }
}

TEST_F(gguf_import, tiny_8_imported_is_tiny_8_generated_f32_and_f16) {
  for (auto type : {model::dtype::f32, model::dtype::f16}) {
    auto spec = *model::find_preset("tiny-8");
    spec.weight_dtype = type;
    load(synthetic_llama(spec));
    auto want = import_spec(model_, std::nullopt);
    ASSERT_TRUE(want);
    EXPECT_EQ(*want, spec) << "the file's own dtype, the preset's shape";
    auto imported = test::open_store(dir_ / ("imported-" +
                                             std::string{model::to_string(type)}));
    auto report = import_model(*imported, *file_, model_, *want);
    ASSERT_TRUE(report) << render(report.error());
    EXPECT_EQ(report->tensors_written, model::all_tensors(spec).size());
    auto generated =
        test::open_store(dir_ / ("generated-" + std::string{model::to_string(type)}));
    ASSERT_TRUE(init_weights(*generated, spec, 7));
    auto a = weight_store::open(*imported);
    auto b = weight_store::open(*generated);
    ASSERT_TRUE(a && b);
    EXPECT_EQ(a->manifest().source, "gguf:model.gguf");
    EXPECT_EQ(a->seed(), 0u);
    expect_same_weights(*a, *b);
    // Tiles are the same bytes too: only the manifests differ.
    auto ta = test::content(*imported, {column::weights});
    auto tb = test::content(*generated, {column::weights});
    EXPECT_TRUE(ta == tb);
  }
}

TEST_F(gguf_import, f32_to_f16_rounds_as_weights_init_does) {
  auto spec = *model::find_preset("tiny-8"); // f32
  load(synthetic_llama(spec));
  auto want = import_spec(model_, model::dtype::f16);
  ASSERT_TRUE(want);
  auto imported = test::open_store(dir_ / "imported");
  ASSERT_TRUE(import_model(*imported, *file_, model_, *want));
  // weights init --dtype f16 generates f32 values and rounds them alike.
  auto generated = test::open_store(dir_ / "generated");
  ASSERT_TRUE(init_weights(*generated, *want, 7));
  expect_same_weights(*weight_store::open(*imported),
                      *weight_store::open(*generated));
}

// --dtype int8: each row quantized symmetrically with one scale (max |x| /
// 127, so some |q| is 127), every value within half a step of the file's;
// the store verifies (a row's tiles share the scale).
TEST_F(gguf_import, int8_quantizes_each_row_with_one_scale) {
  auto spec = *model::find_preset("tiny-8");
  load(synthetic_llama(spec));
  auto want = import_spec(model_, model::dtype::int8);
  ASSERT_TRUE(want);
  auto s = test::open_store(dir_ / "db");
  auto report = import_model(*s, *file_, model_, *want);
  ASSERT_TRUE(report) << render(report.error());
  auto ws = weight_store::open(*s);
  ASSERT_TRUE(ws);
  EXPECT_TRUE(ws->verify().value().ok());
  model::weight_generator gen{spec, 7}; // the file's f32 values
  for (auto kind : {tensor_kind::wq, tensor_kind::w_down}) {
    model::tensor_id id{1, kind};
    auto got = ws->read(id);
    ASSERT_TRUE(got);
    ASSERT_EQ(got->type(), model::dtype::int8);
    auto orig = gen.generate(id);
    auto shape = model::shape_of(spec, kind);
    std::vector<float> a(shape.cols), b(shape.cols);
    for (uint32_t r = 0; r < shape.rows; r += 31) {
      got->to_f32(r, 0, shape.cols, a.data());
      orig.to_f32(r, 0, shape.cols, b.data());
      float scale = got->scales()[r];
      int max_q = 0;
      const auto* q = reinterpret_cast<const int8_t*>(got->row(r).data());
      for (uint32_t c = 0; c < shape.cols; ++c) {
        EXPECT_LE(std::fabs(a[c] - b[c]), scale / 2 * 1.0001f)
            << model::to_string(id) << " " << r << "," << c;
        max_q = std::max(max_q, std::abs(int{q[c]}));
      }
      EXPECT_EQ(max_q, 127) << model::to_string(id) << " row " << r;
    }
  }
}

TEST_F(gguf_import, a_tied_head_is_the_embedding) {
  auto spec = *model::find_preset("tiny-8");
  load(synthetic_llama(spec, /*tied=*/true));
  ASSERT_TRUE(model_.tied_head);
  auto s = test::open_store(dir_ / "db");
  ASSERT_TRUE(import_model(*s, *file_, model_, model_.spec));
  auto ws = weight_store::open(*s);
  ASSERT_TRUE(ws);
  EXPECT_TRUE(ws->spec().tied_head);
  auto head = ws->read({model::global_layer, tensor_kind::lm_head});
  auto embd = ws->read({model::global_layer, tensor_kind::tok_embedding});
  ASSERT_TRUE(head && embd);
  EXPECT_TRUE(std::equal(head->bytes().begin(), head->bytes().end(),
                         embd->bytes().begin(), embd->bytes().end()));
  // Stored once: no lm_head tile, one tensor fewer listed.
  EXPECT_EQ(ws->list().size(), model::all_tensors(spec).size() - 1);
  size_t head_tiles = 0;
  EXPECT_FALSE(s->scan(column::weights, "",
                       [&](std::string_view key, std::string_view) {
                         auto k = detail::decode_key(key);
                         head_tiles += k && k->tensor.kind == tensor_kind::lm_head;
                         return true;
                       }));
  EXPECT_EQ(head_tiles, 0u);
  EXPECT_TRUE(ws->verify().value().ok());
  // The reference engine runs it (its head is the embedding, in memory
  // once) exactly as an untied model whose lm_head is a copy of it.
  auto tied = model::model_weights::load(
      ws->spec(), [&](model::tensor_id id) { return ws->read(id); });
  ASSERT_TRUE(tied) << render(tied.error());
  EXPECT_TRUE(tied->lm_head.bytes().empty());
  auto untied_spec = ws->spec();
  untied_spec.tied_head = false;
  auto untied = model::model_weights::load(
      untied_spec, [&](model::tensor_id id) { return ws->read(id); });
  ASSERT_TRUE(untied);
  model::reference_engine a{*tied, 1}, b{*untied, 1};
  std::vector<model::generation_request> req{{0, {1, 2, 3}, 6, {}, 0}};
  auto ra = model::generate(a, req);
  auto rb = model::generate(b, req);
  ASSERT_TRUE(ra && rb);
  EXPECT_EQ((*ra)[0].logits_sha256, (*rb)[0].logits_sha256);
  EXPECT_EQ((*ra)[0].tokens, (*rb)[0].tokens);
}

TEST_F(gguf_import, quantized_tensors_become_their_exact_f32_values) {
  // tiny-8 with token_embd in Q8_0 of known blocks: d = 0.5 and
  // qs[j] = j % 7 - 3 in every block.
  auto spec = *model::find_preset("tiny-8");
  uint64_t cols = spec.d_model, rows = spec.vocab;
  std::vector<std::byte> q(tensor_bytes({cols, rows}, ggml_type::q8_0));
  for (size_t b = 0; b < q.size() / 34; ++b) {
    uint16_t d = model::f32_to_f16_bits(0.5f);
    std::memcpy(q.data() + 34 * b, &d, 2);
    for (int j = 0; j < 32; ++j)
      q[34 * b + 2 + j] =
          static_cast<std::byte>(static_cast<int8_t>(j % 7 - 3));
  }
  load(synthetic_llama(spec, false, 7,
                       [&](const model::tensor_id& id, gguf_writer& w) {
                         if (id.kind != tensor_kind::tok_embedding)
                           return false;
                         w.add_tensor("token_embd.weight", {cols, rows},
                                      ggml_type::q8_0, q);
                         return true;
                       }));
  EXPECT_EQ(model_.spec.weight_dtype, model::dtype::f32); // mixed: f32
  auto s = test::open_store(dir_ / "db");
  ASSERT_TRUE(import_model(*s, *file_, model_, model_.spec));
  auto ws = weight_store::open(*s);
  auto embd = ws->read({model::global_layer, tensor_kind::tok_embedding});
  ASSERT_TRUE(embd);
  // Element (r, c) = (c % 32 % 7 - 3) * 0.5.
  for (uint32_t r : {0u, 1u, 1023u})
    for (uint32_t c : {0u, 3u, 31u, 32u, 255u}) {
      float v;
      embd->to_f32(r, c, 1, &v);
      EXPECT_EQ(v, float(int(c % 32 % 7) - 3) * 0.5f) << r << "," << c;
    }
}

TEST_F(gguf_import, resumes_refuses_others_and_verifies_against_its_file) {
  auto spec = *model::find_preset("tiny-8");
  load(synthetic_llama(spec));
  auto s = test::open_store(dir_ / "db");
  // Stopped after 5 tensors: incomplete; a second run finishes it.
  size_t seen = 0;
  auto first = import_model(*s, *file_, model_, model_.spec,
                            [&](const init_progress&) { return ++seen < 5; });
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error().code(), static_cast<uint8_t>(errc::incomplete));
  auto second = import_model(*s, *file_, model_, model_.spec);
  ASSERT_TRUE(second) << render(second.error());
  EXPECT_EQ(second->tensors_skipped, 5u);
  // The store holds an import: init_weights into it is refused.
  auto init = init_weights(*s, spec, 7);
  ASSERT_FALSE(init);
  EXPECT_EQ(init.error().code(), static_cast<uint8_t>(errc::mismatch));
  EXPECT_NE(render(init.error()).find("imported from gguf:model.gguf"),
            std::string::npos);
  auto ws = weight_store::open(*s);
  ASSERT_TRUE(ws);
  // Deep verification needs the file it came from.
  auto deep = ws->verify({.deep = true});
  ASSERT_FALSE(deep);
  EXPECT_EQ(deep.error().code(), static_cast<uint8_t>(errc::invalid_argument));
  auto source = source_of(*file_, model_, ws->spec());
  auto checked = ws->verify({.deep = true, .source = &source});
  ASSERT_TRUE(checked) << render(checked.error());
  EXPECT_TRUE(checked->ok());
  EXPECT_TRUE(ws->verify().value().ok());
  // Against another file (other weights, seed 8): the tiles differ.
  test::temp_dir other_dir;
  auto other_path = other_dir / "model.gguf";
  ASSERT_FALSE(synthetic_llama(spec, false, 8).write(other_path));
  auto other = gguf_file::open(other_path);
  ASSERT_TRUE(other);
  auto other_model = describe_model(*other);
  ASSERT_TRUE(other_model);
  auto other_source = source_of(*other, *other_model, ws->spec());
  auto mismatched = ws->verify({.deep = true, .source = &other_source});
  ASSERT_TRUE(mismatched) << render(mismatched.error());
  EXPECT_FALSE(mismatched->ok());
}

} // namespace
} // namespace lockstep::storage::gguf
