"""Forward+backward time of the deformable-attention sampling core: grid-sample vs compiled kernel.

Default size is one Mask2Former pixel-decoder encoder layer on a 640x640 image: levels 80x80,
40x40, 20x20 (strides 8/16/32), 256 channels, 8 heads, 4 points, every pixel a query.

Usage: ``.venv/bin/python bench/bench_msdeformattn.py [--batch 2] [--image 640] [--iters 3]``.
"""
import argparse
import time

import torch

from part_distillation.modeling.pixel_decoder.ms_deform_attn import (
    compiled_available,
    ms_deform_attn_core_grid_sample,
)


def make_inputs(batch, image, channels, heads, points, device):
    """Random core inputs for levels image/8, /16, /32; returns (value, shapes, starts, locs, weights)."""
    shapes = torch.tensor([[image // s, image // s] for s in (8, 16, 32)], dtype=torch.long, device=device)
    areas = shapes.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    s = int(areas.sum())
    n_levels = shapes.shape[0]
    value = torch.randn(batch, s, heads, channels // heads, device=device, requires_grad=True)
    locs = torch.rand(batch, s, heads, n_levels, points, 2, device=device, requires_grad=True)
    logits = torch.randn(batch, s, heads, n_levels * points, device=device)
    weights = logits.softmax(-1).view(batch, s, heads, n_levels, points).requires_grad_()
    return value, shapes, starts, locs, weights


def time_fn(fn, inputs, iters, device):
    """Median seconds of forward + backward of ``fn`` over ``iters`` runs after one warm-up."""
    value, shapes, starts, locs, weights = inputs
    times = []
    for i in range(iters + 1):
        for t in (value, locs, weights):
            t.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(value, shapes, starts, locs, weights).square().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main():
    """Print one line per (device, implementation) with the median forward+backward time."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--image", type=int, default=640)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args()

    impls = {"pytorch (grid_sample)": lambda v, sh, st, lo, w: ms_deform_attn_core_grid_sample(v, sh, lo, w)}
    if compiled_available():
        import torch_ms_deform_attn

        impls["compiled (torch_ms_deform_attn)"] = torch_ms_deform_attn.ms_deform_attn
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(
        f"batch={args.batch} image={args.image} C={args.channels} heads={args.heads} "
        f"points={args.points} cpu_threads={torch.get_num_threads()}"
    )
    for device in devices:
        torch.manual_seed(0)
        inputs = make_inputs(args.batch, args.image, args.channels, args.heads, args.points, device)
        for name, fn in impls.items():
            sec = time_fn(fn, inputs, args.iters, device)
            print(f"{device.type:5s} {name:32s} fwd+bwd {sec * 1e3:9.1f} ms")


if __name__ == "__main__":
    main()
