"""One limit per value (issue 26): a value the command line accepts is one the checkpoint manifest accepts — the
probe's run trained with --checkpoint-every 10¹¹ and then could not be opened — and a guidance weight of 10³⁰ is
refused where it enters, not blamed on the weights afterwards."""
from __future__ import annotations

import pytest

from diffusion_studio import cli
from diffusion_studio.cli.common import UsageError
from diffusion_studio.core.io.manifest import TRAIN_FIELDS, Bad
from diffusion_studio.core.limits import INT_LIMITS

FLAGS = {"--steps": "steps", "--checkpoint-every": "checkpoint_every", "--log-every": "log_every",
         "--preview-every": "preview_every", "--warmup": "warmup_steps", "--seed": "seed", "--batch": "batch_size"}


@pytest.mark.parametrize("flag, value", [("--checkpoint-every", str(10**11)), ("--steps", str(10**11)),
                                         ("--log-every", str(10**11)), ("--preview-every", str(10**11)),
                                         ("--warmup", str(10**11)), ("--seed", str(2**63))])
def test_a_value_the_manifest_would_refuse_is_refused_by_the_command_line(flag, value, tmp_path, capsys):
    code = cli.main(["train", "--data", "builtin:digits", flag, value, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"argument {flag}: must be at most" in err[0], err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag", list(FLAGS))
def test_the_command_line_and_the_manifest_share_each_highest_value(flag, tmp_path, capsys):
    """The highest value the parser takes passes the manifest's check; one more fails both."""
    name = FLAGS[flag]
    lo, hi = INT_LIMITS[name]
    spec = TRAIN_FIELDS[name]
    spec.check(hi, name)
    with pytest.raises(Bad):
        spec.check(hi + 1, name)
    parser, _ = cli.build_parser("train")
    args = parser.parse_args(["train", flag, str(hi), "--out", str(tmp_path)])
    assert getattr(args, flag[2:].replace("-", "_")) == hi
    with pytest.raises(UsageError, match=f"argument {flag}: must be at most"):
        parser.parse_args(["train", flag, str(hi + 1), "--out", str(tmp_path)])


@pytest.mark.parametrize("w", ["1e30", "1e308", "inf", "-1"])
def test_an_absurd_guidance_weight_is_a_usage_error(w, tmp_path, capsys):
    code = cli.main(["sample", "--model", "builtin:digits", "--label", "3", "--guidance", w, "--out",
                     str(tmp_path / "s")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "argument --guidance: must be in [0, 100]" in err[0], err
