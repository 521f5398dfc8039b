"""onesearch's default XLA flags: added where unset, never over the user's, accepted by jaxlib."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import pytest

from onesearch_jax.xla_flags import XLA_DEFAULTS, apply_xla_defaults, flag_names, with_xla_defaults

YNN = "xla_cpu_experimental_ynn_fusion_type"


def test_defaults_are_added_to_empty_flags():
    assert with_xla_defaults("") == f"--{YNN}="
    assert flag_names(with_xla_defaults("")) == set(XLA_DEFAULTS)


def test_other_flags_are_kept_after_the_defaults():
    flags = "--xla_force_host_platform_device_count=8 --xla_dump_to=/tmp/x"
    assert with_xla_defaults(flags) == f"--{YNN}= {flags}"


def test_a_flag_the_user_set_wins():
    for flags in (f"--{YNN}=dot,reduce", f"--xla_force_host_platform_device_count=2  --{YNN}=-dot"):
        assert with_xla_defaults(flags) == flags
    # a longer flag name that merely starts with ours does not count as ours
    assert flag_names(f"--{YNN}_other=1") == {f"{YNN}_other"}


def test_apply_to_a_mapping_is_idempotent():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    first = apply_xla_defaults(env)
    assert apply_xla_defaults(env) == first == env["XLA_FLAGS"]
    assert flag_names(first) == {*XLA_DEFAULTS, "xla_force_host_platform_device_count"}


def test_apply_after_jax_started_refuses():
    jax.devices()  # starts the backends of this process if nothing did yet
    with pytest.raises(RuntimeError, match="before the first jax computation"):
        apply_xla_defaults()


def test_the_pinned_jaxlib_accepts_the_defaults_and_computes():
    """XLA aborts the process on a flag it does not know: this fails if a jax upgrade drops ours."""
    code = (
        "from onesearch_jax.xla_flags import apply_xla_defaults\n"
        "print(apply_xla_defaults())\n"
        "import jax, jax.numpy as jnp\n"
        "x = jnp.arange(64.0).reshape(8, 8)\n"
        "print(float(jax.jit(lambda a: jax.nn.softmax(a @ a.T, axis=-1).sum())(x)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    flags, total = done.stdout.split()
    assert flags == f"--{YNN}="
    assert float(total) == pytest.approx(8.0)


def test_decoders_get_ynn_reductions_only_over_onesearchs_own_default():
    """The per-program option is a valid enum value of the pinned jaxlib, lowers a reduction to a
    YNNPACK fusion, and is not used when the user set the flag in XLA_FLAGS."""
    code = (
        "import os, sys\n"
        "from onesearch_jax.xla_flags import apply_xla_defaults, decode_compiler_options\n"
        "apply_xla_defaults()\n"
        "import jax, jax.numpy as jnp\n"
        "options = decode_compiler_options()\n"
        "x = jnp.ones((64, 2176))\n"
        "fn = lambda a: jax.nn.logsumexp(a, axis=-1)\n"
        "text = jax.jit(fn, compiler_options=options or None).lower(x).compile().as_text()\n"
        "print(sorted(options.values()), '__ynn_fusion' in text)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    own = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert own.returncode == 0, own.stderr[-2000:]
    assert own.stdout.split() == ["['LIBRARY_FUSION_TYPE_REDUCE']", "True"]
    users = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env={**env, "XLA_FLAGS": f"--{YNN}="})  # fmt: skip
    assert users.returncode == 0, users.stderr[-2000:]
    assert users.stdout.split() == ["[]", "False"]
