"""Manual evaluation tool: prepare on real Pascal images, answer through the API, hand-computed
precision / diversity / generality, blinding, validation, path traversal, a killed server."""
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from part_distillation.data import resolve_dataset
from part_distillation.data.ground_truth import gt_objects
from part_distillation.data.pseudo_labels import ImagePseudoLabel, ObjectLabel, PartLabel, save_pseudo_label
from part_distillation.manual_eval import StudyError, pipeline_methods, prepare_study, store
from part_distillation.manual_eval.report import compute_report, write_report

from .helpers import REPO, needs_shared

pytest.importorskip("fastapi", reason="manual_eval extra not installed (pip install -e .[manual_eval])")
from fastapi.testclient import TestClient  # noqa: E402

from part_distillation.manual_eval.server import create_app  # noqa: E402

CLASSES = ["cat", "dog", "bird"]


def _splits(mask: np.ndarray, method: str, gt) -> list:
    """Synthetic part splits of an object: 2x2 box quadrants, left/right halves, or its GT parts."""
    if method == "gt":
        return [p for p in gt.parts if p.any()]
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    if method == "halves":
        cells = [xx < cx, xx >= cx]
    else:
        cells = [(yy < cy) & (xx < cx), (yy < cy) & (xx >= cx), (yy >= cy) & (xx < cx), (yy >= cy) & (xx >= cx)]
    return [mask & c for c in cells if (mask & c).any()]


def build_methods(root: str, methods=("grid", "halves", "gt"), classes=CLASSES) -> dict:
    """Pseudo-label folders (one per method) of the Pascal examples' objects of ``classes``, with
    the given object masks and synthetic part splits."""
    folders = {m: os.path.join(root, m) for m in methods}
    for rec in resolve_dataset("pascal_part_examples"):
        gts = gt_objects(rec)
        if not any(g.class_name in classes for g in gts):
            continue
        for m in methods:
            objs = [ObjectLabel(g.class_name, g.mask, g.class_code, parts=[PartLabel(p) for p in _splits(g.mask, m, g)])
                    for g in gts]
            save_pseudo_label(folders[m], ImagePseudoLabel(rec["file_name"], str(rec["image_id"]), rec["height"],
                                                           rec["width"], "part_ranking", objs))
    return folders


pytestmark = needs_shared


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return build_methods(str(tmp_path_factory.mktemp("methods")))


@pytest.fixture
def study(folders, tmp_path):
    out = str(tmp_path / "study")
    prepare_study(folders, out, classes=["cat", "dog"], per_class=1, seed=3, panel_height=120)
    return out


def _orders(out):
    conn = store.connect(out)
    rows = conn.execute("SELECT i.image_id, i.object_index, m.name FROM panels p JOIN items i ON i.id = p.item_id "
                        "JOIN methods m ON m.id = p.method_id ORDER BY i.position, p.slot").fetchall()
    conn.close()
    by_item = {}
    for r in rows:
        by_item.setdefault((r[0], r[1]), []).append(r[2])
    return by_item


def test_blinding_is_deterministic_per_seed_and_differs_across_items(folders, tmp_path):
    a = [prepare_study(folders, str(tmp_path / f"s{i}"), classes=None, per_class=2, seed=7, panel_height=64)
         for i in range(2)]
    assert a[0]["num_items"] == a[1]["num_items"] >= 5
    o0, o1 = _orders(str(tmp_path / "s0")), _orders(str(tmp_path / "s1"))
    assert list(o0.items()) == list(o1.items())  # same items, same positions, same panel orders
    assert len({tuple(v) for v in o0.values()}) > 1  # the order changes from item to item
    other = prepare_study(folders, str(tmp_path / "s2"), classes=None, per_class=2, seed=8, panel_height=64)
    assert list(_orders(str(tmp_path / "s2")).items()) != list(o0.items()) and other["num_items"] >= 5
    # file names and the item view say nothing about the method
    conn = store.connect(str(tmp_path / "s0"))
    view = store.item_view(conn, 1)
    conn.close()
    text = repr(view)
    assert not any(m in text for m in ("grid", "halves", "gt"))


