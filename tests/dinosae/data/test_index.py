"""The folder index: written once, reused while the folder is unchanged, listed again when it changes,
and shared by the ranks of a distributed job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from PIL import Image

from dinosae.data.index import folder_listing, index_folder, index_path, load_listing


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), "green").save(path)


def _names(listing):
    return [(listing.relative_path(i), int(listing.labels[i])) for i in range(len(listing))]


@pytest.fixture
def tree(tmp_path):
    for name in ("dog/1.png", "dog/2.png", "cat/3.png", "cat/deep/4.png"):
        _image(tmp_path / "data" / name)
    return tmp_path / "data"


def test_an_index_is_reused_until_a_folder_changes(tree, monkeypatch):
    path = index_folder(tree)
    assert path == index_path(tree) and path.is_file()
    first = load_listing(tree, path)
    stamp = path.stat().st_mtime_ns

    import dinosae.data.index as index

    monkeypatch.setattr(index, "list_folder", lambda root: pytest.fail("a fresh index was listed again"))
    assert index_folder(tree) == path and _names(load_listing(tree, path)) == _names(first)
    monkeypatch.undo()
    assert path.stat().st_mtime_ns == stamp

    time.sleep(0.01)  # a new modification time even on filesystems of coarse clocks
    _image(tree / "cat" / "deep" / "5.png")
    changed = folder_listing(tree)
    assert ("cat/deep/5.png", 0) in _names(changed) and len(changed) == len(first) + 1


def test_a_removed_class_is_noticed(tree):
    folder_listing(tree)
    for name in ("1.png", "2.png"):
        (tree / "dog" / name).unlink()
    (tree / "dog").rmdir()
    listing = folder_listing(tree)
    assert listing.classes == ["cat"] and len(listing) == 2


def test_an_unwritable_index_folder_still_lists(tree, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the index folder should be")
    monkeypatch.setenv("DINOSAE_INDEX_DIR", str(blocker / "indexes"))
    with pytest.warns(UserWarning, match="cannot write the index"):
        listing = folder_listing(tree)
    assert len(listing) == 4


def test_a_damaged_index_is_listed_again(tree):
    path = index_folder(tree)
    path.write_bytes(path.read_bytes()[:40])
    assert len(folder_listing(tree)) == 4 and len(load_listing(tree, path)) == 4


RANK_SCRIPT = """
import json, os, sys
import dinosae.data.index as index
from dinosae.runtime import init_distributed, shutdown

listed = []
original = index.list_folder
index.list_folder = lambda root: listed.append(1) or original(root)
env = init_distributed("cpu")
listing = index.folder_listing(sys.argv[1], env.on_main)
names = [listing.relative_path(i) for i in range(len(listing))]
with open(os.path.join(sys.argv[2], f"rank{env.rank}.json"), "w") as report:
    json.dump({"listed": len(listed), "names": names}, report)
shutdown(env)
"""


def test_the_main_rank_lists_and_the_others_read_its_index(tree, tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script), str(tree), str(tmp_path)], env=env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [report["listed"] for report in reports] == [1, 0]
    assert reports[0]["names"] == reports[1]["names"] == ["cat/3.png", "cat/deep/4.png", "dog/1.png", "dog/2.png"]


def _tamper(path, **arrays):
    import numpy as np

    with np.load(path) as stored:
        contents = {name: stored[name] for name in stored.files}
    np.savez(path, **{**contents, **arrays})


@pytest.mark.parametrize("name", [b"/etc/passwd", b"../../escape.png", b"cat/../../escape.png"])
def test_an_index_name_outside_the_folder_is_never_read(tree, name):
    import numpy as np

    index_folder(tree)
    path = index_path(tree)
    with np.load(path) as stored:
        names, offsets = stored["names"].tobytes(), stored["offsets"]
    first = names[offsets[0]:offsets[1]]
    tampered = name + names[offsets[1]:]
    shifted = offsets + (len(name) - len(first)) * (offsets > 0)
    _tamper(path, names=np.frombuffer(tampered, dtype=np.uint8), offsets=shifted)
    with pytest.warns(UserWarning, match="its index is unusable .* leaves the data folder"):
        listing = load_listing(tree, path)
    assert all(not listing.relative_path(i).startswith(("/", "..")) for i in range(len(listing)))
    assert sorted(_names(listing)) == sorted(_names(folder_listing(tree)))  # listed again, the folder's own


@pytest.mark.parametrize("labels", [[2, 2, 2, 2], [0, 0, 1, -1], [0.5, 0, 1, 1], [0, 0, 1, 1, 1]])
def test_index_labels_out_of_range_send_the_folder_to_be_listed_again(tree, labels):
    import numpy as np

    index_folder(tree)
    _tamper(index_path(tree), labels=np.asarray(labels))
    with pytest.warns(UserWarning, match="its index is unusable"):
        listing = load_listing(tree, index_path(tree))
    assert sorted(int(label) for label in listing.labels) == [0, 0, 1, 1]


def test_a_file_added_while_the_folder_is_listed_invalidates_the_index(tree, monkeypatch):
    import dinosae.data.listing as listing_module

    real = os.scandir

    class AddWhenDone:
        """The folder's entries, and a file added to it as soon as they have been read."""

        def __init__(self, folder):
            self.folder, self.entries = folder, real(folder)

        def __enter__(self):
            return self.entries.__enter__()

        def __exit__(self, *exc):
            self.entries.__exit__(*exc)
            if str(self.folder).endswith("dog"):
                time.sleep(0.01)  # a coarse-clock filesystem must see the folder change
                _image(tree / "dog" / "late.png")

    monkeypatch.setattr(listing_module.os, "scandir", AddWhenDone)
    index_folder(tree)
    monkeypatch.undo()
    names = [name for name, _ in _names(load_listing(tree, index_path(tree)))]
    assert "dog/late.png" in names  # the index was stale from the start, so the folder was listed again
