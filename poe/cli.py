"""What the command-line tools share: one parser class (one-line errors, one flag spelling), the
flags the four scripts have in common, and turning errors into one line + exit code.

Flags are spelt snake_case (--data_root); the parser adds each one's hyphenated spelling
(--data-root) as an alias, so both work everywhere and the help lists each flag once."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from . import distributed
from .errors import PoEError
from .profiles import REGISTRY, get_profile


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; each flag listed once (`--a, --b METAVAR`), without the hyphenated
    aliases the parser adds."""

    def _format_action_invocation(self, action):
        if not action.option_strings:
            return super()._format_action_invocation(action)
        names = ", ".join(s for s in action.option_strings if s not in getattr(action, "hyphen_aliases", ()))
        if action.nargs == 0:
            return names
        return f"{names} {self._format_args(action, self._get_default_metavar_for_optional(action))}"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one `error: ...` line for a bad flag (not the usage block), exit status 2, and
    every `--snake_case` flag also answering to `--snake-case`."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    @classmethod
    def from_doc(cls, doc: str) -> "ArgumentParser":
        """A script's parser: its docstring's first paragraph as the description, the rest (the
        examples) after the options."""
        description, _, epilog = doc.partition("\n\n")
        return cls(description=description, epilog=epilog or None)

    def add_argument(self, *names, **kwargs):
        hyphens = [n.replace("_", "-") for n in names if n.startswith("--") and "_" in n]
        hyphens = [n for n in dict.fromkeys(hyphens) if n not in names]
        action = super().add_argument(*names, *hyphens, **kwargs)
        action.hyphen_aliases = tuple(hyphens)
        return action

    def format_help(self):
        example = next((a for a in self._actions if getattr(a, "hyphen_aliases", ())), None)
        if example is not None:  # say once what the listing leaves out
            self._optionals.title = (f"options (each also spelt with hyphens: {example.hyphen_aliases[0]} for "
                                     f"{example.option_strings[0]})")
        return super().format_help()

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """argparse type for counts (epochs, batch size, views, threads): 0 is refused, not read as
    "the default" — leave the flag out for the default."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r} (leave the flag out for the default)")
    return value


def non_negative_int(text: str) -> int:
    """argparse type for counts where 0 means none (images held out per class)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (learning rates)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def check_writable(path, flag: str, *, folder: bool = False) -> None:
    """Fail before any work when an output (`folder`: a folder to create or fill) cannot be written
    there: one clear line instead of a traceback after hours of training."""
    if path is None:
        return
    path = Path(path)
    if path.exists():
        if folder != path.is_dir():
            raise PoEError(f"{flag} {path}: is {'not ' if folder else ''}a folder")
        target = path if folder else path.parent
    else:
        target = path.parent
        while not target.exists() and target != target.parent:
            target = target.parent
        if not target.is_dir():
            raise PoEError(f"{flag} {path}: {target} is a file, not a folder")
    if not os.access(target, os.W_OK | os.X_OK):
        raise PoEError(f"{flag} {path}: cannot write in {target} (permission denied)")


def add_common_args(parser: argparse.ArgumentParser, *, db: bool = True) -> None:
    """The flags of every script: the dataset and its data, the pool (`db`: False where a script
    defines its own --db), the device and the CPU threads."""
    parser.add_argument("--dataset", default="cifar100", choices=sorted([*REGISTRY, "folder"]),
                        help="dataset profile (default: cifar100; 'demo' is a small synthetic set generated "
                             "offline in seconds; tinyimagenet; imagenet; folder: your own images, see --data_root)")
    parser.add_argument("--data_root", default="data", metavar="DIR",
                        help="folder holding the dataset (cifar100: DIR/cifar-100-python/; tinyimagenet: "
                             "DIR/tiny-imagenet-200/ as downloaded; imagenet: DIR/{train,val}/<wnid>/; folder: "
                             "DIR/train/<class>/ or DIR/train/<task>/<class>/, and DIR/val/<class>/); default ./data")
    parser.add_argument("--image_size", type=positive_int, default=None, metavar="S",
                        help="--dataset folder: the networks' input side, overriding the choice by the images' size: "
                             "32 (CIFAR-100's WRNs), 64 (Tiny-ImageNet's WRNs) or 96-512 (MobileNetV2, with your "
                             "pretrained --weights)")
    parser.add_argument("--restrict_to", nargs="+", default=None, metavar="TASK",
                        help="use only the classes of these primitive tasks: the dataset cut down to them, networks "
                             "included (pools named <dataset>-<K>cls); e.g. CIFAR-100's six paper tasks, 30 classes")
    if db:
        parser.add_argument("--db", default=None, metavar="DIR",
                            help="pool folder (library + experts); default DB_PoE/<dataset>. A folder in the "
                                 "authors' published layout (Library/, Experts/, student_for_library/) is read too")
    parser.add_argument("--device", default="auto", help="auto (a GPU when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--amp", default=None, choices=["auto", "none", "bf16"],
                        help="bf16 autocast: 'auto' uses it where the hardware is fast at it; default: the "
                             "profile's (none for the paper's datasets, auto for demo)")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="CPU threads for torch (default: torch's)")
    parser.add_argument("--task_file", default=None, metavar="PATH",
                        help="your own primitive tasks, added to the dataset's and made the default tasks: JSON "
                             "{\"task\": [class, ...]} or lines 'task: class, class' (class = id, name or wnid)")


