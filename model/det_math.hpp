#pragma once

// Elementary functions written with IEEE-754 +, -, *, / and sqrt only, so
// their results are the same on every machine, compiler and libm version
// (docs/determinism.md). libm's exp/log/sin/cos are not correctly rounded and
// differ between glibc versions; anything that feeds model math uses these.
//
// All work in double and are accurate to a few ulp of double, far below
// float resolution; the f32 variants round the double result once.

namespace lockstep::model::det {

/// e^x. Underflows to 0 below -745, overflows to +inf above 709.8.
double exp(double x);

/// Natural logarithm. REQUIRES: x > 0 and finite.
double log(double x);

/// sin and cos. Accurate for |x| <= 1e6 (RoPE angles stay far below).
double sin(double x);
double cos(double x);

/// f32 helpers used by kernels.
inline float expf(float x) {
  return static_cast<float>(exp(static_cast<double>(x)));
}

} // namespace lockstep::model::det
