#include "main_window.h"

#include "anomaly_table_model.h"
#include "layer_tree_model.h"
#include "layer_view.h"
#include "loss_view.h"
#include "neuron_view.h"
#include "snapshot_view.h"

#include <trainscope/format/trim.h>

#include <QAction>
#include <QApplication>
#include <QCloseEvent>
#include <QDockWidget>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QFileDialog>
#include <QFileInfo>
#include <QHeaderView>
#include <QLabel>
#include <QMenuBar>
#include <QMessageBox>
#include <QMimeData>
#include <QProgressBar>
#include <QProgressDialog>
#include <QSettings>
#include <QStatusBar>
#include <QTableView>
#include <QTreeView>
#include <QVBoxLayout>

#include <algorithm>

namespace trainscope::viewer {
namespace {
constexpr int kMaxRecentRuns = 8;
}

MainWindow::MainWindow(QWidget* parent) : QMainWindow(parent) {
  setObjectName("MainWindow");
  setAcceptDrops(true);
  setDockNestingEnabled(true);

  snapshot_view_ = new SnapshotView(document_, state_);
  snapshot_view_->setObjectName("SnapshotView");
  notice_ = new QLabel;
  notice_->setObjectName("NoticeBar");
  notice_->setWordWrap(true);
  notice_->setStyleSheet("QLabel { background: #fff3cd; color: #664d03; padding: 4px; }");
  notice_->hide();
  auto* central = new QWidget;
  auto* layout = new QVBoxLayout(central);
  layout->setContentsMargins(0, 0, 0, 0);
  layout->setSpacing(0);
  layout->addWidget(notice_);
  layout->addWidget(snapshot_view_, 1);
  setCentralWidget(central);

  build_docks();
  build_menus();

  progress_ = new QProgressBar;
  progress_->setRange(0, 1000);
  progress_->setMaximumWidth(240);
  progress_->hide();
  statusBar()->addPermanentWidget(progress_);

  connect(&document_, &RunDocument::progress, this, &MainWindow::show_progress);
  connect(&document_, &RunDocument::opened, this, &MainWindow::on_opened);
  connect(&document_, &RunDocument::report_ready, this, &MainWindow::on_report_ready);
  connect(&document_, &RunDocument::snapshots_ready, this, [this] {
    if (!document_.has_report()) state_.set_focus_step(document_.nearest_snapshot_step(state_.focus_step()));
  });
  connect(&document_, &RunDocument::grew, this,
          [this] { statusBar()->showMessage(tr("Run grew to step %1").arg(document_.last_step()), 3000); });
  connect(&document_, &RunDocument::open_failed, this, [this](const QString& message) {
    progress_->hide();
    statusBar()->showMessage(message);
    if (isVisible()) QMessageBox::warning(this, tr("Cannot open the run"), message);
  });
  connect(&document_, &RunDocument::error, this,
          [this](const QString& message) { statusBar()->showMessage(message, 10000); });
  connect(&state_, &ViewerState::focus_step_changed, this, [this](qint64 step) {
    statusBar()->showMessage(tr("Focus: step %1 (window ±%2)").arg(step).arg(state_.window()));
  });
  connect(&state_, &ViewerState::layer_changed, this, [this](int layer) {
    if (layer < 0 || !layer_model_) return;
    const QModelIndex index = layer_model_->index_of_layer(uint32_t(layer));
    if (index.isValid() && layer_tree_->currentIndex().internalId() != index.internalId()) {
      layer_tree_->scrollTo(index);
      layer_tree_->setCurrentIndex(index);
    }
  });

  QSettings settings;
  restoreGeometry(settings.value("window/geometry").toByteArray());
  restoreState(settings.value("window/state").toByteArray());
  update_title();
}

MainWindow::~MainWindow() = default;

void MainWindow::build_docks() {
  auto dock = [this](QWidget* widget, const QString& title, const QString& name, Qt::DockWidgetArea area) {
    auto* d = new QDockWidget(title, this);
    d->setObjectName(name);
    d->setWidget(widget);
    addDockWidget(area, d);
    return d;
  };
  loss_view_ = new LossView(document_, state_);
  loss_view_->setObjectName("LossView");
  layer_view_ = new LayerView(document_, state_);
  layer_view_->setObjectName("LayerView");
  neuron_view_ = new NeuronView(document_, state_);
  neuron_view_->setObjectName("NeuronView");

  anomaly_model_ = new AnomalyTableModel(this);
  anomaly_table_ = new QTableView;
  anomaly_table_->setObjectName("AnomalyTable");
  anomaly_table_->setModel(anomaly_model_);
  anomaly_table_->setSelectionBehavior(QAbstractItemView::SelectRows);
  anomaly_table_->setSelectionMode(QAbstractItemView::SingleSelection);
  anomaly_table_->verticalHeader()->hide();
  anomaly_table_->horizontalHeader()->setStretchLastSection(true);
  connect(anomaly_table_->selectionModel(), &QItemSelectionModel::currentRowChanged, this,
          [this](const QModelIndex& current) {
            if (!current.isValid()) return;
            state_.set_focus_step(current.data(AnomalyTableModel::StepRole).toLongLong());
            const int suspect = current.data(AnomalyTableModel::SuspectLayerRole).toInt();
            if (suspect >= 0) state_.set_layer(suspect);
          });

  layer_model_ = new LayerTreeModel(this);
  layer_tree_ = new QTreeView;
  layer_tree_->setObjectName("LayerTree");
  layer_tree_->setModel(layer_model_);
  layer_tree_->setUniformRowHeights(true);
  connect(layer_tree_->selectionModel(), &QItemSelectionModel::currentChanged, this,
          [this](const QModelIndex& current) {
            if (current.isValid()) state_.set_layer(current.data(LayerTreeModel::LayerIdRole).toInt());
          });

  auto* loss_dock = dock(loss_view_, tr("Loss"), "LossDock", Qt::TopDockWidgetArea);
  dock(layer_view_, tr("Layer"), "LayerDock", Qt::RightDockWidgetArea);
  dock(neuron_view_, tr("Neurons"), "NeuronDock", Qt::BottomDockWidgetArea);
  auto* anomalies_dock = dock(anomaly_table_, tr("Anomalies"), "AnomalyDock", Qt::LeftDockWidgetArea);
  auto* layers_dock = dock(layer_tree_, tr("Layers"), "LayerTreeDock", Qt::LeftDockWidgetArea);
  tabifyDockWidget(anomalies_dock, layers_dock);
  anomalies_dock->raise();
  resizeDocks({loss_dock}, {220}, Qt::Vertical);
}

void MainWindow::build_menus() {
  QMenu* file = menuBar()->addMenu(tr("&File"));
  QAction* open = file->addAction(tr("&Open run…"), this, &MainWindow::open_dialog);
  open->setShortcut(QKeySequence::Open);
  recent_menu_ = file->addMenu(tr("Open &recent"));
  update_recent_menu();
  file->addSeparator();
  QAction* trim = file->addAction(tr("&Trim to the visible window…"), this, &MainWindow::trim_dialog);
  trim->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_T));
  QAction* export_action = file->addAction(tr("&Export view…"), this, &MainWindow::export_dialog);
  export_action->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_E));
  QAction* follow = file->addAction(tr("&Follow a growing run"));
  follow->setCheckable(true);
  connect(follow, &QAction::toggled, &document_, &RunDocument::set_follow);
  connect(&document_, &RunDocument::opened, follow, [this, follow] { follow->setChecked(document_.follow()); });
  file->addSeparator();
  QAction* quit = file->addAction(tr("&Quit"), this, &QWidget::close);
  quit->setShortcut(QKeySequence::Quit);

  QMenu* view = menuBar()->addMenu(tr("&View"));
  for (QDockWidget* d : findChildren<QDockWidget*>()) view->addAction(d->toggleViewAction());
  view->addSeparator();
  QAction* next = view->addAction(tr("Next snapshot"), this, [this] {
    const auto& steps = document_.snapshot_steps();
    auto it = std::upper_bound(steps.begin(), steps.end(), state_.focus_step());
    if (it != steps.end()) state_.set_focus_step(*it);
  });
  next->setShortcut(QKeySequence(Qt::Key_BracketRight));
  QAction* previous = view->addAction(tr("Previous snapshot"), this, [this] {
    const auto& steps = document_.snapshot_steps();
    auto it = std::lower_bound(steps.begin(), steps.end(), state_.focus_step());
    if (it != steps.begin()) state_.set_focus_step(*(it - 1));
  });
  previous->setShortcut(QKeySequence(Qt::Key_BracketLeft));
  QAction* wider = view->addAction(tr("Wider window"), this, [this] { state_.set_window(state_.window() * 2); });
  wider->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_Plus));
  QAction* narrower = view->addAction(tr("Narrower window"), this,
                                      [this] { state_.set_window(std::max<qint64>(1, state_.window() / 2)); });
  narrower->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_Minus));
  QMenu* quantity = view->addMenu(tr("&Quantity"));
  for (auto q : format::all_quantities()) {
    QAction* a =
        quantity->addAction(QString::fromUtf8(format::quantity_name(q).data(), int(format::quantity_name(q).size())),
                            this, [this, q] { state_.set_quantity(q); });
    a->setCheckable(true);
    a->setChecked(q == state_.quantity());
    connect(&state_, &ViewerState::display_changed, a, [this, a, q] { a->setChecked(q == state_.quantity()); });
  }
  QMenu* statistic = view->addMenu(tr("&Statistic"));
  for (auto s : format::all_statistics()) {
    QAction* a =
        statistic->addAction(QString::fromUtf8(format::statistic_name(s).data(), int(format::statistic_name(s).size())),
                             this, [this, s] { state_.set_statistic(s); });
    a->setCheckable(true);
    a->setChecked(s == state_.statistic());
    connect(&state_, &ViewerState::display_changed, a, [this, a, s] { a->setChecked(s == state_.statistic()); });
  }

  QMenu* help = menuBar()->addMenu(tr("&Help"));
  help->addAction(tr("Keyboard shortcuts"), this, [this] {
    QMessageBox::information(
        this, tr("Keyboard shortcuts"),
        tr("Ctrl+O open a run · Ctrl+T trim to the visible window · Ctrl+E export the view under the mouse\n"
           "[ and ] previous / next snapshot · Ctrl+ + / Ctrl+ - wider / narrower window\n"
           "In the loss view: wheel zooms, drag pans, L toggles log scale, S cycles smoothing, Home resets."));
  });
}

