// lockstep weights init | list | verify | import | export | inspect: the
// weight store from the command line (docs/storage.md); GGUF files imported,
// exported and inspected.
//
// Exit codes: 0 success; 1 the command ran and found a problem (corrupt or
// incomplete store, interrupted init, I/O failure); 2 bad input (unknown
// model, bad flags, missing or non-store --db, a store holding another
// model) and a store in use by another process (retry when it exits).

#include "tools/cli.hpp"

#include "common/error.hpp"
#include "common/progress.hpp"
#include "model/model_spec.hpp"
#include "storage/gguf_export.hpp"
#include "storage/gguf_import.hpp"
#include "storage/gguf_model.hpp"
#include "storage/weight_store.hpp"

#include "model/spec_json.hpp"

#include <nlohmann/json.hpp>

#include <atomic>
#include <optional>
#include <csignal>
#include <cstdio>

namespace lockstep::tools {

namespace {

// Ctrl-C during init stops it cleanly after the current tensor, leaving a
// resumable store; a second Ctrl-C kills the process (SA_RESETHAND).
std::atomic<bool> interrupted{false};

extern "C" void on_sigint(int) {
  interrupted = true;
}

struct sigint_guard {
  struct sigaction old_action {};
  sigint_guard() {
    interrupted = false;
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_action);
  }
  ~sigint_guard() { sigaction(SIGINT, &old_action, nullptr); }
};

struct init_args {
  std::string model;
  uint64_t seed = 0;
  std::string db;
  std::string dtype;
  std::string format = "text";
};

int run_init(const init_args& a) {
  auto spec = model::find_preset(a.model);
  if (!spec)
    return fail(exit_bad_input, render(spec.error()));
  if (!a.dtype.empty()) {
    auto type = model::parse_dtype(a.dtype);
    if (!type)
      return fail(exit_bad_input, "--dtype: " + detail_of(type.error()));
    spec->weight_dtype = *type;
  }
  storage::open_options options;
  options.create_if_missing = true;
  auto st = storage::store::open(a.db, options);
  if (!st)
    return fail_with(st.error());
  sigint_guard guard;
  progress_bar bar{"weights init " + spec->name, spec->weight_bytes()};
  uint64_t shown = 0;
  auto report = storage::init_weights(**st, *spec, a.seed,
                                      [&](const storage::init_progress& p) {
                                        bar.advance(p.bytes_done - shown);
                                        shown = p.bytes_done;
                                        return !interrupted.load();
                                      });
  bar.finish();
  if (!report)
    return fail_with(report.error());
  double mb = report->bytes_written / 1e6;
  double rate = report->seconds > 0 ? mb / report->seconds : 0;
  if (a.format == "json") {
    nlohmann::json j = {{"db", a.db},
                        {"model", model::to_json(*spec)},
                        {"weight_seed", a.seed},
                        {"tensors_written", report->tensors_written},
                        {"tensors_skipped", report->tensors_skipped},
                        {"bytes_written", report->bytes_written},
                        {"seconds", report->seconds},
                        {"mb_per_s", rate}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("weights of %s (%s, weight seed %llu) in %s: %zu tensors "
                "written, %zu already there; %.1f MB in %.2f s (%.0f MB/s)\n",
                spec->name.c_str(), model::to_string(spec->weight_dtype),
                static_cast<unsigned long long>(a.seed), a.db.c_str(),
                report->tensors_written, report->tensors_skipped, mb,
                report->seconds, rate);
  }
  return exit_ok;
}

caf::expected<std::unique_ptr<storage::store>>
open_read_only(const std::string& db) {
  storage::open_options options;
  options.read_only = true;
  return storage::store::open(db, options);
}

int run_list(const std::string& db, const std::string& format) {
  auto st = open_read_only(db);
  if (!st)
    return fail_with(st.error());
  auto ws = storage::weight_store::open(**st);
  if (!ws)
    return fail_with(ws.error());
  auto tensors = ws->list();
  uint64_t total = 0;
  uint64_t held = 0;
  size_t held_tensors = 0;
  for (const auto& t : tensors) {
    total += t.bytes;
    held += t.held_bytes;
    held_tensors += t.held_tiles > 0;
  }
  const auto& spec = ws->spec();
  auto range_json = [](const model::shard_range& r) {
    return nlohmann::json{{"rows", {r.row_begin, r.row_end}},
                          {"cols", {r.col_begin, r.col_end}}};
  };
  if (format == "json") {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& t : tensors) {
      nlohmann::json shards = nlohmann::json::array();
      for (const auto& r : t.shards)
        shards.push_back(range_json(r));
      list.push_back({{"name", model::to_string(t.id)},
                      {"layer", t.id.layer == model::global_layer
                                    ? nlohmann::json(nullptr)
                                    : nlohmann::json(t.id.layer)},
                      {"kind", model::to_string(t.id.kind)},
                      {"rows", t.shape.rows},
                      {"cols", t.shape.cols},
                      {"dtype", model::to_string(t.type)},
                      {"bytes", t.bytes},
                      {"row_tiles", t.row_tiles},
                      {"col_tiles", t.col_tiles},
                      {"tiles", t.tiles()},
                      {"held_tiles", t.held_tiles},
                      {"held_bytes", t.held_bytes},
                      {"shards", std::move(shards)}});
    }
    // The partial store's shards as its manifest lists them (null for a
    // full store, which holds every tensor whole).
    nlohmann::json shards = nullptr;
    if (ws->partial()) {
      shards = nlohmann::json::array();
      for (const auto& [id, r] : ws->shards()) {
        auto one = range_json(r);
        one["tensor"] = model::to_string(id);
        shards.push_back(std::move(one));
      }
    }
    nlohmann::json j = {{"db", db},
                        {"model", model::to_json(spec)},
                        {"weight_seed", ws->seed()},
                        {"tile_rows", ws->tile().rows},
                        {"tile_cols", ws->tile().cols},
                        {"state", to_string(ws->manifest().state)},
                        {"total_bytes", total},
                        {"partial", ws->partial()},
                        {"held_bytes", held},
                        {"shards", std::move(shards)},
                        {"tensors", std::move(list)}};
    std::printf("%s\n", j.dump(2).c_str());
    return exit_ok;
  }
  std::printf("store %s: %s (%s), weight seed %llu, tiles %ux%u, %s\n",
              db.c_str(), spec.name.c_str(),
              model::to_string(spec.weight_dtype),
              static_cast<unsigned long long>(ws->seed()), ws->tile().rows,
              ws->tile().cols, to_string(ws->manifest().state));
  if (ws->partial())
    std::printf("partial store: holds %zu shards of %zu tensors, %.1f of "
                "%.1f MB\n",
                ws->shards().size(), held_tensors, held / 1e6, total / 1e6);
  std::printf("%-16s %7s %7s %5s %12s %7s%s\n", "tensor", "rows", "cols",
              "dtype", "bytes", "tiles",
              ws->partial() ? "    held  shards" : "");
  for (const auto& t : tensors) {
    std::printf("%-16s %7u %7u %5s %12llu %7llu",
                model::to_string(t.id).c_str(), t.shape.rows, t.shape.cols,
                model::to_string(t.type),
                static_cast<unsigned long long>(t.bytes),
                static_cast<unsigned long long>(t.tiles()));
    if (ws->partial()) {
      std::string shards;
      for (const auto& r : t.shards)
        shards += (shards.empty() ? "rows [" : ", rows [") +
                  std::to_string(r.row_begin) + "," +
                  std::to_string(r.row_end) + ") cols [" +
                  std::to_string(r.col_begin) + "," +
                  std::to_string(r.col_end) + ")";
      std::printf(" %7llu  %s", static_cast<unsigned long long>(t.held_tiles),
                  shards.empty() ? "-" : shards.c_str());
    }
    std::printf("\n");
  }
  std::printf("%zu tensors, %.1f MB\n", tensors.size(), total / 1e6);
  return exit_ok;
}

int run_verify(const std::string& db, const std::string& format, bool deep,
               const std::string& gguf_path) {
  namespace gguf = storage::gguf;
  auto st = open_read_only(db);
  if (!st)
    return fail_with(st.error());
  storage::verify_options options;
  options.deep = deep;
  // An imported store verifies deeply against the file it came from.
  std::optional<gguf::gguf_file> file;
  std::optional<gguf::gguf_model> described;
  storage::tensor_source source;
  if (!gguf_path.empty()) {
    if (!deep)
      return fail(exit_bad_input, "--gguf goes with --deep");
    auto ws = storage::weight_store::open(**st);
    if (!ws)
      return fail_with(ws.error());
    auto f = gguf::gguf_file::open(gguf_path);
    if (!f)
      return fail_with(f.error());
    file.emplace(std::move(*f));
    auto m = gguf::describe_model(*file);
    if (!m)
      return fail_with(m.error());
    described.emplace(std::move(*m));
    if (auto err = ws->check_model(described->spec))
      return fail(exit_bad_input, render(err));
    source = gguf::source_of(*file, *described, ws->spec());
    options.source = &source;
  }
  auto report = storage::verify_weights(**st, options);
  if (!report)
    return fail_with(report.error());
  if (format == "json") {
    nlohmann::json problems = nlohmann::json::array();
    for (const auto& p : report->problems)
      problems.push_back({{"tensor", p.tensor},
                          {"row_tile", p.has_tile ? nlohmann::json(p.row_tile)
                                                  : nlohmann::json(nullptr)},
                          {"col_tile", p.has_tile ? nlohmann::json(p.col_tile)
                                                  : nlohmann::json(nullptr)},
                          {"problem", p.what}});
    nlohmann::json j = {{"db", db},
                        {"ok", report->ok()},
                        {"partial", report->partial},
                        {"shards_checked", report->shards_checked},
                        {"tensors_checked", report->tensors_checked},
                        {"tiles_checked", report->tiles_checked},
                        {"bytes_checked", report->bytes_checked},
                        {"problems", std::move(problems)}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    for (const auto& p : report->problems)
      std::printf("bad: %s\n", p.to_string().c_str());
    std::string shards = report->partial
                             ? " (" + std::to_string(report->shards_checked) +
                                   " shards of a partial store)"
                             : "";
    std::printf("verified %zu tensors%s, %llu tiles (%.1f MB): %s\n",
                report->tensors_checked, shards.c_str(),
                static_cast<unsigned long long>(report->tiles_checked),
                report->bytes_checked / 1e6,
                report->ok()
                    ? "ok"
                    : (std::to_string(report->problems.size()) + " problem(s)")
                          .c_str());
  }
  if (report->ok())
    return exit_ok;
  return fail(exit_problem, "store " + db + " failed verification (" +
                                std::to_string(report->problems.size()) +
                                " problem(s))");
}

struct import_args {
  std::string gguf;
  std::string db;
  std::string dtype;
  std::string format = "text";
};

// A llama GGUF into a store (resumable; Ctrl-C stops after the current
// tensor): the model's shape from the file, values exact (docs/storage.md).
int run_import(const import_args& a) {
  namespace gguf = storage::gguf;
  auto f = gguf::gguf_file::open(a.gguf);
  if (!f)
    return fail_with(f.error());
  auto m = gguf::describe_model(*f);
  if (!m)
    return fail_with(m.error());
  std::optional<model::dtype> dtype;
  if (!a.dtype.empty()) {
    auto type = model::parse_dtype(a.dtype);
    if (!type)
      return fail(exit_bad_input, "--dtype: " + detail_of(type.error()));
    dtype = *type;
  }
  auto spec = gguf::import_spec(*m, dtype);
  if (!spec)
    return fail(exit_bad_input, render(spec.error()));
  storage::open_options options;
  options.create_if_missing = true;
  auto st = storage::store::open(a.db, options);
  if (!st)
    return fail_with(st.error());
  sigint_guard guard;
  progress_bar bar{"weights import " + spec->name, spec->weight_bytes()};
  uint64_t shown = 0;
  auto report = gguf::import_model(**st, *f, *m, *spec,
                                   [&](const storage::init_progress& p) {
                                     bar.advance(p.bytes_done - shown);
                                     shown = p.bytes_done;
                                     return !interrupted.load();
                                   });
  bar.finish();
  if (!report)
    return fail_with(report.error());
  double mb = report->bytes_written / 1e6;
  if (a.format == "json") {
    nlohmann::json j = {{"db", a.db},
                        {"source", gguf::source_name(*f)},
                        {"model", model::to_json(*spec)},
                        {"tied_head", m->tied_head},
                        {"tensors_written", report->tensors_written},
                        {"tensors_skipped", report->tensors_skipped},
                        {"bytes_written", report->bytes_written},
                        {"seconds", report->seconds}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s (%s) imported from %s into %s: %zu tensors written, %zu "
                "already there; %.1f MB in %.2f s%s\n",
                spec->name.c_str(), model::to_string(spec->weight_dtype),
                a.gguf.c_str(), a.db.c_str(), report->tensors_written,
                report->tensors_skipped, mb, report->seconds,
                m->tied_head ? " (tied head: lm_head holds the embedding)"
                             : "");
  }
  return exit_ok;
}

// A store as a llama GGUF (docs/storage.md): f32/f16/bf16 as they are,
// int8 as F32 (said on stderr), a made-up vocabulary.
int run_export(const std::string& db, const std::string& path,
               const std::string& quantize, const std::string& format) {
  auto st = open_read_only(db);
  if (!st)
    return fail_with(st.error());
  auto ws = storage::weight_store::open(**st);
  if (!ws)
    return fail_with(ws.error());
  namespace gguf = storage::gguf;
  auto matrices = quantize == "q8_0"   ? gguf::ggml_type::q8_0
                  : quantize == "q4_0" ? gguf::ggml_type::q4_0
                                       : gguf::ggml_type::f32;
  auto report = gguf::export_model(**st, *ws, path, matrices);
  if (!report)
    return fail_with(report.error());
  if (report->int8_as_f32)
    std::fprintf(stderr,
                 "lockstep: %s is int8 (one scale per row), which GGUF has no "
                 "twin for: its values are written as F32\n",
                 db.c_str());
  if (format == "json") {
    nlohmann::json j = {{"db", db},
                        {"gguf", path},
                        {"model", model::to_json(ws->spec())},
                        {"tensors", report->tensors},
                        {"file_bytes", report->file_bytes},
                        {"int8_as_f32", report->int8_as_f32},
                        {"made_up_vocabulary", report->made_up_vocabulary},
                        {"seconds", report->seconds}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s exported to %s: %zu tensors, %.1f MB in %.2f s%s\n",
                ws->spec().name.c_str(), path.c_str(), report->tensors,
                report->file_bytes / 1e6, report->seconds,
                report->made_up_vocabulary ? " (made-up vocabulary)" : "");
  }
  return exit_ok;
}

// What a GGUF file holds and how lockstep reads it: the model's shape from
// its metadata (checked against every tensor), the tensor types, a tied
// head, the tensors it would not use. Exit 2 when it is not a llama model
// lockstep can take, naming the key or tensor.
int run_inspect(const std::string& path, const std::string& format) {
  namespace gguf = storage::gguf;
  auto f = gguf::gguf_file::open(path);
  if (!f)
    return fail_with(f.error());
  auto m = gguf::describe_model(*f);
  if (!m)
    return fail_with(m.error());
  nlohmann::json types = m->types;
  if (format == "json") {
    nlohmann::json j{{"file", path},
                     {"gguf_version", f->version()},
                     {"tensors", f->tensors().size()},
                     {"spec", model::to_json(m->spec)},
                     {"tied_head", m->tied_head},
                     {"tensor_types", types},
                     {"vocabulary_tokens", m->vocabulary_tokens},
                     {"unused_tensors", m->unused}};
    std::printf("%s\n", j.dump().c_str());
    return exit_ok;
  }
  const auto& s = m->spec;
  std::printf("%s: GGUF v%u, %zu tensors, llama architecture\n", path.c_str(),
              f->version(), f->tensors().size());
  std::printf("model %s: %u layers, d_model %u, %u heads (%u kv, head_dim "
              "%u), d_ff %u, vocab %u, context %u, rope_theta %g, rms_eps "
              "%g\n",
              s.name.c_str(), s.n_layers, s.d_model, s.n_heads, s.n_kv_heads,
              s.head_dim, s.d_ff, s.vocab, s.max_context, s.rope_theta,
              double(s.rms_eps));
  std::string t;
  for (const auto& [name, n] : m->types)
    t += (t.empty() ? "" : ", ") + std::to_string(n) + " " + name;
  std::printf("tensor types: %s; imports as %s%s\n", t.c_str(),
              model::to_string(s.weight_dtype),
              m->tied_head ? "; LM head tied to the embedding" : "");
  if (!m->unused.empty())
    std::printf("%zu tensors lockstep does not use (first: %s)\n",
                m->unused.size(), m->unused.front().c_str());
  return exit_ok;
}

} // namespace

void add_weights_commands(CLI::App& app, command_context& ctx) {
  auto* weights = app.add_subcommand("weights", "the weight store");
  weights->require_subcommand(1);

  auto init = std::make_shared<init_args>();
  auto* cmd = weights->add_subcommand(
      "init", "create (or resume creating) a weight store for a model");
  cmd->add_option("--model", init->model, "model preset")->required();
  cmd->add_option("--weight-seed", init->seed, "seed of the synthetic weights")
      ->required();
  cmd->add_option("--db", init->db, "store directory (created if missing)")
      ->required();
  cmd->add_option("--dtype", init->dtype,
                  "store weights in this dtype (f32, f16, bf16, int8) instead "
                  "of the preset's");
  add_output_option(*cmd, init->format);
  cmd->callback([init, &ctx] { ctx.exit_code = run_init(*init); });

  auto list_db = std::make_shared<std::string>();
  auto list_format = std::make_shared<std::string>("text");
  cmd = weights->add_subcommand("list", "list the tensors of a weight store");
  cmd->add_option("--db", *list_db, "store directory")->required();
  add_output_option(*cmd, *list_format);
  cmd->callback([list_db, list_format, &ctx] {
    ctx.exit_code = run_list(*list_db, *list_format);
  });

  auto verify_db = std::make_shared<std::string>();
  auto verify_format = std::make_shared<std::string>("text");
  auto verify_deep = std::make_shared<bool>(false);
  auto verify_gguf = std::make_shared<std::string>();
  cmd = weights->add_subcommand(
      "verify", "check every tile's checksum and shape; exit 1 on corruption");
  cmd->add_option("--db", *verify_db, "store directory")->required();
  cmd->add_flag("--deep", *verify_deep,
                "also compare every tile with the generator's weights (an "
                "imported store: with --gguf FILE's)");
  cmd->add_option("--gguf", *verify_gguf,
                  "--deep: the GGUF file an imported store came from");
  add_output_option(*cmd, *verify_format);
  cmd->callback([verify_db, verify_format, verify_deep, verify_gguf, &ctx] {
    ctx.exit_code =
        run_verify(*verify_db, *verify_format, *verify_deep, *verify_gguf);
  });

  auto import = std::make_shared<import_args>();
  cmd = weights->add_subcommand(
      "import", "a llama GGUF file into a weight store (resumable)");
  cmd->add_option("--gguf", import->gguf, "a GGUF file (llama architecture)")
      ->required();
  cmd->add_option("--db", import->db, "store directory (created if missing)")
      ->required();
  cmd->add_option("--dtype", import->dtype,
                  "store the matrices as f32, f16, bf16 or int8 (default: "
                  "the file's float type; f32 for quantized files)");
  add_output_option(*cmd, import->format);
  cmd->callback([import, &ctx] { ctx.exit_code = run_import(*import); });

  auto export_db = std::make_shared<std::string>();
  auto export_file = std::make_shared<std::string>();
  auto export_format = std::make_shared<std::string>("text");
  auto export_quantize = std::make_shared<std::string>();
  cmd = weights->add_subcommand(
      "export", "a weight store as a llama GGUF file that llama.cpp loads");
  cmd->add_option("--gguf", *export_file, "the GGUF file to write")
      ->required();
  cmd->add_option("--db", *export_db, "store directory")->required();
  cmd->add_option("--quantize", *export_quantize,
                  "write the matrices as Q8_0 or Q4_0 (ggml's reference "
                  "quantizers) instead of as stored")
      ->check(CLI::IsMember({"q8_0", "q4_0"}));
  add_output_option(*cmd, *export_format);
  cmd->callback([export_db, export_file, export_quantize, export_format,
                 &ctx] {
    ctx.exit_code = run_export(*export_db, *export_file, *export_quantize,
                               *export_format);
  });

  auto inspect_file = std::make_shared<std::string>();
  auto inspect_format = std::make_shared<std::string>("text");
  cmd = weights->add_subcommand(
      "inspect", "what a GGUF file holds and how lockstep would read it");
  cmd->add_option("--gguf", *inspect_file, "a GGUF file (llama architecture)")
      ->required();
  add_output_option(*cmd, *inspect_format);
  cmd->callback([inspect_file, inspect_format, &ctx] {
    ctx.exit_code = run_inspect(*inspect_file, *inspect_format);
  });
}

} // namespace lockstep::tools
