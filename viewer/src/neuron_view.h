// The neuron level: what drives the neuron of interest? Left, its credit assignment (analysis::CreditAssignment) as a
// small graph across layers: the previous layers' neurons that drive it (forward, to the left) and the next layers'
// neurons that send it its gradient (backward, to the right); edge width is the contribution's size, colour its sign.
// Right, the selected layer's neurons as a grid ordered by analysis::neuron_grid_order (similar neurons side by side),
// coloured by the chosen statistic at the focus step; for a conv layer with a recorded probe batch, its channels as
// feature maps. A click on a cell selects that neuron for all views.
#pragma once

#include "run_view.h"

#include <trainscope/analysis/credit_assignment.h>

#include <QColor>
#include <QRectF>

#include <memory>
#include <optional>
#include <vector>

namespace trainscope::viewer {

struct NeuronViewData {
  uint32_t layer = 0, neuron = 0;
  int64_t step = 0;
  std::optional<analysis::CreditTrace> forward, backward;
  // The grid: every neuron's value at the focus (`grid_step`), and the display order.
  format::Quantity quantity = format::Quantity::Activation;
  format::Statistic statistic = format::Statistic::Mean;
  int64_t grid_step = 0;
  std::vector<float> values;    // by neuron
  std::vector<uint32_t> order;  // grid order (every neuron once)
  std::vector<int> cluster;     // per position of `order`
  // Conv feature maps of the probe batch (channel-major, first sample), when recorded.
  int64_t map_step = 0;
  int channels = 0, height = 0, width = 0;
  std::vector<float> maps;
  QStringList notes;  // what is missing or approximate, in words
};

class NeuronView : public RunView {
  Q_OBJECT

 public:
  NeuronView(RunDocument& document, ViewerState& state, QWidget* parent = nullptr);
  void render_view(QPainter& painter, const QSize& size) override;
  QString view_name() const override { return QStringLiteral("neuron"); }

  const NeuronViewData* data() const { return data_.get(); }
  // Where the credit graph draws (layer, neuron); empty when not drawn.
  QRectF credit_node_rect(uint32_t layer, uint32_t neuron, const QSize& size) const;
  QRectF grid_cell_rect(uint32_t neuron, const QSize& size) const;
  QRectF feature_map_rect(int channel, const QSize& size) const;
  // Colour of a value in the grid's diverging scale (symmetric around 0 up to ±`extent`).
  static QColor value_color(double value, double extent);
  static QColor positive_color() { return QColor(200, 40, 40); }
  static QColor negative_color() { return QColor(40, 90, 200); }

 protected:
  void mousePressEvent(QMouseEvent* event) override;
  bool event(QEvent* event) override;  // tooltips

 private:
  struct CreditNode {
    int column = 0;  // 0 the focus, < 0 previous layers (forward), > 0 next layers (backward)
    uint32_t layer = 0, neuron = 0;
    double share = 0;
  };
  void load();
  QRectF credit_area(const QSize& size) const;
  QRectF grid_area(const QSize& size) const;
  std::vector<CreditNode> credit_nodes() const;
  int grid_columns(const QSize& size) const;

  std::shared_ptr<std::shared_ptr<analysis::CreditAssignment>> credit_;  // filled and used on the reader thread only
  std::shared_ptr<const NeuronViewData> data_;
  QString message_;
};

}  // namespace trainscope::viewer
