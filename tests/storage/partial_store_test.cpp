// Partial weight stores (docs/storage.md, "Partial stores"): a store holding
// only the tiles of some shards — one host's chips' part of a plan — is
// bit-identical to the same tiles of a full store; reads inside what it
// holds work and reads outside are not_held; init resumes, is idempotent
// and grows the store; verify checks exactly the held tiles.

#include "storage/weight_store.hpp"

#include "model/weight_gen.hpp"
#include "storage/detail/manifest.hpp"
#include "storage/detail/meta_keys.hpp"
#include "storage/detail/tile_codec.hpp"
#include "tests/storage/temp_dir.hpp"
#include "tests/storage/weight_fixture.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <set>
#include <tuple>

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

const tensor_id embedding{model::global_layer, tensor_kind::tok_embedding};
const tensor_id lm_head{model::global_layer, tensor_kind::lm_head};
const tensor_id attn_norm0{0, tensor_kind::attn_norm};
const tensor_id wq0{0, tensor_kind::wq};
const tensor_id w_down0{0, tensor_kind::w_down};
const tensor_id wk1{1, tensor_kind::wk};
const tensor_id w_up1{1, tensor_kind::w_up};

// One host's shards of odd_spec: a vocabulary slice that is not tile-aligned
// (rows 100..300 touch row tiles 1..4), a norm, a row shard, a block (column)
// shard, two shards of one tensor sharing row tile 1, and the last rows of
// the LM head (the 40-row edge tile included). Deliberately not in
// canonical order.
shard_list host_a() {
  return {
      {lm_head, {936, 1000, 0, 192}}, {embedding, {100, 300, 0, 192}},
      {attn_norm0, {0, 1, 0, 192}},   {wq0, {64, 192, 0, 192}},
      {w_down0, {0, 192, 64, 192}},   {w_up1, {120, 320, 0, 192}},
      {w_up1, {0, 100, 0, 192}},
  };
}

// Shards a re-plan moves to the same host later.
shard_list host_b() {
  return {
      {wq0, {0, 64, 0, 192}},
      {wk1, {0, 64, 0, 192}},
      {lm_head, {0, 500, 0, 192}},
      {w_down0, {0, 192, 64, 192}}, // already held
  };
}

shard_list operator+(shard_list a, const shard_list& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// The tile keys the shards touch, computed here independently of storage/.
std::set<std::string> tiles_of(const shard_list& shards) {
  std::set<std::string> out;
  for (const auto& [id, r] : shards)
    for (uint32_t rt = r.row_begin / 64; rt <= (r.row_end - 1) / 64; ++rt)
      for (uint32_t ct = r.col_begin / 64; ct <= (r.col_end - 1) / 64; ++ct)
        out.insert(tile_key(id, rt, ct));
  return out;
}

std::map<std::string, std::string> weights_of(const store& s) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : content(s, {column::weights}))
    out.emplace(k.second, v);
  return out;
}

std::vector<std::string> problems_of(const verify_report& r) {
  std::vector<std::string> out;
  for (const auto& p : r.problems)
    out.push_back(p.to_string());
  return out;
}

std::string shard_marker(tensor_id id, shard_range r) {
  return std::string{detail::shard_done_prefix} + model::to_string(id) + "[" +
         std::to_string(r.row_begin) + "," + std::to_string(r.row_end) + ")x[" +
         std::to_string(r.col_begin) + "," + std::to_string(r.col_end) + ")";
}

class partial_store_types : public ::testing::TestWithParam<dtype> {};

