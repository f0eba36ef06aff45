"""Bad input end to end: malformed specs and command lines given to the real `bru`
commands. Each gives exactly one line, `error: ...`, naming the field (or file, or
option) and what would fix it, exit code 2, and nothing written under the bru home
folder. Property-based fuzzing of the spec loader (hypothesis) holds the same promise for
generated inputs: a spec either loads or raises one SpecError line, nothing else."""

from __future__ import annotations

import copy
import string
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bru_core.cli import main
from bru_core.spec import SpecError, load_spec
from tests.helpers.paths import ROOT

SMOKE: dict[str, Any] = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "home"
    for key in ("BRU_TRACKING_URI", "BRU_OPTUNA_STORAGE", "BRU_RESULTS_URL", "BRU_DATA_DIR", "PREFECT_API_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("BRU_HOME", str(folder))
    return folder


def _spec(tmp_path: Path, change) -> Path:
    data = copy.deepcopy(SMOKE)
    change(data)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _set(path: str, value: Any):
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


def _drop(path: str):
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        del node[last]

    return change


def _rename(old: str, new: str):
    def change(data: dict[str, Any]) -> None:
        data[new] = data.pop(old)

    return change


# (spec change, fragments the one error line must contain)
BAD_SPECS = [
    (_set("activations", ["relu", "swish2"]), ["activations[1]", "unknown activation 'swish2'"]),
    (_set("activations", ["relu", "eru:0"]), ["activations[1]", "radix must be a finite number > 0"]),
    (_set("activations", ["relu", "eru:-2"]), ["activations[1]", "radix"]),
    (_set("activations", ["relu", "oru:3>"]), ["activations[1]", "oru:R1>R2"]),
    (_set("activations", ["relu", "relu"]), ["activations", "relu"]),
    (_set("activations", []), ["activations"]),
    (_set("tasks", []), ["tasks"]),
    (_set("tasks.0.dataset", "imagenet"), ["tasks[0].dataset", "imagenet"]),
    (_set("tasks.0.model", "resnet50"), ["tasks[0].model", "resnet50"]),
    (_set("tasks.0.epochs", -3), ["tasks[0].epochs"]),
    (_set("tasks.0.epochs", 0), ["tasks[0].epochs"]),
    (_set("tasks.0", {"dataset": "digits", "model": "lenet5", "epochs": 2, "augment": "sometimes"}), ["augment"]),
    (_set("search.trials", 0), ["search.trials"]),
    (_set("search.trials", "many"), ["search.trials"]),
    (_set("search.sampler", "grid"), ["search.sampler"]),
    (_set("search.pruner", "aggressive"), ["search.pruner"]),
    (_set("search.space.lr", {"low": 0.1, "high": 0.001, "log": True}), ["search.space.lr"]),
    (_set("search.space.lr", {"low": 0, "high": 0.1, "log": True}), ["search.space.lr.low"]),
    (_set("search.space.lr", {"low": -1.0, "high": 0.1}), ["search.space.lr"]),
    (_set("search.space.batch_size", {"choices": []}), ["search.space.batch_size"]),
    (_set("search.space.batch_size", {"choices": [0, 64]}), ["search.space.batch_size"]),
    (_set("search.space.warmup", {"low": 1, "high": 2}), ["search.space", "warmup"]),
    (_set("search.space.schedule", {"choices": ["none", "warm"]}), ["search.space.schedule"]),
    (_set("repeats.seeds", []), ["repeats.seeds"]),
    (_set("repeats.seeds", [0, -1]), ["repeats.seeds"]),
    (_set("compare.reference", ["elu"]), ["compare.reference", "elu"]),
    (_set("name", ""), ["name"]),
    (_set("name", "a/b"), ["name"]),
    (_drop("search"), ["search"]),
    (_drop("tasks"), ["tasks"]),
    (_rename("activations", "activation"), ["activation", "activations"]),
    (_rename("search", "serach"), ["serach", "search"]),
    (_set("train", {"lr": -0.1}), ["train.lr"]),
    (_set("train", {"optimizer": "lbfgs"}), ["train.optimizer"]),
]


@pytest.mark.parametrize("command", [["check"], ["campaign", "run"]])
@pytest.mark.parametrize(("change", "fragments"), BAD_SPECS)
def test_bad_spec_is_one_line_exit_2_and_nothing_written(capsys, tmp_path, home, command, change, fragments):
    spec = _spec(tmp_path, change)
    code = main([*command, str(spec)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert not home.exists() or not any(home.rglob("*")), sorted(home.rglob("*"))


BAD_FILES = [
    ("missing.yaml", None, "no such file"),
    ("empty.yaml", "", "empty"),
    ("list.yaml", "- 1\n- 2\n", "mapping"),
    ("tabs.yaml", "name: x\n\ttasks: [\n", "not valid YAML at line"),
    ("binary.yaml", b"\xff\xfe\x00name", "cannot be read"),
    ("folder", "<dir>", "not a file"),
]


@pytest.mark.parametrize(("name", "content", "fragment"), BAD_FILES)
def test_bad_spec_file(capsys, tmp_path, home, name, content, fragment):
    path = tmp_path / name
    if content == "<dir>":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    for command in (["check"], ["campaign", "run"], ["search", "--task", "digits/mlp4", "-a", "relu"]):
        code = main([*command, str(path)])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1, (command, err)
        assert str(path) in lines[0] and fragment in lines[0], (command, lines[0])
    assert not home.exists() or not any(home.rglob("*"))


BAD_COMMAND_LINES = [
    (["search", "{spec}", "--task", "digits/lenet5", "-a", "relu"], "digits/lenet5"),
    (["search", "{spec}", "--task", "digits/mlp4", "-a", "elu"], "elu"),
    (["search", "{spec}", "--task", "digits/mlp4"], "--activation"),
    (["campaign", "run", "{spec}", "--optuna-storage", "mysql://x"], "Optuna storage mysql://x cannot be opened"),
    (["campaign", "run", "{spec}", "--optuna-storage", "postgresql+psycopg://u@127.0.0.1:1/x"], "Optuna storage"),
    (["campaign", "run", "{spec}", "--tracking-uri", "http://127.0.0.1:1"], "MLflow tracking at http://127.0.0.1:1"),
    (["search", "{spec}", "--task", "digits/mlp4", "-a", "relu", "--tracking-uri", "http://127.0.0.1:1"], "MLflow"),
    (
        ["campaign", "run", "{spec}", "--results-url", "postgresql+psycopg://u:pw@127.0.0.1:1/x"],
        "results database postgresql+psycopg://u:***@127.0.0.1:1/x cannot be reached",
    ),
    (["campaign", "submit", "{spec}"], "PREFECT_API_URL"),
    (["results", "--campaign", "nope"], "no results database"),
    (["train", "--epochs", "-1"], "--epochs"),
    (["train", "-a", "eru:abc"], "radix"),
    (["train", "--model", "lenet5", "--dataset", "digits", "--batch-size", "0"], "--batch-size"),
    (["bench", "estimate", "{spec}", "--precision", "fp8"], "--precision"),
]


@pytest.mark.parametrize(("argv", "fragment"), BAD_COMMAND_LINES)
def test_bad_command_line(capsys, tmp_path, home, argv, fragment):
    spec = ROOT / "configs" / "smoke.yaml"
    started = time.monotonic()
    code = main([a.format(spec=spec, tmp=tmp_path) for a in argv])
    assert time.monotonic() - started < 10  # a store that is down is reported at once
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    assert not home.exists() or not any(home.rglob("*")), sorted(home.rglob("*"))


# --------------------------------------------------------------------------- fuzzing

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(string.ascii_letters + string.digits + ":>._-/ ", max_size=12),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["low", "high", "choices", "x"]), inner)
    ),
    max_leaves=6,
)
_paths = st.sampled_from(
    [
        "name", "activations", "tasks", "search", "repeats", "compare", "train", "description",
        "search.trials", "search.sampler", "search.pruner", "search.seed", "search.space", "search.space.lr",
        "search.space.batch_size", "search.startup_trials", "repeats.seeds", "compare.reference",
        "tasks.0", "tasks.0.dataset", "tasks.0.model", "tasks.0.epochs", "activations.0", "activations.1",
    ]
)  # fmt: skip


