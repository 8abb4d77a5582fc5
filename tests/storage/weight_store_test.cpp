// The weight store on a real RocksDB: round trips of whole tensors and shards
// against the generator, corruption detection on read and by verify,
// interrupted and resumed init (also a real crash), model checks.

#include "storage/weight_store.hpp"

#include "model/weight_gen.hpp"
#include "storage/detail/meta_keys.hpp"
#include "storage/detail/tile_codec.hpp"
#include "tests/storage/temp_dir.hpp"
#include "tests/storage/weight_fixture.hpp"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

namespace lockstep::storage {
namespace {

using model::dtype;
using model::shard_range;
using model::tensor_id;
using model::tensor_kind;
using test::content;
using test::odd_spec;
using test::open_store;
using test::store_content;
using test::temp_dir;
using test::tile_key;

const tensor_id wq0{0, tensor_kind::wq};
const tensor_id embedding{model::global_layer, tensor_kind::tok_embedding};

class weight_store_types : public ::testing::TestWithParam<dtype> {};

TEST_P(weight_store_types, whole_tensors_and_shards_equal_the_generator) {
  temp_dir tmp;
  auto spec = odd_spec(GetParam());
  auto s = open_store(tmp / "db");
  ASSERT_TRUE(s);
  auto report = init_weights(*s, spec, 42);
  ASSERT_TRUE(report) << render(report.error());
  auto ids = model::all_tensors(spec);
  EXPECT_EQ(report->tensors_written, ids.size());
  auto ws = weight_store::open(*s);
  ASSERT_TRUE(ws) << render(ws.error());
  EXPECT_EQ(ws->spec(), spec);
  EXPECT_EQ(ws->seed(), 42u);
  EXPECT_FALSE(ws->check_model(odd_spec(dtype::int8))); // dtype may differ
  model::weight_generator gen{spec, 42};
  for (auto id : ids) {
    auto shape = model::shape_of(spec, id.kind);
    auto whole = ws->read(id);
    ASSERT_TRUE(whole) << render(whole.error());
    EXPECT_TRUE(*whole == gen.generate(id)) << model::to_string(id);
    // Row splits at uneven points (inside tiles), column splits on block
    // boundaries (reduction blocks), and both at once.
    std::vector<shard_range> shards;
    uint32_t r1 = std::max(1u, shape.rows / 3 + 5);
    uint32_t r1c = std::min(r1, shape.rows);
    shards.push_back({0, r1c, 0, shape.cols});
    if (r1c < shape.rows)
      shards.push_back({r1c, shape.rows, 0, shape.cols});
    for (uint32_t c = 0; c < shape.cols; c += 64)
      shards.push_back({0, shape.rows, c, std::min(c + 64, shape.cols)});
    if (shape.cols > 64)
      shards.push_back({shape.rows / 2, shape.rows, 64, shape.cols});
    for (const auto& r : shards) {
      auto got = ws->read(id, r);
      ASSERT_TRUE(got) << render(got.error());
      auto want = gen.generate(id, r);
      ASSERT_TRUE(want);
      EXPECT_TRUE(*got == *want)
          << model::to_string(id) << " rows [" << r.row_begin << ","
          << r.row_end << ") cols [" << r.col_begin << "," << r.col_end << ")";
    }
  }
  auto v = ws->verify();
  ASSERT_TRUE(v) << render(v.error());
  EXPECT_TRUE(v->ok()) << v->problems.front().to_string();
  EXPECT_EQ(v->tensors_checked, ids.size());
}

INSTANTIATE_TEST_SUITE_P(dtypes, weight_store_types,
                         ::testing::Values(dtype::f32, dtype::f16, dtype::bf16,
                                           dtype::int8),
                         [](const auto& info) {
                           return std::string{model::to_string(info.param)};
                         });

TEST(weight_store, other_tile_shapes_round_trip_and_are_recorded) {
  temp_dir tmp;
  auto spec = odd_spec(dtype::int8);
  auto s = open_store(tmp / "db");
  ASSERT_TRUE(s);
  init_options opt;
  opt.tile = {24, 128}; // tiles two blocks wide: a block shard cuts a tile
  ASSERT_TRUE(init_weights(*s, spec, 3, {}, opt));
  auto ws = weight_store::open(*s);
  ASSERT_TRUE(ws);
  EXPECT_EQ(ws->tile(), (tile_shape{24, 128}));
  model::weight_generator gen{spec, 3};
  shard_range r{5, 77, 64, 192};
  auto got = ws->read(wq0, r);
  ASSERT_TRUE(got) << render(got.error());
  EXPECT_TRUE(*got == *gen.generate(wq0, r));
  auto list = ws->list();
  ASSERT_EQ(list.size(), model::all_tensors(spec).size());
  EXPECT_EQ(list.front().id, embedding);
  EXPECT_EQ(list.front().row_tiles, 42u); // ceil(1000 / 24)
  EXPECT_EQ(list.front().col_tiles, 2u);  // ceil(192 / 128)
  EXPECT_EQ(list.front().bytes, 1000u * 192 + 1000u * 4);
  // Tile columns must be whole reduction blocks.
  temp_dir tmp2;
  auto s2 = open_store(tmp2 / "db");
  opt.tile = {64, 96};
  auto bad = init_weights(*s2, spec, 3, {}, opt);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error(), errc::invalid_argument);
}

TEST(weight_store, bad_reads_are_clear_errors) {
  temp_dir tmp;
  auto spec = odd_spec();
  auto s = open_store(tmp / "db");
  ASSERT_TRUE(init_weights(*s, spec, 1));
  auto ws = weight_store::open(*s);
  ASSERT_TRUE(ws);
  auto off = ws->read({7, tensor_kind::wq});
  ASSERT_FALSE(off);
  EXPECT_EQ(off.error(), errc::invalid_argument);
  EXPECT_NE(render(off.error()).find("l7.wq"), std::string::npos);
  auto unaligned = ws->read(wq0, {0, 10, 3, 64});
  ASSERT_FALSE(unaligned);
  EXPECT_EQ(unaligned.error(), model::errc::invalid_shard);
  auto other = ws->check_model(*model::find_preset("tiny-8"));
  EXPECT_EQ(other, errc::mismatch);
  EXPECT_NE(render(other).find("test-odd"), std::string::npos);
  auto wider = spec;
  wider.d_ff = 384;
  auto err = ws->check_model(wider);
  EXPECT_EQ(err, errc::mismatch);
  EXPECT_NE(render(err).find("d_ff"), std::string::npos) << render(err);
}

TEST(weight_store, corruption_is_detected_on_read_and_by_verify) {
  temp_dir tmp;
  auto dir = tmp / "db";
  auto spec = odd_spec(dtype::int8);
  tensor_id w_up1{1, tensor_kind::w_up};
  tensor_id wk1{1, tensor_kind::wk};
  tensor_id wo0{0, tensor_kind::wo};
  {
    auto s = open_store(dir);
    ASSERT_TRUE(init_weights(*s, spec, 9));
    // 1. Flip one byte in the data of l0.wq tile (1,2).
    auto v = s->get(column::weights, tile_key(wq0, 1, 2));
    ASSERT_TRUE(v && *v);
    auto bad = **v;
    bad[100] ^= 0x01;
    ASSERT_FALSE(s->put(column::weights, tile_key(wq0, 1, 2), bad));
    // 2. Delete l1.w_up tile (3,0).
    ASSERT_FALSE(s->erase(column::weights, tile_key(w_up1, 3, 0)));
    // 3. Put l1.wk tile (0,0)'s (valid) value under tile (0,1).
    auto other = s->get(column::weights, tile_key(wk1, 0, 0));
    ASSERT_TRUE(other && *other);
    ASSERT_FALSE(s->put(column::weights, tile_key(wk1, 0, 1), **other));
    // 4. Truncate l0.wo tile (2,2).
    ASSERT_FALSE(s->put(column::weights, tile_key(wo0, 2, 2), "short"));
  }
  auto s = open_store(dir, true);
  ASSERT_TRUE(s);
  auto before = content(*s);
  auto ws = weight_store::open(*s);
  ASSERT_TRUE(ws) << render(ws.error());

  auto got = ws->read(wq0);
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error(), errc::corrupt);
  EXPECT_EQ(lockstep::kind_of(got.error()), error_kind::failed);
  auto text = render(got.error());
  EXPECT_NE(text.find("tensor l0.wq tile (1,2): checksum mismatch"),
            std::string::npos)
      << text;
  // A shard that does not touch the bad tile reads fine: rows of row tile 0
  // only, and the column blocks of column tiles 0..1 only.
  model::weight_generator gen{spec, 9};
  shard_range top{0, 64, 0, spec.d_model};
  shard_range left{0, spec.q_dim(), 0, 128};
  for (auto r : {top, left}) {
    auto part = ws->read(wq0, r);
    ASSERT_TRUE(part) << render(part.error());
    EXPECT_TRUE(*part == *gen.generate(wq0, r));
  }
  EXPECT_FALSE(ws->read(wq0, {64, 65, 128, 192})); // just the bad tile
  auto missing = ws->read(w_up1);
  ASSERT_FALSE(missing);
  EXPECT_NE(render(missing.error()).find("l1.w_up tile (3,0): missing"),
            std::string::npos)
      << render(missing.error());
  auto moved = ws->read(wk1);
  ASSERT_FALSE(moved);
  EXPECT_NE(render(moved.error()).find("value belongs to l1.wk tile (0,0)"),
            std::string::npos)
      << render(moved.error());
  EXPECT_FALSE(ws->read(wo0));
  // Every other tensor is intact.
  for (auto id : model::all_tensors(spec)) {
    if (id == wq0 || id == w_up1 || id == wk1 || id == wo0)
      continue;
    auto t = ws->read(id);
    ASSERT_TRUE(t) << render(t.error());
    EXPECT_TRUE(*t == gen.generate(id));
  }

