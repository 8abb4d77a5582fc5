// host_transport's progress: the completion queue, receiver-side
// enforcement, posting queued sends (back-pressure, pacing), releases,
// missing deliveries, and wait() itself.

#include "transport/detail/host_state.hpp"

#include <algorithm>
#include <climits>
#include <thread>

namespace lockstep::transport {

using namespace detail;

namespace {

caf::error refused(const std::string& what) {
  return caf::make_error(errc::refused_arrival, what);
}

} // namespace

// --- the completion queue ----------------------------------------------------

caf::error host_transport::impl::poll_cq(bool& any) {
  fi_cq_data_entry entries[32];
  for (;;) {
    auto n = fi_cq_read(fabric->cq(), entries, 32);
    if (n == -FI_EAGAIN)
      return caf::none;
    if (n == -FI_EAVAIL) {
      any = true;
      fi_cq_err_entry err{};
      auto r = fi_cq_readerr(fabric->cq(), &err, 0);
      if (r < 0)
        return fabric_error("fi_cq_readerr", static_cast<int>(r));
      auto ctx = reinterpret_cast<uintptr_t>(err.op_context);
      char buf[256];
      const char* prov = fi_cq_strerror(fabric->cq(), err.prov_errno,
                                        err.err_data, buf, sizeof(buf));
      std::string provider = std::string{"provider: "} + (prov ? prov : "?");
      if (ctx >= 2) {
        // One write failed: the transfer's owner hears of it; the
        // transport goes on.
        auto t = static_cast<uint32_t>(ctx - 2);
        auto& o = out[t];
        if (outstanding > 0)
          --outstanding;
        if (outstanding_to[o.dest_host] > 0)
          --outstanding_to[o.dest_host];
        o.in_flight = false;
        error_event(t, program.transfers()[t].link, o.flight_step,
                    fabric_error("fi_cq_read", -err.err,
                                 "write of " + where(t, o.flight_step) + "; " +
                                     provider));
        continue;
      }
      // A control write failed: credits or the clock are lost; stop.
      return fabric_error("fi_cq_read", -err.err,
                          std::string{ctx == control_context
                                          ? "control write"
                                          : "completion error"} +
                              "; " + provider);
    }
    if (n < 0)
      return fabric_error("fi_cq_read", static_cast<int>(n));
    any = true;
    for (ssize_t i = 0; i < n; ++i)
      if (auto err = absorb(entries[i]))
        return err;
    if (n < 32)
      return caf::none;
  }
}

caf::error host_transport::impl::absorb(const fi_cq_data_entry& e) {
  if ((e.flags & FI_REMOTE_CQ_DATA) != 0) {
    if (cq_data::kind_of(e.data) == cq_data::kind::raw) {
      bump(raw_remote);
      return caf::none;
    }
    return dispatch_remote(e.data, now_ns());
  }
  auto ctx = reinterpret_cast<uintptr_t>(e.op_context);
  if (ctx == 0) {
    bump(raw_local); // a raw write of the benchmark or a test
    return caf::none;
  }
  if (outstanding > 0)
    --outstanding;
  if (ctx < 2)
    return caf::none; // a control write
  auto t = static_cast<uint32_t>(ctx - 2);
  auto& o = out[t];
  o.in_flight = false;
  if (outstanding_to[o.dest_host] > 0)
    --outstanding_to[o.dest_host];
  if (o.flight_forward >= 0) {
    auto& fs =
        arenas[in[static_cast<size_t>(o.flight_forward)].arena].forward_steps;
    if (auto i = std::find(fs.begin(), fs.end(), o.flight_step); i != fs.end())
      fs.erase(i);
    o.flight_forward = -1;
  }
  transport_event ev;
  ev.what = transport_event::kind::send_done;
  ev.transfer = t;
  ev.link = program.transfers()[t].link;
  ev.step = o.flight_step;
  events.push_back(std::move(ev));
  return caf::none;
}

caf::error host_transport::impl::dispatch_remote(uint64_t data, int64_t now) {
  switch (cq_data::kind_of(data)) {
  case cq_data::kind::data:
    on_data(cq_data::link_of(data), cq_data::slot_value_of(data), now);
    return caf::none;
  case cq_data::kind::release: {
    auto link = cq_data::link_of(data);
    auto step = static_cast<int64_t>(cq_data::slot_value_of(data));
    if (link >= program.links().size() ||
        program.links()[link].src.host != host) {
      error_event(transport_event::no_transfer,
                  link < program.links().size() ? link
                                                : transport_event::no_link,
                  static_cast<uint64_t>(step),
                  caf::make_error(errc::bad_control_message,
                                  "release of link " + std::to_string(link) +
                                      ", which this host does not send on"));
      return caf::none;
    }
    auto& pr = links[link].peer_released;
    if (step > pr.load(std::memory_order_relaxed)) {
      pr.store(step, std::memory_order_release);
      transport_event ev;
      ev.what = transport_event::kind::released;
      ev.link = link;
      ev.step = static_cast<uint64_t>(step);
      ev.at_ns = now;
      events.push_back(std::move(ev));
    }
    return caf::none;
  }
  case cq_data::kind::control: {
    auto from = cq_data::host_of(data);
    auto value = cq_data::value_of(data);
    if (from >= program.hosts())
      return caf::make_error(errc::bad_control_message,
                             "control message from unknown host " +
                                 std::to_string(from));
    switch (cq_data::control_of(data)) {
    case cq_data::control::ping:
      // Answer at once with our clock; only host 0 is pinged.
      control_queue.push_back(
          {from, cq_data::make_control(cq_data::control::pong, host,
                                       static_cast<uint64_t>(now))});
      break;
    case cq_data::control::resync_ping:
      control_queue.push_back(
          {from,
           cq_data::make_control(cq_data::control::resync_pong, host,
                                 cq_data::make_resync_pong_value(
                                     now, static_cast<uint16_t>(value)))});
      break;
    case cq_data::control::pong:
      pong_seen = true;
      pong_value = value;
      break;
    case cq_data::control::resync_pong:
      on_pong(value, true, now);
      break;
    case cq_data::control::sync_done:
      ++sync_done;
      break;
    case cq_data::control::epoch:
      epoch_seen = true;
      epoch_value = value;
      break;
    case cq_data::control::bye:
      ++byes;
      break;
    case cq_data::control::hello:
      ++hellos;
      break;
    default:
      return caf::make_error(errc::bad_control_message,
                             "control message of unknown kind from host " +
                                 std::to_string(from));
    }
    return caf::none;
  }
  case cq_data::kind::raw:
    break;
  }
  return caf::none;
}

// Receiver-side enforcement: the slot id must name a transfer of the table
// into this host, for a step whose window is neither released (stale) nor
// still held by an unreleased earlier step (ahead), once (duplicate). The
// bytes of a refused write have already landed (RMA cannot be refused);
// refusing means the owner never reads them as that step's input.
void host_transport::impl::on_data(uint32_t link, uint64_t abs_slot,
                                   int64_t now) {
  auto sps = program.slots_per_step();
  uint64_t step = abs_slot / sps;
  auto slot = static_cast<uint32_t>(abs_slot % sps);
  if (link >= program.links().size() ||
      program.links()[link].dst.host != host) {
    bump(refused_unknown_link);
    error_event(
        transport_event::no_transfer,
        link < program.links().size() ? link : transport_event::no_link, step,
        refused("arrival on link " + std::to_string(link) + " slot " +
                std::to_string(slot) + " step " + std::to_string(step) +
                " refused: no such link ends on host " + std::to_string(host)));
    return;
  }
  const auto& l = program.links()[link];
  auto& c = links[link];
  ring_pending[l.src.host] = 1; // its local completion is due
  const auto* tp = program.find(link, slot);
  if (tp == nullptr) {
    bump(c.refused_unscheduled);
    error_event(transport_event::no_transfer, link, step,
                refused("link " + l.name + " slot " + std::to_string(slot) +
                        " step " + std::to_string(step) +
                        ": arrival refused: no transfer starts in this slot"));
    return;
  }
  auto t = static_cast<uint32_t>(tp - program.transfers().data());
  if (auto err = admit_arrival(t, step)) {
    error_event(t, link, step, std::move(err));
    return;
  }
  if (paced) {
    // Lateness is measured here, when the progress thread sees the
    // completion, so a chip computing elsewhere is never charged a miss.
    auto late = now - local_slot_start(step, tp->end_slot());
    record_lateness(late);
    if (late > 0) {
      bump(c.slot_misses);
      if (late > c.max_lateness_ns.load(std::memory_order_relaxed))
        c.max_lateness_ns.store(late, std::memory_order_relaxed);
    }
  }
  note_step(step, now);
  transport_event ev;
  ev.what = transport_event::kind::arrival;
  ev.transfer = t;
  ev.link = link;
  ev.step = step;
  ev.at_ns = now;
  events.push_back(std::move(ev));
}

caf::error host_transport::impl::admit_arrival(uint32_t t, uint64_t step) {
  const auto& tp = program.transfers()[t];
  const auto& l = program.links()[tp.link];
  auto& c = links[tp.link];
  auto& st = in[t];
  auto depth = static_cast<int64_t>(tp.dst_offsets.size());
  auto s = static_cast<int64_t>(step);
  std::lock_guard guard{arrival_mutex};
  auto released = arenas[st.arena].released;
  if (s <= released) {
    bump(c.refused_stale);
    return refused(where(t, step) + ": arrival refused: " + to_string(l.dst) +
                   " released through step " + std::to_string(released));
  }
  auto& slot_step = st.arrived[step % tp.dst_offsets.size()];
  if (slot_step == s) {
    bump(c.refused_duplicate);
    return refused(where(t, step) +
                   ": arrival refused: a second arrival of this step");
  }
  if (s > released + depth) {
    bump(c.refused_ahead);
    return refused(where(t, step) + ": arrival refused: " +
                   to_string(l.dst) + " released through step " +
                   std::to_string(released) + ", so its " +
                   std::to_string(depth) + " windows hold steps up to " +
                   std::to_string(released + depth));
  }
  slot_step = s;
  while (st.arrived[static_cast<uint64_t>(st.arrived_through + 1) %
                    tp.dst_offsets.size()] == st.arrived_through + 1)
    ++st.arrived_through;
  bump(c.bytes_received, tp.bytes);
  bump(c.transfers_received);
  bump(c.slots_used, tp.duration_slots);
  return caf::none;
}

void host_transport::impl::record_lateness(int64_t late) {
  std::lock_guard guard{stats_mutex};
  if (lateness.size() < max_lateness_samples) {
    lateness.push_back(late);
  } else {
    lateness[lateness_next] = late;
    lateness_next = (lateness_next + 1) % max_lateness_samples;
  }
}

// --- control writes
// ------------------------------------------------------------

caf::error host_transport::impl::flush_control() {
  while (!control_queue.empty()) {
    auto cw = control_queue.front();
    const auto& p = peers[cw.host];
    uint64_t target = p.mailbox_base + 8 * (1 + uint64_t{host});
    // Control writes are 8 bytes: injected where the provider allows it (no
    // local completion to reap), else written with a completion.
    bool inject = fabric->inject_size() >= 8;
    auto ret =
        inject
            ? fi_inject_writedata(fabric->ep(), mailbox.data(), 8, cw.data,
                                  p.addr, target, p.mailbox_key)
            : fi_writedata(fabric->ep(), mailbox.data(), 8, mailbox_mr.desc(),
                           cw.data, p.addr, target, p.mailbox_key,
                           reinterpret_cast<void*>(control_context));
    if (ret == -FI_EAGAIN) {
      ring_pending[cw.host] = 1; // see post_pending
      return caf::none;          // retried on the next pass
    }
    if (ret != 0)
      return fabric_error("fi_writedata", static_cast<int>(ret),
                          "control write to host " + std::to_string(cw.host));
    if (!inject)
      ++outstanding;
    ring_pending[cw.host] = 1;
    control_queue.pop_front();
  }
  return caf::none;
}

// --- releases
// --------------------------------------------------------------------

void host_transport::impl::apply_releases() {
  size_t keep = 0;
  for (auto& r : deferred_releases) {
    auto& a = arenas[r.first];
    if (static_cast<int64_t>(r.second) <= a.released)
      continue; // already released through a later step
    // A forward still reading one of these windows holds the release.
    bool held = std::any_of(a.forward_steps.begin(), a.forward_steps.end(),
                            [&](uint64_t s) { return s <= r.second; });
    if (held) {
      deferred_releases[keep++] = r;
      continue;
    }
    std::lock_guard guard{arrival_mutex};
    a.released = static_cast<int64_t>(r.second);
    for (auto l : a.inbound_links) {
      auto src = program.links()[l].src.host;
      if (src != host) {
        control_queue.push_back({src, cq_data::make_release(l, r.second)});
        continue;
      }
      // A link within this host: the credit is ours to give, no write.
      auto& pr = links[l].peer_released;
      if (static_cast<int64_t>(r.second) > pr.load(std::memory_order_relaxed)) {
        pr.store(static_cast<int64_t>(r.second), std::memory_order_release);
        transport_event ev;
        ev.what = transport_event::kind::released;
        ev.link = l;
        ev.step = r.second;
        ev.at_ns = now_ns();
        events.push_back(std::move(ev));
      }
    }
  }
  deferred_releases.resize(keep);
}

// --- posting
// ---------------------------------------------------------------------

bool host_transport::impl::post_pending(int64_t now, bool& any) {
  bool posted = false;
  bool fabric_full = false;
  credit_from_local = false;
  ++scan_generation;
  const auto hard = static_cast<int64_t>(settings.hard_timeout_ns);
  size_t keep = 0;
  for (size_t i = 0; i < pending.size(); ++i) {
    auto r = pending[i];
    auto& o = out[r.transfer];
    const auto& tp = program.transfers()[r.transfer];
    auto retain = [&] { pending[keep++] = r; };
    // Sends of one transfer leave in step order, one write at a time (the
    // window is the same; the caller rewrites it only after send_done).
    bool earlier_pending = o.scan == scan_generation;
    o.scan = scan_generation;
    if (earlier_pending || o.in_flight || fabric_full) {
      retain();
      continue;
    }
    auto drop = [&](caf::error err) {
      error_event(r.transfer, tp.link, r.step, std::move(err));
      if (r.forward_from >= 0) {
        auto& fs =
            arenas[in[static_cast<size_t>(r.forward_from)].arena].forward_steps;
        if (auto j = std::find(fs.begin(), fs.end(), r.step); j != fs.end())
          fs.erase(j);
      }
      any = true;
    };
    // Back-pressure: the target window of `step` was last used by step -
    // buffers; its reader must have released that step.
    auto depth = static_cast<int64_t>(tp.dst_offsets.size());
    auto needed = static_cast<int64_t>(r.step) - depth;
    int64_t slot_start =
        paced ? local_slot_start(r.step, tp.start_slot) + send_delay_ns : 0;
    if (links[tp.link].peer_released.load(std::memory_order_relaxed) < needed) {
      auto since = std::max(r.queued_ns, slot_start);
      if (now - since > hard) {
        drop(caf::make_error(
            errc::back_pressure,
            where(r.transfer, r.step) + ": receiver has not released step " +
                std::to_string(needed) + " within " + ns_text(hard)));
        continue;
      }
      // A release of a same-host receiver may come from its chip's thread
      // without waking us (host_transport::release): poll, do not block.
      if (program.links()[tp.link].src.host == program.links()[tp.link].dst.host)
        credit_from_local = true;
      retain();
      continue;
    }
    if (paced && now < slot_start) {
      retain();
      continue;
    }
    const std::byte* source = o.window;
    void* desc = o.desc;
    if (r.forward_from >= 0) {
      auto f = static_cast<uint32_t>(r.forward_from);
      const auto& ftp = program.transfers()[f];
      auto& fin = in[f];
      auto& fa = arenas[fin.arena];
      bool arrived;
      {
        std::lock_guard guard{arrival_mutex};
        arrived = fin.arrived[r.step % ftp.dst_offsets.size()] ==
                  static_cast<int64_t>(r.step);
      }
      if (!arrived) {
        if (static_cast<int64_t>(r.step) <= fa.released) {
          drop(caf::make_error(errc::unscheduled_send,
                               where(r.transfer, r.step) + ": forward of " +
                                   where(f, r.step) +
                                   ", whose window was released"));
          continue;
        }
        if (now - r.queued_ns > hard) {
          drop(caf::make_error(
              errc::slot_timeout,
              where(r.transfer, r.step) + ": " + where(f, r.step) +
                  " to forward did not arrive within " + ns_text(hard)));
          continue;
        }
        retain(); // forwarded once it arrives
        continue;
      }
      source = fa.recv.data() + ftp.dst_offset(r.step);
      desc = fa.recv_mr.desc();
    }
    uint64_t abs_slot = r.step * program.slots_per_step() + tp.start_slot;
    auto data = cq_data::make_data(tp.link, abs_slot);
    auto target = o.remote_base + tp.dst_offset(r.step);
    // Small transfers are injected: the provider copies them at once, so the
    // window is free again and no local completion has to be reaped.
    bool inject = tp.bytes <= fabric->inject_size();
    auto ret =
        inject ? fi_inject_writedata(fabric->ep(), source, tp.bytes, data,
                                     o.dest, target, o.key)
               : fi_writedata(fabric->ep(), source, tp.bytes, desc, data,
                              o.dest, target, o.key, data_context(r.transfer));
    if (ret == -FI_EAGAIN) {
      // The provider's queue is full, or (shm) the first write to a peer
      // sent it a connection request and waits for the answer: keep the
      // order, wake the peer so it answers, and poll (never block) until
      // the write goes.
      ring_pending[o.dest_host] = 1;
      fabric_refused = true;
      if (r.refused_ns == 0)
        r.refused_ns = now;
      if (now - r.refused_ns > hard) {
        drop(caf::make_error(errc::slot_timeout,
                             where(r.transfer, r.step) +
                                 ": the fabric refused the write (queue "
                                 "full) for the whole hard timeout"));
        continue;
      }
      fabric_full = true;
      retain();
      continue;
    }
    if (ret != 0) {
      drop(fabric_error("fi_writedata", static_cast<int>(ret),
                        where(r.transfer, r.step)));
      continue;
    }
    any = posted = true;
    ring_pending[o.dest_host] = 1;
    auto& c = links[tp.link];
    bump(c.bytes_sent, tp.bytes);
    bump(c.transfers_sent);
    o.last_posted.store(static_cast<int64_t>(r.step),
                        std::memory_order_release);
    if (inject) {
      if (r.forward_from >= 0) {
        auto& fs =
            arenas[in[static_cast<size_t>(r.forward_from)].arena].forward_steps;
        if (auto j = std::find(fs.begin(), fs.end(), r.step); j != fs.end())
          fs.erase(j);
      }
      transport_event ev;
      ev.what = transport_event::kind::send_done;
      ev.transfer = r.transfer;
      ev.link = tp.link;
      ev.step = r.step;
      events.push_back(std::move(ev));
    } else {
      ++outstanding;
      ++outstanding_to[o.dest_host];
      o.in_flight = true;
      o.flight_step = r.step;
      o.flight_forward = r.forward_from;
    }
  }
  pending.resize(keep);
  return posted;
}

// --- missing deliveries
// ------------------------------------------------------------

void host_transport::impl::note_step(uint64_t step, int64_t now) {
  auto s = static_cast<int64_t>(step);
  if (s <= horizon)
    return;
  for (auto k = std::max(horizon + 1, s - int64_t{first_seen_ring} + 1); k <= s;
       ++k)
    first_seen[static_cast<size_t>(k) % first_seen_ring] = {k, now};
  horizon = s;
  next_timeout_check_ns = std::min(next_timeout_check_ns, now);
}

int64_t host_transport::impl::first_seen_ns(uint64_t step) const {
  const auto& e = first_seen[step % first_seen_ring];
  return e.first == static_cast<int64_t>(step) ? e.second : 0;
}

// A transfer into this host is missing when this host is active in its
// step (sent or received anything of it) and nothing arrived by its
// deadline (paced) or since the step began here (logical) plus the hard
// timeout. Reported once per transfer and step.
void host_transport::impl::check_timeouts(int64_t now) {
  if (now < next_timeout_check_ns)
    return;
  const auto hard = static_cast<int64_t>(settings.hard_timeout_ns);
  bool expecting = false;
  std::lock_guard guard{arrival_mutex};
  for (auto t : inbound) {
    auto& st = in[t];
    const auto& tp = program.transfers()[t];
    auto s = std::max({st.arrived_through, arenas[st.arena].released,
                       st.timed_out_through}) +
             1;
    if (s > horizon)
      continue;
    expecting = true;
    auto step = static_cast<uint64_t>(s);
    auto deadline =
        paced ? local_slot_start(step, tp.end_slot()) : first_seen_ns(step);
    if (now - deadline <= hard)
      continue;
    st.timed_out_through = s;
    error_event(
        t, tp.link, step,
        caf::make_error(errc::slot_timeout,
                        where(t, step) + ": no delivery " +
                            ns_text(now - deadline) +
                            (paced ? " after its deadline"
                                   : " after this host began the step") +
                            " (hard timeout " + ns_text(hard) + ")"));
  }
  // Nothing can time out while nothing is expected: no periodic wake-ups
  // for an idle host (note_step re-arms the check).
  next_timeout_check_ns =
      expecting ? now + std::clamp<int64_t>(hard / 8, 1'000'000, 50'000'000)
                : INT64_MAX;
}

// --- one pass, sleeping, wait()
// --------------------------------------------------

caf::expected<bool> host_transport::impl::progress_once() {
  bool any = false;
  auto now = now_ns();
  {
    std::lock_guard guard{inbox_mutex};
    if (!send_inbox.empty() || !release_inbox.empty())
      any = true;
    for (auto& r : send_inbox) {
      r.queued_ns = now;
      pending.push_back(r);
    }
    deferred_releases.insert(deferred_releases.end(), release_inbox.begin(),
                             release_inbox.end());
    send_inbox.clear();
    release_inbox.clear();
    for (const auto& [t, step] : delivered_inbox)
      note_step(step, now);
    delivered_inbox.clear();
    if (origin_inbox) {
      origin = *origin_inbox;
      origin_inbox.reset();
      any = true;
    }
  }
  if (any) {
    // Steps of new sends make this host active in them; a forward holds its
    // source window from now on.
    for (auto i = pending.size(); i-- > 0 && pending[i].queued_ns == now;) {
      note_step(pending[i].step, now);
      if (pending[i].forward_from >= 0)
        arenas[in[static_cast<size_t>(pending[i].forward_from)].arena]
            .forward_steps.push_back(pending[i].step);
    }
  }
  if (auto err = poll_cq(any))
    return err;
  apply_releases();
  fabric_refused = false;
  posted_any = post_pending(now, any);
  if (!control_queue.empty())
    any = true;
  if (auto err = flush_control())
    return err;
  if (synced && host != 0 && !closing)
    resync_step(now);
  check_timeouts(now);
  ring_peers();
  return any;
}

void host_transport::impl::ring_peers() {
  if (peer_bells.empty())
    return;
  for (uint32_t h = 0; h < peer_bells.size(); ++h) {
    if ((ring_pending[h] != 0 || outstanding_to[h] > 0) && peer_bells[h])
      peer_bells[h].ring();
    ring_pending[h] = 0;
  }
}

// The earliest moment something is due without an outside event: a paced
// send's slot, a re-sync, a timeout check, or (polling without a CQ
// descriptor, paced) the window in which an arrival is expected.
int64_t host_transport::impl::next_due_ns(int64_t now) const {
  int64_t due = next_timeout_check_ns;
  if (!paced)
    return due;
  for (const auto& r : pending)
    due = std::min(
        due,
        local_slot_start(r.step, program.transfers()[r.transfer].start_slot));
  if (synced && host != 0 && !closing)
    due = std::min(due, ping_out ? ping_t1 + ping_timeout_ns : next_resync_ns);
  if (fabric->wait_fd() < 0 && !bell) {
    // Polling (no descriptor, no doorbell to wake us): be awake from the
    // start of an expected arrival's window to its deadline, so its time
    // stamp is within a short sleep of the truth.
    for (auto t : inbound) {
      const auto& st = in[t];
      const auto& tp = program.transfers()[t];
      auto s = std::max(st.arrived_through, arenas[st.arena].released) + 1;
      if (s > horizon + 1)
        continue;
      auto step = static_cast<uint64_t>(s);
      auto start = local_slot_start(step, tp.start_slot);
      auto deadline = local_slot_start(step, tp.end_slot());
      if (now < start)
        due = std::min(due, start);
      else if (now <= deadline)
        // Spin through the window's start (the arrival usually comes
        // within microseconds of it), then nap briefly until the deadline.
        due = std::min(due,
                       now < start + spin_ahead_ns ? now : now + eager_poll_ns);
    }
  }
  return due;
}

void host_transport::impl::idle(int64_t limit_ns) {
  // Something is due within a wake-up's latency (a paced send's slot, an
  // arrival's window): poll for it rather than sleep past it.
  if (paced && limit_ns < spin_ahead_ns) {
    std::this_thread::yield();
    return;
  }
  int fd = fabric->wait_fd();
  bool may_block = false;
  if (fd >= 0)
    may_block = control_queue.empty() && !fabric_refused &&
                !credit_from_local && fabric->ready_to_block();
  else if (bell)
    // A local completion (a peer's progress finishing our write) or a
    // connection answer comes without a ring, so keep to the back-off
    // while one is due.
    may_block = control_queue.empty() && outstanding == 0 &&
                !fabric_refused && !credit_from_local;
  waiter.sleep(fd, may_block, limit_ns, [this] {
    bool any = false;
    if (auto err = poll_cq(any)) {
      fatal = err;
      return true;
    }
    return any;
  });
}

caf::error host_transport::impl::progress_until(
    const std::function<bool()>& done, int64_t deadline_ns,
    const std::function<caf::error()>& on_timeout) {
  for (;;) {
    if (fatal)
      return fatal;
    auto any = progress_once();
    if (!any)
      return any.error();
    if (*any)
      waiter.activity();
    if (done())
      return caf::none;
    auto now = now_ns();
    if (now > deadline_ns)
      return on_timeout();
    idle(std::min(deadline_ns, next_due_ns(now)) - now);
  }
}

caf::error host_transport::wait(std::vector<transport_event>& out,
                                std::chrono::nanoseconds timeout) {
  auto& s = *impl_;
  if (s.closed)
    return caf::make_error(errc::fabric_failure,
                           "wait on host " + std::to_string(s.host) +
                               ": the transport is closed");
  timer_slack_guard::set_for_this_thread();
  auto deadline = s.now_ns() + timeout.count();
  for (;;) {
    if (s.fatal)
      return s.fatal;
    auto any = s.progress_once();
    if (!any) {
      s.fatal = any.error();
      return s.fatal;
    }
    if (*any)
      s.waiter.activity();
    if (!s.events.empty()) {
      out.insert(out.end(), std::make_move_iterator(s.events.begin()),
                 std::make_move_iterator(s.events.end()));
      s.events.clear();
      return caf::none;
    }
    if (s.posted_any || s.wake_requested.exchange(false))
      return caf::none;
    auto now = s.now_ns();
    if (now >= deadline)
      return caf::none;
    s.idle(std::min(deadline, s.next_due_ns(now)) - now);
  }
}

} // namespace lockstep::transport
