"""Progress reporting: the trial's throttled progress file, the time-left arithmetic, and
the plain lines shown without a terminal."""

import io
import json

from dnas_cli.live_view import PlainLines, event_line
from dnas_core.engine.progress import Step, format_duration, time_left
from dnas_core.runner.progress import PROGRESS_FILE, ProgressWriter, read_progress
from dnas_core.runner.watch import Event, Snapshot, StageCounts, TrialView, experiment_left


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def step(done, total=40, batches=10, phase="search"):
    return Step(phase, f"chunk {(done - 1) // batches + 1}/4 weights", (done - 1) % batches + 1,
                batches, done, total)


def test_the_progress_file_is_written_at_most_twice_a_second(tmp_path):
    clock = Clock()
    writer = ProgressWriter(tmp_path, min_interval=0.5, clock=clock)
    writer.phase("data")
    assert writer.writes == 1 and read_progress(tmp_path).phase == "data"
    for done in range(1, 31):  # thirty steps in 0.29 s: only the first (a new phase) is written
        writer(step(done))
        clock.now += 0.01
    assert writer.writes == 2
    assert read_progress(tmp_path).batch == 1
    clock.now += 0.25  # 0.54 s after the last write
    writer(step(31))
    assert writer.writes == 3
    shown = read_progress(tmp_path)
    assert (shown.label, shown.batch, shown.batches, shown.fraction) == \
        ("chunk 4/4 weights", 1, 10, 31 / 40)
    for done in range(32, 41):  # the last step of the phase is written at once
        writer(step(done))
    assert writer.writes == 4 and read_progress(tmp_path).fraction == 1.0
    data = json.loads((tmp_path / PROGRESS_FILE).read_text())
    assert set(data) >= {"phase", "label", "batch", "batches", "fraction", "left", "updated"}
    assert not list(tmp_path.glob("*.tmp"))  # replaced atomically, nothing left over


def test_time_left_is_measured_from_the_first_step_of_a_phase(tmp_path):
    clock = Clock()
    writer = ProgressWriter(tmp_path, min_interval=0.5, clock=clock)
    writer(step(11))  # a resumed search starts at 11/40
    assert read_progress(tmp_path).left is None  # no rate yet
    clock.now += 6.0
    writer(step(17))  # 6 batches in 6 s: 23 left
    assert read_progress(tmp_path).left == 23.0
    clock.now += 1.0
    writer(step(2, total=20, batches=10, phase="train"))  # a new phase starts its own rate
    assert read_progress(tmp_path).left is None
    clock.now += 2.0
    writer(step(6, total=20, batches=10, phase="train"))  # 4 batches in 2 s: 14 left, 7 s
    assert read_progress(tmp_path).left == 7.0


def test_unreadable_progress_is_none(tmp_path):
    assert read_progress(tmp_path) is None
    (tmp_path / PROGRESS_FILE).write_text('{"phase": "sea')  # torn by hand, never by a writer
    assert read_progress(tmp_path) is None


def test_time_left_arithmetic():
    assert time_left(10.0, 0.25) == 30.0
    assert abs(time_left(10.0, 0.3, fraction_start=0.2) - 70.0) < 1e-9
    assert time_left(0.0, 0.5) is None and time_left(5.0, 0.2, 0.2) is None
    assert time_left(5.0, 1.0) == 0.0
    assert [format_duration(s) for s in (None, 0, 59.6, 61, 3725)] == \
        ["?", "0:00", "1:00", "1:01", "1:02:05"]


def test_experiment_left_shares_queued_work_over_the_slots():
    mean = {"supernets": 100.0, "architectures": 5.0}
    # two running (10 s, 20 s) and four architectures of 5 s waiting, on two slots
    assert experiment_left([10.0, 20.0], {"architectures": 4}, mean, slots=2) == 25.0
    # never less than the longest running trial
    assert experiment_left([60.0], {"architectures": 2}, mean, slots=4) == 60.0
    assert experiment_left([], {"supernets": 0, "architectures": 0}, mean, slots=1) == 0.0
    assert experiment_left([None, 3.0], {}, mean, slots=1) is None
    assert experiment_left([3.0], {"architectures": 1}, {"architectures": None}, 1) is None


def test_plain_lines_print_events_and_a_status_every_few_seconds():
    out = io.StringIO()
    lines = PlainLines(out, status_every=10.0)
    counts = {"supernets": StageCounts(total=1, done=1),
              "architectures": StageCounts(total=4, done=1, running=1, diverged=1)}
    view = TrialView("architectures/2", "architecture toy-1234 (search)", 3.0,
                     read_progress_like("train", "epoch 2/5", 3, 10, 0.26, 12.0))
    for elapsed in (1.0, 5.0, 10.5, 15.0, 20.6):
        lines.update(Snapshot(elapsed, counts, [view], "val logloss 0.4312 (...)", 75.0))
    lines.event(Event("finished", "architectures/1", "architecture toy-abcd (random)",
                      "val logloss 0.4312", 4.04, elapsed=20.7))
    lines.update(Snapshot(21.0, counts, [], "val logloss 0.4312 (...)", 0.0, final=True))
    printed = out.getvalue().splitlines()
    assert printed == [
        "[0:10] status: supernets 1/1, architectures 1/4 done; 1 running, 0 failed, 1 diverged;"
        " architectures/2 train epoch 2/5 26% (3/10 batches); best val logloss 0.4312 (...);"
        " elapsed 0:10, left 1:15",
        "[0:21] status: supernets 1/1, architectures 1/4 done; 1 running, 0 failed, 1 diverged;"
        " architectures/2 train epoch 2/5 26% (3/10 batches); best val logloss 0.4312 (...);"
        " elapsed 0:21, left 1:15",
        "[0:21] trial architectures/1 finished: architecture toy-abcd (random): "
        "val logloss 0.4312 in 4.0 s",
        "[0:21] status: supernets 1/1, architectures 1/4 done; 1 running, 0 failed, 1 diverged;"
        " best val logloss 0.4312 (...); elapsed 0:21, left 0:00"]  # the last, at once
    failed = Event("failed", "supernets/0", "supernet", message="failed: ValueError: bad",
                   elapsed=3.0)
    assert event_line(failed) == \
        "[0:03] trial supernets/0 failed: supernet (failed: ValueError: bad)"