  auto report = ws->verify();
  ASSERT_TRUE(report) << render(report.error());
  std::vector<std::string> problems;
  for (const auto& p : report->problems)
    problems.push_back(p.to_string());
  EXPECT_EQ(problems,
            (std::vector<std::string>{
                "l0.wq tile (1,2): checksum mismatch",
                "l0.wo tile (2,2): value of 5 bytes is shorter than a tile "
                "header",
                "l1.wk tile (0,1): value belongs to l1.wk tile (0,0)",
                "l1.w_up tile (3,0): missing",
            }));
  EXPECT_EQ(report->tensors_checked, model::all_tensors(spec).size());
  // Nothing was changed by reading and verifying.
  EXPECT_EQ(content(*s), before);
}

TEST(weight_store, verify_finds_foreign_tiles_and_inconsistent_scales) {
  temp_dir tmp;
  auto dir = tmp / "db";
  auto spec = odd_spec(dtype::int8);
  {
    auto s = open_store(dir);
    ASSERT_TRUE(init_weights(*s, spec, 9));
    // A tile of layer 5, which a 2-layer model does not have, and a tile
    // beyond wq's grid.
    auto v = s->get(column::weights, tile_key(wq0, 0, 0));
    ASSERT_TRUE(v && *v);
    ASSERT_FALSE(
        s->put(column::weights, tile_key({5, tensor_kind::wq}, 0, 0), **v));
    ASSERT_FALSE(s->put(column::weights, tile_key(wq0, 0, 9), **v));
    // Re-encode l0.wq tile (0,1) with different (validly checksummed) row
    // scales: data and checksum fine, but the row's tiles disagree.
    model::weight_generator gen{spec, 9};
    auto stripe = gen.generate(wq0, {0, 64, 0, spec.d_model});
    ASSERT_TRUE(stripe);
    stripe->scales()[3] *= 2;
    std::string value;
    detail::encode_tile({wq0, 0, 1}, *stripe, 0, 64, 64, 64, value);
    ASSERT_FALSE(s->put(column::weights, tile_key(wq0, 0, 1), value));
    // A key that is not a tile key at all.
    ASSERT_FALSE(s->put(column::weights, "junk", "x"));
  }
  auto s = open_store(dir, true);
  auto report = verify_weights(*s, {.deep = true});
  ASSERT_TRUE(report) << render(report.error());
  std::vector<std::string> problems;
  for (const auto& p : report->problems)
    problems.push_back(p.to_string());
  EXPECT_EQ(problems,
            (std::vector<std::string>{
                "l0.wq tile (0,1): int8 row scales differ from the row's "
                "other tiles",
                "l0.wq tile (0,9): tile outside the tensor's 3x3 tiles",
                "l5.wq tile (0,0): tile of a tensor model test-odd does not "
                "have",
                "key 0x6a756e6b: undecodable key: key of 4 bytes (tile keys "
                "have 11)",
            }));
}