def test_prepare_refuses_missing_classes_and_foreign_objects(folders, tmp_path):
    with pytest.raises(StudyError, match="'boat'.*objects per method"):
        prepare_study(folders, str(tmp_path / "x"), classes=["cat", "boat"])
    lone = build_methods(str(tmp_path / "lone"), methods=("grid",), classes=["boat"])
    with pytest.raises(StudyError, match="shares no object"):
        prepare_study({"a": folders["grid"], "b": lone["grid"]}, str(tmp_path / "y"))
    with pytest.raises(StudyError, match="at least two"):
        prepare_study({"a": folders["grid"]}, str(tmp_path / "z"))


def _answer(view, splits, parts, meaningful):
    """Answers for an item: per slot, splits / num_parts, and segment k meaningful iff k in meaningful[slot]."""
    return [{"panel_id": p["panel_id"], "splits": splits[p["slot"]], "num_parts": parts[p["slot"]],
             "segments": [{"segment_id": s["segment_id"], "meaningful": s["number"] in meaningful[p["slot"]]}
                          for s in p["segments"]]} for p in view["panels"]]


def test_answers_through_the_api_give_hand_computed_figures(study):
    c = TestClient(create_app(study))
    assert c.post("/api/annotators", json={"annotator": "ann"}).status_code == 200
    conn = store.connect(study)
    method_of = {r[0]: r[1] for r in conn.execute("SELECT p.id, m.name FROM panels p JOIN methods m ON m.id = p.method_id")}
    class_of = {r[0]: r[1] for r in conn.execute("SELECT id, class_code FROM items")}
    conn.close()
    # per method: segment 1 meaningful only; num_parts 1 (grid), 0 (halves), 2 or fewer (gt);
    # splits yes except for "halves" on dog
    expected = {m: {} for m in ("grid", "halves", "gt")}
    for _ in range(2):
        item = c.get("/api/next", params={"annotator": "ann"}).json()["item"]
        cls = class_of[item["item_id"]]
        methods = {p["slot"]: method_of[p["panel_id"]] for p in item["panels"]}
        nseg = {p["slot"]: p["num_segments"] for p in item["panels"]}
        want = {"grid": 1, "halves": 0, "gt": min(2, nseg[[s for s, m in methods.items() if m == "gt"][0]])}
        splits = {s: not (m == "halves" and cls == "dog") for s, m in methods.items()}
        parts = {s: want[m] for s, m in methods.items()}
        r = c.post("/api/answers", json={"annotator": "ann", "item_id": item["item_id"],
                                         "panels": _answer(item, splits, parts, {s: {1} for s in methods})})
        assert r.status_code == 200, r.text
        for s, m in methods.items():
            expected[m][cls] = (1 / nseg[s] if nseg[s] else None, want[m], float(splits[s]))
    assert c.get("/api/next", params={"annotator": "ann"}).json()["item"] is None
    rep = compute_report(study, n_resamples=200)
    for m, per in expected.items():
        prec = [v[0] for v in per.values() if v[0] is not None]
        got = rep["methods"][m]
        assert got["precision"]["mean"] == pytest.approx(np.mean(prec))
        assert got["diversity"]["mean"] == pytest.approx(np.mean([v[1] for v in per.values()]))
        assert got["generality"]["mean"] == pytest.approx(np.mean([v[2] for v in per.values()]))
        assert got["diversity"]["classes"] == 2
    assert rep["methods"]["grid"]["precision"]["mean"] == pytest.approx(0.25)  # 1 of 4 quadrants, both classes
    assert rep["methods"]["halves"]["generality"]["mean"] == pytest.approx(0.5)  # yes on cat, no on dog
    d = rep["differences"]["grid - halves"]
    assert d["diversity"]["mean"] == pytest.approx(1.0) and d["diversity"]["low"] == d["diversity"]["high"] == 1.0
    assert rep["agreement"]["splits"]["units"] == 0  # one annotator: no agreement figures
    paths = write_report(study, n_resamples=200)
    md = open(paths["md"]).read()
    assert "| grid | 25.0 [25.0, 25.0] | 1.0 [1.0, 1.0] | 100.0 [100.0, 100.0] | 2 | 2 |" in md
    assert os.path.getsize(paths["png"]) > 5000


