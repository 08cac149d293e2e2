"""The model-zoo test (detectron2 ``tests/test_model_zoo.py`` style): every shipped entry point is
exercised. Every YAML under configs/ (this project's and the official copies) merges, every
DATASETS.TRAIN / TEST name resolves to a registered dataset, every model builds (random weights,
Swin-L built once per distinct architecture, never run); every sh file passes ``bash -n``, sources
files that exist and defaults to config files that exist, and passes EXTRA_OPTS with its quoting;
every ``tools/*.py --help``, ``demo/demo.py --help`` and ``bench/*.py --help`` exits 0."""
import glob
import json
import os
import re
import runpy
import subprocess
import sys
import warnings

import pytest
import torch
import yaml
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_backbone, build_model

import part_distillation.modeling  # noqa: F401  (registers the models)
from part_distillation.config import setup_cfg
from part_distillation.engine.trainer import META_ARCHITECTURE_TASKS, STAGE_META_ARCHITECTURES, training_task

from .helpers import REPO

CONFIGS = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"),
                                                             recursive=True))
# labeler configs (Detic / CenterNet2 keys, read by part_distillation/labelers/detic.py), not project configs
DETIC = [c for c in CONFIGS if os.path.basename(c).startswith("Detic")]
PROJECT = [c for c in CONFIGS if c not in DETIC]
OFFICIAL_PATHS = [  # official PartDistillation config paths (a0bb459, 827c35d, 938fd78)
    *(f"configs/{n}.yaml" for n in ("PartProposalLearning", "PartRanking", "PartDistillation", "SupervisedLearning",
                                    "SupervisedPartProposalLearning", "PixelGrouping", "ProposalGeneration",
                                    "DeticLabeling")),
    *(f"configs/{s}/swinL_IN21K_384_mask2former.yaml" for s in (
        "proposal_generation", "pixel_grouping", "proposal_learning", "part_ranking", "part_distillation",
        "supervised_learning")),
    "configs/pixel_grouping/ClusteringBaseline.yaml", "configs/pixel_grouping/PixelGroupingModel.yaml",
    "configs/detic/Detic_Labeling.yaml", "configs/detic/Detic_LCOCOI21k_CLIP_SwinB_896b32_4x_ft4x_max-size.yaml",
    "configs/mask2former/coco/instance-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml",
    "configs/mask2former/coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml",
]
SH_FILES = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "sh_files", "**", "*.sh"),
                                                              recursive=True))
OFFICIAL_SH = ["dcrf/run.sh", "detic/debug.sh", "detic/run.sh", "part_distillation_training/train.sh",
               "part_distillation_training/train_single.sh", "part_ranking/run.sh", "part_ranking/run_single.sh",
               "pixel_grouping/run.sh", "proposal_generation/run.sh", "proposal_generation/run_single.sh",
               "proposal_learning/train_multi.sh", "proposal_learning/train_single.sh",
               *(f"{k}_learning/prop/{d}.sh" for k in ("fewshot", "supervised")
                 for d in ("cityscapes", "part_imagenet", "pascal")),
               *(f"fewshot_learning/semseg/{d}.sh" for d in ("cityscapes", "part_imagenet", "pascal")),
               *(f"supervised_learning/semseg/{d}.sh" for d in ("city_single", "cityscapes", "part_imagenet",
                                                                "part_imagenet_single", "pascal", "pascal_single"))]
TOOLS = (sorted(glob.glob(os.path.join(REPO, "tools", "*.py"))) + [os.path.join(REPO, "demo", "demo.py")]
         + sorted(glob.glob(os.path.join(REPO, "bench", "*.py"))))


def _cfg(config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated-path stubs
        return setup_cfg(os.path.join(REPO, config), ["MODEL.DEVICE", "cpu", "MODEL.EFFICIENTNET.PRETRAINED", False])


def test_official_paths_exist():
    assert [p for p in OFFICIAL_PATHS if not os.path.isfile(os.path.join(REPO, p))] == []
    assert [p for p in OFFICIAL_SH if not os.path.isfile(os.path.join(REPO, "sh_files", p))] == []


@pytest.mark.parametrize("config", PROJECT)
def test_config_merges_and_its_datasets_resolve(config):
    cfg = _cfg(config)
    registered = set(DatasetCatalog.list())
    names = [n for n in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST) if not os.path.isdir(os.path.join(REPO, n))]
    assert [n for n in names if n not in registered] == [], config
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch == "GeneralizedRCNN":  # detectron2's default: a stage 1-3 tool config (backbone only)
        return
    assert arch in META_ARCHITECTURE_TASKS or arch in STAGE_META_ARCHITECTURES, arch
    if arch in STAGE_META_ARCHITECTURES:  # the official stage scripts: the message names this project's tool
        with pytest.raises(ValueError, match="tools/"):
            training_task(cfg)
    else:
        training_task(cfg)