def _mutate(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = data
    for key in [*parents, last]:
        if isinstance(node, list) != key.isdigit():
            return  # an earlier mutation changed the shape: nothing to put there
        if key == last:
            break
        node = (node[int(key)] if int(key) < len(node) else None) if isinstance(node, list) else node.get(key)
        if not isinstance(node, (dict, list)):
            return
    if isinstance(node, list):
        if int(last) < len(node):
            node[int(last)] = value
    else:
        node[last] = value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(st.tuples(_paths, _values), min_size=1, max_size=3))
def test_fuzzed_specs_load_or_give_one_spec_error_line(tmp_path, mutations):
    data = copy.deepcopy(SMOKE)
    for path, value in mutations:
        _mutate(data, path, value)
    spec = tmp_path / "fuzz.yaml"
    spec.write_text(yaml.safe_dump(data))
    try:
        load_spec(spec)
    except SpecError as exc:
        message = str(exc)
        assert message and "\n" not in message and message.startswith(str(spec)), message


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_fuzzed_text_loads_or_gives_one_spec_error_line(tmp_path, text):
    spec = tmp_path / "text.yaml"
    spec.write_text(text, encoding="utf-8")
    try:
        load_spec(spec)
    except SpecError as exc:
        assert "\n" not in str(exc), str(exc)


# --------------------------------------------------------------------------- a server that wants a login


@pytest.fixture
def login_server():
    """An HTTP server shaped like MLflow's basic-auth app: /health open, the API 401 without
    the right login and 403 for a known user without permission (user "reader")."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            header = self.headers.get("Authorization", "")
            login = base64.b64decode(header.removeprefix("Basic ")).decode() if header else ""
            if self.path == "/health" or login == "admin:right":
                code = 200
            elif login.startswith("reader:"):
                code = 403
            else:
                code = 401
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(
    ("user", "password", "fragment"),
    [
        (None, None, "requires a login; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
        ("admin", "wrong", "refused the login of MLFLOW_TRACKING_USERNAME=admin; check MLFLOW_TRACKING_PASSWORD"),
        ("reader", "pw", "denies user reader access"),
    ],
)
def test_a_tracking_server_that_refuses_the_login_is_one_line(
    capsys, home, monkeypatch, login_server, user, password, fragment
):
    for name, value in (("MLFLOW_TRACKING_USERNAME", user), ("MLFLOW_TRACKING_PASSWORD", password)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    spec = ROOT / "configs" / "smoke.yaml"
    code = main(["campaign", "run", str(spec), "--tracking-uri", login_server])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: MLflow tracking at ") and fragment in lines[0], err
    assert password is None or password not in err


def test_check_server_passes_the_right_login(monkeypatch, login_server):
    from bru_core.tracking import check_server

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "right")
    check_server(login_server)  # no error
