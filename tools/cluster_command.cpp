// lockstep up | down | status: start every host of a config as `lockstepd`
// processes on this machine, stop them, and ask the head how the cluster
// is doing (docs/cluster.md).

#include "tools/cli.hpp"
#include "tools/cluster_context.hpp"

#include "actors/detail/envelope.hpp"
#include "actors/simulation.hpp"
#include "common/progress.hpp"
#include "planner/cluster_config.hpp"
#include "storage/weight_store.hpp"

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace lockstep::tools {

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

struct up_options {
  std::string config;
  std::string model;
  std::string weights; // an imported model's store
  std::string dtype;
  uint64_t weight_seed = 42;
  std::string db_root;
  uint32_t batch = 1;
  uint32_t context = 0;
  std::string slot_mode = "logical";
  uint64_t slot_us = 0;
  uint32_t max_queue = 64;
  std::string prefill = "idle";
  uint64_t inject_send_delay_us = 0; // tests (hidden flag)
  std::string format = "text";
};

fs::path daemon_path() {
  std::error_code ec;
  auto self = fs::read_symlink("/proc/self/exe", ec);
  return (ec ? fs::path{"."} : self.parent_path()) / "lockstepd";
}

// Starts a detached lockstepd (its own session; output to `log`) and
// returns its pid, or -1.
pid_t spawn_daemon(const std::vector<std::string>& args, const fs::path& log,
                   const std::string& token) {
  pid_t pid = ::fork();
  if (pid != 0)
    return pid;
  ::setsid();
  int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd >= 0) {
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
  }
  int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null >= 0)
    ::dup2(null, STDIN_FILENO);
  ::setenv("LOCKSTEP_CLUSTER_TOKEN", token.c_str(), 1);
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (auto& a : copy)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  ::execv(argv[0], argv.data());
  std::fprintf(stderr, "lockstep up: cannot exec %s\n", argv[0]);
  ::_exit(127);
}

// Whether `pid` still runs. An exited process whose parent has not reaped
// it yet (a zombie: after `up` exits, init is the parent) has stopped, and
// its files (the store's lock among them) are closed.
bool alive(pid_t pid) {
  if (pid <= 0)
    return false;
  int status = 0;
  if (::waitpid(pid, &status, WNOHANG) == pid)
    return false; // our child, and it has exited
  std::ifstream stat{"/proc/" + std::to_string(pid) + "/stat"};
  std::string text;
  if (!std::getline(stat, text))
    return false;
  auto paren = text.rfind(')');
  if (paren == std::string::npos || paren + 2 >= text.size())
    return false;
  char state = text[paren + 2];
  return state != 'Z' && state != 'X';
}

std::string log_tail(const fs::path& log) {
  std::ifstream in{log};
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty())
      last = line;
  return last;
}

// Ends `pids`: they have `grace` to leave on their own, then SIGKILL.
void reap(const std::vector<int32_t>& pids, std::chrono::milliseconds grace) {
  auto deadline = std::chrono::steady_clock::now() + grace;
  for (;;) {
    bool any = false;
    for (auto p : pids)
      any = any || alive(p);
    if (!any)
      return;
    if (std::chrono::steady_clock::now() > deadline)
      break;
    std::this_thread::sleep_for(50ms);
  }
  for (auto p : pids)
    if (alive(p))
      ::kill(p, SIGKILL);
  for (auto p : pids)
    ::waitpid(p, nullptr, 0);
}

