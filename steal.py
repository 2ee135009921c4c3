"""Steal the victim: the five attacks of the paper (and a multi-stage one).

    python steal.py --mode distillation      # model/attack/atta-d-<attacker arch>.pt
    python steal.py --mode zero-shot         # atta-df-...   data-free (DFAD generator)
    python steal.py --mode fine-tune         # atta-finetune-<victim arch>.pt
    python steal.py --mode label-query       # atta-label-...
    python steal.py --mode logit-query       # atta-logit-...
    python steal.py --mode multi-stage       # atta-dft-...  the distillation student (atta-d-...), fine-tuned
                                             #               on other data labelled by the victim

The attacker's query and fine-tuning data is a part of the training set disjoint from the victim's.
Distillation uses the victim's own (mixed) training set, as in the paper's threat model. Budgets come
from --preset; each suspect's clean and stylised accuracy is stored in its checkpoint.

The defender's simulated thefts (positives and negatives of the black-box meta-classifiers, reproduce.py)
are these attacks run by the defender on its own data, with a seed of their own (--tag):

    python steal.py --mode distillation --victim model/benign/benign-wrn16-1.pt --arch wrn10-1 --tag theft \
        --out model/theft/benign-wrn16-1-d-wrn10-1.pt
    python steal.py --mode multi-stage --victim model/benign/benign-wrn16-1.pt --arch wrn10-1 --tag theft \
        --student model/theft/benign-wrn16-1-d-wrn10-1.pt --fine-tune-data victim-clean \
        --out model/theft/benign-wrn16-1-dft-wrn10-1.pt
"""
import time

from network import MODELS, get_model
from ownership import attacks, checkpoints, cli, paths, seeds
from ownership import distributed as dd
from ownership.checkpoints import load_model
from ownership.constants import ATTACK_MODES, QUERY_DATA, QUERY_MODES
from ownership.data import role_data
from ownership.errors import UserError
from ownership.presets import DATASETS
from ownership.training import save_trained


def get_parser():
    p = cli.Parser(__doc__)
    p.add_argument("--mode", required=True, choices=ATTACK_MODES)
    p.add_argument("--victim", default=None,
                   help="the teacher: victim checkpoint (default: model/victim/vict-<arch>.pt); the defender's simulated "
                        "thefts also steal from benign models")
    p.add_argument("--arch", default=None, choices=list(MODELS),
                   help="suspect architecture (default: the victim's for fine-tune, else the attackers')")
    p.add_argument("--out", default=None, help="checkpoint path (default: the reference naming)")
    p.add_argument("--student", default=None,
                   help="multi-stage: the distillation student to fine-tune (default: model/attack/atta-d-<arch>.pt)")
    p.add_argument("--fine-tune-data", default="attacker", choices=["attacker", "victim-clean"],
                   help="fine-tune and multi-stage's second stage: the attacker's part of the training set, or the "
                        "victim's clean part (the defender's own data, for simulated thefts)")
    p.add_argument("--query-data", default=None, choices=QUERY_DATA,
                   help="label-query and logit-query: what the thief queries the victim with, surrogate natural images "
                        "outside the task (scikit-image's sample photographs, ownership/natural_images.py) or the attacker's "
                        "part of the training set (default: the preset's first query_data; another kind is saved as "
                        "atta-<label|logit>-<arch>-<kind>.pt)")
    p.add_argument("--tag", default="",
                   help="a name mixed into the seed, so that a simulated theft never repeats the attack of the same "
                        "mode and architecture (default: none, the attack's own seed)")
    p.add_argument("--resume", action="store_true",
                   help="continue from <out>.state (saved after every epoch, or every --save-every zero-shot iterations)")
    p.add_argument("--save-every", type=int, default=10, help="zero-shot: save the resumable state every N iterations")
    return cli.add_common(cli.add_amp(p), dataset=False, preset=True)


