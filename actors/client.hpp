#pragma once

// A client of a running cluster: what `lockstep generate`, `status` and
// `down` (and the tests and benchmarks) use to talk to the head. One TCP
// connection to the coordinator; every call has a deadline: a dead or
// missing cluster is an error within it, never a hang.
//
// Thread-safety: one call at a time per client.

#include "actors/detail/control_channel.hpp"
#include "model/sampler.hpp"

#include <caf/expected.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace lockstep::actors {

struct cluster_address {
  std::string head;  // "127.0.0.1:40123"
  std::string token; // the cluster token
};

struct cluster_generation {
  std::vector<int32_t> tokens;
  std::string logits_sha256;
  double ttft_ms = 0;      // the head's: request received to first token
  double tokens_per_s = 0; // the head's: tokens / (received to last token)
  /// When each token reached this client, seconds after the request left.
  std::vector<double> token_arrival_s;
};

class cluster_client {
public:
  /// Errors: disconnected (nothing listens at the address within
  /// `timeout`).
  static caf::expected<cluster_client>
  connect(const cluster_address& address,
          std::chrono::milliseconds timeout = std::chrono::seconds(5));

  /// Runs one request; `on_token(index, token)` sees each token as it
  /// arrives. `idle_timeout`: the longest wait for the next message.
  /// Errors: the request's own (bad_request, overloaded, ... with the
  /// head's message), disconnected, timed_out.
  caf::expected<cluster_generation>
  generate(const std::vector<int32_t>& prompt, uint32_t max_tokens,
           const model::sampling_params& sampling,
           std::chrono::milliseconds idle_timeout = std::chrono::seconds(120),
           const std::function<void(uint32_t, int32_t)>& on_token = {});

  struct status_reply {
    bool ready = false;
    std::string json; // `lockstep status -o json`
  };
  caf::expected<status_reply>
  status(std::chrono::milliseconds timeout = std::chrono::seconds(5));

  /// Tells the head to stop the cluster (every host leaves).
  caf::error shutdown();

private:
  cluster_client(std::unique_ptr<detail::control_channel> ch,
                 std::string token)
      : channel_(std::move(ch))
      , token_(std::move(token)) {}

  caf::expected<detail::control_message>
  receive(std::chrono::milliseconds timeout);

  std::unique_ptr<detail::control_channel> channel_;
  std::string token_;
};

} // namespace lockstep::actors
