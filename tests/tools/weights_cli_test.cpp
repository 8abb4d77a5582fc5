// `lockstep weights ...` as a user runs it: the built binary, real stores,
// exit codes 0 / 1 / 2, one-line errors and pure-JSON output.

#include "storage/detail/tile_codec.hpp"
#include "storage/gguf_writer.hpp"
#include "storage/weight_store.hpp"
#include "tests/storage/temp_dir.hpp"
#include "tests/tools/cli_runner.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

#include <sys/wait.h>
#include <unistd.h>

namespace lockstep {
namespace {

using test::result;
using test::run;
using test::temp_dir;

size_t lines(const std::string& s) {
  return std::count(s.begin(), s.end(), '\n');
}

TEST(weights_cli, init_list_verify_succeed_with_pure_json) {
  temp_dir tmp;
  auto db = (tmp / "db").string();
  auto r = run(tmp, {"weights", "init", "--model", "tiny-8", "--weight-seed",
                     "7", "--db", db, "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, ""); // no progress bar: stderr is not a terminal
  auto init = nlohmann::json::parse(r.out);
  EXPECT_EQ(init["model"]["name"], "tiny-8");
  EXPECT_EQ(init["tensors_skipped"], 0);

  r = run(tmp, {"weights", "verify", "--db", db, "--deep"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find(": ok"), std::string::npos) << r.out;

  r = run(tmp, {"weights", "list", "--db", db, "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  auto list = nlohmann::json::parse(r.out); // throws unless pure JSON
  auto spec = *model::find_preset("tiny-8");
  EXPECT_EQ(list["model"]["name"], "tiny-8");
  EXPECT_EQ(list["weight_seed"], 7);
  EXPECT_EQ(list["state"], "complete");
  EXPECT_EQ(list["tile_rows"], 64);
  EXPECT_EQ(list["total_bytes"], spec.weight_bytes());
  ASSERT_EQ(list["tensors"].size(), model::all_tensors(spec).size());
  EXPECT_EQ(list["tensors"][1]["name"], "l0.attn_norm");
  EXPECT_EQ(list["tensors"][1]["tiles"], spec.d_model / 64);

  r = run(tmp, {"weights", "verify", "--db", db, "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto verify = nlohmann::json::parse(r.out);
  EXPECT_EQ(verify["ok"], true);
  EXPECT_EQ(verify["problems"].size(), 0u);
  EXPECT_EQ(verify["tensors_checked"], model::all_tensors(spec).size());

  r = run(tmp, {"weights", "list", "--db", db});
  ASSERT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("tiny-8 (f32), weight seed 7"), std::string::npos);

  // Init again: resumes to nothing to do.
  r = run(tmp, {"weights", "init", "--model", "tiny-8", "--weight-seed", "7",
                "--db", db});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("0 tensors written"), std::string::npos) << r.out;
}

TEST(weights_cli, verify_exits_1_naming_every_bad_tile) {
  temp_dir tmp;
  auto db = tmp / "db";
  auto r = run(tmp, {"weights", "init", "--model", "tiny-8", "--weight-seed",
                     "1", "--db", db.string(), "--dtype", "int8"});
  ASSERT_EQ(r.code, 0) << r.err;
  {
    auto s = storage::store::open(db, {});
    ASSERT_TRUE(s);
    model::tensor_id wk{2, model::tensor_kind::wk};
    auto key = storage::detail::encode_key({wk, 1, 3});
    auto v = (*s)->get(storage::column::weights, key);
    ASSERT_TRUE(v && *v);
    auto bad = **v;
    bad[bad.size() / 2] ^= 0x40;
    ASSERT_FALSE((*s)->put(storage::column::weights, key, bad));
    model::tensor_id head{model::global_layer, model::tensor_kind::lm_head};
    ASSERT_FALSE((*s)->erase(storage::column::weights,
                             storage::detail::encode_key({head, 0, 0})));
  }
  r = run(tmp, {"weights", "verify", "--db", db.string()});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("bad: l2.wk tile (1,3): checksum mismatch"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("bad: lm_head tile (0,0): missing"), std::string::npos)
      << r.out;
  EXPECT_EQ(lines(r.err), 1u) << r.err;

  r = run(tmp, {"weights", "verify", "--db", db.string(), "-o", "json"});
  EXPECT_EQ(r.code, 1);
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ok"], false);
  ASSERT_EQ(j["problems"].size(), 2u);
  EXPECT_EQ(j["problems"][0]["tensor"], "l2.wk");
  EXPECT_EQ(j["problems"][0]["row_tile"], 1);
  EXPECT_EQ(j["problems"][0]["col_tile"], 3);
  EXPECT_EQ(j["problems"][1]["tensor"], "lm_head");
  // list does not read tiles; it still works.
  EXPECT_EQ(run(tmp, {"weights", "list", "--db", db.string()}).code, 0);
}

TEST(weights_cli, bad_input_is_one_line_and_exit_2) {
  temp_dir tmp;
  auto db = (tmp / "db").string();
  auto expect_bad = [&](const std::vector<std::string>& args,
                        const std::string& needle) {
    auto r = run(tmp, args);
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_EQ(lines(r.err), 1u) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "");
  };
  expect_bad({"weights", "init", "--model", "tiny-9", "--weight-seed", "1",
              "--db", db},
             "unknown model 'tiny-9'");
  EXPECT_FALSE(std::filesystem::exists(db)); // nothing created
  expect_bad({"weights", "init", "--model", "tiny-8", "--db", db},
             "--weight-seed");
  expect_bad({"weights", "init", "--model", "tiny-8", "--weight-seed", "x",
              "--db", db},
             "--weight-seed");
  expect_bad({"weights", "init", "--model", "tiny-8", "--weight-seed", "1",
              "--db", db, "--dtype", "f8"},
             "unknown dtype 'f8'");
  expect_bad({"weights", "list", "--db", db}, "no store at " + db);
  expect_bad({"weights", "verify", "--db", db, "-o", "json"},
             "no store at " + db);
  expect_bad({"weights", "verify", "--db", tmp.path().string()},
             "is not a lockstep store");
  expect_bad({"weights", "list", "--db", db, "-o", "yaml"}, "yaml");
  expect_bad({"weights", "list"}, "--db");
  expect_bad({"weights", "frobnicate"}, "subcommand");
  // A store holding another model or seed.
  ASSERT_EQ(run(tmp, {"weights", "init", "--model", "tiny-8", "--weight-seed",
                      "1", "--db", db})
                .code,
            0);
  expect_bad({"weights", "init", "--model", "tiny-8", "--weight-seed", "2",
              "--db", db},
             "holds tiny-8 (f32, weight seed 1");
}

TEST(weights_cli, store_in_use_names_the_holder_pid) {
  temp_dir tmp;
  auto db = tmp / "db";
  ASSERT_EQ(run(tmp, {"weights", "init", "--model", "tiny-8", "--weight-seed",
                      "1", "--db", db.string()})
                .code,
            0);
  auto held = storage::store::open(db, {});
  ASSERT_TRUE(held);
  for (auto cmd : {"list", "verify"}) {
    auto r = run(tmp, {"weights", cmd, "--db", db.string()});
    EXPECT_EQ(r.code, 3); // overloaded: retry once the holder is done
    EXPECT_EQ(r.err, "overloaded: store " + db.string() +
                         " in use by PID " + std::to_string(::getpid()) + "\n");
  }
}

TEST(weights_cli, incomplete_store_is_reported_and_init_resumes) {
  temp_dir tmp;
  auto db = tmp / "db";
  auto spec = *model::find_preset("tiny-8");
  {
    storage::open_options o;
    o.create_if_missing = true;
    auto s = storage::store::open(db, o);
    ASSERT_TRUE(s);
    auto r = storage::init_weights(
        **s, spec, 3, [](const auto& p) { return p.tensors_done < 5; });
    ASSERT_FALSE(r);
  }
  auto r = run(tmp, {"weights", "list", "--db", db.string()});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("run weights init again to resume"), std::string::npos)
      << r.err;
  r = run(tmp, {"weights", "verify", "--db", db.string(), "-o", "json"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(nlohmann::json::parse(r.out)["ok"], false);
  r = run(tmp, {"weights", "init", "--model", "tiny-8", "--weight-seed", "3",
                "--db", db.string(), "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["tensors_skipped"], 5);
  EXPECT_EQ(run(tmp, {"weights", "verify", "--db", db.string()}).code, 0);
}

TEST(weights_cli, partial_store_is_listed_and_verified_as_partial) {
  temp_dir tmp;
  auto db = tmp / "db";
  auto spec = *model::find_preset("tiny-8");
  model::tensor_id wq1{1, model::tensor_kind::wq};
  model::tensor_id head{model::global_layer, model::tensor_kind::lm_head};
  {
    // What a host daemon writes: its chips' shards (a vocabulary slice that
    // is not tile-aligned, and a row shard).
    storage::open_options o;
    o.create_if_missing = true;
    auto s = storage::store::open(db, o);
    ASSERT_TRUE(s);
    auto r = storage::init_weight_shards(
        **s, spec, 3, {{head, {100, 300, 0, 256}}, {wq1, {0, 128, 0, 256}}});
    ASSERT_TRUE(r) << render(r.error());
  }
  auto r = run(tmp, {"weights", "list", "--db", db.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("tiny-8 (f32), weight seed 3, tiles 64x64, complete"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("partial store: holds 2 shards of 2 tensors"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("rows [100,300) cols [0,256)"), std::string::npos)
      << r.out;

  r = run(tmp, {"weights", "list", "--db", db.string(), "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto list = nlohmann::json::parse(r.out);
  EXPECT_EQ(list["state"], "complete");
  EXPECT_EQ(list["total_bytes"], spec.weight_bytes());
  EXPECT_EQ(list["partial"], true);
  // lm_head row tiles 1..4 and l1.wq row tiles 0..1, 4 column tiles each.
  EXPECT_EQ(list["held_bytes"], (4 * 64 + 2 * 64) * 256 * 4);
  EXPECT_EQ(list["shards"], nlohmann::json::parse(R"([
    {"tensor": "l1.wq", "rows": [0, 128], "cols": [0, 256]},
    {"tensor": "lm_head", "rows": [100, 300], "cols": [0, 256]}])"));
  ASSERT_EQ(list["tensors"].size(), model::all_tensors(spec).size());
  for (const auto& t : list["tensors"]) {
    if (t["name"] == "lm_head") {
      EXPECT_EQ(t["tiles"], 64);
      EXPECT_EQ(t["held_tiles"], 16);
      EXPECT_EQ(t["shards"][0]["rows"], nlohmann::json::parse("[100, 300]"));
    } else if (t["name"] == "l1.wq") {
      EXPECT_EQ(t["held_tiles"], 8);
    } else {
      EXPECT_EQ(t["held_tiles"], 0) << t["name"];
      EXPECT_EQ(t["shards"].size(), 0u);
    }
  }

  r = run(tmp, {"weights", "verify", "--db", db.string(), "--deep"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("verified 2 tensors (2 shards of a partial store), "
                       "24 tiles"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find(": ok"), std::string::npos);
  r = run(tmp, {"weights", "verify", "--db", db.string(), "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto verify = nlohmann::json::parse(r.out);
  EXPECT_EQ(verify["ok"], true);
  EXPECT_EQ(verify["partial"], true);
  EXPECT_EQ(verify["shards_checked"], 2);
  EXPECT_EQ(verify["tensors_checked"], 2);

  // A held tile gone is a problem; exit 1.
  {
    auto s = storage::store::open(db, {});
    ASSERT_TRUE(s);
    ASSERT_FALSE((*s)->erase(storage::column::weights,
                             storage::detail::encode_key({head, 4, 3})));
  }
  r = run(tmp, {"weights", "verify", "--db", db.string()});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("bad: lm_head tile (4,3): missing"), std::string::npos)
      << r.out;

  // `weights init` of the whole model makes it a full store.
  r = run(tmp, {"weights", "init", "--model", "tiny-8", "--weight-seed", "3",
                "--db", db.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  r = run(tmp, {"weights", "list", "--db", db.string(), "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  list = nlohmann::json::parse(r.out);
  EXPECT_EQ(list["partial"], false);
  EXPECT_EQ(list["shards"], nullptr);
  EXPECT_EQ(list["held_bytes"], spec.weight_bytes());
  EXPECT_EQ(list["tensors"][0]["held_tiles"], list["tensors"][0]["tiles"]);
  EXPECT_EQ(run(tmp, {"weights", "verify", "--db", db.string()}).code, 0);
}

} // namespace
} // namespace lockstep

namespace lockstep {
namespace {

// `weights inspect --gguf`: a llama GGUF's shape as lockstep reads it; a
// file it cannot take is one line naming the key or tensor, exit 2.
TEST(weights_cli, inspect_reads_a_gguf_models_shape) {
  namespace gguf = storage::gguf;
  temp_dir tmp;
  gguf::gguf_writer w;
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.block_count", 1);
  w.set_u32("llama.embedding_length", 128);
  w.set_u32("llama.feed_forward_length", 256);
  w.set_u32("llama.attention.head_count", 2);
  w.set_u32("llama.context_length", 64);
  w.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  auto add = [&](const std::string& name, std::vector<uint64_t> ne,
                 gguf::ggml_type type) {
    w.add_tensor(name, ne, type,
                 std::vector<std::byte>(gguf::tensor_bytes(ne, type)));
  };
  auto q = gguf::ggml_type::q8_0, f = gguf::ggml_type::f32;
  add("token_embd.weight", {128, 512}, q);
  add("blk.0.attn_norm.weight", {128}, f);
  add("blk.0.attn_q.weight", {128, 128}, q);
  add("blk.0.attn_k.weight", {128, 128}, q);
  add("blk.0.attn_v.weight", {128, 128}, q);
  add("blk.0.attn_output.weight", {128, 128}, q);
  add("blk.0.ffn_norm.weight", {128}, f);
  add("blk.0.ffn_gate.weight", {128, 256}, q);
  add("blk.0.ffn_up.weight", {128, 256}, q);
  add("blk.0.ffn_down.weight", {256, 128}, q);
  add("output_norm.weight", {128}, f);
  auto file = tmp / "m.gguf";
  ASSERT_FALSE(w.write(file));
  auto r = run(tmp, {"weights", "inspect", "--gguf", file.string(), "-o",
                     "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["spec"]["d_model"], 128);
  EXPECT_EQ(j["spec"]["vocab"], 512);
  EXPECT_EQ(j["spec"]["head_dim"], 64);
  EXPECT_EQ(j["tied_head"], true);
  EXPECT_EQ(j["tensor_types"]["Q8_0"], 8);
  EXPECT_EQ(j["spec"]["dtype"], "f32");

  w.set_string("general.architecture", "gpt2");
  ASSERT_FALSE(w.write(file));
  r = run(tmp, {"weights", "inspect", "--gguf", file.string()});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(lines(r.err), 1u) << r.err;
  EXPECT_NE(r.err.find("architecture 'gpt2'"), std::string::npos) << r.err;

  std::ofstream{tmp / "junk.gguf"} << "not a gguf file at all, just text";
  r = run(tmp, {"weights", "inspect", "--gguf", (tmp / "junk.gguf").string()});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("not a GGUF file"), std::string::npos) << r.err;
}

} // namespace
} // namespace lockstep