RunView* MainWindow::view(const QString& name) const {
  for (RunView* v : views())
    if (v->view_name() == name) return v;
  return nullptr;
}

QList<RunView*> MainWindow::views() const {
  return {loss_view_, snapshot_view_, layer_view_, neuron_view_};
}

QString MainWindow::notice_text() const {
  return notice_->isHidden() ? QString() : notice_->text();
}

void MainWindow::open_run(const QString& run_dir) {
  anomaly_model_->set_report(nullptr, nullptr);
  layer_model_->set_graph(nullptr);
  document_.open(run_dir);
}

void MainWindow::open_dialog() {
  const QString dir = QFileDialog::getExistingDirectory(this, tr("Open a Trainscope run"));
  if (!dir.isEmpty()) open_run(dir);
}

void MainWindow::on_opened() {
  add_recent(document_.path());
  update_title();
  layer_model_->set_graph(&document_.graph());
  layer_tree_->expandToDepth(1);
  layer_tree_->resizeColumnToContents(0);
  QStringList notices = document_.notices();
  if (!document_.complete() && notices.isEmpty())
    notices << tr("This run has no closing index: it is still being written (followed live) or was cut off.");
  notice_->setText(notices.join('\n'));
  notice_->setVisible(!notices.isEmpty());
  // Start at the end: where a failed run ended (the top anomaly takes over once the analysis is done).
  state_.set_focus_step(document_.last_step());
}

