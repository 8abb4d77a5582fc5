#include "model/fp_env.hpp"

#include "model/errc.hpp"

#include <cfenv>
#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#define LOCKSTEP_FP_ENV_MXCSR 1
#endif

namespace lockstep::model {

namespace {

#ifdef LOCKSTEP_FP_ENV_MXCSR
constexpr unsigned mxcsr_daz = 1u << 6;
constexpr unsigned mxcsr_ftz = 1u << 15;
constexpr unsigned mxcsr_rc_shift = 13;

const char* mxcsr_rounding_name(unsigned rc) {
  switch (rc) {
  case 1:
    return "round-down";
  case 2:
    return "round-up";
  case 3:
    return "round-toward-zero";
  }
  return "round-to-nearest";
}
#endif

const char* rounding_name(int mode) {
  switch (mode) {
#ifdef FE_DOWNWARD
  case FE_DOWNWARD:
    return "FE_DOWNWARD";
#endif
#ifdef FE_UPWARD
  case FE_UPWARD:
    return "FE_UPWARD";
#endif
#ifdef FE_TOWARDZERO
  case FE_TOWARDZERO:
    return "FE_TOWARDZERO";
#endif
  }
  return "an unknown mode";
}

} // namespace

caf::error check_fp_environment() {
  std::string problems;
  auto add = [&](const std::string& what) {
    problems += problems.empty() ? what : "; " + what;
  };
#ifdef LOCKSTEP_FP_ENV_MXCSR
  // MXCSR governs the SSE/AVX arithmetic all our kernels compile to.
  unsigned csr = _mm_getcsr();
  if (csr & mxcsr_ftz)
    add("FTZ (flush-to-zero) is set in MXCSR: subnormal results become 0");
  if (csr & mxcsr_daz)
    add("DAZ (denormals-are-zero) is set in MXCSR: subnormal inputs read as "
        "0");
  if (unsigned rc = (csr >> mxcsr_rc_shift) & 3u; rc != 0)
    add(std::string{"MXCSR rounding control is "} + mxcsr_rounding_name(rc) +
        ", not round-to-nearest");
#endif
  // What the C library believes (on x86-64, the x87 control word), which
  // also covers the architectures without an MXCSR.
  if (int mode = std::fegetround(); mode != FE_TONEAREST)
    add(std::string{"the rounding mode (fegetround) is "} +
        rounding_name(mode) + ", not FE_TONEAREST");
  if (problems.empty())
    return {};
  return caf::make_error(errc::bad_fp_environment,
                         "floating-point environment: " + problems +
                             "; results would not be bit-identical to "
                             "other runs and machines (docs/determinism.md)");
}

} // namespace lockstep::model
