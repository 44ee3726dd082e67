#include "run_document.h"

#include <QCoreApplication>
#include <QDateTime>
#include <QEventLoop>
#include <QRunnable>

#include <algorithm>
#include <filesystem>

namespace trainscope::viewer {
namespace {

// `with_snapshot_steps`: finding them decodes every layer-summary chunk, which is a scan on a large run; the first
// paint does not wait for it.
RunDocument::Contents read_contents(format::RunReader& reader, bool with_snapshot_steps) {
  RunDocument::Contents c;
  c.scalars = reader.read_scalars();
  if (with_snapshot_steps) c.snapshot_steps = reader.snapshot_steps();
  c.first_step = reader.first_step();
  c.last_step = reader.last_step();
  c.complete = reader.complete();
  for (const auto& problem : reader.problems()) c.notices << QString::fromStdString(problem.message);
  return c;
}

// A directory of several recordings (the GAN example writes gen/ and disc/): name them, so the user knows what to open.
QString runs_inside(const QString& dir) {
  QStringList runs;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir.toStdString(), ec)) {
    if (!entry.is_directory()) continue;
    for (const auto& file : std::filesystem::directory_iterator(entry.path(), ec))
      if (file.path().extension() == ".tss" || file.path().filename().string().rfind("rank-", 0) == 0) {
        runs << QString::fromStdString(entry.path().filename().string());
        break;
      }
  }
  runs.sort();
  if (runs.isEmpty()) return {};
  return QObject::tr(" It holds the recordings %1: open one of them.").arg(runs.join(QStringLiteral(", ")));
}

}  // namespace

RunDocument::RunDocument(DocumentOptions options, QObject* parent) : QObject(parent), options_(options) {
  pool_.setMaxThreadCount(1);
  pool_.setExpiryTimeout(-1);
  follow_timer_.setInterval(options_.follow_interval_ms);
  connect(&follow_timer_, &QTimer::timeout, this, &RunDocument::poll_for_growth);
}

RunDocument::~RunDocument() {
  follow_timer_.stop();
  pool_.waitForDone();
}

void RunDocument::post(std::function<void()> task) {
  pool_.start(std::move(task));
}

void RunDocument::deliver(QObject* context, std::function<void()> on_gui_thread) {
  QMetaObject::invokeMethod(context, std::move(on_gui_thread), Qt::QueuedConnection);
}

void RunDocument::wait_idle() {
  while (pending_.load() > 0) QCoreApplication::processEvents(QEventLoop::AllEvents, 5);
  QCoreApplication::processEvents();
}

void RunDocument::open(const QString& run_dir) {
  ++generation_;
  const uint64_t generation = generation_;
  const QString path = run_dir;
  const format::ReaderOptions reader_options = this->reader_options();
  pending_++;
  emit progress(tr("Opening %1").arg(path), 0.0);
  post([this, generation, path, reader_options] {
    std::shared_ptr<format::RunReader> reader;
    std::shared_ptr<Contents> contents;
    QString message;
    try {
      reader = std::make_shared<format::RunReader>(path.toStdString(), reader_options);
      emit progress(tr("Reading scalars"), 0.05);
      contents = std::make_shared<Contents>(read_contents(*reader, false));
    } catch (const std::exception& e) {
      message = QString::fromStdString(e.what()) + runs_inside(path);
      reader.reset();
    }
    deliver(this, [this, generation, path, reader, contents, message] {
      pending_--;
      if (generation != generation_) return;
      if (!reader) {
        emit open_failed(message.isEmpty() ? tr("%1 could not be opened.").arg(path) : message);
        return;
      }
      follow_timer_.stop();
      path_ = path;
      reader_ = reader;
      metadata_ = reader_->metadata();  // a copy: a live run's refresh rewrites the reader's on the reader thread
      graph_ = std::make_unique<analysis::LayerGraph>(metadata_);
      snapshot_steps_.clear();  // found after the first paint (load_snapshot_steps)
      apply(std::move(*contents));
      report_.reset();
      emit opened();  // the views queue what they need for a first paint
      load_snapshot_steps();
      start_analysis();
      // A run without its footers is either still being written or torn by a crash: follow it either way; a torn
      // run simply never grows.
      if (!complete_) set_follow(true);
    });
  });
}

void RunDocument::start_analysis() {
  if (analysis_running_) return;
  analysis_running_ = true;
  last_analysis_ms_ = QDateTime::currentMSecsSinceEpoch();
  run<analysis::AnomalyReport>(
      this,
      [this](format::RunReader& reader) {
        return analysis::analyze_run(reader, {}, [this](const char* stage, double fraction) {
          emit progress(tr("Analysing: %1").arg(QString::fromUtf8(stage)), 0.1 + 0.9 * fraction);
        });
      },
      [this](analysis::AnomalyReport report) {
        analysis_running_ = false;
        report_ = std::move(report);
        emit progress(QString(), 1.0);
        emit report_ready();
      },
      [this](QString message) {
        analysis_running_ = false;
        notices_ << tr("The anomaly analysis failed: %1").arg(message);
        emit progress(QString(), 1.0);
        emit error(message);
      });
}

void RunDocument::apply(Contents&& contents) {
  scalars_ = std::move(contents.scalars);
  if (!contents.snapshot_steps.empty()) snapshot_steps_ = std::move(contents.snapshot_steps);
  first_step_ = contents.first_step;
  last_step_ = contents.last_step;
  complete_ = contents.complete;
  notices_ = contents.notices;
}

void RunDocument::load_snapshot_steps() {
  run<std::vector<int64_t>>(
      this, [](format::RunReader& reader) { return reader.snapshot_steps(); },
      [this](std::vector<int64_t> steps) {
        snapshot_steps_ = std::move(steps);
        emit snapshots_ready();
      });
}

void RunDocument::set_follow(bool follow) {
  if (follow && reader_)
    follow_timer_.start();
  else
    follow_timer_.stop();
}

void RunDocument::poll_for_growth() {
  if (!reader_ || pending_.load() > 0) return;  // never queue polls behind real work
  run<std::optional<Contents>>(
      this,
      [was_complete = complete_](format::RunReader& reader) -> std::optional<Contents> {
        // The closing footer adds no chunk but completes the run.
        if (!reader.refresh() && reader.complete() == was_complete) return std::nullopt;
        return read_contents(reader, true);
      },
      [this](std::optional<Contents> contents) {
        if (!contents) return;
        apply(std::move(*contents));
        emit grew();
        if (QDateTime::currentMSecsSinceEpoch() - last_analysis_ms_ >= options_.reanalyze_interval_ms) start_analysis();
        if (complete_) set_follow(false);
      });
}

int64_t RunDocument::nearest_snapshot_step(int64_t step) const {
  if (snapshot_steps_.empty()) return step;
  auto it = std::lower_bound(snapshot_steps_.begin(), snapshot_steps_.end(), step);
  if (it == snapshot_steps_.end()) return snapshot_steps_.back();
  if (it == snapshot_steps_.begin()) return *it;
  return (*it - step) < (step - *(it - 1)) ? *it : *(it - 1);
}

}  // namespace trainscope::viewer
