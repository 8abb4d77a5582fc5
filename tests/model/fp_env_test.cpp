#include "model/fp_env.hpp"

#include "model/errc.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cfenv>
#include <functional>

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#define LOCKSTEP_TEST_MXCSR 1
#endif

namespace lockstep::model {
namespace {

using ::testing::HasSubstr;

// Saves the thread's FP environment and puts it back, so a failing assertion
// cannot leave FTZ or a rounding mode behind for the next test.
class fp_env_guard {
public:
  fp_env_guard() {
    std::fegetenv(&env_);
#ifdef LOCKSTEP_TEST_MXCSR
    csr_ = _mm_getcsr();
#endif
  }
  ~fp_env_guard() {
    std::fesetenv(&env_);
#ifdef LOCKSTEP_TEST_MXCSR
    _mm_setcsr(csr_);
#endif
  }
  fp_env_guard(const fp_env_guard&) = delete;
  fp_env_guard& operator=(const fp_env_guard&) = delete;

private:
  std::fenv_t env_;
#ifdef LOCKSTEP_TEST_MXCSR
  unsigned csr_ = 0;
#endif
};

// Applies `spoil`, expects the check to fail naming `what`, restores the
// environment and expects the check to pass again.
void expect_rejected(const std::function<void()>& spoil, const char* what) {
  {
    fp_env_guard guard;
    spoil();
    auto err = check_fp_environment();
    ASSERT_TRUE(err) << what;
    EXPECT_EQ(err, errc::bad_fp_environment);
    EXPECT_EQ(lockstep::kind_of(err), error_kind::failed);
    EXPECT_THAT(render(err), HasSubstr("model.bad_fp_environment"));
    EXPECT_THAT(detail_of(err), HasSubstr(what));
    EXPECT_THAT(detail_of(err), HasSubstr("would not be bit-identical"));
  }
  EXPECT_FALSE(check_fp_environment()) << "not restored after " << what;
  EXPECT_EQ(std::fegetround(), FE_TONEAREST);
}

TEST(fp_env, default_environment_passes) {
  auto err = check_fp_environment();
  EXPECT_FALSE(err) << render(err);
}

TEST(fp_env, flush_to_zero_is_rejected) {
#ifdef LOCKSTEP_TEST_MXCSR
  expect_rejected([] { _mm_setcsr(_mm_getcsr() | (1u << 15)); },
                  "FTZ (flush-to-zero) is set");
#else
  GTEST_SKIP() << "no MXCSR on this architecture";
#endif
}

TEST(fp_env, denormals_are_zero_is_rejected) {
#ifdef LOCKSTEP_TEST_MXCSR
  expect_rejected([] { _mm_setcsr(_mm_getcsr() | (1u << 6)); },
                  "DAZ (denormals-are-zero) is set");
#else
  GTEST_SKIP() << "no MXCSR on this architecture";
#endif
}

TEST(fp_env, rounding_toward_zero_is_rejected) {
  // fesetround sets both the x87 and (on x86-64) the SSE rounding mode.
  expect_rejected([] { ASSERT_EQ(std::fesetround(FE_TOWARDZERO), 0); },
                  "is FE_TOWARDZERO, not FE_TONEAREST");
#ifdef LOCKSTEP_TEST_MXCSR
  expect_rejected([] { ASSERT_EQ(std::fesetround(FE_TOWARDZERO), 0); },
                  "MXCSR rounding control is round-toward-zero");
  // The SSE mode alone, as a library setting MXCSR directly would leave it.
  expect_rejected([] { _mm_setcsr(_mm_getcsr() | (2u << 13)); },
                  "MXCSR rounding control is round-up, not round-to-nearest");
#endif
}

} // namespace
} // namespace lockstep::model
