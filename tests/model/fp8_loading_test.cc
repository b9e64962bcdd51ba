// FP8 (block-scaled F8_E4M3) weights at load: packed straight from the codes and scales, the same
// bytes as packing the dequantised f32 matrix; validation of the scale_inv companions; the
// quantization_config rules.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/fp8_weights.h"
#include "model/model_config.h"
#include "model/model_loading.h"
#include "model/synthetic_model.h"

namespace moerun {
namespace {

namespace fs = std::filesystem;

// Codes cycling through every finite e4m3 value, scales distinct per block.
StoredWeight MakeFp8(int64_t rows, int64_t cols, Tensor* codes_out = nullptr) {
  Tensor codes = Tensor::Zeros(DType::kF8_E4M3, {rows, cols}).value();
  uint8_t code = 3;
  for (int64_t i = 0; i < rows * cols; ++i) {
    codes.data<uint8_t>()[i] = code;
    code = static_cast<uint8_t>(code + 29);
    if ((code & 0x7f) == 0x7f) ++code;
  }
  const Shape ss = BlockScaleShape(rows, cols, kFp8BlockSize, kFp8BlockSize);
  Tensor scale = Tensor::Zeros(DType::kF32, ss).value();
  for (int64_t b = 0; b < scale.numel(); ++b) scale.data<float>()[b] = 1e-3f * static_cast<float>(b + 1) / 3;
  if (codes_out) *codes_out = codes;
  return StoredWeight::BlockScaled(codes, scale, kFp8BlockSize, kFp8BlockSize, "w").value();
}

bool SameBytes(const PackedWeight& a, const PackedWeight& b) {
  return a.bytes() == b.bytes() && a.format() == b.format() && a.n_blocks() == b.n_blocks() &&
         std::memcmp(a.block(0), b.block(0), a.bytes()) == 0;
}

TEST(Fp8PackTest, PackedFromCodesEqualsPackedFromDequantisedMatrix) {
  // [200, 320]: block rows 128 + 72, block columns 128 + 128 + 64. A tensor-parallel slice (rows
  // 50..190 crossing the block-row edge, columns 96..288 crossing two block-column edges) and
  // the whole, in dense and block formats.
  const StoredWeight w = MakeFp8(200, 320);
  const Tensor full = w.ToF32().value();
  for (WeightFormat f : {WeightFormat::kF32, WeightFormat::kBF16, WeightFormat::kF16, WeightFormat::kQ8_0,
                         WeightFormat::kQ4_0}) {
    SCOPED_TRACE(WeightFormatName(f));
    auto whole = PackedWeight::Pack(w, f);
    ASSERT_TRUE(whole.ok()) << whole.status().ToString();
    EXPECT_TRUE(SameBytes(*whole, PackedWeight::Pack(full, f).value()));
    auto slice = PackedWeight::Pack(w.Rows(50, 190), f, 96, 288);
    ASSERT_TRUE(slice.ok()) << slice.status().ToString();
    EXPECT_TRUE(SameBytes(*slice, PackedWeight::Pack(full.Rows(50, 190), f, 96, 288).value()));
  }
  // Gate/up interleaved, from FP8 rows of a slice.
  const StoredWeight up = MakeFp8(200, 320);
  auto gu = PackedWeight::PackGateUp(w.Rows(64, 160), up.Rows(64, 160), WeightFormat::kBF16);
  ASSERT_TRUE(gu.ok());
  EXPECT_TRUE(SameBytes(
      *gu, PackedWeight::PackGateUp(full.Rows(64, 160), up.ToF32().value().Rows(64, 160), WeightFormat::kBF16)
               .value()));
  // Dequantised values are what the packed f32 weight holds, element for element.
  const PackedWeight p32 = PackedWeight::Pack(w, WeightFormat::kF32).value();
  for (int64_t n : {0, 127, 128, 199}) {
    const std::vector<double> row = p32.Row(n);
    for (int64_t k = 0; k < 320; ++k) ASSERT_EQ(row[k], full.data<float>()[n * 320 + k]);
  }
  // FP8 codes without their scales are refused rather than decoded unscaled.
  EXPECT_FALSE(PackedWeight::Pack(w.values(), WeightFormat::kBF16).ok());
}

// `inspect`'s "held as" for MLA's kv_b (HF and GGUF names) is the dtype the loader's StoredRows
// really get, for every kind of stored dtype and --weight-format, and its bytes are that dtype's.
TEST(ResidentFormTest, KvBIsHeldAsTheRowOpsGetIt) {
  const int64_t rows = 64, cols = 256;
  const int64_t shape[] = {rows, cols};
  for (DType stored :
       {DType::kF32, DType::kBF16, DType::kQ4_0, DType::kQ4_K, DType::kQ3_K, DType::kF8_E4M3}) {
    const StoredWeight w = stored == DType::kF8_E4M3
                               ? MakeFp8(rows, cols)
                               : StoredWeight(Tensor::Zeros(stored, {rows, cols}).value());
    for (std::optional<WeightFormat> requested :
         {std::optional<WeightFormat>(), std::optional(WeightFormat::kQ8_0),
          std::optional(WeightFormat::kF32)}) {
      const DType held = MakeStoredRowsFor(w, requested, cols).value().dtype;
      for (const char* name : {"model.layers.3.self_attn.kv_b_proj.weight", "blk.3.attn_kv_b.weight",
                               "blk.3.attn_k_b.weight", "blk.3.attn_v_b.weight"}) {
        const ResidentForm form = ResidentFormOf(name, stored, shape, requested);
        SCOPED_TRACE(std::string(name) + " stored " + std::string(DTypeName(stored)));
        EXPECT_EQ(form.format, DTypeName(held));
        EXPECT_EQ(form.bytes, static_cast<double>(rows) * static_cast<double>(DTypeRowBytes(held, cols)));
      }
    }
  }
  // The packed matrices beside it do follow --weight-format.
  EXPECT_EQ(ResidentFormOf("model.layers.3.self_attn.q_proj.weight", DType::kF32, shape, WeightFormat::kQ8_0)
                .format,
            "q8_0");
}

TEST(Fp8PackTest, AutoFormatIsBf16AndRowsForKvB) {
  const StoredWeight w = MakeFp8(130, 64);
  EXPECT_EQ(PackAs(w, std::nullopt).value().format(), WeightFormat::kBF16);
  EXPECT_EQ(PackAs(w, WeightFormat::kQ8_0).value().format(), WeightFormat::kQ8_0);
  // kv_b: FP8 rows land in the requested format's storage (auto bf16), values via ReadRow.
  const Tensor full = w.ToF32().value();
  StoredRows r32 = MakeStoredRowsFor(w, WeightFormat::kF32, 64).value();
  StoredRows r16 = MakeStoredRowsFor(w, std::nullopt, 64).value();
  StoredRows rq = MakeStoredRowsFor(w, WeightFormat::kQ8_0, 64).value();
  EXPECT_EQ(r16.dtype, DType::kBF16);
  EXPECT_EQ(rq.dtype, DType::kQ8_0);
  AppendWeightRows(w, 120, 130, &r32);
  AppendWeightRows(w, 120, 130, &r16);
  AppendWeightRows(w, 120, 130, &rq);
  ASSERT_EQ(r32.rows, 10);
  const float* f = reinterpret_cast<const float*>(r32.bytes.data());
  const uint16_t* h = reinterpret_cast<const uint16_t*>(r16.bytes.data());
  for (int64_t i = 0; i < 10 * 64; ++i) {
    ASSERT_EQ(f[i], full.data<float>()[120 * 64 + i]);
    ASSERT_EQ(h[i], F32ToBf16(full.data<float>()[120 * 64 + i]));
  }
  EXPECT_EQ(rq.bytes.size(), 10 * DTypeRowBytes(DType::kQ8_0, 64));
}

// A tiny checkpoint for ValidateTensors: one table matrix "x.weight" [200, 130].
class Fp8ValidateTest : public ::testing::Test {
 protected:
  void TearDown() override {
    std::error_code ec;
    fs::remove(path_, ec);
  }
  Status Validate(const std::vector<NamedTensor>& ts) {
    path_ = (fs::temp_directory_path() /
             fmt::format("moerun_fp8v_{}_{}.safetensors",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name(), ::getpid()))
                .string();
    EXPECT_TRUE(WriteSafetensors(path_, ts).ok());
    auto ckpt = Checkpoint::Open(path_).value();
    ModelConfig c;
    c.num_hidden_layers = 1;
    TensorTable table;
    table.shapes["x.weight"] = {200, 130};
    table.shapes["n.weight"] = {4};
    return ValidateTensors(c, *ckpt, table);
  }
  static Tensor Codes(Shape s) { return Tensor::Zeros(DType::kF8_E4M3, std::move(s)).value(); }
  static Tensor F32(Shape s) { return Tensor::Zeros(DType::kF32, std::move(s)).value(); }
  std::string path_;
};

TEST_F(Fp8ValidateTest, ScalesAcceptedAndChecked) {
  EXPECT_TRUE(
      Validate({{"x.weight", Codes({200, 130})}, {"x.weight_scale_inv", F32({2, 2})}, {"n.weight", F32({4})}})
          .ok());
  // Scales of an MTP layer's FP8 weight are skipped with it.
  EXPECT_TRUE(Validate({{"x.weight", Codes({200, 130})},
                        {"x.weight_scale_inv", F32({2, 2})},
                        {"n.weight", F32({4})},
                        {"model.layers.1.mlp.down_proj.weight", Codes({8, 8})},
                        {"model.layers.1.mlp.down_proj.weight_scale_inv", F32({1, 1})}})
                  .ok());
  Status st = Validate(
      {{"x.weight", Codes({200, 130})}, {"x.weight_scale_inv", F32({1, 2})}, {"n.weight", F32({4})}});
  EXPECT_NE(st.message().find("'x.weight_scale_inv' has shape [1, 2], expected [2, 2]"), std::string::npos)
      << st.ToString();
  st = Validate({{"x.weight", Codes({200, 130})}, {"n.weight", F32({4})}});
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.message().find("x.weight_scale_inv"), std::string::npos) << st.ToString();
  // A scale_inv beside a weight that is not FP8 is an unexpected tensor; FP8 norms are refused.
  st = Validate({{"x.weight", F32({200, 130})}, {"x.weight_scale_inv", F32({2, 2})}, {"n.weight", F32({4})}});
  EXPECT_NE(st.message().find("unexpected tensor 'x.weight_scale_inv'"), std::string::npos) << st.ToString();
  st = Validate({{"x.weight", Codes({200, 130})},
                 {"x.weight_scale_inv", F32({2, 2})},
                 {"n.weight", Codes({4})},
                 {"n.weight_scale_inv", F32({1})}});
  EXPECT_NE(st.message().find("'n.weight' has dtype F8_E4M3"), std::string::npos) << st.ToString();
}

// V2-Lite's synthetic config plus a quantization_config.
StatusOr<ModelConfig> WithQuantization(const std::string& q) {
  std::string text = SyntheticV2LiteConfigJson(1);
  text.insert(text.find('{') + 1, "\"quantization_config\": " + q + ",");
  return ModelConfig::FromJson(text, "config.json");
}

TEST(Fp8ConfigTest, QuantizationConfigRules) {
  auto c = WithQuantization(
      R"({"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128], "activation_scheme": "dynamic"})");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->fp8_weights);
  EXPECT_FALSE(ModelConfig::FromJson(SyntheticV2LiteConfigJson(1), "config.json").value().fp8_weights);
  for (auto [q, needle] : std::initializer_list<std::pair<const char*, const char*>>{
           {R"({"quant_method": "fp8", "weight_block_size": [64, 64]})", "weight_block_size [64,64]"},
           {R"({"quant_method": "gptq", "bits": 4})", "quant_method 'gptq'"},
           {R"({"quant_method": "fp8", "fmt": "e5m2"})", "fmt 'e5m2'"},
           {R"({"quant_method": "fp8", "activation_scheme": "static"})", "activation_scheme 'static'"}}) {
    auto bad = WithQuantization(q);
    ASSERT_FALSE(bad.ok()) << q;
    EXPECT_EQ(bad.status().code(), StatusCode::kUnimplemented);
    EXPECT_NE(bad.status().message().find(needle), std::string::npos) << bad.status().ToString();
  }
}

}  // namespace
}  // namespace moerun
