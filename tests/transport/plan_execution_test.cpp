// The join of planner and transport: a plan compiled by the planner for a
// local cluster is executed by the slotted transport in real processes (one
// per host of the config), with the transport's settings read from the
// config's `transport:` section through the one config loader.

#include "planner/plan.capnp.h"
#include "planner/plan_codec.hpp"
#include "planner/planner.hpp"
#include "tests/transport/multi_host.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <cstring>

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

// Both programs' tables (decode, with the token loop through host 0's
// endpoint, and prefill) over libfabric in 8 processes.
class plan_execution
    : public ::testing::TestWithParam<planner::program_kind> {};

TEST_P(plan_execution, local_64_plan_runs_over_libfabric_in_8_processes) {
  auto config = planner::load_cluster_config(std::string{LOCKSTEP_SOURCE_DIR} +
                                             "/cluster_configs/local-64.yaml");
  ASSERT_TRUE(config) << render(config.error());
  auto plan = planner::make_plan(*config, *model::find_preset("tiny-64"), {});
  ASSERT_TRUE(plan) << render(plan.error());
  ASSERT_TRUE(plan->verdict.ok());
  auto table = slot_table_of(planner::encode_plan(*config, plan->p), GetParam());
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
  auto codes = test::run_hosts(
      hosts,
      [&](uint32_t host) {
        auto prog = slot_program::load(table);
        if (!prog)
          return 2;
        file_rendezvous rv{dir.path()};
        transport_options opts;
        opts.host = host;
        opts.settings = settings;
        opts.startup_timeout = 60s;
        auto t = slotted_transport::create(opts, std::move(*prog), rv);
        if (!t) {
          std::fprintf(stderr, "host %u: %s\n", host,
                       render(t.error()).c_str());
          return 3;
        }
        if (auto err = test::drive(**t, 3)) {
          std::fprintf(stderr, "host %u: %s\n", host, render(err).c_str());
          return 4;
        }
        return (*t)->close() ? 5 : 0;
      },
      120s);
  for (uint32_t h = 0; h < hosts; ++h)
    EXPECT_EQ(codes[h], 0) << "host " << h;
}

INSTANTIATE_TEST_SUITE_P(programs, plan_execution,
                         ::testing::Values(planner::program_kind::decode,
                                           planner::program_kind::prefill),
                         [](const auto& info) {
                           return std::string{planner::to_string(info.param)};
                         });

} // namespace
} // namespace lockstep::transport
