"""Frame-to-frame consistency for animations (Ruder, Dosovitskiy, Brox, "Artistic style transfer for
videos", GCPR 2016): optical flow between two frames, an earlier result moved along it, and where that
moved result can be trusted; for long-term consistency, which earlier frame each pixel is tied to.

Flow is OpenCV's DIS (Kroeger et al. 2016; no trained network) on the frames' luminance.  A flow here
is a 2×H×W float32 tensor (dx, dy) in pixels that says, for each pixel p of one frame, where it lies in
another: the *backward* flow of frame t says where each of its pixels was in frame t−1, so frame t−1's
result sampled at p + flow(p) is that result moved into frame t (:func:`warp`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .colour import rgb_to_yiq

# Ruder et al.'s thresholds (section 3.1), in pixels: forward and backward flow that do not cancel
# mark a disocclusion, a steep change of the flow a motion boundary.
_DISAGREEMENT_SHARE = 0.01
_DISAGREEMENT_PIXELS = 0.5
_BOUNDARY_SHARE = 0.01
_BOUNDARY_OFFSET = 0.002


@dataclass(frozen=True)
class FrameMotion:
    """How frame t relates to frame t−1 at one size."""

    flow: torch.Tensor  # 2×H×W backward flow: frame t's pixel p was at p + flow(p) in frame t−1
    reliable: torch.Tensor  # H×W: 1 where the moved previous result may be trusted, 0 where not

    @property
    def reliable_share(self) -> float:
        return float(self.reliable.mean())


def luminance_u8(frame: torch.Tensor) -> np.ndarray:
    """A 3×H×W (or 1×3×H×W) RGB frame in [0, 1] as the H×W 8-bit luminance that DIS takes."""
    luma = rgb_to_yiq(frame.detach().float().cpu().reshape(3, *frame.shape[-2:]))[0].clamp(0.0, 1.0)
    return np.ascontiguousarray((luma * 255.0).round().to(torch.uint8).numpy())


def estimate_flow(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DIS flow from ``source`` to ``target`` (3×H×W frames): source(p) ≈ target(p + flow(p)).

    The MEDIUM preset at full resolution (finest scale 0): at its default finest scale, half the
    resolution, the flow of textured 128×96 frames moved 3 px was off by 0.04 px on average; at full
    resolution by under 0.001 px.  A frame's two flows and its mask take about 0.4 s at 1 MP on a 2-core
    CPU (benchmarks/temporal_consistency.py), little beside one optimiser iteration at that size there.
    """
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(0)
    flow = dis.calc(luminance_u8(source), luminance_u8(target), None)
    return torch.from_numpy(flow).permute(2, 0, 1).contiguous()


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``image`` (C×H×W or N×C×H×W) sampled bilinearly at p + flow(p); positions outside take the
    nearest edge pixel (the reliability mask is 0 there)."""
    batched = image if image.dim() == 4 else image[None]
    height, width = batched.shape[-2:]
    flow = flow.to(batched.device, batched.dtype)
    ys, xs = torch.meshgrid(torch.arange(height, device=batched.device, dtype=batched.dtype),
                            torch.arange(width, device=batched.device, dtype=batched.dtype), indexing="ij")
    # grid_sample's coordinates run from −1 to 1 between the outer pixels' centres (align_corners).
    grid_x = (xs + flow[0]) * (2.0 / max(width - 1, 1)) - 1.0
    grid_y = (ys + flow[1]) * (2.0 / max(height - 1, 1)) - 1.0
    grid = torch.stack([grid_x, grid_y], dim=-1)[None].expand(batched.shape[0], -1, -1, -1)
    moved = F.grid_sample(batched, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return moved if image.dim() == 4 else moved[0]


def reliability_mask(backward: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """Ruder et al.'s mask c for frame t (H×W, 0 or 1) from its ``backward`` flow (t → t−1) and the
    ``forward`` flow (t−1 → t).

    0 where p + backward(p) falls outside frame t−1 by more than half a pixel (it came into view); where the two flows
    disagree, |w̃ + ŵ|² > 0.01·(|w̃|² + |ŵ|²) + 0.5 with ŵ the backward flow and w̃ the forward flow
    read at p + ŵ(p) (a disocclusion: what p shows was hidden in frame t−1); and at motion boundaries,
    |∇û|² + |∇v̂|² > 0.01·|ŵ|² + 0.002, where the flow itself is least accurate.  1 elsewhere.
    """
    height, width = backward.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=backward.dtype), torch.arange(width, dtype=backward.dtype),
                            indexing="ij")
    source_x, source_y = xs + backward[0], ys + backward[1]
    # Half a pixel of slack: flow that is zero up to rounding keeps the edge pixels.
    outside = (source_x < -0.5) | (source_x > width - 0.5) | (source_y < -0.5) | (source_y > height - 0.5)
    returned = warp(forward, backward)
    disagreement = (returned + backward).square().sum(0)
    disoccluded = disagreement > (_DISAGREEMENT_SHARE * (returned.square().sum(0) + backward.square().sum(0))
                                  + _DISAGREEMENT_PIXELS)
    boundary = _flow_gradient_energy(backward) > _BOUNDARY_SHARE * backward.square().sum(0) + _BOUNDARY_OFFSET
    return (~(outside | disoccluded | boundary)).to(torch.float32)


def _flow_gradient_energy(flow: torch.Tensor) -> torch.Tensor:
    """|∇u|² + |∇v|² by central differences (one-sided at the edges)."""
    if min(flow.shape[-2:]) < 2:
        return torch.zeros(flow.shape[-2:], dtype=flow.dtype)
    dy, dx = torch.gradient(flow, dim=(1, 2))
    return (dx.square() + dy.square()).sum(0)


def motion_between(previous: torch.Tensor, current: torch.Tensor) -> FrameMotion:
    """The backward flow of ``current`` to ``previous`` (3×H×W frames of one size) and its mask."""
    backward = estimate_flow(current, previous)
    forward = estimate_flow(previous, current)
    return FrameMotion(backward, reliability_mask(backward, forward))


def long_term_weights(masks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Ruder et al.'s long-term weights from the masks c(t−j) of earlier frames, nearest first:
    c_long(t−j) = max(c(t−j) − Σ_{k<j} c(t−k), 0), so that each pixel is tied to the nearest earlier frame
    where it is reliable, and to no other."""
    return [(mask - sum(masks[:index], torch.zeros_like(mask))).clamp(min=0.0) for index, mask in enumerate(masks)]


def temporal_loss(image: torch.Tensor, warped: torch.Tensor, reliable: torch.Tensor) -> torch.Tensor:
    """mean(c · (x − ω)²) over pixels and channels: Ruder et al.'s short-term temporal loss, with ω the
    previous result moved into this frame and c its reliability (H×W, broadcast over channels)."""
    return (reliable * (image - warped).square()).mean()
