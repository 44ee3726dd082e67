#include <trainscope/format/run_reader.h>

#include <cstdio>
#include <map>

#include "cli.h"

namespace trainscope::cli {
namespace {

constexpr const char* kHelp = R"(usage: trainscope export RUN --scalars [--json] [--steps A:B] [-o FILE]
       trainscope export RUN --layer NAME --quantity Q --stat S [--json] [--steps A:B] [-o FILE]
       trainscope export RUN --layer NAME --quantity Q --summary [--json] [--steps A:B] [-o FILE]

Writes recorded data as CSV (a header row, the step first) or JSON, to standard output or FILE.
  --scalars       every scalar (loss terms, accuracy, learning rate, ...) per step; empty cell where not logged
  --layer NAME    a layer by its module's dotted path, as named_modules() names it (e.g. encoder.fc1);
                  'trainscope info' and 'trainscope export RUN --layers' list them
  --quantity Q    activation, activation_grad, weight, weight_grad, bias, bias_grad
  --stat S        per-neuron statistic: mean, std, min, max, norm, zero_fraction, nan_count, inf_count;
                  one column per neuron (n0, n1, ...)
  --summary       the layer-level statistics over the whole tensor instead, one column per statistic
  --layers        list the layers (id, name, kind, neurons, parent) as CSV
  --steps A:B     only steps A..B (inclusive; A: or :B leave a side open)
  --json          JSON instead of CSV; NaN and Inf are written as the strings "NaN", "Infinity", "-Infinity"
  -o FILE         write to FILE instead of standard output
)";

class Output {
 public:
  explicit Output(const std::optional<std::string>& path) : path_(path.value_or("")) {
    if (!path) return;
    file_ = std::fopen(path->c_str(), "w");
    if (!file_) throw UsageError("-o " + *path + ": cannot open for writing");
  }
  ~Output() {
    if (file_ && file_ != stdout) std::fclose(file_);
  }
  void put(const std::string& s) { std::fwrite(s.data(), 1, s.size(), file_); }
  void close() {
    if (file_ != stdout && std::fclose(file_) != 0) throw UsageError("-o " + path_ + ": write failed");
    file_ = stdout;
  }

 private:
  std::string path_;
  std::FILE* file_ = stdout;
};

const format::Layer& find_layer(const format::RunMetadata& m, const std::string& name) {
  if (const format::Layer* layer = m.find_layer(name)) return *layer;
  std::string known;
  size_t listed = 0;
  for (const auto& l : m.layers) {
    if (listed == 12) {
      known += ", ...";
      break;
    }
    known += (listed++ ? ", " : "") + format::RunMetadata::display_name(l);
  }
  throw UsageError("--layer: no layer named '" + name + "' in this run; layers: " + known);
}

void export_scalars(format::RunReader& reader, int64_t first, int64_t last, bool json, Output& out) {
  const auto series = reader.read_scalars(first, last);
  std::map<int64_t, std::vector<std::optional<double>>> rows;
  for (size_t c = 0; c < series.size(); ++c)
    for (size_t i = 0; i < series[c].steps.size(); ++i) {
      auto& row = rows[series[c].steps[i]];
      row.resize(series.size());
      row[c] = series[c].values[i];
    }
  if (json) {
    out.put("{\"steps\": [");
    size_t i = 0;
    for (const auto& [step, row] : rows) out.put((i++ ? ", " : "") + std::to_string(step));
    out.put("],\n \"scalars\": {");
    for (size_t c = 0; c < series.size(); ++c) {
      out.put(std::string(c ? ",\n  " : "\n  ") + "\"" + json_escape(series[c].name) + "\": [");
      size_t j = 0;
      for (const auto& [step, row] : rows) {
        const auto& v = c < row.size() ? row[c] : std::nullopt;
        out.put(std::string(j++ ? ", " : "") + (v ? json_number(*v) : "null"));
      }
      out.put("]");
    }
    out.put("\n }\n}\n");
    return;
  }
  out.put("step");
  for (const auto& s : series) out.put("," + s.name);
  out.put("\n");
  for (const auto& [step, row] : rows) {
    std::string line = std::to_string(step);
    for (size_t c = 0; c < series.size(); ++c) {
      line += ',';
      if (c < row.size() && row[c]) line += format_double(*row[c]);
    }
    out.put(line + "\n");
  }
}

void export_neurons(format::RunReader& reader, const format::Layer& layer, format::Quantity q, format::Statistic s,
                    int64_t first, int64_t last, bool json, Output& out) {
  const auto series = reader.read_neuron_series(layer.id, q, s, first, last);
  if (!series)
    throw UsageError("layer '" + format::RunMetadata::display_name(layer) + "' has no per-neuron " +
                     std::string(format::quantity_name(q)) + " " + std::string(format::statistic_name(s)) +
                     " recorded" + (first > INT64_MIN || last < INT64_MAX ? " in the requested steps" : ""));
  const uint32_t n = series->neuron_count;
  if (json) {
    out.put("{\"layer\": \"" + json_escape(layer.name) + "\", \"quantity\": \"" +
            std::string(format::quantity_name(q)) + "\", \"statistic\": \"" + std::string(format::statistic_name(s)) +
            "\", \"neurons\": " + std::to_string(n) + ",\n \"rows\": [");
    for (size_t r = 0; r < series->steps.size(); ++r) {
      std::string line =
          std::string(r ? ",\n  " : "\n  ") + "{\"step\": " + std::to_string(series->steps[r]) + ", \"values\": [";
      for (uint32_t i = 0; i < n; ++i) line += (i ? ", " : "") + json_number(series->values[r * n + i]);
      out.put(line + "]}");
    }
    out.put("\n ]\n}\n");
    return;
  }
  std::string header = "step";
  for (uint32_t i = 0; i < n; ++i) header += ",n" + std::to_string(i);
  out.put(header + "\n");
  for (size_t r = 0; r < series->steps.size(); ++r) {
    std::string line = std::to_string(series->steps[r]);
    for (uint32_t i = 0; i < n; ++i) line += "," + format_float(series->values[r * n + i]);
    out.put(line + "\n");
  }
}

void export_summary(format::RunReader& reader, const format::Layer& layer, format::Quantity q, int64_t first,
                    int64_t last, bool json, Output& out) {
  const auto points = reader.read_summaries(layer.id, q, first, last);
  if (points.empty())
    throw UsageError("layer '" + format::RunMetadata::display_name(layer) + "' has no " +
                     std::string(format::quantity_name(q)) + " summaries recorded");
  if (json)
    out.put("{\"layer\": \"" + json_escape(layer.name) + "\", \"quantity\": \"" +
            std::string(format::quantity_name(q)) + "\",\n \"rows\": [");
  else {
    std::string header = "step";
    for (auto s : format::all_statistics()) header += "," + std::string(format::statistic_name(s));
    out.put(header + ",numel\n");
  }
  for (size_t r = 0; r < points.size(); ++r) {
    const auto& p = points[r];
    if (json) {
      std::string line = std::string(r ? ",\n  " : "\n  ") + "{\"step\": " + std::to_string(p.step);
      for (auto s : format::all_statistics())
        line += ", \"" + std::string(format::statistic_name(s)) + "\": " + json_number(p.summary.get(s));
      out.put(line + ", \"numel\": " + json_number(p.summary.numel) + "}");
    } else {
      std::string line = std::to_string(p.step);
      for (auto s : format::all_statistics()) line += "," + format_double(p.summary.get(s));
      out.put(line + "," + format_double(p.summary.numel) + "\n");
    }
  }
  if (json) out.put("\n ]\n}\n");
}

void export_layers(const format::RunMetadata& m, Output& out) {
  out.put("id,name,kind,neurons,parent,leaf\n");
  for (const auto& l : m.layers)
    out.put(std::to_string(l.id) + "," + format::RunMetadata::display_name(l) + "," + l.kind + "," +
            std::to_string(l.neuron_count) + "," + (l.parent_id ? std::to_string(*l.parent_id) : "") + "," +
            (l.is_leaf ? "1" : "0") + "\n");
}

}  // namespace

