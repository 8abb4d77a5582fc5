// The slot program: sends, receives, releases; raw access for the bench.

#include "transport/detail/transport_state.hpp"

#include <algorithm>
#include <cstring>

namespace lockstep::transport {

using namespace detail;

slotted_transport::slotted_transport() = default;

slotted_transport::~slotted_transport() {
  // Best effort: a transport dropped without close() still says goodbye so
  // peers are not left waiting; errors cannot be reported from here.
  if (fabric_ && !closed_)
    static_cast<void>(
        close(std::chrono::nanoseconds(settings_.hard_timeout_ns)));
}

int64_t slotted_transport::now_ns() const {
  return monotonic_ns() + clock_offset_ns_;
}

// --- the slot program ---

caf::expected<const transfer_plan*>
slotted_transport::lookup(uint32_t link, uint32_t slot, bool outbound) const {
  const auto& links = program_.links();
  if (link >= links.size())
    return caf::make_error(errc::unscheduled_send,
                           "link " + std::to_string(link) +
                               " is not in the slot table (" +
                               std::to_string(links.size()) + " links)");
  const auto& l = links[link];
  const auto* tp = program_.find(link, slot);
  if (tp == nullptr)
    return caf::make_error(errc::unscheduled_send,
                           "link " + l.name + " slot " + std::to_string(slot) +
                               ": no transfer starts in this slot");
  auto end = outbound ? l.src : l.dst;
  if (end.host != host_)
    return caf::make_error(errc::unscheduled_send,
                           "link " + l.name + " slot " + std::to_string(slot) +
                               ": " + (outbound ? "sender" : "receiver") +
                               " is on host " + std::to_string(end.host) +
                               ", not on this host " + std::to_string(host_));
  return tp;
}

caf::expected<std::span<std::byte>>
slotted_transport::send_buffer(uint32_t link, uint32_t slot) {
  auto tp = lookup(link, slot, true);
  if (!tp)
    return tp.error();
  auto index = static_cast<size_t>(*tp - program_.transfers().data());
  auto& o = out_[index];
  if (o.in_flight) {
    auto err = progress_until(
        [&o] { return !o.in_flight; },
        now_ns() + static_cast<int64_t>(settings_.hard_timeout_ns),
        [&] {
          return caf::make_error(errc::slot_timeout,
                                 "link " + program_.links()[link].name +
                                     " slot " + std::to_string(slot) +
                                     ": the previous write did not complete "
                                     "within the hard timeout (is the "
                                     "receiving host polling?)");
        });
    if (err)
      return err;
  }
  return o.payload;
}

caf::error slotted_transport::send(uint32_t link, uint32_t slot, uint64_t step,
                                   uint64_t payload_bytes) {
  if (async_error_)
    return async_error_;
  auto tp_or = lookup(link, slot, true);
  if (!tp_or)
    return tp_or.error();
  const auto& tp = **tp_or;
  const auto& l = program_.links()[link];
  // Error text is built only when an error happens (this is the hot path).
  auto where = [&] {
    return "link " + l.name + " slot " + std::to_string(slot);
  };
  if (payload_bytes != payload_bytes_of(tp.bytes))
    return caf::make_error(errc::wrong_size,
                           where() + ": send of " +
                               std::to_string(payload_bytes) +
                               " payload bytes refused; the table schedules " +
                               std::to_string(tp.bytes) + " bytes (" +
                               std::to_string(payload_bytes_of(tp.bytes)) +
                               " payload + 24 framing)");
  auto index = static_cast<uint32_t>(&tp - program_.transfers().data());
  auto& o = out_[index];
  if (static_cast<int64_t>(step) <= o.last_sent_step)
    return caf::make_error(
        errc::unscheduled_send,
        where() + ": already sent in step " + std::to_string(o.last_sent_step) +
            "; step " + std::to_string(step) + " is not scheduled again");
  // The previous write of this window must be done before it is rewritten
  // (send_buffer waits for that; a caller skipping it waits here).
  if (o.in_flight) {
    auto b = send_buffer(link, slot);
    if (!b)
      return b.error();
  }
  // Back-pressure: the target buffer of `step` was last used in step
  // step - depth; its reader must have released it.
  auto depth = static_cast<int64_t>(tp.dst_offsets.size());
  auto needed = static_cast<int64_t>(step) - depth;
  if (released_through_[link] < needed) {
    auto err = progress_until(
        [&] { return released_through_[link] >= needed; },
        now_ns() + static_cast<int64_t>(settings_.hard_timeout_ns),
        [&] {
          return caf::make_error(
              errc::back_pressure,
              where() + " step " + std::to_string(step) +
                  ": receiver has not released step " + std::to_string(needed) +
                  " within " +
                  ns_text(static_cast<int64_t>(settings_.hard_timeout_ns)));
        });
    if (err)
      return err;
  }
  if (settings_.mode == slot_mode::paced) {
    auto start = slot_start_ns(step, slot);
    backoff idle;
    while (now_ns() < start) {
      if (auto err = progress())
        return err;
      // Nap only when the slot is far off: sleeping overshoots.
      if (start - now_ns() > 300'000)
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      else
        idle.pause();
    }
  }
  uint64_t abs_slot = step * program_.slots_per_step() + slot;
  if (abs_slot > cq_data::slot_mask)
    return caf::make_error(errc::unscheduled_send,
                           where() + " step " + std::to_string(step) +
                               ": the absolute slot counter (" +
                               std::to_string(cq_data::slot_bits) +
                               " bits) is exhausted; start a new epoch");
  auto data = cq_data::make_data(link, abs_slot);
  auto target = o.remote_base + tp.dst_offset(step);
  auto give_up = now_ns() + static_cast<int64_t>(settings_.hard_timeout_ns);
  backoff idle;
  // Small transfers are injected: the provider copies them at once, so the
  // window is free again and no local completion has to be reaped.
  bool inject = tp.bytes <= fabric_->inject_size();
  for (;;) {
    auto ret =
        inject ? fi_inject_writedata(fabric_->ep(), o.window, tp.bytes, data,
                                     o.dest, target, o.key)
               : fi_writedata(fabric_->ep(), o.window, tp.bytes, o.desc, data,
                              o.dest, target, o.key, data_context(index));
    if (ret == 0)
      break;
    if (ret != -FI_EAGAIN)
      return fabric_error("fi_writedata", static_cast<int>(ret),
                          where() + " step " + std::to_string(step));
    if (auto err = progress())
      return err;
    if (now_ns() > give_up)
      return caf::make_error(errc::slot_timeout,
                             where() + " step " + std::to_string(step) +
                                 ": the fabric refused the write (queue "
                                 "full) for the whole hard timeout");
    idle.pause();
  }
  if (!inject) {
    ++outstanding_;
    o.in_flight = true;
  }
  o.last_sent_step = static_cast<int64_t>(step);
  auto& c = link_counters_[link];
  c.bytes_sent += tp.bytes;
  ++c.transfers_sent;
  return caf::none;
}

caf::expected<std::span<const std::byte>>
slotted_transport::receive(uint32_t link, uint32_t slot, uint64_t step) {
  if (async_error_)
    return async_error_;
  auto tp_or = lookup(link, slot, false);
  if (!tp_or)
    return tp_or.error();
  const auto& tp = **tp_or;
  const auto& l = program_.links()[link];
  auto index = static_cast<size_t>(&tp - program_.transfers().data());
  auto& in = in_[index];
  auto where = [&] {
    return "link " + l.name + " slot " + std::to_string(slot) + " step " +
           std::to_string(step);
  };
  bool paced = settings_.mode == slot_mode::paced;
  int64_t deadline = paced ? slot_start_ns(step, tp.end_slot()) : now_ns();
  auto hard = deadline + static_cast<int64_t>(settings_.hard_timeout_ns);
  auto find = [&] {
    return std::find_if(
        in.arrivals.begin(), in.arrivals.end(),
        [&](const in_state::arrival& a) { return a.step == step; });
  };
  if (find() == in.arrivals.end()) {
    auto err = progress_until(
        [&] { return find() != in.arrivals.end(); }, hard,
        [&] {
          return caf::make_error(
              errc::slot_timeout,
              where() + ": no delivery " + ns_text(now_ns() - deadline) +
                  (paced ? " after its deadline" : " after the receive began") +
                  " (hard timeout " +
                  ns_text(static_cast<int64_t>(settings_.hard_timeout_ns)) +
                  ")");
        });
    if (err)
      return err;
  }
  return consume(tp, in, static_cast<size_t>(find() - in.arrivals.begin()),
                 step);
}

caf::expected<std::optional<std::span<const std::byte>>>
slotted_transport::try_receive(uint32_t link, uint32_t slot, uint64_t step) {
  if (auto err = progress())
    return err;
  auto tp_or = lookup(link, slot, false);
  if (!tp_or)
    return tp_or.error();
  const auto& tp = **tp_or;
  auto& in = in_[static_cast<size_t>(&tp - program_.transfers().data())];
  for (size_t i = 0; i < in.arrivals.size(); ++i)
    if (in.arrivals[i].step == step) {
      auto payload = consume(tp, in, i, step);
      if (!payload)
        return payload.error();
      return std::optional<std::span<const std::byte>>{*payload};
    }
  if (settings_.mode == slot_mode::paced) {
    auto deadline = slot_start_ns(step, tp.end_slot());
    if (now_ns() > deadline + static_cast<int64_t>(settings_.hard_timeout_ns))
      return caf::make_error(errc::slot_timeout,
                             "link " + program_.links()[link].name + " slot " +
                                 std::to_string(slot) + " step " +
                                 std::to_string(step) + ": no delivery " +
                                 ns_text(now_ns() - deadline) +
                                 " after its deadline");
  }
  return std::optional<std::span<const std::byte>>{};
}

caf::expected<std::span<const std::byte>>
slotted_transport::consume(const transfer_plan& tp, in_state& in,
                           size_t arrival, uint64_t step) {
  auto arrived = in.arrivals[arrival].at_ns;
  in.arrivals.erase(in.arrivals.begin() + static_cast<ptrdiff_t>(arrival));
  in.last_consumed_step = static_cast<int64_t>(step);
  auto& c = link_counters_[tp.link];
  c.bytes_received += tp.bytes;
  ++c.transfers_received;
  c.slots_used += tp.duration_slots;
  if (settings_.mode == slot_mode::paced) {
    auto late = arrived - slot_start_ns(step, tp.end_slot());
    if (lateness_.size() < max_lateness_samples) {
      lateness_.push_back(late);
    } else {
      lateness_[lateness_next_] = late;
      lateness_next_ = (lateness_next_ + 1) % max_lateness_samples;
    }
    if (late > 0) {
      ++c.slot_misses;
      c.max_lateness_ns = std::max(c.max_lateness_ns, late);
    }
  }
  auto payload = read_frame({in.arena + tp.dst_offset(step), tp.bytes});
  if (!payload)
    return caf::make_error(errc::bad_payload,
                           "link " + program_.links()[tp.link].name + " slot " +
                               std::to_string(tp.start_slot) + " step " +
                               std::to_string(step) + ": " +
                               detail_of(payload.error()));
  return *payload;
}

caf::error slotted_transport::release(uint64_t step) {
  if (async_error_)
    return async_error_;
  for (auto l : inbound_links_)
    control_queue_.push_back(
        {program_.links()[l].src.host, cq_data::make_release(l, step)});
  return flush_control();
}

// --- raw access (benchmark baseline) ---

slotted_transport::raw_target
slotted_transport::raw_target_of(chip_ref dst) const {
  const auto& p = peers_[dst.host];
  const auto& key = p.arenas.at(dst.chip);
  return {p.addr, key.remote_base, key.key};
}

std::byte* slotted_transport::raw_send_base(chip_ref src) const {
  for (const auto& a : send_arenas_)
    if (a.chip == src)
      return a.memory.data();
  return nullptr;
}

void* slotted_transport::raw_send_desc(chip_ref src) const {
  for (const auto& a : send_arenas_)
    if (a.chip == src)
      return a.mr.desc();
  return nullptr;
}

} // namespace lockstep::transport
