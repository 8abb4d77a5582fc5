// slotted_transport: blocking per-slot calls over host_transport's events.

#include "transport/slotted_transport.hpp"

#include "transport/detail/fabric.hpp"

#include <algorithm>

namespace lockstep::transport {

using namespace std::chrono_literals;

namespace {

std::string ns_text(int64_t ns) {
  return std::to_string(ns / 1000) + " us";
}

} // namespace

struct slotted_transport::chip_memory {
  chip_ref chip;
  detail::mapped_buffer send;
  detail::mapped_buffer recv;
};

slotted_transport::slotted_transport() = default;

slotted_transport::~slotted_transport() = default;

caf::expected<std::unique_ptr<slotted_transport>>
slotted_transport::create(const transport_options& opts, slot_program program,
                          rendezvous& rv) {
  std::unique_ptr<slotted_transport> st{new slotted_transport};
  std::vector<arena_memory> arenas;
  if (opts.host < program.hosts())
    for (auto c : program.chips_of(opts.host)) {
      const auto* a = program.arena(c);
      auto send = detail::mapped_buffer::allocate(a->send_bytes);
      if (!send)
        return send.error();
      auto recv = detail::mapped_buffer::allocate(a->recv_bytes);
      if (!recv)
        return recv.error();
      auto m = std::make_unique<chip_memory>(
          chip_memory{c, std::move(*send), std::move(*recv)});
      arenas.push_back({c,
                        {m->send.data(), m->send.size()},
                        {m->recv.data(), m->recv.size()}});
      st->memory_.push_back(std::move(m));
    }
  auto t =
      host_transport::create(opts, std::move(program), rv, std::move(arenas));
  if (!t)
    return t.error();
  st->t_ = std::move(*t);
  const auto& prog = st->t_->program();
  const auto& transfers = prog.transfers();
  st->out_.resize(transfers.size());
  st->in_.resize(transfers.size());
  auto memory_of = [&](chip_ref c) -> chip_memory& {
    return **std::find_if(st->memory_.begin(), st->memory_.end(),
                          [&](const auto& m) { return m->chip == c; });
  };
  // The framing of every outbound transfer is written once, here: a step
  // only rewrites payload bytes.
  for (uint32_t i : prog.send_program(opts.host)) {
    const auto& tp = transfers[i];
    const auto& link = prog.links()[tp.link];
    auto& m = memory_of(link.src);
    auto payload = write_frame({m.send.data() + tp.src_offset, tp.bytes});
    if (!payload)
      return caf::make_error(errc::invalid_table,
                             "link " + link.name + " slot " +
                                 std::to_string(tp.start_slot) + ": " +
                                 detail_of(payload.error()));
    st->out_[i].payload = *payload;
    for (uint32_t j : prog.send_program(opts.host))
      if (prog.links()[transfers[j].link].src == link.src &&
          transfers[j].src_offset == tp.src_offset)
        st->out_[i].window_users.push_back(j);
  }
  for (uint32_t i : prog.receive_program(opts.host))
    st->in_[i].arena =
        memory_of(prog.links()[transfers[i].link].dst).recv.data();
  return st;
}

std::byte* slotted_transport::raw_send_base(chip_ref src) const {
  for (const auto& m : memory_)
    if (m->chip == src)
      return m->send.data();
  return nullptr;
}

// --- events ------------------------------------------------------------------

caf::error slotted_transport::pump(std::chrono::nanoseconds timeout) {
  if (async_error_)
    return async_error_;
  events_.clear();
  if (auto err = t_->wait(events_, timeout)) {
    async_error_ = err;
    return err;
  }
  for (auto& e : events_) {
    switch (e.what) {
    case transport_event::kind::arrival:
      in_[e.transfer].arrived.push_back(e.step);
      break;
    case transport_event::kind::send_done: {
      auto& o = out_[e.transfer];
      o.done = std::max(o.done, static_cast<int64_t>(e.step));
      break;
    }
    case transport_event::kind::released:
      break;
    case transport_event::kind::error:
      // Refused arrivals are counted per link (counters()); the program
      // here never reads them.
      if (e.err.code() == static_cast<uint8_t>(errc::refused_arrival))
        break;
      if (e.transfer == transport_event::no_transfer) {
        async_error_ = e.err;
        return async_error_;
      }
      if (e.transfer < out_.size() && !out_[e.transfer].payload.empty()) {
        auto& o = out_[e.transfer];
        o.done = std::max(o.done, static_cast<int64_t>(e.step));
      }
      errors_[{e.transfer, e.step}] = e.err;
      break;
    }
  }
  return caf::none;
}

std::optional<caf::error> slotted_transport::error_of(uint32_t transfer,
                                                      uint64_t step) {
  auto i = errors_.find({transfer, step});
  if (i == errors_.end())
    return std::nullopt;
  auto err = std::move(i->second);
  errors_.erase(i);
  return err;
}

// --- the slot program
// ----------------------------------------------------------

caf::expected<uint32_t> slotted_transport::lookup(uint32_t link, uint32_t slot,
                                                  bool outbound) const {
  const auto& prog = t_->program();
  const auto& links = prog.links();
  if (link >= links.size())
    return caf::make_error(errc::unscheduled_send,
                           "link " + std::to_string(link) +
                               " is not in the slot table (" +
                               std::to_string(links.size()) + " links)");
  const auto& l = links[link];
  const auto* tp = prog.find(link, slot);
  if (tp == nullptr)
    return caf::make_error(errc::unscheduled_send,
                           "link " + l.name + " slot " + std::to_string(slot) +
                               ": no transfer starts in this slot");
  auto end = outbound ? l.src : l.dst;
  if (end.host != t_->host())
    return caf::make_error(errc::unscheduled_send,
                           "link " + l.name + " slot " + std::to_string(slot) +
                               ": " + (outbound ? "sender" : "receiver") +
                               " is on host " + std::to_string(end.host) +
                               ", not on this host " +
                               std::to_string(t_->host()));
  return static_cast<uint32_t>(tp - prog.transfers().data());
}

caf::error slotted_transport::wait_window(uint32_t transfer) {
  const auto hard = static_cast<int64_t>(t_->settings().hard_timeout_ns);
  auto give_up = t_->now_ns() + hard;
  auto busy = [&] {
    for (auto u : out_[transfer].window_users)
      if (out_[u].done < out_[u].posted)
        return true;
    return false;
  };
  while (busy()) {
    auto now = t_->now_ns();
    if (now > give_up) {
      const auto& tp = t_->program().transfers()[transfer];
      return caf::make_error(errc::slot_timeout,
                             "link " + t_->program().links()[tp.link].name +
                                 " slot " + std::to_string(tp.start_slot) +
                                 ": the previous write did not complete "
                                 "within the hard timeout (is the receiving "
                                 "host polling?)");
    }
    if (auto err = pump(std::chrono::nanoseconds(give_up - now)))
      return err;
  }
  return caf::none;
}

caf::expected<std::span<std::byte>>
slotted_transport::send_buffer(uint32_t link, uint32_t slot) {
  auto t = lookup(link, slot, true);
  if (!t)
    return t.error();
  if (auto err = wait_window(*t))
    return err;
  return out_[*t].payload;
}

caf::error slotted_transport::send(uint32_t link, uint32_t slot, uint64_t step,
                                   uint64_t payload_bytes) {
  if (async_error_)
    return async_error_;
  auto t = lookup(link, slot, true);
  if (!t)
    return t.error();
  const auto& tp = t_->program().transfers()[*t];
  if (payload_bytes != payload_bytes_of(tp.bytes))
    return caf::make_error(errc::wrong_size,
                           "link " + t_->program().links()[link].name +
                               " slot " + std::to_string(slot) + ": send of " +
                               std::to_string(payload_bytes) +
                               " payload bytes refused; the table schedules " +
                               std::to_string(tp.bytes) + " bytes (" +
                               std::to_string(payload_bytes_of(tp.bytes)) +
                               " payload + 24 framing)");
  // A caller skipping send_buffer still must not rewrite a window in use.
  if (auto err = wait_window(*t))
    return err;
  if (auto err = t_->post_send(*t, step))
    return err;
  out_[*t].posted = static_cast<int64_t>(step);
  // The write leaves once its receiver released the window and (paced) its
  // slot started; host_transport reports back-pressure after the hard
  // timeout as an error event.
  while (t_->last_posted_step(*t) < static_cast<int64_t>(step)) {
    if (auto err = error_of(*t, step))
      return *err;
    if (auto err = pump(100ms))
      return err;
  }
  return caf::none;
}

caf::expected<std::span<const std::byte>>
slotted_transport::receive(uint32_t link, uint32_t slot, uint64_t step) {
  if (async_error_)
    return async_error_;
  auto t = lookup(link, slot, false);
  if (!t)
    return t.error();
  const auto& tp = t_->program().transfers()[*t];
  bool paced = t_->settings().mode == slot_mode::paced;
  int64_t deadline =
      paced ? t_->slot_start_ns(step, tp.end_slot()) : t_->now_ns();
  const auto hard_ns = static_cast<int64_t>(t_->settings().hard_timeout_ns);
  auto give_up = deadline + hard_ns;
  auto& in = in_[*t];
  for (;;) {
    for (size_t i = 0; i < in.arrived.size(); ++i)
      if (in.arrived[i] == step)
        return consume(*t, i, step);
    if (auto err = error_of(*t, step))
      return *err;
    auto now = t_->now_ns();
    if (now > give_up)
      return caf::make_error(
          errc::slot_timeout,
          "link " + t_->program().links()[link].name + " slot " +
              std::to_string(slot) + " step " + std::to_string(step) +
              ": no delivery " + ns_text(now - deadline) +
              (paced ? " after its deadline" : " after the receive began") +
              " (hard timeout " + ns_text(hard_ns) + ")");
    if (auto err = pump(std::chrono::nanoseconds(give_up - now + 1)))
      return err;
  }
}

caf::expected<std::optional<std::span<const std::byte>>>
slotted_transport::try_receive(uint32_t link, uint32_t slot, uint64_t step) {
  if (auto err = pump(0ns))
    return err;
  auto t = lookup(link, slot, false);
  if (!t)
    return t.error();
  auto& in = in_[*t];
  for (size_t i = 0; i < in.arrived.size(); ++i)
    if (in.arrived[i] == step) {
      auto payload = consume(*t, i, step);
      if (!payload)
        return payload.error();
      return std::optional<std::span<const std::byte>>{*payload};
    }
  if (auto err = error_of(*t, step))
    return *err;
  if (t_->settings().mode == slot_mode::paced) {
    const auto& tp = t_->program().transfers()[*t];
    auto deadline = t_->slot_start_ns(step, tp.end_slot());
    auto now = t_->now_ns();
    if (now > deadline + static_cast<int64_t>(t_->settings().hard_timeout_ns))
      return caf::make_error(errc::slot_timeout,
                             "link " + t_->program().links()[link].name +
                                 " slot " + std::to_string(slot) + " step " +
                                 std::to_string(step) + ": no delivery " +
                                 ns_text(now - deadline) +
                                 " after its deadline");
  }
  return std::optional<std::span<const std::byte>>{};
}

caf::expected<std::span<const std::byte>>
slotted_transport::consume(uint32_t transfer, size_t arrival, uint64_t step) {
  auto& in = in_[transfer];
  in.arrived.erase(in.arrived.begin() + static_cast<ptrdiff_t>(arrival));
  const auto& tp = t_->program().transfers()[transfer];
  auto payload = read_frame({in.arena + tp.dst_offset(step), tp.bytes});
  if (!payload)
    return caf::make_error(errc::bad_payload,
                           "link " + t_->program().links()[tp.link].name +
                               " slot " + std::to_string(tp.start_slot) +
                               " step " + std::to_string(step) + ": " +
                               detail_of(payload.error()));
  return *payload;
}

caf::error slotted_transport::release(uint64_t step) {
  if (async_error_)
    return async_error_;
  for (const auto& m : memory_)
    if (auto err = t_->release(m->chip, step))
      return err;
  // Send the credits now rather than at the next call.
  return pump(0ns);
}

caf::error slotted_transport::progress() {
  return pump(0ns);
}

caf::error slotted_transport::close(std::chrono::nanoseconds timeout) {
  return t_->close(timeout);
}

} // namespace lockstep::transport
