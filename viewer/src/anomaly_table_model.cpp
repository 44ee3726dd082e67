#include "anomaly_table_model.h"

#include <trainscope/analysis/json_writer.h>

namespace trainscope::viewer {

void AnomalyTableModel::set_report(const analysis::AnomalyReport* report, const analysis::LayerGraph* graph) {
  beginResetModel();
  report_ = report;
  graph_ = report ? graph : nullptr;
  endResetModel();
}

int AnomalyTableModel::rowCount(const QModelIndex& parent) const {
  if (parent.isValid() || !report_) return 0;
  return int(report_->anomalies.size());
}

int AnomalyTableModel::columnCount(const QModelIndex& parent) const {
  return parent.isValid() ? 0 : ColumnCount;
}

QVariant AnomalyTableModel::data(const QModelIndex& index, int role) const {
  if (!checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid) || !report_) return {};
  const auto& a = report_->anomalies[size_t(index.row())];
  const int suspect = a.suspects.empty() ? -1 : int(a.suspects.front().layer_id);
  if (role == StepRole) return QVariant::fromValue<qint64>(a.step);
  if (role == SuspectLayerRole) return suspect;
  if (role == Qt::ToolTipRole) return QString::fromStdString(a.reason);
  if (role == Qt::TextAlignmentRole &&
      (index.column() == StepColumn || index.column() == ValueColumn || index.column() == ScoreColumn))
    return int(Qt::AlignRight | Qt::AlignVCenter);
  if (role != Qt::DisplayRole) return {};
  switch (index.column()) {
    case StepColumn: return QVariant::fromValue<qint64>(a.step);
    case KindColumn: return QString::fromUtf8(analysis::anomaly_kind_name(a.kind));
    case ScalarColumn: return a.scalar.empty() ? tr("(layers)") : QString::fromStdString(a.scalar);
    case ValueColumn: return QString::fromStdString(analysis::shortest_decimal(a.value));
    case ScoreColumn: return QString::number(a.score, 'f', 2);
    case SuspectColumn:
      return suspect < 0 || !graph_ ? QString() : QString::fromStdString(graph_->name(uint32_t(suspect)));
  }
  return {};
}

QVariant AnomalyTableModel::headerData(int section, Qt::Orientation orientation, int role) const {
  if (orientation != Qt::Horizontal || role != Qt::DisplayRole) return {};
  switch (section) {
    case StepColumn: return tr("Step");
    case KindColumn: return tr("Kind");
    case ScalarColumn: return tr("Scalar");
    case ValueColumn: return tr("Value");
    case ScoreColumn: return tr("Score");
    case SuspectColumn: return tr("Top suspect");
  }
  return {};
}

}  // namespace trainscope::viewer
