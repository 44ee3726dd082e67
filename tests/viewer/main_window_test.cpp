// The window as a user meets it: opening runs (good, torn, missing), the anomaly list and layer tree models, the
// linked selection, trim from the menu's code, export, and the headless --screenshot command.
#include "main_window.h"
#include "anomaly_table_model.h"
#include "layer_tree_model.h"
#include "layer_view.h"
#include "loss_view.h"
#include "run_view.h"
#include "snapshot_view.h"
#include "viewer_test_support.h"

#include <gtest/gtest.h>
#include <trainscope/format/run_reader.h>
#include <trainscope/format/run_writer.h>

#include <QAbstractItemModelTester>
#include <QAction>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QElapsedTimer>
#include <QFileInfo>
#include <QImage>
#include <QMimeData>
#include <QSettings>
#include <QTableView>
#include <QTest>
#include <QUrl>

#include <cstdio>
#include <fstream>

namespace ts = trainscope::testing;
using trainscope::viewer::AnomalyTableModel;
using trainscope::viewer::LayerTreeModel;
using trainscope::viewer::MainWindow;

TEST(MainWindow, OpensARunAndSelectsTheTopAnomalyAndItsSuspect) {
  ts::TempDir dir;
  const auto run = ts::write_run("nan_in_fc2", dir.path());
  MainWindow window;
  ASSERT_TRUE(ts::open_and_wait(window.document(), run));
  QCoreApplication::processEvents();

  const auto& report = window.document().report();
  ASSERT_FALSE(report.anomalies.empty());
  AnomalyTableModel* anomalies = window.anomaly_model();
  EXPECT_EQ(anomalies->rowCount(), int(report.anomalies.size()));
  // The window moves to the strongest anomaly and selects its top suspect: the NaN appears in fc2 at step 120.
  EXPECT_EQ(window.state().focus_step(), report.anomalies.front().step);
  ASSERT_GE(window.state().layer(), 0);
  EXPECT_EQ(window.document().graph().name(uint32_t(window.state().layer())), "fc2");
  EXPECT_TRUE(window.notice_text().isEmpty());
}

TEST(MainWindow, ModelsPassTheItemModelTester) {
  ts::TempDir dir;
  const auto run = ts::write_run("exploding_fc1", dir.path());
  MainWindow window;
  QAbstractItemModelTester anomaly_tester(window.anomaly_model(),
                                          QAbstractItemModelTester::FailureReportingMode::Fatal);
  QAbstractItemModelTester layer_tester(window.layer_model(), QAbstractItemModelTester::FailureReportingMode::Fatal);
  ASSERT_TRUE(ts::open_and_wait(window.document(), run));
  QCoreApplication::processEvents();

  // Every layer of the run appears once in the tree, under its parent.
  LayerTreeModel* layers = window.layer_model();
  const auto& graph = window.document().graph();
  size_t seen = 0;
  std::function<void(const QModelIndex&)> walk = [&](const QModelIndex& parent) {
    for (int row = 0; row < layers->rowCount(parent); ++row) {
      const QModelIndex index = layers->index(row, 0, parent);
      const uint32_t id = uint32_t(index.data(LayerTreeModel::LayerIdRole).toInt());
      ++seen;
      if (parent.isValid()) {
        EXPECT_EQ(graph.layer(id).parent_id.value_or(UINT32_MAX),
                  uint32_t(parent.data(LayerTreeModel::LayerIdRole).toInt()));
      }
      EXPECT_EQ(layers->index_of_layer(id), index);
      walk(index);
    }
  };
  walk({});
  EXPECT_EQ(seen, graph.size());
  // The top anomaly's first suspect is ranked 1 in the tree.
  const auto& top = window.document().report().anomalies.front();
  ASSERT_FALSE(top.suspects.empty());
  const QModelIndex suspect = layers->index_of_layer(top.suspects.front().layer_id);
  EXPECT_EQ(suspect.siblingAtColumn(LayerTreeModel::SuspectColumn).data().toInt(), 1);
}

TEST(MainWindow, ClickingAnAnomalyRowMovesTheFocus) {
  ts::TempDir dir;
  const auto run = ts::write_run("exploding_fc1", dir.path());
  MainWindow window;
  window.resize(1400, 900);
  window.show();
  ASSERT_TRUE(ts::open_and_wait(window.document(), run));
  auto* table = window.findChild<QTableView*>("AnomalyTable");
  ASSERT_NE(table, nullptr);
  const int rows = window.anomaly_model()->rowCount();
  ASSERT_GE(rows, 1);
  const int row = rows - 1;  // the weakest: not the one selected at open
  const QModelIndex index = window.anomaly_model()->index(row, AnomalyTableModel::StepColumn);
  table->scrollTo(index);
  QTest::mouseClick(table->viewport(), Qt::LeftButton, {}, table->visualRect(index).center());
  EXPECT_EQ(window.state().focus_step(), index.data(AnomalyTableModel::StepRole).toLongLong());
}

