"""Multi-worker training over real gRPC between two local processes."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import make_sentiment_rows, write_rows
from tf_finetune import config as config_lib, distribution, training

# Each worker: 16 examples per step on its one CPU; together 32 per step.
_WORKER_FLAGS = [
    "--max_seq_length=32",
    "--batch_size=16",
    "--epochs=2",
    "--learning_rate=3e-3",
    "--pooling=mean",
    "--dropout=0",
    "--early_stopping_patience=0",
    "--log_every_steps=1",
    "--save_every_steps=1",
    "--precision=fp32",
    "--noexport",
]


def _free_ports(count):
  sockets = []
  try:
    for _ in range(count):
      sock = socket.socket()
      sock.bind(("127.0.0.1", 0))
      sockets.append(sock)
    return [sock.getsockname()[1] for sock in sockets]
  finally:
    for sock in sockets:
      sock.close()


def _start_workers(args, count, tmp_path):
  """Starts `count` train binaries as one cluster; returns (processes, logs)."""
  addresses = [f"127.0.0.1:{port}" for port in _free_ports(count)]
  processes, logs = [], []
  for index in range(count):
    tf_config = {
        "cluster": {"worker": addresses},
        "task": {"type": "worker", "index": index},
    }
    log = open(tmp_path / f"worker{index}.log", "w+")
    logs.append(log)
    processes.append(
        subprocess.Popen(
            [sys.executable, "-m", "tf_finetune.train", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            # One CPU device per worker, no GPU.
            env=dict(
                os.environ,
                TF_CONFIG=json.dumps(tf_config),
                CUDA_VISIBLE_DEVICES="",
            ),
        )
    )
  return processes, logs


def _wait_all(processes, logs, *, timeout=240):
  """Waits for the workers to end; returns their logs."""
  deadline = time.time() + timeout
  try:
    for process in processes:
      process.wait(timeout=max(1, deadline - time.time()))
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
        process.wait()
  outputs = []
  for log in logs:
    log.seek(0)
    outputs.append(log.read())
    log.close()
  return outputs


def _kill_when_logged(processes, logs, marker, *, timeout=240):
  """SIGKILLs worker 1 once the chief logged `marker`, then the chief (it
  cannot go on alone)."""
  deadline = time.time() + timeout
  chief_log = logs[0].name
  while marker not in open(chief_log).read():
    assert time.time() < deadline, f"{marker!r} was not logged in time"
    assert processes[0].poll() is None, open(chief_log).read()[-3000:]
    time.sleep(0.2)
  processes[1].send_signal(signal.SIGKILL)
  processes[1].wait()
  processes[0].send_signal(signal.SIGKILL)
  _wait_all(processes, logs)
  assert [process.returncode for process in processes] == [-9, -9]


@pytest.fixture
def small_files(tmp_path):
  # 100 examples at 32 per step: 3 full steps and one of 4 per epoch.
  return {
      split: write_rows(
          str(tmp_path / f"{split}.csv"), make_sentiment_rows(count, seed=seed)
      )
      for split, count, seed in (("train", 100, 1), ("validation", 40, 2))
  }


def test_two_workers_killed_and_rerun_train_like_one_process(
    tmp_path, tiny_bert_dir, small_files
):
  model_dir = tmp_path / "run"
  args = [
      f"--model={tiny_bert_dir}",
      f"--train_file={small_files['train']}",
      f"--validation_file={small_files['validation']}",
      f"--model_dir={model_dir}",
      "--distribution=multi_worker",
      *_WORKER_FLAGS,
  ]
  # Killed in the second epoch (steps 5 to 8), worker 1 first; then both
  # are started again, as after a machine's failure.
  killed, logs = _start_workers(args, 2, tmp_path)
  _kill_when_logged(killed, logs, "Step 6/8")
  assert os.listdir(model_dir / "backup" / "chief")
  processes, logs = _start_workers(args, 2, tmp_path)
  outputs = _wait_all(processes, logs)
  for index, (process, output) in enumerate(zip(processes, outputs)):
    assert process.returncode == 0, f"worker {index}:\n{output[-3000:]}"
  # Both resumed from the chief's backup in the second epoch, no later
  # than the kill.
  resumed = [
      re.findall(r"Resuming from the backup in epoch 2 after (\d) of", output)
      for output in outputs
  ]
  assert resumed[0] and resumed[0] == resumed[1], outputs
  assert 1 <= int(resumed[0][0]) <= 2

  # Only the chief (worker 0) wrote the run; worker 1's scratch is gone.
  assert os.path.isfile(model_dir / "checkpoints/final/weights.index")
  assert os.path.isfile(model_dir / "checkpoints/best/weights.index")
  assert not [
      name for name in os.listdir(model_dir) if name.startswith(".scratch")
  ]
  # TensorBoard event files name the process that wrote them: the chief.
  events = [
      name
      for _, _, names in os.walk(model_dir / "logs")
      for name in names
      if name.startswith("events.out.tfevents")
  ]
  assert events
  chiefs = (f".{killed[0].pid}.", f".{processes[0].pid}.")
  assert all(any(pid in name for pid in chiefs) for name in events), events
  summary = json.load(open(model_dir / "summary.json"))
  assert summary["replicas"] == 2
  assert summary["global_batch_size"] == 32
  assert summary["global_steps"] == 8  # 2 x (3 steps of 32 and one of 4).

  # The same weights on both workers.
  fingerprints = [
      re.findall(
          r"Worker (\d): Trained weights after 8 steps: "
          r"SHA-256 ([0-9a-f]{64})",
          output,
      )
      for output in outputs
  ]
  assert [found[0][0] for found in fingerprints] == ["0", "1"], outputs
  assert fingerprints[0][0][1] == fingerprints[1][0][1]
  assert summary["weights_fingerprint"] == fingerprints[0][0][1]

  # One process, one device, 32 per step: the same losses (those of the
  # training steps in the first epoch: the second's were averaged over the
  # steps after the resumption only) and validation results.
  flags = dict(arg[2:].split("=", 1) for arg in _WORKER_FLAGS if "=" in arg)
  single = training.train(
      config_lib.RunConfig(
          model_dir=str(tmp_path / "single"),
          data=config_lib.DataConfig(
              train_file=small_files["train"],
              validation_file=small_files["validation"],
              max_seq_length=32,
              batch_size=32,
          ),
          model=config_lib.ModelConfig(
              model=tiny_bert_dir, pooling="mean", dropout=0.0
          ),
          train=config_lib.TrainConfig(
              epochs=int(flags["epochs"]),
              learning_rate=float(flags["learning_rate"]),
              early_stopping_patience=0,
              precision="fp32",
              export=False,
              distribution="one_device",
          ),
      )
  )
  assert single.global_batch_size == 32 and single.replicas == 1
  history = summary["history"]
  for name in ("loss", "accuracy"):
    assert history[name][0] == pytest.approx(
        single.history[name][0], rel=1e-3, abs=1e-4
    ), name
  for name in ("val_loss", "val_accuracy"):
    assert history[name] == pytest.approx(
        single.history[name], rel=1e-3, abs=1e-4
    ), name


def test_multi_worker_without_tf_config_fails_in_one_line(tmp_path):
  env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
  result = subprocess.run(
      [
          sys.executable,
          "-m",
          "tf_finetune.train",
          "--model=x",
          f"--train_file={tmp_path / 'train.csv'}",
          f"--model_dir={tmp_path / 'run'}",
          "--distribution=multi_worker",
      ],
      capture_output=True,
      text=True,
      timeout=120,
      env=env,
  )
  assert result.returncode == 2
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(
      "train: error: --distribution=multi_worker needs "
      "the TF_CONFIG environment variable"
  )


@pytest.mark.parametrize(
    "raw, message",
    [
        (None, r"needs the TF_CONFIG environment variable"),
        (
            "{cluster: 1}",
            r"TF_CONFIG is not valid JSON \(Expecting property "
            r"name enclosed in double quotes at column 2\)",
        ),
        (
            '{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", '
            '"index": 0}}',
            r"needs \"cluster\": a map from job name to a list of "
            r"\"host:port\" addresses",
        ),
        ('{"cluster": {"worker": ["a:1", "b:2"]}}', r"needs \"task\""),
        (
            '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", '
            '"index": 2}}',
            r"task index 2 is not one of the 2 'worker' addresses",
        ),
    ],
)
def test_malformed_tf_config_is_explained(raw, message):
  with pytest.raises(ValueError, match=message):
    distribution.read_tf_config(raw)


def test_tpu_flags_must_agree():
  with pytest.raises(ValueError, match=r"--distribution=tpu needs --tpu"):
    config_lib.TrainConfig(distribution="tpu")
  with pytest.raises(
      ValueError,
      match=r"--tpu='local' conflicts with " r"--distribution='mirrored'",
  ):
    config_lib.TrainConfig(distribution="mirrored", tpu="local")
  config_lib.TrainConfig(distribution="tpu", tpu="local")


def test_two_streaming_workers_each_read_their_own_shards(
    tmp_path, tiny_bert_dir
):
  rows = make_sentiment_rows(100, seed=1)
  shard_dir = tmp_path / "shards"
  shard_dir.mkdir()
  shards = [
      write_rows(str(shard_dir / f"train-{i}.csv"), rows[i::4])
      for i in range(4)
  ]
  model_dir = tmp_path / "run"
  args = [
      f"--model={tiny_bert_dir}",
      f"--train_file={shard_dir}/train-*.csv",
      f"--model_dir={model_dir}",
      "--distribution=multi_worker",
      "--streaming",
      *_WORKER_FLAGS,
  ]
  processes, logs = _start_workers(args, 2, tmp_path)
  deadline = time.time() + 240
  try:
    for process in processes:
      process.wait(timeout=max(1, deadline - time.time()))
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
        process.wait()
  outputs = []
  for log in logs:
    log.seek(0)
    outputs.append(log.read())
    log.close()
  for index, (process, output) in enumerate(zip(processes, outputs)):
    assert process.returncode == 0, f"worker {index}:\n{output[-3000:]}"
    # Worker i reads shards i and i + 2.
    assert (
        f"Worker {index} of 2 reads 2 of 4 shard(s) (sharded by file): "
        f"{shards[index]}, {shards[index + 2]}" in output
    ), output[-3000:]
  summary = json.load(open(model_dir / "summary.json"))
  assert summary["global_batch_size"] == 32
  # Two epochs of ceil(100 / 32) steps, as in memory.
  assert summary["global_steps"] == 8
  fingerprints = [
      re.findall(r"Trained weights after 8 steps: SHA-256 ([0-9a-f]{64})", out)
      for out in outputs
  ]
  assert fingerprints[0] and fingerprints[0] == fingerprints[1]


def test_two_streaming_workers_sharing_one_shard_train_like_one_process(
    tmp_path, tiny_bert_dir, small_files
):
  """Fewer shards than workers: each worker reads every shard and keeps its
  share of each batch (sharded by data), so the two train on the batches of
  one streaming process at the same global batch. (Sharded by file, each
  worker makes its batches of its own shards: the run differs from one
  process by construction.)"""
  args = [
      f"--model={tiny_bert_dir}",
      f"--train_file={small_files['train']}",
      f"--validation_file={small_files['validation']}",
      f"--model_dir={tmp_path / 'run'}",
      "--distribution=multi_worker",
      "--streaming",
      "--shuffle_buffer=40",
      *_WORKER_FLAGS,
  ]
  processes, logs = _start_workers(args, 2, tmp_path)
  outputs = _wait_all(processes, logs)
  for index, (process, output) in enumerate(zip(processes, outputs)):
    assert process.returncode == 0, f"worker {index}:\n{output[-3000:]}"
    assert (
        f"Worker {index} of 2 reads 1 of 1 shard(s) (sharded by data): "
        f"{small_files['train']}" in output
    ), output[-3000:]
  summary = json.load(open(tmp_path / "run" / "summary.json"))
  assert summary["global_steps"] == 8 and summary["global_batch_size"] == 32

  single = [
      arg.replace("--batch_size=16", "--batch_size=32")
      for arg in args
      if arg != "--distribution=multi_worker"
  ]
  single = [
      f"--model_dir={tmp_path / 'single'}"
      if arg.startswith("--model_dir")
      else arg
      for arg in single
  ]
  result = subprocess.run(
      [sys.executable, "-m", "tf_finetune.train", *single],
      capture_output=True,
      text=True,
      env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
      timeout=240,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  expected = json.load(open(tmp_path / "single" / "summary.json"))
  assert expected["global_steps"] == 8 and expected["replicas"] == 1
  for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
    assert summary["history"][name] == pytest.approx(
        expected["history"][name], rel=1e-3, abs=1e-4
    ), name
