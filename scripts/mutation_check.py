"""Mutation check by hand: each mutant below is applied, one at a time, to a temporary copy of
the repository and run against its relevant tests; KILLED means a test failed, as it should.

    python scripts/mutation_check.py [MUTANT ...]     # all, or the named ones (about 20 minutes)

The list is the one of issue 13 (DDIM eta, a_in wrap, atomic writes, gradient clipping, EMA)
plus the rules the reliability tests guard, plus issue 21's (the export reader's field checks,
the overflow counter, the ReLU twin, resume settings, one-line usage errors, NIR versions). Known survivor: ``recalibration-moves-rng`` is an
equivalent mutant (the EMA copy recalibrated in eval mode with its own generator draws nothing
from the global RNG; ``fork_rng`` only guards against future changes). Not listed because equivalent:
``hi < A_IN_MAX`` for ``hi <= A_IN_MAX`` in ``validate.a_in_fits`` (sums of even mantissas are
even, never 32767).
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
M = [
 ("ddim-eta-ignored(sigma w/o eta)", "sdm_neuro/samplers/ddim.py", "sigma = self.eta * math.sqrt(", "sigma = math.sqrt(",
  ["tests/test_solvers.py", "tests/test_reliability.py", "-k", "ddim"]),
 ("ddim-noise-term-dropped", "sdm_neuro/samplers/ddim.py", "        if sigma > 0 and s >= 0:", "        if False:",
  ["tests/test_solvers.py", "tests/test_reliability.py", "-k", "ddim"]),
 ("a_in-wrap-17-bits", "sdm_neuro/executors/core_kernels.py", "A_IN_BITS = 16 ", "A_IN_BITS = 17 ",
  ["tests/test_lava.py", "-k", "wraps"]),
 ("checkpoint-written-to-final-path", "sdm_neuro/checkpoint.py", "    with atomic_path(path) as tmp:\n        torch.save(payload, tmp)", "    torch.save(payload, path)",
  ["tests/test_reliability.py", "tests/test_core.py", "-k", "atomic or checkpoint"]),
 ("atomic_path-yields-final-path", "sdm_neuro/atomic.py", "        yield tmp_path\n", "        yield path\n",
  ["tests/test_reliability.py", "tests/test_core.py", "-k", "atomic or checkpoint"]),
 ("no-grad-clipping", "sdm_neuro/training/trainer.py", "            nn.utils.clip_grad_norm_(trainable, tr.grad_clip)\n", "",
  ["tests/test_reliability.py", "tests/test_core.py", "-k", "clip or train"]),
 ("ema-decay-ignored", "sdm_neuro/training/trainer.py", "d = min(self.decay, (1 + step) / (10 + step))", "d = (1 + step) / (10 + step)",
  ["tests/test_reliability.py", "tests/test_core.py", "-k", "ema or train"]),
 ("ema-is-the-live-model", "sdm_neuro/training/trainer.py", "self.model = copy.deepcopy(model).eval()", "self.model = model",
  ["tests/test_reliability.py", "tests/test_core.py", "-k", "ema or train"]),
 ("model.pt-from-live-weights", "sdm_neuro/training/trainer.py", "final = copy.deepcopy(ema.model)", "final = copy.deepcopy(model)",
  ["tests/test_reliability.py", "tests/test_core.py", "-k", "ema or train"]),
 ("mantissa-floor", "sdm_neuro/export/quantize.py", "m = np.round(w * K / 2.0**e / 2.0) * 2.0", "m = np.floor(w * K / 2.0**e / 2.0) * 2.0",
  ["tests/test_export.py", "tests/test_reliability.py", "-k", "fixed_point or mantissa"]),
 ("resume-card-check-off", "sdm_neuro/training/trainer.py", "        differ = resume_mismatch(ck[\"card\"], card)\n", "        differ = []\n",
  ["tests/test_reliability.py", "-k", "resume"]),
 ("nonfinite-weight-check-off", "sdm_neuro/training/trainer.py", "            bad = _first_nonfinite(model)\n", "            bad = None\n",
  ["tests/test_reliability.py", "-k", "nonfinite or exploding or blow_up"]),
 ("save-nonfinite-check-off", "sdm_neuro/training/trainer.py", "        bad = _first_nonfinite(model, ema.model, final)\n", "        bad = None\n",
  ["tests/test_reliability.py", "-k", "nonfinite or exploding or blow_up"]),
 ("checkpoint-finite-check-off", "sdm_neuro/checkpoint.py", "    if bad:\n        raise SdmError(f\"{where} holds non-finite", "    if False:\n        raise SdmError(f\"{where} holds non-finite",
  ["tests/test_reliability.py", "-k", "broken_checkpoints"]),
 ("output-probe-off", "sdm_neuro/commands/_common.py", "        fd, probe = tempfile.mkstemp(prefix=\".sdm-neuro-write-check.\", dir=anchor)\n        os.close(fd)\n        os.unlink(probe)\n", "        pass\n",
  ["tests/test_reliability.py", "-k", "destination"]),
 ("cifar-unpickler-open", "sdm_neuro/data/datasets.py", "        if (module, name) in self._ALLOWED:", "        if True:",
  ["tests/test_reliability.py", "-k", "cifar"]),
 ("threshold-scale-inf-allowed", "sdm_neuro/commands/_common.py", "not (math.isfinite(value) and value > 0)", "not (value > 0)",
  ["tests/test_reliability.py", "-k", "threshold_scale"]),
 ("progress-bars-not-closed", "sdm_neuro/cli.py", "def _fail(message: str, code: int = 2) -> None:\n    _end_progress_bars()\n", "def _fail(message: str, code: int = 2) -> None:\n",
  ["tests/test_reliability.py", "-k", "progress_bar"]),
 ("card-int-accepts-float", "sdm_neuro/card.py", "        if isinstance(value, bool) or not isinstance(value, int):\n            raise SdmError(f\"model card key '{name}' must be an integer", "        if isinstance(value, bool) or not isinstance(value, (int, float)):\n            raise SdmError(f\"model card key '{name}' must be an integer",
  ["tests/test_reliability.py", "-k", "bad_cards"]),
 ("json-nan-allowed-steps0", "sdm_neuro/training/trainer.py", "    if steps < 1:\n", "    if steps < 0:\n",
  ["tests/test_reliability.py", "-k", "steps_must_be_positive"]),
 ("ddp-every-rank-same-slice", "sdm_neuro/training/trainer.py", "            sl = slice(rank * per_rank, (rank + 1) * per_rank)", "            sl = slice(0, per_rank)",
  ["tests/test_distributed.py", "-k", "two_ranks"]),
 ("stale-temporaries-kept", "sdm_neuro/training/trainer.py", "        _remove_stale_temporaries(out_dir)\n", "",
  ["tests/test_distributed.py", "-k", "kill_9"]),
]
M += [
 ("ddp-not-wrapped", "sdm_neuro/training/trainer.py", "        train_model = nn.parallel.DistributedDataParallel(model)\n", "        pass\n",
  ["tests/test_distributed.py", "-k", "two_ranks"]),
 ("every-rank-saves", "sdm_neuro/training/trainer.py", "    def save(step: int, seconds: float, loss: float) -> None:\n        if rank != 0:\n            return\n", "    def save(step: int, seconds: float, loss: float) -> None:\n",
  ["tests/test_distributed.py", "-k", "two_ranks"]),
 ("every-rank-prints", "sdm_neuro/commands/train.py", "    if res.rank == 0:\n", "    if True:\n",
  ["tests/test_distributed.py", "-k", "two_ranks"]),
 ("loss-not-all-reduced", "sdm_neuro/training/trainer.py", "                dist.all_reduce(stats)\n                stats[0] /= world\n", "                pass\n",
  ["tests/test_distributed.py", "-k", "two_ranks"]),
 ("same-batch-every-step", "sdm_neuro/training/trainer.py", "g = torch.Generator().manual_seed(seed * 1_000_003 + step)", "g = torch.Generator().manual_seed(seed * 1_000_003)",
  ["tests/test_reliability.py", "tests/test_distributed.py", "tests/test_core.py", "-k", "batch or train or kill"]),
 ("rng-not-restored-on-resume", "sdm_neuro/training/trainer.py", "        torch.set_rng_state(ck[\"rng\"])\n", "",
  ["tests/test_distributed.py", "-k", "kill_9"]),
 ("recalibration-moves-rng", "sdm_neuro/training/trainer.py", "        with torch.random.fork_rng(devices=[]):  # recalibration must not move the training RNG\n", "        if True:\n",
  ["tests/test_distributed.py", "-k", "kill_9"]),
]

# issue 21: the export reader's field checks, the overflow counter, the twin, resume, usage errors
M += [
 ("odd-mantissa-accepted", "sdm_neuro/export/validate.py", "    if np.any(m % 2 != 0):\n", "    if False:\n",
  ["tests/test_export_corruption.py", "-k", "odd"]),
 ("a_in-lower-bound-strict", "sdm_neuro/export/validate.py", "return A_IN_MIN <= lo and hi <= A_IN_MAX", "return A_IN_MIN < lo and hi <= A_IN_MAX",
  ["tests/test_export_corruption.py", "-k", "a_in"]),
 ("a_in-upper-bound-off-by-one", "sdm_neuro/export/validate.py", "return A_IN_MIN <= lo and hi <= A_IN_MAX", "return A_IN_MIN <= lo and hi <= A_IN_MAX + 1",
  ["tests/test_export_corruption.py", "-k", "a_in"]),
 ("a_in-check-off", "sdm_neuro/export/validate.py", "        if not a_in_fits(hi, lo):\n", "        if False:\n",
  ["tests/test_export_corruption.py", "-k", "a_in"]),
 ("vthmant-consistency-off", "sdm_neuro/export/validate.py", "    if p.vth_mant != want:\n", "    if False:\n",
  ["tests/test_export_corruption.py", "-k", "vthmant"]),
 ("weight-consistency-off", "sdm_neuro/export/validate.py", "    if want_e != q.weight_exp or not np.array_equal(want_m, m):\n", "    if False:\n",
  ["tests/test_export_corruption.py", "-k", "quantised"]),
 ("readout-bias-allowed", "sdm_neuro/export/validate.py", "        if extra:\n            raise SdmError(f\"{at}: the readout has", "        if False:\n            raise SdmError(f\"{at}: the readout has",
  ["tests/test_export_corruption.py", "-k", "readout"]),
 ("unknown-datasets-allowed", "sdm_neuro/export/h5fields.py", "        extra = sorted(set(group.keys()) - set(members))\n        if extra:", "        extra = sorted(set(group.keys()) - set(members))\n        if False:",
  ["tests/test_export_corruption.py", "-k", "unknown"]),
 ("overflow-counts-int16-min", "sdm_neuro/executors/torch_executor.py", "over = (a > A_IN_MAX) | (a < A_IN_MIN)", "over = a.abs() > A_IN_MAX",
  ["tests/test_lava.py", "-k", "overflow"]),
 ("twin-copies-quant-bits", "sdm_neuro/energy/subject.py", "    for key in SPIKING_ONLY_FIELDS:\n        d[\"model\"].pop(key, None)\n", "",
  ["tests/test_conversion.py", "-k", "other_commands"]),
 ("resume-seed-not-recorded", "sdm_neuro/training/trainer.py", "    if seed != tr.seed:  # --seed", "    if False:  # --seed",
  ["tests/test_reliability.py", "-k", "resume"]),
 ("resume-micro-batches-unchecked", "sdm_neuro/training/trainer.py", "            if key in ck and ck[key] != now:\n", "            if False:\n",
  ["tests/test_reliability.py", "-k", "resume"]),
 ("usage-errors-multiline", "sdm_neuro/cli.py", "        _fail(\"error: \" + \" \".join(exc.format_message().split()) + hint)\n", "        exc.show()\n        sys.exit(2)\n",
  ["tests/test_reliability.py", "-k", "usage"]),
 ("json-out-checked-late", "sdm_neuro/commands/evaluate.py", "        check_output_file(json_out, \"--json-out\")", "        pass",
  ["tests/test_reliability.py", "-k", "destination"]),
 ("newer-nir-accepted", "sdm_neuro/export/nir_import.py", "    if have is not None and version_tuple(written) > have:\n", "    if have is None:\n",
  ["tests/test_nir.py", "-k", "newer"]),
]


def main(only: list[str]) -> int:
    survivors = 0
    with tempfile.TemporaryDirectory(prefix="sdm-mut-") as tmp:
        root = os.path.join(tmp, "repo")
        files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
        for rel in files:
            dst = os.path.join(root, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(REPO / rel, dst)
        for name, path, old, new, tests in M:
            if only and name not in only:
                continue
            f = os.path.join(root, path)
            src = open(f).read()
            if src.count(old) != 1:
                print(f"{name}: PATTERN NOT FOUND ({src.count(old)})", flush=True)
                continue
            open(f, "w").write(src.replace(old, new))
            t0 = time.time()
            try:
                r = subprocess.run([PY, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], cwd=root,
                                   env={**os.environ, "PYTHONPATH": root}, capture_output=True, text=True, timeout=900)
                status = "SURVIVED" if r.returncode == 0 else ("KILLED" if r.returncode == 1 else f"rc={r.returncode}")
                tail = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-200:]
            except subprocess.TimeoutExpired:
                status, tail = "TIMEOUT", ""
            finally:
                open(f, "w").write(src)
            survivors += status == "SURVIVED"
            print(f"{name}: {status} ({time.time() - t0:.0f} s) {tail}", flush=True)
    return survivors


if __name__ == "__main__":
    main(sys.argv[1:])
