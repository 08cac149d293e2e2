"""Stage-4 training engine: tiny training run (loss decreases, outputs written), resume
continuity after a kill, --eval-only AR@K, optimizer / schedule recipe, official YAML merge."""
import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import HookBase, default_argument_parser
from PIL import Image

from part_distillation.config import setup_cfg
from part_distillation.data import resolve_dataset
from part_distillation.data.pseudo_labels import ImagePseudoLabel, ObjectLabel, PartLabel, save_pseudo_label
from part_distillation.engine.checkpoint import AtomicCheckpointer, CorruptCheckpointError
from part_distillation.modeling.weights import IncompleteWeightsError
from part_distillation.engine.trainer import (
    Trainer,
    build_lr_scheduler,
    build_optimizer,
    main,
    optimizer_param_groups,
    setup,
    with_full_model_clipping,
)

from .helpers import PASCAL_EXAMPLES, needs_shared

TINY = "configs/proposal_learning/tiny_cpu.yaml"
SUBSET = "pascal_part_examples_first2"
if SUBSET not in DatasetCatalog.list():
    DatasetCatalog.register(SUBSET, lambda: DatasetCatalog.get("pascal_part_examples")[:2])
    MetadataCatalog.get(SUBSET).set(evaluator_type="part", has_parts=True)


def _synthetic_labels(folder, n=6, h=96, w=128, seed=0):
    """Images of a coloured box on a noisy background, split into 2-3 differently coloured
    parts, with matching stage-3-style pseudo-labels."""
    rng = np.random.default_rng(seed)
    colors = np.array([[220, 40, 40], [40, 200, 40], [40, 60, 220]], np.uint8)
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        img = rng.integers(90, 160, (h, w, 3), dtype=np.uint8)
        y0, x0 = rng.integers(4, 30), rng.integers(4, 40)
        y1, x1 = y0 + rng.integers(40, h - y0 - 2), x0 + rng.integers(50, w - x0 - 2)
        obj = np.zeros((h, w), bool)
        obj[y0:y1, x0:x1] = True
        k = 2 + i % 2
        cuts = np.linspace(x0, x1, k + 1).astype(int)
        parts = []
        for j in range(k):
            m = np.zeros((h, w), bool)
            m[y0:y1, cuts[j]:cuts[j + 1]] = True
            img[m] = colors[j]
            parts.append(PartLabel(m))
        path = os.path.join(folder, f"img{i}.png")
        Image.fromarray(img).save(path)
        save_pseudo_label(folder, ImagePseudoLabel(path, f"img{i}", h, w, "dcrf",
                                                   [ObjectLabel("box", obj, parts=parts)]))
    return folder


def _cfg(tmp_path, labels, *opts):
    return setup_cfg(TINY, [
        "MODEL.EFFICIENTNET.PRETRAINED", False, "PROPOSAL_LEARNING.DATASET_PATH", str(labels),
        "INPUT.IMAGE_SIZE", 64, "INPUT.IMAGE_SIZE_BASE", 64, "INPUT.MIN_SCALE", 1.0,
        "INPUT.MAX_SCALE", 1.0, "INPUT.MIN_SIZE_TEST", 64, "DATASETS.TEST", "()",
        "DATALOADER.NUM_WORKERS", 0, "TEST.EVAL_PERIOD", 0, "OUTPUT_DIR", str(tmp_path / "out"),
        "SEED", 0, *opts])


class _Record(HookBase):
    """Records (iteration, lr of every param group) after each step; optionally 'kills' the
    run by raising at ``kill_at``."""

    def __init__(self, kill_at=None):
        self.steps, self.kill_at = [], kill_at

    def after_step(self):
        self.steps.append((self.trainer.iter, [g["lr"] for g in self.trainer.optimizer.param_groups]))
        if self.trainer.iter == self.kill_at:
            raise KeyboardInterrupt("killed")


def _trainer(cfg, hook):
    trainer = Trainer(cfg)
    trainer.register_hooks([hook])
    return trainer


