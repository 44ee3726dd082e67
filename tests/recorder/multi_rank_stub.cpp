// Built when libgloo-dev is missing: no Gloo child mode.
#include "recorder_test_support.h"

namespace trainscope::test {
int gloo_child_main(int, char**) {
  return -1;
}
}  // namespace trainscope::test