TEST_P(partial_store_types, tiles_are_bit_identical_to_a_full_init) {
  temp_dir tmp;
  auto spec = odd_spec(GetParam());
  std::map<std::string, std::string> full;
  {
    auto s = open_store(tmp / "full");
    ASSERT_TRUE(init_weights(*s, spec, 42));
    full = weights_of(*s);
  }
  auto s = open_store(tmp / "part");
  auto r = init_weight_shards(*s, spec, 42, host_a());
  ASSERT_TRUE(r) << render(r.error());
  EXPECT_EQ(r->shards_written, host_a().size());
  EXPECT_EQ(r->tensors_written, 6u); // w_up1's two shards are one tensor
  auto part = weights_of(*s);
  auto want = tiles_of(host_a());
  std::set<std::string> keys;
  for (const auto& [k, v] : part) {
    keys.insert(k);
    ASSERT_TRUE(full.count(k));
    auto key = detail::decode_key(k);
    ASSERT_TRUE(key);
    EXPECT_EQ(v, full.at(k)) << model::to_string(key->tensor) << " tile "
                             << detail::tile_name(key->row_tile, key->col_tile);
  }
  EXPECT_EQ(keys, want);
  // The manifest says what is held; the store opens and verifies clean.
  auto ws = weight_store::open(*s);
  ASSERT_TRUE(ws) << render(ws.error());
  EXPECT_TRUE(ws->partial());
  EXPECT_EQ(ws->shards().size(), host_a().size());
  EXPECT_EQ(ws->shards().front().first, embedding); // canonical order
  EXPECT_EQ(ws->shards().back().first, lm_head);
  auto v = ws->verify({.deep = true});
  ASSERT_TRUE(v) << render(v.error());
  EXPECT_TRUE(v->ok()) << problems_of(*v).front();
  EXPECT_TRUE(v->partial);
  EXPECT_EQ(v->shards_checked, host_a().size());
  EXPECT_EQ(v->tensors_checked, 6u);
  EXPECT_EQ(v->tiles_checked, want.size());
}

INSTANTIATE_TEST_SUITE_P(dtypes, partial_store_types,
                         ::testing::Values(dtype::f32, dtype::f16, dtype::bf16,
                                           dtype::int8),
                         [](const auto& info) {
                           return std::string{model::to_string(info.param)};
                         });

TEST(partial_store, other_tile_shapes_cover_whole_tiles) {
  // Tiles two blocks wide: a one-block column shard covers a whole tile of
  // two blocks; 24-row tiles cut the vocabulary slice elsewhere.
  temp_dir tmp;
  auto spec = odd_spec(dtype::int8);
  init_options opt;
  opt.tile = {24, 128};
  std::map<std::string, std::string> full;
  {
    auto s = open_store(tmp / "full");
    ASSERT_TRUE(init_weights(*s, spec, 4, {}, opt));
    full = weights_of(*s);
  }
  auto s = open_store(tmp / "part");
  ASSERT_TRUE(init_weight_shards(*s, spec, 4, host_a(), {}, opt));
  auto part = weights_of(*s);
  std::set<std::string> want;
  for (const auto& [id, r] : host_a())
    for (uint32_t rt = r.row_begin / 24; rt <= (r.row_end - 1) / 24; ++rt)
      for (uint32_t ct = r.col_begin / 128; ct <= (r.col_end - 1) / 128; ++ct)
        want.insert(tile_key(id, rt, ct));
  std::set<std::string> keys;
  for (const auto& [k, v] : part) {
    keys.insert(k);
    EXPECT_EQ(v, full.at(k));
  }
  EXPECT_EQ(keys, want);
  auto ws = weight_store::open(*s);
  ASSERT_TRUE(ws);
  EXPECT_TRUE(ws->holds(w_down0, {0, 192, 0, 64})); // same tile as [64,128)
  EXPECT_FALSE(ws->holds(w_down0, {0, 192, 256, 320}));
  model::weight_generator gen{spec, 4};
  auto got = ws->read(embedding, {96, 312, 0, 192}); // whole 24-row tiles
  ASSERT_TRUE(got) << render(got.error());
  EXPECT_TRUE(*got == *gen.generate(embedding, {96, 312, 0, 192}));
  EXPECT_EQ(ws->read(embedding, {95, 96, 0, 64}).error(), errc::not_held);
}