def test_tiny_training_loss_decreases_and_writes_outputs(tmp_path):
    labels = _synthetic_labels(str(tmp_path / "labels"))
    cfg = _cfg(tmp_path, labels, "SOLVER.MAX_ITER", 30, "SOLVER.BASE_LR", 1e-3, "SOLVER.WARMUP_ITERS", 0,
               "INPUT.IMAGE_SIZE", 128, "INPUT.IMAGE_SIZE_BASE", 96, "SOLVER.CHECKPOINT_PERIOD", 30,
               "DATASETS.TEST", f"('{SUBSET}',)", "TEST.EVAL_PERIOD", 30)
    torch.manual_seed(0)
    trainer = _trainer(cfg, _Record())
    trainer.resume_or_load(resume=False)
    trainer.train()
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    out = cfg.OUTPUT_DIR
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))
    with open(os.path.join(out, "metrics.json")) as f:
        records = [json.loads(line) for line in f]
    assert any("total_loss" in r for r in records)
    assert any("part_proposals/AR@10" in r for r in records)  # periodic evaluation ran
    assert 0.0 <= trainer._last_eval_results["part_proposals"]["AR@10"] <= 100.0


def test_resume_after_kill_continues_iteration_and_lr(tmp_path):
    labels = _synthetic_labels(str(tmp_path / "labels"), n=2)
    opts = ["SOLVER.MAX_ITER", 8, "SOLVER.CHECKPOINT_PERIOD", 4, "SOLVER.LR_SCHEDULER_NAME", "WarmupPolyLR",
            "SOLVER.WARMUP_ITERS", 2, "SOLVER.WARMUP_FACTOR", 0.1, "MODEL.MASK_FORMER.DEC_LAYERS", 2]
    full = _Record()
    trainer = _trainer(_cfg(tmp_path / "a", labels, *opts), full)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert [it for it, _ in full.steps] == list(range(8))

    killed = _Record(kill_at=5)  # dies after iteration 5; last checkpoint is model_0000003.pth
    cfg = _cfg(tmp_path / "b", labels, *opts)
    trainer = _trainer(cfg, killed)
    trainer.resume_or_load(resume=False)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "model_0000003.pth"))

    resumed = _Record()
    trainer = _trainer(cfg, resumed)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 4
    trainer.train()
    assert [it for it, _ in resumed.steps] == [4, 5, 6, 7]
    uninterrupted = dict(full.steps)
    for it, lrs in killed.steps + resumed.steps:
        assert lrs == pytest.approx(uninterrupted[it], rel=1e-9, abs=0), it
    assert len({tuple(lrs) for _, lrs in full.steps}) == 8  # the LR really changes every step


def test_checkpoint_killed_mid_write_leaves_previous_file(tmp_path, monkeypatch):
    """A kill (here: an exception after half the bytes) while model_final.pth is written leaves
    the previous complete file and tag, and no temp file."""
    model = torch.nn.Linear(3, 2)
    ckpt = AtomicCheckpointer(model, str(tmp_path), save_to_disk=True)
    ckpt.save("model_final", iteration=1)
    before = (tmp_path / "model_final.pth").read_bytes()
    real_save = torch.save

    def dying_save(obj, f):
        real_save(obj, f)
        f.truncate(len(before) // 2)
        raise KeyboardInterrupt("killed while writing")

    model.weight.data.add_(1.0)
    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_final", iteration=2)
    monkeypatch.setattr(torch, "save", real_save)
    assert (tmp_path / "model_final.pth").read_bytes() == before
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]