def main(args):
    if args.save_every < 1:
        raise UserError(f"--save-every {args.save_every}: give a positive number of iterations")
    if args.student and args.mode != "multi-stage":
        raise UserError(f"--student is the first stage of --mode multi-stage; drop it for --mode {args.mode}")
    if args.fine_tune_data != "attacker" and args.mode not in ("fine-tune", "multi-stage"):
        raise UserError(f"--fine-tune-data is read by --mode fine-tune and multi-stage only, not --mode {args.mode}; "
                        f"drop it")
    if args.query_data and args.mode not in QUERY_MODES:
        raise UserError(f"--query-data is read by --mode {' and '.join(QUERY_MODES)} only, not --mode {args.mode}; drop it")
    preset = cli.preset_of(args)
    dataset = preset["dataset"]
    d = DATASETS[dataset]
    device = dd.setup(cli.get_device(args.gpu))
    victim_path = args.victim or paths.victim(args.model_dir, d["victim_arch"])
    victim, vck = load_model(victim_path, None, d["num_classes"], d["channels"], device, "victim model",
                             made_by=f"python train_model.py --role victim --preset {args.preset}")
    arch = args.arch or (vck["arch"] if args.mode == "fine-tune" else d["attacker_arch"])
    query_data = args.query_data or preset["query_data"][0]
    variant = query_data if args.mode in QUERY_MODES and query_data != preset["query_data"][0] else ""
    out = args.out or paths.attack(args.model_dir, args.mode, arch, variant)
    state = checkpoints.training_state(out, args.resume)
    kw = dict(state_path=state, amp=args.amp)
    seed = seeds.derive(args.seed, "attack", args.mode, arch, *[args.tag] * bool(args.tag))
    other = args.fine_tune_data  # the data role of the attacks that use other data than the victim's
    cli.seed_everything(seed)
    start = time.time()
    mode = args.mode
    cfg = preset["attacks"].get(mode)
    if mode == "fine-tune":
        model = attacks.fine_tune(victim, role_data(preset, args.data_dir, args.seed, other, args.gamma),
                                  dataset, cfg, device, seed, **kw)
    elif mode == "zero-shot":
        model = attacks.zero_shot(victim, get_model(arch, d["num_classes"], d["channels"]), d, cfg, device, seed,
                                  state_path=state, save_every=args.save_every, amp=args.amp)
    else:
        student = None if mode == "multi-stage" else get_model(arch, d["num_classes"], d["channels"])
        if mode == "distillation":
            role = "victim-mixed" if cfg.get("data", "victim") == "victim" else "attacker"
            model = attacks.distillation(victim, student, role_data(preset, args.data_dir, args.seed, role, args.gamma),
                                         dataset, cfg, device, seed, **kw)
        elif mode == "multi-stage":  # the distillation attack's student, then fine-tuned on the attacker's data
            first = args.student or paths.attack(args.model_dir, "distillation", arch)
            student, _ = load_model(first, arch, d["num_classes"], d["channels"], device, "distillation student",
                                    made_by=f"python steal.py --mode distillation --preset {args.preset}")
            cfg = preset["attacks"]["fine-tune"]
            model = attacks.fine_tune_student(victim, student, role_data(preset, args.data_dir, args.seed, other,
                                              args.gamma), dataset, cfg, device, seed, **kw)
        else:
            fn = attacks.label_query if mode == "label-query" else attacks.logit_query
            model = fn(victim, student, role_data(preset, args.data_dir, args.seed, query_data, args.gamma),
                       dataset, cfg, device, seed, **kw)
    return save_trained(model, out, state, preset=preset, data_dir=args.data_dir, seed=args.seed, gamma=args.gamma,
                        device=device, amp=args.amp, start=start, arch=arch, role="attack", mode=mode, init_seed=seed,
                        attack=cfg, victim=victim_path,
                        query_data=query_data if mode in QUERY_MODES else None, metrics=dict(victim_clean_acc=vck.get("metrics", {}).get("clean_acc")))


if __name__ == "__main__":
    cli.run(main, get_parser())