void MainWindow::on_report_ready() {
  const auto& report = document_.report();
  anomaly_model_->set_report(&report, &document_.graph());
  layer_model_->set_report(&report);
  anomaly_table_->resizeColumnsToContents();
  if (!report.anomalies.empty()) {
    statusBar()->showMessage(tr("%n abnormal snapshot(s); the top one is selected.", "", int(report.anomalies.size())));
    anomaly_table_->selectRow(0);  // focus on the strongest anomaly and its top suspect
  } else {
    statusBar()->showMessage(tr("No abnormal snapshot found."));
  }
}

void MainWindow::show_progress(const QString& stage, double fraction) {
  if (fraction >= 1.0) {
    progress_->hide();
    return;
  }
  progress_->show();
  progress_->setValue(int(fraction * 1000));
  progress_->setFormat(stage.isEmpty() ? QStringLiteral("%p%") : stage + QStringLiteral(" %p%"));
  progress_->setTextVisible(true);
}

void MainWindow::update_title() {
  setWindowTitle(document_.is_open() ? tr("%1 — Trainscope").arg(QFileInfo(document_.path()).fileName())
                                     : tr("Trainscope"));
}

void MainWindow::add_recent(const QString& run_dir) {
  QSettings settings;
  QStringList recent = settings.value("recent_runs").toStringList();
  const QString absolute = QFileInfo(run_dir).absoluteFilePath();
  recent.removeAll(absolute);
  recent.prepend(absolute);
  while (recent.size() > kMaxRecentRuns) recent.removeLast();
  settings.setValue("recent_runs", recent);
  update_recent_menu();
}