def test_resume_redoes_truncated_final_checkpoint(tmp_path):
    """model_final.pth and model_0000005.pth truncated to 0 bytes, model_0000003.pth to 100 bytes:
    --resume moves them aside, resumes from the newest readable checkpoint (model_0000001.pth) and
    writes model_final.pth again."""
    labels = _synthetic_labels(str(tmp_path / "labels"), n=2)
    cfg = _cfg(tmp_path, labels, "SOLVER.MAX_ITER", 6, "SOLVER.CHECKPOINT_PERIOD", 2,
               "MODEL.MASK_FORMER.DEC_LAYERS", 2)
    trainer = _trainer(cfg, _Record())
    trainer.resume_or_load(resume=False)
    trainer.train()
    out = cfg.OUTPUT_DIR
    assert {"model_0000001.pth", "model_0000003.pth", "model_0000005.pth", "model_final.pth"} <= set(os.listdir(out))
    open(os.path.join(out, "model_final.pth"), "wb").close()
    open(os.path.join(out, "model_0000005.pth"), "wb").close()
    with open(os.path.join(out, "model_0000003.pth"), "r+b") as f:
        f.truncate(100)
    resumed = _Record()
    trainer = _trainer(cfg, resumed)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 2
    trainer.train()
    assert [it for it, _ in resumed.steps] == [2, 3, 4, 5]
    files = set(os.listdir(out))
    assert {"model_final.pth.corrupt", "model_0000005.pth.corrupt", "model_0000003.pth.corrupt",
            "model_final.pth", "model_0000005.pth"} <= files
    final = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=False)
    assert final["iteration"] == 5
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read() == "model_final.pth"
    # nothing readable at all: start from MODEL.WEIGHTS at iteration 0, not at MAX_ITER
    for name in os.listdir(out):
        if name.endswith(".pth"):
            open(os.path.join(out, name), "wb").close()
    trainer = _trainer(cfg, _Record())
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 0 and not os.path.exists(os.path.join(out, "last_checkpoint"))


def test_eval_only_on_corrupt_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "model_final.pth"
    bad.write_bytes(b"PK\x03\x04 truncated")
    args = default_argument_parser().parse_args([
        "--config-file", TINY, "--eval-only", "MODEL.EFFICIENTNET.PRETRAINED", "False",
        "MODEL.WEIGHTS", str(bad), "DATASETS.TEST", f"('{SUBSET}',)", "DATALOADER.NUM_WORKERS", "0",
        "OUTPUT_DIR", str(tmp_path / "eval")])
    with pytest.raises(CorruptCheckpointError, match=str(bad)):
        main(args)
    bad.write_bytes(b"")
    with pytest.raises(CorruptCheckpointError, match="0 bytes"):
        main(args)


def test_eval_only_reports_ar(tmp_path):
    args = default_argument_parser().parse_args([
        "--config-file", TINY, "--eval-only", "MODEL.EFFICIENTNET.PRETRAINED", "False",
        "DATASETS.TEST", f"('{SUBSET}',)", "INPUT.MIN_SIZE_TEST", "96", "DATALOADER.NUM_WORKERS", "0",
        "OUTPUT_DIR", str(tmp_path / "eval"), "VIS_OUTPUT_DIR", str(tmp_path / "vis")])
    results = main(args)
    ar = results["part_proposals"]
    assert {"AR@1", "AR@10"} <= set(ar) and ar["num_objects"] > 0
    assert all(0.0 <= ar[k] <= 100.0 for k in ("AR@1", "AR@10"))
    assert "best_match_mIoU" in results["part_segments"]
    # detectron2's habit: OUTPUT_DIR/inference/<dataset>/results.json, and a few overlays in VIS_OUTPUT_DIR
    with open(tmp_path / "eval" / "inference" / SUBSET / "results.json") as f:
        assert json.load(f)["part_proposals"]["AR@1"] == pytest.approx(ar["AR@1"])
    overlays = os.listdir(tmp_path / "vis" / SUBSET)
    assert 1 <= len(overlays) <= 8 and all(f.endswith(".jpg") for f in overlays)


