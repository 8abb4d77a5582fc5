#pragma once

// A host: one per `lockstepd` process. It joins the head with the cluster
// token, takes the Setup (the plan — verified again here, as every runtime
// refuses a plan its verifier rejects — the weight seed and the slot
// settings), makes sure its RocksDB store holds its chips' tiles
// (generating only those it lacks), maps one SRAM arena per chip of this
// host, loads only its chips' shards into them, opens a slotted transport
// per program it runs on those arenas (hellos relayed by the head), spawns
// a chip actor per chip that has work, and runs a progress thread per
// transport that hands every arrival to the chip it is for. It heartbeats per-chip and per-link
// counters to the head and leaves on Shutdown.
//
// Spawned detached: setup blocks (store, transport start-up).

#include "actors/chip_actor.hpp"
#include "actors/detail/connection_hub.hpp"
#include "actors/messages.hpp"
#include "actors/sram.hpp"
#include "planner/cluster_config.hpp"
#include "storage/store.hpp"

#include <caf/event_based_actor.hpp>

#include <array>
#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace lockstep::transport {
class host_transport;
class slot_program;
struct transport_settings;
} // namespace lockstep::transport

namespace lockstep::actors {

class head_rendezvous;

struct host_args {
  planner::cluster_config config;
  uint32_t rank = 0;
  std::string head;  // the coordinator's address
  std::string token; // the cluster token
  std::filesystem::path db;
  std::filesystem::path weights; // an imported model's store, or empty
  std::string log;          // this host's log file (for status)
  caf::actor coordinator;   // rank 0: the coordinator of this process
  std::atomic<int>* exit_code = nullptr; // the process's, set on failure
  int64_t inject_send_delay_ns = 0; // test hook: transport_options
};

class host_actor : public caf::event_based_actor {
public:
  host_actor(caf::actor_config& cfg, host_args args);
  ~host_actor() override;

  caf::behavior make_behavior() override;
  void on_exit() override; // drops the handles that would keep actors alive

private:
  void on_message(detail::control_message& msg);
  caf::error setup(schema::Setup::Reader s);
  caf::error ensure_tiles(storage::store& db, const planner::plan& p,
                          uint64_t seed, uint64_t& generated);
  void send_heartbeat();
  void fail(const std::string& why, int code = 1);
  void stop();
  void tear_down(); // idempotent: threads joined, handles dropped

  host_args args_;
  std::unique_ptr<detail::connection_hub> hub_;
  std::shared_ptr<head_rendezvous> rendezvous_;
  std::shared_ptr<const planner::plan> plan_;
  std::shared_ptr<const model::rope_table> rope_;
  std::map<uint32_t, std::shared_ptr<sram_arena>> arenas_; // by node
  // Per program (decode, prefill): its transport, its routes, the node
  // each of its slot-table transfers arrives at, and the progress thread
  // that hands them on. Prefill's stays empty when the cluster feeds
  // prompts through decode (detail/programs.hpp).
  struct lane_state {
    program_lane lane;
    std::vector<uint32_t> arrival_node; // by slot-table transfer index
    std::thread progress;
  };
  caf::error open_lane(planner::program_kind kind,
                       const transport::transport_settings& settings);
  void start_progress(planner::program_kind kind);
  std::array<lane_state, 2> lanes_;
  std::map<uint32_t, caf::actor> chips_; // by node
  std::map<uint32_t, std::shared_ptr<chip_figures>> figures_;
  std::atomic<bool> stop_progress_{false};
  bool started_ = false;
  bool stopping_ = false;
};

} // namespace lockstep::actors
