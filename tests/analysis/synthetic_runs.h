// Recordings with known failures, written with the real format writer, for the analysis tests and golden files.
// Each is deterministic: the same name always gives the same bytes of data.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace trainscope::testing {

// "healthy", "nan_in_fc2" (fc2's activation turns Inf at step 120, NaN spreads forward and to every gradient),
// "exploding_fc1" (fc1's weight gradient grows 1.5x per step from step 200; the loss spikes then diverges),
// "dead_act1" (80% of act1's units are always zero; the loss stalls).
std::vector<std::string> synthetic_run_names();
void write_synthetic_run(const std::string& name, const std::filesystem::path& dir);

// A small run for credit assignment and the neuron view: fc1 (4 neurons) -> fc2 (3 neurons), plus an unconnected
// conv layer (2 channels of 3x3). fc2's weights are full tensors at steps 0, 10, 20 (not 30); fc1's per-neuron
// activation means exist at 0, 10, 20, 30; conv's probe-batch activation (one sample) at step 10, channel c at
// (y, x) = c * 10 + y * 3 + x. The values are known in closed form:
float credit_run_weight(int64_t step, int target, int source);  // (target + 1) (source - 1.5) (1 + step / 10)
float credit_run_activation(int64_t step, int neuron);          // (neuron + 1)² (1 - step / 40)
void write_credit_run(const std::filesystem::path& dir);

}  // namespace trainscope::testing
