#include "storage/gguf_types.hpp"

#include "model/tensor.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

namespace lockstep::storage::gguf {

namespace {

// Block layouts of ggml-common.h.
constexpr uint32_t qk4_0 = 32, qk8_0 = 32, qk_k = 256;

uint16_t u16_at(const std::byte* p) {
  uint16_t v;
  std::memcpy(&v, p, 2); // GGUF is little-endian, as is every host we run on
  return v;
}

float half(const std::byte* p) {
  return model::f16_bits_to_f32(u16_at(p));
}

// block_q8_0: ggml_half d; int8_t qs[32].
void q8_0(const std::byte* x, float* y, size_t blocks) {
  for (size_t i = 0; i < blocks; ++i, x += 34, y += qk8_0) {
    const float d = half(x);
    const auto* qs = reinterpret_cast<const int8_t*>(x + 2);
    for (uint32_t j = 0; j < qk8_0; ++j)
      y[j] = qs[j] * d;
  }
}

// block_q4_0: ggml_half d; uint8_t qs[16] (low nibbles: elements 0-15,
// high nibbles: 16-31).
void q4_0(const std::byte* x, float* y, size_t blocks) {
  for (size_t i = 0; i < blocks; ++i, x += 18, y += qk4_0) {
    const float d = half(x);
    const auto* qs = reinterpret_cast<const uint8_t*>(x + 2);
    for (uint32_t j = 0; j < qk4_0 / 2; ++j) {
      const int x0 = (qs[j] & 0x0F) - 8;
      const int x1 = (qs[j] >> 4) - 8;
      y[j] = x0 * d;
      y[j + qk4_0 / 2] = x1 * d;
    }
  }
}

// The 6-bit scale and min of sub-block j of a Q4_K block.
void scale_min_k4(int j, const uint8_t* q, uint8_t& d, uint8_t& m) {
  if (j < 4) {
    d = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
  }
}

// block_q4_K: ggml_half d, dmin; uint8_t scales[12]; uint8_t qs[128].
void q4_k(const std::byte* x, float* y, size_t blocks) {
  for (size_t i = 0; i < blocks; ++i, x += 144) {
    const float d = half(x);
    const float min = half(x + 2);
    const auto* scales = reinterpret_cast<const uint8_t*>(x + 4);
    const auto* q = reinterpret_cast<const uint8_t*>(x + 16);
    int is = 0;
    uint8_t sc, m;
    for (uint32_t j = 0; j < qk_k; j += 64) {
      scale_min_k4(is + 0, scales, sc, m);
      const float d1 = d * sc;
      const float m1 = min * m;
      scale_min_k4(is + 1, scales, sc, m);
      const float d2 = d * sc;
      const float m2 = min * m;
      for (int l = 0; l < 32; ++l)
        *y++ = d1 * (q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l)
        *y++ = d2 * (q[l] >> 4) - m2;
      q += 32;
      is += 2;
    }
  }
}

// block_q6_K: uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16];
// ggml_half d.
void q6_k(const std::byte* x, float* y, size_t blocks) {
  for (size_t i = 0; i < blocks; ++i, x += 210) {
    const float d = half(x + 208);
    const auto* ql = reinterpret_cast<const uint8_t*>(x);
    const auto* qh = reinterpret_cast<const uint8_t*>(x + 128);
    const auto* sc = reinterpret_cast<const int8_t*>(x + 192);
    for (uint32_t n = 0; n < qk_k; n += 128) {
      for (int l = 0; l < 32; ++l) {
        int is = l / 16;
        const int8_t q1 = static_cast<int8_t>(
                              (ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) -
                          32;
        const int8_t q2 = static_cast<int8_t>(
                              (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) -
                          32;
        const int8_t q3 = static_cast<int8_t>(
                              (ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) -
                          32;
        const int8_t q4 = static_cast<int8_t>(
                              (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) -
                          32;
        y[l + 0] = d * sc[is + 0] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

} // namespace

std::optional<type_traits> traits_of(uint32_t type) {
  switch (static_cast<ggml_type>(type)) {
  case ggml_type::f32:
    return type_traits{"F32", 1, 4, true};
  case ggml_type::f16:
    return type_traits{"F16", 1, 2, true};
  case ggml_type::bf16:
    return type_traits{"BF16", 1, 2, true};
  case ggml_type::q4_0:
    return type_traits{"Q4_0", qk4_0, 18, true};
  case ggml_type::q8_0:
    return type_traits{"Q8_0", qk8_0, 34, true};
  case ggml_type::q4_k:
    return type_traits{"Q4_K", qk_k, 144, true};
  case ggml_type::q6_k:
    return type_traits{"Q6_K", qk_k, 210, true};
  case ggml_type::q4_1:
    return type_traits{"Q4_1", 32, 20, false};
  case ggml_type::q5_0:
    return type_traits{"Q5_0", 32, 22, false};
  case ggml_type::q5_1:
    return type_traits{"Q5_1", 32, 24, false};
  case ggml_type::q8_1:
    return type_traits{"Q8_1", 32, 36, false};
  case ggml_type::q2_k:
    return type_traits{"Q2_K", qk_k, 84, false};
  case ggml_type::q3_k:
    return type_traits{"Q3_K", qk_k, 110, false};
  case ggml_type::q5_k:
    return type_traits{"Q5_K", qk_k, 176, false};
  case ggml_type::q8_k:
    return type_traits{"Q8_K", qk_k, 292, false};
  }
  return std::nullopt;
}

void to_f32(ggml_type type, std::span<const std::byte> in,
            std::span<float> out) {
  auto t = traits_of(static_cast<uint32_t>(type));
  assert(t && t->supported && out.size() % t->block_elems == 0 &&
         in.size() == out.size() / t->block_elems * t->block_bytes);
  const std::byte* x = in.data();
  float* y = out.data();
  size_t blocks = out.size() / t->block_elems;
  switch (type) {
  case ggml_type::f32:
    std::memcpy(y, x, out.size() * 4);
    return;
  case ggml_type::f16:
    for (size_t i = 0; i < out.size(); ++i)
      y[i] = model::f16_bits_to_f32(u16_at(x + 2 * i));
    return;
  case ggml_type::bf16:
    for (size_t i = 0; i < out.size(); ++i)
      y[i] = model::bf16_bits_to_f32(u16_at(x + 2 * i));
    return;
  case ggml_type::q8_0:
    return q8_0(x, y, blocks);
  case ggml_type::q4_0:
    return q4_0(x, y, blocks);
  case ggml_type::q4_k:
    return q4_k(x, y, blocks);
  case ggml_type::q6_k:
    return q6_k(x, y, blocks);
  default:
    assert(false && "to_f32 of an unsupported type");
  }
}

void from_f32(ggml_type type, std::span<const float> in,
              std::span<std::byte> out) {
  auto t = traits_of(static_cast<uint32_t>(type));
  assert(t && in.size() % t->block_elems == 0 &&
         out.size() == in.size() / t->block_elems * t->block_bytes);
  const float* x = in.data();
  std::byte* y = out.data();
  size_t blocks = in.size() / t->block_elems;
  for (size_t i = 0; i < blocks; ++i, x += t->block_elems,
              y += t->block_bytes) {
    if (type == ggml_type::q8_0) {
      float amax = 0.0f;
      for (uint32_t j = 0; j < qk8_0; ++j)
        amax = std::max(amax, std::fabs(x[j]));
      const float d = amax / 127;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      uint16_t h = model::f32_to_f16_bits(d);
      std::memcpy(y, &h, 2);
      for (uint32_t j = 0; j < qk8_0; ++j)
        reinterpret_cast<int8_t*>(y + 2)[j] =
            static_cast<int8_t>(std::round(x[j] * id));
    } else {
      assert(type == ggml_type::q4_0);
      float amax = 0.0f, max = 0.0f;
      for (uint32_t j = 0; j < qk4_0; ++j)
        if (amax < std::fabs(x[j])) {
          amax = std::fabs(x[j]);
          max = x[j];
        }
      const float d = max / -8;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      uint16_t h = model::f32_to_f16_bits(d);
      std::memcpy(y, &h, 2);
      auto* qs = reinterpret_cast<uint8_t*>(y + 2);
      for (uint32_t j = 0; j < qk4_0 / 2; ++j) {
        const float x0 = x[j] * id;
        const float x1 = x[qk4_0 / 2 + j] * id;
        const uint8_t xi0 = std::min<int8_t>(15, static_cast<int8_t>(x0 + 8.5f));
        const uint8_t xi1 = std::min<int8_t>(15, static_cast<int8_t>(x1 + 8.5f));
        qs[j] = xi0 | static_cast<uint8_t>(xi1 << 4);
      }
    }
  }
}

} // namespace lockstep::storage::gguf
