// Start-up (arenas, registrations, hello exchange, programs), paced-mode
// clock alignment, and the goodbye barrier at teardown.

#include "transport/detail/transport_state.hpp"

#include <algorithm>
#include <cstring>

namespace lockstep::transport {

using namespace detail;

// --- start-up ---

caf::expected<std::unique_ptr<slotted_transport>>
slotted_transport::create(const transport_options& opts, slot_program program,
                          rendezvous& rv) {
  std::unique_ptr<slotted_transport> t{new slotted_transport};
  t->settings_ = opts.settings;
  t->host_ = opts.host;
  t->clock_offset_ns_ = opts.clock_offset_ns;
  t->program_ = std::move(program);
  if (opts.host >= t->program_.hosts())
    return caf::make_error(errc::invalid_config,
                           "host " + std::to_string(opts.host) +
                               " is not in the slot table (" +
                               std::to_string(t->program_.hosts()) + " hosts)");
  if (t->program_.hosts() > cq_data::max_hosts)
    return caf::make_error(errc::invalid_table,
                           std::to_string(t->program_.hosts()) +
                               " hosts exceed the limit of " +
                               std::to_string(cq_data::max_hosts));
  if (auto err = t->setup(opts, rv)) {
    t->closed_ = true; // peers may not be up: no goodbye
    return err;
  }
  if (t->settings_.mode == slot_mode::paced)
    if (auto err = t->sync_clocks()) {
      t->closed_ = true;
      return err;
    }
  return t;
}

caf::error slotted_transport::setup(const transport_options& opts,
                                    rendezvous& rv) {
  auto fab = fabric_context::open(settings_.provider);
  if (!fab)
    return fab.error();
  fabric_ = std::move(*fab);
  const auto& prog = program_;
  auto chips = prog.chips_of(host_);
  uint64_t next_key = uint64_t{host_} << 32;
  host_hello hello;
  hello.host = host_;
  hello.provider = settings_.provider;
  hello.table_digest = prog.digest();
  for (auto c : chips) {
    const auto* a = prog.arena(c);
    for (int dir = 0; dir < 2; ++dir) {
      bool recv = dir == 0;
      uint64_t bytes = recv ? a->recv_bytes : a->send_bytes;
      auto mem = mapped_buffer::allocate(bytes);
      if (!mem)
        return mem.error();
      local_arena la{c, std::move(*mem), {}};
      auto mr = fabric_->register_memory(
          la.memory.data(), std::max<size_t>(la.memory.size(), 8),
          recv ? FI_REMOTE_WRITE : FI_WRITE, ++next_key);
      if (!mr)
        return mr.error();
      la.mr = std::move(*mr);
      if (recv) {
        uint64_t base = fabric_->virtual_addressing()
                            ? reinterpret_cast<uint64_t>(la.memory.data())
                            : 0;
        hello.arenas.push_back({c.chip, base, la.mr.key(), bytes});
        recv_arenas_.push_back(std::move(la));
      } else {
        send_arenas_.push_back(std::move(la));
      }
    }
  }
  // Mailbox: word 0 is the source of every control write; word 1 + h is
  // where host h's control writes land (their content is not read: the CQ
  // data carries the message).
  size_t mailbox_bytes = 8 * (1 + size_t{prog.hosts()});
  auto mb = mapped_buffer::allocate(mailbox_bytes);
  if (!mb)
    return mb.error();
  mailbox_ = std::make_unique<mapped_buffer>(std::move(*mb));
  auto mbr = fabric_->register_memory(mailbox_->data(), mailbox_bytes,
                                      FI_WRITE | FI_REMOTE_WRITE, ++next_key);
  if (!mbr)
    return mbr.error();
  mailbox_mr_ = std::move(*mbr);
  hello.mailbox_base = fabric_->virtual_addressing()
                           ? reinterpret_cast<uint64_t>(mailbox_->data())
                           : 0;
  hello.mailbox_key = mailbox_mr_.key();
  hello.mailbox_bytes = mailbox_bytes;
  auto addr = fabric_->local_address();
  if (!addr)
    return addr.error();
  hello.fabric_address = std::move(*addr);
  if (auto res = rv.publish(host_, encode(hello)); !res)
    return res.error();

  // Collect every host's hello (our own included: loopback links between
  // chips of this host cross the fabric too).
  std::vector<std::vector<std::byte>> addrs;
  peers_.resize(prog.hosts());
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
    if (ph.host != h)
      return mismatch("claims to be host " + std::to_string(ph.host));
    if (ph.provider != settings_.provider)
      return mismatch("runs provider " + ph.provider + ", this host runs " +
                      settings_.provider);
    if (ph.table_digest != prog.digest())
      return mismatch("runs a different slot table");
    if (ph.mailbox_bytes < 8 * (1 + size_t{prog.hosts()}))
      return mismatch("mailbox too small");
    auto& p = peers_[h];
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
  auto fi_addrs = fabric_->insert_addresses(addrs);
  if (!fi_addrs)
    return fi_addrs.error();
  for (uint32_t h = 0; h < prog.hosts(); ++h)
    peers_[h].addr = (*fi_addrs)[h];

  // Compile this host's programs: framing of every outbound transfer is
  // written once, here; targets are resolved once.
  const auto& transfers = prog.transfers();
  out_.resize(transfers.size());
  in_.resize(transfers.size());
  released_through_.assign(prog.links().size(), -1);
  link_counters_.assign(prog.links().size(), {});
  auto local = [&](std::vector<local_arena>& v, chip_ref c) -> local_arena& {
    return *std::find_if(v.begin(), v.end(),
                         [&](const local_arena& a) { return a.chip == c; });
  };
  for (uint32_t i : prog.send_program(host_)) {
    const auto& tp = transfers[i];
    const auto& link = prog.links()[tp.link];
    auto& src = local(send_arenas_, link.src);
    auto& o = out_[i];
    o.window = src.memory.data() + tp.src_offset;
    o.desc = src.mr.desc();
    auto payload = write_frame({o.window, tp.bytes});
    if (!payload)
      return caf::make_error(errc::invalid_table,
                             "link " + link.name + " slot " +
                                 std::to_string(tp.start_slot) + ": " +
                                 detail_of(payload.error()));
    o.payload = *payload;
    const auto& dst_peer = peers_[link.dst.host];
    const auto& key = dst_peer.arenas.at(link.dst.chip);
    o.dest = dst_peer.addr;
    o.remote_base = key.remote_base;
    o.key = key.key;
  }
  for (uint32_t i : prog.receive_program(host_)) {
    const auto& link = prog.links()[transfers[i].link];
    in_[i].arena = local(recv_arenas_, link.dst).memory.data();
  }
  for (uint32_t l = 0; l < prog.links().size(); ++l)
    if (prog.links()[l].dst.host == host_)
      inbound_links_.push_back(l);
  return caf::none;
}

// --- clock alignment (paced mode) ---

caf::error slotted_transport::sync_clocks() {
  constexpr uint32_t rounds = 24;
  auto deadline = now_ns() + settings_.hard_timeout_ns +
                  static_cast<int64_t>(program_.hosts()) * 1'000'000'000;
  auto timeout = [this](const char* what) {
    return [this, what]() -> caf::error {
      return caf::make_error(errc::slot_timeout,
                             std::string{"clock alignment: "} + what +
                                 " timed out on host " + std::to_string(host_));
    };
  };
  // Start-up margin: every host must learn the epoch before it arrives.
  const int64_t margin_ns = std::max<int64_t>(
      20'000'000, 4 * static_cast<int64_t>(settings_.slot_ns));
  if (host_ == 0) {
    if (auto err = progress_until(
            [this] { return sync_done_ + 1 == program_.hosts(); }, deadline,
            timeout("waiting for the other hosts")))
      return err;
    auto epoch = now_ns() + margin_ns;
    for (uint32_t h = 1; h < program_.hosts(); ++h)
      if (auto err = post_control(
              h, cq_data::make_control(cq_data::control::epoch, host_,
                                       static_cast<uint64_t>(epoch))))
        return err;
    clock_.epoch_ns = epoch;
    clock_.rounds = 0;
    return caf::none;
  }
  // NTP-style: t1 local send, ts host 0's clock when it answered, t4 local
  // receive; offset = ts - (t1 + t4) / 2, error <= (t4 - t1) / 2. Keep the
  // round with the smallest round trip.
  int64_t best_rtt = INT64_MAX;
  int64_t best_offset = 0;
  for (uint32_t r = 0; r < rounds; ++r) {
    pong_seen_ = false;
    auto t1 = now_ns();
    if (auto err = post_control(
            0, cq_data::make_control(cq_data::control::ping, host_, 0)))
      return err;
    if (auto err = progress_until([this] { return pong_seen_; }, deadline,
                                  timeout("ping of host 0")))
      return err;
    auto t4 = now_ns();
    // Host 0's clock is within 2^47 ns of ours (plus the offset so far).
    auto ts = cq_data::widen(pong_value_, (t1 + t4) / 2);
    if (t4 - t1 < best_rtt) {
      best_rtt = t4 - t1;
      best_offset = ts - (t1 + t4) / 2;
    }
  }
  clock_.offset_ns = best_offset;
  clock_.error_ns = static_cast<uint64_t>(best_rtt / 2);
  clock_.rounds = rounds;
  if (auto err = post_control(
          0, cq_data::make_control(cq_data::control::sync_done, host_, 0)))
    return err;
  if (auto err = progress_until([this] { return epoch_seen_; }, deadline,
                                timeout("waiting for the epoch")))
    return err;
  auto master_epoch = cq_data::widen(epoch_value_, now_ns() + best_offset);
  clock_.epoch_ns = master_epoch - best_offset;
  return caf::none;
}

int64_t slotted_transport::slot_start_ns(uint64_t step, uint32_t slot) const {
  auto abs = step * program_.slots_per_step() + slot;
  return clock_.epoch_ns + static_cast<int64_t>(abs * settings_.slot_ns);
}

caf::error slotted_transport::close(std::chrono::nanoseconds timeout) {
  if (closed_ || !fabric_)
    return caf::none;
  closed_ = true;
  auto err = drain(timeout);
  if (!err) {
    for (uint32_t h = 0; h < program_.hosts(); ++h)
      if (h != host_)
        control_queue_.push_back(
            {h, cq_data::make_control(cq_data::control::bye, host_, 0)});
    err = progress_until(
        [this] {
          return byes_ + 1 >= program_.hosts() && outstanding_ == 0 &&
                 control_queue_.empty();
        },
        now_ns() + timeout.count(),
        [this] {
          return caf::make_error(errc::peer_unreachable,
                                 "teardown: " + std::to_string(byes_) + " of " +
                                     std::to_string(program_.hosts() - 1) +
                                     " peers said goodbye in time");
        });
  }
  return err;
}

} // namespace lockstep::transport
