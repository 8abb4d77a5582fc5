#pragma once

// The coordinator (rank 0): membership, the plan, its distribution,
// admission and batching of client requests into the plan's batch slots,
// sampling and token streaming — and it runs the head host's endpoint (the
// sampler node of the plan), whose feed and sample ops close the token loop.
//
// Hosts connect and Join with the cluster token; when every rank of the
// config has joined, each gets the Setup (the verified plan, the weight
// seed, the slot settings); hosts relay their transport hellos through it
// (FetchHello is answered when the hello is there); when every host is
// Ready, Start. Clients send Generate, StatusRequest or Shutdown.
//
// Steps: while any request holds a slot or waits for one, the coordinator
// admits at the step boundary, picks the step's program (a prefill chunk
// or a decode step: detail/request_slots.hpp), runs its feed ops (their
// sends leave for the embedding chips), and when every logit slice of a
// micro-batch has arrived runs its sample; after the last sample of the
// step, the next. Idle, nothing runs anywhere.

#include "actors/detail/connection_hub.hpp"
#include "actors/detail/programs.hpp"
#include "actors/detail/request_slots.hpp"
#include "actors/messages.hpp"
#include "planner/cluster_config.hpp"
#include "planner/plan.hpp"

#include <caf/event_based_actor.hpp>

#include <array>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace lockstep::actors {

struct coordinator_args {
  planner::cluster_config config;
  planner::plan plan;         // verified
  std::string plan_bytes;     // encoded, sent to every host
  uint64_t weight_seed = 0;
  std::string token;          // the cluster token
  std::string slot_mode;      // logical | paced
  uint64_t slot_ns = 0;
  size_t max_queue = 64;
  // When prompts go through the prefill program (if the cluster runs it).
  detail::prefill_policy prefill = detail::prefill_policy::idle;
  std::unique_ptr<detail::control_listener> listener;
};

class coordinator : public caf::event_based_actor {
public:
  coordinator(caf::actor_config& cfg, coordinator_args args);
  ~coordinator() override;

  caf::behavior make_behavior() override;
  void on_exit() override; // drops the handles that would keep actors alive

private:
  struct host_state {
    uint64_t connection = 0;
    uint32_t pid = 0;
    bool ready = false;
    std::string log;
    uint64_t cpu_ns = 0; // the process's CPU time at its last heartbeat
    std::vector<std::pair<std::string, std::vector<uint64_t>>> chips;
    std::vector<std::pair<std::string, std::vector<uint64_t>>> links;
  };

  void on_message(uint64_t conn, detail::control_message& msg);
  void on_join(uint64_t conn, schema::Join::Reader j);
  void on_generate(uint64_t conn, schema::Generate::Reader g);
  void on_ready(schema::Ready::Reader r);
  void send_status(uint64_t conn);
  void send_error(uint64_t conn, const std::string& what);
  void answer_fetches();
  void shutdown_cluster();
  void fail(const std::string& why);

  // The sampler endpoint's part of each step.
  void step();
  void resume_schedule(); // paced: re-anchor the slot clock after idling
  void flush_events();
  std::string status_json() const;

  coordinator_args args_;
  std::unique_ptr<detail::connection_hub> hub_;
  std::map<uint32_t, host_state> hosts_; // by rank
  std::map<uint32_t, std::string> hellos_;
  std::map<uint32_t, std::vector<uint64_t>> fetches_; // host -> asking conns
  bool setup_sent_ = false;
  bool started_ = false;
  bool stopping_ = false;
  std::string failure_;
  // Clients: connection -> their request; request -> connection.
  std::map<uint64_t, uint64_t> request_conn_;
  uint64_t next_request_ = 1;
  detail::request_slots slots_;
  // The sampler endpoint (what sampler_ready brought keeps it alive): per
  // program its executor, sends and steps.
  struct endpoint_program {
    std::unique_ptr<chip_executor> exec;
    std::vector<std::vector<uint32_t>> sends; // per op of the sampler
    uint64_t step = 0; // the current (or next) step of this program
  };
  std::optional<sampler_ready> endpoint_;
  std::array<endpoint_program, 2> programs_; // by program_kind
  planner::program_kind kind_ = planner::program_kind::decode; // this step's
  size_t next_ = 0;    // next op of the step
  bool running_ = false; // a step is under way
  bool idle_ = true;     // no step ran since the last request ended
  uint64_t steps_run_ = 0;
};

} // namespace lockstep::actors