TEST(partial_store, reads_inside_what_it_holds_and_not_outside) {
  temp_dir tmp;
  auto spec = odd_spec(dtype::int8);
  auto s = open_store(tmp / "db");
  ASSERT_TRUE(init_weight_shards(*s, spec, 7, host_a()));
  auto ws = weight_store::open(*s);
  ASSERT_TRUE(ws) << render(ws.error());
  model::weight_generator gen{spec, 7};
  std::vector<std::pair<tensor_id, shard_range>> inside = host_a();
  // Parts of a shard; both shards of l1.w_up at once (their union is the
  // whole tensor); past a shard's rows but inside its edge tiles (rows 64
  // and 319 of the embedding: tiles are held whole); the whole LM head edge.
  inside.push_back({wq0, {70, 71, 64, 128}});
  inside.push_back({w_up1, {0, 320, 0, 192}});
  inside.push_back({w_down0, {5, 150, 128, 192}});
  inside.push_back({embedding, {64, 320, 0, 192}});
  inside.push_back({lm_head, {896, 1000, 0, 64}});
  for (const auto& [id, r] : inside) {
    EXPECT_TRUE(ws->holds(id, r)) << model::to_string(id);
    auto got = ws->read(id, r);
    ASSERT_TRUE(got) << render(got.error());
    EXPECT_TRUE(*got == *gen.generate(id, r)) << model::to_string(id);
  }
  EXPECT_TRUE(ws->read(w_up1)); // whole, from two shards
  EXPECT_TRUE(ws->read(attn_norm0));

  struct outside_case {
    tensor_id id;
    shard_range range;
    std::string needle;
  };
  std::vector<outside_case> outside{
      // One row below the held rows (row tile 0 of wq is not held).
      {wq0,
       {63, 64, 0, 192},
       "l0.wq rows [63,64) cols [0,192) (it holds "
       "l0.wq rows [64,192) cols [0,192))"},
      // The block shard's other columns.
      {w_down0,
       {0, 192, 0, 64},
       "it holds l0.w_down rows [0,192) cols "
       "[64,192)"},
      // Straddling held and not held rows.
      {embedding, {300, 400, 0, 192}, "tok_embedding rows [300,400)"},
      {lm_head, {0, 1000, 0, 192}, "lm_head rows [0,1000)"},
      // A tensor it holds nothing of.
      {wk1, {0, 64, 0, 192}, "(it holds no shard of l1.wk)"},
  };
  for (const auto& c : outside) {
    EXPECT_FALSE(ws->holds(c.id, c.range)) << c.needle;
    auto got = ws->read(c.id, c.range);
    ASSERT_FALSE(got) << c.needle;
    EXPECT_EQ(got.error(), errc::not_held);
    EXPECT_EQ(lockstep::kind_of(got.error()), error_kind::invalid_input);
    auto text = render(got.error());
    EXPECT_NE(text.find("storage.not_held: store " + (tmp / "db").string() +
                        " is partial and does not hold"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find(c.needle), std::string::npos) << text;
  }
  EXPECT_EQ(ws->read(wk1).error(), errc::not_held);
  // Bad requests are still bad requests, not "not held".
  EXPECT_FALSE(ws->holds({7, tensor_kind::wq}, {0, 1, 0, 64}));
  EXPECT_EQ(ws->read({7, tensor_kind::wq}).error(), errc::invalid_argument);
  EXPECT_FALSE(ws->holds(wq0, {64, 65, 3, 64}));
  EXPECT_EQ(ws->read(wq0, {64, 65, 3, 64}).error(), model::errc::invalid_shard);
  EXPECT_FALSE(ws->holds(wq0, {64, 64, 0, 64})); // empty
}

TEST(partial_store, a_missing_held_tile_is_corrupt_not_zeros) {
  temp_dir tmp;
  auto spec = odd_spec();
  auto s = open_store(tmp / "db");
  ASSERT_TRUE(init_weight_shards(*s, spec, 7, host_a()));
  ASSERT_FALSE(s->erase(column::weights, tile_key(wq0, 2, 1)));
  auto ws = weight_store::open(*s);
  ASSERT_TRUE(ws);
  EXPECT_TRUE(ws->holds(wq0, {64, 192, 0, 192}));
  auto got = ws->read(wq0, {64, 192, 0, 192});
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error(), errc::corrupt);
  EXPECT_NE(render(got.error()).find("tensor l0.wq tile (2,1): missing"),
            std::string::npos)
      << render(got.error());
}