TEST(weight_store, deep_verify_finds_validly_checksummed_foreign_data) {
  temp_dir tmp;
  auto dir = tmp / "db";
  auto spec = odd_spec(dtype::f16);
  {
    auto s = open_store(dir);
    ASSERT_TRUE(init_weights(*s, spec, 9));
    // l1.w_down tile (2,4) re-encoded from seed 10's weights: a well-formed
    // tile with a good checksum, but not this store's weights.
    tensor_id w_down1{1, tensor_kind::w_down};
    model::weight_generator other{spec, 10};
    auto stripe = other.generate(w_down1, {128, 192, 0, spec.d_ff});
    ASSERT_TRUE(stripe);
    std::string value;
    detail::encode_tile({w_down1, 2, 4}, *stripe, 128, 256, 64, 64, value);
    ASSERT_FALSE(s->put(column::weights, tile_key(w_down1, 2, 4), value));
  }
  auto s = open_store(dir, true);
  auto shallow = verify_weights(*s);
  ASSERT_TRUE(shallow);
  EXPECT_TRUE(shallow->ok());
  auto deep = verify_weights(*s, {.deep = true});
  ASSERT_TRUE(deep);
  ASSERT_EQ(deep->problems.size(), 1u);
  EXPECT_EQ(deep->problems[0].to_string(),
            "l1.w_down tile (2,4): differs from the generator's weights (seed "
            "9)");
}

