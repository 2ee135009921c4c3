"""ownership.paths: the held-out references are found in numeric order, never a training model."""
from ownership import paths


def test_references_in_order(tmp_path):
    folder = tmp_path / "benign"
    folder.mkdir()
    for tag in ["", "-s1", "-ref10", "-ref2", "-ref", "-refx"]:
        (folder / f"benign-wrn10-1{tag}.pt").write_bytes(b"")
    (folder / "benign-wrn16-1-ref.pt").write_bytes(b"")
    found = [p.split("/")[-1] for p in paths.references(str(tmp_path), "wrn10-1")]
    assert found == ["benign-wrn10-1-ref.pt", "benign-wrn10-1-ref2.pt", "benign-wrn10-1-ref10.pt"]
    assert paths.references(str(tmp_path / "nowhere"), "wrn10-1") == []


def test_weak_models_and_seeds_are_separate(tmp_path):
    folder = tmp_path / "benign"
    folder.mkdir()
    for tag in ["", "-s1", "-s2", "-weak2", "-weak1", "-ref", "-weakx"]:
        (folder / f"benign-wrn10-1{tag}.pt").write_bytes(b"")
    names = lambda ps: [p.split("/")[-1] for p in ps]  # noqa: E731
    assert names(paths.weak_models(str(tmp_path), "wrn10-1")) == ["benign-wrn10-1-weak1.pt", "benign-wrn10-1-weak2.pt"]
    assert paths.benign(str(tmp_path), "wrn10-1", paths.weak_tag(1)).endswith("benign-wrn10-1-weak1.pt")
    assert names(paths.with_seeds(paths.benign(str(tmp_path), "wrn10-1"))) == [
        "benign-wrn10-1.pt", "benign-wrn10-1-s1.pt", "benign-wrn10-1-s2.pt"]
    assert not set(names(paths.references(str(tmp_path), "wrn10-1"))) & set(
        names(paths.weak_models(str(tmp_path), "wrn10-1")))


def test_thefts_by_teacher_and_student_arch(tmp_path):
    """The simulated thefts are found by the student's architecture and the teacher's role: a victim's
    students are never negatives, a benign model's never positives, another architecture's never either."""
    for teacher in ("vict-wrn16-1", "benign-wrn16-1"):
        for arch in ("wrn10-1", "wrn16-1"):
            for mode in ("distillation", "multi-stage"):
                path = paths.theft(str(tmp_path), f"model/x/{teacher}.pt", mode, arch)
                (tmp_path / "theft").mkdir(exist_ok=True)
                open(path, "w").close()
    names = lambda ps: [p.split("/")[-1] for p in ps]  # noqa: E731
    assert names(paths.thefts(str(tmp_path), "wrn10-1", "victim")) == ["vict-wrn16-1-d-wrn10-1.pt",
                                                                      "vict-wrn16-1-dft-wrn10-1.pt"]
    assert names(paths.thefts(str(tmp_path), "wrn16-1", "benign")) == ["benign-wrn16-1-d-wrn16-1.pt",
                                                                      "benign-wrn16-1-dft-wrn16-1.pt"]
    assert paths.thefts(str(tmp_path / "nowhere"), "wrn10-1", "victim") == []


def test_train_clf_defaults_take_thefts_in_black_box_only(tmp_path):
    """train_clf.py's default models: the simulated thefts join the black-box classifier (victim's students
    as positives, a benign model's as negatives), never the white-box one, and never a held-out reference."""
    import train_clf
    for folder, stem in (("victim", "vict-wrn10-1"), ("benign", "benign-wrn10-1")):
        (tmp_path / folder).mkdir()
        for tag in ["", "-s1"] + (["-ref", "-weak1"] if folder == "benign" else []):
            (tmp_path / folder / f"{stem}{tag}.pt").write_bytes(b"")
    (tmp_path / "theft").mkdir()
    for teacher in ("vict-wrn16-1", "benign-wrn16-1"):
        for mode in ("distillation", "multi-stage"):
            open(paths.theft(str(tmp_path), f"{teacher}.pt", mode, "wrn10-1"), "w").close()
    names = lambda ps: [p.split("/")[-1] for p in ps]  # noqa: E731
    for access in ("white-box", "black-box"):
        args = train_clf.get_parser().parse_args(["--access", access, "--type", "wrn10-1", "--model-dir", str(tmp_path)])
        pos, neg = train_clf.default_models(args)
        black = access == "black-box"
        assert names(pos) == ["vict-wrn10-1.pt", "vict-wrn10-1-s1.pt"] + black * [
            "vict-wrn16-1-d-wrn10-1.pt", "vict-wrn16-1-dft-wrn10-1.pt"], access
        assert names(neg) == ["benign-wrn10-1.pt", "benign-wrn10-1-s1.pt"] + black * [
            "benign-wrn10-1-weak1.pt", "benign-wrn16-1-d-wrn10-1.pt", "benign-wrn16-1-dft-wrn10-1.pt"], access