TEST(partial_store, interrupted_init_resumes_to_the_same_store) {
  temp_dir tmp;
  auto spec = odd_spec(dtype::bf16);
  auto shards = host_a();
  store_content reference;
  {
    auto s = open_store(tmp / "ref");
    ASSERT_TRUE(init_weight_shards(*s, spec, 5, shards));
    reference = content(*s);
  }
  auto dir = tmp / "db";
  uint64_t bytes_total = 0;
  {
    auto s = open_store(dir);
    size_t calls = 0;
    auto r = init_weight_shards(*s, spec, 5, shards, [&](const auto& p) {
      EXPECT_EQ(p.shards_done, ++calls);
      EXPECT_EQ(p.shards_total, shards.size());
      EXPECT_EQ(p.tensors_total, 6u);
      EXPECT_FALSE(p.skipped);
      bytes_total = p.bytes_total;
      return calls < 3;
    });
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), errc::incomplete);
    EXPECT_NE(render(r.error()).find("stopped after 3 of 7 shards"),
              std::string::npos)
        << render(r.error());
  }
  {
    auto s = open_store(dir, true);
    auto ws = weight_store::open(*s);
    ASSERT_FALSE(ws);
    EXPECT_EQ(ws.error(), errc::incomplete);
    EXPECT_NE(render(ws.error())
                  .find("(partial) is incomplete (3 of 7 "
                        "shards done); run weights init again "
                        "to resume"),
              std::string::npos)
        << render(ws.error());
    auto v = verify_weights(*s);
    ASSERT_TRUE(v);
    EXPECT_EQ(problems_of(*v),
              (std::vector<std::string>{
                  "test-odd: weights init is incomplete (3 of 7 shards done); "
                  "run weights init again to resume"}));
    EXPECT_EQ(v->shards_checked, 3u);
  }
  {
    auto s = open_store(dir);
    // Resuming with only some of the shards finishes what was asked before:
    // a store never shrinks.
    std::vector<bool> skipped;
    uint64_t bytes_done = 0;
    auto r = init_weight_shards(*s, spec, 5, {shards[1]}, [&](const auto& p) {
      skipped.push_back(p.skipped);
      bytes_done = p.bytes_done;
      EXPECT_EQ(p.bytes_total, bytes_total);
      return true;
    });
    ASSERT_TRUE(r) << render(r.error());
    EXPECT_EQ(skipped, (std::vector<bool>{true, true, true, false, false, false,
                                          false}));
    EXPECT_EQ(r->shards_skipped, 3u);
    EXPECT_EQ(r->shards_written, 4u);
    EXPECT_EQ(bytes_done, bytes_total);
    EXPECT_EQ(content(*s), reference);
  }
}

