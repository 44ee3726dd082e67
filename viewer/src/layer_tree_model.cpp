#include "layer_tree_model.h"

#include <QColor>

namespace trainscope::viewer {

void LayerTreeModel::set_graph(const analysis::LayerGraph* graph) {
  beginResetModel();
  graph_ = graph;
  roots_.clear();
  row_in_parent_.clear();
  suspect_rank_.clear();
  rule_hit_count_.clear();
  if (graph_) {
    roots_ = graph_->roots();
    row_in_parent_.assign(graph_->size(), 0);
    suspect_rank_.assign(graph_->size(), 0);
    rule_hit_count_.assign(graph_->size(), 0);
    for (size_t i = 0; i < roots_.size(); ++i) row_in_parent_[roots_[i]] = int(i);
    for (uint32_t id = 0; id < graph_->size(); ++id) {
      const auto& kids = graph_->children(id);
      for (size_t i = 0; i < kids.size(); ++i) row_in_parent_[kids[i]] = int(i);
    }
  }
  endResetModel();
}

void LayerTreeModel::set_report(const analysis::AnomalyReport* report) {
  if (!graph_) return;
  std::fill(suspect_rank_.begin(), suspect_rank_.end(), 0);
  std::fill(rule_hit_count_.begin(), rule_hit_count_.end(), 0);
  if (report) {
    if (!report->anomalies.empty()) {
      const auto& suspects = report->anomalies.front().suspects;
      for (size_t i = 0; i < suspects.size(); ++i) {
        int& rank = suspect_rank_[suspects[i].layer_id];
        if (rank == 0) rank = int(i) + 1;
      }
    }
    for (const auto& hit : report->rule_hits)
      if (hit.layer_id < rule_hit_count_.size()) ++rule_hit_count_[hit.layer_id];
  }
  // The report changes two columns of every row; the tree's shape (and so the user's expanded groups) stays.
  if (!roots_.empty()) emit dataChanged(index(0, SuspectColumn), index(int(roots_.size()) - 1, RulesColumn));
  for (uint32_t id = 0; id < graph_->size(); ++id) {
    const auto& kids = graph_->children(id);
    if (kids.empty()) continue;
    const QModelIndex parent = index_of_layer(id);
    emit dataChanged(index(0, SuspectColumn, parent), index(int(kids.size()) - 1, RulesColumn, parent));
  }
}

const std::vector<uint32_t>& LayerTreeModel::children_of(const QModelIndex& parent) const {
  if (!parent.isValid()) return roots_;
  return graph_->children(uint32_t(parent.internalId()));
}

QModelIndex LayerTreeModel::index_of_layer(uint32_t layer_id) const {
  if (!graph_ || layer_id >= graph_->size()) return {};
  return createIndex(row_in_parent_[layer_id], 0, quintptr(layer_id));
}

QModelIndex LayerTreeModel::index(int row, int column, const QModelIndex& parent) const {
  if (!graph_ || !hasIndex(row, column, parent)) return {};
  return createIndex(row, column, quintptr(children_of(parent)[size_t(row)]));
}

QModelIndex LayerTreeModel::parent(const QModelIndex& child) const {
  if (!graph_ || !child.isValid()) return {};
  const auto& parent_id = graph_->layer(uint32_t(child.internalId())).parent_id;
  if (!parent_id) return {};
  return createIndex(row_in_parent_[*parent_id], 0, quintptr(*parent_id));
}

int LayerTreeModel::rowCount(const QModelIndex& parent) const {
  if (!graph_) return 0;
  if (parent.isValid() && parent.column() != 0) return 0;
  return int(children_of(parent).size());
}

int LayerTreeModel::columnCount(const QModelIndex&) const {
  return ColumnCount;
}

QVariant LayerTreeModel::data(const QModelIndex& index, int role) const {
  if (!graph_ || !checkIndex(index, CheckIndexOption::IndexIsValid)) return {};
  const uint32_t id = uint32_t(index.internalId());
  const auto& layer = graph_->layer(id);
  if (role == LayerIdRole) return int(id);
  if (role == Qt::ForegroundRole && suspect_rank_[id] == 1) return QColor(200, 30, 30);
  if (role == Qt::ToolTipRole)
    return tr("%1 (%2), %3 neurons")
        .arg(QString::fromStdString(graph_->name(id)), QString::fromStdString(layer.kind))
        .arg(qulonglong(layer.neuron_count));
  if (role != Qt::DisplayRole) return {};
  switch (index.column()) {
    case NameColumn: {
      // The last part of the dotted name: the tree shows the rest.
      const std::string full = graph_->name(id);
      const auto dot = full.rfind('.');
      return QString::fromStdString(dot == std::string::npos ? full : full.substr(dot + 1));
    }
    case KindColumn: return QString::fromStdString(layer.kind);
    case NeuronsColumn: return QVariant::fromValue<qulonglong>(layer.neuron_count);
    case SuspectColumn: return suspect_rank_[id] ? QVariant(suspect_rank_[id]) : QVariant();
    case RulesColumn: return rule_hit_count_[id] ? QVariant(rule_hit_count_[id]) : QVariant();
  }
  return {};
}

QVariant LayerTreeModel::headerData(int section, Qt::Orientation orientation, int role) const {
  if (orientation != Qt::Horizontal || role != Qt::DisplayRole) return {};
  switch (section) {
    case NameColumn: return tr("Layer");
    case KindColumn: return tr("Kind");
    case NeuronsColumn: return tr("Neurons");
    case SuspectColumn: return tr("Suspect #");
    case RulesColumn: return tr("Rules");
  }
  return {};
}

}  // namespace trainscope::viewer
