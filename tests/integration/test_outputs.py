"""A command writes only into its own run or report folder, or the file it was told to write:
every output that would land on an existing run, its checkpoint or its embeddings is
refused before any work, and the run is byte-identical afterwards."""

import hashlib
from pathlib import Path

import pytest

from mixerflow.cli import main
from support import QUICK


def hashes(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_no_output_that_collides_with_a_run_changes_it(tmp_path, monkeypatch, capsys):
    run, ckpt = tmp_path / "run", str(tmp_path / "run" / "checkpoint.pt")
    main(["train", *QUICK, "train.steps=20", "log.num_samples=4", f"log.out_dir={run}"])
    main(["embed", "--checkpoint", ckpt, "--no-progress"])
    embeddings = str(run / "embeddings.npz")
    before = hashes(run)
    monkeypatch.chdir(run)
    collisions = {
        "sample over the checkpoint": ["sample", "--checkpoint", ckpt, "--out", ckpt],
        "embed over the checkpoint": ["embed", "--checkpoint", ckpt, "--out", ckpt],
        "probe over the embeddings": ["probe", "--embeddings", embeddings, "--json", embeddings],
        "a new run in the run's folder": ["train", *QUICK, f"log.out_dir={run}"],
        "a new run in the working directory": ["train", *QUICK, "log.out_dir=."],
        "a new run around the run": ["train", *QUICK, f"log.out_dir={tmp_path}"],
        "compare into the run": ["compare", "--steps", "1", "--out", str(run)],
        "bench into the run": ["bench", *QUICK[:2], "--out", str(run)],
        "campaign into the run": ["campaign", "--smoke", "--out", str(run)],
        "a store over the run": ["prepare", "digits", "--out", str(run)],
        "samples named after nothing": ["sample", "--checkpoint", ckpt, "--out", ""],
    }
    for name, argv in collisions.items():
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and err.startswith("error: "), (name, err)
        assert len(err.strip().splitlines()) == 1, (name, err)
        assert hashes(run) == before, f"{name} changed the run"
