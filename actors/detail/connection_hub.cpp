#include "actors/detail/connection_hub.hpp"

#include <caf/send.hpp>

namespace lockstep::actors::detail {

connection_hub::connection_hub(caf::actor owner, router route)
    : owner_(std::move(owner))
    , route_(std::move(route)) {}

connection_hub::~connection_hub() {
  close();
}

void connection_hub::serve(std::unique_ptr<control_listener> listener) {
  std::lock_guard<std::mutex> guard{mutex_};
  listener_ = std::move(listener);
  acceptor_ = std::thread([this, l = listener_.get()] {
    for (;;) {
      auto ch = l->accept();
      if (!ch)
        return; // closed
      std::shared_ptr<control_channel> channel{std::move(*ch)};
      std::lock_guard<std::mutex> guard{mutex_};
      if (closed_)
        return;
      uint64_t id = next_id_++;
      channels_[id] = channel;
      readers_[id] = std::thread([this, id, channel] { read_loop(id, channel); });
    }
  });
}

caf::error connection_hub::connect(const std::string& address,
                                   std::chrono::milliseconds timeout) {
  auto ch = control_channel::connect(address, timeout);
  if (!ch)
    return ch.error();
  std::shared_ptr<control_channel> channel{std::move(*ch)};
  std::lock_guard<std::mutex> guard{mutex_};
  channels_[0] = channel;
  readers_[0] = std::thread([this, channel] { read_loop(0, channel); });
  return {};
}

void connection_hub::read_loop(uint64_t id,
                               std::shared_ptr<control_channel> channel) {
  for (;;) {
    auto msg = channel->receive();
    if (!msg) {
      caf::anon_send(owner_, closed{id, render(msg.error())});
      return;
    }
    if (route_ && route_(id, *msg))
      continue;
    caf::anon_send(owner_,
                   control_in{id, std::make_shared<control_message>(
                                      std::move(*msg))});
  }
}

caf::error connection_hub::send(uint64_t connection,
                                capnp::MessageBuilder& message) {
  std::shared_ptr<control_channel> channel;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    auto it = channels_.find(connection);
    if (it == channels_.end())
      return caf::make_error(errc::disconnected,
                             "connection " + std::to_string(connection) +
                                 " is gone");
    channel = it->second;
  }
  return channel->send(message);
}

void connection_hub::drop(uint64_t connection) {
  std::lock_guard<std::mutex> guard{mutex_};
  auto it = channels_.find(connection);
  if (it != channels_.end()) {
    it->second->shutdown();
    channels_.erase(it);
  }
}

void connection_hub::forget(uint64_t connection) {
  std::thread reader;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    if (auto it = channels_.find(connection); it != channels_.end()) {
      it->second->shutdown();
      channels_.erase(it);
    }
    auto it = readers_.find(connection);
    if (it == readers_.end())
      return;
    reader = std::move(it->second);
    readers_.erase(it);
  }
  if (reader.joinable() && reader.get_id() != std::this_thread::get_id())
    reader.join();
  else if (reader.joinable())
    reader.detach();
}

std::string connection_hub::peer(uint64_t connection) const {
  std::lock_guard<std::mutex> guard{mutex_};
  auto it = channels_.find(connection);
  return it == channels_.end() ? "" : it->second->peer();
}

void connection_hub::close() {
  std::map<uint64_t, std::thread> readers;
  {
    std::lock_guard<std::mutex> guard{mutex_};
    closed_ = true;
    if (listener_)
      listener_->close();
    for (auto& [id, ch] : channels_)
      ch->shutdown();
    readers.swap(readers_);
  }
  if (acceptor_.joinable())
    acceptor_.join();
  for (auto& [id, t] : readers)
    t.join();
  std::lock_guard<std::mutex> guard{mutex_};
  channels_.clear();
  // The owner holds this hub: keeping its handle would be a reference
  // cycle, and a detached owner that is never destroyed holds the actor
  // system's shutdown forever.
  owner_ = nullptr;
  route_ = nullptr;
}

} // namespace lockstep::actors::detail
