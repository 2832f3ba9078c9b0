"""`npu-bench routing` as a library call: the router's accuracy on the labelled prompts, split by
split (the held-out split is never fitted on), with its confusion matrices and time per decision;
optionally after fitting its weights on the training split."""

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from npu_engine.bench_report import results_folder
from npu_engine.catalog import Catalog
from npu_engine.files import write_text_atomically
from npu_engine.router import Router, RouterRules, model_classifier
from npu_engine.router_fit import LabelledPrompt, RoutingReport, confusion_table, evaluate, fit


@dataclass(frozen=True)
class RoutingRun:
    """The reports (train, then held-out), the same as Markdown, and the folder they are in."""

    reports: list[RoutingReport]
    text: str
    folder: Path


def routing_report(
    rules: RouterRules,
    prompts: Sequence[LabelledPrompt],
    profile: str,
    *,
    catalog: Catalog,
    say: Callable[[str], None],
    fit_to: Path | None = None,
    fast_model: Callable[[], Callable[[str], str]] | None = None,
    out: Path | None = None,
) -> RoutingRun:
    """Evaluate `rules` routing to the tiers of `profile` on both splits of `prompts`, and write
    routing.md and routing.json to `out` (default: npu-bench-results/<time>).

    With `fit_to`, the weights are first fitted on the training split, written there as a rules
    file, and evaluated instead of `rules`. With `fast_model` (which makes the fast tier's
    generate), the router asks that model when the rules are unsure."""
    if fit_to is not None:
        training = [p for p in prompts if p.split == "train"]
        fitted = fit(rules, training)
        write_text_atomically(fit_to, json.dumps(fitted.to_dict(), indent=1) + "\n")
        say(f"rules fitted on {len(training)} training prompts written to {fit_to}")
        rules = fitted
    router = Router(rules, catalog.profile(profile))
    if fast_model is not None:
        router = Router(rules, router.profile, model_classifier(fast_model()))
    reports = [evaluate(router, prompts, split) for split in ("train", "heldout")]
    parts = ["# Router accuracy" + (" (rules, then the fast model when unsure)" if fast_model else "")]
    for report in reports:
        parts += [
            f"## {report.split}: {report.accuracy:.1%} ({report.correct}/{report.total}), "
            f"{report.microseconds_per_decision / 1000:.3f} ms per decision",
            confusion_table(report),
        ]
    text = "\n\n".join(parts) + "\n"
    folder = results_folder(out)
    (folder / "routing.md").write_text(text)
    (folder / "routing.json").write_text(
        json.dumps([asdict(r) | {"accuracy": r.accuracy} for r in reports], indent=2) + "\n"
    )
    return RoutingRun(reports, text, folder)