TEST(partial_store, init_killed_mid_way_resumes) {
  // A real crash: the child dies with _exit (no flush) after some shards,
  // losing whatever was only in memtables.
  temp_dir tmp;
  auto spec = odd_spec();
  auto dir = tmp / "db";
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    storage::open_options o;
    o.create_if_missing = true;
    auto s = store::open(dir, o);
    if (!s)
      ::_exit(2);
    size_t n = 0;
    init_weight_shards(**s, spec, 11, host_a(), [&](const init_progress&) {
      if (++n == 5)
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
  EXPECT_EQ(weight_store::open(*s).error(), errc::incomplete);
  // Every shard marked done has its tiles: the only problem is the init.
  auto before = verify_weights(*s);
  ASSERT_TRUE(before);
  ASSERT_EQ(before->problems.size(), 1u) << problems_of(*before).back();
  EXPECT_NE(before->problems[0].what.find("incomplete"), std::string::npos);
  ASSERT_TRUE(init_weight_shards(*s, spec, 11, host_a()));
  auto ws = weight_store::open(*s);
  ASSERT_TRUE(ws) << render(ws.error());
  auto v = ws->verify({.deep = true});
  ASSERT_TRUE(v);
  EXPECT_TRUE(v->ok());
}

TEST(partial_store, the_same_shards_again_change_nothing) {
  temp_dir tmp;
  auto spec = odd_spec();
  auto s = open_store(tmp / "db");
  ASSERT_TRUE(init_weight_shards(*s, spec, 3, host_a()));
  auto before = content(*s);
  for (auto again : {host_a(), shard_list{host_a()[3]}, host_a() + host_a()}) {
    auto r = init_weight_shards(*s, spec, 3, again);
    ASSERT_TRUE(r) << render(r.error());
    EXPECT_EQ(r->shards_written, 0u);
    EXPECT_EQ(r->shards_skipped, host_a().size());
    EXPECT_EQ(r->tensors_skipped, 6u);
    EXPECT_EQ(r->bytes_written, 0u);
    EXPECT_EQ(content(*s), before);
  }
}

TEST(partial_store, more_shards_later_add_only_the_missing_tiles) {
  temp_dir tmp;
  auto spec = odd_spec(dtype::int8);
  // Reference: both hosts' shards in one run.
  store_content reference;
  {
    auto s = open_store(tmp / "ref");
    ASSERT_TRUE(init_weight_shards(*s, spec, 3, host_a() + host_b()));
    reference = content(*s);
  }
  auto s = open_store(tmp / "db");
  ASSERT_TRUE(init_weight_shards(*s, spec, 3, host_a()));
  auto first = weights_of(*s);
  ASSERT_TRUE(weight_store::open(*s));
  // A re-plan moves host B's chips here: ask for host B's shards only.
  auto r = init_weight_shards(*s, spec, 3, host_b());
  ASSERT_TRUE(r) << render(r.error());
  EXPECT_EQ(r->shards_skipped, host_a().size());
  EXPECT_EQ(r->shards_written, 3u); // w_down0's was there already
  // Only tiles that were not there were written: their payload, no more.
  auto added = tiles_of(host_b());
  uint64_t new_bytes = 0;
  for (const auto& k : added)
    if (!first.count(k)) {
      auto key = detail::decode_key(k);
      ASSERT_TRUE(key);
      auto shape = model::shape_of(spec, key->tensor.kind);
      uint32_t rows = std::min(64u, shape.rows - key->row_tile * 64);
      uint32_t cols = std::min(64u, shape.cols - key->col_tile * 64);
      // int8: elements and one scale per row, counted in column tile 0
      // (every tensor here that gains tiles gains whole rows).
      new_bytes += uint64_t{rows} * cols + (key->col_tile == 0 ? rows * 4 : 0);
    }
  EXPECT_EQ(r->bytes_written, new_bytes);
  EXPECT_EQ(content(*s), reference);
  auto ws = weight_store::open(*s);
  ASSERT_TRUE(ws);
  EXPECT_EQ(ws->shards().size(), host_a().size() + 3);
  model::weight_generator gen{spec, 3};
  for (const auto& [id, range] : host_b()) {
    auto got = ws->read(id, range);
    ASSERT_TRUE(got) << render(got.error());
    EXPECT_TRUE(*got == *gen.generate(id, range));
  }
  // Rows 500..935 of the LM head are still another host's.
  EXPECT_TRUE(ws->read(lm_head, {448, 512, 0, 192})); // B's edge tile
  EXPECT_EQ(ws->read(lm_head).error(), errc::not_held);
}

TEST(partial_store, full_init_completes_a_partial_store) {
  temp_dir tmp;
  auto spec = odd_spec(dtype::f16);
  store_content reference;
  {
    auto s = open_store(tmp / "ref");
    ASSERT_TRUE(init_weights(*s, spec, 9));
    reference = content(*s);
  }
  auto s = open_store(tmp / "db");
  ASSERT_TRUE(init_weight_shards(*s, spec, 9, host_a()));
  auto r = init_weights(*s, spec, 9);
  ASSERT_TRUE(r) << render(r.error());
  EXPECT_EQ(r->tensors_written, model::all_tensors(spec).size());
  // Key for key a full store: the shard markers are gone, the manifest is
  // the full store's.
  EXPECT_EQ(content(*s), reference);
  auto ws = weight_store::open(*s);
  ASSERT_TRUE(ws);
  EXPECT_FALSE(ws->partial());
  // A full store holds every shard: asking it for shards changes nothing.
  auto again = init_weight_shards(*s, spec, 9, host_b());
  ASSERT_TRUE(again) << render(again.error());
  EXPECT_EQ(again->shards_written, 0u);
  EXPECT_EQ(content(*s), reference);
}

TEST(partial_store, shards_asked_of_an_interrupted_full_init_finish_it) {
  temp_dir tmp;
  auto spec = odd_spec();
  auto s = open_store(tmp / "db");
  ASSERT_FALSE(init_weights(*s, spec, 9,
                            [](const auto& p) { return p.tensors_done < 4; }));
  auto r = init_weight_shards(*s, spec, 9, host_a());
  ASSERT_TRUE(r) << render(r.error());
  EXPECT_EQ(r->tensors_skipped, 4u);
  auto ws = weight_store::open(*s);
  ASSERT_TRUE(ws) << render(ws.error());
  EXPECT_FALSE(ws->partial());
}

TEST(partial_store, another_model_seed_dtype_or_tile_shape_is_a_mismatch) {
  temp_dir tmp;
  auto spec = odd_spec();
  auto s = open_store(tmp / "db");
  ASSERT_TRUE(init_weight_shards(*s, spec, 3, host_a()));
  auto before = content(*s);
  init_options other_tiles;
  other_tiles.tile = {32, 64};
  auto wider = spec;
  wider.d_ff = 384;
  std::vector<caf::expected<init_report>> tries;
  tries.push_back(init_weight_shards(*s, spec, 4, host_a()));
  tries.push_back(init_weight_shards(*s, odd_spec(dtype::int8), 3, host_a()));
  tries.push_back(init_weight_shards(*s, wider, 3, host_a()));
  tries.push_back(init_weight_shards(*s, spec, 3, host_a(), {}, other_tiles));
  tries.push_back(init_weights(*s, spec, 4));
  for (const auto& t : tries) {
    ASSERT_FALSE(t);
    EXPECT_EQ(t.error(), errc::mismatch);
    EXPECT_NE(render(t.error()).find("holds test-odd (f32, weight seed 3, "
                                     "tiles 64x64)"),
              std::string::npos)
        << render(t.error());
  }
  EXPECT_EQ(content(*s), before);
}

TEST(partial_store, bad_shards_are_refused_naming_the_shard) {
  temp_dir tmp;
  auto spec = odd_spec();
  auto s = open_store(tmp / "db");
  std::vector<std::pair<tensor_shard, std::string>> bad{
      {{{5, tensor_kind::wq}, {0, 64, 0, 192}},
       "shard 1 (l5.wq rows [0,64) cols [0,192)): tensor l5.wq is not in "
       "model test-odd"},
      {{wq0, {0, 64, 32, 192}}, "shard 1 (l0.wq rows [0,64) cols [32,192)): "},
      {{wq0, {0, 300, 0, 192}}, "outside the tensor"},
      {{wq0, {10, 10, 0, 192}}, "empty"},
  };
  for (const auto& [shard, needle] : bad) {
    auto r = init_weight_shards(*s, spec, 1, {host_a()[0], shard});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), errc::invalid_argument);
    EXPECT_NE(render(r.error()).find(needle), std::string::npos)
        << render(r.error());
  }
  // Nothing was written: the store is still empty.
  EXPECT_TRUE(content(*s).size() == 1u) << "only the format version";
}

