"""Live metrics: metrics.jsonl lines and TensorBoard event files, read back independently."""

import json
import struct

import pytest

from jaxmi.live import LiveLog, read_metrics, scalars


def read_events(directory):
    """Every scalar event in a TensorBoard log directory: [(tag, step, value)], parsed from the
    TFRecord framing (u64 length, u32 crc, payload, u32 crc) with the Event protobuf schema."""
    from tensorboardX.proto import event_pb2

    out = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            payload = data[pos + 12:pos + 12 + length]
            pos += 12 + length + 4
            event = event_pb2.Event.FromString(payload)
            for v in event.summary.value:
                out.append((v.tag, event.step, v.simple_value))
    return out


MI = {"kde_upper": {"clean": {"I_XT": {"conv1": 3.5, "fc3": 2.25}, "I_TY": {"conv1": 1.0, "fc3": None}}}}


def test_lines_and_tensorboard_scalars(tmp_path):
    live = LiveLog(tmp_path, ("nt", "at"))
    live.write("nt", 0, 0, {"test_clean_acc": 0.1}, MI, measure_seconds=1.5)
    live.write("nt", 1, 0, {"test_clean_acc": 0.9}, MI, epoch_seconds=2.0)
    live.write("nt", 1, 1, {"test_clean_acc": 0.8}, None)
    live.close()
    lines = read_metrics(tmp_path)
    assert [(r["regime"], r["epoch"], r["seed"]) for r in lines] == [("nt", 0, 0), ("nt", 1, 0), ("nt", 1, 1)]
    assert lines[0]["measure_seconds"] == 1.5 and lines[1]["epoch_seconds"] == 2.0
    assert lines[1]["mi"]["kde_upper"]["clean"]["I_TY"]["fc3"] is None and "mi" not in lines[2]
    events = read_events(tmp_path / "tensorboard" / "nt")
    assert ("metrics/test_clean_acc", 1, pytest.approx(0.9)) in events
    assert ("I_XT/clean/kde_upper/fc3", 0, 2.25) in events
    assert not any(tag == "I_TY/clean/kde_upper/fc3" for tag, *_ in events)  # None is not a value
    assert read_events(tmp_path / "tensorboard" / "nt_seed1") == [("metrics/test_clean_acc", 1, pytest.approx(0.8))]
    assert scalars(lines[1])["I_XT/clean/kde_upper/conv1"] == 3.5


def test_resume_drops_the_lines_after_the_checkpoint(tmp_path):
    live = LiveLog(tmp_path, ("nt", "at"))
    for regime, epoch in [("nt", 0), ("nt", 1), ("nt", 2), ("at", 0), ("at", 1)]:
        live.write(regime, epoch, 0, {"train_acc": epoch / 10}, None)
    live.close()
    again = LiveLog(tmp_path, ("nt", "at"), resume=("nt", 1))
    assert [(r["regime"], r["epoch"]) for r in read_metrics(tmp_path)] == [("nt", 0), ("nt", 1)]
    again.write("nt", 2, 0, {"train_acc": 0.5}, None)
    again.close()
    lines = read_metrics(tmp_path)
    assert [(r["regime"], r["epoch"], r["metrics"]["train_acc"]) for r in lines][-1] == ("nt", 2, 0.5)
    # a new run (no checkpoint to resume from) starts the file afresh
    LiveLog(tmp_path, ("nt", "at")).close()
    assert read_metrics(tmp_path) == []
    with pytest.raises(ValueError, match="unknown regime"):
        LiveLog(tmp_path, ("nt", "at")).write("xx", 0, 0, {}, None)


def test_purge_step_marks_the_restart(tmp_path):
    """The resumed writer opens with purge_step = the first epoch it writes again, the
    event TensorBoard uses to hide the interrupted attempt's later steps."""
    from tensorboardX.proto import event_pb2

    live = LiveLog(tmp_path, ("nt", "at"), resume=None)
    live.write("nt", 0, 0, {"a": 1.0}, None)
    live.close()
    resumed = LiveLog(tmp_path, ("nt", "at"), resume=("nt", 0))
    resumed.write("nt", 1, 0, {"a": 2.0}, None)
    resumed.close()
    files = sorted((tmp_path / "tensorboard" / "nt").glob("events.out.tfevents.*"))
    assert len(files) == 2
    # both attempts can open within the same second, so the file names (second + random
    # suffix) do not order them: read every file and tell them apart by their scalars
    starts, scalars = [], []
    for path in files:
        data = path.read_bytes()
        file_starts, file_scalars = [], []
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            if event.HasField("session_log"):
                file_starts.append((event.session_log.status, event.step))
            if event.HasField("summary"):
                file_scalars.extend((event.step, v.simple_value) for v in event.summary.value)
        starts.append(file_starts)
        scalars.append(file_scalars)
    resumed_file = [i for i, s in enumerate(scalars) if any(v == 2.0 for _, v in s)]
    assert len(resumed_file) == 1
    (i,) = resumed_file
    assert (event_pb2.SessionLog.START, 1) in starts[i]
    assert all(step != 1 for _, step in starts[1 - i])  # the first attempt marks no restart at 1
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["metrics"] == {"a": 2.0}