def test_task_follows_meta_architecture():
    """The official YAMLs keep Mask2Former's INPUT.DATASET_MAPPER_NAME; the task (and training
    mapper) follow MODEL.META_ARCHITECTURE, and the official stage meta-architectures name the tool."""
    from part_distillation.engine.trainer import train_mapper_name, training_task

    def cfg(arch, *opts):
        return setup_cfg("", ["MODEL.META_ARCHITECTURE", arch, "INPUT.DATASET_MAPPER_NAME", "coco_instance_lsj", *opts])

    assert training_task(cfg("PartDistillationModel")) == "part_distillation"
    assert training_task(cfg("ProposalModel")) == "proposal_learning" and train_mapper_name(cfg("ProposalModel")) == "proposal_learning"
    assert training_task(cfg("SupervisedModel")) == "supervised_learning"
    assert training_task(cfg("SupervisedModel", "SUPERVISED_MODEL.CLASS_AGNOSTIC_LEARNING", True)) == "supervised_learning_agnostic"
    assert train_mapper_name(cfg("SupervisedModel")) == "supervised_learning"
    for arch, tool in (("PartRankingModel", "tools/part_ranking.py"), ("ProposalGenerationModel", "tools/pixel_grouping.py"),
                       ("PixelGroupingModel", "tools/run_part_pipeline.py"), ("ClusteringBaseline", "tools/run_part_pipeline.py"),
                       ("LabelingDetic", "tools/label_objects.py")):
        with pytest.raises(ValueError, match=f"{arch}.*{tool}"):
            training_task(cfg(arch))
    with pytest.raises(ValueError, match="NoSuchModel"):
        training_task(cfg("NoSuchModel"))


def test_postprocess_types_pick_the_output_mode_per_test_set(tmp_path):
    """Official PROPOSAL_LEARNING.POSTPROCESS_TYPES: one "prop" | "semseg" per DATASETS.TEST entry
    (the same set may appear twice); the model's own mode comes back afterwards."""
    cfg = setup_cfg(TINY, ["MODEL.EFFICIENTNET.PRETRAINED", False, "INPUT.MIN_SIZE_TEST", 96,
                           "DATALOADER.NUM_WORKERS", 0, "OUTPUT_DIR", str(tmp_path),
                           "DATASETS.TEST", f"('{SUBSET}', '{SUBSET}')",
                           "PROPOSAL_LEARNING.POSTPROCESS_TYPES", "('prop', 'semseg')"])
    model = Trainer.build_model(cfg).eval()
    assert model.output_mode == "proposals"  # Base-PartProposal: USE_PER_PIXEL_LABEL False
    seen, inference = [], model.inference
    model.inference = lambda *a: seen.append(model.output_mode) or inference(*a)
    results = Trainer.test(cfg, model)
    assert set(results) == {f"{SUBSET} (prop)", f"{SUBSET} (semseg)"}
    assert seen == ["proposals"] * 2 + ["per_pixel"] * 2 and model.output_mode == "proposals"
    n_prop = results[f"{SUBSET} (prop)"]["part_proposals"]["num_objects"]
    assert n_prop == results[f"{SUBSET} (semseg)"]["part_proposals"]["num_objects"] > 0
    bad = cfg.clone()
    bad.defrost()
    bad.PROPOSAL_LEARNING.POSTPROCESS_TYPES = ["prop"]
    with pytest.raises(ValueError, match="one entry per"):
        Trainer.test(bad, model)
    bad.PROPOSAL_LEARNING.POSTPROCESS_TYPES = ["prop", "prop-filtered"]
    with pytest.raises(ValueError, match="prop-filtered"):
        Trainer.test(bad, model)


@needs_shared
def test_eval_only_on_a_dataset_folder(tmp_path, caplog):
    """DATASETS.TEST takes a folder in a known layout (here Pascal-Part, 2 real images), as the
    stage tools' --dataset does; an unknown entry is a KeyError naming it."""
    folder = tmp_path / "my_parts"
    for sub, ext in (("JPEGImages", ".jpg"), ("Annotations_Part", ".mat")):
        os.makedirs(folder / sub)
        for stem in ("2008_000652", "2008_000700"):
            shutil.copy(os.path.join(PASCAL_EXAMPLES, sub, stem + ext), folder / sub)
    args = default_argument_parser().parse_args([
        "--config-file", TINY, "--eval-only", "MODEL.EFFICIENTNET.PRETRAINED", "False",
        "DATASETS.TEST", f"('{folder}',)", "INPUT.MIN_SIZE_TEST", "96", "DATALOADER.NUM_WORKERS", "0",
        "OUTPUT_DIR", str(tmp_path / "eval")])
    with caplog.at_level(logging.INFO, logger="part_distillation.engine.trainer"):
        results = main(args)
    assert f"evaluation datasets (DATASETS.TEST): folder:{folder}" in caplog.text
    assert results["part_proposals"]["num_objects"] == sum(
        len(r["objects"]) for r in resolve_dataset(str(folder)))
    args.opts[args.opts.index("DATASETS.TEST") + 1] = "('no_such_dataset_or_folder',)"
    with pytest.raises(KeyError, match="no_such_dataset_or_folder"):
        main(args)