TEST(weight_store, interrupted_init_is_detected_and_resumes_to_the_same_store) {
  temp_dir tmp;
  auto spec = odd_spec(dtype::bf16);
  auto ids = model::all_tensors(spec);
  // Reference: one uninterrupted run.
  store_content reference;
  {
    auto s = open_store(tmp / "ref");
    ASSERT_TRUE(init_weights(*s, spec, 5));
    reference = content(*s);
  }
  auto dir = tmp / "db";
  {
    auto s = open_store(dir);
    size_t calls = 0;
    auto r = init_weights(*s, spec, 5, [&](const init_progress& p) {
      EXPECT_EQ(p.tensors_done, ++calls);
      EXPECT_EQ(p.tensor, ids[calls - 1]);
      EXPECT_EQ(p.bytes_total, spec.weight_bytes());
      return calls < 7;
    });
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), errc::incomplete);
    EXPECT_NE(render(r.error()).find("after 7 of " +
                                     std::to_string(ids.size()) + " tensors"),
              std::string::npos)
        << render(r.error());
  }
  {
    auto s = open_store(dir, true);
    auto ws = weight_store::open(*s);
    ASSERT_FALSE(ws);
    EXPECT_EQ(ws.error(), errc::incomplete);
    EXPECT_NE(render(ws.error())
                  .find("7 of " + std::to_string(ids.size()) + " tensors done"),
              std::string::npos)
        << render(ws.error());
    EXPECT_NE(render(ws.error()).find("run weights init again to resume"),
              std::string::npos);
    auto v = verify_weights(*s);
    ASSERT_TRUE(v);
    ASSERT_EQ(v->problems.size(), 1u);
    EXPECT_EQ(v->problems[0].tensor, "test-odd");
    EXPECT_EQ(v->tensors_checked, 7u); // the done ones, tile by tile
  }
  {
    auto s = open_store(dir);
    // Another seed or dtype is refused and changes nothing.
    auto other = init_weights(*s, spec, 6);
    ASSERT_FALSE(other);
    EXPECT_EQ(other.error(), errc::mismatch);
    EXPECT_FALSE(init_weights(*s, odd_spec(dtype::f16), 5));
    std::vector<bool> skipped;
    auto r = init_weights(*s, spec, 5, [&](const init_progress& p) {
      skipped.push_back(p.skipped);
      return true;
    });
    ASSERT_TRUE(r) << render(r.error());
    EXPECT_EQ(r->tensors_skipped, 7u);
    EXPECT_EQ(r->tensors_written, ids.size() - 7);
    ASSERT_EQ(skipped.size(), ids.size());
    for (size_t i = 0; i < ids.size(); ++i)
      EXPECT_EQ(skipped[i], i < 7) << i;
    EXPECT_EQ(content(*s), reference);
    // A third run on the complete store writes nothing.
    auto again = init_weights(*s, spec, 5);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->tensors_written, 0u);
    EXPECT_EQ(content(*s), reference);
  }
}

