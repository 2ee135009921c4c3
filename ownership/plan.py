"""The pipeline of reproduce.py as data: the jobs that make every artefact, and what verification reads.

    plan = Plan(preset, args)      # args: reproduce.py's flags
    plan.jobs                      # [Job], each after the jobs whose outputs it reads
    plan.suspects                  # [(mode, checkpoint, arch)]: the rows of the results table
    plan.columns                   # {(arch, column): (meta-classifier or None, references)}

A Job is one run of one stage script (embed_features, train_model, steal, gradientset, train_clf):
its output, the files it reads, its own flags and the preset keys the script reads. Every script gets
the preset the same way, `--preset NAME --scale S` (cli.preset_of), plus the run's flags
(Plan.run_flags: seed, folders, device, float path), and nothing else it could read from the preset;
so a reference command given the job's flags makes what reproduce.py makes. The manifest
(ownership/manifest.py) records a job by its flags, the run's flags and the values of the preset keys
it reads (`reads`), never the whole preset: changing a key reruns only the jobs that read it, and the
jobs downstream of them (their inputs' checksums change).

Each family of jobs is one function of FAMILIES, run in that order on the plan: it adds its jobs and
files its outputs by purpose (Plan.files), which the later families read. A new attack, reference
set or classifier is one such function and its entry.
"""
import dataclasses
import os

from . import paths
from .constants import ATTACK_MODES, COLUMNS, METHODS, QUERY_MODES, REPO, SIMULATED_THEFTS
from .errors import UserError
from .presets import DATASETS, PAPER_WHITE_BOX


@dataclasses.dataclass(frozen=True)
class Job:
    """One run of one stage script.

    stage    embed, train, steal, gradients or clf (results.json's timings add up by stage)
    output   the file or folder it makes: its key in the manifest
    script   the stage's module, run as script.main(script.get_parser().parse_args(argv))
    params   its own flags (tuple of str); the run's flags come from Plan.run_flags
    inputs   the files it reads: other jobs' outputs (it waits for those) and existing files
    reads    the preset keys the script reads with these flags: "train", or dotted "attacks.fine-tune"
    rank     where it starts among the jobs ready at once: the longest first, so that no worker is
             left alone with a long job at the end (changes no result)"""
    stage: str
    output: str
    script: str
    params: tuple = ()
    inputs: tuple = ()
    reads: tuple = ()
    rank: int = 0


# what each stage script reads from the preset, besides what its flags name (ownership/data.py role_data:
# dataset, gamma, split; training.save_trained: eval_test)
DATA = ("dataset", "gamma", "split", "eval_test")
READS = {"embed": ("dataset", "gamma", "split", "styled_test", "style"),
         "train": DATA + ("train",),
         "steal": DATA,                       # plus the attack's budget, attack_reads()
         "gradients": ("dataset", "gamma"),  # the features are flags (--feature, --augment)
         "clf": ("dataset", "gamma", "clf"),  # the features are a flag (--feature)
         "di": DATA + ("di_images",)}  # and presets.DI, which is code, not a preset key
TRAINING = ("train_model", "steal")  # the scripts that train: --amp and --resume


def attack_reads(mode):
    """The preset keys steal.py --mode `mode` reads: its budget; multi-stage fine-tunes with fine-tune's."""
    return READS["steal"] + (f"attacks.{'fine-tune' if mode == 'multi-stage' else mode}",) \
        + ("query_data",) * (mode in QUERY_MODES)


def preset_value(preset, key):
    """preset[key] for a dotted key ("attacks.fine-tune"); None where the preset lacks it."""
    value = preset
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def verdict_files(column, arch, black_box, clf, references):
    """(meta-classifier or None, references) of verdict column `column` (constants.COLUMNS) for a suspect
    of architecture `arch`, None where it is unknown (behind an API). The any-architecture rule: the
    black-box column under any-arch, or of a suspect of unknown architecture, reads the one classifier
    trained on every architecture's models, clf(None), against every architecture's references,
    references(None); otherwise the column's classifier of `arch`, clf(arch), against references(arch).
    The baseline has no classifier. `clf` and `references` name the files (those planned, or those on
    disk): reproduce.py, ownership_verification.py and its API path all choose by this rule."""
    every = column == "black-box" and (black_box == "any-arch" or arch is None)
    key = None if every else arch
    return (None if column == "baseline" else clf(key)), references(key)


