"""Restricted unpickling, the MAHNOB-HCI and DEAP loaders, and the synthetic face-and-pulse videos."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pytest

from facet_vlm.data.deap import DEAP_CHANNELS, deap_channel, load_deap, load_deap_subject
from facet_vlm.data.mahnob import load_mahnob, subject_folds
from facet_vlm.data.safe_pickle import restricted_load
from facet_vlm.data.synthetic_video import generate_videos
from facet_vlm.errors import ConfigError, DatasetLayoutError, FormatError, UnsafePickleError
from facet_vlm.physio import heart_rate, pos, read_video, write_video


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _deap_dict(rng, trials=40, samples=256):
    return {"data": rng.normal(size=(trials, len(DEAP_CHANNELS), samples)),
            "labels": rng.uniform(1, 9, size=(trials, 4))}


def test_restricted_load_reads_a_deap_shaped_pickle(tmp_path):
    rng = np.random.default_rng(0)
    content = _deap_dict(rng)
    path = tmp_path / "s01.dat"
    path.write_bytes(pickle.dumps(content, protocol=2))
    loaded = restricted_load(path)
    np.testing.assert_array_equal(loaded["data"], content["data"])
    np.testing.assert_array_equal(loaded["labels"], content["labels"])
    subject = load_deap_subject(path)
    assert subject["data"].shape == (40, 40, 256) and subject["labels"].shape == (40, 4)


def test_restricted_load_refuses_code_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.dat"
    path.write_bytes(pickle.dumps({"data": _RunsCode(marker)}, protocol=2))
    with pytest.raises(UnsafePickleError, match="system") as error:
        restricted_load(path)
    assert "evil.dat" in str(error.value)
    assert not marker.exists()
    eval_pickle = tmp_path / "eval.dat"
    eval_pickle.write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        restricted_load(eval_pickle)
    garbage = tmp_path / "garbage.dat"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(FormatError, match="garbage.dat"):
        restricted_load(garbage)
    wrong = tmp_path / "wrong.dat"
    wrong.write_bytes(pickle.dumps({"data": np.zeros((2, 3, 4)), "labels": np.zeros((2, 4))}, protocol=2))
    with pytest.raises(FormatError, match="trials, 40"):
        load_deap_subject(wrong)


@pytest.fixture(scope="module")
def mahnob_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mahnob")
    videos = generate_videos(root, subjects=2, trials_per_subject=2, fps=30, seconds=6, size=40, seed=4)
    return root, videos


def test_load_mahnob_reads_the_generated_layout(mahnob_root):
    root, videos = mahnob_root
    dataset = load_mahnob(root, reference_hr=True)
    assert len(dataset) == len(videos)
    for row, video in zip(dataset, videos):
        assert row["subject"] == video.subject and row["session"] == video.session
        assert (row["valence"], row["arousal"]) == (video.valence, video.arousal)
        assert row["valence_high"] == int(video.valence > 5) and row["arousal_high"] == int(video.arousal > 5)
        assert row["emotion"] == video.emotion
        assert "C1 trigger" in row["video_path"] and row["bdf_path"].endswith("_emotion.bdf")
        assert abs(row["ecg_hr_bpm"] - video.hr_bpm) < 2.0
    frames, fps = read_video(dataset[0]["video_path"])
    assert fps == pytest.approx(videos[0].fps)
    # The colour video is stored losslessly when FFV1 is available, so the pulse survives the file.
    assert abs(heart_rate(pos(frames, fps), fps) - videos[0].hr_bpm) < 3.0


def test_load_mahnob_match_rule_and_errors(tmp_path, mahnob_root):
    source, videos = mahnob_root
    root = tmp_path / "copy"
    shutil.copytree(source, root)
    first = root / "Sessions" / str(videos[0].session)
    write_video(first / "P1-Rec1-2009.07.09.17.53.46_C2 _C2.avi", videos[0].frames[:3], 30)  # another camera
    unrated = root / "Sessions" / "999"
    unrated.mkdir()
    (unrated / "session.xml").write_text('<session sessionId="999"><subject id="1"/></session>')
    with pytest.warns(UserWarning, match="skipped 1 session"):
        dataset = load_mahnob(root)
    assert len(dataset) == len(videos) and "C1 trigger" in dataset[0]["video_path"]

    (unrated / "session.xml").write_text('<session feltVlnc="3" feltArsl="4"></session>')
    with pytest.raises(FormatError, match="subject"):
        load_mahnob(root)
    (unrated / "session.xml").write_text("<session")
    with pytest.raises(FormatError, match="XML"):
        load_mahnob(root)
    (unrated / "session.xml").unlink()
    with pytest.raises(DatasetLayoutError, match="session.xml"):
        load_mahnob(root)
    with pytest.raises(DatasetLayoutError, match="Sessions"):
        load_mahnob(tmp_path / "nowhere")


def test_load_deap_reads_a_generated_layout(tmp_path):
    rng = np.random.default_rng(1)
    ratings = ["Participant_id,Trial,Experiment_id,Start_time,Valence,Arousal,Dominance,Liking,Familiarity"]
    frames = np.full((4, 16, 16, 3), 128, np.uint8)
    for participant in (1, 2):
        (tmp_path / "face_video" / f"s{participant:02d}").mkdir(parents=True)
        for trial in (1, 2, 3):
            experiment = 4 - trial
            ratings.append(f"{participant},{trial},{experiment},0,{2 * trial + participant},{9 - trial},5,5,3")
            if trial < 3:  # trial 3 has no face video
                write_video(tmp_path / "face_video" / f"s{participant:02d}" / f"s{participant:02d}_trial{trial:02d}"
                            f".avi", frames, 30)
    (tmp_path / "metadata_csv").mkdir()
    (tmp_path / "metadata_csv" / "participant_ratings.csv").write_text("\n".join(ratings) + "\n")
    (tmp_path / "data_preprocessed_python").mkdir()
    content = _deap_dict(rng, trials=40, samples=3 * 128 + 64)
    (tmp_path / "data_preprocessed_python" / "s01.dat").write_bytes(pickle.dumps(content, protocol=2))

    with pytest.warns(UserWarning, match="skipped 2 trial"):
        dataset = load_deap(tmp_path)
    assert len(dataset) == 4 and set(dataset["subject"]) == {"1", "2"}
    row = dataset[0]
    assert (row["trial"], row["experiment_id"], row["dat_index"]) == (1, 3, 2)
    assert row["valence"] == 3.0 and row["valence_high"] == 0 and row["arousal_high"] == 1
    assert row["dat_path"].endswith("s01.dat") and dataset[2]["dat_path"] is None
    subject = load_deap_subject(row["dat_path"])
    pulse = deap_channel(subject, row["dat_index"])
    np.testing.assert_allclose(pulse, content["data"][2, DEAP_CHANNELS.index("Plethysmograph"), 3 * 128:],
                               rtol=1e-6)
    assert len(load_deap(tmp_path, require_video=False)) == 6

    (tmp_path / "metadata_csv" / "participant_ratings.csv").write_text("Participant_id,Trial\n1,1\n")
    with pytest.raises(DatasetLayoutError, match="Valence"):
        load_deap(tmp_path)


def test_subject_folds_keep_subjects_apart():
    pytest.importorskip("facet_vlm.data.folds")
    subjects = ["1", "1", "2", "2", "3", "3", "4"]
    for protocol in ("loso", "kfold"):
        folds = subject_folds(subjects, protocol=protocol, k=2)
        assert folds
        covered = []
        for train, test in folds:
            assert not {subjects[i] for i in train} & {subjects[i] for i in test}
            covered.extend(test.tolist())
        assert sorted(covered) == list(range(len(subjects)))


def test_synthetic_videos_follow_their_labels():
    videos = generate_videos(subjects=3, trials_per_subject=4, fps=20, seconds=3, size=32, seed=7)
    assert len(videos) == 12 and {v.subject for v in videos} == {"1", "2", "3"}
    for video in videos:
        assert video.frames.shape == (60, 32, 32, 3) and video.frames.dtype == np.uint8
        assert 1 <= video.valence <= 9 and 1 <= video.arousal <= 9 and video.valence != 5 != video.arousal
        assert video.hr_curve.shape == (60,) and abs(video.hr_curve.mean() - video.hr_bpm) < 3.0
    for subject in ("1", "2", "3"):
        trials = [v for v in videos if v.subject == subject]
        assert {v.valence > 5 for v in trials} == {True, False} and {v.arousal > 5 for v in trials} == {True, False}
        # Within a subject, higher arousal means a higher heart rate.
        ordered = sorted(trials, key=lambda v: v.arousal)
        assert ordered[-1].hr_bpm > ordered[0].hr_bpm
    # Same seed, same data.
    again = generate_videos(subjects=1, trials_per_subject=1, fps=20, seconds=3, size=32, seed=7)[0]
    np.testing.assert_array_equal(again.frames, videos[0].frames)


def _carrier_set(carrier: str):
    # 20 s = whole periods of both heart-rate oscillations, so a clip's mean heart rate is its set rate.
    return generate_videos(subjects=4, trials_per_subject=8, fps=5, seconds=20, size=16, seed=11, carrier=carrier)


def _agreement(videos) -> float:
    """Share of clips whose shown expression's arousal sign matches the arousal label."""
    return float(np.mean([(v.expression[1] > 0) == (v.arousal > 5) for v in videos]))


