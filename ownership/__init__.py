"""Library behind the scripts: ownership verification by embedded external features (Li et al., AAAI 2022).

presets      datasets and hyperparameter presets
paths        the on-disk naming rules (model/victim/vict-<arch>.pt, gradients_set/<model>/<data>/g_f.npy ...)
data         datasets as in-memory uint8 tensors, batched augmentation, disjoint splits, image folders
checkpoints  atomic save and safe (weights_only) load
training     the one training loop (CE or distillation targets, the Dataset-Inference schedule)
style        Gatys style transfer that embeds the external feature
attacks      the stealing attacks
gradients    per-sample gradients and the reference's reduction rule
metaclf      the ownership meta-classifier
stats        the paper's one-sided paired t-test and the reference protocol
cli          shared flags, device choice and one-line errors
"""
