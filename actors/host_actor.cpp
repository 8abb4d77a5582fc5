#include "actors/host_actor.hpp"

#include "actors/detail/local_routes.hpp"
#include "actors/detail/envelope.hpp"
#include "actors/detail/programs.hpp"
#include "planner/plan_codec.hpp"
#include "planner/plan_share.hpp"
#include "planner/verifier.hpp"
#include "storage/weight_store.hpp"
#include "transport/host_transport.hpp"
#include "transport/rendezvous.hpp"

#include <ctime>
#include <malloc.h>
#include <caf/send.hpp>

#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <set>
#include <unistd.h>

namespace lockstep::actors {

using detail::envelope;
using planner::program_kind;

// The transport's start-up rendezvous through the head: publish sends this
// host's hello to the head; fetch asks for another's and waits for the
// reply, which the connection's reader thread delivers here (the host
// actor itself is blocked in the transport's start-up meanwhile).
class head_rendezvous final : public transport::rendezvous {
public:
  explicit head_rendezvous(detail::connection_hub& hub)
      : hub_(hub) {}

  caf::expected<void> publish(uint32_t host,
                              std::span<const std::byte> message) override {
    envelope e;
    auto h = e.root().initHello();
    h.setHost(host);
    h.setMessage(kj::arrayPtr(reinterpret_cast<const kj::byte*>(message.data()),
                              message.size()));
    if (auto err = hub_.send(0, e.builder()))
      return err;
    return caf::unit;
  }

  caf::expected<std::vector<std::byte>>
  fetch(uint32_t host, std::chrono::nanoseconds timeout) override {
    envelope e;
    e.root().initFetchHello().setHost(host);
    if (auto err = hub_.send(0, e.builder()))
      return err;
    std::unique_lock<std::mutex> lock{mutex_};
    if (!ready_.wait_for(lock, timeout, [&] { return hellos_.contains(host); }))
      return caf::make_error(errc::timed_out,
                             "no transport hello of host " +
                                 std::to_string(host) + " from the head");
    return hellos_[host];
  }

