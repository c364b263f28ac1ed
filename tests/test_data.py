
import numpy as np
import pytest

from conftest import LABELS, TARBALL, make_params, small_data_params
from zoofusion.config import DataParams
from zoofusion.core.darkness import darkness
from zoofusion.steps.data import build_indices, read_labels, run
from zoofusion.images import ImageSourceError, load_split, near_copies, perceptual_hashes
from zoofusion.io import load_npz


def _params(source, labels, **over) -> DataParams:
    return make_params({"data": small_data_params(source, labels, **over)}).data


def test_darkness_worked_example():
    img = np.full((1, 32, 32, 3), 255, np.uint8)
    img[0, 4:16, 4:28] = 0  # top half of the central 24x24 crop is black
    img[0, :4] = 0  # outside the crop: ignored
    assert darkness(img)[0] == pytest.approx(0.5)
    # Luminance weights: pure blue 255 has luminance 29 < 70 (dark), pure green 150 (not dark).
    blue = np.zeros((1, 32, 32, 3), np.uint8); blue[..., 2] = 255
    green = np.zeros((1, 32, 32, 3), np.uint8); green[..., 1] = 255
    assert darkness(blue)[0] == 1.0 and darkness(green)[0] == 0.0


def test_datasets_are_disjoint_and_labels_match_source(synthetic_source, tmp_path):
    src, labels = synthetic_source
    p = _params(src, labels)
    run(p, seed=3, out=tmp_path / "out")
    d = {n: load_npz(tmp_path / "out" / f"{n}.npz") for n in ("black", "cat", "val", "test_split")}
    ids = {n: set(v["ids"]) for n, v in d.items()}
    for a in ("black", "cat"):
        for b in ("val", "test_split"):
            assert not ids[a] & ids[b], f"{a} and {b} share images"
    assert not ids["black"] & ids["cat"] and not ids["val"] & ids["test_split"]
    lab = read_labels(labels)
    for n in ("val", "test_split"):
        for i, y in zip(d[n]["ids"], d[n]["labels"]):
            if y == 1:
                assert lab[i] == 1  # every positive is a labelled black cat
            assert lab.get(i, 0) != 1 or y == 1
            assert lab.get(i, 0) is not None  # '?' is never used
    assert all(i.split("/")[1] == "cat" for i, y in zip(d["cat"]["ids"], d["cat"]["labels"]) if y == 1)
    assert all(i.split("/")[1] != "cat" for i in d["black"]["ids"])
    assert darkness(d["black"]["images"][d["black"]["labels"] == 1]).min() >= p.darkness_threshold
    # The stored pixels are the source's pixels.
    source = load_split(src)
    pos = {k: j for j, k in enumerate(source.ids)}
    for n, v in d.items():
        for i, img in zip(v["ids"], v["images"]):
            assert np.array_equal(source.images[pos[i]], img)
    assert (tmp_path / "out" / "sheets" / "val.png").is_file()


def test_same_seed_gives_byte_identical_outputs(synthetic_source, tmp_path):
    src, labels = synthetic_source
    p = _params(src, labels)
    run(p, seed=5, out=tmp_path / "a")
    run(p, seed=5, out=tmp_path / "b")
    run(p, seed=6, out=tmp_path / "c")
    files = sorted(f.relative_to(tmp_path / "a") for f in (tmp_path / "a").rglob("*") if f.is_file())
    assert files
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert (tmp_path / "a" / "cat.npz").read_bytes() != (tmp_path / "c" / "cat.npz").read_bytes()