def test_pulse_carrier_puts_arousal_in_the_pulse_only():
    """"pulse": the heart rate rises and its variability falls with arousal on each subject's own baseline, and the
    face shows an expression unrelated to the ratings."""
    videos = _carrier_set("pulse")
    for subject in {v.subject for v in videos}:
        trials = [v for v in videos if v.subject == subject]
        high = [v for v in trials if v.arousal > 5]
        low = [v for v in trials if v.arousal <= 5]
        assert min(v.hr_bpm for v in high) > max(v.hr_bpm for v in low)
        assert max(v.hrv for v in high) < min(v.hrv for v in low)
    assert _agreement(videos) < 0.8  # chance-like; the "both" set agrees on every clip
    assert _agreement(_carrier_set("both")) == 1.0


def test_face_carrier_keeps_the_pulse_at_baseline():
    """"face": the expression follows the arousal and the pulse does not (same heart rate and variability for every
    trial of a subject, whatever its label)."""
    videos = _carrier_set("face")
    assert _agreement(videos) == 1.0
    for subject in {v.subject for v in videos}:
        trials = [v for v in videos if v.subject == subject]
        assert np.ptp([v.hrv for v in trials]) == 0.0
        assert np.ptp([v.hr_bpm for v in trials]) < 0.5
    rates = {v.subject: round(v.hr_bpm) for v in videos}
    assert len(set(rates.values())) > 1  # subjects keep different baselines


