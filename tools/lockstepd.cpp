// lockstepd — one host of a cluster: a host actor and its chip actors; on
// rank 0 also the coordinator. `lockstep up` starts one per host of a
// config; any launcher can start them by hand (docs/cluster.md):
//
//   rank 0:  lockstepd --config C --rank 0 --listen 127.0.0.1:0
//                      --addr-file F --db DIR --model M [--weight-seed S]
//                      [--batch B] [--context N] [--slot-mode logical|paced]
//                      [--slot-us N]
//   rank r:  lockstepd --config C --rank r --head ADDR --db DIR
//
// The cluster token comes from --token, else $LOCKSTEP_CLUSTER_TOKEN. The
// process exits when the cluster shuts down (0) or this host fails (1;
// 2 when the head refused it).

#include "actors/coordinator.hpp"
#include "actors/host_actor.hpp"
#include "model/fp_env.hpp"
#include "planner/plan_codec.hpp"
#include "planner/planner.hpp"
#include "storage/weight_store.hpp"

#include <CLI/CLI.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/all.hpp>

#include <atomic>
#include <malloc.h>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace {

using namespace lockstep;

struct daemon_options {
  std::string config;
  uint32_t rank = 0;
  std::string head;
  std::string listen = "127.0.0.1:0";
  std::string addr_file;
  std::string db;
  std::string token;
  std::string log;
  // Rank 0: what the cluster runs.
  std::string model;
  std::string dtype;
  uint64_t weight_seed = 42;
  uint32_t batch = 1;
  uint32_t context = 0;
  std::string slot_mode = "logical";
  uint64_t slot_us = 0;
  uint32_t max_queue = 64;
  std::string prefill = "idle";
  std::string weights; // an imported model's store (every rank)
  uint64_t inject_send_delay_us = 0; // tests: late paced sends
};

int fail(int code, const std::string& what) {
  std::fprintf(stderr, "lockstepd: %s\n", what.c_str());
  return code;
}

// Writes `text` to `path` atomically (a reader sees all of it or nothing).
bool write_atomically(const std::string& path, const std::string& text) {
  auto tmp = path + ".tmp";
  {
    std::ofstream out{tmp};
    if (!(out << text))
      return false;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  return !ec;
}

int run(daemon_options o) {
  if (o.token.empty())
    if (const char* env = std::getenv("LOCKSTEP_CLUSTER_TOKEN"))
      o.token = env;
  if (o.token.empty())
    return fail(2, "no cluster token: pass --token or set "
                   "LOCKSTEP_CLUSTER_TOKEN (lockstep up keeps it in the "
                   "context file)");
  auto config = planner::load_cluster_config(o.config);
  if (!config)
    return fail(2, render(config.error()));
  if (o.rank >= config->host_count())
    return fail(2, "--rank " + std::to_string(o.rank) + ": " + config->name +
                       " has " + std::to_string(config->host_count()) +
                       " hosts");
  // Without --head this process is the head (rank 0 only): it plans and
  // coordinates. With --head it joins one, whatever its rank.
  if (o.head.empty() && o.rank != 0)
    return fail(2, "--head ADDR is needed for rank " + std::to_string(o.rank));

  caf::actor_system_config cfg;
  cfg.add_message_type<actors::arrived>("arrived");
  // Work sharing, not CAF's default work stealing: idle stealing workers
  // poll (25 ms of 50 us naps after every message, then a 10 ms timer),
  // which costs a local cluster of 8-16 processes on 2 cores ~6% of a core
  // while idle; sharing workers block on a condition variable (~0.3%). It is
  // also faster here (local-64 ~90 vs ~51 tokens/s side by side, with
  // stealing's polling raised to 1000 spins; local-8 1,100-1,350 either
  // way, run to run): a chip's arrival wakes a blocked worker at once
  // instead of waiting for a stealing worker to look.
  cfg.set("scheduler.policy", caf::atom("sharing"));
  caf::actor_system sys{cfg};
  std::atomic<int> exit_code{0};
  caf::actor coordinator;
  std::string head = o.head;

  if (head.empty()) {
    // The plan: what every host runs. Paced mode plans in the paced slot.
    // The model: a preset, or an imported store's own (--weights).
    caf::expected<model::model_spec> spec{caf::error{}};
    if (!o.weights.empty()) {
      auto imported = storage::imported_spec(o.weights);
      if (!imported)
        return fail(2, render(imported.error()));
      spec = std::move(*imported);
      if (!o.model.empty() && o.model != spec->name)
        return fail(2, "--model " + o.model + ": the store " + o.weights +
                           " holds " + spec->name);
    } else {
      spec = model::find_preset(o.model);
    }
    if (!spec)
      return fail(2, render(spec.error()));
    if (!o.dtype.empty()) {
      auto t = model::parse_dtype(o.dtype);
      if (!t)
        return fail(2, render(t.error()));
      spec->weight_dtype = *t;
    }
    if (o.slot_mode != "logical" && o.slot_mode != "paced")
      return fail(2, "--slot-mode: expected logical or paced");
    auto planning = *config;
    if (o.slot_us != 0)
      planning.transport.slot_ns = o.slot_us * 1000;
    auto made = planner::make_plan(planning, *spec,
                                   {o.batch, o.context, {}});
    if (!made)
      return fail(2, render(made.error()));
    if (!made->verdict.ok())
      return fail(1, "the plan fails verification: " +
                         made->verdict.violations.front());
    auto listener = actors::detail::control_listener::listen(o.listen);
    if (!listener)
      return fail(1, render(listener.error()));
    head = (*listener)->address();
    actors::coordinator_args args;
    args.config = *config;
    args.plan_bytes = planner::encode_plan(planning, made->p);
    args.plan = std::move(made->p);
    args.weight_seed = o.weight_seed;
    args.token = o.token;
    args.slot_mode = o.slot_mode;
    args.slot_ns = planning.transport.slot_ns;
    args.max_queue = o.max_queue;
    auto policy = actors::detail::parse_prefill_policy(o.prefill);
    if (!policy)
      return fail(2, "--prefill " + o.prefill +
                         ": expected off, idle or interleave");
    args.prefill = *policy;
    args.listener = std::move(*listener);
    coordinator = sys.spawn<actors::coordinator>(std::move(args));
    if (!o.addr_file.empty() && !write_atomically(o.addr_file, head + "\n"))
      return fail(1, "cannot write " + o.addr_file);
    std::fprintf(stderr, "lockstepd: head of %s listening on %s\n",
                 config->name.c_str(), head.c_str());
  }

  actors::host_args h;
  h.config = *config;
  h.rank = o.rank;
  h.head = head;
  h.token = o.token;
  h.db = o.db;
  h.weights = o.weights;
  h.log = o.log;
  h.coordinator = coordinator;
  h.exit_code = &exit_code;
  h.inject_send_delay_ns = static_cast<int64_t>(o.inject_send_delay_us) * 1000;
  auto host = sys.spawn<actors::host_actor, caf::detached>(std::move(h));
  if (coordinator) {
    // The coordinator outlives its own host's actor only to see the
    // others leave; when the host actor is gone, it must not hold the
    // process forever.
    caf::scoped_actor self{sys};
    self->monitor(host);
    self->receive([&](const caf::down_msg&) {});
    anon_send(coordinator, actors::failed{"the head's own host left"});
  }
  sys.await_all_actors_done();
  return exit_code.load();
}

} // namespace

