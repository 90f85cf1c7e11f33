"""The ``benchsuite`` command line: ``list``, ``run``, ``report``.

Exit status: 0 when every run completed or ended in a recorded outcome (diverged,
timeout); 1 when runs failed (they are retried on the next invocation); 2 for bad
input (unknown names, bad values, missing directories, unreadable or newer-schema
records), reported on one line naming the problem and the valid choices, without a
traceback (newlines in user strings are escaped); 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from benchsuite import __version__
from benchsuite.curvature.errors import CurvatureError
from benchsuite.errors import BenchsuiteError, ConfigError

if TYPE_CHECKING:  # heavy modules load lazily, inside the commands
    from benchsuite.config.spec import RunSpec
    from benchsuite.config.suite import Suite
    from benchsuite.records.record import RunRecord
    from benchsuite.run.executor import SuiteSummary
    from benchsuite.run.suite_run import Phase

log = logging.getLogger("benchsuite")
EXIT_RUNS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_REGRESSION = 1  # benchsuite compare: a cell regressed


def one_line(message: str) -> str:
    """``message`` with line breaks escaped, so an error is always one line."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


def _csv(kind: type = str):
    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        try:
            return [kind(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}: {text!r}") from None

    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer: {text!r}")
    return value


def _shard_arg(text: str) -> tuple[int, int]:
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N such as 0/8: {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N: {text!r}")
    return i, n


def _devices_arg(text: str) -> list[int]:
    out = []
    for part in (t.strip() for t in text.split(",")):
        index = part.removeprefix("cuda:")
        if not index.isdigit():
            raise argparse.ArgumentTypeError(f"expected GPUs such as cuda:0,cuda:1: {text!r}")
        out.append(int(index))
    if len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"a GPU is named twice: {text!r}")
    return out


def _workers_arg(text: str) -> int | str:
    return "auto" if text == "auto" else _positive_int(text)


class _Parser(argparse.ArgumentParser):
    """argparse with the project's one-line error format (no usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"benchsuite: error: {one_line(message)} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="benchsuite", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"benchsuite {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,run,report,compare,surface}")

    p_list = sub.add_parser("list", help="list tasks, activations, optimizers and suites")
    p_list.add_argument("what", nargs="?", default="all",
                        choices=["all", "tasks", "activations", "optimizers", "suites"])

    p_run = sub.add_parser("run", help="run a suite (resumable: finished runs are skipped)")
    p_run.add_argument("--suite", required=True, help="built-in suite name or path to a suite .toml")
    p_run.add_argument("--results", type=Path, help="results directory (default: results/<suite>)")
    p_run.add_argument("--tasks", type=_csv(), help="only these tasks (comma-separated)")
    p_run.add_argument("--activations", type=_csv(), help="only these activations")
    p_run.add_argument("--optimizers", type=_csv(), help="only these optimizers (names or suite labels)")
    p_run.add_argument("--seeds", type=_csv(int), help="seeds, e.g. 0,1,2")
    p_run.add_argument("--data-seed", type=int, help="seed of the data sets (default: the suite's, else 0)")
    p_run.add_argument("--size", help="task size preset (e.g. tiny, default)")
    p_run.add_argument("--steps", type=int, help="budget in optimizer steps (replaces the suite's budget)")
    p_run.add_argument("--epochs", type=float, help="budget in epochs (replaces the suite's budget)")
    p_run.add_argument("--seconds", type=float, help="budget in training seconds (replaces the suite's budget)")
    p_run.add_argument("--device", help="cpu, cuda or cuda:N")
    p_run.add_argument("--statistics", help="curvature statistics preset: none, cheap, full")
    p_run.add_argument("--stats-every", type=int, help="probe cadence in steps")
    p_run.add_argument("--eval-every", type=int, help="evaluation cadence in steps")
    p_run.add_argument("--shard", type=_shard_arg, metavar="I/N",
                       help="run only shard I of N (task x activation cells dealt out in turn; e.g. a Slurm array "
                            "task: --shard $SLURM_ARRAY_TASK_ID/8)")
    p_run.add_argument("--devices", type=_devices_arg, metavar="cuda:0,cuda:1",
                       help="GPUs for the worker processes, one each (default with --workers: every visible GPU)")
    p_run.add_argument("--workers", type=_workers_arg,
                       help="runs at once in worker processes (a positive integer or 'auto'; default: the suite's)")
    p_run.add_argument("--threads", type=_positive_int, help="torch CPU threads (default: the suite's, else torch's)")
    p_run.add_argument("--executor", choices=["local", "ray"], default="local",
                       help="where runs run: this machine (default) or one Ray task each (pip install "
                            "\"benchsuite[ray]\"; --workers then caps the runs in flight)")
    p_run.add_argument("--address", help="Ray cluster to connect to (--executor ray; default: start a local Ray)")
    p_run.add_argument("--gpus-per-run", type=float, metavar="G",
                       help="GPUs each run reserves with --executor ray on device cuda (default: the suite's "
                            "gpus_per_run, else 1; a fraction such as 0.25 shares a GPU)")
    p_run.add_argument("--dry-run", action="store_true", help="validate and list the runs without running")
    p_run.add_argument("--no-report", action="store_true", help="do not write the report at the end")

    p_rep = sub.add_parser("report", help="write the comparison table and plots of a results directory")
    p_rep.add_argument("results", type=Path, help="directory of run records (e.g. results/smoke)")
    p_rep.add_argument("--out", type=Path, help="output directory (default: <results>/report)")
    p_rep.add_argument("--no-plots", action="store_true", help="tables only")
    p_rep.add_argument("--tuning-metric", default="valid_loss",
                       help="training or validation column (train_* or valid_*) that selected the tuning winners "
                            "(default: valid_loss; the report reads the one that did from the records)")

    p_cmp = sub.add_parser("compare", help="compare two results directories cell by cell; exit 1 on a regression")
    p_cmp.add_argument("base", type=Path, help="reference results directory (e.g. the previous commit's)")
    p_cmp.add_argument("new", type=Path, help="results directory judged against BASE")
    p_cmp.add_argument("--threshold", type=float, default=0.10,
                       help="relative change that counts as a regression when significant (default: 0.10)")
    p_cmp.add_argument("--alpha", type=float, default=0.05, help="significance level of the tests (default: 0.05)")
    p_cmp.add_argument("--out", type=Path, help="output directory (default: <new>/compare-vs-<base name>)")

    p_srf = sub.add_parser("surface", help="2-D loss-surface slices (within a layer, across two) and the "
                                           "within-layer PSD check of Botev et al. (2017)")
    p_srf.add_argument("--task", help="task name (default with --from run: the run's)")
    p_srf.add_argument("--activation", help="activation name (default with --from run: the run's)")
    p_srf.add_argument("--size", help="task size preset (default: tiny; with --from run: the run's)")
    p_srf.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default: 0)")
    p_srf.add_argument("--data-seed", type=int, default=0, help="seed of the data set (default: 0)")
    p_srf.add_argument("--from", dest="source", nargs="+", default=["init"], metavar="init|checkpoint PATH|run RUN_ID",
                       help="weights: at initialisation, from a checkpoint file, or a finished run's final ones "
                            "(replayed on the CPU; needs --results)")
    p_srf.add_argument("--results", type=Path, help="results directory of --from run, and root of the default --out")
    p_srf.add_argument("--out", type=Path,
                       help="output directory (default: <results or results>/surface/<task>-<activation>-<from>)")
    p_srf.add_argument("--resolution", type=_positive_int, default=41, help="grid points per axis (default: 41)")
    p_srf.add_argument("--span", type=float, default=1.0, help="grid half-width in filter-normalised units (1.0)")
    p_srf.add_argument("--points", type=_positive_int, default=50, help="random points of the Hessian check (50)")
    p_srf.add_argument("--examples", type=_positive_int, default=1000, help="first training examples of the loss (1000)")
    p_srf.add_argument("--layer", type=int, help="Linear layer of both slices, 0 = first (default: a middle hidden one)")
    p_srf.add_argument("--layer2", type=int, help="second Linear layer of the across slice (default: the next)")
    p_srf.add_argument("--direction-seed", type=int, default=0, help="seed of the directions and points (default: 0)")
    return parser


def _list(what: str, console: Console) -> None:
    from benchsuite.config.suite import builtin_suites
    from benchsuite.contracts.activation import ACTIVATIONS
    from benchsuite.contracts.optimizer import OPTIMIZERS
    from benchsuite.contracts.task import TASKS

    sections = {
        "tasks": [(e.name, e.description) for e in TASKS.entries()],
        "activations": [(e.name, e.description) for e in ACTIVATIONS.entries()],
        "optimizers": [(e.name, e.description) for e in OPTIMIZERS.entries()],
        "suites": sorted(builtin_suites().items()),
    }
    for name, rows in sections.items():
        if what not in ("all", name):
            continue
        table = Table(title=name, title_justify="left", show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for row in rows:
            table.add_row(*row)
        console.print(table)
        console.print()


def _run(args: argparse.Namespace, console: Console) -> int:
    from benchsuite.records.record import Status
    from benchsuite.run.suite_run import run_suite

    suite = _suite(args)
    results = args.results or Path("results") / suite.name
    if args.dry_run:
        return _dry_run(suite, results, console)
    progress = _RichProgress(console, results)
    try:
        workers = args.workers if args.workers is not None or not args.devices else len(args.devices)
        result = run_suite(suite, results, progress=progress, threads=args.threads, workers=workers,
                           gpus=args.devices, executor=args.executor, address=args.address,
                           gpus_per_run=args.gpus_per_run)
    finally:
        progress.close()  # an error or Ctrl-C must not leave the bar drawing
    if not args.no_report:
        _report(results, None, plots=True, console=console, tuning_metric=result.tuning_metric)
    failed = sum(s.statuses.get(Status.FAILED, 0) for s in (result.tuning, result.runs) if s is not None)
    if failed:
        print(f"benchsuite: {failed} run(s) failed (see the warnings and the report); run the same command "
              "again to retry them", file=sys.stderr)
        return EXIT_RUNS_FAILED
    return 0


def _suite(args: argparse.Namespace) -> Suite:
    """The suite named by ``--suite``, narrowed and overridden by the other flags."""
    from benchsuite.config.spec import Budget
    from benchsuite.config.suite import load_suite

    budget = None
    if any(v is not None for v in (args.steps, args.epochs, args.seconds)):
        budget = Budget(steps=args.steps, epochs=args.epochs, seconds=args.seconds)
    return load_suite(args.suite, size=args.size).narrow(
        tasks=args.tasks, activations=args.activations, optimizers=args.optimizers, seeds=args.seeds,
        shard=args.shard, size=args.size, device=args.device, budget=budget, statistics=args.statistics, data_seed=args.data_seed,
        stats_every=args.stats_every, eval_every=args.eval_every)


def _dry_run(suite: Suite, results: Path, console: Console) -> int:
    """Print the run ids and labels of ``suite`` (tuned columns: after their trials); run nothing."""
    specs = suite.specs()  # validates every name and value
    trials = suite.trial_specs()
    for spec in trials:
        console.print(f"{spec.run_id}  {spec.label}-trial{spec.trial}")
    for spec in specs:
        pending = trials and suite.tuning.tunes(spec.display_optimizer, spec.optimizer)
        console.print(f"{'(after tuning)' if pending else spec.run_id:16}  {spec.label}")
    tuned = f"{len(trials)} tuning trials, then " if trials else ""
    console.print(f"{tuned}{len(specs)} runs would be written to {results}")
    return 0


class _RichProgress:
    """A rich progress bar per phase of :func:`~benchsuite.run.suite_run.run_suite`, then its summary.

    Implements :class:`~benchsuite.run.suite_run.SuiteProgress` (without importing it at
    start-up: the CLI loads torch only inside the commands that need it).
    """

    def __init__(self, console: Console, results: Path):
        self.console, self.results = console, results
        self.bar: Progress | None = None

    def start_phase(self, phase: Phase, suite: Suite, specs: Sequence[RunSpec]) -> None:
        from benchsuite.run.suite_run import Phase

        if phase is Phase.TUNING:
            self.console.print(f"[bold]{suite.name}[/]: tuning {', '.join(suite.tuning.optimizers)} "
                               f"({suite.tuning.trials} trials each) → {self.results}")
        else:
            self.console.print(f"[bold]{suite.name}[/]: {len(specs)} runs → {self.results}")
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        self.bar = Progress(*columns, console=self.console, transient=False)
        self.bar.start()
        self.task = self.bar.add_task("starting", total=len(specs))

    def start_run(self, spec: RunSpec) -> None:
        self.bar.update(self.task, description=spec.label + ("" if spec.trial is None else f"-trial{spec.trial}"))

    def end_run(self, spec: RunSpec, record: RunRecord | None) -> None:
        self.bar.advance(self.task)

    def end_phase(self, phase: Phase, summary: SuiteSummary) -> None:
        self.bar.update(self.task, description="done")
        self.close()
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(summary.statuses.items())) or "nothing new"
        self.console.print(f"{phase}: ran {summary.ran} ({statuses}), skipped {summary.skipped} already finished, "
                           f"in {summary.seconds:.1f} s")
        for label, status, reason in summary.problems:
            self.console.print(f"  [yellow]{status}[/] {label}: {reason}")

    def close(self) -> None:
        """Stop the bar of the current phase, if one is drawing."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _report(results: Path, out: Path | None, *, plots: bool, console: Console,
            tuning_metric: str = "valid_loss") -> int:
    from benchsuite.report.build import build_report

    if results.exists() and not results.is_dir():
        raise ConfigError(f"Results path {results} is a file, not a directory: give the directory a suite wrote")
    if not results.is_dir():
        raise ConfigError(f"Results directory not found: {results} (run a suite first, e.g. "
                          f"'benchsuite run --suite smoke')")
    report = build_report(results, out, plots=plots, tuning_metric=tuning_metric)
    if report.runs.empty:
        log.warning("no comparison runs in %s: the report says so and has no tables", results)
    for problem in report.problems:
        console.print(f"[yellow]skipped unreadable record[/]: {escape(str(problem))}", soft_wrap=True)
    for note in report.notes:
        console.print(f"[yellow]note[/]: {escape(note)}", soft_wrap=True)
    console.print(f"report: {escape(str(report.files[0]))}", soft_wrap=True)
    for f in report.files[1:]:
        console.print(f"        {escape(str(f))}", soft_wrap=True)
    return 0


