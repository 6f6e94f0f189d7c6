r"""Speed of continued masked-LM pretraining: the pretrain binary on MiniLM.

  python benchmarks/pretrain_throughput.py --steps=60

Runs `python -m tf_finetune.pretrain` in a fresh process on the real MiniLM
(assets/minilm, which has no masked-LM head: the head starts fresh) over the
text column of the Rotten Tomatoes training snippets for --steps updates,
then reads its summary.json. Prints examples/s and tokens/s (non-padding
tokens, special tokens included) of the timed updates (every epoch's first
execution, which traces the graph, is left out) and one JSON line.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="assets/minilm")
  parser.add_argument(
      "--train_file", default="assets/rotten_tomatoes/train.csv"
  )
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--max_seq_length", type=int, default=128)
  parser.add_argument("--masking", default="token")
  parser.add_argument("--precision", default="auto")
  parser.add_argument(
      "--model_dir", default=None, help="Default: a temporary directory."
  )
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as scratch:
    model_dir = args.model_dir or os.path.join(scratch, "run")
    command = [
        sys.executable,
        "-m",
        "tf_finetune.pretrain",
        f"--model={args.model}",
        f"--train_file={args.train_file}",
        "--text_column=text",
        f"--model_dir={model_dir}",
        f"--max_steps={args.steps}",
        "--epochs=1",
        f"--batch_size={args.batch_size}",
        f"--max_seq_length={args.max_seq_length}",
        f"--masking={args.masking}",
        f"--precision={args.precision}",
        f"--log_every_steps={max(args.steps // 4, 1)}",
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall_seconds = time.perf_counter() - start
    with open(os.path.join(model_dir, "summary.json"), encoding="utf-8") as f:
      summary = json.load(f)
  report = {
      "benchmark": "pretrain_throughput",
      "date": time.strftime("%Y-%m-%d"),
      "model": args.model,
      "steps": summary["global_steps"],
      "global_batch_size": summary["global_batch_size"],
      "precision": summary["precision"],
      "masking": args.masking,
      "mean_tokens_per_example": summary["mean_tokens_per_example"],
      "examples_per_second": summary["examples_per_second"],
      "tokens_per_second": summary["tokens_per_second"],
      "fit_seconds": summary["train_seconds"],
      "wall_seconds": round(wall_seconds, 1),
      "train_loss": summary["train_loss"],
      "fresh_weights": len(summary["fresh_weights"]),
  }
  print(
      f"{report['examples_per_second']} examples/s, "
      f"{report['tokens_per_second']} tokens/s over {report['steps']} steps "
      f"of {report['global_batch_size']} ({report['precision']}); fit "
      f"{report['fit_seconds']} s, wall {report['wall_seconds']} s"
  )
  print(json.dumps(report))


if __name__ == "__main__":
  main()
