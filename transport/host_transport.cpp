// host_transport: start-up (arenas, registrations, hellos, programs) and
// the thread-safe API (post_send, post_forward, release, reads).

#include "transport/detail/host_state.hpp"

#include <algorithm>
#include <bit>
#include <climits>
#include <cmath>
#include <cstring>

namespace lockstep::transport {

using namespace detail;

// --- helpers ---------------------------------------------------------------

int64_t host_transport::impl::now_ns() const {
  auto mono = monotonic_ns();
  int64_t drift = 0;
  if (clock_drift_ppb != 0)
    drift = static_cast<int64_t>(
        std::llround(static_cast<double>(mono - clock_base_ns) *
                     static_cast<double>(clock_drift_ppb) / 1e9));
  return mono + clock_offset_ns + drift;
}

int64_t host_transport::impl::slot_ref_ns(uint64_t step, uint32_t slot) const {
  return slot_ref_ns(step, slot, origin);
}

int64_t host_transport::impl::slot_ref_ns(uint64_t step, uint32_t slot,
                                          const step_origin& o) const {
  if (o.ref_ns != INT64_MIN && step >= o.step) {
    auto rel = (step - o.step) * period_slots + slot;
    return o.ref_ns + static_cast<int64_t>(rel * settings.slot_ns);
  }
  auto abs = step * period_slots + slot;
  return epoch_ref_ns + static_cast<int64_t>(abs * settings.slot_ns);
}

int64_t host_transport::impl::local_slot_start(uint64_t step,
                                               uint32_t slot) const {
  return clock.to_local(slot_ref_ns(step, slot));
}

std::string host_transport::impl::where(uint32_t transfer) const {
  const auto& tp = program.transfers()[transfer];
  return "link " + program.links()[tp.link].name + " slot " +
         std::to_string(tp.start_slot);
}

std::string host_transport::impl::where(uint32_t transfer,
                                        uint64_t step) const {
  return where(transfer) + " step " + std::to_string(step);
}

void host_transport::impl::error_event(uint32_t transfer, uint32_t link,
                                       uint64_t step, caf::error err) {
  transport_event e;
  e.what = transport_event::kind::error;
  e.transfer = transfer;
  e.link = link;
  e.step = step;
  e.at_ns = now_ns();
  e.err = std::move(err);
  events.push_back(std::move(e));
}

// --- start-up --------------------------------------------------------------

namespace {

// Completion-queue entries `host` can have outstanding at once: a remote-
// write completion per cross-process arrival and a local one per
// cross-process send, for every step whose buffers can be in flight
// (alternating receive buffers), plus the control plane (hello, goodbye,
// clock and ready messages: a few per peer). A fixed size overruns once
// thousands of links end on one host; a CQ that overruns loses arrivals.
size_t cq_entries_for(const slot_program& prog, uint32_t host) {
  size_t per_step = 0, buffers = 1;
  for (const auto& t : prog.transfers()) {
    const auto& l = prog.links()[t.link];
    if (l.src.host == l.dst.host)
      continue; // in place, no completion
    if (l.src.host == host || l.dst.host == host) {
      ++per_step;
      buffers = std::max(buffers, t.dst_offsets.size());
    }
  }
  size_t need = per_step * buffers + 8 * size_t{prog.hosts()} + 256;
  return std::bit_ceil(std::max<size_t>(need, 1024));
}

} // namespace

host_transport::host_transport(std::unique_ptr<impl> p)
    : impl_(std::move(p)) {}

host_transport::~host_transport() {
  // Best effort: a transport dropped without close() still says goodbye so
  // peers are not left waiting; errors cannot be reported from here.
  if (impl_ && impl_->fabric && !impl_->closed)
    static_cast<void>(
        close(std::chrono::nanoseconds(impl_->settings.hard_timeout_ns)));
}

caf::expected<std::unique_ptr<host_transport>>
host_transport::create(const transport_options& opts, slot_program program,
                       rendezvous& rv, std::vector<arena_memory> arenas) {
  auto p = std::make_unique<impl>();
  p->settings = opts.settings;
  p->host = opts.host;
  p->clock_offset_ns = opts.clock_offset_ns;
  p->clock_drift_ppb = opts.clock_drift_ppb;
  p->send_delay_ns = opts.send_delay_ns;
  p->clock_base_ns = monotonic_ns();
  // 0: never re-sync (the start-up alignment only).
  p->resync_interval_ns =
      opts.resync_interval.count() == 0
          ? INT64_MAX
          : std::max<int64_t>(opts.resync_interval.count(), 10'000'000);
  p->program = std::move(program);
  p->paced = p->settings.mode == slot_mode::paced;
  p->period_slots = p->program.period_slots();
  if (opts.host >= p->program.hosts())
    return caf::make_error(errc::invalid_config,
                           "host " + std::to_string(opts.host) +
                               " is not in the slot table (" +
                               std::to_string(p->program.hosts()) + " hosts)");
  if (p->program.hosts() > cq_data::max_hosts)
    return caf::make_error(errc::invalid_table,
                           std::to_string(p->program.hosts()) +
                               " hosts exceed the limit of " +
                               std::to_string(cq_data::max_hosts));
  if (p->paced && p->settings.slot_ns == 0)
    return caf::make_error(errc::invalid_config,
                           "transport.slot_ns: paced mode needs a slot length");
  auto waiter = progress_waiter::create();
  if (!waiter)
    return waiter.error();
  p->waiter = std::move(*waiter);
  std::unique_ptr<host_transport> t{new host_transport(std::move(p))};
  auto& s = *t->impl_;
  timer_slack_guard slack; // the clock alignment's pings
  if (auto err = s.setup(opts, rv, std::move(arenas))) {
    s.closed = true; // peers may not be up: no goodbye
    return err;
  }
  if (auto err = s.connect()) {
    s.closed = true;
    return err;
  }
  if (s.paced)
    if (auto err = s.sync_clocks()) {
      s.closed = true;
      return err;
    }
  // Events of peers that started first (arrivals) wait for the first wait().
  return t;
}

caf::error host_transport::impl::setup(const transport_options& opts,
                                       rendezvous& rv,
                                       std::vector<arena_memory> memory) {
  const auto& prog = program;
  auto chips = prog.chips_of(host);
  auto config_error = [](const std::string& what) {
    return caf::make_error(errc::invalid_config, what);
  };
  // One caller-owned arena per chip of this host in the table, large enough
  // and word-aligned (payloads are read in place as Cap'n Proto messages).
  for (const auto& m : memory)
    if (std::find(chips.begin(), chips.end(), m.chip) == chips.end())
      return config_error("arena given for " + to_string(m.chip) +
                          ", which is not a chip of host " +
                          std::to_string(host) + " in the slot table");
  for (auto c : chips) {
    auto n = std::count_if(memory.begin(), memory.end(),
                           [&](const arena_memory& m) { return m.chip == c; });
    if (n != 1)
      return config_error(std::to_string(n) + " arenas given for " +
                          to_string(c) + " (expected one)");
    const auto& m =
        *std::find_if(memory.begin(), memory.end(),
                      [&](const arena_memory& a) { return a.chip == c; });
    const auto* a = prog.arena(c);
    auto check = [&](std::span<std::byte> span, uint64_t need,
                     const char* which) -> caf::error {
      if (span.size() < need)
        return config_error(std::string{which} + " arena of " + to_string(c) +
                            " has " + std::to_string(span.size()) +
                            " bytes; the table needs " + std::to_string(need));
      if (reinterpret_cast<uintptr_t>(span.data()) % 8 != 0)
        return config_error(std::string{which} + " arena of " + to_string(c) +
                            " is not 8-byte aligned");
      return caf::none;
    };
    if (auto err = check(m.send, a->send_bytes, "send"))
      return err;
    if (auto err = check(m.recv, a->recv_bytes, "receive"))
      return err;
  }

  auto fab = fabric_context::open(settings.provider, cq_entries_for(prog, host));
  if (!fab)
    return fab.error();
  fabric = std::move(*fab);
  if (fabric->wait_fd() < 0) {
    auto b = doorbell::create(host);
    if (!b)
      return b.error();
    bell = std::move(*b);
  }
  uint64_t next_key = uint64_t{host} << 32;
  host_hello hello;
  hello.host = host;
  hello.provider = settings.provider;
  hello.table_digest = prog.digest();
  hello.mode = settings.mode;
  hello.slot_ns = settings.slot_ns;
  hello.doorbell = bell ? bell.name() : std::string{};
  for (auto c : chips) {
    const auto& m =
        *std::find_if(memory.begin(), memory.end(),
                      [&](const arena_memory& a) { return a.chip == c; });
    local_arena la;
    la.chip = c;
    la.send = m.send;
    la.recv = m.recv;
    // Registered in place: no staging copy ever. The receive arena is also
    // a write source so a relay can forward straight out of it. An empty
    // arena is not registered (nothing is written to or from it).
    if (!la.recv.empty()) {
      auto mr = fabric->register_memory(la.recv.data(), la.recv.size(),
                                        FI_REMOTE_WRITE | FI_WRITE, ++next_key);
      if (!mr)
        return mr.error();
      la.recv_mr = std::move(*mr);
    }
    if (!la.send.empty()) {
      auto mr = fabric->register_memory(la.send.data(), la.send.size(),
                                        FI_WRITE, ++next_key);
      if (!mr)
        return mr.error();
      la.send_mr = std::move(*mr);
    }
    uint64_t base = fabric->virtual_addressing()
                        ? reinterpret_cast<uint64_t>(la.recv.data())
                        : 0;
    hello.arenas.push_back({c.chip, la.recv.empty() ? 0 : base,
                            la.recv.empty() ? 0 : la.recv_mr.key(),
                            la.recv.size()});
    arenas.push_back(std::move(la));
  }
  // Mailbox: word 0 is the source of every control write; word 1 + h is
  // where host h's control writes land (their content is not read: the CQ
  // data carries the message).
  size_t mailbox_bytes = 8 * (1 + size_t{prog.hosts()});
  auto mb = mapped_buffer::allocate(mailbox_bytes);
  if (!mb)
    return mb.error();
  mailbox = std::move(*mb);
  auto mbr = fabric->register_memory(mailbox.data(), mailbox_bytes,
                                     FI_WRITE | FI_REMOTE_WRITE, ++next_key);
  if (!mbr)
    return mbr.error();
  mailbox_mr = std::move(*mbr);
  hello.mailbox_base = fabric->virtual_addressing()
                           ? reinterpret_cast<uint64_t>(mailbox.data())
                           : 0;
  hello.mailbox_key = mailbox_mr.key();
  hello.mailbox_bytes = mailbox_bytes;
  auto addr = fabric->local_address();
  if (!addr)
    return addr.error();
  hello.fabric_address = std::move(*addr);
  if (auto res = rv.publish(host, encode(hello)); !res)
    return res.error();

  // Collect every host's hello (our own included: loopback links between
  // chips of this host cross the fabric too).
  std::vector<std::vector<std::byte>> addrs;
  peers.resize(prog.hosts());
  for (uint32_t h = 0; h < prog.hosts(); ++h) {
    auto bytes = rv.fetch(h, opts.startup_timeout);
    if (!bytes)
      return bytes.error();
    auto what = "hello of host " + std::to_string(h);
    auto peer_hello = decode_hello(*bytes, what);
    if (!peer_hello)
      return peer_hello.error();
    const auto& ph = *peer_hello;
    auto mismatch = [&](const std::string& why) {
      return caf::make_error(errc::bad_control_message, what + ": " + why);
    };
    auto them = "host " + std::to_string(h);
    if (ph.host != h)
      return mismatch("claims to be host " + std::to_string(ph.host));
    if (ph.provider != settings.provider)
      return mismatch(them + " runs provider " + ph.provider + ", this host " +
                      settings.provider);
    if (ph.mode != settings.mode)
      return mismatch(them + " runs " + to_string(ph.mode) +
                      " mode, this host " + to_string(settings.mode));
    if (paced && ph.slot_ns != settings.slot_ns)
      return mismatch(them + " runs " + std::to_string(ph.slot_ns) +
                      " ns slots, this host " +
                      std::to_string(settings.slot_ns));
    if (ph.table_digest != prog.digest())
      return mismatch(them + " runs a different slot table (digest " +
                      std::to_string(ph.table_digest) + ", this host " +
                      std::to_string(prog.digest()) + ")");
    if (ph.mailbox_bytes < 8 * (1 + size_t{prog.hosts()}))
      return mismatch("mailbox too small");
    if (bell && h != host) {
      // This provider has no completion wait object: hosts wake each other
      // through doorbells, which needs them on one machine.
      if (ph.doorbell.empty())
        return mismatch(them + " publishes no doorbell");
      auto b = doorbell::open(ph.doorbell);
      if (!b)
        return mismatch("its doorbell cannot be opened (hosts of a provider "
                        "without a completion wait object must share a "
                        "machine): " +
                        detail_of(b.error()));
      peer_bells.resize(prog.hosts());
      peer_bells[h] = std::move(*b);
    }
    auto& p = peers[h];
    p.mailbox_base = ph.mailbox_base;
    p.mailbox_key = ph.mailbox_key;
    for (auto c : prog.chips_of(h)) {
      auto i =
          std::find_if(ph.arenas.begin(), ph.arenas.end(),
                       [&](const arena_key& k) { return k.chip == c.chip; });
      if (i == ph.arenas.end())
        return mismatch("no receive arena for chip " + to_string(c));
      if (i->bytes < prog.arena(c)->recv_bytes)
        return mismatch("receive arena of " + to_string(c) + " has " +
                        std::to_string(i->bytes) + " bytes, the table needs " +
                        std::to_string(prog.arena(c)->recv_bytes));
      p.arenas[c.chip] = *i;
    }
    addrs.push_back(std::move(ph.fabric_address));
  }
  auto fi_addrs = fabric->insert_addresses(addrs);
  if (!fi_addrs)
    return fi_addrs.error();
  for (uint32_t h = 0; h < prog.hosts(); ++h)
    peers[h].addr = (*fi_addrs)[h];

  // Resolve every target once; nothing is looked up per send.
  const auto& transfers = prog.transfers();
  out = std::make_unique<out_state[]>(transfers.size());
  in.resize(transfers.size());
  links = std::make_unique<atomic_link_counters[]>(prog.links().size());
  auto arena_index = [&](chip_ref c) {
    return static_cast<size_t>(
        std::find_if(arenas.begin(), arenas.end(),
                     [&](const local_arena& a) { return a.chip == c; }) -
        arenas.begin());
  };
  for (uint32_t i : prog.send_program(host)) {
    const auto& tp = transfers[i];
    const auto& link = prog.links()[tp.link];
    auto& o = out[i];
    o.ours = true;
    o.arena = arena_index(link.src);
    auto& src = arenas[o.arena];
    o.window = src.send.data() + tp.src_offset;
    o.desc = src.send_mr.desc();
    const auto& dst_peer = peers[link.dst.host];
    const auto& key = dst_peer.arenas.at(link.dst.chip);
    o.dest = dst_peer.addr;
    o.dest_host = link.dst.host;
    o.remote_base = key.remote_base;
    o.key = key.key;
    if (link.dst.host == host && !paced)
      o.local_recv = arenas[arena_index(link.dst)].recv.data();
  }
  for (uint32_t i : prog.receive_program(host)) {
    auto& st = in[i];
    st.ours = true;
    st.arena = arena_index(prog.links()[transfers[i].link].dst);
    st.arrived.fill(-1);
    inbound.push_back(i);
  }
  for (uint32_t l = 0; l < prog.links().size(); ++l)
    if (prog.links()[l].dst.host == host) {
      auto& a = arenas[arena_index(prog.links()[l].dst)];
      a.inbound_links.push_back(l);
      if (prog.links()[l].src.host != host)
        a.inbound_all_local = false;
    }
  ring_pending.assign(prog.hosts(), 0);
  outstanding_to.assign(prog.hosts(), 0);
  if (bell)
    waiter.use_doorbell(&bell);
  return caf::none;
}

// --- the API ---------------------------------------------------------------

const slot_program& host_transport::program() const {
  return impl_->program;
}

uint32_t host_transport::host() const {
  return impl_->host;
}

const transport_settings& host_transport::settings() const {
  return impl_->settings;
}

namespace {

caf::error closed_error(uint32_t host) {
  return caf::make_error(errc::fabric_failure,
                         "the transport of host " + std::to_string(host) +
                             " is closing; nothing more is sent or released");
}

} // namespace

caf::error host_transport::post_send(uint32_t transfer, uint64_t step) {
  auto path = send(transfer, step, false);
  return path ? caf::none : path.error();
}

caf::expected<send_path> host_transport::send_or_deliver(uint32_t transfer,
                                                         uint64_t step) {
  return send(transfer, step, true);
}

caf::expected<send_path> host_transport::send(uint32_t transfer, uint64_t step,
                                              bool may_deliver) {
  auto& s = *impl_;
  if (!s.accepting.load(std::memory_order_acquire))
    return closed_error(s.host);
  const auto& transfers = s.program.transfers();
  if (transfer >= transfers.size())
    return caf::make_error(
        errc::unscheduled_send,
        "transfer " + std::to_string(transfer) + " is not in the slot table (" +
            std::to_string(transfers.size()) + " transfers)");
  if (!s.out[transfer].ours) {
    const auto& l = s.program.links()[transfers[transfer].link];
    return caf::make_error(errc::unscheduled_send,
                           s.where(transfer) + ": sender is on host " +
                               std::to_string(l.src.host) +
                               ", not on this host " + std::to_string(s.host));
  }
  if (step * s.program.slots_per_step() + transfers[transfer].start_slot >
      cq_data::slot_mask)
    return caf::make_error(errc::unscheduled_send,
                           s.where(transfer, step) +
                               ": the absolute slot counter (" +
                               std::to_string(cq_data::slot_bits) +
                               " bits) is exhausted; start a new epoch");
  auto& o = s.out[transfer];
  const auto& tp = transfers[transfer];
  // In place: same host, logical mode, and the receiver released the
  // window's previous use (else the progress thread waits for that).
  bool deliver =
      may_deliver && o.local_recv != nullptr &&
      s.links[tp.link].peer_released.load(std::memory_order_acquire) >=
          static_cast<int64_t>(step) -
              static_cast<int64_t>(tp.dst_offsets.size());
  {
    std::lock_guard guard{s.inbox_mutex};
    if (static_cast<int64_t>(step) <= o.last_requested)
      return caf::make_error(errc::unscheduled_send,
                             s.where(transfer) + ": already sent in step " +
                                 std::to_string(o.last_requested) + "; step " +
                                 std::to_string(step) +
                                 " is not scheduled again");
    o.last_requested = static_cast<int64_t>(step);
    if (deliver)
      s.delivered_inbox.emplace_back(transfer, step);
    else
      s.send_inbox.push_back({transfer, step, -1, 0, 0});
  }
  if (!deliver) {
    s.waiter.notify();
    return send_path::queued;
  }
  // The copy a link makes, made by the sender's thread: no progress
  // thread, no wake-up, no completion to reap.
  std::memcpy(o.local_recv + tp.dst_offset(step), o.window, tp.bytes);
  if (auto err = s.admit_arrival(transfer, step))
    return err;
  auto& c = s.links[tp.link];
  bump(c.bytes_sent, tp.bytes);
  bump(c.transfers_sent);
  o.last_posted.store(static_cast<int64_t>(step), std::memory_order_release);
  return send_path::delivered;
}

caf::error host_transport::post_forward(uint32_t transfer, uint64_t step,
                                        uint32_t received) {
  auto& s = *impl_;
  if (!s.accepting.load(std::memory_order_acquire))
    return closed_error(s.host);
  // From now on releases go through the progress thread, which holds a
  // window while a forward reads it.
  s.forwards_requested.store(true, std::memory_order_release);
  const auto& transfers = s.program.transfers();
  if (transfer >= transfers.size() || received >= transfers.size() ||
      !s.out[transfer].ours || !s.in[received].ours)
    return caf::make_error(
        errc::unscheduled_send,
        "forward of transfer " + std::to_string(received) + " as transfer " +
            std::to_string(transfer) +
            ": this host must receive the first and send the second");
  const auto& out_link = s.program.links()[transfers[transfer].link];
  const auto& in_link = s.program.links()[transfers[received].link];
  if (!(in_link.dst == out_link.src))
    return caf::make_error(errc::unscheduled_send,
                           s.where(transfer) + ": cannot forward " +
                               s.where(received) + ", received by " +
                               to_string(in_link.dst) + ", not by the sender " +
                               to_string(out_link.src));
  if (transfers[transfer].bytes != transfers[received].bytes)
    return caf::make_error(errc::wrong_size,
                           s.where(transfer) + " carries " +
                               std::to_string(transfers[transfer].bytes) +
                               " bytes; " + s.where(received) + " received " +
                               std::to_string(transfers[received].bytes));
  {
    std::lock_guard guard{s.inbox_mutex};
    auto& o = s.out[transfer];
    if (static_cast<int64_t>(step) <= o.last_requested)
      return caf::make_error(errc::unscheduled_send,
                             s.where(transfer) + ": already sent in step " +
                                 std::to_string(o.last_requested) + "; step " +
                                 std::to_string(step) +
                                 " is not scheduled again");
    o.last_requested = static_cast<int64_t>(step);
    s.send_inbox.push_back({transfer, step, received, 0, 0});
  }
  s.waiter.notify();
  return caf::none;
}

caf::error host_transport::release(chip_ref chip, uint64_t step) {
  auto& s = *impl_;
  if (!s.accepting.load(std::memory_order_acquire))
    return closed_error(s.host);
  auto i =
      std::find_if(s.arenas.begin(), s.arenas.end(),
                   [&](const impl::local_arena& a) { return a.chip == chip; });
  if (i == s.arenas.end())
    return caf::make_error(errc::invalid_config, "release of " +
                                                     to_string(chip) +
                                                     ": not a chip of host " +
                                                     std::to_string(s.host));
  if (i->inbound_all_local && !s.paced &&
      !s.forwards_requested.load(std::memory_order_acquire)) {
    // Every sender is on this host and no forward reads the window: the
    // credit is given here, in the caller's thread, without waking the
    // progress thread (it polls while a send waits for such a credit).
    std::lock_guard guard{s.arrival_mutex};
    auto st = static_cast<int64_t>(step);
    if (st > i->released) {
      i->released = st;
      for (auto l : i->inbound_links) {
        auto& pr = s.links[l].peer_released;
        if (st > pr.load(std::memory_order_relaxed))
          pr.store(st, std::memory_order_release);
      }
    }
    return caf::none;
  }
  {
    std::lock_guard guard{s.inbox_mutex};
    s.release_inbox.emplace_back(static_cast<size_t>(i - s.arenas.begin()),
                                 step);
  }
  s.waiter.notify();
  return caf::none;
}

void host_transport::wake() {
  impl_->wake_requested.store(true, std::memory_order_release);
  impl_->waiter.notify();
}

link_counters host_transport::counters(uint32_t link) const {
  const auto& c = impl_->links[link];
  auto r = [](const auto& a) { return a.load(std::memory_order_relaxed); };
  link_counters out;
  out.bytes_sent = r(c.bytes_sent);
  out.transfers_sent = r(c.transfers_sent);
  out.bytes_received = r(c.bytes_received);
  out.transfers_received = r(c.transfers_received);
  out.slots_used = r(c.slots_used);
  out.slot_misses = r(c.slot_misses);
  out.max_lateness_ns = r(c.max_lateness_ns);
  out.refused_unscheduled = r(c.refused_unscheduled);
  out.refused_duplicate = r(c.refused_duplicate);
  out.refused_stale = r(c.refused_stale);
  out.refused_ahead = r(c.refused_ahead);
  return out;
}

host_counters host_transport::counters() const {
  host_counters out;
  out.refused_unknown_link = impl_->refused_unknown_link.load();
  out.resyncs = impl_->resyncs.load();
  out.idle_sleeps = impl_->waiter.sleeps();
  return out;
}

clock_report host_transport::clock() const {
  const auto& s = *impl_;
  std::lock_guard guard{s.stats_mutex};
  clock_report r;
  auto now = s.now_ns();
  r.offset_ns = s.shared_clock.offset_at(now);
  r.error_ns = static_cast<uint64_t>(s.shared_clock.error_ns());
  r.drift_ppb = static_cast<int64_t>(std::llround(s.shared_clock.rate() * 1e9));
  r.rounds = s.clock_rounds;
  r.resyncs = s.resyncs.load();
  r.epoch_ns = s.paced ? s.shared_clock.to_local(s.epoch_ref_ns) : 0;
  return r;
}

int64_t host_transport::now_ns() const {
  return impl_->now_ns();
}

int64_t host_transport::slot_start_ns(uint64_t step, uint32_t slot) const {
  const auto& s = *impl_;
  std::lock_guard guard{s.stats_mutex};
  return s.shared_clock.to_local(s.slot_ref_ns(step, slot, s.shared_origin));
}

caf::error host_transport::resume_at(uint64_t step, int64_t ref_ns) {
  auto& s = *impl_;
  if (!s.paced)
    return caf::none; // logical slots have no times
  {
    std::lock_guard guard{s.inbox_mutex};
    s.origin_inbox = impl::step_origin{step, ref_ns};
  }
  {
    std::lock_guard guard{s.stats_mutex};
    s.shared_origin = {step, ref_ns};
  }
  s.waiter.notify();
  return caf::none;
}

std::vector<int64_t> host_transport::lateness_samples() const {
  std::lock_guard guard{impl_->stats_mutex};
  return impl_->lateness;
}

int64_t host_transport::last_posted_step(uint32_t transfer) const {
  return impl_->out[transfer].last_posted.load(std::memory_order_acquire);
}

int64_t host_transport::released_through(uint32_t link) const {
  return impl_->links[link].peer_released.load(std::memory_order_acquire);
}

const std::string& host_transport::provider_name() const {
  return impl_->fabric->provider_name();
}

bool host_transport::blocking_waits() const {
  return impl_->fabric->wait_fd() >= 0;
}

// --- raw access --------------------------------------------------------------

host_transport::raw_target host_transport::raw_target_of(chip_ref dst) const {
  const auto& p = impl_->peers[dst.host];
  const auto& key = p.arenas.at(dst.chip);
  return {p.addr, key.remote_base, key.key};
}

void* host_transport::raw_send_desc(chip_ref src) const {
  for (const auto& a : impl_->arenas)
    if (a.chip == src)
      return a.send_mr.desc();
  return nullptr;
}

detail::fabric_context& host_transport::raw_fabric() const {
  return *impl_->fabric;
}

caf::error host_transport::absorb_completion(const fi_cq_data_entry& e) {
  return impl_->absorb(e);
}

uint64_t host_transport::raw_local_completions() const {
  return impl_->raw_local.load();
}

uint64_t host_transport::raw_remote_completions() const {
  return impl_->raw_remote.load();
}

} // namespace lockstep::transport
