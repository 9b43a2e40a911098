"""evaluation.results_folder: which files are read (torch-fidelity's extensions, top level unless
recursive, counts), how --fake_dir / --real_dir pair up, and 16-bit images decoded to 8 bits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation.results_folder import EvalImages, from_folders
from util.errors import DatasetError


def _image(path: Path, size=(16, 12), value=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


# ---------------------------------------------------------------------- discovery
def test_top_level_files_with_torch_fidelity_extensions_by_default(tmp_path):
    folder = tmp_path / "fake"
    for name in ("a.png", "b.JPG", "c.jpeg", "d.bmp", "e.webp", "sub/f.png", "sub/deeper/g.jpg"):
        _image(folder / name)
    top = from_folders(str(folder))
    # torch-fidelity 0.4.0 reads png/jpg/jpeg (any case) at the folder's top level only
    assert [i.name for i in top.items] == ["a", "b", "c"]
    assert top.found == [f"synthesized images: 3 in {folder} (top level); 2 more in sub-folders, "
                         f"left out (--recursive includes them)"]
    deep = from_folders(str(folder), recursive=True)
    assert [i.name for i in deep.items] == ["a", "b", "c", "sub/deeper/g", "sub/f"]
    assert deep.found == [f"synthesized images: 5 in {folder}"]


def test_a_folder_with_images_only_in_sub_folders_names_the_flag(tmp_path):
    _image(tmp_path / "fake" / "class1" / "a.png")
    with pytest.raises(DatasetError, match=r"holds no .* at its top level \(--recursive"):
        from_folders(str(tmp_path / "fake"))
    assert len(from_folders(str(tmp_path / "fake"), recursive=True).items) == 1


# ---------------------------------------------------------------------- pairing
def test_real_images_pair_by_name_and_extra_reals_are_counted(tmp_path):
    fake, real = tmp_path / "fake", tmp_path / "real"
    for name in ("a", "b"):
        _image(fake / f"{name}.png")
    for name in ("a", "b", "c"):
        _image(real / f"{name}.png")
    s = from_folders(str(fake), str(real))
    assert s.has_real and [Path(i.real).name for i in s.items] == ["a.png", "b.png"]
    assert s.pairing == {"synthesized": 2, "real": 3, "pairs": 2, "unpaired_examples": []}
    # FID/KID take the whole folder (3 images), paired metrics the 2 pairs, and a note says so
    assert s.reference_dir == str(real)
    assert any(n.startswith("1 of 3 real images in") and "the 2 pairs" in n for n in s.notes), s.notes
    # exactly the paired set: the paired reals are the reference, nothing to note
    _image(fake / "c.png")
    same = from_folders(str(fake), str(real))
    assert same.has_real and same.reference_dir is None and not same.notes


def test_folders_whose_names_do_not_pair_are_compared_unpaired(tmp_path):
    fake, real = tmp_path / "fake", tmp_path / "real"
    for name in ("a", "b", "c"):
        _image(fake / f"{name}.png")
    for name in ("x", "y", "a", "w"):
        _image(real / f"{name}.png")
    s = from_folders(str(fake), str(real))  # before: "2 of 3 synthesized images have no real image"
    assert not s.has_real and s.reference_dir == str(real)
    assert s.pairing == {"synthesized": 3, "real": 4, "pairs": 1, "unpaired_examples": ["b", "c"]}
    assert any(n.startswith("1 of 3 synthesized images have a real image of the same name")
               for n in s.notes), s.notes
    assert s.found == [f"synthesized images: 3 in {fake} (top level)",
                       f"real images: 4 in {real} (top level)"]


# ---------------------------------------------------------------------- decoding
def test_16_bit_grey_images_are_scaled_to_8_bits(tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    values = np.array([[0, 257 * 100, 65535, 257 * 7 + 128]], np.uint16).repeat(4, axis=0)
    Image.fromarray(values).save(fake / "a.png")
    assert Image.open(fake / "a.png").mode == "I;16"  # what PIL makes of a 16-bit grey PNG
    x = EvalImages(from_folders(str(fake)))[0]["fake"]
    # before: PIL's convert("RGB") clipped everything above 255 to white
    assert x.shape == (3, 4, 4) and x[:, 0].tolist() == [[0, 100, 255, 7]] * 3


def test_32_bit_images_beyond_16_bits_are_refused_naming_the_file(tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    # PIL mode I (32-bit integers; PIL reads files by content, whatever the extension)
    Image.fromarray(np.full((4, 4), 25700, np.int32)).save(fake / "a.png", format="TIFF")
    assert EvalImages(from_folders(str(fake)))[0]["fake"].unique().tolist() == [100]  # 16-bit range
    Image.fromarray(np.full((4, 4), 70000, np.int32)).save(fake / "a.png", format="TIFF")
    with pytest.raises(DatasetError, match=r"cannot read image .*a\.png: mode I pixels outside 0\.\.65535"):
        EvalImages(from_folders(str(fake)))[0]


def test_a_reference_of_another_aspect_ratio_names_the_evaluation_size(tmp_path):
    _image(tmp_path / "real" / "a.png", size=(64, 32))
    images = EvalImages(from_folders(str(tmp_path / "real")), (32, 24), size_source="the evaluation size")
    with pytest.raises(DatasetError, match=r"a\.png is 64x32 but the evaluation size is 32x24"):
        images[0]
