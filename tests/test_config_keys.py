"""Every config key the project declares is read by code, or is an official key listed in
``part_distillation.config.ACCEPTED_UNREAD_KEYS`` with the reason it is accepted and ignored.

A key counts as read when its leaf name is loaded as an attribute (``cfg.X.NAME``), used as a
string subscript (``node["NAME"]``) or listed in a tuple/list of key names (``for k in ("NAME",
...): node[k]``) somewhere in ``part_distillation/`` or ``tools/`` outside the ``config/`` package.
"""
import ast
import os

from detectron2.config import CfgNode, get_cfg

from part_distillation.config import ACCEPTED_UNREAD_KEYS, get_part_distillation_cfg

from .helpers import REPO

CONFIG_PACKAGE = os.path.join(REPO, "part_distillation", "config")

def _leaves(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, CfgNode):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield prefix + k


def declared_keys():
    """Leaf keys the project adds to detectron2's defaults."""
    return sorted(set(_leaves(get_part_distillation_cfg())) - set(_leaves(get_cfg())))


def read_names():
    names = set()
    for top in ("part_distillation", "tools"):
        for root, _, files in os.walk(os.path.join(REPO, top)):
            for f in files:
                if not f.endswith(".py") or os.path.normpath(root) == CONFIG_PACKAGE:
                    continue
                tree = ast.parse(open(os.path.join(root, f)).read())
                for n in ast.walk(tree):
                    if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load):
                        names.add(n.attr)
                    elif isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant):
                        names.add(n.slice.value)
                    elif (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "get"
                          and n.args and isinstance(n.args[0], ast.Constant) and isinstance(n.args[0].value, str)):
                        names.add(n.args[0].value)  # node.get("KEY", default)
                    elif isinstance(n, (ast.Tuple, ast.List)):
                        names.update(e.value for e in n.elts if isinstance(e, ast.Constant) and isinstance(e.value, str))
    return names


def unread_keys():
    names = read_names()
    return [k for k in declared_keys() if k.rsplit(".", 1)[-1] not in names and k not in ACCEPTED_UNREAD_KEYS]


def test_accepted_unread_keys_are_declared_and_explained():
    declared = set(declared_keys())
    for key, reason in ACCEPTED_UNREAD_KEYS.items():
        assert key in declared, f"{key} is allowlisted but not declared"
        assert len(reason) > 20, f"{key}: say why it is accepted and ignored"


def test_every_declared_key_is_read():
    unread = unread_keys()
    assert not unread, f"declared but read nowhere (read them, remove them, or list them in ACCEPTED_UNREAD_KEYS with the reason): {unread}"