def _compare(args: argparse.Namespace, console: Console) -> int:
    """``benchsuite compare BASE NEW``: 1 when a cell regressed, 0 otherwise (bad input raises: 2)."""
    from benchsuite.report.compare import compare_results, print_summary

    comparison = compare_results(args.base, args.new, args.out, threshold=args.threshold, alpha=args.alpha)
    print_summary(comparison, console)
    return EXIT_REGRESSION if comparison.regressions else 0


def _surface(args: argparse.Namespace, console: Console) -> int:
    """``benchsuite surface``: write the slices' figures and ``check.json``; one verdict line per slice."""
    from benchsuite.analysis.sources import Source
    from benchsuite.analysis.surface import SurfaceConfig, make_surface, verdict_line
    from benchsuite.config.spec import RunSpec

    source = Source.parse(args.source, args.results)
    spec, expect = None, {"task": args.task, "activation": args.activation, "size": args.size}
    if source.kind != "run":
        if not args.task or not args.activation:
            raise ConfigError(f"benchsuite surface --from {source.kind} needs --task and --activation "
                              "(see 'benchsuite list')")
        spec = RunSpec(task=args.task, activation=args.activation, optimizer="sgd", seed=args.seed,
                       size=args.size or "tiny", data_seed=args.data_seed)
    config = SurfaceConfig(resolution=args.resolution, span=args.span, points=args.points, examples=args.examples,
                           layer=args.layer, layer2=args.layer2, direction_seed=args.direction_seed)
    surface, out = make_surface(source, spec, config, out=args.out, results=args.results, expect=expect)
    meta = surface.meta
    console.print(f"{escape(meta['task'])} · {escape(meta['activation'])} · {escape(meta['source'])}: "
                  f"{escape(meta['source_note'])}", soft_wrap=True)
    for s in surface.slices:
        console.print(escape(verdict_line(s.check, s.name, s.layers)), soft_wrap=True)
    console.print(f"surface: {escape(str(out))} (check.json, figures)", soft_wrap=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=False)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(message)s",
                        handlers=[RichHandler(console=Console(stderr=True), show_path=False)])
    try:
        if args.command == "list":
            _list(args.what, console)
            return 0
        if args.command == "run":
            return _run(args, console)
        if args.command == "compare":
            return _compare(args, console)
        if args.command == "surface":
            return _surface(args, console)
        return _report(args.results, args.out, plots=not args.no_plots, console=console,
                       tuning_metric=args.tuning_metric)
    except (BenchsuiteError, CurvatureError) as exc:  # the engine's errors are user errors too
        print(f"benchsuite: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("benchsuite: interrupted; finished runs are saved, run the same command again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
