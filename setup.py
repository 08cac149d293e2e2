"""part-distillation: unsupervised part segmentation (PartDistillation, CVPR 2023) on detectron2."""
from setuptools import find_packages, setup

setup(
    name="part_distillation",
    version="0.1.0",
    description="Learning object parts from instance segmentation, without part labels",
    packages=find_packages(include=["part_distillation", "part_distillation.*"]),
    python_requires=">=3.10",
    # Dependencies are installed by tools/setup_env.sh (torch and detectron2 need special routes);
    # see requirements.txt and INSTALL.md.
    install_requires=[],
    # Detic labeler: pip install -e .[detic], then (they must go without their declared deps)
    # pip install --no-deps detic-fast==1.0.post20230203 centernet2==1.0.post20221121 clip-anytorch==2.6.0
    # Manual-evaluation tool (tools/manual_eval.py serve/report and its tests): pip install -e .[manual_eval]
    extras_require={"detic": ["ftfy", "regex"],
                    "manual_eval": ["fastapi>=0.110", "uvicorn>=0.29", "httpx>=0.27", "statsmodels>=0.14",
                                    "selenium>=4.10"]},
)
