"""plan_outputs: default names, folders, templates, plain names, stdout, extensions, no clobbering."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest

from diffrun.errors import Exit, OutputExistsError, UsageError
from diffrun.outputs import formats, plan_outputs

NOW = datetime(2024, 5, 6, 7, 8, 9)
STAMP = "diffrun-20240506-070809"


def plan(output, tmp_path: Path, **kw):
    kw.setdefault("seeds", [1])
    kw.setdefault("per_seed", 1)
    return plan_outputs(output, now=NOW, default_dir=tmp_path, **kw)


def test_default_names_are_seed_major_in_default_dir(tmp_path):
    names = plan(None, tmp_path, seeds=[7, 3], per_seed=2)
    assert names == [str(tmp_path / f"{STAMP}-{s}-{i}.png") for s, i in [(7, 0), (7, 1), (3, 0), (3, 1)]]


def test_default_names_use_cwd_without_default_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert plan_outputs(None, seeds=[5], per_seed=1, now=NOW) == [f"{STAMP}-5-0.png"]


def test_default_video_extension_follows_imageio(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "mp4_available", lambda: True)
    assert plan(None, tmp_path, kind="video")[0].endswith("-1-0.mp4")
    monkeypatch.setattr(formats, "mp4_available", lambda: False)
    assert plan(None, tmp_path, kind="video")[0].endswith("-1-0.webp")


def test_default_names_never_collide_with_existing_files(tmp_path):
    (tmp_path / f"{STAMP}-1-0.png").write_bytes(b"old")
    (tmp_path / f"{STAMP}-1-0-1.png").write_bytes(b"old")
    names = plan(None, tmp_path, seeds=[1], per_seed=2)
    assert names == [str(tmp_path / f"{STAMP}-1-0-2.png"), str(tmp_path / f"{STAMP}-1-1.png")]
    assert (tmp_path / f"{STAMP}-1-0.png").read_bytes() == b"old"


def test_default_names_with_repeated_seeds_stay_distinct(tmp_path):
    names = plan(None, tmp_path, seeds=[4, 4])
    assert len(set(names)) == 2


def test_stdout_only_for_exactly_one_output(tmp_path):
    assert plan("-", tmp_path) == ["-"]
    with pytest.raises(UsageError, match=r"-o - takes exactly one output; got 4"):
        plan("-", tmp_path, seeds=[1, 2], per_seed=2)


def test_existing_folder_gets_default_names(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    names = plan(str(folder), tmp_path, seeds=[9])
    assert names == [str(folder / f"{STAMP}-9-0.png")]


def test_trailing_slash_names_a_folder_to_create_later(tmp_path):
    target = str(tmp_path / "new") + "/"
    names = plan(target, tmp_path, seeds=[9], per_seed=2)
    assert names == [str(tmp_path / "new" / f"{STAMP}-9-{i}.png") for i in range(2)]
    assert not (tmp_path / "new").exists()


def test_template_fields(tmp_path):
    out = str(tmp_path / "{model}-{date}-{time}-{id}-{seed}-{index}.jpg")
    names = plan(out, tmp_path, seeds=[42], per_seed=2, model="runwayml/stable-diffusion-v1-5/", job_id="j 1")
    expected = "stable-diffusion-v1-5-20240506-070809-j_1-42-{}.jpg"
    assert names == [str(tmp_path / expected.format(i)) for i in range(2)]


def test_template_model_from_weights_file_is_filename_safe(tmp_path):
    names = plan(str(tmp_path / "{model}.png"), tmp_path, model="/models/my model:v2.safetensors")
    assert names == [str(tmp_path / "my_model_v2.png")]


def test_template_clash_appends_index_then_seed(tmp_path):
    names = plan(str(tmp_path / "out-{seed}.png"), tmp_path, seeds=[1, 2], per_seed=2)
    assert [Path(n).name for n in names] == ["out-1-0.png", "out-1-1.png", "out-2-0.png", "out-2-1.png"]
    names = plan(str(tmp_path / "out-{index}.png"), tmp_path, seeds=[1, 2], per_seed=2)
    assert [Path(n).name for n in names] == ["out-0-0-1.png", "out-1-1-1.png", "out-0-0-2.png", "out-1-1-2.png"]


def test_template_without_clash_is_left_alone(tmp_path):
    names = plan(str(tmp_path / "s{seed}_{index}.webp"), tmp_path, seeds=[3, 4])
    assert [Path(n).name for n in names] == ["s3_0.webp", "s4_0.webp"]


def test_unknown_template_field(tmp_path):
    with pytest.raises(UsageError, match=r"unknown field \{prompt\}"):
        plan(str(tmp_path / "{prompt}.png"), tmp_path)


def test_id_field_needs_a_job_id(tmp_path):
    with pytest.raises(UsageError, match=r"\{id\}"):
        plan(str(tmp_path / "{id}.png"), tmp_path)


def test_plain_name_for_one_output_is_used_as_is(tmp_path):
    assert plan(str(tmp_path / "cat.png"), tmp_path) == [str(tmp_path / "cat.png")]


def test_plain_name_for_several_outputs(tmp_path):
    names = plan(str(tmp_path / "cat.png"), tmp_path, seeds=[5, 6], per_seed=2)
    assert [Path(n).name for n in names] == ["cat-5-0.png", "cat-5-1.png", "cat-6-0.png", "cat-6-1.png"]
    names = plan(str(tmp_path / "cat.png"), tmp_path, seeds=[5], per_seed=3)
    assert [Path(n).name for n in names] == ["cat-0.png", "cat-1.png", "cat-2.png"]


@pytest.mark.parametrize("name", ["cat.bmp", "cat", "cat.gif"])
def test_unknown_image_extension_lists_supported(tmp_path, name):
    with pytest.raises(UsageError) as err:
        plan(str(tmp_path / name), tmp_path)
    assert ".jpeg, .jpg, .png, .webp" in str(err.value)
    assert err.value.exit == Exit.USAGE


def test_template_extension_is_checked(tmp_path):
    with pytest.raises(UsageError, match=r"\.tiff"):
        plan(str(tmp_path / "{seed}.tiff"), tmp_path)


def test_video_extensions(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "mp4_available", lambda: True)
    for ext in (".mp4", ".webp", ".gif"):
        assert plan(str(tmp_path / f"v{ext}"), tmp_path, kind="video") == [str(tmp_path / f"v{ext}")]
    for ext in (".png", ".jpg"):
        with pytest.raises(UsageError, match="not a video"):
            plan(str(tmp_path / f"v{ext}"), tmp_path, kind="video")


def test_mp4_without_imageio_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "mp4_available", lambda: False)
    with pytest.raises(UsageError) as err:
        plan(str(tmp_path / "v.mp4"), tmp_path, kind="video")
    assert "pip install 'diffrun[video]'" in err.value.hint


def test_existing_named_target_is_refused(tmp_path):
    (tmp_path / "cat.png").write_bytes(b"old")
    with pytest.raises(OutputExistsError) as err:
        plan(str(tmp_path / "cat.png"), tmp_path)
    assert str(err.value) == f"{tmp_path / 'cat.png'} exists"
    assert err.value.hint == "pass --overwrite to replace it"
    assert err.value.exit == Exit.USAGE


def test_one_existing_target_of_several_refuses_all(tmp_path):
    (tmp_path / "cat-6-1.png").write_bytes(b"old")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(OutputExistsError, match=r"cat-6-1\.png exists"):
        plan(str(tmp_path / "cat.png"), tmp_path, seeds=[5, 6], per_seed=2)
    assert sorted(os.listdir(tmp_path)) == before


def test_existing_template_target_is_refused(tmp_path):
    (tmp_path / "3.png").write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        plan(str(tmp_path / "{seed}.png"), tmp_path, seeds=[2, 3])


def test_overwrite_allows_existing_targets(tmp_path):
    (tmp_path / "cat.png").write_bytes(b"old")
    assert plan(str(tmp_path / "cat.png"), tmp_path, overwrite=True) == [str(tmp_path / "cat.png")]


# -- issue 10: only bare fields (and a bounded zero-padded width) in templates; what lands inside a folder --

@pytest.mark.parametrize("template", ["{seed:>2000000000}.png", "{index:,}.png", "{model:.0}.png", "{id!r}.png",
                                      "{seed:{index}}.png", "{seed:0100}.png", "{date:>3}.png"])
def test_template_format_specs_and_conversions_are_refused(tmp_path, template):
    with pytest.raises(UsageError, match="only bare fields"):
        plan(str(tmp_path / template), tmp_path, job_id="j")
    # A zero-padded width (up to 99) on the numbers is the one spec allowed.
    names = plan(str(tmp_path / "{seed:06}-{index:03d}.png"), tmp_path, seeds=[42], per_seed=2)
    assert [Path(n).name for n in names] == ["000042-000.png", "000042-001.png"]


def test_is_inside_follows_tilde_dotdot_templates_and_symlinked_folders(tmp_path, monkeypatch):
    from diffrun.outputs.names import is_inside

    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "away").symlink_to(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    inside = ["a.png", "sub/{id}.png", "sub/", "sub/..", "sub/../b.png", "{id}/{seed}.png", "."]
    outside = ["../x.png", "..", "away/x.png", "away/../../x.png", "/tmp/{id}.png", "sub/../../x.png"]
    for name in inside:
        assert is_inside(str(out / name), out), name
    for name in outside:
        assert not is_inside(str(out / name) if not name.startswith("/") else name, out), name
    assert not is_inside("~/x.png", out)
    assert is_inside(str(out / "sub" / "x.png"), out / "sub" / ".." / "sub")