class Plan:
    """The jobs and verdict inputs of one reproduce.py run (see the module docstring). Raises UserError
    for a preset whose independent models have no meta-classifier or whose simulated thefts are not
    constants.SIMULATED_THEFTS."""

    def __init__(self, preset, args):
        self.preset, self.args = preset, args
        self.dataset = ds = preset["dataset"]
        d = DATASETS[ds]
        self.victim_arch, self.attacker_arch = d["victim_arch"], d["attacker_arch"]
        self.archs = list(dict.fromkeys([self.victim_arch, self.attacker_arch]))
        self.reference = args.protocol == "reference"
        # the reference protocol's classifiers are per architecture, on the paper's features [R]
        self.black_box = "per-arch" if self.reference else args.black_box or preset["black_box"]
        self.white_box = PAPER_WHITE_BOX if self.reference else preset["white_box"]
        self.black_box_feature = ("prediction-shift" if self.reference else
                                  args.black_box_feature or preset["black_box_feature"])
        self.thefts = () if self.reference else tuple(preset["clf_models"]["thefts"])
        self.method = getattr(args, "method", None) or preset["method"]
        if self.method not in METHODS:
            raise UserError(f"preset {args.preset!r}: method {self.method!r} is not one of {', '.join(METHODS)}")
        self.workdir = args.workdir or (os.path.join(REPO, "results", "smoke") if args.preset == "smoke" else REPO)
        self.out = args.out or os.path.join(REPO, "results", args.preset + ("-reference" if self.reference else ""))
        self.dirs = {k: os.path.join(self.workdir, k) for k in ("data", "model", "gradients_set", "prob")}
        self.model_dir = self.dirs["model"]
        self.di_results = os.path.join(self.dirs["prob"], ds, "di-blind-walk.json")  # --method both
        self.styled = paths.styled_dir(self.dirs["data"], ds, preset["gamma"])
        self.files = {arch: {} for arch in self.archs}  # arch -> purpose -> [checkpoint], Plan.file()
        self.jobs, self.suspects, self.columns, self.independents = [], [], {}, []
        for family in FAMILIES:
            family(self)
        self.jobs.sort(key=lambda j: j.rank)  # stable: within a rank, the families' order

    def add(self, job, arch=None, purpose=None):
        """Add `job`; with `purpose`, file its output under files[arch][purpose]. Returns the output."""
        self.jobs.append(job)
        if purpose is not None:
            self.file(arch, purpose).append(job.output)
        return job.output

    def file(self, arch, purpose):
        """The list of `arch`'s files of `purpose` (pos, neg, weak, refs, theft-pos, theft-neg ...)."""
        return self.files[arch].setdefault(purpose, [])

    def every(self, purpose):
        """The files of `purpose` of every architecture, the victim's architecture first."""
        return [f for arch in self.archs for f in self.file(arch, purpose)]

    def run_flags(self, job):
        """The flags every job of this run gets before its own: the preset hand-off (--preset, --scale),
        seed, folders, device; the training scripts also --amp and --resume."""
        a = self.args
        flags = ["--preset", a.preset, "--scale", str(a.scale), "--seed", str(a.seed), "--data-dir", self.dirs["data"],
                 "--model-dir", self.dirs["model"], "--grad-dir", self.dirs["gradients_set"],
                 "--prob-dir", self.dirs["prob"]]
        flags += ["--gpu", str(a.gpu)] * (a.gpu is not None) + ["--deterministic"] * a.deterministic
        return flags + ["--amp", a.amp, "--resume"] * (job.script in TRAINING)

    def argv(self, job):
        """The job's command line, after `python <script>.py`."""
        return self.run_flags(job) + list(job.params)

    def settings(self, job):
        """What decides the job's output besides its inputs' bytes, as the manifest records it: its own
        flags, the run's flags but the preset's name and scale, and the values of the preset keys it reads."""
        run = self.run_flags(job)[4:]  # without --preset NAME --scale S: the values read say what they chose
        return dict(params=list(job.params), run=run, reads={k: preset_value(self.preset, k) for k in job.reads})

    def relative(self, path):
        return os.path.relpath(path, self.workdir)


