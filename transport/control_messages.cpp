#include "transport/control_messages.hpp"

#include "transport/control.capnp.h"

#include <kj/exception.h>

#include <cstring>

namespace lockstep::transport {

namespace {

caf::error bad(const std::string& what, const std::string& why) {
  return caf::make_error(errc::bad_control_message, what + ": " + why);
}

} // namespace

caf::expected<control_reader>
control_reader::open(std::span<const std::byte> bytes, size_t max_bytes,
                     const std::string& what) {
  if (bytes.size() > max_bytes)
    return bad(what, "message of " + std::to_string(bytes.size()) +
                         " bytes exceeds the limit of " +
                         std::to_string(max_bytes) + " bytes");
  if (bytes.size() < 16 || bytes.size() % 8 != 0)
    return bad(what, "message of " + std::to_string(bytes.size()) +
                         " bytes is not a whole number of 8-byte words "
                         "holding a segment table and a root");
  control_reader out;
  out.words_.resize(bytes.size() / 8);
  std::memcpy(out.words_.data(), bytes.data(), bytes.size());
  try {
    capnp::ReaderOptions opts;
    // Each word may be visited a few times through shared pointers at most;
    // more means a crafted amplification.
    opts.traversalLimitInWords = out.words_.size() * 4 + 64;
    opts.nestingLimit = 16;
    out.reader_ = std::make_unique<capnp::FlatArrayMessageReader>(
        kj::arrayPtr(out.words_.data(), out.words_.size()), opts);
    // FlatArrayMessageReader accepts trailing words; a control message is
    // exactly one message.
    if (out.reader_->getEnd() != out.words_.data() + out.words_.size())
      return bad(what, "trailing bytes after the message");
  } catch (const kj::Exception& e) {
    return bad(what,
               std::string{"corrupt message: "} + e.getDescription().cStr());
  }
  return out;
}

std::vector<std::byte> to_bytes(capnp::MessageBuilder& builder) {
  auto words = capnp::messageToFlatArray(builder);
  auto bytes = words.asBytes();
  std::vector<std::byte> out(bytes.size());
  std::memcpy(out.data(), bytes.begin(), bytes.size());
  return out;
}

std::vector<std::byte> encode(const host_hello& h) {
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<schema::HostHello>();
  root.setFormatVersion(schema::CONTROL_FORMAT_VERSION);
  root.setHost(h.host);
  root.setProvider(h.provider);
  root.setTableDigest(h.table_digest);
  root.setFabricAddress(
      kj::arrayPtr(reinterpret_cast<const kj::byte*>(h.fabric_address.data()),
                   h.fabric_address.size()));
  auto arenas = root.initArenas(static_cast<unsigned>(h.arenas.size()));
  for (size_t i = 0; i < h.arenas.size(); ++i) {
    arenas[i].setChip(h.arenas[i].chip);
    arenas[i].setRemoteBase(h.arenas[i].remote_base);
    arenas[i].setKey(h.arenas[i].key);
    arenas[i].setBytes(h.arenas[i].bytes);
  }
  root.setMailboxBase(h.mailbox_base);
  root.setMailboxKey(h.mailbox_key);
  root.setMailboxBytes(h.mailbox_bytes);
  root.setSlotMode(h.mode == slot_mode::paced ? schema::SlotMode::PACED
                                              : schema::SlotMode::LOGICAL);
  root.setSlotNs(h.slot_ns);
  root.setDoorbell(h.doorbell);
  return to_bytes(builder);
}

caf::expected<host_hello> decode_hello(std::span<const std::byte> bytes,
                                       const std::string& what) {
  auto msg = control_reader::open(bytes, host_hello::max_message_bytes, what);
  if (!msg)
    return msg.error();
  host_hello out;
  try {
    auto root = msg->reader().getRoot<schema::HostHello>();
    if (root.getFormatVersion() != schema::CONTROL_FORMAT_VERSION)
      return bad(what, "format version " +
                           std::to_string(root.getFormatVersion()) +
                           ", expected " +
                           std::to_string(schema::CONTROL_FORMAT_VERSION));
    out.host = root.getHost();
    out.provider = root.getProvider().cStr();
    out.table_digest = root.getTableDigest();
    auto addr = root.getFabricAddress();
    if (addr.size() == 0 || addr.size() > 1024)
      return bad(what, "fabric address of " + std::to_string(addr.size()) +
                           " bytes (expected 1..1024)");
    out.fabric_address.resize(addr.size());
    std::memcpy(out.fabric_address.data(), addr.begin(), addr.size());
    auto arenas = root.getArenas();
    if (arenas.size() > 4096)
      return bad(what, std::to_string(arenas.size()) + " arenas (max 4096)");
    for (auto a : arenas)
      out.arenas.push_back(
          {a.getChip(), a.getRemoteBase(), a.getKey(), a.getBytes()});
    out.mailbox_base = root.getMailboxBase();
    out.mailbox_key = root.getMailboxKey();
    out.mailbox_bytes = root.getMailboxBytes();
    switch (root.getSlotMode()) {
    case schema::SlotMode::LOGICAL:
      out.mode = slot_mode::logical;
      break;
    case schema::SlotMode::PACED:
      out.mode = slot_mode::paced;
      break;
    default:
      return bad(what, "unknown slot mode " + std::to_string(static_cast<int>(
                                                  root.getSlotMode())));
    }
    out.slot_ns = root.getSlotNs();
    auto bell = root.getDoorbell();
    if (bell.size() > 255)
      return bad(what, "doorbell name of " + std::to_string(bell.size()) +
                           " bytes (max 255)");
    out.doorbell = bell.cStr();
  } catch (const kj::Exception& e) {
    return bad(what,
               std::string{"corrupt message: "} + e.getDescription().cStr());
  }
  return out;
}

} // namespace lockstep::transport