TEST(partial_store, no_shards_is_a_complete_store_holding_nothing) {
  temp_dir tmp;
  auto spec = odd_spec();
  auto s = open_store(tmp / "db");
  ASSERT_TRUE(init_weight_shards(*s, spec, 1, {}));
  auto ws = weight_store::open(*s);
  ASSERT_TRUE(ws) << render(ws.error());
  EXPECT_TRUE(ws->partial());
  EXPECT_EQ(ws->read(embedding).error(), errc::not_held);
  for (const auto& t : ws->list())
    EXPECT_EQ(t.held_tiles, 0u);
  auto v = ws->verify();
  ASSERT_TRUE(v);
  EXPECT_TRUE(v->ok());
  EXPECT_EQ(v->tensors_checked, 0u);
}

TEST(partial_store, verify_checks_exactly_the_held_tiles) {
  temp_dir tmp;
  auto dir = tmp / "db";
  auto spec = odd_spec(dtype::int8);
  {
    auto full = open_store(tmp / "full");
    ASSERT_TRUE(init_weights(*full, spec, 9));
    auto s = open_store(dir);
    ASSERT_TRUE(init_weight_shards(*s, spec, 9, host_a()));
    // 1. Flip a byte of a held tile.
    auto v = s->get(column::weights, tile_key(wq0, 1, 2));
    ASSERT_TRUE(v && *v);
    auto bad = **v;
    bad[100] ^= 0x01;
    ASSERT_FALSE(s->put(column::weights, tile_key(wq0, 1, 2), bad));
    // 2. Delete a held tile (the embedding's, rows 100..300: row tile 4).
    ASSERT_FALSE(s->erase(column::weights, tile_key(embedding, 4, 0)));
    // 3. A valid tile of the full store that this store does not hold.
    auto foreign = full->get(column::weights, tile_key(wq0, 0, 0));
    ASSERT_TRUE(foreign && *foreign);
    ASSERT_FALSE(s->put(column::weights, tile_key(wq0, 0, 0), **foreign));
    // 4. Every tile of the LM head's shard gone.
    for (uint32_t rt : {14u, 15u})
      for (uint32_t ct : {0u, 1u, 2u})
        ASSERT_FALSE(s->erase(column::weights, tile_key(lm_head, rt, ct)));
    // 5. Markers that do not belong: of a shard not listed, of a whole
    // tensor, and a listed shard's with the wrong count.
    ASSERT_FALSE(s->put(column::meta, shard_marker(wk1, {0, 64, 0, 192}), "3"));
    ASSERT_FALSE(s->put(column::meta, detail::done_key(wq0), "9"));
    ASSERT_FALSE(
        s->put(column::meta, shard_marker(attn_norm0, {0, 1, 0, 192}), "4"));
  }
  auto s = open_store(dir, true);
  auto before = content(*s);
  auto report = verify_weights(*s);
  ASSERT_TRUE(report) << render(report.error());
  EXPECT_EQ(problems_of(*report),
            (std::vector<std::string>{
                "l0.wq: done marker of a whole tensor in a partial store",
                "l0.attn_norm: done marker of l0.attn_norm rows [0,1) cols "
                "[0,192) says '4' tiles; the shard covers 3",
                "l1.wk[0,64)x[0,192): done marker of a shard the manifest "
                "does not list",
                "l0.wq tile (0,0): tile outside the shards this partial store "
                "holds",
                "l0.wq tile (1,2): checksum mismatch",
                "tok_embedding tile (4,0): missing",
                "lm_head: missing (all 6 held tiles)",
            }));
  EXPECT_TRUE(report->partial);
  EXPECT_EQ(report->shards_checked, host_a().size());
  EXPECT_EQ(content(*s), before); // verify writes nothing
}

