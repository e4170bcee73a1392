// A synthetic video-attention layer: q, k, v [1, N, H, 128] over a T x H x W latent grid, with
// heads of different geometry, deterministic from a seed. It is the embedded input of `veda demo`.
//
// Construction (per head, per token at grid position p = (t, y, x)):
//   q = rope(p) (a ⊙ u) + W_q c(p) + object/sink terms + noise,  k likewise with the same a, u.
// 3D rotary embedding as in Wan 2.1: of the 64 channel pairs, 22 rotate with t, 21 with y, 21 with
// x, pair k of an axis at frequency 10000^(-2k/d_axis). With the same amplitude a_k in q and k,
// pair k contributes a_k^2 cos(omega_k * delta) to q.k: the head's positional kernel. The powers
// a_k^2 follow a Gaussian spectrum of width 1/reach (so the kernel is ~exp(-delta^2 / 2 reach^2)),
// scaled so that the logit at delta = 0 stands `strength` nats above its mean over the axis
// (reach <= 0: the axis is ignored, attention is flat along it). Content logits (W_q c . W_k c)
// have a std of ~1 nat (3 for the spatial-content head); sinks add 9 nats, objects 7. c(p) is a
// smooth random content field (a few drifting low-frequency waves), shared by all heads of a clip,
// and carries the clip-to-clip variation; the model (amplitudes, projections, head kinds) is fixed
// by model_seed, the content (fields, objects, sinks, noise) by the clip seed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "veda/tile_layout.h"
#include "veda/tokens.h"

namespace veda::method {

// What real video-DiT head each kind stands for (the patterns Sparse VideoGen, STA and Radial
// Attention report in Wan / HunyuanVideo: spatial, temporal, local-3D, sink, semantic heads).
enum class HeadKind {
  // Within the frame, a wider reach along x than along y: the "spatial" heads (frame-local
  // attention), anisotropic like the 16:9 latent frame.
  kSpatialWide,
  // Within the frame, a wider reach along y than along x.
  kSpatialTall,
  // The same place across every frame: the temporal heads that track a pixel through the clip.
  kTemporal,
  // A local 3D neighbourhood (a few frames, a few tokens): the common "3D-local" heads.
  k3dLocal,
  // A thin vertical slab over several frames (y and t reach, narrow x): vertical motion heads.
  kTemporalTall,
  // A few high-norm tokens (massive activations on a few channels) attract every query, on top
  // of a weak local kernel: the attention-sink / register heads.
  kSink,
  // Tokens of the same moving object attend to each other across frames, wherever it moved:
  // the semantic / content-clustered heads.
  kObject,
  // Mostly local in the frame plus a global content term: the mixed heads of late layers.
  kSpatialContent,
};
std::string_view head_kind_name(HeadKind kind);

struct HeadGeometry {
  HeadKind kind = HeadKind::k3dLocal;
  double reach_t = 0, reach_y = 0, reach_x = 0;  // kernel half-width per axis, tokens
  double strength = 0;  // logit drop (nats) from delta 0 to far along the localised axes
};

// The default heads of the demo model, one per kind.
std::vector<HeadGeometry> default_heads();

struct SyntheticVideoConfig {
  Grid grid{8, 32, 48};  // 12,288 tokens, 96 tiles of 128
  std::int64_t dim = 128;
  std::vector<HeadGeometry> heads = default_heads();
  std::uint64_t model_seed = 2605;  // fixes the "weights"
  std::uint64_t seed = 1;           // fixes the clip's content
};

struct SyntheticVideo {
  Grid grid;
  std::int64_t heads = 0, dim = 0;
  std::vector<HeadKind> kinds;  // [H]
  std::vector<float> q, k, v;   // [1, N, H, D] float32, frame-major tokens

  TokensView q_view() const {
    return TokensView::contiguous(q.data(), DType::kF32, 1, grid.tokens(), heads, dim);
  }
  TokensView k_view() const {
    return TokensView::contiguous(k.data(), DType::kF32, 1, grid.tokens(), heads, dim);
  }
  TokensView v_view() const {
    return TokensView::contiguous(v.data(), DType::kF32, 1, grid.tokens(), heads, dim);
  }
};

SyntheticVideo generate_synthetic_video(const SyntheticVideoConfig& config);

}  // namespace veda::method
