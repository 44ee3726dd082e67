// The open recording, as every view sees it: the reader, the layer graph, the scalars and the anomaly report.
// All reading happens on one background thread owned by the document (the reader is not thread-safe, and one
// thread keeps requests in order); results come back to the GUI thread, so the window never freezes.
#pragma once

#include <trainscope/analysis/anomaly_report.h>
#include <trainscope/analysis/layer_graph.h>
#include <trainscope/format/run_reader.h>

#include <QObject>
#include <QPointer>
#include <QString>
#include <QStringList>
#include <QThreadPool>
#include <QTimer>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

namespace trainscope::viewer {

struct DocumentOptions {
  size_t cache_bytes = size_t(256) << 20;  // the reader's decoded-chunk cache: the viewer's memory budget
  int follow_interval_ms = 1000;           // how often a run still being written is polled
  int reanalyze_interval_ms = 5000;        // at most this often, the anomaly analysis is redone for a growing run
};

class RunDocument : public QObject {
  Q_OBJECT

 public:
  explicit RunDocument(DocumentOptions options = {}, QObject* parent = nullptr);
  ~RunDocument() override;  // waits for the background thread

  // Opens a run in the background: progress(), then opened() once scalars and the layer graph are read (enough for a
  // first paint; this reads only the index and the scalars), snapshots_ready() once the steps with layer data are
  // known, then report_ready() once the anomaly analysis is done. open_failed() carries a sentence naming the
  // path. Opening another run closes the current one.
  void open(const QString& run_dir);
  bool is_open() const { return reader_ != nullptr; }
  QString path() const { return path_; }

  // Valid after opened(); owned by the GUI thread.
  const format::RunMetadata& metadata() const { return metadata_; }
  const analysis::LayerGraph& graph() const { return *graph_; }
  const std::vector<format::ScalarSeries>& scalars() const { return scalars_; }
  // Steps with layer data, sorted; empty until snapshots_ready().
  const std::vector<int64_t>& snapshot_steps() const { return snapshot_steps_; }
  int64_t first_step() const { return first_step_; }
  int64_t last_step() const { return last_step_; }
  bool complete() const { return complete_; }
  // What is wrong with the files (torn tail, corrupt chunk, ...), one sentence each; empty for a clean run.
  const QStringList& notices() const { return notices_; }
  // Valid after report_ready().
  bool has_report() const { return report_.has_value(); }
  const analysis::AnomalyReport& report() const { return *report_; }

  // The snapshot step nearest to `step` (the focus snaps to steps that have layer data); `step` if there are none.
  int64_t nearest_snapshot_step(int64_t step) const;

  // Runs `work` on the reader thread, after everything queued before it, and hands its result to `done` on the GUI
  // thread, unless `context` was destroyed meanwhile. An exception in `work` goes to `failed` (or is reported by
  // error()). Views use a generation counter of their own to drop results that a newer request superseded.
  template <class Result>
  void run(QObject* context, std::function<Result(format::RunReader&)> work, std::function<void(Result)> done,
           std::function<void(QString)> failed = {});

  // Processes events until no background work is pending and every result was delivered: for screenshots, tests
  // and benchmarks.
  void wait_idle();
  bool busy() const { return pending_.load() > 0; }

  // Follows a run still being written: polls for new chunks and emits grew() when steps arrive.
  void set_follow(bool follow);
  bool follow() const { return follow_timer_.isActive(); }

  format::ReaderOptions reader_options() const { return {options_.cache_bytes}; }

 signals:
  void progress(const QString& stage, double fraction);  // fraction in [0, 1]
  void opened();
  void open_failed(const QString& message);
  void snapshots_ready();
  void report_ready();
  void grew();
  void error(const QString& message);  // a background request failed and had no handler

 public:
  // What the reader thread reads on open and on growth: everything the GUI thread keeps a copy of.
  struct Contents {
    std::vector<format::ScalarSeries> scalars;
    std::vector<int64_t> snapshot_steps;
    int64_t first_step = 0, last_step = 0;
    bool complete = true;
    QStringList notices;
  };

 private:
  void apply(Contents&& contents);
  void post(std::function<void()> task);
  void deliver(QObject* context, std::function<void()> on_gui_thread);
  void poll_for_growth();
  void start_analysis();
  void load_snapshot_steps();

  DocumentOptions options_;
  QThreadPool pool_;  // exactly one thread
  std::atomic<int> pending_{0};
  uint64_t generation_ = 0;  // bumped on open: results of a previous run are dropped

  QString path_;
  std::shared_ptr<format::RunReader> reader_;
  format::RunMetadata metadata_;
  std::unique_ptr<analysis::LayerGraph> graph_;
  std::vector<format::ScalarSeries> scalars_;
  std::vector<int64_t> snapshot_steps_;
  int64_t first_step_ = 0, last_step_ = 0;
  bool complete_ = true;
  QStringList notices_;
  std::optional<analysis::AnomalyReport> report_;
  bool analysis_running_ = false;
  qint64 last_analysis_ms_ = 0;
  QTimer follow_timer_;
};

template <class Result>
void RunDocument::run(QObject* context, std::function<Result(format::RunReader&)> work,
                      std::function<void(Result)> done, std::function<void(QString)> failed) {
  if (!reader_) return;
  auto reader = reader_;
  const uint64_t generation = generation_;
  QPointer<QObject> guard(context);
  pending_++;
  post([this, reader, generation, guard, work = std::move(work), done = std::move(done),
        failed = std::move(failed)]() mutable {
    std::shared_ptr<Result> result;
    QString message;
    try {
      result = std::make_shared<Result>(work(*reader));
    } catch (const std::exception& e) {
      message = QString::fromStdString(e.what());
    }
    deliver(this, [this, generation, guard, result, message, done = std::move(done), failed = std::move(failed)] {
      if (generation == generation_ && guard) {
        if (result)
          done(std::move(*result));
        else if (failed)
          failed(message);
        else
          emit error(message);
      }
      pending_--;
    });
  });
}

}  // namespace trainscope::viewer
