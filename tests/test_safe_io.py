"""Safe loading, no secrets written, atomic writes and names, and the rest of bad input (docs/studies.md, "Safety").

- Loading: every `torch.load` in the repository reads with `weights_only=True` (checked in the source with ast), and a
  checkpoint or weights file that holds a crafted pickle is refused, naming the file, with nothing of it executed:
  on resume, in `clmlf.evaluate`, for a local image-weights file and for torchvision's ImageNet weights in the
  torch.hub cache.
"""

from __future__ import annotations

import ast
import io
import os
import pickle
import subprocess
import sys
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from clmlf.config import build_config
from clmlf.safe_files import UnreadableFile, check_plain, load_tensors, replaced_atomically, save_tensors
from clmlf.train import CHECKPOINT_FILE, train
from results import storage

PROJECT_ROOT = Path(__file__).resolve().parents[1]
UNRESTRICTED_ON_PURPOSE = "unrestricted load, on purpose"


def python_sources() -> list[Path]:
    skipped = {".venv", ".git", "node_modules", "build", "dist"}
    return sorted(
        path
        for path in PROJECT_ROOT.rglob("*.py")
        if not skipped & set(path.relative_to(PROJECT_ROOT).parts) and not path.name.startswith(".")
    )


def unsafe_loads(source: str, filename: str, product: bool = True) -> list[str]:
    """`file:line: call` for each load that may build more than tensors: torch.load, torch.hub's
    load_state_dict_from_url and torchvision's get_state_dict without `weights_only=True`, any `weights_only=False`,
    numpy loads with allow_pickle, and in product code (not tests) pickle.load(s). A line that carries
    UNRESTRICTED_ON_PURPOSE is left out (this file shows what such a load does)."""
    found = []
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call) or UNRESTRICTED_ON_PURPOSE in lines[node.lineno - 1]:
            continue
        function = node.func
        name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
        owner = function.value if isinstance(function, ast.Attribute) else None
        owner_name = getattr(owner, "id", getattr(owner, "attr", ""))
        keywords = {keyword.arg: keyword.value for keyword in node.keywords}
        restricted = _is_true(keywords.get("weights_only"))
        allow_pickle = keywords.get("allow_pickle", ast.Constant(False))
        unsafe = (
            ("weights_only" in keywords and not restricted)
            or (name == "load" and owner_name in ("torch", "serialization") and not restricted)
            or (name in ("load_state_dict_from_url", "get_state_dict") and not restricted)
            or (product and name in ("load", "loads") and owner_name in ("pickle", "cloudpickle", "dill"))
            or not (isinstance(allow_pickle, ast.Constant) and allow_pickle.value is False)
        )
        if unsafe:
            found.append(f"{filename}:{node.lineno}: {ast.unparse(node)[:120]}")
    return found


def _is_true(value: ast.expr | None) -> bool:
    return isinstance(value, ast.Constant) and value.value is True


def test_the_scan_finds_loads_that_may_unpickle_anything() -> None:
    snippet = """
import pickle, torch, numpy as np
{load}(path)
{load}(path, weights_only={false})
torch.hub.load_state_dict_from_url(url)
weights.get_state_dict(progress=False)
pickle.loads(data)
np.load(path, allow_pickle=True)
{load}(path)  # an unrestricted load, on purpose
{load}(path, map_location="cpu", weights_only=True)
weights.get_state_dict(progress=False, weights_only=True)
np.load(path)
""".format(load="torch.load", false="False")
    found = unsafe_loads(snippet, "snippet.py")
    assert [entry.split(":")[1] for entry in found] == ["3", "4", "5", "6", "7", "8"]


def test_every_load_in_the_repository_reads_tensors_only() -> None:
    sources = python_sources()
    assert PROJECT_ROOT / "clmlf" / "safe_files.py" in sources and len(sources) > 50
    found = []
    for path in sources:
        name = str(path.relative_to(PROJECT_ROOT))
        text = path.read_text()
        found += unsafe_loads(text, name, product=not name.startswith("tests/"))
        if UNRESTRICTED_ON_PURPOSE in text and name != "tests/test_safe_io.py":
            found.append(f"{name}: says {UNRESTRICTED_ON_PURPOSE!r}, which only tests/test_safe_io.py may")
    assert not found, "loads that may unpickle any object:\n" + "\n".join(found)


