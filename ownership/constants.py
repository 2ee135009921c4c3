"""The project's vocabularies and fixed values, defined once and imported everywhere.

MODES      the suspects of the paper's table, in its order [P, Table 1], plus multi-stage (ours:
           the distillation student fine-tuned on other data), and the controls benign and
           independent
ACCESSES   white-box: a WHITE_BOX feature, read with the model in hand (the paper: weight-gradient
           signs; fmnist: stylised-loss); black-box: prediction shifts only (MOVE)
COLUMNS    the verdicts reported for a suspect: each access's, and the baseline that needs no
           meta-classifier (the suspect's correctness on each stylised image, paired with the references')
WHITE_BOX  the white-box features, BLACK_BOX_FEATURES the black-box ones: the names of the registry
           ownership/features.py (what each computes, its file, the source of the choice)
QUERY_DATA the query thieves' data (label-query, logit-query): attacker (unlabelled images of the task's
           own distribution, the attacker's part, as Dataset Inference's thieves ask with TinyImages, from which
           CIFAR-10 was drawn) or natural (surrogate natural images outside the task: ownership/natural_images.py)
BLACK_BOX  the black-box meta-classifiers: per-arch (one per architecture) or any-arch (one over
           every architecture, for a suspect whose architecture is unknown, e.g. behind an API)
TESTS      the hypothesis tests of ownership/stats.py, by name
API_PROTOCOLS  the schemas a prediction API may speak (--api-protocol): move (ours, docs/API.md) or oip (the
           Open Inference Protocol, KServe v2: Triton, KServe, TorchServe, MLServer)
AMP        mixed-precision settings of the training steps (ownership.training.amp_dtype)
ALPHA      the significance level of a verdict [P, Sec. 5.1]
DI_NORMS   the norms of Dataset Inference's features, in the order of a feature row (Maini et al.,
           ICLR 2021, code: l_inf, l2, l1)
DI_FEATURES  Dataset Inference's features: blind-walk (black-box, top-1 labels only) or mingd (white-box)
METHODS    what reproduce.py --method verifies with: move (the MOVE columns, COLUMNS) or both (also DI_COLUMNS)
DI_COLUMNS the verdicts --method both adds: di (Dataset Inference, Blind Walk: black-box, top-1 labels) and
           combined (MOVE's black-box column or di, each at alpha / 2: Bonferroni,
           dataset_inference.combined_verdict)
"""
import os

from .features import names

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ATTACK_MODES = ("distillation", "zero-shot", "fine-tune", "label-query", "logit-query", "multi-stage")
SUSPECT_MODES = ("source",) + ATTACK_MODES           # the rows of a reproduction's table
MODES = SUSPECT_MODES + ("benign", "independent")     # what ownership_verification.py --mode takes
ACCESSES = ("white-box", "black-box")
COLUMNS = ACCESSES + ("baseline",)  # the verdicts of a results row: each access, and the baseline
WHITE_BOX = names("white-box")  # white-box features (ownership/features.py): the paper's, then ours
BLACK_BOX_FEATURES = names("black-box")  # black-box features: MOVE's, then ours
SIMULATED_THEFTS = ("distillation", "multi-stage")  # attacks the defender can run on itself (presets: thefts)
QUERY_MODES = ("label-query", "logit-query")  # the thieves that only query the victim with data of their own
QUERY_DATA = ("attacker", "natural")  # what they query with (presets: query_data; the first is the default)
BLACK_BOX = ("per-arch", "any-arch")  # which black-box meta-classifier: one per architecture, or one for all
TESTS = {"paired-all": "paired one-sided t-test against each benign reference, largest p",
         "paper": "paired one-sided t-test against the first reference (paper)",
         "spread": "model-level one-sided t-test against the benign references' means",
         "reference": "reference: Welch two-sided, harmonic mean of 40 draws"}
API_PROTOCOLS = ("move", "oip")
AMP = ("auto", "bf16", "none")
ALPHA = 0.01
DI_NORMS = ("linf", "l2", "l1")
DI_FEATURES = ("blind-walk", "mingd")
METHODS = ("move", "both")
DI_COLUMNS = ("di", "combined")
