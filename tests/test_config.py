import pytest

from part_distillation.config import setup_cfg

from .helpers import EFFNET_CFG


def test_base_inheritance_and_overrides():
    cfg = setup_cfg(EFFNET_CFG, ["PROPOSAL_GENERATION.NUM_SUPERPIXEL_CLUSTERS", "6"])
    assert cfg.MODEL.BACKBONE.NAME == "build_efficientnet_lite0_backbone"  # from the child
    assert cfg.DENSE_CRF.BILATERAL_COMPAT == 10  # from _BASE_
    assert cfg.PROPOSAL_GENERATION.BACKBONE_FEATURE_KEY_LIST == ["res3", "res4", "res5"]  # ours, from the child
    assert cfg.PROPOSAL_GENERATION.NUM_SUPERPIXEL_CLUSTERS == 6
    assert cfg.is_frozen()


def test_misspelt_key_on_command_line_names_it():
    with pytest.raises(KeyError, match=r"PROPOSAL_GENERATION\.NUM_SUPERPIXEL_CLUSTER'.*did you mean PROPOSAL_GENERATION\.NUM_SUPERPIXEL_CLUSTERS"):
        setup_cfg(EFFNET_CFG, ["PROPOSAL_GENERATION.NUM_SUPERPIXEL_CLUSTER", "5"])


def test_misspelt_key_in_yaml_names_it(tmp_path):
    y = tmp_path / "bad.yaml"
    y.write_text(f'_BASE_: "{EFFNET_CFG}"\nDENSE_CRF:\n  NUM_ITER: 5\n')
    with pytest.raises(KeyError, match=r"DENSE_CRF\.NUM_ITER'.*bad\.yaml"):
        setup_cfg(str(y))


def test_missing_config_file_and_odd_overrides():
    with pytest.raises(FileNotFoundError):
        setup_cfg("configs/does_not_exist.yaml")
    with pytest.raises(ValueError, match="KEY VALUE"):
        setup_cfg(EFFNET_CFG, ["PROPOSAL_GENERATION.SEED"])
