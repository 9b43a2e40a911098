"""Options shared by training, testing and the scripts.

Names and defaults follow NVlabs' SPADE so its users' command lines keep working. The selected
model, generator, discriminator and dataset mode add their own flags (and their own defaults,
e.g. Cityscapes sets ``--label_nc 35``) through their ``modify_commandline_options`` hooks,
found by name in explicit registries.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Dict, List, Optional

from data.base_dataset import COND_INPUTS, PREPROCESS_MODES  # what the data pipeline offers
from util.errors import OptionError
from util.options import upgrade_saved_options


# Options that describe the run rather than the networks: never restored by
# --load_from_opt_file and never reported as checkpoint mismatches.
RUN_OPTIONS = {"name", "gpu_ids", "checkpoints_dir", "phase", "isTrain", "continue_train",
               "which_epoch", "load_from_opt_file", "results_dir", "how_many", "dataroot",
               "label_dir", "image_dir", "instance_dir", "nThreads", "batchSize",
               "serial_batches", "no_flip", "max_dataset_size", "display_freq", "print_freq",
               "save_latest_freq", "save_epoch_freq", "no_html", "amp", "seed", "niter",
               "niter_decay", "num_samples", "world_size", "load_size", "is_main",
               "depth_dir", "no_label_scan", "no_pairing_check", "synthetic_num",
               "coco_no_portraits", "cityscapes_no_disparity", "depth_from", "eval_freq",
               "eval_num", "fid_weights", "fid_protocol", "eval_segmenter", "eval_segmenter_path",
               "eval_segmenter_mapping", "sigma_min", "sigma_max", "test_sigmas", "noisy_clip",
               "keep_last", "loss_warn_threshold",
               "gradient_checkpointing", "tf_log", "debug", "cache_filelist_read",
               "cache_filelist_write", "eval_ignore_id", "no_opt_file", "verbose"}

# A resumed training run (--continue_train) also takes these run options from its opt.json, so
# that ``python train.py --name X --continue_train`` needs no flag retyped (data, schedule,
# logging); only what names or locates the run, or says how to resume it, is never restored.
NEVER_RESTORED = {"name", "checkpoints_dir", "isTrain", "continue_train", "which_epoch",
                  "load_from_opt_file", "no_opt_file", "verbose", "is_main", "world_size", "phase"}

# Options whose value selects a registry entry (and with it the hooks that set defaults).
SELECTORS = ("preset", "model", "netG", "netD", "netD_depth", "dataset_mode")

# Attributes parse() adds that are not options (never in opt.txt / opt.json).
NOT_OPTIONS = {"option_defaults", "option_origin"}


def preset_table() -> Dict[str, Dict[str, Any]]:
    """--preset NAME -> the recipe's option defaults, from the generators that declare one
    (``preset``, ``recipe``). Flags a parser does not have (training-only ones in test.py) are
    skipped."""
    from models.networks import GENERATORS
    table = {}
    for name in GENERATORS.names():
        cls = GENERATORS.get(name)
        if cls.preset:
            table[cls.preset] = {"netG": name, **cls.recipe}
    return table


def preset_paper(preset: str) -> str:
    """Who published ``--preset`` ``preset``'s recipe."""
    from models.networks import GENERATORS
    return next(GENERATORS.get(n).recipe_paper for n in GENERATORS.names() if GENERATORS.get(n).preset == preset)



def _describe(values: Dict[str, Any]) -> str:
    return " ".join(f"--{k}" if v is True else f"--{k} {v}" for k, v in values.items())