def embedding(plan):
    """The external feature: the stylised copies (embed_features.py), read by every later stage."""
    plan.add(Job("embed", plan.styled, "embed_features", ("--preview",), (), READS["embed"], rank=-1))


def models(plan):
    """Per architecture, the models behind its meta-classifiers, by purpose: pos and neg (victim-like
    and benign; the first of each, then other seeds -s1, -s2 ... on 75 % of the data), weak (more
    negatives of the black-box classifier: one epoch on the first n images, or for n = 0 no training at
    all, docs/VALIDITY.md) and refs (the held-out benign references). The reference protocol has one of
    each and tests against the benign model its classifier saw. The victim starts first; then the
    victim's architecture, the attackers', the weak and untrained models last."""
    p, m = plan.preset, plan.model_dir
    n_v, n_b = (1, 1) if plan.reference else (p["clf_models"]["victims"], p["clf_models"]["benigns"])
    for arch in plan.archs:
        rank = 2 if arch == plan.victim_arch else 3

        def train(path, role, tag, purpose, extra=(), rank=rank):
            reads = READS["train"] + ("clf_models.subset_epochs",) * tag.startswith("-s")
            plan.add(Job("train", path, "train_model", ("--arch", arch, "--role", role, f"--tag={tag}") + extra,
                         (plan.styled,), reads, rank), arch, purpose)

        for k in range(n_v):
            tag = f"-s{k}" if k else ""
            train(paths.victim(m, arch, tag), "victim", tag, "pos", rank=0 if (arch, k) == (plan.victim_arch, 0) else rank)
        for k in range(n_b):
            tag = f"-s{k}" if k else ""
            train(paths.benign(m, arch, tag), "benign", tag, "neg")
        if plan.reference:
            plan.file(arch, "refs").append(plan.file(arch, "neg")[0])
            continue
        for k, n in enumerate(p["clf_models"]["weak"], 1):
            budget = ("--images", str(n), "--epochs", "1") if n else ("--epochs", "0")  # 0: untrained, as initialised
            train(paths.benign(m, arch, paths.weak_tag(k)), "benign", paths.weak_tag(k), "weak", budget, rank + 2)
        for k in range(1, p["references"] + 1):
            train(paths.benign(m, arch, paths.reference_tag(k)), "benign", paths.reference_tag(k), "refs")


def independents(plan):
    """The independent models (suspects that must not be flagged): the preset's, and with
    --hard-negatives its harder ones, trained with recipes the defender never used (the validity study)."""
    p = plan.preset
    recipes = [(arch, {}) for arch, _ in p["independents"]]
    recipes += p.get("hard_negatives", []) if plan.args.hard_negatives else []
    for k, (arch, recipe) in enumerate(recipes, 1):
        if arch not in plan.archs:
            raise UserError(f"preset {plan.args.preset!r}: independent model {k} is {arch}, but meta-classifiers "
                            f"exist only for {plan.archs}; use one of those architectures")
        flags = tuple(f"--{key.replace('_', '-')}={value}" for key, value in recipe.items())
        path = paths.independent(plan.model_dir, k, arch)
        plan.add(Job("train", path, "train_model", ("--role", "independent", "--arch", arch, "--index", str(k)) + flags,
                     (plan.styled,), READS["train"], 2 if arch == plan.victim_arch else 3))
        plan.independents.append((path, arch))


