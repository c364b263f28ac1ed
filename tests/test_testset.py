import numpy as np
import pytest

from conftest import make_params, small_data_params
from zoofusion.steps.data import run as run_data
from zoofusion.images import ImageSourceError
from zoofusion.steps.testset import run
from zoofusion.io import load_npz


@pytest.fixture
def prepared(synthetic_source, tmp_path):
    src, labels = synthetic_source
    run_data(make_params({"data": small_data_params(src, labels)}).data, seed=1, out=tmp_path / "prepared")
    return src, labels, tmp_path / "prepared"


def _params(src, labels, manifest=""):
    return make_params({"data": small_data_params(src, labels), "testset": {"manifest": str(manifest)}})


def test_default_is_the_built_split(prepared, tmp_path):
    src, labels, prep = prepared
    run(_params(src, labels), prepared=prep, out=tmp_path / "t")
    a, b = load_npz(tmp_path / "t" / "test.npz"), load_npz(prep / "test_split.npz")
    assert np.array_equal(a["ids"], b["ids"]) and np.array_equal(a["images"], b["images"])


def test_the_built_split_passes_the_manifests_disjointness_checks(prepared, tmp_path):
    """The built split goes through the same checks as a manifest: a val image in it (same pixels) is refused."""
    from zoofusion.io import save_npz

    src, labels, prep = prepared
    d, v = load_npz(prep / "test_split.npz"), load_npz(prep / "val.npz")
    images = d["images"].copy()
    images[0] = v["images"][0]
    save_npz(prep / "test_split.npz", images=images, labels=d["labels"], ids=d["ids"])
    with pytest.raises(ImageSourceError, match=r"built test split: 1 images have the same pixels as images in the val"):
        run(_params(src, labels), prepared=prep, out=tmp_path / "t")


@pytest.fixture
def manifests(tmp_path, monkeypatch):
    """data/manifests/ of a project in tmp_path (the cwd, as under DVC)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "manifests").mkdir(parents=True)
    return tmp_path / "data" / "manifests"


def test_manifest_of_source_members_and_disk_files(prepared, tmp_path, manifests):
    src, labels, prep = prepared
    disk = manifests / "dog-0001.jpg"
    disk.write_bytes((src / "test" / "dog" / "0001.jpg").read_bytes())
    m = manifests / "m.csv"
    m.write_text("path,label\ntest/cat/0000.jpg,1\ntest/ship/0002.jpg,0\ndata/manifests/dog-0001.jpg,0\n")
    run(_params(src, labels, "data/manifests/m.csv"), prepared=prep, out=tmp_path / "t")
    t = load_npz(tmp_path / "t" / "test.npz")
    assert list(t["labels"]) == [1, 0, 0] and t["images"].shape == (3, 32, 32, 3)
    assert t["ids"][0] == "test/cat/0000.jpg"


def test_a_manifest_or_image_outside_data_manifests_is_refused(prepared, tmp_path, manifests):
    """Only what DVC watches may build the test set: elsewhere an edit would leave it stale."""
    src, labels, prep = prepared
    outside = tmp_path / "m.csv"
    outside.write_text("path,label\ntest/cat/0000.jpg,1\ntest/ship/0002.jpg,0\n")
    with pytest.raises(ImageSourceError, match=r"^testset.manifest: .*m\.csv is outside data/manifests/, which DVC "
                                               r"watches.*move it into data/manifests/"):
        run(_params(src, labels, outside), prepared=prep, out=tmp_path / "t")
    image = src / "test" / "dog" / "0001.jpg"  # a file on disk, outside the project
    (manifests / "m.csv").write_text(f"path,label\ntest/cat/0000.jpg,1\n{image},0\n")
    with pytest.raises(ImageSourceError, match=r"^testset.manifest image: .*0001\.jpg is outside data/manifests/"):
        run(_params(src, labels, manifests / "m.csv"), prepared=prep, out=tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_manifest_overlapping_training_data_is_refused(prepared, tmp_path, manifests):
    src, labels, prep = prepared
    used = load_npz(prep / "cat.npz")["ids"][0]
    m = manifests / "m.csv"
    m.write_text(f"path,label\n{used},1\ntest/ship/0002.jpg,0\n")
    with pytest.raises(ImageSourceError, match=r"same pixels as images in the cat set .*must be held out"):
        run(_params(src, labels, m), prepared=prep, out=tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_a_copy_of_a_training_image_under_another_path_is_refused(prepared, tmp_path, manifests):
    """Held out by content: a byte-identical copy on disk has another path but the same decoded pixels."""
    src, labels, prep = prepared
    used = str(load_npz(prep / "black.npz")["ids"][0])
    copy = manifests / "innocent-name.jpg"
    copy.write_bytes((src / used).read_bytes())
    m = manifests / "m.csv"
    m.write_text(f"path,label\ntest/cat/0000.jpg,1\n{copy},0\n")
    with pytest.raises(ImageSourceError, match=r"same pixels as images in the black set \(e\.g\. .*innocent-name"):
        run(_params(src, labels, m), prepared=prep, out=tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_manifest_bad_label_and_missing_member(prepared, tmp_path, manifests):
    src, labels, prep = prepared
    m = manifests / "m.csv"
    m.write_text("path,label\ntest/cat/0000.jpg,yes\n")
    with pytest.raises(ImageSourceError, match=r"m\.csv:2: label must be 0 or 1"):
        run(_params(src, labels, m), prepared=prep, out=tmp_path / "t")
    m.write_text("path,label\ntest/cat/0000.jpg,1\ntest/cat/9999.jpg,0\n")
    with pytest.raises(ImageSourceError, match=r"test/cat/9999\.jpg: neither a file on disk nor a member"):
        run(_params(src, labels, m), prepared=prep, out=tmp_path / "t")


def test_a_near_copy_of_a_training_image_is_refused_with_the_pair(prepared, tmp_path, manifests):
    """Not the same pixels, the same picture: a brightened copy passes the exact check but not the pHash one."""
    from PIL import Image

    src, labels, prep = prepared
    d = load_npz(prep / "cat.npz")
    i = int(np.argmax(d["images"].reshape(len(d["images"]), -1).std(axis=1)))  # a picture with structure
    Image.fromarray(np.clip(d["images"][i].astype(int) + 3, 0, 255).astype(np.uint8)).save(manifests / "x.png")
    (manifests / "m.csv").write_text("path,label\ntest/cat/0000.jpg,1\ndata/manifests/x.png,0\n")
    with pytest.raises(ImageSourceError, match=r"^testset.manifest: 1 images are near-copies \(pHash within 4 bits, "
                                               rf"data.near_copy_bits\) of training or val images: data/manifests/x"
                                               rf"\.png ~ {d['ids'][i]} \(\d bits\) — drop them from the manifest"):
        run(_params(src, labels, "data/manifests/m.csv"), prepared=prep, out=tmp_path / "t")
    assert not (tmp_path / "t").exists()
