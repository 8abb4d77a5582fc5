#include "transport/payload_frame.hpp"

#include "transport/payload.capnp.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstring>
#include <string>

namespace lockstep::transport {

namespace {

// A builder whose only segment is a caller-provided window. Unlike
// MallocMessageBuilder with a first segment, it does not zero the window on
// destruction, so the framing it writes stays in place.
class window_builder final : public capnp::MessageBuilder {
public:
  explicit window_builder(kj::ArrayPtr<capnp::word> segment)
      : segment_(segment) {}

  kj::ArrayPtr<capnp::word> allocateSegment(unsigned minimum_size) override {
    KJ_REQUIRE(!used_ && minimum_size <= segment_.size(),
               "frame window too small");
    used_ = true;
    return segment_;
  }

private:
  kj::ArrayPtr<capnp::word> segment_;
  bool used_ = false;
};

bool aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % sizeof(capnp::word) == 0;
}

} // namespace

caf::expected<std::span<std::byte>> write_frame(std::span<std::byte> window) {
  if (!aligned(window.data()) || window.size() % 8 != 0 ||
      window.size() < frame_overhead_bytes)
    return caf::make_error(errc::invalid_table,
                           "a transfer window of " +
                               std::to_string(window.size()) +
                               " bytes is not 8-byte aligned or < 24 bytes");
  std::memset(window.data(), 0, window.size());
  auto words = window.size() / 8;
  auto* seg = reinterpret_cast<capnp::word*>(window.data()) + 1;
  try {
    window_builder builder{kj::arrayPtr(seg, words - 1)};
    auto root = builder.initRoot<schema::TensorPayload>();
    auto data = root.initData(window.size() - frame_overhead_bytes);
    auto segments = builder.getSegmentsForOutput();
    if (segments.size() != 1 || segments[0].begin() != seg ||
        segments[0].size() != words - 1)
      return caf::make_error(errc::invalid_table,
                             "framing does not fill the transfer window");
    // Segment table: (segment count - 1, segment size in words).
    uint32_t table[2] = {0, static_cast<uint32_t>(words - 1)};
    std::memcpy(window.data(), table, sizeof(table));
    return std::span<std::byte>{reinterpret_cast<std::byte*>(data.begin()),
                                data.size()};
  } catch (const kj::Exception& e) {
    return caf::make_error(errc::invalid_table,
                           std::string{"framing failed: "} +
                               e.getDescription().cStr());
  }
}

caf::expected<std::span<const std::byte>>
read_frame(std::span<const std::byte> window) {
  if (!aligned(window.data()) || window.size() % 8 != 0 ||
      window.size() < frame_overhead_bytes)
    return caf::make_error(errc::bad_payload,
                           "receive window not 8-byte aligned or < 24 bytes");
  try {
    capnp::ReaderOptions opts;
    opts.traversalLimitInWords = window.size() / 8 + 8;
    opts.nestingLimit = 4;
    capnp::FlatArrayMessageReader reader{
        kj::arrayPtr(reinterpret_cast<const capnp::word*>(window.data()),
                     window.size() / 8),
        opts};
    auto data = reader.getRoot<schema::TensorPayload>().getData();
    auto expected = window.size() - frame_overhead_bytes;
    if (data.size() != expected)
      return caf::make_error(errc::bad_payload,
                             "payload of " + std::to_string(data.size()) +
                                 " bytes where " + std::to_string(expected) +
                                 " are planned");
    return std::span<const std::byte>{
        reinterpret_cast<const std::byte*>(data.begin()), data.size()};
  } catch (const kj::Exception& e) {
    return caf::make_error(errc::bad_payload, std::string{"corrupt framing: "} +
                                                  e.getDescription().cStr());
  }
}

} // namespace lockstep::transport