def test_unknown_carrier_is_refused(tmp_path):
    from facet_vlm.data.prepare import synthetic_video_root

    with pytest.raises(ConfigError, match="carrier must be one of"):
        generate_videos(subjects=1, trials_per_subject=1, seconds=1, size=16, carrier="voice")
    with pytest.raises(ConfigError, match="synthetic_carrier"):
        synthetic_video_root(tmp_path, 4, 0, "voice")
    assert synthetic_video_root(tmp_path, 4, 0, "pulse") != synthetic_video_root(tmp_path, 4, 0, "both")


def test_synthetic_options_set_the_generated_videos_and_their_folder(tmp_path):
    """``--synthetic_options`` reach `generate_videos` (here: clips per person and their length), name their own
    cache folder, and an option the video generator does not take is refused by name."""
    from accelerate import Accelerator

    from facet_vlm.arguments import parse_args
    from facet_vlm.data.prepare import generate_data, synthetic_video_root

    options = {"trials_per_subject": 3, "seconds": 1.0, "size": 16}
    model_args, data_args, _ = parse_args(["--model", "physio_prompt", "--dataset", "synthetic",
                                           "--synthetic_subjects", "2", "--cache_dir", str(tmp_path),
                                           "--synthetic_options", json.dumps(options)])
    folder = generate_data(model_args, data_args, Accelerator(cpu=True))
    assert folder == synthetic_video_root(tmp_path, 2, 0, "both", options)
    assert folder != synthetic_video_root(tmp_path, 2, 0, "both")
    index = load_mahnob(folder)
    assert sorted(index["subject"]) == ["1", "1", "1", "2", "2", "2"]
    frames, fps = read_video(index["video_path"][0])
    assert frames.shape == (30, 16, 16, 3) and fps == 30.0

    data_args.synthetic_options = {"trials_per_subject": 3, "vertices": 3000}
    with pytest.raises(ConfigError, match="vertices"):
        generate_data(model_args, data_args, Accelerator(cpu=True))


