"""The fastact-bench command line: bad names, the output formats, skipped backends and peers.
Tiny sizes and one sample each: these check what is reported, never how fast anything is."""
import csv
import json
import os
import subprocess
import sys

import pytest

import fastact
from fastact.bench import providers
from fastact.bench.__main__ import main

TINY = ["--sizes", "2^10", "--repeats", "1", "--min-time", "0", "--settle", "0", "--no-progress"]


@pytest.fixture(autouse=True, scope="module")
def _keep_the_thread_count():
    """main() sets the providers' thread counts (fastact's is process-wide, as in the CLI): put
    fastact's back after this module, so that the tests after it run with the count they expect
    (module scope: set up before the module's own module-scoped runs)."""
    before = fastact.get_num_threads()
    yield
    fastact.set_num_threads(before)


def run(capsys, *args):
    code = main([*TINY, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("args, what, valid", [
    (["--only", "nope"], "activation", ["sigmoid", "gelu_tanh", "relu", "swish", "softmax"]),
    (["--backends", "tpu"], "backend", ["cpu", "c", "cuda", "numpy"]),
    (["--dtypes", "int8"], "dtype", ["float32", "float64", "float16"]),
    (["--families", "linear"], "family", ["exponential", "piecewise-linear"]),
    (["--directions", "sideways"], "direction", ["forward", "backward"]),
    (["--peers", "tensorflow"], "peer", ["numpy", "numexpr", "torch", "jax", "cupy"]),
])
def test_bad_names_exit_2_with_the_valid_choices(capsys, args, what, valid):
    code, out, err = run(capsys, *args)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"unknown {what}" in lines[0]
    for name in valid:
        assert name in lines[0]


def test_bad_size_exits_2(capsys):
    code, _, err = run(capsys, "--sizes", "lots")
    assert code == 2 and "bad size" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["--sizes", "inf"], "bad size 'inf'"), (["--sizes", "1e400"], "bad size"),
    (["--sizes", "2^10,2^50"], "more than 2^40"), (["--sizes", "2^64"], "more than 2^40"),
    (["--sizes", "MEMORY"], "more than this machine's"), (["--sizes", "1.5"], "whole number"),
    (["--sizes", ","], "no sizes"), (["--sizes", ""], "no sizes"),
    (["--threads", "5000"], "thread counts must be in [1, 4096]"),
    (["--repeats", "0"], "--repeats must be at least 1"), (["--min-time", "nan"], "finite"),
    (["--settle", "inf"], "finite"), (["--table-sizes", "2^14"], "[16384] not among the sizes"),
])
def test_options_that_cannot_run_exit_2_before_measuring(capsys, monkeypatch, tmp_path, args,
                                                         message):
    """Sizes past memory or float, thread counts fastact refuses, zero repeats, a NaN time, table
    sizes not run: one line and exit 2 before anything runs (these had raised a traceback, some
    after the smaller sizes were measured, or were taken silently: --repeats 0 as 5, --sizes ''
    as the default sweep); and no output folder is made (--json names a new one)."""
    from fastact.bench import runner
    monkeypatch.setattr(runner, "run", lambda config: pytest.fail("measured despite bad options"))
    if "MEMORY" in args:  # a power of two whose arrays exceed this machine's memory
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        args = ["--sizes", f"2^{max(10, (total // 4).bit_length())}"]
    code, out, err = run(capsys, *args, "--json", str(tmp_path / "new" / "r.json"))
    assert code == 2 and out == "" and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()


def test_a_bad_output_makes_no_folder_for_the_others(capsys, monkeypatch, tmp_path):
    """Every output is checked before any folder is made: a --plot path through a file leaves
    --json's new folder uncreated."""
    from fastact.bench import runner
    monkeypatch.setattr(runner, "run", lambda config: pytest.fail("measured despite a bad path"))
    a_file = tmp_path / "file"
    a_file.write_text("")
    code, _, err = run(capsys, "--json", str(tmp_path / "new" / "r.json"), "--plot",
                       str(a_file / "plots"))
    assert code == 2 and "is not a folder" in err
    assert not (tmp_path / "new").exists()


