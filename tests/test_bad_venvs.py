"""Isolated-environment specs that break the rules (issue 13, defect 3): `venvs define` refuses them
with exit status 2 and one `error:` line, writing nothing; a bad spec file already on disk is
skipped with one warning line at import and every command keeps working.  No venv is built here
(no network): valid specs are defined with --no-build only."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from robustbench_sys.noises.system import isolated, venvs

VENVS = [sys.executable, "-m", "robustbench_sys.noises.system.venvs"]
LIST_NOISES = [sys.executable, "-c",
               "import sys; from robustbench_sys.cli import main; sys.exit(main(['noises', 'list']))"]

# (argv after `define`, the token the one error line must name)
BAD_DEFINE = [
    # names: built-in environments and names whose noises would collide with built-in ones
    pytest.param(["pil", "Pillow==9.5.0"], "'pil'", id="name-builtin-decoder-pil"),
    pytest.param(["opencv", "Pillow==9.5.0"], "'opencv'", id="name-builtin-decoder-opencv"),
    pytest.param(["cv2", "Pillow==9.5.0"], "'cv2'", id="name-resize-prefix-cv2"),
    pytest.param(["torch-bilinear", "Pillow==9.5.0"], "'torch-bilinear'", id="name-resize-exact"),
    pytest.param(["pillow9", "Pillow==9.5.0"], "'pillow9'", id="name-builtin-env"),
    pytest.param(["pillow", "Pillow==9.5.0"], "'pillow'", id="name-builtin-env-prefix"),
    # names: the character rule
    pytest.param(["Pillow8", "Pillow==9.5.0"], "'Pillow8'", id="name-uppercase"),
    pytest.param([".hidden", "Pillow==9.5.0"], "'.hidden'", id="name-leading-dot"),
    pytest.param(["--", "-dash", "Pillow==9.5.0"], "'-dash'", id="name-leading-dash"),
    pytest.param(["$(touch X)", "Pillow==9.5.0"], "'$(touch X)'", id="name-shell-substitution"),
    pytest.param(["a;b", "Pillow==9.5.0"], "'a;b'", id="name-semicolon"),
    pytest.param(["a b", "Pillow==9.5.0"], "'a b'", id="name-space"),
    pytest.param(["../evil", "Pillow==9.5.0"], "'../evil'", id="name-path"),
    pytest.param(["x" * 41, "Pillow==9.5.0"], repr("x" * 41), id="name-too-long"),
    pytest.param(["", "Pillow==9.5.0"], "''", id="name-empty"),
    # requirements: pip options, paths, URLs, bad PEP 508
    pytest.param(["okname", "Pillow==9.5.0", "-r/etc/passwd"], "'-r/etc/passwd'", id="req-r-option"),
    pytest.param(["okname", "--", "-r/etc/passwd"], "'-r/etc/passwd'", id="req-r-after-dashdash"),
    pytest.param(["okname", "-r /etc/passwd"], "'-r /etc/passwd'", id="req-r-with-space"),
    pytest.param(["okname", "Pillow==9.5.0", "--index-url=http://x"], "'--index-url=http://x'", id="req-index-url"),
    pytest.param(["okname", "-e ."], "'-e .'", id="req-editable"),
    pytest.param(["okname", "Pillow==9.5.0; garbage"], "'Pillow==9.5.0; garbage'", id="req-bad-marker"),
    pytest.param(["okname", ""], "''", id="req-empty"),
    pytest.param(["okname", "/etc/passwd"], "'/etc/passwd'", id="req-file-path"),
    pytest.param(["okname", "./Pillow"], "'./Pillow'", id="req-relative-path"),
    pytest.param(["okname", "Pillow-9.5.0-cp311-none-any.whl"], "'Pillow-9.5.0-cp311-none-any.whl'",
                 id="req-wheel-file-name"),
    pytest.param(["okname", "https://example.org/Pillow.whl"], "'https://example.org/Pillow.whl'", id="req-bare-url"),
    pytest.param(["okname", "pillow @ http://example.org/x.whl"], "'pillow @ http://example.org/x.whl'",
                 id="req-direct-reference-plain-http"),
    pytest.param(["okname", "Pillow\n==9.5.0"], repr("Pillow\n==9.5.0"), id="req-newline"),
    # --pip-arg: an allow-list
    pytest.param(["okname", "Pillow==9.5.0", "--pip-arg=--index-url=http://x"], "'--index-url=http://x'",
                 id="pip-arg-index-url"),
    pytest.param(["okname", "Pillow==9.5.0", "--pip-arg=-r/etc/passwd"], "'-r/etc/passwd'", id="pip-arg-r"),
    pytest.param(["okname", "Pillow==9.5.0", "--pip-arg=--target=/tmp/x"], "'--target=/tmp/x'", id="pip-arg-target"),
    pytest.param(["okname", "Pillow==9.5.0", "--pip-arg=--no-binary=$(touch X)"], "'--no-binary=$(touch X)'",
                 id="pip-arg-no-binary-bad-value"),
]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTBENCH_SYS_CACHE", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(("args", "token"), BAD_DEFINE)
def test_define_refuses_with_one_line_and_writes_nothing(cache, capsys, args, token):
    before = dict(isolated.ENV_SPECS)
    try:
        rc = venvs.main(["define", "--no-build", *args])
    except SystemExit as e:   # argparse usage errors exit through SystemExit
        rc = e.code
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert rc == 2, (rc, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert token in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    assert not list(cache.rglob("*.toml")) and not (cache / "venvs").exists()
    assert isolated.ENV_SPECS == before


def test_hint_quotes_the_environment_name(monkeypatch, cache):
    """With the name rule names need no quoting, but the printed command quotes them anyway."""
    odd = "x y;$(touch X)"
    monkeypatch.setitem(isolated.ENV_SPECS, odd, isolated.EnvSpec(odd, ("Pillow==9.5.0",)))
    assert "venvs build 'x y;$(touch X)'`" in isolated.unavailable(odd)
    assert "venvs build pillow9`" in isolated.unavailable("pillow9")


def test_build_rechecks_a_spec_changed_by_hand(cache):
    """A user spec edited in ENV_SPECS after define_env still never hands pip an option."""
    isolated.define_env("okname-recheck", ["Pillow==9.5.0"])
    try:
        isolated.ENV_SPECS["okname-recheck"] = dataclasses.replace(isolated.ENV_SPECS["okname-recheck"],
                                                                   requirements=("-r/etc/passwd",))
        with pytest.raises(isolated.IsolatedEnvError, match=r"'-r/etc/passwd': pip options are not accepted"):
            isolated.build("okname-recheck")
        assert not (cache / "venvs").exists() or not list((cache / "venvs").iterdir())
    finally:
        isolated.ENV_SPECS.pop("okname-recheck", None)
        isolated._USER_ENVS.discard("okname-recheck")


def test_define_api_applies_the_same_rules():
    for bad in (dict(name="pil", requirements=["Pillow==9.5.0"]),
                dict(name="okname", requirements=["-r/etc/passwd"]),
                dict(name="okname", requirements="Pillow==9.5.0"),      # a string, not a list
                dict(name="okname", requirements=["Pillow==9.5.0"], pip_args=["--index-url", "http://x"]),
                dict(name="okname", requirements=["Pillow==9.5.0"], build_env={"A=B": "1"})):
        with pytest.raises(ValueError):
            isolated.define_env(**bad)
    assert "okname" not in isolated.ENV_SPECS
    ok = isolated.make_spec("okname", ["pillow @ file:///tmp/x.whl", 'numpy<2; python_version < "3.13"'],
                            pip_args=["--no-cache-dir", "--no-binary", "pillow-simd", "--only-binary=:all:"])
    assert ok.requirements[0] == "pillow @ file:///tmp/x.whl"


def _run(cmd, env, timeout=300):
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in p.stderr, p.stderr
    return p


BAD_FILES = {
    "pil.toml": 'requirements = ["Pillow==9.5.0"]\n',                    # built-in decoder/pil (the report)
    "cv2.toml": 'requirements = ["Pillow==9.5.0"]\n',                    # built-in resize/cv2-*
    "pillow9.toml": 'requirements = ["Pillow==9.5.0"]\n',                # built-in environment
    "Upper.toml": 'requirements = ["Pillow==9.5.0"]\n',                  # name rule
    "$(touch X).toml": 'requirements = ["Pillow==9.5.0"]\n',             # name rule
    "badreq.toml": 'requirements = ["-r/etc/passwd"]\n',                 # pip option as requirement
    "badpip.toml": 'requirements = ["Pillow==9.5.0"]\npip_args = ["--index-url", "http://x"]\n',
    "broken.toml": 'requirements = ["Pillow==9.5.0"\n',                  # not TOML
}


def test_bad_spec_files_on_disk_are_skipped_and_commands_work(tmp_path):
    envs = tmp_path / "cache" / "envs"
    envs.mkdir(parents=True)
    for name, text in BAD_FILES.items():
        (envs / name).write_text(text)
    (envs / "goodenv.toml").write_text('requirements = ["Pillow==9.5.0"]\nresize = false\n')
    env = {**os.environ, "ROBUSTBENCH_SYS_CACHE": str(tmp_path / "cache"), "ROBUSTBENCH_SYS_ENVS": ""}

    def check_warnings(stderr):
        for name in BAD_FILES:
            hits = [ln for ln in stderr.splitlines() if str(envs / name) in ln]
            assert len(hits) == 1 and hits[0].startswith("warning: ") and "delete it" in hits[0], (name, stderr)

    # one fresh process (the import is where it crashed) for `venvs list`, `venvs define` (valid and not)
    code = ("import sys; from robustbench_sys.noises.system import venvs\n"
            "rcs = [venvs.main(['list']), venvs.main(['define', 'newenv', 'Pillow==9.5.0', '--no-build']),\n"
            "       venvs.main(['define', 'pil', 'Pillow==9.5.0', '--no-build'])]\n"
            "print('rcs', rcs)\n")
    p = _run([sys.executable, "-c", code], env)
    assert p.returncode == 0 and "rcs [0, 0, 2]" in p.stdout, (p.stdout, p.stderr)
    check_warnings(p.stderr)
    assert "goodenv: Pillow==9.5.0" in p.stdout and "pillow9: Pillow==9.5.0 numpy<2" in p.stdout
    assert "pil:" not in p.stdout and "Upper" not in p.stdout and "badreq" not in p.stdout
    assert p.stderr.splitlines()[-1].startswith("error: isolated environment name 'pil'"), p.stderr
    assert (envs / "newenv.toml").is_file()

    p = _run(LIST_NOISES, env)
    assert p.returncode == 0, p.stderr
    check_warnings(p.stderr)
    keys = [ln.split()[0] for ln in p.stdout.splitlines() if ln.strip()]
    assert keys.count("decoder/pil") == 1 and "decoder/goodenv" in keys and "resize/goodenv-bilinear" not in keys
    assert "decoder/newenv" in keys and "resize/newenv-bilinear" in keys
    assert not any(k in keys for k in ("decoder/cv2", "decoder/Upper", "decoder/badreq", "decoder/badpip"))
    assert not (tmp_path / "X").exists() and not (envs.parent / "venvs").exists()


def test_valid_define_no_build_registers_decoder(tmp_path):
    env = {**os.environ, "ROBUSTBENCH_SYS_CACHE": str(tmp_path / "cache"), "ROBUSTBENCH_SYS_ENVS": ""}
    p = _run([*VENVS, "define", "pillow8.4-user", "Pillow==8.4.0", "numpy<2", "--no-resize", "--no-build",
              "--pip-arg=--no-binary=pillow", "--pip-arg=--no-cache-dir"], env)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    spec_file = tmp_path / "cache" / "envs" / "pillow8.4-user.toml"
    text = spec_file.read_text()
    assert '"Pillow==8.4.0"' in text and '"--no-binary=pillow"' in text and "resize = false" in text
    assert not (tmp_path / "cache" / "venvs").exists()       # --no-build: nothing built
    p = _run(LIST_NOISES, env)
    assert p.returncode == 0 and "warning" not in p.stderr, p.stderr
    lines = [ln for ln in p.stdout.splitlines() if "pillow8.4-user" in ln]
    assert [ln.split()[0] for ln in lines] == ["decoder/pillow8.4-user"], lines
    assert "not built" in lines[0] and "venvs build pillow8.4-user`" in lines[0]
