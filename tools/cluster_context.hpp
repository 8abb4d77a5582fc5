#pragma once

// Where the CLI finds the running cluster, as kubectl keeps its context: a
// JSON file (mode 0600: it holds the cluster token) written by `lockstep
// up`, read by `generate`, `status` and `down`, removed by `down`.
// `LOCKSTEP_CONTEXT` overrides its path (tests run clusters side by side);
// the default is ~/.lockstep/context.json.

#include "actors/client.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace lockstep::tools {

struct cluster_context {
  std::string cluster;            // the config's name
  std::string config;             // its path
  std::string head;               // the coordinator's address
  std::string token;              // the cluster token
  std::string run_dir;            // stores and logs live here
  std::vector<int32_t> pids;      // host processes, by rank
  std::vector<std::string> logs;  // their logs, by rank

  actors::cluster_address address() const { return {head, token}; }
};

std::filesystem::path context_path();

/// Errors: invalid_input-kind "no cluster is up (no context at PATH)", or
/// a corrupt file named.
caf::expected<cluster_context> read_context();
caf::error write_context(const cluster_context& c);
void remove_context();

/// The cluster to talk to: --cluster ADDR (with the token from
/// $LOCKSTEP_CLUSTER_TOKEN or the context file), else the context file.
caf::expected<actors::cluster_address>
resolve_cluster(const std::string& cluster_flag);

} // namespace lockstep::tools