TEST(MainWindow, AMissingRunFailsWithItsPath) {
  MainWindow window;
  QString failure;
  QObject::connect(&window.document(), &trainscope::viewer::RunDocument::open_failed,
                   [&](const QString& message) { failure = message; });
  window.open_run("/nonexistent/trainscope-run");
  window.document().wait_idle();
  EXPECT_FALSE(window.document().is_open());
  EXPECT_TRUE(failure.contains("/nonexistent/trainscope-run")) << failure.toStdString();
}

TEST(MainWindow, ADirectoryOfRunsNamesThem) {
  ts::TempDir dir;
  ts::write_run("healthy", dir.path() / "parent");
  ts::write_run("dead_act1", dir.path() / "parent");
  MainWindow window;
  QString failure;
  QObject::connect(&window.document(), &trainscope::viewer::RunDocument::open_failed,
                   [&](const QString& message) { failure = message; });
  window.open_run(QString::fromStdString((dir.path() / "parent").string()));
  window.document().wait_idle();
  EXPECT_FALSE(window.document().is_open());
  EXPECT_TRUE(failure.contains("dead_act1, healthy")) << failure.toStdString();
}

TEST(MainWindow, ATornRunOpensWithANotice) {
  ts::TempDir dir;
  const auto run = ts::write_run("healthy", dir.path());
  // Cut the last segment in the middle of a chunk: its footer and the chunk are gone.
  trainscope::format::RunReader reader(run);
  const auto segment = reader.segment_files().back();
  const auto size = std::filesystem::file_size(segment);
  std::filesystem::resize_file(segment, size * 2 / 3);
  MainWindow window;
  ASSERT_TRUE(ts::open_and_wait(window.document(), run));
  QCoreApplication::processEvents();
  EXPECT_FALSE(window.document().complete());
  EXPECT_FALSE(window.notice_text().isEmpty());
  EXPECT_FALSE(window.document().scalars().empty());
}

TEST(MainWindow, TrimWritesTheVisibleWindowAsANewRun) {
  ts::TempDir dir;
  const auto run = ts::write_run("exploding_fc1", dir.path());
  MainWindow window;
  ASSERT_TRUE(ts::open_and_wait(window.document(), run));
  window.state().set_focus_step(200);
  window.state().set_window(20);
  const auto out = dir.path() / "trimmed";
  EXPECT_EQ(window.trim_visible_window(QString::fromStdString(out.string())).toStdString(), "");
  trainscope::format::RunReader trimmed(out);
  EXPECT_GE(trimmed.first_step(), 180);
  EXPECT_LE(trimmed.last_step(), 220);
  EXPECT_FALSE(trimmed.snapshot_steps().empty());
  // Trimming onto an existing non-empty directory is refused with its name.
  const QString error = window.trim_visible_window(QString::fromStdString(out.string()));
  EXPECT_TRUE(error.contains(QString::fromStdString(out.string()))) << error.toStdString();
}

TEST(MainWindow, ExportsEveryViewAsPngAndSvg) {
  ts::TempDir dir;
  const auto run = ts::write_run("nan_in_fc2", dir.path());
  MainWindow window;
  ASSERT_TRUE(ts::open_and_wait(window.document(), run));
  for (auto* view : window.views()) {
    view->resize(640, 400);
    window.document().wait_idle();
    const auto png = dir.path() / (view->view_name().toStdString() + ".png");
    const auto svg = dir.path() / (view->view_name().toStdString() + ".svg");
    EXPECT_EQ(trainscope::viewer::export_view(*view, QString::fromStdString(png.string())).toStdString(), "");
    EXPECT_EQ(trainscope::viewer::export_view(*view, QString::fromStdString(svg.string())).toStdString(), "");
    QImage image(QString::fromStdString(png.string()));
    ASSERT_FALSE(image.isNull());
    EXPECT_EQ(image.size(), QSize(640, 400));
    EXPECT_GT(ts::distinct_colors(image), 2) << view->view_name().toStdString() << " exported a blank image";
    std::ifstream in(svg);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    EXPECT_NE(text.find("<svg"), std::string::npos);
  }
  const QString bad = trainscope::viewer::export_view(*window.views().front(), "/nonexistent-dir/x.png");
  EXPECT_TRUE(bad.contains("/nonexistent-dir/x.png")) << bad.toStdString();
}

