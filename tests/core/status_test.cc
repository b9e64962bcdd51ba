#include "core/status.h"

#include <gtest/gtest.h>

#include "core/checked_math.h"

namespace moerun {
namespace {

StatusOr<int> Half(int x) {
  if (x % 2 != 0) return InvalidArgument("{} is odd", x);
  return x / 2;
}

Status UseHalf(int x, int* out) {
  ASSIGN_OR_RETURN(*out, Half(x));
  return Status::Ok();
}

TEST(StatusTest, OkAndErrors) {
  EXPECT_TRUE(Status::Ok().ok());
  Status s = InvalidArgument("--ep {} does not divide {} experts", 3, 64);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.ToString(), "InvalidArgument: --ep 3 does not divide 64 experts");
  EXPECT_EQ(s.WithContext("layer 3").message(), "layer 3: --ep 3 does not divide 64 experts");
}

TEST(StatusTest, StatusOrPropagates) {
  int v = 0;
  EXPECT_TRUE(UseHalf(8, &v).ok());
  EXPECT_EQ(v, 4);
  Status s = UseHalf(7, &v);
  EXPECT_EQ(s.message(), "7 is odd");
}

TEST(CheckedMathTest, DetectsOverflow) {
  EXPECT_EQ(CheckedMul(1 << 20, 1 << 20, "x").value(), uint64_t{1} << 40);
  EXPECT_FALSE(CheckedMul(uint64_t{1} << 40, uint64_t{1} << 40, "x").ok());
  EXPECT_FALSE(CheckedAdd(~uint64_t{0}, 1, "x").ok());
  const int64_t dims[] = {int64_t{1} << 32, int64_t{1} << 32};
  Status s = CheckedProduct(dims, "tensor 'w'").status();
  EXPECT_EQ(s.code(), StatusCode::kOutOfRange);
  EXPECT_NE(s.message().find("tensor 'w'"), std::string::npos);
  const int64_t neg[] = {2, -1};
  EXPECT_FALSE(CheckedProduct(neg, "t").ok());
  EXPECT_EQ(CheckedProduct({}, "scalar").value(), 1u);
}

}  // namespace
}  // namespace moerun
