// Conversions between the plain metadata structs and their protobuf form.
#pragma once

#include <trainscope/format/metadata.h>

#include "trainscope.pb.h"

namespace trainscope::format {

void to_proto(const RunMetadata& in, proto::RunMetadata* out);
RunMetadata from_proto(const proto::RunMetadata& in);

}  // namespace trainscope::format
