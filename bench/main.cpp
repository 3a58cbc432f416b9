// effattn_bench: every attention kind of the library measured against this machine's own limits, in
// one binary so that their rows share inputs, probes and one summary table. A probe of FMA peak and
// STREAM triad bandwidth runs first; its figures go to the benchmark context. The row sets, each
// described at the top of its file:
//   softmax_rows.cpp  exact softmax: softmax/, naive/, decode/, memory/
//   rfa_rows.cpp      random-feature attention beside it: rfa/, rfa-decode/, rfa-memory/
//   lara_rows.cpp     RA and LARA beside both: lara/, ra/, lara-memory/, accuracy/
//   block_sparse_rows.cpp  MRA-2 and hypercube beside softmax: mra/, mra-s/, hypercube/, mra-memory/,
//                     hypercube-memory/, mra-accuracy/
// The summary ends with comparison blocks, "RFA vs softmax", "LARA vs softmax", "LARA vs RFA", "RA vs
// softmax", "MRA-2 vs softmax" and "Hypercube vs softmax": per (D, causal, threads), the time of both
// kinds at each L, the speedup, the candidate's error against exact softmax, the crossover length and
// how the candidate's time grows from L/4 to its longest L; then the accuracy tables (RFA, LARA and RA
// at equal sample count; MRA-2 over its budget and the attention's entropy).
//
//   effattn_bench            full sweep (a few minutes on 2 cores with kernels near 100 GFLOP/s per
//                            core; longer on a slower or shared machine)
//   effattn_bench --quick    softmax at L in {1024, 4096}, rfa, lara (C = 49), mra (8 blocks per row)
//                            and hypercube (B = 16 and 1) at L in {1024, 4096, 16384}, ra at L = 1024,
//                            D = 64, plus the decode, memory and accuracy rows
// Any Google Benchmark flag works as usual (--benchmark_filter=rfa/L:4096, --benchmark_out=x.json
// --benchmark_out_format=json, --benchmark_min_time=1, ...).

#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "common.hpp"

#include <effattn/version.hpp>

#include "probes.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace {

using namespace effattn_bench;

// ---- command line --------------------------------------------------------------------------------------

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

bool flag_true(std::string_view arg, std::string_view flag) {
  if (arg == flag) return true;
  if (!starts_with(arg, flag) || arg.size() <= flag.size() || arg[flag.size()] != '=') return false;
  const std::string_view value = arg.substr(flag.size() + 1);
  return value == "true" || value == "1" || value == "yes" || value == "on";
}

std::string fixed(double value, int decimals = 1) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  bool listing = false;
  bool other_format = false;
  bool tabular = false;
#if defined(__unix__) || defined(__APPLE__)
  bool color = isatty(STDOUT_FILENO) != 0;
#else
  bool color = false;
