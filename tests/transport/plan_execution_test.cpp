// The join of planner and transport: a plan compiled by the planner for a
// local cluster is executed by host_transport in real processes (one per
// host of the config), as the actors will run it — a progress thread and one
// worker thread per chip posting sends as their inputs arrive — with the
// transport's settings read from the config's `transport:` section through
// the one config loader. And the same cluster idle: hosts blocked in wait()
// must not spin.

#include "planner/plan.capnp.h"
#include "planner/plan_codec.hpp"
#include "planner/planner.hpp"
#include "tests/transport/multi_host.hpp"
#include "tests/transport/threaded_host.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <sys/resource.h>

#include <cstring>
#include <fstream>

namespace lockstep::transport {
namespace {

using namespace std::chrono_literals;

// A program's SlotTable as a message of its own, as a host would receive it.
std::vector<std::byte> slot_table_of(const std::string& plan_bytes,
                                     planner::program_kind kind) {
  std::vector<::capnp::word> words(plan_bytes.size() / 8);
  std::memcpy(words.data(), plan_bytes.data(), plan_bytes.size());
  ::capnp::FlatArrayMessageReader reader{
      kj::arrayPtr(words.data(), words.size())};
  ::capnp::MallocMessageBuilder table;
  auto root = reader.getRoot<planner::schema::Plan>();
  table.setRoot(kind == planner::program_kind::decode
                    ? root.getDecode().getSlotTable()
                    : root.getPrefill().getSlotTable());
  auto flat = ::capnp::messageToFlatArray(table);
  auto bytes = flat.asBytes();
  std::vector<std::byte> out(bytes.size());
  std::memcpy(out.data(), bytes.begin(), bytes.size());
  return out;
}

struct local_64 {
  planner::cluster_config config;
  std::vector<std::byte> decode;
  std::vector<std::byte> prefill;
};

// The local-64 config's plan of tiny-64, both programs' tables.
const local_64& local_64_tables() {
  static const local_64 tables = [] {
    auto config = planner::load_cluster_config(
        std::string{LOCKSTEP_SOURCE_DIR} + "/cluster_configs/local-64.yaml");
    if (!config)
      throw std::runtime_error(render(config.error()));
    auto plan = planner::make_plan(*config, *model::find_preset("tiny-64"), {});
    if (!plan || !plan->verdict.ok())
      throw std::runtime_error("local-64 plan failed");
    auto bytes = planner::encode_plan(*config, plan->p);
    return local_64{*config,
                    slot_table_of(bytes, planner::program_kind::decode),
                    slot_table_of(bytes, planner::program_kind::prefill)};
  }();
  return tables;
}

// Both programs' tables (decode, with the token loop through host 0's
// endpoint, and prefill) over libfabric in 8 processes.
class plan_execution : public ::testing::TestWithParam<planner::program_kind> {
};

TEST_P(plan_execution, local_64_plan_runs_over_libfabric_in_8_processes) {
  const auto& l = local_64_tables();
  auto config = planner::load_cluster_config(std::string{LOCKSTEP_SOURCE_DIR} +
                                             "/cluster_configs/local-64.yaml");
  ASSERT_TRUE(config) << render(config.error());
  auto plan = planner::make_plan(*config, *model::find_preset("tiny-64"), {});
  ASSERT_TRUE(plan) << render(plan.error());
  ASSERT_TRUE(plan->verdict.ok());
  const auto& table =
      GetParam() == planner::program_kind::decode ? l.decode : l.prefill;
  auto program = slot_program::load(table);
  ASSERT_TRUE(program) << render(program.error());
  EXPECT_EQ(program->transfers().size(),
            plan->p.program(GetParam()).transfers.size());
  // The token loop's transfers start or end at host 0's endpoint.
  EXPECT_NE(program->arena({0, host_endpoint_chip}), nullptr);
  uint32_t hosts = static_cast<uint32_t>(config->chips_per_host.size());
  ASSERT_EQ(program->hosts(), hosts);

  test::temp_dir dir;
  auto settings = config->transport; // provider shm, logical, from the file
  const uint64_t steps = 5;
  std::vector<int> pids;
  auto codes = test::run_hosts(
      hosts,
      [&](uint32_t host) {
        transport_options opts;
        opts.host = host;
        opts.settings = settings;
        opts.startup_timeout = 60s;
        auto opened = test::open_host(table, opts, dir.path());
        auto& memory = opened.memory;
        auto& t = opened.transport;
        if (!t) {
          std::fprintf(stderr, "host %u: %s\n", host,
                       render(t.error()).c_str());
          return 3;
        }
        if (auto err = test::run_threaded(**t, memory, steps)) {
          std::fprintf(stderr, "host %u: %s\n", host, render(err).c_str());
          return 4;
        }
        // Every transfer into this host arrived once per step, none refused.
        const auto& p = (*t)->program();
        for (uint32_t li = 0; li < p.links().size(); ++li) {
          const auto& link = p.links()[li];
          if (link.dst.host != host)
            continue;
          auto c = (*t)->counters(li);
          if (c.transfers_received != steps * link.transfers.size() ||
              c.refused_unscheduled + c.refused_duplicate + c.refused_stale +
                      c.refused_ahead !=
                  0) {
            std::fprintf(stderr, "host %u: link %s received %llu\n", host,
                         link.name.c_str(),
                         (unsigned long long)c.transfers_received);
            return 6;
          }
        }
        return (*t)->close() ? 5 : 0;
      },
      120s, &pids);
  for (uint32_t h = 0; h < hosts; ++h)
    EXPECT_EQ(codes[h], 0) << "host " << h;
  for (const auto& name : test::shm_segments_of(pids)) {
    ADD_FAILURE() << "leaked /dev/shm segment " << name;
    std::filesystem::remove(std::filesystem::path{"/dev/shm"} / name);
  }
}

INSTANTIATE_TEST_SUITE_P(programs, plan_execution,
                         ::testing::Values(planner::program_kind::decode,
                                           planner::program_kind::prefill),
                         [](const auto& info) {
                           return std::string{planner::to_string(info.param)};
                         });

// No busy-spinning across processes: the 8 hosts of local-64, each blocked
// in wait() with nothing to do, cost a small fraction of one core in sum.
// Each child measures its own CPU time (getrusage: all its threads) over
// the idle window, after start-up. The assertion is loose (a shared CI
// machine); the figure is printed (docs/transport.md).
struct idle_case {
  const char* name;
  const char* provider;
  slot_mode mode;
  int seconds;
};

class idle_hosts : public ::testing::TestWithParam<idle_case> {};

TEST_P(idle_hosts, eight_idle_hosts_use_a_small_fraction_of_one_core) {
  const auto& c = GetParam();
  const auto& table = local_64_tables().decode;
  auto settings = local_64_tables().config.transport;
  settings.provider = c.provider;
  settings.mode = c.mode;
  settings.slot_ns = 1'000'000;
  const uint32_t hosts = 8;
  test::temp_dir dir;
  std::vector<int> pids;
  auto codes = test::run_hosts(
      hosts,
      [&](uint32_t host) {
        transport_options opts;
        opts.host = host;
        opts.settings = settings;
        opts.startup_timeout = 60s;
        auto opened = test::open_host(table, opts, dir.path());
        auto& t = opened.transport;
        if (!t) {
          std::fprintf(stderr, "host %u: %s\n", host,
                       render(t.error()).c_str());
          return 3;
        }
        auto cpu_ns = [] {
          rusage r{};
          getrusage(RUSAGE_SELF, &r);
          return (int64_t{r.ru_utime.tv_sec} + r.ru_stime.tv_sec) *
                     1'000'000'000 +
                 (int64_t{r.ru_utime.tv_usec} + r.ru_stime.tv_usec) * 1000;
        };
        auto cpu0 = cpu_ns();
        auto wall0 = std::chrono::steady_clock::now();
        auto until = wall0 + std::chrono::seconds(c.seconds);
        std::vector<transport_event> events;
        uint64_t waits = 0;
        while (std::chrono::steady_clock::now() < until) {
          events.clear();
          if (auto err = (*t)->wait(events,
                                    until - std::chrono::steady_clock::now())) {
            std::fprintf(stderr, "host %u: %s\n", host, render(err).c_str());
            return 4;
          }
          ++waits;
        }
        auto cpu = cpu_ns() - cpu0;
        auto wall = std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now() - wall0)
                        .count();
        std::ofstream{dir.path() / ("idle-" + std::to_string(host))}
            << cpu << " " << wall << " " << waits << " "
            << (*t)->counters().idle_sleeps << "\n";
        return (*t)->close() ? 5 : 0;
      },
      120s, &pids);
  double cpu = 0, wall = 0;
  uint64_t sleeps = 0;
  for (uint32_t h = 0; h < hosts; ++h) {
    EXPECT_EQ(codes[h], 0) << "host " << h;
    std::ifstream in{dir.path() / ("idle-" + std::to_string(h))};
    double c_ns = 0, w_ns = 0;
    uint64_t waits = 0, s = 0;
    in >> c_ns >> w_ns >> waits >> s;
    cpu += c_ns;
    wall = std::max(wall, w_ns);
    sleeps += s;
  }
  double share = cpu / wall;
  std::printf("%s: %u idle hosts used %.2f%% of one core in sum over %.1f s "
              "(%.1f ms CPU, %llu sleeps)\n",
              c.name, hosts, 100 * share, wall / 1e9, cpu / 1e6,
              static_cast<unsigned long long>(sleeps));
  EXPECT_LT(share, 0.10);
  for (const auto& name : test::shm_segments_of(pids)) {
    ADD_FAILURE() << "leaked /dev/shm segment " << name;
    std::filesystem::remove(std::filesystem::path{"/dev/shm"} / name);
  }
}

INSTANTIATE_TEST_SUITE_P(
    providers, idle_hosts,
    ::testing::Values(idle_case{"shm_logical", "shm", slot_mode::logical, 5},
                      idle_case{"shm_paced", "shm", slot_mode::paced, 3},
                      idle_case{"tcp_logical", "tcp;ofi_rxm",
                                slot_mode::logical, 3}),
    [](const auto& info) { return std::string{info.param.name}; });

} // namespace
} // namespace lockstep::transport