def add_query_arg(parser: argparse.ArgumentParser, *, nargs: str, help: str) -> None:
    """The queried primitive tasks: --queried_task, also the paper's --queriedTask."""
    parser.add_argument("--queried_task", "--queriedTask", dest="queried", nargs=nargs, default=None, metavar="TASK",
                        help=help)


def add_run_args(parser: argparse.ArgumentParser, *, batch_size: str, download: str = "the dataset") -> None:
    """The flags of the scripts that train: --batch_size (`batch_size`: what its default is),
    --seed and --download (`download`: what it fetches)."""
    parser.add_argument("--batch_size", type=positive_int, default=None, metavar="N",
                        help=f"images per batch, at least 1; default: {batch_size}")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the training runs (default 0)")
    parser.add_argument("--download", action="store_true", help=f"download {download} if missing (needs a network)")


def add_pretrained_db_arg(parser: argparse.ArgumentParser, *, holds: str = "oracle.pt") -> None:
    parser.add_argument("--pretrained_db", default=None, metavar="DIR",
                        help=f"folder holding {holds}; default DB_pretrained/<dataset>")


def add_output_args(parser: argparse.ArgumentParser, *, json: str, markdown: str | None = None,
                    plot: bool = False) -> None:
    """--json (and --markdown, --plot where the script writes them): what each holds, in `json`
    and `markdown`. See check_outputs and write_report_files."""
    parser.add_argument("--json", default=None, metavar="PATH", help=json)
    if plot:
        parser.add_argument("--plot", default=None, metavar="PATH", help="PNG plot; default: beside --json, with .png")
    if markdown:
        parser.add_argument("--markdown", default=None, metavar="PATH", help=markdown)


def add_cache_dtype_arg(parser: argparse.ArgumentParser) -> None:
    from .feature_cache import CACHE_DTYPES

    parser.add_argument("--cache_dtype", default="float16", choices=list(CACHE_DTYPES),
                        help="storage type of the cached features (default float16; float32 doubles the disk)")


def add_feature_cache_args(parser: argparse.ArgumentParser, *, joint: str, db: str) -> None:
    """--expert_source and the feature cache's flags (Run_preprocessing.py, Run_Table6.py). `joint`:
    which experts one cached pass trains; `db`: the folder the cache lives in by default."""
    from .extract import DEFAULT_VIEWS

    parser.add_argument("--expert_source", default="cache", choices=["cache", "live"],
                        help="cache (default): compute the library's features and the teacher's logits once per "
                             f"augmented view of the training set, store them, and train {joint} jointly from them "
                             "(poe/extract.py); live: recompute both every batch, as the paper's code does")
    parser.add_argument("--cache_views", type=positive_int, default=None, metavar="V",
                        help=f"augmented views of the training set to cache (default: the profile's, {DEFAULT_VIEWS}; "
                             "imagenet 1; capped at the expert epochs); epoch e reads view e mod V. Disk per view: "
                             "images x library features x 2 bytes + logits, e.g. CIFAR-100 50,000x32x16x16x2 B + "
                             f"50,000x100x4 B = 0.84 GB ({DEFAULT_VIEWS} views: 8.4 GB); ImageNet ~45 GB per view. A "
                             "cache that does not fit on the disk is refused before writing. RAM: one view's pages "
                             "at a time (memory-mapped)")
    parser.add_argument("--cache_dir", default=None, metavar="DIR",
                        help=f"where the feature cache lives (default: {db}/feature_cache); keyed by library, "
                             "teacher and data, so a stale cache is never read")
    add_cache_dtype_arg(parser)
    parser.add_argument("--cache_seed", type=int, default=None, metavar="S",
                        help="seed of the cached views' crops and flips (default: --seed); fixing it lets runs "
                             "that differ only in the experts' seed share one cache")


def add_validation_args(parser: argparse.ArgumentParser, *, scoring: bool = True,
                        per_class: str = "hold out N training images of every class as a validation split, never "
                                         "trained on, recorded in what is stored (default: the budget preset's, "
                                         "else 0: every training image is trained on, as in the paper)") -> None:
    """The validation split's flags (poe/split.py); `per_class`: what --val_per_class does in this
    script; `scoring`: with --score_on."""
    parser.add_argument("--val_per_class", type=non_negative_int, default=None, metavar="N", help=per_class)
    parser.add_argument("--val_seed", type=int, default=0, metavar="S", help="seed of the validation split (default 0)")
    if scoring:
        parser.add_argument("--score_on", nargs="+", default=None, choices=["val", "test"],
                            help="where trained models are scored: val while comparing settings, test only for what "
                                 "is reported (default: both with a split, else test)")


