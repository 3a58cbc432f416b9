#pragma once
// Reader for the golden .npy files: NPY format 1.0 (2.0/3.0 headers accepted too), dtype '<f8',
// C order. The golden data only ever holds that one form, so anything else is refused loudly rather
// than converted: a silently transposed or byte-swapped array would make every comparison meaningless.

#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Core>

namespace effattn_test {

using Index = Eigen::Index;

struct NpyArray {
  std::vector<Eigen::Index> shape;
  std::vector<double> data;  // row-major, last index fastest

  [[nodiscard]] Eigen::Index size() const { return static_cast<Eigen::Index>(data.size()); }
  [[nodiscard]] Eigen::Index dim(std::size_t axis) const { return shape.at(axis); }
};

namespace detail {

// Value of key `key` in the header dict, e.g. "'<f8'" or "(2, 3, 64)", trimmed of spaces.
inline std::string npy_field(const std::string& header, const std::string& key, const std::string& path) {
  const std::string quoted = "'" + key + "'";
  std::size_t p = header.find(quoted);
  if (p == std::string::npos) throw std::runtime_error(path + ": NPY header has no " + quoted);
  p = header.find(':', p + quoted.size());
  if (p == std::string::npos) throw std::runtime_error(path + ": malformed NPY header");
  ++p;
  while (p < header.size() && header[p] == ' ') ++p;
  // A tuple runs to its closing parenthesis; a scalar to the next comma.
  const std::size_t end = header[p] == '(' ? header.find(')', p) + 1 : header.find(',', p);
  if (end == std::string::npos || end <= p) throw std::runtime_error(path + ": malformed NPY header");
  std::string value = header.substr(p, end - p);
  while (!value.empty() && value.back() == ' ') value.pop_back();
  return value;
}

}  // namespace detail

inline NpyArray read_npy(const std::filesystem::path& file) {
  static_assert(std::endian::native == std::endian::little, "the golden files are little-endian");
  const std::string path = file.string();
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);

  unsigned char prefix[8];
  in.read(reinterpret_cast<char*>(prefix), 8);
  if (!in || std::memcmp(prefix, "\x93NUMPY", 6) != 0) throw std::runtime_error(path + ": not an NPY file");
  const int major = prefix[6];
  std::size_t header_len = 0;
  if (major == 1) {
    unsigned char b[2];
    in.read(reinterpret_cast<char*>(b), 2);
    header_len = std::size_t{b[0]} | (std::size_t{b[1]} << 8);
  } else if (major == 2 || major == 3) {
    unsigned char b[4];
    in.read(reinterpret_cast<char*>(b), 4);
    header_len = std::size_t{b[0]} | (std::size_t{b[1]} << 8) | (std::size_t{b[2]} << 16) | (std::size_t{b[3]} << 24);
  } else {
    throw std::runtime_error(path + ": unsupported NPY version " + std::to_string(major));
  }
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  if (!in) throw std::runtime_error(path + ": truncated NPY header");

  const std::string descr = detail::npy_field(header, "descr", path);
  if (descr != "'<f8'") throw std::runtime_error(path + ": dtype is " + descr + ", expected '<f8'");
  const std::string order = detail::npy_field(header, "fortran_order", path);
  if (order != "False") throw std::runtime_error(path + ": Fortran-ordered arrays are not supported");

  NpyArray a;
  const std::string shape = detail::npy_field(header, "shape", path);  // "(2, 3, 64)", "(7,)" or "()"
  std::size_t count = 1;
  for (std::size_t p = 1; p + 1 < shape.size();) {
    if (shape[p] == ' ' || shape[p] == ',') {
      ++p;
      continue;
    }
    std::size_t used = 0;
    const unsigned long long extent = std::stoull(shape.substr(p), &used);
    a.shape.push_back(static_cast<Eigen::Index>(extent));
    count *= static_cast<std::size_t>(extent);
    p += used;
  }

  a.data.resize(count);
  in.read(reinterpret_cast<char*>(a.data.data()), static_cast<std::streamsize>(count * sizeof(double)));
  if (!in) throw std::runtime_error(path + ": truncated NPY data");
  if (in.peek() != std::char_traits<char>::eof()) throw std::runtime_error(path + ": trailing bytes after NPY data");
  return a;
}

}  // namespace effattn_test
