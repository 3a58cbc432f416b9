#pragma once
// Google Benchmark's console output, followed at the end of the run by one compact table with the
// figures a reader compares across rows (time, GFLOP/s, %peak, GB/s, %bw, rel_err, extra heap,
// workspace), then one block per comparison of two kinds (add_comparison): their times side by side at
// each L, the speedup, the candidate's error, where the candidate starts to win and how its time
// scales; and last one block per error table (add_error_table): rows that measure accuracy only, whose
// counters are laid out as a table instead of joining the timing table.
// Benchmarks describe each row once, at registration, with describe_row(); the table reads the
// numbers from the run's counters, so it always agrees with the console and JSON output.

#include <algorithm>
#include <cstdio>
#include <map>
#include <ostream>
#include <string>
#include <tuple>
#include <utility>
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
  std::string family;  // rows a comparison pairs up (softmax, rfa, ...); empty: the kind
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

  // A block "title" after the table: rows of family `baseline` against rows of family `candidate` with
  // the same (D, causal, threads), one line per L.
  struct Comparison {
    std::string title;
    std::string baseline;
    std::string candidate;
  };
  void add_comparison(Comparison c) { comparisons_.push_back(std::move(c)); }

  // A block "title" for the rows of `family` (left out of the timing table): one line per row, in run
  // order, with counter `key` and then `columns` ({counter, header}); rows with the same note form a
  // group, headed by the note and the first row's `stats` ({counter, label}). Each pair of `below`
  // ({a, b}, column headers) adds a line per group: at which keys counter a is below counter b.
  struct ErrorTable {
    std::string title;
    std::string family;
    std::string key;
    std::vector<std::pair<std::string, std::string>> columns;
    std::vector<std::pair<std::string, std::string>> stats;
    std::vector<std::pair<std::string, std::string>> below;
  };
  void add_error_table(ErrorTable t) { error_tables_.push_back(std::move(t)); }

  void Finalize() override {
    benchmark::ConsoleReporter::Finalize();
    if (runs_.empty()) return;
    std::ostream& out = GetOutputStream();
    char line[512];
    out << "\nSummary\n";
    if (!header_.empty()) out << header_ << "\n";
    if (std::all_of(runs_.begin(), runs_.end(), [&](const Run& run) { return in_error_table(run); })) {
      for (const ErrorTable& t : error_tables_) error_table(out, t);
      out.flush();
      return;
    }
    int kind_width = 14;
    for (const Run& run : runs_)
      if (!in_error_table(run)) kind_width = std::max(kind_width, static_cast<int>(info_of(run).kind.size()));
    std::snprintf(line, sizeof line, "%-*s %6s %4s %6s %3s %10s %8s %6s %7s %5s %9s %9s %8s  %s\n", kind_width, "kind",
                  "L", "D", "causal", "thr", "time_ms", "GFLOP/s", "%peak", "GB/s", "%bw", "rel_err", "extra_MiB",
                  "ws_MiB", "note");
    out << line;
    for (const Run& run : runs_) {
      if (in_error_table(run)) continue;
      const RowInfo info = info_of(run);
      if (run.error_occurred) {
        std::snprintf(line, sizeof line, "%-*s %6lld %4lld %6s %3d  error: %s\n", kind_width, info.kind.c_str(), info.len,
                      info.dim, info.causal ? "yes" : "no", info.threads, run.error_message.c_str());
        out << line;
        continue;
      }
      std::snprintf(line, sizeof line, "%-*s %6lld %4lld %6s %3d %10.3f %8s %6s %7s %5s %9s %9s %8s  %s\n", kind_width,
                    info.kind.c_str(), info.len, info.dim, info.causal ? "yes" : "no", info.threads, ms_per_call(run),
                    counter(run, "FLOP/s", 1e-9, "%.1f").c_str(), counter(run, "%peak", 1, "%.1f").c_str(),
                    counter(run, "B/s", 1e-9, "%.2f").c_str(), counter(run, "%bw", 1, "%.1f").c_str(),
                    counter(run, "rel_err", 1, "%.2e").c_str(), counter(run, "extra_MiB", 1, "%.2f").c_str(),
                    counter(run, "ws_MiB", 1, "%.2f").c_str(), note(run, info).c_str());
      out << line;
    }
    for (const Comparison& c : comparisons_) compare(out, c);
    for (const ErrorTable& t : error_tables_) error_table(out, t);
    out.flush();
  }

 private:
  static RowInfo info_of(const Run& run) {
    const auto it = row_registry().find(run.run_name.function_name);
    RowInfo info;
    if (it != row_registry().end()) info = it->second;
    else info.kind = run.run_name.function_name;
    if (info.family.empty()) info.family = info.kind;
    return info;
  }

  [[nodiscard]] bool in_error_table(const Run& run) const {
    const std::string family = info_of(run).family;
    return std::any_of(error_tables_.begin(), error_tables_.end(),
                       [&](const ErrorTable& t) { return t.family == family; });
  }

  static double ms_per_call(const Run& run) {
    return run.iterations > 0 ? run.real_accumulated_time / static_cast<double>(run.iterations) * 1e3 : 0.0;
  }

  // One comparison block. Per group (D, causal, threads) in which both families have rows: the times,
  // their ratio, the candidate's rel_err; then the crossover, the shortest L from which the candidate
  // stays faster (between two measured lengths, so its bounds are given), and the candidate's time at
  // its longest L over its time at a quarter of that (about 4 when it scales linearly, 16 quadratically).
  void compare(std::ostream& out, const Comparison& c) const {
    struct Point {
      double base_ms = -1, cand_ms = -1, cand_err = -1;
    };
    using Group = std::tuple<long long, bool, int>;  // D, causal, threads
    std::map<Group, std::map<long long, Point>> groups;
    std::string cand_kind = c.candidate;
    for (const Run& run : runs_) {
      if (run.error_occurred) continue;
      const RowInfo info = info_of(run);
      const bool base = info.family == c.baseline;
      if (!base && info.family != c.candidate) continue;
      Point& p = groups[{info.dim, info.causal, info.threads}][info.len];
      if (base) {
        p.base_ms = ms_per_call(run);
      } else {
        cand_kind = info.kind;
        p.cand_ms = ms_per_call(run);
        const auto it = run.counters.find("rel_err");
        if (it != run.counters.end()) p.cand_err = it->second.value;
      }
    }
    char line[256];
    bool titled = false;
    for (const auto& [group, points] : groups) {
      const auto& [dim, causal, threads] = group;
      const bool both = std::any_of(points.begin(), points.end(), [](const auto& e) { return e.second.base_ms >= 0; }) &&
                        std::any_of(points.begin(), points.end(), [](const auto& e) { return e.second.cand_ms >= 0; });
      if (!both) continue;
      if (!titled) {
        out << "\n" << c.title << " (" << cand_kind << "): ms per call; speedup = " << c.baseline << " ms / "
            << c.candidate << " ms; rel_err of " << c.candidate << " against exact softmax (double)\n";
        titled = true;
      }
      std::snprintf(line, sizeof line, "D=%lld causal=%s threads=%d\n", dim, causal ? "yes" : "no", threads);
      out << line;
      std::snprintf(line, sizeof line, "  %6s %11s %11s %8s %9s\n", "L", (c.baseline + "_ms").c_str(),
                    (c.candidate + "_ms").c_str(), "speedup", "rel_err");
      out << line;
      std::vector<long long> common;  // lengths both measured, ascending (std::map order)
      for (const auto& [len, p] : points) {
        const auto cell = [](double v, const char* format) {
          char buf[32];
          if (v < 0) return std::string("-");
          std::snprintf(buf, sizeof buf, format, v);
          return std::string(buf);
        };
        const bool paired = p.base_ms >= 0 && p.cand_ms > 0;
        if (paired) common.push_back(len);
        std::snprintf(line, sizeof line, "  %6lld %11s %11s %8s %9s\n", len, cell(p.base_ms, "%.3f").c_str(),
                      cell(p.cand_ms, "%.3f").c_str(), paired ? cell(p.base_ms / p.cand_ms, "%.2f").c_str() : "-",
                      cell(p.cand_err, "%.2e").c_str());
        out << line;
      }
      out << "  crossover: " << crossover(points, common, c.candidate) << "\n";
      out << "  scaling: " << scaling(points, c.candidate) << "\n";
    }
  }

  template <class Points>
  static std::string crossover(const Points& points, const std::vector<long long>& common, const std::string& who) {
    if (common.empty()) return "no length measured by both";
    const auto faster = [&](long long len) {
      const auto& p = points.at(len);
      return p.cand_ms < p.base_ms;
    };
    // The first index from which every longer common length is faster too.
    std::size_t from = common.size();
    while (from > 0 && faster(common[from - 1])) --from;
    const auto first = std::find_if(common.begin(), common.end(), faster);
    std::string text;
    if (from == common.size()) {
      text = "not reached up to L=" + std::to_string(common.back());
      if (first != common.end())
        text += " (" + who + " faster at L=" + std::to_string(*first) + ", but not at every longer L)";
      return text;
    }
    if (from == 0) return "below " + std::to_string(common.front()) + " (" + who + " faster at every measured L, from " +
                          std::to_string(common.front()) + " on)";
    text = "between L=" + std::to_string(common[from - 1]) + " and L=" + std::to_string(common[from]) + " (" + who +
           " faster from L=" + std::to_string(common[from]) + " on)";
    if (*first != common[from]) text += "; also faster at L=" + std::to_string(*first) + " (noise)";
    return text;
  }

  template <class Points>
  static std::string scaling(const Points& points, const std::string& who) {
    long long longest = -1;
    for (const auto& [len, p] : points)
      if (p.cand_ms > 0) longest = len;
    char buf[160];
    if (longest < 0 || longest % 4 != 0 || points.count(longest / 4) == 0 || points.at(longest / 4).cand_ms <= 0) {
      std::snprintf(buf, sizeof buf, "t_%s(L)/t_%s(L/4) not measured", who.c_str(), who.c_str());
      return buf;
    }
    // 3.6-4.4: linear up to 10%, the most a shared machine's noise and the fixed per-call work allow.
    const double ratio = points.at(longest).cand_ms / points.at(longest / 4).cand_ms;
    std::snprintf(buf, sizeof buf, "t_%s(%lld)/t_%s(%lld) = %.2f (linear in L: about 4; quadratic: 16): %s",
                  who.c_str(), longest, who.c_str(), longest / 4, ratio,
                  ratio >= 3.6 && ratio <= 4.4 ? "linear (within 3.6-4.4)" : "outside 3.6-4.4");
    return buf;
  }

  void error_table(std::ostream& out, const ErrorTable& t) const {
    std::vector<std::string> notes;  // groups in order of first appearance
    for (const Run& run : runs_) {
      const RowInfo info = info_of(run);
      if (info.family == t.family && std::find(notes.begin(), notes.end(), info.note) == notes.end())
        notes.push_back(info.note);
    }
    if (notes.empty()) return;
    out << "\n" << t.title << "\n";
    char cell[48];
    for (const std::string& group : notes) {
      std::string head = group;
      std::string table;
      std::snprintf(cell, sizeof cell, "  %6s", t.key.c_str());
      table += cell;
      for (const auto& [name, header] : t.columns) {
        std::snprintf(cell, sizeof cell, " %10s", header.c_str());
        table += cell;
      }
      table += "\n";
      std::vector<std::string> below(t.below.size());
      std::vector<int> below_of(t.below.size(), 0);
      int rows = 0;
      for (const Run& run : runs_) {
        const RowInfo info = info_of(run);
        if (info.family != t.family || info.note != group) continue;
        if (run.error_occurred) {
          table += "  error: " + run.error_message + "\n";
          continue;
        }
        if (rows++ == 0)
          for (const auto& [name, label] : t.stats) head += "; " + label + " " + counter(run, name.c_str(), 1, "%.3g");
        const std::string key = counter(run, t.key.c_str(), 1, "%.0f");
        std::snprintf(cell, sizeof cell, "  %6s", key.c_str());
        table += cell;
        for (const auto& [name, header] : t.columns) {
          std::snprintf(cell, sizeof cell, " %10s", counter(run, name.c_str(), 1, "%.2e").c_str());
          table += cell;
        }
        table += "\n";
        for (std::size_t i = 0; i < t.below.size(); ++i) {
          const auto a = run.counters.find(t.below[i].first), b = run.counters.find(t.below[i].second);
          if (a == run.counters.end() || b == run.counters.end()) continue;
          ++below_of[i];
          if (a->second.value < b->second.value) below[i] += (below[i].empty() ? "" : ", ") + key;
        }
      }
      out << head << "\n" << table;
      for (std::size_t i = 0; i < t.below.size(); ++i) {
        if (below_of[i] == 0) continue;
        const auto header = [&](const std::string& name) {
          for (const auto& [n, h] : t.columns)
            if (n == name) return h;
          return name;
        };
        out << "  " << header(t.below[i].first) << " below " << header(t.below[i].second) << " at " << t.key << " = "
            << (below[i].empty() ? "none" : below[i]) << " (of " << below_of[i] << ")\n";
      }
    }
  }

  // The row's note, plus tokens per second for decode rows that count them, and heap allocations per
  // call when a steady-state call allocated at all.
  static std::string note(const Run& run, const RowInfo& info) {
    std::string text = info.note;
    if (const auto tok = run.counters.find("tok/s"); tok != run.counters.end()) {
      char buf[48];
      std::snprintf(buf, sizeof buf, "%stok/s=%.4g", text.empty() ? "" : "; ", tok->second.value);
      text += buf;
    }
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
  std::vector<Comparison> comparisons_;
  std::vector<ErrorTable> error_tables_;
};

}  // namespace effattn_bench