def read_progress_like(phase, label, batch, batches, fraction, left):
    from dnas_core.runner.progress import TrialProgress

    return TrialProgress(phase, label, batch, batches, fraction, left)


class Recorder:
    def __init__(self):
        self.events, self.snapshots = [], []

    def event(self, event):
        self.events.append(event)

    def update(self, snapshot):
        self.snapshots.append(snapshot)


def test_the_monitor_reads_the_running_trials_progress_and_the_study(tmp_path, toy_registry):
    from dnas_core.runner.experiment import plan_experiment
    from dnas_core.runner.study import SUPERNETS, Studies, default_storage
    from dnas_core.runner.watch import Monitor

    plan = plan_experiment(toy_registry, plugin="toy")
    studies = Studies(default_storage(tmp_path), plan)
    claimed = studies.claim(SUPERNETS)
    frozen = studies.studies[SUPERNETS].get_trials(deepcopy=False)[claimed.number]
    clock, seen = Clock(), Recorder()
    monitor = Monitor(seen, studies, slots=1, clock=clock)
    monitor.trial_started("supernets/0", SUPERNETS, frozen, tmp_path / "t")
    (tmp_path / "t").mkdir()
    writer = ProgressWriter(tmp_path / "t", clock=clock)
    writer(step(1))
    clock.now += 4.0
    writer(step(5))  # 4 batches in 4 s: 35 s left
    monitor.tick()
    monitor.tick()  # too soon: no second snapshot
    (snapshot,) = seen.snapshots
    assert snapshot.elapsed == 4.0 and snapshot.stages["supernets"].running == 1
    (view,) = snapshot.trials
    assert (view.key, view.progress.label, view.progress.left) == \
        ("supernets/0", "chunk 1/4 weights", 35.0)
    assert snapshot.left is None  # how many architectures the supernet queues is unknown
    clock.now += 1.0
    monitor.trial_ended("supernets/0", "ok", 5.0, {"value": 0.61234,
                                                   "supernet_val": {"logloss": 0.61234}})
    monitor.trial_ended("supernets/0", "ok", 5.0, None)  # told twice: said once
    monitor.trial_started("supernets/1", SUPERNETS, frozen, tmp_path / "t")
    monitor.trial_ended("supernets/1", "failed", 2.0, None,
                        "exit 1\nTraceback ...\nValueError: the toy plugin crashes\n")
    assert [(e.kind, e.key, e.title, e.metric, e.message, e.elapsed) for e in seen.events] == [
        ("started", "supernets/0", "supernet", "", "", 0.0),
        ("finished", "supernets/0", "supernet", "supernet val logloss 0.6123", "", 5.0),
        ("started", "supernets/1", "supernet", "", "", 5.0),
        ("failed", "supernets/1", "supernet", "", "failed: ValueError: the toy plugin crashes",
         5.0)]


def test_reporting_changes_no_result_and_counts_every_batch(tmp_path):
    import torch

    from dnas_core.config.settings import OptimizerSettings, TrainSettings
    from dnas_core.engine.tasks import BinaryClassification
    from dnas_core.engine.training import train_sampled
    from tests.core.test_search import manager
    from tests.core.toy_plugin import ToySampled, make_data

    quiet = manager(tmp_path / "a")
    quiet_archs = quiet.run()
    steps = []
    watched = manager(tmp_path / "b")
    watched.reporter = steps.append
    assert [a.to_dict() for a in watched.run()] == [a.to_dict() for a in quiet_archs]
    torch.testing.assert_close(watched.supernet.op.theta, quiet.supernet.op.theta, rtol=0,
                               atol=0)
    assert [s.done for s in steps] == list(range(1, len(steps) + 1))  # every batch, in order
    assert steps[-1].done == steps[-1].total == quiet.step
    assert steps[0].label == f"chunk 1/{len(quiet.plan)} weights"

    def train(reporter):
        torch.manual_seed(3)
        settings = TrainSettings(epochs=2, batch_size=64,
                                 optimizer=OptimizerSettings("SGD", lr=0.2))
        return train_sampled(ToySampled("mlp", 16), make_data(1200, 1), BinaryClassification(),
                             settings, seed=1, device=torch.device("cpu"), reporter=reporter)

    seen = []
    assert train(seen.append).history == train(None).history
    assert [s.label for s in seen if "validation" in s.label] == \
        ["epoch 1/2 validation", "epoch 2/2 validation"]
    assert seen[-1].fraction == 1.0 and seen[0].phase == "train"


def test_dnas_train_draws_a_bar_only_on_a_terminal():
    from dnas_cli.live_view import step_bar

    with step_bar() as reporter:  # pytest's captured stderr is no terminal
        assert reporter is None


def test_an_architecture_id_keeps_its_space_and_six_hex_digits():
    from dnas_core.runner.watch import short_id

    assert short_id("emb_dim-5f2c907bba") == "emb_dim-5f2c90"  # was cut to "emb_dim-"
    assert short_id("toy-3ee8a1b2c3") == "toy-3ee8a1" and short_id("given") == "given"