def test_kappa_on_items_with_two_annotators(study):
    c = TestClient(create_app(study))
    for name in ("a", "b", "c"):
        c.post("/api/annotators", json={"annotator": name})
    for k in range(2):
        for name in ("a", "b", "c"):
            item = c.get("/api/next", params={"annotator": name}).json()["item"]
            agree = name != "c"  # a and b answer identically, c flips every splits answer
            splits = {p["slot"]: (p["slot"] % 2 == 0) == agree for p in item["panels"]}
            parts = {p["slot"]: min(p["slot"], p["num_segments"]) for p in item["panels"]}
            meaningful = {p["slot"]: {1, 2} if agree else {1} for p in item["panels"]}
            assert c.post("/api/answers", json={"annotator": name, "item_id": item["item_id"],
                                                "panels": _answer(item, splits, parts, meaningful)}).status_code == 200
    ag = compute_report(study, n_resamples=100)["agreement"]
    assert ag["splits"]["units"] == 6 and ag["splits"]["fleiss_raters"] == 3
    # (a, b) agree on all 6 units: kappa 1; (a, c), (b, c) disagree on all: p_o = 0, a says yes on
    # 4 of 6, c on 2 of 6, p_e = 4/6 * 2/6 + 2/6 * 4/6 = 4/9, kappa = -p_e / (1 - p_e) = -0.8
    assert ag["splits"]["cohen"] == pytest.approx((1 - 0.8 - 0.8) / 3) and ag["splits"]["cohen_pairs"] == 3
    assert ag["splits"]["fleiss"] < 0
    assert ag["num_parts"]["cohen"] == pytest.approx(1.0)


def test_bad_answers_get_4xx_and_write_nothing(study):
    c = TestClient(create_app(study))
    c.post("/api/annotators", json={"annotator": "ann"})
    item = c.get("/api/next", params={"annotator": "ann"}).json()["item"]
    good = _answer(item, {p["slot"]: True for p in item["panels"]}, {p["slot"]: 0 for p in item["panels"]},
                   {p["slot"]: set() for p in item["panels"]})
    post = lambda panels, **kw: c.post("/api/answers", json={"annotator": kw.get("who", "ann"),  # noqa: E731
                                                             "item_id": kw.get("item", item["item_id"]), "panels": panels})
    assert post(good, item=999).status_code == 404
    assert post(good, who="nobody").status_code == 404
    assert post(good[:-1]).status_code == 400  # a panel missing
    bad = [dict(p) for p in good]
    bad[0] = dict(bad[0], num_parts=item["panels"][0]["num_segments"] + 1)
    r = post(bad)
    assert r.status_code == 400 and "outside" in r.json()["detail"]
    bad[0] = dict(good[0], segments=good[0]["segments"] + [{"segment_id": 10 ** 6, "meaningful": True}])
    assert post(bad).status_code == 400
    bad[0] = dict(good[0], panel_id=good[1]["panel_id"])
    assert post(bad).status_code == 400
    bad[0] = dict(good[0], splits="yes")
    assert post(bad).status_code == 422
    assert c.post("/api/annotators", json={"annotator": "../../x"}).status_code == 400
    conn = store.connect(study)
    assert conn.execute("SELECT COUNT(*) FROM submissions").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM panel_answers").fetchone()[0] == 0
    conn.close()
    assert post(good).status_code == 200
    assert post(good).status_code == 409  # saved twice
    # undo: the item comes back, the next save counts once
    assert c.post("/api/undo", json={"annotator": "ann"}).json() == {"undone_item": item["item_id"]}
    assert c.get("/api/next", params={"annotator": "ann"}).json()["item"]["item_id"] == item["item_id"]
    assert post(good).status_code == 200
    assert c.get("/api/progress").json()["annotators"][0]["done"] == 1
    assert "ann" in c.get("/admin").text and "grid" in c.get("/admin").text


