#pragma once
// Google Benchmark's console output, followed at the end of the run by one compact table with the
// figures a reader compares across rows (time, GFLOP/s, %peak, GB/s, %bw, rel_err, extra heap).
// Benchmarks describe each row once, at registration, with describe_row(); the table reads the
// numbers from the run's counters, so it always agrees with the console and JSON output.

#include <cstdio>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

namespace effattn_bench {

struct RowInfo {
  std::string kind;    // softmax, naive, decode, ...
  long long len = 0;   // L (Lk for decode)
  long long dim = 0;   // D
  bool causal = false;
  int threads = 1;
  std::string note;    // what else distinguishes the row (split_kv, ...)
};

inline std::map<std::string, RowInfo>& row_registry() {
  static std::map<std::string, RowInfo> rows;
  return rows;
}

// Registers a row's description under the benchmark name it was registered with.
inline void describe_row(const std::string& name, RowInfo info) { row_registry()[name] = std::move(info); }

class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  explicit SummaryReporter(OutputOptions options, std::string header = {})
      : benchmark::ConsoleReporter(options), header_(std::move(header)) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    benchmark::ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs)
      if (run.run_type == Run::RT_Iteration) runs_.push_back(run);
  }

  void Finalize() override {
    benchmark::ConsoleReporter::Finalize();
    if (runs_.empty()) return;
    std::ostream& out = GetOutputStream();
    char line[256];
    out << "\nSummary\n";
    if (!header_.empty()) out << header_ << "\n";
    std::snprintf(line, sizeof line, "%-14s %6s %4s %6s %3s %10s %8s %6s %7s %5s %9s %9s  %s\n", "kind", "L", "D",
                  "causal", "thr", "time_ms", "GFLOP/s", "%peak", "GB/s", "%bw", "rel_err", "extra_MiB", "note");
    out << line;
    for (const Run& run : runs_) {
      const auto it = row_registry().find(run.run_name.function_name);
      RowInfo info;
      if (it != row_registry().end()) info = it->second;
      else info.kind = run.run_name.function_name;
      if (run.error_occurred) {
        std::snprintf(line, sizeof line, "%-14s %6lld %4lld %6s %3d  error: %s\n", info.kind.c_str(), info.len, info.dim,
                      info.causal ? "yes" : "no", info.threads, run.error_message.c_str());
        out << line;
        continue;
      }
      const double ms = run.iterations > 0 ? run.real_accumulated_time / static_cast<double>(run.iterations) * 1e3 : 0.0;
      std::snprintf(line, sizeof line, "%-14s %6lld %4lld %6s %3d %10.3f %8s %6s %7s %5s %9s %9s  %s\n", info.kind.c_str(),
                    info.len, info.dim, info.causal ? "yes" : "no", info.threads, ms,
                    counter(run, "FLOP/s", 1e-9, "%.1f").c_str(), counter(run, "%peak", 1, "%.1f").c_str(),
                    counter(run, "B/s", 1e-9, "%.2f").c_str(), counter(run, "%bw", 1, "%.1f").c_str(),
                    counter(run, "rel_err", 1, "%.2e").c_str(), counter(run, "extra_MiB", 1, "%.2f").c_str(),
                    note(run, info).c_str());
      out << line;
    }
    out.flush();
  }

 private:
  // The row's note, plus heap allocations per call when a steady-state call allocated at all.
  static std::string note(const Run& run, const RowInfo& info) {
    std::string text = info.note;
    const auto it = run.counters.find("allocs");
    if (it != run.counters.end() && it->second.value > 0) {
      char buf[48];
      std::snprintf(buf, sizeof buf, "%sallocs/call=%.3g", text.empty() ? "" : "; ", it->second.value);
      text += buf;
    }
    return text;
  }

  static std::string counter(const Run& run, const char* name, double factor, const char* format) {
    const auto it = run.counters.find(name);
    if (it == run.counters.end()) return "-";
    char buf[32];
    std::snprintf(buf, sizeof buf, format, it->second.value * factor);
    return buf;
  }

  std::string header_;
  std::vector<Run> runs_;
};

}  // namespace effattn_bench
