#include "model/det_math.hpp"

#include <bit>
#include <cstdint>
#include <limits>

namespace lockstep::model::det {

namespace {

// Rounds to the nearest integer (ties away from zero) using only exact
// operations: floor() is exact in IEEE arithmetic.
double round_nearest(double x) {
  double f = static_cast<double>(static_cast<int64_t>(x));
  double diff = x - f;
  if (diff >= 0.5)
    return f + 1.0;
  if (diff <= -0.5)
    return f - 1.0;
  return f;
}

// 2^n for integer n in [-1074, 1023], built from bits.
double pow2(int n) {
  if (n >= -1022)
    return std::bit_cast<double>(static_cast<uint64_t>(n + 1023) << 52);
  return std::bit_cast<double>(uint64_t{1} << (n + 1074));
}

// Cody–Waite split of ln 2 and pi/2: the high parts have trailing zero bits,
// so k * hi is exact for the k we see.
constexpr double ln2_hi = 6.93147180369123816490e-01;
constexpr double ln2_lo = 1.90821492927058770002e-10;
constexpr double inv_ln2 = 1.44269504088896338700e+00;
constexpr double pio2_1 = 1.57079632673412561417e+00;
constexpr double pio2_2 = 6.07710050650619224932e-11;
constexpr double pio2_3 = 2.02226624879595063154e-21;
constexpr double two_over_pi = 6.36619772367581382433e-01;

// Taylor series on the reduced argument, evaluated by Horner's rule with
// fixed coefficients: deterministic by construction.
double exp_reduced(double r) {   // |r| <= 0.35
  double p = 1.0 / 6227020800.0; // 1/13!
  const double inv_fact[] = {1.0 / 479001600.0,
                             1.0 / 39916800.0,
                             1.0 / 3628800.0,
                             1.0 / 362880.0,
                             1.0 / 40320.0,
                             1.0 / 5040.0,
                             1.0 / 720.0,
                             1.0 / 120.0,
                             1.0 / 24.0,
                             1.0 / 6.0,
                             0.5,
                             1.0,
                             1.0};
  for (double c : inv_fact)
    p = p * r + c;
  return p;
}

double sin_reduced(double r) { // |r| <= pi/4
  double r2 = r * r;
  double p = -1.0 / 1307674368000.0; // -1/15!
  const double c[] = {1.0 / 6227020800.0, -1.0 / 39916800.0, 1.0 / 362880.0,
                      -1.0 / 5040.0,      1.0 / 120.0,       -1.0 / 6.0};
  for (double k : c)
    p = p * r2 + k;
  return r + r * r2 * p;
}

double cos_reduced(double r) { // |r| <= pi/4
  double r2 = r * r;
  double p = 1.0 / 20922789888000.0; // 1/16!
  const double c[] = {-1.0 / 87178291200.0,
                      1.0 / 479001600.0,
                      -1.0 / 3628800.0,
                      1.0 / 40320.0,
                      -1.0 / 720.0,
                      1.0 / 24.0,
                      -0.5};
  for (double k : c)
    p = p * r2 + k;
  return 1.0 + r2 * p;
}

// Reduces x to r in [-pi/4, pi/4] and returns the quadrant k mod 4.
int reduce_pio2(double x, double& r) {
  double k = round_nearest(x * two_over_pi);
  r = ((x - k * pio2_1) - k * pio2_2) - k * pio2_3;
  auto q = static_cast<int64_t>(k);
  return static_cast<int>(q & 3);
}

} // namespace

double exp(double x) {
  if (x != x)
    return x;
  if (x > 709.78)
    return std::numeric_limits<double>::infinity();
  if (x < -745.2)
    return 0.0;
  double k = round_nearest(x * inv_ln2);
  double r = (x - k * ln2_hi) - k * ln2_lo;
  auto n = static_cast<int>(k);
  double p = exp_reduced(r);
  // Split the scaling in two so that subnormal results stay exact-ish and
  // n near the limits never builds an out-of-range exponent.
  int n1 = n / 2;
  return p * pow2(n1) * pow2(n - n1);
}

double log(double x) {
  // x = m * 2^e with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(f),
  // f = (m - 1) / (m + 1), |f| <= 0.1716.
  auto bits = std::bit_cast<uint64_t>(x);
  int e = static_cast<int>((bits >> 52) & 0x7FF);
  if (e == 0) { // subnormal: scale up exactly
    x = x * 0x1p54;
    bits = std::bit_cast<uint64_t>(x);
    e = static_cast<int>((bits >> 52) & 0x7FF) - 54;
  }
  e -= 1023;
  double m = std::bit_cast<double>((bits & 0x000FFFFFFFFFFFFFull) |
                                   0x3FF0000000000000ull);
  if (m > 1.4142135623730951) {
    m = m * 0.5;
    e += 1;
  }
  double f = (m - 1.0) / (m + 1.0);
  double f2 = f * f;
  double p = 1.0 / 25.0;
  for (int k = 23; k >= 1; k -= 2)
    p = p * f2 + 1.0 / static_cast<double>(k);
  double log_m = 2.0 * f * p;
  double de = static_cast<double>(e);
  return de * ln2_hi + (de * ln2_lo + log_m);
}

double sin(double x) {
  double r;
  switch (reduce_pio2(x, r)) {
  case 0:
    return sin_reduced(r);
  case 1:
    return cos_reduced(r);
  case 2:
    return -sin_reduced(r);
  default:
    return -cos_reduced(r);
  }
}

double cos(double x) {
  double r;
  switch (reduce_pio2(x, r)) {
  case 0:
    return cos_reduced(r);
  case 1:
    return -sin_reduced(r);
  case 2:
    return -cos_reduced(r);
  default:
    return sin_reduced(r);
  }
}

} // namespace lockstep::model::det
