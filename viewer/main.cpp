// trainscope-viewer [RUN] [--screenshot OUT.png|OUT.svg [--view NAME] [--focus-step S] [--layer NAME] [--size WxH]]
// Without --screenshot it opens the window; with it, it renders one view headlessly (offscreen when no display is
// present) and exits: 0 on success, 1 when the run cannot be read, 2 for a bad argument.
#include "main_window.h"
#include "run_view.h"

#include <trainscope/analysis/credit_assignment.h>

#include <QApplication>
#include <QCommandLineParser>
#include <QElapsedTimer>
#include <QTextStream>

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <optional>

namespace {

int fail(int code, const QString& message) {
  std::fprintf(stderr, "trainscope-viewer: %s\n", qPrintable(message));
  return code;
}

bool has_display() {
  return !qEnvironmentVariableIsEmpty("DISPLAY") || !qEnvironmentVariableIsEmpty("WAYLAND_DISPLAY");
}

}  // namespace

int main(int argc, char** argv) {
  // Decide on the platform before QApplication exists: a screenshot needs no display.
  bool screenshot = false;
  for (int i = 1; i < argc; ++i)
    if (QByteArray(argv[i]) == "--screenshot" || QByteArray(argv[i]).startsWith("--screenshot=")) screenshot = true;
  if (screenshot && !has_display() && qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM"))
    qputenv("QT_QPA_PLATFORM", "offscreen");
  // Without a session (ssh, CI, root shells) Qt warns about a missing runtime directory on every start: give it the
  // one it would pick anyway.
  if (qEnvironmentVariableIsEmpty("XDG_RUNTIME_DIR")) {
    const QByteArray runtime = "/tmp/runtime-" + QByteArray::number(uint(getuid()));
    if (mkdir(runtime.constData(), 0700) == 0 || errno == EEXIST) qputenv("XDG_RUNTIME_DIR", runtime);
  }

  QApplication app(argc, argv);
  QApplication::setApplicationName("trainscope-viewer");
  QApplication::setOrganizationName("Trainscope");

  QCommandLineParser parser;
  parser.setApplicationDescription("Finds out why a training run failed: loss, layers, neurons.");
  parser.addHelpOption();
  parser.addPositionalArgument("RUN", "A recording directory.");
  parser.addOption({"screenshot", "Render a view to OUT (.png or .svg) and exit.", "OUT"});
  parser.addOption(
      {"view", "The view to render: loss, snapshot, layer or neuron (default snapshot).", "NAME", "snapshot"});
  parser.addOption({"focus-step", "The focus snapshot (default: the top anomaly's step).", "S"});
  parser.addOption({"layer", "The selected layer, by dotted name or id (default: the top suspect).", "NAME"});
  parser.addOption({"size", "Image size for --screenshot (default 1200x800).", "WxH", "1200x800"});
  parser.process(app);

  const QStringList positional = parser.positionalArguments();
  if (positional.size() > 1) return fail(2, "expected one RUN argument, got " + positional.join(' '));
  if (screenshot && positional.isEmpty()) return fail(2, "--screenshot needs a RUN argument");

  trainscope::viewer::MainWindow window;
  if (!screenshot) {
    window.resize(1500, 950);
    window.show();
    if (!positional.isEmpty()) window.open_run(positional.front());
    return app.exec();
  }

  const QString view_name = parser.value("view");
  trainscope::viewer::RunView* view = window.view(view_name);
  if (!view) return fail(2, "--view: unknown view '" + view_name + "' (use loss, snapshot, layer or neuron)");
  const QStringList size_parts = parser.value("size").split('x');
  bool ok_w = false, ok_h = false;
  const QSize size = size_parts.size() == 2 ? QSize(size_parts[0].toInt(&ok_w), size_parts[1].toInt(&ok_h)) : QSize();
  if (!ok_w || !ok_h || size.width() < 50 || size.height() < 50 || size.width() > 10000 || size.height() > 10000)
    return fail(2, "--size: expected WxH between 50x50 and 10000x10000, got '" + parser.value("size") + "'");
  std::optional<qint64> focus;
  if (parser.isSet("focus-step")) {
    bool ok = false;
    focus = parser.value("focus-step").toLongLong(&ok);
    if (!ok) return fail(2, "--focus-step: not an integer: '" + parser.value("focus-step") + "'");
  }

  auto& document = window.document();
  QString open_error;
  QObject::connect(&document, &trainscope::viewer::RunDocument::open_failed,
                   [&](const QString& message) { open_error = message; });
  window.open_run(positional.front());
  document.wait_idle();
  document.wait_idle();
  if (!open_error.isEmpty()) return fail(1, open_error);
  for (const QString& notice : document.notices())
    std::fprintf(stderr, "trainscope-viewer: notice: %s\n", qPrintable(notice));

  auto& state = window.state();
  if (parser.isSet("layer")) {
    const auto id = trainscope::analysis::find_layer(document.graph(), parser.value("layer").toStdString());
    if (!id) return fail(2, "--layer: no layer '" + parser.value("layer") + "' in " + positional.front());
    state.set_layer(int(*id));
  }
  if (focus) state.set_focus_step(document.nearest_snapshot_step(*focus));

  view->resize(size);
  // Views ask for their data in the background; wait until every request is answered (bounded, for safety).
  QElapsedTimer timer;
  timer.start();
  do {
    document.wait_idle();
    QCoreApplication::processEvents();
  } while ((document.busy() || view->waiting()) && timer.elapsed() < 120000);

  const QString error = trainscope::viewer::export_view(*view, parser.value("screenshot"), size);
  if (!error.isEmpty()) return fail(1, error);
  return 0;
}
