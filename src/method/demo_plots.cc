#include "veda/method/demo_plots.h"

#include <cairo.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <memory>
#include <numbers>
#include <sstream>
#include <utility>

#include "veda/error.h"

namespace veda::method {
namespace {

using Surface = std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)>;
using Context = std::unique_ptr<cairo_t, decltype(&cairo_destroy)>;

// A white RGB canvas of width x height pixels; the context draws on the surface.
struct Canvas {
  Surface surface;
  Context context;
};
Canvas white_canvas(int width, int height) {
  Surface surface(cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height),
                  cairo_surface_destroy);
  Context context(cairo_create(surface.get()), cairo_destroy);
  cairo_set_source_rgb(context.get(), 1, 1, 1);
  cairo_paint(context.get());
  return {std::move(surface), std::move(context)};
}

struct Rgb {
  double r, g, b;
};

// Viridis at five anchors, linearly interpolated; x in [0, 1].
Rgb viridis(double x) {
  static constexpr std::array<Rgb, 5> kAnchors = {
      Rgb{0.267, 0.005, 0.329}, Rgb{0.230, 0.322, 0.546}, Rgb{0.128, 0.567, 0.551},
      Rgb{0.369, 0.789, 0.383}, Rgb{0.993, 0.906, 0.144}};
  x = std::clamp(x, 0.0, 1.0) * (kAnchors.size() - 1);
  const auto i = std::min<std::size_t>(static_cast<std::size_t>(x), kAnchors.size() - 2);
  const double f = x - static_cast<double>(i);
  return {kAnchors[i].r + f * (kAnchors[i + 1].r - kAnchors[i].r),
          kAnchors[i].g + f * (kAnchors[i + 1].g - kAnchors[i].g),
          kAnchors[i].b + f * (kAnchors[i + 1].b - kAnchors[i].b)};
}

void save_png(cairo_surface_t* surface, const std::string& path) {
  cairo_surface_flush(surface);
  const std::string temporary = path + ".tmp.png";
  const cairo_status_t status = cairo_surface_write_to_png(surface, temporary.c_str());
  if (status != CAIRO_STATUS_SUCCESS) {
    std::remove(temporary.c_str());
    detail::fail(path, ": cannot write the PNG (", cairo_status_to_string(status), ")");
  }
  VEDA_CHECK(std::rename(temporary.c_str(), path.c_str()) == 0, path,
             ": cannot move the written PNG into place");
}

void text_at(cairo_t* cr, double x, double y, const std::string& text, double size = 13) {
  cairo_set_font_size(cr, size);
  cairo_move_to(cr, x, y);
  cairo_show_text(cr, text.c_str());
}

}  // namespace

bool demo_plots_available() { return true; }

void write_tile_heat_png(const std::string& path, const DemoPicture& picture) {
  const std::int64_t tiles = picture.tiles;
  VEDA_CHECK(tiles > 0 && static_cast<std::int64_t>(picture.heat.size()) == tiles * tiles &&
                 static_cast<std::int64_t>(picture.oracle.size()) == tiles * tiles &&
                 static_cast<std::int64_t>(picture.veda.size()) == tiles * tiles,
             path, ": the heat picture has no data for ", tiles, " tiles");
  const double cell = std::max(3.0, std::floor(720.0 / static_cast<double>(tiles)));
  const double left = 60, top = 50, side = cell * static_cast<double>(tiles);
  const int width = static_cast<int>(left + side + 110), height = static_cast<int>(top + side + 60);
  const Canvas canvas = white_canvas(width, height);
  cairo_t* cr = canvas.context.get();

  // Colour: log10 heat over [max - 6, max].
  float max_heat = 0;
  for (float h : picture.heat) max_heat = std::max(max_heat, h);
  const double hi = std::log10(std::max(max_heat, 1e-30f)), lo = hi - 6;
  for (std::int64_t i = 0; i < tiles; ++i) {
    for (std::int64_t j = 0; j < tiles; ++j) {
      const double value = std::log10(std::max(picture.heat[i * tiles + j], 1e-30f));
      const Rgb c = viridis((value - lo) / (hi - lo));
      cairo_set_source_rgb(cr, c.r, c.g, c.b);
      cairo_rectangle(cr, left + static_cast<double>(j) * cell, top + static_cast<double>(i) * cell,
                      cell, cell);
      cairo_fill(cr);
    }
  }
  // Oracle: white square outlines; Veda: red dots.
  cairo_set_line_width(cr, std::max(1.0, cell / 6));
  for (std::int64_t i = 0; i < tiles; ++i) {
    for (std::int64_t j = 0; j < tiles; ++j) {
      const double x = left + static_cast<double>(j) * cell,
                   y = top + static_cast<double>(i) * cell;
      if (picture.oracle[i * tiles + j]) {
        cairo_set_source_rgb(cr, 1, 1, 1);
        cairo_rectangle(cr, x + 0.5, y + 0.5, cell - 1, cell - 1);
        cairo_stroke(cr);
      }
      if (picture.veda[i * tiles + j]) {
        cairo_set_source_rgb(cr, 0.9, 0.1, 0.1);
        cairo_arc(cr, x + cell / 2, y + cell / 2, cell / 4, 0, 2 * std::numbers::pi);
        cairo_fill(cr);
      }
    }
  }
  cairo_set_source_rgb(cr, 0, 0, 0);
  text_at(cr, left, 20, "oracle tile heat, " + picture.caption);
  text_at(cr, left, 38, "white squares: oracle top-k; red dots: Veda (distilled)", 12);
  text_at(cr, left + side / 2 - 30, top + side + 20, "key tile", 12);
  cairo_save(cr);
  cairo_move_to(cr, 20, top + side / 2 + 30);
  cairo_rotate(cr, -std::numbers::pi / 2);
  cairo_set_font_size(cr, 12);
  cairo_show_text(cr, "query tile");
  cairo_restore(cr);
  // Colour bar.
  const double bar_x = left + side + 20;
  for (int s = 0; s < 100; ++s) {
    const Rgb c = viridis(1.0 - s / 99.0);
    cairo_set_source_rgb(cr, c.r, c.g, c.b);
    cairo_rectangle(cr, bar_x, top + side * s / 100.0, 16, side / 100.0 + 1);
    cairo_fill(cr);
  }
  cairo_set_source_rgb(cr, 0, 0, 0);
  for (int tick = 0; tick <= 6; tick += 2) {
    std::ostringstream label;
    label << "1e" << static_cast<int>(std::round(hi - tick));
    text_at(cr, bar_x + 20, top + side * tick / 6.0 + 4, label.str(), 11);
  }
  save_png(canvas.surface.get(), path);
}