def test_corrupt_image_is_named(synthetic_source, tmp_path):
    src, labels = synthetic_source
    bad = src / "train" / "dog" / "0007.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageSourceError, match=r"0007\.jpg: corrupt or unreadable image"):
        run(_params(src, labels), seed=1, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_source_says_what_was_tried_and_both_fixes(synthetic_source, tmp_path):
    _, labels = synthetic_source
    with pytest.raises(ImageSourceError) as e:
        run(_params(tmp_path / "nowhere.tar.gz", labels), seed=1, out=tmp_path / "out")
    msg = str(e.value)
    assert "nowhere.tar.gz" in msg and "data.path" in msg and "data.source: cifar10" in msg


def test_too_many_requested_fails_before_writing(synthetic_source, tmp_path):
    src, labels = synthetic_source
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier result")
    with pytest.raises(ValueError, match=r"data\.cat_positive: asks for 500 cats but only \d+ are available"):
        run(_params(src, labels, cat_positive=500), seed=1, out=out)
    assert (out / "keep.txt").read_text() == "earlier result"


@pytest.mark.e2e
@pytest.mark.skipif(not TARBALL.is_file(), reason="needs ../shared/data")
def test_real_source_and_labels():
    src = load_split(TARBALL)
    assert src.images.shape == (50000, 32, 32, 3) and len(set(src.classes)) == 10
    lab = read_labels(LABELS)
    assert sum(v == 1 for v in lab.values()) == 199 and sum(v is None for v in lab.values()) == 47
    p = make_params().data
    h = perceptual_hashes(src.images)
    out = build_indices(src.ids, src.classes, darkness(src.images), lab, p, seed=42, hashes=h)
    val_ids = set(src.ids[out["val"][0]]) | set(src.ids[out["test_split"][0]])
    assert not val_ids & set(src.ids[out["cat"][0]]) and not val_ids & set(src.ids[out["black"][0]])
    # CIFAR-10's train split has near-duplicates of its own: those of val/test images never reach a training domain
    held = np.concatenate([out["val"][0], out["test_split"][0]])
    train = np.concatenate([out["black"][0], out["cat"][0]])
    left_out = out["near_copies"][0]
    assert len(left_out) > 0 and not set(left_out.tolist()) & set(train.tolist())
    assert not near_copies(h[held], h[train], p.near_copy_bits)
    assert not near_copies(h[out["val"][0]], h[out["test_split"][0]], p.near_copy_bits)
    assert out["val"][1].sum() + out["test_split"][1].sum() + out["test_near_val"][1].size >= 199
    assert all(i.startswith("train/") for i in src.ids)


def test_malformed_labels_row_is_one_line(synthetic_source, tmp_path):
    """A short row (missing columns) names its line, instead of failing inside the parser."""
    src, labels = synthetic_source
    bad = tmp_path / "bad.csv"
    lines = labels.read_text().splitlines()
    bad.write_text("\n".join(lines[:3] + ["train,cat"] + lines[3:]) + "\n")
    with pytest.raises(ImageSourceError, match=r"bad\.csv:4: a row needs exactly the 6 columns"):
        read_labels(bad)


def test_a_test_image_that_is_a_near_copy_of_a_val_image_is_left_out(synthetic_source):
    """All black cats share one perceptual hash: every test black cat is a near-copy of the val ones, so none
    stays in test (nor goes to training); other images, far apart, are untouched."""
    src, labels = synthetic_source
    p = _params(src, labels)
    s = load_split(src)
    lab = read_labels(labels)
    far = np.random.default_rng(0).integers(0, 2**63, size=len(s.ids), dtype=np.int64).astype(np.uint64)
    same = far.copy()
    same[[i for i, k in enumerate(s.ids) if lab.get(k) == 1]] = 12345
    plain = build_indices(s.ids, s.classes, darkness(s.images), lab, p, seed=3, hashes=far)
    out = build_indices(s.ids, s.classes, darkness(s.images), lab, p, seed=3, hashes=same)
    assert plain["test_split"][1].sum() > 0 and out["test_split"][1].sum() == 0
    assert len(out["test_near_val"][0]) == plain["test_split"][1].sum()
    assert np.array_equal(out["val"][0], plain["val"][0])
    assert not set(out["test_near_val"][0].tolist()) & set(np.concatenate([out["black"][0], out["cat"][0]]).tolist())
