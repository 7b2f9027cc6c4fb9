"""Manifest parsing: JSONL and CSV rows -> Jobs, defaults, ids, seeds, paths, and every problem at once."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from diffrun.errors import Exit, ManifestError
from diffrun.jobs import Job
from diffrun.manifest import content_id, detect_format, load_manifest, parse_manifest


def jsonl(*rows: dict) -> str:
    return "\n".join(json.dumps(r) for r in rows) + "\n"


def test_jsonl_rows_merge_over_defaults_and_resolve_paths(tmp_path: Path) -> None:
    defaults = Job(prompt="default", steps=3, params={"eta": 0.1, "x": 1}, inputs={"ip": ["/abs/ip.png"]},
                   seeds=[100])
    text = jsonl(
        {"id": "a", "image": "in/a.png", "mask": "m.png", "strength": 0.4, "params": {"x": 2}},
        {"id": "b", "prompt": "own", "image": ["https://h/x.png", "data:image/png;base64,AA", "/abs/y.png"],
         "inputs": {"control_image": "c.png"}, "seed": [7, 8], "output": "out/b.png"},
        {"prompt": "no id"},
    )
    jobs = parse_manifest(text, defaults=defaults, base=tmp_path, source="m.jsonl").jobs
    a, b, c = jobs
    assert a.prompt == "default" and a.steps == 3 and a.strength == 0.4
    assert a.image == [str(tmp_path / "in/a.png")] and a.mask == str(tmp_path / "m.png")
    assert a.params == {"eta": 0.1, "x": 2} and defaults.params == {"eta": 0.1, "x": 1}  # defaults untouched
    assert a.seeds == [100]  # --seed + index 0
    assert b.prompt == "own" and b.seeds == [7, 8]
    assert b.image == ["https://h/x.png", "data:image/png;base64,AA", "/abs/y.png"]
    assert b.inputs == {"ip": ["/abs/ip.png"], "control_image": [str(tmp_path / "c.png")]}
    assert b.output == str(tmp_path / "out/b.png")
    assert c.id.startswith("row-") and len(c.id) == 16 and c.seeds == [102]


def test_ids_are_stable_under_inserted_rows_and_unique_for_identical_rows() -> None:
    first = parse_manifest(jsonl({"prompt": "x"}, {"prompt": "y"}), fmt="jsonl").jobs
    second = parse_manifest(jsonl({"prompt": "new"}, {"prompt": "y"}, {"prompt": "x"}, {"prompt": "x"}),
                            fmt="jsonl").jobs
    assert first[0].id == second[2].id == content_id({"prompt": "x"})
    assert first[1].id == second[1].id
    assert second[3].id == second[2].id + "-2"
    # Seeds default to base + index, base 0 without --seed: deterministic for resume.
    assert [j.seeds for j in second] == [[0], [1], [2], [3]]
    # Several --seed values: each shifted by the index.
    jobs = parse_manifest(jsonl({"prompt": "a"}, {"prompt": "b"}), defaults=Job(seeds=[10, 20]), fmt="jsonl").jobs
    assert [j.seeds for j in jobs] == [[10, 20], [11, 21]]


def test_csv_cells_lists_json_and_numbers(tmp_path: Path) -> None:
    text = (
        "id,prompt,image,params,inputs,seed,steps,guidance,width\n"
        'r1,"a, b",x.png|https://h/y.png,"{""eta"": 0.5}","{""control_image"": [""c.png""]}",4,12,7.5,64\n'
        'r2,plain,"[""p.png"", ""q.png""]",,,5|6,,,\n'
        "\n"
    )
    jobs = parse_manifest(text, base=tmp_path, source="m.csv").jobs
    r1, r2 = jobs
    assert r1.prompt == "a, b" and r1.image == [str(tmp_path / "x.png"), "https://h/y.png"]
    assert r1.params == {"eta": 0.5} and r1.inputs == {"control_image": [str(tmp_path / "c.png")]}
    assert (r1.seeds, r1.steps, r1.guidance, r1.width) == ([4], 12, 7.5, 64)
    assert r2.image == [str(tmp_path / "p.png"), str(tmp_path / "q.png")] and r2.seeds == [5, 6]
    assert r2.steps is None and r2.params == {}


def test_every_problem_reported_with_its_line() -> None:
    text = "\n".join([
        json.dumps({"id": "ok", "prompt": "fine"}),                  # 1
        json.dumps({"id": "x", "promt": "typo", "steps": "many"}),   # 2: unknown key + bad int
        "",                                                           # 3: blank, skipped
        "{not json",                                                  # 4
        json.dumps({"id": "ok", "prompt": "again"}),                 # 5: duplicate id
        json.dumps({"id": "y", "image": 5, "strength": 2, "seed": -1}),  # 6: three problems
        json.dumps(["a", "list"]),                                   # 7
        json.dumps({"id": "bad/id"}),                                 # 8
        json.dumps({"id": "z", "image": "-", "output": "-", "width": True}),  # 9
    ])
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, source="m.jsonl")
    err = info.value
    assert err.exit == Exit.USAGE
    lines = [line for line, _ in err.problems]
    assert lines == sorted(lines) and set(lines) == {2, 4, 5, 6, 7, 8, 9}
    text_of = {line: " ".join(p for n, p in err.problems if n == line) for line in lines}
    assert "unknown key 'promt'" in text_of[2] and "steps must be an integer" in text_of[2]
    assert "duplicate id 'ok' (first on line 1)" in text_of[5]
    assert "image" in text_of[6] and "strength" in text_of[6] and "seed" in text_of[6]
    assert "stdin" in text_of[9] and "stdout" in text_of[9] and "width" in text_of[9]
    assert len(err.problems) >= 11
    for line in lines:  # the printed message names every bad line
        assert f"line {line}:" in err.message


def test_csv_problems_and_empty_manifest() -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest("id,prompt,colour\na,x,red\nb,y,blue,extra\n", source="m.csv")
    assert {n for n, _ in info.value.problems} == {2, 3}
    with pytest.raises(ManifestError, match="no rows"):
        parse_manifest("\n# only a comment\n", source="m.jsonl")


def test_detect_format_and_stdin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert detect_format("a.jsonl", "") == "jsonl" and detect_format("a.csv", "{") == "csv"
    assert detect_format("-", "\n# c\n{\"a\": 1}") == "jsonl" and detect_format("-", "id,prompt\n") == "csv"
    monkeypatch.setattr("sys.stdin", io.StringIO("id,image\ns1,rel.png\n"))
    monkeypatch.chdir(tmp_path)
    manifest = load_manifest("-")
    assert manifest.format == "csv" and manifest.jobs[0].image == [str(tmp_path / "rel.png")]
    assert manifest.lines == [2]
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(str(tmp_path / "nope.jsonl"))


def test_jsonl_strings_may_hold_unicode_line_separators_and_crlf_lines() -> None:
    text = json.dumps({"id": "a", "prompt": "x\u2028y\x85z"}, ensure_ascii=False) + "\r\n" + "\r\n" + "{oops\r\n"
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, fmt="jsonl")
    assert [line for line, _ in info.value.problems] == [3]
    manifest = parse_manifest(text.rsplit("{oops", 1)[0], fmt="jsonl")
    assert manifest.jobs[0].prompt == "x\u2028y\x85z" and manifest.lines == [1]


# -- issue 10: rows write only inside -o; manifests never lose or crash on rows; values bounded ----------

def problems_of(text: str, **kw) -> dict[int, str]:
    """line -> the problems reported on it (joined), for a manifest expected to be refused."""
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, **kw)
    assert info.value.exit == Exit.USAGE
    found: dict[int, str] = {}
    for line, problem in info.value.problems:
        found[line] = (found.get(line, "") + " " + problem).strip()
    return found


def test_row_outputs_resolve_against_the_output_folder_and_must_stay_inside(tmp_path: Path) -> None:
    base, out = tmp_path / "manifests", tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "escape").symlink_to(tmp_path)  # a symlinked folder that leads out
    ok = parse_manifest(jsonl({"id": "a", "output": "a.png"}, {"id": "b", "output": "sub/{id}-{seed}.png"},
                              {"id": "c", "output": "sub/"}, {"id": "d", "output": str(out / "d.png")},
                              {"id": "e", "output": "sub/../e.png"}),
                        base=base, output_dir=out, source="m.jsonl").jobs
    assert [j.output for j in ok] == [str(out / "a.png"), str(out / "sub/{id}-{seed}.png"), f"{out}/sub/",
                                      str(out / "d.png"), str(out / "sub/../e.png")]
    bad = [{"output": "../../../../tmp/x.png"}, {"output": "/tmp/x.png"}, {"output": "~/x.png"}, {"output": ".."},
           {"output": "/tmp/{id}.png"}, {"output": "escape/x.png"}, {"output": "sub/../../{id}.png"}]
    found = problems_of(jsonl(*bad), base=base, output_dir=out, source="m.jsonl")
    assert set(found) == set(range(1, len(bad) + 1))
    assert all("outside the output folder" in p and "--allow-outside-output" in p for p in found.values())
    # Allowed when asked: relative still means relative to -o.
    jobs = parse_manifest(jsonl(*bad), base=base, output_dir=out, allow_outside_output=True).jobs
    assert jobs[0].output == str(out / "../../../../tmp/x.png") and jobs[1].output == "/tmp/x.png"
    assert jobs[2].output == str(Path("~/x.png").expanduser())


def test_csv_unterminated_quote_is_a_problem_on_its_line_not_a_lost_row() -> None:
    text = 'id,prompt\na,"fine"\nb,"never closed\nc,third\nd,fourth\n'
    assert problems_of(text, fmt="csv") == {3: "unterminated quote; nothing after this line was read"}
    found = problems_of('id,prompt\na,x\nb,"x"y\n', fmt="csv")
    assert list(found) == [3] and "bad quoting" in found[3]


def test_csv_cell_of_any_size_works(tmp_path: Path) -> None:
    from images import data_uri, png

    big = data_uri(png((256, 256), (1, 2, 3)) + b"\0" * 200_000)  # over csv's 131,072-character default
    assert len(big) > 131_072
    jobs = parse_manifest(f'id,image\nbig,"{big}"\n', fmt="csv", base=tmp_path).jobs
    assert jobs[0].image == [big]


def test_deep_json_repeated_keys_and_nul_in_output_are_problems_with_their_lines() -> None:
    deep = '{"id": "deep", "params": {"x": ' + "[" * 5000 + "]" * 5000 + "}}"
    text = "\n".join([
        json.dumps({"id": "ok", "prompt": "fine"}),                               # 1
        deep,                                                                     # 2
        '{"id": "dup", "prompt": "a", "prompt": "b"}',                            # 3
        '{"id": "dup2", "params": {"eta": 1, "eta": 2}}',                         # 4
        json.dumps({"id": "nul", "output": "a\u0000b.png"}),                      # 5
        json.dumps({"id": "nested", "params": {"x": json.loads("[" * 33 + "1" + "]" * 33)}}),  # 6
    ])
    found = problems_of(text, fmt="jsonl")
    assert set(found) == {2, 3, 4, 5, 6}
    assert "nested too deeply" in found[2] and "nested too deeply" in found[6]
    assert "repeated key 'prompt'" in found[3] and "repeated key 'eta'" in found[4]
    assert "control characters" in found[5]


def test_stdin_manifest_bom_dropped_and_invalid_utf8_is_a_problem_with_its_line(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"\xef\xbb\xbfid,prompt\na,x\n")))
    manifest = load_manifest("-")
    assert manifest.format == "csv" and [j.id for j in manifest.jobs] == ["a"] and manifest.jobs[0].prompt == "x"
    bad = b'{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "caf\xe9"}\n'
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(bad)))
    with pytest.raises(ManifestError) as info:
        load_manifest("-")
    assert info.value.problems == [(2, "not valid UTF-8 (column 27); save the manifest as UTF-8")]
    (tmp_path / "m.jsonl").write_bytes(bad)
    with pytest.raises(ManifestError, match="line 2: not valid UTF-8"):
        load_manifest(str(tmp_path / "m.jsonl"))


def test_counts_seeds_numbers_and_templates_are_bounded_per_row() -> None:
    text = "\n".join(json.dumps(r) for r in [
        {"id": "many", "num_images": 1e9},                                  # 1
        {"id": "seeds", "seed": list(range(600)), "num_images": 2},         # 2
        {"id": "big", "seed": 2**64},                                       # 3
        {"id": "edge", "seed": 2**64 - 1, "num_images": 2},                 # 4
        {"id": "neg", "seed": -1},                                          # 5
        {"id": "spec", "output": "{seed:>2000000000}.png"},                 # 6
        {"id": "wide", "width": 10**19},                                    # 7
        {"id": "lat", "params": {"latents": [1, 2]}, "inputs": {"prompt_embeds": "x.png"}},  # 8
        {"id": "fine", "seed": 2**64 - 1, "num_images": 1},                 # 9
    ]) + '\n{"id": "nan", "guidance": NaN}\n{"id": "inf", "guidance": Infinity}\n'  # 10, 11
    found = problems_of(text, fmt="jsonl", output_dir=Path("/tmp/o"))
    assert set(found) == {1, 2, 3, 4, 5, 6, 7, 8, 10, 11}
    assert "more than 1000 for one job" in found[1] and "1200 outputs" in found[2]
    assert "out of range" in found[3] and "passes 2**64-1" in found[4] and "at least 0" in found[5]
    assert "only bare fields" in found[6] and "2147483647" in found[7]
    assert "latents" in found[8] and "prompt_embeds" in found[8]
    assert "finite" in found[10] and "finite" in found[11]
    jobs = parse_manifest(jsonl({"id": "many", "num_images": 5000}), fmt="jsonl", max_images=5000).jobs
    assert jobs[0].num_images == 5000  # the cap is overridable


def test_an_output_folder_with_braces_in_its_name_is_a_folder_not_a_template(tmp_path: Path) -> None:
    from diffrun.outputs.names import plan_outputs, template_fields

    out = tmp_path / "c{d}" / "out"
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "b", "output": "sub/b.png"}\n{"id": "c", "output": "t/{id}-{seed}.png"}\n')
    jobs = {job.id: job for job in load_manifest(str(manifest), output_dir=out).jobs}
    for job_id, expected in (("b", out / "sub" / "b.png"), ("c", out / "t" / "c-5.png")):
        job = jobs[job_id]
        template_fields(job.output)  # a template the planner accepts (the folder's braces escaped)
        assert plan_outputs(job.output, seeds=[5], per_seed=1, kind="image", model="m", job_id=job_id,
                            overwrite=False) == [str(expected)]


def test_a_row_path_with_a_colon_resolves_against_the_manifest_folder_as_the_loader_reads_it(tmp_path: Path) -> None:
    from diffrun.manifest import resolve_ref

    assert resolve_ref("a:b.png", tmp_path) == str(tmp_path / "a:b.png")  # a file name, not a scheme
    for ref in ("https://x.example/a.png", "data:image/png;base64,AAAA", "ftp://x/a.png", "file:///a.png"):
        assert resolve_ref(ref, tmp_path) == ref
