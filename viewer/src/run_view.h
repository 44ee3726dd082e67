// The base of the four views (loss, snapshot, layer, neuron). A view draws itself with one render() function, so the
// screen, PNG and SVG export and headless screenshots show exactly the same picture.
#pragma once

#include "run_document.h"
#include "viewer_state.h"

#include <QSize>
#include <QString>
#include <QWidget>

#include <string_view>

class QPainter;

namespace trainscope::viewer {

class RunView : public QWidget {
  Q_OBJECT

 public:
  RunView(RunDocument& document, ViewerState& state, QWidget* parent = nullptr);

  // Draws the whole view (background included) into a `size` area at the painter's origin.
  virtual void render_view(QPainter& painter, const QSize& size) = 0;
  // "loss", "snapshot", "layer", "neuron": the --view names and the export file names.
  virtual QString view_name() const = 0;
  // True while the view waits for data it asked the document for (screenshots wait for this to end).
  bool waiting() const { return waiting_requests_ > 0; }

 protected:
  void paintEvent(QPaintEvent* event) override;
  // Every view's render starts alike: white background, antialiasing, the views' small font (returned).
  QFont begin_render(QPainter& painter, const QSize& size) const;
  // A grey sentence in the middle of the view: what to do, or why there is nothing to show.
  static void draw_hint(QPainter& painter, const QSize& size, const QString& text);

  // Bookkeeping for a request whose result a newer one may supersede: begin_request() returns a ticket; a result is
  // current when its ticket is still the latest.
  uint64_t begin_request() {
    ++waiting_requests_;
    return ++request_ticket_;
  }
  bool end_request(uint64_t ticket) {
    --waiting_requests_;
    return ticket == request_ticket_;
  }

  RunDocument& document_;
  ViewerState& state_;

 private:
  uint64_t request_ticket_ = 0;
  int waiting_requests_ = 0;
};

inline QString to_qstring(std::string_view text) {
  return QString::fromUtf8(text.data(), qsizetype(text.size()));
}

// Writes the view as PNG or SVG, chosen by the file name's suffix; `size` defaults to the widget's size.
// Returns an error sentence naming the file, or an empty string on success.
QString export_view(RunView& view, const QString& file, QSize size = {});

}  // namespace trainscope::viewer