int run_export(int argc, char** argv) {
  Arguments args("export", argc, argv, {"--layer", "--quantity", "--stat", "--steps", "-o", "--output"},
                 {"--scalars", "--summary", "--json", "--layers"});
  if (args.help()) {
    std::printf("%s", kHelp);
    return 0;
  }
  const std::string run = args.run_path();
  int64_t first = INT64_MIN, last = INT64_MAX;
  if (auto steps = args.value("--steps")) std::tie(first, last) = parse_step_range("--steps", *steps);
  const bool json = args.has("--json");
  const int modes = int(args.has("--scalars")) + int(args.has("--layer")) + int(args.has("--layers"));
  if (modes != 1) throw UsageError("choose one of --scalars, --layer NAME or --layers (see --help)");

  // Check every argument before touching the recording or the output file.
  std::optional<format::Quantity> quantity;
  std::optional<format::Statistic> statistic;
  if (args.has("--layer")) {
    const auto q = args.value("--quantity");
    if (!q)
      throw UsageError("--layer needs --quantity (activation, activation_grad, weight, weight_grad, bias, bias_grad)");
    quantity = format::parse_quantity(*q);
    if (!quantity)
      throw UsageError("--quantity: unknown quantity '" + *q +
                       "' (activation, activation_grad, weight, weight_grad, bias, bias_grad)");
    if (args.has("--summary") == args.has("--stat")) throw UsageError("--layer needs either --stat S or --summary");
    if (auto s = args.value("--stat")) {
      statistic = format::parse_statistic(*s);
      if (!statistic)
        throw UsageError("--stat: unknown statistic '" + *s +
                         "' (mean, std, min, max, norm, zero_fraction, nan_count, inf_count)");
    }
  }
  format::RunReader reader(run);
  std::optional<std::string> path = args.value("-o");
  if (!path) path = args.value("--output");
  const format::Layer* layer = nullptr;
  if (args.has("--layer")) layer = &find_layer(reader.metadata(), *args.value("--layer"));

  Output out(path);
  if (args.has("--scalars"))
    export_scalars(reader, first, last, json, out);
  else if (args.has("--layers"))
    export_layers(reader.metadata(), out);
  else if (statistic)
    export_neurons(reader, *layer, *quantity, *statistic, first, last, json, out);
  else
    export_summary(reader, *layer, *quantity, first, last, json, out);
  out.close();
  return 0;
}

}  // namespace trainscope::cli