TEST(weight_store, init_killed_mid_way_is_detected_and_resumes) {
  // A real crash: a child process writes part of the weights and dies with
  // _exit (no flush, no close), losing whatever was only in memtables.
  temp_dir tmp;
  auto spec = odd_spec();
  auto dir = tmp / "db";
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    open_options o;
    o.create_if_missing = true;
    auto s = store::open(dir, o);
    if (!s)
      ::_exit(2);
    size_t n = 0;
    init_weights(**s, spec, 11, [&](const init_progress&) {
      if (++n == 10)
        ::_exit(0);
      return true;
    });
    ::_exit(3);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  auto s = open_store(dir);
  ASSERT_TRUE(s);
  auto ws = weight_store::open(*s);
  ASSERT_FALSE(ws);
  EXPECT_EQ(ws.error(), errc::incomplete) << render(ws.error());
  // What survived the crash is consistent: every tensor marked done has all
  // its tiles; the only problem is the incomplete init.
  auto before = verify_weights(*s);
  ASSERT_TRUE(before);
  ASSERT_EQ(before->problems.size(), 1u);
  EXPECT_NE(before->problems[0].what.find("incomplete"), std::string::npos);
  auto r = init_weights(*s, spec, 11);
  ASSERT_TRUE(r) << render(r.error());
  ws = weight_store::open(*s);
  ASSERT_TRUE(ws) << render(ws.error());
  auto v = ws->verify();
  ASSERT_TRUE(v);
  EXPECT_TRUE(v->ok());
  model::weight_generator gen{spec, 11};
  for (auto id : model::all_tensors(spec)) {
    auto t = ws->read(id);
    ASSERT_TRUE(t) << render(t.error());
    EXPECT_TRUE(*t == gen.generate(id));
  }
}

TEST(weight_store, store_without_weights_is_not_found) {
  temp_dir tmp;
  auto s = open_store(tmp / "db");
  auto ws = weight_store::open(*s);
  ASSERT_FALSE(ws);
  EXPECT_EQ(ws.error(), errc::not_found);
  EXPECT_NE(render(ws.error()).find("weights init"), std::string::npos);
  EXPECT_EQ(verify_weights(*s).error(), errc::not_found);
}

TEST(weight_store, undecodable_manifest_is_corrupt) {
  temp_dir tmp;
  auto s = open_store(tmp / "db");
  ASSERT_FALSE(s->put(column::meta, detail::manifest_key, "{\"x\": 1}"));
  auto ws = weight_store::open(*s);
  ASSERT_FALSE(ws);
  EXPECT_EQ(ws.error(), errc::corrupt);
  EXPECT_NE(render(ws.error()).find("weights manifest"), std::string::npos)
      << render(ws.error());
}

TEST(weight_store, read_only_store_cannot_be_initialised) {
  temp_dir tmp;
  ASSERT_TRUE(open_store(tmp / "db"));
  auto s = open_store(tmp / "db", true);
  auto r = init_weights(*s, odd_spec(), 1);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::invalid_argument);
}

} // namespace
} // namespace lockstep::storage