TEST(ScreenshotCommand, RendersEachViewAndRejectsBadArguments) {
  ts::TempDir dir;
  const auto run = ts::write_run("nan_in_fc2", dir.path());
  const std::string viewer = TRAINSCOPE_VIEWER;
  for (const char* view : {"loss", "snapshot", "layer", "neuron"}) {
    const auto out = dir.path() / (std::string(view) + ".png");
    const auto result = ts::run_command(viewer + " " + run.string() + " --screenshot " + out.string() + " --view " +
                                        view + " --size 800x500");
    EXPECT_EQ(result.status, 0) << result.output;
    QImage image(QString::fromStdString(out.string()));
    ASSERT_FALSE(image.isNull()) << view;
    EXPECT_EQ(image.size(), QSize(800, 500));
    EXPECT_GT(ts::distinct_colors(image), 2) << view;
  }
  auto missing = ts::run_command(viewer + " /nonexistent/run --screenshot " + (dir.path() / "x.png").string());
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.output.find("/nonexistent/run"), std::string::npos) << missing.output;
  auto bad_view = ts::run_command(viewer + " " + run.string() + " --screenshot x.png --view graph");
  EXPECT_EQ(bad_view.status, 2);
  EXPECT_NE(bad_view.output.find("--view"), std::string::npos) << bad_view.output;
  auto bad_layer = ts::run_command(viewer + " " + run.string() + " --screenshot x.png --layer nope");
  EXPECT_EQ(bad_layer.status, 2);
  EXPECT_NE(bad_layer.output.find("--layer"), std::string::npos) << bad_layer.output;
}

TEST(RunDocument, FollowsARunStillBeingWritten) {
  ts::TempDir dir;
  const auto run = dir.path() / "live";
  trainscope::format::RunMetadata metadata;
  metadata.header.model_name = "Live";
  metadata.layers.push_back({0, "", std::nullopt, "Net", 0, {}, {}, false});
  metadata.layers.push_back({1, "fc", 0u, "Linear", 4, {4}, {}, true});
  trainscope::format::RunWriter writer(run, metadata);
  auto append = [&](int64_t first, int64_t last) {
    for (int64_t step = first; step <= last; ++step) {
      trainscope::format::Snapshot s;
      s.step = step;
      s.scalars = {{"loss", 1.0 / double(step + 1)}};
      trainscope::format::LayerQuantityRecord r;
      r.layer_id = 1;
      r.summary.numel = 4;
      r.summary.std = 1;
      s.layers.push_back(r);
      writer.append(std::move(s));
    }
    writer.flush();
  };
  append(0, 49);

  trainscope::viewer::DocumentOptions options;
  options.follow_interval_ms = 20;
  options.reanalyze_interval_ms = 0;
  trainscope::viewer::RunDocument document(options);
  std::vector<double> fractions;
  QObject::connect(&document, &trainscope::viewer::RunDocument::progress,
                   [&](const QString&, double fraction) { fractions.push_back(fraction); });
  ASSERT_TRUE(ts::open_and_wait(document, run));
  EXPECT_FALSE(document.complete());
  EXPECT_TRUE(document.follow());  // an unfinished run is followed by default
  EXPECT_EQ(document.last_step(), 49);
  // Loading reported progress, ending at 1.
  ASSERT_FALSE(fractions.empty());
  EXPECT_DOUBLE_EQ(fractions.back(), 1.0);
  for (double f : fractions) EXPECT_TRUE(f >= 0 && f <= 1) << f;

  int grew = 0;
  QObject::connect(&document, &trainscope::viewer::RunDocument::grew, [&] { ++grew; });
  append(50, 99);
  QElapsedTimer timer;
  timer.start();
  while (document.last_step() < 99 && timer.elapsed() < 10000) QTest::qWait(20);
  EXPECT_EQ(document.last_step(), 99);
  EXPECT_GE(grew, 1);
  ASSERT_EQ(document.scalars().size(), 1u);
  EXPECT_EQ(document.scalars().front().steps.size(), 100u);

  writer.close();  // the footer arrives: the run is complete and no longer polled
  timer.restart();
  while (!document.complete() && timer.elapsed() < 10000) QTest::qWait(20);
  EXPECT_TRUE(document.complete());
  document.wait_idle();
  EXPECT_FALSE(document.follow());
}

