"""A model package is checked before it is used, and `--save` before training: every defect is one
line naming the file and the field, and nothing absurd is allocated or ranked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import benchkit
from benchkit.cli import cli
from benchkit.data.synth import make_world
from benchkit.errors import DataError
from benchkit.model_card import FILES, seal, sha256


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """One Calibration model (it reads genres and uploaders) saved from the tiny world."""
    folder = tmp_path_factory.mktemp("pkg") / "model"
    args = ["run", "--preset", "tiny", "-d", "calibration", "--epochs", "1", "-q"]
    res = CliRunner().invoke(cli, [*args, "--save", str(folder)])
    assert res.exit_code == 0, res.output
    return folder


@pytest.fixture
def copy(package, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(package, target)
    return target


def reseal(folder: Path, edit=None) -> None:
    """Rewrite the card over the files as they are now (a package another tool produced): the
    checks below must catch the defect itself, not a checksum."""
    card = json.loads((folder / "card.json").read_text())
    card["files"] = {name: sha256(folder / name) for name in FILES}
    if edit is not None:
        edit(card)
    (folder / "card.json").write_text(json.dumps(seal(card)))


def rewrite_npz(folder: Path, name: str, **changes) -> None:
    with np.load(folder / name, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    with open(folder / name, "wb") as f:
        np.savez(f, **arrays)


def refused(folder: Path, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        benchkit.load(folder)
    assert "\n" not in str(info.value)


def test_the_card_is_covered_by_its_checksum(copy):
    card = json.loads((copy / "card.json").read_text())
    card["backbone"]["hparams"]["latent_dim"] = 7
    (copy / "card.json").write_text(json.dumps(card))
    refused(copy, r"card\.json: the card does not match its checksum")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.pop("files"), r"card\.json: missing key 'files'"),
        (lambda c: c.update(extra=1), r"card\.json: unexpected key 'extra'"),
        (lambda c: c["data_spec"].update(video_dim="wide"), r"data_spec\.video_dim must be"),
        (lambda c: c["files"].pop("pool.npz"), r"'files' gives no SHA-256 for pool\.npz"),
        (lambda c: c["strategies"][0].pop("hparams"), r"strategies\[0\] lacks hparams"),
    ],
)
def test_a_card_of_the_wrong_shape_is_refused(copy, edit, message):
    reseal(copy, edit)
    refused(copy, message)


def test_object_arrays_are_never_unpickled(copy):
    with np.load(copy / "pool.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["ids"] = np.array([object()] * arrays["ids"].size, dtype=object)
    with open(copy / "pool.npz", "wb") as f:
        np.savez(f, **arrays)
    reseal(copy)
    refused(copy, r"pool\.npz: holds Python objects")


def test_wrong_widths_and_short_ids_are_refused(copy, tmp_path):
    with np.load(copy / "pool.npz") as z:
        features, ids = z["features"], z["ids"]
    rewrite_npz(copy, "pool.npz", features=features[:, :-1])
    reseal(copy)
    refused(copy, r"pool\.npz: 'features' has shape \(\d+, \d+\), expected")
    rewrite_npz(copy, "pool.npz", features=features, ids=ids[:-1])
    reseal(copy)
    refused(copy, r"pool\.npz: 'ids' has shape")
    with np.load(copy / "uploaders.npz") as z:
        prior = z["prior"]
    rewrite_npz(copy, "pool.npz", ids=ids)
    rewrite_npz(copy, "uploaders.npz", prior=prior[:, :-1])
    reseal(copy)
    refused(copy, r"uploaders\.npz: 'prior' has shape")


def test_dimensions_that_disagree_with_the_weights_are_refused_before_building(copy):
    reseal(copy, lambda c: c["data_spec"].update(video_dim=2**30))  # 4 TB of first layer
    refused(copy, r"preprocess\.npz: 'video_mean' has shape \(\d+,\), expected \(1073741824,\)")
    # with matching statistics, the layers the card's widths build are compared with the weights
    # on the meta device (no memory) before any is allocated
    with np.load(copy / "preprocess.npz") as z:
        mean, std = z["video_mean"], z["video_std"]
    rewrite_npz(copy, "preprocess.npz", video_mean=mean[:-1], video_std=std[:-1])
    reseal(copy, lambda c: c["data_spec"].update(video_dim=mean.size - 1))
    refused(copy, r"weights\.pt: tensor '.+' has shape .+ but the card's dimensions give")


def test_non_finite_weights_are_refused(copy):
    state = torch.load(copy / "weights.pt", weights_only=True)
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                for k, v in state.items()}, copy / "weights.pt")  # fmt: skip
    reseal(copy)
    refused(copy, r"weights\.pt: tensor '.+' holds NaN or inf")


def test_save_checks_its_target_before_training(tmp_path):
    (tmp_path / "model" / "weights.pt").mkdir(parents=True)  # a folder named like the weights
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("mine")
    cases = {
        Path("/proc/benchkit-model"): "cannot write in /proc",  # not writable, even for root
        tmp_path / "model": "weights.pt is a folder; the package writes a file there",
        tmp_path / "a-file" / "model": "is a file, so no folder can be made under it",
        tmp_path / "notes": "the folder holds other files and no model package",
    }
    for target, message in cases.items():
        res = CliRunner().invoke(cli, ["run", "--preset", "tiny", "--save", str(target)])
        assert res.exit_code == 1 and message in res.output, (target, res.output)
        assert "epoch" not in res.output  # refused before training started
        assert res.output.count("\n") == 1
    res = CliRunner().invoke(cli, ["run", "--preset", "tiny", "--save", str(tmp_path / "a-file")])
    assert res.exit_code == 2 and "is a file" in res.output and "epoch" not in res.output
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "mine"
    with pytest.raises(DataError, match="it is a file"):
        benchkit.api.run(preset="tiny", save=tmp_path / "a-file")


def test_recommend_refuses_what_it_cannot_rank(package, tmp_path):
    world = make_world("tiny", seed=0)
    videos = world.video_features[:4].copy()
    videos[2] = 3e38  # overflows the preprocessing (and any layer)
    np.save(tmp_path / "big.npy", videos)
    runner = CliRunner()
    res = runner.invoke(cli, ["recommend", str(package), "--videos", str(tmp_path / "big.npy")])
    assert res.exit_code == 1 and "e.g. row 2" in res.output and "overflow" in res.output
    np.save(tmp_path / "ok.npy", world.video_features[:4])
    np.save(tmp_path / "pool.npy", world.music_features[:8])
    genres = world.music_genre[:8].copy()
    genres[5] = 99
    np.save(tmp_path / "genres.npy", genres)
    args = ["recommend", str(package), "--videos", str(tmp_path / "ok.npy")]
    args += ["--music-pool", str(tmp_path / "pool.npy")]
    res = runner.invoke(cli, [*args, "--music-genres", str(tmp_path / "genres.npy")])
    assert res.exit_code == 1 and "row 5 has genre 99, but the model knows 6 genre(s)" in res.output
    rec = benchkit.load(package)
    with pytest.raises(DataError, match="row 1 names uploader 10000, which the model never saw"):
        rec.recommend(world.video_features[:2], uploaders=[0, 10_000])


def test_scores_that_overflow_are_refused_with_their_row(tmp_path):
    """A linear model without preprocessing carries 3e38 straight into its codes."""
    folder = tmp_path / "cca"
    args = ["run", "--preset", "tiny", "-b", "cca", "--features-norm", "none", "-q"]
    assert CliRunner().invoke(cli, [*args, "--save", str(folder)]).exit_code == 0
    videos = make_world("tiny", seed=0).video_features[:4].copy()
    videos[3] = 3e38
    with pytest.raises(DataError, match=r"videos: row 3 gives non-finite (codes|scores)"):
        benchkit.load(folder).recommend(videos, k=5)
