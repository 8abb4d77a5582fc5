#include "actors/client.hpp"

#include "actors/detail/envelope.hpp"

namespace lockstep::actors {

using detail::envelope;
using clock_type = std::chrono::steady_clock;

caf::expected<cluster_client>
cluster_client::connect(const cluster_address& address,
                        std::chrono::milliseconds timeout) {
  auto ch = detail::control_channel::connect(address.head, timeout);
  if (!ch)
    return caf::make_error(errc::disconnected,
                           "no cluster at " + address.head + " (" +
                               detail_of(ch.error()) + ")");
  return cluster_client{std::move(*ch), address.token};
}

caf::expected<detail::control_message>
cluster_client::receive(std::chrono::milliseconds timeout) {
  auto msg = channel_->receive(timeout);
  if (!msg)
    return msg.error();
  if (msg->root().which() == schema::Envelope::ERROR)
    return caf::make_error(errc::refused, msg->root().getError().cStr());
  return msg;
}

caf::expected<cluster_generation>
cluster_client::generate(const std::vector<int32_t>& prompt,
                         uint32_t max_tokens,
                         const model::sampling_params& sampling,
                         std::chrono::milliseconds idle_timeout,
                         const std::function<void(uint32_t, int32_t)>& on_token) {
  envelope e;
  auto g = e.root().initGenerate();
  g.setToken(token_);
  auto p = g.initPrompt(static_cast<unsigned>(prompt.size()));
  for (size_t i = 0; i < prompt.size(); ++i)
    p.set(i, prompt[i]);
  g.setMaxTokens(max_tokens);
  g.setSeed(sampling.seed);
  g.setTemperature(sampling.temperature);
  g.setTopK(sampling.top_k);
  g.setTopP(sampling.top_p);
  auto t0 = clock_type::now();
  if (auto err = channel_->send(e.builder()))
    return err;
  cluster_generation out;
  for (;;) {
    auto msg = receive(idle_timeout);
    if (!msg)
      return msg.error();
    auto root = msg->root();
    if (root.which() == schema::Envelope::TOKEN) {
      auto t = root.getToken();
      out.token_arrival_s.push_back(
          std::chrono::duration<double>(clock_type::now() - t0).count());
      if (on_token)
        on_token(t.getIndex(), t.getToken());
      continue;
    }
    if (root.which() != schema::Envelope::DONE)
      return caf::make_error(errc::bad_message,
                             "the head answered a generation with something "
                             "else");
    auto d = root.getDone();
    if (d.getError().size() > 0) {
      // The head's error already reads "module.code: detail"; keep its
      // kind so the CLI's exit code says what to do.
      auto kind = static_cast<error_kind>(d.getErrorKind());
      auto code = kind == error_kind::invalid_input   ? errc::bad_request
                  : kind == error_kind::disconnected  ? errc::disconnected
                  : kind == error_kind::overloaded    ? errc::overloaded
                                                      : errc::cluster_failed;
      // Do not say the code twice ("actors.bad_request: actors.bad_...").
      std::string text = d.getError().cStr();
      std::string prefix = render(caf::make_error(code)) + ": ";
      if (text.rfind(prefix, 0) == 0)
        text.erase(0, prefix.size());
      return caf::make_error(code, text);
    }
    for (auto t : d.getTokens())
      out.tokens.push_back(t);
    out.logits_sha256 = d.getLogitsSha256().cStr();
    out.ttft_ms = d.getTtftMs();
    out.tokens_per_s = d.getTokensPerS();
    return out;
  }
}

caf::expected<cluster_client::status_reply>
cluster_client::status(std::chrono::milliseconds timeout) {
  envelope e;
  e.root().initStatusRequest().setToken(token_);
  if (auto err = channel_->send(e.builder()))
    return err;
  auto msg = receive(timeout);
  if (!msg)
    return msg.error();
  if (msg->root().which() != schema::Envelope::STATUS)
    return caf::make_error(errc::bad_message,
                           "the head answered a status request with "
                           "something else");
  auto s = msg->root().getStatus();
  return status_reply{s.getReady(), s.getJson().cStr()};
}

caf::error cluster_client::shutdown() {
  envelope e;
  e.root().initShutdown().setToken(token_);
  return channel_->send(e.builder());
}

} // namespace lockstep::actors
