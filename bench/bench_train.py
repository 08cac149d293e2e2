"""Training-iteration time and peak memory of the part-proposal model (stage 4).

Runs forward + backward + optimizer step of ProposalModel (optimizer, clipping and frozen modules
as in training) on a synthetic batch: random images at INPUT.IMAGE_SIZE with 8 random box-shaped
parts each. Always benchmarks ``configs/proposal_learning/tiny_cpu.yaml`` on CPU; when CUDA is
available also R50 and Swin-L at 640 x 640, each with the pure-PyTorch (grid-sample) and the
compiled deformable-attention core (``set_msda_impl``), AMP (fp16 autocast + GradScaler) as in
their configs. Backbone weights are random (speed does not depend on them).

Usage: ``.venv/bin/python bench/bench_train.py [--iters 5] [--batch 2] [--threads 2]``.
"""
import argparse
import resource
import time

import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances

from part_distillation.config import setup_cfg
from part_distillation.engine.trainer import build_optimizer
from part_distillation.modeling.pixel_decoder.ms_deform_attn import compiled_available, set_msda_impl


def synthetic_batch(batch: int, size: int, parts: int = 8, seed: int = 0):
    """``batch`` training inputs: uint8 (3, size, size) images with ``parts`` random boxes as
    ``instances.gt_masks``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        masks = torch.zeros(parts, size, size, dtype=torch.bool)
        for m in masks:
            y0, x0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
            h, w = torch.randint(size // 8, size // 2, (2,), generator=g).tolist()
            m[y0:y0 + h, x0:x0 + w] = True
        inst = Instances((size, size))
        inst.gt_masks = BitMasks(masks)
        inst.gt_classes = torch.zeros(parts, dtype=torch.int64)
        out.append({"image": torch.randint(0, 255, (3, size, size), dtype=torch.uint8, generator=g),
                    "instances": inst})
    return out


def bench(config: str, opts, iters: int, batch: int):
    """Median seconds per training iteration (after one warm-up) and peak memory in GiB (CUDA:
    max allocated; CPU: process max RSS)."""
    cfg = setup_cfg(config, list(opts) + ["SOLVER.IMS_PER_BATCH", batch])
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    cuda = cfg.MODEL.DEVICE.startswith("cuda")
    amp = cuda and cfg.SOLVER.AMP.ENABLED
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    inputs = synthetic_batch(batch, cfg.INPUT.IMAGE_SIZE)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(iters + 1):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", enabled=amp):
            loss = sum(model(inputs).values())
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if cuda:
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2 ** 30
    return sorted(times)[len(times) // 2], peak


def main():
    """Print one line per (config, deformable-attention implementation)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = [("tiny_cpu (EfficientNet-Lite0, 256 px)", "configs/proposal_learning/tiny_cpu.yaml", [], "pytorch")]
    if torch.cuda.is_available():
        impls = ["pytorch"] + (["compiled"] if compiled_available() else [])
        for name, config in (("R50 q100", "configs/proposal_learning/R50.yaml"),
                             ("Swin-L q200", "configs/proposal_learning/swin_L.yaml")):
            runs += [(f"{name} 640 px", config, ["MODEL.DEVICE", "cuda"], impl) for impl in impls]
    print(f"batch={args.batch} iters={args.iters} cpu_threads={torch.get_num_threads()} "
          f"cuda={torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    for name, config, opts, impl in runs:
        set_msda_impl(impl)
        sec, peak = bench(config, opts, args.iters, args.batch)
        print(f"{name:40s} msda={impl:8s} {sec:7.3f} s/iter  peak {peak:6.2f} GiB")


if __name__ == "__main__":
    main()
