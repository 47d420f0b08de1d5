"""Probes split over several devices give the one-device results (4 CPU devices in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, jax, jax.numpy as jnp
from ntksearch import ntk_metrics
from ntksearch.ntk.estimators import probe_mesh, probe_products
from tests.ntk.problems import PROBLEMS

out = {"devices": jax.device_count(), "diffs": {}}
with jax.enable_x64(True):
    # every code path: the exact basis sweep, a range sketch with both modes, one-sided probes on the param side
    for name, method in (("cnn", "exact"), ("mlp", "hutch++"), ("rnn", "forward")):
        p = PROBLEMS[name]()
        kw = dict(key=jax.random.PRNGKey(0), method=method, max_matvecs=300, rtol=0.0)
        one = ntk_metrics(p.apply_fn, p.params, p.x, p.y, devices=jax.devices()[:1], **kw)
        many = ntk_metrics(p.apply_fn, p.params, p.x, p.y, **kw)
        out["diffs"][f"{name}-{method}"] = max(abs(one[q].value - many[q].value) / abs(one[q].value) for q in one)
    p = PROBLEMS["mlp"]()
    hlo = probe_products.lower(p.apply_fn, p.params, p.x, jnp.ones((8, 64)), side="state", adjoint=True,
                               mesh=probe_mesh()).compile().as_text()
    out["collectives"] = hlo.count("all-reduce") + hlo.count("all-gather")
print(json.dumps(out))
"""


def test_four_devices_match_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=root,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    assert max(out["diffs"].values()) < 1e-12, out["diffs"]
    assert out["collectives"] > 0  # the block really is partitioned across the devices