def add_pool_study_args(parser: argparse.ArgumentParser) -> None:
    """The flags of the small studies that read pools against their teacher (python -m poe.logit_scale,
    python -m poe.teacher_ceiling): the data, the pools with their labels, the teacher, the outputs."""
    from .teachers import TEACHERS

    parser.add_argument("--dataset", default="cifar100", choices=sorted(REGISTRY))
    parser.add_argument("--data_root", default="data", metavar="DIR")
    parser.add_argument("--db", action="append", required=True, metavar="DIR", help="a pool (repeatable)")
    parser.add_argument("--label", action="append", default=[], help="a name per --db, in order")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="none", choices=["auto", "none", "bf16"])
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N")
    parser.add_argument("--teacher", default="oracle", choices=TEACHERS)
    parser.add_argument("--pretrained_db", default=None, metavar="DIR",
                        help="folder holding oracle.pt; default DB_pretrained/<dataset>")
    parser.add_argument("--tasks", nargs="+", default=None)
    parser.add_argument("--json", default=None, metavar="PATH")
    parser.add_argument("--markdown", default=None, metavar="PATH")
    parser.add_argument("--plot", default=None, metavar="PATH", help="PNG; default: beside --json")


def add_no_wait_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no_wait", dest="wait", action="store_false",
                        help="if another run is writing the same pool, stop at once with one error line instead "
                             "of waiting for it (see poe/lock.py)")


def selected_tasks(args, profile) -> list[str]:
    """--tasks resolved against the profile: the paper's by default, 'all' for every one."""
    wanted = list(profile.hierarchy) if args.tasks == ["all"] else args.tasks or profile.default_tasks
    return profile.resolve_tasks(wanted, "--tasks")


def validation_from_args(args, profile):
    """The run's ValidationSplit: --val_per_class, else the profile's (or budget preset's) default."""
    from .split import ValidationSplit

    per_class = profile.val_per_class if args.val_per_class is None else args.val_per_class
    return ValidationSplit(per_class, args.val_seed)


def profile_from_args(args):
    """The --dataset profile, with the --task_file tasks added when given (folder: built at run time from
    --data_root or the pool, poe/folder_profile.py), cut down to --restrict_to's classes when given."""
    if args.dataset == "folder":
        from .folder_profile import folder_profile_from_args
        return folder_profile_from_args(args)
    if getattr(args, "image_size", None) is not None:
        raise PoEError(f"--image_size applies to --dataset folder; {args.dataset}'s networks take its own size")
    profile = get_profile(args.dataset)
    profile = profile.with_task_file(args.task_file) if args.task_file else profile
    if getattr(args, "restrict_to", None):
        from .subset import restrict_to_tasks
        profile = restrict_to_tasks(profile, args.restrict_to)
    return profile


def setup_torch(args) -> None:
    # Large CPU tensors on transparent huge pages: far fewer page faults for fresh activations
    # (measured 2-4x faster elementwise passes over new 100 MB tensors on this machine).
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)


def run(main, argv=None) -> int:
    """Call main(argv); a PoEError becomes `error: ...` on stderr and exit status 2."""
    try:
        main(argv)
    except PoEError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last finished epoch", file=sys.stderr)
        return 130
    finally:
        distributed.cleanup()  # leave torchrun's process group, if this process joined one
    return 0


def plot_path(args) -> str | None:
    """Where the --plot PNG goes: --plot, else beside --json with .png, else nowhere."""
    return getattr(args, "plot", None) or (str(Path(args.json).with_suffix(".png")) if args.json else None)


def check_outputs(args, *, plot: bool = False) -> None:
    """Fail before any work when one of the script's output files (--json, the plot where the
    script draws one, --markdown, --export) cannot be written: see check_writable."""
    paths = {"--json": getattr(args, "json", None), "--plot": plot_path(args) if plot else None,
             "--markdown": getattr(args, "markdown", None), "--export": getattr(args, "export", None)}
    for flag, path in paths.items():
        check_writable(path, flag)


def write_report_files(args, doc: dict, markdown: str, plot=None) -> None:
    """A study's --json (and the --plot PNG, by default beside it) and --markdown outputs, each
    written atomically (Run_Table6.py, Run_Baselines.py). `plot(doc, path)` returns a line to print."""
    import json

    from .files import atomic_write_text

    if args.json:
        atomic_write_text(Path(args.json), json.dumps(doc, indent=1) + "\n")
        print(f"json          : {args.json}")
    png = plot_path(args)
    if plot is not None and png:
        print(plot(doc, Path(png)))
    if args.markdown:
        atomic_write_text(Path(args.markdown), markdown)
        print(f"markdown      : {args.markdown}")
