// Helpers for the viewer tests: a synthetic run, an opened document, image checks (and, from tests/format, TempDir
// and run_command).
#pragma once

#include "run_document.h"
#include "run_view.h"
#include "test_support.h"  // TempDir, run_command
#include "viewer_state.h"

#include <QImage>
#include <QRect>

#include <filesystem>
#include <memory>
#include <string>

namespace trainscope::testing {

// Writes the synthetic run `name` (see tests/analysis/synthetic_runs.h) under `dir` and returns its path.
std::filesystem::path write_run(const std::string& name, const std::filesystem::path& dir);

// Opens `run` and waits until it is open and analysed; fails the test (and returns false) on an open failure.
bool open_and_wait(viewer::RunDocument& document, const std::filesystem::path& run);

// The view drawn at its widget size, as the screen, the export and the screenshots draw it.
QImage render(viewer::RunView& view);

// Number of distinct colours in `rect` of `image` (a blank or single-colour image has 1).
int distinct_colors(const QImage& image, QRect rect = {});
// Pixels in `rect` whose colour is within `tolerance` (per channel) of `color`.
int count_color(const QImage& image, QColor color, int tolerance = 30, QRect rect = {});

}  // namespace trainscope::testing
