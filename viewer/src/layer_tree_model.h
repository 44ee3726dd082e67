// The module tree (layer hierarchy) as an item model: name, kind, neurons and what the analysis says of the layer
// (its best rank among the suspects of the top anomaly, and how many rules fired). Selecting a row selects the layer.
#pragma once

#include <trainscope/analysis/anomaly_report.h>
#include <trainscope/analysis/layer_graph.h>

#include <QAbstractItemModel>

#include <vector>

namespace trainscope::viewer {

class LayerTreeModel : public QAbstractItemModel {
  Q_OBJECT

 public:
  enum Column { NameColumn, KindColumn, NeuronsColumn, SuspectColumn, RulesColumn, ColumnCount };
  enum Role { LayerIdRole = Qt::UserRole + 1 };

  using QAbstractItemModel::QAbstractItemModel;

  // `graph` must outlive the model; nullptr clears it.
  void set_graph(const analysis::LayerGraph* graph);
  // Colours and ranks the layers by the report; nullptr clears that.
  void set_report(const analysis::AnomalyReport* report);
  QModelIndex index_of_layer(uint32_t layer_id) const;

  QModelIndex index(int row, int column, const QModelIndex& parent = {}) const override;
  QModelIndex parent(const QModelIndex& child) const override;
  int rowCount(const QModelIndex& parent = {}) const override;
  int columnCount(const QModelIndex& parent = {}) const override;
  QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
  QVariant headerData(int section, Qt::Orientation orientation, int role = Qt::DisplayRole) const override;

 private:
  const std::vector<uint32_t>& children_of(const QModelIndex& parent) const;

  const analysis::LayerGraph* graph_ = nullptr;
  std::vector<uint32_t> roots_;
  std::vector<int> row_in_parent_;   // by layer id
  std::vector<int> suspect_rank_;    // by layer id: 1-based rank among the top anomaly's suspects, 0 when not one
  std::vector<int> rule_hit_count_;  // by layer id
};

}  // namespace trainscope::viewer
