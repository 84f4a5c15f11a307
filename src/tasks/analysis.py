"""The analysis jobs: each reads pruning runs (`analysis.runs`), writes PNG plots and the JSON of the
numbers behind them into its run directory, and logs both to W&B.

  +experiment=analysis_categories   category retention curves (Fig. 3) and distribution (Fig. 8)
  +experiment=analysis_dynamics     Hit@|S| of local vs frozen vs random rankings (Fig. 5)
  +experiment=analysis_cost         wall time and tokens against chain length, power-law fits
  +experiment=viewer                one self-contained HTML page of the runs
  +experiment=export_demo           the paper's demo JSONL format
"""

from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.analysis.cost import cost_scaling, plot_cost
from src.analysis.dynamics import plot_dynamics, rank_dynamics
from src.analysis.export import demo_record
from src.analysis.retention import distribution, label_runs, plot_distribution, plot_retention, retention
from src.analysis.runs import read_runs
from src.analysis.viewer import write_viewer
from src.outputs import write_jsonl
from src.tracking import publish, start_tracking


def _start(cfg: DictConfig, job: str):
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out, read_runs(OmegaConf.to_container(cfg.analysis.runs, resolve=True)), start_tracking(cfg, out, job)


def _done(tracker, out: Path, files: list[Path]) -> None:
    tracker.finish()
    print("\n".join(f"wrote {f}" for f in files))
    print(f"Run directory: {out}")


def categories(cfg: DictConfig) -> dict:
    out, runs, tracker = _start(cfg, "analysis_categories")
    labels = label_runs(runs, instantiate(cfg.annotator))
    keeps = list(cfg.analysis.keep_fractions)
    numbers = {
        label: {
            "retention": retention(records, labels[label], keeps),
            "distribution": distribution(records, labels[label]),
        }
        for label, records in runs.items()
    }
    plots = {
        "retention": plot_retention({k: v["retention"] for k, v in numbers.items()}, out / "retention.png"),
        "distribution": plot_distribution({k: v["distribution"] for k, v in numbers.items()}, out / "distribution.png"),
    }
    data = publish(out, tracker, "categories", numbers, plots)
    _done(tracker, out, [*plots.values(), data])
    return numbers


def dynamics(cfg: DictConfig) -> dict:
    out, runs, tracker = _start(cfg, "analysis_dynamics")
    numbers = {label: rank_dynamics(records, list(cfg.analysis.keep_fractions)) for label, records in runs.items()}
    plots = {"dynamics": plot_dynamics(numbers, out / "dynamics.png")}
    data = publish(out, tracker, "dynamics", numbers, plots)
    _done(tracker, out, [*plots.values(), data])
    return numbers


def cost(cfg: DictConfig) -> dict:
    out, runs, tracker = _start(cfg, "analysis_cost")
    numbers = {label: cost_scaling(records) for label, records in runs.items()}
    plots = {"cost": plot_cost(numbers, out / "cost.png")}
    data = publish(out, tracker, "cost", numbers, plots)
    for label, result in numbers.items():
        fits = ", ".join(f"{k}: α = {f['exponent']:.2f}" for k, f in result["fit"].items() if f)
        print(f"{label}: {fits or 'needs records of at least two lengths'}")
    _done(tracker, out, [*plots.values(), data])
    return numbers


def viewer(cfg: DictConfig) -> Path:
    out, runs, tracker = _start(cfg, "viewer")
    labels = label_runs(runs, instantiate(cfg.annotator))
    page = write_viewer(out / "viewer.html", runs, labels, title=cfg.analysis.title)
    tracker.save(page)
    _done(tracker, out, [page])
    return page


def export_demo(cfg: DictConfig) -> list[Path]:
    """demo-LABEL.jsonl per run for the paper's demo page; the records carry the question, reasoning and answer."""
    out, runs, tracker = _start(cfg, "export_demo")
    labels = label_runs(runs, instantiate(cfg.annotator))
    files = []
    for label, records in runs.items():
        path = out / f"demo-{label}.jsonl"
        write_jsonl(path, (demo_record(record, labels[label][record["id"]]) for record in records))
        tracker.save(path)
        files.append(path)
    _done(tracker, out, files)
    return files
