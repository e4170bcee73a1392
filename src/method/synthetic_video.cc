#include "veda/method/synthetic_video.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <numbers>

#include "veda/error.h"

namespace veda::method {
namespace {

// splitmix64 + Box-Muller: the same stream on every standard library (std::normal_distribution's
// algorithm is unspecified, so clips would differ between libstdc++ and libc++).
class Random {
 public:
  explicit Random(std::uint64_t seed)
      : state_(seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull) {}
  std::uint64_t bits() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(bits() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  double normal() {
    const double u1 = std::max(uniform(), 1e-300);
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * uniform());
  }

 private:
  std::uint64_t state_;
};

// Wan 2.1's split of d = 128 into rotary axes: 22 pairs for t, 21 for y, 21 for x.
constexpr std::array<std::int64_t, 3> kAxisPairs = {22, 21, 21};
constexpr std::int64_t kContentChannels = 16;
constexpr std::int64_t kWavesPerChannel = 3;
constexpr std::int64_t kSinks = 6;
constexpr std::int64_t kObjects = 4;
constexpr std::int64_t kSinkChannels = 4;
constexpr double kSinkLogit = 9.0;    // extra logit of a sink key for every query
constexpr double kObjectLogit = 7.0;  // extra logit between tokens of the same object
constexpr double kNoise = 0.3;        // iid per-channel noise of q and k

// Noise of element `counter`, from a hash of (seed, counter) so that threads need no shared
// stream: the centred sum of four 16-bit uniforms, scaled to unit variance (Irwin-Hall, close
// enough to Gaussian for noise).
double noise(std::uint64_t seed, std::uint64_t counter) {
  std::uint64_t z = seed ^ (counter * 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  double sum = 0;
  for (int i = 0; i < 4; ++i) sum += static_cast<double>((z >> (16 * i)) & 0xFFFF) / 65536.0;
  return (sum - 2.0) * std::sqrt(3.0);
}

struct Wave {
  double ky, kx, kt, phase;
};

// Positional amplitude^2 per pair of one axis: a Gaussian spectrum of width 1/reach (the weight
// omega_k corrects for the log spacing of the frequencies), scaled so that the mean logit over
// all offsets of the axis lies `strength` nats below the logit at offset 0.
std::vector<double> axis_power(double reach, double strength, std::int64_t pairs,
                               std::int64_t length, double scale) {
  std::vector<double> power(pairs, 0.0);
  if (reach <= 0 || strength <= 0) return power;
  std::vector<double> omega(pairs);
  for (std::int64_t k = 0; k < pairs; ++k) {
    omega[k] = std::pow(10000.0, -2.0 * static_cast<double>(k) / static_cast<double>(2 * pairs));
    power[k] = omega[k] * std::exp(-0.5 * omega[k] * reach * omega[k] * reach);
  }
  double peak = 0, mean = 0;
  for (std::int64_t k = 0; k < pairs; ++k) peak += power[k];
  for (std::int64_t delta = 0; delta < length; ++delta) {
    for (std::int64_t k = 0; k < pairs; ++k) {
      mean += power[k] * std::cos(omega[k] * static_cast<double>(delta));
    }
  }
  mean /= static_cast<double>(length);
  const double gain = strength / (scale * std::max(peak - mean, 1e-9));
  for (double& p : power) p *= gain;
  return power;
}

}  // namespace

std::string_view head_kind_name(HeadKind kind) {
  switch (kind) {
    case HeadKind::kSpatialWide:
      return "spatial-wide";
    case HeadKind::kSpatialTall:
      return "spatial-tall";
    case HeadKind::kTemporal:
      return "temporal";
    case HeadKind::k3dLocal:
      return "3d-local";
    case HeadKind::kTemporalTall:
      return "temporal-tall";
    case HeadKind::kSink:
      return "sink";
    case HeadKind::kObject:
      return "object";
    case HeadKind::kSpatialContent:
      return "spatial-content";
  }
  return "unknown";
}

std::vector<HeadGeometry> default_heads() {
  return {
      {HeadKind::kSpatialWide, 0.6, 1.5, 5.0, 8.0},
      {HeadKind::kSpatialTall, 0.6, 5.0, 1.5, 8.0},
      {HeadKind::kTemporal, 0.0, 0.8, 0.8, 8.0},
      {HeadKind::k3dLocal, 1.5, 2.5, 2.5, 8.0},
      {HeadKind::kTemporalTall, 3.0, 4.0, 0.8, 8.0},
      {HeadKind::kSink, 1.0, 2.0, 2.0, 5.0},
      {HeadKind::kObject, 2.0, 3.0, 3.0, 3.0},
      {HeadKind::kSpatialContent, 0.6, 3.0, 3.0, 6.0},
  };
}

SyntheticVideo generate_synthetic_video(const SyntheticVideoConfig& config) {
  config.grid.validate();
  const std::int64_t dim = config.dim;
  VEDA_CHECK(dim == 128, "synthetic video head dim is ", dim,
             "; the 3D rotary split (22/21/21 pairs) needs 128");
  VEDA_CHECK(!config.heads.empty(), "synthetic video needs at least one head");
  const Grid grid = config.grid;
  const std::int64_t n = grid.tokens(), heads = static_cast<std::int64_t>(config.heads.size());
  const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
  const std::array<std::int64_t, 3> axis_len = {grid.t, grid.h, grid.w};

  SyntheticVideo video;
  video.grid = grid;
  video.heads = heads;
  video.dim = dim;
  for (const auto& head : config.heads) video.kinds.push_back(head.kind);
  video.q.assign(n * heads * dim, 0.0f);
  video.k.assign(n * heads * dim, 0.0f);
  video.v.assign(n * heads * dim, 0.0f);

  // Rotary tables per axis: angle[pos][pair] = pos * omega_pair.
  std::array<std::vector<double>, 3> cos_table, sin_table;
  for (int axis = 0; axis < 3; ++axis) {
    const std::int64_t pairs = kAxisPairs[axis];
    cos_table[axis].resize(axis_len[axis] * pairs);
    sin_table[axis].resize(axis_len[axis] * pairs);
    for (std::int64_t pos = 0; pos < axis_len[axis]; ++pos) {
      for (std::int64_t k = 0; k < pairs; ++k) {
        const double omega =
            std::pow(10000.0, -2.0 * static_cast<double>(k) / static_cast<double>(2 * pairs));
        cos_table[axis][pos * pairs + k] = std::cos(omega * static_cast<double>(pos));
        sin_table[axis][pos * pairs + k] = std::sin(omega * static_cast<double>(pos));
      }
    }
  }

  // Model: per head, positional amplitudes and phases, content projections, sink channels,
  // object and content gains. Fixed by model_seed so every clip sees the same "weights".
  Random model(config.model_seed);
  struct HeadModel {
    std::vector<double> amplitude;            // [64] per pair, sqrt of the power
    std::vector<double> dir_cos, dir_sin;     // [64] unit direction per pair
    std::vector<double> wq, wk, wv;           // [D, C] content projections
    std::vector<std::int64_t> sink_channels;  // massive-activation channels
  };
  std::vector<HeadModel> head_models(heads);
  for (std::int64_t h = 0; h < heads; ++h) {
    const HeadGeometry& g = config.heads[h];
    HeadModel& hm = head_models[h];
    const std::array<double, 3> reach = {g.reach_t, g.reach_y, g.reach_x};
    for (int axis = 0; axis < 3; ++axis) {
      for (double p :
           axis_power(reach[axis], g.strength, kAxisPairs[axis], axis_len[axis], scale)) {
        hm.amplitude.push_back(std::sqrt(p));
      }
    }
    for (std::int64_t k = 0; k < dim / 2; ++k) {
      const double angle = model.uniform(0, 2 * std::numbers::pi);
      hm.dir_cos.push_back(std::cos(angle));
      hm.dir_sin.push_back(std::sin(angle));
    }
    // Content logit std about 1 nat (3 for the content head): std of s*qc.kc = g^2 C.
    const double content_logit = g.kind == HeadKind::kSpatialContent ? 3.0 : 1.0;
    const double gain = std::sqrt(content_logit / static_cast<double>(kContentChannels));
    for (std::int64_t i = 0; i < dim * kContentChannels; ++i) {
      hm.wq.push_back(gain * model.normal());
      hm.wk.push_back(gain * model.normal());
      hm.wv.push_back(model.normal() / std::sqrt(static_cast<double>(kContentChannels)));
    }
    while (static_cast<std::int64_t>(hm.sink_channels.size()) < kSinkChannels) {
      const auto channel = static_cast<std::int64_t>(model.bits() % dim);
      if (std::find(hm.sink_channels.begin(), hm.sink_channels.end(), channel) ==
          hm.sink_channels.end()) {
        hm.sink_channels.push_back(channel);
      }
    }
  }

  // Clip content: smooth drifting fields, moving objects, sink positions.
  Random clip(config.seed);
  std::vector<Wave> waves(kContentChannels * kWavesPerChannel);
  for (Wave& wave : waves) {
    const double wavelength = clip.uniform(8.0, 32.0);
    const double direction = clip.uniform(0, 2 * std::numbers::pi);
    wave.ky = 2 * std::numbers::pi / wavelength * std::sin(direction);
    wave.kx = 2 * std::numbers::pi / wavelength * std::cos(direction);
    wave.kt = clip.uniform(-0.5, 0.5);
    wave.phase = clip.uniform(0, 2 * std::numbers::pi);
  }
  struct Object {
    double y0, x0, vy, vx, ry, rx;
    std::vector<double> embedding;  // [D], unit
  };
  std::vector<Object> objects(kObjects);
  for (Object& o : objects) {
    o.y0 = clip.uniform(0, static_cast<double>(grid.h));
    o.x0 = clip.uniform(0, static_cast<double>(grid.w));
    o.vy = clip.uniform(-1.5, 1.5);
    o.vx = clip.uniform(-1.5, 1.5);
    o.ry = clip.uniform(3.0, 7.0);
    o.rx = clip.uniform(3.0, 7.0);
    double norm = 0;
    for (std::int64_t d = 0; d < dim; ++d) {
      o.embedding.push_back(clip.normal());
      norm += o.embedding.back() * o.embedding.back();
    }
    for (double& e : o.embedding) e /= std::sqrt(norm);
  }
  std::vector<std::int64_t> sinks;
  for (std::int64_t i = 0; i < kSinks; ++i)
    sinks.push_back(static_cast<std::int64_t>(clip.bits() % n));
  const std::uint64_t noise_seed = clip.bits();

  const double object_gain = std::sqrt(kObjectLogit / scale);
  const double sink_query = 1.5;
  const double sink_key = kSinkLogit / (scale * sink_query);

#pragma omp parallel for schedule(static)
  for (std::int64_t token = 0; token < n; ++token) {
    const std::int64_t t = token / (grid.h * grid.w);
    const std::int64_t y = (token / grid.w) % grid.h;
    const std::int64_t x = token % grid.w;
    const std::array<std::int64_t, 3> pos = {t, y, x};
    std::array<double, kContentChannels> content{};
    for (std::int64_t c = 0; c < kContentChannels; ++c) {
      double value = 0;
      for (std::int64_t j = 0; j < kWavesPerChannel; ++j) {
        const Wave& wave = waves[c * kWavesPerChannel + j];
        value += std::cos(wave.ky * static_cast<double>(y) + wave.kx * static_cast<double>(x) +
                          wave.kt * static_cast<double>(t) + wave.phase);
      }
      content[c] = value / std::sqrt(0.5 * kWavesPerChannel);
    }
    std::array<double, kObjects> membership{};
    for (std::int64_t o = 0; o < kObjects; ++o) {
      const Object& ob = objects[o];
      const double dy = (static_cast<double>(y) - ob.y0 - ob.vy * static_cast<double>(t)) / ob.ry;
      const double dx = (static_cast<double>(x) - ob.x0 - ob.vx * static_cast<double>(t)) / ob.rx;
      membership[o] = 1.0 / (1.0 + std::exp(-4.0 * (1.0 - dy * dy - dx * dx)));
    }
    const bool is_sink = std::find(sinks.begin(), sinks.end(), token) != sinks.end();

    for (std::int64_t h = 0; h < heads; ++h) {
      const HeadModel& hm = head_models[h];
      const HeadKind kind = config.heads[h].kind;
      const std::int64_t base = (token * heads + h) * dim;
      std::array<double, 128> q{}, k{}, v{};
      // Rotary part: pair p of axis a rotated by pos[a] * omega.
      std::int64_t pair = 0;
      for (int axis = 0; axis < 3; ++axis) {
        for (std::int64_t j = 0; j < kAxisPairs[axis]; ++j, ++pair) {
          const double c = cos_table[axis][pos[axis] * kAxisPairs[axis] + j];
          const double s = sin_table[axis][pos[axis] * kAxisPairs[axis] + j];
          const double a = hm.amplitude[pair];
          const double u0 = a * hm.dir_cos[pair], u1 = a * hm.dir_sin[pair];
          q[2 * pair] = k[2 * pair] = c * u0 - s * u1;
          q[2 * pair + 1] = k[2 * pair + 1] = s * u0 + c * u1;
        }
      }
      for (std::int64_t d = 0; d < dim; ++d) {
        double cq = 0, ck = 0, cv = 0;
        for (std::int64_t c = 0; c < kContentChannels; ++c) {
          cq += hm.wq[d * kContentChannels + c] * content[c];
          ck += hm.wk[d * kContentChannels + c] * content[c];
          cv += hm.wv[d * kContentChannels + c] * content[c];
        }
        const auto element = static_cast<std::uint64_t>(base + d);
        q[d] += cq + kNoise * noise(noise_seed, 3 * element);
        k[d] += ck + kNoise * noise(noise_seed, 3 * element + 1);
        v[d] = cv + noise(noise_seed, 3 * element + 2);
      }
      if (kind == HeadKind::kObject) {
        for (std::int64_t o = 0; o < kObjects; ++o) {
          for (std::int64_t d = 0; d < dim; ++d) {
            const double e = object_gain * membership[o] * objects[o].embedding[d];
            q[d] += e;
            k[d] += e;
          }
        }
      }
      if (kind == HeadKind::kSink) {
        const double unit = 1.0 / std::sqrt(static_cast<double>(kSinkChannels));
        for (std::int64_t c : hm.sink_channels) {
          q[c] += sink_query * unit;
          if (is_sink) k[c] += sink_key * unit;
        }
      }
      for (std::int64_t d = 0; d < dim; ++d) {
        video.q[base + d] = static_cast<float>(q[d]);
        video.k[base + d] = static_cast<float>(k[d]);
        video.v[base + d] = static_cast<float>(v[d]);
      }
    }
  }
  return video;
}

}  // namespace veda::method
