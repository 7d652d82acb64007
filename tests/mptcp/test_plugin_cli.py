"""The CLI's plug-in flags: names and FILE.py:Class reach MptcpConfig; mistakes are refused by
argparse with the flag and the reason."""

from __future__ import annotations

import pytest

from mptcp_impl.cli import _config, build_parser


def test_flags_reach_the_mptcp_config(tmp_path):
    f = tmp_path / "mine.py"
    f.write_text("class Mine:\n    def pick(self, candidates):\n        return None\n")
    args = build_parser().parse_args(
        [
            "client",
            "--connect",
            "10.0.0.1:5000",
            "--bytes",
            "1",
            "--scheduler",
            f"{f}:Mine",
            "--cc",
            "olia",
            "--pm",
            "backup-on-loss",
            "--opportunistic",
            "penalise",
        ]
    )
    m = _config(args).mptcp
    assert (m.scheduler, m.cc, m.pm, m.opportunistic) == (
        f"{f}:Mine",
        "olia",
        "backup-on-loss",
        "penalise",
    )
    d = _config(build_parser().parse_args(["server", "--listen", "0.0.0.0:1"])).mptcp
    assert (d.scheduler, d.cc, d.pm, d.opportunistic) == ("default", "uncoupled", "kernel", "off")


@pytest.mark.parametrize(
    "flag, value, words",
    [
        ("--scheduler", "fastest", "unknown scheduler 'fastest'"),
        ("--cc", "vegas", "unknown congestion control 'vegas'"),
        ("--pm", "/nonexistent/pm.py:X", "no such file"),
        ("--opportunistic", "always", "invalid choice"),
    ],
)
def test_mistakes_name_the_flag(capsys, flag, value, words):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["server", "--listen", "0.0.0.0:1", flag, value])
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and words in err
