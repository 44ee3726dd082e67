// The viewer's window: the four linked views in docks around the snapshot view, the anomaly list and the layer
// tree; File menu (open, recent runs, trim, export), drag and drop, a progress bar for long work, a notice bar for
// torn or corrupt runs. Window layout and recent runs are remembered (QSettings).
#pragma once

#include "run_document.h"
#include "viewer_state.h"

#include <QMainWindow>
#include <QStringList>

class QLabel;
class QProgressBar;
class QMenu;
class QTableView;
class QTreeView;

namespace trainscope::viewer {

class RunView;
class LossView;
class SnapshotView;
class LayerView;
class NeuronView;
class AnomalyTableModel;
class LayerTreeModel;

class MainWindow : public QMainWindow {
  Q_OBJECT

 public:
  explicit MainWindow(QWidget* parent = nullptr);
  ~MainWindow() override;

  RunDocument& document() { return document_; }
  ViewerState& state() { return state_; }
  // "loss", "snapshot", "layer", "neuron"; nullptr for another name.
  RunView* view(const QString& name) const;
  QList<RunView*> views() const;
  AnomalyTableModel* anomaly_model() const { return anomaly_model_; }
  LayerTreeModel* layer_model() const { return layer_model_; }
  QString notice_text() const;

 public slots:
  void open_run(const QString& run_dir);
  void open_dialog();
  // Writes steps [focus - window, focus + window] to a new run at `output_dir` (trainscope trim's code).
  // Returns an error sentence, or an empty string.
  QString trim_visible_window(const QString& output_dir);
  void trim_dialog();
  void export_dialog();

 protected:
  void closeEvent(QCloseEvent* event) override;
  void dragEnterEvent(QDragEnterEvent* event) override;
  void dropEvent(QDropEvent* event) override;

 private:
  void build_menus();
  void build_docks();
  void update_recent_menu();
  void add_recent(const QString& run_dir);
  void on_opened();
  void on_report_ready();
  void show_progress(const QString& stage, double fraction);
  void update_title();

  RunDocument document_;
  ViewerState state_;
  LossView* loss_view_ = nullptr;
  SnapshotView* snapshot_view_ = nullptr;
  LayerView* layer_view_ = nullptr;
  NeuronView* neuron_view_ = nullptr;
  AnomalyTableModel* anomaly_model_ = nullptr;
  LayerTreeModel* layer_model_ = nullptr;
  QTableView* anomaly_table_ = nullptr;
  QTreeView* layer_tree_ = nullptr;
  QLabel* notice_ = nullptr;
  QProgressBar* progress_ = nullptr;
  QMenu* recent_menu_ = nullptr;
};

}  // namespace trainscope::viewer