def test_lists_are_taken_once_and_peers_may_name_all_or_none(monkeypatch, capsys):
    """--peers torch,all is every peer and none,torch is torch (both had raised ValueError: all);
    a size or thread count given twice runs once (the table had mixed two groups' rooflines)."""
    from fastact.bench import __main__ as cli
    from fastact.bench import providers as prov
    seen = {}
    monkeypatch.setattr(prov, "make_peers", lambda name, cuda: seen.setdefault(name, []))
    for peers, want in (("torch,all", set(prov.PEERS)), ("none,torch", {"torch"}),
                        ("none", set())):
        seen.clear()
        config, _ = cli._config(cli.parser().parse_args([*TINY, "--peers", peers]))
        assert set(seen) == want, peers
    config, table = cli._config(cli.parser().parse_args(
        [*TINY[2:], "--sizes", "1k,2^10,1024,2^11", "--threads", "1,1", "--table-sizes", "2^11"]))
    assert config.sizes == [1024, 2048] and config.threads == [1] and table == [2048]
    from fastact.bench import report
    fake = {"config": {"sizes": [1024, 2048], "dtypes": ["float32"]}, "machine": {"caches": {}}}
    assert report.table_sizes(fake, [2048]) == [2048]  # (three sizes or fewer took all of them)


def test_unwritable_outputs_fail_before_measuring(capsys, tmp_path, monkeypatch):
    """A bad output path is an error (exit 2) before the run, not a traceback after it; a missing
    folder is created, as --plot's is."""
    from fastact.bench import runner
    monkeypatch.setattr(runner, "run", lambda config: pytest.fail("measured despite a bad path"))
    a_file = tmp_path / "file"
    a_file.write_text("")
    for option, path, message in [("--json", tmp_path, "is a folder"),
                                  ("--markdown", a_file / "run.md", "is not a folder"),
                                  ("--plot", a_file, "is not a folder")]:
        code, out, err = run(capsys, "--only", "sigmoid", option, str(path))
        assert code == 2 and out == "" and message in err, (option, err)
        assert len(err.strip().splitlines()) == 1
    monkeypatch.undo()
    target = tmp_path / "new" / "folder" / "run.md"
    code, _, _ = run(capsys, "--only", "sigmoid", "--backends", "cpu", "--peers", "none",
                     "--threads", "1", "--markdown", str(target))
    assert code == 0 and target.read_text().startswith("# fastact-bench report")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """One tiny run writing every format (sigmoid and the relu baseline, both directions)."""
    d = tmp_path_factory.mktemp("bench")
    paths = {k: d / f"run.{k}" for k in ("json", "csv", "md")}
    code = main([*TINY, "--only", "sigmoid", "--backends", "cpu", "--peers", "numpy",
                 "--threads", "1", "--json", str(paths["json"]), "--csv", str(paths["csv"]),
                 "--markdown", str(paths["md"])])
    assert code == 0
    return paths


EXPECTED_ROWS = {(p, a, d) for p in ("fastact:cpu", "numpy") for a in ("sigmoid", "relu")
                 for d in ("forward", "backward")}


def test_json_has_machine_versions_samples_and_the_right_rows(outputs):
    report = json.loads(outputs["json"].read_text())
    assert report["machine"]["cpu"] and report["machine"]["cores"] >= 1
    assert report["versions"]["numpy"] and report["versions"]["fastact"] == fastact.__version__
    rows = {(r["provider"], r["activation"], r["direction"]): r for r in report["results"]}
    assert set(rows) == EXPECTED_ROWS
    for r in rows.values():
        assert r["error"] is None and len(r["samples_s"]) == 1
        assert r["p20_s"] <= r["median_s"] <= r["p80_s"]
        assert r["size"] == 1024 and r["threads"] == 1 and r["dtype"] == "float32"
        assert r["bytes"] == (2 if r["direction"] == "forward" else 3) * 1024 * 4
        assert r["family"] == ("exponential" if r["activation"] == "sigmoid" else "piecewise-linear")
    assert rows["numpy", "sigmoid", "forward"]["provider_version"] == report["versions"]["numpy"]
    assert rows["fastact:cpu", "relu", "forward"]["relu_ratio"] == 1.0
    (roof,) = report["rooflines"]
    assert roof["forward_gb_s"] > 0 and roof["backward_gb_s"] > 0