TEST(MainWindow, RemembersRecentRunsAndItsLayout) {
  ts::TempDir dir;
  const auto run = ts::write_run("healthy", dir.path());
  QSettings().clear();
  {
    MainWindow window;
    window.resize(1111, 777);
    window.show();
    ASSERT_TRUE(ts::open_and_wait(window.document(), run));
    QCoreApplication::processEvents();
    window.close();
  }
  const QStringList recent = QSettings().value("recent_runs").toStringList();
  ASSERT_FALSE(recent.isEmpty());
  EXPECT_EQ(recent.front(), QFileInfo(QString::fromStdString(run.string())).absoluteFilePath());
  MainWindow again;
  EXPECT_EQ(again.size(), QSize(1111, 777));
  // The File menu offers the run again.
  bool offered = false;
  for (QAction* action : again.findChildren<QAction*>())
    if (action->text() == recent.front()) offered = true;
  EXPECT_TRUE(offered);
  QSettings().clear();
}

TEST(MainWindow, LinkedViewsFollowClicksFromSymptomToNeurons) {
  ts::TempDir dir;
  const auto run = ts::write_run("exploding_fc1", dir.path());
  MainWindow window;
  window.resize(1500, 950);
  window.show();
  ASSERT_TRUE(ts::open_and_wait(window.document(), run));
  auto* loss = static_cast<trainscope::viewer::LossView*>(window.view("loss"));
  auto* snapshot = static_cast<trainscope::viewer::SnapshotView*>(window.view("snapshot"));
  auto* layer = static_cast<trainscope::viewer::LayerView*>(window.view("layer"));
  window.state().set_focus_step(0);
  window.document().wait_idle();

  // Click the weakest anomaly's marker in the loss view: the focus moves there and the snapshot view reloads for it.
  const auto& anomalies = window.document().report().anomalies;
  ASSERT_FALSE(anomalies.empty());
  const auto& target = anomalies.back();
  const int x = int(loss->x_for_step(double(target.step) + 0.5));
  QTest::mouseClick(loss, Qt::LeftButton, {}, QPoint(x, loss->plot_rect(loss->size()).center().y()));
  const int64_t expected = window.document().nearest_snapshot_step(target.step);
  EXPECT_EQ(window.state().focus_step(), expected);
  window.document().wait_idle();
  ASSERT_NE(snapshot->window_data(), nullptr);
  EXPECT_EQ(snapshot->window_data()->focus_step, expected);

  // Click a layer node in the snapshot view: the layer view shows that layer's neurons.
  uint32_t chosen = UINT32_MAX;
  for (const auto& node : snapshot->layout().nodes)
    if (!node.group && window.document().graph().layer(node.layer).neuron_count > 0) chosen = node.layer;
  ASSERT_NE(chosen, UINT32_MAX);
  QTest::mouseClick(snapshot, Qt::LeftButton, {}, snapshot->node_rect(chosen).center().toPoint());
  EXPECT_EQ(window.state().layer(), int(chosen));
  window.document().wait_idle();
  ASSERT_NE(layer->lines(), nullptr);
  EXPECT_EQ(layer->lines()->layer, chosen);
  EXPECT_FALSE(layer->shown_neurons().empty());
}

TEST(MainWindow, DroppingARunOrOneOfItsSegmentsOpensIt) {
  ts::TempDir dir;
  const auto run = ts::write_run("healthy", dir.path());
  trainscope::format::RunReader reader(run);
  for (const auto& dropped : {run, reader.segment_files().front()}) {
    MainWindow window;
    QMimeData mime;
    mime.setUrls({QUrl::fromLocalFile(QString::fromStdString(dropped.string()))});
    QDragEnterEvent enter(QPoint(10, 10), Qt::CopyAction, &mime, Qt::LeftButton, {});
    enter.ignore();  // the window must accept it itself
    QCoreApplication::sendEvent(&window, &enter);
    EXPECT_TRUE(enter.isAccepted());
    QDropEvent drop(QPointF(10, 10), Qt::CopyAction, &mime, Qt::LeftButton, {});
    QCoreApplication::sendEvent(&window, &drop);
    window.document().wait_idle();
    EXPECT_TRUE(window.document().is_open()) << dropped;
    EXPECT_EQ(QFileInfo(window.document().path()).canonicalFilePath(),
              QFileInfo(QString::fromStdString(run.string())).canonicalFilePath());
  }
}