def test_wandb_writer_offline(tmp_path, monkeypatch):
    """WANDB.DISABLE_WANDB False, offline: the run's scalars (losses, LR) and the prediction
    panels (every WANDB.VIS_PERIOD_TRAIN iterations) land in <OUTPUT_DIR>/wandb, TensorBoard too."""
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    labels = _synthetic_labels(str(tmp_path / "labels"), n=2)
    cfg = _cfg(tmp_path, labels, "SOLVER.MAX_ITER", 4, "SOLVER.CHECKPOINT_PERIOD", 100,
               "MODEL.MASK_FORMER.DEC_LAYERS", 2, "WANDB.DISABLE_WANDB", False, "WANDB.PROJECT", "pd_test",
               "WANDB.RUN_NAME", "tiny", "WANDB.VIS_PERIOD_TRAIN", 2, "WANDB.VIS_TOPK", 3)
    trainer = _trainer(cfg, _Record())
    assert trainer.model.vis_period == {"train": 2, "test": 20} and trainer.model.vis_topk == 3
    trainer.resume_or_load(resume=False)
    trainer.train()
    out = cfg.OUTPUT_DIR
    with open(os.path.join(out, "wandb_run_id")) as f:
        run_id = f.read()
    runs = [d for d in os.listdir(os.path.join(out, "wandb")) if d.startswith("offline-run-")]
    assert len(runs) == 1 and runs[0].endswith(run_id)
    run_dir = os.path.join(out, "wandb", runs[0])
    with open(os.path.join(run_dir, f"run-{run_id}.wandb"), "rb") as f:
        records = f.read()  # wandb 0.31 has no Python reader for it; keys are stored as text
    for key in (b"total_loss", b"loss_dice", b"lr", b"pd_test", b"tiny", b"train/predictions"):
        assert key in records, key
    media = os.path.join(run_dir, "files", "media", "images", "train")
    assert len(os.listdir(media)) == 2  # iterations 0 and 2
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))
    assert wandb.run is None  # finished


def test_setup_disables_amp_on_cpu(tmp_path):
    args = default_argument_parser().parse_args([
        "--config-file", TINY, "SOLVER.AMP.ENABLED", "True", "MODEL.DEVICE", "cpu",
        "OUTPUT_DIR", str(tmp_path / "amp")])
    assert setup(args).SOLVER.AMP.ENABLED is False


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
        self.query = torch.nn.Embedding(3, 2)
        self.head = torch.nn.Linear(2, 1)
        self.frozen = torch.nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_optimizer_param_groups():
    model = _Toy()
    groups = optimizer_param_groups(model, base_lr=1.0, weight_decay=0.05, weight_decay_norm=0.0,
                                    weight_decay_embed=0.01, backbone_multiplier=0.1)
    hyper = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert hyper[id(model.backbone[0].weight)] == (0.1, 0.05)
    assert hyper[id(model.backbone[1].weight)] == (0.1, 0.0)  # norm
    assert hyper[id(model.query.weight)] == (1.0, 0.01)  # embedding
    assert hyper[id(model.head.bias)] == (1.0, 0.05)
    assert id(model.frozen.weight) not in hyper


def test_full_model_clipping_and_optimizer_choice(tmp_path):
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))]
    opt = with_full_model_clipping(torch.optim.SGD, max_norm=0.5)(params, lr=1.0)
    params[0].grad, params[1].grad = torch.full((3,), 10.0), torch.full((4,), -10.0)
    opt.step()
    step = torch.cat([-p.detach() for p in params])
    assert float(step.norm()) == pytest.approx(0.5, rel=1e-5)  # joint norm clipped to 0.5
    assert torch.allclose(step[:3], -step[3:].mean().expand(3))  # direction kept
    labels = _synthetic_labels(str(tmp_path / "l"), n=1)
    cfg = _cfg(tmp_path, labels)
    optimizer = build_optimizer(cfg, _Toy())
    assert isinstance(optimizer, torch.optim.AdamW) and "FullModelGradientClipping" in type(optimizer).__name__
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(_cfg(tmp_path, labels, "SOLVER.OPTIMIZER", "LAMB"), _Toy())