int run_up(const up_options& o) {
  auto t0 = std::chrono::steady_clock::now();
  if (auto ctx = read_context()) {
    auto client = actors::cluster_client::connect(ctx->address(), 2s);
    if (client && client->status(2s))
      return fail(exit_bad_input, "cluster " + ctx->cluster + " is up at " +
                                      ctx->head +
                                      " (run `lockstep down` first)");
    // A stale context: its processes are gone or hung.
    reap(ctx->pids, 0ms);
    remove_context();
  }
  if (o.model.empty() && o.weights.empty())
    return fail(exit_bad_input,
                "up: name the model: --model PRESET, or --weights DIR (an "
                "imported model's store)");
  if (!o.weights.empty())
    if (auto spec = storage::imported_spec(o.weights); !spec)
      return fail_with(spec.error());
  auto config = planner::load_cluster_config(o.config);
  if (!config)
    return fail_with(config.error());
  if (auto err = actors::check_simulation_memory(*config))
    return fail_with(err);
  fs::path run_dir = o.db_root.empty()
                         ? context_path().parent_path() / config->name
                         : fs::path{o.db_root};
  std::error_code ec;
  fs::create_directories(run_dir / "logs", ec);
  if (ec)
    return fail(exit_bad_input,
                "--db-root: cannot create " + run_dir.string());
  cluster_context ctx;
  ctx.cluster = config->name;
  ctx.config = fs::absolute(o.config).string();
  ctx.token = actors::detail::new_token();
  ctx.run_dir = fs::absolute(run_dir).string();
  auto daemon = daemon_path().string();
  auto addr_file = run_dir / "head.addr";
  fs::remove(addr_file, ec);
  uint32_t hosts = config->host_count();
  auto host_args = [&](uint32_t rank) {
    auto log = (run_dir / "logs" / ("host-" + std::to_string(rank) + ".log"))
                   .string();
    ctx.logs.push_back(log);
    std::vector<std::string> args{
        daemon,     "--config", ctx.config, "--rank", std::to_string(rank),
        "--db",     (run_dir / ("host-" + std::to_string(rank))).string(),
        "--log",    log, "--inject-send-delay-us",
        std::to_string(o.inject_send_delay_us)};
    if (!o.weights.empty()) {
      args.push_back("--weights");
      args.push_back(fs::absolute(o.weights).string());
    }
    return args;
  };
  auto abort_up = [&](const std::string& why) {
    reap(ctx.pids, 3s);
    remove_context();
    return fail(exit_problem, why);
  };
  // Rank 0 first: it plans and listens; the others join it.
  auto args0 = host_args(0);
  for (auto a : {std::string{"--listen"}, std::string{"127.0.0.1:0"},
                 std::string{"--addr-file"}, addr_file.string(),
                 std::string{"--model"}, o.model, std::string{"--weight-seed"},
                 std::to_string(o.weight_seed), std::string{"--batch"},
                 std::to_string(o.batch), std::string{"--context"},
                 std::to_string(o.context), std::string{"--slot-mode"},
                 o.slot_mode, std::string{"--slot-us"},
                 std::to_string(o.slot_us), std::string{"--max-queue"},
                 std::to_string(o.max_queue), std::string{"--prefill"},
                 o.prefill})
    args0.push_back(a);
  if (!o.dtype.empty()) {
    args0.push_back("--dtype");
    args0.push_back(o.dtype);
  }
  ctx.pids.push_back(spawn_daemon(args0, ctx.logs[0], ctx.token));
  progress_bar bar{"starting " + config->name + " (hosts ready)", hosts};
  size_t shown = 0;
  for (auto deadline = std::chrono::steady_clock::now() + 60s;;) {
    std::ifstream in{addr_file};
    if (std::getline(in, ctx.head) && !ctx.head.empty())
      break;
    if (!alive(ctx.pids[0]))
      return abort_up("the head (rank 0) exited: " + log_tail(ctx.logs[0]));
    if (std::chrono::steady_clock::now() > deadline)
      return abort_up("the head did not listen within 60 s (" +
                      ctx.logs[0] + ")");
    std::this_thread::sleep_for(20ms);
  }
  for (uint32_t r = 1; r < hosts; ++r) {
    auto args = host_args(r);
    args.push_back("--head");
    args.push_back(ctx.head);
    ctx.pids.push_back(spawn_daemon(args, ctx.logs[r], ctx.token));
  }
  if (auto err = write_context(ctx))
    return abort_up(render(err));
  // Ready when every host has loaded its tiles and started its transport.
  for (auto deadline = std::chrono::steady_clock::now() + 180s;;) {
    for (uint32_t r = 0; r < hosts; ++r)
      if (!alive(ctx.pids[r]))
        return abort_up("host " + std::to_string(r) +
                        " exited: " + log_tail(ctx.logs[r]));
    auto client = actors::cluster_client::connect(ctx.address(), 2s);
    if (client) {
      auto st = client->status(5s);
      if (st) {
        auto j = nlohmann::json::parse(st->json, nullptr, false);
        size_t ready = 0;
        if (j.is_object())
          for (const auto& h : j["hosts"])
            ready += h.value("ready", false) ? 1 : 0;
        if (ready > shown) {
          bar.advance(ready - shown);
          shown = ready;
        }
        if (j.is_object() && !j.value("failure", std::string{}).empty())
          return abort_up(j["failure"].get<std::string>());
        if (st->ready)
          break;
      }
    }
    if (std::chrono::steady_clock::now() > deadline)
      return abort_up("the cluster was not ready within 180 s (logs in " +
                      (run_dir / "logs").string() + ")");
    std::this_thread::sleep_for(100ms);
  }
  bar.finish();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                           t0)
                 .count();
  if (o.format == "json") {
    nlohmann::json j{{"cluster", ctx.cluster}, {"head", ctx.head},
                     {"hosts", hosts},         {"up_s", s},
                     {"run_dir", ctx.run_dir}, {"context", context_path()}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("cluster %s up: %u host processes, head %s, ready in %.1f s "
                "(logs in %s/logs)\n",
                ctx.cluster.c_str(), hosts, ctx.head.c_str(), s,
                ctx.run_dir.c_str());
  }
  return exit_ok;
}