def test_physio_benchmark_arms_share_the_config_and_change_one_thing():
    """Each arm of `bench.py physio` reads the small training config and changes only the carrier and its switch."""
    from facet_vlm.arguments import parse_args
    from facet_vlm.benchmarks.physio import ARMS, DEFAULT_CONFIG, arm_argv

    base_model, base_data, _ = parse_args(["--config", DEFAULT_CONFIG])
    for arm, spec in ARMS.items():
        model_args, data_args, _ = parse_args(arm_argv(DEFAULT_CONFIG, arm))
        assert data_args.synthetic_carrier == spec["carrier"], arm
        assert (data_args.synthetic_subjects, data_args.folds, data_args.protocol) == (
            base_data.synthetic_subjects, base_data.folds, base_data.protocol)
        merged, base = (c if isinstance(c, dict) else json.loads(c)
                        for c in (model_args.model_config, base_model.model_config))
        assert merged == {**base, **spec["model_config"]}, arm
    assert base_model.label_set == "arousal" and base_data.synthetic_carrier == "both"


def test_physio_report_shows_each_probed_feature_set_and_reads_older_results():
    """The report has one identity column per probed feature set; a probe row written before `features` existed
    shows its `video_embeds` number and a dash for the shared code."""
    from facet_vlm.benchmarks.physio import PROBE_FEATURES, render_physio_report

    arm = {"arm": "both", "carrier": "both", "override": {}, "accuracy": 89.06, "accuracy_std": 8.41,
           "accuracy_per_fold": [96.9, 90.6, 75.0, 93.8], "macro_f1": 88.9, "macro_f1_std": 8.6, "wall_s": 389,
           "subjects": 16, "clips": 128, "folds": 4, "label_set": "arousal"}
    new = {"arm": "both", "identity_accuracy": 95.83, "identity_accuracy_std": 2.95, "chance": 8.33,
           "subjects": 12, "clips": 96, "features": {"video_embeds": {"accuracy": 95.83, "accuracy_std": 2.95},
                                                    "shared_code": {"accuracy": 91.67, "accuracy_std": 2.95}}}
    old = {key: value for key, value in new.items() if key != "features"} | {"arm": "old run"}
    report = render_physio_report({"config": "c.json", "threads": 1, "arms": [arm], "probe": [new, old]})
    header = next(line for line in report.splitlines() if line.startswith("| arm | identity"))
    assert [f"`{name}`" in header for name in PROBE_FEATURES] == [True, True]
    assert "| both | 95.83 ± 2.95 | 91.67 ± 2.95 | 8.33 | 12 | 96 |" in report
    assert "| old run | 95.83 ± 2.95 | — | 8.33 | 12 | 96 |" in report
    assert "never saw" not in report
    unseen = new | {"chance": 25.0, "subjects": 4, "clips": 32, "probed_subjects": "test",
                    "features": {"video_embeds": {"accuracy": 90.62, "accuracy_std": 5.41},
                                 "shared_code": {"accuracy": 59.38, "accuracy_std": 10.83}}}
    both = render_physio_report({"config": "c.json", "threads": 1, "arms": [arm], "probe": [new],
                                 "probe_unseen": [unseen]}).splitlines()
    captions = [i for i, line in enumerate(both) if line.startswith("Subject-identity probe")]
    assert len(captions) == 2 and "never saw" in both[captions[1]] and "adversary saw" in both[captions[0]]
    assert both.index("| both | 90.62 ± 5.41 | 59.38 ± 10.83 | 25.00 | 4 | 32 |") > captions[1]


def test_the_shared_identity_probe_reads_people_apart_only_where_they_differ():
    """`probes.identity_cv_scores` (the probe of the compare, physio and physio-readout benchmarks): people set apart
    by their own offsets are told apart on every split, people whose clips are noise alone near chance; a person
    with a single clip cannot be held out and is refused."""
    from facet_vlm.benchmarks.probes import identity_cv_scores

    rng = np.random.default_rng(0)
    people = np.repeat(np.arange(6), 8).astype(str)
    offsets = rng.normal(0, 5, (6, 10))[people.astype(int)]
    noise = rng.normal(0, 1, (48, 10))
    assert identity_cv_scores(offsets + noise, people, 4).min() == 1.0
    assert identity_cv_scores(noise, people, 4).mean() < 0.4  # chance 1/6
    assert len(identity_cv_scores(noise, people, 10)) == 8  # at most the fewest clips of a person
    with pytest.raises(ConfigError, match="at least 2 clips"):
        identity_cv_scores(noise[:9], people[:9], 4)