class BaseOptions:
    """Builds the parser, applies registry hooks, validates and saves the options."""

    isTrain = False

    def initialize(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        # experiment
        parser.add_argument("--name", type=str, default="label2coco",
                            help="name of the experiment: folder under checkpoints_dir")
        parser.add_argument("--gpu_ids", type=str, default="0",
                            help="GPU ids, e.g. 0 or 0,1,2; -1 (or no CUDA) for CPU. Several ids "
                                 "without torchrun start one DDP process per GPU")
        parser.add_argument("--checkpoints_dir", type=str, default="./checkpoints",
                            help="models, options, logs and pages are saved here")
        parser.add_argument("--model", type=str, default="pix2pix", help="which model wrapper")
        parser.add_argument("--norm_G", type=str, default="spectralinstance",
                            help="generator normalization")
        parser.add_argument("--norm_D", type=str, default="spectralinstance",
                            help="discriminator normalization")
        parser.add_argument("--norm_E", type=str, default="spectralinstance",
                            help="encoder normalization")
        parser.add_argument("--phase", type=str, default="train", help="train, val, test")
        parser.add_argument("--seed", type=int, default=0,
                            help="seed for weights, data order and augmentation")
        # input/output sizes
        parser.add_argument("--batchSize", type=int, default=1,
                            help="global batch size (split across DDP processes)")
        parser.add_argument("--preprocess_mode", type=str, default="scale_width_and_crop",
                            choices=PREPROCESS_MODES, help="scaling and cropping of images")
        parser.add_argument("--load_size", type=int, default=1024,
                            help="scale images to this size before cropping (see preprocess_mode)")
        parser.add_argument("--crop_size", type=int, default=512,
                            help="crop to this size; the generator's output width")
        parser.add_argument("--aspect_ratio", type=float, default=1.0,
                            help="width / height of the generated images")
        parser.add_argument("--label_nc", type=int, default=182,
                            help="number of label classes (ids 0..label_nc-1), without dontcare")
        parser.add_argument("--contain_dontcare_label", action="store_true",
                            help="label 255 (and, as in SPADE, the id label_nc) means 'unlabeled' "
                                 "and becomes an extra input channel; never scored by mIoU")
        parser.add_argument("--cache_filelist_write", action="store_true",
                            help="write the scanned file list of each data folder to "
                                 "<folder>/files.list (SPADE's cache, for COCO/ADE20K-sized sets)")
        parser.add_argument("--cache_filelist_read", action="store_true",
                            help="read <folder>/files.list instead of scanning the folder, unless "
                                 "a (sub-)folder changed after it was written")
        parser.add_argument("--eval_ignore_id", type=int, default=None,
                            help="a class id inside 0..label_nc-1 that is void (e.g. a custom "
                                 "set's 'unlabelled'): trained on as a class, not scored by mIoU")
        parser.add_argument("--output_nc", type=int, default=3, help="number of output channels")
        # data
        parser.add_argument("--dataroot", type=str, default=None,
                            help="dataset folder; without it the built-in synthetic dataset is used")
        parser.add_argument("--dataset_mode", type=str, default=None,
                            help="dataset mode (default: synthetic without --dataroot, custom with it)")
        parser.add_argument("--serial_batches", action="store_true",
                            help="take images in order instead of shuffling")
        parser.add_argument("--no_flip", action="store_true", help="no horizontal flip augmentation")
        parser.add_argument("--nThreads", default=0, type=int, help="data loading workers per process")
        parser.add_argument("--max_dataset_size", type=int, default=sys.maxsize,
                            help="use at most this many samples")
        parser.add_argument("--load_from_opt_file", action="store_true",
                            help="load the network options from checkpoints_dir/name/opt.json "
                                 "(flags given on the command line still win). Now the default "
                                 "for test.py and --continue_train whenever that file exists; "
                                 "with this flag a missing file is an error")
        parser.add_argument("--no_opt_file", action="store_true",
                            help="do not read checkpoints_dir/name/opt.json: every option comes "
                                 "from the command line and the defaults")
        parser.add_argument("--verbose", action="store_true",
                            help="the start-up banner lists every option, not only the changed ones")
        parser.add_argument("--display_winsize", type=int, default=400, help="display image width")
        # generator
        presets = preset_table()
        parser.add_argument("--preset", type=str, default=None, choices=tuple(presets),
                            help="one flag for a published recipe's defaults (explicit flags still win): "
                                 + "; ".join(f"{k} ({preset_paper(k)}): {_describe(v)}"
                                             for k, v in presets.items()))
        parser.add_argument("--netG", type=str, default="spade", help="generator architecture")
        parser.add_argument("--ngf", type=int, default=64, help="generator width")
        parser.add_argument("--init_type", type=str, default="xavier",
                            choices=("normal", "xavier", "xavier_uniform", "kaiming", "orthogonal", "none"),
                            help="weight initialization")
        parser.add_argument("--init_variance", type=float, default=0.02,
                            help="gain of the initialization")
        parser.add_argument("--z_dim", type=int, default=256, help="dimension of the latent z")
        parser.add_argument("--no_instance", action="store_true",
                            help="do not add the instance-boundary map as an input")
        parser.add_argument("--nef", type=int, default=16, help="encoder width (SPADE keeps it unused)")
        parser.add_argument("--use_vae", action="store_true", help="enable the VAE style encoder")
        parser.add_argument("--cond_inputs", type=str, default="",
                            help="comma-separated continuous maps from the dataset that condition "
                                 f"the generator and discriminator next to the labels ({', '.join(COND_INPUTS)})")
        # speed
        parser.add_argument("--amp", type=str, default="none", choices=("none", "bf16", "fp16"),
                            help="mixed precision (fp16 uses a GradScaler; bf16 also works on CPU)")
        parser.add_argument("--channels_last", action="store_true",
                            help="keep networks and activations in NHWC memory layout (faster convs "
                                 "with AMP on recent GPUs; the fast SPADE path already works in NHWC)")
        parser.add_argument("--compile", action="store_true",
                            help="torch.compile the networks (first iterations are slow while it "
                                 "compiles; checkpoints stay plain)")
        parser.add_argument("--compile_backend", type=str, default="inductor",
                            help="torch.compile backend with --compile (inductor; 'eager' or "
                                 "'aot_eager' to debug)")
        return parser

    # ------------------------------------------------------------------ parsing
    def _apply_hooks(self, parser: argparse.ArgumentParser, args: Optional[List[str]],
                     saved: Optional[Dict[str, Any]] = None) -> argparse.Namespace:
        """Select the components and let them add their flags and defaults, in one pass.

        Order (later wins): the parser's defaults, then the components' hooks (model, generator,
        discriminators, dataset mode: each runs once), then ``--preset``'s recipe (once), then
        ``saved`` (the run's opt.json, restorable options only), then the flags typed on the
        command line. The components themselves are chosen in the same order: typed flag >
        opt.json > requirement (a generator's ``requires_model``, a model's ``default_netG``) >
        preset > default. A typed flag that contradicts a requirement is an error naming both.
        """
        # Imported here so that `options` can be imported without building every registry.
        from data import DATASETS
        from models import MODELS
        from models.networks import DISCRIMINATORS, GENERATORS

        saved = saved or {}
        opt, _ = parser.parse_known_args(args)
        explicit = explicit_options(parser, args or [])

        def pick(dest: str, *fallbacks: Optional[str]) -> Any:
            if dest in explicit:
                return getattr(opt, dest)
            if dest in saved:
                return saved[dest]
            return next((f for f in fallbacks if f is not None), getattr(opt, dest, None))

        preset_name = pick("preset")
        preset = preset_table().get(preset_name, {}) if preset_name else {}
        given_netG = getattr(opt, "netG") if "netG" in explicit else saved.get("netG", preset.get("netG"))
        needed = GENERATORS.get(given_netG).requires_model if given_netG else None
        model = pick("model", needed, preset.get("model"))
        if needed and model != needed:
            raise OptionError(f"--netG {given_netG} needs --model {needed} (got --model {model}); "
                              "leave --model out")
        netG = given_netG or MODELS.get(model).default_netG or opt.netG
        needed = GENERATORS.get(netG).requires_model
        if needed and model != needed:
            raise OptionError(f"--netG {netG} needs --model {needed} (got --model {model}); "
                              "leave --model out or choose another --netG")
        selection = {"preset": preset_name, "model": model, "netG": netG,
                     "dataset_mode": pick("dataset_mode")
                     or ("synthetic" if opt.dataroot is None else "custom")}
        steps = [(MODELS, "model"), (GENERATORS, "netG")]
        if self.isTrain:
            selection["netD"] = pick("netD", preset.get("netD"))
            steps.append((DISCRIMINATORS, "netD"))
        for registry, dest in steps:
            self._run_hook(parser, registry, selection[dest])
        if self.isTrain and any(a.dest == "netD_depth" for a in parser._actions):  # the udgan model's
            opt, _ = parser.parse_known_args(args)
            selection["netD_depth"] = pick("netD_depth")
            self._run_hook(parser, DISCRIMINATORS, selection["netD_depth"])
        self._run_hook(parser, DATASETS, selection["dataset_mode"])
        known = {a.dest for a in parser._actions}
        parser.set_defaults(**{k: v for k, v in preset.items() if k in known})  # the recipe, once
        parser.set_defaults(**selection)
        parser.set_defaults(**{k: v for k, v in saved.items() if k in known})  # the run's own values
        opt, _ = parser.parse_known_args(args)
        return opt

    def _run_hook(self, parser: argparse.ArgumentParser, registry: Any, name: Optional[str]) -> None:
        """``name``'s hook adds its flags and defaults (each component once per parser); its
        flags form their own group in --help, titled by the component."""
        if name is None or (registry.kind, name) in self._hooks_applied:
            return
        self._hooks_applied.add((registry.kind, name))
        before = set(map(id, parser._actions))
        registry.get(name).modify_commandline_options(parser, self.isTrain)
        added = [a for a in parser._actions if id(a) not in before]
        if added:
            group = parser.add_argument_group(f"{registry.option} {name} ({registry.kind})")
            for action in added:
                for other in parser._action_groups:
                    if action in other._group_actions:
                        other._group_actions.remove(action)
                group._group_actions.append(action)

    def _new_parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(
            prog=os.path.basename(sys.argv[0]) or "udgan",
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
            epilog="The groups after the base options are the selected components' own flags "
                   "(--netG X, --dataset_mode Y, ... show theirs); --help-all lists every "
                   "component's flags.")
        return self.initialize(parser)

    def reads_option_file(self, opt: argparse.Namespace) -> bool:
        """Whether this run takes its options from the run's opt.json when it exists: test-time
        runs always, training runs when they resume (--continue_train)."""
        return not self.isTrain or bool(getattr(opt, "continue_train", False))

    def _option_file_to_read(self, opt: argparse.Namespace) -> Optional[str]:
        if getattr(opt, "no_opt_file", False):
            if opt.load_from_opt_file:
                raise OptionError("--load_from_opt_file and --no_opt_file contradict each other; "
                                  "give one of them")
            return None
        path = option_file_path(opt)
        if opt.load_from_opt_file:  # asked for: a missing file is an error (load_option_file)
            return path
        return path if self.reads_option_file(opt) and os.path.isfile(path) else None

    def _not_restored(self, opt: argparse.Namespace) -> set:
        if self.isTrain and getattr(opt, "continue_train", False):
            return NEVER_RESTORED
        return RUN_OPTIONS | NEVER_RESTORED

    def gather_options(self, args: Optional[List[str]] = None) -> argparse.Namespace:
        parser = self._new_parser()
        self._hooks_applied: set = set()
        if args is None:
            args = sys.argv[1:]
        if "--help-all" in args:
            print(self.help_all(parser))
            raise SystemExit(0)
        # --help waits for the final parse: the hooks' flags (the chosen generator's,
        # discriminator's, dataset mode's) must be registered before it prints
        hook_args = [a for a in args if a not in ("-h", "--help")]
        opt = self._apply_hooks(parser, hook_args)
        self.option_origin: Dict[str, Any] = {"file": None, "restored": [], "explicit": []}
        self.code_defaults: Optional[Dict[str, Any]] = None
        path = self._option_file_to_read(opt)
        if path:
            skip = self._not_restored(opt)
            saved = {k: v for k, v in load_option_file(path).items() if k not in skip}
            # a fresh parser: only the finally selected components' hooks, each once
            parser = self._new_parser()
            self._hooks_applied = set()
            opt = self._apply_hooks(parser, hook_args, saved)
            known = {a.dest for a in parser._actions}
            restored = {k for k in saved if k in known}
            explicit = explicit_options(parser, hook_args)
            self.option_origin = {"file": path, "explicit": sorted(explicit),
                                  "restored": sorted(k for k in restored if k not in explicit)}
            # what "changed" means in opt.txt and the banner: the code's defaults for this
            # configuration, not the values read from the file
            self.code_defaults = self._defaults_without_file(hook_args, opt)
        self.parser = parser
        return parser.parse_args(args)  # strict: an unknown flag is an error here

    def help_all(self, parser: argparse.ArgumentParser) -> str:
        """--help-all: the base options, then every registered component's own flags (with the
        defaults that apply when it is selected)."""
        from data import DATASETS
        from models import MODELS
        from models.networks import DISCRIMINATORS, GENERATORS
        parts = [parser.format_help()]
        registries = [MODELS, GENERATORS] + ([DISCRIMINATORS] if self.isTrain else []) + [DATASETS]
        for registry in registries:
            for name in registry.names():
                scratch = argparse.ArgumentParser(add_help=False, usage=argparse.SUPPRESS,
                                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
                registry.get(name).modify_commandline_options(scratch, self.isTrain)
                if scratch._actions:
                    scratch._optionals.title = f"{registry.option} {name} ({registry.kind})"
                    parts.append(scratch.format_help().strip())
        return "\n\n".join(parts)

    def _defaults_without_file(self, args: List[str], opt: argparse.Namespace) -> Dict[str, Any]:
        """The defaults a run with the same flags and the same selected components (model,
        networks, dataset mode, preset) would have without an option file."""
        fresh = type(self)()
        fresh._hooks_applied = set()
        parser = fresh._new_parser()
        selection: List[str] = []
        for dest in SELECTORS:
            value = getattr(opt, dest, None)
            if value is not None:
                selection += [f"--{dest}", str(value)]
        fresh._apply_hooks(parser, list(args) + selection)
        return {a.dest: parser.get_default(a.dest) for a in parser._actions if a.dest != "help"}

    def parse(self, args: Optional[List[str]] = None, save: bool = True) -> argparse.Namespace:
        """Parse and check the options. Nothing is written here: a training run writes
        opt.txt / opt.json itself once every check passed (``save`` is kept for callers that
        still pass it)."""
        opt = self.gather_options(args)
        opt.isTrain = self.isTrain
        # defaults, so that opt.txt can mark what was changed (not an option: never in opt.json)
        opt.option_defaults = {a.dest: self.parser.get_default(a.dest) for a in self.parser._actions
                               if a.dest != "help"}
        if self.code_defaults is not None:  # read from opt.json: the code's defaults, not the file's
            opt.option_defaults.update({k: v for k, v in self.code_defaults.items()
                                        if k in opt.option_defaults})
        # where the values came from (not an option either): the file read, if any, and which
        # options it gave (explicit flags win over it)
        opt.option_origin = self.option_origin
        finalize_options(opt)
        return opt


def explicit_options(parser: argparse.ArgumentParser, args: List[str]) -> set:
    """The options given on the command line ``args`` (whatever their value, in any spelling
    argparse accepts: ``--ngf 8``, ``--ngf=8``, an unambiguous prefix): parsed once more with
    every default suppressed, so only what was typed lands in the namespace."""
    saved_defaults = dict(parser._defaults)
    saved = [(a, a.default) for a in parser._actions]
    try:
        parser._defaults.clear()
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        namespace, _ = parser.parse_known_args(args)
    finally:
        for action, default in saved:
            action.default = default
        parser._defaults.update(saved_defaults)
    return set(vars(namespace))


def _comparable(key: str, value: Any) -> Any:
    """An option's value in the form parse() leaves it in (--gpu_ids and --cond_inputs are
    parsed into lists), so that a default compares equal to its parsed value."""
    try:
        if key == "gpu_ids" and isinstance(value, str):
            return parse_gpu_ids(value)
        if key == "cond_inputs" and not isinstance(value, list):
            return parse_cond_inputs(value)
    except OptionError:
        pass
    return value


def changed_options(opt: argparse.Namespace) -> Dict[str, Any]:
    """``{option: default}`` for every option whose value differs from its default."""
    defaults = getattr(opt, "option_defaults", {})
    changed = {}
    for key, value in sorted(vars(opt).items()):
        if key in defaults and key not in NOT_OPTIONS:
            default = defaults[key]
            if _comparable(key, value) != _comparable(key, default):
                changed[key] = default
    return changed


def options_table(opt: argparse.Namespace, only_changed: bool = False) -> str:
    """SPADE's options table (its opt.txt): one ``name: value`` line per option, right-aligned
    names, ``[default: X]`` after each value that differs from its default."""
    changed = changed_options(opt)
    lines = ["----------------- Options ---------------"]
    for key, value in sorted(vars(opt).items()):
        if key in NOT_OPTIONS or (only_changed and key not in changed):
            continue
        note = f"\t[default: {changed[key]}]" if key in changed else ""
        lines.append(f"{key:>25}: {value!s:<30}{note}")
    lines.append("----------------- End -------------------")
    return "\n".join(lines)


def parse_gpu_ids(text: str) -> List[int]:
    try:
        ids = [int(t) for t in str(text).split(",") if t.strip() != ""]
    except ValueError:
        raise OptionError(f"--gpu_ids {text!r} is not a comma-separated list of integers "
                          "(e.g. 0 or 0,1,2; -1 for CPU)") from None
    return [i for i in ids if i >= 0]


def check_name(name: str) -> None:
    """--name is one folder under --checkpoints_dir / --results_dir, never a path out of them."""
    seps = [s for s in (os.sep, os.altsep, "/") if s]
    if (not name or name in (".", "..") or any(s in name for s in seps) or os.path.isabs(name)
            or name != name.strip() or "\0" in name):
        raise OptionError(f"--name {name!r} must be a plain folder name (no path separators, not "
                          "'.' or '..'): it names checkpoints_dir/<name>; choose e.g. --name "
                          "my_experiment and set --checkpoints_dir for another location")


# float options with a range narrower than "any finite number"
_POSITIVE = ("lr",)
_UNIT_INTERVAL = ("beta1", "beta2")


def check_numbers(opt: argparse.Namespace) -> None:
    """Refuse NaN / infinite float options, a non-positive --lr, negative loss weights and betas
    outside [0, 1) before anything runs (they would only show up as a diverged run)."""
    defaults = getattr(opt, "option_defaults", {})
    for key, value in sorted(vars(opt).items()):
        default = defaults.get(key)
        unbounded = isinstance(default, float) and math.isinf(default)  # --how_many: all
        if isinstance(value, float) and (math.isnan(value) or (math.isinf(value) and not unbounded)):
            raise OptionError(f"--{key} {value} is not a finite number; give a number such as "
                              f"{_default_hint(opt, key)}")
        if key.startswith("lambda_") and isinstance(value, (int, float)) and value < 0:
            raise OptionError(f"--{key} is a loss weight and cannot be negative (got {value:g}); "
                              "use 0 to turn the term off")
    for key in _POSITIVE:
        value = getattr(opt, key, None)
        if isinstance(value, (int, float)) and value <= 0:
            raise OptionError(f"--{key} must be positive (got {value:g}); e.g. "
                              f"{_default_hint(opt, key)}")
    for key in _UNIT_INTERVAL:
        value = getattr(opt, key, None)
        if isinstance(value, (int, float)) and not 0 <= value < 1:
            raise OptionError(f"--{key} must be in [0, 1) (got {value:g})")


def _default_hint(opt: argparse.Namespace, key: str) -> str:
    default = getattr(opt, "option_defaults", {}).get(key)
    return f"the default {default:g}" if isinstance(default, (int, float)) else "0.0002"


def finalize_options(opt: argparse.Namespace) -> None:
    """Derived values and cross-option checks shared by every entry point."""
    if isinstance(opt.gpu_ids, str):
        opt.gpu_ids = parse_gpu_ids(opt.gpu_ids)
    check_name(opt.name)
    check_numbers(opt)
    if opt.label_nc < 0:
        raise OptionError(f"--label_nc must be 0 (the input is an RGB image) or a class count "
                          f"(got {opt.label_nc})")
    if opt.label_nc == 0 and opt.contain_dontcare_label:
        raise OptionError("--contain_dontcare_label needs label classes; with --label_nc 0 the "
                          "input is an image: drop one of the two")
    if opt.batchSize < 1:
        raise OptionError(f"--batchSize must be at least 1 (got {opt.batchSize})")
    if opt.crop_size < 1 or opt.load_size < 1:
        raise OptionError("--crop_size and --load_size must be positive")
    if opt.aspect_ratio <= 0:
        raise OptionError(f"--aspect_ratio must be positive (got {opt.aspect_ratio})")
    if getattr(opt, "accum_iter", 1) < 1:
        raise OptionError(f"--accum_iter must be at least 1 (got {opt.accum_iter}); 1 means no accumulation")
    # Channels the generator is conditioned on: one-hot labels (+ dontcare) + instance edges
    # + the continuous maps of --cond_inputs.
    opt.cond_inputs = parse_cond_inputs(getattr(opt, "cond_inputs", ""))
    # --label_nc 0 (pix2pix's image-to-image mode, denoising): the input is an image of
    # --input_nc channels (aligned mode's flag; 3 elsewhere).
    input_nc = getattr(opt, "input_nc", 3) if opt.label_nc == 0 else opt.label_nc + (1 if opt.contain_dontcare_label else 0)
    opt.semantic_nc = input_nc + (0 if opt.no_instance else 1) + sum(COND_INPUTS[c][1] for c in opt.cond_inputs)


def parse_cond_inputs(value: Any) -> List[str]:
    """'depth' / ['depth'] / '' -> list of known --cond_inputs names, in the given order."""
    names = value if isinstance(value, list) else [v.strip() for v in str(value or "").split(",")]
    names = [n for n in names if n]
    for n in names:
        if n not in COND_INPUTS:
            raise OptionError(f"--cond_inputs: {n!r} is not a map datasets provide; choose from: "
                              f"{', '.join(COND_INPUTS)}")
    if len(set(names)) != len(names):
        raise OptionError(f"--cond_inputs lists a map twice: {','.join(names)}")
    return names


def option_file_path(opt: argparse.Namespace) -> str:
    return os.path.join(opt.checkpoints_dir, opt.name, "opt.json")


def options_to_dict(opt: argparse.Namespace) -> Dict[str, Any]:
    return {k: v for k, v in sorted(vars(opt).items())
            if k not in NOT_OPTIONS and isinstance(v, (str, int, float, bool, list, type(None)))}


def save_options(opt: argparse.Namespace) -> None:
    """Write opt.txt (human-readable, marks non-defaults) and opt.json (machine-readable),
    each atomically. A training run calls this once every check passed, so a refused run leaves
    the files of the run it was refused on untouched.

    Only the main process writes: under torchrun every rank parses the options.
    """
    from util.image_io import atomic_write_text

    if os.environ.get("RANK", "0") != "0":
        return
    folder = os.path.join(opt.checkpoints_dir, opt.name)
    os.makedirs(folder, exist_ok=True)
    atomic_write_text(os.path.join(folder, "opt.txt"), options_table(opt) + "\n")
    atomic_write_text(os.path.join(folder, "opt.json"),
                      json.dumps(options_to_dict(opt), indent=1) + "\n")


def load_option_file(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise OptionError(f"--load_from_opt_file: {path} does not exist; check --name and "
                          "--checkpoints_dir, or drop --load_from_opt_file and give the options")
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OptionError(f"cannot read the run's options {path} ({e}); repair or remove it, or "
                          "pass --no_opt_file and give the options") from None
    if not isinstance(saved, dict):
        raise OptionError(f"{path} holds no options (a JSON object of option: value was "
                          "expected); repair or remove it, or pass --no_opt_file")
    return upgrade_saved_options(saved)