void write_rel_l2_plot(const std::string& path, const DemoResult& result) {
  VEDA_CHECK(!result.rows.empty(), path, ": no demo rows to plot");
  const int width = 720, height = 480;
  const double left = 70, right = 170, top = 40, bottom = 60;
  const double plot_w = width - left - right, plot_h = height - top - bottom;
  double x_min = 1, x_max = 0, y_max = 0;
  for (const DemoRow& row : result.rows) {
    x_min = std::min(x_min, row.sparsity);
    x_max = std::max(x_max, row.sparsity);
    y_max = std::max(y_max, row.rel_l2);
  }
  if (x_max - x_min < 1e-9) {
    x_min -= 0.05;
    x_max += 0.05;
  }
  y_max = std::ceil(y_max * 10 + 0.5) / 10;
  auto px = [&](double x) { return left + (x - x_min) / (x_max - x_min) * plot_w; };
  auto py = [&](double y) { return top + plot_h - y / y_max * plot_h; };

  const Canvas canvas = white_canvas(width, height);
  cairo_t* cr = canvas.context.get();
  // Axes, grid and ticks.
  cairo_set_line_width(cr, 1);
  for (int tick = 0; tick <= 5; ++tick) {
    const double y = y_max * tick / 5.0;
    cairo_set_source_rgb(cr, 0.88, 0.88, 0.88);
    cairo_move_to(cr, left, py(y));
    cairo_line_to(cr, left + plot_w, py(y));
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0, 0, 0);
    std::ostringstream label;
    label.precision(2);
    label << std::fixed << y;
    text_at(cr, left - 42, py(y) + 4, label.str(), 12);
  }
  std::vector<double> xs;
  for (const DemoRow& row : result.rows) {
    if (std::find(xs.begin(), xs.end(), row.sparsity) == xs.end()) xs.push_back(row.sparsity);
  }
  for (double x : xs) {
    std::ostringstream label;
    label << static_cast<int>(std::round(x * 100)) << "%";
    text_at(cr, px(x) - 12, top + plot_h + 20, label.str(), 12);
  }
  cairo_set_source_rgb(cr, 0, 0, 0);
  cairo_rectangle(cr, left, top, plot_w, plot_h);
  cairo_stroke(cr);
  text_at(cr, left, 24, "output rel-L2 vs dense, whole layer (lower is better)");
  text_at(cr, left + plot_w / 2 - 30, height - 18, "sparsity", 13);

  const std::array<std::pair<const char*, Rgb>, 5> methods = {
      std::pair{"oracle", Rgb{0.2, 0.2, 0.2}}, std::pair{"veda", Rgb{0.85, 0.1, 0.1}},
      std::pair{"stats", Rgb{0.95, 0.55, 0.1}}, std::pair{"meanpool", Rgb{0.15, 0.4, 0.8}},
      std::pair{"window", Rgb{0.4, 0.65, 0.3}}};
  int legend = 0;
  for (const auto& [name, colour] : methods) {
    std::vector<std::pair<double, double>> points;
    for (const DemoRow& row : result.rows) {
      if (row.method == name) points.emplace_back(row.sparsity, row.rel_l2);
    }
    if (points.empty()) continue;
    std::sort(points.begin(), points.end());
    cairo_set_source_rgb(cr, colour.r, colour.g, colour.b);
    cairo_set_line_width(cr, 2.5);
    for (std::size_t i = 0; i < points.size(); ++i) {
      if (i == 0) {
        cairo_move_to(cr, px(points[i].first), py(points[i].second));
      } else {
        cairo_line_to(cr, px(points[i].first), py(points[i].second));
      }
    }
    cairo_stroke(cr);
    for (const auto& [x, y] : points) {
      cairo_arc(cr, px(x), py(y), 4, 0, 2 * std::numbers::pi);
      cairo_fill(cr);
    }
    const double ly = top + 20 + 24 * legend++;
    cairo_move_to(cr, left + plot_w + 15, ly);
    cairo_line_to(cr, left + plot_w + 45, ly);
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0, 0, 0);
    text_at(cr, left + plot_w + 52, ly + 4, name, 13);
  }
  save_png(canvas.surface.get(), path);
}

}  // namespace veda::method
