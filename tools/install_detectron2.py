#!/usr/bin/env python
"""Install detectron2 v0.6 from the PyPI sdist ``pb1-detectron2==0.6`` without its C++ sources.

Detectron2 publishes no wheels for Python 3.11 / recent torch.  The registry route used here:

1. download the sdist (sha256-pinned below) into a cache folder;
2. patch it so it installs as pure Python:
   * ``setup.py``: drop ``ext_modules``/``cmdclass`` and ship ``detectron2/model_zoo/configs``;
   * ``from detectron2 import _C`` becomes optional (rotated boxes / deformable conv then raise);
   * COCO evaluation falls back from ``COCOeval_opt`` to pycocotools' ``COCOeval``;
   * ``np.int`` / ``np.float`` / ``np.bool`` -> builtins (removed in numpy >= 1.24);
   * ``Image.LINEAR`` -> ``Image.BILINEAR`` (removed in Pillow 10);
   * ``pkg_resources`` -> ``importlib.resources`` (setuptools may not provide it);
3. ``pip install --no-deps --no-build-isolation`` into the running interpreter;
4. on the installed detectron2 (this route or a from-source build): ``create_ddp_model`` passes
   ``device_ids`` only for CUDA models, so multi-process CPU training (gloo) works.

Idempotent: steps 1-3 are skipped when an importable detectron2 0.6 is already installed (a
from-source build of the official repository counts too); step 4 patches once.
Usage: ``python tools/install_detectron2.py``.
"""
import argparse
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

SDIST_URL = (
    "https://files.pythonhosted.org/packages/60/26/"
    "48f5bbb7ee492696a21da23303daeecdfe3942c498a70d34108acf63b2bd/pb1-detectron2-0.6.tar.gz"
)
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
CACHE = Path(os.environ.get("PD_CACHE", Path.home() / ".cache" / "part_distillation"))


def _already_installed() -> bool:
    if importlib.util.find_spec("detectron2") is None:
        return False
    out = subprocess.run(
        [sys.executable, "-c", "import detectron2.engine, detectron2.evaluation; print('ok')"],
        capture_output=True, text=True,
    )
    return out.returncode == 0 and "ok" in out.stdout


def _fetch() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    dst = CACHE / "pb1-detectron2-0.6.tar.gz"
    if not dst.exists() or hashlib.sha256(dst.read_bytes()).hexdigest() != SDIST_SHA256:
        tmp = dst.with_suffix(".part")
        print(f"[install_detectron2] downloading {SDIST_URL}")
        urllib.request.urlretrieve(SDIST_URL, tmp)
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        if digest != SDIST_SHA256:
            tmp.unlink()
            raise SystemExit(f"sha256 mismatch for pb1-detectron2-0.6: {digest} != {SDIST_SHA256}")
        tmp.replace(dst)
    return dst


def _sub(path: Path, old: str, new: str, count_expected: bool = True, regex: bool = False) -> None:
    text = path.read_text()
    new_text = re.sub(old, new, text) if regex else text.replace(old, new)
    if count_expected and new_text == text:
        raise SystemExit(f"patch did not apply to {path}: {old!r}")
    path.write_text(new_text)


def _patch(src: Path) -> None:
    d2 = src / "detectron2"
    # setup.py: no C++ extension, ship the model-zoo configs that the sdist already carries.
    setup = src / "setup.py"
    _sub(setup, "    ext_modules=get_extensions(),\n", "")
    _sub(setup, '    cmdclass={"build_ext": torch.utils.cpp_extension.BuildExtension},\n', "")
    _sub(setup, 'package_data={"detectron2.model_zoo": get_model_zoo_configs()}',
         'package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py", '
         '"configs/*.yaml"]}')
    # Optional _C.
    for rel in ["layers/deform_conv.py", "layers/roi_align_rotated.py", "layers/rotated_boxes.py",
                "evaluation/fast_eval_api.py"]:
        _sub(d2 / rel, "from detectron2 import _C\n",
             "try:\n    from detectron2 import _C\nexcept ImportError:  # pure-Python install\n"
             "    _C = None\n")
    # COCOeval_opt needs _C: use pycocotools' COCOeval instead.
    _sub(d2 / "evaluation/coco_evaluation.py",
         "(COCOeval_opt if use_fast_impl else COCOeval)",
         "(COCOeval_opt if (use_fast_impl and _C_AVAILABLE) else COCOeval)")
    _sub(d2 / "evaluation/coco_evaluation.py",
         "from detectron2.evaluation.fast_eval_api import COCOeval_opt\n",
         "from detectron2.evaluation.fast_eval_api import COCOeval_opt, _C as _FAST_C\n"
         "_C_AVAILABLE = _FAST_C is not None\n")
    # numpy aliases and Pillow constants removed upstream.
    for py in d2.rglob("*.py"):
        text = py.read_text()
        new = re.sub(r"\bnp\.(int|float|bool)\b(?!\w)", r"\1", text)
        new = new.replace("Image.LINEAR", "Image.BILINEAR")
        if new != text:
            py.write_text(new)
    # pkg_resources -> importlib.resources.
    mz = d2 / "model_zoo/model_zoo.py"
    _sub(mz, "import pkg_resources\n", "import importlib.resources\n")
    _sub(mz, 'pkg_resources.resource_filename(\n        "detectron2.model_zoo", os.path.join("configs", config_path)\n    )',
         'str(importlib.resources.files("detectron2.model_zoo").joinpath("configs", config_path))')


_DDP_OLD = '    if "device_ids" not in kwargs:\n        kwargs["device_ids"] = [comm.get_local_rank()]\n'
_DDP_NEW = ('    # CPU modules (gloo) take no device_ids\n'
            '    if "device_ids" not in kwargs and next(model.parameters()).is_cuda:\n'
            '        kwargs["device_ids"] = [comm.get_local_rank()]\n')


def _patch_installed_ddp() -> None:
    """Step 4 on the installed ``detectron2/engine/defaults.py`` (no-op once patched)."""
    spec = importlib.util.find_spec("detectron2")
    path = Path(spec.origin).parent / "engine" / "defaults.py"
    text = path.read_text()
    if _DDP_NEW in text:
        return
    if _DDP_OLD not in text:
        raise SystemExit(f"patch did not apply to {path}: create_ddp_model changed upstream")
    path.write_text(text.replace(_DDP_OLD, _DDP_NEW))
    print(f"[install_detectron2] {path}: create_ddp_model works for CPU models")


def main() -> None:
    if _already_installed():
        print("[install_detectron2] detectron2 already importable; nothing to install")
        _patch_installed_ddp()
        return
    sdist = _fetch()
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = Path(tmp) / "pb1-detectron2-0.6"
        _patch(src)
        shutil.rmtree(src / "pb1_detectron2.egg-info", ignore_errors=True)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                               "--no-build-isolation", str(src)])
    if not _already_installed():
        raise SystemExit("detectron2 installed but does not import; see the messages above")
    _patch_installed_ddp()
    print("[install_detectron2] installed patched detectron2 0.6")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # --help; no options
    main()
