"""Saves: atomic for readers, recovered after kills, nothing half-written on a full or read-only disk."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from adv_helpers import cascade_cli, copy_bundle, dead_pid, run_killed, tree

import cascade
from cascade.bundle import atomic, read_bundle, update_manifest
from cascade.errors import BundleError


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_readers_never_see_a_missing_or_mixed_bundle_while_another_process_saves(b):
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from cascade.bundle import update_manifest
        for i in range(40):
            update_manifest({str(b)!r}, {{"threshold": (i % 10) / 10}})
    """)])
    reads, failures = 0, []
    try:
        while writer.poll() is None and reads < 20000:
            try:
                read_bundle(b)
                reads += 1
            except BundleError as exc:
                failures.append(str(exc))
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0
    assert reads > 0 and failures == [], failures[:3]
    assert _leftovers(b.parent) == []


def test_a_model_loaded_during_saves_is_always_whole(b):
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from cascade.bundle import update_manifest
        for i in range(15):
            update_manifest({str(b)!r}, {{"threshold": (i % 10) / 10}})
    """)])
    loads = 0
    try:
        while writer.poll() is None and loads < 200:
            model = cascade.load(b, threads=1)
            assert model.classify("card").label in model.labels
            loads += 1
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0 and loads > 0


@pytest.mark.parametrize("deleted_first", [0, 1, 3])
def test_kill_after_the_swap_leaves_the_new_bundle_and_the_next_load_cleans_up(b, deleted_first):
    """Killed while removing the swapped-out bundle, after deleting some of its files (even its manifest)."""
    run_killed(f"""
        import os, signal
        from pathlib import Path
        import cascade.bundle.atomic as atomic
        from cascade.bundle import update_manifest
        real_unlink, count = Path.unlink, []
        def unlink(self, missing_ok=False):
            if self.name != atomic.MARKER:
                if len(count) == {deleted_first}:
                    os.kill(os.getpid(), signal.SIGKILL)
                count.append(1)
            real_unlink(self, missing_ok=missing_ok)
        real_remove = atomic.remove_folder
        def remove(path, names):
            Path.unlink = unlink
            return real_remove(path, names)
        atomic.remove_folder = remove
        update_manifest(BUNDLE, {{"threshold": 0.42}})
    """, b)
    assert any(name.startswith(".b.tmp-") for name in _leftovers(b.parent))  # the old bundle, swapped out
    assert read_bundle(b).threshold == 0.42
    assert _leftovers(b.parent) == []


def test_kill_while_writing_leaves_the_old_bundle_and_the_scratch_folder_goes_next_time(b):
    before = tree(b)
    run_killed("""
        import os, signal
        import cascade.bundle.store as store
        real = store.copy_synced
        def copy_then_die(src, dst):
            real(src, dst)
            os.kill(os.getpid(), signal.SIGKILL)
        store.copy_synced = copy_then_die
        store.update_manifest(BUNDLE, {"threshold": 0.42})
    """, b)
    assert tree(b) == before
    assert any(name.startswith(".b.tmp-") for name in _leftovers(b.parent))
    update_manifest(b, {"threshold": 0.3})  # the next save removes it
    assert _leftovers(b.parent) == [] and read_bundle(b).threshold == 0.3


def test_kill_between_the_two_renames_of_the_fallback_is_recovered_on_load(b):
    """Where the atomic exchange is unsupported, a kill between the renames once left no bundle."""
    run_killed("""
        import os, signal
        import cascade.bundle.atomic as atomic
        atomic._exchange = lambda a, b: False
        real_rename, calls = os.rename, []
        def rename(src, dst):
            calls.append(src)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            real_rename(src, dst)
        atomic.os.rename = rename
        from cascade.bundle import update_manifest
        update_manifest(BUNDLE, {"threshold": 0.42})
    """, b)
    assert not b.exists()
    assert read_bundle(b).threshold != 0.42  # the previous bundle, put back automatically
    assert _leftovers(b.parent) == []


def test_stale_scratch_folders_are_removed_only_if_provably_ours(tmp_path):
    dead = dead_pid()
    ours = tmp_path / f"cascade-cheap-{dead}-abcd1234"
    ours.mkdir()
    (ours / atomic.MARKER).write_bytes(b"")
    (ours / "cheap.onnx").write_bytes(b"x")
    unmarked = tmp_path / f"cascade-cheap-{dead}-0000ffff"
    unmarked.mkdir()
    (unmarked / "someone_elses.txt").write_text("keep")
    alive = tmp_path / f"cascade-cheap-{os.getpid()}-11112222"
    alive.mkdir()
    (alive / atomic.MARKER).write_bytes(b"")
    with atomic.scratch_dir(tmp_path, "cascade-cheap-") as work:
        assert work.is_dir()
    assert not ours.exists() and unmarked.exists() and alive.exists() and not work.exists()


def test_train_cheap_scratch_left_by_a_kill_is_cleaned_by_the_next_run(tmp_path, tiny_bundle, tiny_train, tiny_val, monkeypatch):
    import tempfile

    from cascade.training.cheap import CheapConfig
    from cascade.training.recipes.refresh import train_cheap

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = tmp_path / f"cascade-cheap-{dead_pid()}-deadbeef"
    stale.mkdir()
    (stale / atomic.MARKER).write_bytes(b"")
    train_cheap(tiny_train, tiny_val, tmp_path / "out", base=tiny_bundle, config=CheapConfig(min_df=1), progress=False)
    assert not stale.exists() and [p for p in tmp_path.iterdir() if p.name.startswith("cascade-cheap-")] == []


# --- full and read-only disks ------------------------------------------------------------------------

def test_full_disk_during_a_save_leaves_the_old_bundle_and_no_partial_files(b, monkeypatch):
    import cascade.bundle.store as store

    before = tree(b)
    real = store.copy_synced

    def full(src, dst):
        if dst.name == "neural.onnx":
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        real(src, dst)

    monkeypatch.setattr(store, "copy_synced", full)
    with pytest.raises(OSError, match="No space left"):
        update_manifest(b, {"threshold": 0.42})
    assert tree(b) == before and _leftovers(b.parent) == []


@pytest.fixture()
def small_fs(tmp_path):
    """A real tmpfs of a few MB (skipped where this process may not mount one)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    def mount(size: int, *options: str) -> Path:
        opts = ",".join([f"size={size}", *options])
        run = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], capture_output=True)
        if run.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {run.stderr.decode().strip()}")
        return mnt

    yield mount
    subprocess.run(["umount", str(mnt)], capture_output=True)