int run_down() {
  auto ctx = read_context();
  if (!ctx)
    return fail_with(ctx.error());
  if (auto client = actors::cluster_client::connect(ctx->address(), 2s))
    client->shutdown();
  constexpr auto grace = 15s;
  reap(ctx->pids, grace);
  remove_context();
  std::error_code ec;
  fs::remove(fs::path{ctx->run_dir} / "head.addr", ec);
  std::printf("cluster %s down (%zu host processes ended)\n",
              ctx->cluster.c_str(), ctx->pids.size());
  return exit_ok;
}

int run_status(const std::string& cluster, const std::string& format) {
  auto address = resolve_cluster(cluster);
  if (!address)
    return fail_with(address.error());
  auto client = actors::cluster_client::connect(*address, 3s);
  if (!client)
    return fail_with(client.error());
  auto st = client->status(5s);
  if (!st)
    return fail_with(st.error());
  if (format == "json") {
    std::printf("%s\n", st->json.c_str());
    return exit_ok;
  }
  auto j = nlohmann::json::parse(st->json);
  std::printf("cluster    %s (%s), %s\n",
              j["cluster"].get<std::string>().c_str(),
              j["model"].get<std::string>().c_str(),
              st->ready ? "ready" : "starting");
  if (!j["failure"].get<std::string>().empty())
    std::printf("failure    %s\n", j["failure"].get<std::string>().c_str());
  std::printf("plan       %s, batch %u, context %u, %s slots\n",
              j["plan_hash"].get<std::string>().c_str(),
              j["batch"].get<uint32_t>(), j["context"].get<uint32_t>(),
              j["slot_mode"].get<std::string>().c_str());
  std::printf("requests   %zu running, %zu waiting; %llu steps run\n",
              j["requests_active"].get<size_t>(),
              j["requests_queued"].get<size_t>(),
              static_cast<unsigned long long>(j["steps_run"].get<uint64_t>()));
  for (const auto& h : j["hosts"])
    std::printf("host %-4u  pid %-7u %s  log %s\n", h["rank"].get<uint32_t>(),
                h["pid"].get<uint32_t>(),
                h["ready"].get<bool>() ? "ready   " : "starting",
                h["log"].get<std::string>().c_str());
  uint64_t ops = 0, bytes = 0, kernel_ns = 0, cpu_ns = 0;
  for (const auto& c : j["chips"]) {
    ops += c["ops_run"].get<uint64_t>();
    kernel_ns += c.value("kernel_ns", uint64_t{0});
  }
  for (const auto& h : j["hosts"])
    cpu_ns += h.value("cpu_ns", uint64_t{0});
  for (const auto& l : j["links"])
    bytes += l["bytes_sent"].get<uint64_t>();
  std::printf("chips      %zu running, %llu ops run; links %zu, %llu bytes "
              "sent (-o json: per chip and per link)\n",
              j["chips"].size(), static_cast<unsigned long long>(ops),
              j["links"].size(), static_cast<unsigned long long>(bytes));
  std::printf("cpu        %.2f s in the host processes since start-up, "
              "%.2f s of it in the chips' ops\n",
              cpu_ns * 1e-9, kernel_ns * 1e-9);
  return exit_ok;
}

} // namespace

