#pragma once
// The single source of the version: CMakeLists.txt parses these three lines.
#define EFFATTN_VERSION_MAJOR 0
#define EFFATTN_VERSION_MINOR 1
#define EFFATTN_VERSION_PATCH 0

#define EFFATTN_VERSION_STRING "0.1.0"