def test_real_full_disk(b, small_fs):
    size = sum(p.stat().st_size for p in b.iterdir())
    mnt = small_fs(int(size * 1.5))
    target = copy_bundle(b, mnt / "b")
    before = tree(target)
    with pytest.raises(OSError) as info:
        update_manifest(target, {"threshold": 0.42})
    assert info.value.errno == errno.ENOSPC
    assert tree(target) == before and _leftovers(mnt) == []
    run = cascade_cli("info", "--bundle", str(target))
    assert run.returncode == 0


def test_real_read_only_target_fails_before_work_in_one_line(b, small_fs, tiny_val, tmp_path):
    mnt = small_fs(8 << 20)
    copy_bundle(b, mnt / "b")
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
    val = tmp_path / "val.csv"
    val.write_text("text,category\n" + "".join(f"\"{t}\",{c}\n" for t, c in zip(tiny_val.texts, tiny_val.labels)))
    run = cascade_cli("calibrate", "--bundle", str(b), "--val", str(val), "--fallthrough", "0.2",
                      "--out", str(mnt / "c"), "--threads", "1")
    assert run.returncode == 2 and b"Traceback" not in run.stderr
    assert str(mnt / "c").encode() in run.stderr and len(run.stderr.decode().strip().splitlines()) == 1
    assert cascade.load(mnt / "b", threads=1).classify("card").label  # loading from read-only media works


# --- plots -------------------------------------------------------------------------------------------

def _val_csv(tmp_path, data) -> Path:
    import csv

    path = tmp_path / "val.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "category"])
        w.writerows(zip(data.texts, data.labels))
    return path


def test_plot_to_a_folder_is_refused_before_any_work(tmp_path, tiny_bundle, tiny_val):
    run = cascade_cli("calibrate", "--bundle", str(tiny_bundle), "--val", str(_val_csv(tmp_path, tiny_val)),
                      "--fallthrough", "0.2", "--plot", str(tmp_path), "--threads", "1")
    assert run.returncode == 2 and b"is a folder" in run.stderr and b"Traceback" not in run.stderr


def test_plot_without_a_suffix_is_written_where_it_says(tmp_path, tiny_bundle, tiny_val):
    run = cascade_cli("calibrate", "--bundle", str(tiny_bundle), "--val", str(_val_csv(tmp_path, tiny_val)),
                      "--fallthrough", "0.2", "--plot", str(tmp_path / "curve"), "--threads", "1")
    assert run.returncode == 0, run.stderr
    reported = Path(json.loads(run.stdout)["plot"])
    assert reported == tmp_path / "curve.png" and reported.stat().st_size > 0


def test_plot_write_failure_leaves_no_partial_file_and_still_prints_the_result(tmp_path, tiny_model, tiny_val, monkeypatch,
                                                                              capsys):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    def full(self, path, **kwargs):
        Path(path).write_bytes(b"")  # what a full disk leaves: a file begun, never finished
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full)
    from cascade.cli import main

    code = main(["calibrate", "--bundle", str(tiny_model.bundle.path), "--val", str(_val_csv(tmp_path, tiny_val)),
                 "--fallthrough", "0.2", "--plot", str(tmp_path / "p.png"), "--threads", "1"])
    out, err = capsys.readouterr()
    assert code == 2 and "No space left" in err and "choice" in json.loads(out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith((".p.png", "p.png"))] == []
