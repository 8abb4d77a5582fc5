#include "actors/coordinator.hpp"

#include "actors/detail/local_routes.hpp"
#include "actors/detail/envelope.hpp"
#include "actors/detail/programs.hpp"
#include "actors/sram.hpp"
#include "planner/plan_codec.hpp"
#include "transport/host_transport.hpp"

#include <nlohmann/json.hpp>
#include <sodium.h>

#include <caf/send.hpp>

namespace lockstep::actors {

using detail::envelope;

coordinator::coordinator(caf::actor_config& cfg, coordinator_args args)
    : caf::event_based_actor(cfg)
    , args_(std::move(args))
    , slots_(args_.plan, args_.max_queue,
             detail::runs_prefill(args_.plan, args_.slot_mode == "paced")
                 ? args_.prefill
                 : detail::prefill_policy::off) {}

coordinator::~coordinator() {
  if (hub_)
    hub_->close();
}

void coordinator::on_exit() {
  if (hub_)
    hub_->close();
  for (auto& p : programs_)
    p.exec.reset();
  endpoint_.reset();
}

caf::behavior coordinator::make_behavior() {
  hub_ = std::make_unique<detail::connection_hub>(
      caf::actor_cast<caf::actor>(this));
  hub_->serve(std::move(args_.listener));
  return {
      [this](const control_in& m) { on_message(m.connection, *m.message); },
      [this](const closed& c) {
        hub_->forget(c.connection);
        for (auto& [rank, h] : hosts_)
          if (h.connection == c.connection) {
            h.connection = 0;
            if (!stopping_)
              fail("host " + std::to_string(rank) + " left: " + c.why);
          }
        for (auto it = request_conn_.begin(); it != request_conn_.end();)
          if (it->second == c.connection) {
            slots_.cancel(it->first); // the client went away
            it = request_conn_.erase(it);
          } else {
            ++it;
          }
        bool hosts_gone = std::all_of(hosts_.begin(), hosts_.end(),
                                      [](auto& h) {
                                        return h.second.connection == 0;
                                      });
        if (stopping_ && hosts_gone)
          quit();
      },
      [this](const arrived& a) {
        auto k = static_cast<size_t>(a.kind);
        if (k >= programs_.size() || !programs_[k].exec)
          return;
        programs_[k].exec->note_arrival(a.transfer, a.step);
        step();
      },
      [this](const sampler_ready& s) {
        endpoint_ = s;
        bool prefill =
            detail::runs_prefill(args_.plan, args_.slot_mode == "paced");
        if (prefill != (s.lanes[1].transport != nullptr))
          return fail("the head's host and the coordinator disagree on "
                      "running the prefill program");
        for (auto kind : {planner::program_kind::decode,
                          planner::program_kind::prefill}) {
          auto& pr = programs_[static_cast<size_t>(kind)];
          if (!s.lanes[static_cast<size_t>(kind)].transport)
            continue;
          auto made = chip_executor::make(*s.plan, args_.config, kind, s.node,
                                          s.arena->bytes(), *s.rope, &slots_);
          if (!made)
            return fail(render(made.error()));
          pr.exec = std::move(*made);
          pr.sends = pr.exec->sends_by_op();
        }
        step(); // requests may be waiting
      },
      [this](const failed& f) {
        // Rank 0's own host is gone: the cluster cannot run without it.
        if (!stopping_)
          fail(f.why);
        shutdown_cluster();
      },
      [this](tick_atom) {
        // Shutdown: hosts that do not leave in time are left behind; the
        // CLI kills what remains.
        if (stopping_)
          quit();
      },
  };
}

void coordinator::on_message(uint64_t conn, detail::control_message& msg) {
  auto root = msg.root();
  switch (root.which()) {
  case schema::Envelope::JOIN:
    return on_join(conn, root.getJoin());
  case schema::Envelope::HELLO: {
    auto h = root.getHello();
    auto data = h.getMessage();
    hellos_[h.getHost()] = std::string{
        reinterpret_cast<const char*>(data.begin()), data.size()};
    return answer_fetches();
  }
  case schema::Envelope::FETCH_HELLO:
    fetches_[root.getFetchHello().getHost()].push_back(conn);
    return answer_fetches();
  case schema::Envelope::READY:
    return on_ready(root.getReady());
  case schema::Envelope::HEARTBEAT: {
    auto hb = root.getHeartbeat();
    auto it = hosts_.find(hb.getRank());
    if (it == hosts_.end())
      return;
    auto& h = it->second;
    h.log = hb.getLog().cStr();
    h.cpu_ns = hb.getCpuNs();
    h.chips.clear();
    for (auto c : hb.getChips())
      h.chips.push_back({c.getChip().cStr(),
                         {c.getOpsRun(), c.getStepsRun(), c.getSramBytes(),
                          c.getKernelNs(), c.getHandlerNs()}});
    h.links.clear();
    for (auto l : hb.getLinks())
      h.links.push_back({l.getLink().cStr(),
                         {l.getBytesSent(), l.getTransfersSent(),
                          l.getBytesReceived(), l.getTransfersReceived(),
                          l.getSlotMisses(),
                          static_cast<uint64_t>(
                              std::max<int64_t>(0, l.getMaxLatenessNs()))}});
    return;
  }
  case schema::Envelope::GENERATE:
    return on_generate(conn, root.getGenerate());
  case schema::Envelope::STATUS_REQUEST:
    if (!detail::same_token(root.getStatusRequest().getToken(), args_.token))
      return send_error(conn, "wrong cluster token");
    return send_status(conn);
  case schema::Envelope::SHUTDOWN:
    if (!detail::same_token(root.getShutdown().getToken(), args_.token))
      return send_error(conn, "wrong cluster token");
    return shutdown_cluster();
  case schema::Envelope::ERROR: {
    std::string why = std::string{"from "} + hub_->peer(conn) + ": " +
                      root.getError().cStr();
    // Only a member host's failure fails the cluster; a refused stranger
    // saying goodbye is merely logged.
    bool member = std::any_of(hosts_.begin(), hosts_.end(), [&](auto& h) {
      return h.second.connection == conn;
    });
    if (!member) {
      std::fprintf(stderr, "lockstepd: coordinator: ignored %s\n",
                   why.c_str());
      return;
    }
    return fail(why);
  }
  default:
    return send_error(conn, "unexpected message");
  }
}

void coordinator::on_join(uint64_t conn, schema::Join::Reader j) {
  auto refuse = [&](const std::string& why) {
    envelope e;
    auto r = e.root().initJoinReply();
    r.setOk(false);
    r.setError(why);
    hub_->send(conn, e.builder());
  };
  uint32_t rank = j.getRank();
  if (j.getProtocolVersion() != schema::CONTROL_PROTOCOL_VERSION)
    return refuse("control protocol " +
                  std::to_string(j.getProtocolVersion()) + ", the head runs " +
                  std::to_string(schema::CONTROL_PROTOCOL_VERSION));
  if (!detail::same_token(j.getToken(), args_.token))
    return refuse("wrong cluster token (host " + std::to_string(rank) +
                  " from " + hub_->peer(conn) + ")");
  if (rank >= args_.config.host_count())
    return refuse("rank " + std::to_string(rank) + " is not a host of " +
                  args_.config.name + " (" +
                  std::to_string(args_.config.host_count()) + " hosts)");
  if (j.getConfigDigest() != detail::config_digest(args_.config))
    return refuse("host " + std::to_string(rank) +
                  " runs another config than the head's " + args_.config.name);
  if (auto it = hosts_.find(rank);
      it != hosts_.end() && it->second.connection != 0)
    return refuse("rank " + std::to_string(rank) + " has joined already");
  hosts_[rank] = {conn, j.getPid(), false, "", 0, {}, {}};
  envelope e;
  e.root().initJoinReply().setOk(true);
  hub_->send(conn, e.builder());
  if (hosts_.size() < args_.config.host_count() || setup_sent_)
    return;
  setup_sent_ = true;
  for (auto& [r, h] : hosts_) {
    envelope s;
    auto setup = s.root().initSetup();
    setup.setPlan(kj::arrayPtr(
        reinterpret_cast<const kj::byte*>(args_.plan_bytes.data()),
        args_.plan_bytes.size()));
    setup.setWeightSeed(args_.weight_seed);
    setup.setSlotMode(args_.slot_mode);
    setup.setSlotNs(args_.slot_ns);
    if (auto err = hub_->send(h.connection, s.builder()))
      return fail(render(err));
  }
}

void coordinator::answer_fetches() {
  for (auto& [host, conns] : fetches_) {
    auto it = hellos_.find(host);
    if (it == hellos_.end())
      continue;
    for (auto c : conns) {
      envelope e;
      auto h = e.root().initHello();
      h.setHost(host);
      h.setMessage(kj::arrayPtr(
          reinterpret_cast<const kj::byte*>(it->second.data()),
          it->second.size()));
      hub_->send(c, e.builder());
    }
    conns.clear();
  }
}

void coordinator::on_ready(schema::Ready::Reader r) {
  auto it = hosts_.find(r.getRank());
  if (it == hosts_.end())
    return;
  if (r.getError().size() > 0)
    return fail("host " + std::to_string(r.getRank()) + ": " +
                r.getError().cStr());
  it->second.ready = true;
  if (started_ || hosts_.size() < args_.config.host_count() ||
      !std::all_of(hosts_.begin(), hosts_.end(),
                   [](auto& h) { return h.second.ready; }))
    return;
  started_ = true;
  for (auto& [rank, h] : hosts_) {
    envelope e;
    e.root().setStart();
    hub_->send(h.connection, e.builder());
  }
  step();
}

void coordinator::on_generate(uint64_t conn, schema::Generate::Reader g) {
  auto refuse = [&](const caf::error& err) {
    envelope e;
    auto d = e.root().initDone();
    d.setError(render(err));
    d.setErrorKind(static_cast<uint8_t>(lockstep::kind_of(err)));
    hub_->send(conn, e.builder());
  };
  if (!detail::same_token(g.getToken(), args_.token))
    return refuse(caf::make_error(errc::refused, "wrong cluster token"));
  if (!started_)
    return refuse(caf::make_error(
        errc::cluster_failed,
        failure_.empty() ? "the cluster is not ready yet" : failure_));
  detail::request r;
  r.id = next_request_++;
  for (auto t : g.getPrompt())
    r.prompt.push_back(t);
  r.max_tokens = g.getMaxTokens();
  r.sampling = {g.getSeed(), g.getTemperature(), g.getTopK(), g.getTopP()};
  r.received = std::chrono::steady_clock::now();
  uint64_t id = r.id;
  if (auto err = slots_.enqueue(std::move(r)))
    return refuse(err);
  request_conn_[id] = conn;
  step();
}

void coordinator::step() {
  if (!programs_[0].exec || !started_ || stopping_ || !failure_.empty())
    return;
  for (;;) {
    if (!running_) {
      slots_.admit();
      if (!slots_.busy()) {
        idle_ = true;
        return; // idle: nothing runs anywhere
      }
      if (idle_ && args_.slot_mode == "paced")
        resume_schedule();
      idle_ = false;
      auto kind = slots_.begin_step();
      if (kind != kind_) {
        // The other program ran on the endpoint's arena since this one's
        // last step (as on every chip's): nothing it wrote is there now.
        if (auto& other = programs_[static_cast<size_t>(kind)].exec)
          other->forget_writes();
        kind_ = kind;
      }
      running_ = true;
      next_ = 0;
    }
    auto& pr = programs_[static_cast<size_t>(kind_)];
    if (!pr.exec)
      return fail(std::string{"a "} + planner::to_string(kind_) +
                  " step, which this cluster does not run");
    const auto& lane = endpoint_->lanes[static_cast<size_t>(kind_)];
    const auto& ops = pr.exec->ops();
    if (next_ == ops.size()) {
      if (auto err = lane.transport->release(
              args_.config.ref(pr.exec->node()), pr.step))
        return fail(render(err));
      ++pr.step;
      ++steps_run_;
      running_ = false;
      flush_events();
      continue;
    }
    uint32_t id = ops[next_];
    if (!pr.exec->ready(id, pr.step))
      return; // the logits are on their way
    if (auto err = pr.exec->run(id, pr.step))
      return fail(render(err));
    for (auto t : pr.sends[next_])
      if (auto err = detail::send_transfer(this, *lane.transport,
                                           *lane.routes, t, pr.step))
        return fail(render(err));
    ++next_;
    flush_events();
  }
}

void coordinator::resume_schedule() {
  // The epoch's schedule has run on while the cluster idled: its slot for
  // this step is in the past. Anchor it a little ahead instead, far enough
  // for the Resume to reach every host first (TCP on this machine: well
  // under a millisecond idle, tens loaded).
  constexpr int64_t margin_ns = 50'000'000;
  // Paced clusters run decode alone (detail/programs.hpp).
  auto& transport = *endpoint_->lanes[0].transport;
  uint64_t step = programs_[0].step;
  auto at = transport.now_ns() + margin_ns;
  if (auto err = transport.resume_at(step, at))
    return fail(render(err));
  for (const auto& [rank, h] : hosts_) {
    if (rank == 0 || h.connection == 0)
      continue; // rank 0 shares this transport
    envelope e;
    auto r = e.root().initResume();
    r.setStep(step);
    r.setAtRefNs(at);
    hub_->send(h.connection, e.builder());
  }
}

void coordinator::flush_events() {
  for (auto& ev : slots_.take_events()) {
    auto it = request_conn_.find(ev.request);
    if (it == request_conn_.end())
      continue;
    envelope e;
    auto t = e.root().initToken();
    t.setIndex(ev.index);
    t.setToken(ev.token);
    hub_->send(it->second, e.builder());
    if (!ev.done)
      continue;
    envelope d;
    auto done = d.root().initDone();
    auto tokens = done.initTokens(ev.result.tokens.size());
    for (size_t i = 0; i < ev.result.tokens.size(); ++i)
      tokens.set(i, ev.result.tokens[i]);
    done.setLogitsSha256(ev.result.logits_sha256);
    done.setTtftMs(ev.ttft_ms);
    done.setTokensPerS(ev.tokens_per_s);
    hub_->send(it->second, d.builder());
    request_conn_.erase(it);
  }
}

std::string coordinator::status_json() const {
  using nlohmann::json;
  json hosts = json::array(), chips = json::array(), links = json::array();
  for (const auto& [rank, h] : hosts_) {
    hosts.push_back({{"rank", rank},
                     {"pid", h.pid},
                     {"ready", h.ready},
                     {"connected", h.connection != 0},
                     {"cpu_ns", h.cpu_ns},
                     {"log", h.log}});
    for (const auto& [name, v] : h.chips)
      chips.push_back({{"chip", name},
                       {"host", rank},
                       {"ops_run", v[0]},
                       {"steps_run", v[1]},
                       {"sram_bytes", v[2]},
                       {"kernel_ns", v[3]},
                       {"handler_ns", v[4]}});
    for (const auto& [name, v] : h.links)
      links.push_back({{"link", name},
                       {"bytes_sent", v[0]},
                       {"transfers_sent", v[1]},
                       {"bytes_received", v[2]},
                       {"transfers_received", v[3]},
                       {"slot_misses", v[4]},
                       {"max_lateness_ns", v[5]}});
  }
  const auto& p = args_.plan;
  json j{{"cluster", args_.config.name},
         {"ready", started_},
         {"failure", failure_},
         {"model", p.model},
         {"dtype", model::to_string(p.spec.weight_dtype)},
         {"batch", p.batch},
         {"context", p.context},
         {"plan_hash", planner::plan_hash(args_.config, p)},
         {"slot_mode", args_.slot_mode},
         {"slot_ns", args_.slot_ns},
         {"steps_run", steps_run_},
         // Which program each step ran (detail/programs.hpp): prompts in
         // chunks of prefill_chunk_tokens, or a token a decode step.
         {"prefill_program", programs_[1].exec != nullptr},
         {"prefill_policy", detail::to_string(args_.prefill)},
         {"prefill_chunk_tokens", p.prefill.tokens},
         {"decode_steps_run", programs_[0].step},
         {"prefill_steps_run", programs_[1].step},
         {"requests_active", slots_.active()},
         {"requests_queued", slots_.queued()},
         {"hosts", hosts},
         {"chips", chips},
         {"links", links}};
  return j.dump();
}

void coordinator::send_status(uint64_t conn) {
  envelope e;
  auto s = e.root().initStatus();
  s.setReady(started_);
  s.setJson(status_json());
  hub_->send(conn, e.builder());
}

void coordinator::send_error(uint64_t conn, const std::string& what) {
  envelope e;
  e.root().setError(what);
  hub_->send(conn, e.builder());
}

void coordinator::shutdown_cluster() {
  if (stopping_)
    return;
  stopping_ = true;
  // Requests in flight end with an error; every host is told to leave.
  for (auto& [req, conn] : request_conn_) {
    envelope d;
    auto done = d.root().initDone();
    done.setError("actors.cluster_failed: the cluster is shutting down");
    done.setErrorKind(static_cast<uint8_t>(error_kind::failed));
    hub_->send(conn, d.builder());
  }
  request_conn_.clear();
  for (auto& [rank, h] : hosts_) {
    envelope e;
    e.root().initShutdown();
    hub_->send(h.connection, e.builder());
  }
  delayed_send(this, std::chrono::seconds(10), tick_atom::value);
  if (std::all_of(hosts_.begin(), hosts_.end(),
                  [](auto& h) { return h.second.connection == 0; }))
    quit();
}

void coordinator::fail(const std::string& why) {
  if (failure_.empty())
    failure_ = why;
  std::fprintf(stderr, "lockstepd: coordinator: %s\n", why.c_str());
  for (auto& [req, conn] : request_conn_) {
    envelope d;
    auto done = d.root().initDone();
    done.setError("actors.cluster_failed: " + why);
    done.setErrorKind(static_cast<uint8_t>(error_kind::failed));
    hub_->send(conn, d.builder());
  }
  request_conn_.clear();
}

} // namespace lockstep::actors