def attacks(plan):
    """The attacks of the paper's table (steal.py), each against the victim; multi-stage fine-tunes the
    distillation student and lists it among its inputs. Zero-shot and distillation (which multi-stage
    waits for) start right after the victim: they take longest."""
    victim = plan.file(plan.victim_arch, "pos")[0]
    for mode in ATTACK_MODES:
        arch = paths.arch_for_mode(plan.dataset, mode)
        inputs = (victim, plan.styled) + ((paths.attack(plan.model_dir, "distillation", arch),) if mode == "multi-stage" else ())
        plan.add(Job("steal", paths.attack(plan.model_dir, mode, arch), "steal", ("--mode", mode), inputs,
                     attack_reads(mode), 1 if mode in ("zero-shot", "distillation") else 6), arch, "attack-" + mode)


def query_thieves(plan):
    """The query thieves that ask with the preset's other kinds of data (query_data[1:], e.g. natural
    images outside the task): rows of their own, 'label-query (natural)' (steal.py --query-data)."""
    victim = plan.file(plan.victim_arch, "pos")[0]
    for mode in QUERY_MODES:
        arch = paths.arch_for_mode(plan.dataset, mode)
        for kind in plan.preset["query_data"][1:]:
            plan.add(Job("steal", paths.attack(plan.model_dir, mode, arch, kind), "steal",
                         ("--mode", mode, "--query-data", kind), (victim, plan.styled),
                         attack_reads(mode), 6), arch, f"attack-{mode} ({kind})")


def simulated_thefts(plan):
    """The defender's simulated thefts (clf_models thefts, constants.SIMULATED_THEFTS): for each
    architecture, students of the victim (theft-pos, positives of the black-box classifiers) and of the
    first benign model of the victim's architecture (theft-neg, negatives), distilled on the victim's own
    data and, for multi-stage, fine-tuned on its clean part; seeds of their own (paths.THEFT_TAG), so
    that no simulated theft repeats an attack (docs/VALIDITY.md)."""
    if not set(plan.thefts) <= set(SIMULATED_THEFTS) or ("multi-stage" in plan.thefts and "distillation" not in plan.thefts):
        raise UserError(f"preset {plan.args.preset!r}: clf_models thefts {list(plan.thefts)} must be distillation, or "
                        f"distillation and multi-stage (which fine-tunes the distillation student)")
    teachers = (("theft-pos", plan.file(plan.victim_arch, "pos")[0]), ("theft-neg", plan.file(plan.victim_arch, "neg")[0]))
    for arch in plan.archs:
        for purpose, teacher in teachers:
            plan.file(arch, purpose)
            for mode in plan.thefts:
                path = paths.theft(plan.model_dir, teacher, mode, arch)
                params = ("--mode", mode, "--victim", teacher, "--arch", arch, "--tag", paths.THEFT_TAG, "--out", path)
                inputs = (teacher, plan.styled)
                if mode == "multi-stage":
                    first = paths.theft(plan.model_dir, teacher, "distillation", arch)
                    params += ("--student", first, "--fine-tune-data", "victim-clean")
                    inputs += (first,)
                plan.add(Job("steal", path, "steal", params, inputs, attack_reads(mode), 7), arch, purpose)


def gradient_sets(plan):
    """The white-box features (gradientset.py) of every model behind a white-box meta-classifier."""
    wb = plan.white_box
    flags = ("--feature", wb["feature"], "--augment" if wb["augment"] else "--no-augment")
    for arch in plan.archs:
        for m in plan.file(arch, "pos") + plan.file(arch, "neg"):
            g = paths.gradient_set(plan.dirs["gradients_set"], m, plan.styled, feature=wb["feature"])
            plan.add(Job("gradients", g, "gradientset", ("--m", m) + flags, (m, plan.styled), READS["gradients"], 8),
                     arch, "gradients")