TEST(partial_store, deep_verify_regenerates_the_held_tiles) {
  temp_dir tmp;
  auto dir = tmp / "db";
  auto spec = odd_spec(dtype::f16);
  {
    auto s = open_store(dir);
    ASSERT_TRUE(init_weight_shards(*s, spec, 9, host_a()));
    // w_down0 tile (2,2) re-encoded from seed 10: well-formed, wrong weights.
    model::weight_generator other{spec, 10};
    auto stripe = other.generate(w_down0, {128, 192, 128, 192});
    ASSERT_TRUE(stripe);
    std::string value;
    detail::encode_tile({w_down0, 2, 2}, *stripe, 128, 128, 64, 64, value);
    ASSERT_FALSE(s->put(column::weights, tile_key(w_down0, 2, 2), value));
  }
  auto s = open_store(dir, true);
  auto shallow = verify_weights(*s);
  ASSERT_TRUE(shallow);
  EXPECT_TRUE(shallow->ok());
  auto deep = verify_weights(*s, {.deep = true});
  ASSERT_TRUE(deep);
  EXPECT_EQ(problems_of(*deep),
            (std::vector<std::string>{"l0.w_down tile (2,2): differs from the "
                                      "generator's weights (seed 9)"}));
}

TEST(partial_store, list_says_what_is_held) {
  temp_dir tmp;
  auto spec = odd_spec(dtype::int8);
  auto s = open_store(tmp / "db");
  ASSERT_TRUE(init_weight_shards(*s, spec, 2, host_a()));
  auto ws = weight_store::open(*s);
  ASSERT_TRUE(ws);
  auto list = ws->list();
  ASSERT_EQ(list.size(), model::all_tensors(spec).size());
  std::map<std::string, tensor_info> by_name;
  for (const auto& t : list)
    by_name.emplace(model::to_string(t.id), t);
  auto& emb = by_name.at("tok_embedding");
  EXPECT_EQ(emb.held_tiles, 4u * 3);
  EXPECT_EQ(emb.held_bytes, 256u * 192 + 256u * 4); // row tiles 1..4
  EXPECT_EQ(emb.shards, (std::vector<shard_range>{{100, 300, 0, 192}}));
  auto& up = by_name.at("l1.w_up");
  EXPECT_EQ(up.held_tiles, up.tiles()); // two shards, one shared row tile
  EXPECT_EQ(up.held_bytes, up.bytes);
  EXPECT_EQ(up.shards,
            (std::vector<shard_range>{{0, 100, 0, 192}, {120, 320, 0, 192}}));
  auto& down = by_name.at("l0.w_down");
  EXPECT_EQ(down.held_tiles, 3u * 2);
  // A 192x320 tensor, column blocks 1..2: one scale a row, not one a tile.
  EXPECT_EQ(down.held_bytes, 192u * 128 + 192u * 4);
  auto& wk = by_name.at("l1.wk");
  EXPECT_EQ(wk.held_tiles, 0u);
  EXPECT_EQ(wk.held_bytes, 0u);
  EXPECT_TRUE(wk.shards.empty());
  // A full store holds everything, whole.
  auto full = open_store(tmp / "full");
  ASSERT_TRUE(init_weights(*full, spec, 2));
  auto wf = weight_store::open(*full);
  ASSERT_TRUE(wf);
  for (const auto& t : wf->list()) {
    EXPECT_EQ(t.held_tiles, t.tiles());
    EXPECT_EQ(t.held_bytes, t.bytes);
    EXPECT_EQ(t.shards, (std::vector<shard_range>{model::whole(t.shape)}));
  }
}

