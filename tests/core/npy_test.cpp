// The golden-data reader: shapes of the stored cases, and refusal of anything it cannot read exactly.

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "support/golden.hpp"
#include "support/npy.hpp"

namespace effattn_test {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(Npy, ReadsGoldenShapes) {
  const auto dir = golden_dir() / "sdpa_cross_b2h3_nq7_nk129_d33";
  EXPECT_THAT(read_npy(dir / "q.npy").shape, ElementsAre(2, 3, 7, 33));
  EXPECT_THAT(read_npy(dir / "k.npy").shape, ElementsAre(2, 3, 129, 33));
  EXPECT_THAT(read_npy(dir / "lse.npy").shape, ElementsAre(2, 3, 7));
  const NpyArray keep = read_npy(golden_dir() / "sdpa_keypad_b2h3_n64_d33" / "key_padding_keep.npy");
  EXPECT_THAT(keep.shape, ElementsAre(2, 64));
  // The manifest: lengths [64, 37], a kept prefix.
  EXPECT_EQ(keep.data[63], 1.0);
  EXPECT_EQ(keep.data[64 + 36], 1.0);
  EXPECT_EQ(keep.data[64 + 37], 0.0);
}

TEST(Npy, EveryGoldenFileLoads) {
  for (const GoldenSpec& spec : golden_specs()) {
    const GoldenCase g = load_golden(spec);
    EXPECT_EQ(g.out.size(), g.B() * g.H() * g.Lq() * g.Dv()) << spec.name;
    EXPECT_EQ(g.lse.size(), g.B() * g.H() * g.Lq()) << spec.name;
  }
}

class NpyFile : public ::testing::Test {
 protected:
  void write(const std::string& header_dict, std::size_t doubles) {
    std::string header = header_dict;
    while ((10 + header.size() + 1) % 64 != 0) header += ' ';
    header += '\n';
    std::ofstream f(path_, std::ios::binary);
    f.write("\x93NUMPY\x01\x00", 8);
    const char len[2] = {static_cast<char>(header.size() & 0xff), static_cast<char>(header.size() >> 8)};
    f.write(len, 2);
    f << header;
    const double x = 1.5;
    for (std::size_t i = 0; i < doubles; ++i) f.write(reinterpret_cast<const char*>(&x), sizeof x);
  }
  void TearDown() override { std::filesystem::remove(path_); }
  // Unique per test and per process: ctest runs the tests of this fixture in parallel processes.
  std::filesystem::path path_ = std::filesystem::temp_directory_path() /
                                (std::string("effattn_npy_test_") + ::testing::UnitTest::GetInstance()->current_test_info()->name() +
                                 "_" + std::to_string(std::random_device{}()) + ".npy");
};

TEST_F(NpyFile, ReadsOneDimensional) {
  write("{'descr': '<f8', 'fortran_order': False, 'shape': (7,), }", 7);
  const NpyArray a = read_npy(path_);
  EXPECT_THAT(a.shape, ElementsAre(7));
  EXPECT_EQ(a.data[6], 1.5);
}

TEST_F(NpyFile, RefusesOtherDtypes) {
  write("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 1);
  EXPECT_THAT([&] { (void)read_npy(path_); }, ::testing::ThrowsMessage<std::runtime_error>(HasSubstr("'<f4'")));
}

TEST_F(NpyFile, RefusesFortranOrder) {
  write("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2), }", 4);
  EXPECT_THAT([&] { (void)read_npy(path_); }, ::testing::ThrowsMessage<std::runtime_error>(HasSubstr("Fortran")));
}

TEST_F(NpyFile, RefusesTruncatedData) {
  write("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }", 5);
  EXPECT_THAT([&] { (void)read_npy(path_); }, ::testing::ThrowsMessage<std::runtime_error>(HasSubstr("truncated")));
}

}  // namespace
}  // namespace effattn_test