void MainWindow::update_recent_menu() {
  recent_menu_->clear();
  const QStringList recent = QSettings().value("recent_runs").toStringList();
  for (const QString& run : recent) recent_menu_->addAction(run, this, [this, run] { open_run(run); });
  recent_menu_->setEnabled(!recent.isEmpty());
}

QString MainWindow::trim_visible_window(const QString& output_dir) {
  if (!document_.is_open()) return tr("No run is open.");
  const int64_t first = state_.focus_step() - state_.window();
  const int64_t last = state_.focus_step() + state_.window();
  QProgressDialog progress(tr("Trimming to steps %1…%2").arg(first).arg(last), tr("Hide"), 0, 1000, this);
  progress.setWindowModality(Qt::WindowModal);
  progress.setMinimumDuration(500);
  try {
    // Runs on the GUI thread with a modal progress dialog: the trim reads the run's files, not the document's reader.
    const auto result = format::trim_run(document_.path().toStdString(), output_dir.toStdString(), first, last,
                                         [&](uint64_t done, uint64_t total) {
                                           progress.setValue(total ? int(1000 * done / total) : 0);
                                           QCoreApplication::processEvents();
                                         });
    statusBar()->showMessage(tr("Trimmed steps %1…%2 to %3 (%4 chunks copied, %5 re-encoded)")
                                 .arg(first)
                                 .arg(last)
                                 .arg(output_dir)
                                 .arg(qulonglong(result.chunks_copied))
                                 .arg(qulonglong(result.chunks_reencoded)));
  } catch (const std::exception& e) {
    return QString::fromStdString(e.what());
  }
  return {};
}

void MainWindow::trim_dialog() {
  if (!document_.is_open()) return;
  const QString dir = QFileDialog::getSaveFileName(this, tr("Trim the visible window to a new run"),
                                                   document_.path() + QStringLiteral("-trimmed"));
  if (dir.isEmpty()) return;
  const QString error = trim_visible_window(dir);
  if (!error.isEmpty()) QMessageBox::warning(this, tr("Trim failed"), error);
}

void MainWindow::export_dialog() {
  // The view under the mouse, else the snapshot view.
  RunView* target = snapshot_view_;
  for (RunView* v : views())
    if (v->isVisible() && v->rect().contains(v->mapFromGlobal(QCursor::pos()))) target = v;
  const QString file =
      QFileDialog::getSaveFileName(this, tr("Export the %1 view").arg(target->view_name()),
                                   target->view_name() + QStringLiteral(".png"), tr("Images (*.png *.svg)"));
  if (file.isEmpty()) return;
  const QString error = export_view(*target, file);
  if (!error.isEmpty()) QMessageBox::warning(this, tr("Export failed"), error);
}

void MainWindow::closeEvent(QCloseEvent* event) {
  QSettings settings;
  settings.setValue("window/geometry", saveGeometry());
  settings.setValue("window/state", saveState());
  event->accept();
}

void MainWindow::dragEnterEvent(QDragEnterEvent* event) {
  if (event->mimeData()->hasUrls()) event->acceptProposedAction();
}

void MainWindow::dropEvent(QDropEvent* event) {
  const auto urls = event->mimeData()->urls();
  if (urls.isEmpty() || !urls.front().isLocalFile()) return;
  QString path = urls.front().toLocalFile();
  if (QFileInfo(path).isFile()) path = QFileInfo(path).absolutePath();  // a segment file dropped: its run
  open_run(path);
  event->acceptProposedAction();
}

}  // namespace trainscope::viewer