void add_cluster_commands(CLI::App& app, command_context& ctx) {
  auto up = std::make_shared<up_options>();
  auto* cmd = app.add_subcommand(
      "up", "start every host of a config as processes on this machine");
  cmd->add_option("config", up->config, "cluster config (YAML)")->required();
  cmd->add_option("--model", up->model,
                  "model preset (or the imported store's model: --weights)");
  cmd->add_option("--weights", up->weights,
                  "an imported model's store (weights import --gguf): "
                  "every host loads its shards from it");
  cmd->add_option("--dtype", up->dtype, "weight dtype (default: the preset's)");
  cmd->add_option("--weight-seed", up->weight_seed,
                  "seed of the generated weights (default 42)");
  cmd->add_option("--db-root", up->db_root,
                  "stores and logs (default: next to the context file)");
  cmd->add_option("--batch", up->batch, "sequences served at once")
      ->check(CLI::Range(1u, 4096u));
  cmd->add_option("--context", up->context,
                  "KV-cache tokens per sequence (default: the model's)");
  cmd->add_option("--slot-mode", up->slot_mode, "logical | paced")
      ->check(CLI::IsMember({"logical", "paced"}));
  cmd->add_option("--slot-us", up->slot_us,
                  "paced slot length in microseconds");
  cmd->add_option("--max-queue", up->max_queue,
                  "requests waiting for a batch slot at most; beyond it a "
                  "request is refused (overloaded, exit 3) (default 64)")
      ->check(CLI::Range(0u, 1u << 20));
  cmd->add_option("--prefill", up->prefill,
                  "when prompts go through the plan's prefill program: idle "
                  "(while no request generates; the default), interleave "
                  "(chunks alternate with decode steps: sooner first tokens, "
                  "longer gaps for the others), off (a token a decode step); "
                  "paced clusters: off")
      ->check(CLI::IsMember({"off", "idle", "interleave"}));
  // Tests only (not in --help): every host's paced sends leave this late.
  cmd->add_option("--inject-send-delay-us", up->inject_send_delay_us)
      ->group("");
  add_output_option(*cmd, up->format);
  cmd->callback([up, &ctx] { ctx.exit_code = run_up(*up); });

  auto* down = app.add_subcommand("down", "stop the running cluster");
  down->callback([&ctx] { ctx.exit_code = run_down(); });

  auto cluster = std::make_shared<std::string>();
  auto format = std::make_shared<std::string>("text");
  auto* status = app.add_subcommand("status", "how the running cluster is");
  status->add_option("--cluster", *cluster,
                     "the head's address (default: the context file)");
  add_output_option(*status, *format);
  status->callback([cluster, format, &ctx] {
    ctx.exit_code = run_status(*cluster, *format);
  });
}

} // namespace lockstep::tools
