// Progress: the completion queue, remote CQ data dispatch, control writes.

#include "transport/detail/transport_state.hpp"

#include <algorithm>
#include <cstring>

namespace lockstep::transport {

using namespace detail;

// --- progress ---

caf::error slotted_transport::poll_cq() {
  fi_cq_data_entry entries[32];
  for (;;) {
    auto n = fi_cq_read(fabric_->cq(), entries, 32);
    if (n == -FI_EAGAIN)
      return caf::none;
    if (n == -FI_EAVAIL) {
      fi_cq_err_entry err{};
      auto r = fi_cq_readerr(fabric_->cq(), &err, 0);
      if (r < 0)
        return fabric_error("fi_cq_readerr", static_cast<int>(r));
      auto ctx = reinterpret_cast<uintptr_t>(err.op_context);
      std::string what = "completion error";
      if (ctx >= 2) {
        const auto& tp = program_.transfers()[ctx - 2];
        what = "write of link " + program_.links()[tp.link].name + " slot " +
               std::to_string(tp.start_slot);
      } else if (ctx == control_context) {
        what = "control write";
      }
      char buf[256];
      const char* prov = fi_cq_strerror(fabric_->cq(), err.prov_errno,
                                        err.err_data, buf, sizeof(buf));
      auto e = fabric_error("fi_cq_read", -err.err,
                            what + "; provider: " + (prov ? prov : "?"));
      async_error_ = e;
      return e;
    }
    if (n < 0)
      return fabric_error("fi_cq_read", static_cast<int>(n));
    for (ssize_t i = 0; i < n; ++i)
      if (auto err = absorb_completion(entries[i]))
        return err;
    if (n < 32)
      return caf::none;
  }
}

caf::error slotted_transport::absorb_completion(const fi_cq_data_entry& e) {
  if ((e.flags & FI_REMOTE_CQ_DATA) != 0) {
    if (cq_data::kind_of(e.data) == cq_data::kind::raw) {
      ++raw_remote_;
      return caf::none;
    }
    if (auto err = dispatch_remote(e.data)) {
      async_error_ = err;
      return err;
    }
    return caf::none;
  }
  auto ctx = reinterpret_cast<uintptr_t>(e.op_context);
  if (ctx == 0) {
    ++raw_local_; // a raw write of the benchmark
    return caf::none;
  }
  if (outstanding_ > 0)
    --outstanding_;
  if (ctx >= 2)
    out_[ctx - 2].in_flight = false;
  return caf::none;
}

caf::error slotted_transport::dispatch_remote(uint64_t data) {
  auto now = now_ns();
  switch (cq_data::kind_of(data)) {
  case cq_data::kind::data: {
    auto link = cq_data::link_of(data);
    auto abs_slot = cq_data::slot_value_of(data);
    auto step = abs_slot / program_.slots_per_step();
    auto slot = static_cast<uint32_t>(abs_slot % program_.slots_per_step());
    const auto* tp = program_.find(link, slot);
    if (tp == nullptr || program_.links()[link].dst.host != host_)
      return caf::make_error(errc::bad_payload,
                             "completion for unscheduled link " +
                                 std::to_string(link) + " slot " +
                                 std::to_string(slot));
    auto index = static_cast<size_t>(tp - program_.transfers().data());
    in_[index].arrivals.push_back({step, now});
    return caf::none;
  }
  case cq_data::kind::release: {
    auto link = cq_data::link_of(data);
    if (link >= released_through_.size())
      return caf::make_error(errc::bad_payload, "release for unknown link " +
                                                    std::to_string(link));
    auto step = static_cast<int64_t>(cq_data::slot_value_of(data));
    released_through_[link] = std::max(released_through_[link], step);
    return caf::none;
  }
  case cq_data::kind::control: {
    auto from = cq_data::host_of(data);
    auto value = cq_data::value_of(data);
    if (from >= program_.hosts())
      return caf::make_error(errc::bad_payload,
                             "control message from unknown host " +
                                 std::to_string(from));
    switch (cq_data::control_of(data)) {
    case cq_data::control::ping:
      // Answer at once with our clock; only host 0 is pinged.
      control_queue_.push_back(
          {from, cq_data::make_control(cq_data::control::pong, host_,
                                       static_cast<uint64_t>(now))});
      break;
    case cq_data::control::pong:
      pong_seen_ = true;
      pong_value_ = value;
      break;
    case cq_data::control::sync_done:
      ++sync_done_;
      break;
    case cq_data::control::epoch:
      epoch_seen_ = true;
      epoch_value_ = value;
      break;
    case cq_data::control::bye:
      ++byes_;
      break;
    }
    return caf::none;
  }
  case cq_data::kind::raw:
    break; // a raw loop's completion reached the transport: a bench bug
  }
  return caf::make_error(errc::bad_payload,
                         "completion data of unknown kind reached the "
                         "transport");
}

caf::error slotted_transport::post_control(uint32_t host, uint64_t data) {
  control_queue_.push_back({host, data});
  return flush_control();
}

caf::error slotted_transport::flush_control() {
  while (!control_queue_.empty()) {
    auto cw = control_queue_.front();
    const auto& p = peers_[cw.host];
    uint64_t target = p.mailbox_base + 8 * (1 + uint64_t{host_});
    // Control writes are 8 bytes: injected where the provider allows it (no
    // local completion to reap), else written with a completion.
    bool inject = fabric_->inject_size() >= 8;
    auto ret = inject
                   ? fi_inject_writedata(fabric_->ep(), mailbox_->data(), 8,
                                         cw.data, p.addr, target, p.mailbox_key)
                   : fi_writedata(fabric_->ep(), mailbox_->data(), 8,
                                  mailbox_mr_.desc(), cw.data, p.addr, target,
                                  p.mailbox_key,
                                  reinterpret_cast<void*>(control_context));
    if (ret == -FI_EAGAIN)
      return poll_cq(); // retried by the caller's next progress()
    if (ret != 0)
      return fabric_error("fi_writedata", static_cast<int>(ret),
                          "control write to host " + std::to_string(cw.host));
    if (!inject)
      ++outstanding_;
    control_queue_.pop_front();
  }
  return caf::none;
}

caf::error slotted_transport::progress() {
  if (async_error_)
    return async_error_;
  if (auto err = poll_cq())
    return err;
  return flush_control();
}

caf::error slotted_transport::drain(std::chrono::nanoseconds timeout) {
  return progress_until(
      [this] { return outstanding_ == 0 && control_queue_.empty(); },
      now_ns() + timeout.count(),
      [this] {
        return caf::make_error(errc::fabric_failure,
                               std::to_string(outstanding_) +
                                   " writes did not complete at teardown");
      });
}

} // namespace lockstep::transport
