#include "actors/simulation.hpp"

#include "common/digest.hpp"
#include "model/sampler.hpp"
#include "transport/payload_frame.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

namespace lockstep::actors {

using model::token_row;
using planner::program_kind;

namespace {

double now_s() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// MemAvailable of /proc/meminfo in bytes (0 if unknown).
uint64_t available_memory_bytes() {
  std::ifstream in{"/proc/meminfo"};
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:")
      return kb * 1024;
  return 0;
}

std::string gb(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GB", double(bytes) / 1e9);
  return buf;
}

} // namespace

// The coordinator's part of the token loop for a fixed set of requests: the
// rows of each step, and sampling with each request's own settings.
class simulation::request_table final : public token_loop {
public:
  struct slot_state {
    const model::generation_request* req = nullptr;
    model::generation_result result;
    sha256 hash;
    bool done = false;
  };

  request_table(const planner::plan& p)
      : plan_(p)
      , slots_(p.batch) {}

  std::vector<slot_state>& slots() { return slots_; }
  void start_prefill(uint32_t slot, uint64_t first_step) {
    prefill_slot_ = slot;
    prefill_first_ = first_step;
  }
  void start_decode(uint64_t first_step) { decode_first_ = first_step; }

  caf::error feed(program_kind kind, uint32_t mb, uint64_t step,
                  std::span<const token_row> carried,
                  std::span<token_row> out) override {
    if (kind == program_kind::prefill) {
      const auto& prompt = slots_[prefill_slot_].req->prompt;
      uint64_t first = (step - prefill_first_) * plan_.prefill.tokens;
      for (size_t j = 0; j < out.size(); ++j) {
        uint64_t pos = first + j;
        bool real = pos < prompt.size();
        out[j] = {real ? prompt[pos] : 0, static_cast<uint32_t>(pos),
                  prefill_slot_,
                  real ? model::row_active |
                             (pos + 1 == prompt.size() ? model::row_emits : 0u)
                       : 0u};
      }
      return {};
    }
    if (step > decode_first_) {
      // The token loop, closed: the rows the sample of the previous step
      // wrote, as they are.
      if (carried.size() != out.size())
        return caf::make_error(errc::bad_program,
                               "feed: the previous step's sample wrote no rows for it (the token loop is broken)");
      std::copy(carried.begin(), carried.end(), out.begin());
      return {};
    }
    // First decode step: each sequence's first generated token (from its
    // prefill), at the position after its prompt.
    uint32_t q = plan_.decode.micro_batch_sequences[mb];
    for (size_t j = 0; j < out.size(); ++j, ++q) {
      const auto& s = slots_[q];
      if (s.req == nullptr || s.done) {
        out[j] = {0, 0, q, 0};
        continue;
      }
      out[j] = {s.result.tokens.back(),
                static_cast<uint32_t>(s.req->prompt.size() +
                                      s.result.tokens.size() - 1),
                q, model::row_active | model::row_emits};
    }
    return {};
  }

  caf::error sample(program_kind, uint32_t, uint64_t,
                    std::span<const token_row> rows,
                    std::span<const float> logits, uint32_t vocab,
                    std::span<token_row> next) override {
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      constexpr uint32_t wanted = model::row_active | model::row_emits;
      if ((r.flags & wanted) != wanted) {
        next[i] = {0, 0, r.sequence, 0};
        continue;
      }
      if (r.sequence >= slots_.size() || slots_[r.sequence].req == nullptr)
        return caf::make_error(errc::bad_program,
                               "sample: logits for sequence " +
                                   std::to_string(r.sequence) +
                                   ", which holds no request");
      auto& s = slots_[r.sequence];
      auto row = logits.subspan(i * size_t{vocab}, vocab);
      s.hash.update_f32_le(row);
      int32_t token = model::sample(row, s.req->sampling, s.req->request_id,
                                    s.result.tokens.size());
      s.result.tokens.push_back(token);
      s.done = s.result.tokens.size() >= s.req->max_tokens;
      next[i] = {token, r.position + 1, r.sequence, s.done ? 0u : wanted};
    }
    return {};
  }

private:
  const planner::plan& plan_;
  std::vector<slot_state> slots_;
  uint32_t prefill_slot_ = 0;
  uint64_t prefill_first_ = 0;
  uint64_t decode_first_ = 0;
};