#endif
  // Our default minimum time per row, placed before the user's arguments so that a
  // --benchmark_min_time given on the command line wins.
  static char default_min_time[] = "--benchmark_min_time=0.2";
  std::vector<char*> args{argv[0], default_min_time};
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--quick") {  // ours: taken out before Google Benchmark sees the arguments
      quick = true;
      continue;
    }
    if (flag_true(arg, "--benchmark_list_tests")) listing = true;
    if (starts_with(arg, "--benchmark_format=") && arg != "--benchmark_format=console") other_format = true;
    if (flag_true(arg, "--benchmark_counters_tabular")) tabular = true;
    if (starts_with(arg, "--benchmark_color=")) {
      const std::string_view value = arg.substr(std::strlen("--benchmark_color="));
      if (value == "false" || value == "no" || value == "0" || value == "off") color = false;
      else if (value == "true" || value == "yes" || value == "1" || value == "on") color = true;
    }
    args.push_back(argv[i]);
  }
  int count = static_cast<int>(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;

  // The naive baseline is single-threaded; the kernel never starts Eigen's own threads.
  Eigen::setNbThreads(1);

  if (!listing) {
    std::fprintf(stderr, "probing FMA peak and STREAM triad bandwidth...\n");
    g_machine.threads = max_threads();
    g_machine.peak_1t = fma_peak_gflops(1);
    g_machine.peak_nt = g_machine.threads > 1 ? fma_peak_gflops(g_machine.threads) : g_machine.peak_1t;
    g_machine.triad_1t = triad_gbps(1);
    g_machine.triad_nt = g_machine.threads > 1 ? triad_gbps(g_machine.threads) : g_machine.triad_1t;
    g_machine.triad_plain_1t = triad_gbps(1, false);
    g_machine.triad_plain_nt = g_machine.threads > 1 ? triad_gbps(g_machine.threads, false) : g_machine.triad_plain_1t;
  }
  const std::string nt = std::to_string(g_machine.threads) + "t";
  benchmark::AddCustomContext("effattn_version", EFFATTN_VERSION_STRING);
  benchmark::AddCustomContext("isa", isa_string());
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
  benchmark::AddCustomContext("threads_max", std::to_string(g_machine.threads));
  benchmark::AddCustomContext("fma_peak_GFLOPs_1t", fixed(g_machine.peak_1t));
  benchmark::AddCustomContext("triad_GBs_1t", fixed(g_machine.triad_1t, 2));
  benchmark::AddCustomContext("triad_stores", kStreamingStores ? "streaming" : "plain");
  benchmark::AddCustomContext("triad_plain_stores_GBs_1t", fixed(g_machine.triad_plain_1t, 2));
  if (g_machine.threads > 1) {  // with one thread (or when only listing) these would repeat the 1t keys
    benchmark::AddCustomContext("fma_peak_GFLOPs_" + nt, fixed(g_machine.peak_nt));
    benchmark::AddCustomContext("triad_GBs_" + nt, fixed(g_machine.triad_nt, 2));
    benchmark::AddCustomContext("triad_plain_stores_GBs_" + nt, fixed(g_machine.triad_plain_nt, 2));
  }
  benchmark::AddCustomContext("heap_tracking", heap::scope());
#if defined(NDEBUG)
  benchmark::AddCustomContext("effattn_asserts", "off");
#else
  benchmark::AddCustomContext("effattn_asserts", "ON (not a Release build: timings are not representative)");
#endif

  // Softmax first: the comparison blocks read every kind, in any order.
  register_softmax_rows(quick);
  register_rfa_rows(quick);
  register_lara_rows(quick);
  register_block_sparse_rows(quick);

  std::string header = "FMA peak " + fixed(g_machine.peak_1t) + " GFLOP/s per core, " + fixed(g_machine.peak_nt) + " with " +
                       nt + "; triad " + fixed(g_machine.triad_1t, 2) + " GB/s 1t, " + fixed(g_machine.triad_nt, 2) +
                       " GB/s " + nt + "; %peak = GFLOP/s / (per-core peak x threads), %bw = GB/s / triad";
  // Other processes on the cores make every figure low, the multi-threaded ones most: say so where the
  // numbers are read.
  if (g_machine.threads > 1 && g_machine.peak_nt < 0.8 * g_machine.peak_1t * g_machine.threads)
    header += "\nWARNING: the " + nt + " FMA probe reached only " + fixed(g_machine.peak_nt / g_machine.peak_1t, 2) +
              "x the 1-thread figure: other processes are using the cores, figures are low";
  int options = 0;
  if (color) options |= benchmark::ConsoleReporter::OO_Color;
  if (tabular) options |= benchmark::ConsoleReporter::OO_Tabular;
  SummaryReporter reporter(static_cast<benchmark::ConsoleReporter::OutputOptions>(options), header);
  reporter.add_comparison({"RFA vs softmax", "softmax", "rfa"});
  for (const char* lara : {"lara-c49", "lara-c64"}) reporter.add_comparison({"LARA vs softmax", "softmax", lara});
  for (const char* lara : {"lara-c49", "lara-c64"}) reporter.add_comparison({"LARA vs RFA", "rfa", lara});
  reporter.add_comparison({"RA vs softmax", "softmax", "ra"});
  for (const char* mra : {"mra-bpr4", "mra-bpr8"}) reporter.add_comparison({"MRA-2 vs softmax", "softmax", mra});
  for (const char* cube : {"hypercube-b16", "hypercube-b1"})
    reporter.add_comparison({"Hypercube vs softmax", "softmax", cube});
  reporter.add_error_table(lara_accuracy_table());
  reporter.add_error_table(mra_accuracy_table());
  // Another --benchmark_format keeps Google Benchmark's own reporter (the table is for people).
  if (other_format) benchmark::RunSpecifiedBenchmarks();
  else benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