TEST(partial_store, manifest_lists_the_shards_for_a_person) {
  temp_dir tmp;
  auto spec = odd_spec();
  auto s = open_store(tmp / "db");
  ASSERT_TRUE(init_weight_shards(*s, spec, 2, {{w_up1, {120, 320, 0, 192}}}));
  auto text = s->get(column::meta, detail::manifest_key);
  ASSERT_TRUE(text && *text);
  auto j = nlohmann::json::parse(**text);
  // Format 2: a reader that knows only format 1 (full stores) refuses it
  // instead of taking it for a full store with missing tiles.
  EXPECT_EQ(j["manifest_format"], 2);
  EXPECT_EQ(j["partial"], true);
  EXPECT_EQ(j["state"], "complete");
  EXPECT_EQ(j["shards"], nlohmann::json::parse(R"([
    {"tensor": "l1.w_up", "rows": [120, 320], "cols": [0, 192]}])"));
  // A full store's manifest is format 1, as before partial stores.
  auto f = open_store(tmp / "full");
  ASSERT_TRUE(init_weights(*f, spec, 2));
  auto full_text = f->get(column::meta, detail::manifest_key);
  ASSERT_TRUE(full_text && *full_text);
  auto fj = nlohmann::json::parse(**full_text);
  EXPECT_EQ(fj["manifest_format"], 1);
  EXPECT_FALSE(fj.contains("shards"));
  EXPECT_FALSE(fj.contains("partial"));
}

TEST(partial_store, a_manifest_with_bad_shards_is_corrupt) {
  temp_dir tmp;
  auto spec = odd_spec();
  auto s = open_store(tmp / "db");
  ASSERT_TRUE(init_weight_shards(*s, spec, 2, host_a()));
  auto text = s->get(column::meta, detail::manifest_key);
  ASSERT_TRUE(text && *text);
  auto good = nlohmann::json::parse(**text);
  auto with = [&](auto&& edit) {
    auto j = good;
    edit(j);
    return j.dump();
  };
  std::vector<std::pair<std::string, std::string>> cases{
      {with([](auto& j) { j["shards"][0]["tensor"] = "l9.wq"; }),
       "tensor l9.wq is not in model test-odd"},
      {with([](auto& j) { j["shards"][0]["tensor"] = "nonsense"; }),
       "shard of 'nonsense'"},
      {with([](auto& j) {
         j["shards"][0]["rows"] = {5, 2};
       }),
       "empty"},
      {with([](auto& j) { j["shards"][0]["cols"] = {0}; }),
       "rows and cols must be [begin, end]"},
      {with([](auto& j) { j["manifest_format"] = 1; }),
       "manifest_format 1 has no \"partial\": true"},
      {with([](auto& j) { j.erase("shards"); }), "manifest_format 2 needs"},
      {with([](auto& j) { j["partial"] = false; }), "manifest_format 2 needs"},
  };
  for (const auto& [bad, needle] : cases) {
    ASSERT_FALSE(s->put(column::meta, detail::manifest_key, bad));
    auto ws = weight_store::open(*s);
    ASSERT_FALSE(ws) << needle;
    EXPECT_EQ(ws.error(), errc::corrupt);
    EXPECT_NE(render(ws.error()).find(needle), std::string::npos)
        << render(ws.error());
  }
}

} // namespace
} // namespace lockstep::storage