class Payload:
    """Unpickled, it would create `marker` by running a shell command: what a crafted checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint laid out like the trainer's, whose history holds the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 0, "model": {"weight": torch.zeros(2)}, "history": [Payload(marker)]}, path)
    return path


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")  # the storage type torch's own loader builds
def test_the_payload_runs_under_an_unrestricted_load(tmp_path: Path) -> None:
    # What the refusals below prevent: the checkpoint's pickle, unpickled without restriction (as torch.load does
    # without weights_only), runs the command.
    marker = tmp_path / "executed"
    crafted = crafted_checkpoint(tmp_path / "state.pt", marker)
    with zipfile.ZipFile(crafted) as archive:
        (pickled,) = [name for name in archive.namelist() if name.endswith("/data.pkl")]

        class Unpickler(pickle.Unpickler):
            def persistent_load(self, pid):  # a tensor's storage: ("storage", type, key, location, numel)
                dtype = pid[1].dtype
                untyped = torch.UntypedStorage(pid[4] * dtype.itemsize)
                return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)

        Unpickler(io.BytesIO(archive.read(pickled))).load()  # an unrestricted load, on purpose
    assert marker.exists()


def test_a_crafted_checkpoint_is_refused_naming_the_file_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = crafted_checkpoint(tmp_path / "state.pt", marker)
    with pytest.raises(UnreadableFile, match=r"state\.pt: refused: .*unrestricted pickle load.*posix\.system"):
        load_tensors(path)
    assert not marker.exists()


def test_resume_from_a_crafted_checkpoint_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    checkpoint = crafted_checkpoint(tmp_path / "run" / "checkpoint" / CHECKPOINT_FILE, marker).parent
    # A data root that does not exist: the refusal comes before the data set is read.
    config = build_config("demo", "tiny", {"data_root": str(tmp_path / "no-data")})
    with pytest.raises(UnreadableFile, match=rf"{CHECKPOINT_FILE}: refused"):
        train(config, output_dir=tmp_path / "run", resume_from=checkpoint, log=lambda message: None)
    assert not marker.exists()


def test_evaluate_refuses_a_crafted_checkpoint(tmp_path: Path, capsys) -> None:
    from clmlf import evaluate

    marker = tmp_path / "executed"
    crafted_checkpoint(tmp_path / "best-model" / CHECKPOINT_FILE, marker)
    assert evaluate.main([str(tmp_path / "best-model")]) == 2
    assert f"{tmp_path / 'best-model' / CHECKPOINT_FILE}: refused" in capsys.readouterr().err
    assert not marker.exists()


def test_image_weights_files_are_read_as_tensors_only(tmp_path: Path, monkeypatch) -> None:
    from clmlf.encoders import EncoderUnavailable
    from clmlf.image_backbone import IMAGENET_WEIGHTS, ImageBackbone

    marker = tmp_path / "executed"
    local = tmp_path / "resnet18.pth"
    torch.save({"conv1.weight": Payload(marker)}, local)
    with pytest.raises(EncoderUnavailable, match=r"model.image_weights: .*resnet18\.pth: refused"):
        ImageBackbone("resnet18", str(local), 32)
    # torchvision's ImageNet weights come through torch.hub's cache under $TORCH_HOME, which every trial reads.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / IMAGENET_WEIGHTS["resnet18"].url.rsplit("/", 1)[-1]
    crafted_checkpoint(cached, marker)
    with pytest.raises(EncoderUnavailable, match=rf"{cached.name}: refused"):
        ImageBackbone("resnet18", "imagenet", 32)
    assert not marker.exists()
    # The same cache holding plain tensors loads: the ImageNet path itself reads with weights_only.
    import torchvision

    weights = {key: value + 1 for key, value in torchvision.models.resnet18(weights=None).state_dict().items()}
    torch.save(weights, cached)
    assert torch.equal(ImageBackbone("resnet18", "imagenet", 32).trunk[0].weight, weights["conv1.weight"])


def test_a_cut_short_checkpoint_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    save_tensors({"model": {"weight": torch.ones(1000)}}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UnreadableFile, match=r"state\.pt: not a PyTorch file, or one cut short"):
        load_tensors(path)
    with pytest.raises(UnreadableFile, match=r"missing\.pt: no such file"):
        load_tensors(tmp_path / "missing.pt")


def test_checkpoints_hold_only_what_a_weights_only_load_reads(tmp_path: Path) -> None:
    import numpy as np

    with pytest.raises(TypeError, match=r"state\.pt\['history'\]\[0\]\['dev/acc'\]: a numpy.float64"):
        save_tensors({"history": [{"dev/acc": np.float64(0.5)}]}, tmp_path / "state.pt")
    assert not list(tmp_path.iterdir())
    check_plain({"model": {"w": torch.zeros(1)}, "scaler": {"scale": 2.0, "_growth_tracker": 3}}, "state")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "trials.csv"
    path.write_text("old\n")
    with pytest.raises(RuntimeError, match="stopped"), replaced_atomically(path) as temporary:
        temporary.write_text("half of the new")
        raise RuntimeError("stopped")
    assert path.read_text() == "old\n"
    assert [entry.name for entry in tmp_path.iterdir()] == ["trials.csv"]


def test_of_studies_claiming_one_folder_at_once_exactly_one_gets_it(tmp_path: Path) -> None:
    folder = str(tmp_path / "tune" / "same-name")
    contenders = 8
    start = threading.Barrier(contenders)

    def claim() -> dict | None:
        start.wait()
        return storage.claim_folder(folder)

    with ThreadPoolExecutor(contenders) as pool:
        holders = list(pool.map(lambda _: claim(), range(contenders)))
    assert holders.count(None) == 1
    losers = [holder for holder in holders if holder is not None]
    assert all(holder["pid"] == os.getpid() for holder in losers)
    assert "process" in storage.describe_claim(losers[0])
    storage.release_claim(folder)
    assert not Path(folder).exists()
    assert storage.claim_folder(folder) is None


def test_a_second_study_with_the_name_of_one_that_has_claimed_it_writes_nothing(tmp_path: Path) -> None:
    # The first study has claimed its folder and not yet written anything (the moment of the race): the second,
    # started with the same --name, must stop before it writes.
    folder = tmp_path / "tune" / "same-name"
    assert storage.claim_folder(str(folder)) is None
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    command = [
        sys.executable, str(PROJECT_ROOT / "studies" / "layer_sweep.py"), "--smoke-test",
        "--storage-path", str(tmp_path / "tune"), "--name", "same-name",
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
    ]  # fmt: skip
    second = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
    assert f"--name same-name: {folder} is taken by another study started with that name" in second.stderr
    assert f"process {os.getpid()}" in second.stderr
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