def classifiers(plan):
    """The meta-classifiers (train_clf.py) and what each verdict column reads (Plan.columns, by the
    any-architecture rule, verdict_files): white-box per architecture; black-box one over every
    architecture (a suspect behind an API has no known architecture; docs/API.md), the longest job,
    and with --black-box per-arch one per architecture too. The black-box classifiers also learn the
    weak models and the simulated thefts. Another black-box feature than the preset's, the reference
    protocol, or --label-only (black-box classifiers trained on top labels, -labels.pt) names its own files."""
    m, ds = plan.model_dir, plan.dataset
    suffix = "-refprotocol.pt" if plan.reference else ".pt"
    bb_suffix = suffix if plan.reference or plan.black_box_feature == plan.preset["black_box_feature"] \
        else f"-{plan.black_box_feature}.pt"
    labels = getattr(plan.args, "label_only", False)  # --label-only: black-box classifiers of their own, on top labels
    bb_suffix = bb_suffix.replace(".pt", "-labels.pt") if labels else bb_suffix
    paths_of = {"white-box": lambda a: paths.clf(m, ds, a).replace(".pt", suffix),
                "black-box": lambda a: paths.clf(m, ds, a, "black-box").replace(".pt", bb_suffix)}

    def classifier(arch, access, pos, neg, inputs=()):
        feature = plan.white_box["feature"] if access == "white-box" else plan.black_box_feature
        params = ("--access", access, "--pos", *pos, "--neg", *neg, "--out", paths_of[access](arch), "--feature",
                  feature) + ("--type", arch) * (arch is not None) + ("--label-only",) * (labels and access == "black-box")
        plan.add(Job("clf", paths_of[access](arch), "train_clf", params, tuple(pos + neg) + (plan.styled,) + tuple(inputs),
                     READS["clf"], 9))

    bb_pos = lambda a: plan.file(a, "pos") + plan.file(a, "theft-pos")  # noqa: E731
    bb_neg = lambda a: plan.file(a, "neg") + plan.file(a, "weak") + plan.file(a, "theft-neg")  # noqa: E731
    classifier(None, "black-box", plan.every("pos") + plan.every("theft-pos"),
               plan.every("neg") + plan.every("weak") + plan.every("theft-neg"))
    for arch in plan.archs:
        classifier(arch, "white-box", plan.file(arch, "pos"), plan.file(arch, "neg"), plan.file(arch, "gradients"))
        if plan.black_box == "per-arch":
            classifier(arch, "black-box", bb_pos(arch), bb_neg(arch))
    every_ref = [r for a in sorted(plan.archs) for r in plan.file(a, "refs")]  # paths.all_references' order
    refs = lambda a: every_ref if a is None else plan.file(a, "refs")  # noqa: E731
    for arch in plan.archs:
        for column in COLUMNS:
            plan.columns[arch, column] = verdict_files(column, arch, plan.black_box,
                                                       paths_of.get(column, lambda a: None), refs)


def suspects(plan):
    """The rows of the results table: the victim itself, each attack's student, the independent models."""
    va = plan.victim_arch
    plan.suspects.append(("source", plan.file(va, "pos")[0], va))
    for mode in ATTACK_MODES:
        arch = paths.arch_for_mode(plan.dataset, mode)
        plan.suspects.append((mode, plan.file(arch, "attack-" + mode)[0], arch))
    for mode in QUERY_MODES:
        arch = paths.arch_for_mode(plan.dataset, mode)
        for kind in plan.preset["query_data"][1:]:
            plan.suspects.append((f"{mode} ({kind})", plan.file(arch, f"attack-{mode} ({kind})")[0], arch))
    plan.suspects += [("independent", path, arch) for path, arch in plan.independents]


def dataset_inference(plan):
    """With --method both, Dataset Inference's Blind Walk on every suspect (dataset_inference.py, one job:
    the regressor is fitted on the victim once), read by verify_suspects into the di and combined columns
    (constants.DI_COLUMNS). The preset's di_images, where it has them, set the images per side (di_sets)."""
    if plan.method != "both":
        return
    victim = plan.file(plan.victim_arch, "pos")[0]
    models = list(dict.fromkeys(path for _, path, _ in plan.suspects))
    params = ("--victim", victim, "--s", *models, "--out", plan.di_results, "--force")
    plan.add(Job("di", plan.di_results, "dataset_inference", params, (victim, *models), READS["di"], 10))  # after every suspect


FAMILIES = (embedding, models, independents, attacks, query_thieves, simulated_thefts, gradient_sets, classifiers, suspects,
            dataset_inference)
