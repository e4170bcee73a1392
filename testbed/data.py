"""Deterministic video clips synthesised from the photographs bundled in scikit-image's wheel.

A clip is a virtual camera moving over a photograph (pan, zoom or slow rotation) with one or two
cut-outs of other photographs (soft elliptical masks) moving over it in screen space, drawn in
order, so they occlude the background and each other. Everything is rendered with
`torch.nn.functional.grid_sample` (bilinear) on the requested device.

Conditioning: a "prompt" class is (background photo, camera motion): 4 x 3 = 12 classes.
Everything else (start point, direction, speed, zoom, angle, objects and their paths) is drawn
from a numpy generator seeded by the clip's seed, so a seed (and class) gives the same clip on
every call. Output: [C=3, F, H, W] float32 in [-1, 1].

The photo is resized (with antialiasing) so its short side is 2 * H, so the same seed at a larger
H, W shows the same scene at a higher resolution. No file is downloaded: only photos shipped in
the scikit-image wheel (skimage/data/*.png, *.jpg) are used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

PHOTOS: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket")
MOTIONS: tuple[str, ...] = ("pan", "zoom", "rotate")
CLASSES: tuple[tuple[str, str], ...] = tuple((p, m) for p in PHOTOS for m in MOTIONS)
NUM_CLASSES = len(CLASSES)


@dataclass(frozen=True)
class Sprite:
    """A cut-out: the ellipse inscribed in box (y0, x0, y1, x1) of a photo, in its pixels."""

    photo: str
    box: tuple[int, int, int, int]


SPRITES: tuple[Sprite, ...] = (
    Sprite("astronaut", (15, 150, 190, 290)),  # face
    Sprite("astronaut", (345, 280, 512, 505)),  # helmet
    Sprite("chelsea", (20, 100, 290, 370)),  # cat's face
    Sprite("coffee", (30, 130, 370, 470)),  # cup and saucer
    Sprite("rocket", (120, 280, 410, 360)),  # the rocket
)


def class_id(photo: str, motion: str) -> int:
    return CLASSES.index((photo, motion))


def class_name(cid: int) -> str:
    photo, motion = CLASSES[cid]
    return f"{photo}-{motion}"


def load_photo(name: str) -> torch.Tensor:
    """A bundled photograph as [3, H, W] float32 in [-1, 1] (grey images repeated)."""
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = image[..., :3].astype(np.float32) / 127.5 - 1.0  # [H, W, 3]
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))  # [3, H, W]


def _resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    # image [C, H, W] -> [C, height, width], antialiased
    return F.interpolate(
        image[None], size=(height, width), mode="bilinear", antialias=True, align_corners=False
    )[0]


def _soft_ellipse(height: int, width: int, edge: float = 0.08) -> torch.Tensor:
    """Alpha [1, height, width]: 1 inside the inscribed ellipse, a linear ramp over `edge`."""
    y = (torch.arange(height, dtype=torch.float32) + 0.5) / height * 2 - 1  # [height]
    x = (torch.arange(width, dtype=torch.float32) + 0.5) / width * 2 - 1  # [width]
    radius = torch.sqrt(y[:, None] ** 2 + x[None, :] ** 2)  # [height, width]
    return ((1 - radius) / edge).clamp(0, 1)[None]


def _rotation_grid(
    height: int,
    width: int,
    center_x: torch.Tensor,  # [F] in source pixels
    center_y: torch.Tensor,  # [F]
    scale: torch.Tensor,  # [F] source pixels per output pixel
    angle: torch.Tensor,  # [F] radians
    offset_x: torch.Tensor,  # [F] output pixel the source center maps to
    offset_y: torch.Tensor,  # [F]
    source_height: int,
    source_width: int,
) -> torch.Tensor:
    """Sampling grid [F, height, width, 2] (normalised, align_corners=False) that maps output
    pixel q to source point center + scale * R(angle) (q - offset)."""
    device = center_x.device
    ys = torch.arange(height, device=device, dtype=torch.float32) + 0.5  # [H]
    xs = torch.arange(width, device=device, dtype=torch.float32) + 0.5  # [W]
    dx = xs[None, None, :] - offset_x[:, None, None]  # [F, 1, W]
    dy = ys[None, :, None] - offset_y[:, None, None]  # [F, H, 1]
    cos = (torch.cos(angle) * scale)[:, None, None]  # [F, 1, 1]
    sin = (torch.sin(angle) * scale)[:, None, None]
    source_x = center_x[:, None, None] + cos * dx - sin * dy  # [F, H, W]
    source_y = center_y[:, None, None] + sin * dx + cos * dy  # [F, H, W]
    grid_x = 2 * source_x / source_width - 1
    grid_y = 2 * source_y / source_height - 1
    return torch.stack((grid_x, grid_y), dim=-1)  # [F, H, W, 2]


class ClipGenerator:
    """Renders clips of `frames` x `height` x `width` on `device`; photos cached per instance."""

    def __init__(
        self, frames: int = 16, height: int = 96, width: int = 128, device: str = "cpu"
    ) -> None:
        if frames < 2 or height < 8 or width < 8:
            raise ValueError(f"clip {frames}x{height}x{width}: need frames >= 2, sides >= 8")
        self.frames, self.height, self.width = frames, height, width
        self.device = torch.device(device)
        self._photos: dict[str, torch.Tensor] = {}
        self._sprites: dict[int, torch.Tensor] = {}

    def photo(self, name: str) -> torch.Tensor:
        """Background photo [3, Hp, Wp] with short side 2 * height, on the device."""
        if name not in self._photos:
            image = load_photo(name)  # [3, H0, W0]
            short = 2 * self.height
            h0, w0 = image.shape[1:]
            factor = short / min(h0, w0)
            size = (max(short, round(h0 * factor)), max(short, round(w0 * factor)))
            self._photos[name] = _resize(image, *size).to(self.device)
        return self._photos[name]

    def sprite(self, index: int) -> torch.Tensor:
        """Cut-out [4, hs, ws] (RGB, alpha) with height 0.6 * clip height, on the device."""
        if index not in self._sprites:
            spec = SPRITES[index]
            y0, x0, y1, x1 = spec.box
            crop = load_photo(spec.photo)[:, y0:y1, x0:x1]  # [3, h, w]
            height = max(8, round(0.6 * self.height))
            width = max(8, round(height * (x1 - x0) / (y1 - y0)))
            rgb = _resize(crop, height, width)  # [3, hs, ws]
            self._sprites[index] = torch.cat((rgb, _soft_ellipse(height, width)), 0).to(self.device)
        return self._sprites[index]

    # --- parameters (numpy, float64) -------------------------------------------------------

    def _camera(
        self, rng: np.random.Generator, motion: str, photo_h: int, photo_w: int
    ) -> np.ndarray:
        """Per-frame camera (center_x, center_y, zoom, angle): [4, F] float64."""
        h, w = self.height, self.width
        tau = np.linspace(0.0, 1.0, self.frames)  # [F]

        def center_range(zoom: float, angle: float) -> tuple[float, float, float, float]:
            c, s = abs(math.cos(angle)), abs(math.sin(angle))
            ex = zoom * (c * w / 2 + s * h / 2)
            ey = zoom * (s * w / 2 + c * h / 2)
            return ex, photo_w - ex, ey, photo_h - ey

        if motion == "pan":
            zoom = rng.uniform(0.7, 0.95)
            angle = math.radians(rng.uniform(-5.0, 5.0))
            x_lo, x_hi, y_lo, y_hi = center_range(zoom, angle)
            direction = rng.uniform(0, 2 * math.pi)
            distance = rng.uniform(0.3, 0.6) * h
            for _ in range(8):  # shorten until start and end both fit
                dx, dy = distance * math.cos(direction), distance * math.sin(direction)
                sx = (max(x_lo, x_lo - dx), min(x_hi, x_hi - dx))
                sy = (max(y_lo, y_lo - dy), min(y_hi, y_hi - dy))
                if sx[0] <= sx[1] and sy[0] <= sy[1]:
                    break
                distance *= 0.7
            else:
                dx = dy = 0.0
                sx, sy = (x_lo, max(x_lo, x_hi)), (y_lo, max(y_lo, y_hi))
            start_x, start_y = rng.uniform(*sx), rng.uniform(*sy)
            cx, cy = start_x + dx * tau, start_y + dy * tau
            zooms, angles = np.full_like(tau, zoom), np.full_like(tau, angle)
        elif motion == "zoom":
            near = rng.uniform(0.5, 0.65)
            far = near * rng.uniform(1.35, 1.6)
            z0, z1 = (near, far) if rng.random() < 0.5 else (far, near)
            x_lo, x_hi, y_lo, y_hi = center_range(far, 0.0)
            cx = np.full_like(tau, rng.uniform(x_lo, max(x_lo, x_hi)))
            cy = np.full_like(tau, rng.uniform(y_lo, max(y_lo, y_hi)))
            zooms = z0 * (z1 / z0) ** tau
            angles = np.zeros_like(tau)
        elif motion == "rotate":
            zoom = rng.uniform(0.6, 0.85)
            radius = zoom * math.hypot(w, h) / 2  # fits at any angle
            x_lo, x_hi, y_lo, y_hi = radius, photo_w - radius, radius, photo_h - radius
            cx = np.full_like(tau, rng.uniform(x_lo, max(x_lo, x_hi)))
            cy = np.full_like(tau, rng.uniform(y_lo, max(y_lo, y_hi)))
            start = math.radians(rng.uniform(-10.0, 10.0))
            turn = math.radians(rng.uniform(15.0, 35.0)) * (1 if rng.random() < 0.5 else -1)
            zooms, angles = np.full_like(tau, zoom), start + turn * tau
        else:
            raise ValueError(f"motion {motion!r}; expected one of {MOTIONS}")
        return np.stack((cx, cy, zooms, angles))  # [4, F]

    def _objects(self, rng: np.random.Generator, photo: str) -> list[tuple[int, np.ndarray]]:
        """One or two cut-outs: (sprite index, per-frame (x, y, size, angle) [4, F])."""
        h, w = self.height, self.width
        tau = np.linspace(0.0, 1.0, self.frames)  # [F]
        candidates = [i for i, s in enumerate(SPRITES) if s.photo != photo]
        count = 1 if rng.random() < 0.5 else 2
        chosen = rng.choice(len(candidates), size=count, replace=False)
        objects = []
        for pick in chosen:
            x0, y0 = rng.uniform(-0.1 * w, 1.1 * w), rng.uniform(0.15 * h, 0.85 * h)
            direction = rng.uniform(0, 2 * math.pi)
            distance = rng.uniform(0.3, 0.7) * w
            x = x0 + distance * math.cos(direction) * tau
            y = y0 + 0.5 * distance * math.sin(direction) * tau
            size = np.full_like(tau, rng.uniform(0.3, 0.5) * h)  # displayed height, pixels
            angle = math.radians(rng.uniform(-15, 15)) + math.radians(rng.uniform(-30, 30)) * tau
            objects.append((candidates[int(pick)], np.stack((x, y, size, angle))))
        return objects

    # --- rendering ------------------------------------------------------------------------

    def clip(self, seed: int, cid: int | None = None) -> tuple[torch.Tensor, int]:
        """Clip [3, F, H, W] in [-1, 1] and its class id; cid None draws the class from seed."""
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7E57BED]))
        drawn = int(rng.integers(NUM_CLASSES))
        cid = drawn if cid is None else int(cid)
        if not 0 <= cid < NUM_CLASSES:
            raise ValueError(f"class id {cid}; expected 0..{NUM_CLASSES - 1}")
        photo_name, motion = CLASSES[cid]
        photo = self.photo(photo_name)  # [3, Hp, Wp]
        photo_h, photo_w = photo.shape[1:]
        camera = self._camera(rng, motion, photo_h, photo_w)  # [4, F]
        objects = self._objects(rng, photo_name)

        def tensor(values: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(values, dtype=torch.float32, device=self.device)

        frames, h, w = self.frames, self.height, self.width
        cam = tensor(camera)  # [4, F]
        grid = _rotation_grid(
            h,
            w,
            cam[0],
            cam[1],
            cam[2],
            cam[3],
            tensor(np.full(frames, w / 2)),
            tensor(np.full(frames, h / 2)),
            photo_h,
            photo_w,
        )  # [F, H, W, 2]
        source = photo[None].expand(frames, -1, -1, -1)  # [F, 3, Hp, Wp]
        video = F.grid_sample(
            source, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )  # [F, 3, H, W]
        for index, path in objects:
            sprite = self.sprite(index)  # [4, hs, ws]
            sprite_h, sprite_w = sprite.shape[1:]
            p = tensor(path)  # [4, F]: x, y, displayed height, angle
            grid = _rotation_grid(
                h,
                w,
                torch.full_like(p[0], sprite_w / 2),
                torch.full_like(p[0], sprite_h / 2),
                sprite_h / p[2],
                -p[3],
                p[0],
                p[1],
                sprite_h,
                sprite_w,
            )  # [F, H, W, 2]
            layer = F.grid_sample(
                sprite[None].expand(frames, -1, -1, -1),
                grid,
                mode="bilinear",
                padding_mode="zeros",
                align_corners=False,
            )  # [F, 4, H, W]
            alpha = layer[:, 3:4]
            video = alpha * layer[:, :3] + (1 - alpha) * video
        return video.clamp(-1, 1).permute(1, 0, 2, 3).contiguous(), cid  # [3, F, H, W]

    def batch(
        self, seeds: Sequence[int], class_ids: Sequence[int | None] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips [B, 3, F, H, W] and class ids [B] (long), both on the device."""
        ids = [None] * len(seeds) if class_ids is None else list(class_ids)
        clips, cids = zip(*(self.clip(s, c) for s, c in zip(seeds, ids)))
        return torch.stack(clips), torch.tensor(cids, dtype=torch.long, device=self.device)


def training_seeds(data_seed: int, step: int, batch: int) -> list[int]:
    """Seeds of the clips of one training step: every step sees new clips, reproducibly."""
    return [int(data_seed) * 1_000_000_007 + step * batch + i for i in range(batch)]