def test_csv_has_one_row_per_result(outputs):
    with open(outputs["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert {(r["provider"], r["activation"], r["direction"]) for r in rows} == EXPECTED_ROWS
    assert all(float(r["gb_s"]) > 0 and float(r["roofline_fraction"]) > 0 for r in rows)


def test_markdown_table_is_grouped_by_family(outputs):
    text = outputs["md"].read_text()
    table = [line for line in text.splitlines() if line.startswith("| ")]
    header, rows = table[0], table[1:]
    assert "Gelem/s" in header and "GB/s" in header and "% roof" in header and "x ReLU" in header
    assert "numpy" in header
    assert [r.split("|")[2].strip() + " " + r.split("|")[3].strip() for r in rows] == [
        "sigmoid fwd", "sigmoid bwd", "relu fwd", "relu bwd"]
    assert rows[0].split("|")[1].strip() == "exponential"


def test_unavailable_backend_and_peer_are_reported_as_skipped(capsys, monkeypatch):
    real = fastact.backends

    def without_c():
        report = real()
        report["c"] = (False, "not built here (test)")
        return report
    monkeypatch.setattr(fastact, "backends", without_c)
    monkeypatch.setattr(providers.Jax, "unavailable", lambda self: "jax not installed (test)")
    code, out, _ = run(capsys, "--only", "relu", "--backends", "cpu,c", "--peers", "jax")
    assert code == 0
    assert "skipped fastact:c: not built here (test)" in out
    assert "skipped jax: jax not installed (test)" in out
    assert "relu" in out


def test_a_provider_that_fails_is_reported_not_fatal(capsys, monkeypatch, tmp_path):
    def broken(self, case, sets, outs):
        if case.label == "sigmoid":
            raise RuntimeError("broken on purpose")
        return lambda i: None
    monkeypatch.setattr(providers.NumpyUser, "prepare", broken)
    path = tmp_path / "run.json"
    code, out, _ = run(capsys, "--only", "sigmoid", "--backends", "cpu", "--peers", "numpy",
                       "--directions", "forward", "--json", str(path))
    assert code == 0
    assert "broken on purpose" in out
    report = json.loads(path.read_text())
    assert any(s.get("activation") == "sigmoid" and "broken on purpose" in s["reason"]
               for s in report["skipped"])


def test_plots_are_written(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code, out, _ = run(capsys, "--sizes", "2^10,2^12", "--only", "sigmoid", "--backends", "cpu",
                       "--peers", "numpy", "--threads", "1", "--plot", str(tmp_path))
    assert code == 0
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == ["directions-cpu-float32-1t.png", "families-cpu-float32-1t.png",
                     "peers-cpu-float32-1t.png", "throughput-cpu-float32-1t.png"]


def test_profile_prints_the_capture_commands(capsys):
    code, out, _ = run(capsys, "--only", "relu", "--directions", "forward", "--backends", "cpu",
                       "--peers", "none", "--profile")
    assert code == 0
    assert "nsys profile" in out and "--capture-range=nvtx" in out
    assert "ncu --nvtx --nvtx-include" in out


def test_help_works_as_a_module():
    done = subprocess.run([sys.executable, "-m", "fastact.bench", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "--backends" in done.stdout and "--peers" in done.stdout


def test_the_next_item_runs_untimed_for_the_settle_time_of_the_one_before():
    """A provider whose threads spin after a call (PyTorch's OpenMP workers) must not run into
    the next item's sample: after each sample of such an item, the next one runs untimed for the
    first item's settle time, then takes its timed sample."""
    import time
    from fastact.bench import timing
    log = []

    def recorder(name):
        def run(i):
            log.append((name, time.perf_counter()))
        return run
    spinner = timing.Item(("torch", "x", "forward"), recorder("spinner"), settle=0.05)
    quiet = timing.Item(("fastact:cpu", "x", "forward"), recorder("quiet"))
    other = timing.Item(("fastact:c", "x", "forward"), recorder("other"))
    timing.measure([spinner, quiet, other], repeats=4, min_sample_s=0.0)
    assert all(len(item.samples) == 4 for item in (spinner, quiet, other))
    # after the warm-up and calibration calls (2 per item), each round samples the three items
    # (one call each: min_sample_s 0) in an order of its own (the spinner may be last in one
    # round and another item first in the next); every run of another item that follows a
    # spinner sample spans the settle time before that item's own sample
    runs, current = [], None
    for name, t in log[6:]:
        if current is None or current[0] != name:
            current = [name, t, t, 0]
            runs.append(current)
        current[2], current[3] = t, current[3] + 1
    after = [r for a, r in zip(runs, runs[1:]) if a[0] == "spinner"]
    assert len(after) >= 3
    for name, first, last, calls in after:
        assert last - first >= 0.05 and calls >= 3
    assert providers.Torch().settle_s == 0.04 and providers.Torch("cuda").settle_s == 0.0
    assert providers.Fastact("cpu").settle_s == 1e-3 and providers.NumpyUser().settle_s == 1e-3


def test_each_round_samples_every_item_once_in_an_order_of_its_own():
    """Rounds are shuffled (timing.py, Repeats): every item is sampled once per round, an item's
    predecessor changes from round to round (in a fixed cycle fastact:cpu always came right
    after PyTorch), and the orders are the same in every run (seeded)."""
    from fastact.bench import timing

    def orders():
        log = []
        items = [timing.Item(("p", k, "forward"), lambda i, k=k: log.append(k)) for k in range(6)]
        timing.measure(items, repeats=12, min_sample_s=0.0)
        sampled = log[2 * len(items):]  # after the warm-up and calibration calls
        return [sampled[r * 6:(r + 1) * 6] for r in range(12)]
    rounds = orders()
    assert all(sorted(order) == list(range(6)) for order in rounds)
    before = {k: {order[order.index(k) - 1] for order in rounds if order.index(k) > 0}
              for k in range(6)}
    assert all(len(predecessors) >= 3 for predecessors in before.values())
    assert orders() == rounds


def test_settle_option_reaches_the_report(tmp_path, capsys):
    target = tmp_path / "run.json"
    code, _, _ = run(capsys, "--only", "sigmoid", "--backends", "cpu", "--peers", "none",
                     "--threads", "1", "--settle", "0.002", "--json", str(target))
    assert code == 0 and json.loads(target.read_text())["config"]["settle_s"] == 0.002
    code, _, err = run(capsys, "--settle", "-1")
    assert code == 2 and "--settle" in err


def test_buffers_start_at_one_offset_from_a_page():
    """Every buffer the harness times on (shared inputs, outs, the backward's saved forward
    output) starts 16 bytes past a 4 KiB page, as NumPy's large arrays do, so that no two sit a
    few bytes apart modulo 4096 by the heap's chance (bench/cases.py: PAGE_OFFSET)."""
    import numpy as np
    from fastact.bench import cases, runner
    for shape, dtype in (((0,), np.float32), ((3, 5), np.float16), ((1000,), np.float64)):
        a = cases.placed_empty(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert a.ctypes.data % cases.PAGE == cases.PAGE_OFFSET or a.size == 0  # (no memory)
        b = np.arange(np.prod(shape), dtype=dtype).reshape(shape)
        c = cases.placed_copy(b)
        assert c.ctypes.data % cases.PAGE == cases.PAGE_OFFSET or c.size == 0
        np.testing.assert_array_equal(c, b)
    assert runner._touched((7, 9), np.float32).ctypes.data % cases.PAGE == cases.PAGE_OFFSET
    rng = np.random.default_rng(0)
    for role, dtype in (("x", np.float32), ("dy", np.float16)):
        base = runner._random_base(rng, role, 5000, dtype)
        assert base.ctypes.data % cases.PAGE == cases.PAGE_OFFSET and base.dtype == dtype
    n = 4096
    source = lambda role, shape: cases.placed_copy(
        np.linspace(-3, 3, int(np.prod(shape)), dtype=np.float32).reshape(shape))
    for case in cases.select(only=["sigmoid", "softmax", "maxout"], directions=["backward"]):
        arrays = case.make_inputs(n, source)
        for name, a in arrays.items():
            if name != "weight":
                assert a.ctypes.data % cases.PAGE == cases.PAGE_OFFSET, (case.label, name)


def test_plot_without_matplotlib_fails_before_measuring(capsys, monkeypatch, tmp_path):
    """--plot needs matplotlib: said before the run (it had been said after it, with exit 0)."""
    from fastact.bench import runner
    monkeypatch.setattr(runner, "run", lambda config: pytest.fail("measured without matplotlib"))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    code, out, err = run(capsys, "--only", "sigmoid", "--plot", str(tmp_path / "plots"))
    assert code == 2 and out == "" and "--plot needs matplotlib" in err
    assert not (tmp_path / "plots").exists()