  // From the reader thread.
  void deliver(uint32_t host, capnp::Data::Reader data) {
    {
      std::lock_guard<std::mutex> guard{mutex_};
      auto* p = reinterpret_cast<const std::byte*>(data.begin());
      hellos_[host] = std::vector<std::byte>(p, p + data.size());
    }
    ready_.notify_all();
  }

private:
  detail::connection_hub& hub_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::map<uint32_t, std::vector<std::byte>> hellos_;
};

namespace {

// A program's view of the rendezvous: its hellos under ranks shifted by
// `offset`, so that the transports of two programs do not meet.
class program_rendezvous final : public transport::rendezvous {
public:
  program_rendezvous(transport::rendezvous& inner, uint32_t offset)
      : inner_(inner)
      , offset_(offset) {}
  caf::expected<void> publish(uint32_t host,
                              std::span<const std::byte> message) override {
    return inner_.publish(host + offset_, message);
  }
  caf::expected<std::vector<std::byte>>
  fetch(uint32_t host, std::chrono::nanoseconds timeout) override {
    return inner_.fetch(host + offset_, timeout);
  }

private:
  transport::rendezvous& inner_;
  uint32_t offset_;
};

} // namespace

host_actor::host_actor(caf::actor_config& cfg, host_args args)
    : caf::event_based_actor(cfg)
    , args_(std::move(args)) {}

host_actor::~host_actor() {
  stop_progress_ = true;
  for (auto& l : lanes_) {
    if (l.lane.transport)
      l.lane.transport->wake();
    if (l.progress.joinable())
      l.progress.join();
  }
}

void host_actor::on_exit() {
  stopping_ = true;
  tear_down(); // idempotent
}

caf::behavior host_actor::make_behavior() {
  auto self = caf::actor_cast<caf::actor>(this);
  hub_ = std::make_unique<detail::connection_hub>(
      self, [this](uint64_t, detail::control_message& m) {
        auto root = m.root();
        if (root.which() != schema::Envelope::HELLO || !rendezvous_)
          return false;
        rendezvous_->deliver(root.getHello().getHost(),
                             root.getHello().getMessage());
        return true;
      });
  rendezvous_ = std::make_shared<head_rendezvous>(*hub_);
  if (auto err = hub_->connect(args_.head, std::chrono::seconds(30))) {
    fail("cannot reach the head: " + render(err));
    return {};
  }
  envelope e;
  auto j = e.root().initJoin();
  j.setProtocolVersion(schema::CONTROL_PROTOCOL_VERSION);
  j.setRank(args_.rank);
  j.setToken(args_.token);
  j.setPid(static_cast<uint32_t>(::getpid()));
  j.setConfigDigest(detail::config_digest(args_.config));
  if (auto err = hub_->send(0, e.builder())) {
    fail(render(err));
    return {};
  }
  return {
      [this](const control_in& m) { on_message(*m.message); },
      [this](const closed& c) {
        if (!stopping_)
          fail("lost the head: " + c.why);
      },
      [this](const failed& f) { fail(f.why); },
      [this](heartbeat_atom) {
        if (stopping_)
          return;
        send_heartbeat();
        delayed_send(this, std::chrono::seconds(1), heartbeat_atom::value);
      },
  };
}

void host_actor::on_message(detail::control_message& msg) {
  auto root = msg.root();
  switch (root.which()) {
  case schema::Envelope::JOIN_REPLY: {
    auto r = root.getJoinReply();
    if (!r.getOk())
      fail(std::string{"refused by the head: "} + r.getError().cStr(), 2);
    return;
  }
  case schema::Envelope::SETUP: {
    auto err = setup(root.getSetup());
    // Set-up's transient memory (the full slot table, the store and its
    // caches, closed with setup()) is free now: hand it back to the kernel,
    // so a host's RSS is its arenas plus what it keeps.
    ::malloc_trim(0);
    envelope e;
    auto ready = e.root().initReady();
    ready.setRank(args_.rank);
    ready.setChips(static_cast<uint32_t>(chips_.size()));
    if (err)
      ready.setError(render(err));
    hub_->send(0, e.builder());
    if (err)
      fail(render(err));
    return;
  }
  case schema::Envelope::START:
    started_ = true;
    send_heartbeat();
    delayed_send(this, std::chrono::seconds(1), heartbeat_atom::value);
    return;
  case schema::Envelope::SHUTDOWN:
    return stop();
  case schema::Envelope::RESUME:
    // Paced clusters run decode alone (detail/programs.hpp).
    if (auto& t = lanes_[0].lane.transport)
      if (auto err = t->resume_at(root.getResume().getStep(),
                                  root.getResume().getAtRefNs()))
        fail(render(err));
    return;
  case schema::Envelope::ERROR:
    return fail(std::string{"the head says: "} + root.getError().cStr());
  default:
    return fail("unexpected message from the head");
  }
}

caf::error host_actor::ensure_tiles(storage::store& db,
                                    const planner::plan& p, uint64_t seed,
                                    uint64_t& generated) {
  // This host's store holds the tiles of its own chips' shards; a fresh
  // store gets them generated, bit-identical to `weights init`, or, for an
  // imported model, copied from its store (read by every host at once).
  storage::shard_list mine;
  for (const auto& sh : p.shards)
    if (args_.config.ref(sh.chip).host == args_.rank)
      mine.push_back({sh.tensor, sh.range});
  caf::expected<storage::init_report> report{caf::error{}};
  if (args_.weights.empty()) {
    report = storage::init_weight_shards(db, p.spec, seed, mine);
  } else {
    auto opened = storage::store::open(args_.weights, {.read_only = true});
    if (!opened)
      return opened.error();
    auto src = storage::weight_store::open(**opened);
    if (!src)
      return src.error();
    if (auto err = src->check_model(p.spec))
      return err;
    if (src->spec().weight_dtype != p.spec.weight_dtype)
      return caf::make_error(errc::bad_program,
                             "the plan's weights are " +
                                 std::string{model::to_string(
                                     p.spec.weight_dtype)} +
                                 ", the store " + args_.weights.string() +
                                 " holds " +
                                 model::to_string(src->spec().weight_dtype));
    const auto& ws = *src;
    storage::tensor_source source =
        [&ws](model::tensor_id id, const model::shard_range& r) {
          return ws.read(id, r);
        };
    report = storage::import_weight_shards(db, p.spec, ws.manifest().source,
                                           source, mine);
  }
  if (!report)
    return report.error();
  generated = report->bytes_written;
  return {};
}

caf::error host_actor::setup(schema::Setup::Reader s) {
  auto data = s.getPlan();
  auto decoded = planner::decode_plan(
      args_.config,
      std::string{reinterpret_cast<const char*>(data.begin()), data.size()});
  if (!decoded)
    return decoded.error();
  auto verdict = planner::verify_plan(*decoded, args_.config);
  if (!verdict.ok())
    return caf::make_error(errc::bad_program,
                           "the head's plan fails verification: " +
                               verdict.violations.front());
  auto owned = std::make_shared<planner::plan>(std::move(*decoded));
  plan_ = owned;
  const auto& p = *plan_;
  auto settings = args_.config.transport;
  std::string mode = s.getSlotMode().cStr();
  if (mode != "logical" && mode != "paced")
    return caf::make_error(errc::bad_message,
                           "setup: slot mode '" + mode +
                               "' (expected logical or paced)");
  settings.mode = mode == "paced" ? transport::slot_mode::paced
                                  : transport::slot_mode::logical;
  if (s.getSlotNs() != 0)
    settings.slot_ns = s.getSlotNs();

  // The store: this host's tiles only. Open only while the tiles load: its
  // caches and memtables would otherwise stay resident beside the arenas
  // that now hold the weights (~12 MB a host of local-1500).
  auto opened = storage::store::open(args_.db, {.create_if_missing = true});
  if (!opened)
    return opened.error();
  auto db = std::move(*opened);
  uint64_t generated = 0;
  if (auto err = ensure_tiles(*db, p, s.getWeightSeed(), generated))
    return err;
  auto ws = storage::weight_store::open(*db);
  if (!ws)
    return ws.error();
  if (auto err = ws->check_model(p.spec))
    return err;

  // One arena per node of this host that the plan uses (both programs:
  // they share it).
  std::set<uint32_t> nodes;
  for (const auto& sh : p.shards)
    nodes.insert(sh.chip);
  for (const auto* prog : {&p.decode, &p.prefill}) {
    for (const auto& o : prog->ops)
      nodes.insert(o.chip);
    for (const auto& t : prog->transfers) {
      nodes.insert(t.src);
      nodes.insert(t.dst);
    }
  }
  nodes.insert(args_.config.host_node(args_.rank));
  for (auto n : nodes) {
    if (args_.config.ref(n).host != args_.rank)
      continue;
    uint64_t bytes = args_.config.is_host_node(n)
                         ? std::max({p.decode.arenas[n].end,
                                     p.prefill.arenas[n].end, uint64_t{1}})
                         : args_.config.chip.sram_bytes;
    if (!args_.config.is_host_node(n) && p.usage[n].total() > bytes)
      return caf::make_error(errc::bad_program,
                             transport::to_string(args_.config.ref(n)) +
                                 " needs " +
                                 std::to_string(p.usage[n].total()) +
                                 " bytes of SRAM, its profile has " +
                                 std::to_string(bytes));
    auto a = sram_arena::allocate(bytes);
    if (!a)
      return a.error();
    (*a)->prefault(args_.config.is_host_node(n) ? bytes : p.usage[n].total());
    arenas_[n] = std::move(*a);
  }
  auto loaded = load_shards(p, args_.config, *ws, [&](uint32_t chip) {
    auto it = arenas_.find(chip);
    return it == arenas_.end() ? std::span<std::byte>{} : it->second->bytes();
  });
  if (!loaded)
    return loaded.error();

  // A transport per program it runs, on the arenas: zero copy. Every host
  // decides alike which (and opens them in the same order).
  std::vector<program_kind> kinds{program_kind::decode};
  if (detail::runs_prefill(p, settings.mode == transport::slot_mode::paced))
    kinds.push_back(program_kind::prefill);
  for (auto kind : kinds)
    if (auto err = open_lane(kind, settings))
      return err;
  // The whole plan is checked and the whole slot tables built: from here
  // on a host keeps only its own chips' programs (~1/12 of local-1500's).
  // The head keeps all of it: it plans, samples and reports the plan hash.
  if (args_.rank != 0) {
    std::vector<bool> mine(args_.config.node_count());
    for (uint32_t n = 0; n < mine.size(); ++n)
      mine[n] = args_.config.ref(n).host == args_.rank;
    planner::keep_programs_of(*owned, mine);
  }

  // Chip actors for the chips that run ops; the sampler endpoint goes to
  // the coordinator.
  rope_ = std::make_shared<const model::rope_table>(
      p.spec.head_dim, p.spec.rope_theta, p.spec.max_context);
  std::array<std::set<uint32_t>, 2> with_ops;
  for (auto kind : kinds)
    for (const auto& o : p.program(kind).ops)
      if (args_.config.ref(o.chip).host == args_.rank)
        with_ops[static_cast<size_t>(kind)].insert(o.chip);
  std::set<uint32_t> chips = with_ops[0];
  chips.insert(with_ops[1].begin(), with_ops[1].end());
  auto self = caf::actor_cast<caf::actor>(this);
  for (auto n : chips) {
    if (n == p.sampler) {
      if (!args_.coordinator)
        return caf::make_error(errc::bad_program,
                               "the sampler runs on this host, which has no "
                               "coordinator");
      chips_[n] = args_.coordinator; // told once the routes are complete
      continue;
    }
    chip_actor_args a;
    for (auto kind : kinds) {
      auto k = static_cast<size_t>(kind);
      if (!with_ops[k].contains(n))
        continue;
      auto exec = chip_executor::make(p, args_.config, kind, n,
                                      arenas_[n]->bytes(), *rope_);
      if (!exec)
        return exec.error();
      a.programs[k] = {std::move(*exec), lanes_[k].lane};
    }
    auto figures = std::make_shared<chip_figures>();
    figures_[n] = figures;
    a.keep = {plan_, arenas_[n], rope_};
    a.figures = figures;
    a.host = self;
    chips_[n] = system().spawn<chip_actor>(std::move(a));
  }
  // Complete before any actor reads them: the chips read them only when
  // they send, after an arrival, and arrivals start after this (the
  // progress threads start below; the sampler is told below).
  for (auto kind : kinds) {
    auto& l = lanes_[static_cast<size_t>(kind)];
    auto routes = std::const_pointer_cast<detail::local_routes>(l.lane.routes);
    routes->receiver.resize(l.arrival_node.size());
    for (size_t i = 0; i < l.arrival_node.size(); ++i)
      if (auto it = chips_.find(l.arrival_node[i]); it != chips_.end())
        routes->receiver[i] = it->second;
  }
  if (chips_.contains(p.sampler))
    anon_send(args_.coordinator,
              sampler_ready{plan_, p.sampler, arenas_[p.sampler], rope_,
                            {lanes_[0].lane, lanes_[1].lane}});
  for (auto kind : kinds)
    start_progress(kind);
  ::malloc_trim(0);
  std::fprintf(stderr,
               "lockstepd: host %u ready: %zu chips, %llu weight bytes "
               "loaded (%llu generated into the store)\n",
               args_.rank, chips_.size(),
               static_cast<unsigned long long>(*loaded),
               static_cast<unsigned long long>(generated));
  return {};
}

caf::error host_actor::open_lane(program_kind kind,
                                 const transport::transport_settings& settings) {
  const auto& p = *plan_;
  const auto& prog = p.program(kind);
  auto k = static_cast<size_t>(kind);
  auto table = planner::slot_table_of(args_.config, p, kind);
  // This host keeps its share: its links' transfers only.
  auto program = [&]() -> caf::expected<transport::slot_program> {
    auto whole = transport::slot_program::load(table);
    if (!whole)
      return whole.error();
    return whole->share_of(args_.rank);
  }();
  if (!program)
    return program.error();
  std::vector<transport::arena_memory> memory;
  for (auto c : program->chips_of(args_.rank)) {
    auto n = args_.config.flat(c);
    if (!n || !arenas_.contains(*n))
      return caf::make_error(errc::bad_program,
                             "the " + std::string{to_string(kind)} +
                                 " slot table names " + transport::to_string(c) +
                                 ", which the plan does not use");
    auto mem = arenas_[*n]->bytes();
    const auto& a = prog.arenas[*n];
    if (a.send_base + a.send_bytes > mem.size() ||
        a.recv_base + a.recv_bytes > mem.size())
      return caf::make_error(errc::bad_program,
                             transport::to_string(c) + "'s " +
                                 to_string(kind) +
                                 " arenas lie outside its SRAM");
    memory.push_back({c, mem.subspan(a.send_base, a.send_bytes),
                      mem.subspan(a.recv_base, a.recv_bytes)});
  }
  auto routes = std::make_shared<detail::local_routes>();
  routes->kind = kind;
  routes->slot_index.assign(prog.transfers.size(), planner::no_id);
  auto& arrival = lanes_[k].arrival_node;
  arrival.assign(program->transfers().size(), planner::no_id);
  for (uint32_t i = 0; i < program->transfers().size(); ++i) {
    uint32_t id = program->transfers()[i].id;
    if (id >= prog.transfers.size())
      return caf::make_error(errc::bad_program,
                             "the " + std::string{to_string(kind)} +
                                 " slot table's transfer " +
                                 std::to_string(id) + " is not the plan's");
    routes->slot_index[id] = i;
    arrival[i] = prog.transfers[id].dst;
  }
  transport::transport_options opts;
  opts.host = args_.rank;
  opts.settings = settings;
  opts.send_delay_ns = args_.inject_send_delay_ns;
  // Each program's transport exchanges its own hellos: prefill's are kept
  // under ranks shifted past decode's.
  program_rendezvous rv{*rendezvous_,
                        static_cast<uint32_t>(k * args_.config.host_count())};
  auto t = transport::host_transport::create(opts, std::move(*program), rv,
                                             std::move(memory));
  if (!t)
    return t.error();
  lanes_[k].lane = {std::move(*t), std::move(routes)};
  return {};
}

void host_actor::start_progress(program_kind kind) {
  // The progress thread: every arrival to the chip it is for. It blocks in
  // the transport while nothing happens; tear_down() wakes it to stop, so
  // the timeout is only a safety net. (At 200 ms, each of local-64's 8 idle
  // hosts spent ~0.4% of a core on the wake-ups and the polling after them.)
  auto self = caf::actor_cast<caf::actor>(this);
  auto& l = lanes_[static_cast<size_t>(kind)];
  l.progress = std::thread([this, self, kind, &l] {
    auto& transport = *l.lane.transport;
    std::vector<transport::transport_event> events;
    while (!stop_progress_) {
      events.clear();
      if (auto err = transport.wait(events, std::chrono::seconds(5))) {
        anon_send(self, failed{render(err)});
        return;
      }
      for (const auto& ev : events) {
        if (ev.what == transport::transport_event::kind::error) {
          anon_send(self, failed{render(ev.err)});
          continue;
        }
        if (ev.what != transport::transport_event::kind::arrival)
          continue;
        uint32_t node = l.arrival_node[ev.transfer];
        auto it = chips_.find(node);
        if (it == chips_.end())
          continue;
        anon_send(it->second,
                  arrived{transport.program().transfers()[ev.transfer].id,
                          ev.step, kind});
      }
    }
  });
}

void host_actor::send_heartbeat() {
  envelope e;
  auto hb = e.root().initHeartbeat();
  hb.setRank(args_.rank);
  hb.setLog(args_.log);
  timespec cpu{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
  hb.setCpuNs(uint64_t(cpu.tv_sec) * 1'000'000'000 + uint64_t(cpu.tv_nsec));
  auto chips = hb.initChips(static_cast<unsigned>(figures_.size()));
  size_t i = 0;
  for (const auto& [n, f] : figures_) {
    chips[i].setChip(transport::to_string(args_.config.ref(n)));
    chips[i].setOpsRun(f->ops_run.load(std::memory_order_relaxed));
    chips[i].setStepsRun(f->steps_run.load(std::memory_order_relaxed));
    chips[i].setSramBytes(arenas_[n]->bytes().size());
    chips[i].setKernelNs(f->kernel_ns.load(std::memory_order_relaxed));
    chips[i].setHandlerNs(f->handler_ns.load(std::memory_order_relaxed));
    ++i;
  }
  // Per link of this host, both programs' counters summed.
  std::map<std::string, transport::link_counters> sums;
  for (const auto& l : lanes_) {
    if (!l.lane.transport)
      continue;
    const auto& links = l.lane.transport->program().links();
    for (uint32_t i = 0; i < links.size(); ++i) {
      if (links[i].src.host != args_.rank && links[i].dst.host != args_.rank)
        continue;
      auto c = l.lane.transport->counters(i);
      auto& s = sums[links[i].name];
      s.bytes_sent += c.bytes_sent;
      s.transfers_sent += c.transfers_sent;
      s.bytes_received += c.bytes_received;
      s.transfers_received += c.transfers_received;
      s.slot_misses += c.slot_misses;
      s.max_lateness_ns = std::max(s.max_lateness_ns, c.max_lateness_ns);
    }
  }
  auto out = hb.initLinks(static_cast<unsigned>(sums.size()));
  size_t k = 0;
  for (const auto& [name, c] : sums) {
    out[k].setLink(name);
    out[k].setBytesSent(c.bytes_sent);
    out[k].setTransfersSent(c.transfers_sent);
    out[k].setBytesReceived(c.bytes_received);
    out[k].setTransfersReceived(c.transfers_received);
    out[k].setSlotMisses(c.slot_misses);
    out[k].setMaxLatenessNs(c.max_lateness_ns);
    ++k;
  }
  hub_->send(0, e.builder());
}

void host_actor::fail(const std::string& why, int code) {
  std::fprintf(stderr, "lockstepd: host %u: %s\n", args_.rank, why.c_str());
  if (args_.exit_code != nullptr && *args_.exit_code == 0)
    *args_.exit_code = code;
  if (hub_ && !stopping_) {
    envelope e;
    e.root().setError("host " + std::to_string(args_.rank) + ": " + why);
    hub_->send(0, e.builder());
  }
  stop();
}

void host_actor::stop() {
  if (stopping_)
    return;
  stopping_ = true;
  tear_down();
  quit();
}

void host_actor::tear_down() {
  // The progress threads read chips_: stop them first.
  stop_progress_ = true;
  for (auto& l : lanes_) {
    if (l.lane.transport)
      l.lane.transport->wake();
    if (l.progress.joinable())
      l.progress.join();
  }
  for (auto& [n, a] : chips_)
    if (a != args_.coordinator)
      anon_send_exit(a, caf::exit_reason::user_shutdown);
  chips_.clear();
  args_.coordinator = nullptr;
  for (auto& l : lanes_) {
    l.lane.routes.reset();
    if (l.lane.transport)
      l.lane.transport->close(std::chrono::seconds(5));
  }
  if (hub_)
    hub_->close();
}

} // namespace lockstep::actors
