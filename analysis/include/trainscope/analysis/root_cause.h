// Which layer, which quantity, from which step: ranks the layers by how likely a failure starts there.
//
// For an abnormal step s, every (layer, quantity) series is compared with its own normal range: the robust
// median and spread (1.4826 * MAD) of log10 of its largest magnitude and of its RMS over the first
// `baseline_points` recorded steps of the window [s - lookback_steps, s + lookahead_steps]. The series has *departed*
// from the first step at which it turns NaN/Inf, or at which one of those robust z-scores exceeds `departure_z` and
// stays above departure_z / 2 up to the window's end. Layers whose rules fire (dead units, saturation, ...) around s
// are suspects as well.
//
// Suspects are ordered by (0) the kind of evidence: NaN/Inf, then departures, then rules that began within
// `recent_steps` before s, then older rule hits (chronic conditions); then (1) the first step, (2) forward
// quantities (activations, weights, biases) before
// gradients, (3) for forward quantities the forward order of the layer graph, for gradients the backward order.
// So a NaN that starts in one layer and spreads to every later layer (and, through backward, to every gradient)
// is blamed on the layer where it starts.
#pragma once

#include <trainscope/analysis/layer_graph.h>
#include <trainscope/analysis/layer_rules.h>
#include <trainscope/analysis/summary_table.h>

#include <memory>
#include <string>
#include <vector>

namespace trainscope::analysis {

struct RootCauseParams {
  int64_t lookback_steps = 1000;
  int64_t lookahead_steps = 10;  // layer data is captured every few steps: evidence may follow the scalar's anomaly
  int64_t recent_steps = 50;     // a rule that began at most this long before the anomaly is "recent", not chronic
  size_t baseline_points = 20;
  size_t min_baseline_points = 4;
  double departure_z = 6.0;
  size_t max_suspects = 10;
};

struct Suspect {
  uint32_t layer_id = 0;
  format::Quantity quantity = format::Quantity::Activation;
  int64_t first_step = 0;
  std::string rule;  // "non_finite", "departure", or a layer rule's name
  double score = 0;  // in (0, 1]: strength of the evidence, discounted by rank
  std::string evidence;
};

std::vector<Suspect> rank_suspects(const LayerGraph& graph, const SummaryTable& table,
                                   const std::vector<RuleHit>& rule_hits, int64_t anomaly_step,
                                   const RootCauseParams& params = {});

// The same ranking for several anomalies at once, in one pass over the run's summary chunks in step order
// (RunReader::for_each_summary_chunk, chunks as LayerRuleStream accepts them), without a table of the whole run:
// each series' departure is followed as its records in each anomaly's window stream by. suspects(k, hits) equals
// rank_suspects(graph, table, hits, anomaly_steps[k], params) on the table of the same records. A stream fed only
// the chunks around some anomalies (a second, shorter pass) takes the order of the run's series from `order_of`,
// an earlier stream that saw every chunk.
//
// The anomalies may also be named once some chunks have gone by (follow(), when they are found beside the pass):
// a window that began before then is not followed at all (complete(k) is false), and needs a pass of its own.
class DepartureStream {
 public:
  DepartureStream(const LayerGraph& graph, std::vector<int64_t> anomaly_steps, const RootCauseParams& params = {},
                  const DepartureStream* order_of = nullptr);
  ~DepartureStream();
  DepartureStream(const DepartureStream&) = delete;
  DepartureStream& operator=(const DepartureStream&) = delete;

  // Replaces the anomalies whose windows are followed, from the next chunk on.
  void follow(std::vector<int64_t> anomaly_steps);
  void add(const format::SummaryColumns& chunk);
  bool complete(size_t anomaly) const;  // its whole window was seen: suspects() may be asked
  std::vector<Suspect> suspects(size_t anomaly, const std::vector<RuleHit>& rule_hits) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trainscope::analysis