def test_warmup_poly_lr(tmp_path):
    labels = _synthetic_labels(str(tmp_path / "l"), n=1)
    cfg = _cfg(tmp_path, labels, "SOLVER.LR_SCHEDULER_NAME", "WarmupPolyLR", "SOLVER.MAX_ITER", 100,
               "SOLVER.WARMUP_ITERS", 0, "SOLVER.BASE_LR", 1.0, "SOLVER.POLY_LR_POWER", 0.9)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(60):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[50] == pytest.approx((1 - 50 / 100) ** 0.9)
    # official default: detectron2's WarmupMultiStepLR (linear warm-up, x GAMMA at each step)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_lr_scheduler(_cfg(tmp_path, labels, "SOLVER.LR_SCHEDULER_NAME", "WarmupMultiStepLR",
                                    "SOLVER.MAX_ITER", 100, "SOLVER.STEPS", "(40, 45)", "SOLVER.GAMMA", 0.1,
                                    "SOLVER.WARMUP_ITERS", 10, "SOLVER.WARMUP_FACTOR", 0.5,
                                    "SOLVER.BASE_LR", 1.0), opt)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[5] == pytest.approx(0.75)
    assert lrs[39] == pytest.approx(1.0) and lrs[40] == pytest.approx(0.1) and lrs[45] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="WarmupCosineLRX"):
        build_lr_scheduler(_cfg(tmp_path, labels, "SOLVER.LR_SCHEDULER_NAME", "WarmupCosineLRX"), opt)


def test_official_mask2former_yaml_merges():
    cfg = setup_cfg("configs/mask2former/coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml",
                    ["MODEL.META_ARCHITECTURE", "ProposalModel", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 1])
    assert cfg.MODEL.MASK_FORMER.DEC_LAYERS == 10 and cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == 100
    assert cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE == "full_model" and cfg.INPUT.IMAGE_SIZE == 1024
    assert cfg.MODEL.RESNETS.STEM_TYPE == "basic" and cfg.MODEL.META_ARCHITECTURE == "ProposalModel"
    for name in ("Base-ProposalLearning.yaml", "R50.yaml", "swin_L.yaml", "tiny_cpu.yaml",
                 "swinL_IN21K_384_mask2former.yaml", "swinL_train_multi.yaml",
                 "swinL_train_single.yaml"):
        part = setup_cfg(os.path.join("configs/proposal_learning", name))
        assert part.MODEL.META_ARCHITECTURE == "ProposalModel" and part.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 1


def test_eval_only_refuses_a_checkpoint_of_another_model_naming_the_missing_keys(tmp_path):
    """fvcore only logs keys that did not load; --eval-only would then score a random model.
    Keys outside MODEL.WEIGHTS_ALLOWED_MISSING are an error naming the file and the keys."""
    cfg = setup_cfg(TINY, ["MODEL.EFFICIENTNET.PRETRAINED", False])
    state = Trainer.build_model(cfg).state_dict()
    # another model's checkpoint: its head under other names, one tensor of another shape
    other = {("decoder." + k[len("sem_seg_head.predictor."):] if k.startswith("sem_seg_head.predictor.") else k): v
             for k, v in state.items()}
    other["sem_seg_head.pixel_decoder.mask_features.bias"] = torch.zeros(3)
    bad = tmp_path / "other_model.pth"
    torch.save({"model": other}, bad)
    opts = ["--config-file", TINY, "--eval-only", "MODEL.EFFICIENTNET.PRETRAINED", "False",
            "MODEL.WEIGHTS", str(bad), "DATASETS.TEST", "()", "OUTPUT_DIR", str(tmp_path / "eval")]
    with pytest.raises(IncompleteWeightsError) as e:
        main(default_argument_parser().parse_args(opts))
    msg = str(e.value)
    assert str(bad) in msg and "MODEL.WEIGHTS_ALLOWED_MISSING" in msg
    assert "sem_seg_head.predictor.class_embed.weight" in msg
    assert "sem_seg_head.pixel_decoder.mask_features.bias (checkpoint [3]" in msg
    # the allow-list accepts exactly what it names
    allow = "['criterion.*', 'sem_seg_head.predictor.*', 'sem_seg_head.pixel_decoder.mask_features.*']"
    main(default_argument_parser().parse_args(opts + ["MODEL.WEIGHTS_ALLOWED_MISSING", allow]))
    # a complete checkpoint loads (criterion buffers may be absent by default)
    good = tmp_path / "same_model.pth"
    torch.save({"model": {k: v for k, v in state.items() if not k.startswith("criterion.")}}, good)
    opts[opts.index(str(bad))] = str(good)
    main(default_argument_parser().parse_args(opts))