def test_person_centred_readout_removes_each_persons_offset_and_keeps_the_label():
    """Features = a large per-person offset + a small label direction + noise, with unseen people's offsets outside
    the training people's: the plain read-out is fooled by the offsets, the per-person centred one reads the label,
    and the identity probe reads the people before centring and cannot after."""
    from facet_vlm.benchmarks.physio_readout import centre_per_person, person_centred_readout

    rng = np.random.default_rng(0)
    people, clips, dims = 12, 8, 6
    subjects = np.repeat([f"p{i}" for i in range(people)], clips)
    labels = np.tile([0, 1], people * clips // 2)
    offsets = rng.normal(0, 1, (people, dims)) * 4
    offsets[8:, 0] += np.where(np.arange(4) % 2, 6.0, -6.0)  # unseen people sit far along the label axis
    features = offsets[np.repeat(np.arange(people), clips)] + 1.5 * labels[:, None] * np.eye(dims)[0]
    features += rng.normal(0, 0.3, features.shape)
    centred = centre_per_person(features, subjects)
    for person in np.unique(subjects):
        assert np.allclose(centred[subjects == person].mean(axis=0), 0.0)
    result = person_centred_readout(features, labels, subjects, [f"p{i}" for i in range(8)],
                                    [f"p{i}" for i in range(8, 12)])
    assert result["accuracy_centred"] > 95.0 and result["accuracy"] < 80.0
    assert result["identity"] > 90.0 and result["identity_centred"] < 50.0 and result["identity_chance"] == 25.0
    with pytest.raises(ConfigError, match="training and test people"):
        person_centred_readout(features, labels, subjects, ["p0"], ["nobody"])
    with pytest.raises(ConfigError, match="person ids"):
        centre_per_person(features, subjects[:-1])


def test_projecting_off_the_training_peoples_identity_reaches_only_the_directions_they_differ_in():
    """Training people differ along the first 4 of 16 dimensions. Unseen people who differ along the same
    dimensions cannot be told apart once the training people's identity is erased; unseen people who differ along
    dimensions the training people share are told apart as well as before, and as well as after removing as many
    random directions."""
    from facet_vlm.benchmarks.physio_readout import person_centred_readout, project_off_training_identity

    rng = np.random.default_rng(1)
    train_people, test_people, clips, dims = 8, 4, 8, 16
    subjects = np.repeat([f"p{i}" for i in range(train_people + test_people)], clips)
    labels = np.tile([0, 1], len(subjects) // 2)
    train_ids, test_ids = [f"p{i}" for i in range(train_people)], [f"p{i}" for i in range(train_people, 12)]
    for unseen_dims, expect_erased in ((slice(0, 4), True), (slice(12, 16), False)):
        offsets = np.zeros((train_people + test_people, dims))
        offsets[:train_people, :4] = rng.normal(0, 3, (train_people, 4))
        offsets[train_people:, unseen_dims] = rng.normal(0, 3, (test_people, 4))
        features = offsets[np.repeat(np.arange(train_people + test_people), clips)]
        features = features + rng.normal(0, 0.3, features.shape)
        projected, rank, training_identity = project_off_training_identity(features, subjects, train_ids)
        assert 4 <= rank < dims and projected.shape == features.shape and training_identity <= 100 / 8 + 5
        result = person_centred_readout(features, labels, subjects, train_ids, test_ids)
        assert result["identity"] > 90.0 and result["projected_rank"] == rank
        if expect_erased:
            assert result["identity_projected"] < 50.0 < result["identity_random_projected"]
        else:
            assert result["identity_projected"] > 90.0 and result["identity_random_projected"] > 90.0
    with pytest.raises(ConfigError, match="at least 2"):
        project_off_training_identity(features, subjects, ["p0"])
