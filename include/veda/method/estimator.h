// Distillation of the tile estimator of one (layer, head) (DESIGN.md section 2):
//
//   q^_i = feat(Q_i) P_q + mean(Q_i),  k^_j = feat(K_j) P_k + mean(K_j),  z = s q^ k^T  [Tq, Tk]
//   loss = 1/Tq sum_i KL(t_i || softmax(z_i))
//
// Teacher: t_i = softmax(log heat_i / temperature), i.e. heat_ij^(1/tau) / sum_j heat_ij^(1/tau);
// the default tau = 1 is the row-normalised oracle tile heat. Gradients, with G = (softmax(z) -
// t)/Tq:
//   dz = G,  dq^ = s G k^,  dk^ = s G^T q^,  dP_q = feat(Q)^T dq^,  dP_k = feat(K)^T dk^.
// P has 2 * 3D * D parameters per head (98,304 at D = 128) against Tq*Tk teacher entries per
// sample (9,216 at 96 tiles), so training uses decoupled weight decay and early stopping on
// held-out samples, fits the diagonal structure too and keeps whichever generalises better,
// and reports both losses.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace veda::method {

// One calibration sample of one head, in the head's tile shape.
struct DistillSample {
  std::int64_t q_tiles = 0, k_tiles = 0;
  std::vector<float> q_stats;  // [Tq, 3, D] mean, max, min (tile_statistics)
  std::vector<float> k_stats;  // [Tk, 3, D]
  std::vector<float> teacher;  // [Tq, Tk], rows sum to 1
};

// softmax(log heat / temperature) per row of heat [q_tiles, k_tiles]; temperature > 0.
std::vector<float> teacher_from_heat(std::span<const float> heat, std::int64_t q_tiles,
                                     std::int64_t k_tiles, double temperature);

struct EstimatorParams {
  std::int64_t dim = 0;
  std::vector<float> p_q, p_k;  // [3D, D] row-major each; zeros = mean pooling

  static EstimatorParams zeros(std::int64_t dim);
};

// Which entries of P_q, P_k are trained (the others stay zero).
enum class ProjectionStructure {
  kFull,      // all 3D x D entries (98,304 per head at D = 128)
  kDiagonal,  // P[c * D + d, d] only: per channel, weights of its own mean, max and min
              // (768 per head): q^_d = (1 + a_d) mean_d + b_d max_d + c_d min_d
};

// The loss of one sample, and its gradient added into *grad when grad is not null. kDiagonal
// assumes the off-diagonal entries are zero and computes only the diagonal ones (O(T * 3D)
// descriptors instead of O(T * 3D * D)); the other entries of *grad are left untouched.
double estimator_kl(const EstimatorParams& params, const DistillSample& sample, float scale,
                    EstimatorParams* grad,
                    ProjectionStructure structure = ProjectionStructure::kFull);

// Defaults: the diagonal structure. On the demo's clips it generalises (held-out KL 1.3 -> 0.27)
// where the full P overfits one clip's 96 x 96 teacher (train 1.4 -> 0.16, held-out 1.4 ->
// 0.5); on the testbed's 30 clips x 3 t the full P wins on held-out clips of the same grid (18 of
// 18 heads) but transfers worse to a 4x larger grid (1.5-1.7 dB lower PSNR; bench/RESULTS.md).
// {kDiagonal, kFull} fits both and keeps the lower held-out loss per head. Adam at 1e-2 stops
// early after 100-300 steps.
struct DistillConfig {
  // Fitted in turn from the same start; kept: the lowest held-out loss (ties, and runs without
  // held-out samples: the earlier entry, as train loss always favours the larger structure).
  std::vector<ProjectionStructure> structures = {ProjectionStructure::kDiagonal};
  int max_steps = 300;
  double learning_rate = 1e-2;
  double weight_decay = 1e-2;  // decoupled (AdamW), per step: P -= lr * wd * P
  int eval_every = 10;         // held-out evaluation period, steps
  int patience = 6;            // evaluations without held-out improvement before stopping
  int warmup_steps = 100;      // no early stop before (a full P's first Adam steps can raise the
                               // held-out loss before it falls)
};

const char* structure_name(ProjectionStructure structure);  // "diagonal" or "full"

struct DistillReport {
  ProjectionStructure structure = ProjectionStructure::kDiagonal;  // the one kept
  double train_before = 0, train_after = 0;                        // mean KL over training samples
  double heldout_before = 0, heldout_after = 0;  // same on held-out samples (0 if none)
  int steps = 0;                                 // steps run
  int best_step = 0;  // step whose parameters were kept (lowest held-out, else train, loss)
  std::vector<double> heldout_after_each;  // per DistillConfig::structures entry
};

// Fits params (usually zeros on entry) with full-batch Adam on `train` in each of
// config.structures, keeping the parameters of the best held-out loss (train loss if heldout is
// empty). Single-threaded: callers run heads in parallel.
DistillReport distill_estimator(std::span<const DistillSample> train,
                                std::span<const DistillSample> heldout, float scale,
                                const DistillConfig& config, EstimatorParams& params);

}  // namespace veda::method