def test_resume_at_max_iter_writes_the_missing_final_checkpoint(tmp_path):
    """MAX_ITER a multiple of CHECKPOINT_PERIOD, killed while model_final.pth was written: the
    last periodic checkpoint is the last iteration, so --resume runs no step; it still writes
    model_final.pth (the weights of that checkpoint)."""
    labels = _synthetic_labels(str(tmp_path / "labels"), n=1)
    cfg = _cfg(tmp_path, labels, "SOLVER.MAX_ITER", 2, "SOLVER.CHECKPOINT_PERIOD", 2,
               "MODEL.MASK_FORMER.DEC_LAYERS", 1, "SOLVER.IMS_PER_BATCH", 1)
    trainer = _trainer(cfg, _Record())
    trainer.resume_or_load(resume=False)
    trainer.train()
    out = cfg.OUTPUT_DIR
    os.remove(os.path.join(out, "model_final.pth"))  # the kill: final never renamed, tag not moved
    with open(os.path.join(out, "last_checkpoint"), "w") as f:
        f.write("model_0000001.pth")
    resumed = _Record()
    trainer = _trainer(cfg, resumed)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 2
    trainer.train()
    assert resumed.steps == []
    final = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=False)
    last = torch.load(os.path.join(out, "model_0000001.pth"), map_location="cpu", weights_only=False)
    assert final["iteration"] == 1
    assert all(torch.equal(v, last["model"][k]) for k, v in final["model"].items())


def test_training_start_removes_only_its_own_stale_checkpoint_temp_files(tmp_path):
    """Temp files of killed checkpoint writes (``.model_*.pth.<rand>.tmp``) older than the process
    are removed when training starts; newer ones and other files' temp files stay."""
    labels = _synthetic_labels(str(tmp_path / "labels"), n=1)
    cfg = _cfg(tmp_path, labels, "SOLVER.MAX_ITER", 1, "SOLVER.WARMUP_ITERS", 0, "MODEL.MASK_FORMER.DEC_LAYERS", 1,
               "SOLVER.IMS_PER_BATCH", 1)
    out = cfg.OUTPUT_DIR
    os.makedirs(out)
    names = {".model_0000099.pth.k1x8.tmp": True, ".model_final.pth.a2b3.tmp": True,
             ".last_checkpoint.zz.tmp": True, ".model_final.pth.new.tmp": False,  # newer than the process
             ".metrics.json.q.tmp": False, "model_0000099.pth.tmp": False}
    for name in names:
        with open(os.path.join(out, name), "wb") as f:
            f.write(b"x" * 10)
        if name != ".model_final.pth.new.tmp":
            os.utime(os.path.join(out, name), (1e9, 1e9))  # 2001
    trainer = _trainer(cfg, _Record())
    trainer.resume_or_load(resume=True)
    trainer.train()
    left = set(os.listdir(out))
    assert not {n for n, stale in names.items() if stale} & left
    assert {n for n, stale in names.items() if not stale} <= left
    # a second training into the same OUTPUT_DIR (here: the lock held by this test) is refused
    from part_distillation.utils.process import OutputLock, OutputLockHeld
    with OutputLock(os.path.join(out, ".train.lock")):
        with pytest.raises(OutputLockHeld, match=f"pid {os.getpid()}"):
            _trainer(cfg, _Record()).train()
