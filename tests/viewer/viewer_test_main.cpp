// One QApplication for every viewer test, on the offscreen platform so the tests need no display.
#include <gtest/gtest.h>

#include <QApplication>

int main(int argc, char** argv) {
  if (qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) qputenv("QT_QPA_PLATFORM", "offscreen");
  QApplication app(argc, argv);
  QApplication::setOrganizationName("TrainscopeTests");  // keeps QSettings away from the user's own
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