def test_only_study_pictures_are_served_and_the_token_is_required(study):
    c = TestClient(create_app(study, token="s3cret"))
    assert c.get("/").status_code == 401
    assert c.get("/api/progress", headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = c.get("/?token=s3cret")
    assert r.status_code == 200 and "manual_eval_token" in r.headers.get("set-cookie", "")
    # the cookie now authorises the client
    conn = store.connect(study)
    pic = conn.execute("SELECT context_file FROM items LIMIT 1").fetchone()[0]
    conn.close()
    r = c.get(f"/files/{pic}")
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    secret = os.path.join(os.path.dirname(study), "secret.txt")
    open(secret, "w").write("no")
    for path in ("/files/../secret.txt", "/files/images/../../secret.txt", "/files/%2e%2e/secret.txt",
                 "/files/images/%2e%2e/%2e%2e/secret.txt", f"/files/{secret}", f"/files//{secret}",
                 "/files/study.sqlite", "/files/images/../study.sqlite", "/files/study.json", "/files/images",
                 "/files/%2fetc%2fpasswd"):
        r = c.get(path)
        assert r.status_code in (404, 400) and b"no" != r.content, path
    TestClient(create_app(study))  # no token: open


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_server(study, port):
    """``tools/manual_eval.py serve`` as a real process; returns it once it answers."""
    import httpx

    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "tools", "manual_eval.py"), "serve", study,
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/progress", timeout=1)
            return proc
        except httpx.HTTPError:
            if proc.poll() is not None:
                raise RuntimeError("server exited")
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def test_a_killed_server_keeps_every_saved_answer(study):
    import httpx

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(study, port)
    try:
        httpx.post(f"{base}/api/annotators", json={"annotator": "ann"})
        item = httpx.get(f"{base}/api/next", params={"annotator": "ann"}).json()["item"]
        panels = _answer(item, {p["slot"]: True for p in item["panels"]}, {p["slot"]: 1 for p in item["panels"]},
                         {p["slot"]: {1} for p in item["panels"]})
        assert httpx.post(f"{base}/api/answers", json={"annotator": "ann", "item_id": item["item_id"],
                                                       "panels": panels}).status_code == 200
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proc = start_server(study, port)
    try:
        nxt = httpx.get(f"{base}/api/next", params={"annotator": "ann"}).json()
        assert nxt["done"] == 1 and nxt["item"]["item_id"] != item["item_id"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    conn = store.connect(study)
    assert conn.execute("SELECT COUNT(*) FROM segment_answers").fetchone()[0] == sum(len(p["segments"]) for p in panels)
    conn.close()


def test_main_job_methods_and_cli(folders, tmp_path):
    outputs = {"pretrained/proposal_generation": "/o/pg", "pretrained/dcrf": "/o/crf",
               "pretrained/dcrf_official": "/o/crf_off", "grid_2x2/proposal_generation": "/o/g",
               "grid_2x2/dcrf": "/o/gcrf", "part_ranking": "/o/pr", "part_distillation": "/o/pd"}
    assert pipeline_methods(outputs) == {"part_distillation": "/o/pd", "part_ranking": "/o/pr",
                                         "pretrained": "/o/crf", "grid_2x2": "/o/gcrf"}
    import importlib.util

    spec = importlib.util.spec_from_file_location("manual_eval_tool", os.path.join(REPO, "tools", "manual_eval.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    main = tool.main

    out = str(tmp_path / "cli")
    assert main(["prepare", "--method", f"a={folders['grid']}", "--method", f"b={folders['gt']}",
                 "--classes", "2", "--per-class", "1", "--out", out]) == 0
    assert main(["report", out]) == 0 and os.path.isfile(os.path.join(out, "report.md"))
    assert main(["prepare", "--method", f"a={folders['grid']}", "--method", f"b={folders['gt']}",
                 "--classes", "boat", "--out", str(tmp_path / "no")]) == 2


def test_study_from_the_main_jobs_own_outputs(tmp_path):
    """``tools/run_part_pipeline.py --baselines --manual-eval-study DIR`` on two real images."""
    tool = os.path.join(REPO, "tools", "run_part_pipeline.py")
    env = dict(os.environ, PYTHONPATH=REPO)
    study = str(tmp_path / "study")
    base = [sys.executable, tool, "--dataset", "pascal_part_examples", "--output-dir", str(tmp_path / "run"),
            "--max-images", "2", "--num-collages", "0", "--manual-eval-study", study]
    r = subprocess.run(base, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "add --stages 1-6 or --baselines" in r.stderr  # one method: nothing to compare
    r = subprocess.run(base + ["--baselines", "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "192",
                               "DENSE_CRF.NUM_WORKERS", "1"], env=env, capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    conn = store.connect(study)
    methods = [row[0] for row in conn.execute("SELECT name FROM methods ORDER BY id")]
    conn.close()
    assert methods == ["pretrained", "random_init", "rgbxy_kmeans", "grid_2x2"]
    c = TestClient(create_app(study))
    c.post("/api/annotators", json={"annotator": "ann"})
    item = c.get("/api/next", params={"annotator": "ann"}).json()["item"]
    assert len(item["panels"]) == 4 and all(p["num_segments"] >= 1 for p in item["panels"])
