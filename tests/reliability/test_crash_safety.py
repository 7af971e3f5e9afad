"""Nothing is lost: model folders and checkpoints are written under a temporary name and renamed
into place, so an exception or a SIGKILL mid-write never replaces a good one.

Covered elsewhere, not repeated: checkpoint rotation (tests/test_training.py::
test_checkpoints_rotate_and_runs_are_not_overwritten) and non-finite losses stopping or skipping
with the step in the message (test_nonfinite_loss_stops_and_keeps_the_last_checkpoint,
test_nonfinite_loss_can_be_skipped)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import build
from reliability_helpers import assert_same_weights, cli_env, final_weights, run_config
from safetensors.torch import load_file

from cvae_bridge import ConditionalVAE, hub
from cvae_bridge.errors import CheckpointError, InputError
from cvae_bridge.training import train
from cvae_bridge.training.checkpoints import list_checkpoints
from cvae_bridge.utils.files import atomic_directory, atomic_write_text

TESTS = Path(__file__).parents[1]


def run_python(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run `script` in a fresh interpreter that can import the test helpers."""
    prelude = f"import sys; sys.path[:0] = [{str(TESTS)!r}, {str(TESTS / 'reliability')!r}]\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
    )


def state_of(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def test_atomic_directory_keeps_the_old_folder_when_the_body_raises(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as temporary:
        (temporary / "a.txt").write_text("good")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_directory(target) as temporary:
            (temporary / "a.txt").write_text("half")
            raise RuntimeError("disk on fire")
    assert [p.name for p in target.iterdir()] == ["a.txt"] and (target / "a.txt").read_text() == "good"
    assert leftovers(target) == []


def failing_save_file(tensors, filename, metadata=None):
    Path(filename).write_bytes(b"\x00" * 10)  # a partial file, then the disk fills up
    raise OSError(28, "No space left on device")


def test_atomic_write_text_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = atomic_write_text(tmp_path / "report.json", "old")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr("cvae_bridge.utils.files.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def record_fsyncs(monkeypatch) -> list[str]:
    """Replace os.fsync with one that records the path of each file or folder synced."""
    real, synced = os.fsync, []

    def fsync(descriptor):
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


linux_only = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd")


@linux_only
def test_atomic_directory_fsyncs_the_files_then_the_parent_after_the_rename(tmp_path, monkeypatch):
    target = tmp_path / "out"
    for _ in range(2):  # a new folder, then one replacing it
        synced = record_fsyncs(monkeypatch)
        with atomic_directory(target) as temporary:
            (temporary / "a.txt").write_text("a")
            (temporary / "sub").mkdir()
            (temporary / "sub" / "b.txt").write_text("b")
        files = [temporary / "a.txt", temporary / "sub" / "b.txt"]
        assert synced[:2] == [str(f) for f in files]  # before the rename: under the temporary name
        assert synced[-1] == str(tmp_path)  # the parent, after the rename
        assert not temporary.exists() and (target / "sub" / "b.txt").read_text() == "b"
        monkeypatch.undo()


@linux_only
def test_atomic_write_text_fsyncs_the_file_then_the_folder(tmp_path, monkeypatch):
    synced = record_fsyncs(monkeypatch)
    atomic_write_text(tmp_path / "report.json", "{}")
    assert len(synced) == 2 and synced[0].startswith(str(tmp_path / ".report.json.tmp-"))
    assert synced[1] == str(tmp_path)


@linux_only
def test_checkpoint_files_are_fsynced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    synced = record_fsyncs(monkeypatch)
    train(run_config(tmp_path, steps=5))
    root = tmp_path / "checkpoints"
    written = sorted(p.name for p in (root / "step_00000005").iterdir())
    temporary = root / ".tmp-step_00000005"
    at = synced.index(str(root))  # the rename, made durable
    before = synced[:at]
    assert sorted(Path(p).name for p in before if Path(p).parent == temporary) == written
    assert before[-1] == str(temporary)  # the files first, then the folder itself


def test_a_bad_episode_midway_leaves_the_previous_dataset_in_place(tmp_path):
    """Episodes stream into the writer; the second one is bad, after the first was written."""
    import numpy as np

    from cvae_bridge.data.lerobot import INFO_PATH, write_lerobot_dataset

    def episodes(width):
        yield {"observation.state": np.zeros((4, 2), np.float32), "action": np.zeros((4, 2), np.float32)}
        yield {"observation.state": np.zeros((4, width), np.float32), "action": np.zeros((4, 2), np.float32)}

    folder = write_lerobot_dataset(tmp_path / "data", episodes(2), fps=10)
    info = (folder / INFO_PATH).read_text()
    with pytest.raises(InputError, match=r"episode 1: observation.state is float32 \(3,\) per frame"):
        write_lerobot_dataset(folder, episodes(3), fps=10)
    assert (folder / INFO_PATH).read_text() == info
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_failed_save_pretrained_keeps_the_previous_model(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    good = build("conv_cvae", seed=0)
    good.save_pretrained(folder)
    before = state_of(folder)
    monkeypatch.setattr(hub, "save_file", failing_save_file)
    with pytest.raises(OSError, match="No space left"):
        build("conv_cvae", seed=1).save_pretrained(folder)
    assert_same_weights(state_of(folder), before)
    ConditionalVAE.from_pretrained(folder)
    assert leftovers(folder) == []


def test_save_pretrained_killed_mid_write_keeps_the_previous_model(tmp_path):
    """SIGKILL while model.safetensors is half written: the old folder is untouched; the
    temporary folder stays behind under a dot-name that nothing reads."""
    folder = tmp_path / "model"
    build("conv_cvae", seed=0).save_pretrained(folder)
    before = state_of(folder)
    done = run_python(
        """
        import os, signal
        from pathlib import Path
        from conftest import build
        from cvae_bridge import hub
        def dying(tensors, filename, metadata=None):
            Path(filename).write_bytes(b"\\x00" * 10)
            os.kill(os.getpid(), signal.SIGKILL)
        hub.save_file = dying
        build("conv_cvae", seed=1).save_pretrained(sys.argv[1])
        """,
        str(folder),
    )
    assert done.returncode == -9, done.stderr[-2000:]
    assert_same_weights(state_of(folder), before)
    ConditionalVAE.from_pretrained(folder)
    assert [name.split("-")[0] for name in leftovers(folder)] == [".model.tmp"]
    build("conv_cvae", seed=1).save_pretrained(folder)  # the next save is not disturbed by it
    assert not torch.equal(next(iter(state_of(folder).values())), next(iter(before.values())))


def test_save_pretrained_killed_between_the_renames_keeps_a_loadable_model(tmp_path):
    folder = tmp_path / "model"
    build("conv_cvae", seed=0).save_pretrained(folder)
    done = run_python(
        """
        import os, signal
        from conftest import build
        real, calls = os.replace, []
        def replace(source, destination):
            calls.append(source)
            if len(calls) == 2:  # the old folder has been moved aside; the new one not yet in
                os.kill(os.getpid(), signal.SIGKILL)
            real(source, destination)
        os.replace = replace
        build("conv_cvae", seed=1).save_pretrained(sys.argv[1])
        """,
        str(folder),
    )
    assert done.returncode == -9, done.stderr[-2000:]
    ConditionalVAE.from_pretrained(folder)


# -- training checkpoints ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The final weights of an uninterrupted 30-step run."""
    out = tmp_path_factory.mktemp("reference")
    train(run_config(out))
    return final_weights(out)


@pytest.mark.parametrize("form", ["OSError", "torch.save"])
def test_disk_full_during_a_checkpoint_keeps_the_last_checkpoint_and_resumes_exactly(
    tmp_path, monkeypatch, reference, form
):
    """ENOSPC in the second checkpoint, as an OSError (safetensors) or as torch.save words it
    (the optimiser state): a CheckpointError says so and names the checkpoint; the temporary
    folder is removed and step 5 is untouched."""
    if form == "OSError":
        # A checkpoint's weights are written as a model folder's (hub.write_model_files).
        real, calls = hub.save_file, []

        def fail_at_second_checkpoint(tensors, filename, metadata=None):
            calls.append(filename)
            if len(calls) == 2:
                failing_save_file(tensors, filename)
            real(tensors, filename, metadata=metadata)

        monkeypatch.setattr(hub, "save_file", fail_at_second_checkpoint)
    else:
        real_save = torch.save

        def full_disk_save(obj, f, *args, **kwargs):
            if list_checkpoints(tmp_path):
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
            real_save(obj, f, *args, **kwargs)

        monkeypatch.setattr(torch, "save", full_disk_save)
    with pytest.raises(CheckpointError) as caught:
        train(run_config(tmp_path))
    monkeypatch.undo()
    message = str(caught.value)
    assert message.startswith(
        f"no space left on device while writing checkpoint step_00000010 in {tmp_path / 'checkpoints'} ("
    )
    assert "the earlier checkpoints are intact" in message and len(message) < 600
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000005"]
    assert train(run_config(tmp_path), resume=True).status == "completed"
    assert_same_weights(final_weights(tmp_path), reference)


@pytest.mark.slow
def test_checkpoint_killed_mid_write_keeps_the_last_checkpoint_and_resumes_exactly(tmp_path, reference):
    """SIGKILL while step 10's checkpoint is half written: step 5 stays the newest complete
    checkpoint, the half-written folder is ignored, and resuming reaches the reference weights."""
    done = run_python(
        """
        import os, signal
        from pathlib import Path
        from cvae_bridge import hub
        from cvae_bridge.training import train
        from reliability_helpers import run_config
        real, calls = hub.save_file, []
        def dying(tensors, filename, metadata=None):
            calls.append(filename)
            if len(calls) == 2:
                Path(filename).write_bytes(b"\\x00" * 10)
                os.kill(os.getpid(), signal.SIGKILL)
            real(tensors, filename, metadata=metadata)
        hub.save_file = dying
        train(run_config(Path(sys.argv[1])))
        """,
        str(tmp_path),
    )
    assert done.returncode == -9, done.stderr[-2000:]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000005"]
    assert (tmp_path / "checkpoints" / ".tmp-step_00000010").is_dir()
    assert train(run_config(tmp_path), resume=True).status == "completed"
    assert_same_weights(final_weights(tmp_path), reference)
    assert not (
        tmp_path / "checkpoints" / ".tmp-step_00000010"
    ).exists()  # cleared by the next save of step 10


def test_export_over_an_existing_model_folder_failing_keeps_it(tmp_path, monkeypatch):
    """The run's final export goes through save_pretrained: a failure leaves the model folder of
    an earlier run in place."""
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    build("conv_cvae").save_pretrained(out / "model")
    before = state_of(out / "model")
    real = hub.save_file

    def fail_outside_checkpoints(tensors, filename, metadata=None):
        (failing_save_file if "checkpoints" not in Path(filename).parts else real)(
            tensors, filename, metadata
        )

    monkeypatch.setattr(hub, "save_file", fail_outside_checkpoints)
    with pytest.raises(OSError, match="No space left"):
        train(run_config(out, steps=5))
    assert_same_weights(state_of(out / "model"), before)
    assert [p.name for p in list_checkpoints(out)] == ["step_00000005"]
