// lockstep-bench planner: planner time and peak memory at full scale, the
// incremental re-plan, and schedule quality (latency / lower bound).
//
// Each case runs in a forked child so its peak RSS is its own.

#include "bench/benches.hpp"
#include "bench/stats.hpp"

#include "planner/planner.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace lockstep::bench {

namespace {

using nlohmann::json;

struct case_spec {
  const char* config;
  const char* model;
};

// Runs one plan (and, if asked, one re-plan) in a child; returns its
// figures as JSON, or an "error" member.
json run_case(const std::string& root, const case_spec& c, bool with_replan) {
  int fds[2];
  if (::pipe(fds) != 0)
    return {{"error", "pipe failed"}};
  pid_t child = ::fork();
  if (child == 0) {
    ::close(fds[0]);
    json out;
    auto config = planner::load_cluster_config(root + "/cluster_configs/"
                                               + c.config + ".yaml");
    auto spec = model::find_preset(c.model);
    if (!config || !spec) {
      out["error"] = config ? render(spec.error()) : render(config.error());
    } else {
      double t0 = now_s();
      auto r = planner::make_plan(*config, *spec, {});
      double t1 = now_s();
      if (!r) {
        out["error"] = render(r.error());
      } else {
        const auto& pr = r->p.predicted;
        out = {{"plan_s", t1 - t0},
               {"verified", r->verdict.ok()},
               {"chips", config->chip_count()},
               {"chips_used", r->p.chips_used.size()},
               {"ops", r->p.decode.ops.size() + r->p.prefill.ops.size()},
               {"transfers", r->p.decode.transfers.size() + r->p.prefill.transfers.size()},
               {"token_latency_us", pr.token_latency_us},
               {"lower_bound_us", pr.lower_bound_token_latency_us},
               {"latency_over_bound",
                pr.token_latency_us / pr.lower_bound_token_latency_us}};
        if (with_replan) {
          uint32_t failed = r->p.group_chips[r->p.group_chips.size() / 2];
          double t2 = now_s();
          auto rp = planner::replan(*config, r->p, failed);
          out["replan_s"] = now_s() - t2;
          out["replan_verified"] = rp && rp->result.verdict.ok();
        }
      }
    }
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    out["peak_rss_mib"] = ru.ru_maxrss / 1024.0;
    auto text = out.dump();
    [[maybe_unused]] auto n = ::write(fds[1], text.data(), text.size());
    ::close(fds[1]);
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0)
    text.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  try {
    return json::parse(text);
  } catch (const json::exception&) {
    return {{"error", "child failed (status " + std::to_string(status) + ")"}};
  }
}

} // namespace

int run_planner(int argc, char** argv) {
  CLI::App app{"planner benchmarks"};
  std::string format = "text";
  std::string root = LOCKSTEP_SOURCE_DIR;
  int reps = 3;
  app.add_option("-o,--output", format)->check(CLI::IsMember({"text", "json"}));
  app.add_option("--source-dir", root, "where cluster_configs/ lives");
  app.add_option("--reps", reps, "runs per case (median)")
    ->check(CLI::Range(1, 20));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  const case_spec cases[] = {{"groq-64", "llama-3-8b"},
                             {"groq-576", "llama-2-70b"},
                             {"groq-1512", "falcon-180b"},
                             {"groq-10440", "llama-2-70b"}};
  json out = json::array();
  for (const auto& c : cases) {
    bool replan = std::string{c.config} == "groq-1512";
    std::vector<double> plan_s, rss, replan_s;
    json last;
    for (int i = 0; i < reps; ++i) {
      last = run_case(root, c, replan);
      if (last.contains("error"))
        break;
      plan_s.push_back(last["plan_s"]);
      rss.push_back(last["peak_rss_mib"]);
      if (replan)
        replan_s.push_back(last["replan_s"]);
    }
    json row = last;
    row["config"] = c.config;
    row["model"] = c.model;
    if (!last.contains("error")) {
      row["plan_s"] = median(plan_s);
      row["peak_rss_mib"] = median(rss);
      row["plan_us_per_chip"] = median(plan_s) * 1e6
                                / last["chips"].get<double>();
      if (replan)
        row["replan_s"] = median(replan_s);
    }
    out.push_back(row);
    if (format == "text") {
      if (row.contains("error")) {
        std::printf("%-11s %-12s error: %s\n", c.config, c.model,
                    row["error"].get<std::string>().c_str());
        continue;
      }
      std::printf("%-11s %-12s %6.0f chips  plan %6.3f s (%5.1f us/chip)  "
                  "peak %7.1f MiB  latency/bound %5.2f  %s",
                  c.config, c.model, row["chips"].get<double>(),
                  row["plan_s"].get<double>(),
                  row["plan_us_per_chip"].get<double>(),
                  row["peak_rss_mib"].get<double>(),
                  row["latency_over_bound"].get<double>(),
                  row["verified"].get<bool>() ? "verified" : "REJECTED");
      if (replan)
        std::printf("  re-plan %.3f s", row["replan_s"].get<double>());
      std::printf("\n");
      std::fflush(stdout);
    }
  }
  if (format == "json")
    std::printf("%s\n", json{{"cases", out}, {"reps", reps}}.dump(2).c_str());
  else
    std::printf("targets: plan <= 10 s and <= 2048 MiB each; re-plan <= 1 s at "
                "1512 chips; latency/bound <= 1.25\n");
  return 0;
}

} // namespace lockstep::bench
