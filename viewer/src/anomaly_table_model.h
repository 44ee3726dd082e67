// The anomaly report as a table (one row per abnormal snapshot, highest score first): the viewer's list of entry
// points. Selecting a row moves the focus to its step and selects its top suspect layer.
#pragma once

#include <trainscope/analysis/anomaly_report.h>
#include <trainscope/analysis/layer_graph.h>

#include <QAbstractTableModel>

namespace trainscope::viewer {

class AnomalyTableModel : public QAbstractTableModel {
  Q_OBJECT

 public:
  enum Column { StepColumn, KindColumn, ScalarColumn, ValueColumn, ScoreColumn, SuspectColumn, ColumnCount };
  enum Role { StepRole = Qt::UserRole + 1, SuspectLayerRole };  // SuspectLayerRole: layer id, -1 when none

  using QAbstractTableModel::QAbstractTableModel;

  // Both must outlive the model (the document owns them); nullptrs clear it.
  void set_report(const analysis::AnomalyReport* report, const analysis::LayerGraph* graph);

  int rowCount(const QModelIndex& parent = {}) const override;
  int columnCount(const QModelIndex& parent = {}) const override;
  QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
  QVariant headerData(int section, Qt::Orientation orientation, int role = Qt::DisplayRole) const override;

 private:
  const analysis::AnomalyReport* report_ = nullptr;
  const analysis::LayerGraph* graph_ = nullptr;
};

}  // namespace trainscope::viewer