def _model_key(cfg):
    """What determines the built modules (configs differing only in data or solver share it)."""
    m = cfg.MODEL
    return (m.META_ARCHITECTURE, m.BACKBONE.NAME, tuple(m.SWIN.DEPTHS), m.SWIN.EMBED_DIM, m.RESNETS.DEPTH,
            m.SEM_SEG_HEAD.NUM_CLASSES, m.MASK_FORMER.TRANSFORMER_DECODER_NAME, m.MASK_FORMER.NUM_OBJECT_QUERIES,
            m.MASK_FORMER.HIDDEN_DIM, m.MASK_FORMER.DEC_LAYERS, m.SEM_SEG_HEAD.MASK_DIM,
            cfg.PART_DISTILLATION.NUM_OBJECT_CLASSES, cfg.PART_DISTILLATION.NUM_PART_CLASSES)


def _is_stub(config):
    with open(os.path.join(REPO, config)) as f:
        return f.readline().startswith("# Deprecated path")


def _distinct_models():
    """One config per distinct model (``Base-*`` files are bases, deprecated paths stubs)."""
    seen = {}
    for config in PROJECT:
        if _is_stub(config) or os.path.basename(config).startswith("Base-"):
            continue
        cfg = _cfg(config)
        seen.setdefault(_model_key(cfg), config)
    return sorted(seen.values())


@pytest.mark.parametrize("config", _distinct_models())
def test_model_builds(config):
    """Random weights: build_model for the trained meta-architectures, the backbone for the stage
    1-3 configs and the official pixel-grouping scripts' (their tools run the backbone)."""
    cfg = _cfg(config)
    torch.manual_seed(0)
    if cfg.MODEL.META_ARCHITECTURE in ("GeneralizedRCNN", "ProposalGenerationModel", "PixelGroupingModel",
                                       "ClusteringBaseline"):
        module = build_backbone(cfg)
    else:
        module = build_model(cfg)
    assert sum(p.numel() for p in module.parameters()) > 0


@pytest.mark.parametrize("config", DETIC)
def test_detic_configs_parse_and_their_project_keys_are_declared(config):
    """Detic labeler configs: the _BASE_ chain exists and parses; the PROPOSAL_GENERATION keys of
    the official DeticLabeling.yaml merge into the project config (Detic itself is optional here)."""
    path = os.path.join(REPO, config)
    if _is_stub(config):
        with open(path) as f:
            base = yaml.safe_load(f)["_BASE_"]
        path = os.path.join(os.path.dirname(path), base)
    while path:
        with open(path) as f:
            data = yaml.safe_load(f)
        assert data.get("MODEL"), path
        base = data.get("_BASE_")
        path = os.path.join(os.path.dirname(path), base) if base else ""
        assert not path or os.path.isfile(path), path
    with open(os.path.join(REPO, config)) as f:
        pg = yaml.safe_load(f).get("PROPOSAL_GENERATION", {})
    setup_cfg("", [x for k, v in pg.items() for x in (f"PROPOSAL_GENERATION.{k}", str(v))])


_DEFAULT = re.compile(r'^\s*([A-Z_]+)=\$\{\1:-([^}]*)\}', re.M)


@pytest.mark.parametrize("sh", SH_FILES)
def test_sh_file_syntax_and_defaults(sh):
    subprocess.run(["bash", "-n", os.path.join(REPO, sh)], check=True)
    with open(os.path.join(REPO, sh)) as f:
        text = f.read()
    for sourced in re.findall(r'source "\$REPO/([^"]+)"', text):
        assert os.path.isfile(os.path.join(REPO, sourced)), (sh, sourced)
    for var, default in _DEFAULT.findall(text):
        if default.startswith("configs/"):
            assert os.path.isfile(os.path.join(REPO, default)), (sh, var, default)
        elif var in ("WEIGHTS", "INPUT_DIR", "OUTPUT_DIR", "DATASET_PATH", "PROPOSALS_DIR", "CLIP_EMBEDDINGS"):
            # outputs of an earlier stage or files put by hand: only the documented roots
            assert default == "" or default.split("/")[0] in ("output", "pseudo_labels", "weights"), (sh, var, default)