caf::error check_simulation_memory(const planner::cluster_config& config) {
  uint64_t need = uint64_t{config.chip_count()} * config.chip.sram_bytes;
  uint64_t have = available_memory_bytes();
  if (have != 0 && need > have)
    return caf::make_error(
        errc::too_large,
        "simulating " + config.name + " needs " + gb(need) +
            " of SRAM arenas (" + std::to_string(config.chip_count()) +
            " chips x " + std::to_string(config.chip.sram_bytes) +
            " bytes); this machine has " + gb(have) + " available");
  return {};
}

simulation::simulation(const planner::plan& p,
                       const planner::cluster_config& config,
                       const simulation_options& options)
    : plan_(p)
    , config_(config)
    , options_(options)
    , rope_(p.spec.head_dim, p.spec.rope_theta, p.spec.max_context)
    , pool_(std::make_unique<model::worker_pool>(
          options.threads != 0
              ? options.threads
              : std::max(1u, std::thread::hardware_concurrency())))
    , loop_(std::make_unique<request_table>(p)) {}

simulation::~simulation() = default;

caf::expected<std::unique_ptr<simulation>>
simulation::load(const planner::plan& p, const planner::cluster_config& config,
                 const storage::weight_store& weights,
                 const simulation_options& options) {
  if (auto err = check_simulation_memory(config))
    return err;
  std::unique_ptr<simulation> sim{new simulation(p, config, options)};
  // An arena per node that holds or runs anything: chips get their SRAM,
  // host endpoints what their programs use.
  uint32_t nodes = config.node_count();
  sim->arenas_.resize(nodes);
  std::vector<bool> used(nodes, false);
  for (const auto& sh : p.shards)
    used[sh.chip] = true;
  for (auto kind : {program_kind::decode, program_kind::prefill})
    for (const auto& o : p.program(kind).ops)
      used[o.chip] = true;
  for (uint32_t n = 0; n < nodes; ++n) {
    if (!used[n])
      continue;
    uint64_t bytes = config.chip.sram_bytes;
    if (config.is_host_node(n))
      bytes = std::max(p.decode.arenas[n].end, p.prefill.arenas[n].end);
    auto a = sram_arena::allocate(bytes);
    if (!a)
      return a.error();
    sim->arenas_[n] = std::move(*a);
  }
  if (auto err = sim->load_weights(weights))
    return err;
  for (auto kind : {program_kind::decode, program_kind::prefill})
    if (auto err = sim->bind(kind))
      return err;
  return sim;
}

std::span<std::byte> simulation::sram(uint32_t node) {
  const auto& a = arenas_.at(node);
  return a ? a->bytes() : std::span<std::byte>{};
}

caf::error simulation::load_weights(const storage::weight_store& weights) {
  auto loaded = load_shards(plan_, config_, weights,
                            [this](uint32_t chip) { return sram(chip); });
  return loaded ? caf::error{} : loaded.error();
}

caf::error simulation::bind(program_kind kind) {
  const auto& prog = plan_.program(kind);
  auto k = static_cast<size_t>(kind);
  executors_[k].resize(config_.node_count());
  std::vector<bool> runs(config_.node_count(), false);
  for (const auto& o : prog.ops)
    runs[o.chip] = true;
  for (const auto& t : prog.transfers)
    runs[t.dst] = true;
  for (uint32_t n = 0; n < config_.node_count(); ++n) {
    if (!runs[n])
      continue;
    auto e = chip_executor::make(plan_, config_, kind, n, sram(n), rope_,
                                 n == plan_.sampler ? loop_.get() : nullptr);
    if (!e)
      return e.error();
    executors_[k][n] = std::move(*e);
  }
  // One step's events in execution order: by slot; a transfer starting in a
  // slot is taken before the ops of that slot (both only depend on earlier
  // slots, so any order within a slot is the same computation).
  auto& ev = events_[k];
  for (const auto& t : prog.transfers)
    ev.push_back({t.start_slot, 0, t.id});
  for (const auto& o : prog.ops)
    ev.push_back({o.start_slot, 1, o.id});
  std::sort(ev.begin(), ev.end(), [](const event& a, const event& b) {
    return std::tie(a.slot, a.kind, a.id) < std::tie(b.slot, b.kind, b.id);
  });
  return {};
}

