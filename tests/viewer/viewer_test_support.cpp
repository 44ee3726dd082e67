#include "viewer_test_support.h"

#include "synthetic_runs.h"

#include <gtest/gtest.h>

#include <QElapsedTimer>
#include <QPainter>
#include <QSet>

namespace trainscope::testing {

std::filesystem::path write_run(const std::string& name, const std::filesystem::path& dir) {
  const auto run = dir / name;
  write_synthetic_run(name, run);
  return run;
}

bool open_and_wait(viewer::RunDocument& document, const std::filesystem::path& run) {
  QString failure;
  bool failed = false;
  auto connection = QObject::connect(&document, &viewer::RunDocument::open_failed, [&](const QString& message) {
    failed = true;
    failure = message;
  });
  document.open(QString::fromStdString(run.string()));
  document.wait_idle();  // opened, then the analysis queued behind it
  document.wait_idle();
  QObject::disconnect(connection);
  EXPECT_FALSE(failed) << failure.toStdString();
  EXPECT_TRUE(document.is_open());
  EXPECT_TRUE(document.has_report());
  return !failed && document.is_open();
}

QImage render(viewer::RunView& view) {
  QImage image(view.size(), QImage::Format_ARGB32_Premultiplied);
  QPainter painter(&image);
  view.render_view(painter, view.size());
  return image;
}

int distinct_colors(const QImage& image, QRect rect) {
  if (rect.isNull()) rect = image.rect();
  rect = rect.intersected(image.rect());
  QSet<QRgb> colors;
  for (int y = rect.top(); y <= rect.bottom(); ++y)
    for (int x = rect.left(); x <= rect.right(); ++x) colors.insert(image.pixel(x, y));
  return colors.size();
}

int count_color(const QImage& image, QColor color, int tolerance, QRect rect) {
  if (rect.isNull()) rect = image.rect();
  rect = rect.intersected(image.rect());
  int n = 0;
  for (int y = rect.top(); y <= rect.bottom(); ++y)
    for (int x = rect.left(); x <= rect.right(); ++x) {
      const QColor c = image.pixelColor(x, y);
      if (std::abs(c.red() - color.red()) <= tolerance && std::abs(c.green() - color.green()) <= tolerance &&
          std::abs(c.blue() - color.blue()) <= tolerance)
        ++n;
    }
  return n;
}

}  // namespace trainscope::testing
