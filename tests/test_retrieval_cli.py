"""`mmrag index` and `mmrag search` through typer's CliRunner."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from typer.testing import CliRunner

from mmrag_rft.cli import app

runner = CliRunner()

ROWS = [
    {"id": "eiffel", "modality": "text", "title": "Eiffel Tower",
     "text": "The Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889."},
    {"id": "nile", "modality": "text", "title": "Nile", "text": "The Nile is a river in northeastern Africa."},
    {"id": "chess", "modality": "text", "title": "Chess", "text": "Chess is a board game for two players."},
    {"id": "img-cat", "modality": "image", "title": "Cat on a sofa", "text": "A ginger cat sleeping on a sofa.",
     "image_path": "pics/cat.png"},
    {"id": "tea", "modality": "text", "title": "Tea", "text": "Tea is a beverage made from Camellia sinensis leaves."},
]


def _corpus(tmp_path: Path) -> Path:
    from PIL import Image

    (tmp_path / "pics").mkdir()
    Image.new("RGB", (4, 4), (200, 100, 0)).save(tmp_path / "pics" / "cat.png")
    p = tmp_path / "corpus.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return p


def test_index_then_search(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    out = tmp_path / "idx"
    r = runner.invoke(app, ["index", str(corpus), "--out", str(out), "--batch-size", "2"])
    assert r.exit_code == 0, r.output
    assert "5" in r.stdout and "(corpus)" in r.stdout
    m = json.loads((out / "manifest.json").read_text())
    assert m["count"] == 5 and m["config"]["batch_size"] == 2 and m["num_images"] == 1
    r = runner.invoke(app, ["search", "Which tower is in Paris?", "--index", str(out), "--top-n", "3", "--json"])
    assert r.exit_code == 0, r.output
    hits = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(hits) == 3 and hits[0]["id"] == "eiffel" and hits[0]["bm25_rank"] == 1
    r = runner.invoke(app, ["search", "sleeping cat", "--index", str(out), "--mode", "bm25", "--json"])
    hits = [json.loads(line) for line in r.stdout.splitlines()]
    assert [h["id"] for h in hits] == ["img-cat"] and hits[0]["dense_rank"] is None
    assert Path(hits[0]["image_path"]).parent == out / "images"
    r = runner.invoke(app, ["search", "river in Africa", "--index", str(out)])
    assert r.exit_code == 0 and "nile" in r.stdout


def test_index_a_benchmark_file_indexes_the_union_of_pools(shared_data: Path, tmp_path: Path) -> None:
    with gzip.open(shared_data / "webqa" / "val_records.json.gz", "rt") as f:
        records = json.load(f)
    keys = list(records)[:2]
    small = tmp_path / "webqa_small.json"
    small.write_text(json.dumps({k: records[k] for k in keys}))
    expected = set()
    for k in keys:
        rec = records[k]
        expected |= {str(x["image_id"]) for x in rec["img_posFacts"] + rec["img_negFacts"]}
        expected |= {str(x["snippet_id"]) for x in rec["txt_posFacts"] + rec["txt_negFacts"]}
    out = tmp_path / "idx"
    r = runner.invoke(app, ["index", str(small), "--out", str(out), "--set", "use_dense=false"])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["count"] == len(expected) and m["embedder"] is None
    ids = json.loads((out / "ids.json").read_text())
    assert len(ids) == len(set(ids)) == len(expected)


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    r = runner.invoke(app, ["index", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "i")])
    assert r.exit_code == 2 and "nope.jsonl: no such file" in r.output and "Traceback" not in r.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n" + '{"id": "x", "modality": "video"}\n')
    r = runner.invoke(app, ["index", str(bad), "--out", str(tmp_path / "i"), "--format", "corpus"])
    assert r.exit_code == 2 and "bad.jsonl" in r.output and "row 2" in r.output and "modality" in r.output
    assert not (tmp_path / "i").exists()
    r = runner.invoke(app, ["index", str(bad), "--out", str(tmp_path / "i"), "--set", "rrf_kk=3"])
    assert r.exit_code == 2 and "rrf_kk" in r.output
    r = runner.invoke(app, ["search", "q", "--index", str(tmp_path)])
    assert r.exit_code == 2 and "manifest.json: missing" in r.output and "Traceback" not in r.output


def _png(path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), "red").save(path)
    return path


def test_index_refuses_image_paths_outside_the_corpus_folder(tmp_path):
    """An image_path that escapes the corpus folder (absolute or ../) is refused, naming the candidate; the
    index would otherwise copy it and the server serve it. --image-dir or --allow-outside-images lets it in."""
    outside = _png(tmp_path / "elsewhere" / "pic.png")
    secret = tmp_path / "elsewhere" / "secret.txt"
    secret.write_text("password")
    corpus_dir = tmp_path / "corpus"
    _png(corpus_dir / "imgs" / "ok.png")
    for i, path in enumerate([str(secret), "../elsewhere/secret.txt", str(outside)]):
        corpus = corpus_dir / f"c{i}.jsonl"
        corpus.write_text(json.dumps({"id": "a", "modality": "image", "text": "a red square", "image_path": path})
                          + "\n" + json.dumps({"id": "b", "modality": "image", "text": "ok", "image_path": "imgs/ok.png"})
                          + "\n")
        r = runner.invoke(app, ["index", str(corpus), "--out", str(tmp_path / f"idx{i}"), "--set", "use_dense=false"])
        assert r.exit_code == 2, r.output
        assert "outside the corpus folder" in r.output and "'a'" in r.output and "Traceback" not in r.output
        assert not (tmp_path / f"idx{i}").exists()
    ok = runner.invoke(app, ["index", str(corpus_dir / "c2.jsonl"), "--out", str(tmp_path / "ok"),
                             "--set", "use_dense=false", "--image-dir", str(outside.parent)])
    assert ok.exit_code == 0, ok.output
    from mmrag_rft.retrieval.index import HybridIndex

    idx = HybridIndex.load(tmp_path / "ok")
    assert idx.manifest.num_images == 2 and idx.image_path("a").parent == tmp_path / "ok" / "images"


def test_index_stores_only_files_that_decode_as_images(tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    _png(tmp_path / "real.png")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "modality": "image", "text": "caption", "image_path": f}) + "\n"
                              for i, f in (("fake", "notes.png"), ("real", "real.png"))))
    out = tmp_path / "idx"
    r = runner.invoke(app, ["index", str(corpus), "--out", str(out), "--set", "use_dense=false",
                            "--allow-outside-images"])
    assert r.exit_code == 0, r.output
    from mmrag_rft.retrieval.index import HybridIndex

    idx = HybridIndex.load(out)
    assert idx.image_path("fake") is None and idx.image_path("real") is not None
    assert idx.manifest.num_images == 1 and len(list((out / "images").iterdir())) == 1


def test_stale_build_folders_of_dead_builders_and_an_interrupted_swap_are_recovered(tmp_path):
    import os
    import subprocess
    import sys

    from mmrag_rft.retrieval.housekeeping import PID_FILE
    from mmrag_rft.retrieval.index import HybridIndex

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "modality": "text", "text": f"passage {i}"}) + "\n" for i in range(5)))
    out = tmp_path / "idx"
    args = ["index", str(corpus), "--out", str(out), "--format", "corpus", "--set", "use_dense=false"]
    assert runner.invoke(app, args).exit_code == 0
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for name, pid in ((".idx.build-dead", dead.stdout.strip()), (".idx.build-live", str(os.getpid()))):
        (tmp_path / name).mkdir()
        (tmp_path / name / PID_FILE).write_text(pid)
    assert runner.invoke(app, args).exit_code == 0
    assert not (tmp_path / ".idx.build-dead").exists() and (tmp_path / ".idx.build-live").exists()
    # killed between the swap's two renames: no index, the old one hidden; the next load puts it back
    os.rename(out, tmp_path / ".idx.old-1234abcd")
    assert len(HybridIndex.load(out)) == 5 and out.is_dir()


def test_sigterm_during_a_build_leaves_no_build_folder(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    corpus = tmp_path / "c.jsonl"
    with corpus.open("w") as f:
        for i in range(300_000):
            f.write(f'{{"id": "d{i}", "modality": "text", "text": "passage number {i} about topic {i % 97}"}}\n')
    proc = subprocess.Popen([sys.executable, "-m", "mmrag_rft.cli", "index", str(corpus), "--out",
                             str(tmp_path / "idx"), "--format", "corpus", "--set", "use_dense=false"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".idx.build-*")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the build finished before it could be interrupted"
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 128 + signal.SIGTERM
    assert not list(tmp_path.glob(".idx.build-*")) and not (tmp_path / "idx").exists()
    del os