int main(int argc, char** argv) {
  // A host's large transient buffers (verifying the plan, loading tiles)
  // must go back to the kernel when freed: its RSS is meant to be its
  // arenas plus what it keeps. glibc raises its mmap threshold to the size
  // of each mapped block freed, after which such buffers come from the
  // heap and stay. A fixed threshold (the default, 128 KiB) keeps them
  // mapped.
  ::mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  if (auto err = lockstep::model::check_fp_environment())
    return fail(1, lockstep::render(err));
  daemon_options o;
  CLI::App app{"lockstepd: one host of a lockstep cluster"};
  app.add_option("--config", o.config, "cluster config (YAML)")->required();
  app.add_option("--rank", o.rank, "this host's index in the config")
      ->required();
  app.add_option("--head", o.head, "the coordinator's address (rank > 0)");
  app.add_option("--listen", o.listen,
                 "rank 0: where the coordinator listens (port 0: any)");
  app.add_option("--addr-file", o.addr_file,
                 "rank 0: write the listening address here");
  app.add_option("--db", o.db, "this host's weight store")->required();
  app.add_option("--token", o.token,
                 "the cluster token (else $LOCKSTEP_CLUSTER_TOKEN)");
  app.add_option("--log", o.log, "where this host logs (shown in status)");
  app.add_option("--model", o.model, "rank 0: model preset");
  app.add_option("--weights", o.weights,
                 "an imported model's store (weights import): rank 0 plans "
                 "its model, every host loads its shards from it");
  app.add_option("--dtype", o.dtype, "rank 0: weight dtype");
  app.add_option("--weight-seed", o.weight_seed,
                 "rank 0: seed of generated weights (default 42)");
  app.add_option("--batch", o.batch, "rank 0: sequences the plan serves")
      ->check(CLI::Range(1u, 4096u));
  app.add_option("--context", o.context,
                 "rank 0: KV-cache tokens per sequence (0: the model's)");
  app.add_option("--slot-mode", o.slot_mode, "rank 0: logical | paced");
  app.add_option("--slot-us", o.slot_us,
                 "rank 0: paced slot length (plans are made in it)");
  app.add_option("--inject-send-delay-us", o.inject_send_delay_us,
                 "testing: paced sends of this host leave this late (slot "
                 "misses on purpose)");
  app.add_option("--max-queue", o.max_queue,
                 "rank 0: requests waiting for a batch slot at most");
  app.add_option("--prefill", o.prefill,
                 "rank 0: when prompts use the prefill program: off | idle | "
                 "interleave");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0)
      return app.exit(e);
    return fail(2, e.what());
  }
  if (o.head.empty() && o.model.empty() && o.weights.empty())
    return fail(2, "--model (or --weights) is needed for the head (rank 0 "
                   "without --head)");
  return run(std::move(o));
}