caf::error simulation::run_steps(program_kind kind, uint64_t first, uint64_t n,
                                 simulation_report& report) {
  auto k = static_cast<size_t>(kind);
  const auto& prog = plan_.program(kind);
  const auto& ev = events_[k];
  auto& exec = executors_[k];
  // Step i starts at slot i * period; when the period is shorter than a
  // step, steps overlap: their events run by absolute slot.
  uint64_t period = std::max<uint32_t>(prog.period_slots, 1);
  struct timed {
    uint64_t slot;
    uint64_t step;
    size_t event;
  };
  std::vector<timed> order;
  order.reserve(ev.size() * n);
  for (uint64_t i = 0; i < n; ++i)
    for (size_t j = 0; j < ev.size(); ++j)
      order.push_back({i * period + ev[j].slot, first + i, j});
  if (n > 1)
    std::sort(order.begin(), order.end(), [](const timed& a, const timed& b) {
      return std::tie(a.slot, a.step, a.event) <
             std::tie(b.slot, b.step, b.event);
    });
  for (const auto& [slot, step, index] : order) {
    const auto& e = ev[index];
    if (e.kind == 0) {
      const auto& t = prog.transfers[e.id];
      if (kind == program_kind::decode &&
          e.id == options_.drop_decode_transfer)
        continue;
      if (auto err = exec[t.src]->check_sendable(t.id, step))
        return err;
      auto from = exec[t.src]->send_window(t.id);
      auto to = exec[t.dst]->receive_window(t.id, step);
      std::memcpy(to.data(), from.data(), t.bytes);
      // The receiver reads the framing in place, as over the fabric.
      if (auto payload = transport::read_frame(to); !payload)
        return payload.error();
      exec[t.dst]->note_arrival(t.id, step);
      report.bytes_transferred += t.bytes;
    } else {
      const auto& o = prog.ops[e.id];
      if (auto err = exec[o.chip]->run(e.id, step, pool_.get()))
        return err;
      ++report.ops_executed;
    }
  }
  steps_run_[k] = first + n;
  return {};
}

caf::expected<simulation_report>
simulation::generate(std::span<const model::generation_request> requests) {
  double t0 = now_s();
  const auto& spec = plan_.spec;
  if (requests.empty() || requests.size() > plan_.batch)
    return caf::make_error(errc::bad_request,
                           std::to_string(requests.size()) +
                               " requests for a plan of batch " +
                               std::to_string(plan_.batch));
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto& r = requests[i];
    auto where = "request " + std::to_string(i) + ": ";
    if (r.prompt.empty() || r.max_tokens == 0)
      return caf::make_error(errc::bad_request,
                             where + "needs a prompt and max_tokens >= 1");
    if (r.prompt.size() + r.max_tokens - 1 > plan_.context)
      return caf::make_error(
          errc::bad_request,
          where + std::to_string(r.prompt.size()) + " prompt tokens + " +
              std::to_string(r.max_tokens) + " new tokens exceed the plan's " +
              "context of " + std::to_string(plan_.context));
    if (auto err = model::validate(r.sampling))
      return err;
    for (auto tok : r.prompt)
      if (tok < 0 || static_cast<uint32_t>(tok) >= spec.vocab)
        return caf::make_error(errc::bad_request,
                               where + "token " + std::to_string(tok) +
                                   " outside the vocabulary");
  }
  simulation_report report;
  auto& slots = loop_->slots();
  for (auto& s : slots)
    s = {};
  for (size_t i = 0; i < requests.size(); ++i)
    slots[i].req = &requests[i];
  // Prefill: each prompt in chunks through the prefill program, its slot's
  // KV cache filled; the last chunk's logits give its first token.
  for (uint32_t q = 0; q < requests.size(); ++q) {
    auto chunks = (requests[q].prompt.size() + plan_.prefill.tokens - 1) /
                  plan_.prefill.tokens;
    uint64_t first = steps_run_[1];
    loop_->start_prefill(q, first);
    if (auto err = run_steps(program_kind::prefill, first, chunks, report))
      return err;
    report.prefill_steps += chunks;
    if (slots[q].result.tokens.empty())
      return caf::make_error(errc::bad_program,
                             "request " + std::to_string(q) +
                                 ": the prefill program emitted no logits");
  }
  // Decode: the whole batch, one token per sequence and step.
  double d0 = now_s();
  uint64_t step = 0;
  auto pending = [&] {
    return std::any_of(slots.begin(), slots.end(), [](const auto& s) {
      return s.req != nullptr && !s.done;
    });
  };
  while (pending()) {
    if (step == 0)
      loop_->start_decode(steps_run_[0]);
    if (auto err = run_steps(program_kind::decode, steps_run_[0], 1, report))
      return err;
    ++step;
  }
  report.decode_steps = step;
  report.decode_seconds = now_s() - d0;
  for (size_t i = 0; i < requests.size(); ++i) {
    slots[i].result.logits_sha256 = slots[i].hash.hex_digest();
    report.requests.push_back(std::move(slots[i].result));
  }
  report.seconds = now_s() - t0;
  return report;
}

} // namespace lockstep::actors
