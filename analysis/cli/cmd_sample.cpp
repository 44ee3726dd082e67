#include <trainscope/analysis/polyline_sampling.h>
#include <trainscope/format/run_reader.h>

#include <cmath>
#include <cstdio>

#include "cli.h"

namespace trainscope::cli {
namespace {

constexpr const char* kHelp =
    R"(usage: trainscope sample RUN --layer NAME --quantity Q --count K [--stat S] [--steps A:B]
                        [--seed N] [--clusters K|auto] [--range quantile|extent|LO:HI] [--json]

Chooses K of a layer's neurons whose time series, drawn as lines on a chart, show the layer without clutter: the
chosen lines are spread out (blue-noise sampling), dense bundles keep their share and neurons that behave unlike the
rest (outliers) are kept. The order is progressive: the first k of the list are themselves a good sample for any k,
and neurons with NaN or Inf values come first.
  --layer NAME     a layer by its module's dotted path (e.g. encoder.fc1); 'trainscope info' lists them
  --quantity Q     activation, activation_grad, weight, weight_grad, bias, bias_grad
  --stat S         the per-neuron statistic drawn: mean (default), std, min, max, norm, zero_fraction, ...
  --steps A:B      only steps A..B (inclusive; A: or :B leave a side open); default all
  --count K        how many neurons to choose (at most the layer's neurons)
  --seed N         the sample depends only on the data, the options and this seed (default 1)
  --clusters K     also group all neurons into K clusters (k-means) with per-step bands; 'auto' chooses K
  --range R        the chart's value range: quantile (default; robust to a few exploding neurons), extent (min..max)
                   or LO:HI as the view shows it
  --json           {"neurons": [{"neuron": i, "outlier_score": s}, ...], ...}; outlier scores lie in [0, 1]
)";

const format::Layer& find_layer(const format::RunMetadata& m, const std::string& name) {
  if (const format::Layer* layer = m.find_layer(name)) return *layer;
  std::string known;
  size_t listed = 0;
  for (const auto& l : m.layers) {
    if (!l.is_leaf) continue;
    if (listed == 12) {
      known += ", ...";
      break;
    }
    known += (listed++ ? ", " : "") + format::RunMetadata::display_name(l);
  }
  throw UsageError("--layer: no layer named '" + name + "' in this run; layers: " + known);
}

double parse_number(const std::string& option, const std::string& text) {
  try {
    size_t used = 0;
    const double v = std::stod(text, &used);
    if (used == text.size() && std::isfinite(v)) return v;
  } catch (const std::exception&) {
  }
  throw UsageError(option + ": '" + text + "' is not a number");
}

analysis::ChartOptions parse_range(const std::string& text) {
  analysis::ChartOptions chart;
  if (text == "quantile") return chart;
  if (text == "extent") {
    chart.range = analysis::ValueRange::Extent;
    return chart;
  }
  const size_t colon = text.find(':', 1);
  if (colon == std::string::npos) throw UsageError("--range: expected quantile, extent or LO:HI, got '" + text + "'");
  chart.range = analysis::ValueRange::Fixed;
  chart.low = parse_number("--range", text.substr(0, colon));
  chart.high = parse_number("--range", text.substr(colon + 1));
  if (!(chart.high > chart.low)) throw UsageError("--range: HI must be above LO in '" + text + "'");
  return chart;
}

// Scores rounded to 4 decimals: stable text for golden files, finer than any chart shows.
double rounded(float score) {
  return std::round(double(score) * 1e4) / 1e4;
}

std::vector<double> to_doubles(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

}  // namespace

int run_sample(int argc, char** argv) {
  Arguments args("sample", argc, argv,
                 {"--layer", "--quantity", "--stat", "--steps", "--count", "--seed", "--clusters", "--range"},
                 {"--json"});
  if (args.help()) {
    std::printf("%s", kHelp);
    return 0;
  }
  // Check every argument before opening the recording.
  const std::string run = args.run_path();
  const auto layer_name = args.value("--layer");
  if (!layer_name) throw UsageError("--layer NAME is required (see --help)");
  const auto q = args.value("--quantity");
  if (!q)
    throw UsageError("--quantity is required (activation, activation_grad, weight, weight_grad, bias, bias_grad)");
  const auto quantity = format::parse_quantity(*q);
  if (!quantity)
    throw UsageError("--quantity: unknown quantity '" + *q +
                     "' (activation, activation_grad, weight, weight_grad, bias, bias_grad)");
  format::Statistic statistic = format::Statistic::Mean;
  if (auto s = args.value("--stat")) {
    const auto parsed = format::parse_statistic(*s);
    if (!parsed)
      throw UsageError("--stat: unknown statistic '" + *s +
                       "' (mean, std, min, max, norm, zero_fraction, nan_count, inf_count)");
    statistic = *parsed;
  }
  int64_t first = INT64_MIN, last = INT64_MAX;
  if (auto steps = args.value("--steps")) std::tie(first, last) = parse_step_range("--steps", *steps);
  const auto count_text = args.value("--count");
  if (!count_text) throw UsageError("--count K is required (see --help)");
  const int64_t count = parse_integer("--count", *count_text);
  if (count < 1) throw UsageError("--count: must be at least 1, got " + *count_text);
  analysis::SamplerOptions options;
  options.count = size_t(count);
  if (auto seed = args.value("--seed")) options.seed = uint64_t(parse_integer("--seed", *seed));
  if (auto range = args.value("--range")) options.chart = parse_range(*range);
  std::optional<int> clusters;
  if (auto c = args.value("--clusters")) {
    if (*c == "auto") {
      clusters = 0;
    } else {
      const int64_t k = parse_integer("--clusters", *c);
      if (k < 1 || k > 64) throw UsageError("--clusters: expected 1..64 or auto, got " + *c);
      clusters = int(k);
    }
  }
  const bool json = args.has("--json");

  format::RunReader reader(run);
  const format::Layer& layer = find_layer(reader.metadata(), *layer_name);
  const auto series = reader.read_neuron_series(layer.id, *quantity, statistic, first, last);
  if (!series || series->steps.empty() || series->neuron_count == 0)
    throw UsageError("layer '" + format::RunMetadata::display_name(layer) + "' has no per-neuron " +
                     std::string(format::quantity_name(*quantity)) + " " +
                     std::string(format::statistic_name(statistic)) + " recorded" +
                     (first > INT64_MIN || last < INT64_MAX ? " in the requested steps" : ""));

  const analysis::PolylineSet set = analysis::PolylineSet::from(*series);
  const analysis::PolylineFeatures features =
      analysis::reduce_polylines(set, options.chart, options.buckets, options.threads);
  const analysis::PolylineSample sample = analysis::BlueNoisePolylineSampler(options).sample(features);
  std::optional<analysis::PolylineClustering> clustering;
  if (clusters) {
    analysis::ClusterOptions co;
    co.clusters = *clusters;
    co.seed = options.seed;
    clustering = analysis::cluster_polylines(set, features, sample.outlier_score, co);
  }
  size_t outliers = 0;
  for (float s : sample.outlier_score) outliers += s >= analysis::kOutlierScoreThreshold;

  if (json) {
    analysis::JsonWriter w;
    w.begin_object().key("neurons").begin_array();
    for (uint32_t i : sample.order)
      w.begin_object()
          .key("neuron")
          .value(uint64_t(i))
          .key("outlier_score")
          .value(rounded(sample.outlier_score[i]))
          .end_object();
    w.end_array();
    w.key("layer").value(layer.name).key("quantity").value(format::quantity_name(*quantity));
    w.key("statistic").value(format::statistic_name(statistic));
    w.key("steps").value(std::vector<int64_t>{series->steps.front(), series->steps.back()});
    w.key("points").value(uint64_t(series->steps.size())).key("lines").value(uint64_t(set.lines));
    w.key("value_range").value(std::vector<double>{sample.low, sample.high});
    w.key("non_finite_lines").value(uint64_t(sample.non_finite_lines)).key("outlier_lines").value(uint64_t(outliers));
    if (clustering) {
      w.key("clusters").begin_array();
      for (size_t c = 0; c < clustering->sizes.size(); ++c) {
        const auto& band = clustering->bands[c];
        w.begin_object().key("size").value(clustering->sizes[c]).key("outliers").value(clustering->outliers[c]);
        w.key("representative").value(uint64_t(clustering->representative[c]));
        w.key("mean").value(to_doubles(band.mean)).key("min").value(to_doubles(band.min));
        w.key("max").value(to_doubles(band.max)).key("q10").value(to_doubles(band.q10));
        w.key("q90").value(to_doubles(band.q90)).end_object();
      }
      w.end_array();
      std::vector<int64_t> labels(clustering->labels.begin(), clustering->labels.end());
      w.key("labels").value(labels);
    }
    w.end_object();
    std::printf("%s\n", w.str().c_str());
    return 0;
  }

  std::printf("layer %s, %s %s, steps %lld..%lld (%zu points), %s neurons\n",
              format::RunMetadata::display_name(layer).c_str(), std::string(format::quantity_name(*quantity)).c_str(),
              std::string(format::statistic_name(statistic)).c_str(), (long long)series->steps.front(),
              (long long)series->steps.back(), series->steps.size(), format_count(set.lines).c_str());
  std::printf("chart value range %s .. %s; %s outliers (score >= %.1f), %s with NaN/Inf\n",
              format_double(sample.low).c_str(), format_double(sample.high).c_str(), format_count(outliers).c_str(),
              double(analysis::kOutlierScoreThreshold), format_count(sample.non_finite_lines).c_str());
  if (size_t(count) > set.lines)
    std::printf("(--count %lld is more than the layer's %zu neurons: all of them, in progressive order)\n",
                (long long)count, set.lines);
  std::printf("\n%6s %8s %13s\n", "rank", "neuron", "outlier_score");
  for (size_t r = 0; r < sample.order.size(); ++r) {
    const uint32_t i = sample.order[r];
    std::printf("%6zu %8u %13.4f%s\n", r + 1, i, rounded(sample.outlier_score[i]),
                r < sample.non_finite_lines ? "  NaN/Inf" : "");
  }
  if (clustering) {
    std::printf("\n%d clusters (k-means on the chart-normalised lines):\n", int(clustering->sizes.size()));
    std::printf("%8s %10s %9s %15s\n", "cluster", "neurons", "outliers", "representative");
    for (size_t c = 0; c < clustering->sizes.size(); ++c)
      std::printf("%8zu %10s %9s %15u\n", c, format_count(clustering->sizes[c]).c_str(),
                  format_count(clustering->outliers[c]).c_str(), clustering->representative[c]);
  }
  return 0;
}

}  // namespace trainscope::cli
