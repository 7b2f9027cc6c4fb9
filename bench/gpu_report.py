"""bench/gpu.py's results: rows -> gpu.json and gpu.md (written after every row), the goals, the set-up."""

from __future__ import annotations

import datetime as dt
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GOALS = (
    ("inference", "diffrun's inference within 5% of raw diffusers (library rows, steps/s)"),
    ("generate", "diffrun generate's inference within 5% of raw diffusers (cold: includes the first call)"),
    ("batch", "batch --batch-size 4 at least 1.3x the images/s of --batch-size 1 (SD 1.5, inference)"),
    ("url", "batch with URL inputs within 5% of in-memory (data: URI) inputs (images/s)"),
    ("compile", "--compile at least 1.2x the steady steps/s of eager (SD 1.5)"),
)


def environment(smoke: bool, settings: dict[str, Any]) -> dict[str, Any]:
    """What ran where: the GPU, the library versions, the date (UTC), the settings."""
    import diffusers
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    return {
        "mode": "cpu smoke (shrunk models: code paths only, not a measurement)" if smoke else "gpu",
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "diffusers": diffusers.__version__,
        "transformers": transformers.__version__, "settings": settings,
    }


def _find(rows: list[dict[str, Any]], model: str, prefix: str) -> dict[str, Any] | None:
    for row in rows:
        if row.get("status") == "ok" and row.get("model") == model and row["row"].startswith(prefix):
            return row
    return None


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float | None:
    if not a or not b or not a.get(key) or not b.get(key):
        return None
    return a[key] / b[key]


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each goal with its measured ratio and whether it holds (None: its rows did not run)."""
    found: dict[str, list[tuple[str, float | None, float]]] = {name: [] for name, _ in GOALS}
    for model in ("sd15", "sdxl"):
        raw = _find(rows, model, "raw diffusers")
        found["inference"].append((model, _ratio(_find(rows, model, "diffrun library, --dtype auto"), raw,
                                                 "steps_per_s"), 0.95))
        found["generate"].append((model, _ratio(_find(rows, model, "diffrun generate"), raw, "steps_per_s"), 0.95))
    one = next((r for r in rows if r.get("status") == "ok" and r["row"].endswith("--batch-size 1")), None)
    four = next((r for r in rows if r.get("status") == "ok" and r["row"].endswith("--batch-size 4")), None)
    found["batch"].append(("sd15", _ratio(four, one, "images_per_s"), 1.3))
    found["url"].append(("sd15", _ratio(_find(rows, "sd15", "img2img batch, URLs"),
                                        _find(rows, "sd15", "img2img batch, data:"), "images_per_s"), 0.95))
    found["compile"].append(("sd15", _ratio(_find(rows, "sd15", "diffrun library, --compile"),
                                            _find(rows, "sd15", "diffrun library, --dtype auto"), "steps_per_s"), 1.2))
    result = []
    for name, text in GOALS:
        for model, ratio, threshold in found[name]:
            result.append({"goal": name, "text": text, "model": model,
                           "ratio": round(ratio, 3) if ratio is not None else None, "threshold": threshold,
                           "holds": None if ratio is None else ratio >= threshold})
    return result


def _num(value: Any, digits: int = 2) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


@dataclass
class Report:
    out: Path
    meta: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    builds: list[dict[str, Any]] = field(default_factory=list)
    tests: dict[str, Any] = field(default_factory=dict)

    def add(self, row: dict[str, Any]) -> None:
        """One row; both files are rewritten, so a run cut short still leaves what it measured."""
        if row.get("status") == "ok" and row.get("peak_bytes") is not None:
            row["peak_gib"] = round(row["peak_bytes"] / 2**30, 2)
        raw = _find(self.rows, row.get("model", ""), "raw diffusers")
        base = raw or _find(self.rows, row.get("model", ""), "diffrun library, --dtype auto")
        same_work = base is not None and (base["size"], base["steps"]) == (row.get("size"), row.get("steps"))
        ratio = _ratio(row, base, "steps_per_s") if row.get("status") == "ok" and same_work else None
        if ratio is not None and base is not row:
            row["vs_raw" if raw else "vs_library"] = round(ratio, 3)
        untiled = _find(self.rows, row.get("model", ""), row["row"].replace("--vae-tiling", "no --vae-tiling"))
        if row["row"].endswith(", --vae-tiling") and untiled and row.get("status") == "ok":
            slower, peak = _ratio(row, untiled, "inference_s"), _ratio(row, untiled, "peak_bytes")
            row["note"] = "; ".join(filter(None, [f"{slower:.2f}× the untiled time" if slower else "",
                                                  f"{peak:.2f}× its peak memory" if peak else "", row.get("note")]))
        self.rows.append(row)
        self.save()

    def to_json(self) -> dict[str, Any]:
        return {"meta": self.meta, "builds": self.builds, "rows": self.rows, "goals": goals(self.rows),
                "tests": self.tests}

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu.json").write_text(json.dumps(self.to_json(), indent=1, default=str) + "\n")
        (self.out / "gpu.md").write_text(self.markdown() + "\n")

    def markdown(self) -> str:
        m = self.meta
        where = m["gpu"] or "CPU"
        lines = [f"### {where}, {m['date']}: torch {m['torch']} (CUDA {m['cuda']}), diffusers {m['diffusers']}",
                 "", f"Mode: {m['mode']}.", ""]
        if self.builds:
            lines.append("Models: " + "; ".join(
                f"{b['model']} {b['parameters'] / 1e9:.3f}B parameters, {b['bytes'] / 2**30:.2f} GiB {b['dtype']}, "
                f"{'reused' if b['reused'] else 'built in ' + _num(b['seconds'], 1) + ' s'}" for b in self.builds))
            lines.append("")
        lines += ["| model | run | how | dtype | images | steps/s | images/s | vs raw | load s | process s "
                  "| peak GiB | note |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in self.rows:
            if r.get("status") != "ok":
                lines.append(f"| {r.get('model', '')} | {r['row']} | | | | | | | | | | **{r['status']}**: "
                             f"{r.get('error') or r.get('note', '')} |")
                continue
            note = r.get("note", "")
            if r.get("first_call_s") is not None and "compile" in r["row"]:
                note = f"first call {r['first_call_s']:.1f} s; " + note
            if r.get("vs_library"):
                note = f"{r['vs_library']:.2f}× the library row's steps/s (raw diffusers did not run); " + note
            if r.get("process_images_per_s"):
                note = f"whole process {r['process_images_per_s']:.2f} images/s; " + note
            lines.append(f"| {r['model']} | {r['row']} | {r['how']} | {r.get('dtype', '')} | {r['images']} "
                         f"| {_num(r['steps_per_s'], 1)} | {_num(r['images_per_s'])} | "
                         f"{_num(r.get('vs_raw'))}{'×' if r.get('vs_raw') else ''} | {_num(r.get('load_s'), 1)} | "
                         f"{_num(r.get('process_s'), 1)} | {_num(r.get('peak_gib'))} | {note.strip('; ')} |")
        lines += ["", "| goal | model | measured | holds |", "|---|---|---:|---|"]
        smoke = m["gpu"] is None
        for g in goals(self.rows):
            holds = "not run" if g["holds"] is None else ("yes" if g["holds"] else "**no**")
            holds = f"{holds} (cpu smoke: not a measurement)" if smoke and g["holds"] is not None else holds
            lines.append(f"| {g['text']} | {g['model']} | {_num(g['ratio'])}{'×' if g['ratio'] else ''} "
                         f"(goal ≥ {g['threshold']}×) | {holds} |")
        if self.tests:
            lines += ["", f"tests/cuda: {self.tests['summary']} (exit {self.tests['exit']}, "
                          f"{self.tests['seconds']} s; cuda-tests.txt)"]
        return "\n".join(lines)