def _args_seen_by_python(tmp_path, sh, env):
    """Run ``sh`` outside SLURM with PY = a script that records its argv (JSON) and exits."""
    fake = tmp_path / "py"
    out = tmp_path / "argv.json"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({str(out)!r}, 'w'))\n")
    fake.chmod(0o755)
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    run_env.update(REPO=REPO, PY=str(fake), **env)
    subprocess.run(["bash", os.path.join(REPO, sh), "MODEL.DEVICE", "cpu"], check=True, env=run_env, cwd=REPO)
    with open(out) as f:
        return json.load(f)


def test_extra_opts_keep_their_quoting(tmp_path):
    """The official habit EXTRA_OPTS="SOLVER.STEPS '(40000, 45000)'" reaches train_net as one value;
    trailing arguments of the sh file come after it."""
    argv = _args_seen_by_python(tmp_path, "sh_files/supervised_learning/semseg/pascal_single.sh",
                                {"EXTRA_OPTS": "SOLVER.STEPS '(40000, 45000)' TEST.AUG.MIN_SIZES () SOLVER.MAX_ITER 10"})
    assert argv[0] == "tools/train_net.py"
    i = argv.index("SOLVER.STEPS")
    assert argv[argv.index("TEST.AUG.MIN_SIZES") + 1] == "()"  # an unquoted tuple is a plain word
    assert argv[i + 1] == "(40000, 45000)" and argv[-4:] == ["SOLVER.MAX_ITER", "10", "MODEL.DEVICE", "cpu"]
    assert argv[argv.index("--config-file") + 1] == "configs/supervised_learning/swinL_IN21K_384_mask2former.yaml"
    assert argv[argv.index("DATASETS.TRAIN") + 1] == "('pascal_part_train',)"
    # the default official recipe of the supervised files carries the same quoted value
    argv = _args_seen_by_python(tmp_path, "sh_files/fewshot_learning/prop/cityscapes.sh", {})
    assert argv[argv.index("SOLVER.STEPS") + 1] == "(40000, 45000)"
    assert argv[argv.index("FEWSHOT_LEARNING.LABEL_PERCENTAGE") + 1] == "10"
    setup_cfg(os.path.join(REPO, argv[argv.index("--config-file") + 1]),
              argv[argv.index("--resume") + 3:])  # the command line merges as passed


@pytest.mark.parametrize("tool", TOOLS, ids=os.path.basename)
def test_tool_help_exits_0(tool, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [tool, "--help"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(tool, run_name="__main__")
    assert e.value.code in (0, None)
    assert "usage" in capsys.readouterr().out.lower()


def test_deprecated_config_path_warns_and_merges_as_the_new_one():
    with pytest.warns(FutureWarning, match="configs/proposal_learning/tiny_cpu.yaml"):
        old = setup_cfg(os.path.join(REPO, "configs/part_proposal/tiny_cpu.yaml"))
    assert old == setup_cfg(os.path.join(REPO, "configs/proposal_learning/tiny_cpu.yaml"))


def test_official_m2f_weights_path_resolves_to_the_canonical_file(tmp_path, monkeypatch, caplog):
    """weights/m2f/... (official per-stage configs) and weights/mask2former/... (official docs):
    one file, the other name accepted with a log line."""
    canonical = tmp_path / "weights" / "mask2former" / "instance" / "swinL_i21k_q200_e100.pkl"
    canonical.parent.mkdir(parents=True)
    canonical.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("INFO"):
        cfg = setup_cfg(os.path.join(REPO, "configs/proposal_learning/swinL_IN21K_384_mask2former.yaml"),
                        ["MODEL.WEIGHTS", "weights/m2f/instance/swinL_i21k_q200_e100.pkl"])
    assert cfg.MODEL.WEIGHTS == "weights/mask2former/instance/swinL_i21k_q200_e100.pkl"
    assert "official path" in caplog.text
    cfg = setup_cfg("", ["MODEL.WEIGHTS", "weights/m2f/other.pkl"])  # no canonical file: unchanged
    assert cfg.MODEL.WEIGHTS == "weights/m2f/other.pkl"
