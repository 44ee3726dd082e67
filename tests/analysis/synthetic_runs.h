// Recordings with known failures, written with the real format writer, for the analysis tests and golden files.
// Each is deterministic: the same name always gives the same bytes of data.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace trainscope::testing {

// "healthy", "nan_in_fc2" (fc2's activation turns Inf at step 120, NaN spreads forward and to every gradient),
// "exploding_fc1" (fc1's weight gradient grows 1.5x per step from step 200; the loss spikes then diverges),
// "dead_act1" (80% of act1's units are always zero; the loss stalls).
std::vector<std::string> synthetic_run_names();
void write_synthetic_run(const std::string& name, const std::filesystem::path& dir);

}  // namespace trainscope::testing
